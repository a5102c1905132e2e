//! The busy guard probing a pod itself, before the pure decision, when the operator's
//! cached result for an http/exec pod is missing, failing or older than the pool's period
//! (e.g. on the replica that does not lead, whose controllers never probe).
//!
//! Invariants:
//! - only for a pod a kind's resolver maps to an http/exec probe ([`crate::probe::target`]);
//!   an annotation-mode pod never gets here, so it costs no I/O;
//! - at most one probe per pod in flight: concurrent reviews of a pod wait for the same one;
//! - a review waits at most the budget (`--busy-guard-probe-budget`); past it the answer
//!   says the probe did not answer in time and counts as busy. The probe itself runs on,
//!   bounded by its own `timeoutSeconds`, and records its outcome in the shared cache, so
//!   the ReplicaSet's next retry finds it;
//! - nothing here decides: the result is a [`ProbeView`] for [`super::guard::decide`].
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::probe::exec::{ExecError, ExecProber};
use crate::probe::http::HttpProber;
use crate::probe::target::{Found, Target};
use crate::probe::{BusyState, ProbeCache, ProbeRecord, ProbeView};

/// Probes in flight at once from the guard (each prober's own bound).
pub const IN_FLIGHT: usize = 32;

/// What the guard learned before deciding.
#[derive(Debug, Clone, PartialEq)]
pub enum Refreshed {
    /// The cached result is recent enough: decide with it.
    Cached,
    /// The pod is not running: its app cannot be busy.
    NotRunning(ProbeView),
    /// Probed now (by this review or one it joined).
    Probed(ProbeView),
    /// The probe did not answer within the budget: busy.
    OverBudget(ProbeView),
}

impl Refreshed {
    /// The view to decide with (None: read the cache as usual).
    pub fn view(self) -> Option<ProbeView> {
        match self {
            Refreshed::Cached => None,
            Refreshed::NotRunning(v) | Refreshed::Probed(v) | Refreshed::OverBudget(v) => Some(v),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Refreshed::Cached => "cached",
            Refreshed::NotRunning(_) => "not_running",
            Refreshed::Probed(_) => "probed",
            Refreshed::OverBudget(_) => "over_budget",
        }
    }
}

/// Must the guard probe again? Yes when there is no result, the last probe failed, it never
/// classified the pod, or it is older than `period`. Pure.
pub fn needs_probe(record: Option<&ProbeRecord>, period: Duration, now: Instant) -> bool {
    match record {
        None => true,
        Some(r) => {
            r.failing
                || r.last_known.is_none()
                || now.saturating_duration_since(r.probed_at) > period
        }
    }
}

/// The view when the probe did not answer within `budget`: the last known state (or
/// unknown), stale, saying so.
pub fn over_budget_view(record: Option<&ProbeRecord>, budget: Duration) -> ProbeView {
    ProbeView {
        state: record
            .and_then(|r| r.last_known)
            .unwrap_or(BusyState::Unknown),
        stale: true,
        reason: format!(
            "the busy probe did not answer within the {}ms budget of --busy-guard-probe-budget",
            budget.as_millis()
        ),
    }
}

/// The guard's own probes, sharing the operator's probe cache.
pub struct Reprober {
    probes: ProbeCache,
    http: HttpProber,
    exec: Option<ExecProber>,
    metrics: Option<Arc<Metrics>>,
    in_flight: Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>,
}

