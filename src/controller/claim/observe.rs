//! Pure: cached objects → the binder's facts ([`bind::World`]). No I/O.
//!
//! Invariants:
//! - a pod is a candidate only when its pool's busy source says idle *and* sure: an http
//!   or exec result that is unknown, failing or stale counts as busy here (never hand out a
//!   pod we are not sure about), whatever the pool itself counts it as;
//! - a pod carrying a claim is busy for every mode (see `api::claim::claimed_by`);
//! - the kind a claim names is matched exactly as [`PoolKind::parse`] reads it.
use kube::ResourceExt;

use super::bind::{ClaimFacts, PodFacts, PoolState};
use super::pod::PoolPod;
use crate::api::claim::{
    reason, spec_problem, ClaimPhase, HotStandbyClaim, HotStandbyClaimStatus, PoolKind,
    ReleasePolicy, CLAIM_ANNOTATION, CLAIM_RELEASE_ANNOTATION, CLAIM_UID_ANNOTATION,
};
use crate::api::tags::Tags;
use crate::api::{condition, HotStandbyDeployment, HotStandbyJob};
use crate::probe::{BusyState, ProbeCache};

/// The pool a claim names: (namespace, kind as it names it, name). A kind we know is
/// written the canonical way, so `hsd` and `HotStandbyDeployment` are one pool.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

impl PoolKey {
    pub fn new(namespace: &str, kind: &str, name: &str) -> Self {
        let kind = PoolKind::parse(kind)
            .map(|k| k.as_str().to_string())
            .unwrap_or_else(|| kind.to_string());
        PoolKey {
            namespace: namespace.to_string(),
            kind,
            name: name.to_string(),
        }
    }

    pub fn of_claim(c: &HotStandbyClaim) -> Option<Self> {
        let ns = c.metadata.namespace.as_deref()?;
        Some(PoolKey::new(
            ns,
            &c.spec.pool_ref.kind,
            &c.spec.pool_ref.name,
        ))
    }

    /// The pool of a pod, from the name label its pool's controller puts on it.
    pub fn of_pod(p: &PoolPod) -> Option<Self> {
        let ns = p.meta.namespace.as_deref()?;
        if let Some(n) = p.label(crate::api::hsd::NAME_LABEL) {
            return Some(PoolKey::new(ns, PoolKind::HotStandbyDeployment.as_str(), n));
        }
        let n = p.label(crate::api::hsj::NAME_LABEL)?;
        Some(PoolKey::new(ns, PoolKind::HotStandbyJob.as_str(), n))
    }

    pub fn kind(&self) -> Option<PoolKind> {
        PoolKind::parse(&self.kind)
    }
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

/// How a pool tells busy from idle, as far as claiming reads it.
pub enum BusySource<'a> {
    Annotation(&'a str),
    /// http or exec: the shared probe cache.
    Probe,
}

/// What both pool kinds share for claiming: InvalidSpec condition, busy source, maximum.
fn pool_state<'a>(
    kind: PoolKind,
    conditions: Option<&'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
    src: BusySource<'a>,
    max: i32,
    live_pods: usize,
) -> (PoolState, Option<BusySource<'a>>) {
    if let Some(c) = conditions.and_then(|cs| condition(cs, "InvalidSpec")) {
        if c.status == "True" {
            return (PoolState::Invalid(c.message.clone()), None);
        }
    }
    let ready = PoolState::Ready {
        kind,
        at_max: live_pods as i64 >= max as i64,
        max_replicas: max,
    };
    (ready, Some(src))
}

/// The pool's state, and its busy source when it exists.
pub fn hsd_state<'a>(
    hsd: Option<&'a HotStandbyDeployment>,
    live_pods: usize,
) -> (PoolState, Option<BusySource<'a>>) {
    let Some(h) = hsd else {
        return (PoolState::NotFound, None);
    };
    let src = match h.spec.busy_probe.mode {
        crate::api::probe::BusyMode::Annotation => {
            BusySource::Annotation(&h.spec.busy_probe.annotation_key)
        }
        _ => BusySource::Probe,
    };
    let conditions = h.status.as_ref().map(|s| s.conditions.as_slice());
    let kind = PoolKind::HotStandbyDeployment;
    pool_state(kind, conditions, src, h.spec.max_replicas, live_pods)
}

/// [`hsd_state`] for a HotStandbyJob.
pub fn hsj_state<'a>(
    hsj: Option<&'a HotStandbyJob>,
    live_pods: usize,
) -> (PoolState, Option<BusySource<'a>>) {
    let Some(h) = hsj else {
        return (PoolState::NotFound, None);
    };
    let src = match h.spec.busy_probe.mode {
        crate::api::hsj::JobBusyMode::Annotation => {
            BusySource::Annotation(&h.spec.busy_probe.annotation_key)
        }
        _ => BusySource::Probe,
    };
    let conditions = h.status.as_ref().map(|s| s.conditions.as_slice());
    let kind = PoolKind::HotStandbyJob;
    pool_state(kind, conditions, src, h.spec.max_replicas, live_pods)
}

fn annotation<'a>(p: &'a PoolPod, key: &str) -> Option<&'a str> {
    p.annotation(key)
}

