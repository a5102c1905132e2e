//! Pure builders of everything an AsyncActor owns: the workload (Deployment, StatefulSet or
//! Job) with the injected sidecar, the headless Service of a StatefulSet, the KEDA
//! ScaledObject / ScaledJob and TriggerAuthentication, and the runtime ConfigMap. No I/O.
//!
//! Invariants:
//! - every object is named after the actor, lives in its namespace, carries the label
//!   `asya.io/actor=<name>` and a controller ownerReference to the actor (the runtime
//!   ConfigMap, shared by a namespace's actors, carries only our managed-by label);
//! - the sidecar is a container named `sidecar`, first in `containers` (or, for a Job on a
//!   cluster with native sidecars, first in `initContainers` with `restartPolicy: Always`);
//!   the user's containers are otherwise untouched except the runtime container's socket
//!   and runtime mounts and its `ASYA_SOCKET_PATH`;
//! - no object holds a password: the RabbitMQ password reaches the sidecar through
//!   `valueFrom.secretKeyRef` and KEDA through a `secretTargetRef` naming the user's Secret;
//! - every object carries `asya.io/spec-hash`, the hash of its own body, so an unchanged
//!   object is never written again.
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    PersistentVolumeClaim, PodTemplateSpec, SecretKeySelector, Service, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::ApiResource;
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api::asya::{AsyncActor, TransportType, WorkloadType};

/// On every object we create, and on the actor's pods: the actor's name.
pub const ACTOR_LABEL: &str = "asya.io/actor";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Hash of the body we applied, to skip writes of an unchanged object.
pub const SPEC_HASH: &str = "asya.io/spec-hash";
/// On a Job: hash of its (immutable) pod template; a different one replaces the Job.
pub const TEMPLATE_HASH: &str = "asya.io/template-hash";
/// On the runtime ConfigMap and the pod template: sha256 of the runtime file.
pub const RUNTIME_HASH: &str = "asya.io/runtime-sha256";
pub const RUNTIME_CONFIGMAP: &str = "asya-runtime";
pub const RUNTIME_KEY: &str = "asya_runtime.py";
pub const RUNTIME_MOUNT: &str = "/opt/asya/asya_runtime.py";
pub const SIDECAR: &str = "sidecar";
pub const SOCKET_VOLUME: &str = "asya-socket";
pub const RUNTIME_VOLUME: &str = "asya-runtime";
pub const DEFAULT_SOCKET: &str = "/tmp/sockets/app.sock";
/// Messages per replica when `scaling.queueLength` is not set (KEDA's SQS default).
pub const DEFAULT_QUEUE_LENGTH: i32 = 5;
pub const KEDA_API_VERSION: &str = "keda.sh/v1alpha1";
/// Env var names the sidecar reads.
pub const ENV_RABBITMQ_USERNAME: &str = "ASYA_RABBITMQ_USERNAME";
pub const ENV_RABBITMQ_PASSWORD: &str = "ASYA_RABBITMQ_PASSWORD";
pub const ENV_SOCKET_PATH: &str = "ASYA_SOCKET_PATH";

/// What the operator itself contributes to every actor.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildConfig {
    /// Sidecar image when the actor names none (`--actor-sidecar-image`).
    pub sidecar_image: String,
    /// sha256 of the runtime file, when the operator has one (`--actor-runtime-file`).
    pub runtime_hash: Option<String>,
    /// The cluster runs native sidecars (init containers with `restartPolicy: Always`).
    pub native_sidecar: bool,
}

/// Every kind of object an actor owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Kind {
    Deployment,
    StatefulSet,
    Job,
    Service,
    ScaledObject,
    ScaledJob,
    TriggerAuthentication,
    ConfigMap,
}

