//! Pure: one pool's pods and claims → what to write. No I/O, no clock: `now` is an input.
//!
//! Invariants (property-tested below):
//! - a pod is chosen for at most one claim, and only when it is Running, Ready, not
//!   terminating, idle under its pool's busy mode, carries no claim and is not reserved by
//!   a binding still in flight;
//! - a claim is bound at most once: a claim that already owns a pod (its UID on the pod, or
//!   a binding in flight) is never given another;
//! - pending claims are served first come, first served (creation time, then when the
//!   operator first saw them, then name): a later claim never takes a pod while an earlier
//!   one still waits;
//! - among eligible pods the choice spreads claims across nodes (fewest claimed pods of
//!   this pool on the node), then takes the oldest pod.
use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::api::claim::{reason, ClaimPhase, PoolKind, ReleasePolicy};

/// A pool's state as the binder needs it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum PoolState {
    /// No pool of that kind and name exists.
    NotFound,
    /// The claim names a kind we do not serve.
    UnknownKind,
    /// The pool exists but cannot be acted on (its InvalidSpec message).
    Invalid(String),
    Ready {
        kind: PoolKind,
        /// The pool runs `maxReplicas` pods already (for the waiting message).
        at_max: bool,
        max_replicas: i32,
    },
}

/// One pod of the pool, reduced to what binding reads.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PodFacts {
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub node: Option<String>,
    pub ip: Option<String>,
    /// Creation time (seconds).
    pub created: i64,
    pub running: bool,
    pub ready: bool,
    pub terminating: bool,
    /// Busy under the pool's busy mode (unknown and stale count as busy here: never hand
    /// out a pod we are not sure is idle).
    pub busy: bool,
    /// The claim the pod carries: (`namespace/name`, claim UID).
    pub claim: Option<(String, String)>,
    /// The release policy written with the claim.
    pub release: ReleasePolicy,
    /// The pod's Job finished (HSJ: its unit is used up).
    pub finished: bool,
    /// Name and UID of the Job that controls the pod (HSJ units).
    pub job: Option<(String, String)>,
}

impl PodFacts {
    fn eligible(&self) -> bool {
        self.running
            && self.ready
            && !self.terminating
            && !self.busy
            && !self.finished
            && self.claim.is_none()
    }
}

/// One claim naming the pool.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClaimFacts {
    pub name: String,
    pub uid: String,
    /// Creation time (seconds).
    pub created: Timestamp,
    /// Order in which the operator first saw the claim (finer than `created`).
    pub seen: u64,
    /// Why the spec cannot be served, if it cannot.
    pub problem: Option<String>,
    pub wait_seconds: i64,
    pub ttl_seconds: Option<i64>,
    pub release: ReleasePolicy,
    pub phase: ClaimPhase,
    /// The reason of the last condition written (to announce a failure once).
    pub reason: Option<String>,
    /// Pod UID in status.
    pub bound_pod: Option<String>,
    pub bound_at: Option<Timestamp>,
}

/// A binding written but not yet seen in the caches.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InFlight {
    pub claim_uid: String,
    pub pod_uid: String,
}

/// Everything one pass of one pool reads.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct World {
    pub namespace: String,
    pub pool_name: String,
    pub pool: PoolState,
    pub pods: Vec<PodFacts>,
    pub claims: Vec<ClaimFacts>,
    pub in_flight: Vec<InFlight>,
    /// UIDs of every claim that exists in the namespace (pods of deleted claims are released).
    pub live_claims: HashSet<String>,
}

/// What a claim's status becomes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Verdict {
    /// Still waiting; the condition says why.
    Waiting {
        reason: &'static str,
        message: String,
    },
    /// Bound to the pod (status written after the pod).
    Bound { pod: usize },
    Released {
        reason: &'static str,
        message: String,
    },
    Failed {
        reason: &'static str,
        message: String,
    },
}

/// One write the pass makes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Action {
    /// Mark the pod claimed (guarded by its resourceVersion), then write the claim Bound.
    Bind { claim: usize, pod: usize },
    /// Write the claim's status.
    Status { claim: usize, verdict: Verdict },
    /// Release a pod whose claim ended or is gone.
    Release { pod: usize, how: Release },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Release {
    /// Mark idle and drop the claim's annotations.
    Recycle,
    /// Mark idle, then delete the pod (UID precondition).
    DeletePod,
    /// Delete the pod's Job (HSJ units are single-use).
    DeleteJob,
}

/// A pass's result.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// When to look again (a wait or a TTL runs out).
    pub wake_at: Option<Timestamp>,
    pub counts: crate::state::PoolClaims,
}

fn secs(s: i64) -> SignedDuration {
    SignedDuration::from_secs(s.max(0))
}

