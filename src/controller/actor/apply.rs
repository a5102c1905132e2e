//! The AsyncActor reconciler's writes, in the order the plan gives them: server-side apply
//! (field manager `kube-standby`) of each object, deletes of ours with a UID precondition,
//! pod-deletion-costs.
//!
//! Invariants:
//! - a write the API server refuses as invalid (400/422) stops the remaining writes and is
//!   reported, never retried in a tight loop; other failures are errors (retried with
//!   backoff by the shell's error policy);
//! - a replica hand-over writes only `spec.replicas`, under its own field manager;
//! - a delete never removes an object that was replaced meanwhile (UID precondition); one
//!   that is already gone is fine.
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::ResourceExt;

use super::build::Kind;
use super::plan::{Action, Plan, HANDOVER_MANAGER};
use super::Ctx;
use crate::api::asya::AsyncActor;
use crate::{Result, MANAGER};

/// What the writes achieved.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// The write the API server refused: (kind, its message).
    pub rejected: Option<(Kind, String)>,
    /// How many writes were made.
    pub writes: usize,
}

fn api(ctx: &Ctx, ns: &str, kind: Kind) -> Api<DynamicObject> {
    Api::namespaced_with(ctx.client.clone(), ns, &kind.api_resource())
}

fn count(ctx: &Ctx, kind: &'static str, op: &'static str) {
    ctx.metrics.actor.wrote(kind, op);
}

/// Execute `plan.actions` in order.
pub async fn run(ctx: &Ctx, actor: &AsyncActor, ns: &str, plan: &Plan) -> Result<Outcome> {
    let mut out = Outcome::default();
    let name = actor.name_any();
    for a in &plan.actions {
        match a {
            Action::Apply { kind, body } => {
                let obj_name = body["metadata"]["name"].as_str().unwrap_or(&name);
                let pp = PatchParams::apply(MANAGER).force();
                match api(ctx, ns, *kind)
                    .patch(obj_name, &pp, &Patch::Apply(body))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 400 || s.code == 422 => {
                        tracing::warn!(kind = kind.name(), message = %s.message, "write refused");
                        out.rejected = Some((*kind, s.message));
                        return Ok(out);
                    }
                    Err(e) => return Err(e.into()),
                }
                count(ctx, kind.name(), "apply");
            }
            Action::Delete { kind, uid } => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                match api(ctx, ns, *kind).delete(&name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
                count(ctx, kind.name(), "delete");
            }
            Action::Handover { kind, replicas } => {
                let ar = kind.api_resource();
                let body = serde_json::json!({"apiVersion": ar.api_version, "kind": ar.kind,
                    "metadata": {"name": name}, "spec": {"replicas": replicas}});
                let pp = PatchParams::apply(HANDOVER_MANAGER).force();
                // A workload that vanished meanwhile cannot be created from a count alone
                // (422): an error, retried, and the next plan sees it gone.
                api(ctx, ns, *kind)
                    .patch(&name, &pp, &Patch::Apply(&body))
                    .await?;
                count(ctx, kind.name(), "handover");
            }
            Action::Costs(costs) => {
                let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
                crate::controller::cost::write_costs(&pods, costs).await?;
                count(ctx, "Pod", "deletion-cost");
            }
        }
        out.writes += 1;
    }
    Ok(out)
}
