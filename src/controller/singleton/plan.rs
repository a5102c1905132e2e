//! The pure handover planner for one StatefulSingleton.
//!
//! An *instance* is a pod that may be running the app: released by us, or admitted
//! without our gate (the webhook was down). **Invariant: a pod is released only when no
//! other instance is present in the API, and never while an instance that was
//! force-deleted from a lost node may still be running there.** Terminating is not gone.
//! All state the planner needs lives in the API (pod annotations/conditions and the
//! singleton's status), so an operator restart loses nothing and releases nothing twice.
//!
//! The rest of a reconcile is decided here too, as data: the ordered writes ([`steps`]:
//! **the status write precedes every release**) and the Events that follow from what
//! `apply` achieved ([`notes`]). Nothing here does I/O or reads a clock.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::controller::shell::Note;

/// One pod matched by the singleton.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PodInfo {
    pub name: String,
    pub uid: String,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// The webhook injected our start gate.
    pub gated: bool,
    /// The release annotation is present.
    pub released: bool,
    /// The singleton-ready pod condition is True.
    pub ready_condition: bool,
    pub terminating: bool,
    /// Why the pod counts as failed (Failed phase, CrashLoopBackOff, image errors, >3 restarts).
    pub failed: Option<String>,
    /// Why the pod's agent cannot get its release (it exited non-zero), if so.
    pub agent_error: Option<String>,
    pub node: Option<String>,
    /// Name of the controlling ReplicaSet.
    pub replicaset: Option<String>,
    /// The epoch annotation of a released pod.
    pub epoch: Option<u64>,
    /// Its containers have started (phase Running, or the init gate running): a warm
    /// standby, ready to run the app as soon as it is released.
    pub started: bool,
    /// The template revision of a pod not owned by a ReplicaSet: its controller and its
    /// `controller-revision-hash` label (StatefulSet pods), when it has both.
    pub revision: Option<String>,
}

impl PodInfo {
    pub fn is_instance(&self) -> bool {
        self.released || !self.gated
    }
    pub fn is_candidate(&self) -> bool {
        self.gated && !self.released && !self.terminating && self.failed.is_none()
    }
    /// Do both pods come from the same pod template: the same ReplicaSet, or the same
    /// revision of the same StatefulSet? Not known (bare pods) is not the same.
    pub fn same_template(&self, other: &PodInfo) -> bool {
        match (&self.replicaset, &other.replicaset) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.revision.is_some() && self.revision == other.revision,
            _ => false,
        }
    }
}

/// Does `next` wait as a warm standby of `active` rather than as its successor? Only while
/// `active` is healthy (not terminating, not failed) and both come from the same template
/// (a second replica): nothing is handed over then, so no handover clock runs. A rollout's
/// new-template pod, or any candidate once the active pod is terminating or failed, is a
/// real handover, timed against maxTransitionTime.
pub fn waits_as_standby(active: &PodInfo, next: &PodInfo) -> bool {
    !active.terminating && active.failed.is_none() && active.same_template(next)
}

/// A ReplicaSet owning some of the pods.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RsInfo {
    pub name: String,
    pub replicas: i32,
    /// UID of the controlling Deployment.
    pub deployment: Option<String>,
}

/// What we know of a node. A node missing from the map has been deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum NodeState {
    Ready,
    /// NotReady or Unknown: its containers may still be running.
    NotReady,
    /// Carries `node.kubernetes.io/out-of-service`: its pods are known to be stopped.
    OutOfService,
}

