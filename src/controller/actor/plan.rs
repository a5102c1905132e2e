//! The pure core of the AsyncActor reconciler: from what was observed, the writes to make
//! (in order) and the new status. No I/O.
//!
//! Rules that hold for every input (tested below):
//! - nothing we do not control is ever written or deleted: an object of our name that is
//!   not controlled by this actor is a conflict (a condition), never a target; while the
//!   workload's name is taken, only our KEDA objects (which would scale it) are deleted;
//! - a spec we cannot build writes nothing at all (what runs keeps running);
//! - KEDA objects exist only while scaling is enabled, valid, buildable from the transport
//!   and KEDA is installed; otherwise every one of ours is deleted and the workload carries
//!   `workload.replicas` itself; while KEDA drives the count we never send `replicas`;
//! - when KEDA takes over the count of a workload we sized, the count it runs is first
//!   handed to another field manager (`Handover`), so our apply without `replicas` does not
//!   reset it to 1;
//! - at most one workload kind is ours at a time: a type change deletes the old one;
//! - an unchanged object is not written again (its `asya.io/spec-hash` matches);
//! - write order: runtime ConfigMap, deletions of what is no longer wanted (old workload
//!   kinds, KEDA objects), Service, replica hand-over, workload, TriggerAuthentication,
//!   ScaledObject/ScaledJob, pod-deletion-costs.
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde::Serialize;
use serde_json::Value;

use super::build::{self, BuildConfig, Kind};
use crate::api::asya::{AsyncActor, AsyncActorStatus, ObjectRef, WorkloadRef, WorkloadType};
use crate::api::set_condition;
use crate::probe::BusyState;

/// An object of the actor's name that exists.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Existing {
    pub kind: Kind,
    pub uid: String,
    /// Controlled by this actor (controller ownerReference with its UID).
    pub owned: bool,
    /// `asya.io/spec-hash` / `asya.io/template-hash` it carries.
    pub spec_hash: Option<String>,
    pub template_hash: Option<String>,
    /// Being deleted.
    pub deleting: bool,
    /// Readiness facts of a workload.
    pub facts: WorkloadFacts,
}

/// What a workload's status says.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WorkloadFacts {
    pub generation: i64,
    pub observed_generation: i64,
    /// spec.replicas (Job: parallelism).
    pub desired: i32,
    pub ready: i32,
    /// Job: Complete / Failed condition true.
    pub complete: bool,
    pub failed: Option<String>,
}

/// One of the actor's pods, as far as status and deletion cost go.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PodFacts {
    pub name: String,
    pub running: bool,
    pub ready: bool,
    pub deleting: bool,
    /// A container that cannot start: (reason, message), e.g. CreateContainerConfigError.
    pub failing: Option<(String, String)>,
    pub busy: BusyState,
    pub stale: bool,
    pub cost: Option<i32>,
}

/// The namespace's runtime ConfigMap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RuntimeCm {
    /// The operator has no runtime file.
    NotConfigured,
    Missing,
    /// Ours, with another runtime hash.
    Outdated,
    Current,
    /// Exists and is not managed by us: left as it is.
    Foreign,
}

/// Which KEDA CRDs are established.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Keda {
    pub scaled_objects: bool,
    pub scaled_jobs: bool,
    pub trigger_authentications: bool,
}

impl Keda {
    pub fn all() -> Self {
        Keda {
            scaled_objects: true,
            scaled_jobs: true,
            trigger_authentications: true,
        }
    }
    pub fn has(&self, k: Kind) -> bool {
        match k {
            Kind::ScaledObject => self.scaled_objects,
            Kind::ScaledJob => self.scaled_jobs,
            Kind::TriggerAuthentication => self.trigger_authentications,
            _ => true,
        }
    }
}

