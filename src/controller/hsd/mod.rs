//! HotStandbyDeployment reconciler: observe (reflector caches + busy probes) → pure plan →
//! apply (delete chosen idle pods with preconditions, server-side apply the child, status).
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::controller::pool_pod::PoolPod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::shell::{self, Gate, Shell};
use crate::api::claim::PoolKind;
use crate::api::hsd::{BusyMode, HotStandbyDeployment, HotStandbyDeploymentStatus};
use crate::metrics::{HsdCounts, ObjectLabels};
use crate::probe::http::HttpProber;
use crate::probe::ProbeCache;
use crate::Result;

pub mod apply;
pub mod child;
pub mod members;
pub mod observe;
pub mod plan;
pub mod report;
pub mod views;

use child::{child_name, NAME_LABEL};
use observe::Seen;
use plan::Direction;

pub const CONTROLLER: &str = "hsd";

/// Caches the reconciler reads instead of calling the API.
#[derive(Clone)]
pub struct Stores {
    pub pods: Store<PoolPod>,
    pub replicasets: Store<child::ChildReplicaSet>,
    pub deployments: Store<child::ChildDeployment>,
    /// Which cached pods are whose (fed by the pod watch's events).
    pub members: members::PodMembers,
}

impl Stores {
    /// Stores over caches that already hold what they hold (the pod index built from the
    /// pod cache now; in `run` mode the pod watch keeps it up to date).
    pub fn new(
        pods: Store<PoolPod>,
        replicasets: Store<child::ChildReplicaSet>,
        deployments: Store<child::ChildDeployment>,
    ) -> Self {
        let members = members::PodMembers::of_store(&pods);
        Stores {
            pods,
            replicasets,
            deployments,
            members,
        }
    }
}

/// Everything a reconcile needs.
pub struct Ctx {
    pub shell: Shell,
    pub stores: Stores,
    pub probes: ProbeCache,
    pub prober: HttpProber,
    /// Pod views kept between reconciles (rebuilt only for changed pods).
    pub views: views::ViewCache,
}

crate::controller::deref_to_shell!(Ctx);

impl Ctx {
    /// The gate opens once the pod, ReplicaSet and Deployment stores have listed and
    /// `leading` says this process leads.
    pub fn new(deps: &super::Deps, stores: Stores) -> Self {
        let s = stores.clone();
        let ready = async move {
            Gate::stores_ready(vec![s.pods]).await
                && Gate::stores_ready(vec![s.replicasets]).await
                && Gate::stores_ready(vec![s.deployments]).await
        };
        Ctx {
            shell: Shell::gated(deps, ready),
            stores,
            probes: deps.probes.clone(),
            prober: HttpProber::new(64),
            views: Default::default(),
        }
    }
}

shell::reconciler!(HotStandbyDeployment, HotStandbyDeploymentStatus);

async fn patch_status(
    ctx: &Ctx,
    hsd: &HotStandbyDeployment,
    status: &HotStandbyDeploymentStatus,
) -> Result<bool> {
    ctx.shell.write_own_status(hsd, status).await
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
    ctx.shell.refuse(hsd, &st, reason, message).await
}

async fn reconcile_inner(
    hsd: &HotStandbyDeployment,
    ctx: &Ctx,
    started: Instant,
) -> Result<Action> {
    let ns = super::namespace_of(hsd, "HotStandbyDeployment")?;
    let name = hsd.name_any();
    let now = (ctx.clock)();
    if hsd.metadata.deletion_timestamp.is_some() {
        forget(ctx, &ns, &name);
        return Ok(Action::await_change());
    }
    let mut world = match observe::observe(ctx, hsd, &ns).await {
        Seen::Invalid { reason, message } => {
            return invalid(ctx, hsd, reason, &message, &Time(now)).await
        }
        Seen::ReplaceChild(c) => return replace_child(ctx, hsd, &ns, &c).await,
        Seen::Rejected => return Ok(Action::requeue(ctx.resync)),
        Seen::Ready(w) => w,
    };
    let observed = world.observed(hsd, now);
    let plan = plan::plan(&observed);
    let done = match apply::run(ctx, hsd, &ns, &world, &plan).await {
        Ok(done) => done,
        Err(Ok(msg)) => return invalid(ctx, hsd, "TemplateRejected", &msg, &Time(now)).await,
        Err(Err(e)) => return Err(e),
    };
    let before = report::Before {
        child: child_name(&name),
        replicas: observed.current_replicas.unwrap_or(0),
        was_pending: observed.pending_since.is_some(),
    };
    let pool_pods = world.views.iter().map(|v| &*v.name);
    let was = hsd.status.as_ref().map(|s| &s.held_pods);
    let (held, held_notes) = super::held::observe(&ctx.held, &ns, pool_pods, was);
    let mut notes = report::notes(&plan, &done, &before);
    notes.extend(held_notes);
    ctx.publish_notes(&hsd.object_ref(&()), "Reconcile", &notes)
        .await;
    decisions(ctx, &plan, &done, started);
    let mut status = child::build_status(
        hsd,
        &plan,
        done.replicas,
        world.ready_replicas(),
        &Time(now),
    );
    status.held_pods = held;
    (
        status.claimed_count,
        status.pending_claims,
        status.exhausted_claims,
    ) = super::claim::counts_of(&ctx.claims, &ns, PoolKind::HotStandbyDeployment, &name);
    patch_status(ctx, hsd, &status).await?;
    gauges(ctx, &ns, &name, &plan);
    let next = next_requeue(ctx, hsd, &plan);
    let head = crate::state::json_text(&report::DebugHead {
        mode: hsd.spec.busy_probe.mode,
        plan: &plan,
        replicas_written: done.replicas,
        at: now.to_string(),
    });
    let pods = std::mem::take(&mut world.views);
    ctx.debug
        .set_with_list(debug_key(&ns, &name), head, "pods", pods);
    Ok(Action::requeue(next))
}

