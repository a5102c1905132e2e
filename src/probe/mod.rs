//! Busy sources: how a pod says it is busy.
//!
//! - annotation: pure, read from the pod object;
//! - http: `GET http://<podIP>:<port><path>` with a timeout, no redirects followed, only
//!   the pod's own IP; a failing probe leaves the pod's last known state in place and marks
//!   it stale, so it is never chosen for deletion.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::api::probe::{BusyMode, BusyProbe, HttpProbe};
use crate::api::tags::Tags;
use crate::metrics::Metrics;

pub mod exec;
pub mod http;
pub mod target;

/// A pod's busy state as a reconciler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BusyState {
    Busy,
    Idle,
    /// Never known (e.g. not probed yet). Counted as idle capacity, never deleted.
    Unknown,
}

/// What the busy rules read of a pod: a full `Pod`, or the slim pod a pool cache holds
/// ([`crate::controller::pool_pod::PoolPod`]).
pub trait PodRead: Tags {
    fn pod_meta(&self) -> &ObjectMeta;
    fn pod_phase(&self) -> Option<&str>;
    /// The pod's own IP (`None` when its status holds none, or text that is not one).
    fn pod_ip(&self) -> Option<IpAddr>;
    /// The UID of the owner of `kind` that controls the pod.
    fn controller_uid(&self, kind: &str) -> Option<&str>;
    /// Is the pod's condition `type_` True?
    fn has_condition(&self, type_: &str) -> bool;
}

impl PodRead for Pod {
    fn pod_meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn pod_phase(&self) -> Option<&str> {
        self.status.as_ref()?.phase.as_deref()
    }

    fn pod_ip(&self) -> Option<IpAddr> {
        self.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
    }

    fn controller_uid(&self, kind: &str) -> Option<&str> {
        crate::api::controller_uid(&self.metadata, kind)
    }

    fn has_condition(&self, type_: &str) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
    }
}

/// `PodRead` through a reference or an `Arc` (the caches hand out `Arc`s).
macro_rules! forward_pod_read {
    ($($t:ty),*) => {$(
        impl<T: PodRead + ?Sized> PodRead for $t {
            fn pod_meta(&self) -> &ObjectMeta {
                (**self).pod_meta()
            }

            fn pod_phase(&self) -> Option<&str> {
                (**self).pod_phase()
            }

            fn pod_ip(&self) -> Option<IpAddr> {
                (**self).pod_ip()
            }

            fn controller_uid(&self, kind: &str) -> Option<&str> {
                (**self).controller_uid(kind)
            }

            fn has_condition(&self, type_: &str) -> bool {
                (**self).has_condition(type_)
            }
        }
    )*};
}
forward_pod_read!(&T, std::sync::Arc<T>);

/// Has the pod's containers started (phase Running)?
pub fn is_running<P: PodRead + ?Sized>(pod: &P) -> bool {
    pod.pod_phase() == Some("Running")
}

/// A pod's busy state under `probe`: (state, stale, reason). In http mode a pod that is not
/// running (or has no IP yet) is idle: its app cannot be busy; otherwise the probe cache says.
pub fn pod_busy<P: PodRead + ?Sized>(
    pod: &P,
    probe: &BusyProbe,
    probes: &ProbeCache,
) -> (BusyState, bool, String) {
    if let Some(claim) = crate::api::claim::claimed_by(pod) {
        return (BusyState::Busy, false, format!("claimed by {claim}"));
    }
    match probe.mode {
        BusyMode::Annotation => {
            let (s, r) = annotation_state(pod, &probe.annotation_key);
            (s, false, r)
        }
        BusyMode::Http if !is_running(pod) || pod_ip(pod).is_none() => (
            BusyState::Idle,
            false,
            "not running yet: the app cannot be busy".into(),
        ),
        BusyMode::Http => probes.view(pod.pod_meta().uid.as_deref().unwrap_or_default()),
    }
}

/// How often an http busy probe runs: `periodSeconds`, at least 1 s.
pub fn period_of(cfg: &HttpProbe) -> Duration {
    Duration::from_secs(cfg.period_seconds.max(1) as u64)
}

