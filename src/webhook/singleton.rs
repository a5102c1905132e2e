//! StatefulSingleton injection: a pure mutator from a pod being created to JSON-patch
//! operations. Idempotent (an injected pod is left alone), never used on UPDATE.
//!
//! Invariant: the patched pod is valid whatever the pod already holds. Volume names are
//! ours to choose, so a taken one gets a free `-N` suffix; mount paths and container
//! names are part of the documented layout (and how an injected pod is recognised), so a
//! clash there moves to the other gate, and when neither gate fits the pod is denied
//! with a message naming the clash. The signal directory belongs to both gates: every
//! app container mounts the signal volume read-only at [`SIGNAL_DIR`] (the wrapper waits
//! there; on the init gate the app reads its epoch file there, written by the init gate
//! before it exits), so an app container that already mounts that path fits neither.
//!
//! On the init gate the app containers are left as they are but for that one added
//! read-only mount.
//!
//! The operations are written straight to JSON text ([`Patch`]): every value is a struct
//! borrowing from the pod and the settings, with its fields in sorted order, so the text is
//! the same as that of the `serde_json::Value`s this module built before (the tests in
//! `tests/patch_equivalence.rs` keep that one as the reference).
//!
//! The agent container (status sidecar or init gate) is most of a patch and the same for
//! every pod whose volumes carry our names: its text is serialized once per injection
//! settings ([`AgentTexts`], keyed by the whole [`Injection`], rebuilt when it changes)
//! and copied into each patch. Invariant: a cached text is byte for byte what serializing
//! [`sidecar`] / [`init_gate`] for the same settings and names writes; pods with other
//! volume names get the container serialized afresh.
use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use serde::Serialize;

use super::config::{Config, Injection};
use super::patch::Patch;
use crate::api::singleton::{
    owning_singleton, StartGate, StatefulSingleton, EPOCH_FILE, GATE_ANNOTATION, MANAGED_LABEL,
    READY_CONDITION, SIGNAL_DIR, SIGNAL_FILE, SINGLETON_LABEL, TOKEN_AUDIENCE, TOKEN_DIR,
    WRAPPER_CONFIGMAP, WRAPPER_DIR, WRAPPER_SCRIPT_NAME,
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
pub fn container_named(spec: &PodSpec, name: &str) -> bool {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == name)
}

pub fn same_path(a: &str, b: &str) -> bool {
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

/// An app container that already mounts the signal directory, which both gates mount.
fn signal_dir_taken(spec: &PodSpec) -> Option<String> {
    spec.containers.iter().find_map(|c| {
        c.volume_mounts
            .iter()
            .flatten()
            .find(|m| same_path(&m.mount_path, SIGNAL_DIR))
            .map(|m| format!("container {:?} already mounts {:?}", c.name, m.mount_path))
    })
}

/// `auto`: wrapper when every app container has a command (the ENTRYPOINT of an image is
/// unknown at admission) and nothing in the pod takes the wrapper's paths or sidecar name,
/// else the init gate. `wrapper` falls back to the init gate for the same reasons rather
/// than guessing an entrypoint or clashing. The init gate does not fit a pod that already
/// names a container `singleton-gate` or mounts something at the signal directory. An
/// error names why no gate fits.
pub fn choose_gate(pod: &Pod, wanted: StartGate) -> Result<Gate, String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Gate::InitContainer);
    };
    let wrapper = match wanted {
        StartGate::InitContainer => Some("startGate is initContainer".to_string()),
        StartGate::Auto | StartGate::Wrapper => wrapper_obstacle(spec),
    };
    let Some(wrapper) = wrapper else {
        return Ok(Gate::Wrapper);
    };
    if container_named(spec, INIT_GATE_NAME) {
        return Err(format!(
            "a container is already named {INIT_GATE_NAME:?}, the name of the init gate, and the wrapper gate cannot be used ({wrapper}); rename that container"
        ));
    }
    if let Some(taken) = signal_dir_taken(spec) {
        return Err(format!(
            "{taken}, where either gate mounts its signal volume (the init gate hands the app its epoch file there), and the wrapper gate cannot be used ({wrapper}); mount that volume elsewhere"
        ));
    }
    Ok(Gate::InitContainer)
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

