//! The pool pod cache keeps labels and annotations compact, outside the pod's `ObjectMeta`
//! (issue 22, memory). Every rule that reads them must answer for a cached pool pod exactly
//! what it answers for the whole `Pod` parsed from the same JSON: a rule that read the
//! empty `ObjectMeta` maps instead would see a claimed or busy pod as idle.
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube_standby::api::claim::{CLAIM_ANNOTATION, CLAIM_UID_ANNOTATION};
use kube_standby::api::probe::{
    BusyMode, BusyProbe, BUSY_ANNOTATION_KEY_ANNOTATION, BUSY_GUARD_LABEL, BUSY_SOURCE_ANNOTATION,
};
use kube_standby::api::tags::Tags;
use kube_standby::api::HotStandbyDeployment;
use kube_standby::controller::pool_pod::{strip, PoolPod};
use kube_standby::probe::{pod_busy, ProbeCache};
use kube_standby::webhook::guard::{self, HELD_SINCE_ANNOTATION};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const NAME_LABEL: &str = kube_standby::api::hsd::NAME_LABEL;
const DETACHED: &str = kube_standby::controller::hsd::child::DETACHED_LABEL;
const COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The keys the rules read, plus one nobody reads.
fn label_keys() -> Vec<&'static str> {
    vec![NAME_LABEL, BUSY_GUARD_LABEL, DETACHED, "app"]
}

fn annotation_keys() -> Vec<&'static str> {
    vec![
        "paia.tech/busy",
        "example.com/working",
        BUSY_ANNOTATION_KEY_ANNOTATION,
        BUSY_SOURCE_ANNOTATION,
        CLAIM_ANNOTATION,
        CLAIM_UID_ANNOTATION,
        HELD_SINCE_ANNOTATION,
        COST,
        "other",
    ]
}

fn values() -> Vec<&'static str> {
    vec![
        "true",
        "TRUE ",
        "false",
        "",
        "probe",
        "web",
        "ns/c1",
        "c-uid",
        "7",
        "-3",
        "x",
        "2026-12-02T12:00:00Z",
        "example.com/working",
    ]
}

fn entries(keys: Vec<&'static str>) -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    proptest::collection::vec(
        (
            proptest::sample::select(keys),
            proptest::sample::select(values()),
        ),
        0..6,
    )
}

const CONDITION_TYPES: [&str; 4] = [
    "Ready",
    "PodScheduled",
    "ContainersReady",
    "example.com/gate",
];

fn conditions() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    proptest::collection::vec(
        (
            proptest::sample::select(CONDITION_TYPES.to_vec()),
            proptest::sample::select(vec!["True", "False", "Unknown"]),
        ),
        0..5,
    )
}

fn body(
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    running: bool,
    conditions: &[(&str, &str)],
) -> Value {
    let map = |e: &[(&str, &str)]| {
        Value::Object(
            e.iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<Map<_, _>>(),
        )
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "ns", "uid": "u-1", "resourceVersion": "5",
                     "labels": map(labels), "annotations": map(annotations),
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                          "uid": "rs-1", "controller": true}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "app"}]},
        "status": {"phase": if running { "Running" } else { "Pending" }, "podIP": "10.0.0.7",
                   "conditions": conditions.iter().map(|(t, s)| json!({"type": t, "status": s,
                                 "lastTransitionTime": "2026-12-02T12:00:00Z"})).collect::<Vec<_>>()}
    })
}

