//! The pure mutation pipeline: `mutate(&Pod, &Config) -> Result<Patch, String>`
//! (an error is a denial, with the message the user sees).
//!
//! Each feature contributes a pure mutator; the pipeline concatenates their operations.
//! Nothing here does I/O, so every rule is tested without a server.
use k8s_openapi::api::core::v1::Pod;

use super::config::Config;
use super::patch::Patch;

/// All patch operations for a pod being created. Empty means "admit unchanged"; an error
/// means "deny, saying this".
pub fn mutate(pod: &Pod, config: &Config<'_>) -> Result<Patch, String> {
    let mut ops = Patch::default();
    // One pure mutator per feature, in a fixed order.
    ops.extend(super::singleton::mutate(pod, config)?);
    Ok(ops)
}