/// Probe every running pod of `pods` whose last probe is older than `periodSeconds`, in
/// parallel (bounded by the prober), recording outcomes in `probes` and in the metrics.
pub async fn probe_due<P: PodRead + ?Sized + Sync>(
    prober: &http::HttpProber,
    probes: &ProbeCache,
    metrics: &Metrics,
    cfg: &HttpProbe,
    pods: &[&P],
) {
    let period = period_of(cfg);
    let now = Instant::now();
    let running = pods.iter().filter_map(|p| {
        let uid = p.pod_meta().uid.as_deref()?;
        is_running(p).then_some((uid, *p))
    });
    let due = probes.which_due(running, period, now);
    probe_pods(prober, probes, metrics, cfg, &due).await;
}

/// Probe each of `due` (pods already found due; one without a UID or an IP is skipped) in
/// parallel (bounded by the prober), recording outcomes in `probes` and in the metrics.
pub async fn probe_pods<P: PodRead + ?Sized + Sync>(
    prober: &http::HttpProber,
    probes: &ProbeCache,
    metrics: &Metrics,
    cfg: &HttpProbe,
    due: &[&P],
) {
    let period = period_of(cfg);
    let due = due.iter().filter_map(|p| {
        let uid = p.pod_meta().uid.clone()?;
        Some((uid, pod_ip(p)?))
    });
    let runs = due.map(|(uid, ip)| async move {
        let t = Instant::now();
        let r = prober.probe(ip, cfg).await;
        count_probe(metrics, t, &r);
        if let Err(e) = &r {
            tracing::debug!(%ip, error = %e, "busy probe failed");
        }
        probes.record_every(&uid, r, Instant::now(), Some(period));
    });
    futures::future::join_all(runs).await;
}

/// A pod last probed as `record` says is due after `period`; a pod never probed is due.
fn is_due(record: Option<&ProbeRecord>, period: Duration, now: Instant) -> bool {
    due_at(record.map(|r| r.probed_at), period, now)
}

/// The due rule by probe time: a pod last probed at `probed_at` (None: never) is due at
/// `now` once `period` has passed since (a probe time after `now` counts as just now).
pub fn due_at(probed_at: Option<Instant>, period: Duration, now: Instant) -> bool {
    probed_at.is_none_or(|at| now.saturating_duration_since(at) >= period)
}

/// Record a probe's duration (since `started`) and outcome.
pub fn count_probe<E>(metrics: &Metrics, started: Instant, r: &Result<BusyState, E>) {
    let outcome = match r {
        Ok(BusyState::Busy) => "busy",
        Ok(_) => "idle",
        Err(_) => "error",
    };
    metrics
        .probe
        .observe(started.elapsed().as_secs_f64(), outcome);
}

/// `annotation` mode: the annotation equals "true" in any case → busy; anything else → idle.
pub fn annotation_state<P: PodRead + ?Sized>(pod: &P, key: &str) -> (BusyState, String) {
    match pod.annotation(key) {
        Some(v) if v.trim().eq_ignore_ascii_case("true") => {
            (BusyState::Busy, format!("annotation {key}={v}"))
        }
        Some(v) => (BusyState::Idle, format!("annotation {key}={v}")),
        None => (BusyState::Idle, format!("annotation {key} absent")),
    }
}

/// What we last learned about one pod from HTTP probes.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeRecord {
    /// Last successful classification.
    pub last_known: Option<BusyState>,
    /// The most recent probe failed (timeout, refused, ...).
    pub failing: bool,
    pub reason: String,
    pub probed_at: Instant,
    /// How often the pod's pool probes it (None: not said): how old a result may be
    /// before the busy guard counts it stale.
    pub period: Option<Duration>,
}

/// How long a gone pod's result is kept when another kind may still probe it (the cache
/// is shared by every kind and the busy guard; each kind only knows its own pods).
pub const FORGET_GRACE: Duration = Duration::from_secs(600);
/// A result older than this many periods counts as stale for the busy guard.
pub const STALE_PERIODS: u32 = 3;
/// The period assumed when a result does not say one.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(20);

