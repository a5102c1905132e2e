//! A pool pod as the HotStandbyDeployment and claim controllers cache it: only what
//! planning, binding and `/v1/assignment` read (metadata, node, phase, IP, conditions).
//!
//! Deserialized straight from the API server's JSON (every other field is skipped while
//! parsing), so a cached pool pod costs its metadata and four small fields, not the
//! 2,464 bytes a `k8s_openapi` `Pod` struct takes inline before any of its strings (its
//! `PodSpec` and `PodStatus` are not boxed). Used only for reading: every write to a pod
//! goes through `Api<Pod>`.
//!
//! Kept compact (issue 22, memory): labels and annotations as interned [`Pairs`] outside
//! `meta`; the owner references outside `meta` too, as one shared list of interned strings
//! ([`PoolPod::owners`]: a ReplicaSet's pods hold one copy between them); phase and node
//! name interned; the pod IP as an address; of the conditions, only the types whose status
//! is `True` (all [`PoolPod::condition`] asks). `generateName` is not kept (nothing that
//! reads a pool pod asks for it).
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Serialize};

use crate::api::tags::{intern, InternerCell, Pairs, SharedList, Tags};

/// A pool pod as a cache holds it.
///
/// Its labels and annotations are kept compact in [`PoolPod::labels`] and
/// [`PoolPod::annotations`] (keys and values interned), never in `meta`: read them through
/// [`Tags`] (`pod.label(k)`, `pod.annotation(k)`); `meta.labels` and `meta.annotations` are
/// always `None`, so kube's `ResourceExt::labels()` on a pool pod is empty. The same holds
/// for its owner references: read [`PoolPod::owners`] (or `PodRead::controller_uid`);
/// `meta.owner_references` is always `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolPod {
    pub meta: ObjectMeta,
    pub labels: Pairs,
    pub annotations: Pairs,
    pub owners: Owners,
    pub spec: Option<PoolPodSpec>,
    pub status: Option<PoolPodStatus>,
}

/// A pool pod as the API sends it: every field not listed is skipped while parsing.
#[derive(Deserialize)]
struct RawPoolPod {
    #[serde(default)]
    metadata: RawMeta,
    #[serde(default)]
    spec: Option<PoolPodSpec>,
    #[serde(default)]
    status: Option<PoolPodStatus>,
}

/// `ObjectMeta` as the API sends it, without `managedFields` (often the largest part of a
/// pod's metadata, never read) or `selfLink`; labels and annotations parsed compact.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMeta {
    #[serde(default)]
    annotations: Pairs,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generation: Option<i64>,
    #[serde(default)]
    labels: Pairs,
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    owner_references: Owners,
    resource_version: Option<String>,
    uid: Option<String>,
}

/// An owner reference as a pool pod keeps it: its strings interned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodOwner {
    pub api_version: Arc<str>,
    pub kind: Arc<str>,
    pub name: Arc<str>,
    pub uid: Arc<str>,
    pub controller: Option<bool>,
    pub block_owner_deletion: Option<bool>,
}

impl PodOwner {
    /// The API's form.
    pub fn to_owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: self.api_version.to_string(),
            kind: self.kind.to_string(),
            name: self.name.to_string(),
            uid: self.uid.to_string(),
            controller: self.controller,
            block_owner_deletion: self.block_owner_deletion,
        }
    }

    /// Is this the owner of `kind` that controls the pod?
    pub fn controls_as(&self, kind: &str) -> bool {
        self.controller == Some(true) && &*self.kind == kind
    }
}

/// A pod's owner references: one list shared by every pod that has the same (none: empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owners(SharedList<PodOwner>);

static OWNER_LISTS: InternerCell<[PodOwner]> = InternerCell::new();

impl Owners {
    pub fn new(owners: Vec<PodOwner>) -> Self {
        Owners(SharedList::new(&OWNER_LISTS, owners))
    }

