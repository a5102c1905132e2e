//! The claims HTTP path over real TLS, API and caches faked (in memory, no latency):
//! (a) `GET /v1/assignment`: from the claim becoming visible in the cache (the change
//!     notification) to the waiting long-poll's answer at the client;
//! (b) `POST /v1/claims` round trip (authentication and authorisation cached, the claim
//!     written, bound at once by a fake leader, seen in the cache, answered) at 16
//!     concurrent callers, with throughput.
//! Figures only, no asserts. Not included: the API server's write and watch latency and
//! the leader's binding pass (see the claim controller's own figures).
//!
//!   cargo bench --bench claims_http        (BENCH_ITERATIONS, default 200; BENCH_CLAIMS, default 4000)
#[path = "../tests/support/tls_server.rs"]
mod tls_server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_standby::api::claim::{
    Assignment, BoundPod, ClaimPhase, HotStandbyClaim, HotStandbyClaimStatus,
};
use kube_standby::certs;
use kube_standby::metrics::Metrics;
use kube_standby::state::{DebugState, Readiness};
use kube_standby::webhook::assignment::{AssignmentLookup, AssignmentService};
use kube_standby::webhook::claims::{
    Access, Authorizer, Caller, ClaimLookup, ClaimWriter, ClaimsService, WriteError,
};
use kube_standby::webhook::release::{BoxFut, PodIdentity, PodTokens, ReviewError, TokenReviewer};
use kube_standby::webhook::{Injection, StaticObjects, WebhookState};

struct OnePod;
impl TokenReviewer for OnePod {
    fn review<'a>(&'a self, _t: &'a str) -> BoxFut<'a, Result<PodIdentity, ReviewError>> {
        Box::pin(async move {
            Ok(PodIdentity {
                namespace: "prod".into(),
                name: "pod-0".into(),
                uid: "uid-0".into(),
            })
        })
    }
}

#[derive(Default)]
struct OneAssignment(Mutex<Option<Assignment>>, Arc<tokio::sync::Notify>);
impl AssignmentLookup for OneAssignment {
    fn assignment(&self, _ns: &str, _pod: &str, _uid: &str) -> Option<Assignment> {
        self.0.lock().ok()?.clone()
    }
    fn changes(&self, _ns: &str) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.1.clone())
    }
}

struct Everyone;
impl Authorizer for Everyone {
    fn authenticate<'a>(&'a self, _t: &'a str) -> BoxFut<'a, Result<Caller, ReviewError>> {
        Box::pin(async move {
            Ok(Caller {
                username: "dispatcher".into(),
                ..Default::default()
            })
        })
    }
    fn can_create<'a>(
        &'a self,
        _c: &'a Caller,
        _ns: &'a str,
    ) -> BoxFut<'a, Result<Access, ReviewError>> {
        Box::pin(async move { Ok(Access::Allowed) })
    }
}

/// The API and the claim cache: a create is bound by the "leader" at once.
#[derive(Default)]
struct Claims {
    objects: Mutex<HashMap<String, Arc<HotStandbyClaim>>>,
    changed: Arc<tokio::sync::Notify>,
    n: AtomicUsize,
}

impl ClaimWriter for Claims {
    fn create<'a>(
        &'a self,
        claim: &'a HotStandbyClaim,
    ) -> BoxFut<'a, Result<HotStandbyClaim, WriteError>> {
        Box::pin(async move {
            let n = self.n.fetch_add(1, Ordering::SeqCst);
            let mut c = claim.clone();
            c.metadata.uid = Some(format!("claim-{n}"));
            let mut b = c.clone();
            b.status = Some(HotStandbyClaimStatus {
                phase: ClaimPhase::Bound,
                pod: Some(BoundPod {
                    name: format!("pod-{n}"),
                    uid: format!("uid-{n}"),
                    ip: Some("10.0.0.1".into()),
                    node: Some("node-a".into()),
                }),
                bound_at: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                waited_ms: Some(0),
                ..Default::default()
            });
            let name = c.metadata.name.clone().unwrap_or_default();
            if let Ok(mut m) = self.objects.lock() {
                m.insert(name, Arc::new(b));
            }
            self.changed.notify_waiters();
            Ok(c)
        })
    }
    fn get<'a>(
        &'a self,
        _ns: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<HotStandbyClaim>, WriteError>> {
        Box::pin(async move {
            Ok(self
                .objects
                .lock()
                .ok()
                .and_then(|m| m.get(name).map(|c| (**c).clone())))
        })
    }
}

