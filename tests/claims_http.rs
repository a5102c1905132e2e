//! `GET /v1/assignment` and `POST /v1/claims` over real TLS (127.0.0.1, a verifying
//! client), with the TokenReview, SubjectAccessReview, claim writes and caches faked:
//! 401/403/400, another pod's assignment, idempotent retries, long-polls woken by a change.
mod common;

#[path = "support/tls_server.rs"]
mod tls_server;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube_standby::api::claim::{
    Assignment, BoundPod, ClaimPhase, HotStandbyClaim, HotStandbyClaimStatus,
};
use kube_standby::certs;
use kube_standby::webhook::assignment::{AssignmentLookup, AssignmentService};
use kube_standby::webhook::claims::{
    Access, Authorizer, Caller, ClaimAnswer, ClaimLookup, ClaimWriter, ClaimsService, WriteError,
};
use kube_standby::webhook::release::{BoxFut, PodIdentity, PodTokens, ReviewError, TokenReviewer};
use kube_standby::webhook::StaticObjects;
use serde_json::{json, Value};

struct PodTokenTable(HashMap<String, PodIdentity>);

impl TokenReviewer for PodTokenTable {
    fn review<'a>(&'a self, token: &'a str) -> BoxFut<'a, Result<PodIdentity, ReviewError>> {
        Box::pin(async move {
            self.0
                .get(token)
                .cloned()
                .ok_or_else(|| ReviewError::Unauthenticated("unknown token".into()))
        })
    }
}

#[derive(Default)]
struct Assignments(
    Mutex<HashMap<(String, String, String), Assignment>>,
    Arc<tokio::sync::Notify>,
);

impl Assignments {
    fn set(&self, pod: &str, uid: &str, a: Option<Assignment>) {
        let key = ("prod".to_string(), pod.to_string(), uid.to_string());
        let mut m = self.0.lock().unwrap();
        match a {
            Some(a) => m.insert(key, a),
            None => m.remove(&key),
        };
        drop(m);
        self.1.notify_waiters();
    }
}

impl AssignmentLookup for Assignments {
    fn assignment(&self, ns: &str, pod: &str, uid: &str) -> Option<Assignment> {
        self.0
            .lock()
            .unwrap()
            .get(&(ns.to_string(), pod.to_string(), uid.to_string()))
            .cloned()
    }
    fn changes(&self, _ns: &str) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.1.clone())
    }
}

#[derive(Default)]
struct Authz {
    callers: HashMap<String, Caller>,
    allowed: HashSet<(String, String)>,
    authentications: AtomicUsize,
    reviews: AtomicUsize,
}

impl Authorizer for Authz {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFut<'a, Result<Caller, ReviewError>> {
        Box::pin(async move {
            self.authentications.fetch_add(1, Ordering::SeqCst);
            self.callers
                .get(token)
                .cloned()
                .ok_or_else(|| ReviewError::Unauthenticated("unknown token".into()))
        })
    }
    fn can_create<'a>(
        &'a self,
        caller: &'a Caller,
        namespace: &'a str,
    ) -> BoxFut<'a, Result<Access, ReviewError>> {
        Box::pin(async move {
            self.reviews.fetch_add(1, Ordering::SeqCst);
            Ok(
                if self
                    .allowed
                    .contains(&(caller.username.clone(), namespace.to_string()))
                {
                    Access::Allowed
                } else {
                    Access::Denied("RBAC: no rule".into())
                },
            )
        })
    }
}

/// The API and the claim cache in one: creates land in the cache at once; with `bind`,
/// a "leader" binds each new claim right after.
#[derive(Default)]
struct Claims {
    objects: Mutex<HashMap<(String, String), HotStandbyClaim>>,
    changed: Arc<tokio::sync::Notify>,
    creates: AtomicUsize,
    attempts: AtomicUsize,
    bind: bool,
}

fn bound(mut c: HotStandbyClaim, pod: &str) -> HotStandbyClaim {
    c.status = Some(HotStandbyClaimStatus {
        phase: ClaimPhase::Bound,
        pod: Some(BoundPod {
            name: pod.into(),
            uid: format!("uid-{pod}"),
            ip: Some("10.0.0.7".into()),
            node: Some("node-a".into()),
        }),
        bound_at: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        waited_ms: Some(3),
        ..Default::default()
    });
    c
}

