//! The HSD reconciler's writes, in the order the plan needs them:
//! detach protected old-revision pods → retire idle detached pods → delete victims →
//! deletion costs → (then the caller applies the child). Every pod write carries the UID and
//! resourceVersion it was planned on, so a pod that changed since (e.g. turned busy) is
//! left alone; in http mode a pod is probed again right before it is deleted and kept when
//! the fresh answer is busy or fails.
use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};

use super::child;
use super::plan::{BusyState, Plan, PodView, Victim};
use super::Ctx;
use crate::api::hsd::{BusyMode, HotStandbyDeployment};
use crate::Result;

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
async fn still_idle(
    ctx: &Ctx,
    hsd: &HotStandbyDeployment,
    pods: &[PodView],
    victims: &[Victim<'_>],
) -> Vec<bool> {
    if hsd.spec.busy_probe.mode != BusyMode::Http {
        return vec![true; victims.len()];
    }
    let cfg = &hsd.spec.busy_probe.http;
    let checks = victims.iter().map(|v| {
        let ip = pods.iter().find(|p| p.uid == v.uid).and_then(|p| p.ip);
        async move {
            match ip {
                Some(ip) => {
                    let r = ctx.prober.probe(ip, cfg).await;
                    ctx.probes
                        .record(v.uid, r.clone(), std::time::Instant::now());
                    matches!(r, Ok(BusyState::Idle))
                }
                None => false,
            }
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
    pods: &[PodView],
    victims: &[Victim<'_>],
) -> Result<Vec<String>> {
    let idle = still_idle(ctx, hsd, pods, victims).await;
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
    views: &[PodView],
    plan: &Plan<'_>,
) -> Result<Applied> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let detached = detach(&api, hsd, &plan.detach).await?;
    let retired = delete_idle(ctx, &api, hsd, views, &plan.retire).await?;
    let deleted = delete_idle(ctx, &api, hsd, views, &plan.victims).await?;
    crate::controller::cost::write_costs(&api, &plan.costs).await?;
    Ok(Applied {
        kept: (plan.victims.len() - deleted.len()) as i32,
        detached,
        retired,
        deleted,
    })
}
