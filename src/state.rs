//! Shared runtime state: readiness flags, the caches the process waits for, and what each
//! reconciler believes (`/debug/state`).
//!
//! Invariants: readiness is derived, never stored as one "synced" flag: the process is
//! ready only once every watch was started *and* every required cache has listed, so a
//! cache that lists late (a CRD served seconds after start) turns readiness true without a
//! restart, and `/readyz` names what it still waits for. A watch that fails is logged once
//! (with the API server's answer) and once more when it recovers, never per retry.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use prometheus_client::metrics::{family::Family, gauge::Gauge};

use crate::metrics::ResourceLabels;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// One registered watch.
#[derive(Debug)]
struct CacheEntry {
    resource: String,
    /// Readiness waits for it (an optional one, such as KEDA's kinds, does not).
    required: bool,
    synced: bool,
    /// The API server's last answer while the watch fails.
    failing: Option<String>,
    /// This watch logged the failure of its resource (others of the same resource, e.g.
    /// several pod watches, stay quiet), so it logs the recovery.
    warned: bool,
}

/// Every watch the process runs, by resource: which have listed, which fail, and why.
#[derive(Clone, Debug, Default)]
pub struct Caches {
    entries: Arc<Mutex<Vec<CacheEntry>>>,
    gauge: Family<ResourceLabels, Gauge>,
}

/// What a watch reports about itself (see `controller::watch`).
#[derive(Clone, Debug)]
pub struct CacheHandle {
    caches: Caches,
    id: usize,
}

/// A cache the process still waits for, with the API server's last answer if it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub resource: String,
    pub last_error: Option<String>,
}

impl Caches {
    /// Registry whose per-resource 0/1 is also exported through `gauge`
    /// (`kube_standby_cache_synced{resource}`).
    pub fn with_gauge(gauge: Family<ResourceLabels, Gauge>) -> Self {
        Caches {
            entries: Arc::default(),
            gauge,
        }
    }

    /// Register a watch of `resource` (a human name such as "pods list in ns-a").
    pub fn register(&self, resource: impl Into<String>, required: bool) -> CacheHandle {
        let resource = resource.into();
        let mut e = lock(&self.entries);
        e.push(CacheEntry {
            resource: resource.clone(),
            required,
            synced: false,
            failing: None,
            warned: false,
        });
        let id = e.len() - 1;
        drop(e);
        self.update_gauge(&resource);
        CacheHandle {
            caches: self.clone(),
            id,
        }
    }

    /// The required caches not yet listed, by resource (each named once).
    pub fn waiting_for(&self) -> Vec<Waiting> {
        let e = lock(&self.entries);
        let mut out: Vec<Waiting> = vec![];
        for c in e.iter().filter(|c| c.required && !c.synced) {
            match out.iter_mut().find(|w| w.resource == c.resource) {
                Some(w) => {
                    if w.last_error.is_none() {
                        w.last_error = c.failing.clone();
                    }
                }
                None => out.push(Waiting {
                    resource: c.resource.clone(),
                    last_error: c.failing.clone(),
                }),
            }
        }
        out
    }

    /// Is every watch of `resource` listed?
    pub fn is_synced(&self, resource: &str) -> bool {
        lock(&self.entries)
            .iter()
            .filter(|c| c.resource == resource)
            .all(|c| c.synced)
    }

    /// How many watches are registered.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn update_gauge(&self, resource: &str) {
        let v = i64::from(self.is_synced(resource));
        self.gauge
            .get_or_create(&ResourceLabels {
                resource: resource.to_string(),
            })
            .set(v);
    }
}

impl CacheHandle {
    fn with<R>(&self, f: impl FnOnce(&mut CacheEntry) -> R) -> Option<R> {
        lock(&self.caches.entries).get_mut(self.id).map(f)
    }

    pub fn resource(&self) -> String {
        self.with(|c| c.resource.clone()).unwrap_or_default()
    }