/// What the busy guard reads of a pod's probe results.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProbeView {
    pub state: BusyState,
    /// The last probe failed, or is older than the pool's period allows.
    pub stale: bool,
    pub reason: String,
}

/// Told the UID of a pod whose [`ProbeCache::view`] changed (a result recorded or forgotten),
/// after the cache's lock is released; answers false once it no longer listens (it is then
/// dropped).
pub type ChangeListener = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Told of each change of a pod's probe time (a result recorded, even the same one, or
/// forgotten), after the cache's lock is released: the pod's UID, when it was last probed
/// (None: its result forgotten) and the change's number. Numbers grow in the order the
/// changes were made under the lock, so a listener told of two changes out of order keeps
/// the higher; answers false once it no longer listens (it is then dropped).
pub type ProbedListener = Arc<dyn Fn(&str, Option<Instant>, u64) -> bool + Send + Sync>;

/// Probe results by pod UID, shared between reconciles, and where each kind's pods are
/// probed (resolvers the busy guard asks when it probes a pod itself, see [`target`]).
///
/// Every change of a probe time (a record, a forget) takes the next change number under
/// the results' lock; [`ProbeCache::probed_at`] answers with the number of the last change
/// its answer reflects, so an index kept from the [`ProbedListener`] notices can tell
/// whether a notice or an answer is the newer.
#[derive(Clone, Default)]
pub struct ProbeCache {
    inner: Arc<Mutex<HashMap<String, ProbeRecord>>>,
    /// The number of the last change of a probe time (taken under `inner`'s lock).
    changes: Arc<AtomicU64>,
    resolvers: Arc<std::sync::RwLock<Vec<target::Resolver>>>,
    listeners: Arc<std::sync::RwLock<Vec<ChangeListener>>>,
    probed_listeners: Arc<std::sync::RwLock<Vec<ProbedListener>>>,
}

/// Call each listener of `list` with `tell` (never under the cache's lock); drop those that
/// answer false (no longer listening).
fn tell_all<L: ?Sized>(list: &std::sync::RwLock<Vec<Arc<L>>>, tell: impl Fn(&L) -> bool) {
    let dead: Vec<Arc<L>> = {
        let g = match list.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.iter().filter(|l| !tell(l)).cloned().collect()
    };
    if !dead.is_empty() {
        let mut g = match list.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.retain(|l| !dead.iter().any(|d| Arc::ptr_eq(d, l)));
    }
}

impl ProbeCache {
    /// Tell the guard how to find the probe of one kind's pods (see [`target`]).
    pub fn register_target(&self, resolver: target::Resolver) {
        match self.resolvers.write() {
            Ok(mut g) => g.push(resolver),
            Err(p) => p.into_inner().push(resolver),
        }
    }

    /// The probe of the pod `namespace/name`, from the first kind that knows it.
    pub fn target(&self, namespace: &str, name: &str) -> Option<target::Found> {
        let g = match self.resolvers.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.iter().find_map(|r| r(namespace, name))
    }

