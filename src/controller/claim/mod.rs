//! HotStandbyClaim controller: hands warm pods of HSD and HSJ pools to claims.
//!
//! Shape: a pass per pool, observe (caches → [`bind::World`]) → [`bind::plan`] (pure) →
//! [`apply::run`]. Passes are keyed by pool, not by claim, because binding is a decision
//! over the pool's pods and all of its waiting claims at once (FIFO, one pod per claim).
//!
//! Invariants:
//! - at most one pass per pool runs at a time; a change during a pass runs one more pass
//!   after it (changes coalesce, the last one is never lost);
//! - no pass runs before the caches have listed and while this replica does not lead (the
//!   shell's gate); every replica keeps the caches (any replica answers `/v1/assignment`
//!   and `/v1/claims` from them);
//! - a binding written but not yet in the caches is remembered (`in_flight`) until the
//!   cache shows it, so a lagging cache never binds a claim twice or a pod twice;
//! - a pass wakes itself when a claim's wait or TTL runs out (a timer per pool, the
//!   earliest only).
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::ResourceExt;

use super::shell::{Gate, Shell};
use crate::api::claim::{
    Assignment, ClaimPhase, HotStandbyClaim, PoolKind, CLAIM_ANNOTATION, CLAIM_UID_ANNOTATION,
};
use crate::api::tags::Tags;
use crate::api::{HotStandbyDeployment, HotStandbyJob};
use crate::probe::ProbeCache;
use pod::PoolPod;

pub mod apply;
pub mod bind;
pub mod index;
pub mod observe;
pub use super::pool_pod as pod;

pub use observe::PoolKey;

pub const CONTROLLER: &str = "claim";

/// How long a binding is remembered at most while the cache does not show it.
const IN_FLIGHT_FOR: Duration = Duration::from_secs(30);

/// The caches claims are served from (every replica keeps them).
#[derive(Clone)]
pub struct Stores {
    pub claims: Store<HotStandbyClaim>,
    pub hsd_pods: Store<PoolPod>,
    pub hsj_pods: Store<PoolPod>,
    pub hsds: Store<HotStandbyDeployment>,
    pub hsjs: Store<HotStandbyJob>,
    /// Woken on every claim or pool-pod change (long-polls wait on it).
    pub changed: Arc<tokio::sync::Notify>,
    /// Which claims and pods are in which pool (fed by the watches of these caches).
    pub index: Arc<Mutex<index::PoolIndex>>,
}

impl Stores {
    fn index(&self) -> std::sync::MutexGuard<'_, index::PoolIndex> {
        match self.index.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn pods_of(&self, kind: Option<PoolKind>) -> Option<&Store<PoolPod>> {
        match kind? {
            PoolKind::HotStandbyDeployment => Some(&self.hsd_pods),
            PoolKind::HotStandbyJob => Some(&self.hsj_pods),
        }
    }

    /// The claim a pod carries, as the pod should learn it: only for the pod whose UID is
    /// `uid`, and only while the claim named on it exists with the same UID.
    pub fn assignment(&self, namespace: &str, pod: &str, uid: &str) -> Option<Assignment> {
        let r = ObjectRef::new(pod).within(namespace);
        let p = self.hsd_pods.get(&r).or_else(|| self.hsj_pods.get(&r))?;
        if p.meta.uid.as_deref() != Some(uid) {
            return None;
        }
        let (claim_ns, claim) = p.annotation(CLAIM_ANNOTATION)?.trim().split_once('/')?;
        let claim_uid = p.annotation(CLAIM_UID_ANNOTATION)?;
        let c = self.claims.get(&ObjectRef::new(claim).within(claim_ns))?;
        if c.metadata.uid.as_deref() != Some(claim_uid) {
            return None;
        }
        let phase = c.status.as_ref().map(|s| s.phase).unwrap_or_default();
        if phase.is_final() {
            return None;
        }
        Some(Assignment {
            claim: claim.to_string(),
            namespace: claim_ns.to_string(),
            parameters: c
                .spec
                .parameters
                .clone()
                .unwrap_or_else(|| serde_json::json!({})),
            bound_at: c.status.as_ref().and_then(|s| s.bound_at.clone()),
        })
    }
}

