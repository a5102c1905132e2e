//! A kube-rs style ApiServerVerifier: the requests a reconcile must make, in order, each
//! with its method, path and body checked, then a check that it made no other.
#![allow(dead_code)]
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::Value;

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
pub type Check = Box<dyn Fn(&Value, &str) + Send>;

pub struct Expect {
    pub method: &'static str,
    pub path: String,
    pub check: Check,
    pub status: u16,
    pub reply: Value,
}

pub fn expect(
    method: &'static str,
    path: impl Into<String>,
    check: impl Fn(&Value, &str) + Send + 'static,
    status: u16,
    reply: Value,
) -> Expect {
    Expect {
        method,
        path: path.into(),
        check: Box::new(check),
        status,
        reply,
    }
}

/// A mocked client and the handle that answers for the API server.
pub fn mock_client() -> (kube::Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(svc, "default"), handle)
}

/// Serve `expected` in order; then assert nothing else is asked within 100 ms after `done` resolves.
pub async fn verify<T>(
    mut handle: Handle,
    expected: Vec<Expect>,
    done: tokio::task::JoinHandle<T>,
) -> T {
    for (i, e) in expected.into_iter().enumerate() {
        let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("request #{i} ({} {}) never came", e.method, e.path))
            .expect("request");
        assert_eq!(
            (req.method().as_str(), req.uri().path()),
            (e.method, e.path.as_str()),
            "request #{i}"
        );
        let query = req.uri().query().unwrap_or_default().to_string();
        let body = req.into_body().collect_bytes().await.expect("body");
        let v: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).expect("json body")
        };
        (e.check)(&v, &query);
        send.send_response(
            Response::builder()
                .status(e.status)
                .body(Body::from(serde_json::to_vec(&e.reply).expect("reply")))
                .expect("response"),
        );
    }
    let out = tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("reconcile finished")
        .expect("reconcile task");
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await
    {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
    out
}

/// An Event POST with this reason whose note contains `note_has`.
pub fn event(ns: &str, reason: &'static str, note_has: &'static str) -> Expect {
    expect(
        "POST",
        format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        move |b, _| {
            assert_eq!(b["reason"], reason, "{b}");
            assert!(
                b["note"].as_str().unwrap_or_default().contains(note_has),
                "{reason}: {}",
                b["note"]
            );
        },
        201,
        serde_json::json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": ns}}),
    )
}
