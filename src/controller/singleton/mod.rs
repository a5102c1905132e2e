//! StatefulSingleton reconciler: observe (pod/node caches) → pure handover plan → apply.
//! Status (the planner's memory) is written *before* a release, so a crash between the
//! two can never leave a released pod unrecorded.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action as KAction, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::index::{self, Index};
use super::shell::{self, Gate, Shell};
use super::watch::{resource_name, tracked, tracked_kind};
use super::Deps;
use crate::api::singleton::{
    selector_matches, StatefulSingleton, LEGACY_GROUP, READY_CONDITION, RELEASED_ANNOTATION,
    WRAPPER_CONFIGMAP,
};
use crate::metrics::Metrics;
use crate::state::DebugState;
use crate::{Error, Result, MANAGER};

pub mod observe;
pub mod plan;

use plan::{Action, DeleteReason, Observed, Phase};

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
    /// When a reconcile first saw "no instance present, a successor waits", per singleton.
    gone_seen: Mutex<HashMap<String, Instant>>,
    /// Agent errors already announced by an event: (pod UID, message), per singleton.
    agent_reported: Mutex<HashMap<String, std::collections::BTreeSet<(String, String)>>>,
}

crate::controller::deref_to_shell!(Ctx);

impl Ctx {
    /// The gate opens once the pod, node, ConfigMap and StatefulSingleton stores have listed
    /// and `leading` says this process leads: a Node missing from an unsynced store is never
    /// taken as deleted, and no release happens before the status memory has been read.
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
            s.pods.ready().await
                && s.nodes.ready().await
                && Gate::stores_ready(vec![s.configmaps]).await
                && Gate::stores_ready(s.singletons).await
        });
        Ctx {
            shell: Shell::new(client, metrics, debug, gate),
            stores,
            gone_seen: Mutex::default(),
            agent_reported: Mutex::default(),
        }
    }
}

async fn publish(
    ctx: &Ctx,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    ctx.shell
        .publish(reference, "Handover", type_, reason, note)
        .await
}

pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<(Ctx, ApiResource)>) -> Result<KAction> {
    let span = tracing::info_span!("reconcile", controller = CONTROLLER, ns = obj.namespace().unwrap_or_default(), name = %obj.name_any());
    let body = reconcile_inner(&obj, &ctx.0, &ctx.1, Instant::now());
    ctx.0.shell.reconcile(CONTROLLER, span, body).await
}

pub fn error_policy(
    obj: Arc<DynamicObject>,
    err: &Error,
    _ctx: Arc<(Ctx, ApiResource)>,
) -> KAction {
    shell::error_action(CONTROLLER, &obj.name_any(), err)
}

async fn patch_status(
    ctx: &Ctx,
    ar: &ApiResource,
    obj: &DynamicObject,
    s: &StatefulSingleton,
    st: &crate::api::singleton::StatefulSingletonStatus,
) -> Result<bool> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &s.namespace().unwrap_or_default(), ar);
    ctx.shell
        .write_status(&api, obj, ar, s.status.as_ref(), st)
        .await
}

