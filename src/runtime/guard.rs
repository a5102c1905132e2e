//! The busy guard's view of the cluster in `run` mode: a cache of the guarded pods (label
//! selector `kube-standby.dev/busy-guard=true`, metadata only) per watched scope, so the
//! eviction path finds its pod without an API call. Pods of HotStandbyDeployments and
//! HotStandbyJobs are not in it: the pool pod caches every replica keeps (the HSD
//! controller's, which claims read too, and the claim controller's of HSJ pods) already
//! hold them, so the guard reads those ([`GuardedObjects::pool_pods`]) instead of caching
//! each such pod a second time; a pod found there counts only while it carries the guard
//! label. The cache is not required for
//! readiness: until it has listed, an eviction of a pod it does not know is allowed (the
//! guard fails open, as it does when the webhook is down).
//!
//! The leader also sweeps the `held-since` annotations the guard writes
//! ([`sweep_held_since`]): one is cleared once its pod is idle as the guard sees it without
//! I/O, or once it is past its use, so a later hold starts fresh.
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::tags::Tags;
use crate::controller::pool_pod::PoolPod;
use futures::future::BoxFuture;
use futures::StreamExt;
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
    pub pods: Vec<(Option<String>, Store<PoolPod>)>,
    /// Caches of HSD and HSJ pods by scope (labelled with the pool's name, which the guard's
    /// own watch excludes).
    pub pool_pods: Vec<(Option<String>, Store<PoolPod>)>,
    /// The controllers' probe results (http/exec pools).
    pub probes: crate::probe::ProbeCache,
}

impl ObjectSource for GuardedObjects {
    fn singletons(&self, namespace: &str) -> Vec<Arc<StatefulSingleton>> {
        self.inner.singletons(namespace)
    }

    fn guarded_pod(&self, namespace: &str, name: &str) -> Option<ObjectMeta> {
        let key = ObjectRef::new(name).within(namespace);
        let in_scope = |(scope, _): &&(Option<String>, Store<PoolPod>)| {
            scope.as_deref().is_none_or(|s| s == namespace)
        };
        if let Some(p) = self
            .pods
            .iter()
            .find(in_scope)
            .and_then(|(_, s)| s.get(&key))
        {
            return Some(p.whole_meta());
        }
        self.pool_pods
            .iter()
            .filter(in_scope)
            .filter_map(|(_, s)| s.get(&key))
            .find(|p| is_guarded(p.as_ref()))
            .map(|p| p.whole_meta())
    }

    fn probe(&self, uid: &str) -> Option<ProbeView> {
        self.probes
            .guard_view(uid, std::time::Instant::now())
            .or_else(|| self.inner.probe(uid))
    }

    fn probe_target(&self, namespace: &str, name: &str) -> Option<crate::probe::target::Found> {
        self.probes.target(namespace, name)
    }
}

/// The label selector of the guard's own pod watch: guarded pods that no pool cache holds.
pub fn watch_selector() -> String {
    format!("{BUSY_GUARD_LABEL}=true,{}", crate::api::not_pool_pods())
}

/// Does the pod carry the guard label (`kube-standby.dev/busy-guard=true`)?
fn is_guarded<T: Tags + ?Sized>(pod: &T) -> bool {
    pod.label(BUSY_GUARD_LABEL).is_some_and(|v| v == "true")
}

/// How often the leader looks for `held-since` annotations to clear.
pub const SWEEP_EVERY: Duration = Duration::from_secs(15);
/// Most annotations cleared per sweep (the rest wait for the next one).
pub const SWEEP_MAX: usize = 100;

/// The pods (namespace, name, UID) whose `held-since` annotation is past its use: the pod
/// is idle as the guard sees it without I/O (annotation mode: its annotation; a pod whose
/// pool probes it: a recent idle probe result), or the annotation is malformed or older
/// than the max hold plus the forget window. Reads the probe cache, nothing else.
pub fn held_since_to_clear(
    pods: &[Arc<PoolPod>],
    probes: &crate::probe::ProbeCache,
    now: Instant,
    wall_now: k8s_openapi::jiff::Timestamp,
    max_hold: Duration,
) -> Vec<(String, String, Option<String>)> {
    use crate::webhook::guard::{self, HELD_SINCE_ANNOTATION};
    pods.iter()
        .filter_map(|p| {
            let meta = &p.meta;
            p.annotation(HELD_SINCE_ANNOTATION)?;
            let (ns, name) = (meta.namespace.clone()?, meta.name.clone()?);
            let past_use = guard::annotated_hold_start(p, now, wall_now, max_hold).is_none();
            let probed = guard::uses_probe(p) || probes.target(&ns, &name).is_some();
            let idle = if probed {
                let uid = meta.uid.as_deref().unwrap_or_default();
                probes
                    .guard_view(uid, now)
                    .is_some_and(|v| v.state == crate::probe::BusyState::Idle && !v.stale)
            } else {
                !guard::busy(p, None).0
            };
            (past_use || idle).then(|| (ns, name, meta.uid.clone()))
        })
        .take(SWEEP_MAX)
        .collect()
}

