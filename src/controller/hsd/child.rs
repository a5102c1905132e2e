//! Pure helpers of the HSD reconciler: the child Deployment, which pods count, each pod's
//! view, and the status. No I/O.
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::plan::{Plan, PodView};
use crate::api::hsd::{HotStandbyDeployment, HotStandbyDeploymentStatus};
use crate::api::set_condition;
use crate::api::tags::{Pairs, Tags};
use crate::controller::pool_pod::PoolPod;
use crate::probe::{self, PodRead, ProbeCache};

pub const NAME_LABEL: &str = crate::api::hsd::NAME_LABEL;
/// On a pod taken out of its ReplicaSet during a rollout (it is then owned by the HSD).
pub const DETACHED_LABEL: &str = "hsd.paia.tech/detached";
/// The ReplicaSet's own pod label; changing it on a pod makes the ReplicaSet let it go.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
pub use crate::controller::cost::DELETION_COST;
const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REPLICAS_ANNOTATION: &str = "hsd.paia.tech/replicas";
pub const TEMPLATE_HASH_ANNOTATION: &str = "hsd.paia.tech/template-hash";

pub fn child_name(hsd: &str) -> String {
    format!("{hsd}-workload")
}

/// The pod template with the selector labels and our name label merged in.
/// Errors when the template cannot be a pod template or contradicts the selector.
pub fn pod_template(hsd: &HotStandbyDeployment) -> Result<PodTemplateSpec, String> {
    let mut tpl: PodTemplateSpec = serde_json::from_value(hsd.spec.pod_template.value())
        .map_err(|e| format!("podTemplate is not a valid pod template: {e}"))?;
    let labels = tpl
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .labels
        .get_or_insert_with(BTreeMap::new);
    for (k, v) in &hsd.spec.selector.match_labels {
        match labels.get(k) {
            Some(existing) if existing != v => {
                return Err(format!(
                    "selector.matchLabels {k}={v} does not match podTemplate label {k}={existing}"
                ))
            }
            _ => {
                labels.insert(k.clone(), v.clone());
            }
        }
    }
    labels.insert(NAME_LABEL.into(), hsd.name_any());
    if tpl.spec.as_ref().is_none_or(|s| s.containers.is_empty()) {
        return Err("podTemplate.spec.containers must list at least one container".into());
    }
    let probe = &hsd.spec.busy_probe;
    crate::api::probe::mark_guarded(
        tpl.metadata.get_or_insert_with(ObjectMeta::default),
        (probe.mode == crate::api::probe::BusyMode::Annotation)
            .then_some(probe.annotation_key.as_str()),
    );
    crate::api::claim::mark_assignment(
        tpl.metadata.get_or_insert_with(ObjectMeta::default),
        hsd.spec.assignment,
    );
    Ok(tpl)
}

