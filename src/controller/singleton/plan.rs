//! The pure handover planner for one StatefulSingleton.
//!
//! An *instance* is a pod that may be running the app: released by us, or admitted
//! without our gate (the webhook was down). **Invariant: a pod is released only when no
//! other instance is present in the API, and never while an instance that was
//! force-deleted from a lost node may still be running there.** Terminating is not gone.
//! All state the planner needs lives in the API (pod annotations/conditions and the
//! singleton's status), so an operator restart loses nothing and releases nothing twice.
use std::collections::BTreeMap;

use serde::Serialize;

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
}

impl PodInfo {
    pub fn is_instance(&self) -> bool {
        self.released || !self.gated
    }
    pub fn is_candidate(&self) -> bool {
        self.gated && !self.released && !self.terminating && self.failed.is_none()
    }
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
}

pub struct Observed<'a> {
    pub pods: &'a [PodInfo],
    pub replicasets: &'a [RsInfo],
    pub nodes: &'a BTreeMap<String, NodeState>,
    pub memory: &'a Memory,
    pub now: i64,
    pub max_transition_seconds: i64,
}

/// The candidate to release: the newest (most likely the current template), then by name.
fn best_candidate(pods: &[PodInfo]) -> Option<&PodInfo> {
    pods.iter()
        .filter(|p| p.is_candidate())
        .max_by(|a, b| a.created.cmp(&b.created).then_with(|| b.name.cmp(&a.name)))
}

pub fn plan(o: &Observed<'_>) -> Plan {
    let mut actions = vec![];
    let instances: Vec<&PodInfo> = o.pods.iter().filter(|p| p.is_instance()).collect();
    let candidate_count = o.pods.iter().filter(|p| p.is_candidate()).count();
    let extra_candidates = candidate_count.saturating_sub(1);
    let mut memory = o.memory.clone();

    // Keep one instance: released before ungated, alive before terminating, then the oldest.
    let keeper = instances
        .iter()
        .min_by(|a, b| {
            (!a.released, a.terminating, a.created, &a.name).cmp(&(
                !b.released,
                b.terminating,
                b.created,
                &b.name,
            ))
        })
        .copied();
    for i in &instances {
        if Some(i.uid.as_str()) != keeper.map(|k| k.uid.as_str()) && !i.released && !i.terminating {
            actions.push(Action::Delete {
                name: i.name.clone(),
                uid: i.uid.clone(),
                reason: DeleteReason::UngatedDuplicate,
            });
        }
    }

    let Some(active) = keeper else {
        // No instance present. Is the last one truly gone, or force-deleted from a lost node?
        let fenced = match (&o.memory.active_uid, &o.memory.active_node) {
            (Some(uid), Some(node)) if !o.pods.iter().any(|p| &p.uid == uid) => {
                matches!(o.nodes.get(node), Some(NodeState::NotReady)).then(|| node.clone())
            }
            _ => None,
        };
        if let Some(node) = fenced {
            let since = o.memory.transition_since.unwrap_or(o.now);
            memory.transition_since = Some(since);
            let timed_out = o.now - since > o.max_transition_seconds;
            let newly = timed_out && !o.memory.timed_out;
            memory.timed_out = timed_out;
            return Plan {
                actions,
                phase: Phase::Blocked,
                message: format!(
                    "pod {} was removed while node {node} is not ready; its containers may still run. Waiting for the node to be Ready, deleted, or tainted node.kubernetes.io/out-of-service",
                    o.memory.active_pod.as_deref().unwrap_or("?")
                ),
                memory,
                node_lost: Some(node),
                timed_out,
                newly_timed_out: newly,
                extra_candidates,
            };
        }
        return match best_candidate(o.pods) {
            Some(c) => {
                actions.push(Action::Release {
                    name: c.name.clone(),
                    uid: c.uid.clone(),
                });
                Plan {
                    actions,
                    phase: Phase::Running,
                    message: format!("released {}", c.name),
                    memory: Memory {
                        active_pod: Some(c.name.clone()),
                        active_uid: Some(c.uid.clone()),
                        active_node: c.node.clone(),
                        transition_since: None,
                        timed_out: false,
                    },
                    node_lost: None,
                    timed_out: false,
                    newly_timed_out: false,
                    extra_candidates,
                }
            }
            None => Plan {
                actions,
                phase: Phase::Running,
                message: "no pod".into(),
                memory: Memory::default(),
                node_lost: None,
                timed_out: false,
                newly_timed_out: false,
                extra_candidates,
            },
        };
    };

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
    let Some(next) = best_candidate(o.pods) else {
        memory.transition_since = None;
        memory.timed_out = false;
        return Plan {
            actions,
            phase: Phase::Running,
            message: format!("{} is active", active.name),
            memory,
            node_lost: None,
            timed_out: false,
            newly_timed_out: false,
            extra_candidates,
        };
    };

    // A successor waits for the active instance to be gone.
    let mut message = format!("{} waits for {} to be gone", next.name, active.name);
    if !active.terminating {
        if let Some(why) = &active.failed {
            actions.push(Action::Delete {
                name: active.name.clone(),
                uid: active.uid.clone(),
                reason: DeleteReason::FailedOldPod,
            });
            message = format!("{message} (deleting it: {why})");
        } else if let (Some(old_rs), Some(new_rs)) = (&active.replicaset, &next.replicaset) {
            let rs = |n: &str| o.replicasets.iter().find(|r| r.name == n);
            if let (Some(old), Some(new)) = (rs(old_rs), rs(new_rs)) {
                if old.name != new.name
                    && old.deployment.is_some()
                    && old.deployment == new.deployment
                    && old.replicas > 0
                {
                    actions.push(Action::ScaleToZero {
                        replicaset: old.name.clone(),
                    });
                    message = format!("{message} (scaling old ReplicaSet {} to 0)", old.name);
                }
            }
        }
    }
    let since = o.memory.transition_since.unwrap_or(o.now);
    memory.transition_since = Some(since);
    let timed_out = o.now - since > o.max_transition_seconds;
    let newly = timed_out && !o.memory.timed_out;
    memory.timed_out = timed_out;
    if timed_out {
        message = format!(
            "{message}; maxTransitionTime ({}s) exceeded, still waiting safely",
            o.max_transition_seconds
        );
    }
    Plan {
        actions,
        phase: Phase::Transitioning,
        message,
        memory,
        node_lost: None,
        timed_out,
        newly_timed_out: newly,
        extra_candidates,
    }
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
