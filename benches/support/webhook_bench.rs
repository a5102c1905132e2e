//! The webhook's floor: what any admission webhook on this stack must do at least. It is
//! served by the product's own connection loop (`tls::serve`: rustls, hyper, axum), and its
//! one handler reads the body, parses the whole AdmissionReview JSON into a
//! `serde_json::Value`, and answers `allowed: true` echoing the request's uid. Benches
//! measure the real webhook against it, with the same client in the same run, and print
//! the ratio.
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// `POST /mutate/pods` answered by [`floor_review`].
pub fn floor_router() -> Router {
    Router::new().route("/mutate/pods", post(floor_review))
}

async fn floor_review(body: Bytes) -> Response {
    let review: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let uid = review
        .get("request")
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut response = json!({"uid": uid, "allowed": true});
    if let Some(pad) = floor_pad() {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(pad);
    }
    Json(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }))
    .into_response()
}

/// A control: with `BENCH_FLOOR_PAD=N` the floor also answers a `patch` of N bytes (`A`s),
/// to see what the answer's size alone costs.
fn floor_pad() -> Option<&'static str> {
    static PAD: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    PAD.get_or_init(|| {
        let n: usize = std::env::var("BENCH_FLOOR_PAD").ok()?.parse().ok()?;
        Some("A".repeat(n))
    })
    .as_deref()
}

/// Pod CREATEs that a StatefulSingleton of `examples/statefulsingleton-demo.yaml` matches:
/// the injection path (init gate, then wrapper gate).
pub const INJECT_BODIES: [&[u8]; 2] = [
    include_bytes!("../../tests/data/admission/pod-create-from-replicaset.json"),
    include_bytes!("../../tests/data/admission/pod-create-direct-with-command.json"),
];

/// Pod UPDATEs the webhook passes through untouched (an annotation change, a status write).
pub const PASS_BODIES: [&[u8]; 2] = [
    include_bytes!("../../tests/data/admission/pod-update-annotation.json"),
    include_bytes!("../../tests/data/admission/pod-update-status.json"),
];

/// The webhook's state as `kube-standby webhook --objects examples/statefulsingleton-demo.yaml`
/// has it, injecting the pins of `ca_pem` into the agents (as `run` does).
pub fn webhook_state(ca_pem: &str) -> kube_standby::webhook::WebhookState {
    use kube_standby::webhook::{Injection, ObjectSource, StaticObjects};
    let objects = StaticObjects::from_files(&[concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/statefulsingleton-demo.yaml"
    )])
    .expect("objects");
    let readiness = kube_standby::state::Readiness::without_caches();
    readiness.set_certs_loaded();
    kube_standby::webhook::WebhookState {
        objects: std::sync::Arc::new(objects) as std::sync::Arc<dyn ObjectSource>,
        injection: std::sync::Arc::new(Injection {
            agent_image: "ghcr.io/paia-tech/kube-standby:bench".into(),
            operator_url: "https://kube-standby.kube-standby.svc:443".into(),
            agent_ca: kube_standby::tls::pin::pins_of_bundle(ca_pem).expect("pins"),
        }),
        metrics: std::sync::Arc::new(kube_standby::metrics::Metrics::new()),
        readiness,
        debug: Default::default(),
        release: None,
        assignment: None,
        claims: None,
        gate: kube_standby::webhook::AdmissionGate::new(Default::default()),
        guard: Default::default(),
    }
}

/// Logs as `run` and `webhook` write them by default (text, `info`), formatted in full but
/// written to a sink, so the figures include what logging costs the handler but no
/// terminal. `BENCH_LOG=off` installs no subscriber; `BENCH_LOG=stderr` the product's own (on stderr).
pub fn install_logs() -> &'static str {
    match std::env::var("BENCH_LOG").as_deref() {
        Ok("off") => return "off",
        // The product's own setup (`telemetry::init`): text, info, on stderr.
        Ok("stderr") => {
            // Kept for the whole run (the bench ends by returning from main).
            std::mem::forget(kube_standby::telemetry::init(
                kube_standby::telemetry::LogFormat::Text,
            ));
            return "info, text, on stderr as the product writes them";
        }
        _ => {}
    }
    tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .init();
    "info, text, to a sink"
}
