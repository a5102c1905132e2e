//! The pure core of the HotStandbyDeployment reconciler: from what was observed, decide
//! the replica count, which idle pods to delete, the pod-deletion-costs to keep, which busy
//! pods to take out of an old ReplicaSet, and the new status. No I/O.
//!
//! How a busy pod is kept from every remover:
//! - *our scale-down* deletes only current idle pods (victims), with a UID + resourceVersion
//!   precondition, before lowering replicas. Deleting them ourselves stays even with costs
//!   set: the precondition is the only guard against a pod that turned busy after we looked
//!   (a cost written a moment later would lose that race), and the replacements the
//!   ReplicaSet may create meanwhile are new, pending and cost-less, so it removes those;
//! - *the ReplicaSet* (which, after our deletes, may already have made replacements, and
//!   which picks among equally ready pods by `controller.kubernetes.io/pod-deletion-cost`
//!   before age, then at random across similar ages): every counted pod carries a cost,
//!   protected (busy, unknown, stale) pods [`COST_PROTECTED`], idle ones [`COST_IDLE`], and a
//!   new pod none (0), so whatever the ReplicaSet removes is idle or new. The ReplicaSet ranks
//!   not-ready pods before any cost, so a due scale-down is *held* while a protected pod is
//!   not running and ready;
//! - *a rollout* (a changed pod template: the Deployment scales its old ReplicaSet to 0):
//!   before the new template is applied, protected pods are *detached* from their
//!   ReplicaSet (their `pod-template-hash` label no longer matches, so the ReplicaSet orphans
//!   them and makes a replacement at the old revision, which the rollout then replaces at the
//!   Deployment's pace); a pod of an old revision that becomes busy during the rollout is
//!   detached too. Detached pods keep counting (they are owned by the HSD) and are deleted
//!   once idle. The child keeps `maxUnavailable: 0`, so capacity never drops below replicas.
//!   Detaching was chosen over pausing the rollout because a busy pod can stay busy for
//!   hours: the rest of the workload moves to the new template meanwhile.
//!
//! Rules that hold for every input (property-tested below):
//! - a busy, unknown or stale pod is never a victim, never retired, and always has the
//!   protected cost planned;
//! - desired = clamp(busy + idleTarget, minReplicas, maxReplicas);
//! - a scale-down happens only once desired has stayed lower for scaleDownDelaySeconds;
//! - replicas are never lowered while a protected pod is not running and ready;
//! - the replica count written never drops below the pods we could not delete.
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::api::hsd::HotStandbyDeploymentSpec;
use crate::api::pool::Pooled;
use crate::api::probe::BusyMode;

pub use crate::probe::BusyState;

pub use crate::controller::cost::{COST_IDLE, COST_PROTECTED};
pub use crate::controller::pool::{choose_victims, victim_order, PodView, Victim};

/// What was observed for one HSD.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub spec: &'a HotStandbyDeploymentSpec,
    /// The child Deployment's spec.replicas, None when the child does not exist yet.
    pub current_replicas: Option<i32>,
    /// The replica count we last wrote (annotation on the child), if any.
    pub our_replicas: Option<i32>,
    pub pods: &'a [PodView],
    /// Since when desired has been lower (from status).
    pub pending_since: Option<Timestamp>,
    pub now: Timestamp,
    /// The child's pod template differs from the spec's (a rollout is about to start).
    pub template_changed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan<'a> {
    pub busy: i32,
    pub idle: i32,
    pub unknown: i32,
    pub stale: i32,
    /// clamp(busy + idleTarget, min, max).
    pub desired: i32,
    /// True when min/max changed busy + idleTarget.
    pub limited: bool,
    /// The replica count to write.
    pub replicas: i32,
    /// Idle pods to delete (before lowering replicas).
    pub victims: Vec<Victim<'a>>,
    /// A scale-down waiting for the delay to pass (kept in status).
    pub pending_since: Option<Timestamp>,
    /// When the pending scale-down becomes due.
    pub pending_due: Option<Timestamp>,
    /// Set when the replica count changes.
    pub direction: Option<Direction>,
    /// Another actor changed spec.replicas: (ours, theirs).
    pub foreign: Option<(i32, i32)>,
    /// Come back after this long (pending scale-down).
    pub requeue_after: Option<Duration>,
    /// pod-deletion-costs to write (pod, cost): only where the pod's differs.
    pub costs: Vec<(&'a str, i32)>,
    /// Protected pods of an old (or about to be old) revision: take them out of their ReplicaSet.
    pub detach: Vec<Victim<'a>>,
    /// Detached pods that are idle now: delete them.
    pub retire: Vec<Victim<'a>>,
    /// Do not apply the changed template yet: protected pods are detached first.
    pub hold_template: bool,
    /// Why a due scale-down is held.
    pub held: Option<String>,
    /// Names of the detached pods that still count (busy, unknown or stale).
    pub detached: Vec<&'a str>,
}