impl Claims {
    fn update(&self, ns: &str, name: &str, f: impl FnOnce(HotStandbyClaim) -> HotStandbyClaim) {
        let mut m = self.objects.lock().unwrap();
        let key = (ns.to_string(), name.to_string());
        let c = m.remove(&key).expect("claim exists");
        m.insert(key, f(c));
        drop(m);
        self.changed.notify_waiters();
    }
}

impl ClaimWriter for Claims {
    fn create<'a>(
        &'a self,
        claim: &'a HotStandbyClaim,
    ) -> BoxFut<'a, Result<HotStandbyClaim, WriteError>> {
        Box::pin(async move {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            let key = (
                claim.metadata.namespace.clone().unwrap(),
                claim.metadata.name.clone().unwrap(),
            );
            let mut m = self.objects.lock().unwrap();
            if m.contains_key(&key) {
                return Err(WriteError::AlreadyExists);
            }
            let n = self.creates.fetch_add(1, Ordering::SeqCst);
            let mut c = claim.clone();
            c.metadata.uid = Some(format!("claim-uid-{n}"));
            m.insert(key.clone(), c.clone());
            drop(m);
            if self.bind {
                self.update(&key.0, &key.1, |c| bound(c, &format!("pod-{n}")));
            } else {
                self.changed.notify_waiters();
            }
            Ok(c)
        })
    }
    fn get<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<HotStandbyClaim>, WriteError>> {
        Box::pin(async move {
            Ok(self
                .objects
                .lock()
                .unwrap()
                .get(&(ns.to_string(), name.to_string()))
                .cloned())
        })
    }
}

impl ClaimLookup for Claims {
    fn claim(&self, ns: &str, name: &str) -> Option<Arc<HotStandbyClaim>> {
        self.objects
            .lock()
            .unwrap()
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
            .map(Arc::new)
    }
    fn changes(&self, _ns: &str) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.changed.clone())
    }
}

struct Operator {
    addr: SocketAddr,
    ca: String,
    assignments: Arc<Assignments>,
    claims: Arc<Claims>,
    authz: Arc<Authz>,
}

fn pod(name: &str, uid: &str) -> PodIdentity {
    PodIdentity {
        namespace: "prod".into(),
        name: name.into(),
        uid: uid.into(),
    }
}

async fn start(bind: bool) -> Operator {
    let bundle = certs::generate(&certs::default_sans()).unwrap();
    let tokens = Arc::new(PodTokens::new(Arc::new(PodTokenTable(HashMap::from([
        ("tok-a".to_string(), pod("pod-a", "uid-a")),
        ("tok-b".to_string(), pod("pod-b", "uid-b")),
    ])))));
    let assignments = Arc::new(Assignments::default());
    let claims = Arc::new(Claims {
        bind,
        ..Default::default()
    });
    let authz = Arc::new(Authz {
        callers: HashMap::from([
            (
                "tok-alice".to_string(),
                Caller {
                    username: "alice".into(),
                    ..Default::default()
                },
            ),
            (
                "tok-bob".to_string(),
                Caller {
                    username: "bob".into(),
                    ..Default::default()
                },
            ),
        ]),
        allowed: HashSet::from([("alice".to_string(), "prod".to_string())]),
        ..Default::default()
    });
    let mut state = common::state_with(StaticObjects::default());
    let mut svc = AssignmentService::new(tokens, assignments.clone());
    svc.poll_every = Duration::from_secs(30); // only a notification wakes it in time
    state.assignment = Some(Arc::new(svc));
    let mut svc = ClaimsService::new(authz.clone(), claims.clone(), claims.clone());
    svc.poll_every = Duration::from_secs(30);
    state.claims = Some(Arc::new(svc));
    let addr = tls_server::serve(state, &bundle).await;
    Operator {
        addr,
        ca: bundle.ca_pem,
        assignments,
        claims,
        authz,
    }
}

impl Operator {
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Option<String>, Value) {
        let mut req = common::client(&self.ca, self.addr).get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, etag, body)
    }

    async fn post(&self, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        let mut req = common::client(&self.ca, self.addr)
            .post(self.url("/v1/claims"))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }
}

fn assignment(claim: &str) -> Assignment {
    Assignment {
        claim: claim.into(),
        namespace: "prod".into(),
        parameters: json!({"task": claim}),
        bound_at: None,
    }
}

fn request(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "namespace": "prod", "name": name,
        "poolRef": {"kind": "HotStandbyDeployment", "name": "warm"},
        "parameters": {"user": "u1"}, "waitSeconds": 10
    }))
    .unwrap()
}

