//! AsyncActor (`asya.io/v1alpha1`): a queue-driven workload with an injected sidecar and
//! KEDA autoscaling. Types only (the reconciler is `controller::actor`).
//!
//! Field names and defaults are the seed operator's, so its YAML applies unchanged.
use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Spec of an AsyncActor.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "asya.io",
    version = "v1alpha1",
    kind = "AsyncActor",
    plural = "asyncactors",
    singular = "asyncactor",
    shortname = "asya",
    shortname = "asyas",
    category = "kube-standby",
    namespaced,
    status = "AsyncActorStatus",
    derive = "PartialEq",
    doc = "An actor workload consuming a queue, with an injected sidecar and KEDA autoscaling.",
    printcolumn(name = "Queue", type_ = "string", json_path = ".spec.queueName"),
    printcolumn(
        name = "Transport",
        type_ = "string",
        json_path = ".spec.transport.type"
    ),
    printcolumn(
        name = "Workload",
        type_ = "string",
        json_path = ".status.workloadRef.kind",
        description = "Kind of the workload the operator created"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="WorkloadReady")].status"#,
        description = "The workload exists and its pods are ready"
    ),
    printcolumn(
        name = "Scaling",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="ScalingReady")].reason"#,
        description = "KEDA autoscaling state"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AsyncActorSpec {
    /// Queue name to consume from.
    pub queue_name: String,
    /// Message transport.
    pub transport: Transport,
    /// Sidecar container settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<Sidecar>,
    /// Unix socket between sidecar and runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<Socket>,
    /// Timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeouts>,
    /// KEDA autoscaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,
    /// The workload to run.
    pub workload: Workload,
}

/// Transport configuration.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transport {
    /// `sqs` or `rabbitmq`.
    #[serde(rename = "type")]
    pub type_: TransportType,
    /// SQS settings (when type=sqs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs: Option<SqsTransport>,
    /// RabbitMQ settings (when type=rabbitmq).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq: Option<RabbitMqTransport>,
}

/// Transport kinds.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransportType {
    Sqs,
    Rabbitmq,
}

/// SQS settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SqsTransport {
    /// AWS region.
    pub region: String,
    /// Queue URL prefix; the queue name is appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_base_url: Option<String>,
    /// Visibility timeout in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility_timeout: Option<i32>,
    /// Long-poll wait in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_time_seconds: Option<i32>,
}

/// RabbitMQ settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RabbitMqTransport {
    /// Broker host.
    pub host: String,
    /// Broker port.
    #[serde(default = "default_amqp_port")]
    pub port: i32,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Secret key holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

fn default_amqp_port() -> i32 {
    5672
}

/// A key in a Secret of the actor's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key in the Secret.
    pub key: String,
}

/// Sidecar container settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sidecar {
    /// Sidecar image (default: the operator's configured sidecar image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Sidecar resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment for the sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
}

/// Unix socket settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Socket {
    /// Socket path shared by sidecar and runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Maximum message size in bytes (a string, as in the seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<String>,
}

/// Timeouts in seconds.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Per-message processing timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<i32>,
    /// Graceful shutdown time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_shutdown: Option<i32>,
}

/// KEDA autoscaling.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    /// Create a KEDA ScaledObject (ScaledJob for a Job workload).
    #[serde(default)]
    pub enabled: bool,
    /// Minimum replicas (0 scales to zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    /// Maximum replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
    /// Seconds between KEDA queue polls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<i32>,
    /// Seconds of an empty queue before scaling to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_period: Option<i32>,
    /// Target messages per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_length: Option<i32>,
    /// Tells busy pods from idle ones (same shape as a HotStandbyDeployment's `busyProbe`,
    /// e.g. an HTTP endpoint of the sidecar). With it, the operator keeps
    /// `controller.kubernetes.io/pod-deletion-cost` on the actor's Deployment pods so a
    /// scale-down removes idle pods first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_probe: Option<crate::api::probe::BusyProbe>,
}

/// The workload to create.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// Deployment (default), StatefulSet or Job.
    #[serde(rename = "type", default)]
    pub type_: WorkloadType,
    /// Replicas (ignored when scaling.enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pod template of the runtime.
    #[schemars(schema_with = "crate::api::preserve_unknown_object")]
    pub template: serde_json::Value,
    /// StatefulSet volume claim templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::preserve_unknown_list")]
    pub volume_claim_templates: Option<Vec<serde_json::Value>>,
}

/// Workload kinds.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WorkloadType {
    #[default]
    Deployment,
    StatefulSet,
    Job,
}

/// A reference to a created workload.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// API version of the workload.
    pub api_version: String,
    /// Kind of the workload.
    pub kind: String,
    /// Name of the workload.
    pub name: String,
    /// Namespace of the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A reference to the created ScaledObject (or ScaledJob).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ObjectRef {
    /// Name of the object.
    pub name: String,
    /// Namespace of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Observed state of an AsyncActor.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AsyncActorStatus {
    /// Pods whose removal the busy guard holds now because they are busy (as seen by the
    /// webhook of the leading replica); each got one `DeletionHeld` Event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_pods: Vec<String>,
    /// WorkloadReady, ScalingReady, RuntimeMounted, TransportConfigured and, for Job
    /// workloads, NativeSidecar.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The created workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref: Option<WorkloadRef>,
    /// The created KEDA ScaledObject (or ScaledJob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaled_object_ref: Option<ObjectRef>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
