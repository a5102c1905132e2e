//! Issue 18: the busy guard probes an http/exec pod itself when the operator's cached
//! result is missing or older than its period, within `--busy-guard-probe-budget`; and the
//! hold start is written on the pod once (`kube-standby.dev/held-since`). Driven through the
//! Router with real API-server bodies; the pods' probe targets are local axum servers on
//! 127.0.0.x, counting requests; the API is a recording mock.
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_standby::api::probe::HttpProbe;
use kube_standby::api::StatefulSingleton;
use kube_standby::probe::target::{Found, PoolProbe};
use kube_standby::probe::{BusyState, ProbeCache, ProbeView};
use kube_standby::webhook::guard::{GuardSettings, HELD_SINCE_ANNOTATION};
use kube_standby::webhook::held_since::HeldSince;
use kube_standby::webhook::reprobe::Reprober;
use kube_standby::webhook::{
    router, GuardIo, GuardState, ObjectSource, WebhookState, VALIDATE_PATH,
};
use serde_json::{json, Value};
use tower::ServiceExt;

const RS_DELETE: &str = "pod-delete-by-replicaset-controller.json";
const EVICTION: &str = "pod-eviction.json";
const UID: &str = "094beed3-667b-4467-8402-87ddecc1d36e";

/// A probe target: answers `status` on /busy after `delay`, counting requests.
struct Target {
    port: u16,
    hits: Arc<AtomicUsize>,
}

