//! The HSD's pod views, kept between reconciles: a pod's view is rebuilt only when its
//! resourceVersion, the busy mode or the annotation key changed; otherwise the
//! cached one is reused (its strings are shared, so reuse is a few reference counts).
//!
//! Invariants: a reused view is exactly what [`child::pod_view`] would build now: the
//! busy state of an http pool is always read fresh from the probe cache (it changes
//! without the pod changing), and `current` is always recomputed (it depends on which
//! ReplicaSet is current, not on the pod). Each HSD's cache holds only the pods its last
//! reconcile counted, so gone pods are dropped at once; a deleted HSD's cache is dropped.
use std::sync::Arc;

use crate::controller::kept::KeptByObject;

use crate::controller::pool_pod::PoolPod;

use super::child;
use super::plan::PodView;
use crate::api::hsd::{BusyMode, HotStandbyDeployment};
use crate::probe::{self, ProbeCache};

struct Cached {
    resource_version: Arc<str>,
    /// The mode and annotation key the state was read with.
    mode: BusyMode,
    key: Arc<str>,
    /// UID of the ReplicaSet controlling the pod (interned: a ReplicaSet's pods share it).
    owner_rs: Option<Arc<str>>,
    view: PodView,
}

/// Views by HSD ("namespace/name"), then by pod UID.
#[derive(Default)]
pub struct ViewCache {
    inner: KeptByObject<Cached>,
}

impl ViewCache {
    /// The views of `pods` (the HSD's counted pods), reusing what is unchanged. Kept views
    /// are updated in place (see [`crate::controller::kept`]); an http pod's reason string
    /// is replaced only when it changed.
    pub fn views(
        &self,
        key: &str,
        pods: &[&PoolPod],
        hsd: &HotStandbyDeployment,
        probes: &ProbeCache,
        current_rs: Option<&str>,
    ) -> Vec<PodView> {
        let mut kept = self.inner.take(key);
        let probe = &hsd.spec.busy_probe;
        let ann_key: &str = &probe.annotation_key;
        // One copy of the key for every view built in this pass, not one per pod.
        let mut shared_key: Option<Arc<str>> = None;
        let mut out = Vec::with_capacity(pods.len());
        for pod in pods {
            let uid = pod.meta.uid.as_deref().unwrap_or_default();
            let rv = pod.meta.resource_version.as_deref().unwrap_or_default();
            let holds = |c: &Cached| {
                &*c.resource_version == rv && c.mode == probe.mode && &*c.key == ann_key
            };
            let build = || {
                let mut view = child::pod_view(pod, hsd, probes, current_rs);
                // Most pods share their reason ("annotation paia.tech/busy=false").
                view.reason = crate::api::tags::intern(&view.reason);
                let c = Cached {
                    resource_version: view.resource_version.clone(),
                    mode: probe.mode,
                    key: shared_key.get_or_insert_with(|| ann_key.into()).clone(),
                    owner_rs: child::owner_replicaset(pod).map(|u| crate::api::tags::intern(&u)),
                    view,
                };
                (c.view.uid.clone(), c)
            };
            let Some(c) = kept.get_or_build(uid, holds, build) else {
                continue;
            };
            if probe.mode == BusyMode::Http {
                let (state, stale, reason) = probe::pod_busy(*pod, probe, probes);
                c.view.state = state;
                c.view.stale = stale;
                if *c.view.reason != *reason {
                    c.view.reason = reason.into();
                }
            }
            c.view.current = c.owner_rs.as_deref() == current_rs;
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

    proptest! {
        /// Over any sequence of pod sets, changes, keys and current ReplicaSets, the cached
        /// views equal freshly built ones.
        #[test]
        fn a_reused_view_is_what_a_fresh_build_gives(
            rounds in proptest::collection::vec(
                (proptest::collection::vec((0usize..6, 0u32..3, any::<bool>(), any::<bool>()), 0..6),
                 any::<bool>(), any::<bool>(), any::<bool>()),
                1..6),
        ) {
            let cache = ViewCache::default();
            let probes = ProbeCache::default();
            probes.record("u1", Ok(probe::BusyState::Busy), std::time::Instant::now());
            for (pods, other_key, http, current_a) in rounds {
                let h = if http { hsd("http", "paia.tech/busy") }
                        else { hsd("annotation", if other_key { "other/busy" } else { "paia.tech/busy" }) };
                let mut seen = std::collections::HashSet::new();
                let objs: Vec<PoolPod> = pods.iter()
                    .filter(|(i, ..)| seen.insert(*i))
                    // A pod that changes gets a new resourceVersion (what the cache relies on).
                    .map(|(i, rv, busy, rs_a)| pod(*i, *rv + 10 * u32::from(*busy) + 100 * u32::from(*rs_a), *busy, if *rs_a { "rs-a" } else { "rs-b" }))
                    .collect();
                let refs: Vec<&PoolPod> = objs.iter().collect();
                let current = if current_a { "rs-a" } else { "rs-b" };
                let got = cache.views("ns/g", &refs, &h, &probes, Some(current));
                let want: Vec<PodView> = refs.iter().map(|p| child::pod_view(p, &h, &probes, Some(current))).collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn gone_pods_and_gone_hsds_leave_nothing_behind() {
        let cache = ViewCache::default();
        let probes = ProbeCache::default();
        let h = hsd("annotation", "paia.tech/busy");
        let (a, b) = (pod(1, 1, true, "rs"), pod(2, 1, false, "rs"));
        cache.views("ns/g", &[&a, &b], &h, &probes, Some("rs"));
        cache.views("ns/g", &[&a], &h, &probes, Some("rs"));
        assert_eq!(cache.inner.kept("ns/g"), 1);
        cache.forget("ns/g");
        assert_eq!(cache.inner.objects(), 0);
    }
}
