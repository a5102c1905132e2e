//! Busy probes and label matches shared by every kind: how the operator tells a busy pod
//! from an idle one (`BusyProbe` and its modes, `HttpProbe`, `ExecProbe`) and the exact-match
//! selector (`MatchLabels`). Pure data and field checks, no I/O.
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{default_one, default_true};

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

/// Label that opts a pod into the busy guard (our controllers put it on the pod templates
/// they write; the ValidatingWebhookConfiguration selects on it).
pub const BUSY_GUARD_LABEL: &str = "kube-standby.dev/busy-guard";
/// Annotation naming the annotation that says the pod is busy (default `paia.tech/busy`).
pub const BUSY_ANNOTATION_KEY_ANNOTATION: &str = "kube-standby.dev/busy-annotation";
/// Annotation our controllers set on pods of http/exec pools (`probe`): the guard then
/// reads the operator's probe results, and a pod never probed counts as busy.
pub const BUSY_SOURCE_ANNOTATION: &str = "kube-standby.dev/busy-source";

/// Opt a pod template into the busy guard: the guard label (unless the template sets it
/// itself, e.g. to "false" to opt out), and for an annotation-mode pool whose key is not
/// the default, the annotation naming that key.
pub fn mark_guarded(
    meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    annotation_key: Option<&str>,
) {
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .entry(BUSY_GUARD_LABEL.to_string())
        .or_insert_with(|| "true".to_string());
    if let Some(k) = annotation_key.filter(|k| *k != default_annotation_key()) {
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(BUSY_ANNOTATION_KEY_ANNOTATION.to_string(), k.to_string());
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
fn default_period() -> i32 {
    10
}

/// Exec busy probe settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecProbe {
    /// Command to run in the container.
    pub command: Vec<String>,
    /// Container to run it in (default: the first container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Timeout in seconds (1-60).
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: i32,
    /// When true exit code 0 means busy; when false it means idle.
    #[serde(default = "default_true")]
    pub success_is_busy: bool,
    /// How often each pod is probed, in seconds (1-3600).
    #[serde(default = "default_exec_period")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: i32,
}

fn default_exec_period() -> i32 {
    5
}

impl ExecProbe {
    /// Problems with these settings, each with a clear message.
    pub fn problems(&self) -> Vec<String> {
        let mut e = vec![];
        if self.command.is_empty() || self.command.iter().all(|c| c.trim().is_empty()) {
            e.push("busyProbe.exec.command must not be empty".to_string());
        }
        if !(1..=60).contains(&self.timeout_seconds) {
            e.push(format!(
                "busyProbe.exec.timeoutSeconds must be within 1-60, got {}",
                self.timeout_seconds
            ));
        }
        if !(1..=3600).contains(&self.period_seconds) {
            e.push(format!(
                "busyProbe.exec.periodSeconds must be within 1-3600, got {}",
                self.period_seconds
            ));
        }
        e
    }
}
