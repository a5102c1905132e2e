//! The exec busy probe: run `busyProbe.exec.command` in a pod's container through the API
//! server's `pods/exec` (kube's websocket client), bounded in time and in concurrency.
//!
//! - exit code 0 is success; success means busy when `successIsBusy`, idle otherwise, and a
//!   non-zero exit code means the opposite;
//! - anything that is not an exit code (timeout, container missing, connection refused) is a
//!   probe error: the pod keeps its last known state and is marked stale (never deleted);
//! - a 403 is [`ExecError::Forbidden`]: the operator lacks `pods/exec` (the chart grants it
//!   only with `hsj.execProbe: true`), reported as the `ProbeForbidden` reason. kube's exec is
//!   a websocket GET, authorized as verb `get` on `pods/exec`; clusters from 1.30 also check
//!   `create` on the upgrade, so the chart grants both;
//! - any other refusal of the upgrade (400 bad container, 404 pod gone) is a failure naming
//!   the code, reason and message the API server gave (never its debug dump);
//! - output is discarded through a small buffer and never kept.
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use super::{BusyState, ProbeCache};
use crate::api::probe::ExecProbe;
use crate::metrics::Metrics;

/// Why an exec probe gave no exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecError {
    /// The API server refused `pods/exec` (403).
    Forbidden(String),
    /// Anything else: timeout, container not found, connection failure.
    Failed(String),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::Forbidden(m) => write!(f, "pods/exec forbidden: {m}"),
            ExecError::Failed(m) => f.write_str(m),
        }
    }
}

/// One exec call: where and what. The runner answers with the process's final `Status`.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecCall {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
}

/// Runs a command and returns the API server's final status for it (kube in production, a
/// fake in tests).
pub trait ExecRunner: Send + Sync {
    fn run(&self, call: ExecCall) -> BoxFuture<'_, Result<Option<Status>, ExecError>>;
}

/// The exit code carried by an exec `Status`: Some(0) on Success, the `ExitCode` cause on
/// `NonZeroExitCode`, None when the status is not an exit (e.g. the container is missing).
pub fn exit_code(status: &Status) -> Option<i32> {
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    if status.reason.as_deref() != Some("NonZeroExitCode") {
        return None;
    }
    status
        .details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))?
        .message
        .as_deref()?
        .trim()
        .parse()
        .ok()
}

/// Busy or idle from an exit code.
pub fn classify(code: i32, success_is_busy: bool) -> BusyState {
    if (code == 0) == success_is_busy {
        BusyState::Busy
    } else {
        BusyState::Idle
    }
}

/// The container to run in: the configured one, else the pod's first container.
pub fn container_for(cfg: &ExecProbe, first_container: Option<&str>) -> Option<String> {
    cfg.container
        .clone()
        .filter(|c| !c.is_empty())
        .or_else(|| first_container.map(str::to_string))
}

/// Exec probes with a global bound on calls in flight.
#[derive(Clone)]
pub struct ExecProber {
    runner: Arc<dyn ExecRunner>,
    permits: Arc<Semaphore>,
}

