//! HotStandbyDeployment reconciler: observe (reflector caches + busy probes) → pure plan →
//! apply (delete chosen idle pods with preconditions, server-side apply the child, status).
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::shell::{self, Gate, Shell};
use crate::api::hsd::{BusyMode, HotStandbyDeployment, HotStandbyDeploymentStatus};
use crate::metrics::{DecisionLabels, Metrics, ObjectLabels};
use crate::probe::http::HttpProber;
use crate::probe::{self, ProbeCache};
use crate::state::DebugState;
use crate::{Error, Result, MANAGER};

pub mod apply;
pub mod child;
pub mod plan;

use child::{child_name, NAME_LABEL};
use plan::{Direction, Observed};

pub const CONTROLLER: &str = "hsd";

/// Caches the reconciler reads instead of calling the API.
#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub replicasets: Store<ReplicaSet>,
    pub deployments: Store<Deployment>,
}

/// Everything a reconcile needs.
pub struct Ctx {
    pub shell: Shell,
    pub stores: Stores,
    pub probes: ProbeCache,
    pub prober: HttpProber,
}

crate::controller::deref_to_shell!(Ctx);

impl Ctx {
    /// The gate opens once the pod, ReplicaSet and Deployment stores have listed and
    /// `leading` says this process leads.
    pub fn new(
        client: Client,
        stores: Stores,
        metrics: Arc<Metrics>,
        debug: DebugState,
        leading: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let gate = Gate::new(leading);
        let s = stores.clone();
        gate.open_when(async move {
            Gate::stores_ready(vec![s.pods]).await
                && Gate::stores_ready(vec![s.replicasets]).await
                && Gate::stores_ready(vec![s.deployments]).await
        });
        Ctx {
            shell: Shell::new(client, metrics, debug, gate),
            stores,
            probes: ProbeCache::default(),
            prober: HttpProber::new(64),
        }
    }
}

fn debug_key(ns: &str, name: &str) -> String {
    format!("{CONTROLLER}/{ns}/{name}")
}

shell::with_status!(HotStandbyDeployment, HotStandbyDeploymentStatus);

/// One reconcile, inside the shell.
pub async fn reconcile(hsd: Arc<HotStandbyDeployment>, ctx: Arc<Ctx>) -> Result<Action> {
    let started = Instant::now();
    let c = &ctx;
    c.shell
        .reconcile_object(CONTROLLER, hsd.as_ref(), |hsd| async move {
            reconcile_inner(&hsd, c, started).await
        })
        .await
}

pub fn error_policy(hsd: Arc<HotStandbyDeployment>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    shell::error_action(CONTROLLER, &hsd.name_any(), err)
}

async fn publish(
    ctx: &Ctx,
    hsd: &HotStandbyDeployment,
    type_: EventType,
    reason: &str,
    note: String,
) {
    ctx.shell
        .publish(&hsd.object_ref(&()), "Reconcile", type_, reason, note)
        .await
}

async fn patch_status(
    ctx: &Ctx,
    hsd: &HotStandbyDeployment,
    status: &HotStandbyDeploymentStatus,
) -> Result<bool> {
    let api: Api<HotStandbyDeployment> =
        Api::namespaced(ctx.client.clone(), &hsd.namespace().unwrap_or_default());
    ctx.shell
        .write_status(&api, hsd, &(), hsd.status.as_ref(), status)
        .await
}

/// A spec we cannot act on: say so in a condition and (once) an Event; no churn.
async fn invalid(
    ctx: &Ctx,
    hsd: &HotStandbyDeployment,
    reason: &str,
    message: &str,
    now: &Time,
) -> Result<Action> {
    let st = child::invalid_status(hsd, reason, message, now);
    if patch_status(ctx, hsd, &st).await? {
        publish(ctx, hsd, EventType::Warning, reason, message.to_string()).await;
    }
    tracing::warn!(reason, message, "HotStandbyDeployment cannot be acted on");
    Ok(Action::requeue(ctx.resync))
}