#[derive(Default)]
struct Memory {
    /// Bindings (and lost races) not yet in the caches, by pool.
    in_flight: HashMap<PoolKey, Vec<(bind::InFlight, Instant)>>,
    /// Pods whose claim write lost a race at this resourceVersion.
    lost: HashMap<String, (String, Instant)>,
    /// When this process first saw each claim (order, instant).
    seen: HashMap<String, (u64, Instant)>,
    next_seen: u64,
}

/// Everything a pass needs.
pub struct Ctx {
    pub shell: Shell,
    pub stores: Stores,
    pub probes: ProbeCache,
    pub counts: crate::state::ClaimCounts,
    memory: Mutex<Memory>,
}

impl Ctx {
    pub fn new(deps: &super::Deps, stores: Stores) -> Self {
        let s = stores.clone();
        let ready = async move {
            Gate::stores_ready(vec![s.claims]).await
                && Gate::stores_ready(vec![s.hsd_pods, s.hsj_pods]).await
                && Gate::stores_ready(vec![s.hsds]).await
                && Gate::stores_ready(vec![s.hsjs]).await
        };
        Ctx {
            shell: Shell::gated(deps, ready),
            stores,
            probes: deps.probes.clone(),
            counts: deps.claims.clone(),
            memory: Mutex::default(),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        match self.memory.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Note that a claim was seen (first time only).
    fn saw(&self, uid: &str) {
        let mut m = self.memory();
        if !m.seen.contains_key(uid) {
            let n = m.next_seen;
            m.next_seen += 1;
            m.seen.insert(uid.to_string(), (n, Instant::now()));
        }
    }

    /// Milliseconds the claim waited until `now`: from when this process first saw it,
    /// else from its creation time (whole seconds).
    pub fn waited_ms(&self, uid: &str, created: Timestamp, now: Timestamp) -> Option<i64> {
        if let Some((_, at)) = self.memory().seen.get(uid) {
            return Some(at.elapsed().as_millis() as i64);
        }
        let d = now.duration_since(created);
        Some(d.as_millis().max(0) as i64)
    }
}

/// The busy annotation a pool's claims write (the pool's own key, so its controller and
/// the guard read the same).
fn busy_key(stores: &Stores, key: &PoolKey) -> String {
    let k = match key.kind() {
        Some(PoolKind::HotStandbyDeployment) => stores
            .hsds
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
            .map(|h| h.spec.busy_probe.annotation_key.clone()),
        Some(PoolKind::HotStandbyJob) => stores
            .hsjs
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
            .map(|h| h.spec.busy_probe.annotation_key.clone()),
        None => None,
    };
    k.filter(|k| !k.trim().is_empty())
        .unwrap_or_else(crate::api::probe::default_annotation_key)
}

/// Observe one pool: its state, pods and claims (with the objects behind the claims).
fn observe(ctx: &Ctx, key: &PoolKey) -> (bind::World, Vec<Arc<HotStandbyClaim>>) {
    let s = &ctx.stores;
    let kind = key.kind();
    // Only this pool's objects, by the index; each checked against the cache.
    let (pod_names, claim_names) = {
        let ix = s.index();
        (ix.pods.of(key), ix.claims.of(key))
    };
    let mut stale_pods = vec![];
    let mut stale_claims = vec![];
    let pods: Vec<Arc<PoolPod>> = match s.pods_of(kind) {
        Some(store) => pod_names
            .into_iter()
            .filter_map(|n| {
                let p = store
                    .get(&ObjectRef::new(&n).within(&key.namespace))
                    .filter(|p| PoolKey::of_pod(p).as_ref() == Some(key));
                if p.is_none() {
                    stale_pods.push(n);
                }
                p
            })
            .collect(),
        None => vec![],
    };
    let live = pods
        .iter()
        .filter(|p| p.meta.deletion_timestamp.is_none())
        .count();
    let (hsd, hsj) = (
        s.hsds
            .get(&ObjectRef::new(&key.name).within(&key.namespace)),
        s.hsjs
            .get(&ObjectRef::new(&key.name).within(&key.namespace)),
    );
    let (pool, src) = match kind {
        Some(PoolKind::HotStandbyDeployment) => observe::hsd_state(hsd.as_deref(), live),
        Some(PoolKind::HotStandbyJob) => observe::hsj_state(hsj.as_deref(), live),
        None => (bind::PoolState::UnknownKind, None),
    };
    let pod_facts: Vec<bind::PodFacts> = pods
        .iter()
        .map(|p| observe::pod_facts(p, src.as_ref(), &ctx.probes))
        .collect();
    // The claims the pods carry that still exist (a pod of a deleted claim is released).
    let live_claims: HashSet<String> = pod_facts
        .iter()
        .filter_map(|p| {
            let (ns, name) = p.claim.as_ref()?.0.split_once('/')?;
            s.claims
                .get(&ObjectRef::new(name).within(ns))?
                .metadata
                .uid
                .clone()
        })
        .collect();
    // In name order (the index's).
    let objects: Vec<Arc<HotStandbyClaim>> = claim_names
        .into_iter()
        .filter_map(|n| {
            let c = s
                .claims
                .get(&ObjectRef::new(&n).within(&key.namespace))
                .filter(|c| PoolKey::of_claim(c).as_ref() == Some(key));
            if c.is_none() {
                stale_claims.push(n);
            }
            c
        })
        .collect();
    if !stale_pods.is_empty() || !stale_claims.is_empty() {
        let mut ix = s.index();
        for n in &stale_pods {
            ix.pods.forget(key, n);
        }
        for n in &stale_claims {
            ix.claims.forget(key, n);
        }
    }
    let mut m = ctx.memory();
    let now = Instant::now();
    // Forget what the caches show now (or what is too old to matter).
    let flights = m.in_flight.entry(key.clone()).or_default();
    flights.retain(|(f, at)| {
        let shown = pod_facts
            .iter()
            .find(|p| p.uid == f.pod_uid)
            .is_none_or(|p| p.claim.as_ref().is_some_and(|c| c.1 == f.claim_uid));
        !shown && now.duration_since(*at) < IN_FLIGHT_FOR
    });
    let mut in_flight: Vec<bind::InFlight> = flights.iter().map(|(f, _)| f.clone()).collect();
    let lost: Vec<(String, String)> = pod_facts
        .iter()
        .filter(|p| {
            m.lost.get(&p.uid).is_some_and(|(rv, at)| {
                *rv == p.resource_version && now.duration_since(*at) < IN_FLIGHT_FOR
            })
        })
        .map(|p| (p.uid.clone(), String::new()))
        .collect();
    in_flight.extend(
        lost.into_iter()
            .map(|(pod_uid, claim_uid)| bind::InFlight { claim_uid, pod_uid }),
    );
    let claims = objects
        .iter()
        .map(|c| {
            let uid = c.metadata.uid.clone().unwrap_or_default();
            let seen = m.seen.get(&uid).map(|s| s.0).unwrap_or(0);
            // What we wrote last is newer than the cache only while the cache still says
            // Pending (every later phase is ours and final or stable): read the memory then
            // only, it costs a parse per claim.
            let cached_pending = c
                .status
                .as_ref()
                .is_none_or(|s| s.phase == ClaimPhase::Pending);
            if cached_pending {
                let status = ctx.shell.last_status(&**c, c.status.as_ref());
                observe::claim_facts(c, status.as_ref(), seen)
            } else {
                observe::claim_facts(c, c.status.as_ref(), seen)
            }
        })
        .collect::<Vec<_>>();
    // Claims that ended need no arrival time any more.
    for c in &claims {
        if c.phase.is_final() {
            m.seen.remove(&c.uid);
        }
    }
    drop(m);
    let world = bind::World {
        namespace: key.namespace.clone(),
        pool_name: key.name.clone(),
        pool,
        pods: pod_facts,
        claims,
        in_flight,
        live_claims,
    };
    (world, objects)
}

/// One pass over one pool. Returns when to pass it again (a wait or TTL runs out) and
/// whether to pass it again at once (a race was lost).
pub async fn pass(ctx: &Ctx, key: &PoolKey) -> crate::Result<(Option<Timestamp>, bool)> {
    let started = Instant::now();
    let (world, objects) = observe(ctx, key);
    let now = (ctx.shell.clock)();
    let plan = bind::plan(&world, now);
    let key_str = busy_key(&ctx.stores, key);
    let done = apply::run(ctx, &world, &objects, &plan.actions, &key_str, started).await?;
    {
        let mut m = ctx.memory();
        let at = Instant::now();
        let flights = m.in_flight.entry(key.clone()).or_default();
        for (claim_uid, pod_uid) in &done.bound {
            flights.push((
                bind::InFlight {
                    claim_uid: claim_uid.clone(),
                    pod_uid: pod_uid.clone(),
                },
                at,
            ));
        }
        if flights.is_empty() {
            m.in_flight.remove(key);
        }
        for (pod, rv) in &done.lost {
            m.lost.insert(pod.clone(), (rv.clone(), at));
        }
        m.lost
            .retain(|_, (_, t)| at.duration_since(*t) < IN_FLIGHT_FOR);
        for (c, _) in &done.bound {
            if let Some((_, seen)) = m.seen.get(c) {
                ctx.shell
                    .metrics
                    .claim
                    .wait
                    .observe(seen.elapsed().as_secs_f64());
            }
        }
    }
    if let Some(k) = key.kind() {
        ctx.counts
            .set(&key.namespace, k.as_str(), &key.name, plan.counts);
    }
    let idle_pool = world.claims.is_empty() && world.pods.iter().all(|p| p.claim.is_none());
    if idle_pool {
        // Nothing of claims here any more: keep no per-pool state.
        ctx.shell.debug.remove(&format!("claim/{key}"));
        return Ok((None, false));
    }
    ctx.shell.debug.set(
        format!("claim/{key}"),
        serde_json::json!({"counts": {"claimed": plan.counts.claimed, "pending": plan.counts.pending, "exhausted": plan.counts.exhausted}, "actions": plan.actions.len()}),
    );
    let pending = world.claims.iter().any(|c| c.phase == ClaimPhase::Pending);
    Ok((plan.wake_at, done.again && pending))
}

type PassResult = crate::Result<(Option<Timestamp>, bool)>;

/// One pass, once the gate is open, with the reconcile metrics.
fn spawn_pass(
    ctx: Arc<Ctx>,
    key: PoolKey,
) -> futures::future::BoxFuture<'static, (PoolKey, PassResult)> {
    Box::pin(async move {
        use tracing::Instrument;
        if !ctx.shell.gate.is_open() && !ctx.shell.gate.opened().await {
            return (key, Ok((None, false)));
        }
        let span = tracing::info_span!("pass", controller = CONTROLLER, pool = %key);
        let started = Instant::now();
        let r = pass(&ctx, &key).instrument(span).await;
        let m = &ctx.shell.metrics;
        m.reconciled(CONTROLLER, started.elapsed().as_secs_f64());
        if let Err(e) = &r {
            m.reconcile_failed(CONTROLLER, e);
        }
        (key, r)
    })
}

/// Run passes for the pools `triggers` names: at most one per pool at a time, coalescing
/// what arrives meanwhile, and waking pools whose claims' waits or TTLs run out.
pub async fn drive(ctx: Arc<Ctx>, triggers: impl Stream<Item = PoolKey> + Send) {
    let mut triggers = std::pin::pin!(triggers);
    let mut running: HashSet<PoolKey> = HashSet::new();
    let mut dirty: HashSet<PoolKey> = HashSet::new();
    let mut timers: BTreeSet<(Timestamp, PoolKey)> = BTreeSet::new();
    let mut passes: FuturesUnordered<futures::future::BoxFuture<'static, (PoolKey, PassResult)>> =
        FuturesUnordered::new();
    let mut resync = tokio::time::interval(ctx.shell.resync);
    resync.tick().await;
    loop {
        let mut due: Vec<PoolKey> = vec![];
        let next_timer = timers.first().map(|(t, _)| *t);
        let sleep = async {
            match next_timer {
                Some(t) => {
                    let now = (ctx.shell.clock)();
                    let wait = if t <= now {
                        Duration::ZERO
                    } else {
                        now.duration_until(t).unsigned_abs()
                    };
                    tokio::time::sleep(wait + Duration::from_millis(5)).await
                }
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            key = triggers.next() => {
                let Some(key) = key else { return };
                due.push(key);
            }
            Some((key, r)) = passes.next(), if !passes.is_empty() => {
                running.remove(&key);
                timers.retain(|(_, k)| *k != key);
                let (wake, again) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(pool = %key, error = %e, "claim pass failed; retried");
                        let retry = (ctx.shell.clock)()
                            .checked_add(k8s_openapi::jiff::SignedDuration::from_millis(500))
                            .ok();
                        (retry, false)
                    }
                };
                if let Some(t) = wake {
                    timers.insert((t, key.clone()));
                }
                if dirty.remove(&key) || again {
                    due.push(key);
                }
            }
            _ = sleep => {
                let now = (ctx.shell.clock)();
                while timers.first().is_some_and(|(t, _)| *t <= now) {
                    if let Some((_, key)) = timers.pop_first() {
                        due.push(key);
                    }
                }
            }
            _ = resync.tick() => {
                due.extend(ctx.stores.index().claims.pools());
            }
        }
        for key in due {
            if running.contains(&key) {
                dirty.insert(key);
            } else {
                running.insert(key.clone());
                passes.push(spawn_pass(ctx.clone(), key));
            }
        }
    }
}

