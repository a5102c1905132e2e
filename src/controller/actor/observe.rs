//! What one AsyncActor reconcile knows, read from the caches.
//!
//! Invariants:
//! - the workload, Service, pod and KEDA caches hold only objects labelled
//!   `asya.io/actor` (ours). An object the plan wants to write but the cache lacks is looked
//!   up once by name: an object of that name we did not create (a clash) must be seen
//!   before anything is written over it;
//! - KEDA objects are read only while their CRD is established; until a KEDA cache has
//!   listed, they are looked up by name instead;
//! - pods are cached stripped to what status and deletion cost read (phase, IP, ready,
//!   waiting reasons, short annotations).
use std::sync::atomic::Ordering;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::Value;

use super::build::{self, BuildConfig, Kind};
use super::plan::{Existing, Keda, Observed, PodFacts, RuntimeCm, WorkloadFacts};
use super::Ctx;
use crate::api::asya::AsyncActor;
use crate::probe::{self, BusyState};
use crate::Result;

/// An existing object (as JSON) as the planner sees it.
pub fn existing(kind: Kind, v: &Value, actor_uid: &str) -> Existing {
    let meta = &v["metadata"];
    let owned = meta["ownerReferences"].as_array().is_some_and(|refs| {
        refs.iter()
            .any(|r| r["controller"] == true && r["uid"] == actor_uid)
    });
    let ann = |k: &str| meta["annotations"][k].as_str().map(str::to_string);
    Existing {
        kind,
        uid: meta["uid"].as_str().unwrap_or_default().to_string(),
        owned,
        spec_hash: ann(build::SPEC_HASH),
        template_hash: ann(build::TEMPLATE_HASH),
        deleting: !meta["deletionTimestamp"].is_null(),
        facts: facts(kind, v),
    }
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64()
}

/// Readiness facts of a workload from its spec and status.
pub fn facts(kind: Kind, v: &Value) -> WorkloadFacts {
    let (spec, st) = (&v["spec"], &v["status"]);
    let cond = |t: &str| {
        st["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t && c["status"] == "True"))
            .cloned()
    };
    let generation = int(&v["metadata"]["generation"]).unwrap_or(0);
    match kind {
        Kind::Deployment | Kind::StatefulSet => WorkloadFacts {
            generation,
            observed_generation: int(&st["observedGeneration"]).unwrap_or(0),
            desired: int(&spec["replicas"]).unwrap_or(1) as i32,
            ready: int(&st["readyReplicas"]).unwrap_or(0) as i32,
            complete: false,
            failed: None,
        },
        Kind::Job => WorkloadFacts {
            generation,
            observed_generation: generation,
            desired: int(&spec["parallelism"]).unwrap_or(1) as i32,
            ready: int(&st["ready"])
                .or_else(|| int(&st["active"]))
                .unwrap_or(0) as i32,
            complete: cond("Complete").is_some(),
            failed: cond("Failed").map(|c| {
                format!(
                    "Job failed: {} {}",
                    c["reason"].as_str().unwrap_or_default(),
                    c["message"].as_str().unwrap_or_default()
                )
                .trim()
                .to_string()
            }),
        },
        _ => WorkloadFacts::default(),
    }
}

/// What the actor cache keeps of a pod (see the module header).
pub fn strip_pod(pod: &mut Pod) {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
    };
    crate::controller::trim_pod_metadata(pod);
    pod.spec = None;
    let short = |s: Option<String>| s.map(|m| m.chars().take(256).collect::<String>());
    let statuses = |cs: Option<Vec<ContainerStatus>>| {
        cs.map(|cs| {
            cs.into_iter()
                .map(|c| ContainerStatus {
                    name: c.name,
                    ready: c.ready,
                    state: c.state.and_then(|s| s.waiting).map(|w| ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: w.reason,
                            message: short(w.message),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect()
        })
    };
    pod.status = pod.status.take().map(|s| PodStatus {
        phase: s.phase,
        pod_ip: s.pod_ip,
        conditions: s.conditions.map(|cs| {
            cs.into_iter()
                .map(|c| PodCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: short(c.message),
                    ..Default::default()
                })
                .collect()
        }),
        container_statuses: statuses(s.container_statuses),
        init_container_statuses: statuses(s.init_container_statuses),
        ..Default::default()
    });
}

/// Waiting reasons that are normal steps of a start, not failures.
const STARTING: [&str; 2] = ["ContainerCreating", "PodInitializing"];

/// Why a pod cannot run, as the kubelet or scheduler says: (reason, message).
pub fn pod_failing(pod: &Pod) -> Option<(String, String)> {
    let st = pod.status.as_ref()?;
    let waiting = st
        .init_container_statuses
        .iter()
        .chain(st.container_statuses.iter())
        .flatten()
        .find_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            let reason = w
                .reason
                .clone()
                .filter(|r| !STARTING.contains(&r.as_str()))?;
            let msg = w.message.clone().unwrap_or_else(|| reason.clone());
            Some((reason, format!("container {}: {msg}", c.name)))
        });
    waiting.or_else(|| {
        st.conditions.iter().flatten().find_map(|c| {
            (c.type_ == "PodScheduled" && c.status == "False").then(|| {
                let reason = c.reason.clone().unwrap_or_else(|| "Unschedulable".into());
                (reason.clone(), c.message.clone().unwrap_or(reason))
            })
        })
    })
}

