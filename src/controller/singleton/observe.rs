//! The StatefulSingleton reconciler's reads: API objects → small facts (pods, nodes,
//! ReplicaSets, built once per watch event), the caches → one [`View`] per reconcile
//! (which pods are ours, overlap, nodes, ReplicaSets, the status memory), and a plan → the
//! status.
//!
//! Invariants:
//! - no I/O: everything is read from the caches the shell's gate has seen listed, so a
//!   lookup cannot fail and an object missing from a cache is absent from the API;
//! - a pod is ours only if our selector matches it and no older StatefulSingleton's does
//!   (`owning_singleton`): two singletons never plan for the same pod.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use super::plan::{AgentReport, Memory, NodeState, Observed, Phase, Plan, PodInfo, RsInfo};
use super::Stores;
use crate::api::set_condition;
use crate::api::singleton::{
    self, selector_matches, StatefulSingleton, StatefulSingletonStatus, EPOCH_ANNOTATION,
    INIT_GATE_NAME, READY_CONDITION, RELEASED_ANNOTATION, SIDECAR_NAME, WRAPPER_CONFIGMAP,
    WRAPPER_SCRIPT, WRAPPER_SCRIPT_NAME,
};
use crate::controller::index::Index;

const BAD_WAITING: [&str; 6] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
];

/// Is this container status our injected agent's (the pod carries the gate)?
fn is_agent(pod: &Pod, name: &str, init: bool) -> bool {
    singleton::carries_gate(pod)
        && if init {
            name == INIT_GATE_NAME
        } else {
            name == SIDECAR_NAME
        }
}

/// The one line that says why the agent stopped: its `error:` line (the agent writes it
/// as the termination message; with `FallbackToLogsOnError` the message may be the log
/// tail), else the last line, else the exit code.
fn agent_message(t: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> String {
    let text = t.message.as_deref().unwrap_or_default();
    let line = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with("error:"))
        .or_else(|| text.lines().rev().map(str::trim).find(|l| !l.is_empty()));
    match line {
        Some(l) => crate::telemetry::cut(l.trim_start_matches("error:").trim(), 512),
        None => format!(
            "exit code {}{}",
            t.exit_code,
            t.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
    }
}

/// Why the pod's agent (init gate or status sidecar) cannot get its release, if it
/// cannot: it is waiting to be restarted, or has stopped, after a non-zero exit. A
/// released pod's agent has nothing left to ask, so it is never reported.
pub fn agent_error(pod: &Pod) -> Option<String> {
    if pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(RELEASED_ANNOTATION))
    {
        return None;
    }
    let st = pod.status.as_ref()?;
    let agents = st
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|cs| is_agent(pod, &cs.name, true))
        .chain(
            st.container_statuses
                .iter()
                .flatten()
                .filter(|cs| is_agent(pod, &cs.name, false)),
        );
    for cs in agents {
        let state = cs.state.as_ref();
        if let Some(t) = state
            .and_then(|s| s.terminated.as_ref())
            .filter(|t| t.exit_code != 0)
        {
            return Some(agent_message(t));
        }
        let waiting = state.and_then(|s| s.waiting.as_ref()).is_some();
        if let Some(t) = cs
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .filter(|t| t.exit_code != 0 && waiting)
        {
            return Some(agent_message(t));
        }
    }
    None
}

/// Why a pod counts as failed, if it does. Our agent's own restarts do not count (they
/// are reported as `AgentUnreachable`): a pod whose agent crash-looped during an operator
/// outage must still be released once the agent gets through.
pub fn failure(pod: &Pod) -> Option<String> {
    let st = pod.status.as_ref()?;
    match st.phase.as_deref() {
        Some("Failed") => {
            return Some(format!(
                "phase Failed{}",
                st.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ))
        }
        Some("Succeeded") => return Some("phase Succeeded".into()),
        _ => {}
    }
    for cs in st
        .container_statuses
        .iter()
        .flatten()
        .filter(|cs| !is_agent(pod, &cs.name, false))
        .chain(
            st.init_container_statuses
                .iter()
                .flatten()
                .filter(|cs| !is_agent(pod, &cs.name, true)),
        )
    {
        if let Some(reason) = cs
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref())
        {
            if BAD_WAITING.contains(&reason) {
                return Some(format!("container {}: {reason}", cs.name));
            }
        }
        if cs.restart_count > 3 {
            return Some(format!(
                "container {} restarted {} times",
                cs.name, cs.restart_count
            ));
        }
    }
    None
}

