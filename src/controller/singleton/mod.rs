//! StatefulSingleton reconciler: observe (pod, node and ReplicaSet indexes, ConfigMap and
//! singleton stores: `observe.rs`) → pure handover plan, status, ordered writes and Events
//! (`plan.rs`, `observe::status`) → apply (`apply.rs`) → Events and memory, inside the
//! shared shell.
//!
//! Invariants:
//! - status (the planner's memory) is written *before* a release, so a crash between the
//!   two can never leave a released pod unrecorded (`plan::steps`, run in order by
//!   `apply::run`);
//! - nothing is reconciled before the pod, node, ReplicaSet, ConfigMap and singleton caches
//!   have listed and this process leads (the shell's gate): a Node missing from an unsynced
//!   cache is never taken as deleted;
//! - Events are decided as data (`plan::notes`) from what `apply` achieved, and published
//!   once the writes are done; a failed write's error is returned, never dropped;
//! - a pod, ReplicaSet or Node event reconciles the singletons it concerns at once.
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject};
use kube::runtime::controller::{Action as KAction, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::broadcast;

use super::index::{self, Index};
use super::shell::{self, Gate, Shell};
use super::watch::{resource_name, tracked, tracked_kind};
use super::Deps;
use crate::api::singleton::{
    selector_matches, CompactLabels, StatefulSingleton, LEGACY_GROUP, WRAPPER_CONFIGMAP,
};
use crate::{Error, Result};

pub mod apply;
pub mod observe;
pub mod plan;

use plan::{Action, Outcome, Phase, Plan};

pub const CONTROLLER: &str = "singleton";

/// The ApiResource of StatefulSingleton in `group` (the main group or the seed's legacy one).
pub fn api_resource(group: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: "StatefulSingleton".into(),
        plural: "statefulsingletons".into(),
    }
}

/// Read a StatefulSingleton of either group.
pub fn from_dynamic(obj: &DynamicObject) -> Result<StatefulSingleton> {
    let mut v = serde_json::to_value(obj)?;
    v["apiVersion"] = "apps.statefulsingleton.com/v1".into();
    v["kind"] = "StatefulSingleton".into();
    serde_json::from_value(v).map_err(|e| Error::InvalidObject {
        kind: "StatefulSingleton",
        name: obj.name_any(),
        reason: e.to_string(),
    })
}

/// Caches the reconciler reads.
#[derive(Clone)]
pub struct Stores {
    pub pods: Index<observe::PodFacts>,
    pub nodes: Index<plan::NodeState>,
    /// Every ReplicaSet of the scope, as the facts the planner reads (a surge rollout).
    pub replicasets: Index<plan::RsInfo>,
    pub configmaps: Store<ConfigMap>,
    /// StatefulSingletons of both groups (for overlap and the webhook).
    pub singletons: Vec<Store<DynamicObject>>,
}

impl Stores {
    /// All StatefulSingletons of a namespace, both groups, typed.
    pub fn singletons_in(&self, ns: &str) -> Vec<Arc<StatefulSingleton>> {
        self.singletons
            .iter()
            .flat_map(|s| s.state())
            .filter(|o| o.namespace().as_deref() == Some(ns))
            .filter_map(|o| from_dynamic(&o).ok().map(Arc::new))
            .collect()
    }
}

pub struct Ctx {
    pub shell: Shell,
    pub stores: Stores,
    /// When a reconcile first saw "no instance present, a successor waits", per singleton,
    /// and how long after the pod event that showed it (the detection part of the gap).
    gone_seen: Mutex<HashMap<String, (Instant, Option<Duration>)>>,
    /// When the first pod event since the last reconcile arrived, per singleton (set by
    /// the pod trigger, taken by the next reconcile).
    pod_events: Arc<Mutex<HashMap<String, Instant>>>,
    /// Agent errors already announced by an event: (pod UID, message), per singleton.
    agent_reported: Mutex<HashMap<String, BTreeSet<(String, String)>>>,
}

crate::controller::deref_to_shell!(Ctx);

