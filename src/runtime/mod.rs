//! `kube-standby run`: builds the caches, the webhook server and every reconciler, and
//! supervises them as one unit.
//!
//! Invariants:
//! - every long-lived part (webhook server, each watch stream and controller, leader
//!   election, caBundle upkeep) is a supervised task; if any of them ends while the process
//!   is not shutting down (returns, fails or panics), `/readyz` turns 503 naming it and the
//!   process exits non-zero so Kubernetes restarts it: nothing half-alive keeps serving;
//! - no controller reconciles before its caches have synced and while this replica does not
//!   hold the Lease (the shell's gate reads the leadership channel built here);
//! - the runtime is the only module that sees both controllers and the webhook: it adapts the
//!   singleton caches to the webhook's `ObjectSource` and the release service's lookup.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use kube::Client;
use tokio::sync::watch;

use crate::api::singleton::StatefulSingleton;
use crate::controller::{hsd, hsj, singleton, Deps};
use crate::metrics::Metrics;
use crate::server::{self, ServerConfig, TlsMode};
use crate::state::{DebugState, Readiness};
use crate::webhook::assignment::{AssignmentLookup, AssignmentService};
use crate::webhook::claims::{ClaimLookup, ClaimsService, KubeAuthorizer, KubeClaimWriter};
use crate::webhook::release::{
    KubeTokenReviewer, PodRelease, PodTokens, ReleaseLookup, ReleaseService,
};
use crate::webhook::ObjectSource;
use crate::{Error, Result};

pub mod guard;
pub mod leader;

/// How long a requested shutdown waits for the draining tasks (the webhook answering the
/// admission reviews in flight) before the process exits anyway.
pub const DRAIN: Duration = Duration::from_secs(10);

/// One supervised part of the process.
pub struct Task {
    pub name: String,
    pub fut: BoxFuture<'static, Result<()>>,
    /// On a requested shutdown the supervisor waits (up to [`DRAIN`]) for this task to end
    /// by itself; every other task is stopped at once.
    pub drains: bool,
}

impl Task {
    pub fn new(
        name: impl Into<String>,
        fut: impl Future<Output = Result<()>> + Send + 'static,
    ) -> Self {
        Task {
            name: name.into(),
            fut: Box::pin(fut),
            drains: false,
        }
    }

    /// Let this task finish its work on a requested shutdown (see [`Task::drains`]).
    pub fn draining(mut self) -> Self {
        self.drains = true;
        self
    }

    /// A part that is meant to run forever (a watch stream, a controller).
    pub fn forever(
        name: impl Into<String>,
        fut: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        Task::new(name, fut.map(|()| Ok(())))
    }
}

/// Tasks that end with their supervisor, also when the supervisor itself is dropped.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<Result<()>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Run `tasks` until `shutdown` resolves, then stop them and return Ok: a requested
/// shutdown is not a failure. The draining tasks get up to [`DRAIN`] to end by themselves
/// (the webhook answers what is in flight); the others are stopped at once. A task that
/// ends before the shutdown (returns, fails or panics) ends the run with an error naming
/// it, and marks the process not ready.
pub async fn supervise(
    tasks: Vec<Task>,
    shutdown: impl Future<Output = ()>,
    readiness: &Readiness,
) -> Result<()> {
    let mut names = vec![];
    let mut drains = vec![];
    let mut handles = AbortOnDrop(vec![]);
    for t in tasks {
        names.push(t.name);
        drains.push(t.drains);
        handles.0.push(tokio::spawn(t.fut));
    }
    if !handles.0.is_empty() {
        let first = futures::future::select_all(handles.0.iter_mut());
        tokio::select! {
            _ = shutdown => {},
            (res, idx, _) = first => {
                let name = names.get(idx).cloned().unwrap_or_default();
                let why = match res {
                    Ok(Ok(())) => "stopped".to_string(),
                    Ok(Err(e)) => format!("failed: {e}"),
                    Err(e) if e.is_panic() => "panicked".to_string(),
                    Err(e) => format!("was cancelled: {e}"),
                };
                let reason = format!("task {name} {why}");
                readiness.set_broken(reason.clone());
                return Err(Error::TaskStopped(reason));
            }
        }
    } else {
        shutdown.await;
    }
    readiness.set_stopping();
    let draining = handles
        .0
        .iter_mut()
        .zip(names.iter().zip(drains))
        .filter(|(_, (_, d))| *d)
        .map(|(h, (name, _))| async move {
            match h.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(task = %name, error = %e, "task failed while draining")
                }
                Err(e) => {
                    tracing::warn!(task = %name, error = %e, "task ended abnormally while draining")
                }
            }
        });
    if tokio::time::timeout(DRAIN, futures::future::join_all(draining))
        .await
        .is_err()
    {
        tracing::warn!(
            seconds = DRAIN.as_secs(),
            "draining took too long; stopping anyway"
        );
    }
    Ok(())
}