/// Problems that stop the reconciler from acting on a spec.
pub fn validate(spec: &HotStandbyDeploymentSpec) -> Vec<String> {
    let mut errors = spec.pool().validate();
    if spec.selector.match_labels.is_empty() {
        errors.push("selector.matchLabels must not be empty (it would select every pod)".into());
    }
    if spec.busy_probe.mode == BusyMode::Http {
        errors.extend(spec.busy_probe.http.problems());
    }
    errors
}

/// desired = clamp(busy + idleTarget, min, max), saturating.
pub fn desired(busy: i32, spec: &HotStandbyDeploymentSpec) -> i32 {
    spec.pool().desired(busy)
}

pub fn plan<'a>(o: &Observed<'a>) -> Plan<'a> {
    let (mut busy, mut idle, mut unknown, mut stale) = (0i32, 0i32, 0i32, 0i32);
    for p in o.pods {
        match p.state {
            BusyState::Busy => busy += 1,
            BusyState::Idle => idle += 1,
            BusyState::Unknown => unknown += 1,
        }
        stale += i32::from(p.stale);
    }
    let d = desired(busy, o.spec);
    let limited = d != busy.saturating_add(o.spec.idle_target.max(0));

    // Detached pods live outside the child: protected ones still count, idle ones go.
    let (detached, child): (Vec<&PodView>, Vec<&PodView>) = o.pods.iter().partition(|p| p.detached);
    let retire: Vec<Victim> = detached
        .iter()
        .filter(|p| p.deletable())
        .map(|p| p.victim())
        .collect();
    let still_detached: Vec<&str> = detached
        .iter()
        .filter(|p| !p.deletable())
        .map(|p| &*p.name)
        .collect();
    let d_child = (d - still_detached.len() as i32).max(0);

    // The count we stand by: what we last wrote, else what the child has.
    let ours = o.our_replicas.or(o.current_replicas).unwrap_or(0);
    let foreign = match (o.current_replicas, o.our_replicas) {
        (Some(c), Some(w)) if c != w => Some((w, c)),
        _ => None,
    };
    let (target, mut timing) = delayed_target(o, d_child, ours);
    let lowered = lower(o, &child, target, ours, &mut timing);
    let direction = match (o.current_replicas, lowered.replicas.cmp(&ours)) {
        (None, _) => Some(Direction::Up),
        (_, std::cmp::Ordering::Greater) => Some(Direction::Up),
        (_, std::cmp::Ordering::Less) => Some(Direction::Down),
        _ => None,
    };

    // Protected pods of an old revision leave their ReplicaSet before a rollout can
    // remove them; a changed template waits until every protected pod has left.
    let detach: Vec<Victim> = child
        .iter()
        .filter(|p| !p.deletable() && (o.template_changed || !p.current))
        .map(|p| p.victim())
        .collect();
    let hold_template = o.template_changed && !detach.is_empty();
    let costs = costs(&child, &lowered.victims);
    Plan {
        busy,
        idle,
        unknown,
        stale,
        desired: d,
        limited,
        replicas: lowered.replicas,
        victims: lowered.victims,
        pending_since: timing.pending_since,
        pending_due: timing.pending_due,
        direction,
        foreign,
        requeue_after: timing.requeue_after,
        costs,
        detach,
        retire,
        hold_template,
        held: lowered.held,
        detached: still_detached,
    }
}