/// Everything one reconcile knows.
pub struct Observed<'a> {
    pub actor: &'a AsyncActor,
    pub cfg: &'a BuildConfig,
    /// Runtime file content (when configured).
    pub runtime: Option<&'a str>,
    /// Objects named after the actor, of every kind it may own.
    pub existing: Vec<Existing>,
    pub configmap: RuntimeCm,
    pub keda: Keda,
    pub pods: Vec<PodFacts>,
}

impl Observed<'_> {
    fn get(&self, k: Kind) -> Option<&Existing> {
        self.existing.iter().find(|e| e.kind == k)
    }
    fn ours(&self, k: Kind) -> Option<&Existing> {
        self.get(k).filter(|e| e.owned)
    }
    fn foreign(&self, k: Kind) -> bool {
        self.get(k).is_some_and(|e| !e.owned)
    }
}

/// A write.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Action {
    /// Server-side apply of `body` (kind, name from it).
    Apply { kind: Kind, body: Value },
    /// Delete an object of ours (UID precondition).
    Delete { kind: Kind, uid: String },
    /// pod-deletion-costs (pod, cost) that differ from what the pods carry.
    Costs(Vec<(String, i32)>),
    /// Server-side apply of just `spec.replicas` (the count the workload runs now) under
    /// [`HANDOVER_MANAGER`], right before our apply drops the field: a field only we own
    /// and no longer send would be removed and default to 1 (killing pods); co-owned, it
    /// keeps its value until KEDA's HPA sets another.
    Handover { kind: Kind, replicas: i32 },
}

/// The field manager that holds a workload's replica count while it passes to KEDA.
pub const HANDOVER_MANAGER: &str = "kube-standby-handover";

impl Action {
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Action::Apply { kind, .. }
            | Action::Delete { kind, .. }
            | Action::Handover { kind, .. } => Some(*kind),
            Action::Costs(_) => None,
        }
    }
}

pub use crate::controller::shell::Note;

fn note(warning: bool, reason: &str, message: impl Into<String>) -> Note {
    if warning {
        Note::warning(reason, message)
    } else {
        Note::normal(reason, message)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub status: AsyncActorStatus,
    /// Events for the writes (condition transitions are added by [`transition_notes`]).
    pub notes: Vec<Note>,
    /// KEDA drives the replica count.
    pub keda_drives: bool,
    /// Come back soon (a replaced workload is being deleted).
    pub requeue_soon: bool,
}

/// Condition reasons not worth a Warning event: transient, an operator-wide setting, or
/// a consequence of another condition's own event.
const QUIET: [&str; 5] = [
    "PodsNotReady",
    "WorkloadProgressing",
    "NoRuntimeFile",
    "WaitingForWorkload",
    // TransportConfigured=False TransportBlockMissing has said it.
    "TransportIncomplete",
];

/// Warning events for conditions that turned False with a new reason: each bad state is
/// reported once, not on every reconcile.
pub fn transition_notes(old: Option<&AsyncActorStatus>, new: &AsyncActorStatus) -> Vec<Note> {
    new.conditions
        .iter()
        .filter(|c| c.status == "False" && !QUIET.contains(&c.reason.as_str()))
        .filter(|c| {
            let before = old.and_then(|o| crate::api::condition(&o.conditions, &c.type_));
            before.is_none_or(|b| b.status != "False" || b.reason != c.reason)
        })
        .map(|c| note(true, &c.reason, c.message.clone()))
        .collect()
}

struct Cond<'a> {
    st: &'a mut AsyncActorStatus,
    generation: Option<i64>,
    now: &'a Time,
}

impl Cond<'_> {
    fn set(&mut self, type_: &str, ok: bool, reason: &str, message: impl Into<String>) {
        set_condition(
            &mut self.st.conditions,
            type_,
            ok,
            reason,
            message,
            self.generation,
            self.now,
        );
    }
    fn remove(&mut self, type_: &str) {
        self.st.conditions.retain(|c| c.type_ != type_);
    }
}

