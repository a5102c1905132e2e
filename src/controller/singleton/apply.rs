//! The StatefulSingleton reconciler's writes, in the order [`super::plan::steps`] gives them:
//! the wrapper ConfigMap (server-side apply), the status, then the handover's pod deletes,
//! pod patches, pods/status patches and ReplicaSet scale-to-0.
//!
//! Invariants:
//! - steps run strictly in order and a failed write stops the rest: since the status (the
//!   planner's memory) comes before any release, a crash or error between the two can
//!   never leave a released pod unrecorded;
//! - every pod write is bound to the pod the plan saw (UID precondition on deletes, the
//!   UID in the patch body of a release): a pod replaced meanwhile is never touched;
//! - a pod already gone (404), or replaced (409), is not an error: that action did not
//!   take effect and is left out of [`Outcome::done`]; every other error is returned,
//!   typed, with what was done before it ([`Failed`]), never dropped.
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use serde_json::json;

use super::plan::{Action, Outcome, Step};
use super::{observe, Ctx};
use crate::api::singleton::{
    StatefulSingleton, StatefulSingletonStatus, EPOCH_ANNOTATION, READY_CONDITION,
    RELEASED_ANNOTATION, WRAPPER_CONFIGMAP,
};
use crate::{Error, MANAGER};

/// The object a reconcile writes for, and the status the plan leads to.
pub struct Target<'a> {
    pub obj: &'a DynamicObject,
    pub ar: &'a ApiResource,
    /// `obj` read as a StatefulSingleton, its status the one the reconcile started from.
    pub singleton: &'a StatefulSingleton,
    pub status: &'a StatefulSingletonStatus,
    pub namespace: &'a str,
}

/// A write failed: what was done before it, and its error (the reconcile returns it).
#[derive(Debug)]
pub struct Failed {
    pub outcome: Outcome,
    pub error: Error,
}

/// Did a write take effect (false: its pod was gone or replaced)?
type Effect = Result<bool, Error>;

/// 404 (and, when `conflict_too`, 409) means the pod the plan saw is gone: no effect.
fn effect<T>(res: kube::Result<T>, conflict_too: bool) -> Effect {
    match res {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || (conflict_too && e.code == 409) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Execute `steps` in order.
pub async fn run(
    ctx: &Ctx,
    t: &Target<'_>,
    steps: &[Step],
    now: Timestamp,
) -> Result<Outcome, Failed> {
    let mut outcome = Outcome::default();
    for step in steps {
        let res = match step {
            Step::ConfigMap => configmap(ctx, t.namespace).await,
            Step::Status => status(ctx, t).await,
            Step::Handover(a) => handover(ctx, t, a, now).await,
        };
        match (res, step) {
            (Ok(true), Step::Handover(a)) => outcome.done.push(a.clone()),
            (Ok(_), _) => {}
            (Err(error), _) => return Err(Failed { outcome, error }),
        }
    }
    outcome.complete = true;
    Ok(outcome)
}

async fn configmap(ctx: &Ctx, ns: &str) -> Effect {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    api.patch(
        WRAPPER_CONFIGMAP,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&observe::wrapper_configmap(ns)),
    )
    .await?;
    tracing::info!(namespace = ns, "wrapper ConfigMap written");
    Ok(true)
}

async fn status(ctx: &Ctx, t: &Target<'_>) -> Effect {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), t.namespace, t.ar);
    ctx.shell
        .write_status(&api, t.obj, t.ar, t.singleton.status.as_ref(), t.status)
        .await
}

async fn handover(ctx: &Ctx, t: &Target<'_>, a: &Action, now: Timestamp) -> Effect {
    let ns = t.namespace;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    match a {
        Action::Delete { name, uid, .. } => {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            effect(pods.delete(name, &dp).await, true)
        }
        Action::ScaleToZero { replicaset } => {
            let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
            let body = json!({"spec": {"replicas": 0}});
            api.patch(replicaset, &PatchParams::default(), &Patch::Merge(body))
                .await?;
            Ok(true)
        }
        Action::Release { name, uid } => {
            // The epoch the status (written before this step) recorded for this release.
            let mut annotations = serde_json::Map::new();
            annotations.insert(RELEASED_ANNOTATION.into(), now.to_string().into());
            if let Some(epoch) = t.status.epoch {
                annotations.insert(EPOCH_ANNOTATION.into(), epoch.to_string().into());
            }
            let patch = json!({"metadata": {"uid": uid, "annotations": annotations}});
            let res = pods
                .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await;
            if !effect(res, true)? {
                return Ok(false);
            }
            mark_ready(&pods, name, now).await
        }
        Action::MarkReady { name, .. } => mark_ready(&pods, name, now).await,
    }
}

/// The singleton-ready pod condition (a pod gone meanwhile: no effect).
async fn mark_ready(pods: &Api<Pod>, name: &str, now: Timestamp) -> Effect {
    let cond = json!({"status": {"conditions": [{"type": READY_CONDITION, "status": "True",
        "reason": "Released", "message": "released by kube-standby",
        "lastTransitionTime": now.to_string()}]}});
    let res = pods
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(cond))
        .await;
    effect(res, false)
}