impl ExecProber {
    pub fn new(runner: Arc<dyn ExecRunner>, max_in_flight: usize) -> Self {
        ExecProber {
            runner,
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    /// Probe once within `timeoutSeconds` (waiting for a slot counts against it).
    pub async fn probe(&self, call: ExecCall, cfg: &ExecProbe) -> Result<BusyState, ExecError> {
        let timeout = Duration::from_secs(cfg.timeout_seconds.clamp(1, 60) as u64);
        let started = Instant::now();
        let _permit = tokio::time::timeout(timeout, self.permits.acquire())
            .await
            .map_err(|_| ExecError::Failed("no probe slot free within the timeout".into()))?
            .map_err(|_| ExecError::Failed("prober closed".into()))?;
        let left = timeout.saturating_sub(started.elapsed());
        let status = tokio::time::timeout(left, self.runner.run(call))
            .await
            .map_err(|_| ExecError::Failed(format!("timed out after {}s", timeout.as_secs())))??;
        let status =
            status.ok_or_else(|| ExecError::Failed("no exit status from the API server".into()))?;
        match exit_code(&status) {
            Some(code) => Ok(classify(code, cfg.success_is_busy)),
            None => Err(ExecError::Failed(short(
                status
                    .message
                    .as_deref()
                    .unwrap_or("exec failed without an exit code"),
            ))),
        }
    }
}

/// The exec call for `pod` under `cfg` (None: the pod has no container to run in).
pub fn call_for(pod: &Pod, cfg: &ExecProbe) -> Option<ExecCall> {
    let first = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.as_str());
    Some(ExecCall {
        namespace: pod.metadata.namespace.clone()?,
        pod: pod.metadata.name.clone()?,
        container: container_for(cfg, first)?,
        command: cfg.command.clone(),
    })
}

/// Probe one pod now. A pod with no container to run in is a probe failure.
pub async fn probe_pod(
    prober: &ExecProber,
    pod: &Pod,
    cfg: &ExecProbe,
) -> Result<BusyState, ExecError> {
    match call_for(pod, cfg) {
        Some(call) => prober.probe(call, cfg).await,
        None => Err(ExecError::Failed(
            "the pod has no container to run the probe in".into(),
        )),
    }
}

/// How often an exec busy probe runs: `periodSeconds`, clamped to 1 s ..= 1 h.
pub fn period_of(cfg: &ExecProbe) -> Duration {
    Duration::from_secs(cfg.period_seconds.clamp(1, 3600) as u64)
}

/// Exec-probe every running pod of `pods` whose last answer is older than `periodSeconds`,
/// in parallel (bounded by the prober), recording outcomes in `probes` and in the metrics.
/// Returns the API server's message when it refused `pods/exec`.
pub async fn probe_due(
    prober: &ExecProber,
    probes: &ProbeCache,
    metrics: &Metrics,
    cfg: &ExecProbe,
    pods: &[&Pod],
) -> Option<String> {
    let period = period_of(cfg);
    let now = Instant::now();
    let running = pods.iter().filter_map(|p| {
        let uid = p.metadata.uid.as_deref().unwrap_or_default();
        (!uid.is_empty() && super::is_running(p)).then_some((uid, *p))
    });
    let due = probes.which_due(running, period, now);
    probe_pods(prober, probes, metrics, cfg, &due).await
}

/// Exec-probe each of `due` (pods already found due) in parallel (bounded by the prober),
/// recording outcomes in `probes` and in the metrics. Returns the API server's message
/// when it refused `pods/exec`.
pub async fn probe_pods(
    prober: &ExecProber,
    probes: &ProbeCache,
    metrics: &Metrics,
    cfg: &ExecProbe,
    due: &[&Pod],
) -> Option<String> {
    let period = period_of(cfg);
    let runs = due.iter().map(|p| async move {
        let t = Instant::now();
        let r = probe_pod(prober, p, cfg).await;
        super::count_probe(metrics, t, &r);
        let uid = p.metadata.uid.as_deref().unwrap_or_default();
        let forbidden = match &r {
            Err(ExecError::Forbidden(m)) => Some(m.clone()),
            _ => None,
        };
        let r = r.map_err(|e| format!("exec: {e}"));
        probes.record_every(uid, r, Instant::now(), Some(period));
        forbidden
    });
    futures::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .next()
}

fn short(s: &str) -> String {
    crate::telemetry::cut(s, 200)
}

/// The production runner: `pods/exec` through kube's websocket client.
pub struct KubeExec {
    pub client: kube::Client,
}

impl ExecRunner for KubeExec {
    fn run(&self, call: ExecCall) -> BoxFuture<'_, Result<Option<Status>, ExecError>> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &call.namespace);
            let ap = AttachParams::default()
                .container(call.container)
                .stdin(false)
                .stdout(true)
                .stderr(false)
                .max_stdout_buf_size(4096);
            let mut proc = match api.exec(&call.pod, call.command, &ap).await {
                Ok(p) => p,
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    return Err(ExecError::Forbidden(short(&s.message)))
                }
                Err(kube::Error::Api(s)) => {
                    let said = format!(
                        "the API server answered {} {}: {}",
                        s.code, s.reason, s.message
                    );
                    return Err(ExecError::Failed(short(&said)));
                }
                Err(e) => return Err(ExecError::Failed(short(&e.to_string()))),
            };
            // Drain and drop the output so the process never blocks on a full pipe.
            if let Some(mut out) = proc.stdout() {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while matches!(out.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
            let status = match proc.take_status() {
                Some(s) => s.await,
                None => None,
            };
            Ok(status)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(v: serde_json::Value) -> Status {
        serde_json::from_value(v).unwrap()
    }

    fn nonzero(code: &str) -> Status {
        status(json!({"status": "Failure", "reason": "NonZeroExitCode",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "details": {"causes": [{"reason": "ExitCode", "message": code}]}}))
    }

    #[test]
    fn exit_codes_from_the_api_status() {
        assert_eq!(exit_code(&status(json!({"status": "Success"}))), Some(0));
        assert_eq!(exit_code(&nonzero("1")), Some(1));
        assert_eq!(exit_code(&nonzero("137")), Some(137));
        assert_eq!(exit_code(&nonzero("x")), None);
        // Not an exit: the container does not exist, or an internal error.
        assert_eq!(
            exit_code(&status(
                json!({"status": "Failure", "reason": "InternalError",
                "message": "container not found (\"nope\")"})
            )),
            None
        );
        assert_eq!(
            exit_code(&status(
                json!({"status": "Failure", "reason": "NonZeroExitCode"})
            )),
            None
        );
    }

    #[test]
    fn classification_follows_success_is_busy() {
        assert_eq!(classify(0, true), BusyState::Busy);
        assert_eq!(classify(1, true), BusyState::Idle);
        assert_eq!(classify(0, false), BusyState::Idle);
        assert_eq!(classify(2, false), BusyState::Busy);
    }

    #[test]
    fn the_container_defaults_to_the_first() {
        let mut cfg: ExecProbe = serde_json::from_value(json!({"command": ["true"]})).unwrap();
        assert_eq!(container_for(&cfg, Some("main")).as_deref(), Some("main"));
        assert_eq!(container_for(&cfg, None), None);
        cfg.container = Some("worker".into());
        assert_eq!(container_for(&cfg, Some("main")).as_deref(), Some("worker"));
    }

    /// A runner that answers with a fixed status after `delay`, counting calls in flight.
    struct Fake {
        answer: Result<Option<Status>, ExecError>,
        delay: Duration,
        in_flight: std::sync::atomic::AtomicUsize,
        max_seen: std::sync::atomic::AtomicUsize,
        calls: std::sync::Mutex<Vec<ExecCall>>,
    }

    impl Fake {
        fn new(answer: Result<Option<Status>, ExecError>, delay: Duration) -> Arc<Self> {
            Arc::new(Fake {
                answer,
                delay,
                in_flight: Default::default(),
                max_seen: Default::default(),
                calls: Default::default(),
            })
        }
    }

    impl ExecRunner for Fake {
        fn run(&self, call: ExecCall) -> BoxFuture<'_, Result<Option<Status>, ExecError>> {
            use std::sync::atomic::Ordering::SeqCst;
            self.calls.lock().unwrap().push(call);
            Box::pin(async move {
                let now = self.in_flight.fetch_add(1, SeqCst) + 1;
                self.max_seen.fetch_max(now, SeqCst);
                tokio::time::sleep(self.delay).await;
                self.in_flight.fetch_sub(1, SeqCst);
                self.answer.clone()
            })
        }
    }

    fn call() -> ExecCall {
        ExecCall {
            namespace: "ns".into(),
            pod: "p".into(),
            container: "main".into(),
            command: vec!["cat".into(), "/tmp/busy_state".into()],
        }
    }

    fn cfg(timeout: i32, success_is_busy: bool) -> ExecProbe {
        serde_json::from_value(json!({"command": ["cat", "/tmp/busy_state"],
            "timeoutSeconds": timeout, "successIsBusy": success_is_busy}))
        .unwrap()
    }

    #[tokio::test]
    async fn the_prober_maps_statuses_errors_and_timeouts() {
        let ok = Fake::new(
            Ok(Some(status(json!({"status": "Success"})))),
            Duration::ZERO,
        );
        let p = ExecProber::new(ok.clone(), 4);
        assert_eq!(p.probe(call(), &cfg(1, true)).await, Ok(BusyState::Busy));
        assert_eq!(p.probe(call(), &cfg(1, false)).await, Ok(BusyState::Idle));
        assert_eq!(ok.calls.lock().unwrap()[0], call());

        let exit1 = ExecProber::new(Fake::new(Ok(Some(nonzero("1"))), Duration::ZERO), 4);
        assert_eq!(
            exit1.probe(call(), &cfg(1, true)).await,
            Ok(BusyState::Idle)
        );

        let missing = Fake::new(
            Ok(Some(status(
                json!({"status": "Failure", "message": "container not found"}),
            ))),
            Duration::ZERO,
        );
        let r = ExecProber::new(missing, 4)
            .probe(call(), &cfg(1, true))
            .await;
        assert!(
            matches!(&r, Err(ExecError::Failed(m)) if m.contains("not found")),
            "{r:?}"
        );

        let none = ExecProber::new(Fake::new(Ok(None), Duration::ZERO), 4);
        assert!(matches!(
            none.probe(call(), &cfg(1, true)).await,
            Err(ExecError::Failed(_))
        ));

        let denied = Fake::new(Err(ExecError::Forbidden("no".into())), Duration::ZERO);
        let r = ExecProber::new(denied, 4)
            .probe(call(), &cfg(1, true))
            .await;
        assert!(matches!(r, Err(ExecError::Forbidden(_))));

        let slow = Fake::new(
            Ok(Some(status(json!({"status": "Success"})))),
            Duration::from_secs(30),
        );
        let r = ExecProber::new(slow, 4).probe(call(), &cfg(1, true)).await;
        assert!(
            matches!(&r, Err(ExecError::Failed(m)) if m.contains("timed out")),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn calls_in_flight_are_bounded() {
        let fake = Fake::new(
            Ok(Some(status(json!({"status": "Success"})))),
            Duration::from_millis(50),
        );
        let p = ExecProber::new(fake.clone(), 3);
        let c = cfg(10, true);
        let all = (0..12).map(|_| p.probe(call(), &c));
        let results = futures::future::join_all(all).await;
        assert!(results.iter().all(|r| r == &Ok(BusyState::Busy)));
        assert_eq!(fake.max_seen.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    fn running_pod(name: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("{name}-uid")},
            "spec": {"containers": [{"name": "main"}]},
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn due_pods_are_probed_once_per_period_and_forbidden_is_reported() {
        let fake = Fake::new(Ok(Some(nonzero("1"))), Duration::ZERO);
        let p = ExecProber::new(fake.clone(), 4);
        let probes = ProbeCache::default();
        let metrics = Metrics::new();
        let (a, b) = (running_pod("a"), running_pod("b"));
        let mut pending = running_pod("c");
        pending.status = None;
        let c = cfg(5, true);
        let r = probe_due(&p, &probes, &metrics, &c, &[&a, &b, &pending]).await;
        assert_eq!(r, None);
        assert_eq!(
            fake.calls.lock().unwrap().len(),
            2,
            "the pending pod is not probed"
        );
        assert_eq!(fake.calls.lock().unwrap()[0].container, "main");
        assert_eq!(probes.view("a-uid").0, BusyState::Idle);
        // Within the period nothing is probed again.
        probe_due(&p, &probes, &metrics, &c, &[&a, &b]).await;
        assert_eq!(fake.calls.lock().unwrap().len(), 2);

        let denied = Fake::new(
            Err(ExecError::Forbidden("pods \"a\" is forbidden".into())),
            Duration::ZERO,
        );
        let p = ExecProber::new(denied, 4);
        let probes = ProbeCache::default();
        let r = probe_due(&p, &probes, &metrics, &c, &[&a]).await;
        assert!(r.unwrap().contains("forbidden"));
        let (state, stale, reason) = probes.view("a-uid");
        assert_eq!((state, stale), (BusyState::Unknown, false));
        assert!(reason.contains("pods/exec forbidden"), "{reason}");
    }
}