/// What the singleton's status remembers between reconciles.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Memory {
    pub active_pod: Option<String>,
    pub active_uid: Option<String>,
    pub active_node: Option<String>,
    /// When the current handover started (seconds since the epoch).
    pub transition_since: Option<i64>,
    /// A TransitionTimedOut warning was already given for this handover.
    pub timed_out: bool,
    /// The last fencing epoch handed out (0: none yet). Persisted in the status before the
    /// release that carries it.
    pub epoch: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum DeleteReason {
    /// Admitted without the gate while another instance runs.
    UngatedDuplicate,
    /// The old instance failed and a successor waits.
    FailedOldPod,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Action {
    /// Write the release annotation, then the singleton-ready condition.
    Release { name: String, uid: String },
    /// The release annotation is there but the condition is not (a write was interrupted).
    MarkReady { name: String, uid: String },
    Delete {
        name: String,
        uid: String,
        reason: DeleteReason,
    },
    /// Scale an old ReplicaSet of the same Deployment to 0 (a surge rollout would deadlock).
    ScaleToZero { replicaset: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Phase {
    Running,
    Transitioning,
    Blocked,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub phase: Phase,
    pub memory: Memory,
    pub message: String,
    /// Set when a release waits for a lost node: the node's name.
    pub node_lost: Option<String>,
    /// The handover exceeded maxTransitionTime (it keeps waiting safely).
    pub timed_out: bool,
    /// True only on the reconcile that first detected the timeout.
    pub newly_timed_out: bool,
    /// More than one gated candidate waits; only one will be released.
    pub extra_candidates: usize,
    /// Gated pods waiting to take over (warm standbys), by name.
    pub standby: Vec<String>,
}

pub struct Observed<'a> {
    pub pods: &'a [PodInfo],
    pub replicasets: &'a [RsInfo],
    pub nodes: &'a BTreeMap<String, NodeState>,
    pub memory: &'a Memory,
    pub now: i64,
    pub max_transition_seconds: i64,
}

/// The candidate to release. The newest candidate's ReplicaSet is taken as the current
/// template (a rollout's new pods), and among that ReplicaSet's candidates the warm one
/// that has waited longest is chosen (a warm standby, not the replacement made a moment
/// ago); pods without a ReplicaSet (StatefulSet, bare pods): a started one first, then
/// the newest. Then by name.
fn best_candidate(pods: &[PodInfo]) -> Option<&PodInfo> {
    let newest = pods
        .iter()
        .filter(|p| p.is_candidate())
        .max_by(|a, b| a.created.cmp(&b.created).then_with(|| b.name.cmp(&a.name)))?;
    let Some(rs) = newest.replicaset.as_ref() else {
        return pods.iter().filter(|p| p.is_candidate()).max_by(|a, b| {
            (a.started, a.created)
                .cmp(&(b.started, b.created))
                .then_with(|| b.name.cmp(&a.name))
        });
    };
    pods.iter()
        .filter(|p| p.is_candidate() && p.replicaset.as_ref() == Some(rs))
        .max_by(|a, b| {
            (a.started, std::cmp::Reverse(a.created))
                .cmp(&(b.started, std::cmp::Reverse(b.created)))
                .then_with(|| b.name.cmp(&a.name))
        })
}

impl Plan {
    /// A plan with no lost node and no timeout.
    fn new(actions: Vec<Action>, phase: Phase, message: String, memory: Memory) -> Plan {
        Plan {
            actions,
            phase,
            memory,
            message,
            node_lost: None,
            timed_out: false,
            newly_timed_out: false,
            extra_candidates: 0,
            standby: vec![],
        }
    }
}

/// The handover plan, or, for an invalid spec, a Blocked plan that keeps the memory and
/// does nothing.
pub fn handover(o: &Observed<'_>, invalid: Option<&str>) -> Plan {
    match invalid {
        Some(why) => Plan::new(vec![], Phase::Blocked, why.to_string(), o.memory.clone()),
        None => plan(o),
    }
}

pub fn plan(o: &Observed<'_>) -> Plan {
    let instances: Vec<&PodInfo> = o.pods.iter().filter(|p| p.is_instance()).collect();
    let candidate_count = o.pods.iter().filter(|p| p.is_candidate()).count();
    let keeper = keeper(&instances);
    let actions = duplicate_deletes(&instances, keeper);
    let mut plan = match keeper {
        None => no_instance(o, actions),
        Some(active) => with_instance(o, active, actions),
    };
    plan.extra_candidates = candidate_count.saturating_sub(1);
    plan.standby = standby(o.pods, &plan.actions);
    plan
}

/// The last epoch handed out, as far as anything we can read says: the status memory, or
/// a released pod's annotation when it is higher (a status that was reset or lost).
fn epoch_floor(o: &Observed<'_>) -> u64 {
    o.pods
        .iter()
        .filter_map(|p| p.epoch)
        .fold(o.memory.epoch, u64::max)
}

/// The epoch of a release of `c`: the one the status already recorded for `c` (a release
/// that was interrupted after its status write), else one more than any handed out.
/// Either way it is higher than the epoch of any other pod ever released.
fn release_epoch(o: &Observed<'_>, c: &PodInfo) -> u64 {
    let floor = epoch_floor(o);
    let recorded_for_c = o.memory.active_uid.as_deref() == Some(c.uid.as_str())
        && o.memory.epoch > 0
        && o.memory.epoch >= floor;
    if recorded_for_c {
        o.memory.epoch
    } else {
        floor.saturating_add(1)
    }
}

/// Warm standbys: gated candidates whose containers have started and that wait healthy
/// (not failed, their agent not failing), not released by this plan: a failover to one
/// needs no pod start.
fn standby(pods: &[PodInfo], actions: &[Action]) -> Vec<String> {
    let releasing = |p: &PodInfo| {
        actions
            .iter()
            .any(|a| matches!(a, Action::Release { uid, .. } if *uid == p.uid))
    };
    let mut names: Vec<String> = pods
        .iter()
        .filter(|p| p.is_candidate() && p.started && p.agent_error.is_none() && !releasing(p))
        .map(|p| p.name.clone())
        .collect();
    names.sort();
    names
}

/// The instance to keep: released before ungated, alive before terminating, then the oldest.
fn keeper<'a>(instances: &[&'a PodInfo]) -> Option<&'a PodInfo> {
    instances
        .iter()
        .min_by(|a, b| {
            (!a.released, a.terminating, a.created, &a.name).cmp(&(
                !b.released,
                b.terminating,
                b.created,
                &b.name,
            ))
        })
        .copied()
}

