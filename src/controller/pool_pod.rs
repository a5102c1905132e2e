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
//! `meta`; phase and node name interned; of the conditions, only the types whose status
//! is `True` (all [`PoolPod::condition`] asks).
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Serialize};

use crate::api::tags::{Pairs, Tags};

/// A pool pod as a cache holds it.
///
/// Its labels and annotations are kept compact in [`PoolPod::labels`] and
/// [`PoolPod::annotations`] (keys and values interned), never in `meta`: read them through
/// [`Tags`] (`pod.label(k)`, `pod.annotation(k)`); `meta.labels` and `meta.annotations` are
/// always `None`, so kube's `ResourceExt::labels()` on a pool pod is empty.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolPod {
    pub meta: ObjectMeta,
    pub labels: Pairs,
    pub annotations: Pairs,
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
    generate_name: Option<String>,
    generation: Option<i64>,
    #[serde(default)]
    labels: Pairs,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    uid: Option<String>,
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
                generate_name: m.generate_name,
                generation: m.generation,
                name: m.name,
                namespace: m.namespace,
                owner_references: m.owner_references,
                resource_version: m.resource_version,
                uid: m.uid,
                ..ObjectMeta::default()
            },
            labels: m.labels,
            annotations: m.annotations,
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
    #[serde(rename = "podIP", default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// The types of the conditions whose status is `True` (interned): what
    /// [`PoolPod::condition`] asks, and all a cache keeps of the conditions.
    #[serde(
        default,
        deserialize_with = "true_conditions",
        serialize_with = "as_conditions",
        skip_serializing_if = "<[_]>::is_empty"
    )]
    pub conditions: Box<[Arc<str>]>,
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

fn true_conditions<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Box<[Arc<str>]>, D::Error> {
    let list: Option<Vec<RawCondition<'de>>> = Deserialize::deserialize(d)?;
    let mut types: Vec<Arc<str>> = list
        .unwrap_or_default()
        .iter()
        .filter(|c| c.status == "True")
        .map(|c| crate::api::tags::intern(&c.type_))
        .collect();
    types.sort();
    types.dedup();
    Ok(types.into_boxed_slice())
}

fn as_conditions<S: serde::Serializer>(types: &[Arc<str>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        types
            .iter()
            .map(|t| serde_json::json!({"type": t.as_ref(), "status": "True"})),
    )
}

crate::controller::watch::slim_resource!(PoolPod, k8s_openapi::api::core::v1::Pod, meta);

impl PoolPod {
    pub fn phase(&self) -> Option<&str> {
        self.status.as_ref()?.phase.as_deref()
    }

    pub fn ip(&self) -> Option<&str> {
        self.status.as_ref()?.pod_ip.as_deref()
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
                pod_ip: s.pod_ip.clone(),
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
            .is_some_and(|s| s.conditions.iter().any(|t| t.as_ref() == type_))
    }

    /// The metadata an API object would carry: `meta` with the labels and annotations.
    pub fn whole_meta(&self) -> ObjectMeta {
        ObjectMeta {
            labels: self.labels.to_map(),
            annotations: self.annotations.to_map(),
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

    fn pod_ip_str(&self) -> Option<&str> {
        self.ip()
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
            (Some("Running"), Some("10.0.0.7"), Some("n1"))
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
        let mut meta: ObjectMeta = serde_json::from_value(body["metadata"].clone()).unwrap();
        meta.managed_fields = None;
        meta.self_link = None;
        let unstripped: PoolPod = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(
            unstripped.whole_meta(),
            meta,
            "every other metadata field is kept"
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
}
