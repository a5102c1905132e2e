//! AsyncActor reconciler (`asya.io/v1alpha1`): observe (caches) → pure plan (workload with
//! the injected sidecar, runtime ConfigMap, KEDA objects, pod-deletion-costs, status) →
//! apply, inside the shared reconciler shell.
//!
//! Invariants:
//! - nothing is reconciled before the actor, workload, Service, pod, ConfigMap and KEDA CRD
//!   caches have listed and this process leads (the shell's gate); the KEDA object caches
//!   are not waited for (KEDA may never be installed): see `observe`;
//! - KEDA appearing or disappearing (its CRDs' `Established` condition), a changed runtime
//!   file and every event of an object we own reconcile the actors concerned at once;
//! - an actor that is gone leaves no status memory, debug entry or gauge, and the
//!   namespace's runtime ConfigMap goes with the namespace's last actor.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::shell::{self, Gate, Shell};
use super::watch::{reflected, resource_name, strip_managed, tracked};
use super::Deps;
use crate::api::asya::AsyncActor;
use crate::metrics::ObjectLabels;
use crate::probe::http::HttpProber;
use crate::probe::ProbeCache;
use crate::state::Caches;
use crate::Result;

pub mod apply;
pub mod build;
pub mod observe;
pub mod plan;
pub mod runtime_file;

use build::{BuildConfig, Kind, ACTOR_LABEL};
use runtime_file::{RuntimeFile, RuntimeRx};

pub const CONTROLLER: &str = "actor";
/// The sidecar image when neither the actor nor `--actor-sidecar-image` names one.
pub const DEFAULT_SIDECAR_IMAGE: &str = "asya-sidecar:latest";
/// How often the runtime file is re-read.
pub const RUNTIME_POLL: Duration = Duration::from_secs(10);

/// The operator-wide AsyncActor settings (plain data, built by the CLI).
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Sidecar image for actors that name none (`--actor-sidecar-image`).
    pub sidecar_image: String,
    /// `asya_runtime.py` to publish as the `asya-runtime` ConfigMap (`--actor-runtime-file`).
    pub runtime_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sidecar_image: DEFAULT_SIDECAR_IMAGE.into(),
            runtime_file: None,
        }
    }
}

/// A KEDA object cache, and whether it has listed since its last error.
#[derive(Clone)]
pub struct KedaStore {
    pub kind: Kind,
    pub store: Store<DynamicObject>,
    pub listed: Arc<AtomicBool>,
}

/// Caches the reconciler reads.
#[derive(Clone)]
pub struct Stores {
    pub actors: Store<AsyncActor>,
    pub deployments: Store<Deployment>,
    pub statefulsets: Store<StatefulSet>,
    pub jobs: Store<Job>,
    pub services: Store<Service>,
    pub pods: Store<Pod>,
    pub configmaps: Store<ConfigMap>,
    /// One per KEDA CRD name (metadata only).
    pub crds: Vec<Store<CustomResourceDefinition>>,
    pub keda: Vec<KedaStore>,
}

/// What the operator contributes to every actor.
#[derive(Clone)]
pub struct Settings {
    pub sidecar_image: String,
    pub native_sidecar: bool,
    pub runtime: RuntimeRx,
}

/// Everything a reconcile needs.
pub struct Ctx {
    pub shell: Shell,
    pub stores: Stores,
    pub settings: Settings,
    pub probes: ProbeCache,
    pub prober: HttpProber,
}

crate::controller::deref_to_shell!(Ctx);

impl Ctx {
    /// The gate opens once every cache but the KEDA object caches has listed and
    /// `leading` says this process leads.
    pub fn new(deps: &super::Deps, stores: Stores, settings: Settings) -> Self {
        let s = stores.clone();
        let ready = async move {
            Gate::stores_ready(vec![s.actors]).await
                && Gate::stores_ready(vec![s.deployments]).await
                && Gate::stores_ready(vec![s.statefulsets]).await
                && Gate::stores_ready(vec![s.jobs]).await
                && Gate::stores_ready(vec![s.services]).await
                && Gate::stores_ready(vec![s.pods]).await
                && Gate::stores_ready(vec![s.configmaps]).await
                && Gate::stores_ready(s.crds).await
        };
        Ctx {
            shell: Shell::gated(deps, ready),
            stores,
            settings,
            probes: deps.probes.clone(),
            prober: HttpProber::new(64),
        }
    }