/// Is this pod already injected (a reinvocation, or created from an injected spec)?
/// Decided from the injected containers only: a pod that merely carries the gate
/// annotation is injected like any other.
pub fn already_injected(pod: &Pod) -> bool {
    crate::api::singleton::carries_gate(pod)
}

/// `{"fieldRef": {"fieldPath": ...}}`
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FieldRef<'a> {
    field_ref: FieldPath<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FieldPath<'a> {
    field_path: &'a str,
}

/// One entry of a container's `env` (fields in sorted order).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvVar<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_from: Option<FieldRef<'a>>,
}

impl<'a> EnvVar<'a> {
    fn value(name: &'a str, value: &'a str) -> Self {
        EnvVar {
            name,
            value: Some(value),
            value_from: None,
        }
    }
    fn field(name: &'a str, field_path: &'a str) -> Self {
        EnvVar {
            name,
            value: None,
            value_from: Some(FieldRef {
                field_ref: FieldPath { field_path },
            }),
        }
    }
}

fn agent_env<'a>(config: &'a Config<'_>, never_restarted: bool) -> Vec<EnvVar<'a>> {
    // Only what the agent reads: every byte here is in every injected pod's admission answer
    // (the token file is the agent's default, `TOKEN_FILE`, where `token_mount` puts it).
    let mut env = vec![
        EnvVar::value("KUBE_STANDBY_OPERATOR_URL", &config.injection.operator_url),
        EnvVar::value("KUBE_STANDBY_CA", &config.injection.agent_ca),
        EnvVar::field("POD_UID", "metadata.uid"),
    ];
    // A container that is never restarted must not give up on an unreachable operator.
    if never_restarted {
        env.push(EnvVar::value("KUBE_STANDBY_GIVE_UP_SECONDS", "0"));
    }
    env
}

/// Is the pod's agent never restarted after it exits (`restartPolicy: Never`)?
pub fn never_restarted(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("Never")
}

/// Why the agent could not work with this injection, if so: it must trust the operator.
pub fn injection_obstacle(config: &Config<'_>) -> Option<String> {
    let ca = &config.injection.agent_ca;
    let usable = if crate::tls::pin::is_pin_list(ca) {
        crate::tls::pin::is_valid_pin_list(ca)
    } else {
        ca.contains("-----BEGIN CERTIFICATE-----")
    };
    if !usable {
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

/// One entry of a container's `volumeMounts`.
#[derive(Serialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount<'a> {
    pub mount_path: &'a str,
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

fn token_mount(names: &VolumeNames) -> VolumeMount<'_> {
    VolumeMount {
        mount_path: TOKEN_DIR,
        name: &names.token,
        read_only: Some(true),
    }
}

#[derive(Serialize)]
struct CpuMemory {
    cpu: &'static str,
    memory: &'static str,
}

#[derive(Serialize)]
struct Resources {
    limits: CpuMemory,
    requests: CpuMemory,
}

const AGENT_RESOURCES: Resources = Resources {
    limits: CpuMemory {
        cpu: "20m",
        memory: "64Mi",
    },
    requests: CpuMemory {
        cpu: "10m",
        memory: "32Mi",
    },
};

#[derive(Serialize)]
struct Capabilities {
    drop: [&'static str; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SecurityContext {
    allow_privilege_escalation: bool,
    capabilities: Capabilities,
    read_only_root_filesystem: bool,
    run_as_non_root: bool,
    run_as_user: i64,
}

const AGENT_SECURITY: SecurityContext = SecurityContext {
    allow_privilege_escalation: false,
    capabilities: Capabilities { drop: ["ALL"] },
    read_only_root_filesystem: true,
    run_as_non_root: true,
    run_as_user: 65532,
};

/// The agent's container (the status sidecar or the init gate), fields in sorted order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentContainer<'a> {
    args: &'static [&'static str],
    env: Vec<EnvVar<'a>>,
    image: &'a str,
    name: &'static str,
    resources: &'static Resources,
    security_context: &'static SecurityContext,
    /// The agent's one-line fatal error becomes the container status' message.
    termination_message_policy: &'static str,
    volume_mounts: Vec<VolumeMount<'a>>,
}