/// A pending scale-down's memory and wake-up.
#[derive(Default)]
struct Timing {
    pending_since: Option<Timestamp>,
    pending_due: Option<Timestamp>,
    requeue_after: Option<Duration>,
}

/// The count to move to now: `d_child`, unless it is lower than `ours` and the
/// scale-down delay has not passed (then `ours`, with the pending memory).
fn delayed_target(o: &Observed<'_>, d_child: i32, ours: i32) -> (i32, Timing) {
    if o.current_replicas.is_none() || d_child >= ours {
        return (d_child, Timing::default());
    }
    let since = o.pending_since.unwrap_or(o.now);
    let delay = Duration::from_secs(o.spec.scale_down_delay_seconds.max(0) as u64);
    let due = since.checked_add(delay).unwrap_or(since);
    if o.now >= due {
        return (d_child, Timing::default());
    }
    let timing = Timing {
        pending_since: Some(since),
        pending_due: Some(due),
        requeue_after: Some(Duration::try_from(due.duration_since(o.now)).unwrap_or(delay)),
    };
    (ours, timing)
}

/// How a lowered count is reached.
struct Lowered<'a> {
    victims: Vec<Victim<'a>>,
    replicas: i32,
    held: Option<String>,
}

/// Lowering the count: pick the victims ourselves so the ReplicaSet never does. Only pods
/// within the count being lowered are removed (a rollout's surge pods are left to the
/// Deployment); pods of a foreign scale-up count, since we lower from it. A protected pod
/// that is not running and ready holds the scale-down (the ReplicaSet removes not-ready
/// pods before any cost).
fn lower<'a>(
    o: &Observed<'a>,
    child: &[&'a PodView],
    target: i32,
    ours: i32,
    timing: &mut Timing,
) -> Lowered<'a> {
    let current = o.current_replicas.unwrap_or(0);
    let pods = child.len() as i32;
    let to_remove = (pods.min(current.max(ours)) - target).max(0);
    let lowering = o.current_replicas.is_some() && target < ours.max(current);
    let unready_protected = child
        .iter()
        .find(|p| !(p.deletable() || (p.running && p.ready)));
    if let (true, Some(p)) = (lowering, unready_protected) {
        timing.pending_since = Some(o.pending_since.unwrap_or(o.now));
        timing.requeue_after = Some(Duration::from_secs(5));
        return Lowered {
            victims: vec![],
            replicas: ours.max(current),
            held: Some(format!(
                "scale-down held: protected pod {} is not running and ready",
                p.name
            )),
        };
    }
    if to_remove == 0 {
        return Lowered {
            victims: vec![],
            replicas: target,
            held: None,
        };
    }
    let victims = choose_victims(child.iter().copied(), to_remove as usize);
    let replicas = target + (to_remove - victims.len() as i32);
    Lowered {
        victims,
        replicas,
        held: None,
    }
}