impl Ctx {
    /// The gate opens once the pod, node, ReplicaSet, ConfigMap and StatefulSingleton caches
    /// have listed and `leading` says this process leads: a Node missing from an unsynced
    /// store is never taken as deleted, and no release happens before the status memory has
    /// been read.
    pub fn new(deps: &super::Deps, stores: Stores) -> Self {
        let s = stores.clone();
        let ready = async move {
            s.pods.ready().await
                && s.nodes.ready().await
                && s.replicasets.ready().await
                && Gate::stores_ready(vec![s.configmaps]).await
                && Gate::stores_ready(s.singletons).await
        };
        Ctx {
            shell: Shell::gated(deps, ready),
            stores,
            gone_seen: Mutex::default(),
            pod_events: Arc::default(),
            agent_reported: Mutex::default(),
        }
    }

    /// When the first pod event since the last reconcile of `key` arrived, if one did.
    fn take_pod_event(&self, key: &str) -> Option<Instant> {
        self.pod_events.lock().ok().and_then(|mut m| m.remove(key))
    }

    /// Agent errors already announced for the singleton under `key`.
    fn reported(&self, key: &str) -> BTreeSet<(String, String)> {
        self.agent_reported
            .lock()
            .ok()
            .and_then(|m| m.get(key).cloned())
            .unwrap_or_default()
    }

    /// Gap bookkeeping: the first time a reconcile sees "nothing present, a successor
    /// waits" (or a release waiting for a lost node).
    fn gap_start(&self, key: &str, plan: &Plan, started: Instant, event: Option<Instant>) {
        let waiting_release = plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::Release { .. }));
        if let Ok(mut g) = self.gone_seen.lock() {
            if waiting_release || plan.node_lost.is_some() {
                let detection = event.map(|e| started.saturating_duration_since(e));
                g.entry(key.to_string()).or_insert((started, detection));
            }
        }
    }

    /// The gap of a release that took effect (its bookkeeping is then forgotten).
    fn take_gap(&self, key: &str, outcome: &Outcome) -> Option<plan::HandoverGap> {
        if !outcome
            .done
            .iter()
            .any(|a| matches!(a, Action::Release { .. }))
        {
            return None;
        }
        let (seen, detection) = self.gone_seen.lock().ok()?.remove(key)?;
        Some(plan::HandoverGap {
            detection,
            release: seen.elapsed(),
        })
    }

    /// After the writes: the Events of what they achieved, then the gap and timeout
    /// metrics and the agent errors announced; the failed write's error, if one failed.
    async fn finish(
        &self,
        reference: &ObjectReference,
        key: &str,
        mut events: plan::NoteInput<'_>,
        applied: std::result::Result<Outcome, apply::Failed>,
    ) -> Result<()> {
        let (outcome, error) = match applied {
            Ok(o) => (o, None),
            Err(f) => (f.outcome, Some(f.error)),
        };
        events.gap = self.take_gap(key, &outcome);
        let notes = plan::notes(&events, &outcome);
        self.publish_notes(reference, "Handover", &notes).await;
        self.record(key, &events, &outcome);
        error.map_or(Ok(()), Err)
    }

    /// What follows from the outcome besides Events: the handover gap of a release, and,
    /// once every write is done, the timeout counter and the agent errors announced.
    fn record(&self, key: &str, events: &plan::NoteInput<'_>, outcome: &Outcome) {
        let (plan, agents) = (events.plan, events.agents);
        if let Some(gap) = events.gap {
            let m = &self.metrics;
            m.singleton.handover_gap.observe(gap.total().as_secs_f64());
            m.singleton.release.observe(gap.release.as_secs_f64());
            if let Some(d) = gap.detection {
                m.singleton.detection.observe(d.as_secs_f64());
            }
        }
        if !outcome.complete {
            return;
        }
        if plan.newly_timed_out {
            self.metrics.singleton.timeouts.inc();
        }
        if let Ok(mut m) = self.agent_reported.lock() {
            if agents.reported.is_empty() {
                m.remove(key);
            } else {
                m.insert(key.to_string(), agents.reported.clone());
            }
        }
    }

    /// Drop what this process keeps for a singleton that is gone or going.
    fn drop_memory(&self, key: &str, ns: &str, name: &str) {
        self.debug.remove(key);
        self.metrics.singleton.epoch.remove(&epoch_labels(ns, name));
        if let Ok(mut m) = self.pod_events.lock() {
            m.remove(key);
        }
        if let Ok(mut g) = self.gone_seen.lock() {
            g.remove(key);
        }
        if let Ok(mut m) = self.agent_reported.lock() {
            m.remove(key);
        }
        self.shell.forget(ns, name);
    }
}