    pub fn get(&self, uid: &str) -> Option<ProbeRecord> {
        self.lock().get(uid).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProbeRecord>> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Be told of every change of a pod's [`view`](Self::view) (an incremental index of
    /// unit states listens instead of reading every pod's result each reconcile).
    pub fn on_change(&self, listener: ChangeListener) {
        match self.listeners.write() {
            Ok(mut g) => g.push(listener),
            Err(p) => p.into_inner().push(listener),
        }
    }

    /// Be told of every change of a pod's probe time (see [`ProbedListener`]): an index of
    /// when each pod's probe is due listens instead of asking about every pod each reconcile.
    pub fn on_probed(&self, listener: ProbedListener) {
        match self.probed_listeners.write() {
            Ok(mut g) => g.push(listener),
            Err(p) => p.into_inner().push(listener),
        }
    }

    /// Tell the listeners (never under the cache's lock); drop those no longer listening.
    fn changed(&self, uids: &[&str]) {
        tell_all(&self.listeners, |l| uids.iter().all(|uid| l(uid)));
    }

    /// Tell the probe-time listeners of change `seq` (never under the cache's lock).
    fn probed(&self, uids: &[&str], at: Option<Instant>, seq: u64) {
        tell_all(&self.probed_listeners, |l| {
            uids.iter().all(|uid| l(uid, at, seq))
        });
    }

    /// The next change number (under `inner`'s lock: numbers follow the lock's order).
    fn next_change(&self, _locked: &HashMap<String, ProbeRecord>) -> u64 {
        self.changes.fetch_add(1, Ordering::SeqCst).wrapping_add(1)
    }

    /// Forget the results `keep` says no to, telling the listeners.
    fn forget_where(&self, keep: &dyn Fn(&str, &ProbeRecord) -> bool) {
        let mut gone = vec![];
        let seq = {
            let mut m = self.lock();
            m.retain(|uid, r| {
                let k = keep(uid, r);
                if !k {
                    gone.push(uid.clone());
                }
                k
            });
            (!gone.is_empty()).then(|| self.next_change(&m))
        };
        if let Some(seq) = seq {
            let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
            self.changed(&gone);
            self.probed(&gone, None, seq);
        }
    }

    /// Record an outcome: Ok(busy) or Err(reason). Returns true when the pod's effective
    /// state (busy/idle/stale) changed.
    pub fn record(&self, uid: &str, outcome: Result<BusyState, String>, at: Instant) -> bool {
        self.record_every(uid, outcome, at, None)
    }

    /// [`record`](Self::record), saying how often the pod's pool probes it.
    pub fn record_every(
        &self,
        uid: &str,
        outcome: Result<BusyState, String>,
        at: Instant,
        period: Option<Duration>,
    ) -> bool {
        let mut m = self.lock();
        let prev = m.get(uid).cloned();
        let rec = match outcome {
            Ok(state) => ProbeRecord {
                last_known: Some(state),
                failing: false,
                reason: format!("http: {state:?}"),
                probed_at: at,
                period: period.or(prev.as_ref().and_then(|p| p.period)),
            },
            Err(reason) => ProbeRecord {
                last_known: prev.as_ref().and_then(|p| p.last_known),
                failing: true,
                reason,
                probed_at: at,
                period: period.or(prev.as_ref().and_then(|p| p.period)),
            },
        };
        let changed =
            prev.as_ref().map(|p| (p.last_known, p.failing)) != Some((rec.last_known, rec.failing));
        let seen = prev
            .as_ref()
            .map(|p| (p.last_known, p.failing, p.reason.as_str()));
        let shown = seen != Some((rec.last_known, rec.failing, rec.reason.as_str()));
        m.insert(uid.to_string(), rec);
        let seq = self.next_change(&m);
        drop(m);
        if shown {
            self.changed(&[uid]);
        }
        self.probed(&[uid], Some(at), seq);
        changed
    }

    /// Every `period`, forget the answers of pods no longer in `pods` and not probed for
    /// [`FORGET_GRACE`] (the cache is shared: another kind's live pods are probed again
    /// well within the grace). Runs for ever; the caller's supervised task owns it.
    pub async fn forget_gone<P>(
        &self,
        pods: kube::runtime::reflector::Store<P>,
        period: std::time::Duration,
    ) where
        P: PodRead + kube::Resource<DynamicType = ()> + Clone + 'static,
    {
        loop {
            tokio::time::sleep(period).await;
            let live: std::collections::HashSet<String> = pods
                .state()
                .iter()
                .filter_map(|p| p.pod_meta().uid.clone())
                .collect();
            self.forget_unless(&|uid| live.contains(uid), Instant::now());
        }
    }

    /// Forget every result whose pod `live` does not hold and that is older than
    /// [`FORGET_GRACE`] at `now`.
    pub fn forget_unless(&self, live: &dyn Fn(&str) -> bool, now: Instant) {
        self.forget_where(&|uid, r| {
            live(uid) || now.saturating_duration_since(r.probed_at) < FORGET_GRACE
        });
    }

    /// The busy guard's view of a pod's results at `now`: unknown when never classified,
    /// stale when the last probe failed or is older than [`STALE_PERIODS`] periods.
    pub fn guard_view(&self, uid: &str, now: Instant) -> Option<ProbeView> {
        let r = self.get(uid)?;
        let period = r.period.unwrap_or(DEFAULT_PERIOD);
        let age = now.saturating_duration_since(r.probed_at);
        let too_old = age > period * STALE_PERIODS;
        let reason = if too_old {
            format!("{} ({}s ago)", r.reason, age.as_secs())
        } else {
            r.reason
        };
        Some(ProbeView {
            state: r.last_known.unwrap_or(BusyState::Unknown),
            stale: r.failing || too_old,
            reason,
        })
    }

    pub fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        self.forget_where(&|uid, _| keep(uid));
    }