/// A stable hash of what we apply besides replicas, to skip writes in a steady state.
pub fn template_hash(tpl: &PodTemplateSpec, selector: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(tpl).unwrap_or_default());
    h.update(serde_json::to_vec(selector).unwrap_or_default());
    let d = h.finalize();
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The child Deployment we apply (server-side apply body).
pub fn child_deployment(
    hsd: &HotStandbyDeployment,
    tpl: PodTemplateSpec,
    replicas: i32,
) -> Deployment {
    let hash = template_hash(&tpl, &hsd.spec.selector.match_labels);
    let owner: Option<OwnerReference> = hsd.controller_owner_ref(&());
    Deployment {
        metadata: ObjectMeta {
            name: Some(child_name(&hsd.name_any())),
            namespace: hsd.namespace(),
            labels: Some(BTreeMap::from([(NAME_LABEL.to_string(), hsd.name_any())])),
            annotations: Some(BTreeMap::from([
                (REPLICAS_ANNOTATION.to_string(), replicas.to_string()),
                (TEMPLATE_HASH_ANNOTATION.to_string(), hash),
            ])),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: k8s_openapi::api::apps::v1::DeploymentSpec {
            replicas: Some(replicas),
            // A rollout never takes capacity below replicas: new pods come first.
            strategy: Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(k8s_openapi::api::apps::v1::RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            selector: LabelSelector {
                match_labels: Some(hsd.spec.selector.match_labels.clone()),
                ..Default::default()
            },
            template: tpl,
            ..Default::default()
        },
        status: None,
    }
}

/// Does the existing child already carry this template and count?
pub fn child_is_current<C: ChildRead>(child: &C, want: &Deployment) -> bool {
    let (have, want_meta) = (child.meta(), &want.metadata);
    let same = |k: &str| have.annotation(k) == want_meta.annotation(k);
    same(TEMPLATE_HASH_ANNOTATION)
        && same(REPLICAS_ANNOTATION)
        && child.spec_replicas() == want.spec.replicas
        && have.owner_references == want_meta.owner_references
}

/// The child's selector differs from the spec's (the field is immutable: replace the child).
pub fn selector_changed<C: ChildRead>(child: &C, hsd: &HotStandbyDeployment) -> bool {
    let have = child.selector().match_labels.clone().unwrap_or_default();
    have != hsd.spec.selector.match_labels
        || child
            .selector()
            .match_expressions
            .as_ref()
            .is_some_and(|e| !e.is_empty())
}

/// Is `child` controlled by `hsd`?
pub fn owned_by<C: ChildRead>(child: &C, hsd: &HotStandbyDeployment) -> bool {
    let uid = hsd.uid();
    child
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
}

/// Replica count we last wrote, from the child's annotation.
pub fn our_replicas<C: ChildRead>(child: &C) -> Option<i32> {
    child.meta().annotation(REPLICAS_ANNOTATION)?.parse().ok()
}

/// UID of the ReplicaSet controlling `pod`.
pub fn owner_replicaset<P: PodRead + ?Sized>(pod: &P) -> Option<String> {
    pod.controller_uid("ReplicaSet").map(str::to_string)
}

/// Does the child's template differ from the one we would apply?
pub fn template_changed<C: ChildRead>(child: &C, want: &Deployment) -> bool {
    child.meta().annotation(TEMPLATE_HASH_ANNOTATION)
        != want.metadata.annotation(TEMPLATE_HASH_ANNOTATION)
}

/// The pods that count, and the UID of the child's current ReplicaSet:
/// pods controlled by a ReplicaSet the child controls, and pods detached from one during a
/// rollout (labelled and owned by this HSD); none terminating or finished. Foreign pods
/// that merely match the labels are ignored.
pub fn counted_pods<'a, C: ChildRead>(
    child: &C,
    hsd: &HotStandbyDeployment,
    replicasets: &[std::sync::Arc<ChildReplicaSet>],
    pods: &'a [std::sync::Arc<PoolPod>],
) -> (Vec<&'a std::sync::Arc<PoolPod>>, Option<String>) {
    let Some(child_uid) = child.uid() else {
        return (vec![], None);
    };
    let ours: Vec<&std::sync::Arc<ChildReplicaSet>> = replicasets
        .iter()
        .filter(|rs| {
            crate::api::controller_uid(&rs.metadata, "Deployment") == Some(child_uid.as_str())
        })
        .collect();
    let revision = |rs: &ChildReplicaSet| -> i64 {
        rs.annotation(REVISION)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    };
    let current = ours
        .iter()
        .max_by_key(|rs| revision(rs))
        .and_then(|rs| rs.uid());
    // A handful (the revision history): a scan beats hashing every pod's owner UID.
    let rs_uids: Vec<&str> = ours
        .iter()
        .filter_map(|rs| rs.metadata.uid.as_deref())
        .collect();
    let hsd_uid = hsd.uid().unwrap_or_default();
    let counted = pods
        .iter()
        .filter(|p| p.meta.deletion_timestamp.is_none())
        .filter(|p| !matches!(p.phase(), Some("Succeeded") | Some("Failed")))
        .filter(|p| {
            if is_detached(p) {
                return p.owners.iter().any(|o| *o.uid == *hsd_uid);
            }
            p.owners
                .controller_uid("ReplicaSet")
                .is_some_and(|u| rs_uids.contains(&u))
        })
        .collect();
    (counted, current)
}

pub fn is_detached<P: PodRead + ?Sized>(pod: &P) -> bool {
    pod.label(DETACHED_LABEL) == Some("true")
}

/// The merge patch that takes a pod out of its ReplicaSet: a `pod-template-hash` no
/// ReplicaSet selects, our detached label, and the HSD as its only owner (so it is
/// garbage-collected with the HSD). The resourceVersion makes it fail if the pod changed.
pub fn detach_patch(
    hsd: &HotStandbyDeployment,
    uid: &str,
    resource_version: &str,
) -> serde_json::Value {
    let owner = hsd.controller_owner_ref(&()).map(|mut o| {
        o.controller = Some(false);
        o.block_owner_deletion = Some(false);
        o
    });
    serde_json::json!({"metadata": {
        "uid": uid,
        "resourceVersion": resource_version,
        "labels": {TEMPLATE_HASH_LABEL: format!("detached-{}", uid.chars().take(8).collect::<String>()), DETACHED_LABEL: "true"},
        "ownerReferences": owner.map(|o| vec![o]).unwrap_or_default(),
    }})
}

/// What the HSD cache keeps of a pod: the slim [`PoolPod`] (metadata without managed
/// fields and without annotation values over 256 bytes, node, phase, IP, conditions),
/// parsed straight from the API's JSON; nothing here reads the spec or container statuses.
pub use crate::controller::pool_pod::strip as strip_pod;

/// A child's ReplicaSet as the HSD cache keeps it: its metadata, and of that only what
/// [`counted_pods`] reads (owner, UID, the revision annotation). A ReplicaSet made by the
/// Deployment controller carries the whole pod template (a `PodSpec` inline, kilobytes with
/// its strings), a selector and a status; this type skips them while parsing, and
/// [`strip_replicaset`] drops the rest.
///
/// Its labels and annotations are kept compact in [`ChildReplicaSet::labels`] and
/// [`ChildReplicaSet::annotations`] (a `BTreeMap` costs a 540-byte node even for the one
/// entry kept; issue 22, memory): read them through [`Tags`]; `metadata.labels` and
/// `metadata.annotations` are always `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChildReplicaSet {
    pub metadata: ObjectMeta,
    pub labels: Pairs,
    pub annotations: Pairs,
}