async fn ensure_configmap(ctx: &Ctx, ns: &str) -> Result<()> {
    let current = ctx
        .stores
        .configmaps
        .get(&ObjectRef::new(WRAPPER_CONFIGMAP).within(ns));
    if current.as_deref().is_some_and(observe::configmap_current) {
        return Ok(());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    api.patch(
        WRAPPER_CONFIGMAP,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&observe::wrapper_configmap(ns)),
    )
    .await?;
    tracing::info!(namespace = ns, "wrapper ConfigMap written");
    Ok(())
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
    let key = format!("{CONTROLLER}/{}/{ns}/{}", ar.group, s.name_any());
    if s.metadata.deletion_timestamp.is_some() {
        ctx.debug.remove(&key);
        if let Ok(mut m) = ctx.agent_reported.lock() {
            m.remove(&key);
        }
        ctx.forget(&ns, &s.name_any());
        return Ok(KAction::await_change());
    }
    let reference = obj.object_ref(ar);
    let now = (ctx.clock)();

    // Which pods are ours: matched by our selector, and we are the oldest matching singleton.
    let all = ctx.stores.singletons_in(&ns);
    let me = s.uid();
    let pods = ctx.stores.pods.in_namespace(&ns);
    let mut overlap = observe::Overlap::default();
    let mut mine = vec![];
    for p in &pods {
        let labels = &p.labels;
        if !selector_matches(&s.spec.selector, labels) {
            continue;
        }
        match crate::api::singleton::owning_singleton(&all, labels) {
            Some(owner) if owner.uid() == me => {
                mine.push(p.clone());
                for other in all
                    .iter()
                    .filter(|o| o.uid() != me && selector_matches(&o.spec.selector, labels))
                {
                    let n = other.name_any();
                    if !overlap.won_against.contains(&n) {
                        overlap.won_against.push(n);
                    }
                }
            }
            Some(owner) => {
                let n = owner.name_any();
                if !overlap.lost_to.contains(&n) {
                    overlap.lost_to.push(n);
                }
            }
            None => {}
        }
    }
    let sel = &s.spec.selector;
    let empty_selector = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty());
    let invalid = empty_selector.then_some(
        "selector is empty: it would select every pod of the namespace; nothing is managed",
    );

    if !mine.is_empty() {
        ensure_configmap(ctx, &ns).await?;
    }

    let infos: Vec<plan::PodInfo> = mine.iter().map(|p| p.info.clone()).collect();
    let memory = observe::memory(s.status.as_ref());
    let mut nodes = BTreeMap::new();
    for n in infos
        .iter()
        .filter_map(|p| p.node.clone())
        .chain(memory.active_node.clone())
    {
        if let Some(state) = ctx.stores.nodes.get("", &n) {
            nodes.insert(n, *state);
        }
    }
    // The ReplicaSets of the pods involved (only needed during a surge rollout).
    let mut replicasets = vec![];
    if infos.iter().any(|p| p.is_candidate()) {
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        let mut names: Vec<String> = infos.iter().filter_map(|p| p.replicaset.clone()).collect();
        names.sort();
        names.dedup();
        for n in names {
            if let Ok(rs) = rs_api.get(&n).await {
                replicasets.push(plan::RsInfo {
                    name: n,
                    replicas: rs.spec.replicas.unwrap_or(1),
                    deployment: rs
                        .owner_references()
                        .iter()
                        .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                        .map(|o| o.uid.clone()),
                });
            }
        }
    }
    let observed = Observed {
        pods: &infos,
        replicasets: &replicasets,
        nodes: &nodes,
        memory: &memory,
        now: now.as_second(),
        max_transition_seconds: s.spec.max_transition_time,
    };
    let plan = if invalid.is_some() {
        plan::Plan {
            actions: vec![],
            phase: Phase::Blocked,
            memory: memory.clone(),
            message: invalid.unwrap_or_default().to_string(),
            node_lost: None,
            timed_out: false,
            newly_timed_out: false,
            extra_candidates: 0,
        }
    } else {
        plan::plan(&observed)
    };

    // Gap bookkeeping: the first time we see "nothing present, a successor waits".
    let waiting_release = plan
        .actions
        .iter()
        .any(|a| matches!(a, Action::Release { .. }));
    if let Ok(mut g) = ctx.gone_seen.lock() {
        if waiting_release || plan.node_lost.is_some() {
            g.entry(key.clone()).or_insert(started);
        }
    }

    // Agents that cannot get their release: the condition, and one event per new error.
    let reported = ctx
        .agent_reported
        .lock()
        .ok()
        .and_then(|m| m.get(&key).cloned())
        .unwrap_or_default();
    let agents = plan::agents(&infos, &reported);

    // Status first: it records the pod about to be released and its node.
    let status = observe::status(&s, &plan, &overlap, invalid, &agents, now);
    patch_status(ctx, ar, obj, &s, &status).await?;

    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    for a in &plan.actions {
        match a {
            Action::Delete { name, uid, reason } => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match pods_api.delete(name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => continue,
                    Err(e) => return Err(e.into()),
                }
                let (why, note) = match reason {
                    DeleteReason::UngatedDuplicate => ("UngatedPodDeleted", format!("deleted {name}: it was admitted without the start gate while another instance runs; its owner recreates it through the webhook")),
                    DeleteReason::FailedOldPod => ("FailedPodDeleted", format!("deleted failed pod {name} so its successor can start once it is gone")),
                };
                publish(ctx, &reference, EventType::Warning, why, note).await;
            }
            Action::ScaleToZero { replicaset } => {
                let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
                rs_api
                    .patch(
                        replicaset,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"replicas": 0}})),
                    )
                    .await?;
                publish(ctx, &reference, EventType::Normal, "PodTransition", format!("scaled old ReplicaSet {replicaset} to 0: a surge rollout cannot finish while the new pod waits")).await;
            }
            Action::Release { name, uid } | Action::MarkReady { name, uid } => {
                let is_release = matches!(a, Action::Release { .. });
                if is_release {
                    let patch = json!({"metadata": {"uid": uid, "annotations": {RELEASED_ANNOTATION: now.to_string()}}});
                    match pods_api
                        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                let cond = json!({"status": {"conditions": [{"type": READY_CONDITION, "status": "True", "reason": "Released",
                    "message": "released by kube-standby", "lastTransitionTime": now.to_string()}]}});
                match pods_api
                    .patch_status(name, &PatchParams::default(), &Patch::Strategic(cond))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => continue,
                    Err(e) => return Err(e.into()),
                }
                if is_release {
                    let gap = ctx
                        .gone_seen
                        .lock()
                        .ok()
                        .and_then(|mut g| g.remove(&key))
                        .map(|t| t.elapsed());
                    if let Some(gap) = gap {
                        ctx.metrics
                            .singleton_handover_gap
                            .observe(gap.as_secs_f64());
                    }
                    let from = memory.active_pod.clone().filter(|p| p != name);
                    let (reason, note) = match from {
                        Some(old) => (
                            "PodTransition",
                            format!("released {name} after {old} was gone"),
                        ),
                        None => ("PodStarted", format!("released {name}")),
                    };
                    publish(ctx, &reference, EventType::Normal, reason, note).await;
                }
            }
        }
    }
    if plan.newly_timed_out {
        ctx.metrics.singleton_timeouts.inc();
        publish(
            ctx,
            &reference,
            EventType::Warning,
            "TransitionTimeout",
            format!(
                "handover exceeded maxTransitionTime ({}s); still waiting safely: {}",
                s.spec.max_transition_time, plan.message
            ),
        )
        .await;
    }
    let was_blocked = s
        .status
        .as_ref()
        .and_then(|st| crate::api::condition(&st.conditions, "NodeLost"))
        .is_some_and(|c| c.status == "True");
    if plan.node_lost.is_some() && !was_blocked {
        publish(
            ctx,
            &reference,
            EventType::Warning,
            "NodeLost",
            plan.message.clone(),
        )
        .await;
    }
    for p in &agents.warn {
        publish(
            ctx,
            &reference,
            EventType::Warning,
            "AgentUnreachable",
            format!(
                "pod {}: its kube-standby agent cannot get the release: {}",
                p.pod, p.message
            ),
        )
        .await;
    }
    if let Ok(mut m) = ctx.agent_reported.lock() {
        if agents.reported.is_empty() {
            m.remove(&key);
        } else {
            m.insert(key.clone(), agents.reported.clone());
        }
    }
    ctx.debug.set(
        key,
        json!({"plan": plan, "pods": infos, "nodes": nodes, "agents": agents.failing}),
    );

    let mut next = ctx.resync;
    if let (Phase::Transitioning | Phase::Blocked, Some(since)) =
        (plan.phase, plan.memory.transition_since)
    {
        let due = since + s.spec.max_transition_time - now.as_second();
        if due > 0 && !plan.timed_out {
            next = next.min(Duration::from_secs(due as u64 + 1));
        }
    }
    Ok(KAction::requeue(next))
}

