//! HotStandbyClaim (`apps.paia.tech/v1alpha1`, short name `hsc`): a caller's request for one
//! warm pod of a HotStandbyDeployment or HotStandbyJob, and what the pod learns of it.
//!
//! Invariants kept by the claim controller (see `controller::claim`):
//! - a pod carries at most one claim: the [`CLAIM_ANNOTATION`] / [`CLAIM_UID_ANNOTATION`]
//!   pair is written with one update guarded by the pod's resourceVersion, so of two
//!   binders racing for one pod exactly one wins;
//! - a claimed pod counts as busy for every busy mode (annotation, http, exec), so the pool
//!   refills and no scale-down, rollout or guard lets it go while claimed;
//! - `spec` is never changed by the operator; bad input is reported in `status` only.
//!
//! `spec.poolRef.kind` is a free string (not a schema enum) so a claim naming a kind we
//! do not know is accepted by the API server and answered with an `InvalidSpec` condition
//! instead of being refused with a schema error the caller's client may not show.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation on a claimed pod: `<namespace>/<claim name>`.
pub const CLAIM_ANNOTATION: &str = "apps.paia.tech/claim";
/// Annotation on a claimed pod: the claim's UID (a re-created claim of the same name is
/// another claim).
pub const CLAIM_UID_ANNOTATION: &str = "apps.paia.tech/claim-uid";
/// Annotation on a claimed pod: what happens to it when the claim goes (`Delete`,
/// `Recycle`), kept on the pod because the claim object is gone by then.
pub const CLAIM_RELEASE_ANNOTATION: &str = "apps.paia.tech/claim-release";
/// Largest `spec.parameters`, serialized as JSON.
pub const MAX_PARAMETERS_BYTES: usize = 16 * 1024;
/// Default `spec.waitSeconds`.
pub const DEFAULT_WAIT_SECONDS: i64 = 30;

/// Condition type of a claim: `Bound` (True once a pod is bound).
pub const BOUND_CONDITION: &str = "Bound";

/// Condition reasons.
pub mod reason {
    pub const BOUND: &str = "Bound";
    pub const WAITING: &str = "WaitingForPod";
    pub const POOL_EXHAUSTED: &str = "PoolExhausted";
    pub const POOL_NOT_FOUND: &str = "PoolNotFound";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const POD_LOST: &str = "PodLost";
    pub const RELEASED: &str = "Released";
    pub const TTL_EXPIRED: &str = "TTLExpired";
    pub const JOB_FINISHED: &str = "JobFinished";
}

/// Spec of a HotStandbyClaim.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "apps.paia.tech",
    version = "v1alpha1",
    kind = "HotStandbyClaim",
    plural = "hotstandbyclaims",
    singular = "hotstandbyclaim",
    shortname = "hsc",
    category = "kube-standby",
    namespaced,
    status = "HotStandbyClaimStatus",
    derive = "PartialEq",
    doc = "A request for one warm pod of a HotStandbyDeployment or HotStandbyJob; the pod learns the claim's parameters.",
    printcolumn(
        name = "Pool",
        type_ = "string",
        json_path = ".spec.poolRef.name",
        description = "The pool the pod comes from"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Bound, Released or Failed"
    ),
    printcolumn(
        name = "Pod",
        type_ = "string",
        json_path = ".status.pod.name",
        description = "The bound pod"
    ),
    printcolumn(
        name = "IP",
        type_ = "string",
        json_path = ".status.pod.ip",
        description = "The bound pod's IP"
    ),
    printcolumn(
        name = "Waited",
        type_ = "integer",
        json_path = ".status.waitedMs",
        description = "Milliseconds from creation to binding"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct HotStandbyClaimSpec {
    /// The pool to take a pod from.
    pub pool_ref: PoolRef,
    /// Free-form JSON object handed to the pod (`/v1/assignment`, the assignment file).
    /// At most 16 KiB. Not for secrets: anyone who can read the claim reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::preserve_unknown_object")]
    pub parameters: Option<serde_json::Value>,
    /// How long (seconds) to wait for an idle pod before failing with `PoolExhausted`.
    #[serde(default = "default_wait_seconds")]
    #[schemars(range(min = 0))]
    pub wait_seconds: i64,
    /// Lifetime (seconds) after binding; the pod is released when it runs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ttl_seconds: Option<i64>,
    /// What happens to the pod when the claim goes (HotStandbyDeployment pools only):
    /// `Delete` (default: the next caller gets a fresh pod) or `Recycle` (marked idle again).
    #[serde(default)]
    pub release: ReleasePolicy,
}

fn default_wait_seconds() -> i64 {
    DEFAULT_WAIT_SECONDS
}

/// Which pool a claim takes its pod from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolRef {
    /// `HotStandbyDeployment` or `HotStandbyJob`.
    pub kind: String,
    /// The pool's name, in the claim's namespace.
    pub name: String,
}