impl<'de> serde::Deserialize<'de> for ChildReplicaSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Raw {
            #[serde(default)]
            metadata: ObjectMeta,
        }
        let mut metadata = Raw::deserialize(d)?.metadata;
        let pairs =
            |m: Option<BTreeMap<String, String>>| Pairs::from_entries(m.unwrap_or_default());
        Ok(ChildReplicaSet {
            labels: pairs(metadata.labels.take()),
            annotations: pairs(metadata.annotations.take()),
            metadata,
        })
    }
}

crate::controller::watch::slim_resource!(ChildReplicaSet, ReplicaSet, metadata);

impl Tags for ChildReplicaSet {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key)
    }
}

/// What the cache keeps of a child's ReplicaSet: no managed fields, of the labels only the
/// HSD's name (its events wake that HSD), of the annotations only the revision.
pub fn strip_replicaset(rs: &mut ChildReplicaSet) {
    rs.metadata.managed_fields = None;
    rs.labels.retain(|k, _| k == NAME_LABEL);
    rs.annotations.retain(|k, _| k == REVISION);
}

/// A child Deployment as the HSD cache keeps it: its metadata (without managed fields or
/// kubectl's last-applied copy), `spec.replicas`, the selector and the ready count. A
/// reconcile tells a template change by [`TEMPLATE_HASH_ANNOTATION`]; the template itself
/// (a whole `PodSpec`, kilobytes per child) is needed only to write it back unchanged while
/// a rollout is held, and `apply` reads it from the API server then. Parsing skips it; the watch strips the managed
/// fields and kubectl's last-applied copy (`watch::strip_managed`).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
pub struct ChildDeployment {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ChildDeploymentSpec,
    #[serde(default)]
    pub status: Option<ChildDeploymentStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
pub struct ChildDeploymentSpec {
    #[serde(default)]
    pub replicas: Option<i32>,
    #[serde(default)]
    pub selector: LabelSelector,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildDeploymentStatus {
    #[serde(default)]
    pub ready_replicas: Option<i32>,
}

crate::controller::watch::slim_resource!(ChildDeployment, Deployment, metadata);

/// What a reconcile reads of its child: the cached [`ChildDeployment`], or a whole
/// `Deployment` (as built to be written, or read from the API server).
pub trait ChildRead: Resource<DynamicType = ()> {
    fn spec_replicas(&self) -> Option<i32>;
    fn selector(&self) -> &LabelSelector;
}

impl ChildRead for ChildDeployment {
    fn spec_replicas(&self) -> Option<i32> {
        self.spec.replicas
    }

