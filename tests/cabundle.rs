//! caBundle patching against a mocked API server (kube-rs ApiServerVerifier style).
use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mwc(rv: &str, ca_b64: Option<&str>) -> Value {
    let mut cc = json!({"url": "https://127.0.0.1:8443/mutate/pods"});
    if let Some(ca) = ca_b64 {
        cc["caBundle"] = ca.into();
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "kube-standby", "resourceVersion": rv},
        "webhooks": [{"name": "pods.kube-standby.paia.tech", "admissionReviewVersions": ["v1"], "sideEffects": "None", "clientConfig": cc}]
    })
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

const PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/kube-standby";

async fn expect(handle: &mut Handle, method: &str, reply_status: u16, reply: Value) -> Value {
    let (req, send) = handle.next_request().await.expect("a request");
    assert_eq!(req.method().as_str(), method);
    assert_eq!(req.uri().path(), PATH);
    let body = req.into_body().collect_bytes().await.unwrap();
    let sent: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    send.send_response(
        Response::builder()
            .status(reply_status)
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    sent
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified"})
}

#[tokio::test]
async fn stale_bundle_is_replaced_with_resource_version_and_retried_on_conflict() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let task = tokio::spawn(async move {
        kube_standby::tls::cabundle::ensure_ca_bundle(client, "kube-standby", "NEWCA").await
    });

    expect(&mut handle, "GET", 200, mwc("1", Some(&b64("OLD")))).await;
    let put = expect(&mut handle, "PUT", 409, conflict()).await;
    assert_eq!(
        put["metadata"]["resourceVersion"], "1",
        "write is guarded by the version we read"
    );
    assert_eq!(put["webhooks"][0]["clientConfig"]["caBundle"], b64("NEWCA"));
    expect(&mut handle, "GET", 200, mwc("2", Some(&b64("OTHER")))).await;
    let put = expect(&mut handle, "PUT", 200, mwc("3", Some(&b64("NEWCA")))).await;
    assert_eq!(put["metadata"]["resourceVersion"], "2");
    assert!(task.await.unwrap().unwrap(), "a write happened");
}

#[tokio::test]
async fn current_bundle_causes_no_write() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let task = tokio::spawn(async move {
        kube_standby::tls::cabundle::ensure_ca_bundle(client, "kube-standby", "CA").await
    });
    expect(&mut handle, "GET", 200, mwc("1", Some(&b64("CA")))).await;
    assert!(!task.await.unwrap().unwrap());
}

#[tokio::test]
async fn missing_configuration_is_an_error_not_a_panic() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let task = tokio::spawn(async move {
        kube_standby::tls::cabundle::ensure_ca_bundle(client, "kube-standby", "CA").await
    });
    expect(&mut handle, "GET", 404, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})).await;
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(
        err.metric_label(),
        "not_found",
        "an API error is labelled by its class (issue 17)"
    );
}