/// The pool kinds a claim can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PoolKind {
    HotStandbyDeployment,
    HotStandbyJob,
}

impl PoolKind {
    /// The kind named by `s` (exact kind names, also the plural and short names).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "HotStandbyDeployment" | "hotstandbydeployment" | "hotstandbydeployments" | "hsd" => {
                Some(PoolKind::HotStandbyDeployment)
            }
            "HotStandbyJob" | "hotstandbyjob" | "hotstandbyjobs" | "hsj" => {
                Some(PoolKind::HotStandbyJob)
            }
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PoolKind::HotStandbyDeployment => "HotStandbyDeployment",
            PoolKind::HotStandbyJob => "HotStandbyJob",
        }
    }
}

/// What happens to a pod when its claim goes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReleasePolicy {
    /// Delete the pod (UID precondition); the pool starts a fresh one.
    #[default]
    Delete,
    /// Remove the claim's annotations and mark the pod idle again.
    Recycle,
}

impl ReleasePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleasePolicy::Delete => "Delete",
            ReleasePolicy::Recycle => "Recycle",
        }
    }

    /// The policy written on a pod (unknown text: `Delete`, the default).
    pub fn parse(s: &str) -> Self {
        if s.trim() == "Recycle" {
            ReleasePolicy::Recycle
        } else {
            ReleasePolicy::Delete
        }
    }
}

/// Lifecycle of a claim.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ClaimPhase {
    #[default]
    Pending,
    Bound,
    Released,
    Failed,
}

impl ClaimPhase {
    /// Released and Failed never change again.
    pub fn is_final(self) -> bool {
        matches!(self, ClaimPhase::Released | ClaimPhase::Failed)
    }
}

/// The pod a claim is bound to.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoundPod {
    /// The pod's name.
    pub name: String,
    /// The pod's UID (a re-created pod of the same name is another pod).
    pub uid: String,
    /// The pod's IP when it was bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The node the pod runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Observed state of a HotStandbyClaim.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HotStandbyClaimStatus {
    #[serde(default)]
    pub phase: ClaimPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<BoundPod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_at: Option<Time>,
    /// Milliseconds from the claim's creation to its binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<i64>,
    /// When the claim ended (Released or Failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Bound, with reasons WaitingForPod, PoolExhausted, PoolNotFound, InvalidSpec,
    /// PodLost, Released, TTLExpired, JobFinished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// What `/v1/assignment` answers a claimed pod (and what the agent writes to its file).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// The claim's name.
    pub claim: String,
    pub namespace: String,
    /// `spec.parameters` of the claim (`{}` when it has none).
    pub parameters: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_at: Option<Time>,
}

/// How a pool's pods learn their claim (`spec.assignment` of HSD and HSJ).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AssignmentMode {
    /// Only through `GET /v1/assignment` (the app asks itself).
    #[default]
    None,
    /// The webhook injects the agent, which writes the assignment to a file in the pod.
    File,
}

impl AssignmentMode {
    pub fn is_none(&self) -> bool {
        *self == AssignmentMode::None
    }
}

/// Pod-template annotation the HSD and HSJ controllers write when `spec.assignment` is
/// `file`; the webhook reads it from the pod being created and injects the claim agent.
pub const ASSIGNMENT_ANNOTATION: &str = "apps.paia.tech/assignment";
/// The injected claim agent's container name.
pub const CLAIM_AGENT_NAME: &str = "claim-agent";
/// Where app containers find the assignment file (mounted read-only).
pub const ASSIGNMENT_DIR: &str = "/var/run/kube-standby/assignment";
/// The assignment file the claim agent writes.
pub const ASSIGNMENT_FILE: &str = "/var/run/kube-standby/assignment/assignment.json";
/// The emptyDir volume holding the assignment file.
pub const ASSIGNMENT_VOLUME: &str = "kube-standby-assignment";
/// The claim agent's projected token volume (audience `kube-standby`).
pub const ASSIGNMENT_TOKEN_VOLUME: &str = "kube-standby-claim-token";