/// The pools a claim event concerns (its own; a claim is noted as seen, and indexed).
/// The end of a relist rebuilds the index from the cache and passes every pool with a
/// claim (a delete hidden in the relist is seen there).
fn claim_trigger(ctx: &Ctx, ev: watcher::Event<HotStandbyClaim>) -> Vec<PoolKey> {
    let (c, gone) = match ev {
        watcher::Event::Apply(c) | watcher::Event::InitApply(c) => (c, false),
        watcher::Event::Delete(c) => (c, true),
        watcher::Event::Init => return vec![],
        watcher::Event::InitDone => {
            let all = ctx.stores.claims.state();
            let mut ix = ctx.stores.index();
            ix.claims.rebuild(all.iter().filter_map(|c| {
                let (ns, name) = (
                    c.metadata.namespace.as_deref()?,
                    c.metadata.name.as_deref()?,
                );
                Some((ns, name, PoolKey::of_claim(c)?))
            }));
            return ix.claims.pools();
        }
    };
    let key = PoolKey::of_claim(&c);
    if let (Some(ns), Some(name)) = (c.metadata.namespace.as_deref(), c.metadata.name.as_deref()) {
        let pool = if gone { None } else { key.clone() };
        ctx.stores.index().claims.note(ns, name, pool);
    }
    if let Some(uid) = c.metadata.uid.as_deref() {
        let fin = c.status.as_ref().is_some_and(|s| s.phase.is_final());
        if !fin && !gone {
            ctx.saw(uid);
        }
    }
    key.into_iter().collect()
}