    fn selector(&self) -> &LabelSelector {
        &self.spec.selector
    }
}

impl ChildRead for Deployment {
    fn spec_replicas(&self) -> Option<i32> {
        self.spec.replicas
    }

    fn selector(&self) -> &LabelSelector {
        &self.spec.selector
    }
}

/// `want` keeps the template hash `child` carries (none if it carries none).
pub fn keep_template_hash<C: ChildRead>(want: &mut Deployment, child: &C) {
    let have = child.meta().annotation(TEMPLATE_HASH_ANNOTATION);
    let anns = want
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    match have {
        Some(h) => {
            anns.insert(TEMPLATE_HASH_ANNOTATION.to_string(), h.to_string());
        }
        None => {
            anns.remove(TEMPLATE_HASH_ANNOTATION);
        }
    }
}

pub use crate::probe::is_running;

pub fn is_ready<P: PodRead + ?Sized>(pod: &P) -> bool {
    crate::controller::pod_condition_true(pod, "Ready")
}

/// How the planner sees one pod; `current_rs` is the UID of the child's current ReplicaSet.
pub fn pod_view<P: PodRead + ?Sized>(
    pod: &P,
    hsd: &HotStandbyDeployment,
    probes: &ProbeCache,
    current_rs: Option<&str>,
) -> PodView {
    let running = is_running(pod);
    let (state, stale, reason) = probe::pod_busy(pod, &hsd.spec.busy_probe, probes);
    let meta = pod.pod_meta();
    let text = |s: &Option<String>| s.as_deref().unwrap_or_default().into();
    PodView {
        name: text(&meta.name),
        uid: text(&meta.uid),
        resource_version: text(&meta.resource_version),
        created: crate::controller::created_seconds(meta),
        running,
        ready: is_ready(pod),
        state,
        stale,
        reason: reason.into(),
        cost: crate::controller::cost::current_cost(pod),
        detached: is_detached(pod),
        current: pod.controller_uid("ReplicaSet") == current_rs,
        ip: probe::pod_ip(pod),
    }
}

/// The new status from a plan. Conditions keep their transition times when unchanged.
pub fn build_status(
    hsd: &HotStandbyDeployment,
    plan: &Plan,
    replicas: i32,
    ready_replicas: i32,
    now: &Time,
) -> HotStandbyDeploymentStatus {
    let mut st = hsd.status.clone().unwrap_or_default();
    let generation = hsd.metadata.generation;
    st.observed_generation = generation;
    st.busy_count = plan.busy;
    st.idle_count = plan.idle;
    st.unknown_count = plan.unknown;
    st.desired_replicas = plan.desired;
    st.replicas = replicas;
    st.ready_replicas = ready_replicas;
    st.scale_down_pending_since = plan.pending_since.map(Time);
    st.detached_busy_pods = plan.detached.iter().map(|n| n.to_string()).collect();
    st.rejected_generation = None;
    for (type_, ok, reason, message) in conditions(hsd, plan, replicas, ready_replicas) {
        set_condition(
            &mut st.conditions,
            type_,
            ok,
            reason,
            message,
            generation,
            now,
        );
    }
    st
}

/// One condition: type, status, reason, message.
type Cond = (&'static str, bool, &'static str, String);

/// The conditions of a status built from a plan, in the order they are set.
fn conditions(hsd: &HotStandbyDeployment, plan: &Plan, replicas: i32, ready: i32) -> [Cond; 6] {
    let all_ready = ready >= replicas;
    let raw = plan.busy.saturating_add(hsd.spec.idle_target);
    let (min, max) = (hsd.spec.min_replicas, hsd.spec.max_replicas);
    [
        ("InvalidSpec", false, "Valid", "spec is valid".into()),
        (
            "Ready",
            all_ready,
            if all_ready {
                "AllReplicasReady"
            } else {
                "ReplicasNotReady"
            },
            format!("{ready}/{replicas} replicas ready"),
        ),
        (
            "ScalingLimited",
            plan.limited,
            if plan.limited {
                "Clamped"
            } else {
                "WithinLimits"
            },
            format!(
                "busy+idleTarget={raw}, limits [{min}, {max}], desired={}",
                plan.desired
            ),
        ),
        (
            "ProbeDegraded",
            plan.stale > 0,
            if plan.stale > 0 {
                "ProbesFailing"
            } else {
                "ProbesHealthy"
            },
            format!("{} pod(s) with failing busy probes", plan.stale),
        ),
        scale_down_condition(plan),
        rollout_condition(plan),
    ]
}

fn scale_down_condition(plan: &Plan) -> Cond {
    let pending = plan.pending_due.is_some() || plan.held.is_some();
    let reason = match (&plan.held, pending) {
        (Some(_), _) => "HeldForProtectedPod",
        (None, true) => "WaitingForDelay",
        (None, false) => "NoScaleDownPending",
    };
    let message = match (&plan.held, plan.pending_due) {
        (Some(why), _) => why.clone(),
        (None, Some(due)) => format!("scale down to {} at {due}", plan.desired),
        (None, None) => "no scale-down pending".into(),
    };
    ("ScaleDownPending", pending, reason, message)
}

fn rollout_condition(plan: &Plan) -> Cond {
    let protecting = !plan.detached.is_empty() || plan.hold_template;
    let reason = if protecting {
        "BusyPodsDetached"
    } else {
        "NoBusyPodsDetached"
    };
    let message = if plan.hold_template {
        format!(
            "template change waits while {} protected pod(s) leave their ReplicaSet",
            plan.detach.len()
        )
    } else if protecting {
        format!(
            "busy pods of an old revision kept until idle: {}",
            plan.detached.join(", ")
        )
    } else {
        "no pod of an old revision is kept".into()
    };
    ("RolloutProtectingBusyPods", protecting, reason, message)
}

/// Status for a spec that cannot be acted on.
pub fn invalid_status(
    hsd: &HotStandbyDeployment,
    reason: &str,
    message: &str,
    now: &Time,
) -> HotStandbyDeploymentStatus {
    let mut st = hsd.status.clone().unwrap_or_default();
    st.observed_generation = hsd.metadata.generation;
    st.rejected_generation = (reason == "TemplateRejected")
        .then_some(hsd.metadata.generation)
        .flatten();
    set_condition(
        &mut st.conditions,
        "InvalidSpec",
        true,
        reason,
        message,
        hsd.metadata.generation,
        now,
    );
    set_condition(
        &mut st.conditions,
        "Ready",
        false,
        reason,
        message,
        hsd.metadata.generation,
        now,
    );
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hsd(tpl: serde_json::Value) -> HotStandbyDeployment {
        serde_json::from_value(json!({
            "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
            "metadata": {"name": "game", "namespace": "ns", "uid": "hsd-uid", "generation": 3},
            "spec": {"idleTarget": 2, "selector": {"matchLabels": {"app": "game"}}, "podTemplate": tpl}
        }))
        .unwrap()
    }

    fn tpl() -> serde_json::Value {
        json!({"metadata": {"labels": {"tier": "web"}}, "spec": {"containers": [{"name": "app", "image": "x"}]}})
    }

    #[test]
    fn assignment_file_marks_the_template_for_the_claim_agent() {
        use crate::api::claim::{AssignmentMode, ASSIGNMENT_ANNOTATION};
        let mut h = hsd(tpl());
        let meta = pod_template(&h).unwrap().metadata.unwrap();
        assert!(!meta
            .annotations
            .unwrap_or_default()
            .contains_key(ASSIGNMENT_ANNOTATION));
        h.spec.assignment = AssignmentMode::File;
        let meta = pod_template(&h).unwrap().metadata.unwrap();
        assert_eq!(meta.annotations.unwrap()[ASSIGNMENT_ANNOTATION], "file");
    }

    #[test]
    fn template_pods_are_guarded() {
        use crate::api::probe::{BUSY_ANNOTATION_KEY_ANNOTATION, BUSY_GUARD_LABEL};
        let mut h = hsd(tpl());
        let meta = pod_template(&h).unwrap().metadata.unwrap();
        assert_eq!(meta.labels.unwrap()[BUSY_GUARD_LABEL], "true");
        assert!(meta.annotations.is_none(), "default key: nothing to name");
        h.spec.busy_probe.annotation_key = "x.io/working".into();
        let meta = pod_template(&h).unwrap().metadata.unwrap();
        assert_eq!(
            meta.annotations.unwrap()[BUSY_ANNOTATION_KEY_ANNOTATION],
            "x.io/working"
        );
        // http mode: the key is not the busy source.
        h.spec.busy_probe.mode = crate::api::probe::BusyMode::Http;
        let meta = pod_template(&h).unwrap().metadata.unwrap();
        assert_eq!(meta.labels.unwrap()[BUSY_GUARD_LABEL], "true");
        assert!(meta.annotations.is_none());
    }

    #[test]
    fn template_gets_selector_and_name_labels_and_an_owner() {
        let h = hsd(tpl());
        let d = child_deployment(&h, pod_template(&h).unwrap(), 4);
        let labels = d
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        assert_eq!(labels["app"], "game");
        assert_eq!(labels["tier"], "web");
        assert_eq!(labels[NAME_LABEL], "game");
        assert_eq!(d.metadata.name.as_deref(), Some("game-workload"));
        let o = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (o.uid.as_str(), o.controller, o.kind.as_str()),
            ("hsd-uid", Some(true), "HotStandbyDeployment")
        );
        assert_eq!(our_replicas(&d), Some(4));
        assert!(child_is_current(&d, &d));
        let d5 = child_deployment(&h, pod_template(&h).unwrap(), 5);
        assert!(!child_is_current(&d, &d5));
    }