    fn build_config(&self) -> (BuildConfig, Option<Arc<RuntimeFile>>) {
        let runtime = self.settings.runtime.borrow().clone();
        (
            BuildConfig {
                sidecar_image: self.settings.sidecar_image.clone(),
                runtime_hash: runtime.as_ref().map(|r| r.hash.clone()),
                native_sidecar: self.settings.native_sidecar,
            },
            runtime,
        )
    }
}

shell::reconciler!(AsyncActor, crate::api::asya::AsyncActorStatus);

async fn reconcile_inner(actor: &AsyncActor, ctx: &Ctx, _started: Instant) -> Result<Action> {
    let ns = super::namespace_of(actor, "AsyncActor")?;
    let name = actor.name_any();
    if actor.metadata.deletion_timestamp.is_some() {
        forget(ctx, &ns, &name).await;
        return Ok(Action::await_change());
    }
    let (cfg, runtime) = ctx.build_config();
    let content = runtime.as_deref().map(|r| r.content.as_str());
    let observed = observe::observe(ctx, actor, &ns, &cfg, content).await?;
    let now = Time((ctx.clock)());
    let plan = plan::plan(&observed, &now);
    let outcome = apply::run(ctx, actor, &ns, &plan).await?;
    let mut status = match &outcome.rejected {
        Some((kind, msg)) => plan::rejected(actor, &plan.status, *kind, msg, &now),
        None => plan.status.clone(),
    };
    let was = actor.status.as_ref().map(|s| &s.held_pods);
    let pool_pods = observed.pods.iter().map(|p| p.name.as_str());
    let (held, held_notes) = super::held::observe(&ctx.held, &ns, pool_pods, was);
    status.held_pods = held;
    let api: Api<AsyncActor> = Api::namespaced(ctx.client.clone(), &ns);
    ctx.shell
        .write_status(&api, actor, &(), actor.status.as_ref(), &status)
        .await?;
    let mut notes = if outcome.rejected.is_none() {
        plan.notes.clone()
    } else {
        vec![]
    };
    notes.extend(plan::transition_notes(actor.status.as_ref(), &status));
    notes.extend(held_notes);
    ctx.shell
        .publish_notes(&actor.object_ref(&()), "Reconcile", &notes)
        .await;
    gauges(ctx, &ns, &name, &status);
    ctx.debug.set(
        debug_key(&ns, &name),
        json!({"existing": observed.existing, "keda": observed.keda, "pods": observed.pods,
               "actions": plan.actions.iter().map(|a| format!("{:?} {}", a.kind(), action_verb(a))).collect::<Vec<_>>(),
               "kedaDrives": plan.keda_drives}),
    );
    let mut next = ctx.resync;
    if plan.requeue_soon {
        next = Duration::from_secs(1);
    }
    let probe = actor
        .spec
        .scaling
        .as_ref()
        .and_then(|s| s.busy_probe.as_ref());
    if let Some(p) = probe.filter(|p| p.mode == crate::api::probe::BusyMode::Http) {
        next = next.min(Duration::from_secs(p.http.period_seconds.max(1) as u64));
    }
    Ok(Action::requeue(next))
}

fn action_verb(a: &plan::Action) -> &'static str {
    match a {
        plan::Action::Apply { .. } => "apply",
        plan::Action::Delete { .. } => "delete",
        plan::Action::Costs(_) => "deletion-costs",
        plan::Action::Handover { .. } => "replicas-handover",
    }
}

fn gauges(ctx: &Ctx, ns: &str, name: &str, st: &crate::api::asya::AsyncActorStatus) {
    let labels = ObjectLabels::new(ns, name);
    let is_true =
        |t: &str| crate::api::condition(&st.conditions, t).is_some_and(|c| c.status == "True");
    ctx.metrics
        .actor
        .set(&labels, is_true("WorkloadReady"), is_true("ScalingReady"));
}

