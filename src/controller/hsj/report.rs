//! Pure: the Events one HSJ reconcile publishes, decided from the plan, what the writes
//! achieved and the status before (a state that persists is said once, when it starts).
use super::apply::Applied;
use super::plan::Plan;
use super::status;
use crate::api::hsj::HotStandbyJobStatus;
use crate::controller::shell::Note;

/// The events, in order: replaced, deleted and created units, a newly pending scale-down,
/// a backoff that starts, an exec probe the API server starts refusing.
pub fn notes(
    plan: &Plan<'_>,
    applied: &Applied,
    forbidden: Option<&str>,
    before: Option<&HotStandbyJobStatus>,
) -> Vec<Note> {
    let numbers = format!(
        "busy={} idle={} desired={} active={}",
        plan.busy, plan.idle, plan.desired, plan.active
    );
    let why = plan.failures.last_reason.as_deref().unwrap_or("failed");
    let mut notes = vec![];
    if !applied.replaced.is_empty() {
        notes.push(Note::warning(
            "UnitsReplaced",
            format!(
                "{numbers}: deleted failing Jobs {} ({why}); {} failure(s) in a row",
                applied.replaced.join(", "),
                plan.failures.consecutive
            ),
        ));
    }
    for (reason, names, what) in [
        ("ScaledDown", &applied.deleted, "deleted idle Jobs"),
        ("ScaledUp", &applied.created, "created Jobs"),
    ] {
        if !names.is_empty() {
            notes.push(Note::normal(
                reason,
                format!("{numbers}: {what} {}", names.join(", ")),
            ));
        }
    }
    let was_pending = before.is_some_and(|s| s.scale_down_pending_since.is_some());
    if let (Some(due), false) = (plan.pending_due, was_pending) {
        notes.push(Note::normal(
            "ScaleDownPending",
            format!("{numbers}: deleting idle Jobs at {due} unless desired rises"),
        ));
    }
    let was_backing_off = before.and_then(|s| s.consecutive_failures).unwrap_or(0) > 0;
    if let (Some(until), false) = (plan.backoff_until, was_backing_off) {
        notes.push(Note::warning(
            "BackingOff",
            format!("{numbers}: Jobs fail before being busy ({why}); next Job at {until}"),
        ));
    }
    let was_forbidden = before.is_some_and(|s| status::probe_forbidden(&s.conditions));
    if let (Some(msg), false) = (forbidden, was_forbidden) {
        notes.push(Note::warning(
            "ProbeForbidden",
            format!("exec busy probe refused: {msg}; grant pods/exec (Helm: hsj.execProbe=true)"),
        ));
    }
    notes
}
