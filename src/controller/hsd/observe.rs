//! What one HSD reconcile reads: the spec's validity, its child Deployment and counted pods
//! from the caches, and the busy inputs (http answers probed when due). No writes to the
//! API; the only side effect is probing pods whose answers are due (recorded in the
//! operator's probe cache).
//!
//! Invariant: a reconcile that cannot act (invalid spec, a foreign child, a replaced child,
//! a rejected generation) is decided here, before any plan, so nothing is deleted or
//! scaled for it.
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use super::child::{self, child_name};
use super::plan::{self, Observed};
use super::Ctx;
use crate::api::hsd::{BusyMode, HotStandbyDeployment};
use crate::probe;

/// The outcome of observing one HSD.
pub enum Seen {
    /// The spec cannot be acted on: say so (condition + one Warning), do nothing else.
    Invalid {
        reason: &'static str,
        message: String,
    },
    /// The child's selector changed (immutable on Deployments): replace the child.
    ReplaceChild(Arc<child::ChildDeployment>),
    /// The API server refused this generation's template: wait for a new spec.
    Rejected,
    /// Everything the plan needs.
    Ready(Box<World>),
}

/// The observed world of an HSD that can be planned for.
pub struct World {
    /// The pod template the spec asks for.
    pub template: PodTemplateSpec,
    pub child: Option<Arc<child::ChildDeployment>>,
    /// The counted pods as the planner sees them.
    pub views: Vec<plan::PodView>,
    /// The child as the spec wants it (replicas aside), to tell a template change.
    template_changed: bool,
}

impl World {
    /// The planner's input, borrowing from this world.
    pub fn observed<'a>(&'a self, hsd: &'a HotStandbyDeployment, now: Timestamp) -> Observed<'a> {
        Observed {
            spec: &hsd.spec,
            current_replicas: self.child.as_ref().map(|c| c.spec.replicas.unwrap_or(1)),
            our_replicas: self
                .child
                .as_ref()
                .and_then(|c| child::our_replicas(c.as_ref())),
            pods: &self.views,
            pending_since: hsd
                .status
                .as_ref()
                .and_then(|s| s.scale_down_pending_since.as_ref())
                .map(|t| t.0),
            now,
            template_changed: self.template_changed,
        }
    }

    /// Ready replicas of the child, as its status says.
    pub fn ready_replicas(&self) -> i32 {
        self.child
            .as_ref()
            .and_then(|c| c.status.as_ref())
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    }
}

/// Did the API server refuse this generation's template?
fn rejected(hsd: &HotStandbyDeployment) -> bool {
    hsd.status
        .as_ref()
        .and_then(|s| s.rejected_generation)
        .is_some_and(|g| Some(g) == hsd.metadata.generation)
}

/// The spec's template, or every reason the spec cannot be acted on.
fn valid_template(hsd: &HotStandbyDeployment) -> Result<PodTemplateSpec, String> {
    let mut errors = plan::validate(&hsd.spec);
    match child::pod_template(hsd) {
        Ok(t) if errors.is_empty() => return Ok(t),
        Ok(_) => {}
        Err(e) => errors.push(e),
    }
    Err(errors.join("; "))
}

/// Observe one HSD of namespace `ns` from the caches (probing http pods when due).
pub async fn observe(ctx: &Ctx, hsd: &HotStandbyDeployment, ns: &str) -> Seen {
    let template = match valid_template(hsd) {
        Ok(t) => t,
        Err(message) => {
            return Seen::Invalid {
                reason: "InvalidSpec",
                message,
            }
        }
    };
    let name = hsd.name_any();
    let child_ref = ObjectRef::<child::ChildDeployment>::new(&child_name(&name)).within(ns);
    let child = ctx.stores.deployments.get(&child_ref);
    if let Some(c) = &child {
        if !child::owned_by(c.as_ref(), hsd) {
            let message = format!(
                "Deployment {} exists and is not controlled by this HotStandbyDeployment",
                child_name(&name)
            );
            return Seen::Invalid {
                reason: "ChildConflict",
                message,
            };
        }
        if child::selector_changed(c.as_ref(), hsd) {
            return Seen::ReplaceChild(c.clone());
        }
    }
    // A generation whose template the API server refused is not applied again (nor is
    // anything deleted for it) until the spec changes.
    if rejected(hsd) {
        return Seen::Rejected;
    }
    let pods = ctx.stores.members.pods(&ctx.stores.pods, ns, &name);
    let rss = super::super::in_namespace(&ctx.stores.replicasets, ns);
    let (counted, current_rs) = child
        .as_ref()
        .map(|c| child::counted_pods(c.as_ref(), hsd, &rss, &pods))
        .unwrap_or_default();
    if hsd.spec.busy_probe.mode == BusyMode::Http {
        let cfg = &hsd.spec.busy_probe.http;
        probe::probe_due(&ctx.prober, &ctx.probes, &ctx.metrics, cfg, &counted).await;
    }
    let key = format!("{ns}/{name}");
    let views = ctx
        .views
        .views(&key, &counted, hsd, &ctx.probes, current_rs.as_deref());
    let want = child::child_deployment(hsd, template.clone(), 0);
    let template_changed = child
        .as_ref()
        .is_some_and(|c| child::template_changed(c.as_ref(), &want));
    Seen::Ready(Box::new(World {
        template,
        child,
        views,
        template_changed,
    }))
}