/// The selector changed (immutable on Deployments): delete the child; it is re-created.
async fn replace_child(
    ctx: &Ctx,
    hsd: &HotStandbyDeployment,
    ns: &str,
    c: &child::ChildDeployment,
) -> Result<Action> {
    apply::replace_child(ctx, ns, c).await?;
    let note = shell::Note::warning(
        "SelectorChanged",
        format!(
            "selector changed; Deployment {} is replaced (its pods are deleted)",
            c.name_any()
        ),
    );
    ctx.publish_notes(&hsd.object_ref(&()), "Reconcile", &[note])
        .await;
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Metrics of a scale the child was written for.
fn decisions(ctx: &Ctx, plan: &plan::Plan<'_>, done: &apply::Outcome, started: Instant) {
    if let (Some(at), Some(direction)) = (done.child_written_at, plan.direction) {
        let direction = match direction {
            Direction::Down => "down",
            Direction::Up => "up",
        };
        ctx.metrics.hsd.scaled(direction);
        ctx.metrics
            .reaction_latency
            .observe(at.saturating_duration_since(started).as_secs_f64());
    }
}

/// When to look again: the resync, sooner for a pending scale-down, a rollout that holds
/// its template or detaches pods, and the http probe period.
fn next_requeue(ctx: &Ctx, hsd: &HotStandbyDeployment, plan: &plan::Plan<'_>) -> Duration {
    let key = format!("{}/{}", hsd.namespace().unwrap_or_default(), hsd.name_any());
    let mut next = shell::spread(ctx.resync, &key);
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
    next
}

fn gauges(ctx: &Ctx, ns: &str, name: &str, plan: &plan::Plan<'_>) {
    let labels = ObjectLabels::new(ns, name);
    let counts = HsdCounts {
        busy: plan.busy as i64,
        idle: plan.idle as i64,
        unknown: plan.unknown as i64,
        desired: plan.desired as i64,
    };
    ctx.metrics.hsd.set(&labels, &counts);
}

/// Run the controller until shutdown (tests and embedding; `kube-standby run` supervises the
/// parts of [`start`] one by one).
pub async fn run(deps: super::Deps, namespace: Option<String>) {
    start(&deps, namespace).run().await
}

/// The controller and its probe-forgetting loop, as named tasks for the runtime: nothing is
/// reconciled before the caches have listed, nor while `deps.leading` is false.
pub fn start(deps: &super::Deps, namespace: Option<String>) -> super::Started {
    start_with_claims(deps, namespace).0
}

/// [`start`], and the feed of its pod and HSD caches for the claim controller of the same
/// scope (so those are cached once, not twice): each pod event and HSD change is sent
/// there after the cache applied it. Unread (no claim controller), the feed costs nothing.
pub fn start_with_claims(
    deps: &super::Deps,
    namespace: Option<String>,
) -> (super::Started, super::claim::PoolFeed<HotStandbyDeployment>) {
    use super::watch::{in_scope, in_scope_events, strip_managed};
    use futures::StreamExt;
    let ns = namespace.as_deref();
    // Small pages: a page is parsed whole before it is stripped.
    let labelled = watcher::Config::default().labels(NAME_LABEL).page_size(100);
    let (pods, pod_w) = reflector::store::<PoolPod>();
    let (rss, rs_w) = reflector::store::<child::ChildReplicaSet>();
    let (deployments, dep_w) = reflector::store::<child::ChildDeployment>();
    let (hsds, hsd_w) = reflector::store::<HotStandbyDeployment>();
    let (feed, claims_feed) = super::claim::FeedSender::new(pods.clone(), hsds.clone());
    let members = members::PodMembers::default();
    let (index, cache, pod_feed) = (members.clone(), pods.clone(), feed.clone());
    let pod_stream = in_scope_events(deps, ns, labelled.clone(), pod_w, child::strip_pod)
        .filter_map(move |r| {
            let (index, cache, feed) = (index.clone(), cache.clone(), pod_feed.clone());
            async move {
                match r {
                    Ok(ev) => {
                        feed.pod(&ev).await;
                        index.on_event(&cache, ev).map(Ok)
                    }
                    Err(e) => Some(Err(e)),
                }
            }
        });
    let rs_stream = in_scope(deps, ns, labelled.clone(), rs_w, child::strip_replicaset);
    let dep_stream = in_scope(deps, ns, labelled, dep_w, strip_managed);
    let all = watcher::Config::default();
    let hsd_stream = in_scope(deps, ns, all, hsd_w, strip_managed).then(move |r| {
        let feed = feed.clone();
        async move {
            if let Ok(h) = &r {
                let ns = h.metadata.namespace.as_deref();
                feed.pool(ns, PoolKind::HotStandbyDeployment, &h.name_any())
                    .await;
            }
            r
        }
    });
    let stores = Stores {
        pods: pods.clone(),
        replicasets: rss,
        deployments,
        members,
    };
    let ctx = Arc::new(Ctx::new(deps, stores));
    deps.probes
        .register_target(probe_target(pods.clone(), hsds.clone()));
    let probes = ctx.probes.clone();
    let forget_probes = async move { probes.forget_gone(pods, Duration::from_secs(60)).await };
    let held = super::held::trigger(&deps.held, ctx.stores.pods.clone(), |p| {
        super::labelled_owner(NAME_LABEL, p)
    });
    let results = Controller::for_stream(hsd_stream, hsds)
        .with_config(super::controller_config())
        .reconcile_on(held)
        .reconcile_on(super::claim::count_trigger(
            &deps.claims,
            PoolKind::HotStandbyDeployment,
        ))
        .owns_stream(dep_stream)
        .watches_stream(pod_stream, |p| super::labelled_owner(NAME_LABEL, &p))
        .watches_stream(rs_stream, |r| super::labelled_owner(NAME_LABEL, &r))
        .run(reconcile, error_policy, ctx.clone());
    let controller = shell::follow(results, "hsd", ctx.clone(), |c, ns, name| async move {
        forget(&c, &ns, &name);
    });
    let label = super::scope_label(ns);
    let started = super::Started {
        tasks: vec![
            (format!("hsd-{label}"), Box::pin(controller)),
            (format!("hsd-{label}-probes"), Box::pin(forget_probes)),
        ],
    };
    (started, claims_feed)
}

/// The busy guard's way to an HSD pod's http probe: the pod in our pod cache, its HSD by
/// the name label (annotation-mode HSDs answer None).
fn probe_target(
    pods: Store<PoolPod>,
    hsds: Store<HotStandbyDeployment>,
) -> crate::probe::target::Resolver {
    Arc::new(move |ns: &str, name: &str| {
        let pod = pods.get(&ObjectRef::new(name).within(ns))?;
        let hsd = hsds.get(&super::labelled_owner(NAME_LABEL, pod.as_ref())?)?;
        let probe = &hsd.spec.busy_probe;
        (probe.mode == BusyMode::Http).then(|| crate::probe::target::Found {
            probe: crate::probe::target::PoolProbe::Http(probe.http.clone()),
            pod: Arc::new(pod.to_pod()),
        })
    })
}

/// An HSD is gone: drop its debug entry, status memory and per-object gauges.
pub fn forget(ctx: &Ctx, ns: &str, name: &str) {
    ctx.debug.remove(&debug_key(ns, name));
    ctx.shell.forget(ns, name);
    ctx.metrics.hsd.forget(&ObjectLabels::new(ns, name));
    ctx.views.forget(&format!("{ns}/{name}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::target::PoolProbe;

    fn cached_pod(name: &str, label: (&str, &str)) -> PoolPod {
        crate::controller::fixtures::cached_pod(name, label)
    }
    use crate::controller::fixtures::store_of;

    fn hsd(name: &str, mode: &str) -> HotStandbyDeployment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"idleTarget": 1, "selector": {"matchLabels": {"app": "g"}},
                     "busyProbe": {"mode": mode, "http": {"port": 8081, "periodSeconds": 7}},
                     "podTemplate": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}
        }))
        .unwrap()
    }

    /// The guard finds an http HSD's probe through the pod's name label; an annotation-mode
    /// HSD's pods, and pods it does not cache, answer None (no I/O for them).
    #[test]
    fn the_guard_finds_the_http_probe_of_an_hsd_pod() {
        let pods = store_of(vec![
            cached_pod("h-1", (NAME_LABEL, "web")),
            cached_pod("a-1", (NAME_LABEL, "plain")),
            cached_pod("o-1", (NAME_LABEL, "gone")),
        ]);
        let hsds = store_of(vec![hsd("web", "http"), hsd("plain", "annotation")]);
        let r = probe_target(pods, hsds);
        let found = r("ns", "h-1").expect("an http pod");
        assert!(matches!(&found.probe, PoolProbe::Http(h) if h.port == 8081));
        assert_eq!(found.probe.period(), Duration::from_secs(7));
        assert_eq!(found.pod.metadata.uid.as_deref(), Some("uid-h-1"));
        assert!(r("ns", "a-1").is_none(), "annotation mode");
        assert!(r("ns", "o-1").is_none(), "no such HSD");
        assert!(r("ns", "nope").is_none(), "no such pod");
        assert!(r("other", "h-1").is_none(), "another namespace");
        // Registered on the shared cache, the guard reads it from there.
        let probes = ProbeCache::default();
        probes.register_target(r);
        assert!(probes.target("ns", "h-1").is_some());
    }
}