/// The singleton caches, one per watched scope (all namespaces, or each `--namespace`), as
/// the webhook and the release service read them.
#[derive(Clone, Default)]
struct SingletonView(Vec<(Option<String>, singleton::Stores)>);

impl SingletonView {
    fn stores(&self, namespace: &str) -> Option<&singleton::Stores> {
        self.0
            .iter()
            .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == namespace))
            .map(|(_, s)| s)
    }
}

impl ObjectSource for SingletonView {
    fn singletons(&self, namespace: &str) -> Vec<Arc<StatefulSingleton>> {
        self.stores(namespace)
            .map(|s| s.singletons_in(namespace))
            .unwrap_or_default()
    }
}

impl ReleaseLookup for SingletonView {
    fn lookup(&self, namespace: &str, name: &str) -> Option<PodRelease> {
        let pod = self.stores(namespace)?.pods.get(namespace, name)?;
        Some(PodRelease {
            uid: pod.info.uid.clone(),
            released: pod.info.released,
            epoch: pod.info.epoch,
        })
    }

    fn changes(&self, namespace: &str) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.stores(namespace)?.pods.changes())
    }
}

/// The claim caches, one per watched scope, as `/v1/assignment` and `/v1/claims` read them.
#[derive(Clone, Default)]
struct ClaimView(Vec<(Option<String>, crate::controller::claim::Stores)>);

impl ClaimView {
    fn stores(&self, namespace: &str) -> Option<&crate::controller::claim::Stores> {
        self.0
            .iter()
            .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == namespace))
            .map(|(_, s)| s)
    }
}

impl AssignmentLookup for ClaimView {
    fn assignment(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
    ) -> Option<crate::api::claim::Assignment> {
        self.stores(namespace)?.assignment(namespace, pod, uid)
    }

    fn changes(&self, namespace: &str) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.stores(namespace)?.changed.clone())
    }
}

impl ClaimLookup for ClaimView {
    fn claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<crate::api::claim::HotStandbyClaim>> {
        let r = kube::runtime::reflector::ObjectRef::new(name).within(namespace);
        self.stores(namespace)?.claims.get(&r)
    }

    fn changes(&self, namespace: &str) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.stores(namespace)?.changed.clone())
    }
}

/// What `run` needs, as plain data (built by the CLI, or by a test).
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub server: ServerConfig,
    /// In self-signed mode, keep this MutatingWebhookConfiguration's caBundle equal to our CA.
    pub webhook_config_name: Option<String>,
    /// In self-signed mode, keep the CA in this Secret (of `ca_secret_namespace`).
    pub ca_secret: Option<String>,
    pub ca_secret_namespace: String,
    /// Leader election; None: this process always reconciles.
    pub leader: Option<leader::LeaseConfig>,
    /// Watch only these namespaces; empty: all.
    pub namespaces: Vec<String>,
    /// AsyncActor settings (sidecar image, runtime file).
    pub actor: crate::controller::actor::Config,
}

/// This process's identity in the Lease: the pod name, else host name and pid.
pub fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
}

/// The operator's own namespace: $POD_NAMESPACE, else kube-standby.
pub fn own_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "kube-standby".into())
}