/// What the singleton controller keeps of a pod (built once per watch event): the labels
/// its selectors match against and the planner's view. A few hundred bytes, not the Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodFacts {
    pub namespace: String,
    pub labels: singleton::CompactLabels,
    /// The pod mounts the wrapper ConfigMap (it must outlive such pods).
    pub mounts_wrapper: bool,
    pub info: PodInfo,
}

pub fn pod_facts(pod: &Pod) -> PodFacts {
    PodFacts {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        labels: singleton::CompactLabels::new(pod.metadata.labels.as_ref()),
        mounts_wrapper: pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|v| {
                v.iter().any(|v| {
                    v.config_map
                        .as_ref()
                        .is_some_and(|c| c.name == WRAPPER_CONFIGMAP)
                })
            }),
        info: pod_info(pod),
    }
}

pub fn pod_info(pod: &Pod) -> PodInfo {
    let ann = pod.metadata.annotations.as_ref();
    PodInfo {
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
        created: crate::controller::created_seconds(&pod.metadata),
        gated: singleton::carries_gate(pod),
        released: ann.is_some_and(|a| a.contains_key(RELEASED_ANNOTATION)),
        ready_condition: crate::controller::pod_condition_true(pod, READY_CONDITION),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        failed: failure(pod),
        agent_error: agent_error(pod),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        replicaset: pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == "ReplicaSet")
            .map(|o| o.name.clone()),
        started: started(pod),
        revision: revision(pod),
        epoch: ann
            .and_then(|a| a.get(EPOCH_ANNOTATION))
            .and_then(|e| e.trim().parse::<u64>().ok())
            .filter(|e| *e > 0),
    }
}

/// The template revision of a pod its controller did not make through a ReplicaSet
/// (StatefulSet pods): `Kind/name@controller-revision-hash`.
fn revision(pod: &Pod) -> Option<String> {
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind != "ReplicaSet")?;
    let hash = pod.labels().get("controller-revision-hash")?;
    Some(format!("{}/{}@{hash}", owner.kind, owner.name))
}

/// Have the pod's containers started (phase Running, or its init gate running)?
fn started(pod: &Pod) -> bool {
    let Some(st) = pod.status.as_ref() else {
        return false;
    };
    st.phase.as_deref() == Some("Running")
        || st.init_container_statuses.iter().flatten().any(|cs| {
            is_agent(pod, &cs.name, true) && cs.state.as_ref().is_some_and(|s| s.running.is_some())
        })
}

pub fn node_state(node: &Node) -> NodeState {
    let oos = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| {
            t.iter()
                .any(|t| t.key == "node.kubernetes.io/out-of-service")
        });
    if oos {
        return NodeState::OutOfService;
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if ready {
        NodeState::Ready
    } else {
        NodeState::NotReady
    }
}

/// What the status remembers, as planner memory.
pub fn memory(status: Option<&StatefulSingletonStatus>) -> Memory {
    let Some(s) = status else {
        return Memory::default();
    };
    Memory {
        active_pod: s.active_pod.clone(),
        active_uid: s.active_pod_uid.clone(),
        active_node: s.active_node.clone(),
        transition_since: s.transition_timestamp.as_ref().map(|t| t.0.as_second()),
        timed_out: crate::api::condition(&s.conditions, "TransitionTimedOut")
            .is_some_and(|c| c.status == "True"),
        epoch: s.epoch.and_then(|e| u64::try_from(e).ok()).unwrap_or(0),
    }
}

/// Overlap with other singletons of the namespace, for the condition.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Overlap {
    /// Singletons that also select some of our pods but are younger (we win).
    pub won_against: Vec<String>,
    /// Singletons that are older and take pods we select.
    pub lost_to: Vec<String>,
}