/// Every other ungated, alive instance is deleted.
fn duplicate_deletes(instances: &[&PodInfo], keeper: Option<&PodInfo>) -> Vec<Action> {
    instances
        .iter()
        .filter(|i| {
            Some(i.uid.as_str()) != keeper.map(|k| k.uid.as_str()) && !i.released && !i.terminating
        })
        .map(|i| Action::Delete {
            name: i.name.clone(),
            uid: i.uid.clone(),
            reason: DeleteReason::UngatedDuplicate,
        })
        .collect()
}

/// The handover clock: starts (or keeps) `transition_since` in `memory` and says whether
/// the handover is over its time limit, and whether it just went over it.
fn tick(o: &Observed<'_>, memory: &mut Memory) -> (bool, bool) {
    let since = o.memory.transition_since.unwrap_or(o.now);
    memory.transition_since = Some(since);
    let timed_out = o.now - since > o.max_transition_seconds;
    memory.timed_out = timed_out;
    (timed_out, timed_out && !o.memory.timed_out)
}

/// The node a vanished instance may still run on: the last active pod is gone from the API
/// but its node is NotReady (it may have been force-deleted there).
fn fenced_node(o: &Observed<'_>) -> Option<String> {
    match (&o.memory.active_uid, &o.memory.active_node) {
        (Some(uid), Some(node)) if !o.pods.iter().any(|p| &p.uid == uid) => {
            matches!(o.nodes.get(node), Some(NodeState::NotReady)).then(|| node.clone())
        }
        _ => None,
    }
}

/// No instance present: wait for a lost node, else release the best candidate, if any.
fn no_instance(o: &Observed<'_>, mut actions: Vec<Action>) -> Plan {
    if let Some(node) = fenced_node(o) {
        let mut memory = o.memory.clone();
        memory.epoch = epoch_floor(o);
        let (timed_out, newly) = tick(o, &mut memory);
        let message = format!(
            "pod {} was removed while node {node} is not ready; its containers may still run. Waiting for the node to be Ready, deleted, or tainted node.kubernetes.io/out-of-service",
            o.memory.active_pod.as_deref().unwrap_or("?")
        );
        let mut plan = Plan::new(actions, Phase::Blocked, message, memory);
        plan.node_lost = Some(node);
        plan.timed_out = timed_out;
        plan.newly_timed_out = newly;
        return plan;
    }
    match best_candidate(o.pods) {
        Some(c) => {
            actions.push(Action::Release {
                name: c.name.clone(),
                uid: c.uid.clone(),
            });
            let memory = Memory {
                active_pod: Some(c.name.clone()),
                active_uid: Some(c.uid.clone()),
                active_node: c.node.clone(),
                transition_since: None,
                timed_out: false,
                epoch: release_epoch(o, c),
            };
            Plan::new(
                actions,
                Phase::Running,
                format!("released {}", c.name),
                memory,
            )
        }
        None => {
            let memory = Memory {
                epoch: epoch_floor(o),
                ..Memory::default()
            };
            Plan::new(actions, Phase::Running, "no pod".into(), memory)
        }
    }
}

/// An instance is present: it stays active; a waiting successor starts a handover, unless
/// it is a standby of the same template ([`waits_as_standby`]).
fn with_instance(o: &Observed<'_>, active: &PodInfo, mut actions: Vec<Action>) -> Plan {
    let mut memory = o.memory.clone();
    memory.epoch = epoch_floor(o);
    memory.active_pod = Some(active.name.clone());
    memory.active_uid = Some(active.uid.clone());
    if active.node.is_some() {
        memory.active_node = active.node.clone();
    }
    if active.released && active.gated && !active.ready_condition && !active.terminating {
        actions.push(Action::MarkReady {
            name: active.name.clone(),
            uid: active.uid.clone(),
        });
    }
    match best_candidate(o.pods) {
        Some(next) if waits_as_standby(active, next) => {
            memory.transition_since = None;
            memory.timed_out = false;
            let message = format!(
                "{} is active; {} waits as a standby",
                active.name, next.name
            );
            Plan::new(actions, Phase::Running, message, memory)
        }
        Some(next) => successor_waits(o, active, next, memory, actions),
        None => {
            memory.transition_since = None;
            memory.timed_out = false;
            let message = format!("{} is active", active.name);
            Plan::new(actions, Phase::Running, message, memory)
        }
    }
}