/// Every [`SWEEP_EVERY`], while this replica leads, clear the `held-since` annotations
/// [`held_since_to_clear`] names. Runs for ever; the runtime supervises it.
pub async fn sweep_held_since(
    pods: Vec<Store<PoolPod>>,
    probes: crate::probe::ProbeCache,
    writer: crate::webhook::held_since::HeldSince,
    leading: tokio::sync::watch::Receiver<bool>,
    max_hold: Duration,
) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        if !*leading.borrow() {
            continue;
        }
        let now = Instant::now();
        let wall_now = k8s_openapi::jiff::Timestamp::now();
        let guarded: Vec<Arc<PoolPod>> = pods
            .iter()
            .flat_map(|s| s.state())
            .filter(|p| is_guarded(p.as_ref()))
            .collect();
        for (ns, name, uid) in held_since_to_clear(&guarded, &probes, now, wall_now, max_hold) {
            match writer.clear(&ns, &name, uid.as_deref()).await {
                Ok(()) => tracing::debug!(namespace = %ns, pod = %name, "hold start cleared"),
                Err(e) => {
                    tracing::debug!(namespace = %ns, pod = %name, error = %e, "could not clear the hold start")
                }
            }
        }
    }
}

/// Keep only what the guard reads: metadata without managed fields (the pod is parsed
/// straight into the slim [`PoolPod`], so the rest of its JSON is never held).
fn metadata_only(pod: &mut PoolPod) {
    pod.spec = None;
    pod.status = None;
    crate::controller::pool_pod::strip(pod);
}

