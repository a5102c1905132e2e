//! The pure core of the HotStandbyJob reconciler: from the pool's units (one Job each) and
//! what we remember in status, decide how many Jobs to create, which idle ones to delete,
//! which failing ones to replace, and the backoff. No I/O.
//!
//! A unit is *active* until its Job finishes (Complete or Failed); finished Jobs are left to
//! `ttlSecondsAfterFinished`. A unit's busy state is the most protective of its pods': busy
//! if any pod is busy, unknown if any is unknown, stale if any answer is stale. Units are
//! ranked and chosen with the pools' shared victim rules (`controller::pool`:
//! [`choose_victims`] over [`PodView`]s that stand for units).
//!
//! Rules that hold for every input (property-tested below):
//! - a busy, unknown or stale unit is never deleted (neither as surplus nor as failing);
//! - desired = clamp(busy + idleTarget, minReplicas, maxReplicas);
//! - no more Jobs are created than desired minus what is active or in flight;
//! - surplus units are deleted only once desired has stayed lower for scaleDownDelaySeconds;
//! - while units fail before ever being busy, Jobs are created one at a time: only when no
//!   unit is still starting and the backoff since the last failure (10 s doubling per
//!   consecutive failure, capped at 5 min) is over, so a broken image cannot create Jobs
//!   faster than that. The failure memory is kept in status (a restart keeps the backoff)
//!   and forgotten once a unit runs ready and 5 min have passed without a failure.
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::api::hsj::{HotStandbyJobSpec, JobBusyMode};
use crate::api::pool::Pooled;
pub use crate::controller::pool::{choose_victims, PodView, Victim};
use crate::probe::BusyState;

/// Base and cap of the creation backoff while units keep failing.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// How a unit's Job ended, if it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finished {
    Complete,
    Failed,
}

/// One Job of the pool as the planner sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UnitView {
    /// Name, UID and resourceVersion are the Job's; running/ready/state aggregate its pods.
    pub core: PodView,
    pub finished: Option<Finished>,
    /// When the Job finished (its condition's transition time).
    pub finished_at: Option<Timestamp>,
    /// Why a pod of this unit failed (image pull, crash, ...), when one did.
    pub failing: Option<String>,
    /// A pod of this unit was seen busy at some point.
    pub ever_busy: bool,
}

impl UnitView {
    fn active(&self) -> bool {
        self.finished.is_none()
    }

    /// Failing before ever being busy: replaced, and counted against the backoff. Only a
    /// unit whose idleness is current qualifies (never a busy, unknown or stale one).
    fn broken(&self) -> bool {
        self.active() && self.failing.is_some() && !self.ever_busy && self.core.deletable()
    }

    /// Running, ready and not failing.
    fn healthy(&self) -> bool {
        self.active() && self.failing.is_none() && self.core.running && self.core.ready
    }
}

/// Failures remembered across reconciles (kept in status, so a restart keeps the backoff).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Failures {
    pub consecutive: i32,
    pub last_at: Option<Timestamp>,
    pub last_reason: Option<String>,
}

/// What was observed for one HSJ.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub spec: &'a HotStandbyJobSpec,
    pub units: &'a [UnitView],
    /// Jobs created by us that the cache does not show yet.
    pub in_flight: i32,
    pub pending_since: Option<Timestamp>,
    pub failures: Failures,
    pub now: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan<'a> {
    pub busy: i32,
    pub idle: i32,
    pub unknown: i32,
    pub stale: i32,
    /// Active units (in flight included), after the replaced ones are gone.
    pub active: i32,
    pub completed: i32,
    pub failed: i32,
    pub desired: i32,
    pub limited: bool,
    /// Jobs to create now.
    pub create: i32,
    /// Surplus idle units to delete (the delay has passed).
    pub victims: Vec<Victim<'a>>,
    /// Units failing before ever being busy: delete them (their replacements are `create`).
    pub replace: Vec<Victim<'a>>,
    pub pending_since: Option<Timestamp>,
    pub pending_due: Option<Timestamp>,
    pub failures: Failures,
    /// Creation waits for the backoff until then.
    pub backoff_until: Option<Timestamp>,
    pub requeue_after: Option<Duration>,
}

/// Problems that stop the reconciler from acting on a spec.
pub fn validate(spec: &HotStandbyJobSpec) -> Vec<String> {
    let mut e = spec.pool().validate();
    let probe = &spec.busy_probe;
    match probe.mode {
        JobBusyMode::Http => e.extend(probe.http.problems()),
        JobBusyMode::Exec => match &probe.exec {
            None => e.push("busyProbe.mode is exec but busyProbe.exec.command is missing".into()),
            Some(x) => e.extend(x.problems()),
        },
        JobBusyMode::Annotation => {}
    }
    e
}

/// Wait before the next creation after `consecutive` failures.
pub fn backoff(consecutive: i32) -> Duration {
    if consecutive <= 0 {
        return Duration::ZERO;
    }
    let doublings = (consecutive - 1).min(16) as u32;
    BACKOFF_BASE
        .saturating_mul(1u32 << doublings)
        .min(BACKOFF_CAP)
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(t)
}

fn until(now: Timestamp, t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// Failures newly seen: finished-Failed units that were never busy, after the last one counted.
fn new_finished_failures<'a>(o: &Observed<'a>) -> Vec<&'a UnitView> {
    o.units
        .iter()
        .filter(|u| u.finished == Some(Finished::Failed) && !u.ever_busy)
        .filter(|u| match (u.finished_at, o.failures.last_at) {
            (Some(at), Some(last)) => at > last,
            (_, None) => true,
            (None, Some(_)) => false,
        })
        .collect()
}

