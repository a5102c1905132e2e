//! Reconcilers. Each kind's module follows observe → pure plan → apply.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;

use crate::cli::RunArgs;
use crate::metrics::Metrics;
use crate::state::{DebugState, Readiness};
use crate::webhook::release::{KubeTokenReviewer, ReleaseService};
use crate::{server, Result};

pub mod hsd;
pub mod shell;
pub mod singleton;

/// `impl Deref<Target = Shell>` (and `DerefMut`) for a reconciler context with a `shell` field.
macro_rules! deref_to_shell {
    ($ctx:ty) => {
        impl std::ops::Deref for $ctx {
            type Target = $crate::controller::shell::Shell;
            fn deref(&self) -> &Self::Target {
                &self.shell
            }
        }
        impl std::ops::DerefMut for $ctx {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.shell
            }
        }
    };
}
pub(crate) use deref_to_shell;

/// The namespace of a namespaced object, or a clear error naming it.
pub fn namespace_of<K: kube::Resource>(obj: &K, kind: &'static str) -> Result<String> {
    obj.meta()
        .namespace
        .clone()
        .ok_or_else(|| crate::Error::InvalidObject {
            kind,
            name: obj.meta().name.clone().unwrap_or_default(),
            reason: "no namespace".into(),
        })
}

/// The cached objects of one namespace.
pub fn in_namespace<K>(store: &kube::runtime::reflector::Store<K>, ns: &str) -> Vec<Arc<K>>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store
        .state()
        .into_iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns))
        .collect()
}

/// Creation time of an object in seconds since the epoch (0 when unknown).
pub fn created_seconds(meta: &ObjectMeta) -> i64 {
    meta.creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

/// Is the pod condition `type_` True?
pub fn pod_condition_true(pod: &Pod, type_: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// `kube-standby run`: webhook + reconcilers against the cluster.
pub async fn run(args: RunArgs) -> Result<()> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let debug = DebugState::default();
    let readiness = Readiness::default();

    // StatefulSingleton caches and controllers (both groups); the webhook reads the same
    // caches, and the agent release service reads the pod cache.
    let (stores, singletons_ready) = singleton::start(
        client.clone(),
        metrics.clone(),
        debug.clone(),
        shell::always_leading(),
    )
    .await;
    let release = Arc::new(ReleaseService::new(
        Arc::new(KubeTokenReviewer {
            client: client.clone(),
        }),
        Arc::new(stores.clone()),
    ));
    let prepared = server::prepare(
        &args.tls,
        Arc::new(stores),
        Some(release),
        readiness.clone(),
        metrics.clone(),
        debug.clone(),
    )
    .await?;

    match (
        args.webhook_config_name.clone(),
        prepared.tls.ca_pem.clone(),
    ) {
        (Some(name), Some(ca)) => {
            tokio::spawn(crate::tls::cabundle::keep_ca_bundle(
                client.clone(),
                name,
                ca,
                Duration::from_secs(60),
            ));
        }
        (Some(_), None) => {
            tracing::info!("--webhook-config-name is only used with --tls-self-signed; caBundle left to its owner")
        }
        _ => {}
    }

    let (hsd_synced_tx, hsd_synced) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(hsd::run(
        client.clone(),
        metrics.clone(),
        debug.clone(),
        shell::always_leading(),
        move || {
            let _ = hsd_synced_tx.send(());
        },
    ));
    {
        let readiness = readiness.clone();
        tokio::spawn(async move {
            singletons_ready.await;
            if hsd_synced.await.is_ok() {
                readiness.set_caches_synced();
                tracing::info!("caches synced");
            }
        });
    }

    prepared.serve(server::shutdown_signal()).await;
    Ok(())
}
