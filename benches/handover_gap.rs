//! The part of the StatefulSingleton handover gap that runs outside the API server:
//! from the release landing in the operator's pod cache (which wakes the `/release`
//! long-poll), through the agent's answer over TLS, the atomic epoch and signal writes and
//! the wake FIFO, to the real wrapper script (a `/bin/sh` process) `exec`ing the app,
//! which records when it started. (Not included: the API server's delete event reaching
//! the operator and the release writes, one reconcile with three API calls.)
//!
//!   cargo bench --bench handover_gap        (BENCH_ITERATIONS, default 50)
#[path = "../tests/support/tls_server.rs"]
mod tls_server;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube_standby::agent::{self, AgentConfig, Mode};
use kube_standby::api::singleton::WRAPPER_SCRIPT;
use kube_standby::certs;
use kube_standby::metrics::Metrics;
use kube_standby::state::{DebugState, Readiness};
use kube_standby::webhook::release::{
    BoxFut, PodIdentity, PodRelease, ReleaseLookup, ReleaseService, ReviewError, TokenReviewer,
};
use kube_standby::webhook::{Injection, StaticObjects, WebhookState};

struct OneToken(PodIdentity);
impl TokenReviewer for OneToken {
    fn review<'a>(&'a self, _t: &'a str) -> BoxFut<'a, Result<PodIdentity, ReviewError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// The pod cache: released or not, and the change notification a cache update gives.
#[derive(Default)]
struct Flag(AtomicBool, Arc<tokio::sync::Notify>);
impl ReleaseLookup for Flag {
    fn lookup(&self, _ns: &str, _name: &str) -> Option<PodRelease> {
        let released = self.0.load(Ordering::SeqCst);
        Some(PodRelease {
            uid: "uid-0".into(),
            released,
            epoch: released.then_some(1),
        })
    }
    fn changes(&self, _ns: &str) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.1.clone())
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn main() {
    let iterations: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let bundle = certs::generate(&certs::default_sans()).expect("certs");
    let flag = Arc::new(Flag::default());
    let addr = rt.block_on(async {
        let readiness = Readiness::without_caches();
        readiness.set_certs_loaded();
        let state = WebhookState {
            objects: Arc::new(StaticObjects::default()),
            injection: Arc::new(Injection::default()),
            metrics: Arc::new(Metrics::new()),
            readiness,
            debug: DebugState::default(),
            release: Some(Arc::new(ReleaseService::new(
                Arc::new(OneToken(PodIdentity {
                    namespace: "ns".into(),
                    name: "db-0".into(),
                    uid: "uid-0".into(),
                })),
                flag.clone(),
            ))),
            assignment: None,
            claims: None,
            gate: kube_standby::webhook::AdmissionGate::new(Default::default()),
            guard: Default::default(),
        };
        tls_server::serve(state, &bundle).await
    });

    let mut gaps = vec![];
    for _ in 0..iterations {
        let dir = tempfile::tempdir().expect("tmp");
        let wrapper = dir.path().join("entrypoint-wrapper.sh");
        std::fs::write(&wrapper, WRAPPER_SCRIPT).expect("script");
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let signal = dir.path().join("start-signal");
        let out = dir.path().join("started-at");
        let token = dir.path().join("token");
        std::fs::write(&token, "t").expect("token");
        flag.0.store(false, Ordering::SeqCst);
        // The "app" records when it started, in ns since the epoch.
        let mut app = std::process::Command::new("/bin/sh")
            .arg(&wrapper)
            .args([
                "--",
                "/bin/sh",
                "-c",
                &format!(
                    "date +%s%N > {}; echo \"$STATEFULSINGLETON_EPOCH\" >> {}",
                    out.display(),
                    out.display()
                ),
            ])
            .env("STATEFULSINGLETON_SIGNAL_FILE", &signal)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("wrapper");
        let cfg = AgentConfig {
            operator_url: format!("https://localhost:{}", addr.port()),
            ca: bundle.ca_pem.clone(),
            token_file: token,
            pod_uid: Some("uid-0".into()),
            poll_seconds: 30,
            max_backoff: Duration::from_secs(1),
            give_up_after: None,
        };
        let agent_task = rt.spawn(agent::run(cfg, Mode::Signal(signal.clone())));
        std::thread::sleep(Duration::from_millis(300)); // agent is long-polling, app is waiting
        let released_at = now_ns();
        flag.0.store(true, Ordering::SeqCst);
        flag.1.notify_waiters();
        let _ = app.wait();
        agent_task.abort();
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let mut lines = text.lines();
        let started: u128 = lines
            .next()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if lines.next() != Some("1") {
            eprintln!("the app did not see STATEFULSINGLETON_EPOCH=1: {text:?}");
        }
        if started > released_at {
            gaps.push(Duration::from_nanos((started - released_at) as u64));
        }
    }
    gaps.sort();
    let pct = |p: f64| {
        gaps.get(((gaps.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "release written -> app exec'd (long-poll woken by the cache, answer over TLS, epoch + signal files, wake FIFO, wrapper exec), {} runs: p50={:.1}ms p99={:.1}ms max={:.1}ms",
        gaps.len(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        gaps.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}
