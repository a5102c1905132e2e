//! The busy guard's view of the cluster in `run` mode: a cache of the guarded pods (label
//! selector `kube-standby.dev/busy-guard=true`, metadata only) per watched scope, so the
//! eviction path finds its pod without an API call. The cache is not required for
//! readiness: until it has listed, an eviction of a pod it does not know is allowed (the
//! guard fails open, as it does when the webhook is down).
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};

use crate::api::probe::BUSY_GUARD_LABEL;
use crate::api::StatefulSingleton;
use crate::controller::watch::{resource_name, tracked};
use crate::controller::Deps;
use crate::webhook::guard::ProbeView;
use crate::webhook::ObjectSource;

/// Guarded pods by scope, plus whatever else the webhook reads (`inner`).
pub struct GuardedObjects {
    pub inner: Arc<dyn ObjectSource>,
    pub pods: Vec<(Option<String>, Store<Pod>)>,
}

impl ObjectSource for GuardedObjects {
    fn singletons(&self, namespace: &str) -> Vec<Arc<StatefulSingleton>> {
        self.inner.singletons(namespace)
    }

    fn guarded_pod(&self, namespace: &str, name: &str) -> Option<ObjectMeta> {
        let store = self
            .pods
            .iter()
            .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == namespace))
            .map(|(_, s)| s)?;
        store
            .get(&ObjectRef::new(name).within(namespace))
            .map(|p| p.metadata.clone())
    }

    fn probe(&self, uid: &str) -> Option<ProbeView> {
        self.inner.probe(uid)
    }
}

/// Keep only what the guard reads: metadata without managed fields.
fn metadata_only(pod: &mut Pod) {
    pod.spec = None;
    pod.status = None;
    crate::controller::trim_pod_metadata(pod);
}

/// The guarded-pod cache of one scope and the task that feeds it.
pub fn watch(deps: &Deps, scope: Option<String>) -> (Store<Pod>, BoxFuture<'static, ()>) {
    let ns = scope.as_deref();
    let (store, writer) = reflector::store::<Pod>();
    // "guarded pods list[ in <ns>]": distinct from the singleton controller's pod watch.
    let name = format!("guarded {}", resource_name::<Pod>(&(), ns));
    let events = tracked(
        &deps.caches,
        crate::controller::scoped::<Pod>(deps.client.clone(), ns),
        watcher::Config::default()
            .labels(&format!("{BUSY_GUARD_LABEL}=true"))
            .page_size(100),
        name,
        false,
    )
    .modify(metadata_only)
    .reflect(writer)
    .touched_objects();
    (store, Box::pin(events.for_each(|_| async {})))
}