/// A pod of the actor as the planner sees it.
pub fn pod_facts(pod: &Pod, actor: &AsyncActor, probes: &probe::ProbeCache) -> PodFacts {
    let (busy, stale) = match actor
        .spec
        .scaling
        .as_ref()
        .and_then(|s| s.busy_probe.as_ref())
    {
        Some(p) => {
            let (s, stale, _) = probe::pod_busy(pod, p, probes);
            (s, stale)
        }
        None => (BusyState::Idle, false),
    };
    PodFacts {
        name: pod.name_any(),
        running: probe::is_running(pod),
        ready: crate::controller::pod_condition_true(pod, "Ready"),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        failing: pod_failing(pod),
        busy,
        stale,
        cost: crate::controller::cost::current_cost(pod),
    }
}

/// Is this KEDA CRD established?
pub fn crd_established(crds: &[Store<CustomResourceDefinition>], name: &str) -> bool {
    crds.iter()
        .filter_map(|s| s.get(&ObjectRef::new(name)))
        .any(|c| {
            c.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        })
}

fn from_store<K>(store: &Store<K>, ns: &str, name: &str) -> Option<Value>
where
    K: Resource<DynamicType = ()> + Clone + serde::Serialize + 'static,
{
    store
        .get(&ObjectRef::new(name).within(ns))
        .and_then(|o| serde_json::to_value(o.as_ref()).ok())
}

async fn lookup(ctx: &Ctx, kind: Kind, ns: &str, name: &str) -> Result<Option<Value>> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), ns, &kind.api_resource());
    Ok(match api.get_opt(name).await? {
        Some(o) => Some(serde_json::to_value(o)?),
        None => None,
    })
}

/// Gather everything the planner needs for `actor`.
pub async fn observe<'a>(
    ctx: &Ctx,
    actor: &'a AsyncActor,
    ns: &str,
    cfg: &'a BuildConfig,
    runtime: Option<&'a str>,
) -> Result<Observed<'a>> {
    let st = &ctx.stores;
    let keda = Keda {
        scaled_objects: crd_established(&st.crds, build::KEDA_CRDS[0]),
        scaled_jobs: crd_established(&st.crds, build::KEDA_CRDS[1]),
        trigger_authentications: crd_established(&st.crds, build::KEDA_CRDS[2]),
    };
    let mut found = workloads(ctx, actor, ns).await?;
    found.extend(keda_objects(ctx, actor, ns, &keda).await?);
    let configmap = runtime_configmap(ctx, ns, cfg);
    let pods = pods(ctx, actor, ns).await;
    Ok(Observed {
        actor,
        cfg,
        runtime,
        existing: found,
        configmap,
        keda,
        pods,
    })
}

/// The workloads and Service of the actor's name: from the caches, or read by name when
/// the kind is the one wanted and the cache (labelled) does not have it (a clash).
async fn workloads(ctx: &Ctx, actor: &AsyncActor, ns: &str) -> Result<Vec<Existing>> {
    let (name, uid) = (actor.name_any(), actor.uid().unwrap_or_default());
    let st = &ctx.stores;
    let want = Kind::of(actor.spec.workload.type_);
    let mut found = vec![];
    let cached = [
        (Kind::Deployment, from_store(&st.deployments, ns, &name)),
        (Kind::StatefulSet, from_store(&st.statefulsets, ns, &name)),
        (Kind::Job, from_store(&st.jobs, ns, &name)),
        (Kind::Service, from_store(&st.services, ns, &name)),
    ];
    for (kind, v) in cached {
        let needed = kind == want || (kind == Kind::Service && want == Kind::StatefulSet);
        let v = match v {
            Some(v) => Some(v),
            None if needed => lookup(ctx, kind, ns, &name).await?,
            None => None,
        };
        if let Some(v) = v {
            found.push(existing(kind, &v, &uid));
        }
    }
    Ok(found)
}

/// Objects of KEDA's kinds of the actor's name (only for kinds KEDA serves): from the
/// caches once listed, else read by name when scaling may write them.
async fn keda_objects(
    ctx: &Ctx,
    actor: &AsyncActor,
    ns: &str,
    keda: &Keda,
) -> Result<Vec<Existing>> {
    let (name, uid) = (actor.name_any(), actor.uid().unwrap_or_default());
    let want = Kind::of(actor.spec.workload.type_);
    let scaling = actor.spec.scaling.as_ref().is_some_and(|s| s.enabled)
        || actor
            .status
            .as_ref()
            .is_some_and(|s| s.scaled_object_ref.is_some());
    let mut found = vec![];
    for k in ctx.stores.keda.iter().filter(|k| keda.has(k.kind)) {
        // The kinds this actor may write; a clash with one of them must be seen.
        let wanted = scaling
            && (k.kind == Kind::TriggerAuthentication || k.kind == super::plan::scaled_kind(want));
        let v = if k.listed.load(Ordering::Relaxed) {
            match k
                .store
                .get(&ObjectRef::new_with(&name, k.kind.api_resource()).within(ns))
            {
                Some(o) => Some(serde_json::to_value(o.as_ref())?),
                None if wanted => lookup(ctx, k.kind, ns, &name).await?,
                None => None,
            }
        } else if scaling {
            lookup(ctx, k.kind, ns, &name).await?
        } else {
            None
        };
        if let Some(v) = v {
            found.push(existing(k.kind, &v, &uid));
        }
    }
    Ok(found)
}