/// A successor waits for the active instance to be gone: a failed active pod is deleted,
/// an old ReplicaSet of a surge rollout is scaled to 0, and the clock runs.
fn successor_waits(
    o: &Observed<'_>,
    active: &PodInfo,
    next: &PodInfo,
    mut memory: Memory,
    mut actions: Vec<Action>,
) -> Plan {
    let mut message = format!("{} waits for {} to be gone", next.name, active.name);
    if !active.terminating {
        if let Some(why) = &active.failed {
            actions.push(Action::Delete {
                name: active.name.clone(),
                uid: active.uid.clone(),
                reason: DeleteReason::FailedOldPod,
            });
            message = format!("{message} (deleting it: {why})");
        } else if let Some(old) = surge_old_replicaset(o, active, next) {
            message = format!("{message} (scaling old ReplicaSet {old} to 0)");
            actions.push(Action::ScaleToZero { replicaset: old });
        }
    }
    let (timed_out, newly) = tick(o, &mut memory);
    if timed_out {
        message = format!(
            "{message}; maxTransitionTime ({}s) exceeded, still waiting safely",
            o.max_transition_seconds
        );
    }
    let mut plan = Plan::new(actions, Phase::Transitioning, message, memory);
    plan.timed_out = timed_out;
    plan.newly_timed_out = newly;
    plan
}

/// The active pod's ReplicaSet when it is an older one of the same Deployment as the
/// successor's and still has replicas (a surge rollout would wait for ever).
fn surge_old_replicaset(o: &Observed<'_>, active: &PodInfo, next: &PodInfo) -> Option<String> {
    let rs = |n: &Option<String>| {
        let n = n.as_deref()?;
        o.replicasets.iter().find(|r| r.name == n)
    };
    let (old, new) = (rs(&active.replicaset)?, rs(&next.replicaset)?);
    (old.name != new.name
        && old.deployment.is_some()
        && old.deployment == new.deployment
        && old.replicas > 0)
        .then(|| old.name.clone())
}

/// One write of a reconcile, in the order `apply` executes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Step {
    /// Server-side apply the namespace's wrapper ConfigMap (missing or stale).
    ConfigMap,
    /// Write the status: the planner's memory, naming the pod about to be released.
    Status,
    /// One pod or ReplicaSet write of the handover.
    Handover(Action),
}

/// The writes of one reconcile. **Invariant: `Status` precedes every handover action**, so
/// a crash between the two can never leave a released pod unrecorded; the ConfigMap a
/// released pod mounts is written before both.
pub fn steps(configmap_stale: bool, plan: &Plan) -> Vec<Step> {
    let mut steps = vec![];
    if configmap_stale {
        steps.push(Step::ConfigMap);
    }
    steps.push(Step::Status);
    steps.extend(plan.actions.iter().cloned().map(Step::Handover));
    steps
}

/// What `apply` achieved, as data.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// The handover actions that took effect, in order; one whose pod was gone or replaced
    /// meanwhile is left out.
    pub done: Vec<Action>,
    /// Every step ran; false when a write failed (the reconcile then returns its error).
    pub complete: bool,
}

/// What the Events of a reconcile are decided from.
pub struct NoteInput<'a> {
    pub plan: &'a Plan,
    /// The memory the reconcile started from (who was active before).
    pub before: &'a Memory,
    /// The NodeLost condition was already True before this reconcile.
    pub node_lost_before: bool,
    pub max_transition_seconds: i64,
    pub agents: &'a AgentReport,
    /// The measured gap of the release this reconcile made, when it made one.
    pub gap: Option<HandoverGap>,
}

/// How long a handover took, as this process measured it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct HandoverGap {
    /// From the watch event that showed the old pod gone to the reconcile that saw it
    /// (None when no pod event preceded the reconcile, e.g. a resync or a restart).
    pub detection: Option<std::time::Duration>,
    /// From that reconcile to the successor's release written.
    pub release: std::time::Duration,
}

impl HandoverGap {
    pub fn total(&self) -> std::time::Duration {
        self.detection.unwrap_or_default() + self.release
    }
}