/// An agent container with the env, resources and security of the singleton's agents
/// (the claim agent uses it).
pub fn agent_container<'a>(
    config: &'a Config<'_>,
    name: &'static str,
    args: &'static [&'static str],
    volume_mounts: Vec<VolumeMount<'a>>,
    never_restarted: bool,
) -> AgentContainer<'a> {
    AgentContainer {
        args,
        env: agent_env(config, never_restarted),
        image: &config.injection.agent_image,
        name,
        resources: &AGENT_RESOURCES,
        security_context: &AGENT_SECURITY,
        termination_message_policy: "FallbackToLogsOnError",
        volume_mounts,
    }
}

/// The status sidecar: obtains the release and writes the signal file atomically.
pub fn sidecar<'a>(
    config: &'a Config<'_>,
    names: &'a VolumeNames,
    never_restarted: bool,
) -> AgentContainer<'a> {
    AgentContainer {
        args: &["agent", "--signal-file", SIGNAL_FILE],
        env: agent_env(config, never_restarted),
        image: &config.injection.agent_image,
        name: SIDECAR_NAME,
        resources: &AGENT_RESOURCES,
        security_context: &AGENT_SECURITY,
        termination_message_policy: "FallbackToLogsOnError",
        volume_mounts: vec![
            VolumeMount {
                mount_path: SIGNAL_DIR,
                name: &names.signal,
                read_only: None,
            },
            token_mount(names),
        ],
    }
}

/// The init gate: writes the release's epoch to [`EPOCH_FILE`] in the signal volume
/// (`KUBE_STANDBY_EPOCH_FILE`), then exits 0 once the pod is released.
pub fn init_gate<'a>(
    config: &'a Config<'_>,
    names: &'a VolumeNames,
    never_restarted: bool,
) -> AgentContainer<'a> {
    let mut env = agent_env(config, never_restarted);
    env.push(EnvVar::value("KUBE_STANDBY_EPOCH_FILE", EPOCH_FILE));
    AgentContainer {
        args: &["agent", "--once"],
        env,
        image: &config.injection.agent_image,
        name: INIT_GATE_NAME,
        resources: &AGENT_RESOURCES,
        security_context: &AGENT_SECURITY,
        termination_message_policy: "FallbackToLogsOnError",
        volume_mounts: vec![
            VolumeMount {
                mount_path: SIGNAL_DIR,
                name: &names.signal,
                read_only: None,
            },
            token_mount(names),
        ],
    }
}

/// The agent containers' JSON text for one [`Injection`], with the volume names ours
/// ([`VolumeNames`] of a pod without volumes).
pub struct AgentTexts {
    injection: Injection,
    /// `[sidecar, init gate][never restarted as index]`.
    texts: [[Vec<u8>; 2]; 2],
}

/// The texts of the last injection settings used (one set in a running webhook).
static AGENT_TEXTS: ArcSwapOption<AgentTexts> = ArcSwapOption::const_empty();

impl AgentTexts {
    /// The names the cached texts use.
    fn names() -> VolumeNames {
        VolumeNames {
            token: TOKEN_VOLUME.to_string(),
            wrapper: WRAPPER_VOLUME.to_string(),
            signal: SIGNAL_VOLUME.to_string(),
        }
    }

