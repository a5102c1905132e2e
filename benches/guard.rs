//! The busy guard's decision path: an AdmissionReview in, the answer out, through the
//! Router (`oneshot`, no network), for the real API-server bodies of a ReplicaSet DELETE
//! (busy: denied; idle: allowed), a human DELETE and an eviction (pod looked up in the
//! cache); then an http-probed pod whose cached result is stale, so the guard probes it
//! itself against a local http server on 127.0.0.1 before deciding, and the same pod with
//! a fresh result (no probe). Prints p50/p99 per request for each.
//!
//!   cargo bench --bench guard            (BENCH_ITERS to tune; default 20000)
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Pod;
use kube_standby::api::probe::HttpProbe;
use kube_standby::api::StatefulSingleton;
use kube_standby::metrics::Metrics;
use kube_standby::probe::target::{Found, PoolProbe};
use kube_standby::probe::{BusyState, ProbeCache, ProbeView};
use kube_standby::state::{DebugState, Readiness};
use kube_standby::webhook::reprobe::Reprober;
use kube_standby::webhook::{
    router, GuardIo, GuardState, Injection, ObjectSource, StaticObjects, WebhookState,
    VALIDATE_PATH,
};
use serde_json::{json, Value};
use tower::ServiceExt;

fn fixture(name: &str) -> Value {
    let p = format!("{}/tests/data/admission/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(&p).expect("fixture")).expect("json")
}

fn guarded(mut v: Value, busy: &str) -> Vec<u8> {
    let pod = &mut v["request"]["oldObject"]["metadata"];
    pod["labels"]["kube-standby.dev/busy-guard"] = json!("true");
    pod["annotations"]["paia.tech/busy"] = json!(busy);
    serde_json::to_vec(&v).expect("body")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(((sorted.len() as f64) - 1.0) * p).round() as usize]
}

/// What `run` mode gives the guard for an http pool's pod: its probe and the cache.
struct ProbedObjects {
    pod: Arc<Pod>,
    probe: HttpProbe,
    probes: ProbeCache,
}

impl ObjectSource for ProbedObjects {
    fn singletons(&self, _: &str) -> Vec<Arc<StatefulSingleton>> {
        vec![]
    }
    fn probe(&self, uid: &str) -> Option<ProbeView> {
        self.probes.guard_view(uid, Instant::now())
    }
    fn probe_target(&self, _: &str, _: &str) -> Option<Found> {
        Some(Found {
            probe: PoolProbe::Http(self.probe.clone()),
            pod: self.pod.clone(),
        })
    }
}

fn measure(
    rt: &tokio::runtime::Runtime,
    app: &axum::Router,
    name: &str,
    body: &[u8],
    want_allowed: bool,
    iters: usize,
    before_each: &dyn Fn(),
) {
    let mut lat = Vec::with_capacity(iters);
    rt.block_on(async {
        for i in 0..iters + iters / 10 {
            before_each();
            let req = Request::builder()
                .method("POST")
                .uri(VALIDATE_PATH)
                .header("content-type", "application/json")
                .body(Body::from(body.to_vec()))
                .expect("request");
            let t = Instant::now();
            let resp = app.clone().oneshot(req).await.expect("response");
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            let d = t.elapsed();
            if i == 0 {
                let v: Value = serde_json::from_slice(&bytes).expect("answer");
                assert_eq!(v["response"]["allowed"], want_allowed, "{name}: {v}");
            }
            // The first tenth warms up.
            if i >= iters / 10 {
                lat.push(d);
            }
        }
    });
    lat.sort();
    println!(
        "{name}: body={}B p50={:.1}us p99={:.1}us max={:.1}us",
        body.len(),
        percentile(&lat, 0.50).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() * 1e6,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
    );
}

fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // A cache with the evicted pod among 500 others.
    let base = fixture("pod-delete-by-replicaset-controller.json")["request"]["oldObject"].clone();
    let mut yaml = String::new();
    for i in 0..500 {
        let mut p = base.clone();
        p["metadata"]["name"] = json!(format!("web-{i}"));
        p["metadata"]["uid"] = json!(format!("uid-{i}"));
        yaml.push_str(&serde_json::to_string(&p).expect("pod"));
        yaml.push_str("\n---\n");
    }
    let mut evicted = base.clone();
    evicted["metadata"]["name"] = json!("web-866bcb66c8-r9mks");
    evicted["metadata"]["labels"]["kube-standby.dev/busy-guard"] = json!("true");
    evicted["metadata"]["annotations"]["paia.tech/busy"] = json!("true");
    yaml.push_str(&serde_json::to_string(&evicted).expect("pod"));
    let objects = StaticObjects::from_yaml(&yaml, "bench").expect("objects");
    let readiness = Readiness::without_caches();
    readiness.set_certs_loaded();
    let state = WebhookState {
        objects: Arc::new(objects) as Arc<dyn ObjectSource>,
        injection: Arc::new(Injection::default()),
        metrics: Arc::new(Metrics::new()),
        readiness,
        debug: DebugState::default(),
        release: None,
        assignment: None,
        claims: None,
        gate: kube_standby::webhook::AdmissionGate::new(Default::default()),
        guard: GuardState::new(Default::default()),
    };
    let app = router(state);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "replicaset DELETE, busy (denied)",
            guarded(fixture("pod-delete-by-replicaset-controller.json"), "true"),
            false,
        ),
        (
            "replicaset DELETE, idle (allowed)",
            guarded(fixture("pod-delete-by-replicaset-controller.json"), "false"),
            true,
        ),
        (
            "human DELETE, busy (allowed)",
            guarded(fixture("pod-delete-by-user.json"), "true"),
            true,
        ),
        (
            "eviction, busy, cache lookup (429)",
            serde_json::to_vec(&fixture("pod-eviction.json")).expect("body"),
            false,
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("busy guard decision path, {iters} requests per case, in process (no TLS)");
    for (name, body, want_allowed) in cases {
        measure(&rt, &app, name, &body, want_allowed, iters, &|| {});
    }

    // An http pool's pod: the guard probes it itself when its cached result is stale.
    let port = rt.block_on(async {
        let idle = axum::Router::new().route(
            "/busy",
            axum::routing::get(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, idle).await.expect("serve") });
        port
    });
    let mut pod =
        fixture("pod-delete-by-replicaset-controller.json")["request"]["oldObject"].clone();
    pod["metadata"]["labels"]["kube-standby.dev/busy-guard"] = json!("true");
    pod["status"]["podIP"] = json!("127.0.0.1");
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_string();
    let mut body = fixture("pod-delete-by-replicaset-controller.json");
    body["request"]["oldObject"] = pod.clone();
    let body = serde_json::to_vec(&body).expect("body");
    let probes = ProbeCache::default();
    let period = Duration::from_secs(10);
    let objects = ProbedObjects {
        pod: Arc::new(serde_json::from_value(pod).expect("pod")),
        probe: HttpProbe {
            port: port as i32,
            path: "/busy".into(),
            success_is_busy: true,
            timeout_seconds: 1,
            period_seconds: 10,
        },
        probes: probes.clone(),
    };
    let readiness = Readiness::without_caches();
    readiness.set_certs_loaded();
    let io = GuardIo {
        reprober: Some(Arc::new(Reprober::new(probes.clone(), None, None))),
        held_since: None,
    };
    let app = router(WebhookState {
        objects: Arc::new(objects) as Arc<dyn ObjectSource>,
        injection: Arc::new(Injection::default()),
        metrics: Arc::new(Metrics::new()),
        readiness,
        debug: DebugState::default(),
        release: None,
        assignment: None,
        claims: None,
        gate: kube_standby::webhook::AdmissionGate::new(Default::default()),
        guard: GuardState::with_io(Default::default(), Default::default(), io),
    });
    let probe_iters = (iters / 4).max(100);
    let stale = || {
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(60))
            .unwrap_or_else(Instant::now);
        probes.record_every(&uid, Ok(BusyState::Busy), long_ago, Some(period));
    };
    measure(
        &rt,
        &app,
        "replicaset DELETE, http pod, stale result: re-probed against a local http server (idle, allowed)",
        &body,
        true,
        probe_iters,
        &stale,
    );
    let fresh = || {
        probes.record_every(&uid, Ok(BusyState::Idle), Instant::now(), Some(period));
    };
    measure(
        &rt,
        &app,
        "replicaset DELETE, http pod, fresh cached result: no probe (allowed)",
        &body,
        true,
        iters,
        &fresh,
    );
}
