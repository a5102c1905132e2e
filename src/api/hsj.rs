//! HotStandbyJob (`apps.paia.tech/v1alpha1`, short name `hsj`): the warm pool made of
//! single-completion Jobs. The reconciler is `controller::hsj`.
use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::probe::{default_annotation_key, ExecProbe, HttpProbe, MatchLabels};

/// Label the operator puts on every pod (and Job) of a HotStandbyJob: the HSJ's name.
pub const NAME_LABEL: &str = "hsj.paia.tech/name";

/// Spec of a HotStandbyJob.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "apps.paia.tech",
    version = "v1alpha1",
    kind = "HotStandbyJob",
    plural = "hotstandbyjobs",
    singular = "hotstandbyjob",
    shortname = "hsj",
    category = "kube-standby",
    namespaced,
    status = "HotStandbyJobStatus",
    derive = "PartialEq",
    doc = "Keeps `idleTarget` idle single-completion Jobs warm on top of the busy ones.",
    printcolumn(
        name = "IdleTarget",
        type_ = "integer",
        json_path = ".spec.idleTarget",
        description = "Idle jobs to keep warm"
    ),
    printcolumn(
        name = "Busy",
        type_ = "integer",
        json_path = ".status.busyCount",
        description = "Jobs whose pod is busy"
    ),
    printcolumn(
        name = "Idle",
        type_ = "integer",
        json_path = ".status.idleCount",
        description = "Jobs whose pods are idle"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredReplicas",
        description = "Active Jobs the operator wants"
    ),
    printcolumn(
        name = "Active",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Active (unfinished) Jobs"
    ),
    printcolumn(
        name = "Unknown",
        type_ = "integer",
        json_path = ".status.unknownCount",
        priority = 1,
        description = "Jobs whose busy state is unknown"
    ),
    printcolumn(
        name = "Failing",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="UnitsFailing")].status"#,
        priority = 1,
        description = "Jobs fail before ever being busy (creation backs off)"
    ),
    printcolumn(
        name = "ProbeDegraded",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="ProbeDegraded")].status"#,
        priority = 1,
        description = "Busy probes are failing or forbidden"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct HotStandbyJobSpec {
    /// How many idle Jobs (pods not busy) to keep running, on top of the busy ones.
    #[schemars(range(min = 0))]
    pub idle_target: i32,
    /// Lower bound for the number of Jobs.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_replicas: i32,
    /// Upper bound for the number of Jobs.
    #[serde(default = "super::pool::default_max_replicas")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// How long (seconds) the desired count must stay lower before surplus idle Jobs are removed.
    #[serde(default = "super::pool::default_scale_down_delay")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: i32,
    /// Optional extra labels that select this pool's pods (merged into the pod labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<MatchLabels>,
    /// The Job to run: either a full JobSpec (with `template`) or the shorthand
    /// `image`/`command`/`args`/`env`/`parallelism`/`backoffLimit`/`ttlSecondsAfterFinished`.
    #[schemars(schema_with = "job_template_schema")]
    pub job_template: JobTemplate,
    /// How the operator tells whether a Job's pod is busy.
    #[serde(default)]
    pub busy_probe: JobBusyProbe,
    /// How a pod learns the HotStandbyClaim it was claimed for: `none` (default: the app
    /// asks `GET /v1/assignment` itself) or `file` (the injected agent writes it to a file).
    #[serde(
        default,
        skip_serializing_if = "crate::api::claim::AssignmentMode::is_none"
    )]
    pub assignment: crate::api::claim::AssignmentMode,
}

super::pool::pooled!(HotStandbyJobSpec);

/// A Job template in either form. Unknown JobSpec fields are kept in `rest`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<serde_json::Value>,
    #[serde(flatten)]
    pub rest: BTreeMap<String, serde_json::Value>,
}

fn job_template_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "A batch/v1 JobSpec (with `template`), or the shorthand fields below.",
        "properties": {
            "image": {"type": "string", "description": "Shorthand: container image of the Job's single container."},
            "command": {"type": "array", "items": {"type": "string"}, "description": "Shorthand: the container's command."},
            "args": {"type": "array", "items": {"type": "string"}, "description": "Shorthand: the container's args."},
            "env": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "Shorthand: the container's env (EnvVar list)."},
            "parallelism": {"type": "integer", "description": "Job parallelism."},
            "backoffLimit": {"type": "integer", "description": "Job backoffLimit."},
            "ttlSecondsAfterFinished": {"type": "integer", "description": "Seconds a finished Job is kept."},
            "template": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "description": "Full form: the Job's pod template."}
        }
    })
}