impl Kind {
    pub fn api_resource(self) -> ApiResource {
        let (group, version, kind, plural) = match self {
            Kind::Deployment => ("apps", "v1", "Deployment", "deployments"),
            Kind::StatefulSet => ("apps", "v1", "StatefulSet", "statefulsets"),
            Kind::Job => ("batch", "v1", "Job", "jobs"),
            Kind::Service => ("", "v1", "Service", "services"),
            Kind::ScaledObject => ("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects"),
            Kind::ScaledJob => ("keda.sh", "v1alpha1", "ScaledJob", "scaledjobs"),
            Kind::TriggerAuthentication => (
                "keda.sh",
                "v1alpha1",
                "TriggerAuthentication",
                "triggerauthentications",
            ),
            Kind::ConfigMap => ("", "v1", "ConfigMap", "configmaps"),
        };
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() {
                version.into()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.into(),
            plural: plural.into(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::Job => "Job",
            Kind::Service => "Service",
            Kind::ScaledObject => "ScaledObject",
            Kind::ScaledJob => "ScaledJob",
            Kind::TriggerAuthentication => "TriggerAuthentication",
            Kind::ConfigMap => "ConfigMap",
        }
    }

    /// The CRD that must be served for this kind (KEDA kinds only).
    pub fn crd(self) -> Option<&'static str> {
        match self {
            Kind::ScaledObject => Some("scaledobjects.keda.sh"),
            Kind::ScaledJob => Some("scaledjobs.keda.sh"),
            Kind::TriggerAuthentication => Some("triggerauthentications.keda.sh"),
            _ => None,
        }
    }

    pub fn of(t: WorkloadType) -> Kind {
        match t {
            WorkloadType::Deployment => Kind::Deployment,
            WorkloadType::StatefulSet => Kind::StatefulSet,
            WorkloadType::Job => Kind::Job,
        }
    }
}

/// The KEDA CRD names, in a stable order.
pub const KEDA_CRDS: [&str; 3] = [
    "scaledobjects.keda.sh",
    "scaledjobs.keda.sh",
    "triggerauthentications.keda.sh",
];

/// Problems that stop the workload from being built (the spec as a whole is unusable).
pub fn validate(actor: &AsyncActor) -> Vec<String> {
    let mut e = vec![];
    let name = actor.name_any();
    // The name is a label value (63 characters) and, for a StatefulSet, a Service name.
    if name.len() > 63 {
        e.push(format!(
            "metadata.name must be at most 63 characters (it becomes the {ACTOR_LABEL} label), got {}",
            name.len()
        ));
    }
    if actor.spec.workload.type_ == WorkloadType::StatefulSet && !dns1035_label(&name) {
        e.push(format!(
            "a StatefulSet actor's name must be a DNS-1035 label (its headless Service is named after it): {name:?}"
        ));
    }
    if actor.spec.queue_name.trim().is_empty() {
        e.push("queueName must not be empty".into());
    }
    if let Err(err) = socket_dir(actor) {
        e.push(err);
    }
    if let Some(t) = &actor.spec.timeout {
        for (field, v) in [
            ("processing", t.processing),
            ("gracefulShutdown", t.graceful_shutdown),
        ] {
            if v.is_some_and(|v| v < 0) {
                e.push(format!("timeout.{field} must be >= 0"));
            }
        }
    }
    if let Err(err) = volume_claim_templates(actor) {
        e.push(err);
    }
    if actor.spec.workload.replicas.is_some_and(|r| r < 0) {
        e.push("workload.replicas must be >= 0".into());
    }
    e
}