proptest! {
    #[test]
    fn every_tag_rule_answers_for_a_cached_pool_pod_as_for_the_whole_pod(
        labels in entries(label_keys()),
        annotations in entries(annotation_keys()),
        running in any::<bool>(),
        http in any::<bool>(),
        key in proptest::sample::select(vec!["paia.tech/busy", "example.com/working"]),
        conds in conditions(),
        owners in proptest::collection::vec(
            (proptest::sample::select(vec!["ReplicaSet", "Job", "HotStandbyDeployment"]), any::<bool>(), 0..3u8),
            0..3,
        ),
        ip in proptest::sample::select(vec![Some("10.0.0.7"), Some("fd00::1"), Some("not-an-ip"), Some(""), None]),
    ) {
        let mut v = body(&labels, &annotations, running, &conds);
        v["metadata"]["ownerReferences"] = owners
            .iter()
            .map(|(kind, controller, n)| json!({"apiVersion": "v1", "kind": kind, "name": format!("o{n}"),
                                                 "uid": format!("u{n}"), "controller": controller}))
            .collect();
        v["status"]["podIP"] = json!(ip);
        let pod: Pod = serde_json::from_value(v.clone()).unwrap();
        let mut cached: PoolPod = serde_json::from_value(v).unwrap();
        strip(&mut cached);
        let probes = ProbeCache::default();
        let probe = BusyProbe {
            mode: if http { BusyMode::Http } else { BusyMode::Annotation },
            annotation_key: key.to_string(),
            http: Default::default(),
        };
        prop_assert_eq!(pod_busy(&cached, &probe, &probes), pod_busy(&pod, &probe, &probes));
        prop_assert_eq!(
            kube_standby::api::claim::claimed_by(&cached),
            kube_standby::api::claim::claimed_by(&pod)
        );
        prop_assert_eq!(guard::is_guarded(&cached), guard::is_guarded(&pod.metadata));
        prop_assert_eq!(guard::uses_probe(&cached), guard::uses_probe(&pod.metadata));
        prop_assert_eq!(guard::busy(&cached, None), guard::busy(&pod.metadata, None));
        let now = Instant::now();
        let wall: k8s_openapi::jiff::Timestamp = "2026-12-02T12:30:00Z".parse().unwrap();
        let hour = Duration::from_secs(3600);
        prop_assert_eq!(
            guard::annotated_hold_start(&cached, now, wall, hour),
            guard::annotated_hold_start(&pod.metadata, now, wall, hour)
        );
        prop_assert_eq!(
            kube_standby::controller::cost::current_cost(&cached),
            kube_standby::controller::cost::current_cost(&pod)
        );
        prop_assert_eq!(
            kube_standby::controller::hsd::child::is_detached(&cached),
            kube_standby::controller::hsd::child::is_detached(&pod)
        );
        type Owner = Option<kube::runtime::reflector::ObjectRef<HotStandbyDeployment>>;
        let owner_cached: Owner = kube_standby::controller::labelled_owner(NAME_LABEL, &cached);
        let owner_pod: Owner = kube_standby::controller::labelled_owner(NAME_LABEL, &pod);
        prop_assert_eq!(owner_cached, owner_pod);
        for k in label_keys() {
            prop_assert_eq!(cached.label(k), pod.label(k));
        }
        for k in annotation_keys() {
            prop_assert_eq!(cached.annotation(k), pod.annotation(k));
        }
        use kube_standby::probe::PodRead;
        for t in CONDITION_TYPES {
            prop_assert_eq!(cached.has_condition(t), pod.has_condition(t), "{}", t);
            prop_assert_eq!(
                cached.to_pod().has_condition(t),
                pod.has_condition(t),
                "a pod made of the cached one: {}",
                t
            );
        }
        prop_assert_eq!(cached.pod_phase(), pod.pod_phase());
        prop_assert_eq!(cached.pod_ip(), pod.pod_ip());
        for kind in ["ReplicaSet", "Job", "HotStandbyDeployment", "Deployment"] {
            prop_assert_eq!(cached.controller_uid(kind), pod.controller_uid(kind), "{}", kind);
        }
        prop_assert_eq!(
            kube_standby::controller::hsd::child::owner_replicaset(&cached),
            kube_standby::controller::hsd::child::owner_replicaset(&pod)
        );
        prop_assert_eq!(
            &cached.whole_meta().owner_references,
            &pod.metadata.owner_references.clone().filter(|o| !o.is_empty())
        );
        prop_assert_eq!(cached.node(), pod.spec.as_ref().and_then(|s| s.node_name.as_deref()));
        // The pod the guard is handed from the pool cache carries them again.
        prop_assert_eq!(cached.whole_meta().labels, pod.metadata.labels.clone().filter(|l| !l.is_empty()));
    }
}
