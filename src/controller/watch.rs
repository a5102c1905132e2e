//! Every watch the operator runs starts here: a kube watcher with our backoff, reporting to
//! the process's cache registry ([`crate::state::Caches`]).
//!
//! Invariants:
//! - a watch never ends and never stalls silently: a failing list or watch (404 while a CRD
//!   is not yet established, 403, a connection refused) is retried with backoff for ever,
//!   logged once with the API server's answer, and once more when it recovers;
//! - the registry learns that a cache has listed from the stream's own `InitDone` event,
//!   not from kube's `Store::wait_until_ready` (whose signal wakes only the last waiter);
//! - the backoff starts at [`MIN_BACKOFF`] and is capped at [`MAX_BACKOFF`], so a resource
//!   served late is picked up within seconds, without a restart.
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use crate::state::{CacheHandle, Caches};

/// First retry after a failure.
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause between retries of a failing watch.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Exponential backoff (doubling, with up to 25 % jitter) between [`MIN_BACKOFF`] and
/// [`MAX_BACKOFF`], reset by the stream after a successful event.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
    seed: u64,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(7)
            | 1;
        WatchBackoff {
            next: MIN_BACKOFF,
            seed,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // xorshift: cheap jitter so many watches failing together do not retry in step.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let base = self.next;
        let jitter = base.mul_f64((self.seed % 1000) as f64 / 4000.0);
        self.next = (self.next * 2).min(MAX_BACKOFF);
        Some((base + jitter).min(MAX_BACKOFF))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }
}

/// "<plural>[.<group>] list", and " in <namespace>" for a one-namespace scope: the name a
/// watch has in `/readyz`, the logs and `kube_standby_cache_synced{resource}`.
pub fn resource_name<K: Resource>(dt: &K::DynamicType, namespace: Option<&str>) -> String {
    let group = K::group(dt);
    let plural = K::plural(dt);
    let mut name = if group.is_empty() {
        format!("{plural} list")
    } else {
        format!("{plural}.{group} list")
    };
    if let Some(ns) = namespace {
        name.push_str(" in ");
        name.push_str(ns);
    }
    name
}

/// Feed `handle` from a watcher's events (listed, recovered, failed), passing them on.
pub fn report<K, S>(events: S, handle: CacheHandle) -> impl Stream<Item = S::Item> + Send
where
    S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send,
{
    events.inspect(move |ev| match ev {
        Ok(watcher::Event::InitDone) => handle.listed(),
        // Emitted before the list request is even sent: not a sign of recovery.
        Ok(watcher::Event::Init) => {}
        Ok(_) => handle.ok(),
        Err(e) => handle.failed(&e.to_string()),
    })
}

/// A watch of `api` registered in `caches` under `name`; `required`: readiness waits for it.
pub fn tracked<K>(
    caches: &Caches,
    api: Api<K>,
    config: watcher::Config,
    name: String,
    required: bool,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let handle = caches.register(name, required);
    report(
        kube::runtime::WatchStreamExt::backoff(watcher(api, config), WatchBackoff::default()),
        handle,
    )
}

/// [`tracked`] for a statically typed kind, named from its type and scope.
pub fn tracked_kind<K>(
    caches: &Caches,
    api: Api<K>,
    namespace: Option<&str>,
    config: watcher::Config,
    required: bool,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tracked(
        caches,
        api,
        config,
        resource_name::<K>(&(), namespace),
        required,
    )
}

/// A watch of `api` into the cache `writer`, each object stripped by `strip` first (what a
/// reconcile never reads is not kept); yields the objects touched.
pub fn reflected<K>(
    caches: &Caches,
    api: Api<K>,
    namespace: Option<&str>,
    config: watcher::Config,
    writer: kube::runtime::reflector::store::Writer<K>,
    strip: fn(&mut K),
) -> impl Stream<Item = watcher::Result<K>> + Send
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    use kube::runtime::WatchStreamExt;
    reflected_events(caches, api, namespace, config, writer, strip).touched_objects()
}

/// [`reflected`], yielding the watch events themselves (each after the cache applied it):
/// for a reader that must tell a delete or the end of a relist from an update.
pub fn reflected_events<K>(
    caches: &Caches,
    api: Api<K>,
    namespace: Option<&str>,
    config: watcher::Config,
    writer: kube::runtime::reflector::store::Writer<K>,
    strip: fn(&mut K),
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    use kube::runtime::WatchStreamExt;
    tracked_kind(caches, api, namespace, config, true)
        .modify(strip)
        .reflect(writer)
}

/// [`reflected`] over the watched scope (`--namespace`, or all) of a namespaced kind.
pub fn in_scope<K>(
    deps: &super::Deps,
    namespace: Option<&str>,
    config: watcher::Config,
    writer: kube::runtime::reflector::store::Writer<K>,
    strip: fn(&mut K),
) -> impl Stream<Item = watcher::Result<K>> + Send
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let api = super::scoped(deps.client.clone(), namespace);
    reflected(&deps.caches, api, namespace, config, writer, strip)
}

