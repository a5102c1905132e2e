//! The reconciler shell every kind shares: the sync/leadership gate, status writing that can
//! clear fields, Events, metrics and the error policy. A kind supplies observe → plan → apply;
//! the shell supplies everything around it.
//!
//! Invariants:
//! - no reconcile body runs before the gate is open: every store the controller reads has
//!   listed (its reflector saw `InitDone`) and this process holds the leadership (always true
//!   without leader election). A reconcile that arrives earlier waits and then runs on synced
//!   caches;
//! - status is written with server-side apply under our field manager, so a field we no longer
//!   send is removed by the API server; a field the apply could not remove (owned by an older
//!   writer, e.g. a merge patch of a previous version) is then cleared with an explicit null;
//! - the status a reconcile starts from is the last one this process wrote when that is newer
//!   than the cache (status has one writer: us), so a lagging cache never resurrects a field.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::state::DebugState;
use crate::{Error, Result, MANAGER};

/// How often a store's readiness is re-polled (see [`Gate::stores_ready`]).
pub const READY_REPOLL: Duration = Duration::from_millis(50);

/// Opens when the controller's caches have synced and this process leads.
///
/// The sync condition is a future awaited by the reconciles themselves (shared, so every
/// waiting reconcile sees the same answer), never a task of its own: nothing outside the
/// supervised controller task runs for the gate.
#[derive(Clone)]
pub struct Gate {
    synced: Arc<watch::Sender<bool>>,
    ready: Option<futures::future::Shared<futures::future::BoxFuture<'static, bool>>>,
    leading: watch::Receiver<bool>,
}

impl Gate {
    /// A closed gate: not synced; `leading` says whether this process may write.
    pub fn new(leading: watch::Receiver<bool>) -> Self {
        Gate {
            synced: Arc::new(watch::channel(false).0),
            ready: None,
            leading,
        }
    }

    /// A gate that is open from the start (for callers with nothing to wait for).
    pub fn open() -> Self {
        let g = Gate::new(always_leading());
        g.set_synced();
        g
    }

    /// The caches count as synced once `ready` resolves true (awaited by the first
    /// reconcile that needs to know, and shared with every other).
    pub fn open_when(&mut self, ready: impl std::future::Future<Output = bool> + Send + 'static) {
        use futures::FutureExt;
        self.ready = Some(ready.boxed().shared());
    }

    pub fn set_synced(&self) {
        self.synced.send_replace(true);
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow() || self.ready.as_ref().and_then(|r| r.peek()) == Some(&true)
    }

    pub fn is_open(&self) -> bool {
        self.is_synced() && *self.leading.borrow()
    }

    /// Wait until the caches have synced (leadership aside). False if they never will.
    pub async fn wait_synced(&self) -> bool {
        if self.is_synced() {
            return true;
        }
        let mut synced = self.synced.subscribe();
        match self.ready.clone() {
            Some(ready) => tokio::select! {
                ok = ready => ok,
                r = synced.wait_for(|s| *s) => r.is_ok(),
            },
            None => synced.wait_for(|s| *s).await.is_ok(),
        }
    }

    /// Wait until the gate is open. Returns false if it can never open.
    pub async fn opened(&self) -> bool {
        if !self.wait_synced().await {
            return false;
        }
        let mut leading = self.leading.clone();
        let ok = leading.wait_for(|l| *l).await.is_ok();
        ok
    }

    /// Resolves true once every store has listed (false if one can never list).
    ///
    /// kube's readiness signal wakes only the last task that waited on a store, and a
    /// `Controller` waits on its own store too: a second waiter may never be woken. So the
    /// wait is re-polled every [`READY_REPOLL`]; a re-poll sees the signal that was sent.
    pub async fn stores_ready<K>(stores: Vec<kube::runtime::reflector::Store<K>>) -> bool
    where
        K: Resource + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        for s in stores {
            loop {
                match tokio::time::timeout(READY_REPOLL, s.wait_until_ready()).await {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => return false,
                    Err(_) => continue,
                }
            }
        }
        true
    }
}

/// A leadership channel that always says "leading" (no leader election).
pub fn always_leading() -> watch::Receiver<bool> {
    static ALWAYS: std::sync::OnceLock<watch::Sender<bool>> = std::sync::OnceLock::new();
    ALWAYS.get_or_init(|| watch::channel(true).0).subscribe()
}