fn dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Problems of `scaling` (only read when it is enabled).
pub fn scaling_problems(actor: &AsyncActor) -> Vec<String> {
    let Some(s) = &actor.spec.scaling else {
        return vec![];
    };
    let mut e = vec![];
    let mut at_least = |field: &str, v: Option<i32>, min: i32| {
        if let Some(v) = v.filter(|v| *v < min) {
            e.push(format!("scaling.{field} must be >= {min}, got {v}"));
        }
    };
    at_least("minReplicas", s.min_replicas, 0);
    at_least("maxReplicas", s.max_replicas, 1);
    at_least("pollingInterval", s.polling_interval, 1);
    at_least("cooldownPeriod", s.cooldown_period, 0);
    at_least("queueLength", s.queue_length, 1);
    // KEDA's own rule: minReplicaCount <= maxReplicaCount (100 when unset).
    let max = s.max_replicas.unwrap_or(100);
    if let Some(min) = s.min_replicas.filter(|m| *m > max) {
        e.push(format!(
            "scaling.minReplicas ({min}) is greater than maxReplicas ({max})"
        ));
    }
    if let Some(p) = s
        .busy_probe
        .as_ref()
        .filter(|p| p.mode == crate::api::probe::BusyMode::Http)
    {
        e.extend(
            p.http
                .problems()
                .into_iter()
                .map(|m| m.replace("busyProbe.", "scaling.busyProbe.")),
        );
    }
    e
}

/// The transport block its type needs, when it is missing.
pub fn transport_gap(actor: &AsyncActor) -> Option<String> {
    let t = &actor.spec.transport;
    match t.type_ {
        TransportType::Sqs if t.sqs.is_none() => Some(
            "transport.type is sqs but transport.sqs is missing: the sidecar gets no region or queue URL (it uses its own defaults) and no KEDA trigger can be built".into(),
        ),
        TransportType::Rabbitmq if t.rabbitmq.is_none() => Some(
            "transport.type is rabbitmq but transport.rabbitmq is missing: the sidecar gets no host or credentials (it uses its own defaults) and no KEDA trigger can be built".into(),
        ),
        _ => None,
    }
}

/// The directory holding the socket (shared emptyDir), from `socket.path`.
pub fn socket_dir(actor: &AsyncActor) -> Result<String, String> {
    let path = socket_path(actor);
    let dir = path
        .rsplit_once('/')
        .map(|(d, _)| d)
        .filter(|d| path.starts_with('/') && !d.is_empty() && !path.ends_with('/'));
    dir.map(str::to_string).ok_or_else(|| {
        format!("socket.path must be an absolute file path below a directory, got {path:?}")
    })
}

pub fn socket_path(actor: &AsyncActor) -> String {
    actor
        .spec
        .socket
        .as_ref()
        .and_then(|s| s.path.clone())
        .unwrap_or_else(|| DEFAULT_SOCKET.to_string())
}

/// A 16-hex-digit sha256 prefix of `v`'s JSON.
pub fn hash_of<T: serde::Serialize>(v: &T) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(v).unwrap_or_default());
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Metadata of an object the actor owns.
fn owned_meta(actor: &AsyncActor) -> ObjectMeta {
    ObjectMeta {
        name: Some(actor.name_any()),
        namespace: actor.namespace(),
        labels: Some(BTreeMap::from([
            (ACTOR_LABEL.to_string(), actor.name_any()),
            (MANAGED_BY.to_string(), crate::MANAGER.to_string()),
        ])),
        owner_references: actor.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

fn selector(actor: &AsyncActor) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            ACTOR_LABEL.to_string(),
            actor.name_any(),
        )])),
        ..Default::default()
    }
}

fn env(name: &str, value: impl ToString) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.to_string()),
        value_from: None,
    }
}