/// The namespace's runtime ConfigMap, as this operator's runtime file wants it.
fn runtime_configmap(ctx: &Ctx, ns: &str, cfg: &BuildConfig) -> RuntimeCm {
    let Some(hash) = &cfg.runtime_hash else {
        return RuntimeCm::NotConfigured;
    };
    let cm = ctx
        .stores
        .configmaps
        .get(&ObjectRef::new(build::RUNTIME_CONFIGMAP).within(ns));
    match cm {
        None => RuntimeCm::Missing,
        Some(c)
            if c.labels().get(build::MANAGED_BY).map(String::as_str) != Some(crate::MANAGER) =>
        {
            RuntimeCm::Foreign
        }
        Some(c) if c.annotations().get(build::RUNTIME_HASH) == Some(hash) => RuntimeCm::Current,
        Some(_) => RuntimeCm::Outdated,
    }
}

/// The actor's pods as facts, sorted by name (http probes of a Deployment's pods first,
/// when due).
async fn pods(ctx: &Ctx, actor: &AsyncActor, ns: &str) -> Vec<PodFacts> {
    let name = actor.name_any();
    let pods: Vec<std::sync::Arc<Pod>> = crate::controller::in_namespace(&ctx.stores.pods, ns)
        .into_iter()
        .filter(|p| p.labels().get(build::ACTOR_LABEL) == Some(&name))
        .collect();
    let probe = actor
        .spec
        .scaling
        .as_ref()
        .and_then(|s| s.busy_probe.as_ref());
    let want = Kind::of(actor.spec.workload.type_);
    if let Some(p) = probe.filter(|p| p.mode == crate::api::probe::BusyMode::Http) {
        if want == Kind::Deployment {
            let refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
            probe::probe_due(&ctx.prober, &ctx.probes, &ctx.metrics, &p.http, &refs).await;
        }
    }
    let mut facts: Vec<PodFacts> = pods
        .iter()
        .map(|p| pod_facts(p, actor, &ctx.probes))
        .collect();
    facts.sort_by(|a, b| a.name.cmp(&b.name));
    facts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_missing_secret_shows_as_the_kubelets_reason_and_starting_is_not_failing() {
        let pod = |waiting: Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"phase": "Pending",
                "containerStatuses": [{"name": "sidecar", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                    "state": {"waiting": waiting}}]}}))
            .unwrap()
        };
        let p = pod(
            json!({"reason": "CreateContainerConfigError", "message": "secret \"rabbitmq-secret\" not found"}),
        );
        let mut small = p.clone();
        strip_pod(&mut small);
        for p in [&p, &small] {
            let (reason, msg) = pod_failing(p).unwrap();
            assert_eq!(reason, "CreateContainerConfigError");
            assert!(
                msg.contains("container sidecar") && msg.contains("rabbitmq-secret"),
                "{msg}"
            );
        }
        assert_eq!(
            pod_failing(&pod(json!({"reason": "ContainerCreating"}))),
            None
        );
        let unsched: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes"}]}}))
        .unwrap();
        assert_eq!(
            pod_failing(&unsched),
            Some(("Unschedulable".into(), "0/1 nodes".into()))
        );
    }

    #[test]
    fn ownership_hashes_and_facts_are_read_from_the_object() {
        let v = json!({"metadata": {"name": "a", "uid": "d1", "generation": 3,
            "annotations": {"asya.io/spec-hash": "h"},
            "ownerReferences": [{"apiVersion": "asya.io/v1alpha1", "kind": "AsyncActor", "name": "a", "uid": "actor", "controller": true}]},
            "spec": {"replicas": 2}, "status": {"observedGeneration": 3, "readyReplicas": 1}});
        let e = existing(Kind::Deployment, &v, "actor");
        assert!(e.owned && !e.deleting);
        assert_eq!(e.spec_hash.as_deref(), Some("h"));
        assert_eq!((e.facts.desired, e.facts.ready), (2, 1));
        assert!(!existing(Kind::Deployment, &v, "other-actor").owned);
        let job = json!({"metadata": {"uid": "j"}, "spec": {"parallelism": 1},
            "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "too many"}]}});
        let f = facts(Kind::Job, &job);
        assert_eq!(
            f.failed.as_deref(),
            Some("Job failed: BackoffLimitExceeded too many")
        );
    }
}
