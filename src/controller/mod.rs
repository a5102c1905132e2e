//! Reconcilers. Each kind's module follows observe → pure plan → apply, inside the shared
//! `shell`. Controllers never import the webhook, the TLS server or the CLI; `runtime` wires
//! them together.
//!
//! Start path: every kind is `start(&Deps, scope) -> Started`, a list of named tasks (the
//! controller and each background loop) that the runtime supervises one by one; caches that
//! are cluster-wide (Nodes, KEDA's CRDs) are built once and shared by every scope.
//!
//! Pods are still watched once per kind and scope, not by one shared watch: each kind
//! watches a different subset (HSD, HSJ and AsyncActor only their own pods, by their label,
//! stripped to what they read; the singleton every pod of the scope, as small facts), so one
//! unfiltered shared watch would make the three labelled caches hold every pod of the scope.
//! kube's shared reflector streams (`unstable-runtime`) share one watch with one filter,
//! which does not fit four filters.
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::Result;

pub mod actor;
pub mod claim;
pub mod cost;
#[cfg(test)]
pub mod fixtures;
pub mod held;
pub mod hsd;
pub mod hsj;
pub mod index;
pub mod kept;
pub mod pool;
pub mod pool_pod;
pub mod shell;
pub mod singleton;
pub mod watch;

/// What every kind's start needs from the runtime: the client, the shared metrics, debug
/// state and cache registry, and the leadership channel the shell's gate reads.
#[derive(Clone)]
pub struct Deps {
    pub client: kube::Client,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub debug: crate::state::DebugState,
    pub leading: tokio::sync::watch::Receiver<bool>,
    pub caches: crate::state::Caches,
    /// Every kind's http/exec probe results by pod UID, also read by the busy guard.
    pub probes: crate::probe::ProbeCache,
    /// The pods the busy guard holds now (the pools show them in status and Events).
    pub held: crate::state::HeldPods,
    /// Claim counts per pool (the claim controller writes, HSD and HSJ show them).
    pub claims: crate::state::ClaimCounts,
}

/// What a kind's `start` hands the runtime: every long-lived part as a named future, each
/// supervised on its own (a dead one ends the process and `/readyz` names it).
pub struct Started {
    pub tasks: Vec<(String, futures::future::BoxFuture<'static, ()>)>,
}

impl Started {
    /// Run every part until the first ends (for tests and embedding without the runtime).
    pub async fn run(self) {
        if self.tasks.is_empty() {
            return;
        }
        let _ = futures::future::select_all(self.tasks.into_iter().map(|(_, t)| t)).await;
    }
}

/// The object named by `obj`'s `label` in `obj`'s namespace: how a child carrying our name
/// label maps back to its owner (pods and ReplicaSets are not owned by the pool directly).
/// The label is read through [`Tags`](crate::api::tags::Tags): a pool pod keeps its labels
/// outside its `ObjectMeta`.
pub fn labelled_owner<O, K>(label: &str, obj: &K) -> Option<kube::runtime::reflector::ObjectRef<O>>
where
    O: kube::Resource<DynamicType = ()>,
    K: kube::Resource + crate::api::tags::Tags,
{
    let name = obj.label(label)?;
    Some(kube::runtime::reflector::ObjectRef::new(name).within(obj.meta().namespace.as_deref()?))
}

/// Reconciles of one kind that run at once. Unbounded, a start with 1,000 pools runs 1,000
/// reconciles together and their buffers set a memory high-water mark the process keeps;
/// 16 keeps the start quick and the peak small.
pub const RECONCILE_CONCURRENCY: u16 = 16;

/// The controller settings every kind uses.
pub fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY)
}

/// "all" for the whole cluster, else the namespace: the scope part of a task's name.
pub fn scope_label(namespace: Option<&str>) -> &str {
    namespace.unwrap_or("all")
}

impl Deps {
    /// Deps for one process that always leads, with a registry of its own (tests, embedding).
    pub fn standalone(client: kube::Client) -> Self {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        Deps {
            client,
            caches: crate::state::Caches::with_gauge(metrics.cache_synced.clone()),
            metrics,
            debug: Default::default(),
            leading: shell::always_leading(),
            probes: Default::default(),
            held: Default::default(),
            claims: Default::default(),
        }
    }
}

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

/// An Api over the watched scope of a namespaced kind: one namespace (`--namespace`), or all.
pub fn scoped<K>(client: kube::Client, namespace: Option<&str>) -> kube::Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => kube::Api::namespaced(client, ns),
        None => kube::Api::all(client),
    }
}

/// [`scoped`] for dynamically typed objects.
pub fn scoped_with(
    client: kube::Client,
    namespace: Option<&str>,
    ar: &kube::api::ApiResource,
) -> kube::Api<kube::api::DynamicObject> {
    match namespace {
        Some(ns) => kube::Api::namespaced_with(client, ns, ar),
        None => kube::Api::all_with(client, ar),
    }
}

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

/// A cached pod's conditions, each reduced to its type and status (what readiness checks
/// read); times, reasons and messages are dropped.
pub fn slim_conditions(
    conditions: Option<Vec<k8s_openapi::api::core::v1::PodCondition>>,
) -> Option<Vec<k8s_openapi::api::core::v1::PodCondition>> {
    conditions.map(|cs| {
        cs.into_iter()
            .map(|c| k8s_openapi::api::core::v1::PodCondition {
                type_: c.type_,
                status: c.status,
                ..Default::default()
            })
            .collect()
    })
}

/// What every pod cache drops of a pod's metadata: managed fields, and annotation values
/// over 256 bytes (such as kubectl's last-applied configuration; busy annotations are short).
pub fn trim_pod_metadata(pod: &mut k8s_openapi::api::core::v1::Pod) {
    pod.metadata.managed_fields = None;
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.retain(|_, v| v.len() <= 256);
    }
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
pub fn pod_condition_true<P: crate::probe::PodRead + ?Sized>(pod: &P, type_: &str) -> bool {
    pod.has_condition(type_)
}

/// A broadcast receiver as a stream; a receiver that lagged skips ahead (every consumer
/// here only needs to know that something changed, and the latest state is in a cache).
pub fn broadcast_stream<T: Clone + Send + 'static>(
    rx: tokio::sync::broadcast::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(v) => return Some((v, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
