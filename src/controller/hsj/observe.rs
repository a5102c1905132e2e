//! What the HSJ reconciler sees of its units, from the Job and pod caches. Pure.
//!
//! Invariants:
//! - a pod belongs to the unit whose Job controls it (ownerReference uid), nothing else;
//! - a unit is busy when any of its pods is busy, unknown when any is unknown (and none is
//!   busy), stale when any answer is stale: the most protective answer wins;
//! - a pod that has not started cannot be busy in http/exec mode (its app is not running);
//!   in annotation mode the annotation says, whatever the phase;
//! - a unit is failing when a pod failed or waits for a reason that will not clear by itself
//!   (image pull errors, crash loops, bad config); the reason is kept for status.
use std::collections::HashMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::plan::{Finished, PodView, UnitView};
use crate::api::hsj::{JobBusyMode, JobBusyProbe};
use crate::probe::{self, BusyState, ProbeCache};
use crate::telemetry::cut;

/// Waiting reasons that mean the pod will not start without a change.
const FAILING_WAIT_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Keep only what the reconciler reads of a pod: identity, labels/annotations (short ones),
/// owners, phase, IP, conditions, container names and waiting/terminated reasons.
pub fn strip_pod(pod: &mut Pod) {
    crate::controller::trim_pod_metadata(pod);
    pod.spec = pod.spec.take().map(|s| PodSpec {
        containers: s
            .containers
            .into_iter()
            .map(|c| Container {
                name: c.name,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    pod.status = pod.status.take().map(|s| PodStatus {
        phase: s.phase,
        pod_ip: s.pod_ip,
        reason: s.reason,
        message: s.message.map(|m| cut(&m, 200)),
        conditions: crate::controller::slim_conditions(s.conditions),
        container_statuses: s
            .container_statuses
            .map(|cs| cs.into_iter().map(strip_container_status).collect()),
        ..Default::default()
    });
}

fn strip_container_status(c: ContainerStatus) -> ContainerStatus {
    let state = c.state.map(|mut st| {
        if let Some(w) = st.waiting.as_mut() {
            w.message = w.message.take().map(|m| cut(&m, 200));
        }
        if let Some(t) = st.terminated.as_mut() {
            t.message = t.message.take().map(|m| cut(&m, 200));
        }
        st.running = None;
        st
    });
    ContainerStatus {
        name: c.name,
        state,
        ..Default::default()
    }
}

/// Why this pod will not work without a change, if so.
pub fn failing_reason(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let waiting = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.as_deref()?;
            FAILING_WAIT_REASONS.contains(&reason).then(|| {
                let msg = w.message.as_deref().unwrap_or_default();
                format!(
                    "pod {} container {}: {reason} {msg}",
                    pod.name_any(),
                    c.name
                )
            })
        })
        .next();
    if waiting.is_some() {
        return waiting.map(|w| w.trim_end().to_string());
    }
    (status.phase.as_deref() == Some("Failed")).then(|| {
        let why = status
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.reason.clone())
            .next()
            .or_else(|| status.reason.clone())
            .unwrap_or_else(|| "Failed".into());
        format!("pod {} failed: {why}", pod.name_any())
    })
}

/// How and when the Job finished, if it did (condition Complete or Failed is True).
pub fn finished(job: &Job) -> Option<(Finished, Option<Timestamp>)> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some((Finished::Complete, c.last_transition_time.as_ref())),
            "Failed" => Some((Finished::Failed, c.last_transition_time.as_ref())),
            _ => None,
        })
        .map(|(f, t)| (f, t.map(|t| t.0)))
}

/// The UID of the Job controlling `pod`.
pub fn owner_job(pod: &Pod) -> Option<&str> {
    crate::probe::PodRead::controller_uid(pod, "Job")
}