/// The sidecar's environment: queue, transport, socket and timeouts, then the actor's
/// `sidecar.env` (an entry with one of our names replaces ours in place).
pub fn sidecar_env(actor: &AsyncActor) -> Vec<EnvVar> {
    let s = &actor.spec;
    let mut v = vec![
        env("ASYA_QUEUE_NAME", &s.queue_name),
        env(
            "ASYA_TRANSPORT",
            match s.transport.type_ {
                TransportType::Sqs => "sqs",
                TransportType::Rabbitmq => "rabbitmq",
            },
        ),
    ];
    match s.transport.type_ {
        TransportType::Sqs => {
            if let Some(q) = &s.transport.sqs {
                v.push(env("ASYA_SQS_REGION", &q.region));
                if let Some(b) = &q.queue_base_url {
                    v.push(env("ASYA_SQS_QUEUE_BASE_URL", b));
                    v.push(env("ASYA_SQS_QUEUE_URL", queue_url(b, &s.queue_name)));
                }
                if let Some(t) = q.visibility_timeout {
                    v.push(env("ASYA_SQS_VISIBILITY_TIMEOUT", t));
                }
                if let Some(t) = q.wait_time_seconds {
                    v.push(env("ASYA_SQS_WAIT_TIME_SECONDS", t));
                }
            }
        }
        TransportType::Rabbitmq => {
            if let Some(r) = &s.transport.rabbitmq {
                v.push(env("ASYA_RABBITMQ_HOST", &r.host));
                v.push(env("ASYA_RABBITMQ_PORT", r.port));
                if let Some(u) = &r.username {
                    v.push(env(ENV_RABBITMQ_USERNAME, u));
                }
                if let Some(p) = &r.password_secret_ref {
                    v.push(EnvVar {
                        name: ENV_RABBITMQ_PASSWORD.into(),
                        value: None,
                        value_from: Some(EnvVarSource {
                            secret_key_ref: Some(SecretKeySelector {
                                name: p.name.clone(),
                                key: p.key.clone(),
                                optional: None,
                            }),
                            ..Default::default()
                        }),
                    });
                }
            }
        }
    }
    v.push(env(ENV_SOCKET_PATH, socket_path(actor)));
    if let Some(m) = s.socket.as_ref().and_then(|s| s.max_size.as_ref()) {
        v.push(env("ASYA_SOCKET_MAX_SIZE", m));
    }
    if let Some(t) = &s.timeout {
        if let Some(p) = t.processing {
            v.push(env("ASYA_PROCESSING_TIMEOUT", p));
        }
        if let Some(g) = t.graceful_shutdown {
            v.push(env("ASYA_GRACEFUL_SHUTDOWN_TIMEOUT", g));
        }
    }
    for e in s.sidecar.iter().flat_map(|c| c.env.iter().flatten()) {
        match v.iter_mut().find(|x| x.name == e.name) {
            Some(x) => *x = e.clone(),
            None => v.push(e.clone()),
        }
    }
    v
}

/// `queueBaseUrl` + `/` + `queueName` (one slash between them).
pub fn queue_url(base: &str, queue: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), queue)
}

