//! The busy guard's decision path: an AdmissionReview in, the answer out, through the
//! Router (`oneshot`, no network), for the real API-server bodies of a ReplicaSet DELETE
//! (busy: denied; idle: allowed), a human DELETE and an eviction (pod looked up in the
//! cache). Prints p50/p99 per request for each.
//!
//!   cargo bench --bench guard            (BENCH_ITERS to tune; default 20000)
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use kube_standby::metrics::Metrics;
use kube_standby::state::{DebugState, Readiness};
use kube_standby::webhook::{
    router, GuardState, Injection, ObjectSource, StaticObjects, WebhookState, VALIDATE_PATH,
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
        let mut lat = Vec::with_capacity(iters);
        rt.block_on(async {
            for i in 0..iters + iters / 10 {
                let req = Request::builder()
                    .method("POST")
                    .uri(VALIDATE_PATH)
                    .header("content-type", "application/json")
                    .body(Body::from(body.clone()))
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
}
