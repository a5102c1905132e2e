//! StatefulSingleton injection: a pure mutator from a pod being created to JSON-patch
//! operations. Idempotent (an injected pod is left alone), never used on UPDATE.
//!
//! Invariant: the patched pod is valid whatever the pod already holds. Volume names are
//! ours to choose, so a taken one gets a free `-N` suffix; mount paths and container
//! names are part of the documented layout (and how an injected pod is recognised), so a
//! clash there moves to the other gate, and when neither gate fits the pod is denied
//! with a message naming the clash.
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use serde_json::{json, Value};

use super::config::Config;
use crate::api::singleton::{
    owning_singleton, StartGate, StatefulSingleton, GATE_ANNOTATION, MANAGED_LABEL,
    READY_CONDITION, SIGNAL_DIR, SIGNAL_FILE, SINGLETON_LABEL, TOKEN_AUDIENCE, TOKEN_DIR,
    TOKEN_FILE, WRAPPER_CONFIGMAP, WRAPPER_DIR, WRAPPER_SCRIPT_NAME,
};

pub use crate::api::singleton::{
    INIT_GATE_NAME, SIDECAR_NAME, SIGNAL_VOLUME, TOKEN_VOLUME, WRAPPER_VOLUME,
};

/// The gate a pod gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Wrapper,
    InitContainer,
}

impl Gate {
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Wrapper => "wrapper",
            Gate::InitContainer => "initContainer",
        }
    }
}

/// Is `name` used by any container or init container of the pod?
fn container_named(spec: &PodSpec, name: &str) -> bool {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == name)
}

fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Why the wrapper gate cannot be used for this pod, if it cannot.
fn wrapper_obstacle(spec: &PodSpec) -> Option<String> {
    if spec.containers.is_empty() {
        return Some("the pod has no containers".into());
    }
    for c in &spec.containers {
        if c.command.as_ref().is_none_or(|c| c.is_empty()) {
            return Some(format!("container {:?} has no command", c.name));
        }
        let taken = c.volume_mounts.iter().flatten().find(|m| {
            same_path(&m.mount_path, WRAPPER_DIR) || same_path(&m.mount_path, SIGNAL_DIR)
        });
        if let Some(m) = taken {
            return Some(format!(
                "container {:?} already mounts {:?}",
                c.name, m.mount_path
            ));
        }
    }
    if container_named(spec, SIDECAR_NAME) {
        return Some(format!("a container is already named {SIDECAR_NAME:?}"));
    }
    None
}

/// `auto`: wrapper when every app container has a command (the ENTRYPOINT of an image is
/// unknown at admission) and nothing in the pod takes the wrapper's paths or sidecar name,
/// else the init gate. `wrapper` falls back to the init gate for the same reasons rather
/// than guessing an entrypoint or clashing. An error names why no gate fits.
pub fn choose_gate(pod: &Pod, wanted: StartGate) -> Result<Gate, String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Gate::InitContainer);
    };
    let wrapper = match wanted {
        StartGate::InitContainer => Some("startGate is initContainer".to_string()),
        StartGate::Auto | StartGate::Wrapper => wrapper_obstacle(spec),
    };
    if wrapper.is_none() {
        return Ok(Gate::Wrapper);
    }
    if !container_named(spec, INIT_GATE_NAME) {
        return Ok(Gate::InitContainer);
    }
    Err(format!(
        "a container is already named {INIT_GATE_NAME:?}, the name of the init gate, and the wrapper gate cannot be used ({}); rename that container",
        wrapper.unwrap_or_default()
    ))
}

/// Volume names free in this pod: ours, or ours with the first free `-N` suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeNames {
    pub token: String,
    pub wrapper: String,
    pub signal: String,
}