/// pod-deletion-costs to write: every counted pod but the victims whose cost differs.
fn costs<'a>(child: &[&'a PodView], victims: &[Victim<'_>]) -> Vec<(&'a str, i32)> {
    // A set: with thousands of victims a list lookup per pod is quadratic. Hashed with
    // foldhash (as `kept`): SipHash was most of this pass at 6,600 victims. Built only
    // once a pod's cost differs: in a settled pool none does.
    let mut victim_uids: Option<std::collections::HashSet<&str, foldhash::fast::RandomState>> =
        None;
    child
        .iter()
        .filter(|p| p.cost != Some(p.wanted_cost()))
        .filter(|p| {
            let set = victim_uids.get_or_insert_with(|| victims.iter().map(|v| v.uid).collect());
            !set.contains(&*p.uid)
        })
        .map(|p| (&*p.name, p.wanted_cost()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(idle: i32, min: i32, max: i32, delay: i32) -> HotStandbyDeploymentSpec {
        serde_json::from_value(serde_json::json!({
            "idleTarget": idle, "minReplicas": min, "maxReplicas": max, "scaleDownDelaySeconds": delay,
            "selector": {"matchLabels": {"app": "x"}}, "podTemplate": {}
        }))
        .unwrap()
    }

    fn pod(name: &str, state: BusyState, created: i64, running: bool, ready: bool) -> PodView {
        PodView {
            name: name.into(),
            uid: format!("uid-{name}").into(),
            resource_version: "1".into(),
            created,
            running,
            ready,
            state,
            stale: false,
            reason: String::new().into(),
            cost: None,
            detached: false,
            current: true,
            ip: None,
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn obs<'a>(
        spec: &'a HotStandbyDeploymentSpec,
        cur: Option<i32>,
        pods: &'a [PodView],
        since: Option<i64>,
        now: i64,
    ) -> Observed<'a> {
        Observed {
            spec,
            current_replicas: cur,
            our_replicas: cur,
            pods,
            pending_since: since.map(t),
            now: t(now),
            template_changed: false,
        }
    }

    use BusyState::*;

    #[test]
    fn desired_is_busy_plus_idle_target_clamped() {
        let table = [
            // busy, idle, min, max, want
            (0, 3, 0, 50, 3),
            (2, 3, 0, 50, 5),
            (49, 3, 0, 50, 50),
            (0, 0, 2, 10, 2),
            (0, 3, 5, 10, 5),
            (i32::MAX, 3, 0, 1000, 1000),
        ];
        for (busy, idle, min, max, want) in table {
            assert_eq!(
                desired(busy, &spec(idle, min, max, 30)),
                want,
                "busy={busy} idle={idle} [{min},{max}]"
            );
        }
    }

    #[test]
    fn first_reconcile_creates_with_desired() {
        let s = spec(3, 0, 50, 30);
        let p = plan(&obs(&s, None, &[], None, 100));
        assert_eq!((p.replicas, p.direction), (3, Some(Direction::Up)));
        assert!(p.victims.is_empty());
    }

    #[test]
    fn two_busy_scale_up_at_once() {
        let s = spec(3, 0, 50, 30);
        let pods = [
            pod("a", Busy, 1, true, true),
            pod("b", Busy, 2, true, true),
            pod("c", Idle, 3, true, true),
        ];
        let p = plan(&obs(&s, Some(3), &pods, None, 100));
        assert_eq!((p.busy, p.idle, p.desired, p.replicas), (2, 1, 5, 5));
        assert_eq!(p.direction, Some(Direction::Up));
        assert_eq!(p.pending_since, None);
    }

    #[test]
    fn scale_down_waits_for_the_delay_then_deletes_idle_pods_only() {
        let s = spec(1, 0, 50, 30);
        // busy pods are the youngest: the ReplicaSet's own ranking could pick them.
        let pods = [
            pod("old-idle-1", Idle, 1, true, true),
            pod("old-idle-2", Idle, 2, true, true),
            pod("young-busy-1", Busy, 10, true, true),
            pod("young-busy-2", Busy, 11, true, true),
        ];
        let p = plan(&obs(&s, Some(4), &pods, None, 100));
        assert_eq!(p.desired, 3);
        assert_eq!(p.replicas, 4, "held during the delay");
        assert_eq!(p.pending_since, Some(t(100)));
        assert_eq!(p.pending_due, Some(t(130)));
        assert_eq!(p.requeue_after, Some(Duration::from_secs(30)));
        assert!(p.victims.is_empty());

        let p = plan(&obs(&s, Some(4), &pods, Some(100), 120));
        assert_eq!(
            (p.replicas, p.requeue_after),
            (4, Some(Duration::from_secs(10)))
        );

        let p = plan(&obs(&s, Some(4), &pods, Some(100), 130));
        assert_eq!(p.replicas, 3);
        assert_eq!(p.direction, Some(Direction::Down));
        assert_eq!(p.victims.len(), 1);
        assert!(p.victims[0].name.starts_with("old-idle"));
        assert_eq!(p.pending_since, None);
    }

    #[test]
    fn a_due_scale_down_is_held_while_a_busy_pod_is_not_ready() {
        // The ReplicaSet removes not-ready pods before it looks at costs: lowering replicas
        // now could let it pick the busy one.
        let s = spec(0, 0, 50, 0);
        let pods = [
            pod("busy-unready", Busy, 10, true, false),
            pod("idle", Idle, 1, true, true),
        ];
        let p = plan(&obs(&s, Some(2), &pods, None, 100));
        assert_eq!((p.replicas, p.victims.len(), p.direction), (2, 0, None));
        assert!(
            p.held.as_deref().unwrap().contains("busy-unready"),
            "{:?}",
            p.held
        );
        assert_eq!(p.pending_since, Some(t(100)));
        // Ready again: the idle pod goes.
        let pods = [
            pod("busy-unready", Busy, 10, true, true),
            pod("idle", Idle, 1, true, true),
        ];
        let p = plan(&obs(&s, Some(2), &pods, Some(100), 101));
        assert_eq!((p.replicas, p.victims.len(), p.held), (1, 1, None));
    }

    #[test]
    fn deletion_costs_are_planned_only_where_they_differ() {
        let s = spec(1, 0, 50, 30);
        let mut busy = pod("busy", Busy, 1, true, true);
        let mut idle = pod("idle", Idle, 2, true, true);
        let mut stale = pod("stale", Idle, 3, true, true);
        stale.stale = true;
        let fresh = pod("fresh", Idle, 4, true, true);
        busy.cost = Some(COST_IDLE); // it just turned busy
        idle.cost = Some(COST_IDLE);
        let pods = [busy, idle, stale, fresh];
        let p = plan(&obs(&s, Some(4), &pods, Some(0), 10));
        let mut costs = p.costs.clone();
        costs.sort();
        assert_eq!(
            costs,
            vec![
                ("busy", COST_PROTECTED),
                ("fresh", COST_IDLE),
                ("stale", COST_PROTECTED)
            ]
        );
    }

    #[test]
    fn a_template_change_detaches_busy_pods_first_then_rolls() {
        let s = spec(1, 0, 50, 0);
        let mut old_idle = pod("old-idle", Idle, 1, true, true);
        old_idle.cost = Some(COST_IDLE);
        let mut old_busy = pod("old-busy", Busy, 2, true, true);
        old_busy.cost = Some(COST_PROTECTED);
        let pods = [old_idle.clone(), old_busy.clone()];
        let o = Observed {
            template_changed: true,
            ..obs(&s, Some(2), &pods, None, 10)
        };
        let p = plan(&o);
        assert!(p.hold_template);
        assert_eq!(
            p.detach.iter().map(|v| v.name).collect::<Vec<_>>(),
            vec!["old-busy"]
        );
        assert_eq!(p.replicas, 2);

        // Detached: it still counts as busy, outside the child; the template may roll.
        let mut detached = old_busy.clone();
        detached.detached = true;
        let pods = [old_idle.clone(), detached.clone()];
        let o = Observed {
            template_changed: true,
            ..obs(&s, Some(2), &pods, None, 11)
        };
        let p = plan(&o);
        assert!(!p.hold_template && p.detach.is_empty() && p.retire.is_empty());
        assert_eq!(
            (p.busy, p.desired, p.detached.clone()),
            (1, 2, vec!["old-busy"])
        );
        assert_eq!(
            p.replicas, 1,
            "the child holds desired minus the detached busy pod"
        );

        // Idle again: the detached pod is retired, and the child goes back to desired.
        detached.state = Idle;
        let pods = [old_idle, detached];
        let p = plan(&obs(&s, Some(1), &pods, None, 12));
        assert_eq!(
            p.retire.iter().map(|v| v.name).collect::<Vec<_>>(),
            vec!["old-busy"]
        );
        assert_eq!((p.desired, p.replicas), (1, 1));
        assert!(p.detached.is_empty());
    }

    #[test]
    fn a_pod_of_an_old_revision_that_turns_busy_mid_rollout_is_detached() {
        let s = spec(1, 0, 50, 30);
        let mut old = pod("old", Busy, 1, true, true);
        old.current = false;
        let new = pod("new", Idle, 2, true, true);
        let pods = [old, new];
        let p = plan(&obs(&s, Some(2), &pods, None, 10));
        assert_eq!(
            p.detach.iter().map(|v| v.name).collect::<Vec<_>>(),
            vec!["old"]
        );
        assert!(!p.hold_template, "the template is already rolling");
    }

    #[test]
    fn zero_delay_scales_down_at_once() {
        let s = spec(0, 0, 50, 0);
        let pods = [pod("a", Idle, 1, true, true), pod("b", Idle, 2, true, true)];
        let p = plan(&obs(&s, Some(2), &pods, None, 100));
        assert_eq!((p.replicas, p.victims.len()), (0, 2));
    }

    /// A victim is deleted with its resourceVersion as a precondition: a cost written to it
    /// first would change that version and make the delete fail. Victims get no cost; the
    /// pods that stay get theirs.
    #[test]
    fn victims_get_no_deletion_cost() {
        let s = spec(1, 0, 50, 0);
        // None of them carries a cost yet (a pool the operator has just adopted).
        let pods = [
            pod("busy", Busy, 1, true, true),
            pod("old", Idle, 2, true, true),
            pod("mid", Idle, 3, true, true),
            pod("new", Idle, 4, true, true),
        ];
        let p = plan(&obs(&s, Some(4), &pods, None, 100));
        let victims: Vec<&str> = p.victims.iter().map(|v| v.name).collect();
        assert_eq!(victims, ["new", "mid"]);
        let mut costs = p.costs.clone();
        costs.sort();
        assert_eq!(costs, [("busy", COST_PROTECTED), ("old", COST_IDLE)]);
    }

    #[test]
    fn desired_rising_again_cancels_the_pending_scale_down() {
        let s = spec(2, 0, 50, 30);
        let pods = [
            pod("a", Busy, 1, true, true),
            pod("b", Idle, 2, true, true),
            pod("c", Idle, 3, true, true),
        ];
        let p = plan(&obs(&s, Some(3), &pods, Some(50), 60));
        assert_eq!((p.replicas, p.pending_since, p.direction), (3, None, None));
    }

    #[test]
    fn victims_prefer_pending_then_not_ready_then_youngest() {
        let pods = [
            pod("ready-old", Idle, 1, true, true),
            pod("ready-young", Idle, 5, true, true),
            pod("notready", Idle, 2, true, false),
            pod("pending", Idle, 3, false, false),
            pod("busy", Busy, 9, false, false),
        ];
        let names: Vec<_> = choose_victims(&pods, 10)
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(
            names,
            vec!["pending", "notready", "ready-young", "ready-old"]
        );
    }

    #[test]
    fn not_enough_idle_pods_keeps_replicas_up() {
        let s = spec(0, 0, 50, 0);
        let mut stale = pod("stale", Idle, 3, true, true);
        stale.stale = true;
        let pods = [
            pod("busy", Busy, 1, true, true),
            pod("unknown", Unknown, 2, true, true),
            stale,
            pod("idle", Idle, 4, true, true),
        ];
        let p = plan(&obs(&s, Some(4), &pods, None, 0));
        assert_eq!(p.desired, 1);
        assert_eq!(
            p.victims.iter().map(|v| v.name).collect::<Vec<_>>(),
            vec!["idle"]
        );
        assert_eq!(
            p.replicas, 3,
            "busy, unknown and stale pods stay, so the count does too"
        );
    }

    #[test]
    fn foreign_change_is_reported_and_put_back() {
        let s = spec(2, 0, 50, 30);
        let pods = [pod("a", Idle, 1, true, true), pod("b", Idle, 2, true, true)];
        // someone scaled 2 -> 7; our annotation still says 2. RS has not created pods yet.
        let o = Observed {
            our_replicas: Some(2),
            ..obs(&s, Some(7), &pods, None, 10)
        };
        let p = plan(&o);
        assert_eq!(p.foreign, Some((2, 7)));
        assert_eq!(p.replicas, 2);
        assert!(p.victims.is_empty());
        // someone scaled 2 -> 0 (pods already going): we restore at once.
        let o = Observed {
            our_replicas: Some(2),
            ..obs(&s, Some(0), &[], None, 10)
        };
        let p = plan(&o);
        assert_eq!(
            (p.foreign, p.replicas, p.direction),
            (Some((2, 0)), 2, None)
        );
    }

    #[test]
    fn foreign_scale_up_pods_are_removed_by_us_not_the_replicaset() {
        let s = spec(1, 0, 50, 30);
        let pods = [
            pod("busy-young", Busy, 10, true, true),
            pod("idle-old", Idle, 1, true, true),
            pod("extra-1", Idle, 20, false, false),
            pod("extra-2", Idle, 21, false, false),
        ];
        let o = Observed {
            our_replicas: Some(2),
            ..obs(&s, Some(4), &pods, None, 30)
        };
        let p = plan(&o);
        assert_eq!(p.replicas, 2);
        assert_eq!(
            p.victims.iter().map(|v| v.name).collect::<Vec<_>>(),
            vec!["extra-2", "extra-1"]
        );
    }

    #[test]
    fn steady_state_plans_nothing() {
        let s = spec(2, 0, 50, 30);
        let pods = [
            pod("a", Busy, 1, true, true),
            pod("b", Idle, 2, true, true),
            pod("c", Idle, 3, true, true),
        ];
        let p = plan(&obs(&s, Some(3), &pods, None, 100));
        assert_eq!(
            (
                p.replicas,
                p.direction,
                p.victims.len(),
                p.foreign,
                p.requeue_after
            ),
            (3, None, 0, None, None)
        );
    }

    #[test]
    fn validation_messages() {
        let mut s = spec(1, 5, 2, 30);
        s.selector.match_labels.clear();
        let e = validate(&s);
        assert!(
            e.iter()
                .any(|m| m.contains("minReplicas (5) is greater than maxReplicas (2)")),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m.contains("matchLabels")), "{e:?}");
        assert!(validate(&spec(1, 0, 2, 30)).is_empty());
        let mut s = spec(1, 0, 2, 30);
        s.busy_probe.mode = BusyMode::Http;
        s.busy_probe.http.timeout_seconds = 0;
        s.busy_probe.http.period_seconds = 4000;
        s.busy_probe.http.port = 70000;
        let e = validate(&s).join("; ");
        for want in [
            "busyProbe.http.timeoutSeconds must be within 1-60, got 0",
            "busyProbe.http.periodSeconds must be within 1-3600, got 4000",
            "busyProbe.http.port must be within 1-65535, got 70000",
        ] {
            assert!(e.contains(want), "{e}");
        }
    }

    fn arb_pods(max: usize) -> impl Strategy<Value = Vec<PodView>> {
        proptest::collection::vec(arb_pod(), 0..max).prop_map(|mut v| {
            for (i, p) in v.iter_mut().enumerate() {
                p.name = format!("p{i}").into();
                p.uid = format!("u{i}").into();
            }
            v
        })
    }

    fn arb_pod() -> impl Strategy<Value = PodView> {
        (
            0..4u8,
            0..1000i64,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0..10_000u32,
        )
            .prop_map(|(s, created, running, ready, stale, id)| PodView {
                name: format!("p{id}").into(),
                uid: format!("u{id}").into(),
                resource_version: "1".into(),
                created,
                running,
                ready: ready && running,
                state: [Busy, Idle, Unknown, Idle][s as usize],
                stale,
                reason: String::new().into(),
                cost: [None, Some(COST_IDLE), Some(COST_PROTECTED), Some(0)][(id % 4) as usize],
                detached: id % 7 == 0,
                current: id % 3 != 0,
                ip: None,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn a_busy_unknown_or_stale_pod_is_never_removed_and_keeps_the_protected_cost(
            pods in arb_pods(40),
            idle in 0..10i32, min in 0..10i32, span in 0..40i32, delay in 0..100i32,
            cur in proptest::option::of(0..60i32), ours in proptest::option::of(0..60i32),
            since in proptest::option::of(0..200i64), now in 0..300i64, changed in any::<bool>(),
        ) {
            let s = spec(idle, min, min + span + 1, delay);
            let o = Observed { spec: &s, current_replicas: cur, our_replicas: ours.filter(|_| cur.is_some()), pods: &pods, pending_since: since.map(t), now: t(now), template_changed: changed };
            let p = plan(&o);
            let find = |uid: &str| pods.iter().find(|x| &*x.uid == uid).unwrap();
            // The rule itself, on the inputs: no busy, unknown or stale pod is removed.
            for v in p.victims.iter().chain(&p.retire) {
                let pod = find(v.uid);
                prop_assert!(pod.state == Idle && !pod.stale, "removes {:?}", pod);
            }
            for v in &p.victims {
                prop_assert!(!find(v.uid).detached, "a victim is a pod of the child");
            }
            // Every pod whose cost is not planned to change already has the right one, and
            // protected pods get the top cost.
            for pod in pods.iter().filter(|x| !x.detached) {
                let planned = p.costs.iter().find(|(n, _)| *n == &*pod.name).map(|(_, c)| *c);
                let victim = p.victims.iter().any(|v| v.uid == &*pod.uid);
                let protected = pod.state != Idle || pod.stale;
                let cost = planned.or(pod.cost);
                if protected {
                    prop_assert_eq!(cost, Some(COST_PROTECTED), "{:?}", pod);
                } else if !victim {
                    prop_assert_eq!(cost, Some(COST_IDLE), "{:?}", pod);
                }
            }
            // Replicas are not lowered while a protected child pod is not running and ready.
            let unready = pods.iter().any(|x| !x.detached && (x.state != Idle || x.stale) && !(x.running && x.ready));
            if let (true, Some(c)) = (unready, cur) {
                let stand = ours.filter(|_| cur.is_some()).unwrap_or(c);
                prop_assert!(p.victims.is_empty(), "deletes while a protected pod is not ready");
                prop_assert!(p.replicas >= stand, "lowered from {} to {} while a protected pod is not ready", stand, p.replicas);
            }
            // The clamp holds.
            prop_assert!(p.desired >= s.min_replicas && p.desired <= s.max_replicas);
            prop_assert_eq!(p.desired, (p.busy + s.idle_target).clamp(s.min_replicas, s.max_replicas));
            // A changed template waits while a protected pod still has to leave its ReplicaSet.
            let protected_in_child = pods.iter().any(|x| !x.detached && (x.state != Idle || x.stale));
            prop_assert_eq!(p.hold_template, changed && protected_in_child);
            for v in &p.detach {
                let pod = find(v.uid);
                prop_assert!(pod.state != Idle || pod.stale, "detaches an idle pod {:?}", pod);
            }
        }

        #[test]
        fn the_delay_holds(
            pods in arb_pods(30),
            idle in 0..5i32, delay in 1..100i32, cur in 0..40i32, since in 0..200i64, elapsed in 0..200i64,
        ) {
            let s = spec(idle, 0, 1000, delay);
            let now = since + elapsed;
            let o = Observed { spec: &s, current_replicas: Some(cur), our_replicas: Some(cur), pods: &pods, pending_since: Some(t(since)), now: t(now), template_changed: false };
            let p = plan(&o);
            if elapsed < delay as i64 {
                prop_assert!(p.replicas >= cur, "scaled down from {} to {} after {}s of a {}s delay", cur, p.replicas, elapsed, delay);
                prop_assert!(p.victims.is_empty());
            }
            if p.replicas < cur {
                prop_assert!(elapsed >= delay as i64);
            }
        }
    }
}
