//! The HSJ reconciler's writes, in order: replace broken units, delete idle surplus, create.
//!
//! Invariants:
//! - every Job delete carries the UID and resourceVersion it was planned on (a Job that
//!   changed since is kept) and propagation `Background`, so its pods go with it;
//! - right before a surplus unit is deleted its pods are looked at again, whatever the mode:
//!   annotation mode reads each pod from the API (the Job's resourceVersion says nothing
//!   about its pod's annotations), http and exec probe each pod. A unit is kept unless every
//!   pod answers idle;
//! - creation stops at the first refusal by the API server; a 400/422 is returned as the
//!   reason (the spec is then marked rejected until it changes), anything else is an error.
use std::collections::HashMap;

use futures::future::join_all;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams, Preconditions, PropagationPolicy};
use kube::ResourceExt;

use super::plan::{Plan, Victim};
use super::Ctx;
use crate::api::hsj::{HotStandbyJob, JobBusyMode};
use crate::probe::{self, exec, BusyState};
use crate::{Result, MANAGER};

/// What the writes achieved.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    pub created: Vec<String>,
    pub deleted: Vec<String>,
    pub replaced: Vec<String>,
    /// Surplus units kept: changed since observed, or not idle on a fresh look.
    pub kept: i32,
    /// The API server refused the Job (400/422): its message.
    pub rejected: Option<String>,
}

/// Is this pod idle on a fresh look?
async fn pod_idle(ctx: &Ctx, hsj: &HotStandbyJob, pod: &Pod) -> Result<bool> {
    let probe = &hsj.spec.busy_probe;
    let uid = pod.uid().unwrap_or_default();
    let state = match probe.mode {
        JobBusyMode::Annotation => {
            let api: Api<Pod> =
                Api::namespaced(ctx.client.clone(), &hsj.namespace().unwrap_or_default());
            match api.get_opt(&pod.name_any()).await? {
                None => return Ok(true),
                Some(p) => probe::annotation_state(&p, &probe.annotation_key).0,
            }
        }
        _ if !probe::is_running(pod) => BusyState::Idle,
        JobBusyMode::Http => match probe::pod_ip(pod) {
            None => BusyState::Idle,
            Some(ip) => {
                let r = ctx.http.probe(ip, &probe.http).await;
                ctx.probes
                    .record(&uid, r.clone(), std::time::Instant::now());
                r.unwrap_or(BusyState::Unknown)
            }
        },
        JobBusyMode::Exec => match &probe.exec {
            None => BusyState::Unknown,
            Some(cfg) => {
                let r = exec::probe_pod(&ctx.exec, pod, cfg).await;
                let rec = r.clone().map_err(|e| format!("exec: {e}"));
                ctx.probes.record(&uid, rec, std::time::Instant::now());
                r.unwrap_or(BusyState::Unknown)
            }
        },
    };
    Ok(state == BusyState::Idle)
}

/// Every pod of the unit idle on a fresh look (in parallel; probes are bounded)?
async fn unit_idle(ctx: &Ctx, hsj: &HotStandbyJob, pods: &[&Pod]) -> Result<bool> {
    let checks = join_all(pods.iter().map(|p| pod_idle(ctx, hsj, p))).await;
    let mut all = true;
    for c in checks {
        all &= c?;
    }
    Ok(all)
}

/// Delete the Job unless it changed since observed. Ok(true) when it is gone.
async fn delete_job(api: &Api<Job>, v: &Victim<'_>) -> Result<bool> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(v.uid.to_string()),
            resource_version: Some(v.resource_version.to_string()),
        }),
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match api.delete(v.name, &dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            tracing::info!(job = %v.name, "changed since observed; kept");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Create `n` Jobs like `job`, stopping at a refusal.
async fn create(api: &Api<Job>, job: &Job, n: i32, applied: &mut Applied) -> Result<()> {
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    for _ in 0..n.max(0) {
        match api.create(&pp, job).await {
            Ok(j) => applied.created.push(j.name_any()),
            Err(kube::Error::Api(s)) if s.code == 400 || s.code == 422 => {
                applied.rejected = Some(s.message);
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Every write of `plan`, in order. `pods` holds each unit's pods by Job UID.
pub async fn run(
    ctx: &Ctx,
    hsj: &HotStandbyJob,
    plan: &Plan<'_>,
    pods: &HashMap<&str, Vec<&Pod>>,
    job: &Job,
) -> Result<Applied> {
    let ns = hsj.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let mut applied = Applied::default();
    for v in &plan.replace {
        if delete_job(&api, v).await? {
            ctx.expect.deleted(v.uid);
            applied.replaced.push(v.name.to_string());
        }
    }
    let none = vec![];
    for v in &plan.victims {
        let unit_pods = pods.get(v.uid).unwrap_or(&none);
        if !unit_idle(ctx, hsj, unit_pods).await? {
            tracing::info!(job = %v.name, "a fresh look does not find it idle; kept");
            applied.kept += 1;
            continue;
        }
        if delete_job(&api, v).await? {
            ctx.expect.deleted(v.uid);
            applied.deleted.push(v.name.to_string());
        } else {
            applied.kept += 1;
        }
    }
    create(&api, job, plan.create, &mut applied).await?;
    Ok(applied)
}