/// Pods grouped by the UID of their controlling Job.
pub fn pods_by_job<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> HashMap<&'a str, Vec<&'a Pod>> {
    let mut m: HashMap<&str, Vec<&Pod>> = HashMap::new();
    for p in pods {
        if let Some(uid) = owner_job(p) {
            m.entry(uid).or_default().push(p);
        }
    }
    m
}

/// One pod's busy state under the HSJ's probe: (state, stale, reason).
pub fn pod_state(
    pod: &Pod,
    probe: &JobBusyProbe,
    probes: &ProbeCache,
) -> (BusyState, bool, String) {
    if let Some(claim) = crate::api::claim::claimed_by(&pod.metadata) {
        return (BusyState::Busy, false, format!("claimed by {claim}"));
    }
    match probe.mode {
        JobBusyMode::Annotation => {
            let (s, r) = probe::annotation_state(pod, &probe.annotation_key);
            (s, false, r)
        }
        JobBusyMode::Http | JobBusyMode::Exec if !probe::is_running(pod) => (
            BusyState::Idle,
            false,
            "not running: the app cannot be busy".into(),
        ),
        JobBusyMode::Http if probe::pod_ip(pod).is_none() => {
            (BusyState::Idle, false, "no pod IP yet".into())
        }
        JobBusyMode::Http | JobBusyMode::Exec => {
            probes.view(pod.metadata.uid.as_deref().unwrap_or_default())
        }
    }
}

/// A unit's busy state: its live (not terminating) pods' states combined.
pub fn unit_state(
    pods: &[&Pod],
    probe: &JobBusyProbe,
    probes: &ProbeCache,
) -> (BusyState, bool, String) {
    // One pass, no list: the reason of the most protective state is moved, not copied
    // (busy > unknown > idle; between equals, the last pod's reason).
    let mut best: Option<(BusyState, bool, String)> = None;
    let mut stale = false;
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let s = pod_state(p, probe, probes);
        stale |= s.1;
        if best.as_ref().is_none_or(|b| rank(s.0) >= rank(b.0)) {
            best = Some(s);
        }
    }
    match best {
        Some((s, _, r)) => (s, stale, r),
        None => (BusyState::Idle, false, "no pod yet".into()),
    }
}

fn rank(s: BusyState) -> u8 {
    match s {
        BusyState::Busy => 2,
        BusyState::Unknown => 1,
        BusyState::Idle => 0,
    }
}

