//! Claim agent injection: a pure mutator for pods of pools with `spec.assignment: file`.
//!
//! The HSD and HSJ controllers mark such pools' pod templates with the annotation
//! [`ASSIGNMENT_ANNOTATION`]` = file`, so the webhook decides from the pod alone (no pool
//! lookup, no cache that could lag). It adds: a `claim-agent` container running
//! `kube-standby agent --assignment-file /var/run/kube-standby/assignment/assignment.json`
//! (plus `--exit-when-assigned` for pods that are not restarted `Always`, i.e. Job pods,
//! which complete only once every container has ended), an emptyDir mounted read-only at
//! `/var/run/kube-standby/assignment` in every app container (read-write in the agent),
//! and the agent's projected token (audience `kube-standby`).
//!
//! Invariants: idempotent (a pod that already has a `claim-agent` container is left
//! alone); volume names are ours to choose, so a taken one gets a free `-N` suffix; an app
//! container that already mounts the assignment directory, or an operator without a CA
//! bundle for the agent, denies the pod with a message naming why (a silent pod without
//! its file would wait for ever). Never used on UPDATE.
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use serde_json::json;

use super::config::Config;
use super::patch::Patch;
use super::singleton::{
    agent_container, append, container_named, injection_obstacle, never_restarted, same_path,
    VolumeMount,
};
use crate::api::claim::{
    ASSIGNMENT_ANNOTATION, ASSIGNMENT_DIR, ASSIGNMENT_FILE, ASSIGNMENT_TOKEN_VOLUME,
    ASSIGNMENT_VOLUME, CLAIM_AGENT_NAME,
};
use crate::api::singleton::{TOKEN_AUDIENCE, TOKEN_DIR};

const ARGS: &[&str] = &["agent", "--assignment-file", ASSIGNMENT_FILE];
const ARGS_ONCE: &[&str] = &[
    "agent",
    "--assignment-file",
    ASSIGNMENT_FILE,
    "--exit-when-assigned",
];

/// Does the pod ask for the claim agent?
pub fn wanted(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ASSIGNMENT_ANNOTATION))
        .is_some_and(|v| v.trim() == "file")
}

/// `base`, or `base-N` with the first N free in the pod.
fn free_volume(spec: &PodSpec, base: &str, also_taken: &str) -> String {
    let taken = |n: &str| n == also_taken || spec.volumes.iter().flatten().any(|v| v.name == n);
    std::iter::once(base.to_string())
        .chain((2..).map(|i| format!("{base}-{i}")))
        .find(|n| !taken(n))
        .unwrap_or_else(|| base.to_string())
}

/// The claim agent feature's mutator: the patch, or why the pod is denied.
pub fn mutate(pod: &Pod, config: &Config<'_>) -> Result<Patch, String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Patch::default());
    };
    if !wanted(pod) || container_named(spec, CLAIM_AGENT_NAME) {
        return Ok(Patch::default());
    }
    if let Some(why) = injection_obstacle(config) {
        return Err(format!(
            "the pod's pool has spec.assignment file, but the claim agent cannot be injected: {why}"
        ));
    }
    for c in &spec.containers {
        if let Some(m) = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| same_path(&m.mount_path, ASSIGNMENT_DIR))
        {
            return Err(format!(
                "container {:?} already mounts {:?}, where the claim agent puts the assignment file (spec.assignment file)",
                c.name, m.mount_path
            ));
        }
    }
    let files = free_volume(spec, ASSIGNMENT_VOLUME, "");
    let token = free_volume(spec, ASSIGNMENT_TOKEN_VOLUME, &files);
    let mut patch = Patch::with_capacity(2048);
    let volumes = [
        json!({"emptyDir": {}, "name": files}),
        json!({"name": token, "projected": {"sources": [{"serviceAccountToken": {
            "audience": TOKEN_AUDIENCE, "expirationSeconds": 3600, "path": "token"}}]}}),
    ];
    append(
        &mut patch,
        spec.volumes.is_some(),
        &["spec", "volumes"],
        &volumes,
    );
    let read_only = [VolumeMount {
        mount_path: ASSIGNMENT_DIR,
        name: &files,
        read_only: Some(true),
    }];
    for (i, c) in spec.containers.iter().enumerate() {
        let idx = i.to_string();
        append(
            &mut patch,
            c.volume_mounts.is_some(),
            &["spec", "containers", &idx, "volumeMounts"],
            &read_only,
        );
    }
    let restarted_always = spec.restart_policy.as_deref().is_none_or(|p| p == "Always");
    let agent = agent_container(
        config,
        CLAIM_AGENT_NAME,
        if restarted_always { ARGS } else { ARGS_ONCE },
        vec![
            VolumeMount {
                mount_path: ASSIGNMENT_DIR,
                name: &files,
                read_only: None,
            },
            VolumeMount {
                mount_path: TOKEN_DIR,
                name: &token,
                read_only: Some(true),
            },
        ],
        never_restarted(pod),
    );
    patch.add(&["spec", "containers", "-"], &agent);
    Ok(patch)
}