    /// Is this pod due for a probe?
    pub fn due(&self, uid: &str, period: Duration, now: Instant) -> bool {
        is_due(self.lock().get(uid), period, now)
    }

    /// [`ProbeCache::due`] for many pods under one lock (a pool of 10,000 pods asked one
    /// lock each): the items whose UID is due, in their order.
    pub fn which_due<'u, T>(
        &self,
        items: impl IntoIterator<Item = (&'u str, T)>,
        period: Duration,
        now: Instant,
    ) -> Vec<T> {
        let g = self.lock();
        items
            .into_iter()
            .filter(|(uid, _)| is_due(g.get(*uid), period, now))
            .map(|(_, t)| t)
            .collect()
    }

    /// When each of `uids` was last probed (None: never, or forgotten), read under one lock,
    /// and the number of the last change of a probe time the answer reflects.
    pub fn probed_at<'u>(
        &self,
        uids: impl IntoIterator<Item = &'u str>,
    ) -> (Vec<Option<Instant>>, u64) {
        let g = self.lock();
        let at = uids
            .into_iter()
            .map(|uid| g.get(uid).map(|r| r.probed_at))
            .collect();
        (at, self.changes.load(Ordering::SeqCst))
    }

    /// The state the planner should use: (state, stale, reason).
    pub fn view(&self, uid: &str) -> (BusyState, bool, String) {
        match self.get(uid) {
            None => (BusyState::Unknown, false, "not probed yet".into()),
            Some(ProbeRecord {
                last_known: None,
                reason,
                ..
            }) => (BusyState::Unknown, false, reason),
            Some(ProbeRecord {
                last_known: Some(s),
                failing,
                reason,
                ..
            }) => {
                let why = if failing {
                    format!("probe failing ({reason}); last known {s:?}")
                } else {
                    reason
                };
                (s, failing, why)
            }
        }
    }
}

