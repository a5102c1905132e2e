//! The pure mutation pipeline: `mutate_patch(&Pod, &Config) -> Result<Patch, String>` (an
//! error is a denial, with the message the user sees), and `mutate`, the same operations
//! as `json_patch` values (for tests and tools).
//!
//! Each feature contributes a pure mutator; the pipeline concatenates their operations.
//! Nothing here does I/O, so every rule is tested without a server.
use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::Pod;

use super::config::Config;
use super::patch::Patch;

/// All patch operations for a pod being created, as JSON text (what the webhook sends).
/// Empty means "admit unchanged"; an error means "deny, saying this".
pub fn mutate_patch(pod: &Pod, config: &Config<'_>) -> Result<Patch, String> {
    let mut ops = Patch::default();
    // One pure mutator per feature, in a fixed order. A pool pod is never gated (see
    // `api::is_pool_pod`); the claim agent is only for pods the singleton leaves
    // alone (their patches would both create the pod's volume list).
    let singleton = super::singleton::mutate(pod, config)?;
    if singleton.is_empty() {
        ops.extend(super::claim_agent::mutate(pod, config)?);
    } else {
        ops.extend(singleton);
    }
    Ok(ops)
}

/// The operations of [`mutate_patch`] as `json_patch` operations.
pub fn mutate(pod: &Pod, config: &Config<'_>) -> Result<Vec<PatchOperation>, String> {
    let patch = mutate_patch(pod, config)?;
    patch
        .operations()
        .map(|p| p.0)
        .map_err(|e| format!("the patch could not be written: {e}"))
}