/// The planner's view of one unit.
pub fn unit_view(
    job: &Job,
    pods: &[&Pod],
    probe: &JobBusyProbe,
    probes: &ProbeCache,
    ever_busy: bool,
) -> UnitView {
    let live: Vec<&&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let (state, stale, reason) = unit_state(pods, probe, probes);
    let (finished, finished_at) = match finished(job) {
        Some((f, t)) => (Some(f), t),
        None => (None, None),
    };
    UnitView {
        core: PodView {
            name: job.name_any().into(),
            uid: job.uid().unwrap_or_default().into(),
            resource_version: job.resource_version().unwrap_or_default().into(),
            created: crate::controller::created_seconds(&job.metadata),
            running: live.iter().any(probe::is_running),
            ready: live
                .iter()
                .any(|p| crate::controller::pod_condition_true(p, "Ready")),
            state,
            stale,
            reason: reason.into(),
            cost: None,
            detached: false,
            current: true,
            ip: live.first().and_then(probe::pod_ip),
        },
        finished,
        finished_at,
        failing: pods.iter().find_map(|p| failing_reason(p)),
        ever_busy: ever_busy || state == BusyState::Busy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn job_pod(name: &str, job_uid: &str, phase: &str, extra: serde_json::Value) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("{name}-uid"),
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j",
                                              "uid": job_uid, "controller": true}]},
            "status": {"phase": phase, "podIP": "127.0.0.1",
                       "conditions": [{"type": "Ready", "status": if phase == "Running" {"True"} else {"False"}}]}
        });
        json_patch::merge(&mut v, &extra);
        pod(v)
    }

    fn job(uid: &str, conditions: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "pool-abc", "namespace": "ns", "uid": uid, "resourceVersion": "7"},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    #[test]
    fn failing_reasons_from_waiting_and_failed_pods() {
        let p = job_pod(
            "a",
            "j1",
            "Pending",
            json!({"status": {"containerStatuses": [
            {"name": "main", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope\""}}}]}}),
        );
        let r = failing_reason(&p).unwrap();
        assert!(r.contains("ImagePullBackOff") && r.contains("nope"), "{r}");
        let p = job_pod(
            "a",
            "j1",
            "Pending",
            json!({"status": {"containerStatuses": [
            {"name": "main", "state": {"waiting": {"reason": "ContainerCreating"}}}]}}),
        );
        assert_eq!(
            failing_reason(&p),
            None,
            "a pod still starting is not failing"
        );
        let p = job_pod(
            "a",
            "j1",
            "Failed",
            json!({"status": {"containerStatuses": [
            {"name": "main", "state": {"terminated": {"reason": "Error", "exitCode": 1}}}]}}),
        );
        assert!(failing_reason(&p).unwrap().contains("failed: Error"));
        assert_eq!(
            failing_reason(&job_pod("a", "j1", "Running", json!({}))),
            None
        );
    }

    #[test]
    fn strip_keeps_what_failing_and_exec_read() {
        let mut p = job_pod(
            "a",
            "j1",
            "Pending",
            json!({
            "metadata": {"managedFields": [{"manager": "x"}], "annotations": {"big": "x".repeat(300), "paia.tech/busy": "true"}},
            "spec": {"containers": [{"name": "main", "image": "busybox", "env": [{"name": "A", "value": "B"}]}]},
            "status": {"containerStatuses": [{"name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImagePull", "message": "m".repeat(1000)}}}]}}),
        );
        let before = failing_reason(&p).unwrap();
        strip_pod(&mut p);
        let after = failing_reason(&p).unwrap();
        assert!(after.contains("ErrImagePull") && after.len() < before.len());
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.containers[0].name, "main");
        assert_eq!(spec.containers[0].image, None);
        assert!(p.metadata.managed_fields.is_none());
        let ann = p.metadata.annotations.as_ref().unwrap();
        assert!(ann.contains_key("paia.tech/busy") && !ann.contains_key("big"));
    }

    #[test]
    fn finished_from_conditions() {
        let j = job(
            "j1",
            json!([{"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]),
        );
        let (f, t) = finished(&j).unwrap();
        assert_eq!(f, Finished::Complete);
        assert_eq!(t.unwrap().to_string(), "2026-01-01T00:00:00Z");
        let j = job("j1", json!([{"type": "Failed", "status": "True"}]));
        assert_eq!(finished(&j), Some((Finished::Failed, None)));
        let j = job(
            "j1",
            json!([{"type": "Suspended", "status": "True"}, {"type": "Complete", "status": "False"}]),
        );
        assert_eq!(finished(&j), None);
    }

    #[test]
    fn a_unit_is_as_busy_as_its_busiest_pod() {
        let probe = JobBusyProbe::default();
        let probes = ProbeCache::default();
        let j = job("j1", json!([]));
        let idle = job_pod("a", "j1", "Running", json!({}));
        let busy = job_pod(
            "b",
            "j1",
            "Running",
            json!({"metadata": {"annotations": {"paia.tech/busy": "TRUE"}}}),
        );
        let u = unit_view(&j, &[&idle, &busy], &probe, &probes, false);
        assert_eq!(u.core.state, BusyState::Busy);
        assert!(u.ever_busy);
        assert_eq!(
            (&*u.core.name, &*u.core.uid, &*u.core.resource_version),
            ("pool-abc", "j1", "7")
        );
        let u = unit_view(&j, &[&idle], &probe, &probes, true);
        assert_eq!(u.core.state, BusyState::Idle);
        assert!(u.ever_busy, "remembered");
        let u = unit_view(&j, &[], &probe, &probes, false);
        assert_eq!((u.core.state, u.core.running), (BusyState::Idle, false));
    }

    #[test]
    fn exec_and_http_units_use_the_probe_cache_once_running() {
        let mut probe = JobBusyProbe {
            mode: JobBusyMode::Exec,
            ..Default::default()
        };
        let probes = ProbeCache::default();
        let j = job("j1", json!([]));
        let running = job_pod("a", "j1", "Running", json!({}));
        let pending = job_pod("b", "j1", "Pending", json!({}));
        assert_eq!(
            unit_view(&j, &[&pending], &probe, &probes, false)
                .core
                .state,
            BusyState::Idle
        );
        assert_eq!(
            unit_view(&j, &[&running], &probe, &probes, false)
                .core
                .state,
            BusyState::Unknown
        );
        probes.record("a-uid", Ok(BusyState::Busy), std::time::Instant::now());
        probes.record("a-uid", Err("timeout".into()), std::time::Instant::now());
        probe.mode = JobBusyMode::Http;
        let u = unit_view(&j, &[&running, &pending], &probe, &probes, false);
        assert_eq!((u.core.state, u.core.stale), (BusyState::Busy, true));
    }

    #[test]
    fn pods_group_by_their_controlling_job() {
        let a = job_pod("a", "j1", "Running", json!({}));
        let b = job_pod("b", "j2", "Running", json!({}));
        let orphan = pod(json!({"metadata": {"name": "c"}}));
        let m = pods_by_job([&a, &b, &orphan]);
        assert_eq!(m.len(), 2);
        assert_eq!(m["j1"][0].name_any(), "a");
    }
}

#[cfg(test)]
mod unit_state_tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::time::Instant;

    /// A running pod with its own probe answer (None: never probed; Some(Err): failing
    /// after a busy answer), maybe terminating.
    fn pod(i: usize, terminating: bool) -> Pod {
        let mut v = json!({
            "metadata": {"name": format!("p{i}"), "namespace": "ns", "uid": format!("p{i}")},
            "status": {"phase": "Running", "podIP": "10.0.0.1"}
        });
        if terminating {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(v).unwrap()
    }

    /// The rule, stated plainly: the most protective live pod's state (busy > unknown >
    /// idle; between equals the last pod's reason), stale if any live pod is stale, and
    /// "no pod yet" idle without a live pod.
    fn oracle(states: &[(BusyState, bool, String)]) -> (BusyState, bool, String) {
        let stale = states.iter().any(|s| s.1);
        match states.iter().max_by_key(|s| rank(s.0)) {
            Some((s, _, r)) => (*s, stale, r.clone()),
            None => (BusyState::Idle, false, "no pod yet".into()),
        }
    }

    proptest! {
        #[test]
        fn a_unit_is_as_busy_as_its_most_protective_live_pod(
            pods in proptest::collection::vec((0u8..4, any::<bool>()), 0..5),
        ) {
            let probe: JobBusyProbe = serde_json::from_value(json!({
                "mode": "exec", "exec": {"command": ["cat", "/tmp/busy"]}})).unwrap();
            let probes = ProbeCache::default();
            let at = Instant::now();
            let objs: Vec<Pod> = pods.iter().enumerate().map(|(i, (answer, term))| {
                let uid = format!("p{i}");
                match answer {
                    0 => {}
                    1 => { probes.record(&uid, Ok(BusyState::Idle), at); }
                    2 => { probes.record(&uid, Ok(BusyState::Busy), at); }
                    _ => {
                        probes.record(&uid, Ok(BusyState::Busy), at);
                        probes.record(&uid, Err(format!("timeout {i}")), at);
                    }
                }
                pod(i, *term)
            }).collect();
            let refs: Vec<&Pod> = objs.iter().collect();
            let live: Vec<_> = objs.iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| pod_state(p, &probe, &probes))
                .collect();
            prop_assert_eq!(unit_state(&refs, &probe, &probes), oracle(&live));
        }
    }
}