async fn target(host: u8, status: u16, delay: Duration) -> Target {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/busy",
        axum::routing::get(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.{host}:0"))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Target { port, hits }
}

/// The fixture's pod, guarded, with no busy annotation, running on 127.0.0.<host>.
fn pod(host: u8) -> Value {
    let mut p = common::fixture_json(RS_DELETE)["request"]["oldObject"].clone();
    p["metadata"]["labels"]["kube-standby.dev/busy-guard"] = json!("true");
    p["status"]["podIP"] = json!(format!("127.0.0.{host}"));
    p
}

/// What `run` mode gives the guard: the pod's pool probes it over http (`probe_target`),
/// and the shared probe cache (`probe`).
struct Objects {
    pod: Arc<Pod>,
    probe: HttpProbe,
    probes: ProbeCache,
}

impl ObjectSource for Objects {
    fn singletons(&self, _: &str) -> Vec<Arc<StatefulSingleton>> {
        vec![]
    }
    fn guarded_pod(&self, namespace: &str, name: &str) -> Option<ObjectMeta> {
        let m = &self.pod.metadata;
        (m.namespace.as_deref() == Some(namespace) && m.name.as_deref() == Some(name))
            .then(|| m.clone())
    }
    fn probe(&self, uid: &str) -> Option<ProbeView> {
        self.probes.guard_view(uid, Instant::now())
    }
    fn probe_target(&self, namespace: &str, name: &str) -> Option<Found> {
        self.guarded_pod(namespace, name)?;
        Some(Found {
            probe: PoolProbe::Http(self.probe.clone()),
            pod: self.pod.clone(),
        })
    }
}

fn http(port: u16) -> HttpProbe {
    HttpProbe {
        port: port as i32,
        path: "/busy".into(),
        success_is_busy: true,
        timeout_seconds: 5,
        period_seconds: 10,
    }
}

fn state(pod: &Value, port: u16, probes: &ProbeCache, budget: Duration) -> WebhookState {
    let pod: Pod = serde_json::from_value(pod.clone()).unwrap();
    let objects = Objects {
        pod: Arc::new(pod),
        probe: http(port),
        probes: probes.clone(),
    };
    let settings = GuardSettings {
        probe_budget: budget,
        ..GuardSettings::default()
    };
    let io = GuardIo {
        reprober: Some(Arc::new(Reprober::new(probes.clone(), None, None))),
        held_since: None,
    };
    WebhookState {
        objects: Arc::new(objects),
        guard: GuardState::with_io(settings, Default::default(), io),
        ..common::state_with(Default::default())
    }
}

fn delete_of(pod: &Value) -> Value {
    let mut v = common::fixture_json(RS_DELETE);
    v["request"]["oldObject"] = pod.clone();
    v
}

async fn review(state: WebhookState, body: &Value) -> Value {
    let req = Request::builder()
        .method("POST")
        .uri(VALIDATE_PATH)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    let resp = router(state).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["response"].clone()
}

const SECOND: Duration = Duration::from_secs(2);

#[tokio::test]
async fn an_idle_pod_with_no_cached_result_is_allowed_after_a_probe() {
    // 503 with successIsBusy: idle. Nothing cached (e.g. the replica that does not lead).
    let t = target(21, 503, Duration::ZERO).await;
    let probes = ProbeCache::default();
    let p = pod(21);
    let r = review(state(&p, t.port, &probes, SECOND), &delete_of(&p)).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(t.hits.load(Ordering::SeqCst), 1, "probed once");
    // The result went into the shared cache, for the controllers and the next review.
    let v = probes.guard_view(UID, Instant::now()).expect("recorded");
    assert_eq!((v.state, v.stale), (BusyState::Idle, false));
}

#[tokio::test]
async fn a_busy_pod_with_no_cached_result_is_denied_after_a_probe() {
    let t = target(22, 200, Duration::ZERO).await;
    let probes = ProbeCache::default();
    let p = pod(22);
    let s = state(&p, t.port, &probes, SECOND);
    let r = review(s.clone(), &delete_of(&p)).await;
    assert_eq!(r["allowed"], false, "{r}");
    assert_eq!(r["status"]["code"], 403);
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(msg.contains("probe: busy"), "{msg}");
    assert_eq!(t.hits.load(Ordering::SeqCst), 1);
    assert!(s
        .metrics
        .render()
        .contains("kube_standby_busy_guard_decisions_total{decision=\"denied\""));
}

#[tokio::test]
async fn a_probe_that_hangs_is_busy_once_the_budget_is_spent() {
    let t = target(23, 503, Duration::from_secs(30)).await;
    let probes = ProbeCache::default();
    let p = pod(23);
    let r = review(
        state(&p, t.port, &probes, Duration::from_millis(100)),
        &delete_of(&p),
    )
    .await;
    assert_eq!(r["allowed"], false, "{r}");
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("did not answer within the 100ms budget")
            && msg.contains("--busy-guard-probe-budget"),
        "{msg}"
    );
    // The probe runs on past the budget (bounded by its own timeoutSeconds): in flight.
    assert_eq!(t.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_fresh_cached_result_is_used_without_probing() {
    let t = target(24, 200, Duration::ZERO).await;
    let probes = ProbeCache::default();
    probes.record_every(
        UID,
        Ok(BusyState::Idle),
        Instant::now(),
        Some(Duration::from_secs(10)),
    );
    let p = pod(24);
    let r = review(state(&p, t.port, &probes, SECOND), &delete_of(&p)).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(
        t.hits.load(Ordering::SeqCst),
        0,
        "no probe for a fresh result"
    );
    // Older than its period (10 s): probed again, and the probe (200: busy) wins.
    let probes = ProbeCache::default();
    probes.record_every(
        UID,
        Ok(BusyState::Idle),
        Instant::now() - Duration::from_secs(11),
        Some(Duration::from_secs(10)),
    );
    let r = review(state(&p, t.port, &probes, SECOND), &delete_of(&p)).await;
    assert_eq!(r["allowed"], false, "{r}");
    assert_eq!(t.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrent_reviews_of_a_pod_share_one_probe() {
    let t = target(25, 503, Duration::from_millis(300)).await;
    let probes = ProbeCache::default();
    let p = pod(25);
    let s = state(&p, t.port, &probes, SECOND);
    let body = delete_of(&p);
    let all = (0..6).map(|_| review(s.clone(), &body));
    let answers = futures::future::join_all(all).await;
    assert!(answers.iter().all(|r| r["allowed"] == true), "{answers:?}");
    assert_eq!(
        t.hits.load(Ordering::SeqCst),
        1,
        "one probe for six reviews"
    );
}

#[tokio::test]
async fn an_eviction_probes_the_cached_pod() {
    let t = target(26, 200, Duration::ZERO).await;
    let probes = ProbeCache::default();
    let mut p = pod(26);
    p["metadata"]["name"] = json!("web-866bcb66c8-r9mks");
    let r = review(
        state(&p, t.port, &probes, SECOND),
        &common::fixture_json(EVICTION),
    )
    .await;
    assert_eq!(r["allowed"], false, "{r}");
    assert_eq!(r["status"]["code"], 429);
    assert_eq!(t.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_pod_that_is_not_running_is_idle_without_a_probe() {
    let t = target(27, 200, Duration::ZERO).await;
    let probes = ProbeCache::default();
    let mut p = pod(27);
    p["status"]["phase"] = json!("Pending");
    let r = review(state(&p, t.port, &probes, SECOND), &delete_of(&p)).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(t.hits.load(Ordering::SeqCst), 0);
}

/// A mock API server: records each request (method, path, body) and answers the pod's
/// metadata.
/// (method, path, body) of each request the mock API saw.
type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

fn recording_client() -> (kube::Client, Seen) {
    let seen = Arc::new(Mutex::new(vec![]));
    let s = seen.clone();
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let s = s.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            s.lock()
                .unwrap()
                .push((parts.method.to_string(), parts.uri.path().to_string(), v));
            let answer = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": {"name": "web-866bcb66c8-r9mks", "namespace": "cap-ns"}});
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(
                        serde_json::to_vec(&answer).unwrap(),
                    ))
                    .unwrap(),
            )
        }
    });
    (kube::Client::new(svc, "default"), seen)
}

fn evicted_pod(annotations: &[(&str, &str)]) -> kube_standby::webhook::StaticObjects {
    let mut p = common::fixture_json(RS_DELETE)["request"]["oldObject"].clone();
    p["metadata"]["name"] = json!("web-866bcb66c8-r9mks");
    p["metadata"]["uid"] = json!("uid-r9mks");
    p["metadata"]["labels"]["kube-standby.dev/busy-guard"] = json!("true");
    p["metadata"]["annotations"]["paia.tech/busy"] = json!("true");
    for (k, v) in annotations {
        p["metadata"]["annotations"][*k] = json!(v);
    }
    kube_standby::webhook::StaticObjects::from_yaml(&serde_json::to_string(&p).unwrap(), "t")
        .unwrap()
}

fn held_since_state(
    objects: kube_standby::webhook::StaticObjects,
    client: kube::Client,
) -> WebhookState {
    let io = GuardIo {
        reprober: None,
        held_since: Some(HeldSince { client }),
    };
    WebhookState {
        guard: GuardState::with_io(GuardSettings::default(), Default::default(), io),
        ..common::state_with(objects)
    }
}

#[tokio::test]
async fn the_first_denied_eviction_writes_the_hold_start_once() {
    let (client, seen) = recording_client();
    let s = held_since_state(evicted_pod(&[]), client);
    let body = common::fixture_json(EVICTION);
    for _ in 0..3 {
        assert_eq!(review(s.clone(), &body).await["allowed"], false);
    }
    // The write is spawned off the answer path: wait for it.
    for _ in 0..100 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "written once: {seen:?}");
    let (method, path, patch) = &seen[0];
    assert_eq!(method, "PATCH");
    assert_eq!(path, "/api/v1/namespaces/cap-ns/pods/web-866bcb66c8-r9mks");
    assert_eq!(patch["metadata"]["uid"], "uid-r9mks");
    let at = patch["metadata"]["annotations"][HELD_SINCE_ANNOTATION]
        .as_str()
        .expect("held-since");
    let at: jiff::Timestamp = at.parse().expect("RFC 3339");
    let age = jiff::Timestamp::now().duration_since(at);
    assert!(age.as_secs() <= 5, "{at}");
}

#[tokio::test]
async fn a_pod_that_already_carries_a_hold_start_is_not_written_and_its_start_counts() {
    let (client, seen) = recording_client();
    // Held for 2 h by the other replica (or before a restart): the eviction passes at once.
    let two_hours_ago = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(5400))
        .unwrap()
        .to_string();
    let s = held_since_state(
        evicted_pod(&[(HELD_SINCE_ANNOTATION, &two_hours_ago)]),
        client.clone(),
    );
    let r = review(s, &common::fixture_json(EVICTION)).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(
        r["warnings"][0].as_str().unwrap().contains("max-hold"),
        "{r}"
    );
    // Held for 10 min elsewhere: denied, with 50 min left, and nothing written.
    let ten_minutes_ago = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(600))
        .unwrap()
        .to_string();
    let s = held_since_state(
        evicted_pod(&[(HELD_SINCE_ANNOTATION, &ten_minutes_ago)]),
        client,
    );
    let r = review(s, &common::fixture_json(EVICTION)).await;
    assert_eq!(r["allowed"], false, "{r}");
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("at most 3000s more") || msg.contains("at most 2999s more"),
        "{msg}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(seen.lock().unwrap().is_empty(), "nothing written");
}
