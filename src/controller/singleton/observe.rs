//! Pure helpers of the StatefulSingleton reconciler: API objects → planner inputs, and a
//! plan → status. No I/O.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::plan::{AgentReport, Memory, NodeState, Phase, Plan, PodInfo};
use crate::api::set_condition;
use crate::api::singleton::{
    self, StatefulSingleton, StatefulSingletonStatus, INIT_GATE_NAME, READY_CONDITION,
    RELEASED_ANNOTATION, SIDECAR_NAME, WRAPPER_CONFIGMAP, WRAPPER_SCRIPT, WRAPPER_SCRIPT_NAME,
};

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
    }
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
    let c = &mut st.conditions;
    set_condition(
        c,
        "TransitionTimedOut",
        plan.timed_out,
        if plan.timed_out {
            "MaxTransitionTimeExceeded"
        } else {
            "WithinMaxTransitionTime"
        },
        if plan.timed_out {
            format!(
                "handover exceeded maxTransitionTime ({}s); waiting safely: {}",
                s.spec.max_transition_time, plan.message
            )
        } else {
            "no handover over its time limit".to_string()
        },
        generation,
        &now_t,
    );
    set_condition(
        c,
        "NodeLost",
        plan.node_lost.is_some(),
        if plan.node_lost.is_some() {
            "WaitingForNode"
        } else {
            "NoNodeLost"
        },
        match &plan.node_lost {
            Some(n) => plan.message.replace("{node}", n),
            None => "no release waits for a lost node".into(),
        },
        generation,
        &now_t,
    );
    let overlapping = !overlap.won_against.is_empty() || !overlap.lost_to.is_empty();
    set_condition(
        c,
        "Overlapping",
        overlapping,
        if !overlap.lost_to.is_empty() {
            "OlderSingletonWins"
        } else if overlapping {
            "ThisSingletonWins"
        } else {
            "NoOverlap"
        },
        if overlapping {
            format!(
                "selector overlaps with other StatefulSingletons; the oldest owns shared pods. older: [{}], younger: [{}]",
                overlap.lost_to.join(", "),
                overlap.won_against.join(", ")
            )
        } else {
            "no other StatefulSingleton selects these pods".into()
        },
        generation,
        &now_t,
    );
    set_condition(
        c,
        "MultipleCandidates",
        plan.extra_candidates > 0,
        if plan.extra_candidates > 0 {
            "MoreThanOneWaitingPod"
        } else {
            "AtMostOneWaitingPod"
        },
        format!(
            "{} more waiting pod(s) than can be released (is replicas > 1?)",
            plan.extra_candidates
        ),
        generation,
        &now_t,
    );
    let unreachable = !agents.failing.is_empty();
    set_condition(
        c,
        "AgentUnreachable",
        unreachable,
        if unreachable {
            "AgentFailing"
        } else {
            "NoAgentFailing"
        },
        if unreachable {
            agents
                .failing
                .iter()
                .map(|p| format!("pod {}: {}", p.pod, p.message))
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            "every waiting pod's agent is running".to_string()
        },
        generation,
        &now_t,
    );
    set_condition(
        c,
        "InvalidSpec",
        invalid.is_some(),
        if invalid.is_some() {
            "InvalidSpec"
        } else {
            "Valid"
        },
        invalid.unwrap_or("spec is valid"),
        generation,
        &now_t,
    );
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