fn epoch_labels(ns: &str, name: &str) -> crate::metrics::ObjectLabels {
    crate::metrics::ObjectLabels {
        namespace: ns.to_string(),
        name: name.to_string(),
    }
}

fn debug_key(ar: &ApiResource, ns: &str, name: &str) -> String {
    format!("{CONTROLLER}/{}/{ns}/{name}", ar.group)
}

pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<(Ctx, ApiResource)>) -> Result<KAction> {
    let span = tracing::info_span!("reconcile", controller = CONTROLLER, ns = obj.namespace().unwrap_or_default(), name = %obj.name_any());
    let body = reconcile_inner(&obj, &ctx.0, &ctx.1, Instant::now());
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    ctx.0.shell.reconcile(CONTROLLER, &key, span, body).await
}

pub fn error_policy(obj: Arc<DynamicObject>, err: &Error, ctx: Arc<(Ctx, ApiResource)>) -> KAction {
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    ctx.0.shell.retry_after(CONTROLLER, &key, err)
}

async fn reconcile_inner(
    obj: &DynamicObject,
    ctx: &Ctx,
    ar: &ApiResource,
    started: Instant,
) -> Result<KAction> {
    let ns = super::namespace_of(obj, "StatefulSingleton")?;
    let mut s = from_dynamic(obj)?;
    // The status is the planner's memory: start from what we last wrote if the cache lags.
    s.status = ctx.last_status(&s, s.status.as_ref());
    let key = debug_key(ar, &ns, &s.name_any());
    if s.metadata.deletion_timestamp.is_some() {
        ctx.drop_memory(&key, &ns, &s.name_any());
        return Ok(KAction::await_change());
    }
    let pod_event = ctx.take_pod_event(&key);
    let now = (ctx.clock)();
    let max = s.spec.max_transition_time;
    let view = observe::observe(&ctx.stores, &s, &ns);
    let handover = plan::handover(&view.observed(now.as_second(), max), view.invalid);
    ctx.gap_start(&key, &handover, started, pod_event);
    let agents = plan::agents(&view.pods, &ctx.reported(&key));
    let status = observe::status(&s, &handover, &view.overlap, view.invalid, &agents, now);
    let steps = plan::steps(view.configmap_stale, &handover);
    let target = apply::Target {
        obj,
        ar,
        singleton: &s,
        status: &status,
        namespace: &ns,
    };
    let applied = apply::run(ctx, &target, &steps, now).await;
    let events = plan::NoteInput {
        plan: &handover,
        before: &view.memory,
        node_lost_before: view.node_lost_before,
        max_transition_seconds: max,
        agents: &agents,
        gap: None,
    };
    ctx.finish(&obj.object_ref(ar), &key, events, applied)
        .await?;
    if let Some(e) = status.epoch {
        ctx.metrics
            .singleton
            .epoch
            .get_or_create(&epoch_labels(&ns, &s.name_any()))
            .set(e);
    }
    ctx.debug.set(
        key,
        json!({"plan": handover, "pods": view.pods, "nodes": view.nodes, "agents": agents.failing}),
    );
    Ok(KAction::requeue(requeue_after(
        &handover, max, now, ctx.resync,
    )))
}

/// The safety-net resync, or sooner when a handover reaches maxTransitionTime.
fn requeue_after(plan: &Plan, max_transition: i64, now: Timestamp, resync: Duration) -> Duration {
    match (plan.phase, plan.memory.transition_since) {
        (Phase::Transitioning | Phase::Blocked, Some(since)) if !plan.timed_out => {
            let due = since + max_transition - now.as_second();
            if due > 0 {
                resync.min(Duration::from_secs(due as u64 + 1))
            } else {
                resync
            }
        }
        _ => resync,
    }
}