impl VolumeNames {
    pub fn for_pod(spec: &PodSpec) -> Self {
        let mut taken: Vec<String> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.clone())
            .collect();
        let mut pick = |base: &str| {
            let name = std::iter::once(base.to_string())
                .chain((2..).map(|i| format!("{base}-{i}")))
                .find(|n| !taken.contains(n))
                .unwrap_or_else(|| base.to_string());
            taken.push(name.clone());
            name
        };
        VolumeNames {
            token: pick(TOKEN_VOLUME),
            wrapper: pick(WRAPPER_VOLUME),
            signal: pick(SIGNAL_VOLUME),
        }
    }
}

fn ptr(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

/// Is this pod already injected (a reinvocation, or created from an injected spec)?
/// Decided from the injected containers only: a pod that merely carries the gate
/// annotation is injected like any other.
pub fn already_injected(pod: &Pod) -> bool {
    crate::api::singleton::carries_gate(pod)
}

fn agent_env(config: &Config<'_>, never_restarted: bool) -> Value {
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let mut env = json!([
        {"name": "KUBE_STANDBY_OPERATOR_URL", "value": config.injection.operator_url},
        {"name": "KUBE_STANDBY_CA", "value": config.injection.ca_bundle},
        {"name": "KUBE_STANDBY_TOKEN_FILE", "value": TOKEN_FILE},
        {"name": "POD_NAME", "valueFrom": field("metadata.name")},
        {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
        {"name": "POD_UID", "valueFrom": field("metadata.uid")},
    ]);
    // A container that is never restarted must not give up on an unreachable operator.
    if never_restarted {
        if let Some(a) = env.as_array_mut() {
            a.push(json!({"name": "KUBE_STANDBY_GIVE_UP_SECONDS", "value": "0"}));
        }
    }
    env
}

/// Is the pod's agent never restarted after it exits (`restartPolicy: Never`)?
fn never_restarted(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("Never")
}

/// Why the agent could not work with this injection, if so: it must trust the operator.
pub fn injection_obstacle(config: &Config<'_>) -> Option<String> {
    if !config
        .injection
        .ca_bundle
        .contains("-----BEGIN CERTIFICATE-----")
    {
        return Some(
            "the operator has no CA bundle for the in-pod agent (KUBE_STANDBY_CA would be empty); \
             start it with --ca-file or a certificate file that ends in its CA"
                .into(),
        );
    }
    if config.injection.operator_url.is_empty() || config.injection.agent_image.is_empty() {
        return Some("the operator has no --operator-url or --agent-image for the agent".into());
    }
    None
}

fn token_mount(names: &VolumeNames) -> Value {
    json!({"name": names.token, "mountPath": TOKEN_DIR, "readOnly": true})
}

/// The status sidecar: obtains the release and writes the signal file atomically.
pub fn sidecar(config: &Config<'_>, names: &VolumeNames, never_restarted: bool) -> Value {
    json!({
        "name": SIDECAR_NAME,
        "image": config.injection.agent_image,
        "args": ["agent", "--signal-file", SIGNAL_FILE],
        "env": agent_env(config, never_restarted),
        // The agent's one-line fatal error becomes the container status' message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "20m", "memory": "64Mi"}},
        "volumeMounts": [{"name": names.signal, "mountPath": SIGNAL_DIR}, token_mount(names)],
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true, "runAsUser": 65532, "capabilities": {"drop": ["ALL"]}}
    })
}

/// The init gate: exits 0 once the pod is released.
pub fn init_gate(config: &Config<'_>, names: &VolumeNames, never_restarted: bool) -> Value {
    json!({
        "name": INIT_GATE_NAME,
        "image": config.injection.agent_image,
        "args": ["agent", "--once"],
        "env": agent_env(config, never_restarted),
        // The agent's one-line fatal error becomes the container status' message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "20m", "memory": "64Mi"}},
        "volumeMounts": [token_mount(names)],
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true, "runAsUser": 65532, "capabilities": {"drop": ["ALL"]}}
    })
}

fn wrapped_command(c: &Container) -> Value {
    let mut cmd = vec![
        format!("{WRAPPER_DIR}/{WRAPPER_SCRIPT_NAME}"),
        "--".to_string(),
    ];
    cmd.extend(c.command.iter().flatten().cloned());
    json!(cmd)
}