/// Mark a pod template so the webhook injects the claim agent (`spec.assignment: file`).
pub fn mark_assignment(
    meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    mode: AssignmentMode,
) {
    if mode == AssignmentMode::File {
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(ASSIGNMENT_ANNOTATION.into(), "file".into());
    }
}

/// The claim a pod carries (`<namespace>/<name>`), if any: such a pod is busy whatever
/// its pool's busy mode says.
pub fn claimed_by<T: crate::api::tags::Tags + ?Sized>(pod: &T) -> Option<&str> {
    pod.annotation(CLAIM_ANNOTATION)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// Why a claim's spec cannot be served, if it cannot.
pub fn spec_problem(spec: &HotStandbyClaimSpec) -> Option<String> {
    let kind = PoolKind::parse(&spec.pool_ref.kind);
    if kind.is_none() {
        return Some(format!(
            "spec.poolRef.kind {:?} is not HotStandbyDeployment or HotStandbyJob",
            spec.pool_ref.kind
        ));
    }
    if spec.pool_ref.name.trim().is_empty() {
        return Some("spec.poolRef.name is empty".into());
    }
    if let Some(p) = &spec.parameters {
        if !p.is_object() {
            return Some("spec.parameters must be a JSON object".into());
        }
        let size = serde_json::to_vec(p).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > MAX_PARAMETERS_BYTES {
            return Some(format!(
                "spec.parameters is {size} bytes; at most {MAX_PARAMETERS_BYTES} are allowed"
            ));
        }
    }
    if spec.wait_seconds < 0 {
        return Some("spec.waitSeconds must be 0 or more".into());
    }
    if spec.ttl_seconds.is_some_and(|t| t < 1) {
        return Some("spec.ttlSeconds must be 1 or more".into());
    }
    if kind == Some(PoolKind::HotStandbyJob) && spec.release == ReleasePolicy::Recycle {
        return Some(
            "spec.release Recycle is for HotStandbyDeployment pools: a HotStandbyJob unit is single-use"
                .into(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> HotStandbyClaimSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_follow_the_issue() {
        let s = spec(json!({"poolRef": {"kind": "HotStandbyDeployment", "name": "p"}}));
        assert_eq!(s.wait_seconds, 30);
        assert_eq!(s.release, ReleasePolicy::Delete);
        assert_eq!(s.ttl_seconds, None);
        assert_eq!(spec_problem(&s), None);
    }

    #[test]
    fn bad_specs_are_named() {
        let cases = [
            (
                json!({"poolRef": {"kind": "Deployment", "name": "p"}}),
                "is not HotStandbyDeployment",
            ),
            (
                json!({"poolRef": {"kind": "hsd", "name": " "}}),
                "name is empty",
            ),
            (
                json!({"poolRef": {"kind": "hsd", "name": "p"}, "parameters": [1]}),
                "JSON object",
            ),
            (
                json!({"poolRef": {"kind": "hsd", "name": "p"}, "parameters": {"x": "a".repeat(MAX_PARAMETERS_BYTES)}}),
                "at most 16384",
            ),
            (
                json!({"poolRef": {"kind": "hsd", "name": "p"}, "waitSeconds": -1}),
                "waitSeconds",
            ),
            (
                json!({"poolRef": {"kind": "hsd", "name": "p"}, "ttlSeconds": 0}),
                "ttlSeconds",
            ),
            (
                json!({"poolRef": {"kind": "HotStandbyJob", "name": "p"}, "release": "Recycle"}),
                "single-use",
            ),
        ];
        for (v, want) in cases {
            let got = spec_problem(&spec(v.clone())).unwrap_or_default();
            assert!(got.contains(want), "{v}: {got}");
        }
        let ok = json!({"poolRef": {"kind": "hsj", "name": "p"}, "parameters": {"a": 1}});
        assert_eq!(spec_problem(&spec(ok)), None);
    }

    #[test]
    fn the_assignment_answer_has_the_documented_fields() {
        let a = Assignment {
            claim: "c".into(),
            namespace: "ns".into(),
            parameters: json!({"k": "v"}),
            bound_at: None,
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"claim": "c", "namespace": "ns", "parameters": {"k": "v"}})
        );
    }
}