fn push_once(names: &mut Vec<String>, name: String) {
    if !names.contains(&name) {
        names.push(name);
    }
}

/// Everything one reconcile reads, taken from the caches (no API call, no write).
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The pods this singleton owns: its selector matches and it is the oldest that does.
    pub pods: Vec<PodInfo>,
    pub overlap: Overlap,
    /// Why the spec cannot be acted on, if it cannot.
    pub invalid: Option<&'static str>,
    /// What the status remembers.
    pub memory: Memory,
    /// The nodes of our pods and of the remembered active pod (a deleted node is absent).
    pub nodes: BTreeMap<String, NodeState>,
    /// The ReplicaSets of our pods, read only while a pod waits for its release.
    pub replicasets: Vec<RsInfo>,
    /// Some pod is ours and the namespace's wrapper ConfigMap is missing or stale.
    pub configmap_stale: bool,
    /// The NodeLost condition is already True (its Event was given).
    pub node_lost_before: bool,
}

impl View {
    /// The planner's input.
    pub fn observed(&self, now: i64, max_transition_seconds: i64) -> Observed<'_> {
        Observed {
            pods: &self.pods,
            replicasets: &self.replicasets,
            nodes: &self.nodes,
            memory: &self.memory,
            now,
            max_transition_seconds,
        }
    }
}

/// Read what a reconcile of `s` (in `ns`) needs from the caches. Cache reads cannot fail:
/// the shell's gate has seen every cache listed; an object missing from one is absent
/// from the API (a missing Node was deleted, a missing ReplicaSet is not scaled).
pub fn observe(stores: &Stores, s: &StatefulSingleton, ns: &str) -> View {
    let (mine, overlap) = ownership(&stores.singletons_in(ns), s, &stores.pods.in_namespace(ns));
    let pods: Vec<PodInfo> = mine.iter().map(|p| p.info.clone()).collect();
    let memory = memory(s.status.as_ref());
    let configmap = stores
        .configmaps
        .get(&ObjectRef::new(WRAPPER_CONFIGMAP).within(ns));
    View {
        nodes: nodes(&stores.nodes, &pods, &memory),
        replicasets: replicasets(&stores.replicasets, ns, &pods),
        configmap_stale: !mine.is_empty() && !configmap.as_deref().is_some_and(configmap_current),
        invalid: invalid_spec(s),
        node_lost_before: s
            .status
            .as_ref()
            .and_then(|st| crate::api::condition(&st.conditions, "NodeLost"))
            .is_some_and(|c| c.status == "True"),
        pods,
        overlap,
        memory,
    }
}

/// Which pods are ours (matched by our selector, and we are the oldest matching
/// singleton), and which other singletons overlap with us.
pub fn ownership(
    all: &[Arc<StatefulSingleton>],
    s: &StatefulSingleton,
    pods: &[Arc<PodFacts>],
) -> (Vec<Arc<PodFacts>>, Overlap) {
    let me = s.uid();
    let mut overlap = Overlap::default();
    let mut mine = vec![];
    for p in pods
        .iter()
        .filter(|p| selector_matches(&s.spec.selector, &p.labels))
    {
        match singleton::owning_singleton(all, &p.labels) {
            Some(owner) if owner.uid() == me => {
                mine.push(p.clone());
                for other in all
                    .iter()
                    .filter(|o| o.uid() != me && selector_matches(&o.spec.selector, &p.labels))
                {
                    push_once(&mut overlap.won_against, other.name_any());
                }
            }
            Some(owner) => push_once(&mut overlap.lost_to, owner.name_any()),
            None => {}
        }
    }
    (mine, overlap)
}

/// Why the spec cannot be acted on: an empty selector would take every pod.
pub fn invalid_spec(s: &StatefulSingleton) -> Option<&'static str> {
    let sel = &s.spec.selector;
    let empty_selector = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty());
    empty_selector.then_some(
        "selector is empty: it would select every pod of the namespace; nothing is managed",
    )
}