    #[test]
    fn bad_templates_are_explained() {
        let e = pod_template(&hsd(json!({"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "a"}]}}))).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let e = pod_template(&hsd(json!({"spec": {"containers": "nope"}}))).unwrap_err();
        assert!(e.contains("not a valid pod template"), "{e}");
        let e = pod_template(&hsd(json!({"spec": {"containers": []}}))).unwrap_err();
        assert!(e.contains("at least one container"), "{e}");
    }

    #[test]
    fn a_stripped_pod_looks_the_same_to_the_planner() {
        let h = hsd(tpl());
        let body = json!({
            "metadata": {"name": "p", "uid": "u", "resourceVersion": "7", "creationTimestamp": "2026-01-01T00:00:00Z",
                "annotations": {"paia.tech/busy": "true", "controller.kubernetes.io/pod-deletion-cost": "1000000",
                                "kubectl.kubernetes.io/last-applied-configuration": "x".repeat(4000)},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": true}]},
            "spec": {"containers": [{"name": "app", "image": "x", "env": [{"name": "A", "value": "B"}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.9", "conditions": [{"type": "Ready", "status": "True", "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "x", "imageID": "y"}]}
        });
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(body.clone()).unwrap();
        let mut small: PoolPod = serde_json::from_value(body).unwrap();
        strip_pod(&mut small);
        let probes = ProbeCache::default();
        assert_eq!(
            pod_view(&pod, &h, &probes, Some("rs-1")),
            pod_view(&small, &h, &probes, Some("rs-1"))
        );
        let kept = serde_json::to_value(&small).unwrap();
        assert!(kept["spec"].get("containers").is_none() && small.meta.managed_fields.is_none());
        assert!(!small
            .annotations()
            .contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert!(
            serde_json::to_vec(&small).unwrap().len() * 4 < serde_json::to_vec(&pod).unwrap().len()
        );
    }

    #[test]
    fn a_stripped_replicaset_counts_the_same_pods_and_keeps_no_template() {
        let h = hsd(tpl());
        let mut child = child_deployment(&h, pod_template(&h).unwrap(), 2);
        child.metadata.uid = Some("dep-uid".into());
        let rs = |uid: &str, revision: &str| -> ChildReplicaSet {
            serde_json::from_value(json!({
                "metadata": {"name": uid, "uid": uid, "annotations": {REVISION: revision, "deployment.kubernetes.io/desired-replicas": "2"},
                             "labels": {"app": "game", NAME_LABEL: "game", "pod-template-hash": "abc"},
                             "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}],
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": "dep-uid", "controller": true}]},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "game"}},
                         "template": {"metadata": {"labels": {"app": "game"}}, "spec": {"containers": [{"name": "app", "image": "x"}]}}},
                "status": {"replicas": 2, "readyReplicas": 2}
            }))
            .unwrap()
        };
        let pod = |name: &str, rs: &str| {
            std::sync::Arc::new(serde_json::from_value::<PoolPod>(json!({"metadata": {"name": name, "uid": name,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": rs, "controller": true}]},
                "status": {"phase": "Running"}})).unwrap())
        };
        // The newer revision first, so only the revision annotation tells the current one.
        let whole = vec![
            std::sync::Arc::new(rs("rs-1", "2")),
            std::sync::Arc::new(rs("rs-2", "1")),
        ];
        let stripped: Vec<_> = whole
            .iter()
            .map(|r| {
                let mut r = (**r).clone();
                strip_replicaset(&mut r);
                std::sync::Arc::new(r)
            })
            .collect();
        let pods = vec![pod("a", "rs-1"), pod("b", "rs-2"), pod("c", "rs-9")];
        let names = |rss: &[std::sync::Arc<ChildReplicaSet>]| {
            let (counted, current) = counted_pods(&child, &h, rss, &pods);
            let names: Vec<String> = counted.into_iter().map(|p| p.name_any()).collect();
            (names, current)
        };
        assert_eq!(names(&stripped), names(&whole));
        assert_eq!(
            names(&stripped),
            (
                vec!["a".to_string(), "b".to_string()],
                Some("rs-1".to_string())
            )
        );
        for r in &stripped {
            let m = &r.metadata;
            assert!(m.managed_fields.is_none());
            // Its events still wake the HSD; of the annotations only the revision is kept.
            assert_eq!(r.label(NAME_LABEL), Some("game"));
            assert_eq!(r.labels.len(), 1);
            assert_eq!(r.annotation(REVISION).map(|_| r.annotations.len()), Some(1));
            assert!(m.labels.is_none() && m.annotations.is_none());
        }
        // Parsing skips the spec and status (the whole ReplicaSet JSON parses).
        let whole: ChildReplicaSet = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "r"},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a"}]}}},
            "status": {"replicas": 2}
        }))
        .unwrap();
        assert_eq!(whole.metadata.name.as_deref(), Some("r"));
    }

    #[test]
    fn a_stripped_child_answers_every_question_the_reconcile_asks_as_the_whole_one() {
        let h = hsd(tpl());
        let mut other = h.clone();
        other
            .spec
            .selector
            .match_labels
            .insert("tier".into(), "x".into());
        let mut whole = child_deployment(&h, pod_template(&h).unwrap(), 2);
        whole.metadata.uid = Some("dep-uid".into());
        whole.metadata.managed_fields = Some(vec![Default::default()]);
        whole.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            ready_replicas: Some(2),
            ..Default::default()
        });
        // As the watch parses and strips it: the whole Deployment's JSON, template and all.
        let mut stripped: ChildDeployment =
            serde_json::from_value(serde_json::to_value(&whole).unwrap()).unwrap();
        crate::controller::watch::strip_managed(&mut stripped);
        assert!(stripped.metadata.managed_fields.is_none());
        assert_eq!(stripped.spec.replicas, Some(2));
        assert_eq!(
            stripped.status.as_ref().and_then(|s| s.ready_replicas),
            Some(2)
        );
        for want in [
            child_deployment(&h, pod_template(&h).unwrap(), 2),
            child_deployment(&h, pod_template(&h).unwrap(), 3),
            child_deployment(&h, PodTemplateSpec::default(), 2),
        ] {
            assert_eq!(
                child_is_current(&stripped, &want),
                child_is_current(&whole, &want)
            );
            assert_eq!(
                template_changed(&stripped, &want),
                template_changed(&whole, &want)
            );
        }
        assert!(child_is_current(
            &stripped,
            &child_deployment(&h, pod_template(&h).unwrap(), 2)
        ));
        for x in [&h, &other] {
            assert_eq!(selector_changed(&stripped, x), selector_changed(&whole, x));
            assert_eq!(owned_by(&stripped, x), owned_by(&whole, x));
        }
        assert_eq!(our_replicas(&stripped), Some(2));
        // A held child keeps the hash it has, or none.
        let mut want = child_deployment(&h, PodTemplateSpec::default(), 3);
        keep_template_hash(&mut want, &stripped);
        assert!(!template_changed(&whole, &want));
        let mut bare = stripped.clone();
        bare.metadata.annotations = None;
        keep_template_hash(&mut want, &bare);
        assert!(want
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| !a.contains_key(TEMPLATE_HASH_ANNOTATION)));
    }

    #[test]
    fn only_pods_of_the_childs_replicasets_count() {
        let h = hsd(tpl());
        let mut child = child_deployment(&h, pod_template(&h).unwrap(), 2);
        child.metadata.uid = Some("dep-uid".into());
        let rs = |uid: &str, owner: &str| {
            std::sync::Arc::new(serde_json::from_value::<ChildReplicaSet>(json!({
                "metadata": {"name": uid, "uid": uid, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": owner, "controller": true}]}
            })).unwrap())
        };
        let pod = |name: &str, rs: &str, extra: serde_json::Value| {
            let mut v = json!({"metadata": {"name": name, "uid": name, "labels": {"app": "game"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": rs, "controller": true}]},
                "status": {"phase": "Running"}});
            json_patch::merge(&mut v, &extra);
            std::sync::Arc::new(serde_json::from_value::<PoolPod>(v).unwrap())
        };
        let rss = vec![rs("rs-1", "dep-uid"), rs("rs-other", "other-dep")];
        let pods = vec![
            pod("counted", "rs-1", json!({})),
            pod("foreign", "rs-other", json!({})),
            pod(
                "terminating",
                "rs-1",
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
            pod("failed", "rs-1", json!({"status": {"phase": "Failed"}})),
            pod("pending", "rs-1", json!({"status": {"phase": "Pending"}})),
        ];
        let names: Vec<_> = counted_pods(&child, &h, &rss, &pods)
            .0
            .into_iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(names, vec!["counted", "pending"]);
    }
}