/// The guarded-pod cache of one scope and the task that feeds it.
pub fn watch(deps: &Deps, scope: Option<String>) -> (Store<PoolPod>, BoxFuture<'static, ()>) {
    let ns = scope.as_deref();
    let (store, writer) = reflector::store::<PoolPod>();
    // "guarded pods list[ in <ns>]": distinct from the singleton controller's pod watch.
    let name = format!("guarded {}", resource_name::<PoolPod>(&(), ns));
    let events = tracked(
        &deps.caches,
        crate::controller::scoped::<PoolPod>(deps.client.clone(), ns),
        watcher::Config::default()
            .labels(&watch_selector())
            .page_size(100),
        name,
        false,
    )
    .modify(metadata_only)
    .reflect(writer)
    .touched_objects();
    (store, Box::pin(events.for_each(|_| async {})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{BusyState, ProbeCache};
    use crate::webhook::StaticObjects;
    use kube::runtime::watcher::Event;

    fn objects(pod: PoolPod) -> GuardedObjects {
        let (store, mut writer) = reflector::store::<PoolPod>();
        writer.apply_watcher_event(&Event::InitApply(pod));
        writer.apply_watcher_event(&Event::InitDone);
        GuardedObjects {
            inner: Arc::new(StaticObjects::default()),
            pods: vec![(Some("ns".into()), store)],
            pool_pods: vec![],
            probes: ProbeCache::default(),
        }
    }

    use crate::controller::fixtures::store_of;

    fn named(name: &str, labels: &[(&str, &str)]) -> PoolPod {
        let mut p = PoolPod::default();
        p.meta.name = Some(name.into());
        p.meta.namespace = Some("ns".into());
        p.labels = crate::api::tags::Pairs::from_entries(labels.iter().copied());
        p
    }

    /// Pool pods are found in the pool caches (which the guard's own watch excludes), but
    /// only while they carry the guard label; the scope is respected.
    #[test]
    fn pool_pods_are_read_from_the_pool_caches_while_labelled() {
        let hsd = crate::api::hsd::NAME_LABEL;
        let pool = store_of(vec![
            named("guarded", &[(hsd, "web"), (BUSY_GUARD_LABEL, "true")]),
            named("unlabelled", &[(hsd, "web")]),
            named("off", &[(hsd, "web"), (BUSY_GUARD_LABEL, "false")]),
        ]);
        let mut o = objects(named("own", &[(BUSY_GUARD_LABEL, "true")]));
        o.pool_pods.push((Some("ns".into()), pool));
        assert!(o.guarded_pod("ns", "own").is_some());
        assert!(o.guarded_pod("ns", "guarded").is_some());
        assert!(o.guarded_pod("ns", "unlabelled").is_none());
        assert!(o.guarded_pod("ns", "off").is_none());
        assert!(o.guarded_pod("other", "guarded").is_none());
    }

    /// The guard's own watch selects guarded pods that no pool cache holds.
    #[test]
    fn the_guard_watch_leaves_pool_pods_to_the_pool_caches() {
        assert_eq!(
            watch_selector(),
            "kube-standby.dev/busy-guard=true,!hsd.paia.tech/name,!hsj.paia.tech/name"
        );
    }

    /// In `run` mode the guard answers from the controllers' probe results: the cache the
    /// runtime hands every kind (`Deps::probes`) is the one read here.
    #[test]
    fn the_guard_reads_the_controllers_probe_results() {
        let mut pod = PoolPod::default();
        pod.meta.name = Some("w-1".into());
        pod.meta.namespace = Some("ns".into());
        pod.meta.uid = Some("uid-1".into());
        let o = objects(pod);
        assert!(o.guarded_pod("ns", "w-1").is_some());
        assert!(o.guarded_pod("other", "w-1").is_none());
        assert_eq!(o.probe("uid-1"), None);
        o.probes.record_every(
            "uid-1",
            Ok(BusyState::Busy),
            std::time::Instant::now(),
            Some(std::time::Duration::from_secs(10)),
        );
        let v = o.probe("uid-1").expect("a result");
        assert_eq!((v.state, v.stale), (BusyState::Busy, false));
    }

    #[test]
    fn the_sweep_clears_hold_starts_of_idle_pods_and_past_their_use() {
        use crate::webhook::guard::HELD_SINCE_ANNOTATION;
        let wall: k8s_openapi::jiff::Timestamp = "2026-12-02T14:00:00Z".parse().unwrap();
        let now = std::time::Instant::now();
        let hour = crate::webhook::guard::DEFAULT_MAX_HOLD;
        let pod = |name: &str, ann: &[(&str, &str)]| {
            let mut p = PoolPod::default();
            p.meta.name = Some(name.into());
            p.meta.namespace = Some("ns".into());
            p.meta.uid = Some(format!("uid-{name}"));
            p.annotations = crate::api::tags::Pairs::from_entries(ann.iter().copied());
            Arc::new(p)
        };
        let recent = "2026-12-02T13:50:00Z";
        let pods = vec![
            pod(
                "busy",
                &[(HELD_SINCE_ANNOTATION, recent), ("paia.tech/busy", "true")],
            ),
            pod(
                "idle",
                &[(HELD_SINCE_ANNOTATION, recent), ("paia.tech/busy", "false")],
            ),
            pod("none", &[("paia.tech/busy", "false")]),
            pod(
                "old",
                &[
                    (HELD_SINCE_ANNOTATION, "2026-12-01T10:00:00Z"),
                    ("paia.tech/busy", "true"),
                ],
            ),
            pod(
                "junk",
                &[(HELD_SINCE_ANNOTATION, "soon"), ("paia.tech/busy", "true")],
            ),
            pod(
                "probed-busy",
                &[
                    (HELD_SINCE_ANNOTATION, recent),
                    ("kube-standby.dev/busy-source", "probe"),
                ],
            ),
            pod(
                "probed-idle",
                &[
                    (HELD_SINCE_ANNOTATION, recent),
                    ("kube-standby.dev/busy-source", "probe"),
                ],
            ),
            pod(
                "probed-unknown",
                &[
                    (HELD_SINCE_ANNOTATION, recent),
                    ("kube-standby.dev/busy-source", "probe"),
                ],
            ),
        ];
        let probes = ProbeCache::default();
        let p = Some(std::time::Duration::from_secs(10));
        probes.record_every("uid-probed-busy", Ok(BusyState::Busy), now, p);
        probes.record_every("uid-probed-idle", Ok(BusyState::Idle), now, p);
        let cleared: Vec<String> = held_since_to_clear(&pods, &probes, now, wall, hour)
            .into_iter()
            .map(|(ns, name, uid)| {
                assert_eq!((ns.as_str(), uid), ("ns", Some(format!("uid-{name}"))));
                name
            })
            .collect();
        assert_eq!(cleared, vec!["idle", "old", "junk", "probed-idle"]);
    }

    #[tokio::test]
    async fn every_kind_shares_the_probe_results_of_deps() {
        let deps = crate::controller::Deps::standalone(kube::Client::new(
            tower::service_fn(|_: http::Request<kube::client::Body>| async {
                Err::<http::Response<kube::client::Body>, std::io::Error>(std::io::Error::other(
                    "no API server in this test",
                ))
            }),
            "default",
        ));
        let hsd = crate::controller::hsd::Ctx::new(
            &deps,
            crate::controller::hsd::Stores::new(
                reflector::store().0,
                reflector::store().0,
                reflector::store().0,
            ),
        );
        hsd.probes
            .record("uid-9", Ok(BusyState::Busy), std::time::Instant::now());
        assert!(deps.probes.get("uid-9").is_some());
    }
}