    /// The watch delivered something: a failing watch has recovered (logged once).
    pub fn ok(&self) {
        let recovered = self.with(|c| {
            let was = c.failing.take()?;
            std::mem::take(&mut c.warned).then(|| (c.resource.clone(), was))
        });
        if let Some(Some((resource, was))) = recovered {
            tracing::info!(resource = %resource, previous_error = %was, "watch recovered");
        }
    }

    /// The first (or a new) complete list: the cache is synced.
    pub fn listed(&self) {
        self.ok();
        let first = self.with(|c| !std::mem::replace(&mut c.synced, true));
        if first == Some(true) {
            let resource = self.resource();
            tracing::debug!(resource = %resource, "cache listed");
            self.caches.update_gauge(&resource);
        }
    }

    /// The watch failed with the API server's answer `error`; it retries with backoff.
    /// Logged once per resource and failing stretch (a warning for a required cache), not
    /// per retry nor per watch of the same resource.
    pub fn failed(&self, error: &str) {
        let mut entries = lock(&self.caches.entries);
        let Some(resource) = entries.get(self.id).map(|c| c.resource.clone()) else {
            return;
        };
        let already = entries
            .iter()
            .any(|c| c.resource == resource && c.warned && c.failing.is_some());
        let Some(c) = entries.get_mut(self.id) else {
            return;
        };
        c.failing = Some(error.to_string());
        if already || c.warned {
            tracing::debug!(resource = %resource, error = %error, "watch still failing");
            return;
        }
        c.warned = true;
        let (required, synced) = (c.required, c.synced);
        drop(entries);
        if required {
            tracing::warn!(
                resource = %resource,
                error = %error,
                listed_before = synced,
                "watch failing; retrying with backoff (logged once until it recovers)"
            );
        } else {
            tracing::info!(
                resource = %resource,
                error = %error,
                "optional watch not available; retrying with backoff (logged once until it recovers)"
            );
        }
    }
}

/// Readiness: certificates loaded, (in `run` mode) every watch started and every required
/// cache listed, and no part stopped.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    certs: Arc<AtomicBool>,
    /// Every watch has been registered (run mode); until then the caches count as unsynced.
    started: Arc<AtomicBool>,
    caches: Caches,
    stopping: Arc<AtomicBool>,
    broken: Arc<Mutex<Option<String>>>,
}

impl Readiness {
    /// Readiness for `webhook` mode, where no caches need to sync.
    pub fn without_caches() -> Self {
        let r = Self::default();
        r.started.store(true, Ordering::SeqCst);
        r
    }
    /// Readiness that waits for the watches registered in `caches`.
    pub fn with_caches(caches: Caches) -> Self {
        Readiness {
            caches,
            ..Self::default()
        }
    }
    pub fn caches(&self) -> &Caches {
        &self.caches
    }
    pub fn set_certs_loaded(&self) {
        self.certs.store(true, Ordering::SeqCst)
    }
    /// Every watch is registered: from now on readiness follows the caches themselves.
    pub fn set_watches_started(&self) {
        self.started.store(true, Ordering::SeqCst)
    }
    /// A requested shutdown is under way: not ready, so no new traffic is routed here.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst)
    }
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
    /// The required caches not yet listed (empty before the watches started, see
    /// [`Readiness::not_ready_reasons`]).
    pub fn waiting_for(&self) -> Vec<Waiting> {
        self.caches.waiting_for()
    }
    /// A part of the process stopped (the process is about to exit).
    pub fn set_broken(&self, reason: String) {
        match self.broken.lock() {
            Ok(mut b) => *b = Some(reason),
            Err(p) => *p.into_inner() = Some(reason),
        }
    }
    /// Reasons the process is not ready yet; empty when ready.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        let mut r = vec![];
        if !self.certs.load(Ordering::SeqCst) {
            r.push("certificates not loaded".to_string());
        }
        if !self.started.load(Ordering::SeqCst) || !self.caches.waiting_for().is_empty() {
            r.push("caches not synced".to_string());
        }
        if self.stopping.load(Ordering::SeqCst) {
            r.push("shutting down".to_string());
        }
        let broken = match self.broken.lock() {
            Ok(b) => b.clone(),
            Err(p) => p.into_inner().clone(),
        };
        r.extend(broken);
        r
    }
}