/// The states of our pods' nodes and of the remembered active node.
fn nodes(
    index: &Index<NodeState>,
    pods: &[PodInfo],
    memory: &Memory,
) -> BTreeMap<String, NodeState> {
    pods.iter()
        .filter_map(|p| p.node.clone())
        .chain(memory.active_node.clone())
        .filter_map(|n| index.get("", &n).map(|state| (n, *state)))
        .collect()
}

/// The ReplicaSets of our pods (only needed while a pod waits: a surge rollout).
fn replicasets(index: &Index<RsInfo>, ns: &str, pods: &[PodInfo]) -> Vec<RsInfo> {
    if !pods.iter().any(PodInfo::is_candidate) {
        return vec![];
    }
    let names: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p.replicaset.as_deref())
        .collect();
    names
        .into_iter()
        .filter_map(|n| index.get(ns, n).map(|rs| (*rs).clone()))
        .collect()
}

/// What the singleton controller keeps of a ReplicaSet.
pub fn rs_info(rs: &ReplicaSet) -> RsInfo {
    RsInfo {
        name: rs.name_any(),
        replicas: rs.spec.replicas.unwrap_or(1),
        deployment: rs
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == "Deployment")
            .map(|o| o.uid.clone()),
    }
}

/// One condition of the status.
struct Cond {
    type_: &'static str,
    on: bool,
    reason: &'static str,
    message: String,
}

fn pick<T>(on: bool, yes: T, no: T) -> T {
    if on {
        yes
    } else {
        no
    }
}

fn timeout_condition(s: &StatefulSingleton, plan: &Plan) -> Cond {
    let on = plan.timed_out;
    Cond {
        type_: "TransitionTimedOut",
        on,
        reason: pick(on, "MaxTransitionTimeExceeded", "WithinMaxTransitionTime"),
        message: if on {
            format!(
                "handover exceeded maxTransitionTime ({}s); waiting safely: {}",
                s.spec.max_transition_time, plan.message
            )
        } else {
            "no handover over its time limit".to_string()
        },
    }
}

fn node_lost_condition(plan: &Plan) -> Cond {
    Cond {
        type_: "NodeLost",
        on: plan.node_lost.is_some(),
        reason: pick(plan.node_lost.is_some(), "WaitingForNode", "NoNodeLost"),
        message: match &plan.node_lost {
            Some(n) => plan.message.replace("{node}", n),
            None => "no release waits for a lost node".into(),
        },
    }
}

fn overlap_condition(overlap: &Overlap) -> Cond {
    let on = !overlap.won_against.is_empty() || !overlap.lost_to.is_empty();
    Cond {
        type_: "Overlapping",
        on,
        reason: if !overlap.lost_to.is_empty() {
            "OlderSingletonWins"
        } else {
            pick(on, "ThisSingletonWins", "NoOverlap")
        },
        message: if on {
            format!(
                "selector overlaps with other StatefulSingletons; the oldest owns shared pods. older: [{}], younger: [{}]",
                overlap.lost_to.join(", "),
                overlap.won_against.join(", ")
            )
        } else {
            "no other StatefulSingleton selects these pods".into()
        },
    }
}

fn candidates_condition(plan: &Plan) -> Cond {
    let on = plan.extra_candidates > 0;
    Cond {
        type_: "MultipleCandidates",
        on,
        reason: pick(on, "MoreThanOneWaitingPod", "AtMostOneWaitingPod"),
        message: format!(
            "{} more waiting pod(s) than can be released (is replicas > 1?)",
            plan.extra_candidates
        ),
    }
}

fn agent_condition(agents: &AgentReport) -> Cond {
    let on = !agents.failing.is_empty();
    Cond {
        type_: "AgentUnreachable",
        on,
        reason: pick(on, "AgentFailing", "NoAgentFailing"),
        message: if on {
            agents
                .failing
                .iter()
                .map(|p| format!("pod {}: {}", p.pod, p.message))
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            "every waiting pod's agent is running".to_string()
        },
    }
}