/// The pool a pod event concerns, when claims care: the pod carries a claim, or some
/// claim names its pool. Every pod event is indexed; the end of a relist rebuilds the
/// pods' index from both pod caches.
fn pod_trigger(stores: &Stores, ev: watcher::Event<PoolPod>) -> Option<PoolKey> {
    let (p, gone) = match ev {
        watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
        watcher::Event::Delete(p) => (p, true),
        watcher::Event::Init => return None,
        watcher::Event::InitDone => {
            let all: Vec<Arc<PoolPod>> = stores
                .hsd_pods
                .state()
                .into_iter()
                .chain(stores.hsj_pods.state())
                .collect();
            stores.index().pods.rebuild(all.iter().filter_map(|p| {
                let (ns, name) = (p.meta.namespace.as_deref()?, p.meta.name.as_deref()?);
                Some((ns, name, PoolKey::of_pod(p)?))
            }));
            return None;
        }
    };
    let key = PoolKey::of_pod(&p);
    let named = {
        let mut ix = stores.index();
        if let (Some(ns), Some(name)) = (p.meta.namespace.as_deref(), p.meta.name.as_deref()) {
            let pool = if gone { None } else { key.clone() };
            ix.pods.note(ns, name, pool);
        }
        key.as_ref().is_some_and(|k| ix.claims.any(k))
    };
    let key = key?;
    (named || crate::api::claim::claimed_by(&p).is_some()).then_some(key)
}