/// The TLS mode, with the CA taken from (or first stored in) the CA Secret when asked.
async fn tls_mode(client: &Client, cfg: &RunConfig) -> Result<TlsMode> {
    match (cfg.server.tls.clone(), &cfg.ca_secret) {
        (TlsMode::SelfSigned { sans, validity, .. }, Some(name)) => {
            let ns = &cfg.ca_secret_namespace;
            let ca = crate::tls::ca_secret::load_or_create(client.clone(), ns, name).await?;
            Ok(TlsMode::SelfSigned {
                sans,
                ca: Some(ca),
                validity,
            })
        }
        (m @ TlsMode::Files { .. }, Some(_)) => {
            tracing::info!("--ca-secret is only used with --tls-self-signed");
            Ok(m)
        }
        (m, None) => Ok(m),
    }
}

/// `kube-standby run`: webhook + reconcilers against the cluster, until `shutdown`.
pub async fn run(
    cfg: RunConfig,
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Unusable input stops the run before anything starts.
    let actor_runtime = crate::controller::actor::runtime_source(&cfg.actor)?;
    let metrics = Arc::new(Metrics::new());
    let caches = crate::state::Caches::with_gauge(metrics.cache_synced.clone());
    let readiness = Readiness::with_caches(caches.clone());
    let mut tasks = vec![];

    let (lead_tx, leading) = watch::channel(cfg.leader.is_none());
    if let Some(lease) = cfg.leader.clone() {
        lease.validate()?;
        tasks.push(Task::new(
            "leader-election",
            leader::run(client.clone(), lease, lead_tx),
        ));
    } else {
        // Nobody ever changes it; keep the sender for the life of the run.
        tasks.push(Task::forever("leadership", async move {
            lead_tx.closed().await;
        }));
    }
    let deps = Deps {
        client: client.clone(),
        metrics: metrics.clone(),
        debug: DebugState::default(),
        leading,
        caches,
        probes: Default::default(),
        held: Default::default(),
        claims: Default::default(),
    };

    // Cluster-wide caches, built once for every scope.
    let (nodes, node_task) = singleton::Nodes::watch(&deps);
    tasks.push(Task::forever("nodes", node_task));

    // One set of caches and controllers per watched scope.
    let scopes: Vec<Option<String>> = if cfg.namespaces.is_empty() {
        vec![None]
    } else {
        cfg.namespaces.iter().cloned().map(Some).collect()
    };
    let mut view = SingletonView::default();
    for scope in &scopes {
        let label = scope.as_deref().unwrap_or("all");
        let started = singleton::start(&deps, scope.clone(), &nodes);
        for (i, t) in started.tasks.into_iter().enumerate() {
            tasks.push(Task::forever(format!("singleton-{label}-{i}"), t));
        }
        view.0.push((scope.clone(), started.stores));
    }
    // One review cache for pod tokens, whichever endpoint a pod asks.
    let pod_tokens = Arc::new(PodTokens::new(Arc::new(KubeTokenReviewer {
        client: client.clone(),
    })));
    let release = Arc::new(ReleaseService::with_tokens(
        pod_tokens.clone(),
        Arc::new(view.clone()),
    ));
    let mut guarded = guard::GuardedObjects {
        inner: Arc::new(view),
        pods: vec![],
        pool_pods: vec![],
        probes: deps.probes.clone(),
    };
    for scope in &scopes {
        let (store, task) = guard::watch(&deps, scope.clone());
        let label = scope.as_deref().unwrap_or("all");
        tasks.push(Task::forever(format!("busy-guard-pods-{label}"), task));
        guarded.pods.push((scope.clone(), store));
    }
    // Claims: every replica keeps the caches (the HTTP endpoints read them); the leader binds.
    // The HSD controller feeds them its pod and HSD caches (each cached once per scope).
    let mut claim_stores = vec![];
    let mut hsd_started = vec![];
    for scope in &scopes {
        use crate::controller::claim;
        let (started, hsd_feed) = hsd::start_with_claims(&deps, scope.clone());
        hsd_started.push(started);
        let hsj_feed = claim::own_feed(
            &deps,
            scope.as_deref(),
            crate::api::hsj::NAME_LABEL,
            crate::api::claim::PoolKind::HotStandbyJob,
        );
        let claims = claim::start(&deps, scope.clone(), hsd_feed, hsj_feed);
        tasks.extend(
            claims
                .started
                .tasks
                .into_iter()
                .map(|(n, t)| Task::forever(n, t)),
        );
        for pods in [&claims.stores.hsd_pods, &claims.stores.hsj_pods] {
            guarded.pool_pods.push((scope.clone(), pods.clone()));
        }
        claim_stores.push((scope.clone(), claims.stores));
    }
    let claim_view = Arc::new(ClaimView(claim_stores));
    let services = server::Services {
        release: Some(release),
        assignment: Some(Arc::new(AssignmentService::new(
            pod_tokens,
            claim_view.clone(),
        ))),
        claims: Some(Arc::new(ClaimsService::new(
            Arc::new(KubeAuthorizer {
                client: client.clone(),
            }),
            Arc::new(KubeClaimWriter {
                client: client.clone(),
            }),
            claim_view,
        ))),
    };
    let server_cfg = ServerConfig {
        tls: tls_mode(&client, &cfg).await?,
        held: deps.held.clone(),
        ..cfg.server.clone()
    };
    // Per scope: the guard's own cache and the pool pod caches of that scope.
    let guarded_stores: Vec<Vec<_>> = guarded
        .pods
        .iter()
        .map(|(scope, own)| {
            let pools = guarded.pool_pods.iter().filter(|(s, _)| s == scope);
            std::iter::once(own.clone())
                .chain(pools.map(|(_, s)| s.clone()))
                .collect()
        })
        .collect();
    let mut prepared = server::prepare(
        &server_cfg,
        Arc::new(guarded),
        services,
        readiness.clone(),
        metrics.clone(),
        deps.debug.clone(),
    )
    .await?;
    // The guard probes http/exec pods itself when the cache is not recent (this replica may
    // not lead, so its controllers may never probe) and records hold starts on the pods.
    let held_since = crate::webhook::held_since::HeldSince {
        client: client.clone(),
    };
    let exec = crate::probe::exec::ExecProber::new(
        Arc::new(crate::probe::exec::KubeExec {
            client: client.clone(),
        }),
        crate::webhook::reprobe::IN_FLIGHT,
    );
    prepared.state.guard = crate::webhook::GuardState::with_io(
        server_cfg.busy_guard.clone(),
        deps.held.clone(),
        crate::webhook::GuardIo {
            reprober: Some(Arc::new(crate::webhook::reprobe::Reprober::new(
                deps.probes.clone(),
                Some(exec),
                Some(metrics.clone()),
            ))),
            held_since: Some(held_since.clone()),
        },
    );
    for (i, stores) in guarded_stores.into_iter().enumerate() {
        tasks.push(Task::forever(
            format!("busy-guard-held-since-{i}"),
            guard::sweep_held_since(
                stores,
                deps.probes.clone(),
                held_since.clone(),
                deps.leading.clone(),
                server_cfg.busy_guard.max_hold,
            ),
        ));
    }

    match (cfg.webhook_config_name.clone(), prepared.tls.ca_pem.clone()) {
        (Some(name), Some(ca)) => {
            // The busy guard's ValidatingWebhookConfiguration has the same name.
            tasks.push(Task::forever(
                "cabundle-guard",
                crate::tls::cabundle::keep_ca_bundle_of::<
                    k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
                >(
                    client.clone(),
                    name.clone(),
                    ca.clone(),
                    Duration::from_secs(60),
                ),
            ));
            tasks.push(Task::forever(
                "cabundle",
                crate::tls::cabundle::keep_ca_bundle(
                    client.clone(),
                    name,
                    ca,
                    Duration::from_secs(60),
                ),
            ))
        }
        (Some(_), None) => {
            tracing::info!("--webhook-config-name is only used with --tls-self-signed; caBundle left to its owner")
        }
        _ => {}
    }

    for started in hsd_started
        .into_iter()
        .chain(scopes.iter().map(|scope| hsj::start(&deps, scope.clone())))
    {
        tasks.extend(started.tasks.into_iter().map(|(n, t)| Task::forever(n, t)));
    }
    let actors =
        crate::controller::actor::start_all(&deps, &cfg.actor, actor_runtime, &scopes).await?;
    tasks.extend(actors.tasks.into_iter().map(|(n, t)| Task::forever(n, t)));
    // Every watch is registered: readiness now follows the caches (and names the missing).
    readiness.set_watches_started();
    tracing::info!(
        watches = deps.caches.len(),
        "started; ready once every cache has listed"
    );
    {
        let (readiness, caches) = (readiness.clone(), deps.caches.clone());
        tasks.push(Task::forever("sync-report", async move {
            report_synced(readiness, caches).await;
            futures::future::pending::<()>().await
        }));
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server_stop = stop_rx.clone();
    tasks.push(
        Task::forever("webhook", async move {
            prepared
                .serve(async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                })
                .await
        })
        .draining(),
    );
    let readiness_on_stop = readiness.clone();
    supervise(
        tasks,
        async move {
            shutdown.await;
            // Not ready first (no new traffic), then the webhook stops accepting and
            // answers what is in flight.
            readiness_on_stop.set_stopping();
            let _ = stop_tx.send(true);
            drop(stop_rx);
        },
        &readiness,
    )
    .await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Log once when every required cache has listed (readiness itself is derived live).
async fn report_synced(readiness: Readiness, caches: crate::state::Caches) {
    let mut waited = Duration::ZERO;
    let mut next_warning = Duration::from_secs(30);
    loop {
        if caches.waiting_for().is_empty() {
            tracing::info!(waited_ms = waited.as_millis() as u64, "caches synced");
            return;
        }
        if waited >= next_warning {
            next_warning += Duration::from_secs(60);
            let names: Vec<String> = readiness
                .waiting_for()
                .into_iter()
                .map(|w| w.resource)
                .collect();
            tracing::warn!(waiting_for = ?names, "still waiting for caches to list");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Task {
        Task::forever("pending", futures::future::pending::<()>())
    }

    #[tokio::test]
    async fn a_task_that_returns_ends_the_run_with_its_name() {
        let r = Readiness::without_caches();
        r.set_certs_loaded();
        let tasks = vec![pending(), Task::forever("hsd", async {})];
        let err = supervise(tasks, futures::future::pending(), &r)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("task hsd stopped"), "{err}");
        assert_eq!(r.not_ready_reasons(), vec!["task hsd stopped".to_string()]);
    }

    #[tokio::test]
    async fn a_task_that_fails_or_panics_ends_the_run() {
        let r = Readiness::default();
        let failing = Task::new("leader-election", async {
            Err(Error::Config("lease lost".into()))
        });
        let err = supervise(vec![pending(), failing], futures::future::pending(), &r)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("leader-election failed") && err.contains("lease lost"),
            "{err}"
        );

        let panicking = Task::forever("webhook", async {
            let v: Vec<u8> = vec![];
            let _ = v[1];
        });
        let err = supervise(vec![panicking, pending()], futures::future::pending(), &r)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("webhook panicked"), "{err}");
    }

    #[tokio::test]
    async fn dropping_the_supervisor_stops_every_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let holder = Task::forever("holder", async move {
            let _keep = tx;
            futures::future::pending::<()>().await
        });
        let r = Readiness::default();
        let sup =
            tokio::spawn(
                async move { supervise(vec![holder], futures::future::pending(), &r).await },
            );
        tokio::time::sleep(Duration::from_millis(20)).await;
        sup.abort();
        // The task's captured sender is dropped once the task is aborted.
        tokio::time::timeout(Duration::from_secs(1), rx)
            .await
            .expect("the task was stopped")
            .unwrap_err();
    }

    #[tokio::test]
    async fn shutdown_ends_the_run_cleanly() {
        let r = Readiness::default();
        let res = supervise(
            vec![pending(), pending()],
            tokio::time::sleep(Duration::from_millis(10)),
            &r,
        )
        .await;
        assert!(res.is_ok());
        assert!(!r.not_ready_reasons().iter().any(|x| x.contains("task")));
    }
}