    pub fn iter(&self) -> std::slice::Iter<'_, PodOwner> {
        self.0.as_slice().iter()
    }

    /// The UID of the owner of `kind` that controls the pod.
    pub fn controller_uid(&self, kind: &str) -> Option<&str> {
        self.iter().find(|o| o.controls_as(kind)).map(|o| &*o.uid)
    }

    /// Whether `self` and `other` are one shared list (both empty counts).
    pub fn shares(&self, other: &Owners) -> bool {
        self.0.shares(&other.0)
    }

    /// The API's form (`None` when empty, as the API omits it).
    pub fn to_owner_references(&self) -> Option<Vec<OwnerReference>> {
        (!self.0.is_empty()).then(|| self.iter().map(PodOwner::to_owner_reference).collect())
    }
}

impl<'de> Deserialize<'de> for Owners {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// An owner reference as the API sends it (a missing string reads as empty, as
        /// `OwnerReference` reads it).
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw<'a> {
            #[serde(borrow, default)]
            api_version: Cow<'a, str>,
            #[serde(borrow, default)]
            kind: Cow<'a, str>,
            #[serde(borrow, default)]
            name: Cow<'a, str>,
            #[serde(borrow, default)]
            uid: Cow<'a, str>,
            controller: Option<bool>,
            block_owner_deletion: Option<bool>,
        }
        let list: Option<Vec<Raw<'de>>> = Deserialize::deserialize(d)?;
        Ok(Owners::new(
            list.unwrap_or_default()
                .into_iter()
                .map(|r| PodOwner {
                    api_version: intern(&r.api_version),
                    kind: intern(&r.kind),
                    name: intern(&r.name),
                    uid: intern(&r.uid),
                    controller: r.controller,
                    block_owner_deletion: r.block_owner_deletion,
                })
                .collect(),
        ))
    }
}

impl<'de> Deserialize<'de> for PoolPod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawPoolPod::deserialize(d)?;
        let m = raw.metadata;
        Ok(PoolPod {
            meta: ObjectMeta {
                creation_timestamp: m.creation_timestamp,
                deletion_grace_period_seconds: m.deletion_grace_period_seconds,
                deletion_timestamp: m.deletion_timestamp,
                finalizers: m.finalizers,
                generation: m.generation,
                name: m.name,
                namespace: m.namespace,
                resource_version: m.resource_version,
                uid: m.uid,
                ..ObjectMeta::default()
            },
            labels: m.labels,
            annotations: m.annotations,
            owners: m.owner_references,
            spec: raw.spec,
            status: raw.status,
        })
    }
}

impl Serialize for PoolPod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            metadata: ObjectMeta,
            #[serde(skip_serializing_if = "Option::is_none")]
            spec: &'a Option<PoolPodSpec>,
            #[serde(skip_serializing_if = "Option::is_none")]
            status: &'a Option<PoolPodStatus>,
        }
        Out {
            metadata: self.whole_meta(),
            spec: &self.spec,
            status: &self.status,
        }
        .serialize(s)
    }
}

impl Tags for PoolPod {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolPodSpec {
    /// Interned: a node's pods share its name.
    #[serde(
        default,
        deserialize_with = "interned",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_name: Option<Arc<str>>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolPodStatus {
    #[serde(
        default,
        deserialize_with = "interned",
        skip_serializing_if = "Option::is_none"
    )]
    pub phase: Option<Arc<str>>,
    /// `None` when the API's text is not an address (as [`crate::probe::pod_ip`] reads it).
    #[serde(
        rename = "podIP",
        default,
        deserialize_with = "address",
        skip_serializing_if = "Option::is_none"
    )]
    pub pod_ip: Option<IpAddr>,
    /// The types of the conditions whose status is `True`, sorted (interned, and the list
    /// shared by every pod with the same: most pods of a pool are Ready and Scheduled
    /// alike): what [`PoolPod::condition`] asks, and all a cache keeps of the conditions.
    #[serde(
        default,
        deserialize_with = "true_conditions",
        serialize_with = "as_conditions",
        skip_serializing_if = "TrueConditions::is_empty"
    )]
    pub conditions: TrueConditions,
}