/// What a start hands the runtime: the tasks, and the caches the HTTP endpoints read.
pub struct StartedClaims {
    pub started: super::Started,
    pub stores: Stores,
}

/// A change that may concern claims, from a pool kind's caches.
#[derive(Clone, Debug)]
pub enum Change {
    /// An event of the pool pod cache (applied to it before it is sent).
    Pod(Box<watcher::Event<PoolPod>>),
    /// A pool object changed.
    Pool(PoolKey),
}

/// A pool kind's caches as claims read them, and their changes. The HotStandbyDeployment
/// controller feeds its own ([`FeedSender`]), so an HSD pod or an HSD is cached once per
/// scope, not once per controller; HSJ pools (whose controller caches whole pods) and
/// tests use [`own_feed`].
pub struct PoolFeed<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    pub pods: Store<PoolPod>,
    pub pools: Store<K>,
    pub changes: futures::stream::BoxStream<'static, Change>,
}

/// The sending half a pool controller keeps: each change waits for room (at most
/// [`FEED_ROOM`] unread), so none is lost and a burst (a list of 10,000 pods) is never
/// queued whole. Once the claim controller is gone (or was never started), sends return
/// at once and nothing is copied.
#[derive(Clone)]
pub struct FeedSender(futures::channel::mpsc::Sender<Change>);