/// One pod's facts under its pool's busy source (None: the pool is not there).
pub fn pod_facts(p: &PoolPod, src: Option<&BusySource<'_>>, probes: &ProbeCache) -> PodFacts {
    let phase = p.phase();
    let claim = match (
        annotation(p, CLAIM_ANNOTATION),
        annotation(p, CLAIM_UID_ANNOTATION),
    ) {
        (Some(c), Some(u)) if !c.trim().is_empty() => {
            Some((c.trim().to_string(), u.trim().to_string()))
        }
        _ => None,
    };
    let uid = p.meta.uid.clone().unwrap_or_default();
    let busy = claim.is_some()
        || match src {
            Some(BusySource::Annotation(key)) => {
                annotation(p, key).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            }
            Some(BusySource::Probe) => {
                let (state, stale, _) = probes.view(&uid);
                state != BusyState::Idle || stale
            }
            None => true,
        };
    let job = p
        .owners
        .iter()
        .find(|r| r.controls_as("Job"))
        .map(|r| (r.name.to_string(), r.uid.to_string()));
    PodFacts {
        name: p.name_any(),
        uid,
        resource_version: p.meta.resource_version.clone().unwrap_or_default(),
        node: p.node().map(str::to_string),
        ip: p.ip().map(|ip| ip.to_string()),
        created: crate::controller::created_seconds(&p.meta),
        running: phase == Some("Running"),
        ready: p.condition("Ready"),
        terminating: p.meta.deletion_timestamp.is_some(),
        busy,
        claim,
        release: annotation(p, CLAIM_RELEASE_ANNOTATION)
            .map(ReleasePolicy::parse)
            .unwrap_or_default(),
        finished: matches!(phase, Some("Succeeded") | Some("Failed")),
        job,
    }
}

/// One claim's facts; `status` is the one to start from (what we last wrote, if newer
/// than the cache), `seen`: the order in which this process first saw it.
pub fn claim_facts(
    c: &HotStandbyClaim,
    status: Option<&HotStandbyClaimStatus>,
    seen: u64,
) -> ClaimFacts {
    let st = status.cloned().unwrap_or_default();
    let reason = st
        .conditions
        .iter()
        .find(|c| c.type_ == crate::api::claim::BOUND_CONDITION)
        .map(|c| c.reason.clone());
    let created = c
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_default();
    ClaimFacts {
        name: c.name_any(),
        uid: c.metadata.uid.clone().unwrap_or_default(),
        created,
        seen,
        problem: spec_problem(&c.spec),
        wait_seconds: c.spec.wait_seconds,
        ttl_seconds: c.spec.ttl_seconds,
        release: c.spec.release,
        phase: st.phase,
        reason,
        bound_pod: st.pod.as_ref().map(|p| p.uid.clone()),
        bound_at: st.bound_at.as_ref().map(|t| t.0),
    }
}

/// Is this claim waiting with `reason` already (nothing new to say)?
pub fn waiting_with(c: &ClaimFacts, why: &str) -> bool {
    c.phase == ClaimPhase::Pending && c.reason.as_deref() == Some(why) && why != reason::BOUND
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> PoolPod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_pod_maps_to_its_pool_by_label_and_kinds_are_canonical() {
        let p = pod(
            json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"hsd.paia.tech/name": "web"}}}),
        );
        assert_eq!(PoolKey::of_pod(&p), Some(PoolKey::new("ns", "hsd", "web")));
        assert_eq!(
            PoolKey::new("ns", "hsd", "web").kind,
            "HotStandbyDeployment"
        );
        let j = pod(
            json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"hsj.paia.tech/name": "ci"}}}),
        );
        assert_eq!(PoolKey::of_pod(&j).unwrap().kind, "HotStandbyJob");
        assert_eq!(PoolKey::new("ns", "Foo", "x").kind(), None);
    }

    #[test]
    fn only_a_sure_idle_pod_is_not_busy() {
        let probes = ProbeCache::default();
        let base = json!({"metadata": {"name": "a", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                "annotations": {"paia.tech/busy": "false"}},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}});
        let src = BusySource::Annotation("paia.tech/busy");
        let f = pod_facts(&pod(base.clone()), Some(&src), &probes);
        assert!(f.running && f.ready && !f.busy && f.claim.is_none());
        assert_eq!(
            (f.node.as_deref(), f.ip.as_deref()),
            (Some("n1"), Some("10.0.0.1"))
        );
        // Probe mode with no result yet: not sure → busy.
        let f = pod_facts(&pod(base.clone()), Some(&BusySource::Probe), &probes);
        assert!(f.busy);
        probes.record("u1", Ok(BusyState::Idle), std::time::Instant::now());
        let f = pod_facts(&pod(base.clone()), Some(&BusySource::Probe), &probes);
        assert!(!f.busy, "a fresh idle result");
        // A claim makes it busy whatever the source says.
        let mut claimed = base;
        claimed["metadata"]["annotations"][CLAIM_ANNOTATION] = json!("ns/c");
        claimed["metadata"]["annotations"][CLAIM_UID_ANNOTATION] = json!("cu");
        claimed["metadata"]["annotations"][CLAIM_RELEASE_ANNOTATION] = json!("Recycle");
        let f = pod_facts(&pod(claimed), Some(&src), &probes);
        assert!(f.busy);
        assert_eq!(f.claim, Some(("ns/c".into(), "cu".into())));
        assert_eq!(f.release, ReleasePolicy::Recycle);
    }
}