/// A StatefulSingleton is gone: drop what we kept for it, and the namespace's wrapper
/// ConfigMap once no StatefulSingleton and no pod in the namespace needs it.
pub async fn forget(ctx: &Ctx, ar: &ApiResource, ns: &str, name: &str) {
    let key = format!("{CONTROLLER}/{}/{ns}/{name}", ar.group);
    ctx.debug.remove(&key);
    if let Ok(mut m) = ctx.agent_reported.lock() {
        m.remove(&key);
    }
    ctx.forget(ns, name);
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
    pub tasks: Vec<futures::future::BoxFuture<'static, ()>>,
}

/// Build the stores and controllers of one scope; Nodes come from the shared `nodes`.
/// Both groups are always watched: one whose CRD is not served yet is retried with backoff
/// (and named by `/readyz`) until it is.
pub fn start(deps: &Deps, namespace: Option<String>, nodes: &Nodes) -> Started {
    let client = deps.client.clone();
    let ns = namespace.as_deref();
    let mut tasks: Vec<futures::future::BoxFuture<'static, ()>> = vec![];
    let pods: Index<observe::PodFacts> = Index::default();
    let (cms, cm_w) = reflector::store::<ConfigMap>();
    let (pod_tx, _) = tokio::sync::broadcast::channel::<Arc<observe::PodFacts>>(4096);
    {
        let pod_tx = pod_tx.clone();
        // Small pages: every pod of the scope is listed, and a page is parsed whole.
        let events = tracked_kind(
            &deps.caches,
            super::scoped::<Pod>(client.clone(), ns),
            ns,
            watcher::Config::default().page_size(100),
            true,
        );
        let pod_stream = index::feed(events, pods.clone(), observe::pod_facts);
        tasks.push(Box::pin(pod_stream.for_each(move |p| {
            let _ = pod_tx.send(Arc::new(observe::pod_facts(&p)));
            async {}
        })));
        let cm_stream = tracked_kind(
            &deps.caches,
            super::scoped::<ConfigMap>(client.clone(), ns),
            ns,
            watcher::Config::default().fields(&format!("metadata.name={WRAPPER_CONFIGMAP}")),
            true,
        )
        .reflect(cm_w)
        .touched_objects();
        tasks.push(Box::pin(cm_stream.for_each(|_| async {})));
    }

    let groups = [
        api_resource("apps.statefulsingleton.com"),
        api_resource(LEGACY_GROUP),
    ];
    let mut singleton_stores = vec![];
    let mut singleton_streams = vec![];
    for ar in &groups {
        let w = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        singleton_stores.push(w.as_reader());
        let stream = tracked(
            &deps.caches,
            super::scoped_with(client.clone(), ns, ar),
            watcher::Config::default(),
            resource_name::<DynamicObject>(ar, ns),
            true,
        )
        .reflect(w)
        .touched_objects();
        singleton_streams.push(stream);
    }
    let stores = Stores {
        pods: pods.clone(),
        nodes: nodes.index.clone(),
        configmaps: cms.clone(),
        singletons: singleton_stores.clone(),
    };

    for ((ar, stream), reader) in groups
        .into_iter()
        .zip(singleton_streams)
        .zip(singleton_stores)
    {
        let ctx = Arc::new((
            Ctx::new(
                client.clone(),
                stores.clone(),
                deps.metrics.clone(),
                deps.debug.clone(),
                deps.leading.clone(),
            ),
            ar.clone(),
        ));
        let (st, group) = (stores.clone(), ar.group.clone());
        // A pod event reconciles the singletons (of this group) whose selector matches it.
        let pod_trigger = super::broadcast_stream(pod_tx.subscribe()).flat_map(
            move |p: Arc<observe::PodFacts>| {
                let ns = p.namespace.clone();
                let refs: Vec<ObjectRef<DynamicObject>> = st
                    .singletons
                    .iter()
                    .flat_map(|s| s.state())
                    .filter(|o| {
                        ar_of(o).group == group && o.namespace().as_deref() == Some(ns.as_str())
                    })
                    .filter(|o| selector_of(o).is_some_and(|sel| selector_matches(&sel, &p.labels)))
                    .map(|o| ObjectRef::from_obj_with(o.as_ref(), ar_of(o.as_ref())))
                    .collect();
                futures::stream::iter(refs)
            },
        );
        let (st, group) = (stores.clone(), ar.group.clone());
        // A node event may unblock a handover waiting for a lost node.
        let node_trigger = super::broadcast_stream(nodes.changes.subscribe()).flat_map(move |()| {
            let refs: Vec<ObjectRef<DynamicObject>> = st
                .singletons
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
                .collect();
            futures::stream::iter(refs)
        });
        let janitor = ctx.clone();
        tasks.push(Box::pin(async move {
            Controller::for_stream_with(stream, reader, ar.clone())
                .reconcile_on(pod_trigger)
                .reconcile_on(node_trigger)
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
        }));
    }
    Started { stores, tasks }
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
