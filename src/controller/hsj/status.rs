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
        conditions: prev.conditions,
    };
    let c = &mut st.conditions;
    set_condition(c, INVALID_SPEC, false, "Valid", "spec is valid", g, now);
    let (ok, reason) = match (ready >= plan.desired, plan.active >= plan.desired) {
        (true, _) => (true, "PoolReady"),
        (false, true) => (false, "UnitsStarting"),
        (false, false) => (false, "Scaling"),
    };
    let msg = format!(
        "{ready} of {} desired Jobs ready (busy {}, idle {})",
        plan.desired, plan.busy, plan.idle
    );
    set_condition(c, READY, ok, reason, msg, g, now);
    let spec = &hsj.spec;
    let (limited, reason, msg) = match plan.limited {
        true if plan.desired == spec.max_replicas => (
            true,
            "MaxReplicas",
            format!(
                "busy + idleTarget = {} is above maxReplicas {}",
                plan.busy + spec.idle_target,
                spec.max_replicas
            ),
        ),
        true => (
            true,
            "MinReplicas",
            format!(
                "busy + idleTarget = {} is below minReplicas {}",
                plan.busy + spec.idle_target,
                spec.min_replicas
            ),
        ),
        false => (
            false,
            "WithinBounds",
            "busy + idleTarget is within minReplicas..maxReplicas".to_string(),
        ),
    };
    set_condition(c, SCALING_LIMITED, limited, reason, msg, g, now);
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
    set_condition(c, PROBE_DEGRADED, degraded, reason, msg, g, now);
    let (failing, reason, msg) = match (f.consecutive > 0, plan.backoff_until) {
        (true, until) => {
            let why = f
                .last_reason
                .clone()
                .unwrap_or_else(|| "a Job failed".into());
            let next = until
                .map(|t| format!("; next Job not before {t}"))
                .unwrap_or_default();
            (
                true,
                "UnitsFailing",
                format!(
                    "{} Job(s) in a row failed before being busy: {why}{next}",
                    f.consecutive
                ),
            )
        }
        (false, _) => (
            false,
            "NoFailures",
            "no Job failed before being busy".to_string(),
        ),
    };
    set_condition(c, UNITS_FAILING, failing, reason, msg, g, now);
    st
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