/// A StatefulSingleton is gone: drop what we kept for it, and the namespace's wrapper
/// ConfigMap once no StatefulSingleton and no pod in the namespace needs it.
pub async fn forget(ctx: &Ctx, ar: &ApiResource, ns: &str, name: &str) {
    ctx.drop_memory(&debug_key(ar, ns, name), ns, name);
    if !ctx.gate.is_open() || !ctx.stores.singletons_in(ns).is_empty() {
        return;
    }
    let mounted = ctx
        .stores
        .pods
        .in_namespace(ns)
        .iter()
        .any(|p| p.mounts_wrapper);
    let ours = ctx
        .stores
        .configmaps
        .get(&ObjectRef::new(WRAPPER_CONFIGMAP).within(ns))
        .is_some_and(|c| {
            observe::configmap_current(&c)
                || c.labels().contains_key("app.kubernetes.io/managed-by")
        });
    if mounted || !ours {
        return;
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    match api
        .delete(WRAPPER_CONFIGMAP, &DeleteParams::default())
        .await
    {
        Ok(_) => tracing::info!(
            namespace = ns,
            "wrapper ConfigMap removed: no singleton uses it"
        ),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => {
            tracing::warn!(namespace = ns, error = %e, "could not remove the wrapper ConfigMap")
        }
    }
}

/// The cluster-wide Node cache: built once by the runtime and shared by every scope.
#[derive(Clone)]
pub struct Nodes {
    pub index: Index<plan::NodeState>,
    changes: tokio::sync::broadcast::Sender<()>,
}

impl Nodes {
    /// The Node index, and the watch task that feeds it (for the runtime to supervise).
    pub fn watch(deps: &Deps) -> (Nodes, futures::future::BoxFuture<'static, ()>) {
        let index: Index<plan::NodeState> = Index::default();
        let (changes, _) = tokio::sync::broadcast::channel::<()>(256);
        let events = tracked_kind(
            &deps.caches,
            Api::<Node>::all(deps.client.clone()),
            None,
            watcher::Config::default(),
            true,
        );
        let tx = changes.clone();
        let task = index::feed(events, index.clone(), observe::node_state).for_each(move |_| {
            let _ = tx.send(());
            async {}
        });
        (Nodes { index, changes }, Box::pin(task))
    }
}

/// The singleton machinery of one scope, built but not yet running: the stores (for the
/// webhook and the release service) and the tasks (watch streams and one controller per
/// group) for the runtime to supervise. Readiness follows the watches through
/// `deps.caches`.
pub struct Started {
    pub stores: Stores,
    pub tasks: Vec<Task>,
}

/// A supervised task of the scope.
type Task = BoxFuture<'static, ()>;
/// Announces each changed ReplicaSet: (namespace, name).
type RsChanges = broadcast::Sender<Arc<(String, String)>>;
/// Announces each changed pod.
type PodChanges = broadcast::Sender<Arc<observe::PodFacts>>;

/// What reconciles a singleton besides its own events: pods (the facts), ReplicaSets
/// (namespace, name) and Nodes.
#[derive(Clone)]
struct Triggers {
    pods: PodChanges,
    replicasets: RsChanges,
    nodes: broadcast::Sender<()>,
}

/// Build the stores and controllers of one scope; Nodes come from the shared `nodes`.
/// Both groups are always watched: one whose CRD is not served yet is retried with backoff
/// (and named by `/readyz`) until it is.
pub fn start(deps: &Deps, namespace: Option<String>, nodes: &Nodes) -> Started {
    let ns = namespace.as_deref();
    let (pods, pod_tx, pod_task) = watch_pods(deps, ns);
    let (configmaps, cm_task) = watch_configmaps(deps, ns);
    let (replicasets, rs_tx, rs_task) = watch_replicasets(deps, ns);
    let groups = [
        api_resource("apps.statefulsingleton.com"),
        api_resource(LEGACY_GROUP),
    ];
    let watched: Vec<_> = groups
        .iter()
        .map(|ar| watch_singletons(deps, ns, ar))
        .collect();
    let stores = Stores {
        pods,
        nodes: nodes.index.clone(),
        replicasets,
        configmaps,
        singletons: watched.iter().map(|(r, _)| r.clone()).collect(),
    };
    let triggers = Triggers {
        pods: pod_tx,
        replicasets: rs_tx,
        nodes: nodes.changes.clone(),
    };
    let mut tasks = vec![pod_task, cm_task];
    for (ar, (reader, stream)) in groups.into_iter().zip(watched) {
        tasks.push(controller(deps, &stores, &triggers, ar, reader, stream));
    }
    tasks.push(rs_task);
    Started { stores, tasks }
}

/// The singleton controller's pod watch: every pod but pool pods.
fn pod_watch_config() -> watcher::Config {
    watcher::Config::default().labels(&crate::api::not_pool_pods())
}

/// Every pod of the scope but pool pods (never singleton instances: the webhook does not
/// gate them) as facts, and a channel that announces each changed pod.
fn watch_pods(deps: &Deps, ns: Option<&str>) -> (Index<observe::PodFacts>, PodChanges, Task) {
    watch_facts(
        deps,
        ns,
        pod_watch_config(),
        observe::pod_facts,
        observe::pod_facts,
        4096,
    )
}

/// Every ReplicaSet of the scope as the planner's small facts (a singleton's pods carry no
/// label of ours, so no label selector can narrow the watch), and a channel that
/// announces each changed ReplicaSet.
fn watch_replicasets(deps: &Deps, ns: Option<&str>) -> (Index<plan::RsInfo>, RsChanges, Task) {
    let announce = |rs: &ReplicaSet| (rs.namespace().unwrap_or_default(), rs.name_any());
    watch_facts(
        deps,
        ns,
        watcher::Config::default(),
        observe::rs_info,
        announce,
        1024,
    )
}

/// Every `K` of the scope as facts `F` (the objects are not kept), and a channel that
/// announces each changed object as `A`. Small pages: a page is parsed whole.
fn watch_facts<K, F, A>(
    deps: &Deps,
    ns: Option<&str>,
    config: watcher::Config,
    facts: fn(&K) -> F,
    announce: fn(&K) -> A,
    capacity: usize,
) -> (Index<F>, broadcast::Sender<Arc<A>>, Task)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    F: Send + Sync + 'static,
    A: Send + Sync + 'static,
{
    let index: Index<F> = Index::default();
    let (tx, _) = broadcast::channel::<Arc<A>>(capacity);
    let events = tracked_kind(
        &deps.caches,
        super::scoped::<K>(deps.client.clone(), ns),
        ns,
        config.page_size(100),
        true,
    );
    let sender = tx.clone();
    let task = index::feed(events, index.clone(), facts).for_each(move |o| {
        let _ = sender.send(Arc::new(announce(&o)));
        async {}
    });
    (index, tx, Box::pin(task))
}

/// The namespace's wrapper ConfigMap, by name.
fn watch_configmaps(deps: &Deps, ns: Option<&str>) -> (Store<ConfigMap>, Task) {
    let (store, writer) = reflector::store::<ConfigMap>();
    let stream = super::watch::in_scope::<ConfigMap>(
        deps,
        ns,
        watcher::Config::default().fields(&format!("metadata.name={WRAPPER_CONFIGMAP}")),
        writer,
        super::watch::strip_managed,
    );
    (store, Box::pin(stream.for_each(|_| async {})))
}

/// The StatefulSingletons of one group: their store, and the stream a controller runs on.
fn watch_singletons(
    deps: &Deps,
    ns: Option<&str>,
    ar: &ApiResource,
) -> (
    Store<DynamicObject>,
    impl Stream<Item = std::result::Result<DynamicObject, watcher::Error>> + Send + 'static,
) {
    let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
    let store = writer.as_reader();
    let stream = tracked(
        &deps.caches,
        super::scoped_with(deps.client.clone(), ns, ar),
        watcher::Config::default(),
        resource_name::<DynamicObject>(ar, ns),
        true,
    )
    .reflect(writer)
    .touched_objects();
    (store, stream)
}

/// The controller of one group, reconciling on its own events and on `triggers`; a
/// singleton that is gone is forgotten.
fn controller(
    deps: &Deps,
    stores: &Stores,
    triggers: &Triggers,
    ar: ApiResource,
    reader: Store<DynamicObject>,
    stream: impl Stream<Item = std::result::Result<DynamicObject, watcher::Error>> + Send + 'static,
) -> Task {
    let ctx = Arc::new((Ctx::new(deps, stores.clone()), ar.clone()));
    let g = &ar.group;
    let stamps = ctx.0.pod_events.clone();
    let group = ar.clone();
    let pods = trigger(triggers.pods.subscribe(), stores, g, pod_refs).inspect(move |r| {
        let key = debug_key(&group, r.namespace.as_deref().unwrap_or_default(), &r.name);
        if let Ok(mut m) = stamps.lock() {
            m.entry(key).or_insert_with(Instant::now);
        }
    });
    let replicasets = trigger(triggers.replicasets.subscribe(), stores, g, replicaset_refs);
    let nodes = trigger(triggers.nodes.subscribe(), stores, g, waiting_refs);
    let janitor = ctx.clone();
    Box::pin(async move {
        Controller::for_stream_with(stream, reader, ar)
            .with_config(super::controller_config())
            .reconcile_on(pods)
            .reconcile_on(replicasets)
            .reconcile_on(nodes)
            .run(reconcile, error_policy, ctx)
            .for_each(|r| {
                let janitor = janitor.clone();
                async move {
                    if let Some((ns, name)) = shell::gone_object(&r) {
                        forget(&janitor.0, &janitor.1, &ns, &name).await;
                    } else if let Err(e) = r {
                        tracing::debug!(error = %e, "singleton controller event");
                    }
                }
            })
            .await;
    })
}

/// The singletons of `group` in `ns` whose selector matches any of `labels`.
fn selecting(
    stores: &Stores,
    group: &str,
    ns: &str,
    labels: &[&CompactLabels],
) -> Vec<ObjectRef<DynamicObject>> {
    stores
        .singletons
        .iter()
        .flat_map(|s| s.state())
        .filter(|o| ar_of(o).group == group && o.namespace().as_deref() == Some(ns))
        .filter(|o| {
            selector_of(o).is_some_and(|sel| labels.iter().any(|l| selector_matches(&sel, *l)))
        })
        .map(|o| ObjectRef::from_obj_with(o.as_ref(), ar_of(o.as_ref())))
        .collect()
}

/// Reconcile requests from a change channel: `refs` names the singletons of `group` that
/// a change concerns.
fn trigger<T: Clone + Send + 'static>(
    rx: broadcast::Receiver<T>,
    stores: &Stores,
    group: &str,
    refs: fn(&Stores, &str, &T) -> Vec<ObjectRef<DynamicObject>>,
) -> impl Stream<Item = ObjectRef<DynamicObject>> + Send + 'static {
    let (st, group) = (stores.clone(), group.to_string());
    super::broadcast_stream(rx).flat_map(move |t| futures::stream::iter(refs(&st, &group, &t)))
}