fn sidecar_container(actor: &AsyncActor, cfg: &BuildConfig, dir: &str) -> Container {
    let sc = actor.spec.sidecar.clone().unwrap_or_default();
    Container {
        name: SIDECAR.into(),
        image: Some(sc.image.unwrap_or_else(|| cfg.sidecar_image.clone())),
        image_pull_policy: sc.image_pull_policy,
        resources: sc.resources,
        env: Some(sidecar_env(actor)),
        volume_mounts: Some(vec![VolumeMount {
            name: SOCKET_VOLUME.into(),
            mount_path: dir.into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// Index of the runtime container: the one named `runtime`, else the first.
fn runtime_index(containers: &[Container]) -> usize {
    containers
        .iter()
        .position(|c| c.name == "runtime")
        .unwrap_or(0)
}

/// Is the sidecar of this actor a native sidecar (an init container)?
pub fn native_sidecar(actor: &AsyncActor, cfg: &BuildConfig) -> bool {
    actor.spec.workload.type_ == WorkloadType::Job && cfg.native_sidecar
}

/// The container KEDA reads env from: the first of `containers` (the sidecar, unless it is
/// a native sidecar; then the runtime container, which gets the username too).
fn env_source_container(tpl: &PodTemplateSpec) -> Option<String> {
    tpl.spec
        .as_ref()?
        .containers
        .first()
        .map(|c| c.name.clone())
}

/// The actor's pod template with the sidecar, shared socket, runtime mount, grace period
/// and our label. Errors name the field that makes it unusable.
pub fn pod_template(actor: &AsyncActor, cfg: &BuildConfig) -> Result<PodTemplateSpec, String> {
    let wl = &actor.spec.workload;
    let mut tpl: PodTemplateSpec = serde_json::from_value(wl.template.clone())
        .map_err(|e| format!("workload.template is not a pod template: {e}"))?;
    let dir = socket_dir(actor)?;
    let mut spec = tpl
        .spec
        .take()
        .ok_or("workload.template.spec is missing: it must list the runtime container")?;
    check_names(&spec)?;
    let native = native_sidecar(actor, cfg);
    runtime_container(actor, cfg, &mut spec, &dir, native);
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.push(Volume {
        name: SOCKET_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });
    if cfg.runtime_hash.is_some() {
        volumes.push(Volume {
            name: RUNTIME_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: RUNTIME_CONFIGMAP.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let mut sidecar = sidecar_container(actor, cfg, &dir);
    if native {
        sidecar.restart_policy = Some("Always".into());
        spec.init_containers
            .get_or_insert_with(Vec::new)
            .insert(0, sidecar);
    } else {
        spec.containers.insert(0, sidecar);
    }
    if let Some(g) = actor
        .spec
        .timeout
        .as_ref()
        .and_then(|t| t.graceful_shutdown)
    {
        spec.termination_grace_period_seconds = Some(g.into());
    }
    if wl.type_ == WorkloadType::Job {
        match spec.restart_policy.as_deref() {
            None => spec.restart_policy = Some("OnFailure".into()),
            Some("Always") => {
                return Err(
                    "a Job's pods need workload.template.spec.restartPolicy OnFailure or Never, not Always"
                        .into(),
                )
            }
            _ => {}
        }
    }
    tpl.spec = Some(spec);
    template_metadata(
        actor,
        cfg,
        tpl.metadata.get_or_insert_with(ObjectMeta::default),
    );
    Ok(tpl)
}

/// The template must have a container, and leave our container and volume names free.
fn check_names(spec: &k8s_openapi::api::core::v1::PodSpec) -> Result<(), String> {
    if spec.containers.is_empty() {
        return Err("workload.template.spec.containers must list at least one container".into());
    }
    let reserved_container = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == SIDECAR);
    if reserved_container {
        return Err(format!(
            "container name {SIDECAR:?} is reserved for the injected sidecar; rename the template's container"
        ));
    }
    if let Some(v) = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == SOCKET_VOLUME || v.name == RUNTIME_VOLUME)
    {
        return Err(format!(
            "volume name {:?} is reserved for the operator's mounts",
            v.name
        ));
    }
    Ok(())
}

/// The runtime container gets the socket (and runtime file) mounts and its environment.
fn runtime_container(
    actor: &AsyncActor,
    cfg: &BuildConfig,
    spec: &mut k8s_openapi::api::core::v1::PodSpec,
    dir: &str,
    native: bool,
) {
    let i = runtime_index(&spec.containers);
    let Some(rt) = spec.containers.get_mut(i) else {
        return;
    };
    let mounts = rt.volume_mounts.get_or_insert_with(Vec::new);
    mounts.push(VolumeMount {
        name: SOCKET_VOLUME.into(),
        mount_path: dir.to_string(),
        ..Default::default()
    });
    if cfg.runtime_hash.is_some() {
        mounts.push(VolumeMount {
            name: RUNTIME_VOLUME.into(),
            mount_path: RUNTIME_MOUNT.into(),
            sub_path: Some(RUNTIME_KEY.into()),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let envs = rt.env.get_or_insert_with(Vec::new);
    if !envs.iter().any(|e| e.name == ENV_SOCKET_PATH) {
        envs.push(env(ENV_SOCKET_PATH, socket_path(actor)));
    }
    let username = actor
        .spec
        .transport
        .rabbitmq
        .as_ref()
        .and_then(|r| r.username.clone());
    if let (true, Some(u)) = (native, username) {
        // KEDA resolves `env` from `containers` only (see env_source_container).
        if !envs.iter().any(|e| e.name == ENV_RABBITMQ_USERNAME) {
            envs.push(env(ENV_RABBITMQ_USERNAME, u));
        }
    }
}

/// Our label, the busy guard's (with a busy probe), and the runtime file's hash.
fn template_metadata(actor: &AsyncActor, cfg: &BuildConfig, meta: &mut ObjectMeta) {
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(ACTOR_LABEL.into(), actor.name_any());
    // Pods of an actor with a busy probe are guarded against any remover (KEDA/HPA too).
    if let Some(p) = actor
        .spec
        .scaling
        .as_ref()
        .and_then(|s| s.busy_probe.as_ref())
    {
        crate::api::probe::mark_guarded(
            meta,
            (p.mode == crate::api::probe::BusyMode::Annotation)
                .then_some(p.annotation_key.as_str()),
        );
    }
    // A new runtime file rolls the pods of long-running workloads (subPath mounts are not
    // refreshed in place). Jobs pick it up with their next pods.
    if let (Some(h), false) = (
        &cfg.runtime_hash,
        actor.spec.workload.type_ == WorkloadType::Job,
    ) {
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(RUNTIME_HASH.into(), h.clone());
    }
}

/// Set `asya.io/spec-hash` to the hash of the object's body (without that annotation).
fn hashed(mut v: Value) -> Value {
    let h = hash_of(&v);
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = ann.as_object_mut() {
            a.insert(SPEC_HASH.into(), h.into());
        }
    }
    v
}

fn typed_body<T: serde::Serialize>(obj: &T, kind: Kind) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    let ar = kind.api_resource();
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), ar.api_version.into());
        m.insert("kind".into(), ar.kind.into());
        m.remove("status");
    }
    hashed(v)
}

/// The Deployment; `replicas` None leaves the count to KEDA.
pub fn deployment(actor: &AsyncActor, tpl: PodTemplateSpec, replicas: Option<i32>) -> Value {
    let d = Deployment {
        metadata: owned_meta(actor),
        spec: DeploymentSpec {
            replicas,
            selector: selector(actor),
            template: tpl,
            ..Default::default()
        },
        status: None,
    };
    typed_body(&d, Kind::Deployment)
}

/// The StatefulSet (with the actor's volumeClaimTemplates and its headless Service).
pub fn statefulset(actor: &AsyncActor, tpl: PodTemplateSpec, replicas: Option<i32>) -> Value {
    // validate() refuses templates that do not parse.
    let vcts = volume_claim_templates(actor).ok().flatten();
    let s = StatefulSet {
        metadata: owned_meta(actor),
        spec: StatefulSetSpec {
            replicas,
            selector: selector(actor),
            service_name: Some(actor.name_any()),
            template: tpl,
            volume_claim_templates: vcts,
            ..Default::default()
        },
        status: None,
    };
    typed_body(&s, Kind::StatefulSet)
}

/// `workload.volumeClaimTemplates` as PersistentVolumeClaims.
pub fn volume_claim_templates(
    actor: &AsyncActor,
) -> Result<Option<Vec<PersistentVolumeClaim>>, String> {
    actor
        .spec
        .workload
        .volume_claim_templates
        .as_ref()
        .map(|v| serde_json::from_value(Value::Array(v.clone())))
        .transpose()
        .map_err(|e| {
            format!("workload.volumeClaimTemplates is not a list of PersistentVolumeClaims: {e}")
        })
}

/// The Job spec (also the ScaledJob's `jobTargetRef`).
pub fn job_spec(tpl: PodTemplateSpec, parallelism: Option<i32>) -> JobSpec {
    JobSpec {
        parallelism,
        template: tpl,
        ..Default::default()
    }
}

/// The Job; its pod template hash decides replacement (a Job's template is immutable).
pub fn job(actor: &AsyncActor, tpl: PodTemplateSpec, parallelism: i32) -> Value {
    let mut meta = owned_meta(actor);
    meta.annotations = Some(BTreeMap::from([(TEMPLATE_HASH.into(), hash_of(&tpl))]));
    let j = Job {
        metadata: meta,
        spec: Some(job_spec(tpl, Some(parallelism))),
        status: None,
    };
    typed_body(&j, Kind::Job)
}

/// The headless Service a StatefulSet names in `serviceName`.
pub fn headless_service(actor: &AsyncActor) -> Value {
    let s = Service {
        metadata: owned_meta(actor),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: selector(actor).match_labels,
            ..Default::default()
        }),
        status: None,
    };
    typed_body(&s, Kind::Service)
}

/// The KEDA trigger (without authenticationRef). Errors when the transport block is missing.
pub fn trigger(actor: &AsyncActor) -> Result<Value, String> {
    let s = &actor.spec;
    let ql = s
        .scaling
        .as_ref()
        .and_then(|s| s.queue_length)
        .unwrap_or(DEFAULT_QUEUE_LENGTH)
        .to_string();
    match s.transport.type_ {
        TransportType::Sqs => {
            let q = s.transport.sqs.as_ref().ok_or("transport.sqs is missing")?;
            // Without a base URL KEDA takes the bare queue name (unambiguous in one account).
            let url = q
                .queue_base_url
                .as_deref()
                .map(|b| queue_url(b, &s.queue_name))
                .unwrap_or_else(|| s.queue_name.clone());
            Ok(json!({"type": "aws-sqs-queue", "metadata": {
                "queueURL": url, "queueLength": ql, "awsRegion": q.region}}))
        }
        TransportType::Rabbitmq => {
            let r = s
                .transport
                .rabbitmq
                .as_ref()
                .ok_or("transport.rabbitmq is missing")?;
            Ok(json!({"type": "rabbitmq", "metadata": {
                "queueName": s.queue_name, "mode": "QueueLength", "value": ql,
                "protocol": "amqp", "host": format!("amqp://{}:{}/", r.host, r.port)}}))
        }
    }
}

/// The TriggerAuthentication, when the trigger needs one: AWS pod identity for SQS; for
/// RabbitMQ the user's password Secret (`secretTargetRef`, read by KEDA, never by us) and
/// the username from the env of the container KEDA reads (`env_container`).
pub fn trigger_authentication(actor: &AsyncActor, env_container: Option<&str>) -> Option<Value> {
    let spec = match actor.spec.transport.type_ {
        TransportType::Sqs => {
            actor.spec.transport.sqs.as_ref()?;
            json!({"podIdentity": {"provider": "aws"}})
        }
        TransportType::Rabbitmq => {
            let r = actor.spec.transport.rabbitmq.as_ref()?;
            let mut spec = serde_json::Map::new();
            if let Some(p) = &r.password_secret_ref {
                spec.insert(
                    "secretTargetRef".into(),
                    json!([{"parameter": "password", "name": p.name, "key": p.key}]),
                );
            }
            if let (Some(_), Some(c)) = (&r.username, env_container) {
                spec.insert(
                    "env".into(),
                    json!([{"parameter": "username", "name": ENV_RABBITMQ_USERNAME, "containerName": c}]),
                );
            }
            if spec.is_empty() {
                return None;
            }
            Value::Object(spec)
        }
    };
    Some(keda_object(actor, Kind::TriggerAuthentication, spec))
}

fn keda_object(actor: &AsyncActor, kind: Kind, spec: Value) -> Value {
    let meta = serde_json::to_value(owned_meta(actor)).unwrap_or(Value::Null);
    hashed(
        json!({"apiVersion": KEDA_API_VERSION, "kind": kind.name(), "metadata": meta, "spec": spec}),
    )
}

/// The seed's HPA behaviour: up by 100% or 4 pods per 15 s (whichever is more); down by
/// 50% per 15 s after a 60 s stabilization window.
pub fn hpa_behavior() -> Value {
    json!({
        "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15},
            {"type": "Pods", "value": 4, "periodSeconds": 15}]},
        "scaleDown": {"stabilizationWindowSeconds": 60, "policies": [
            {"type": "Percent", "value": 50, "periodSeconds": 15}]}
    })
}

