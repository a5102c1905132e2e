//! The HSD's pod views, kept between reconciles: a pod's view is rebuilt only when the pod
//! object changed (the pod cache replaces a pod's `Arc` on every watch event for it), the
//! busy mode or the annotation key changed; otherwise the cached one is reused (its strings
//! are shared, so reuse is a few reference counts).
//!
//! Views are found by the address of the pod object they were built from, not by UID: at
//! 10,000 pods, hashing and comparing UID and resourceVersion strings (four scattered reads
//! per pod) was most of the view pass. An entry holds a `Weak` to its pod, so that address
//! cannot be given to another object while the entry lives: the same address is the same,
//! unchanged object. A re-listed pod (a new object, same resourceVersion) is rebuilt, which
//! costs time, never correctness.
//!
//! Invariants: a reused view is exactly what [`child::pod_view`] would build now: the
//! busy state of an http pool is always read fresh from the probe cache (it changes
//! without the pod changing), and `current` is always recomputed (it depends on which
//! ReplicaSet is current, not on the pod). Each HSD's cache holds only the pods its last
//! reconcile counted, so gone pods are dropped at once; a deleted HSD's cache is dropped.
use std::sync::{Arc, Weak};

use crate::controller::kept::KeptByObject;

use crate::controller::pool_pod::PoolPod;

use super::child;
use super::plan::PodView;
use crate::api::hsd::{BusyMode, HotStandbyDeployment};
use crate::probe::{self, ProbeCache};

struct Cached {
    /// Reserves the address the entry is keyed by (see the module header).
    _pod: Weak<PoolPod>,
    /// The mode and annotation key the state was read with.
    mode: BusyMode,
    key: Arc<str>,
    /// UID of the ReplicaSet controlling the pod (interned: a ReplicaSet's pods share it).
    owner_rs: Option<Arc<str>>,
    view: PodView,
}

/// The key of a pod object's view: its address.
fn address(pod: &Arc<PoolPod>) -> usize {
    Arc::as_ptr(pod) as usize
}

/// Views by HSD ("namespace/name"), then by pod object.
#[derive(Default)]
pub struct ViewCache {
    inner: KeptByObject<Cached, usize>,
}

impl ViewCache {
    /// The views of `pods` (the HSD's counted pods), reusing what is unchanged. Kept views
    /// are updated in place (see [`crate::controller::kept`]); an http pod's reason string
    /// is replaced only when it changed.
    pub fn views(
        &self,
        key: &str,
        pods: &[&Arc<PoolPod>],
        hsd: &HotStandbyDeployment,
        probes: &ProbeCache,
        current_rs: Option<&str>,
    ) -> Vec<PodView> {
        let mut kept = self.inner.take(key);
        let probe = &hsd.spec.busy_probe;
        // The key and the current ReplicaSet's UID, interned: every entry holds the same
        // copies, so comparing them is comparing pointers (`Arc<str>`'s `==` checks the
        // pointer first).
        let ann_key = crate::api::tags::intern(&probe.annotation_key);
        let current = current_rs.map(crate::api::tags::intern);
        let mut out = Vec::with_capacity(pods.len());
        for pod in pods {
            let holds = |c: &Cached| c.mode == probe.mode && c.key == ann_key;
            let build = || {
                let mut view = child::pod_view(pod.as_ref(), hsd, probes, current_rs);
                // Most pods share their reason ("annotation paia.tech/busy=false").
                view.reason = crate::api::tags::intern(&view.reason);
                let c = Cached {
                    _pod: Arc::downgrade(pod),
                    mode: probe.mode,
                    key: ann_key.clone(),
                    owner_rs: child::owner_replicaset(pod.as_ref())
                        .map(|u| crate::api::tags::intern(&u)),
                    view,
                };
                (address(pod), c)
            };
            let Some(c) = kept.get_or_build(&address(pod), holds, build) else {
                continue;
            };
            if probe.mode == BusyMode::Http {
                let (state, stale, reason) = probe::pod_busy(pod.as_ref(), probe, probes);
                c.view.state = state;
                c.view.stale = stale;
                if *c.view.reason != *reason {
                    c.view.reason = reason.into();
                }
            }
            c.view.current = c.owner_rs == current;
            out.push(c.view.clone());
        }
        self.inner.put(key, kept);
        out
    }