/// An Event a pure plan decided on, published by the shell once the writes are done: every
/// kind decides its events as data, never in async code.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

impl Note {
    pub fn normal(reason: &str, message: impl Into<String>) -> Self {
        Note {
            warning: false,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn warning(reason: &str, message: impl Into<String>) -> Self {
        Note {
            warning: true,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Plumbing every reconciler shares: client, metrics, debug state, Events, clock, gate.
pub struct Shell {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub debug: DebugState,
    pub recorder: Recorder,
    pub clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    /// Safety-net resync; everything else is event-driven.
    pub resync: Duration,
    pub gate: Gate,
    /// The pods the busy guard holds now (status.heldPods, DeletionHeld Events).
    pub held: crate::state::HeldPods,
    /// Claim counts per pool (HSD and HSJ show them in status).
    pub claims: crate::state::ClaimCounts,
    /// The status last written per object ("namespace/name" → (uid, status as compact JSON
    /// text: a `Value` tree costs several times its text, and 1,000 pools keep 1,000)).
    written: Mutex<HashMap<String, (String, Box<str>)>>,
    /// Failed reconciles in a row per object ("namespace/name"), for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Shell {
    /// A shell whose gate opens once `ready` resolves true and `leading` says this process
    /// leads: the one way every kind composes its gate.
    pub fn gated(
        deps: &super::Deps,
        ready: impl std::future::Future<Output = bool> + Send + 'static,
    ) -> Self {
        let mut gate = Gate::new(deps.leading.clone());
        gate.open_when(ready);
        let (client, metrics) = (deps.client.clone(), deps.metrics.clone());
        let mut shell = Shell::new(client, metrics, deps.debug.clone(), gate);
        shell.held = deps.held.clone();
        shell.claims = deps.claims.clone();
        shell
    }

    pub fn new(client: Client, metrics: Arc<Metrics>, debug: DebugState, gate: Gate) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Shell {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            debug,
            clock: Arc::new(Timestamp::now),
            resync: Duration::from_secs(300),
            gate,
            held: Default::default(),
            claims: Default::default(),
            written: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// Publish the Events a pure plan decided, in order (a failure is logged, never fatal).
    pub async fn publish_notes(&self, reference: &ObjectReference, action: &str, notes: &[Note]) {
        for n in notes {
            let t = if n.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            self.publish(reference, action, t, &n.reason, n.message.clone())
                .await;
        }
    }

    /// Publish an Event; a failure is logged, never fatal.
    pub async fn publish(
        &self,
        reference: &ObjectReference,
        action: &str,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, reference).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// Run one reconcile inside `span` once the gate is open, recording its duration and
    /// any error. Before the gate opens nothing of `fut` runs.
    pub async fn reconcile<F>(
        &self,
        controller: &'static str,
        key: &str,
        span: tracing::Span,
        fut: F,
    ) -> Result<Action>
    where
        F: std::future::Future<Output = Result<Action>>,
    {
        if !self.gate.is_open() {
            tracing::debug!(controller, "waiting for caches to sync and leadership");
            if !self.gate.opened().await {
                return Ok(Action::await_change());
            }
        }
        let started = std::time::Instant::now();
        let res = tracing::Instrument::instrument(fut, span).await;
        self.metrics
            .reconciled(controller, started.elapsed().as_secs_f64());
        match &res {
            Err(e) => self.metrics.reconcile_failed(controller, e),
            Ok(_) => {
                lock_map(&self.failures).remove(key);
            }
        }
        res
    }

    /// What to do after a failed reconcile of `key` ("namespace/name"): retry after
    /// [`retry_delay`] for the failures in a row so far (reset by a successful reconcile).
    pub fn retry_after(&self, controller: &'static str, key: &str, err: &Error) -> Action {
        let failures = {
            let mut m = lock_map(&self.failures);
            let n = m.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let conflict = matches!(err, Error::Kube(kube::Error::Api(s)) if s.code == 409);
        let delay = retry_delay(failures, conflict, key);
        tracing::warn!(controller, key, failures, retry_in_ms = delay.as_millis() as u64, error = %err, "reconcile failed; retrying");
        Action::requeue(delay)
    }

    /// One reconcile of `obj` (see [`Shell::reconcile`]) in a span naming it, starting from
    /// the status we last wrote when the cache has not caught up with it.
    pub async fn reconcile_object<K, F, Fut>(
        &self,
        controller: &'static str,
        obj: &K,
        inner: F,
    ) -> Result<Action>
    where
        K: WithStatus,
        F: FnOnce(K) -> Fut,
        Fut: std::future::Future<Output = Result<Action>>,
    {
        let meta = obj.meta();
        let span = tracing::info_span!(
            "reconcile",
            controller,
            ns = meta.namespace.as_deref().unwrap_or_default(),
            name = meta.name.as_deref().unwrap_or_default()
        );
        let mut obj = obj.clone();
        let key = format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        );
        let status = self.last_status(&obj, obj.status());
        *obj.status_mut() = status;
        self.reconcile(controller, &key, span, inner(obj)).await
    }

    /// The status a reconcile should start from: what we last wrote, else the cached one.
    pub fn last_status<K, S>(&self, obj: &K, cached: Option<&S>) -> Option<S>
    where
        K: Resource,
        S: DeserializeOwned + Clone,
    {
        let uid = obj.meta().uid.as_deref()?;
        let memo = self.lock().get(&memo_key(obj)).cloned();
        match memo {
            // A recreated object of the same name starts from its own status.
            Some((u, v)) if u == uid => serde_json::from_str(&v).ok().or_else(|| cached.cloned()),
            _ => cached.cloned(),
        }
    }

    /// Forget what we wrote for an object that is gone.
    pub fn forget(&self, namespace: &str, name: &str) {
        let key = format!("{namespace}/{name}");
        self.lock().remove(&key);
        lock_map(&self.failures).remove(&key);
    }

    /// Failed reconciles in a row of `key` (tests of the backoff).
    pub fn failures(&self, key: &str) -> u32 {
        lock_map(&self.failures).get(key).copied().unwrap_or(0)
    }

    /// How many objects' statuses are remembered (for tests of the cleanup).
    pub fn remembered(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Box<str>)>> {
        match self.written.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Write `new` as the object's whole status (see the module header). Returns whether a
    /// write was made; nothing is sent when `new` equals the status we start from.
    /// [`Shell::write_status`] of a namespaced kind's own status, from its cached status.
    pub async fn write_own_status<K>(&self, obj: &K, status: &K::Status) -> Result<bool>
    where
        K: WithStatus + DeserializeOwned + Serialize + std::fmt::Debug,
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
        K::Status: Serialize + PartialEq,
    {
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        self.write_status(&api, obj, &(), obj.status(), status)
            .await
    }

    /// A spec that cannot be acted on: write `status` (its condition says why) and, when
    /// that is news, one Warning event; nothing else is done.
    pub async fn refuse<K>(
        &self,
        obj: &K,
        status: &K::Status,
        reason: &str,
        message: &str,
    ) -> Result<Action>
    where
        K: WithStatus + DeserializeOwned + Serialize + std::fmt::Debug,
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
        K::Status: Serialize + PartialEq,
    {
        if self.write_own_status(obj, status).await? {
            let note = Note::warning(reason, message);
            self.publish_notes(&obj.object_ref(&()), "Reconcile", &[note])
                .await;
        }
        tracing::warn!(reason, message, "{} cannot be acted on", K::kind(&()));
        Ok(Action::requeue(self.resync))
    }

    pub async fn write_status<K, S>(
        &self,
        api: &Api<K>,
        obj: &K,
        dt: &K::DynamicType,
        cached: Option<&S>,
        new: &S,
    ) -> Result<bool>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
        S: Serialize + DeserializeOwned + Clone + PartialEq,
    {
        if self.last_status(obj, cached).as_ref() == Some(new) {
            return Ok(false);
        }
        let name = obj
            .meta()
            .name
            .clone()
            .ok_or_else(|| Error::InvalidObject {
                kind: "object",
                name: String::new(),
                reason: "no name".into(),
            })?;
        let want = serde_json::to_value(new)?;
        let body = json!({
            "apiVersion": K::api_version(dt),
            "kind": K::kind(dt),
            "metadata": {"name": name},
            "status": want,
        });
        let applied = api
            .patch_status(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        let got = serde_json::to_value(&applied)?
            .get("status")
            .cloned()
            .unwrap_or(Value::Null);
        let leftovers = clear_patch(&got, &want);
        if !leftovers.is_empty() {
            // Fields an older writer owns survived the apply: clear them explicitly.
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": Value::Object(leftovers) })),
            )
            .await?;
        }
        if let Some(uid) = obj.meta().uid.clone() {
            self.lock()
                .insert(memo_key(obj), (uid, want.to_string().into_boxed_str()));
        }
        Ok(true)
    }
}

fn memo_key<K: Resource>(obj: &K) -> String {
    let m = obj.meta();
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default()
    )
}

/// Drive a controller's result stream to its end: a request whose object is gone calls
/// `gone` (the kind forgets its per-object state there); any other error is logged at debug
/// (kube's controller retries it by `error_policy`).
pub async fn follow<T, C, Fut>(
    results: impl futures::Stream<
        Item = std::result::Result<
            T,
            kube::runtime::controller::Error<Error, kube::runtime::watcher::Error>,
        >,
    >,
    kind: &'static str,
    ctx: Arc<C>,
    gone: impl Fn(Arc<C>, String, String) -> Fut,
) where
    Fut: std::future::Future<Output = ()>,
{
    use futures::StreamExt;
    futures::pin_mut!(results);
    while let Some(r) = results.next().await {
        match (gone_object(&r), r) {
            (Some((ns, name)), _) => gone(ctx.clone(), ns, name).await,
            (None, Err(e)) => tracing::debug!(error = %e, kind, "controller event"),
            (None, Ok(_)) => {}
        }
    }
}

/// The namespace and name of a reconcile request whose object is gone (kube's controller
/// reports such requests as `ObjectNotFound`): the moment to forget per-object state.
pub fn gone_object<E>(
    res: &std::result::Result<
        E,
        kube::runtime::controller::Error<Error, kube::runtime::watcher::Error>,
    >,
) -> Option<(String, String)> {
    match res {
        Err(kube::runtime::controller::Error::ObjectNotFound(r)) => {
            Some((r.namespace.clone().unwrap_or_default(), r.name.clone()))
        }
        _ => None,
    }
}

/// The merge patch (RFC 7386) that removes from `have` every field `want` does not hold,
/// recursively through objects. Arrays and scalars are left alone: the apply set them.
pub fn clear_patch(have: &Value, want: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    let (Value::Object(h), Value::Object(w)) = (have, want) else {
        return out;
    };
    for (k, hv) in h {
        match w.get(k) {
            None => {
                out.insert(k.clone(), Value::Null);
            }
            Some(wv) => {
                let inner = clear_patch(hv, wv);
                if !inner.is_empty() {
                    out.insert(k.clone(), Value::Object(inner));
                }
            }
        }
    }
    out
}

/// The shared error policy: conflicts retry soon, everything else after a short backoff.
/// A kind whose status the shell remembers between reconciles.
pub trait WithStatus: Resource + Clone {
    type Status: DeserializeOwned + Clone;
    fn status(&self) -> Option<&Self::Status>;
    fn status_mut(&mut self) -> &mut Option<Self::Status>;
}

/// `impl WithStatus for Kind { type Status = StatusType; ... }` over its `status` field.
macro_rules! with_status {
    ($kind:ty, $status:ty) => {
        impl $crate::controller::shell::WithStatus for $kind {
            type Status = $status;
            fn status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
            fn status_mut(&mut self) -> &mut Option<$status> {
                &mut self.status
            }
        }
    };
}
pub(crate) use with_status;

/// A kind's reconciler entry points over its `Ctx` (a `shell` field), its `CONTROLLER` name
/// and its `reconcile_inner(&obj, &ctx, started)`: the status memory (`WithStatus`),
/// `reconcile` inside the shell (span, remembered status, gate, metrics), the shared
/// `error_policy`, and `debug_key` for `/debug/state`.
macro_rules! reconciler {
    ($kind:ty, $status:ty) => {
        $crate::controller::shell::with_status!($kind, $status);

        /// One reconcile, inside the shell.
        pub async fn reconcile(
            obj: std::sync::Arc<$kind>,
            ctx: std::sync::Arc<Ctx>,
        ) -> $crate::Result<kube::runtime::controller::Action> {
            let started = std::time::Instant::now();
            let c = &ctx;
            c.shell
                .reconcile_object(CONTROLLER, obj.as_ref(), |obj| async move {
                    reconcile_inner(&obj, c, started).await
                })
                .await
        }

        /// The shared error policy.
        pub fn error_policy(
            obj: std::sync::Arc<$kind>,
            err: &$crate::Error,
            ctx: std::sync::Arc<Ctx>,
        ) -> kube::runtime::controller::Action {
            let key = format!(
                "{}/{}",
                kube::ResourceExt::namespace(obj.as_ref()).unwrap_or_default(),
                kube::ResourceExt::name_any(obj.as_ref())
            );
            ctx.shell.retry_after(CONTROLLER, &key, err)
        }

        /// The `/debug/state` key of one object.
        fn debug_key(ns: &str, name: &str) -> String {
            format!("{CONTROLLER}/{ns}/{name}")
        }
    };
}
pub(crate) use reconciler;

fn lock_map<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// First retry after a failed reconcile (a conflict: [`CONFLICT_RETRY`]).
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest wait between retries of one object.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// Retry after a conflict (someone else wrote first: the next try usually succeeds).
pub const CONFLICT_RETRY: Duration = Duration::from_millis(500);

/// The wait before retrying an object after `failures` failed reconciles in a row: a
/// conflict retries soon (the first three times, then backs off like any error); any other
/// error waits [`FIRST_RETRY`], doubling per failure up to [`MAX_RETRY`]. Each object's
/// wait is spread by up to -20 % by a hash of its key, so 1,000 objects failing together
/// (the API server down) do not retry in one burst. Pure.
pub fn retry_delay(failures: u32, conflict: bool, key: &str) -> Duration {
    if conflict && failures <= 3 {
        return CONFLICT_RETRY;
    }
    let doublings = failures.saturating_sub(1).min(16);
    let base = FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY);
    spread(base, key)
}

/// `base` shortened by 0–20 %, the same for the same key (FNV-1a of it): objects first
/// handled together (1,000 HSDs at start) do not all come due again in the same instant.
pub fn spread(base: Duration, key: &str) -> Duration {
    let per_mille = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) % 200;
    base - base.mul_f64(per_mille as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn resyncs_are_spread_over_a_fifth_of_the_period() {
        let base = Duration::from_secs(300);
        let due: Vec<Duration> = (0..1000)
            .map(|i| spread(base, &format!("games/game-{i}")))
            .collect();
        assert!(due.iter().all(|d| *d <= base && *d >= base.mul_f64(0.8)));
        assert_eq!(spread(base, "ns/a"), spread(base, "ns/a"));
        // 1,000 objects land in many different seconds, not one.
        let seconds: std::collections::BTreeSet<u64> = due.iter().map(Duration::as_secs).collect();
        assert!(
            seconds.len() > 40,
            "only {} distinct seconds",
            seconds.len()
        );
    }

    #[test]
    fn retries_back_off_and_conflicts_retry_soon() {
        assert_eq!(retry_delay(1, true, "ns/a"), CONFLICT_RETRY);
        assert_eq!(retry_delay(3, true, "ns/a"), CONFLICT_RETRY);
        assert!(retry_delay(4, true, "ns/a") > CONFLICT_RETRY);
        // No spread is more than 20 % off; the base doubles from 5 s to the 300 s cap.
        for (n, base) in [(1, 5u64), (2, 10), (3, 20), (4, 40), (7, 300), (40, 300)] {
            let d = retry_delay(n, false, "ns/a");
            let base = Duration::from_secs(base);
            assert!(d <= base && d >= base.mul_f64(0.8), "{n}: {d:?}");
        }
        let spread: std::collections::BTreeSet<Duration> = (0..50)
            .map(|i| retry_delay(1, false, &format!("ns/pool-{i}")))
            .collect();
        assert!(
            spread.len() > 10,
            "objects failing together retry apart: {spread:?}"
        );
    }

    #[tokio::test]
    async fn failures_count_up_until_a_reconcile_succeeds_or_the_object_goes() {
        let (svc, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let client = Client::new(svc, "default");
        let shell = Shell::new(
            client,
            Arc::new(Metrics::new()),
            DebugState::default(),
            Gate::open(),
        );
        let err = Error::Tls("down".into());
        let first = shell.retry_after("hsd", "ns/a", &err);
        let second = shell.retry_after("hsd", "ns/a", &err);
        assert_eq!(first, Action::requeue(retry_delay(1, false, "ns/a")));
        assert_eq!(second, Action::requeue(retry_delay(2, false, "ns/a")));
        assert_eq!((shell.failures("ns/a"), shell.failures("ns/b")), (2, 0));
        let ok = shell
            .reconcile("hsd", "ns/a", tracing::Span::none(), async {
                Ok(Action::await_change())
            })
            .await;
        assert!(ok.is_ok());
        assert_eq!(shell.failures("ns/a"), 0, "a success resets the backoff");
        shell.retry_after("hsd", "ns/b", &err);
        shell.forget("ns", "b");
        assert_eq!(shell.failures("ns/b"), 0, "a gone object is forgotten");
    }

    proptest! {
        /// More failures never retry sooner, and no wait passes the cap.
        #[test]
        fn the_wait_grows_with_the_failures_and_stays_capped(
            n in 1u32..100, conflict in any::<bool>(), key in "[a-z/-]{1,20}",
        ) {
            let (now, next) = (retry_delay(n, conflict, &key), retry_delay(n + 1, conflict, &key));
            prop_assert!(next >= now);
            prop_assert!(now <= MAX_RETRY && now >= CONFLICT_RETRY);
        }
    }

    #[test]
    fn clear_patch_nulls_dropped_fields_recursively() {
        let have = json!({"a": 1, "b": "x", "c": {"d": 1, "e": 2}, "f": [1, 2]});
        let want = json!({"a": 2, "c": {"d": 1}, "f": []});
        let p = Value::Object(clear_patch(&have, &want));
        assert_eq!(p, json!({"b": null, "c": {"e": null}}));
        assert!(clear_patch(&want, &want).is_empty());
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ]
    }

    fn tree() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop::collection::btree_map("[a-e]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    proptest! {
        /// Applying the clear patch and then `want` over `have` (what the API server does with
        /// apply + our explicit nulls) gives exactly `want`: nothing stale survives.
        #[test]
        fn clear_then_merge_yields_exactly_want(have in tree(), want in tree()) {
            let mut doc = json!({"status": have});
            let clear = json!({"status": Value::Object(clear_patch(&doc["status"], &want))});
            json_patch::merge(&mut doc, &clear);
            json_patch::merge(&mut doc, &json!({"status": want.clone()}));
            if want.is_object() {
                prop_assert_eq!(&doc["status"], &want);
            }
        }
    }

    #[tokio::test]
    async fn gate_opens_only_when_synced_and_leading() {
        let (lead_tx, lead_rx) = watch::channel(false);
        let g = Gate::new(lead_rx);
        assert!(!g.is_open());
        g.set_synced();
        assert!(!g.is_open(), "synced but not leading");
        let waiter = tokio::spawn({
            let g = g.clone();
            async move { g.opened().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        lead_tx.send_replace(true);
        assert!(waiter.await.unwrap());
        assert!(g.is_open());
        lead_tx.send_replace(false);
        assert!(!g.is_open(), "a lost lease closes the gate");
    }

    /// A second waiter on the same store (as a kube `Controller` is) takes over the wake-up:
    /// the gate must open all the same.
    #[tokio::test]
    async fn gate_opens_when_another_task_waits_on_the_store_too() {
        use k8s_openapi::api::core::v1::Pod;
        use kube::runtime::{reflector, watcher};
        let (s, mut w) = reflector::store::<Pod>();
        let mut g = Gate::new(always_leading());
        g.open_when(Gate::stores_ready(vec![s.clone()]));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let other = tokio::spawn(async move { s.wait_until_ready().await.is_ok() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        w.apply_watcher_event(&watcher::Event::InitDone);
        assert!(other.await.unwrap());
        tokio::time::timeout(Duration::from_secs(1), g.opened())
            .await
            .expect("the gate opened although another task waited last");
    }

    #[tokio::test]
    async fn gate_waits_for_every_store() {
        use k8s_openapi::api::core::v1::Pod;
        use kube::runtime::{reflector, watcher};
        let (s1, mut w1) = reflector::store::<Pod>();
        let (s2, mut w2) = reflector::store::<Pod>();
        let mut g = Gate::new(always_leading());
        g.open_when(Gate::stores_ready(vec![s1, s2]));
        w1.apply_watcher_event(&watcher::Event::InitDone);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!g.is_synced(), "one store still listing");
        w2.apply_watcher_event(&watcher::Event::InitDone);
        tokio::time::timeout(Duration::from_secs(1), g.opened())
            .await
            .unwrap();
        assert!(g.is_open());
    }
}