fn scaling_fields(actor: &AsyncActor, spec: &mut serde_json::Map<String, Value>, cooldown: bool) {
    let Some(s) = &actor.spec.scaling else {
        return;
    };
    let mut put = |k: &str, v: Option<i32>| {
        if let Some(v) = v {
            spec.insert(k.into(), v.into());
        }
    };
    put("minReplicaCount", s.min_replicas);
    put("maxReplicaCount", s.max_replicas);
    put("pollingInterval", s.polling_interval);
    if cooldown {
        put("cooldownPeriod", s.cooldown_period);
    }
}

fn with_auth(mut trigger: Value, auth: bool, actor: &AsyncActor) -> Value {
    if auth {
        trigger["authenticationRef"] = json!({"name": actor.name_any()});
    }
    trigger
}

/// The ScaledObject for a Deployment or StatefulSet.
pub fn scaled_object(actor: &AsyncActor, target: Kind, auth: bool) -> Result<Value, String> {
    let mut spec = serde_json::Map::new();
    spec.insert(
        "scaleTargetRef".into(),
        json!({"apiVersion": "apps/v1", "kind": target.name(), "name": actor.name_any()}),
    );
    scaling_fields(actor, &mut spec, true);
    spec.insert(
        "advanced".into(),
        json!({"horizontalPodAutoscalerConfig": {"behavior": hpa_behavior()}}),
    );
    spec.insert(
        "triggers".into(),
        json!([with_auth(trigger(actor)?, auth, actor)]),
    );
    Ok(keda_object(actor, Kind::ScaledObject, Value::Object(spec)))
}