/// Add `items` to the list at `path`: the whole list when the pod has none (`exists` is
/// false), else each item appended (`-`).
fn append(exists: bool, path: &[&str], items: Vec<Value>) -> Vec<PatchOperation> {
    if !exists {
        return vec![add(ptr(path), Value::Array(items))];
    }
    let mut end = path.to_vec();
    end.push("-");
    items.into_iter().map(|v| add(ptr(&end), v)).collect()
}

/// Set `entries` in the string map at `path`: the whole map when the pod has none, else
/// each key on its own (keys contain '/', escaped by `from_tokens`).
fn put_entries(exists: bool, path: &[&str], entries: &[(&str, &str)]) -> Vec<PatchOperation> {
    if !exists {
        let map = entries
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect::<serde_json::Map<_, _>>();
        return vec![add(ptr(path), Value::Object(map))];
    }
    entries
        .iter()
        .map(|(k, v)| {
            let mut at = path.to_vec();
            at.push(k);
            add(ptr(&at), json!(v))
        })
        .collect()
}

/// The managed and singleton labels, and the gate annotation.
fn metadata_ops(pod: &Pod, singleton: &str, gate: Gate) -> Vec<PatchOperation> {
    let meta = &pod.metadata;
    let mut ops = put_entries(
        meta.labels.is_some(),
        &["metadata", "labels"],
        &[(MANAGED_LABEL, "true"), (SINGLETON_LABEL, singleton)],
    );
    ops.extend(put_entries(
        meta.annotations.is_some(),
        &["metadata", "annotations"],
        &[(GATE_ANNOTATION, gate.as_str())],
    ));
    ops
}

/// The singleton's readiness gate, unless the pod already lists it.
fn readiness_gate_ops(spec: &PodSpec) -> Vec<PatchOperation> {
    let gates = spec.readiness_gates.as_ref();
    if gates.is_some_and(|g| g.iter().any(|g| g.condition_type == READY_CONDITION)) {
        return vec![];
    }
    let entry = json!({"conditionType": READY_CONDITION});
    append(gates.is_some(), &["spec", "readinessGates"], vec![entry])
}

/// Grace period: the singleton's, or the pod's own when longer and respected.
fn grace_period_ops(spec: &PodSpec, singleton: &StatefulSingleton) -> Vec<PatchOperation> {
    let own = spec.termination_grace_period_seconds;
    let wanted = &singleton.spec;
    let grace = match own {
        Some(o) if wanted.respect_pod_grace_period && o > wanted.termination_grace_period => o,
        _ => wanted.termination_grace_period,
    };
    if own == Some(grace) {
        return vec![];
    }
    vec![add(
        ptr(&["spec", "terminationGracePeriodSeconds"]),
        json!(grace),
    )]
}