/// Changes sent but not yet read by the claim controller, at most.
pub const FEED_ROOM: usize = 256;

impl FeedSender {
    /// A sender and the feed around `pods` and `pools` it fills.
    pub fn new<K>(pods: Store<PoolPod>, pools: Store<K>) -> (Self, PoolFeed<K>)
    where
        K: kube::Resource<DynamicType = ()> + Clone + 'static,
    {
        let (tx, rx) = futures::channel::mpsc::channel(FEED_ROOM);
        let feed = PoolFeed {
            pods,
            pools,
            changes: rx.boxed(),
        };
        (Self(tx), feed)
    }

    /// A pod event, already applied to the pod cache.
    pub async fn pod(&self, ev: &watcher::Event<PoolPod>) {
        self.send(|| Change::Pod(Box::new(ev.clone()))).await
    }

    /// A pool object (namespace, kind, name) changed.
    pub async fn pool(&self, namespace: Option<&str>, kind: PoolKind, name: &str) {
        if let Some(ns) = namespace {
            self.send(|| Change::Pool(PoolKey::new(ns, kind.as_str(), name)))
                .await
        }
    }

    async fn send(&self, change: impl FnOnce() -> Change) {
        use futures::SinkExt;
        if self.0.is_closed() {
            return;
        }
        // Err: the claim controller stopped meanwhile (the process is ending).
        let _ = self.0.clone().send(change()).await;
    }
}

/// A feed from watches of its own: the pods carrying `pod_label` (stripped to [`PoolPod`])
/// and every pool object of kind `K`, over the scope.
pub fn own_feed<K>(
    deps: &super::Deps,
    namespace: Option<&str>,
    pod_label: &str,
    kind: PoolKind,
) -> PoolFeed<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    use super::watch::{in_scope, in_scope_events, strip_managed};
    let (pods, pod_w) = reflector::store::<PoolPod>();
    let (pools, pool_w) = reflector::store::<K>();
    let paged = watcher::Config::default().labels(pod_label).page_size(100);
    let pod_changes = in_scope_events(deps, namespace, paged, pod_w, pod::strip)
        .filter_map(|r| futures::future::ready(r.ok().map(|ev| Change::Pod(Box::new(ev)))));
    let pool_changes = in_scope(
        deps,
        namespace,
        watcher::Config::default(),
        pool_w,
        strip_managed,
    )
    .filter_map(move |r| {
        futures::future::ready(r.ok().and_then(|p| {
            let ns = p.meta().namespace.as_deref()?;
            Some(Change::Pool(PoolKey::new(ns, kind.as_str(), &p.name_any())))
        }))
    });
    PoolFeed {
        pods,
        pools,
        changes: futures::stream::select(pod_changes, pool_changes).boxed(),
    }
}

/// The pool a change concerns, when claims care (see [`pod_trigger`]; a pool object
/// when some claim names it).
fn change_trigger(ctx: &Ctx, change: Change) -> Option<PoolKey> {
    match change {
        Change::Pod(ev) => pod_trigger(&ctx.stores, *ev),
        Change::Pool(k) => ctx.stores.index().claims.any(&k).then_some(k),
    }
}

/// The claim controller over one scope: claims, and the HSD and HSJ pools and their pods
/// as `hsd` and `hsj` feed them.
pub fn start(
    deps: &super::Deps,
    namespace: Option<String>,
    hsd: PoolFeed<HotStandbyDeployment>,
    hsj: PoolFeed<HotStandbyJob>,
) -> StartedClaims {
    use super::watch::{in_scope_events, strip_managed};
    let ns = namespace.as_deref();
    let (claims, claim_w) = reflector::store::<HotStandbyClaim>();
    let all = watcher::Config::default();
    let claim_stream = in_scope_events(deps, ns, all, claim_w, strip_managed);
    let stores = Stores {
        claims,
        hsd_pods: hsd.pods,
        hsj_pods: hsj.pods,
        hsds: hsd.pools,
        hsjs: hsj.pools,
        changed: Arc::new(tokio::sync::Notify::new()),
        index: Arc::default(),
    };
    let ctx = Arc::new(Ctx::new(deps, stores.clone()));
    let (c1, c2) = (ctx.clone(), ctx.clone());
    let claims_t = claim_stream.flat_map(move |r| {
        let keys = r.map(|ev| claim_trigger(&c1, ev)).unwrap_or_default();
        futures::stream::iter(keys)
    });
    let pools_t = futures::stream::select(hsd.changes, hsj.changes)
        .filter_map(move |ch| futures::future::ready(change_trigger(&c2, ch)));
    let changed = stores.changed.clone();
    let triggers = futures::stream::select(claims_t, pools_t).map(move |k| {
        changed.notify_waiters();
        k
    });
    let label = super::scope_label(ns);
    StartedClaims {
        started: super::Started {
            tasks: vec![(format!("claims-{label}"), Box::pin(drive(ctx, triggers)))],
        },
        stores,
    }
}

