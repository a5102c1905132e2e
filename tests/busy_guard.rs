//! The busy guard's `/validate/pods` driven through the Router with `oneshot`: golden pod
//! DELETE and `pods/eviction` bodies from a real kube-apiserver (tests/data/admission), made
//! guarded and busy where a case needs it, and bad input.
mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kube_standby::webhook::guard::GuardSettings;
use kube_standby::webhook::{router, GuardState, StaticObjects, WebhookState, VALIDATE_PATH};
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

const RS_DELETE: &str = "pod-delete-by-replicaset-controller.json";
const USER_DELETE: &str = "pod-delete-by-user.json";
const FORCE_DELETE: &str = "pod-delete-busy-force.json";
const EVICTION: &str = "pod-eviction.json";

async fn send(state: WebhookState, body: Vec<u8>) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("POST")
        .uri(VALIDATE_PATH)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = router(state).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
    (status, v)
}

async fn review(state: WebhookState, body: &Value) -> Value {
    let (status, v) = send(state, serde_json::to_vec(body).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["response"]["uid"], body["request"]["uid"], "uid echoed");
    assert!(
        v["response"].get("patch").is_none(),
        "a validating answer never patches"
    );
    v["response"].clone()
}

fn state() -> WebhookState {
    common::state_with(StaticObjects::default())
}

fn state_with(objects: StaticObjects, settings: GuardSettings) -> WebhookState {
    WebhookState {
        guard: GuardState::new(settings),
        ..common::state_with(objects)
    }
}

/// Put the guard label and the given annotations on a pod object.
fn guard_pod(pod: &mut Value, annotations: &[(&str, &str)]) {
    pod["metadata"]["labels"]["kube-standby.dev/busy-guard"] = json!("true");
    for (k, v) in annotations {
        pod["metadata"]["annotations"][*k] = json!(v);
    }
}

/// A DELETE fixture whose `oldObject` is guarded and carries `annotations`.
fn guarded_delete(fixture: &str, annotations: &[(&str, &str)]) -> Value {
    let mut v = common::fixture_json(fixture);
    guard_pod(&mut v["request"]["oldObject"], annotations);
    v
}

const BUSY: &[(&str, &str)] = &[("paia.tech/busy", "true")];

#[tokio::test]
async fn the_fixtures_are_what_the_guard_expects() {
    let rs = common::fixture_json(RS_DELETE);
    assert_eq!(rs["request"]["operation"], "DELETE");
    assert_eq!(
        rs["request"]["userInfo"]["username"],
        "system:serviceaccount:kube-system:replicaset-controller"
    );
    assert!(rs["request"]["object"].is_null());
    assert_eq!(rs["request"]["oldObject"]["kind"], "Pod");
    let ev = common::fixture_json(EVICTION);
    assert_eq!(ev["request"]["subResource"], "eviction");
    assert_eq!(ev["request"]["kind"]["kind"], "Eviction");
    assert!(ev["request"]["oldObject"].is_null());
}

#[tokio::test]
async fn unguarded_pods_pass_as_the_api_server_sent_them() {
    for f in [RS_DELETE, USER_DELETE, FORCE_DELETE, EVICTION] {
        let r = review(state(), &common::fixture_json(f)).await;
        assert_eq!(r["allowed"], true, "{f}: {r}");
    }
}

#[tokio::test]
async fn a_busy_guarded_pod_is_not_deleted_by_the_replicaset_controller() {
    let s = state();
    let body = guarded_delete(RS_DELETE, BUSY);
    let r = review(s.clone(), &body).await;
    assert_eq!(r["allowed"], false, "{r}");
    assert_eq!(r["status"]["code"], 403);
    assert_eq!(r["status"]["reason"], "Forbidden");
    assert_eq!(
        r["status"]["message"],
        "pod web-866bcb66c8-wghxn is busy (paia.tech/busy=true): kube-standby holds its deletion until it is idle"
    );
    let text = s.metrics.render();
    assert!(
        text.contains(r#"kube_standby_busy_guard_decisions_total{decision="denied",requester_class="guarded",operation="delete"} 1"#),
        "{text}"
    );
    // The hold shows in /debug/state.
    let held = s.guard.held();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].namespace.as_str(), held[0].name.as_str()),
        ("cap-ns", "web-866bcb66c8-wghxn")
    );
    let debug = debug_state(s.clone()).await;
    assert_eq!(
        debug["busy_guard/held_pods"][0]["name"], "web-866bcb66c8-wghxn",
        "{debug}"
    );
    // Once idle the retried delete goes through and the hold ends.
    let r = review(
        s.clone(),
        &guarded_delete(RS_DELETE, &[("paia.tech/busy", "false")]),
    )
    .await;
    assert_eq!(r["allowed"], true);
    assert!(s.guard.held().is_empty());
    assert!(debug_state(s).await.get("busy_guard/held_pods").is_none());
}

