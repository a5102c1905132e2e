//! The HSJ's unit views, kept between reconciles: a unit's view is rebuilt only when its
//! Job's resourceVersion, its pods (UIDs and resourceVersions, in order), the busy mode or
//! the annotation key changed; otherwise the cached one is reused (its strings are shared,
//! so reuse is a few reference counts).
//!
//! The reconciler now reads [`super::units`] (an index fed by the watch events and probe
//! answers, rebuilding only changed units); this cache stays as the baseline the `hsj_plan`
//! bench compares it with.
//!
//! Invariants: a reused view is exactly what [`observe::unit_view`] would build now: in
//! http and exec mode the busy state is always read fresh from the probe cache (it changes
//! without the pod changing), and `ever_busy` is always recomputed from the caller's memory
//! (it changes without the unit changing). Each HSJ's cache holds only the units its last
//! reconcile saw, so gone units are dropped at once; a deleted HSJ's cache is dropped.
use std::collections::{HashMap, HashSet};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use super::observe;
use super::plan::UnitView;
use crate::api::hsj::{JobBusyMode, JobBusyProbe};
use crate::controller::kept::KeptByObject;
use crate::probe::{BusyState, ProbeCache};

struct Cached {
    job_rv: String,
    /// (UID, resourceVersion) of the unit's pods, in the order they were given.
    pods: Vec<(String, String)>,
    /// The mode and annotation key the view was built with.
    mode: JobBusyMode,
    key: String,
    view: UnitView,
}

impl Cached {
    fn holds(&self, job_rv: &str, pods: &[&Pod], probe: &JobBusyProbe) -> bool {
        self.job_rv == job_rv
            && self.mode == probe.mode
            && self.key == probe.annotation_key
            && self.pods.len() == pods.len()
            && self.pods.iter().zip(pods).all(|((uid, rv), p)| {
                p.metadata.uid.as_deref().unwrap_or_default() == uid
                    && p.metadata.resource_version.as_deref().unwrap_or_default() == rv
            })
    }
}

/// Views by HSJ ("namespace/name"), then by Job UID.
#[derive(Default)]
pub struct ViewCache {
    inner: KeptByObject<Cached>,
}