/// Set a pool status's claim fields from the counts (absent when no claim names the pool).
pub fn counts_of(
    counts: &crate::state::ClaimCounts,
    namespace: &str,
    kind: PoolKind,
    name: &str,
) -> (Option<i32>, Option<i32>, Option<i32>) {
    match counts.get(namespace, kind.as_str(), name) {
        Some(c) => (Some(c.claimed), Some(c.pending), Some(c.exhausted)),
        None => (None, None, None),
    }
}

/// The pools of `kind` to reconcile when their claim counts change (a lagging receiver
/// skips: the resync catches up; a closed channel ends the stream).
pub fn count_trigger<K>(
    counts: &crate::state::ClaimCounts,
    kind: PoolKind,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + 'static,
{
    super::broadcast_stream(counts.subscribe()).filter_map(move |(ns, k, name)| {
        let hit = (k == kind.as_str()).then(|| ObjectRef::new(&name).within(&ns));
        futures::future::ready(hit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> PoolPod {
        let mut p = PoolPod::default();
        p.meta.name = Some(name.into());
        p.meta.namespace = Some("ns".into());
        p
    }

    fn name_of(c: &Change) -> String {
        match c {
            Change::Pod(ev) => match &**ev {
                watcher::Event::Apply(p) => p.meta.name.clone().unwrap_or_default(),
                other => format!("{other:?}"),
            },
            Change::Pool(k) => k.to_string(),
        }
    }

    /// A burst larger than the feed's room loses nothing and keeps its order: the sender
    /// waits while the room is full and goes on as the claim side reads.
    #[tokio::test]
    async fn the_feed_waits_for_room_and_loses_no_change() {
        let (pods, _w) = reflector::store::<PoolPod>();
        let (pools, _w2) = reflector::store::<HotStandbyDeployment>();
        let (tx, mut feed) = FeedSender::new(pods, pools);
        let n = FEED_ROOM * 3;
        let sender = tokio::spawn(async move {
            for i in 0..n {
                tx.pod(&watcher::Event::Apply(pod(&format!("p{i}")))).await;
            }
            tx.pool(Some("ns"), PoolKind::HotStandbyDeployment, "web")
                .await;
        });
        // Nothing read yet: the sender stops once the room is full.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sender.is_finished(), "the sender must wait for room");
        let mut got = vec![];
        let read = async {
            while let Some(c) = feed.changes.next().await {
                got.push(name_of(&c));
                if got.len() == n + 1 {
                    break;
                }
            }
        };
        // A lost change would leave the reader waiting: bounded, so it fails instead.
        let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
        let want: Vec<String> = (0..n)
            .map(|i| format!("p{i}"))
            .chain([PoolKey::new("ns", PoolKind::HotStandbyDeployment.as_str(), "web").to_string()])
            .collect();
        assert_eq!(got, want);
        sender.await.expect("sender");
    }

    /// With no claim controller reading (the feed dropped), sends return at once.
    #[tokio::test]
    async fn an_unread_feed_never_blocks_the_pool_controller() {
        let (pods, _w) = reflector::store::<PoolPod>();
        let (pools, _w2) = reflector::store::<HotStandbyDeployment>();
        let (tx, feed) = FeedSender::new(pods, pools);
        drop(feed);
        let sends = async {
            for i in 0..FEED_ROOM * 4 {
                tx.pod(&watcher::Event::Apply(pod(&format!("p{i}")))).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), sends)
            .await
            .expect("sends to a dropped feed must not wait");
    }
}