    /// Drop an HSD's views (it is gone).
    pub fn forget(&self, key: &str) {
        self.inner.forget(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn hsd(mode: &str, key: &str) -> HotStandbyDeployment {
        serde_json::from_value(json!({
            "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
            "metadata": {"name": "g", "namespace": "ns", "uid": "hsd-uid"},
            "spec": {"idleTarget": 1, "selector": {"matchLabels": {"app": "g"}},
                     "busyProbe": {"mode": mode, "annotationKey": key, "http": {"port": 8080}},
                     "podTemplate": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}
        }))
        .unwrap()
    }

    fn pod(i: usize, rv: u32, busy: bool, rs: &str) -> PoolPod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("p{i}"), "namespace": "ns", "uid": format!("u{i}"),
                         "resourceVersion": rv.to_string(), "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {"paia.tech/busy": busy.to_string(), "other/busy": (!busy).to_string()},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": rs, "controller": true}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    /// What happens to one pod of the cache between two reconciles.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// Unchanged: the cache keeps the same object.
        Keep,
        /// A watch event with new content (busy flag, owner) and a new resourceVersion.
        Change { busy: bool, rs_a: bool },
        /// Re-listed: a new object with the same resourceVersion and content.
        Relist,
        /// Gone from the cache (or not counted).
        Remove,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Keep),
            3 => (any::<bool>(), any::<bool>()).prop_map(|(busy, rs_a)| Step::Change { busy, rs_a }),
            1 => Just(Step::Relist),
            1 => Just(Step::Remove),
        ]
    }

    proptest! {
        /// Over any sequence of pod changes, re-lists, removals and additions, busy modes,
        /// annotation keys and current ReplicaSets, every view equals a fresh build, and the
        /// view of an object that did not change (same mode and key) is reused, not rebuilt.
        /// An old object is dropped before its successor is made, so the allocator is free
        /// to hand the successor the old address: a cache keyed by address without holding
        /// it would then serve the old object's view.
        #[test]
        fn a_reused_view_is_what_a_fresh_build_gives(
            rounds in proptest::collection::vec(
                (proptest::collection::vec(step(), 6), any::<bool>(), any::<bool>(), any::<bool>()),
                1..8),
        ) {
            let cache = ViewCache::default();
            let probes = ProbeCache::default();
            probes.record("u1", Ok(probe::BusyState::Busy), std::time::Instant::now());
            // The pod cache: (object, resourceVersion, busy, owned by rs-a) by pod index.
            type Slot = Option<(Arc<PoolPod>, u32, bool, bool)>;
            let mut store: Vec<Slot> = vec![None; 6];
            let make = |i: usize, rv: u32, busy: bool, rs_a: bool| {
                let p = pod(i, rv, busy, if rs_a { "rs-a" } else { "rs-b" });
                Some((Arc::new(p), rv, busy, rs_a))
            };
            // Last round's views by UID, with the address of the object each was built from.
            let mut last: std::collections::HashMap<String, (usize, PodView)> = Default::default();
            let mut last_mode = None;
            for (round, (steps, other_key, http, current_a)) in rounds.into_iter().enumerate() {
                for (i, st) in steps.into_iter().enumerate() {
                    let old = store[i].take();
                    let old_fields = old.as_ref().map(|(_, rv, busy, rs_a)| (*rv, *busy, *rs_a));
                    let keep = matches!(st, Step::Keep) && old.is_some();
                    if keep {
                        store[i] = old;
                        continue;
                    }
                    drop(old);
                    let rv = 1000 * round as u32 + i as u32;
                    store[i] = match (st, old_fields) {
                        (Step::Remove, _) => None,
                        (Step::Relist, Some((rv, busy, rs_a))) => make(i, rv, busy, rs_a),
                        (Step::Change { busy, rs_a }, _) => make(i, rv, busy, rs_a),
                        // Keep or Relist of a pod that is not there: a new pod.
                        (_, _) => make(i, rv, false, true),
                    };
                }
                let h = if http { hsd("http", "paia.tech/busy") }
                        else { hsd("annotation", if other_key { "other/busy" } else { "paia.tech/busy" }) };
                let mode = (http, other_key && !http);
                let objs: Vec<&Arc<PoolPod>> = store.iter().flatten().map(|(p, ..)| p).collect();
                let current = if current_a { "rs-a" } else { "rs-b" };
                let got = cache.views("ns/g", &objs, &h, &probes, Some(current));
                let want: Vec<PodView> = objs
                    .iter()
                    .map(|p| child::pod_view(p.as_ref(), &h, &probes, Some(current)))
                    .collect();
                prop_assert_eq!(&got, &want);
                let mut now = std::collections::HashMap::new();
                for (p, v) in objs.iter().zip(&got) {
                    let at = address(p);
                    if let Some((was_at, was)) = last.get(&*v.uid) {
                        if *was_at == at && last_mode == Some(mode) {
                            prop_assert!(Arc::ptr_eq(&was.name, &v.name), "unchanged {} rebuilt", v.name);
                        }
                    }
                    now.insert(v.uid.to_string(), (at, v.clone()));
                }
                last = now;
                last_mode = Some(mode);
            }
        }
    }

    #[test]
    fn gone_pods_and_gone_hsds_leave_nothing_behind() {
        let cache = ViewCache::default();
        let probes = ProbeCache::default();
        let h = hsd("annotation", "paia.tech/busy");
        let (a, b) = (
            Arc::new(pod(1, 1, true, "rs")),
            Arc::new(pod(2, 1, false, "rs")),
        );
        cache.views("ns/g", &[&a, &b], &h, &probes, Some("rs"));
        cache.views("ns/g", &[&a], &h, &probes, Some("rs"));
        assert_eq!(cache.inner.kept("ns/g"), 1);
        cache.forget("ns/g");
        assert_eq!(cache.inner.objects(), 0);
    }
}