/// An actor is gone: drop what we kept for it, and the namespace's runtime ConfigMap once
/// no actor is left there (only ours: one we did not create is never deleted).
pub async fn forget(ctx: &Ctx, ns: &str, name: &str) {
    ctx.debug.remove(&debug_key(ns, name));
    ctx.shell.forget(ns, name);
    ctx.metrics.actor.forget(&ObjectLabels::new(ns, name));
    let others = super::in_namespace(&ctx.stores.actors, ns)
        .iter()
        .any(|a| a.name_any() != name && a.metadata.deletion_timestamp.is_none());
    if !ctx.gate.is_open() || others {
        return;
    }
    let ours = ctx
        .stores
        .configmaps
        .get(&ObjectRef::new(build::RUNTIME_CONFIGMAP).within(ns))
        .is_some_and(|c| {
            c.labels().get(build::MANAGED_BY).map(String::as_str) == Some(crate::MANAGER)
        });
    if !ours {
        return;
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    match api
        .delete(build::RUNTIME_CONFIGMAP, &DeleteParams::default())
        .await
    {
        Ok(_) => tracing::info!(namespace = ns, "runtime ConfigMap removed: no actor left"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => {
            tracing::warn!(namespace = ns, error = %e, "could not remove the runtime ConfigMap")
        }
    }
}

/// Does a server of this version run native sidecars by default (SidecarContainers beta,
/// Kubernetes 1.29+)? 1.28 has them only behind a feature gate we cannot see: treated as no.
pub fn supports_native_sidecars(major: &str, minor: &str) -> bool {
    let num = |s: &str| -> u32 {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0)
    };
    let (major, minor) = (num(major), num(minor));
    major > 1 || (major == 1 && minor >= 29)
}

/// Ask the API server whether it runs native sidecars (no answer: assume not).
pub async fn detect_native_sidecars(client: &Client) -> bool {
    match client.apiserver_version().await {
        Ok(v) => {
            let native = supports_native_sidecars(&v.major, &v.minor);
            tracing::info!(version = %v.git_version, native, "native sidecars for Job actors");
            native
        }
        Err(e) => {
            tracing::warn!(error = %e, "server version unknown: Job actors get a plain sidecar");
            false
        }
    }
}

/// The actor machinery for every scope, built but not running.
pub use super::Started;

/// KEDA's CRDs (to know whether it is installed): cluster-wide, watched once for every
/// scope; `changes` says when one of them changed.
#[derive(Clone)]
struct KedaCrds {
    stores: Vec<Store<CustomResourceDefinition>>,
    changes: tokio::sync::broadcast::Sender<()>,
}

impl KedaCrds {
    fn watch(deps: &Deps) -> (KedaCrds, BoxFuture<'static, ()>) {
        let (changes, _) = tokio::sync::broadcast::channel::<()>(64);
        let mut stores = vec![];
        let mut streams = vec![];
        for name in build::KEDA_CRDS {
            let (s, w) = reflector::store::<CustomResourceDefinition>();
            stores.push(s);
            let stream = tracked(
                &deps.caches,
                Api::<CustomResourceDefinition>::all(deps.client.clone()),
                watcher::Config::default().fields(&format!("metadata.name={name}")),
                format!("customresourcedefinitions.apiextensions.k8s.io list ({name})"),
                true,
            )
            .modify(|crd: &mut CustomResourceDefinition| {
                crd.metadata.managed_fields = None;
                crd.metadata.annotations = None;
                crd.spec = Default::default();
            })
            .reflect(w)
            .touched_objects()
            .map(|_| ());
            streams.push(stream.boxed());
        }
        let tx = changes.clone();
        let task = futures::stream::select_all(streams).for_each(move |()| {
            let _ = tx.send(());
            async {}
        });
        (KedaCrds { stores, changes }, Box::pin(task))
    }
}

/// The runtime file source of `cfg`: fails at once when the file is unusable, so `run`
/// checks it before it starts anything else.
pub fn runtime_source(cfg: &Config) -> Result<RuntimeSource> {
    runtime_file::source(cfg.runtime_file.clone(), RUNTIME_POLL)
}

/// What [`runtime_source`] gives: the content channel and the task that re-reads the file.
pub type RuntimeSource = (RuntimeRx, Option<BoxFuture<'static, ()>>);

/// Build the AsyncActor reconcilers for `scopes` (None: all namespaces).
/// Start the AsyncActor machinery for every scope: one KEDA CRD watch for all of them,
/// then per scope its caches and controller.
pub async fn start_all(
    deps: &Deps,
    cfg: &Config,
    (runtime, poll): RuntimeSource,
    scopes: &[Option<String>],
) -> Result<Started> {
    let settings = Settings {
        sidecar_image: cfg.sidecar_image.clone(),
        native_sidecar: detect_native_sidecars(&deps.client).await,
        runtime,
    };
    let mut started = Started { tasks: vec![] };
    if let Some(p) = poll {
        started.tasks.push(("actor-runtime-file".into(), p));
    }
    let (crds, crd_task) = KedaCrds::watch(deps);
    started.tasks.push(("actor-keda-crds".into(), crd_task));
    for scope in scopes {
        let label = scope.as_deref().unwrap_or("all");
        let [probes, controller] = start_scope(deps, scope.as_deref(), settings.clone(), &crds);
        started
            .tasks
            .push((format!("actor-{label}-probes"), probes));
        started.tasks.push((format!("actor-{label}"), controller));
    }
    Ok(started)
}

/// Run the AsyncActor reconciler for one scope until the process ends (for tests and
/// embedding; `kube-standby run` supervises the parts through [`start_all`]).
pub async fn run(deps: Deps, namespace: Option<String>, cfg: Config) -> Result<()> {
    let source = runtime_source(&cfg)?;
    let started = start_all(&deps, &cfg, source, &[namespace]).await?;
    futures::future::join_all(started.tasks.into_iter().map(|(_, t)| t)).await;
    Ok(())
}

/// Map an object carrying our label to its actor.
fn labelled_actor<K: Resource + crate::api::tags::Tags>(obj: &K) -> Option<ObjectRef<AsyncActor>> {
    super::labelled_owner(ACTOR_LABEL, obj)
}

/// Every actor of the scope (optionally only those of one namespace).
fn all_actors(store: &Store<AsyncActor>, ns: Option<&str>) -> Vec<ObjectRef<AsyncActor>> {
    store
        .state()
        .iter()
        .filter(|a| ns.is_none_or(|n| a.namespace().as_deref() == Some(n)))
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
}

/// A labelled, managed-fields-free watch of `K` feeding `store`; yields the actors touched.
fn labelled<K>(
    caches: &Caches,
    api: Api<K>,
    ns: Option<&str>,
    writer: reflector::store::Writer<K>,
    page: bool,
    strip: fn(&mut K),
) -> impl Stream<Item = ObjectRef<AsyncActor>> + Send
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    K: crate::api::tags::Tags + Send + Sync + 'static,
{
    let mut wc = watcher::Config::default().labels(ACTOR_LABEL);
    if page {
        wc = wc.page_size(100);
    }
    reflected(caches, api, ns, wc, writer, strip)
        .filter_map(|r| async move { r.ok().as_ref().and_then(labelled_actor) })
}

/// A stream that yields once per change of the runtime file.
fn runtime_changes(rx: RuntimeRx) -> impl Stream<Item = ()> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

/// The caches, the controller and its triggers for one scope.
/// The probe-forgetting loop and the controller of one scope.
fn start_scope(
    deps: &Deps,
    ns: Option<&str>,
    settings: Settings,
    keda_crds: &KedaCrds,
) -> [BoxFuture<'static, ()>; 2] {
    let (client, caches) = (deps.client.clone(), &deps.caches);
    let (actors, actor_w) = reflector::store::<AsyncActor>();
    let (configmaps, cm_w) = reflector::store::<ConfigMap>();
    let owned = Owned::watch(caches, &client, ns);
    let runtime_cm =
        watcher::Config::default().fields(&format!("metadata.name={}", build::RUNTIME_CONFIGMAP));
    let cm_api = super::scoped(client.clone(), ns);
    let cm_stream = reflected(caches, cm_api, ns, runtime_cm, cm_w, strip_managed)
        .flat_map(every_actor_of_the_namespace(actors.clone()));
    let crd_actors = actors.clone();
    let crd_trigger = super::broadcast_stream(keda_crds.changes.subscribe())
        .flat_map(move |()| futures::stream::iter(all_actors(&crd_actors, None)));
    let (keda, keda_trigger) = keda_objects(caches, &client, ns);
    let pods = owned.pods.clone();
    let stores = Stores {
        actors: actors.clone(),
        deployments: owned.deployments,
        statefulsets: owned.statefulsets,
        jobs: owned.jobs,
        services: owned.services,
        pods: owned.pods,
        configmaps,
        crds: keda_crds.stores.clone(),
        keda,
    };
    let ctx = Arc::new(Ctx::new(deps, stores, settings.clone()));
    deps.probes
        .register_target(probe_target(pods.clone(), actors.clone()));
    let rt_actors = actors.clone();
    let rt_trigger = runtime_changes(settings.runtime.clone())
        .flat_map(move |()| futures::stream::iter(all_actors(&rt_actors, None)));
    let all = watcher::Config::default();
    let actor_api = super::scoped(client, ns);
    let actor_stream = reflected(caches, actor_api, ns, all, actor_w, strip_managed);
    let held = super::held::trigger(&deps.held, pods.clone(), labelled_actor);
    let triggers = futures::stream::select_all([
        held.boxed(),
        owned.touched,
        cm_stream.boxed(),
        crd_trigger.boxed(),
        keda_trigger.boxed(),
        rt_trigger.boxed(),
    ]);
    let janitor = ctx.clone();
    let results = Controller::for_stream(actor_stream, actors)
        .with_config(super::controller_config())
        .reconcile_on(triggers)
        .run(reconcile, error_policy, ctx.clone());
    let controller = shell::follow(results, "actor", janitor, |c, ns, name| async move {
        forget(&c, &ns, &name).await;
    });
    let probes = ctx.probes.clone();
    let forget_probes = async move { probes.forget_gone(pods, Duration::from_secs(60)).await };
    [Box::pin(forget_probes), Box::pin(controller)]
}

/// The busy guard's way to an actor pod's http probe (`scaling.busyProbe` in http mode):
/// the pod in our pod cache, its actor by our label.
fn probe_target(pods: Store<Pod>, actors: Store<AsyncActor>) -> crate::probe::target::Resolver {
    Arc::new(move |ns: &str, name: &str| {
        let pod = pods.get(&ObjectRef::new(name).within(ns))?;
        let actor = actors.get(&labelled_actor(pod.as_ref())?)?;
        let p = actor.spec.scaling.as_ref()?.busy_probe.as_ref()?;
        (p.mode == crate::api::probe::BusyMode::Http).then(|| crate::probe::target::Found {
            probe: crate::probe::target::PoolProbe::Http(p.http.clone()),
            pod,
        })
    })
}

/// The caches of what actors own (workloads, Services, pods), watched by our label, and
/// the actors their changes touch.
struct Owned {
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
    jobs: Store<Job>,
    services: Store<Service>,
    pods: Store<Pod>,
    touched: futures::stream::BoxStream<'static, ObjectRef<AsyncActor>>,
}

impl Owned {
    fn watch(caches: &Caches, client: &Client, ns: Option<&str>) -> Owned {
        let (deployments, dep_w) = reflector::store::<Deployment>();
        let (statefulsets, sts_w) = reflector::store::<StatefulSet>();
        let (jobs, job_w) = reflector::store::<Job>();
        let (services, svc_w) = reflector::store::<Service>();
        let (pods, pod_w) = reflector::store::<Pod>();
        let api = || super::scoped(client.clone(), ns);
        let touched = futures::stream::select_all([
            labelled(caches, api(), ns, dep_w, false, strip_managed).boxed(),
            labelled(
                caches,
                super::scoped(client.clone(), ns),
                ns,
                sts_w,
                false,
                strip_managed,
            )
            .boxed(),
            labelled(
                caches,
                super::scoped(client.clone(), ns),
                ns,
                job_w,
                false,
                strip_managed,
            )
            .boxed(),
            labelled(
                caches,
                super::scoped(client.clone(), ns),
                ns,
                svc_w,
                false,
                strip_managed,
            )
            .boxed(),
            labelled(
                caches,
                super::scoped(client.clone(), ns),
                ns,
                pod_w,
                true,
                observe::strip_pod,
            )
            .boxed(),
        ])
        .boxed();
        Owned {
            deployments,
            statefulsets,
            jobs,
            services,
            pods,
            touched,
        }
    }
}

/// A change of a namespace's runtime ConfigMap reconciles every actor of that namespace.
fn every_actor_of_the_namespace(
    actors: Store<AsyncActor>,
) -> impl FnMut(
    watcher::Result<ConfigMap>,
) -> futures::stream::Iter<std::vec::IntoIter<ObjectRef<AsyncActor>>> {
    move |r| {
        let refs = match r {
            Ok(cm) => all_actors(&actors, cm.namespace().as_deref()),
            Err(_) => vec![],
        };
        futures::stream::iter(refs)
    }
}

/// Our objects of KEDA's kinds (optional watches: KEDA may be missing), their stores, and
/// the actors their changes touch.
fn keda_objects(
    caches: &Caches,
    client: &Client,
    ns: Option<&str>,
) -> (
    Vec<KedaStore>,
    impl Stream<Item = ObjectRef<AsyncActor>> + Send,
) {
    let mut keda = vec![];
    let mut streams = vec![];
    for kind in [
        Kind::ScaledObject,
        Kind::ScaledJob,
        Kind::TriggerAuthentication,
    ] {
        let ar = kind.api_resource();
        let w = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        let listed = Arc::new(AtomicBool::new(false));
        keda.push(KedaStore {
            kind,
            store: w.as_reader(),
            listed: listed.clone(),
        });
        let stream = tracked(
            caches,
            super::scoped_with(client.clone(), ns, &ar),
            watcher::Config::default().labels(ACTOR_LABEL),
            resource_name::<DynamicObject>(&ar, ns),
            false,
        )
        .map(move |e| {
            match &e {
                Ok(watcher::Event::InitDone) => listed.store(true, Ordering::Relaxed),
                Ok(_) => {}
                Err(err) => {
                    // KEDA missing (404) or gone: read by name until a list succeeds.
                    listed.store(false, Ordering::Relaxed);
                    tracing::debug!(kind = kind.name(), error = %err, "KEDA watch");
                }
            }
            e
        })
        .modify(strip_managed)
        .reflect(w)
        .touched_objects()
        .filter_map(|r| async move { r.ok().as_ref().and_then(labelled_actor) });
        streams.push(stream.boxed());
    }
    (keda, futures::stream::select_all(streams))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached_pod(name: &str, label: (&str, &str)) -> Pod {
        crate::controller::fixtures::cached_pod(name, label)
    }
    use crate::controller::fixtures::store_of;

    fn actor(name: &str, scaling: serde_json::Value) -> AsyncActor {
        let path = format!(
            "{}/examples/asyncactor-hello.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut v: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v["metadata"]["name"] = name.into();
        v["metadata"]["namespace"] = "ns".into();
        v["metadata"]["uid"] = format!("uid-{name}").into();
        v["spec"]["scaling"] = scaling;
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_guard_finds_the_http_probe_of_an_actor_pod() {
        let pods = store_of(vec![
            cached_pod("h-1", (ACTOR_LABEL, "http")),
            cached_pod("a-1", (ACTOR_LABEL, "ann")),
            cached_pod("n-1", (ACTOR_LABEL, "none")),
        ]);
        let actors = store_of(vec![
            actor(
                "http",
                serde_json::json!({"busyProbe": {"mode": "http", "http": {"port": 7000}}}),
            ),
            actor(
                "ann",
                serde_json::json!({"busyProbe": {"mode": "annotation"}}),
            ),
            actor("none", serde_json::json!({})),
        ]);
        let r = probe_target(pods, actors);
        let h = r("ns", "h-1").expect("http pod");
        assert!(matches!(&h.probe, crate::probe::target::PoolProbe::Http(c) if c.port == 7000));
        assert!(r("ns", "a-1").is_none(), "annotation mode");
        assert!(r("ns", "n-1").is_none(), "no busy probe");
    }

    #[test]
    fn native_sidecars_from_1_29() {
        for (maj, min, want) in [
            ("1", "24", false),
            ("1", "28", false),
            ("1", "29", true),
            ("1", "30+", true),
            ("2", "0", true),
            ("", "", false),
        ] {
            assert_eq!(supports_native_sidecars(maj, min), want, "{maj}.{min}");
        }
    }
}
