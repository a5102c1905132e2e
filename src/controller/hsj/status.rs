//! The HSJ's status from a plan. Pure.
//!
//! Invariants: the status is written whole (the shell removes what is no longer set, e.g.
//! `scaleDownPendingSince` once the surplus is gone); a condition keeps its transition time
//! while its status does not change; every condition names the numbers behind it.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::plan::Plan;
use crate::api::hsj::{HotStandbyJob, HotStandbyJobStatus};
use crate::api::{condition, set_condition};

pub const READY: &str = "Ready";
pub const SCALING_LIMITED: &str = "ScalingLimited";
pub const PROBE_DEGRADED: &str = "ProbeDegraded";
pub const UNITS_FAILING: &str = "UnitsFailing";
pub const INVALID_SPEC: &str = "InvalidSpec";

/// Did the API server refuse this generation's Job?
pub fn rejected(hsj: &HotStandbyJob) -> bool {
    hsj.status
        .as_ref()
        .and_then(|s| s.rejected_generation)
        .is_some_and(|g| Some(g) == hsj.metadata.generation)
}

/// Is `ProbeDegraded` True for lack of `pods/exec`?
pub fn probe_forbidden(conds: &[Condition]) -> bool {
    condition(conds, PROBE_DEGRADED)
        .is_some_and(|c| c.status == "True" && c.reason == "ProbeForbidden")
}

/// The status after a reconcile that acted on `plan`; `ready` counts active units with a
/// ready pod; `forbidden` is the API server's refusal of `pods/exec`, if any.
pub fn build(
    hsj: &HotStandbyJob,
    plan: &Plan<'_>,
    ready: i32,
    forbidden: Option<&str>,
    now: &Time,
) -> HotStandbyJobStatus {
    let prev = hsj.status.clone().unwrap_or_default();
    let g = hsj.metadata.generation;
    let f = &plan.failures;
    let mut st = HotStandbyJobStatus {
        observed_generation: g,
        busy_count: plan.busy,
        idle_count: plan.idle,
        desired_replicas: plan.desired,
        unknown_count: plan.unknown,
        replicas: plan.active,
        completed_count: plan.completed,
        failed_count: plan.failed,
        consecutive_failures: (f.consecutive > 0).then_some(f.consecutive),
        last_failure_time: f.last_at.filter(|_| f.consecutive > 0).map(Time),
        scale_down_pending_since: plan.pending_since.map(Time),
        rejected_generation: None,
        held_pods: vec![],
        claimed_count: prev.claimed_count,
        pending_claims: prev.pending_claims,
        exhausted_claims: prev.exhausted_claims,
        conditions: prev.conditions,
    };
    let conds = [
        (INVALID_SPEC, false, "Valid", "spec is valid".to_string()),
        ready_condition(plan, ready),
        limits_condition(hsj, plan),
        probe_condition(plan, forbidden),
        failing_condition(plan),
    ];
    for (type_, ok, reason, msg) in conds {
        set_condition(&mut st.conditions, type_, ok, reason, msg, g, now);
    }
    st
}

/// One condition: type, status, reason, message.
type Cond = (&'static str, bool, &'static str, String);

fn ready_condition(plan: &Plan<'_>, ready: i32) -> Cond {
    let (ok, reason) = match (ready >= plan.desired, plan.active >= plan.desired) {
        (true, _) => (true, "PoolReady"),
        (false, true) => (false, "UnitsStarting"),
        (false, false) => (false, "Scaling"),
    };
    let msg = format!(
        "{ready} of {} desired Jobs ready (busy {}, idle {})",
        plan.desired, plan.busy, plan.idle
    );
    (READY, ok, reason, msg)
}

fn limits_condition(hsj: &HotStandbyJob, plan: &Plan<'_>) -> Cond {
    let spec = &hsj.spec;
    let raw = plan.busy + spec.idle_target;
    let (limited, reason, msg) = match plan.limited {
        true if plan.desired == spec.max_replicas => (
            true,
            "MaxReplicas",
            format!(
                "busy + idleTarget = {raw} is above maxReplicas {}",
                spec.max_replicas
            ),
        ),
        true => (
            true,
            "MinReplicas",
            format!(
                "busy + idleTarget = {raw} is below minReplicas {}",
                spec.min_replicas
            ),
        ),
        false => (
            false,
            "WithinBounds",
            "busy + idleTarget is within minReplicas..maxReplicas".to_string(),
        ),
    };
    (SCALING_LIMITED, limited, reason, msg)
}

fn probe_condition(plan: &Plan<'_>, forbidden: Option<&str>) -> Cond {
    let (degraded, reason, msg) = match (forbidden, plan.stale) {
        (Some(m), _) => (
            true,
            "ProbeForbidden",
            format!("the API server refused pods/exec: {m}; grant it (Helm: hsj.execProbe=true)"),
        ),
        (None, n) if n > 0 => (
            true,
            "ProbeFailing",
            format!(
                "{n} Job(s) keep their last known state: their probe fails; they are not deleted"
            ),
        ),
        _ => (false, "ProbesHealthy", "busy probes answer".to_string()),
    };
    (PROBE_DEGRADED, degraded, reason, msg)
}

fn failing_condition(plan: &Plan<'_>) -> Cond {
    let f = &plan.failures;
    if f.consecutive == 0 {
        let msg = "no Job failed before being busy".to_string();
        return (UNITS_FAILING, false, "NoFailures", msg);
    }
    let why = f
        .last_reason
        .clone()
        .unwrap_or_else(|| "a Job failed".into());
    let next = plan
        .backoff_until
        .map(|t| format!("; next Job not before {t}"))
        .unwrap_or_default();
    let msg = format!(
        "{} Job(s) in a row failed before being busy: {why}{next}",
        f.consecutive
    );
    (UNITS_FAILING, true, "UnitsFailing", msg)
}

/// The status of a spec we cannot act on (bad input, or a Job the API server refused).
pub fn invalid(
    hsj: &HotStandbyJob,
    reason: &str,
    message: &str,
    now: &Time,
) -> HotStandbyJobStatus {
    let mut st = hsj.status.clone().unwrap_or_default();
    let g = hsj.metadata.generation;
    st.observed_generation = g;
    st.rejected_generation = (reason == "TemplateRejected").then_some(g).flatten();
    set_condition(
        &mut st.conditions,
        INVALID_SPEC,
        true,
        reason,
        message,
        g,
        now,
    );
    set_condition(&mut st.conditions, READY, false, reason, message, g, now);
    st
}