fn standby_condition(plan: &Plan) -> Cond {
    let on = !plan.standby.is_empty();
    Cond {
        type_: "StandbyReady",
        on,
        reason: pick(on, "StandbyWaiting", "NoStandby"),
        message: if on {
            format!(
                "gated and ready to take over once the active pod is gone: {}",
                plan.standby.join(", ")
            )
        } else {
            "no gated pod waits to take over (replicas 2 keeps a warm standby)".to_string()
        },
    }
}

fn spec_condition(invalid: Option<&str>) -> Cond {
    Cond {
        type_: "InvalidSpec",
        on: invalid.is_some(),
        reason: pick(invalid.is_some(), "InvalidSpec", "Valid"),
        message: invalid.unwrap_or("spec is valid").to_string(),
    }
}

/// The status a plan leads to: the memory, phase and message, and every condition.
pub fn status(
    s: &StatefulSingleton,
    plan: &Plan,
    overlap: &Overlap,
    invalid: Option<&str>,
    agents: &AgentReport,
    now: Timestamp,
) -> StatefulSingletonStatus {
    let now_t = Time(now);
    let generation = s.metadata.generation;
    let mut st = s.status.clone().unwrap_or_default();
    st.observed_generation = generation;
    st.phase = Some(match plan.phase {
        Phase::Running => singleton::Phase::Running,
        Phase::Transitioning => singleton::Phase::Transitioning,
        Phase::Blocked => singleton::Phase::Blocked,
    });
    st.active_pod = plan.memory.active_pod.clone();
    st.active_pod_uid = plan.memory.active_uid.clone();
    st.active_node = plan.memory.active_node.clone();
    st.transition_timestamp = plan
        .memory
        .transition_since
        .and_then(|t| Timestamp::from_second(t).ok())
        .map(Time);
    st.message = Some(plan.message.clone());
    st.epoch = i64::try_from(plan.memory.epoch).ok().filter(|e| *e > 0);
    st.standby_pods = plan.standby.clone();
    let conditions = [
        timeout_condition(s, plan),
        node_lost_condition(plan),
        overlap_condition(overlap),
        candidates_condition(plan),
        agent_condition(agents),
        standby_condition(plan),
        spec_condition(invalid),
    ];
    for c in conditions {
        set_condition(
            &mut st.conditions,
            c.type_,
            c.on,
            c.reason,
            c.message,
            generation,
            &now_t,
        );
    }
    st
}

/// The wrapper ConfigMap for a namespace.
pub fn wrapper_configmap(namespace: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(WRAPPER_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                crate::MANAGER.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            WRAPPER_SCRIPT_NAME.to_string(),
            WRAPPER_SCRIPT.to_string(),
        )])),
        ..Default::default()
    }
}

