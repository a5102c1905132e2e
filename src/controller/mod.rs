//! Reconcilers. Each kind's module follows observe → pure plan → apply.
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};

use crate::api::StatefulSingleton;
use crate::cli::RunArgs;
use crate::metrics::Metrics;
use crate::state::{DebugState, Readiness};
use crate::webhook::objects::StoreObjects;
use crate::{server, Result};

pub mod hsd;
pub mod singleton;

/// `kube-standby run`: webhook + reconcilers against the cluster.
pub async fn run(args: RunArgs) -> Result<()> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let debug = DebugState::default();
    let readiness = Readiness::default();

    // The webhook reads StatefulSingletons from a reflector cache.
    let (store, writer) = reflector::store::<StatefulSingleton>();
    let singletons: Api<StatefulSingleton> = Api::all(client.clone());
    let reflect = reflector(writer, watcher(singletons, watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::warn!(error = %e, "StatefulSingleton watch error");
            }
        });
    tokio::spawn(reflect);

    let prepared = server::prepare(
        &args.tls,
        Arc::new(StoreObjects {
            singletons: store.clone(),
        }),
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
            if store.wait_until_ready().await.is_ok() && hsd_synced.await.is_ok() {
                readiness.set_caches_synced();
                tracing::info!("caches synced");
            }
        });
    }

    prepared.serve(server::shutdown_signal()).await;
    Ok(())
}