impl ViewCache {
    /// The views of `jobs` (the HSJ's units; `by_job` their pods by Job UID), reusing what
    /// is unchanged. `ever` holds the UIDs of Jobs ever seen busy; a unit busy now is added.
    ///
    /// Kept views are updated in place (see [`crate::controller::kept`]), and a reused
    /// view's reason string is replaced only when it changed.
    pub fn views<'a>(
        &self,
        key: &str,
        jobs: impl IntoIterator<Item = &'a Job>,
        by_job: &HashMap<&str, Vec<&Pod>>,
        probe: &JobBusyProbe,
        probes: &ProbeCache,
        ever: &mut HashSet<String>,
    ) -> Vec<UnitView> {
        let mut kept = self.inner.take(key);
        let mut out = Vec::with_capacity(kept.len());
        let probed = matches!(probe.mode, JobBusyMode::Http | JobBusyMode::Exec);
        for job in jobs {
            let uid = job.metadata.uid.as_deref().unwrap_or_default();
            let rv = job.metadata.resource_version.as_deref().unwrap_or_default();
            let pods = by_job.get(uid).map(Vec::as_slice).unwrap_or_default();
            let was = ever.contains(uid);
            let mut built = false;
            let build = || {
                built = true;
                let c = Cached {
                    job_rv: rv.to_string(),
                    pods: pods
                        .iter()
                        .map(|p| {
                            let m = &p.metadata;
                            (
                                m.uid.clone().unwrap_or_default(),
                                m.resource_version.clone().unwrap_or_default(),
                            )
                        })
                        .collect(),
                    mode: probe.mode,
                    key: probe.annotation_key.clone(),
                    view: observe::unit_view(job, pods, probe, probes, was),
                };
                (c.view.core.uid.clone(), c)
            };
            let Some(c) = kept.get_or_build(uid, |c| c.holds(rv, pods, probe), build) else {
                continue;
            };
            if !built {
                if probed {
                    let (state, stale, reason) = observe::unit_state(pods, probe, probes);
                    let v = &mut c.view.core;
                    v.state = state;
                    v.stale = stale;
                    if *v.reason != *reason {
                        v.reason = reason.into();
                    }
                }
                c.view.ever_busy = was || c.view.core.state == BusyState::Busy;
            }
            if c.view.ever_busy && !was {
                ever.insert(uid.to_string());
            }
            out.push(c.view.clone());
        }
        self.inner.put(key, kept);
        out
    }

    /// Drop an HSJ's views (it is gone).
    pub fn forget(&self, key: &str) {
        self.inner.forget(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn probe(mode: &str, key: &str) -> JobBusyProbe {
        serde_json::from_value(json!({"mode": mode, "annotationKey": key,
                                      "exec": {"command": ["cat", "/tmp/busy"]}}))
        .unwrap()
    }

    fn job(i: usize, rv: u32, done: bool) -> Job {
        let conditions = if done {
            json!([{"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}])
        } else {
            json!([])
        };
        serde_json::from_value(json!({
            "metadata": {"name": format!("j{i}"), "namespace": "ns", "uid": format!("j{i}"),
                         "resourceVersion": rv.to_string(), "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    fn pod(i: usize, k: usize, rv: u32, busy: bool, running: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("j{i}-p{k}"), "namespace": "ns", "uid": format!("j{i}-p{k}"),
                         "resourceVersion": rv.to_string(),
                         "annotations": {"paia.tech/busy": busy.to_string(), "other/busy": (!busy).to_string()},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": format!("j{i}"),
                                              "uid": format!("j{i}"), "controller": true}]},
            "status": {"phase": if running { "Running" } else { "Pending" }, "podIP": "10.0.0.1",
                       "conditions": [{"type": "Ready", "status": if running { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    /// (job, job rv, done, pods: (pod, rv, busy, running)), a probe answer to flip.
    type Unit = (usize, u32, bool, Vec<(usize, u32, bool, bool)>);

    fn unit() -> impl Strategy<Value = Unit> {
        (
            0usize..5,
            0u32..3,
            any::<bool>(),
            proptest::collection::vec((0usize..2, 0u32..3, any::<bool>(), any::<bool>()), 0..3),
        )
    }

    proptest! {
        /// Over any sequence of unit sets, changes, modes, keys and probe answers, the
        /// cached views equal freshly built ones, and the ever-busy memory grows the same.
        #[test]
        fn a_reused_view_is_what_a_fresh_build_gives(
            rounds in proptest::collection::vec(
                (proptest::collection::vec(unit(), 0..5), 0u8..3, any::<bool>(), any::<bool>()),
                1..6),
        ) {
            let cache = ViewCache::default();
            let probes = ProbeCache::default();
            let (mut ever_cached, mut ever_fresh) = (HashSet::new(), HashSet::new());
            for (units, mode, other_key, probe_busy) in rounds {
                let p = match mode {
                    0 => probe("annotation", if other_key { "other/busy" } else { "paia.tech/busy" }),
                    1 => probe("exec", "paia.tech/busy"),
                    _ => probe("http", "paia.tech/busy"),
                };
                let mut seen = HashSet::new();
                let mut jobs = vec![];
                let mut pods = vec![];
                for (i, rv, done, ps) in units.into_iter().filter(|u| seen.insert(u.0)) {
                    // A change gives a new resourceVersion (what the cache relies on).
                    jobs.push(job(i, rv + 10 * u32::from(done), done));
                    let mut kseen = HashSet::new();
                    for (k, prv, busy, running) in ps.into_iter().filter(|q| kseen.insert(q.0)) {
                        let prv = prv + 10 * u32::from(busy) + 100 * u32::from(running);
                        pods.push(pod(i, k, prv, busy, running));
                    }
                }
                let by_job = observe::pods_by_job(pods.iter());
                // Twice over the same objects: the probe answer flips in between (the
                // pod does not change, so the second build reuses every view).
                for answer in [probe_busy, !probe_busy] {
                    let answer = if answer { BusyState::Busy } else { BusyState::Idle };
                    probes.record("j1-p0", Ok(answer), std::time::Instant::now());
                    let got = cache.views("ns/h", jobs.iter(), &by_job, &p, &probes, &mut ever_cached);
                    let want: Vec<UnitView> = jobs.iter().map(|j| {
                        let uid = j.metadata.uid.as_deref().unwrap_or_default();
                        let ps = by_job.get(uid).map(Vec::as_slice).unwrap_or_default();
                        let u = observe::unit_view(j, ps, &p, &probes, ever_fresh.contains(uid));
                        if u.ever_busy {
                            ever_fresh.insert(uid.to_string());
                        }
                        u
                    }).collect();
                    prop_assert_eq!(got, want);
                    prop_assert_eq!(&ever_cached, &ever_fresh);
                }
            }
        }
    }

    #[test]
    fn a_kept_view_reads_a_changed_probe_answer() {
        let cache = ViewCache::default();
        let probes = ProbeCache::default();
        let p = probe("exec", "paia.tech/busy");
        let j = job(1, 1, false);
        let pods = [pod(1, 0, 1, false, true)];
        let by_job = observe::pods_by_job(pods.iter());
        let mut ever = HashSet::new();
        probes.record("j1-p0", Ok(BusyState::Idle), std::time::Instant::now());
        let v = cache.views("ns/h", [&j], &by_job, &p, &probes, &mut ever);
        assert_eq!(v[0].core.state, BusyState::Idle);
        probes.record("j1-p0", Ok(BusyState::Busy), std::time::Instant::now());
        let v = cache.views("ns/h", [&j], &by_job, &p, &probes, &mut ever);
        assert_eq!(v[0].core.state, BusyState::Busy);
        assert!(v[0].ever_busy && ever.contains("j1"));
    }

    #[test]
    fn gone_units_and_gone_pools_leave_nothing_behind() {
        let cache = ViewCache::default();
        let probes = ProbeCache::default();
        let p = probe("annotation", "paia.tech/busy");
        let (a, b) = (job(1, 1, false), job(2, 1, false));
        let mut ever = HashSet::new();
        let none = HashMap::new();
        cache.views("ns/h", [&a, &b], &none, &p, &probes, &mut ever);
        cache.views("ns/h", [&a], &none, &p, &probes, &mut ever);
        assert_eq!(cache.inner.kept("ns/h"), 1);
        cache.forget("ns/h");
        assert_eq!(cache.inner.objects(), 0);
    }
}