fn is_current(e: Option<&Existing>, body: &Value) -> bool {
    let want = body["metadata"]["annotations"][build::SPEC_HASH].as_str();
    e.is_some_and(|e| !e.deleting && e.spec_hash.as_deref() == want && want.is_some())
}

const WORKLOAD_KINDS: [Kind; 3] = [Kind::Deployment, Kind::StatefulSet, Kind::Job];
const KEDA_KINDS: [Kind; 3] = [
    Kind::ScaledObject,
    Kind::ScaledJob,
    Kind::TriggerAuthentication,
];

/// The plan for one actor.
pub fn plan(o: &Observed<'_>, now: &Time) -> Plan {
    let actor = o.actor;
    let mut status = actor.status.clone().unwrap_or_default();
    status.observed_generation = actor.metadata.generation;
    let mut p = Plan {
        actions: vec![],
        status,
        notes: vec![],
        keda_drives: false,
        requeue_soon: false,
    };
    let configmap = runtime_configmap(o, &mut p, now);
    transport_condition(o, &mut p, now);

    let mut problems = build::validate(actor);
    let tpl = match build::pod_template(actor, o.cfg) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let kind = Kind::of(actor.spec.workload.type_);
    native_sidecar_condition(o, &mut p, now);
    let Some(tpl) = tpl.filter(|_| problems.is_empty()) else {
        let msg = problems.join("; ");
        let mut c = cond(&mut p.status, actor, now);
        c.set("WorkloadReady", false, "InvalidSpec", msg);
        c.set(
            "ScalingReady",
            false,
            "WaitingForWorkload",
            "the workload cannot be built from the spec",
        );
        return p;
    };
    if o.foreign(kind) || (kind == Kind::StatefulSet && o.foreign(Kind::Service)) {
        conflict(o, &mut p, kind, now);
        return p;
    }
    let scaling = scaling_decision(o, kind);
    p.keda_drives = matches!(scaling, Scaling::Keda { .. });
    // The runtime ConfigMap first: the pods mount it.
    p.actions.extend(configmap);
    unwanted(o, &mut p, kind, &scaling);
    workload_actions(o, &mut p, kind, tpl);
    if let Scaling::Keda { scaled, auth } = &scaling {
        if let Some(a) = auth {
            apply_if_changed(o, &mut p, Kind::TriggerAuthentication, a.clone());
        }
        let sk = scaled_kind(kind);
        if o.ours(sk).is_none() {
            p.notes.push(note(
                false,
                &format!("{}Created", sk.name()),
                format!("KEDA {} {} created", sk.name(), actor.name_any()),
            ));
        }
        apply_if_changed(o, &mut p, sk, scaled.clone());
    }
    costs(o, &mut p, kind);
    status_refs(o, &mut p, kind);
    workload_condition(o, &mut p, kind, now);
    scaling_condition(o, &mut p, &scaling, kind, now);
    p
}

/// A workload (or its Service) of our name that we do not control: change nothing of it,
/// say so, and delete our KEDA objects (they would scale an object we do not control).
fn conflict(o: &Observed<'_>, p: &mut Plan, kind: Kind, now: &Time) {
    let actor = o.actor;
    let what = if o.foreign(kind) { kind } else { Kind::Service };
    let msg = format!(
        "{} {} exists and is not controlled by this AsyncActor; nothing was changed",
        what.name(),
        actor.name_any()
    );
    let mut c = cond(&mut p.status, actor, now);
    c.set("WorkloadReady", false, "WorkloadConflict", msg);
    c.set(
        "ScalingReady",
        false,
        "WaitingForWorkload",
        "the workload is not ours",
    );
    p.status.workload_ref = None;
    p.status.scaled_object_ref = None;
    for k in KEDA_KINDS {
        delete_ours(o, p, k);
    }
}