    /// Serialize the four containers for `injection`.
    pub fn build(injection: &Injection) -> Result<Self, serde_json::Error> {
        let config = Config {
            singletons: vec![],
            injection,
        };
        let names = Self::names();
        let text = |gate: Gate, never: bool| match gate {
            Gate::Wrapper => serde_json::to_vec(&sidecar(&config, &names, never)),
            Gate::InitContainer => serde_json::to_vec(&init_gate(&config, &names, never)),
        };
        Ok(AgentTexts {
            injection: injection.clone(),
            texts: [
                [text(Gate::Wrapper, false)?, text(Gate::Wrapper, true)?],
                [
                    text(Gate::InitContainer, false)?,
                    text(Gate::InitContainer, true)?,
                ],
            ],
        })
    }

    /// The texts for `config`'s settings when `names` are the ones they use; built (and
    /// kept) on first use of these settings. `None`: serialize the container afresh.
    pub fn for_pod(config: &Config<'_>, names: &VolumeNames) -> Option<Arc<AgentTexts>> {
        if names.token != TOKEN_VOLUME || names.signal != SIGNAL_VOLUME {
            return None;
        }
        if let Some(t) = AGENT_TEXTS.load_full() {
            if t.injection == *config.injection {
                return Some(t);
            }
        }
        let built = Arc::new(AgentTexts::build(config.injection).ok()?);
        AGENT_TEXTS.store(Some(built.clone()));
        Some(built)
    }

    /// The agent container of `gate` as JSON text.
    pub fn text(&self, gate: Gate, never_restarted: bool) -> &[u8] {
        let g = match gate {
            Gate::Wrapper => 0,
            Gate::InitContainer => 1,
        };
        &self.texts[g][usize::from(never_restarted)]
    }
}

/// The container's command behind the wrapper (its args stay exactly as they are).
fn wrapped_command<'a>(wrapper: &'a str, c: &'a Container) -> Vec<&'a str> {
    let mut cmd = vec![wrapper, "--"];
    cmd.extend(c.command.iter().flatten().map(String::as_str));
    cmd
}

/// Add `items` to the list at `path`: the whole list when the pod has none (`exists` is
/// false), else each item appended (`-`).
pub fn append<T: Serialize>(patch: &mut Patch, exists: bool, path: &[&str], items: &[T]) {
    if !exists {
        patch.add(path, items);
        return;
    }
    let mut end = path.to_vec();
    end.push("-");
    for item in items {
        patch.add(&end, item);
    }
}

/// Set `entries` in the string map at `path`: the whole map when the pod has none, else
/// each key on its own (keys contain '/', escaped in the pointer).
fn put_entries(patch: &mut Patch, exists: bool, path: &[&str], entries: &[(&str, &str)]) {
    if !exists {
        let map: BTreeMap<&str, &str> = entries.iter().copied().collect();
        patch.add(path, &map);
        return;
    }
    for (k, v) in entries {
        let mut at = path.to_vec();
        at.push(k);
        patch.add(&at, v);
    }
}

/// The managed and singleton labels, and the gate annotation.
fn metadata_ops(patch: &mut Patch, pod: &Pod, singleton: &str, gate: Gate) {
    let meta = &pod.metadata;
    put_entries(
        patch,
        meta.labels.is_some(),
        &["metadata", "labels"],
        &[(MANAGED_LABEL, "true"), (SINGLETON_LABEL, singleton)],
    );
    put_entries(
        patch,
        meta.annotations.is_some(),
        &["metadata", "annotations"],
        &[(GATE_ANNOTATION, gate.as_str())],
    );
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReadinessGate {
    condition_type: &'static str,
}

/// The singleton's readiness gate, unless the pod already lists it.
fn readiness_gate_ops(patch: &mut Patch, spec: &PodSpec) {
    let gates = spec.readiness_gates.as_ref();
    if gates.is_some_and(|g| g.iter().any(|g| g.condition_type == READY_CONDITION)) {
        return;
    }
    let entry = ReadinessGate {
        condition_type: READY_CONDITION,
    };
    append(
        patch,
        gates.is_some(),
        &["spec", "readinessGates"],
        &[entry],
    );
}

/// Grace period: the singleton's, or the pod's own when longer and respected.
fn grace_period_ops(patch: &mut Patch, spec: &PodSpec, singleton: &StatefulSingleton) {
    let own = spec.termination_grace_period_seconds;
    let wanted = &singleton.spec;
    let grace = match own {
        Some(o) if wanted.respect_pod_grace_period && o > wanted.termination_grace_period => o,
        _ => wanted.termination_grace_period,
    };
    if own == Some(grace) {
        return;
    }
    patch.add(&["spec", "terminationGracePeriodSeconds"], &grace);
}

const PREFERRED: &str = "preferredDuringSchedulingIgnoredDuringExecution";

/// A map of one entry.
struct OneEntry<'a>(&'static str, &'a str);

impl Serialize for OneEntry<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(self.0, self.1)?;
        m.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LabelSelector<'a> {
    match_labels: OneEntry<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodAffinityTerm<'a> {
    label_selector: LabelSelector<'a>,
    topology_key: &'static str,
}