/// What each reconciler currently believes, keyed by "<controller>/<namespace>/<name>".
///
/// Kept as compact JSON text, not as `serde_json::Value` trees: a tree costs several times
/// its text (a node per value, a map per object), and with 1,000 pools the trees of their
/// plans and pod views were the largest thing the process held (18 MiB of 123 MiB, heap
/// profile in PERFORMANCE.md). Parsed again only when `/debug/state` is read.
///
/// A large entry (a pool's thousands of pod views) is kept unrendered instead
/// ([`DebugState::set_later`]): the data it shows, rendered only when `/debug/state` is
/// read, so a reconcile never pays for serializing what nobody reads (at 10,000 pods that
/// was more than the whole observe + plan, see PERFORMANCE.md).
#[derive(Clone, Default)]
pub struct DebugState {
    inner: Arc<RwLock<BTreeMap<String, Entry>>>,
}

/// `value` as compact JSON text, or the error that kept it from being one.
pub fn json_text(value: &impl serde::Serialize) -> Box<str> {
    serde_json::to_string(value)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
        .into_boxed_str()
}

/// Renders an entry when `/debug/state` is read.
pub type Render = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

#[derive(Clone)]
enum Entry {
    Text(Box<str>),
    Later(Render),
}

impl std::fmt::Debug for DebugState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = match self.inner.read() {
            Ok(m) => m.len(),
            Err(p) => p.into_inner().len(),
        };
        f.debug_struct("DebugState").field("entries", &n).finish()
    }
}

impl DebugState {
    /// Records what `key` believes now. A value that cannot be serialized is recorded as
    /// the error, so the endpoint says why instead of keeping a stale entry.
    pub fn set(&self, key: String, value: impl serde::Serialize) {
        self.insert(key, Entry::Text(json_text(&value)));
    }

    /// Records what `key` believes now, rendered by `render` only when `/debug/state` is
    /// read (it must own what it shows: shared, immutable data).
    pub fn set_later(&self, key: String, render: Render) {
        self.insert(key, Entry::Later(render));
    }