/// The sorted types of a pod's conditions whose status is `True`, one list shared by
/// every pod with the same (none: empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrueConditions(SharedList<Arc<str>>);

static CONDITION_LISTS: InternerCell<[Arc<str>]> = InternerCell::new();

impl TrueConditions {
    /// From condition types in any order, each kept once.
    pub fn new(mut types: Vec<Arc<str>>) -> Self {
        types.sort();
        types.dedup();
        TrueConditions(SharedList::new(&CONDITION_LISTS, types))
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.as_slice().iter().map(|t| &**t)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `self` and `other` are one shared list (both empty counts).
    pub fn shares(&self, other: &TrueConditions) -> bool {
        self.0.shares(&other.0)
    }
}

/// A condition as the API sends it: only its type and status are read.
#[derive(Deserialize)]
struct RawCondition<'a> {
    #[serde(rename = "type", default, borrow)]
    type_: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    status: std::borrow::Cow<'a, str>,
}

fn interned<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
    let s: Option<std::borrow::Cow<'de, str>> = Deserialize::deserialize(d)?;
    Ok(s.map(|s| crate::api::tags::intern(&s)))
}

fn address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    let s: Option<Cow<'de, str>> = Deserialize::deserialize(d)?;
    Ok(s.and_then(|s| s.parse().ok()))
}

fn true_conditions<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TrueConditions, D::Error> {
    let list: Option<Vec<RawCondition<'de>>> = Deserialize::deserialize(d)?;
    Ok(TrueConditions::new(
        list.unwrap_or_default()
            .iter()
            .filter(|c| c.status == "True")
            .map(|c| crate::api::tags::intern(&c.type_))
            .collect(),
    ))
}

fn as_conditions<S: serde::Serializer>(types: &TrueConditions, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        types
            .iter()
            .map(|t| serde_json::json!({"type": t, "status": "True"})),
    )
}

crate::controller::watch::slim_resource!(PoolPod, k8s_openapi::api::core::v1::Pod, meta);

impl PoolPod {
    pub fn phase(&self) -> Option<&str> {
        self.status.as_ref()?.phase.as_deref()
    }

    pub fn ip(&self) -> Option<IpAddr> {
        self.status.as_ref()?.pod_ip
    }

    pub fn node(&self) -> Option<&str> {
        self.spec.as_ref()?.node_name.as_deref()
    }

    /// A full `Pod` holding what this one holds (for code that takes a `Pod`, such as a
    /// probe target).
    pub fn to_pod(&self) -> k8s_openapi::api::core::v1::Pod {
        use k8s_openapi::api::core::v1 as core;
        core::Pod {
            metadata: self.whole_meta(),
            spec: self.spec.as_ref().map(|s| core::PodSpec {
                node_name: s.node_name.as_deref().map(str::to_string),
                ..Default::default()
            }),
            status: self.status.as_ref().map(|s| core::PodStatus {
                phase: s.phase.as_deref().map(str::to_string),
                pod_ip: s.pod_ip.map(|ip| ip.to_string()),
                conditions: (!s.conditions.is_empty()).then(|| {
                    s.conditions
                        .iter()
                        .map(|t| core::PodCondition {
                            type_: t.to_string(),
                            status: "True".into(),
                            ..Default::default()
                        })
                        .collect()
                }),
                ..Default::default()
            }),
        }
    }

    /// Is the pod's condition `type_` True?
    pub fn condition(&self, type_: &str) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|t| t == type_))
    }

    /// The metadata an API object would carry: `meta` with the labels, annotations and
    /// owner references.
    pub fn whole_meta(&self) -> ObjectMeta {
        ObjectMeta {
            labels: self.labels.to_map(),
            annotations: self.annotations.to_map(),
            owner_references: self.owners.to_owner_references(),
            ..self.meta.clone()
        }
    }
}