fn ms(d: std::time::Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The Events of a reconcile: one per action that took effect, in order; then, once every
/// write is done, a new timeout, a newly lost node and each newly failing agent.
pub fn notes(i: &NoteInput<'_>, outcome: &Outcome) -> Vec<Note> {
    let mut notes: Vec<Note> = outcome
        .done
        .iter()
        .filter_map(|a| action_note(a, i))
        .collect();
    if !outcome.complete {
        return notes;
    }
    if i.plan.newly_timed_out {
        notes.push(Note::warning(
            "TransitionTimeout",
            format!(
                "handover exceeded maxTransitionTime ({}s); still waiting safely: {}",
                i.max_transition_seconds, i.plan.message
            ),
        ));
    }
    if i.plan.node_lost.is_some() && !i.node_lost_before {
        notes.push(Note::warning("NodeLost", i.plan.message.clone()));
    }
    notes.extend(i.agents.warn.iter().map(|p| {
        Note::warning(
            "AgentUnreachable",
            format!(
                "pod {}: its kube-standby agent cannot get the release: {}",
                p.pod, p.message
            ),
        )
    }));
    notes
}

/// The Event of one action that took effect (a MarkReady completes a release: none). A
/// failover's names the gap measured and the epoch handed out.
fn action_note(a: &Action, i: &NoteInput<'_>) -> Option<Note> {
    let before = i.before;
    let epoch = i.plan.memory.epoch;
    Some(match a {
        Action::Delete {
            name,
            reason: DeleteReason::UngatedDuplicate,
            ..
        } => Note::warning("UngatedPodDeleted", format!("deleted {name}: it was admitted without the start gate while another instance runs; its owner recreates it through the webhook")),
        Action::Delete {
            name,
            reason: DeleteReason::FailedOldPod,
            ..
        } => Note::warning("FailedPodDeleted", format!("deleted failed pod {name} so its successor can start once it is gone")),
        Action::ScaleToZero { replicaset } => Note::normal("PodTransition", format!("scaled old ReplicaSet {replicaset} to 0: a surge rollout cannot finish while the new pod waits")),
        Action::Release { name, .. } => match (before.active_pod.as_ref().filter(|p| *p != name), i.gap) {
            (Some(old), Some(gap)) => Note::normal("PodTransition", format!(
                "released {name} after {old} was gone; handover gap {} (detection {}, release {}), epoch {epoch}",
                ms(gap.total()),
                gap.detection.map(ms).unwrap_or_else(|| "unmeasured".into()),
                ms(gap.release),
            )),
            (Some(old), None) => Note::normal("PodTransition", format!("released {name} after {old} was gone")),
            (None, _) => Note::normal("PodStarted", format!("released {name} (epoch {epoch})")),
        },
        Action::MarkReady { .. } => return None,
    })
}

/// A pod whose agent exited with an error, and that error.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AgentProblem {
    pub pod: String,
    pub uid: String,
    pub message: String,
}

/// The `AgentUnreachable` condition and its Warning events, as data.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AgentReport {
    /// Every pod whose agent is failing now (the condition is True when any is).
    pub failing: Vec<AgentProblem>,
    /// Those not reported before: one `AgentUnreachable` Warning event each.
    pub warn: Vec<AgentProblem>,
    /// What counts as reported after this reconcile: (pod UID, message) of every pod still
    /// present, so a pod gets one event per distinct message and a gone pod is forgotten.
    pub reported: std::collections::BTreeSet<(String, String)>,
}

/// Which pods' agents are failing, and which of those errors are new.
pub fn agents(
    pods: &[PodInfo],
    reported: &std::collections::BTreeSet<(String, String)>,
) -> AgentReport {
    let mut failing: Vec<AgentProblem> = pods
        .iter()
        .filter(|p| !p.terminating)
        .filter_map(|p| {
            p.agent_error.as_ref().map(|m| AgentProblem {
                pod: p.name.clone(),
                uid: p.uid.clone(),
                message: m.clone(),
            })
        })
        .collect();
    failing.sort();
    let warn = failing
        .iter()
        .filter(|p| !reported.contains(&(p.uid.clone(), p.message.clone())))
        .cloned()
        .collect();
    let present: std::collections::BTreeSet<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
    let reported = reported
        .iter()
        .filter(|(uid, _)| present.contains(uid.as_str()))
        .cloned()
        .chain(failing.iter().map(|p| (p.uid.clone(), p.message.clone())))
        .collect();
    AgentReport {
        failing,
        warn,
        reported,
    }
}

#[cfg(test)]
mod tests;
