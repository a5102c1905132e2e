//! Pure: the Events one HSD reconcile publishes, decided from the plan and what the writes
//! achieved (the shell publishes them, in this order). Each says the numbers it acted on.
use serde::Serialize;

use super::apply::Outcome;
use super::plan::{Direction, Plan};
use crate::api::hsd::BusyMode;
use crate::controller::shell::Note;

/// What happened besides the plan: the child's replica count before the writes, and
/// whether a scale-down was already pending (its event is said once).
pub struct Before {
    pub child: String,
    pub replicas: i32,
    pub was_pending: bool,
}

/// The events, in order: a reverted foreign scale, detached and retired pods, the scale
/// itself (only when the child was written), a newly pending scale-down.
pub fn notes(plan: &Plan<'_>, done: &Outcome, before: &Before) -> Vec<Note> {
    let numbers = format!(
        "busy={} idle={} desired={}",
        plan.busy, plan.idle, plan.desired
    );
    let (child, replicas) = (&before.child, done.replicas);
    let mut notes = vec![];
    if let Some((ours, theirs)) = plan.foreign {
        notes.push(Note::warning(
            "ForeignScaleReverted",
            format!("spec.replicas of {child} was changed from {ours} to {theirs} by another actor; set back to {replicas} ({numbers})"),
        ));
    }
    for pod in &done.pods.detached {
        notes.push(Note::normal(
            "BusyPodDetached",
            format!("{numbers}: busy pod {pod} of an old template revision left its ReplicaSet; it is deleted once idle"),
        ));
    }
    for pod in &done.pods.retired {
        notes.push(Note::normal(
            "DetachedPodRetired",
            format!("{numbers}: detached pod {pod} is idle now and was deleted"),
        ));
    }
    if let (true, Some(direction)) = (done.wrote_child, plan.direction) {
        let reason = match direction {
            Direction::Down => "ScaledDown",
            Direction::Up => "ScaledUp",
        };
        let mut note = format!("{numbers}: replicas {} -> {replicas}", before.replicas);
        if !done.pods.deleted.is_empty() {
            note.push_str(&format!(
                "; deleted idle pods {}",
                done.pods.deleted.join(", ")
            ));
        }
        if done.pods.kept > 0 {
            note.push_str(&format!(
                "; kept {} pod(s) that changed since observed",
                done.pods.kept
            ));
        }
        notes.push(Note::normal(reason, note));
    }
    if let (Some(due), false) = (plan.pending_due, before.was_pending) {
        notes.push(Note::normal(
            "ScaleDownPending",
            format!("{numbers}: scaling down from {replicas} at {due} unless desired rises"),
        ));
    }
    notes
}

/// What `/debug/state` shows of one HSD's last reconcile besides its pod views (which are
/// kept as they are and rendered only when the endpoint is read: at 10,000 pods,
/// serializing them on every reconcile cost more than the whole observe + plan).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DebugHead<'a> {
    pub mode: BusyMode,
    pub plan: &'a Plan<'a>,
    pub replicas_written: i32,
    pub at: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::hsd::apply::Applied;

    fn plan() -> Plan<'static> {
        Plan {
            busy: 2,
            idle: 1,
            unknown: 0,
            stale: 0,
            desired: 4,
            limited: false,
            replicas: 4,
            victims: vec![],
            pending_since: None,
            pending_due: None,
            direction: Some(Direction::Up),
            foreign: Some((3, 7)),
            requeue_after: None,
            costs: vec![],
            detach: vec![],
            retire: vec![],
            hold_template: false,
            held: None,
            detached: vec![],
        }
    }

    #[test]
    fn the_debug_entry_renders_what_the_reconcile_saw() {
        use crate::controller::pool::PodView;
        let view = |name: &str, state| PodView {
            name: name.into(),
            uid: format!("u-{name}").into(),
            resource_version: "7".into(),
            created: 5,
            running: true,
            ready: false,
            state,
            stale: false,
            reason: "annotation".into(),
            cost: Some(3),
            detached: false,
            current: true,
            ip: None,
        };
        let pods = vec![
            view("p-1", crate::probe::BusyState::Busy),
            view("p-2", crate::probe::BusyState::Idle),
        ];
        let mut p = plan();
        p.costs = vec![("p-2", -1)];
        // What every reconcile recorded before (the whole record as one value).
        let want = serde_json::json!({
            "mode": BusyMode::Http, "plan": p, "pods": pods,
            "replicasWritten": 4, "at": "2026-01-01T00:00:00Z",
        });
        let head = DebugHead {
            mode: BusyMode::Http,
            plan: &p,
            replicas_written: 4,
            at: "2026-01-01T00:00:00Z".into(),
        };
        let debug = crate::state::DebugState::default();
        debug.set_with_list(
            "hsd/ns/g".into(),
            crate::state::json_text(&head),
            "pods",
            pods.clone(),
        );
        let got = debug.snapshot()["hsd/ns/g"].clone();
        assert_eq!(got, want);
        assert_eq!(got["plan"]["costs"], serde_json::json!([["p-2", -1]]));
    }

    fn before() -> Before {
        Before {
            child: "web-workload".into(),
            replicas: 3,
            was_pending: false,
        }
    }

    #[test]
    fn events_come_in_order_with_their_numbers() {
        let done = Outcome {
            pods: Applied {
                detached: vec!["a".into()],
                retired: vec!["b".into()],
                deleted: vec![],
                kept: 0,
            },
            replicas: 4,
            wrote_child: true,
            child_written_at: None,
        };
        let n = notes(&plan(), &done, &before());
        let reasons: Vec<&str> = n.iter().map(|n| &*n.reason).collect();
        assert_eq!(
            reasons,
            [
                "ForeignScaleReverted",
                "BusyPodDetached",
                "DetachedPodRetired",
                "ScaledUp"
            ]
        );
        assert!(n[0].warning && !n[3].warning);
        assert_eq!(n[3].message, "busy=2 idle=1 desired=4: replicas 3 -> 4");
        assert!(n[0]
            .message
            .contains("from 3 to 7 by another actor; set back to 4"));
    }

    #[test]
    fn no_scale_event_without_a_child_write_and_pending_said_once() {
        let mut p = plan();
        p.foreign = None;
        p.pending_due = Some(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let done = Outcome {
            replicas: 4,
            ..Default::default()
        };
        let n = notes(&p, &done, &before());
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].reason, "ScaleDownPending");
        let again = Before {
            was_pending: true,
            ..before()
        };
        assert!(notes(&p, &done, &again).is_empty());
    }
}