async fn reconcile_inner(
    hsd: &HotStandbyDeployment,
    ctx: &Ctx,
    started: Instant,
) -> Result<Action> {
    let ns = super::namespace_of(hsd, "HotStandbyDeployment")?;
    let name = hsd.name_any();
    let now = (ctx.clock)();
    let now_t = Time(now);
    if hsd.metadata.deletion_timestamp.is_some() {
        ctx.debug.remove(&debug_key(&ns, &name));
        ctx.forget(&ns, &name);
        return Ok(Action::await_change());
    }

    let mut errors = plan::validate(&hsd.spec);
    let tpl = match child::pod_template(hsd) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let Some(tpl) = tpl.filter(|_| errors.is_empty()) else {
        return invalid(ctx, hsd, "InvalidSpec", &errors.join("; "), &now_t).await;
    };

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let child_ref = ObjectRef::<Deployment>::new(&child_name(&name)).within(&ns);
    let child = ctx.stores.deployments.get(&child_ref);
    if let Some(c) = &child {
        if !child::owned_by(c, hsd) {
            let msg = format!(
                "Deployment {} exists and is not controlled by this HotStandbyDeployment",
                child_name(&name)
            );
            return invalid(ctx, hsd, "ChildConflict", &msg, &now_t).await;
        }
        if child::selector_changed(c, hsd) {
            // spec.selector is immutable on Deployments: replace the child.
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: c.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match deployments.delete(&c.name_any(), &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            publish(
                ctx,
                hsd,
                EventType::Warning,
                "SelectorChanged",
                format!(
                    "selector changed; Deployment {} is replaced (its pods are deleted)",
                    c.name_any()
                ),
            )
            .await;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }

    // A generation whose template the API server refused is not applied again (nor is
    // anything deleted for it) until the spec changes.
    if rejected(hsd) {
        return Ok(Action::requeue(ctx.resync));
    }

    // Observe.
    let pods = super::in_namespace(&ctx.stores.pods, &ns);
    let rss = super::in_namespace(&ctx.stores.replicasets, &ns);
    let (counted, current_rs) = child
        .as_ref()
        .map(|c| child::counted_pods(c, hsd, &rss, &pods))
        .unwrap_or_default();
    if hsd.spec.busy_probe.mode == BusyMode::Http {
        let cfg = &hsd.spec.busy_probe.http;
        probe::probe_due(&ctx.prober, &ctx.probes, &ctx.metrics, cfg, &counted).await;
    }
    let views: Vec<plan::PodView> = counted
        .iter()
        .map(|p| child::pod_view(p, hsd, &ctx.probes, current_rs.as_deref()))
        .collect();
    let want_tpl = child::child_deployment(hsd, tpl.clone(), 0);
    let observed = Observed {
        spec: &hsd.spec,
        current_replicas: child.as_ref().map(|c| c.spec.replicas.unwrap_or(1)),
        our_replicas: child.as_ref().and_then(|c| child::our_replicas(c)),
        pods: &views,
        pending_since: hsd
            .status
            .as_ref()
            .and_then(|s| s.scale_down_pending_since.as_ref())
            .map(|t| t.0),
        now,
        template_changed: child
            .as_ref()
            .is_some_and(|c| child::template_changed(c, &want_tpl)),
    };

    // Plan, then apply: pods first, then the child, then status.
    let plan = plan::plan(&observed);
    let applied = apply::pods(ctx, hsd, &ns, &views, &plan).await?;
    let replicas = plan.replicas + applied.kept;
    // While protected pods leave their ReplicaSet, the child keeps its current template.
    let tpl = match (&child, plan.hold_template) {
        (Some(c), true) => c.spec.template.clone(),
        _ => tpl,
    };
    let want = child::child_deployment(hsd, tpl, replicas);
    let write = child
        .as_ref()
        .is_none_or(|c| !child::child_is_current(c, &want));
    if write {
        let pp = PatchParams::apply(MANAGER).force();
        match deployments
            .patch(&child_name(&name), &pp, &Patch::Apply(&want))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
                let msg = format!(
                    "the API server rejected the child Deployment: {}",
                    s.message
                );
                return invalid(ctx, hsd, "TemplateRejected", &msg, &now_t).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let from = observed.current_replicas.unwrap_or(0);
    report(ctx, hsd, &plan, &applied, write, from, replicas, started).await;

    let ready = child
        .as_ref()
        .and_then(|c| c.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let status = child::build_status(hsd, &plan, replicas, ready, &now_t);
    patch_status(ctx, hsd, &status).await?;
    gauges(ctx, &ns, &name, &plan);
    ctx.debug.set(
        debug_key(&ns, &name),
        json!({ "mode": hsd.spec.busy_probe.mode, "plan": plan, "pods": views, "replicasWritten": replicas, "at": now.to_string() }),
    );

    let mut next = ctx.resync;
    if let Some(d) = plan.requeue_after {
        next = next.min(d + Duration::from_millis(50));
    }
    if plan.hold_template || !plan.detach.is_empty() {
        next = next.min(Duration::from_secs(1));
    }
    if hsd.spec.busy_probe.mode == BusyMode::Http {
        next = next.min(Duration::from_secs(
            hsd.spec.busy_probe.http.period_seconds.max(1) as u64,
        ));
    }
    Ok(Action::requeue(next))
}

/// Events and metrics for what a reconcile did.
#[allow(clippy::too_many_arguments)]
async fn report(
    ctx: &Ctx,
    hsd: &HotStandbyDeployment,
    plan: &plan::Plan<'_>,
    applied: &apply::Applied,
    wrote: bool,
    from: i32,
    replicas: i32,
    started: Instant,
) {
    let numbers = format!(
        "busy={} idle={} desired={}",
        plan.busy, plan.idle, plan.desired
    );
    let child = child_name(&hsd.name_any());
    if let Some((ours, theirs)) = plan.foreign {
        let note = format!("spec.replicas of {child} was changed from {ours} to {theirs} by another actor; set back to {replicas} ({numbers})");
        publish(ctx, hsd, EventType::Warning, "ForeignScaleReverted", note).await;
    }
    for pod in &applied.detached {
        let note = format!("{numbers}: busy pod {pod} of an old template revision left its ReplicaSet; it is deleted once idle");
        publish(ctx, hsd, EventType::Normal, "BusyPodDetached", note).await;
    }
    for pod in &applied.retired {
        let note = format!("{numbers}: detached pod {pod} is idle now and was deleted");
        publish(ctx, hsd, EventType::Normal, "DetachedPodRetired", note).await;
    }
    if let (true, Some(direction)) = (wrote, plan.direction) {
        let (reason, dir) = match direction {
            Direction::Down => ("ScaledDown", "down"),
            Direction::Up => ("ScaledUp", "up"),
        };
        let mut note = format!("{numbers}: replicas {from} -> {replicas}");
        if !applied.deleted.is_empty() {
            note.push_str(&format!(
                "; deleted idle pods {}",
                applied.deleted.join(", ")
            ));
        }
        if applied.kept > 0 {
            note.push_str(&format!(
                "; kept {} pod(s) that changed since observed",
                applied.kept
            ));
        }
        publish(ctx, hsd, EventType::Normal, reason, note).await;
        ctx.metrics
            .hsd_scale_decisions
            .get_or_create(&DecisionLabels { direction: dir })
            .inc();
        ctx.metrics
            .reaction_latency
            .observe(started.elapsed().as_secs_f64());
    }
    let was_pending = hsd
        .status
        .as_ref()
        .is_some_and(|s| s.scale_down_pending_since.is_some());
    if let (Some(due), false) = (plan.pending_due, was_pending) {
        let note = format!("{numbers}: scaling down from {replicas} at {due} unless desired rises");
        publish(ctx, hsd, EventType::Normal, "ScaleDownPending", note).await;
    }
}

fn gauges(ctx: &Ctx, ns: &str, name: &str, plan: &plan::Plan<'_>) {
    let labels = ObjectLabels {
        namespace: ns.to_string(),
        name: name.to_string(),
    };
    let m = &ctx.metrics;
    m.hsd_busy.get_or_create(&labels).set(plan.busy as i64);
    m.hsd_idle.get_or_create(&labels).set(plan.idle as i64);
    m.hsd_unknown
        .get_or_create(&labels)
        .set(plan.unknown as i64);
    m.hsd_desired
        .get_or_create(&labels)
        .set(plan.desired as i64);
}

/// Did the API server refuse this generation's template?
fn rejected(hsd: &HotStandbyDeployment) -> bool {
    hsd.status
        .as_ref()
        .and_then(|s| s.rejected_generation)
        .is_some_and(|g| Some(g) == hsd.metadata.generation)
}

/// Map an object carrying our name label to its HSD.
fn owner_hsd<K: Resource>(obj: &K) -> Option<ObjectRef<HotStandbyDeployment>> {
    let name = obj.meta().labels.as_ref()?.get(NAME_LABEL)?;
    Some(ObjectRef::new(name).within(obj.meta().namespace.as_deref()?))
}

/// Run the controller until shutdown; nothing is reconciled before the caches have listed,
/// nor while `deps.leading` is false. The probe-forgetting loop runs inside this future, so
/// whatever supervises it supervises both.
pub async fn run(deps: super::Deps, namespace: Option<String>) {
    use super::watch::tracked_kind;
    let ns = namespace.as_deref();
    let client = deps.client.clone();
    // Small pages: a page is parsed whole before it is stripped.
    let labelled = watcher::Config::default().labels(NAME_LABEL).page_size(100);
    let (pods, pod_w) = reflector::store::<Pod>();
    let (rss, rs_w) = reflector::store::<ReplicaSet>();
    let (deps_store, dep_w) = reflector::store::<Deployment>();
    let (hsds, hsd_w) = reflector::store::<HotStandbyDeployment>();
    let c = &deps.caches;
    let pod_stream = tracked_kind(
        c,
        super::scoped::<Pod>(client.clone(), ns),
        ns,
        labelled.clone(),
        true,
    )
    .modify(child::strip_pod)
    .reflect(pod_w)
    .touched_objects();
    let rs_stream = tracked_kind(
        c,
        super::scoped::<ReplicaSet>(client.clone(), ns),
        ns,
        labelled.clone(),
        true,
    )
    .modify(|rs| rs.managed_fields_mut().clear())
    .reflect(rs_w)
    .touched_objects();
    let dep_stream = tracked_kind(
        c,
        super::scoped::<Deployment>(client.clone(), ns),
        ns,
        labelled,
        true,
    )
    .modify(|d| d.managed_fields_mut().clear())
    .reflect(dep_w)
    .touched_objects();
    let hsd_stream = tracked_kind(
        c,
        super::scoped::<HotStandbyDeployment>(client.clone(), ns),
        ns,
        watcher::Config::default(),
        true,
    )
    .reflect(hsd_w)
    .touched_objects();
    let stores = Stores {
        pods: pods.clone(),
        replicasets: rss.clone(),
        deployments: deps_store.clone(),
    };
    let ctx = Arc::new(Ctx::new(
        client,
        stores,
        deps.metrics.clone(),
        deps.debug.clone(),
        deps.leading.clone(),
    ));
    let forget_probes = {
        // Forget probe results of pods that are gone.
        let (pods, probes) = (pods.clone(), ctx.probes.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let live: std::collections::HashSet<String> =
                    pods.state().iter().filter_map(|p| p.uid()).collect();
                probes.retain(&|uid| live.contains(uid));
            }
        }
    };
    let controller = Controller::for_stream(hsd_stream, hsds)
        .owns_stream(dep_stream)
        .watches_stream(pod_stream, |p| owner_hsd(&p))
        .watches_stream(rs_stream, |r| owner_hsd(&r))
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| {
            let ctx = ctx.clone();
            async move {
                if let Some((ns, name)) = shell::gone_object(&r) {
                    forget(&ctx, &ns, &name);
                } else if let Err(e) = r {
                    tracing::debug!(error = %e, "hsd controller event");
                }
            }
        });
    tokio::select! {
        _ = controller => {},
        _ = forget_probes => {},
    }
}

/// An HSD is gone: drop its debug entry, status memory and per-object gauges.
pub fn forget(ctx: &Ctx, ns: &str, name: &str) {
    ctx.debug.remove(&debug_key(ns, name));
    ctx.shell.forget(ns, name);
    ctx.metrics.forget_hsd(&ObjectLabels {
        namespace: ns.to_string(),
        name: name.to_string(),
    });
}