/// Deletions of what is no longer wanted: workloads of another kind, a Service a
/// StatefulSet no longer needs, KEDA objects the scaling no longer uses.
fn unwanted(o: &Observed<'_>, p: &mut Plan, kind: Kind, scaling: &Scaling) {
    let actor = o.actor;
    for k in WORKLOAD_KINDS.into_iter().filter(|k| *k != kind) {
        if let Some(e) = o.ours(k).filter(|e| !e.deleting) {
            p.actions.push(Action::Delete {
                kind: k,
                uid: e.uid.clone(),
            });
            p.notes.push(note(
                false,
                "WorkloadReplaced",
                format!(
                    "workload.type is {}: the old {} was deleted",
                    kind.name(),
                    k.name()
                ),
            ));
        }
    }
    if kind != Kind::StatefulSet {
        delete_ours(o, p, Kind::Service);
    }
    let keep: Vec<Kind> = match scaling {
        Scaling::Keda { auth, .. } => {
            let mut v = vec![scaled_kind(kind)];
            if auth.is_some() {
                v.push(Kind::TriggerAuthentication);
            }
            v
        }
        _ => vec![],
    };
    for k in KEDA_KINDS.into_iter().filter(|k| !keep.contains(k)) {
        if o.ours(k).is_some_and(|e| !e.deleting) {
            delete_ours(o, p, k);
            if k != Kind::TriggerAuthentication {
                p.notes.push(note(
                    false,
                    "ScalingRemoved",
                    format!("{} {} deleted", k.name(), actor.name_any()),
                ));
            }
        }
    }
}

/// The KEDA kind that scales a workload kind.
pub fn scaled_kind(workload: Kind) -> Kind {
    if workload == Kind::Job {
        Kind::ScaledJob
    } else {
        Kind::ScaledObject
    }
}

fn cond<'a>(st: &'a mut AsyncActorStatus, actor: &AsyncActor, now: &'a Time) -> Cond<'a> {
    Cond {
        st,
        generation: actor.metadata.generation,
        now,
    }
}

fn delete_ours(o: &Observed<'_>, p: &mut Plan, k: Kind) {
    if let Some(e) = o.ours(k).filter(|e| !e.deleting) {
        p.actions.push(Action::Delete {
            kind: k,
            uid: e.uid.clone(),
        });
    }
}

fn apply_if_changed(o: &Observed<'_>, p: &mut Plan, k: Kind, body: Value) {
    if !is_current(o.ours(k), &body) {
        p.actions.push(Action::Apply { kind: k, body });
    }
}