    /// Records `head` (small, from [`json_text`]) with a long `list` (kept as it is) under
    /// `head`'s field `list_key`, rendered only when `/debug/state` is read: the snapshot
    /// shows what [`DebugState::set`] of `head` with the list inserted would. A head that
    /// is not a JSON object shows as `{"head": head, list_key: list}`.
    pub fn set_with_list<L>(&self, key: String, head: Box<str>, list_key: &'static str, list: L)
    where
        L: serde::Serialize + Send + Sync + 'static,
    {
        let render = move || {
            let list = serde_json::to_value(&list)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
            match serde_json::from_str(&head) {
                Ok(serde_json::Value::Object(mut m)) => {
                    m.insert(list_key.to_string(), list);
                    serde_json::Value::Object(m)
                }
                Ok(other) => serde_json::json!({ "head": other, list_key: list }),
                Err(_) => serde_json::json!({ list_key: list }),
            }
        };
        self.set_later(key, Arc::new(render));
    }

    fn insert(&self, key: String, entry: Entry) {
        match self.inner.write() {
            Ok(mut m) => {
                m.insert(key, entry);
            }
            Err(p) => {
                p.into_inner().insert(key, entry);
            }
        }
    }

    pub fn remove(&self, key: &str) {
        match self.inner.write() {
            Ok(mut m) => {
                m.remove(key);
            }
            Err(p) => {
                p.into_inner().remove(key);
            }
        }
    }
    pub fn snapshot(&self) -> serde_json::Value {
        // Cloned under the lock (text and reference counts), rendered outside it.
        let m = match self.inner.read() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let entries = m.into_iter().map(|(k, e)| {
            let v = match e {
                Entry::Text(text) => serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
                Entry::Later(render) => render(),
            };
            (k, v)
        });
        serde_json::Value::Object(entries.collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_state_keeps_text_and_answers_the_values_set() {
        let d = DebugState::default();
        d.set(
            "hsd/ns/a".into(),
            serde_json::json!({"plan": {"replicas": 3}, "pods": ["p-1"]}),
        );
        d.set("hsd/ns/b".into(), vec![1, 2]);
        d.set(
            "hsd/ns/a".into(),
            serde_json::json!({"plan": {"replicas": 4}}),
        );
        assert_eq!(
            d.snapshot(),
            serde_json::json!({"hsd/ns/a": {"plan": {"replicas": 4}}, "hsd/ns/b": [1, 2]})
        );
        d.remove("hsd/ns/b");
        assert_eq!(
            d.snapshot(),
            serde_json::json!({"hsd/ns/a": {"plan": {"replicas": 4}}})
        );
    }

    #[test]
    fn a_later_entry_is_rendered_when_read_and_replaces_or_is_replaced_by_text() {
        let d = DebugState::default();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = calls.clone();
        d.set_later(
            "hsd/ns/a".into(),
            Arc::new(move || {
                seen.fetch_add(1, Ordering::SeqCst);
                serde_json::json!({"pods": ["p-1", "p-2"]})
            }),
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "not rendered before a read"
        );
        assert_eq!(
            d.snapshot(),
            serde_json::json!({"hsd/ns/a": {"pods": ["p-1", "p-2"]}})
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        d.set("hsd/ns/a".into(), serde_json::json!({"plan": 1}));
        assert_eq!(d.snapshot(), serde_json::json!({"hsd/ns/a": {"plan": 1}}));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a replaced entry is gone");
        d.set_later("hsd/ns/a".into(), Arc::new(|| serde_json::json!(2)));
        assert_eq!(d.snapshot(), serde_json::json!({"hsd/ns/a": 2}));
        d.remove("hsd/ns/a");
        assert_eq!(d.snapshot(), serde_json::json!({}));
    }

    #[test]
    fn a_head_with_a_list_reads_as_the_whole_record_would() {
        let d = DebugState::default();
        let head = serde_json::json!({"mode": "annotation", "plan": {"replicas": 3}});
        let pods = vec![
            serde_json::json!({"name": "p-1"}),
            serde_json::json!({"name": "p-2"}),
        ];
        d.set_with_list("hsd/ns/a".into(), json_text(&head), "pods", pods.clone());
        d.set(
            "hsd/ns/b".into(),
            serde_json::json!({"mode": "annotation", "plan": {"replicas": 3}, "pods": pods}),
        );
        let snap = d.snapshot();
        assert_eq!(snap["hsd/ns/a"], snap["hsd/ns/b"]);
        assert_eq!(snap["hsd/ns/a"]["pods"][1]["name"], "p-2");
        d.set_with_list("x".into(), json_text(&7), "units", vec![1]);
        assert_eq!(
            d.snapshot()["x"],
            serde_json::json!({"head": 7, "units": [1]})
        );
    }

    #[test]
    fn readiness_needs_both_flags() {
        let r = Readiness::default();
        assert_eq!(r.not_ready_reasons().len(), 2);
        r.set_certs_loaded();
        assert_eq!(r.not_ready_reasons(), vec!["caches not synced"]);
        r.set_watches_started();
        assert!(r.not_ready_reasons().is_empty());
        assert!(Readiness::without_caches().not_ready_reasons() == vec!["certificates not loaded"]);
        r.set_broken("task hsd stopped".into());
        assert_eq!(r.not_ready_reasons(), vec!["task hsd stopped"]);
    }

    #[test]
    fn readiness_follows_every_required_cache_and_names_what_it_waits_for() {
        let caches = Caches::default();
        let r = Readiness::with_caches(caches.clone());
        r.set_certs_loaded();
        let jobs = caches.register("hotstandbyjobs.apps.paia.tech list", true);
        let pods_a = caches.register("pods list", true);
        let pods_b = caches.register("pods list", true);
        let keda = caches.register("scaledobjects.keda.sh list", false);
        // Before every watch is registered, never ready even with all listed.
        jobs.listed();
        pods_a.listed();
        pods_b.listed();
        assert_eq!(r.not_ready_reasons(), vec!["caches not synced"]);
        r.set_watches_started();
        assert!(
            r.not_ready_reasons().is_empty(),
            "an optional cache does not hold readiness"
        );
        drop(keda);

        let caches = Caches::default();
        let r = Readiness::with_caches(caches.clone());
        r.set_certs_loaded();
        r.set_watches_started();
        let jobs = caches.register("hotstandbyjobs.apps.paia.tech list", true);
        let pods_a = caches.register("pods list", true);
        let pods_b = caches.register("pods list", true);
        jobs.failed("404 page not found");
        jobs.failed("404 page not found");
        pods_a.listed();
        assert_eq!(
            r.waiting_for(),
            vec![
                Waiting {
                    resource: "hotstandbyjobs.apps.paia.tech list".into(),
                    last_error: Some("404 page not found".into())
                },
                Waiting {
                    resource: "pods list".into(),
                    last_error: None
                }
            ]
        );
        assert!(
            !caches.is_synced("pods list"),
            "one of two pod watches has listed"
        );
        pods_b.listed();
        jobs.listed();
        assert!(r.not_ready_reasons().is_empty());
        assert!(caches.is_synced("pods list"));
        // A later failure is remembered but a listed cache stays synced (its data is kept).
        jobs.failed("connection refused");
        assert!(r.not_ready_reasons().is_empty());
        r.set_stopping();
        assert_eq!(r.not_ready_reasons(), vec!["shutting down"]);
    }

    #[test]
    fn the_synced_gauge_follows_the_caches() {
        let gauge = Family::<ResourceLabels, Gauge>::default();
        let caches = Caches::with_gauge(gauge.clone());
        let label = ResourceLabels {
            resource: "nodes list".into(),
        };
        let a = caches.register("nodes list", true);
        let b = caches.register("nodes list", true);
        assert_eq!(gauge.get_or_create(&label).get(), 0);
        a.listed();
        assert_eq!(gauge.get_or_create(&label).get(), 0);
        b.listed();
        assert_eq!(gauge.get_or_create(&label).get(), 1);
    }

    #[test]
    fn debug_state_round_trip() {
        let d = DebugState::default();
        d.set("hsd/ns/a".into(), serde_json::json!({"busy": 1}));
        assert_eq!(d.snapshot()["hsd/ns/a"]["busy"], 1);
        d.remove("hsd/ns/a");
        assert_eq!(d.snapshot(), serde_json::json!({}));
    }
}

/// The pods the busy guard holds now (a removal of a busy pod was refused and no removal
/// has been allowed since), by namespace and name, shared by the webhook (which records
/// them) and the controllers (which show them in their pools' status and Events). Each
/// change is announced on a channel the controllers reconcile on. A process only knows the
/// holds its own webhook decided.
#[derive(Clone, Debug)]
pub struct HeldPods {
    inner: Arc<Mutex<BTreeMap<(String, String), std::time::Instant>>>,
    changes: tokio::sync::broadcast::Sender<(String, String)>,
}

impl Default for HeldPods {
    fn default() -> Self {
        HeldPods {
            inner: Arc::default(),
            changes: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

/// Runtime state, not configuration: a `ServerConfig` compares equal whatever registry it
/// carries.
impl PartialEq for HeldPods {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl HeldPods {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, String), std::time::Instant>> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The pod is held (`true`) or not; a change is announced.
    pub fn set(&self, namespace: &str, name: &str, held: bool, now: std::time::Instant) {
        let key = (namespace.to_string(), name.to_string());
        let changed = {
            let mut m = self.lock();
            if held {
                m.insert(key.clone(), now).is_none()
            } else {
                m.remove(&key).is_some()
            }
        };
        if changed {
            // Nobody listening (webhook mode) is fine.
            let _ = self.changes.send(key);
        }
    }

    /// The held pods of a namespace.
    pub fn in_namespace(&self, namespace: &str) -> std::collections::BTreeSet<String> {
        self.lock()
            .keys()
            .filter(|(ns, _)| ns == namespace)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// (namespace, pod) of every change from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(String, String)> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod held_tests {
    use super::*;

    #[tokio::test]
    async fn a_hold_and_its_end_are_announced_once_each() {
        let h = HeldPods::default();
        let mut rx = h.subscribe();
        let t = std::time::Instant::now();
        h.set("ns", "a", true, t);
        h.set("ns", "a", true, t);
        h.set("other", "b", true, t);
        assert_eq!(h.in_namespace("ns"), ["a".to_string()].into());
        h.set("ns", "a", false, t);
        h.set("ns", "a", false, t);
        assert!(h.in_namespace("ns").is_empty());
        let mut seen = vec![];
        while let Ok(k) = rx.try_recv() {
            seen.push(k);
        }
        let k = |ns: &str, n: &str| (ns.to_string(), n.to_string());
        assert_eq!(seen, vec![k("ns", "a"), k("other", "b"), k("ns", "a")]);
        let other = h.clone();
        other.set("ns", "c", true, t);
        assert_eq!(
            h.in_namespace("ns"),
            ["c".to_string()].into(),
            "clones share"
        );
    }
}

/// A pool's claims as the claim controller counted them at its last pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolClaims {
    /// Pods bound to a claim now.
    pub claimed: i32,
    /// Claims waiting for an idle pod.
    pub pending: i32,
    /// Claims failed with PoolExhausted that still exist.
    pub exhausted: i32,
}

/// Claim counts by pool (namespace, kind, name), written by the claim controller and read
/// by the HSD and HSJ controllers into their pools' status (one status writer per object).
/// Each change is announced so the pool reconciles. Only the leading replica counts.
/// (namespace, kind, name) of a pool.
type PoolName = (String, String, String);

#[derive(Clone, Debug)]
pub struct ClaimCounts {
    inner: Arc<Mutex<BTreeMap<PoolName, PoolClaims>>>,
    changes: tokio::sync::broadcast::Sender<(String, String, String)>,
}

impl Default for ClaimCounts {
    fn default() -> Self {
        ClaimCounts {
            inner: Arc::default(),
            changes: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

impl ClaimCounts {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<PoolName, PoolClaims>> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Set a pool's counts (all zero: forgotten); a change is announced.
    pub fn set(&self, namespace: &str, kind: &str, name: &str, counts: PoolClaims) {
        let key = (namespace.to_string(), kind.to_string(), name.to_string());
        let changed = {
            let mut m = self.lock();
            if counts == PoolClaims::default() {
                m.remove(&key).is_some()
            } else {
                m.insert(key.clone(), counts) != Some(counts)
            }
        };
        if changed {
            let _ = self.changes.send(key);
        }
    }

    /// A pool's counts (None: no claim names it).
    pub fn get(&self, namespace: &str, kind: &str, name: &str) -> Option<PoolClaims> {
        self.lock()
            .get(&(namespace.to_string(), kind.to_string(), name.to_string()))
            .copied()
    }

    /// (namespace, kind, name) of every change from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(String, String, String)> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod claim_count_tests {
    use super::*;

    #[test]
    fn a_change_is_announced_and_zero_forgets() {
        let c = ClaimCounts::default();
        let mut rx = c.subscribe();
        let one = PoolClaims {
            claimed: 1,
            pending: 2,
            exhausted: 0,
        };
        c.set("ns", "HotStandbyDeployment", "p", one);
        c.set("ns", "HotStandbyDeployment", "p", one);
        assert_eq!(c.get("ns", "HotStandbyDeployment", "p"), Some(one));
        assert_eq!(c.get("ns", "HotStandbyJob", "p"), None);
        c.set("ns", "HotStandbyDeployment", "p", PoolClaims::default());
        assert_eq!(c.get("ns", "HotStandbyDeployment", "p"), None);
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 2, "set once, forgotten once; the repeat is quiet");
    }
}