/// A preferred anti-affinity term, fields in sorted order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WeightedTerm<'a> {
    pod_affinity_term: PodAffinityTerm<'a>,
    weight: i32,
}

/// `{"preferredDuringSchedulingIgnoredDuringExecution": [term]}`
#[derive(Serialize)]
struct Preferred<'a> {
    #[serde(rename = "preferredDuringSchedulingIgnoredDuringExecution")]
    preferred: [WeightedTerm<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AntiAffinity<'a> {
    pod_anti_affinity: Preferred<'a>,
}

/// Preferred anti-affinity against this singleton's pods only, merged into what exists.
fn anti_affinity_ops(patch: &mut Patch, spec: &PodSpec, singleton: &str) {
    let term = WeightedTerm {
        pod_affinity_term: PodAffinityTerm {
            label_selector: LabelSelector {
                match_labels: OneEntry(SINGLETON_LABEL, singleton),
            },
            topology_key: "kubernetes.io/hostname",
        },
        weight: 100,
    };
    let Some(affinity) = &spec.affinity else {
        let value = AntiAffinity {
            pod_anti_affinity: Preferred { preferred: [term] },
        };
        patch.add(&["spec", "affinity"], &value);
        return;
    };
    let Some(anti) = &affinity.pod_anti_affinity else {
        let value = Preferred { preferred: [term] };
        patch.add(&["spec", "affinity", "podAntiAffinity"], &value);
        return;
    };
    let exists = anti
        .preferred_during_scheduling_ignored_during_execution
        .is_some();
    append(
        patch,
        exists,
        &["spec", "affinity", "podAntiAffinity", PREFERRED],
        &[term],
    );
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenSource {
    audience: &'static str,
    expiration_seconds: i64,
    path: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProjectedSource {
    service_account_token: TokenSource,
}

#[derive(Serialize)]
struct Projected {
    sources: [ProjectedSource; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigMapSource {
    default_mode: i32,
    name: &'static str,
}

#[derive(Serialize)]
struct Empty {}

/// One of the volumes the injection adds, fields in sorted order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Volume<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    config_map: Option<ConfigMapSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    empty_dir: Option<Empty>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    projected: Option<Projected>,
}

/// The token's file in the token volume: mounted at [`TOKEN_DIR`], it is the agent's default
/// `--token-file` ([`crate::api::singleton::TOKEN_FILE`]), so the agent needs no env for it.
const TOKEN_PATH: &str = "token";

/// Volumes: the agent's projected token; the wrapper script for the wrapper gate; the
/// signal dir for both.
fn volume_ops(patch: &mut Patch, spec: &PodSpec, gate: Gate, names: &VolumeNames) {
    let mut volumes = vec![Volume {
        config_map: None,
        empty_dir: None,
        name: &names.token,
        projected: Some(Projected {
            sources: [ProjectedSource {
                service_account_token: TokenSource {
                    audience: TOKEN_AUDIENCE,
                    expiration_seconds: 3600,
                    path: TOKEN_PATH,
                },
            }],
        }),
    }];
    if gate == Gate::Wrapper {
        volumes.push(Volume {
            config_map: Some(ConfigMapSource {
                default_mode: 0o755,
                name: WRAPPER_CONFIGMAP,
            }),
            empty_dir: None,
            name: &names.wrapper,
            projected: None,
        });
    }
    volumes.push(Volume {
        config_map: None,
        empty_dir: Some(Empty {}),
        name: &names.signal,
        projected: None,
    });
    append(
        patch,
        spec.volumes.is_some(),
        &["spec", "volumes"],
        &volumes,
    );
}

/// The wrapper gate: every app container's command wrapped (args stay exactly as they
/// are) with the wrapper and signal mounts, then the status sidecar.
fn wrapper_gate_ops(
    patch: &mut Patch,
    spec: &PodSpec,
    config: &Config<'_>,
    names: &VolumeNames,
    never_restarted: bool,
) {
    let mounts = [
        VolumeMount {
            mount_path: WRAPPER_DIR,
            name: &names.wrapper,
            read_only: Some(true),
        },
        VolumeMount {
            mount_path: SIGNAL_DIR,
            name: &names.signal,
            read_only: Some(true),
        },
    ];
    let wrapper = format!("{WRAPPER_DIR}/{WRAPPER_SCRIPT_NAME}");
    for (i, c) in spec.containers.iter().enumerate() {
        let idx = i.to_string();
        patch.add(
            &["spec", "containers", &idx, "command"],
            &wrapped_command(&wrapper, c),
        );
        append(
            patch,
            c.volume_mounts.is_some(),
            &["spec", "containers", &idx, "volumeMounts"],
            &mounts,
        );
    }
    let at = ["spec", "containers", "-"];
    match AgentTexts::for_pod(config, names) {
        Some(t) => patch.add_json(&at, &[t.text(Gate::Wrapper, never_restarted)]),
        None => patch.add(&at, &sidecar(config, names, never_restarted)),
    }
}

/// The init gate: the signal volume mounted read-only into every app container (to read
/// the epoch file), and the gate first among the init containers so none runs before the
/// release.
fn init_gate_ops(
    patch: &mut Patch,
    spec: &PodSpec,
    config: &Config<'_>,
    names: &VolumeNames,
    never_restarted: bool,
) {
    let mount = [VolumeMount {
        mount_path: SIGNAL_DIR,
        name: &names.signal,
        read_only: Some(true),
    }];
    for (i, c) in spec.containers.iter().enumerate() {
        let idx = i.to_string();
        append(
            patch,
            c.volume_mounts.is_some(),
            &["spec", "containers", &idx, "volumeMounts"],
            &mount,
        );
    }
    let first = spec.init_containers.is_some();
    match AgentTexts::for_pod(config, names) {
        Some(t) => {
            let text = t.text(Gate::InitContainer, never_restarted);
            match first {
                false => patch.add_json(&["spec", "initContainers"], &[b"[", text, b"]"]),
                true => patch.add_json(&["spec", "initContainers", "0"], &[text]),
            }
        }
        None => {
            let gate = init_gate(config, names, never_restarted);
            match first {
                false => patch.add(&["spec", "initContainers"], &[gate]),
                true => patch.add(&["spec", "initContainers", "0"], &gate),
            }
        }
    }
}

/// Operations injecting `singleton`'s gate into `pod`, or why the pod must be denied: one
/// pure function per concern, written in a fixed order.
pub fn inject(
    pod: &Pod,
    singleton: &StatefulSingleton,
    config: &Config<'_>,
) -> Result<Patch, String> {
    let mut patch = Patch::with_capacity(4096);
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(patch);
    };
    let name = singleton.metadata.name.as_deref().unwrap_or_default();
    if let Some(why) = injection_obstacle(config) {
        return Err(format!(
            "StatefulSingleton {name:?} cannot gate this pod: {why}"
        ));
    }
    let gate = choose_gate(pod, singleton.spec.start_gate)
        .map_err(|why| format!("StatefulSingleton {name:?} cannot gate this pod: {why}"))?;
    let names = VolumeNames::for_pod(spec);
    metadata_ops(&mut patch, pod, name, gate);
    readiness_gate_ops(&mut patch, spec);
    grace_period_ops(&mut patch, spec, singleton);
    anti_affinity_ops(&mut patch, spec, name);
    volume_ops(&mut patch, spec, gate, &names);
    match gate {
        Gate::Wrapper => wrapper_gate_ops(&mut patch, spec, config, &names, never_restarted(pod)),
        Gate::InitContainer => {
            init_gate_ops(&mut patch, spec, config, &names, never_restarted(pod))
        }
    }
    Ok(patch)
}

/// The StatefulSingleton feature's mutator: the patch, or why the pod is denied.
pub fn mutate(pod: &Pod, config: &Config<'_>) -> Result<Patch, String> {
    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
    // A pool pod is never a singleton instance (the singleton controller does not watch
    // pool pods, so a gated one would never be released).
    if already_injected(pod) || crate::api::is_pool_pod(pod) {
        return Ok(Patch::default());
    }
    let labels = pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
    match owning_singleton(&config.singletons, labels) {
        Some(s) => inject(pod, s, config),
        None => Ok(Patch::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_agents_default_token_file_is_where_the_token_volume_puts_it() {
        assert_eq!(
            format!("{TOKEN_DIR}/{TOKEN_PATH}"),
            crate::api::singleton::TOKEN_FILE
        );
    }

    fn injection(image: &str, url: &str, ca: &str) -> Injection {
        Injection {
            agent_image: image.into(),
            operator_url: url.into(),
            agent_ca: ca.into(),
        }
    }

    /// What serializing the container afresh writes.
    fn fresh(injection: &Injection, gate: Gate, never: bool) -> Vec<u8> {
        let config = Config {
            singletons: vec![],
            injection,
        };
        let names = AgentTexts::names();
        match gate {
            Gate::Wrapper => serde_json::to_vec(&sidecar(&config, &names, never)).unwrap(),
            Gate::InitContainer => serde_json::to_vec(&init_gate(&config, &names, never)).unwrap(),
        }
    }

    fn assert_texts_fresh(inj: &Injection, texts: &AgentTexts) {
        for gate in [Gate::Wrapper, Gate::InitContainer] {
            for never in [false, true] {
                assert_eq!(
                    texts.text(gate, never),
                    fresh(inj, gate, never),
                    "{gate:?} never_restarted={never}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn cached_agent_texts_are_the_containers_serialized_afresh(
            image in any::<String>(), url in any::<String>(), ca in any::<String>(),
        ) {
            let inj = injection(&image, &url, &ca);
            assert_texts_fresh(&inj, &AgentTexts::build(&inj).unwrap());
        }
    }

    #[test]
    fn the_cache_follows_the_settings_and_only_serves_our_volume_names() {
        let a = injection("img:a", "https://a", "-----BEGIN CERTIFICATE-----\nA\n");
        let b = injection("img:b", "https://a", "-----BEGIN CERTIFICATE-----\nA\n");
        for inj in [&a, &b, &a, &b] {
            let config = Config {
                singletons: vec![],
                injection: inj,
            };
            let texts = AgentTexts::for_pod(&config, &AgentTexts::names()).unwrap();
            assert_texts_fresh(inj, &texts);
        }
        let config = Config {
            singletons: vec![],
            injection: &a,
        };
        let mut names = AgentTexts::names();
        names.signal = format!("{SIGNAL_VOLUME}-2");
        assert!(AgentTexts::for_pod(&config, &names).is_none());
        let mut names = AgentTexts::names();
        names.token = format!("{TOKEN_VOLUME}-2");
        assert!(AgentTexts::for_pod(&config, &names).is_none());
        // The wrapper volume is not in the agent containers: its name does not matter.
        let mut names = AgentTexts::names();
        names.wrapper = format!("{WRAPPER_VOLUME}-2");
        assert!(AgentTexts::for_pod(&config, &names).is_some());
    }
}