async fn debug_state(s: WebhookState) -> Value {
    let req = Request::builder()
        .uri("/debug/state")
        .body(Body::empty())
        .unwrap();
    let resp = kube_standby::webhook::ops_router(s)
        .oneshot(req)
        .await
        .unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn the_controller_manager_without_service_account_credentials_is_guarded_too() {
    let mut body = guarded_delete(RS_DELETE, BUSY);
    body["request"]["userInfo"] = json!({"username": "system:kube-controller-manager"});
    assert_eq!(review(state(), &body).await["allowed"], false);
    // A group listed in the requesters matches as well.
    let settings = GuardSettings {
        requesters: vec!["system:serviceaccounts:kube-system".into()],
        ..GuardSettings::default()
    };
    let body = guarded_delete(RS_DELETE, BUSY);
    let s = state_with(StaticObjects::default(), settings);
    assert_eq!(review(s, &body).await["allowed"], false);
}

#[tokio::test]
async fn idle_or_unannotated_guarded_pods_are_deleted() {
    for ann in [&[("paia.tech/busy", "false")][..], &[][..]] {
        let r = review(state(), &guarded_delete(RS_DELETE, ann)).await;
        assert_eq!(r["allowed"], true, "{ann:?}: {r}");
    }
}

#[tokio::test]
async fn the_custom_busy_annotation_is_read() {
    let ann = [
        ("kube-standby.dev/busy-annotation", "example.com/working"),
        ("example.com/working", "TRUE"),
    ];
    let r = review(state(), &guarded_delete(RS_DELETE, &ann)).await;
    assert_eq!(r["allowed"], false);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("example.com/working=TRUE"),
        "{r}"
    );
}

#[tokio::test]
async fn humans_and_force_deletes_are_never_held() {
    for f in [USER_DELETE, FORCE_DELETE] {
        let s = state();
        let r = review(s.clone(), &guarded_delete(f, BUSY)).await;
        assert_eq!(r["allowed"], true, "{f}: {r}");
        let text = s.metrics.render();
        assert!(
            text.contains(r#"kube_standby_busy_guard_decisions_total{decision="allowed_requester",requester_class="other",operation="delete"} 1"#),
            "{text}"
        );
        assert!(s.guard.held().is_empty());
    }
}

/// The eviction fixture's pod, as the cache would hold it.
fn eviction_pod(annotations: &[(&str, &str)]) -> StaticObjects {
    let mut pod = common::fixture_json(RS_DELETE)["request"]["oldObject"].clone();
    pod["metadata"]["name"] = json!("web-866bcb66c8-r9mks");
    pod["metadata"]["uid"] = json!("uid-r9mks");
    guard_pod(&mut pod, annotations);
    StaticObjects::from_yaml(&serde_json::to_string(&pod).unwrap(), "test").unwrap()
}

#[tokio::test]
async fn eviction_of_a_busy_pod_answers_like_a_disruption_budget() {
    let s = state_with(eviction_pod(BUSY), GuardSettings::default());
    let body = common::fixture_json(EVICTION);
    let r = review(s.clone(), &body).await;
    assert_eq!(r["allowed"], false, "{r}");
    assert_eq!(r["status"]["code"], 429);
    assert_eq!(r["status"]["reason"], "TooManyRequests");
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("web-866bcb66c8-r9mks") && msg.contains("busy") && msg.contains("3600s"),
        "{msg}"
    );
    let held = s.guard.held();
    assert_eq!((held.len(), held[0].last_operation), (1, "eviction"));
    assert!(s.metrics.render().contains(
        r#"kube_standby_busy_guard_decisions_total{decision="denied",requester_class="other",operation="eviction"} 1"#
    ));
    // A dry run is answered the same way but starts no hold.
    let s = state_with(eviction_pod(BUSY), GuardSettings::default());
    let mut dry = body.clone();
    dry["request"]["dryRun"] = json!(true);
    assert_eq!(review(s.clone(), &dry).await["allowed"], false);
    assert!(s.guard.held().is_empty());
}

#[tokio::test]
async fn eviction_of_an_idle_or_unknown_pod_is_accepted() {
    let idle = state_with(
        eviction_pod(&[("paia.tech/busy", "false")]),
        GuardSettings::default(),
    );
    assert_eq!(
        review(idle, &common::fixture_json(EVICTION)).await["allowed"],
        true
    );
    // Not in the cache: allowed (the guard only holds what it can judge).
    let mut other = common::fixture_json(EVICTION);
    other["request"]["name"] = json!("somebody-else");
    let s = state_with(eviction_pod(BUSY), GuardSettings::default());
    assert_eq!(review(s, &other).await["allowed"], true);
}

