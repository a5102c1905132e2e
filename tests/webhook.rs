//! The admission Router driven with `oneshot`: golden fixtures from a real kube-apiserver
//! and every kind of bad input.
mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kube_standby::webhook::limits::DEFAULT_MAX_BODY_BYTES;
use kube_standby::webhook::{router, StaticObjects};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(
    state: kube_standby::webhook::WebhookState,
    method: &str,
    uri: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = router(state).oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

async fn call_ops(
    state: kube_standby::webhook::WebhookState,
    method: &str,
    uri: &str,
) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let resp = kube_standby::webhook::ops_router(state)
        .oneshot(req)
        .await
        .unwrap();
    let status = resp.status();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

async fn admit(state: kube_standby::webhook::WebhookState, body: Vec<u8>) -> (StatusCode, Value) {
    let (s, b) = call(state, "POST", "/mutate/pods", body).await;
    (
        s,
        serde_json::from_slice(&b)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&b))),
    )
}

/// Apply the response's patch (if any) to the request object.
fn patched(request: &Value, response: &Value) -> Value {
    let mut obj = request["request"]["object"].clone();
    if let Some(p) = response["response"]["patch"].as_str() {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut obj, &patch).unwrap();
    }
    obj
}

#[tokio::test]
async fn every_fixture_gets_a_v1_review_echoing_the_uid() {
    for name in common::FIXTURES {
        let req = common::fixture_json(name);
        let (status, resp) = admit(
            common::state_with(StaticObjects::default()),
            common::fixture(name),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(resp["apiVersion"], "admission.k8s.io/v1", "{name}");
        assert_eq!(resp["kind"], "AdmissionReview", "{name}");
        assert_eq!(resp["response"]["uid"], req["request"]["uid"], "{name}");
        assert_eq!(resp["response"]["allowed"], true, "{name}");
        // No singleton matches: the pod is admitted unchanged.
        assert!(resp["response"].get("patch").is_none(), "{name}: {resp}");
        assert_eq!(patched(&req, &resp), req["request"]["object"]);
    }
}

#[tokio::test]
async fn updates_are_never_patched_even_when_a_singleton_matches() {
    for name in ["pod-update-annotation.json", "pod-update-status.json"] {
        let (status, resp) = admit(
            common::state_with(common::demo_objects()),
            common::fixture(name),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(resp["response"]["allowed"], true);
        assert!(resp["response"].get("patch").is_none(), "{name}: {resp}");
    }
}

#[tokio::test]
async fn dry_run_gets_the_same_answer_as_a_real_request() {
    let dry = common::fixture_json("pod-create-dry-run.json");
    let mut real = dry.clone();
    real["request"]["dryRun"] = false.into();
    let (_, a) = admit(
        common::state_with(common::demo_objects()),
        serde_json::to_vec(&dry).unwrap(),
    )
    .await;
    let (_, b) = admit(
        common::state_with(common::demo_objects()),
        serde_json::to_vec(&real).unwrap(),
    )
    .await;
    assert_eq!(a, b);
}

#[tokio::test]
async fn a_non_pod_kind_is_allowed_unchanged() {
    let mut r = common::fixture_json("pod-create-from-replicaset.json");
    r["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    r["request"]["object"] = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}});
    let (status, resp) = admit(
        common::state_with(common::demo_objects()),
        serde_json::to_vec(&r).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("patch").is_none());
}

#[tokio::test]
async fn bad_bodies_get_400_with_a_json_error_naming_the_problem() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "not valid JSON"),
        (b"".to_vec(), "not valid JSON"),
        (b"[1,2]".to_vec(), "not an AdmissionReview v1"),
        (
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":{}}"#
                .to_vec(),
            "admission.k8s.io/v1beta1",
        ),
        (
            br#"{"kind":"Pod","apiVersion":"v1"}"#.to_vec(),
            "not an AdmissionReview v1",
        ),
        (
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#.to_vec(),
            "no request",
        ),
        (
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":1}}"#
                .to_vec(),
            "not an AdmissionReview v1",
        ),
    ];
    for (body, needle) in cases {
        let shown = String::from_utf8_lossy(&body).to_string();
        let (status, resp) = admit(common::state_with(StaticObjects::default()), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{shown}");
        assert_eq!(resp["status"], 400);
        assert!(
            resp["error"].as_str().unwrap().contains(needle),
            "{shown}: {resp}"
        );
    }
}

#[tokio::test]
async fn an_oversized_body_gets_413() {
    let mut body = b"{\"pad\":\"".to_vec();
    body.resize(DEFAULT_MAX_BODY_BYTES + 10, b'a');
    body.extend_from_slice(b"\"}");
    let (status, b) = call(
        common::state_with(StaticObjects::default()),
        "POST",
        "/mutate/pods",
        body,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["status"], 413);
}

#[tokio::test]
async fn create_without_object_or_with_a_broken_pod_is_denied_with_a_reason() {
    let mut r = common::fixture_json("pod-create-from-replicaset.json");
    r["request"].as_object_mut().unwrap().remove("object");
    let (status, resp) = admit(
        common::state_with(StaticObjects::default()),
        serde_json::to_vec(&r).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp["response"]["allowed"], false);
    assert!(resp["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("no object"));

    let mut r = common::fixture_json("pod-create-from-replicaset.json");
    r["request"]["object"]["spec"]["containers"] = "not-a-list".into();
    let (_, resp) = admit(
        common::state_with(StaticObjects::default()),
        serde_json::to_vec(&r).unwrap(),
    )
    .await;
    assert_eq!(resp["response"]["allowed"], false);
    assert_eq!(resp["response"]["uid"], r["request"]["uid"]);
    assert!(
        resp["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not a valid Pod"),
        "{resp}"
    );
}

#[tokio::test]
async fn wrong_method_and_unknown_path() {
    let (s, _) = call(
        common::state_with(StaticObjects::default()),
        "GET",
        "/mutate/pods",
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, _) = call(
        common::state_with(StaticObjects::default()),
        "POST",
        "/nope",
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn health_readiness_metrics_and_debug_state() {
    let state = common::state_with(StaticObjects::default());
    let (s, b) = call(state.clone(), "GET", "/healthz", vec![]).await;
    assert_eq!((s, b.as_slice()), (StatusCode::OK, b"ok".as_slice()));
    let (s, _) = call(state.clone(), "GET", "/readyz", vec![]).await;
    assert_eq!(s, StatusCode::OK);

    let mut not_ready = state.clone();
    not_ready.readiness = kube_standby::state::Readiness::default();
    let (s, b) = call(not_ready, "GET", "/readyz", vec![]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&b).contains("certificates not loaded"));

    admit(
        state.clone(),
        common::fixture("pod-create-from-replicaset.json"),
    )
    .await;
    admit(state.clone(), b"junk".to_vec()).await;
    // Metrics and debug state live on the operations port only, never on the webhook's.
    let (s, _) = call(state.clone(), "GET", "/metrics", vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(state.clone(), "GET", "/debug/state", vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = call_ops(state.clone(), "GET", "/metrics").await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(b).unwrap();
    assert!(
        text.contains(r#"kube_standby_admissions_total{outcome="allowed"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"kube_standby_admissions_total{outcome="rejected"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("kube_standby_admission_duration_seconds_count 2"),
        "{text}"
    );

    state.debug.set("hsd/ns/x".into(), json!({"busy": 2}));
    let (s, b) = call_ops(state, "GET", "/debug/state").await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["hsd/ns/x"]["busy"], 2);
}

#[tokio::test]
async fn garbage_never_panics_the_handler() {
    // Mutations of a real fixture: every field replaced by a wrong type in turn.
    let base = common::fixture_json("pod-create-from-replicaset.json");
    let keys: Vec<String> = base["request"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for k in keys {
        for junk in [json!(null), json!(7), json!("x"), json!([]), json!({})] {
            let mut r = base.clone();
            r["request"][&k] = junk.clone();
            let (status, _) = admit(
                common::state_with(common::demo_objects()),
                serde_json::to_vec(&r).unwrap(),
            )
            .await;
            assert!(
                status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
                "{k}={junk}: {status}"
            );
        }
    }
}