impl ClaimLookup for Claims {
    fn claim(&self, _ns: &str, name: &str) -> Option<Arc<HotStandbyClaim>> {
        self.objects.lock().ok()?.get(name).cloned()
    }
    fn changes(&self, _ns: &str) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.changed.clone())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let iterations = env_or("BENCH_ITERATIONS", 200);
    let total_claims = env_or("BENCH_CLAIMS", 4000);
    let callers = 16;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let bundle = certs::generate(&certs::default_sans()).expect("certs");
    let assignment = Arc::new(OneAssignment::default());
    let claims = Arc::new(Claims::default());
    let addr = rt.block_on(async {
        let readiness = Readiness::without_caches();
        readiness.set_certs_loaded();
        let state = WebhookState {
            objects: Arc::new(StaticObjects::default()),
            injection: Arc::new(Injection::default()),
            metrics: Arc::new(Metrics::new()),
            readiness,
            debug: DebugState::default(),
            release: None,
            assignment: Some(Arc::new(AssignmentService::new(
                Arc::new(PodTokens::new(Arc::new(OnePod))),
                assignment.clone(),
            ))),
            claims: Some(Arc::new(ClaimsService::new(
                Arc::new(Everyone),
                claims.clone(),
                claims.clone(),
            ))),
            gate: kube_standby::webhook::AdmissionGate::new(Default::default()),
            guard: Default::default(),
        };
        tls_server::serve(state, &bundle).await
    });
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(bundle.ca_pem.as_bytes()).expect("ca"))
        .resolve("localhost", addr)
        .build()
        .expect("client");
    let base = format!("https://localhost:{}", addr.port());

    // (a) claim visible -> the pod's long-poll answered.
    let mut gaps = vec![];
    rt.block_on(async {
        for i in 0..iterations {
            if let Ok(mut a) = assignment.0.lock() {
                *a = None;
            }
            let req = client
                .get(format!("{base}/v1/assignment?wait=10"))
                .bearer_auth("pod-token")
                .send();
            let waiting = tokio::spawn(async move {
                let r = req.await;
                (r.map(|r| r.status().as_u16()), Instant::now())
            });
            // Let the request reach the server and wait there.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let visible = Instant::now();
            if let Ok(mut a) = assignment.0.lock() {
                *a = Some(Assignment {
                    claim: format!("c-{i}"),
                    namespace: "prod".into(),
                    parameters: serde_json::json!({"task": i}),
                    bound_at: None,
                });
            }
            assignment.1.notify_waiters();
            match waiting.await {
                Ok((Ok(200), answered)) => gaps.push(answered.duration_since(visible)),
                other => eprintln!("unexpected answer: {other:?}"),
            }
        }
    });
    gaps.sort();
    println!(
        "claim visible -> /v1/assignment answered (TLS, kept connection), {} runs: p50={:.2}ms p99={:.2}ms max={:.2}ms",
        gaps.len(),
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        percentile(&gaps, 1.0),
    );

    // (b) POST /v1/claims at 16 concurrent callers.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut latencies: Vec<Duration> = rt.block_on(async {
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let (client, base, next) = (client.clone(), base.clone(), next.clone());
                tokio::spawn(async move {
                    let mut mine = vec![];
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= total_claims {
                            return mine;
                        }
                        let body = serde_json::json!({
                            "namespace": "prod", "name": format!("claim-{i}"),
                            "poolRef": {"kind": "HotStandbyDeployment", "name": "warm"},
                            "parameters": {"job": i}
                        });
                        let t = Instant::now();
                        let r = client
                            .post(format!("{base}/v1/claims"))
                            .bearer_auth("caller-token")
                            .json(&body)
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status() == 200 => {
                                let _ = r.bytes().await;
                                mine.push(t.elapsed());
                            }
                            Ok(r) => eprintln!("unexpected status {}", r.status()),
                            Err(e) => eprintln!("request failed: {e}"),
                        }
                    }
                })
            })
            .collect();
        let mut all = vec![];
        for t in tasks {
            all.extend(t.await.unwrap_or_default());
        }
        all
    });
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "POST /v1/claims -> Bound answer, {callers} concurrent callers, {} claims: p50={:.2}ms p99={:.2}ms max={:.2}ms, {:.0} claims/s",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        latencies.len() as f64 / elapsed.as_secs_f64(),
    );
}