fn release_of(kind: Option<PoolKind>, pod: &PodFacts, policy: ReleasePolicy) -> Release {
    match (kind, policy) {
        (Some(PoolKind::HotStandbyJob), _) if pod.job.is_some() => Release::DeleteJob,
        (_, ReleasePolicy::Recycle) => Release::Recycle,
        (_, ReleasePolicy::Delete) => Release::DeletePod,
    }
}

fn earliest(a: Option<Timestamp>, b: Timestamp) -> Option<Timestamp> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// The pass for one pool.
pub fn plan(w: &World, now: Timestamp) -> Plan {
    let mut p = Plan::default();
    let kind = match &w.pool {
        PoolState::Ready { kind, .. } => Some(*kind),
        _ => None,
    };
    // Which pod carries which claim (cache, then bindings still in flight).
    let mut pod_of: HashMap<&str, usize> = HashMap::new();
    for (i, pod) in w.pods.iter().enumerate() {
        if let Some((_, uid)) = &pod.claim {
            pod_of.insert(uid.as_str(), i);
        }
    }
    let mut reserved: HashSet<&str> = HashSet::new();
    for f in &w.in_flight {
        if let Some(i) = w.pods.iter().position(|x| x.uid == f.pod_uid) {
            pod_of.entry(f.claim_uid.as_str()).or_insert(i);
        }
        reserved.insert(f.pod_uid.as_str());
    }
    let claims_by_uid: HashMap<&str, &ClaimFacts> =
        w.claims.iter().map(|c| (c.uid.as_str(), c)).collect();

    // 1. Pods whose claim is gone or over: release them.
    for (i, pod) in w.pods.iter().enumerate() {
        let Some((_, uid)) = &pod.claim else { continue };
        if pod.terminating {
            continue;
        }
        let over = match claims_by_uid.get(uid.as_str()) {
            Some(c) => c.phase == ClaimPhase::Released,
            None => !w.live_claims.contains(uid),
        };
        if over {
            p.actions.push(Action::Release {
                pod: i,
                how: release_of(kind, pod, pod.release),
            });
        }
    }

    // 2. Claims: bound ones checked, pending ones ordered for binding.
    let mut pending: Vec<usize> = vec![];
    for (ci, c) in w.claims.iter().enumerate() {
        match (c.phase, &c.problem) {
            // A claim that cannot be served fails at once (bound claims keep their pod).
            (ClaimPhase::Pending, Some(problem)) if !pod_of.contains_key(c.uid.as_str()) => {
                p.actions.push(Action::Status {
                    claim: ci,
                    verdict: Verdict::Failed {
                        reason: reason::INVALID_SPEC,
                        message: problem.clone(),
                    },
                });
                continue;
            }
            _ => {}
        }
        match c.phase {
            ClaimPhase::Released | ClaimPhase::Failed => {}
            ClaimPhase::Bound => match pod_of.get(c.uid.as_str()).map(|i| (*i, &w.pods[*i])) {
                Some((pi, pod)) if pod.finished => {
                    p.actions.push(Action::Status {
                        claim: ci,
                        verdict: Verdict::Released {
                            reason: reason::JOB_FINISHED,
                            message: format!("the Job of pod {} finished", pod.name),
                        },
                    });
                    p.actions.push(Action::Release {
                        pod: pi,
                        how: release_of(kind, pod, c.release),
                    });
                }
                Some((pi, pod)) => {
                    let expires = match (c.ttl_seconds, c.bound_at) {
                        (Some(ttl), Some(at)) => at.checked_add(secs(ttl)).ok(),
                        _ => None,
                    };
                    match expires {
                        Some(t) if t <= now => {
                            p.actions.push(Action::Status {
                                claim: ci,
                                verdict: Verdict::Released {
                                    reason: reason::TTL_EXPIRED,
                                    message: format!(
                                        "ttlSeconds {} ran out; pod {} released",
                                        c.ttl_seconds.unwrap_or_default(),
                                        pod.name
                                    ),
                                },
                            });
                            p.actions.push(Action::Release {
                                pod: pi,
                                how: release_of(kind, pod, c.release),
                            });
                        }
                        Some(t) => p.wake_at = earliest(p.wake_at, t),
                        None => {}
                    }
                }
                None => p.actions.push(Action::Status {
                    claim: ci,
                    verdict: Verdict::Failed {
                        reason: reason::POD_LOST,
                        message: "the bound pod is gone or no longer carries this claim".into(),
                    },
                }),
            },
            ClaimPhase::Pending => {
                if let Some(&pi) = pod_of.get(c.uid.as_str()) {
                    // Bound on the pod already (a status write was lost): finish it.
                    if !reserved.contains(w.pods[pi].uid.as_str()) {
                        p.actions.push(Action::Status {
                            claim: ci,
                            verdict: Verdict::Bound { pod: pi },
                        });
                    }
                } else {
                    pending.push(ci);
                }
            }
        }
    }
    pending.sort_by(|a, b| {
        let (a, b) = (&w.claims[*a], &w.claims[*b]);
        (a.created, a.seen, &a.name).cmp(&(b.created, b.seen, &b.name))
    });

    // 3. Bind in FIFO order while eligible pods last.
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for pod in &w.pods {
        if pod.claim.is_some() || reserved.contains(pod.uid.as_str()) {
            *per_node
                .entry(pod.node.as_deref().unwrap_or(""))
                .or_default() += 1;
        }
    }
    let mut taken: HashSet<usize> = HashSet::new();
    let mut waiting = 0;
    let mut exhausted_now = 0;
    for ci in pending {
        let c = &w.claims[ci];
        let deadline = c.created.checked_add(secs(c.wait_seconds)).unwrap_or(now);
        let (why, message) = match &w.pool {
            PoolState::Ready { .. } => {
                let choice = w
                    .pods
                    .iter()
                    .enumerate()
                    .filter(|(i, pod)| {
                        pod.eligible() && !taken.contains(i) && !reserved.contains(pod.uid.as_str())
                    })
                    .min_by_key(|(_, pod)| {
                        let node = pod.node.as_deref().unwrap_or("");
                        (
                            per_node.get(node).copied().unwrap_or(0),
                            pod.created,
                            pod.name.clone(),
                        )
                    })
                    .map(|(i, _)| i);
                if let Some(pi) = choice {
                    taken.insert(pi);
                    let node = w.pods[pi].node.as_deref().unwrap_or("");
                    *per_node.entry(node).or_default() += 1;
                    p.actions.push(Action::Bind { claim: ci, pod: pi });
                    continue;
                }
                (reason::POOL_EXHAUSTED, exhausted_message(w))
            }
            PoolState::NotFound => (
                reason::POOL_NOT_FOUND,
                format!(
                    "pool {} not found in namespace {}",
                    w.pool_name, w.namespace
                ),
            ),
            PoolState::UnknownKind => (
                reason::INVALID_SPEC,
                "spec.poolRef.kind is not HotStandbyDeployment or HotStandbyJob".into(),
            ),
            PoolState::Invalid(m) => (
                reason::INVALID_SPEC,
                format!("pool {} cannot be acted on: {m}", w.pool_name),
            ),
        };
        if deadline <= now {
            if why == reason::POOL_EXHAUSTED {
                exhausted_now += 1;
            }
            p.actions.push(Action::Status {
                claim: ci,
                verdict: Verdict::Failed {
                    reason: why,
                    message: format!("{message}; waitSeconds {} ran out", c.wait_seconds),
                },
            });
        } else {
            waiting += 1;
            p.wake_at = earliest(p.wake_at, deadline);
            let reason = if why == reason::POOL_EXHAUSTED {
                reason::WAITING
            } else {
                why
            };
            if c.reason.as_deref() != Some(reason) {
                p.actions.push(Action::Status {
                    claim: ci,
                    verdict: Verdict::Waiting { reason, message },
                });
            }
        }
    }
    let exhausted_before = w
        .claims
        .iter()
        .filter(|c| {
            c.phase == ClaimPhase::Failed && c.reason.as_deref() == Some(reason::POOL_EXHAUSTED)
        })
        .count();
    // Pods that carry a claim after this pass: claimed in the cache or in flight, not
    // released now, plus the new bindings.
    let released: HashSet<usize> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Release { pod, .. } => Some(*pod),
            _ => None,
        })
        .collect();
    let claimed = w
        .pods
        .iter()
        .enumerate()
        .filter(|(i, pod)| {
            let carries = pod.claim.is_some()
                || w.in_flight
                    .iter()
                    .any(|f| f.pod_uid == pod.uid && !f.claim_uid.is_empty());
            carries && !pod.terminating && !released.contains(i)
        })
        .count()
        + taken.len();
    p.counts = crate::state::PoolClaims {
        claimed: claimed as i32,
        pending: waiting,
        exhausted: (exhausted_before + exhausted_now) as i32,
    };
    p
}

fn exhausted_message(w: &World) -> String {
    match &w.pool {
        PoolState::Ready {
            at_max: true,
            max_replicas,
            ..
        } => format!(
            "no idle pod in pool {}, and it is at maxReplicas ({max_replicas}): it cannot grow until a pod is released",
            w.pool_name
        ),
        _ => format!(
            "no idle pod in pool {} yet; it is scaling up",
            w.pool_name
        ),
    }
}

#[cfg(test)]
mod tests;
