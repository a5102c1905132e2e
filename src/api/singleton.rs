//! StatefulSingleton (`apps.statefulsingleton.com/v1`).
//!
//! The seed README's own example uses `apps.openshift.statefulsingleton.com/v1`, while its
//! pods carry `apps.statefulsingleton.com/...` keys. Both groups are served (see
//! [`legacy_group_crd`]) so either YAML applies unchanged.
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The group the seed README's example uses.
pub const LEGACY_GROUP: &str = "apps.openshift.statefulsingleton.com";

/// Spec of a StatefulSingleton: at most one pod matching `selector` runs its app at a time.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "apps.statefulsingleton.com",
    version = "v1",
    kind = "StatefulSingleton",
    plural = "statefulsingletons",
    singular = "statefulsingleton",
    namespaced,
    status = "StatefulSingletonStatus",
    derive = "PartialEq",
    doc = "Guarantees that at most one pod matching the selector runs its application at any time.",
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.phase",
        description = "Running, Transitioning or Blocked"
    ),
    printcolumn(
        name = "Active Pod",
        type_ = "string",
        json_path = ".status.activePod",
        description = "The released pod"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSingletonSpec {
    /// Pods this singleton manages (same namespace).
    pub selector: LabelSelector,
    /// Grace period (seconds) given to a pod of this singleton on termination.
    #[serde(default = "default_grace")]
    #[schemars(range(min = 0))]
    pub termination_grace_period: i64,
    /// Seconds a handover may take before it is reported as timed out (it keeps waiting safely).
    #[serde(default = "default_max_transition")]
    #[schemars(range(min = 1, max = 3600))]
    pub max_transition_time: i64,
    /// Keep the pod's own terminationGracePeriodSeconds when it is longer.
    #[serde(default = "super::hsd::default_true")]
    pub respect_pod_grace_period: bool,
    /// How the app is held back until release: `wrapper` (wrap each container's command),
    /// `initContainer` (an init container waits), or `auto` (wrapper when every container
    /// has a command, else initContainer).
    #[serde(default)]
    pub start_gate: StartGate,
}

fn default_grace() -> i64 {
    30
}
fn default_max_transition() -> i64 {
    300
}

/// Start gate kinds.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StartGate {
    /// Wrapper when every app container has a command, else initContainer.
    #[default]
    Auto,
    /// Wrap each app container's command with the wait script.
    Wrapper,
    /// Add an init container that exits once the pod is released.
    InitContainer,
}

/// Handover phase.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Running,
    Transitioning,
    Blocked,
}

/// Observed state of a StatefulSingleton.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSingletonStatus {
    /// Running, Transitioning or Blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Name of the released pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_pod: Option<String>,
    /// When the current handover started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition_timestamp: Option<Time>,
    /// Human-readable state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions (TransitionTimedOut, Overlapping, NodeLost, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The same CRD served under the seed README's group, so its example applies unchanged.
pub fn legacy_group_crd() -> CustomResourceDefinition {
    let mut crd = StatefulSingleton::crd();
    crd.metadata.name = Some(format!("{}.{}", crd.spec.names.plural, LEGACY_GROUP));
    crd.spec.group = LEGACY_GROUP.to_string();
    crd
}