/// The ScaledJob for a Job workload: KEDA starts Jobs from `job` as the queue fills.
pub fn scaled_job(actor: &AsyncActor, job: JobSpec, auth: bool) -> Result<Value, String> {
    let mut spec = serde_json::Map::new();
    spec.insert(
        "jobTargetRef".into(),
        serde_json::to_value(job).map_err(|e| e.to_string())?,
    );
    scaling_fields(actor, &mut spec, false);
    spec.insert(
        "triggers".into(),
        json!([with_auth(trigger(actor)?, auth, actor)]),
    );
    Ok(keda_object(actor, Kind::ScaledJob, Value::Object(spec)))
}

/// KEDA objects for the actor: (ScaledObject or ScaledJob, TriggerAuthentication if any).
pub fn keda_objects(
    actor: &AsyncActor,
    tpl: &PodTemplateSpec,
) -> Result<(Value, Option<Value>), String> {
    let auth = trigger_authentication(actor, env_source_container(tpl).as_deref());
    let has_auth = auth.is_some();
    let scaled = match Kind::of(actor.spec.workload.type_) {
        Kind::Job => scaled_job(actor, job_spec(tpl.clone(), None), has_auth)?,
        k => scaled_object(actor, k, has_auth)?,
    };
    Ok((scaled, auth))
}

/// The runtime ConfigMap of one namespace.
pub fn runtime_configmap(namespace: &str, content: &str, hash: &str) -> Value {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(RUNTIME_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.to_string(),
                crate::MANAGER.to_string(),
            )])),
            annotations: Some(BTreeMap::from([(RUNTIME_HASH.to_string(), hash.into())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(RUNTIME_KEY.to_string(), content.into())])),
        ..Default::default()
    };
    let mut v = serde_json::to_value(cm).unwrap_or(Value::Null);
    v["apiVersion"] = "v1".into();
    v["kind"] = "ConfigMap".into();
    v
}

/// The sha256 (hex) of a runtime file's content.
pub fn runtime_hash(content: &str) -> String {
    let mut h = Sha256::new();
    h.update(content.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