#[tokio::test]
async fn past_the_max_hold_an_eviction_passes_with_a_warning() {
    let settings = GuardSettings {
        max_hold: Duration::from_millis(50),
        ..GuardSettings::default()
    };
    let s = state_with(eviction_pod(BUSY), settings);
    let body = common::fixture_json(EVICTION);
    assert_eq!(review(s.clone(), &body).await["allowed"], false);
    tokio::time::sleep(Duration::from_millis(80)).await;
    let r = review(s.clone(), &body).await;
    assert_eq!(r["allowed"], true, "{r}");
    let w = r["warnings"][0].as_str().unwrap();
    assert!(
        w.contains("web-866bcb66c8-r9mks") && w.contains("max-hold"),
        "{w}"
    );
    assert!(s
        .metrics
        .render()
        .contains(r#"decision="allowed_hold_expired""#));
    // A DELETE by a guarded requester is still held: the max hold is for evictions only.
    let mut del = guarded_delete(RS_DELETE, BUSY);
    del["request"]["oldObject"]["metadata"]["uid"] = json!("uid-r9mks");
    assert_eq!(review(s, &del).await["allowed"], false);
}

#[tokio::test]
async fn other_requests_are_allowed_untouched() {
    for f in common::FIXTURES {
        let body = common::fixture_json(f);
        let r = review(state(), &body).await;
        assert_eq!(r["allowed"], true, "{f}");
    }
    // A DELETE of something else than a pod, and a pod DELETE without oldObject.
    let mut cm = common::fixture_json(RS_DELETE);
    cm["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    cm["request"]["resource"] = json!({"group": "", "version": "v1", "resource": "configmaps"});
    cm["request"]["oldObject"] = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"kube-standby.dev/busy-guard": "true"}, "annotations": {"paia.tech/busy": "true"}}});
    assert_eq!(review(state(), &cm).await["allowed"], true);
    let mut none = guarded_delete(RS_DELETE, BUSY);
    none["request"]["oldObject"] = Value::Null;
    assert_eq!(review(state(), &none).await["allowed"], true);
    // No metric for what the guard does not judge.
    let s = state();
    review(s.clone(), &cm).await;
    assert!(!s
        .metrics
        .render()
        .contains("kube_standby_busy_guard_decisions_total{"));
}

#[tokio::test]
async fn a_pod_that_is_not_a_typed_pod_is_still_judged_by_its_metadata() {
    // A container without a name does not parse as a typed Pod: the slow path reads the
    // metadata all the same.
    let mut body = guarded_delete(RS_DELETE, BUSY);
    body["request"]["oldObject"]["spec"]["containers"] = json!([{"image": 7}]);
    assert_eq!(review(state(), &body).await["allowed"], false);
}

#[tokio::test]
async fn bad_input_gets_400_and_oversized_bodies_413() {
    for (body, want) in [
        (b"{not json".to_vec(), "not valid JSON"),
        (
            b"{\"kind\":\"Pod\",\"apiVersion\":\"v1\"}".to_vec(),
            "AdmissionReview",
        ),
        (
            b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\"}".to_vec(),
            "no request",
        ),
    ] {
        let (status, v) = send(state(), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"].as_str().unwrap().contains(want), "{v}");
    }
    let big = vec![b' '; kube_standby::webhook::limits::DEFAULT_MAX_BODY_BYTES + 1];
    let (status, _) = send(state(), big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// Any field of a real body replaced by any JSON: 200 or 400, never a panic or a 5xx.
    #[test]
    fn never_panics_on_mangled_bodies(
        fixture in prop::sample::select(vec![RS_DELETE, EVICTION, FORCE_DELETE]),
        field in prop::sample::select(vec!["operation", "userInfo", "oldObject", "object", "name", "namespace", "kind", "resource", "subResource", "dryRun", "uid"]),
        value in arb_json(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut body = guarded_delete(fixture, BUSY);
        body["request"][field] = value;
        let s = state_with(eviction_pod(BUSY), GuardSettings::default());
        let (status, _) = rt.block_on(send(s, serde_json::to_vec(&body).unwrap()));
        prop_assert!(status == StatusCode::OK || status == StatusCode::BAD_REQUEST, "{status}");
    }
}

#[test]
fn guard_state_is_shared_by_clones() {
    let s = state();
    let t = s.clone();
    assert!(Arc::ptr_eq(&s.guard, &t.guard));
}

/// Issue 18: what the guard holds reaches the controllers of the process (the pools'
/// `status.heldPods`) through the shared registry, and leaves it once a removal passes.
#[tokio::test]
async fn a_hold_is_shared_with_the_controllers_and_ends_when_the_pod_may_go() {
    let held = kube_standby::state::HeldPods::default();
    let s = WebhookState {
        guard: GuardState::sharing(GuardSettings::default(), held.clone()),
        ..common::state_with(StaticObjects::default())
    };
    let mut changes = held.subscribe();
    let r = review(s.clone(), &guarded_delete(RS_DELETE, BUSY)).await;
    assert_eq!(r["allowed"], false, "{r}");
    assert_eq!(
        held.in_namespace("cap-ns"),
        ["web-866bcb66c8-wghxn".to_string()].into()
    );
    let idle = &[("paia.tech/busy", "false")];
    let r = review(s.clone(), &guarded_delete(RS_DELETE, idle)).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(held.in_namespace("cap-ns").is_empty());
    let pod = ("cap-ns".to_string(), "web-866bcb66c8-wghxn".to_string());
    assert_eq!(changes.try_recv().ok(), Some(pod.clone()), "held");
    assert_eq!(changes.try_recv().ok(), Some(pod), "let go");
}