impl crate::probe::PodRead for PoolPod {
    fn pod_meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn pod_phase(&self) -> Option<&str> {
        self.phase()
    }

    fn pod_ip(&self) -> Option<IpAddr> {
        self.ip()
    }

    fn controller_uid(&self, kind: &str) -> Option<&str> {
        self.owners.controller_uid(kind)
    }

    fn has_condition(&self, type_: &str) -> bool {
        self.condition(type_)
    }
}

/// What the cache drops of a pool pod's metadata, as every pod cache does: annotation
/// values over 256 bytes (managed fields are never parsed, see [`PoolPod`]).
pub fn strip(pod: &mut PoolPod) {
    pod.annotations
        .retain(|k, v| v.len() <= 256 && k != crate::controller::watch::LAST_APPLIED);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_pod_body_parses_into_what_binding_reads_and_nothing_else() {
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "ns", "uid": "u", "resourceVersion": "9",
                         "labels": {"hsd.paia.tech/name": "web"},
                         "annotations": {"paia.tech/busy": "false", "big": "x".repeat(300)},
                         "managedFields": [{"manager": "kubelet", "operation": "Update"}],
                         "creationTimestamp": "2026-01-01T00:00:00Z", "generateName": "web-", "generation": 2,
                         "deletionTimestamp": "2026-01-01T00:01:00Z", "deletionGracePeriodSeconds": 30,
                         "finalizers": ["x/y"], "selfLink": "/api/v1/namespaces/ns/pods/web-1",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "nginx"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.7",
                       "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null}],
                       "containerStatuses": [{"name": "app", "ready": true}]}
        });
        let mut p: PoolPod = serde_json::from_value(body.clone()).unwrap();
        strip(&mut p);
        assert_eq!(
            (p.phase(), p.ip(), p.node()),
            (Some("Running"), "10.0.0.7".parse().ok(), Some("n1"))
        );
        assert!(p.condition("Ready") && !p.condition("PodScheduled"));
        assert_eq!(p.annotation("paia.tech/busy"), Some("false"));
        assert_eq!(p.annotation("big"), None, "long annotations are dropped");
        assert_eq!(p.label("hsd.paia.tech/name"), Some("web"));
        assert!(p.meta.managed_fields.is_none());
        assert!(
            p.meta.labels.is_none() && p.meta.annotations.is_none(),
            "labels and annotations are kept compact, not in meta"
        );
        assert!(
            p.meta.owner_references.is_none(),
            "owner references are kept shared, not in meta"
        );
        assert_eq!(
            crate::probe::PodRead::controller_uid(&p, "ReplicaSet"),
            Some("rs-1")
        );
        assert_eq!(crate::probe::PodRead::controller_uid(&p, "Job"), None);
        let mut meta: ObjectMeta = serde_json::from_value(body["metadata"].clone()).unwrap();
        meta.managed_fields = None;
        meta.self_link = None;
        meta.generate_name = None;
        let unstripped: PoolPod = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(
            unstripped.whole_meta(),
            meta,
            "every other metadata field is kept (generateName is not)"
        );
        assert_eq!(
            unstripped.to_pod().metadata,
            meta,
            "a pod made of it has the same metadata"
        );
        let back = serde_json::to_value(&p).unwrap();
        assert!(
            back["spec"].get("containers").is_none(),
            "nothing else kept: {back}"
        );
        assert!(
            std::mem::size_of::<PoolPod>() < 600,
            "{}",
            std::mem::size_of::<PoolPod>()
        );
    }

    fn pod(name: &str, owner_uid: &str, controller: bool, ip: &str) -> PoolPod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": name,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                              "uid": owner_uid, "controller": controller}]},
            "status": {"podIP": ip}
        }))
        .unwrap()
    }

    #[test]
    fn pods_with_the_same_owners_share_one_list_and_read_their_own() {
        let (a, b) = (
            pod("a", "rs-1", true, "10.0.0.1"),
            pod("b", "rs-1", true, "10.0.0.2"),
        );
        assert!(a.owners.shares(&b.owners));
        let other = pod("c", "rs-2", true, "10.0.0.3");
        assert!(!a.owners.shares(&other.owners));
        assert_eq!(
            crate::probe::PodRead::controller_uid(&other, "ReplicaSet"),
            Some("rs-2")
        );
        // An owner that does not control the pod is kept, but is not its controller.
        let held = pod("d", "rs-1", false, "10.0.0.4");
        assert!(!held.owners.shares(&a.owners));
        assert_eq!(
            crate::probe::PodRead::controller_uid(&held, "ReplicaSet"),
            None
        );
        assert_eq!(
            held.owners.iter().map(|o| &*o.uid).collect::<Vec<_>>(),
            vec!["rs-1"]
        );
        assert_eq!(
            held.whole_meta().owner_references.unwrap()[0].controller,
            Some(false)
        );
        // No owners: none kept, none given back.
        let none: PoolPod =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
        assert!(
            none.owners.shares(&Owners::default()) && none.whole_meta().owner_references.is_none()
        );
        // An owner reference missing strings reads as `OwnerReference` reads it; one of the
        // wrong type is refused by both.
        let sparse = serde_json::json!({"metadata": {"name": "x", "ownerReferences": [{"kind": "ReplicaSet"}]}});
        let whole: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(sparse.clone()).unwrap();
        let cached: PoolPod = serde_json::from_value(sparse).unwrap();
        assert_eq!(
            cached.whole_meta().owner_references,
            whole.metadata.owner_references
        );
        let wrong = serde_json::json!({"metadata": {"name": "x", "ownerReferences": [{"uid": 5}]}});
        assert!(serde_json::from_value::<PoolPod>(wrong.clone()).is_err());
        assert!(serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(wrong).is_err());
    }

    #[test]
    fn pods_with_the_same_true_conditions_share_one_list() {
        let with = |conds: serde_json::Value| -> PoolPod {
            serde_json::from_value(serde_json::json!({"status": {"conditions": conds}})).unwrap()
        };
        let c = |t: &str, st: &str| serde_json::json!({"type": t, "status": st});
        let a = with(serde_json::json!([
            c("Ready", "True"),
            c("PodScheduled", "True")
        ]));
        let b = with(serde_json::json!([
            c("PodScheduled", "True"),
            c("Ready", "True"),
            c("Ready", "True")
        ]));
        let (sa, sb) = (a.status.as_ref().unwrap(), b.status.as_ref().unwrap());
        assert!(sa.conditions.shares(&sb.conditions));
        let d = with(serde_json::json!([
            c("Ready", "False"),
            c("PodScheduled", "True")
        ]));
        assert!(!d.condition("Ready") && d.condition("PodScheduled") && a.condition("Ready"));
        assert!(!sa.conditions.shares(&d.status.as_ref().unwrap().conditions));
        let none = with(serde_json::json!([c("Ready", "False")]));
        assert!(none.status.as_ref().unwrap().conditions.is_empty());
    }

    #[test]
    fn the_pod_ip_is_kept_as_an_address_and_text_that_is_none_reads_as_none() {
        let v6 = pod("a", "rs-1", true, "fd00::7");
        assert_eq!(v6.ip(), "fd00::7".parse().ok());
        assert_eq!(
            v6.to_pod().status.unwrap().pod_ip.as_deref(),
            Some("fd00::7")
        );
        let bad = pod("b", "rs-1", true, "not-an-ip");
        assert_eq!(bad.ip(), None);
        // As the whole pod reads it.
        let whole = k8s_openapi::api::core::v1::Pod {
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                pod_ip: Some("not-an-ip".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(crate::probe::pod_ip(&whole), None);
    }
}