fn assert_error(body: &Value, status: u16, contains: &str) {
    assert_eq!(body["status"], status, "{body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(msg.contains(contains), "{body}");
}

#[tokio::test]
async fn assignment_needs_a_valid_pod_token() {
    let op = start(false).await;
    let (s, _, b) = op.get("/v1/assignment?wait=0", None).await;
    assert_eq!(s, 401);
    assert_error(&b, 401, "missing bearer token");
    let (s, _, b) = op.get("/v1/assignment?wait=0", Some("nope")).await;
    assert_eq!(s, 401);
    assert_error(&b, 401, "unknown token");
}

#[tokio::test]
async fn a_pod_cannot_read_another_pods_assignment() {
    let op = start(false).await;
    op.assignments
        .set("pod-b", "uid-b", Some(assignment("c-b")));
    let (s, _, b) = op
        .get("/v1/assignment?wait=0&pod=pod-b", Some("tok-a"))
        .await;
    assert_eq!(s, 403);
    assert_error(&b, 403, "cannot read the assignment of \"pod-b\"");
    let (s, _, b) = op
        .get("/v1/assignment?wait=0&uid=uid-b", Some("tok-a"))
        .await;
    assert_eq!(s, 403);
    assert_error(&b, 403, "not uid uid-b");
    // Its own, named explicitly: fine (not claimed).
    let (s, _, _) = op
        .get("/v1/assignment?wait=0&pod=pod-a&uid=uid-a", Some("tok-a"))
        .await;
    assert_eq!(s, 204);
}

#[tokio::test]
async fn each_pod_gets_its_own_assignment_only() {
    let op = start(false).await;
    op.assignments
        .set("pod-a", "uid-a", Some(assignment("c-a")));
    let (s, etag, b) = op.get("/v1/assignment?wait=0", Some("tok-a")).await;
    assert_eq!(s, 200);
    assert_eq!(b, serde_json::to_value(assignment("c-a")).unwrap());
    assert!(etag.is_some_and(|t| t.len() == 18), "a 16-digit quoted tag");
    let (s, etag, b) = op.get("/v1/assignment?wait=0", Some("tok-b")).await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(etag.as_deref(), Some("\"none\""));
}

#[tokio::test]
async fn the_long_poll_wakes_when_the_pod_is_claimed_and_when_it_changes() {
    let op = start(false).await;
    let a = op.assignments.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.set("pod-a", "uid-a", Some(assignment("c1")));
    });
    let started = Instant::now();
    let (s, etag, b) = op.get("/v1/assignment?wait=20", Some("tok-a")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["claim"], "c1");
    // Woken by the change, not by the 30 s poll or the 20 s timeout.
    assert!(started.elapsed() < Duration::from_secs(10));
    let tag = etag.unwrap();
    // Nothing changes: the long-poll with `since` runs out and answers the same.
    let path = format!("/v1/assignment?wait=1&since={}", tag.trim_matches('"'));
    let (s, etag2, _) = op.get(&path, Some("tok-a")).await;
    assert_eq!((s, etag2.as_deref()), (200, Some(tag.as_str())));
    // The claim goes: a waiting `since` request answers 204 at once.
    let a = op.assignments.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.set("pod-a", "uid-a", None);
    });
    let started = Instant::now();
    let path = format!("/v1/assignment?wait=20&since={tag}");
    let (s, _, _) = op.get(&path, Some("tok-a")).await;
    assert_eq!(s, 204);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn claims_need_a_known_caller() {
    let op = start(true).await;
    let (s, b) = op.post(None, &request("c1")).await;
    assert_eq!(s, 401);
    assert_error(&b, 401, "missing bearer token");
    let (s, b) = op.post(Some("tok-mallory"), &request("c1")).await;
    assert_eq!(s, 401);
    assert_error(&b, 401, "unknown token");
    assert_eq!(op.claims.attempts.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn claims_need_the_right_to_create_claims_in_the_namespace() {
    let op = start(true).await;
    let (s, b) = op.post(Some("tok-bob"), &request("c1")).await;
    assert_eq!(s, 403);
    assert_error(
        &b,
        403,
        "bob may not create hotstandbyclaims.apps.paia.tech in namespace prod: RBAC: no rule",
    );
    // Alice may in prod, not elsewhere.
    let other = serde_json::to_vec(&json!({
        "namespace": "dev", "name": "c1", "poolRef": {"kind": "hsd", "name": "warm"}
    }))
    .unwrap();
    let (s, _) = op.post(Some("tok-alice"), &other).await;
    assert_eq!(s, 403);
    assert_eq!(op.claims.attempts.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bad_bodies_are_400_and_write_nothing() {
    let op = start(true).await;
    let big = serde_json::to_vec(&json!({
        "namespace": "prod", "name": "c1", "poolRef": {"kind": "hsd", "name": "warm"},
        "parameters": {"blob": "x".repeat(17 * 1024)}
    }))
    .unwrap();
    let cases: [(&[u8], &str); 4] = [
        (b"{not json", "not a claim request"),
        (br#"{"namespace": "prod", "name": "c1"}"#, "poolRef"),
        (
            br#"{"namespace": "prod", "poolRef": {"kind": "hsd", "name": "w"}}"#,
            "name",
        ),
        (&big, "at most 16384"),
    ];
    for (body, want) in cases {
        let (s, b) = op.post(Some("tok-alice"), body).await;
        assert_eq!(s, 400, "{b}");
        assert_error(&b, 400, want);
    }
    assert_eq!(op.claims.attempts.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_retry_with_the_same_name_returns_the_same_binding() {
    let op = start(true).await;
    let (s, first) = op.post(Some("tok-alice"), &request("job-1")).await;
    assert_eq!(s, 200, "{first}");
    let answer: ClaimAnswer = serde_json::from_value(first.clone()).unwrap();
    assert_eq!(answer.phase, ClaimPhase::Bound);
    assert_eq!(answer.pod.as_ref().unwrap().name, "pod-0");
    assert_eq!(answer.pod.as_ref().unwrap().ip.as_deref(), Some("10.0.0.7"));
    let (s, again) = op.post(Some("tok-alice"), &request("job-1")).await;
    assert_eq!(s, 200);
    assert_eq!(again, first, "the same claim, the same pod");
    assert_eq!(
        op.claims.creates.load(Ordering::SeqCst),
        1,
        "one claim made"
    );
    // The caller's token was reviewed once (cached), so was its right to create.
    assert_eq!(op.authz.authentications.load(Ordering::SeqCst), 1);
    assert_eq!(op.authz.reviews.load(Ordering::SeqCst), 1);
    // The same name with another spec: a clear 409.
    let other = serde_json::to_vec(&json!({
        "namespace": "prod", "name": "job-1", "poolRef": {"kind": "HotStandbyDeployment", "name": "other"}
    }))
    .unwrap();
    let (s, b) = op.post(Some("tok-alice"), &other).await;
    assert_eq!(s, 409);
    assert_error(&b, 409, "exists with another spec");
}

#[tokio::test]
async fn the_answer_waits_for_the_binding() {
    let op = start(false).await;
    let claims = op.claims.clone();
    tokio::spawn(async move {
        // The "leader" binds a little later.
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if claims.claim("prod", "late").is_some() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        claims.update("prod", "late", |c| bound(c, "warm-xyz"));
    });
    let started = Instant::now();
    let (s, b) = op.post(Some("tok-alice"), &request("late")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["phase"], "Bound");
    assert_eq!(b["pod"]["name"], "warm-xyz");
    assert_eq!(b["pod"]["node"], "node-a");
    assert_eq!(b["name"], "late");
    assert_eq!(b["namespace"], "prod");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "woken by the change"
    );
}

#[tokio::test]
async fn a_failed_claim_is_answered_with_its_reason() {
    let op = start(false).await;
    let claims = op.claims.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if claims.claim("prod", "starved").is_some() {
                break;
            }
        }
        claims.update("prod", "starved", |mut c| {
            c.status = Some(HotStandbyClaimStatus {
                phase: ClaimPhase::Failed,
                conditions: vec![Condition {
                    type_: "Bound".into(),
                    status: "False".into(),
                    reason: "PoolExhausted".into(),
                    message: "no idle pod within 10s".into(),
                    last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
                    observed_generation: None,
                }],
                ..Default::default()
            });
            c
        });
    });
    let (s, b) = op.post(Some("tok-alice"), &request("starved")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["phase"], "Failed");
    assert_eq!(b["reason"], "PoolExhausted");
    assert_eq!(b["message"], "no idle pod within 10s");
    assert!(b.get("pod").is_none());
}

#[tokio::test]
async fn a_claim_still_pending_after_its_wait_is_answered_pending() {
    let op = start(false).await;
    let body = serde_json::to_vec(&json!({
        "namespace": "prod", "name": "slow", "poolRef": {"kind": "hsd", "name": "warm"},
        "waitSeconds": 0
    }))
    .unwrap();
    let started = Instant::now();
    let (s, b) = op.post(Some("tok-alice"), &body).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["phase"], "Pending");
    // waitSeconds 0 + the 5 s grace for the leader to write the outcome.
    assert!(started.elapsed() >= Duration::from_secs(4));
}

/// The claim agent as a real process against this operator.
fn claim_agent(
    op: &Operator,
    dir: &std::path::Path,
    token_text: &str,
    extra: &[&str],
) -> std::process::Child {
    let token = dir.join("token");
    std::fs::write(&token, format!("{token_text}\n")).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_kube-standby"))
        .arg("agent")
        .arg("--assignment-file")
        .arg(dir.join("assignment.json"))
        .args(["--poll-seconds", "30"])
        .args(extra)
        .arg("--token-file")
        .arg(&token)
        .env(
            "KUBE_STANDBY_OPERATOR_URL",
            format!("https://localhost:{}", op.addr.port()),
        )
        .env("KUBE_STANDBY_CA", &op.ca)
        .env("POD_UID", "uid-a")
        .env_remove("KUBE_STANDBY_GIVE_UP_SECONDS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `f` holds (up to 10 s).
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never: {what}");
}

fn read_json(p: &std::path::Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

#[tokio::test]
async fn the_claim_agent_keeps_the_assignment_file_current() {
    let op = start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("assignment.json");
    let mut agent = claim_agent(&op, dir.path(), "tok-a", &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!file.exists(), "not claimed: no file");
    op.assignments.set("pod-a", "uid-a", Some(assignment("c1")));
    eventually("the file names c1", || {
        read_json(&file).is_some_and(|v| v["claim"] == "c1" && v["parameters"]["task"] == "c1")
    })
    .await;
    // Another pod's claim never reaches this file.
    op.assignments
        .set("pod-b", "uid-b", Some(assignment("c-b")));
    // The parameters change: the file follows (a whole file each time, never a torn one).
    let mut changed = assignment("c1");
    changed.parameters = json!({"task": "second"});
    op.assignments.set("pod-a", "uid-a", Some(changed));
    eventually("the file follows the change", || {
        read_json(&file).is_some_and(|v| v["parameters"]["task"] == "second")
    })
    .await;
    // The claim goes: the file goes; the agent stays up (a sidecar).
    op.assignments.set("pod-a", "uid-a", None);
    eventually("the file is removed", || !file.exists()).await;
    assert!(agent.try_wait().unwrap().is_none(), "still running");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // SIGTERM ends it with 0.
    term(&agent);
    let status = wait_exit(&mut agent).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_claim_agent_of_a_job_pod_exits_once_assigned() {
    let op = start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("assignment.json");
    let mut agent = claim_agent(&op, dir.path(), "tok-a", &["--exit-when-assigned"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(agent.try_wait().unwrap().is_none(), "waits for a claim");
    op.assignments
        .set("pod-a", "uid-a", Some(assignment("job-claim")));
    let status = wait_exit(&mut agent).await;
    assert_eq!(status.code(), Some(0));
    assert_eq!(read_json(&file).unwrap()["claim"], "job-claim");
}

#[tokio::test]
async fn the_claim_agent_retries_while_the_operator_refuses_it() {
    let op = start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("assignment.json");
    // A token the operator does not know: 401s, retried with backoff, no file, no exit.
    let token = dir.path().join("token");
    let mut agent = claim_agent(&op, dir.path(), "tok-unknown", &[]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(agent.try_wait().unwrap().is_none(), "keeps retrying");
    assert!(!file.exists());
    // The token becomes valid (projected tokens rotate): the next try succeeds.
    op.assignments
        .set("pod-a", "uid-a", Some(assignment("late")));
    std::fs::write(&token, "tok-a\n").unwrap();
    eventually("written after the retries", || {
        read_json(&file).is_some_and(|v| v["claim"] == "late")
    })
    .await;
    let _ = agent.kill();
    let _ = agent.wait();
}

fn term(child: &std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

async fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    for _ in 0..500 {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    panic!("the agent did not exit");
}