/// [`in_scope`], yielding the watch events (see [`reflected_events`]).
pub fn in_scope_events<K>(
    deps: &super::Deps,
    namespace: Option<&str>,
    config: watcher::Config,
    writer: kube::runtime::reflector::store::Writer<K>,
    strip: fn(&mut K),
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let api = super::scoped(deps.client.clone(), namespace);
    reflected_events(&deps.caches, api, namespace, config, writer, strip)
}

/// `k8s_openapi::Resource` and `Metadata` for `$slim`, a type a cache keeps instead of the
/// API kind `$kind` (the same group, version, kind and URL), its `ObjectMeta` in `$field`:
/// what kube's watcher, reflector and `Api` need of it.
macro_rules! slim_resource {
    ($slim:ty, $kind:ty, $field:ident) => {
        impl k8s_openapi::Resource for $slim {
            const API_VERSION: &'static str = <$kind as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <$kind as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <$kind as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <$kind as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str =
                <$kind as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = <$kind as k8s_openapi::Resource>::Scope;
        }

        impl k8s_openapi::Metadata for $slim {
            type Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

            fn metadata(&self) -> &Self::Ty {
                &self.$field
            }

            fn metadata_mut(&mut self) -> &mut Self::Ty {
                &mut self.$field
            }
        }
    };
}
pub(crate) use slim_resource;

/// kubectl's copy of the whole object as last applied (client-side apply).
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops managed fields and kubectl's last-applied copy of the object: never read by a
/// reconcile, and together often larger than the rest of the object.
pub fn strip_managed<K: Resource>(k: &mut K) {
    let meta = k.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_object_keeps_everything_but_managed_fields_and_the_last_applied_copy() {
        let mut d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "namespace": "ns",
                         "managedFields": [{"manager": "kubectl", "operation": "Update"}],
                         "annotations": {LAST_APPLIED: "{\"kind\":\"Deployment\"}", "hsd.paia.tech/replicas": "3"},
                         "labels": {"app": "d"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "d"}}, "template": {}}
        }))
        .unwrap();
        let mut want = d.clone();
        strip_managed(&mut d);
        want.metadata.managed_fields = None;
        want.metadata.annotations =
            Some([("hsd.paia.tech/replicas".to_string(), "3".to_string())].into());
        assert_eq!(d, want);
        let mut only: k8s_openapi::api::core::v1::ConfigMap =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "c", "annotations": {LAST_APPLIED: "{}"}}
            }))
            .unwrap();
        strip_managed(&mut only);
        assert_eq!(only.metadata.annotations, None);
    }
    use k8s_openapi::api::core::v1::Pod;
    use kube::core::Status;

    fn not_found() -> watcher::Error {
        watcher::Error::InitialListFailed(kube::Error::Api(Box::new(
            Status::failure(
                "the server could not find the requested resource",
                "NotFound",
            )
            .with_code(404),
        )))
    }

    #[test]
    fn backoff_doubles_from_the_floor_to_the_cap_and_resets() {
        let mut b = WatchBackoff::default();
        let first = b.next().unwrap();
        assert!(
            first >= MIN_BACKOFF && first <= MIN_BACKOFF.mul_f64(1.25),
            "{first:?}"
        );
        let delays: Vec<Duration> = (0..10).filter_map(|_| b.next()).collect();
        assert!(delays.iter().all(|d| *d <= MAX_BACKOFF), "{delays:?}");
        assert_eq!(delays.last().copied(), Some(MAX_BACKOFF));
        b.reset();
        assert!(b.next().unwrap() <= MIN_BACKOFF.mul_f64(1.25));
    }

    #[test]
    fn names_say_resource_group_and_scope() {
        assert_eq!(resource_name::<Pod>(&(), None), "pods list");
        assert_eq!(resource_name::<Pod>(&(), Some("a")), "pods list in a");
        assert_eq!(
            resource_name::<crate::api::HotStandbyJob>(&(), None),
            "hotstandbyjobs.apps.paia.tech list"
        );
    }

    #[tokio::test]
    async fn a_404_then_a_list_marks_the_cache_synced_and_the_error_is_kept_until_then() {
        let caches = Caches::default();
        let handle = caches.register("hotstandbyjobs.apps.paia.tech list", true);
        let events: Vec<watcher::Result<watcher::Event<Pod>>> = vec![
            Err(not_found()),
            Err(not_found()),
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitDone),
        ];
        let mut s = Box::pin(report(futures::stream::iter(events), handle));
        s.next().await;
        let waiting = caches.waiting_for();
        assert_eq!(waiting.len(), 1);
        assert!(
            waiting[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("404")),
            "{waiting:?}"
        );
        while s.next().await.is_some() {}
        assert!(caches.waiting_for().is_empty());
        assert!(caches.is_synced("hotstandbyjobs.apps.paia.tech list"));
    }
}