/// Update the failure memory: new failures add to it; it is forgotten once a unit is
/// running and ready and the last failure is older than [`BACKOFF_CAP`] (an image that
/// crashes a while after starting must not reset the backoff each time it starts).
fn failures(o: &Observed<'_>, broken: &[&UnitView]) -> Failures {
    let healthy = o.units.iter().any(|u| u.healthy());
    let mut f = o.failures.clone();
    let quiet = f.last_at.is_none_or(|t| o.now >= after(t, BACKOFF_CAP));
    if healthy && quiet {
        f = Failures::default();
    }
    for u in new_finished_failures(o) {
        f.consecutive = f.consecutive.saturating_add(1);
        let at = u.finished_at.unwrap_or(o.now);
        f.last_at = Some(f.last_at.map_or(at, |l| l.max(at)));
        f.last_reason = Some(format!("Job {} failed", u.core.name));
    }
    for u in broken {
        f.consecutive = f.consecutive.saturating_add(1);
        f.last_at = Some(f.last_at.map_or(o.now, |l| l.max(o.now)));
        f.last_reason = u.failing.clone();
    }
    f
}

/// When the backoff after `f` ends (None: no backoff).
fn backoff_end(f: &Failures) -> Option<Timestamp> {
    if f.consecutive <= 0 {
        return None;
    }
    f.last_at.map(|t| after(t, backoff(f.consecutive)))
}

pub fn plan<'a>(o: &Observed<'a>) -> Plan<'a> {
    let active: Vec<&UnitView> = o.units.iter().filter(|u| u.active()).collect();
    let count = |s: BusyState| active.iter().filter(|u| u.core.state == s).count() as i32;
    let (busy, idle, unknown) = (
        count(BusyState::Busy),
        count(BusyState::Idle),
        count(BusyState::Unknown),
    );
    let stale = active.iter().filter(|u| u.core.stale).count() as i32;
    let finished = |f: Finished| o.units.iter().filter(|u| u.finished == Some(f)).count() as i32;
    let d = o.spec.pool().desired(busy);
    let limited = d != busy.saturating_add(o.spec.idle_target.max(0));

    // Broken units are replaced only once the backoff of the failures before them is over.
    let backoff_over = backoff_end(&o.failures).is_none_or(|t| o.now >= t);
    let broken: Vec<&UnitView> = match backoff_over {
        true => active.iter().copied().filter(|u| u.broken()).collect(),
        false => vec![],
    };
    let replace: Vec<Victim> = broken.iter().map(|u| u.core.victim()).collect();
    let fails = failures(o, &broken);
    let counted = active.len() as i32 - replace.len() as i32 + o.in_flight.max(0);

    let mut plan = Plan {
        busy,
        idle,
        unknown,
        stale,
        active: counted,
        completed: finished(Finished::Complete),
        failed: finished(Finished::Failed),
        desired: d,
        limited,
        create: 0,
        victims: vec![],
        replace,
        pending_since: None,
        pending_due: None,
        failures: fails,
        backoff_until: None,
        requeue_after: None,
    };
    // Broken units wait for the backoff: wake up when it ends to replace them.
    if let Some(t) = backoff_end(&o.failures).filter(|t| *t > o.now) {
        if active.iter().any(|u| u.broken()) {
            plan.backoff_until = Some(t);
            plan.requeue_after = Some(until(o.now, t));
        }
    }
    if d > counted {
        grow(o, &mut plan, &active, d - counted, backoff_over);
    } else if d < counted {
        shrink(o, &mut plan, &active, counted - d);
    }
    plan
}

/// Below desired: create the deficit. While units keep failing, create one at a time: only
/// when the backoff is over and no unit is still starting (so each creation is answered by
/// a healthy unit or by a failure that extends the backoff).
fn grow(
    o: &Observed<'_>,
    plan: &mut Plan<'_>,
    active: &[&UnitView],
    deficit: i32,
    backoff_over: bool,
) {
    if plan.failures.consecutive <= 0 {
        plan.create = deficit;
        return;
    }
    let replacing: std::collections::HashSet<&str> = plan.replace.iter().map(|r| r.uid).collect();
    let replaced = |u: &UnitView| replacing.contains(&*u.core.uid);
    let starting = active
        .iter()
        .any(|u| !replaced(u) && u.failing.is_none() && !u.healthy())
        || o.in_flight > 0;
    let due = match plan.replace.is_empty() {
        // Replacing broken units now: the old backoff is what had to be over.
        false => backoff_over,
        true => backoff_end(&plan.failures).is_none_or(|t| o.now >= t),
    };
    if due && !starting {
        plan.create = 1;
    } else if let Some(t) = backoff_end(&plan.failures).filter(|t| *t > o.now) {
        plan.backoff_until = Some(t);
        plan.requeue_after = Some(until(o.now, t));
    }
}

/// Above desired: after the delay, delete idle surplus units (victim order).
fn shrink<'a>(o: &Observed<'a>, plan: &mut Plan<'a>, active: &[&'a UnitView], surplus: i32) {
    let since = o.pending_since.unwrap_or(o.now);
    let delay = Duration::from_secs(o.spec.scale_down_delay_seconds.max(0) as u64);
    let due = after(since, delay);
    if o.now < due {
        plan.pending_since = Some(since);
        plan.pending_due = Some(due);
        plan.requeue_after = Some(until(o.now, due));
        return;
    }
    // A set: with thousands of units, scanning the replaced list per unit dominated.
    let replacing: std::collections::HashSet<&str> = plan.replace.iter().map(|r| r.uid).collect();
    let candidates = active
        .iter()
        .filter(|u| !replacing.contains(&*u.core.uid))
        .map(|u| &u.core);
    plan.victims = choose_victims(candidates, surplus as usize);
}

#[cfg(test)]
mod tests;
