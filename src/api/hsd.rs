//! HotStandbyDeployment (`apps.paia.tech/v1alpha1`, short name `hsd`).
//!
//! Field names and defaults follow the seed operator's CRD so its YAML applies unchanged.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::probe::{BusyProbe, MatchLabels};

/// Label the operator puts on every pod of a HotStandbyDeployment: the HSD's name.
pub const NAME_LABEL: &str = "hsd.paia.tech/name";

/// `api::hsd::BusyMode` stays a public path (tests and users name the HSD's modes here).
pub use super::probe::BusyMode;

/// Spec of a HotStandbyDeployment: a Deployment-like workload that always keeps
/// `idleTarget` idle pods on top of the busy ones.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "apps.paia.tech",
    version = "v1alpha1",
    kind = "HotStandbyDeployment",
    plural = "hotstandbydeployments",
    singular = "hotstandbydeployment",
    shortname = "hsd",
    category = "kube-standby",
    namespaced,
    status = "HotStandbyDeploymentStatus",
    derive = "PartialEq",
    doc = "Keeps `idleTarget` idle pods warm on top of the busy ones: replicas = clamp(busy + idleTarget, minReplicas, maxReplicas).",
    printcolumn(
        name = "IdleTarget",
        type_ = "integer",
        json_path = ".spec.idleTarget",
        description = "Idle pods to keep warm"
    ),
    printcolumn(
        name = "Busy",
        type_ = "integer",
        json_path = ".status.busyCount",
        description = "Pods that are busy"
    ),
    printcolumn(
        name = "Idle",
        type_ = "integer",
        json_path = ".status.idleCount",
        description = "Pods that are idle"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredReplicas",
        description = "Replicas the operator wants"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Ready pods of the child Deployment"
    ),
    printcolumn(
        name = "Unknown",
        type_ = "integer",
        json_path = ".status.unknownCount",
        priority = 1,
        description = "Pods whose busy state is unknown"
    ),
    printcolumn(
        name = "Limited",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="ScalingLimited")].status"#,
        priority = 1,
        description = "Desired was clamped by minReplicas/maxReplicas"
    ),
    printcolumn(
        name = "ProbeDegraded",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="ProbeDegraded")].status"#,
        priority = 1,
        description = "Busy probes are failing"
    ),
    printcolumn(
        name = "ScaleDown",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="ScaleDownPending")].message"#,
        priority = 1,
        description = "A pending scale-down and when it happens"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct HotStandbyDeploymentSpec {
    /// How many idle (not busy) pods to keep running at all times, on top of the busy ones.
    #[schemars(range(min = 0))]
    pub idle_target: i32,

    /// Lower bound for the child Deployment's replicas.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_replicas: i32,

    /// Upper bound for the child Deployment's replicas.
    #[serde(default = "super::pool::default_max_replicas")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,

    /// How long (seconds) the desired replica count must stay lower before the operator
    /// scales down. 0 scales down at once. Scale-ups always happen at once.
    #[serde(default = "super::pool::default_scale_down_delay")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: i32,

    /// Labels that select the pods of this workload. They are merged into the pod
    /// template's labels and become the child Deployment's selector.
    pub selector: MatchLabels,

    /// The pod template, as in a Deployment's `spec.template` (camelCase fields).
    // Kept as JSON text (crate::api::json_text), not a Value tree; `.value()` reads it.
    #[schemars(schema_with = "crate::api::preserve_unknown_object")]
    pub pod_template: crate::api::json_text::JsonText,

    /// How the operator tells whether a pod is busy.
    #[serde(default)]
    pub busy_probe: BusyProbe,

    /// How a pod learns the HotStandbyClaim it was claimed for: `none` (default: the app
    /// asks `GET /v1/assignment` itself) or `file` (the injected agent writes it to a file).
    #[serde(
        default,
        skip_serializing_if = "crate::api::claim::AssignmentMode::is_none"
    )]
    pub assignment: crate::api::claim::AssignmentMode,
}

super::pool::pooled!(HotStandbyDeploymentSpec);

/// Observed state of a HotStandbyDeployment.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HotStandbyDeploymentStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods seen busy.
    #[serde(default)]
    pub busy_count: i32,
    /// Pods seen idle.
    #[serde(default)]
    pub idle_count: i32,
    /// Pods whose busy state is unknown (probe failing, never probed).
    #[serde(default)]
    pub unknown_count: i32,
    /// clamp(busy + idleTarget, minReplicas, maxReplicas).
    #[serde(default)]
    pub desired_replicas: i32,
    /// Replicas the child Deployment currently asks for.
    #[serde(default)]
    pub replicas: i32,
    /// Ready pods of the child Deployment.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Since when the desired count has been lower than the current replicas. Kept in
    /// status so a pending scale-down survives an operator restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_pending_since: Option<Time>,
    /// Busy pods of an old template revision, taken out of their ReplicaSet so a rollout
    /// cannot remove them; each is deleted once idle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detached_busy_pods: Vec<String>,
    /// The spec generation whose pod template the API server rejected; it is not applied
    /// again until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_generation: Option<i64>,
    /// Pods whose removal the busy guard holds now because they are busy (as seen by the
    /// webhook of the leading replica); each got one `DeletionHeld` Event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_pods: Vec<String>,
    /// Pods bound to a HotStandbyClaim now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_count: Option<i32>,
    /// Claims waiting for an idle pod of this pool now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_claims: Option<i32>,
    /// Claims that failed with PoolExhausted and still exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exhausted_claims: Option<i32>,
    /// Ready, ScalingLimited, ProbeDegraded, ScaleDownPending, InvalidSpec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
