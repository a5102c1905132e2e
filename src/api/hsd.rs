//! HotStandbyDeployment (`apps.paia.tech/v1alpha1`, short name `hsd`).
//!
//! Field names and defaults follow the seed operator's CRD so its YAML applies unchanged.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,

    /// How long (seconds) the desired replica count must stay lower before the operator
    /// scales down. 0 scales down at once. Scale-ups always happen at once.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: i32,

    /// Labels that select the pods of this workload. They are merged into the pod
    /// template's labels and become the child Deployment's selector.
    pub selector: MatchLabels,

    /// The pod template, as in a Deployment's `spec.template` (camelCase fields).
    #[schemars(schema_with = "crate::api::preserve_unknown_object")]
    pub pod_template: serde_json::Value,

    /// How the operator tells whether a pod is busy.
    #[serde(default)]
    pub busy_probe: BusyProbe,
}

fn default_max_replicas() -> i32 {
    1000
}
fn default_scale_down_delay() -> i32 {
    30
}

/// A label selector made of exact label matches only.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchLabels {
    /// Label key/value pairs a pod must carry.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// How busy pods are detected.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BusyProbe {
    /// `annotation`: the pod's own annotation says it is busy; `http`: the operator
    /// probes each pod over HTTP.
    #[serde(default)]
    pub mode: BusyMode,

    /// Annotation read in `annotation` mode; the pod is busy when its value is "true"
    /// (any case).
    #[serde(default = "default_annotation_key")]
    pub annotation_key: String,

    /// Settings for `http` mode.
    #[serde(default)]
    pub http: HttpProbe,
}

impl Default for BusyProbe {
    fn default() -> Self {
        BusyProbe {
            mode: BusyMode::Annotation,
            annotation_key: default_annotation_key(),
            http: HttpProbe::default(),
        }
    }
}

pub fn default_annotation_key() -> String {
    "paia.tech/busy".to_string()
}

/// Busy detection modes of a HotStandbyDeployment.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BusyMode {
    /// The pod annotation `annotationKey` equals "true".
    #[default]
    Annotation,
    /// `GET http://<podIP>:<port><path>`; a 2xx answer means busy (or idle, see successIsBusy).
    Http,
}

/// HTTP busy probe settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    /// Container port to probe on the pod's IP (1-65535).
    #[serde(default = "default_http_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// HTTP path to GET.
    #[serde(default = "default_http_path")]
    pub path: String,
    /// When true a 2xx answer means busy; when false a 2xx answer means idle.
    #[serde(default = "default_true")]
    pub success_is_busy: bool,
    /// Per-probe timeout in seconds (1-60).
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: i32,
    /// How often each pod is probed, in seconds (1-3600).
    #[serde(default = "default_period")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: i32,
}

impl HttpProbe {
    /// Out-of-range settings, each with a clear message (the schema refuses them too, but
    /// objects stored before the bounds existed still reach us).
    pub fn problems(&self) -> Vec<String> {
        let mut e = vec![];
        let mut check = |field: &str, v: i32, lo: i32, hi: i32| {
            if !(lo..=hi).contains(&v) {
                e.push(format!(
                    "busyProbe.http.{field} must be within {lo}-{hi}, got {v}"
                ));
            }
        };
        check("port", self.port, 1, 65535);
        check("timeoutSeconds", self.timeout_seconds, 1, 60);
        check("periodSeconds", self.period_seconds, 1, 3600);
        e
    }
}

impl Default for HttpProbe {
    fn default() -> Self {
        HttpProbe {
            port: default_http_port(),
            path: default_http_path(),
            success_is_busy: true,
            timeout_seconds: 1,
            period_seconds: default_period(),
        }
    }
}

fn default_http_port() -> i32 {
    8080
}
fn default_http_path() -> String {
    "/busy".to_string()
}
pub(crate) fn default_true() -> bool {
    true
}
pub(crate) fn default_one() -> i32 {
    1
}
fn default_period() -> i32 {
    10
}

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
    /// Ready, ScalingLimited, ProbeDegraded, ScaleDownPending, InvalidSpec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
