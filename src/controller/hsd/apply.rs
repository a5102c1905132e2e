//! The HSD reconciler's writes, in the order the plan needs them:
//! detach protected old-revision pods → retire idle detached pods → delete victims →
//! deletion costs → the child Deployment (server-side apply) → (then the shell writes
//! status and events). On a scale-up the child comes first and the costs after: what
//! restores capacity is never queued behind annotation writes. Every pod write carries the UID and
//! resourceVersion it was planned on, so a pod that changed since (e.g. turned busy) is
//! left alone; in http mode a pod is probed again right before it is deleted and kept when
//! the fresh answer is busy or fails.
use futures::future::join_all;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::ResourceExt;

use super::child;
use super::plan::{BusyState, Plan, Victim};
use super::Ctx;
use crate::api::hsd::{BusyMode, HotStandbyDeployment};
use crate::{Result, MANAGER};

/// What the pod writes achieved.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    pub detached: Vec<String>,
    pub retired: Vec<String>,
    pub deleted: Vec<String>,
    /// Victims not deleted (changed since observed, or found busy by a fresh probe).
    pub kept: i32,
}

/// Fresh http answers for `victims`, in parallel (bounded by the prober): true = still idle.
async fn still_idle(ctx: &Ctx, hsd: &HotStandbyDeployment, victims: &[Victim<'_>]) -> Vec<bool> {
    if hsd.spec.busy_probe.mode != BusyMode::Http {
        return vec![true; victims.len()];
    }
    let cfg = &hsd.spec.busy_probe.http;
    let checks = victims.iter().map(|v| async move {
        match v.ip {
            Some(ip) => {
                let r = ctx.prober.probe(ip, cfg).await;
                ctx.probes
                    .record(v.uid, r.clone(), std::time::Instant::now());
                matches!(r, Ok(BusyState::Idle))
            }
            None => false,
        }
    });
    join_all(checks).await
}

/// Delete `v` unless it changed since observed. Ok(true) when it is gone.
async fn delete_pod(api: &Api<Pod>, v: &Victim<'_>) -> Result<bool> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(v.uid.to_string()),
            resource_version: Some(v.resource_version.to_string()),
        }),
        ..Default::default()
    };
    match api.delete(v.name, &dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            tracing::info!(pod = %v.name, "changed since observed; kept");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Delete the pods among `victims` that a fresh look still finds idle; returns the deleted.
async fn delete_idle(
    ctx: &Ctx,
    api: &Api<Pod>,
    hsd: &HotStandbyDeployment,
    victims: &[Victim<'_>],
) -> Result<Vec<String>> {
    let idle = still_idle(ctx, hsd, victims).await;
    let mut deleted = vec![];
    for (v, idle) in victims.iter().zip(idle) {
        if !idle {
            tracing::info!(pod = %v.name, "a fresh probe does not find it idle; kept");
            continue;
        }
        if delete_pod(api, v).await? {
            deleted.push(v.name.to_string());
        }
    }
    Ok(deleted)
}

/// Take protected pods out of their ReplicaSet (see the planner's header).
async fn detach(
    api: &Api<Pod>,
    hsd: &HotStandbyDeployment,
    pods: &[Victim<'_>],
) -> Result<Vec<String>> {
    let mut done = vec![];
    for v in pods {
        let patch = child::detach_patch(hsd, v.uid, v.resource_version);
        match api
            .patch(v.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => done.push(v.name.to_string()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// Every pod write of `plan`, in order.
pub async fn pods(
    ctx: &Ctx,
    hsd: &HotStandbyDeployment,
    ns: &str,
    plan: &Plan<'_>,
) -> Result<Applied> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let detached = detach(&api, hsd, &plan.detach).await?;
    let retired = delete_idle(ctx, &api, hsd, &plan.retire).await?;
    let deleted = delete_idle(ctx, &api, hsd, &plan.victims).await?;
    Ok(Applied {
        kept: (plan.victims.len() - deleted.len()) as i32,
        detached,
        retired,
        deleted,
    })
}

async fn write_costs(
    api: &Api<Pod>,
    plan: &Plan<'_>,
) -> std::result::Result<(), std::result::Result<String, crate::Error>> {
    crate::controller::cost::write_costs(api, &plan.costs)
        .await
        .map_err(Err)
}

/// What one reconcile wrote, for the events, metrics and status that follow.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub pods: Applied,
    /// The replica count the child now asks for.
    pub replicas: i32,
    /// The child Deployment was written (it was missing or differed).
    pub wrote_child: bool,
    /// When the child write was answered (the reaction ends there, not after the cost
    /// patches that follow it on a scale-up).
    pub child_written_at: Option<std::time::Instant>,
}

/// The child as it should be, with `replicas`: `template`, unless protected pods are still
/// leaving their ReplicaSet; then the child keeps the template it has. The cache keeps
/// children without their template, so a held child is built here with its hash annotation
/// only, and `true` says its template must be read (by [`held_template`]) before it is written.
fn wanted_child(
    hsd: &HotStandbyDeployment,
    child: Option<&child::ChildDeployment>,
    template: &PodTemplateSpec,
    hold_template: bool,
    replicas: i32,
) -> (Deployment, bool) {
    match (child, hold_template) {
        (Some(c), true) => {
            let mut want = child::child_deployment(hsd, PodTemplateSpec::default(), replicas);
            child::keep_template_hash(&mut want, c);
            (want, true)
        }
        _ => (
            child::child_deployment(hsd, template.clone(), replicas),
            false,
        ),
    }
}

/// Fill a held child's template (and its hash) from the child as the API server has it now;
/// a child gone since it was observed is written with `template`, as a missing one is (the
/// same as when the cache already knew it gone: the protected pods were detached from their
/// ReplicaSets first, so a new child's rollout cannot take them).
async fn held_template(
    api: &Api<Deployment>,
    hsd: &HotStandbyDeployment,
    want: &mut Deployment,
    template: &PodTemplateSpec,
) -> Result<()> {
    let replicas = want.spec.replicas.unwrap_or(0);
    match api.get_opt(&want.name_any()).await? {
        Some(current) => {
            child::keep_template_hash(want, &current);
            want.spec.template = current.spec.template;
        }
        None => *want = child::child_deployment(hsd, template.clone(), replicas),
    }
    Ok(())
}

/// Every write of `plan`, in order: pods first, then the child. `Err(Ok(message))`: the API
/// server refused the child (its template); `Err(Err(e))`: any other failure.
pub async fn run(
    ctx: &Ctx,
    hsd: &HotStandbyDeployment,
    ns: &str,
    world: &super::observe::World,
    plan: &Plan<'_>,
) -> std::result::Result<Outcome, std::result::Result<String, crate::Error>> {
    let applied = pods(ctx, hsd, ns, plan).await.map_err(Err)?;
    let replicas = plan.replicas + applied.kept;
    let child = world.child.as_deref();
    let (mut want, held) = wanted_child(hsd, child, &world.template, plan.hold_template, replicas);
    let write = child.is_none_or(|c| !child::child_is_current(c, &want));
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let up = plan.direction == Some(super::plan::Direction::Up);
    if !up {
        write_costs(&pod_api, plan).await?;
    }
    let mut child_written_at = None;
    if write {
        let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
        if held {
            held_template(&api, hsd, &mut want, &world.template)
                .await
                .map_err(Err)?;
        }
        let pp = PatchParams::apply(MANAGER).force();
        match api.patch(&want.name_any(), &pp, &Patch::Apply(&want)).await {
            Ok(_) => child_written_at = Some(std::time::Instant::now()),
            Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
                return Err(Ok(format!(
                    "the API server rejected the child Deployment: {}",
                    s.message
                )));
            }
            Err(e) => return Err(Err(e.into())),
        }
    }
    if up {
        write_costs(&pod_api, plan).await?;
    }
    Ok(Outcome {
        pods: applied,
        replicas,
        wrote_child: write,
        child_written_at,
    })
}

/// Delete the child whose selector changed (immutable on Deployments), if it is still the
/// one observed; a child already gone or replaced is fine.
pub async fn replace_child(ctx: &Ctx, ns: &str, c: &child::ChildDeployment) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: c.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&c.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