/// A pod event reconciles the singletons whose selector matches it.
fn pod_refs(st: &Stores, group: &str, p: &Arc<observe::PodFacts>) -> Vec<ObjectRef<DynamicObject>> {
    selecting(st, group, &p.namespace, &[&p.labels])
}

/// A ReplicaSet event (one created or scaled by a rollout) reconciles the singletons that
/// select its pods.
fn replicaset_refs(
    st: &Stores,
    group: &str,
    rs: &Arc<(String, String)>,
) -> Vec<ObjectRef<DynamicObject>> {
    let (ns, name) = rs.as_ref();
    let pods = st.pods.in_namespace(ns);
    let labels: Vec<&CompactLabels> = pods
        .iter()
        .filter(|p| p.info.replicaset.as_deref() == Some(name.as_str()))
        .map(|p| &p.labels)
        .collect();
    if labels.is_empty() {
        return vec![];
    }
    selecting(st, group, ns, &labels)
}

/// A node event may unblock a handover waiting for a lost node: every singleton not Running.
fn waiting_refs(st: &Stores, group: &str, _: &()) -> Vec<ObjectRef<DynamicObject>> {
    st.singletons
        .iter()
        .flat_map(|s| s.state())
        .filter(|o| {
            ar_of(o).group == group
                && o.data
                    .get("status")
                    .and_then(|s| s.get("phase"))
                    .is_some_and(|p| p != "Running")
        })
        .map(|o| ObjectRef::from_obj_with(o.as_ref(), ar_of(o.as_ref())))
        .collect()
}

/// Just the selector of a StatefulSingleton (cheaper than reading the whole object).
fn selector_of(
    o: &DynamicObject,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector> {
    serde_json::from_value(o.data.get("spec")?.get("selector")?.clone()).ok()
}

fn ar_of(o: &DynamicObject) -> ApiResource {
    // Objects from a store carry their apiVersion.
    let group = o
        .types
        .as_ref()
        .and_then(|t| t.api_version.split('/').next().map(str::to_string))
        .unwrap_or_else(|| "apps.statefulsingleton.com".into());
    api_resource(&group)
}

#[cfg(test)]
mod watch_tests {
    /// Pool pods are left out of the singleton's pod watch (the webhook never gates them).
    #[test]
    fn the_pod_watch_leaves_pool_pods_out() {
        assert_eq!(
            super::pod_watch_config().label_selector.as_deref(),
            Some("!hsd.paia.tech/name,!hsj.paia.tech/name")
        );
    }
}