/// How the replica count is decided.
enum Scaling {
    Disabled,
    /// Enabled but not possible: (reason, message).
    Blocked(&'static str, String),
    /// KEDA drives: the ScaledObject/ScaledJob and TriggerAuthentication to keep.
    Keda {
        scaled: Value,
        auth: Option<Value>,
    },
}

fn scaling_decision(o: &Observed<'_>, kind: Kind) -> Scaling {
    let actor = o.actor;
    if !actor.spec.scaling.as_ref().is_some_and(|s| s.enabled) {
        return Scaling::Disabled;
    }
    let problems = build::scaling_problems(actor);
    if !problems.is_empty() {
        return Scaling::Blocked("InvalidScaling", problems.join("; "));
    }
    if let Some(gap) = build::transport_gap(actor) {
        return Scaling::Blocked("TransportIncomplete", gap);
    }
    // The template was built before; rebuilding here keeps the builders the one source.
    let tpl = match build::pod_template(actor, o.cfg) {
        Ok(t) => t,
        Err(e) => return Scaling::Blocked("WaitingForWorkload", e),
    };
    let (scaled, auth) = match build::keda_objects(actor, &tpl) {
        Ok(x) => x,
        Err(e) => return Scaling::Blocked("InvalidScaling", e),
    };
    let mut needed = vec![scaled_kind(kind)];
    if auth.is_some() {
        needed.push(Kind::TriggerAuthentication);
    }
    let missing: Vec<&str> = needed
        .iter()
        .filter(|k| !o.keda.has(**k))
        .filter_map(|k| k.crd())
        .collect();
    if !missing.is_empty() {
        let replicas = actor.spec.workload.replicas.unwrap_or(1);
        return Scaling::Blocked(
            "KedaNotInstalled",
            format!(
                "KEDA is not installed (no CRD {}): the workload runs workload.replicas={replicas}; scaling starts by itself once KEDA is installed",
                missing.join(", ")
            ),
        );
    }
    if let Some(k) = needed.iter().find(|k| o.foreign(**k)) {
        return Scaling::Blocked(
            "ScaledObjectConflict",
            format!(
                "{} {} exists and is not controlled by this AsyncActor; nothing was changed",
                k.name(),
                actor.name_any()
            ),
        );
    }
    Scaling::Keda { scaled, auth }
}

fn workload_actions(o: &Observed<'_>, p: &mut Plan, kind: Kind, tpl: PodTemplateSpec) {
    let actor = o.actor;
    let replicas = actor.spec.workload.replicas.unwrap_or(1);
    let body = match kind {
        Kind::Deployment => build::deployment(actor, tpl, (!p.keda_drives).then_some(replicas)),
        Kind::StatefulSet => {
            apply_if_changed(o, p, Kind::Service, build::headless_service(actor));
            build::statefulset(actor, tpl, (!p.keda_drives).then_some(replicas))
        }
        _ => {
            // A Job: KEDA's ScaledJob starts Jobs itself; ours would be one too many.
            if p.keda_drives {
                delete_ours(o, p, Kind::Job);
                return;
            }
            let body = build::job(actor, tpl, replicas);
            let want_tpl = body["metadata"]["annotations"][build::TEMPLATE_HASH].as_str();
            if let Some(e) = o.ours(Kind::Job).filter(|e| !e.deleting) {
                if e.template_hash.as_deref() != want_tpl {
                    // A Job's pod template is immutable: replace it.
                    p.actions.push(Action::Delete {
                        kind: Kind::Job,
                        uid: e.uid.clone(),
                    });
                    p.notes.push(note(
                        false,
                        "WorkloadReplaced",
                        "the Job's pod template changed (it is immutable): the Job is replaced",
                    ));
                    p.requeue_soon = true;
                    return;
                }
            }
            if o.ours(Kind::Job).is_some_and(|e| e.deleting) {
                p.requeue_soon = true;
                return;
            }
            body
        }
    };
    handover(o, p, kind, &body);
    if o.ours(kind).is_none() {
        p.notes.push(note(
            false,
            "WorkloadCreated",
            format!("{} {} created", kind.name(), actor.name_any()),
        ));
    }
    apply_if_changed(o, p, kind, body);
}

/// KEDA takes the count of a Deployment/StatefulSet we sized so far (no ScaledObject of
/// ours scales it yet): keep what it runs by handing `spec.replicas` over first.
fn handover(o: &Observed<'_>, p: &mut Plan, kind: Kind, body: &Value) {
    let taking_over =
        p.keda_drives && kind != Kind::Job && o.ours(Kind::ScaledObject).is_none_or(|s| s.deleting);
    let Some(e) = o.ours(kind).filter(|e| !e.deleting) else {
        return;
    };
    if taking_over && !is_current(Some(e), body) {
        p.actions.push(Action::Handover {
            kind,
            replicas: e.facts.desired,
        });
    }
}

fn costs(o: &Observed<'_>, p: &mut Plan, kind: Kind) {
    let probe = o
        .actor
        .spec
        .scaling
        .as_ref()
        .and_then(|s| s.busy_probe.as_ref());
    if kind != Kind::Deployment || probe.is_none() {
        return;
    }
    let c: Vec<(String, i32)> = o
        .pods
        .iter()
        .filter(|p| !p.deleting)
        .map(|p| (p, crate::controller::cost::wanted_cost(p.busy, p.stale)))
        .filter(|(p, want)| p.cost != Some(*want))
        .map(|(p, want)| (p.name.clone(), want))
        .collect();
    if !c.is_empty() {
        p.actions.push(Action::Costs(c));
    }
}

fn status_refs(o: &Observed<'_>, p: &mut Plan, kind: Kind) {
    let actor = o.actor;
    let (name, ns) = (actor.name_any(), actor.namespace());
    p.status.workload_ref = Some(if kind == Kind::Job && p.keda_drives {
        WorkloadRef {
            api_version: build::KEDA_API_VERSION.into(),
            kind: "ScaledJob".into(),
            name: name.clone(),
            namespace: ns.clone(),
        }
    } else {
        WorkloadRef {
            api_version: kind.api_resource().api_version,
            kind: kind.name().into(),
            name: name.clone(),
            namespace: ns.clone(),
        }
    });
    p.status.scaled_object_ref = p.keda_drives.then_some(ObjectRef {
        name,
        namespace: ns,
    });
}

/// The RuntimeMounted condition, and the ConfigMap write it needs (if any).
fn runtime_configmap(o: &Observed<'_>, p: &mut Plan, now: &Time) -> Option<Action> {
    let ns = o.actor.namespace().unwrap_or_default();
    let mut c = cond(&mut p.status, o.actor, now);
    match (o.configmap, o.runtime, &o.cfg.runtime_hash) {
        (RuntimeCm::NotConfigured, _, _) | (_, None, _) | (_, _, None) => c.set(
            "RuntimeMounted",
            false,
            "NoRuntimeFile",
            "the operator runs without --actor-runtime-file: asya_runtime.py is not mounted; the runtime image must bring its own",
        ),
        (RuntimeCm::Foreign, _, _) => c.set(
            "RuntimeMounted",
            true,
            "UserConfigMap",
            format!("ConfigMap {} exists and is not managed by kube-standby: mounted at {} as it is, never overwritten", build::RUNTIME_CONFIGMAP, build::RUNTIME_MOUNT),
        ),
        (cm, Some(content), Some(hash)) => {
            c.set(
                "RuntimeMounted",
                true,
                "ConfigMapMounted",
                format!("ConfigMap {} (runtime sha256 {}) mounted at {}", build::RUNTIME_CONFIGMAP, &hash[..12.min(hash.len())], build::RUNTIME_MOUNT),
            );
            return (cm != RuntimeCm::Current).then(|| Action::Apply {
                kind: Kind::ConfigMap,
                body: build::runtime_configmap(&ns, content, hash),
            });
        }
    }
    None
}

fn transport_condition(o: &Observed<'_>, p: &mut Plan, now: &Time) {
    let gap = build::transport_gap(o.actor);
    let mut c = cond(&mut p.status, o.actor, now);
    match gap {
        Some(g) => c.set("TransportConfigured", false, "TransportBlockMissing", g),
        None => c.set(
            "TransportConfigured",
            true,
            "Configured",
            "the sidecar gets the transport settings",
        ),
    }
}

fn native_sidecar_condition(o: &Observed<'_>, p: &mut Plan, now: &Time) {
    let job = o.actor.spec.workload.type_ == WorkloadType::Job;
    let mut c = cond(&mut p.status, o.actor, now);
    if !job {
        c.remove("NativeSidecar");
    } else if o.cfg.native_sidecar {
        c.set(
            "NativeSidecar",
            true,
            "InitContainerSidecar",
            "the sidecar is a native sidecar (init container with restartPolicy Always): the Job completes when the runtime exits",
        );
    } else {
        c.set(
            "NativeSidecar",
            false,
            "UnsupportedByCluster",
            "this cluster has no native sidecars (Kubernetes 1.29+): the sidecar runs as containers[0] and the Job completes only once the sidecar exits too",
        );
    }
}

fn ready_pods_summary(f: &WorkloadFacts) -> String {
    format!("{}/{} replicas ready", f.ready, f.desired)
}

fn workload_condition(o: &Observed<'_>, p: &mut Plan, kind: Kind, now: &Time) {
    let actor = o.actor;
    let name = actor.name_any();
    let failing = o
        .pods
        .iter()
        .filter(|p| !p.deleting)
        .find_map(|p| p.failing.clone().map(|f| (p.name.clone(), f)));
    let existing = o.ours(kind).filter(|e| !e.deleting);
    let (ok, reason, msg) = if let Some((pod, (reason, message))) = failing {
        (false, reason, format!("pod {pod}: {message}"))
    } else if kind == Kind::Job && p.keda_drives {
        (
            true,
            "WorkloadCreated".to_string(),
            format!("ScaledJob {name} successfully created: KEDA starts Jobs as the queue fills"),
        )
    } else if let Some(e) = existing {
        let f = &e.facts;
        let synced = f.observed_generation >= f.generation;
        if let Some(why) = &f.failed {
            (false, "JobFailed".into(), why.clone())
        } else if kind == Kind::Job && f.complete {
            (
                true,
                "WorkloadCreated".into(),
                format!("Job {name} completed"),
            )
        } else if kind == Kind::Job && f.ready > 0 {
            (
                true,
                "WorkloadCreated".into(),
                format!("Job {name} successfully created; {} pod(s) ready", f.ready),
            )
        } else if kind != Kind::Job && synced && f.ready >= f.desired {
            (
                true,
                "WorkloadCreated".into(),
                format!(
                    "{} successfully created; {}",
                    kind.name(),
                    ready_pods_summary(f)
                ),
            )
        } else if kind == Kind::Job {
            (
                false,
                "PodsNotReady".into(),
                format!("Job {name}: no pod ready yet"),
            )
        } else {
            (
                false,
                "PodsNotReady".into(),
                format!("{} {name}: {}", kind.name(), ready_pods_summary(f)),
            )
        }
    } else {
        (
            false,
            "WorkloadProgressing".into(),
            format!("{} {name} is being created", kind.name()),
        )
    };
    cond(&mut p.status, actor, now).set("WorkloadReady", ok, &reason, msg);
}

fn scaling_condition(o: &Observed<'_>, p: &mut Plan, s: &Scaling, kind: Kind, now: &Time) {
    let actor = o.actor;
    let mut c = cond(&mut p.status, actor, now);
    match s {
        Scaling::Disabled => c.set(
            "ScalingReady",
            true,
            "ScalingDisabled",
            format!(
                "scaling.enabled is false: the workload runs workload.replicas={}",
                actor.spec.workload.replicas.unwrap_or(1)
            ),
        ),
        Scaling::Blocked(reason, msg) => c.set("ScalingReady", false, reason, msg.clone()),
        Scaling::Keda { .. } if kind == Kind::Job => c.set(
            "ScalingReady",
            true,
            "ScaledJobCreated",
            "KEDA ScaledJob successfully created",
        ),
        Scaling::Keda { .. } => c.set(
            "ScalingReady",
            true,
            "ScaledObjectCreated",
            "KEDA ScaledObject successfully created",
        ),
    }
}

/// The status after the API server refused to apply `kind` (400/422).
pub fn rejected(
    actor: &AsyncActor,
    status: &AsyncActorStatus,
    kind: Kind,
    message: &str,
    now: &Time,
) -> AsyncActorStatus {
    let mut st = status.clone();
    let mut c = cond(&mut st, actor, now);
    let msg = format!("the API server rejected the {}: {message}", kind.name());
    if kind.crd().is_some() {
        c.set("ScalingReady", false, "ScalingRejected", msg);
    } else {
        c.set("WorkloadReady", false, "WorkloadRejected", msg);
    }
    st
}

#[cfg(test)]
mod tests;
