//! The durable hold start: the pod annotation `kube-standby.dev/held-since` (RFC 3339).
//!
//! Invariants:
//! - written off the answer path (a spawned task), once per hold per replica, only when
//!   the pod does not carry a valid one already; the merge patch carries the pod's UID (a
//!   pod recreated under the same name is never marked) and, when known, the
//!   resourceVersion the guard saw, so a write by the other replica in between is never
//!   overwritten (409: the next denial tries again);
//! - cleared by [`clear`] (the leader's sweep, `runtime::guard`) once the pod is idle or
//!   the annotation is past its use, so a later hold starts fresh;
//! - any replica may write: a pod merge patch is idempotent and needs no Lease.
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::guard::HELD_SINCE_ANNOTATION;

/// Writes and clears the annotation through the API.
#[derive(Clone)]
pub struct HeldSince {
    pub client: kube::Client,
}

impl std::fmt::Debug for HeldSince {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeldSince")
    }
}

/// The merge patch that records `value` on the pod.
pub fn mark_patch(
    uid: Option<&str>,
    resource_version: Option<&str>,
    value: &str,
) -> serde_json::Value {
    let mut meta = json!({ "annotations": { HELD_SINCE_ANNOTATION: value } });
    if let Some(u) = uid.filter(|u| !u.is_empty()) {
        meta["uid"] = json!(u);
    }
    if let Some(rv) = resource_version.filter(|r| !r.is_empty()) {
        meta["resourceVersion"] = json!(rv);
    }
    json!({ "metadata": meta })
}

/// The merge patch that removes the annotation.
pub fn clear_patch(uid: Option<&str>) -> serde_json::Value {
    let mut meta = json!({ "annotations": { HELD_SINCE_ANNOTATION: null } });
    if let Some(u) = uid.filter(|u| !u.is_empty()) {
        meta["uid"] = json!(u);
    }
    json!({ "metadata": meta })
}

impl HeldSince {
    async fn patch(
        &self,
        namespace: &str,
        name: &str,
        body: serde_json::Value,
    ) -> Result<(), String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        api.patch_metadata(name, &PatchParams::default(), &Patch::Merge(body))
            .await
            .map(|_| ())
            .map_err(|e| crate::telemetry::cut(&e.to_string(), 200))
    }

    /// Record that the pod's hold started at `value`.
    pub async fn mark(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        resource_version: Option<&str>,
        value: &str,
    ) -> Result<(), String> {
        self.patch(namespace, name, mark_patch(uid, resource_version, value))
            .await
    }

    /// Remove the annotation.
    pub async fn clear(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<(), String> {
        self.patch(namespace, name, clear_patch(uid)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_carry_the_preconditions_they_know() {
        assert_eq!(
            mark_patch(Some("u1"), Some("42"), "2026-12-02T12:00:00Z"),
            json!({"metadata": {"uid": "u1", "resourceVersion": "42",
                "annotations": {"kube-standby.dev/held-since": "2026-12-02T12:00:00Z"}}})
        );
        assert_eq!(
            mark_patch(None, Some(""), "t"),
            json!({"metadata": {"annotations": {"kube-standby.dev/held-since": "t"}}})
        );
        assert_eq!(
            clear_patch(Some("u1")),
            json!({"metadata": {"uid": "u1", "annotations": {"kube-standby.dev/held-since": null}}})
        );
    }
}
