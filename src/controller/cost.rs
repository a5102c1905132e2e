//! `controller.kubernetes.io/pod-deletion-cost`, shared by every kind that keeps busy pods
//! from a ReplicaSet's scale-down (HotStandbyDeployment, AsyncActor with a busy probe).
//!
//! Invariants:
//! - a busy, unknown or stale pod wants [`COST_PROTECTED`], an idle one [`COST_IDLE`]; a pod
//!   we never wrote carries none (0), so a ReplicaSet removes new pods, then idle ones, and
//!   protected pods last (among pods of equal readiness: it ranks not-ready pods first);
//! - a cost is written only where the pod's differs, with a merge patch of that one
//!   annotation; a pod that is gone is skipped.
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::probe::BusyState;
use crate::Result;

/// The ReplicaSet removes pods with a lower cost first (Kubernetes 1.22+, on by default).
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// pod-deletion-cost of a busy, unknown or stale pod: the ReplicaSet removes it last.
pub const COST_PROTECTED: i32 = 1_000_000;
/// pod-deletion-cost of an idle pod (above a new pod's 0: replacements go first).
pub const COST_IDLE: i32 = 1;

/// The cost a pod in `state` should carry; `stale`: its state is a last-known value.
pub fn wanted_cost(state: BusyState, stale: bool) -> i32 {
    if state == BusyState::Idle && !stale {
        COST_IDLE
    } else {
        COST_PROTECTED
    }
}

/// The cost annotation a pod carries now, if it parses.
pub fn current_cost<P: crate::probe::PodRead + ?Sized>(pod: &P) -> Option<i32> {
    pod.annotation(DELETION_COST)?.parse().ok()
}

/// Write the planned costs (pod name, cost).
pub async fn write_costs<S: AsRef<str>>(api: &Api<Pod>, costs: &[(S, i32)]) -> Result<()> {
    for (name, cost) in costs {
        let patch = json!({"metadata": {"annotations": {DELETION_COST: cost.to_string()}}});
        match api
            .patch(name.as_ref(), &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fresh_idle_pod_is_cheap() {
        assert_eq!(wanted_cost(BusyState::Idle, false), COST_IDLE);
        assert_eq!(wanted_cost(BusyState::Idle, true), COST_PROTECTED);
        assert_eq!(wanted_cost(BusyState::Busy, false), COST_PROTECTED);
        assert_eq!(wanted_cost(BusyState::Unknown, false), COST_PROTECTED);
        let mut p = Pod::default();
        assert_eq!(current_cost(&p), None);
        p.metadata.annotations = Some([(DELETION_COST.to_string(), "7".to_string())].into());
        assert_eq!(current_cost(&p), Some(7));
    }
}