/// Preferred anti-affinity against this singleton's pods only, merged into what exists.
fn anti_affinity_ops(spec: &PodSpec, singleton: &str) -> Vec<PatchOperation> {
    const PREFERRED: &str = "preferredDuringSchedulingIgnoredDuringExecution";
    let term = json!({"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {SINGLETON_LABEL: singleton}}}});
    let Some(affinity) = &spec.affinity else {
        return vec![add(
            ptr(&["spec", "affinity"]),
            json!({"podAntiAffinity": {PREFERRED: [term]}}),
        )];
    };
    let Some(anti) = &affinity.pod_anti_affinity else {
        return vec![add(
            ptr(&["spec", "affinity", "podAntiAffinity"]),
            json!({PREFERRED: [term]}),
        )];
    };
    let exists = anti
        .preferred_during_scheduling_ignored_during_execution
        .is_some();
    append(
        exists,
        &["spec", "affinity", "podAntiAffinity", PREFERRED],
        vec![term],
    )
}

/// Volumes: the agent's projected token; the wrapper script and signal dir for the wrapper gate.
fn volume_ops(spec: &PodSpec, gate: Gate, names: &VolumeNames) -> Vec<PatchOperation> {
    let mut volumes = vec![json!({"name": names.token, "projected": {"sources": [
        {"serviceAccountToken": {"audience": TOKEN_AUDIENCE, "expirationSeconds": 3600, "path": "token"}}
    ]}})];
    if gate == Gate::Wrapper {
        volumes.push(json!({"name": names.wrapper, "configMap": {"name": WRAPPER_CONFIGMAP, "defaultMode": 0o755}}));
        volumes.push(json!({"name": names.signal, "emptyDir": {}}));
    }
    append(spec.volumes.is_some(), &["spec", "volumes"], volumes)
}

/// The wrapper gate: every app container's command wrapped (args stay exactly as they
/// are) with the wrapper and signal mounts, then the status sidecar.
fn wrapper_gate_ops(
    spec: &PodSpec,
    config: &Config<'_>,
    names: &VolumeNames,
    never_restarted: bool,
) -> Vec<PatchOperation> {
    let mounts = [
        json!({"name": names.wrapper, "mountPath": WRAPPER_DIR, "readOnly": true}),
        json!({"name": names.signal, "mountPath": SIGNAL_DIR, "readOnly": true}),
    ];
    let mut ops = vec![];
    for (i, c) in spec.containers.iter().enumerate() {
        let idx = i.to_string();
        ops.push(add(
            ptr(&["spec", "containers", &idx, "command"]),
            wrapped_command(c),
        ));
        ops.extend(append(
            c.volume_mounts.is_some(),
            &["spec", "containers", &idx, "volumeMounts"],
            mounts.to_vec(),
        ));
    }
    ops.push(add(
        ptr(&["spec", "containers", "-"]),
        sidecar(config, names, never_restarted),
    ));
    ops
}

/// The init gate, first among the init containers so none runs before the release.
fn init_gate_ops(
    spec: &PodSpec,
    config: &Config<'_>,
    names: &VolumeNames,
    never_restarted: bool,
) -> Vec<PatchOperation> {
    let gate = init_gate(config, names, never_restarted);
    match &spec.init_containers {
        None => vec![add(ptr(&["spec", "initContainers"]), json!([gate]))],
        Some(_) => vec![add(ptr(&["spec", "initContainers", "0"]), gate)],
    }
}

/// Operations injecting `singleton`'s gate into `pod`, or why the pod must be denied: one
/// pure function per concern, concatenated in a fixed order.
pub fn inject(
    pod: &Pod,
    singleton: &StatefulSingleton,
    config: &Config<'_>,
) -> Result<Vec<PatchOperation>, String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(vec![]);
    };
    let name = singleton.metadata.name.clone().unwrap_or_default();
    if let Some(why) = injection_obstacle(config) {
        return Err(format!(
            "StatefulSingleton {name:?} cannot gate this pod: {why}"
        ));
    }
    let gate = choose_gate(pod, singleton.spec.start_gate)
        .map_err(|why| format!("StatefulSingleton {name:?} cannot gate this pod: {why}"))?;
    let names = VolumeNames::for_pod(spec);
    let mut ops = metadata_ops(pod, &name, gate);
    ops.extend(readiness_gate_ops(spec));
    ops.extend(grace_period_ops(spec, singleton));
    ops.extend(anti_affinity_ops(spec, &name));
    ops.extend(volume_ops(spec, gate, &names));
    ops.extend(match gate {
        Gate::Wrapper => wrapper_gate_ops(spec, config, &names, never_restarted(pod)),
        Gate::InitContainer => init_gate_ops(spec, config, &names, never_restarted(pod)),
    });
    Ok(ops)
}

/// The StatefulSingleton feature's mutator: the patch, or why the pod is denied.
pub fn mutate(pod: &Pod, config: &Config<'_>) -> Result<Vec<PatchOperation>, String> {
    if already_injected(pod) {
        return Ok(vec![]);
    }
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    match owning_singleton(&config.singletons, &labels) {
        Some(s) => inject(pod, s, config),
        None => Ok(vec![]),
    }
}