impl std::fmt::Debug for Reprober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reprober")
            .field("exec", &self.exec.is_some())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Reprober {
    /// Probes recorded in `probes`; exec probes need `exec` (None: an exec pod's probe fails).
    pub fn new(
        probes: ProbeCache,
        exec: Option<ExecProber>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Reprober {
            probes,
            http: HttpProber::new(IN_FLIGHT),
            exec,
            metrics,
            in_flight: Default::default(),
        }
    }

    /// Probes of pods in flight now.
    pub fn in_flight(&self) -> usize {
        lock(&self.in_flight).len()
    }

    /// Bring the pod's result up to date within `budget` when it needs it (see the module).
    /// `found` is what a kind's resolver said; `pod` the freshest copy of the pod (the
    /// review's own when it carries one).
    pub async fn refresh(
        &self,
        uid: &str,
        found: &Found,
        pod: &k8s_openapi::api::core::v1::Pod,
        budget: Duration,
    ) -> Refreshed {
        let target = crate::probe::target::target(pod, &found.probe);
        if target == Target::NotRunning {
            return Refreshed::NotRunning(ProbeView {
                state: BusyState::Idle,
                stale: false,
                reason: "not running: the app cannot be busy".into(),
            });
        }
        let period = found.probe.period();
        if uid.is_empty() {
            return Refreshed::Cached;
        }
        if !needs_probe(self.probes.get(uid).as_ref(), period, Instant::now()) {
            return Refreshed::Cached;
        }
        let mut done = self.start_or_join(uid, target, period);
        let answered = tokio::time::timeout(budget, done.wait_for(|d| *d))
            .await
            .is_ok();
        match (answered, self.probes.guard_view(uid, Instant::now())) {
            (true, Some(v)) => Refreshed::Probed(v),
            _ => Refreshed::OverBudget(over_budget_view(self.probes.get(uid).as_ref(), budget)),
        }
    }

    /// The in-flight probe of `uid`, started when there is none.
    fn start_or_join(&self, uid: &str, target: Target, period: Duration) -> watch::Receiver<bool> {
        let mut m = lock(&self.in_flight);
        // A sender gone without removing its entry (a task that died) is replaced.
        if let Some(rx) = m.get(uid).filter(|rx| rx.has_changed().is_ok()) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(false);
        m.insert(uid.to_string(), rx.clone());
        drop(m);
        let (uid, probes, http, exec, metrics, in_flight) = (
            uid.to_string(),
            self.probes.clone(),
            self.http.clone(),
            self.exec.clone(),
            self.metrics.clone(),
            self.in_flight.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = run(&http, exec.as_ref(), target).await;
            if let Some(m) = &metrics {
                crate::probe::count_probe(m, started, &outcome);
            }
            if let Err(e) = &outcome {
                tracing::debug!(error = %e, "busy guard's own probe failed");
            }
            probes.record_every(&uid, outcome, Instant::now(), Some(period));
            let _ = tx.send(true);
            lock(&in_flight).remove(&uid);
        });
        rx
    }
}

async fn run(
    http: &HttpProber,
    exec: Option<&ExecProber>,
    target: Target,
) -> Result<BusyState, String> {
    match target {
        Target::Http { ip, cfg } => http.probe(ip, &cfg).await,
        Target::Exec { call, cfg } => {
            let (Some(prober), Some(call)) = (exec, call) else {
                return Err("exec: the pod has no container to run the probe in, or exec probes are off here".into());
            };
            prober
                .probe(call, &cfg)
                .await
                .map_err(|e: ExecError| format!("exec: {e}"))
        }
        Target::NotRunning => Ok(BusyState::Idle),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(last: Option<BusyState>, failing: bool, at: Instant) -> ProbeRecord {
        ProbeRecord {
            last_known: last,
            failing,
            reason: "r".into(),
            probed_at: at,
            period: None,
        }
    }

    #[test]
    fn a_result_is_probed_again_when_missing_failing_unknown_or_older_than_its_period() {
        let t0 = Instant::now();
        let p = Duration::from_secs(10);
        assert!(needs_probe(None, p, t0));
        let idle = rec(Some(BusyState::Idle), false, t0);
        assert!(!needs_probe(Some(&idle), p, t0 + p));
        assert!(needs_probe(
            Some(&idle),
            p,
            t0 + p + Duration::from_millis(1)
        ));
        assert!(needs_probe(
            Some(&rec(Some(BusyState::Idle), true, t0)),
            p,
            t0
        ));
        assert!(needs_probe(Some(&rec(None, false, t0)), p, t0));
        let v = over_budget_view(Some(&idle), Duration::from_millis(500));
        assert_eq!((v.state, v.stale), (BusyState::Idle, true));
        assert!(
            v.reason.contains("did not answer within the 500ms budget"),
            "{}",
            v.reason
        );
        assert_eq!(over_budget_view(None, p).state, BusyState::Unknown);
    }
}