impl JobTemplate {
    /// The JobSpec this template stands for. Shorthand becomes one container named
    /// `main` with `restartPolicy: Never`; every Job has `completions: 1`.
    pub fn to_job_spec(&self) -> Result<JobSpec, String> {
        let mut spec = serde_json::Map::new();
        for (k, v) in &self.rest {
            spec.insert(k.clone(), v.clone());
        }
        let put = |m: &mut serde_json::Map<String, serde_json::Value>, k: &str, v: Option<i32>| {
            if let Some(v) = v {
                m.insert(k.to_string(), v.into());
            }
        };
        put(&mut spec, "parallelism", self.parallelism);
        put(&mut spec, "backoffLimit", self.backoff_limit);
        put(
            &mut spec,
            "ttlSecondsAfterFinished",
            self.ttl_seconds_after_finished,
        );
        spec.insert("completions".into(), 1.into());
        let template = match (&self.template, &self.image) {
            (Some(t), None) => t.clone(),
            (Some(_), Some(_)) => {
                return Err(
                    "jobTemplate: give either `template` or the shorthand `image`, not both".into(),
                )
            }
            (None, Some(image)) => {
                let mut c = serde_json::json!({"name": "main", "image": image});
                if let Some(cmd) = &self.command {
                    c["command"] = serde_json::json!(cmd);
                }
                if let Some(args) = &self.args {
                    c["args"] = serde_json::json!(args);
                }
                if let Some(env) = &self.env {
                    c["env"] = serde_json::json!(env);
                }
                serde_json::json!({"spec": {"restartPolicy": "Never", "containers": [c]}})
            }
            (None, None) => {
                return Err("jobTemplate: needs `template` or the shorthand `image`".into())
            }
        };
        spec.insert("template".into(), template);
        serde_json::from_value(serde_json::Value::Object(spec))
            .map_err(|e| format!("jobTemplate: {e}"))
    }
}

/// Busy detection for HotStandbyJob pods.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobBusyProbe {
    /// `annotation`, `http` or `exec`.
    #[serde(default)]
    pub mode: JobBusyMode,
    /// Annotation read in `annotation` mode ("true", any case, means busy).
    #[serde(default = "default_annotation_key")]
    pub annotation_key: String,
    /// Settings for `http` mode.
    #[serde(default)]
    pub http: HttpProbe,
    /// Settings for `exec` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecProbe>,
}

impl Default for JobBusyProbe {
    fn default() -> Self {
        JobBusyProbe {
            mode: JobBusyMode::Annotation,
            annotation_key: default_annotation_key(),
            http: HttpProbe::default(),
            exec: None,
        }
    }
}

/// Busy detection modes of a HotStandbyJob.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobBusyMode {
    /// The pod annotation `annotationKey` equals "true".
    #[default]
    Annotation,
    /// HTTP GET on the pod IP.
    Http,
    /// A command run in the pod's container; exit 0 means busy (or idle, see successIsBusy).
    Exec,
}

/// Observed state of a HotStandbyJob.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HotStandbyJobStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Jobs whose pod is busy.
    #[serde(default)]
    pub busy_count: i32,
    /// Jobs whose pod is idle.
    #[serde(default)]
    pub idle_count: i32,
    /// clamp(busy + idleTarget, minReplicas, maxReplicas).
    #[serde(default)]
    pub desired_replicas: i32,
    /// Jobs whose busy state is unknown (not probed yet, or never answered).
    #[serde(default)]
    pub unknown_count: i32,
    /// Active (unfinished) Jobs.
    #[serde(default)]
    pub replicas: i32,
    /// Finished Jobs that completed and are still kept (until ttlSecondsAfterFinished).
    #[serde(default)]
    pub completed_count: i32,
    /// Finished Jobs that failed and are still kept (until ttlSecondsAfterFinished).
    #[serde(default)]
    pub failed_count: i32,
    /// Jobs that failed before ever being busy since the last healthy one; creation backs
    /// off exponentially while this is above 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<i32>,
    /// When the last such failure was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// Since when desired has been lower than the active Jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_pending_since: Option<Time>,
    /// A generation whose Job the API server refused; not tried again until the spec changes.
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
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_becomes_one_container_job() {
        let t: JobTemplate = serde_json::from_value(serde_json::json!({
            "image": "busybox", "command": ["sh", "-c", "echo hello && sleep 5"],
            "parallelism": 1, "backoffLimit": 0, "ttlSecondsAfterFinished": 60
        }))
        .unwrap();
        let spec = t.to_job_spec().unwrap();
        assert_eq!(spec.completions, Some(1));
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.ttl_seconds_after_finished, Some(60));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.containers[0].image.as_deref(), Some("busybox"));
        assert_eq!(
            pod.containers[0].command.as_ref().unwrap()[2],
            "echo hello && sleep 5"
        );
    }

    #[test]
    fn full_job_spec_is_kept() {
        let t: JobTemplate = serde_json::from_value(serde_json::json!({
            "activeDeadlineSeconds": 100,
            "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "w", "image": "x"}]}}
        }))
        .unwrap();
        let spec = t.to_job_spec().unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(100));
        assert_eq!(spec.template.spec.unwrap().containers[0].name, "w");
    }

    #[test]
    fn both_or_neither_form_is_an_error() {
        let both: JobTemplate =
            serde_json::from_value(serde_json::json!({"image": "x", "template": {}})).unwrap();
        assert!(both.to_job_spec().unwrap_err().contains("not both"));
        assert!(JobTemplate::default()
            .to_job_spec()
            .unwrap_err()
            .contains("needs"));
    }
}
