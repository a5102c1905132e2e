//! The pure mutation pipeline: `mutate(&Pod, &Config) -> Result<Vec<PatchOperation>, String>`
//! (an error is a denial, with the message the user sees).
//!
//! Each feature contributes a pure mutator; the pipeline concatenates their operations.
//! Nothing here does I/O, so every rule is tested without a server.
use std::sync::Arc;

use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::Pod;

use crate::api::StatefulSingleton;

/// What the webhook injects into pods that need the in-pod agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Injection {
    /// Image of the kube-standby agent (sidecar and init gate).
    pub agent_image: String,
    /// URL the agent uses to reach the operator.
    pub operator_url: String,
    /// PEM CA bundle the agent trusts for `operator_url`.
    pub ca_bundle: String,
}

/// Everything a mutator may look at besides the pod.
pub struct Config<'a> {
    /// StatefulSingletons of the pod's namespace.
    pub singletons: Vec<Arc<StatefulSingleton>>,
    pub injection: &'a Injection,
}

/// All patch operations for a pod being created. Empty means "admit unchanged"; an error
/// means "deny, saying this".
pub fn mutate(pod: &Pod, config: &Config<'_>) -> Result<Vec<PatchOperation>, String> {
    let mut ops = Vec::new();
    // One pure mutator per feature, in a fixed order.
    ops.extend(super::singleton::mutate(pod, config)?);
    Ok(ops)
}