pub fn configmap_current(cm: &ConfigMap) -> bool {
    cm.data
        .as_ref()
        .and_then(|d| d.get(WRAPPER_SCRIPT_NAME))
        .map(String::as_str)
        == Some(WRAPPER_SCRIPT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::singleton::GATE_ANNOTATION;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        let mut base = json!({"metadata": {"name": "p", "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"containers": [{"name": "a"}], "nodeName": "n1"}});
        json_patch::merge(&mut base, &v);
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn failure_table() {
        assert_eq!(failure(&pod(json!({}))), None);
        assert!(failure(&pod(
            json!({"status": {"phase": "Failed", "reason": "Evicted"}})
        ))
        .unwrap()
        .contains("Evicted"));
        assert!(failure(&pod(json!({"status": {"phase": "Running", "containerStatuses": [
            {"name": "a", "image": "x", "imageID": "", "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}))).unwrap().contains("CrashLoopBackOff"));
        assert!(failure(&pod(json!({"status": {"containerStatuses": [
            {"name": "a", "image": "x", "imageID": "", "ready": true, "restartCount": 4, "state": {"running": {}}}]}}))).unwrap().contains("4 times"));
        assert_eq!(
            failure(&pod(json!({"status": {"containerStatuses": [
            {"name": "a", "image": "x", "imageID": "", "ready": true, "restartCount": 3, "state": {"waiting": {"reason": "ContainerCreating"}}}]}}))),
            None
        );
    }

    #[test]
    fn pod_info_reads_the_api_state() {
        let p = pod(json!({
            "spec": {"containers": [{"name": "app"}], "initContainers": [{"name": "singleton-gate", "args": ["agent", "--once"]}]},
            "metadata": {"annotations": {GATE_ANNOTATION: "wrapper", RELEASED_ANNOTATION: "2026-01-01T00:00:01Z"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs-1", "uid": "r", "controller": true}]},
            "status": {"conditions": [{"type": READY_CONDITION, "status": "True"}]}
        }));
        let i = pod_info(&p);
        assert!(i.gated && i.released && i.ready_condition && !i.terminating);
        assert_eq!(
            (i.node.as_deref(), i.replicaset.as_deref()),
            (Some("n1"), Some("rs-1"))
        );
        assert!(!pod_info(&pod(json!({}))).gated);
    }

    /// A StatefulSet's pods carry their template revision (the standby rule compares it);
    /// a ReplicaSet's pods and bare pods carry none.
    #[test]
    fn pod_info_reads_the_statefulset_revision() {
        let sts = |hash: &str| {
            pod(json!({"metadata": {
                "labels": {"controller-revision-hash": hash},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "s", "controller": true}]}}))
        };
        let a = pod_info(&sts("db-7c9"));
        assert_eq!(a.revision.as_deref(), Some("StatefulSet/db@db-7c9"));
        assert!(a.same_template(&pod_info(&sts("db-7c9"))));
        assert!(!a.same_template(&pod_info(&sts("db-8d0"))));
        assert_eq!(
            pod_info(&pod(
                json!({"metadata": {"labels": {"controller-revision-hash": "x"}}})
            ))
            .revision,
            None
        );
        let rs = pod(json!({"metadata": {
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs-1", "uid": "r", "controller": true}]}}));
        assert_eq!(pod_info(&rs).revision, None);
    }

    #[test]
    fn gated_is_decided_from_the_injected_containers_not_the_annotation() {
        let annotated_only =
            pod(json!({"metadata": {"annotations": {GATE_ANNOTATION: "wrapper"}}}));
        assert!(!pod_info(&annotated_only).gated);
        let init = pod(json!({"spec": {"containers": [{"name": "app"}],
            "initContainers": [{"name": "singleton-gate", "args": ["agent", "--once"]}]}}));
        assert!(pod_info(&init).gated);
        let sidecar = pod(json!({"spec": {"containers": [{"name": "app"},
            {"name": "status-sidecar", "args": ["agent", "--signal-file", "/x"]}]}}));
        assert!(pod_info(&sidecar).gated);
        let impostor = pod(
            json!({"spec": {"containers": [{"name": "status-sidecar", "command": ["sleep"]}]}}),
        );
        assert!(!pod_info(&impostor).gated);
    }

    fn gated(status: serde_json::Value, init: bool) -> Pod {
        let spec = if init {
            json!({"containers": [{"name": "app"}], "initContainers": [{"name": "singleton-gate", "args": ["agent", "--once"]}]})
        } else {
            json!({"containers": [{"name": "app"}, {"name": "status-sidecar", "args": ["agent", "--signal-file", "/x"]}]})
        };
        pod(json!({"spec": spec, "status": status}))
    }

    fn agent_status(
        name: &str,
        state: serde_json::Value,
        last: serde_json::Value,
    ) -> serde_json::Value {
        json!({"name": name, "image": "x", "imageID": "", "ready": false, "restartCount": 5, "state": state, "lastState": last})
    }

    #[test]
    fn a_crash_looping_init_gate_is_an_agent_error_not_a_failed_pod() {
        let msg = "2026-01-01T00:00:00Z  WARN release check failed\nerror: kube-standby agent: the operator's certificate is not trusted with the injected CA (KUBE_STANDBY_CA): invalid peer certificate: UnknownIssuer\n";
        let p = gated(
            json!({"phase": "Pending", "initContainerStatuses": [agent_status("singleton-gate",
                json!({"waiting": {"reason": "CrashLoopBackOff"}}),
                json!({"terminated": {"exitCode": 1, "reason": "Error", "message": msg}}))]}),
            true,
        );
        let e = agent_error(&p).expect("agent error");
        assert!(
            e.starts_with("kube-standby agent: the operator's certificate is not trusted"),
            "{e}"
        );
        assert!(!e.contains("WARN"), "only the error line: {e}");
        assert_eq!(
            failure(&p),
            None,
            "the agent's restarts do not fail the pod"
        );
        assert_eq!(pod_info(&p).agent_error, Some(e));
        // Once released the agent has nothing left to ask.
        let mut released = p.clone();
        released.metadata.annotations = Some(BTreeMap::from([(
            RELEASED_ANNOTATION.to_string(),
            "t".to_string(),
        )]));
        assert_eq!(agent_error(&released), None);
    }

    #[test]
    fn the_sidecar_agent_error_without_a_message_gives_the_exit_code() {
        let p = gated(
            json!({"phase": "Running", "containerStatuses": [agent_status("status-sidecar",
                json!({"waiting": {"reason": "CrashLoopBackOff"}}),
                json!({"terminated": {"exitCode": 1, "reason": "Error"}}))]}),
            false,
        );
        assert_eq!(agent_error(&p).as_deref(), Some("exit code 1 (Error)"));
        // Running again after a crash: not reported (it is asking again).
        let running = gated(
            json!({"phase": "Running", "containerStatuses": [agent_status("status-sidecar",
                json!({"running": {}}),
                json!({"terminated": {"exitCode": 1, "reason": "Error"}}))]}),
            false,
        );
        assert_eq!(agent_error(&running), None);
        // A clean exit (released init gate) is no error.
        let done = gated(
            json!({"initContainerStatuses": [agent_status("singleton-gate",
                json!({"terminated": {"exitCode": 0, "reason": "Completed"}}), json!({}))]}),
            true,
        );
        assert_eq!(agent_error(&done), None);
        // A user's container of the same name in a pod without our gate is not our agent.
        let impostor = pod(
            json!({"spec": {"containers": [{"name": "status-sidecar", "command": ["x"]}]},
            "status": {"containerStatuses": [agent_status("status-sidecar",
                json!({"waiting": {"reason": "CrashLoopBackOff"}}),
                json!({"terminated": {"exitCode": 1, "message": "boom"}}))]}}),
        );
        assert_eq!(agent_error(&impostor), None);
        assert!(
            failure(&impostor).is_some(),
            "its crash loop still fails the pod"
        );
    }

    #[test]
    fn node_states() {
        let n = |v: serde_json::Value| serde_json::from_value::<Node>(v).unwrap();
        assert_eq!(
            node_state(&n(
                json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
            )),
            NodeState::Ready
        );
        assert_eq!(
            node_state(&n(
                json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}})
            )),
            NodeState::NotReady
        );
        assert_eq!(
            node_state(&n(
                json!({"spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "effect": "NoExecute"}]}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}})
            )),
            NodeState::OutOfService
        );
    }

    #[test]
    fn replicaset_facts_name_the_controlling_deployment() {
        let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "rs-1", "namespace": "ns",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "dep", "controller": true}]},
            "spec": {"replicas": 2, "selector": {}}}))
        .unwrap();
        assert_eq!(
            rs_info(&rs),
            RsInfo {
                name: "rs-1".into(),
                replicas: 2,
                deployment: Some("dep".into())
            }
        );
        let bare: ReplicaSet =
            serde_json::from_value(json!({"metadata": {"name": "rs-2"}, "spec": {"selector": {}}}))
                .unwrap();
        assert_eq!(
            (rs_info(&bare).replicas, rs_info(&bare).deployment),
            (1, None)
        );
    }

    #[test]
    fn configmap_holds_the_script() {
        let cm = wrapper_configmap("ns");
        assert!(configmap_current(&cm));
        let mut stale = cm.clone();
        stale.data = Some(BTreeMap::from([(
            WRAPPER_SCRIPT_NAME.to_string(),
            "old".to_string(),
        )]));
        assert!(!configmap_current(&stale));
    }
}