/// The pod's own IP, if it has one.
pub fn pod_ip<P: PodRead + ?Sized>(pod: &P) -> Option<IpAddr> {
    pod.pod_ip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_due_answers_what_due_answers_for_each_pod() {
        let c = ProbeCache::default();
        let t0 = Instant::now();
        let period = Duration::from_secs(10);
        c.record("old", Ok(BusyState::Busy), t0);
        c.record("new", Ok(BusyState::Idle), t0 + Duration::from_secs(8));
        c.record("edge", Ok(BusyState::Idle), t0 + Duration::from_secs(5));
        let now = t0 + Duration::from_secs(15);
        let uids = ["old", "new", "never", "edge", "old"];
        let one_by_one: Vec<usize> = (0..uids.len())
            .filter(|&i| c.due(uids[i], period, now))
            .collect();
        let at_once = c.which_due(uids.iter().copied().zip(0..), period, now);
        assert_eq!(at_once, one_by_one);
        assert_eq!(
            at_once,
            vec![0, 2, 3, 4],
            "old, never, edge (exactly 10 s), old again"
        );
    }

    fn pod(ann: Option<(&str, &str)>) -> Pod {
        let mut p = Pod::default();
        if let Some((k, v)) = ann {
            p.metadata.annotations = Some([(k.to_string(), v.to_string())].into());
        }
        p
    }

    #[test]
    fn annotation_is_case_insensitive_and_absent_means_idle() {
        let k = "paia.tech/busy";
        for (v, want) in [
            ("true", BusyState::Busy),
            ("TRUE", BusyState::Busy),
            (" True ", BusyState::Busy),
            ("false", BusyState::Idle),
            ("yes", BusyState::Idle),
            ("", BusyState::Idle),
        ] {
            assert_eq!(annotation_state(&pod(Some((k, v))), k).0, want, "{v:?}");
        }
        assert_eq!(annotation_state(&pod(None), k).0, BusyState::Idle);
        assert_eq!(
            annotation_state(&pod(Some(("other", "true"))), k).0,
            BusyState::Idle
        );
    }

    #[test]
    fn a_failing_probe_keeps_the_last_known_state_and_marks_it_stale() {
        let c = ProbeCache::default();
        let t0 = Instant::now();
        assert_eq!(c.view("u").0, BusyState::Unknown);
        assert!(c.record("u", Ok(BusyState::Busy), t0));
        assert_eq!(c.view("u"), (BusyState::Busy, false, "http: Busy".into()));
        assert!(c.record("u", Err("timeout".into()), t0));
        let (s, stale, why) = c.view("u");
        assert_eq!((s, stale), (BusyState::Busy, true));
        assert!(why.contains("timeout"));
        assert!(
            !c.record("u", Err("refused".into()), t0),
            "still failing, same state"
        );
        assert!(c.record("u", Ok(BusyState::Idle), t0));
        // never known + failing stays unknown
        c.record("v", Err("refused".into()), t0);
        assert_eq!(c.view("v").0, BusyState::Unknown);
        assert!(!c.due("u", Duration::from_secs(10), t0));
        assert!(c.due("u", Duration::from_secs(10), t0 + Duration::from_secs(10)));
        c.retain(&|k| k == "u");
        assert!(c.get("v").is_none());
    }

    #[test]
    fn the_guard_sees_a_result_stale_once_it_is_older_than_three_periods_or_failing() {
        let c = ProbeCache::default();
        let t0 = Instant::now();
        let p = Duration::from_secs(5);
        assert_eq!(
            c.guard_view("u", t0),
            None,
            "never probed: unknown to the guard"
        );
        c.record_every("u", Ok(BusyState::Idle), t0, Some(p));
        let fresh = c.guard_view("u", t0 + p * STALE_PERIODS).unwrap();
        assert_eq!((fresh.state, fresh.stale), (BusyState::Idle, false));
        let old = c
            .guard_view("u", t0 + p * STALE_PERIODS + Duration::from_millis(1))
            .unwrap();
        assert_eq!((old.state, old.stale), (BusyState::Idle, true));
        assert!(old.reason.contains("s ago"), "{}", old.reason);
        // A failure keeps the period it was told before, and is stale at once.
        c.record("u", Err("refused".into()), t0 + p);
        let failing = c.guard_view("u", t0 + p).unwrap();
        assert_eq!((failing.state, failing.stale), (BusyState::Idle, true));
        assert_eq!(c.get("u").unwrap().period, Some(p));
        // Never classified: unknown, whatever the age.
        c.record("v", Err("refused".into()), t0);
        assert_eq!(c.guard_view("v", t0).unwrap().state, BusyState::Unknown);
        // No period said: the default applies.
        c.record("w", Ok(BusyState::Busy), t0);
        assert!(!c.guard_view("w", t0 + DEFAULT_PERIOD).unwrap().stale);
        assert!(c.guard_view("w", t0 + DEFAULT_PERIOD * 4).unwrap().stale);
    }

    #[test]
    fn a_gone_pod_is_forgotten_only_after_the_grace_another_kind_may_still_probe_it() {
        let c = ProbeCache::default();
        let t0 = Instant::now();
        c.record("mine-live", Ok(BusyState::Busy), t0);
        c.record("gone-or-other-kind", Ok(BusyState::Busy), t0);
        let live = |u: &str| u == "mine-live";
        c.forget_unless(&live, t0 + FORGET_GRACE - Duration::from_millis(1));
        assert!(
            c.get("gone-or-other-kind").is_some(),
            "kept within the grace"
        );
        c.forget_unless(&live, t0 + FORGET_GRACE);
        assert!(c.get("gone-or-other-kind").is_none());
        assert!(
            c.get("mine-live").is_some(),
            "a live pod is never forgotten"
        );
    }
}
