//! Reconcilers. Each kind's module follows observe → pure plan → apply.
use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use crate::cli::RunArgs;
use crate::metrics::Metrics;
use crate::state::{DebugState, Readiness};
use crate::webhook::release::{KubeTokenReviewer, ReleaseService};
use crate::{server, Result};

pub mod hsd;
pub mod singleton;

/// `kube-standby run`: webhook + reconcilers against the cluster.
pub async fn run(args: RunArgs) -> Result<()> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let debug = DebugState::default();
    let readiness = Readiness::default();

    // StatefulSingleton caches and controllers (both groups); the webhook reads the same
    // caches, and the agent release service reads the pod cache.
    let (stores, singletons_ready) =
        singleton::start(client.clone(), metrics.clone(), debug.clone()).await;
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
