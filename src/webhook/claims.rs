//! `POST /v1/claims`: the fast path for callers. A caller asks for a warm pod of a pool and
//! gets the binding in the answer.
//!
//! Steps: the caller's bearer token is authenticated (a TokenReview with the API server's
//! own audience: a user or any service account), then authorised (a SubjectAccessReview:
//! may it `create hotstandbyclaims.apps.paia.tech` in the body's namespace?); both results
//! are cached for [`AUTH_CACHE_TTL`] per token (and namespace). The body is read within
//! its own [`AdmissionGate`] limits and parsed; the `HotStandbyClaim` is created (field
//! manager `kube-standby`) so `kubectl get hsc` shows every claim; then the request waits
//! until the claim's phase is no longer Pending, watching this replica's claim cache.
//!
//! Why write the claim and watch it, rather than forward to the leader: any replica can
//! write a claim and every replica keeps the claim cache, so the request needs no
//! knowledge of who leads, no hop and no second TLS identity; the leader binds the claim
//! as soon as its own watch shows it, whichever replica wrote it; a leader change in the
//! middle loses nothing (the claim is in the API, the next leader binds it).
//!
//! Answers (JSON): 200 `{name, namespace, phase, pod, boundAt, waitedMs, reason, message}`
//! once the claim is Bound, Failed or Released, and also with phase `Pending` when it is
//! still waiting after `waitSeconds` + [`WAIT_GRACE`] (or this replica shuts down): the
//! caller may ask again with the same name. 400 bad body (not JSON, a missing field, a
//! bad name, `spec_problem`: parameters over 16 KiB...), 401 no or bad token, 403 not
//! allowed to create claims there, 409 a claim of that name exists with another spec,
//! 413/408 body too large or too slow, 503 the API could not be asked.
//!
//! Invariants: the same name returns the same claim (a retry after a lost answer creates
//! nothing new and waits for the same binding); nothing is written before the caller is
//! authenticated and authorised; a cached authorisation is never older than
//! [`AUTH_CACHE_TTL`].
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};

use super::auth::{bearer, error, token_key, TtlCache};
use super::limits::{AdmissionGate, AdmissionLimits};
use super::release::{BoxFut, ReviewError};
use super::WebhookState;
use crate::api::claim::{
    spec_problem, BoundPod, ClaimPhase, HotStandbyClaim, HotStandbyClaimSpec, BOUND_CONDITION,
};

/// How long authentication and authorisation results are remembered.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(10);
/// Waited past `waitSeconds` for the leader to write the claim's outcome.
pub const WAIT_GRACE: Duration = Duration::from_secs(5);
/// Longest wait of one request, whatever `waitSeconds` says.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// Largest request body (parameters are at most 16 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The field manager of the claims written here.
pub const FIELD_MANAGER: &str = "kube-standby";

/// An authenticated caller (a TokenReview's user).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The answer of an authorisation check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// Denied, with the reason the authoriser gave.
    Denied(String),
}

/// Authenticates callers and checks what they may do (TokenReview and SubjectAccessReview
/// in production, tables in tests).
pub trait Authorizer: Send + Sync {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFut<'a, Result<Caller, ReviewError>>;
    /// May `caller` create HotStandbyClaims in `namespace`?
    fn can_create<'a>(
        &'a self,
        caller: &'a Caller,
        namespace: &'a str,
    ) -> BoxFut<'a, Result<Access, ReviewError>>;
}

/// Why a claim could not be written or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    #[error("a claim of that name exists")]
    AlreadyExists,
    /// Refused by the API server (its status code and message).
    #[error("the API server refused the claim ({0}): {1}")]
    Rejected(u16, String),
    #[error("the API server could not be asked: {0}")]
    Unavailable(String),
}

/// Writes and reads claims in the API.
pub trait ClaimWriter: Send + Sync {
    fn create<'a>(
        &'a self,
        claim: &'a HotStandbyClaim,
    ) -> BoxFut<'a, Result<HotStandbyClaim, WriteError>>;
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<HotStandbyClaim>, WriteError>>;
}

/// Reads claims as this replica sees them (the claim cache in production).
pub trait ClaimLookup: Send + Sync {
    fn claim(&self, namespace: &str, name: &str) -> Option<Arc<HotStandbyClaim>>;
    /// Notified whenever claims of `namespace` may have changed. None: looks every
    /// `poll_every` only.
    fn changes(&self, _namespace: &str) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}

/// The claims service: authoriser, writer, lookup, body limits and the auth caches.
pub struct ClaimsService {
    pub authorizer: Arc<dyn Authorizer>,
    pub writer: Arc<dyn ClaimWriter>,
    pub lookup: Arc<dyn ClaimLookup>,
    pub body_gate: Arc<AdmissionGate>,
    pub poll_every: Duration,
    callers: TtlCache<[u8; 32], Caller>,
    access: TtlCache<([u8; 32], String), Access>,
}

impl ClaimsService {
    pub fn new(
        authorizer: Arc<dyn Authorizer>,
        writer: Arc<dyn ClaimWriter>,
        lookup: Arc<dyn ClaimLookup>,
    ) -> Self {
        ClaimsService {
            authorizer,
            writer,
            lookup,
            body_gate: AdmissionGate::new(AdmissionLimits {
                max_body_bytes: MAX_BODY_BYTES,
                body_read_timeout: Duration::from_secs(5),
                max_concurrent: 256,
                max_buffered_bytes: 16 * 1024 * 1024,
            }),
            poll_every: Duration::from_millis(500),
            callers: TtlCache::new(AUTH_CACHE_TTL),
            access: TtlCache::new(AUTH_CACHE_TTL),
        }
    }

    async fn caller(&self, token: &str) -> Result<Caller, ReviewError> {
        let key = token_key(token);
        if let Some(c) = self.callers.get(&key) {
            return Ok(c);
        }
        let c = self.authorizer.authenticate(token).await?;
        self.callers.insert(key, c.clone());
        Ok(c)
    }

    async fn access(
        &self,
        token: &str,
        caller: &Caller,
        namespace: &str,
    ) -> Result<Access, ReviewError> {
        let key = (token_key(token), namespace.to_string());
        if let Some(a) = self.access.get(&key) {
            return Ok(a);
        }
        let a = self.authorizer.can_create(caller, namespace).await?;
        self.access.insert(key, a.clone());
        Ok(a)
    }
}

/// The body of `POST /v1/claims`: the claim's spec plus where and under which name.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRequest {
    pub namespace: String,
    /// Chosen by the caller: the same name is the same claim (retries are idempotent).
    pub name: String,
    #[serde(flatten)]
    pub spec: HotStandbyClaimSpec,
}

/// The answer of `POST /v1/claims`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimAnswer {
    pub name: String,
    pub namespace: String,
    pub phase: ClaimPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<BoundPod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Is `s` a DNS-1123 subdomain (what object names must be)?
fn dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Is `s` a DNS-1123 label (what namespace names must be)?
fn dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && dns_subdomain(s)
}

/// Pure: the request in `body`, or why it is refused (a 400).
pub fn parse_request(body: &[u8]) -> Result<ClaimRequest, String> {
    let req: ClaimRequest = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a claim request: {e}"))?;
    if !dns_label(&req.namespace) {
        return Err(format!(
            "namespace {:?} is not a valid namespace name",
            req.namespace
        ));
    }
    if !dns_subdomain(&req.name) {
        return Err(format!(
            "name {:?} is not a valid object name (lowercase letters, digits, '-' and '.')",
            req.name
        ));
    }
    if let Some(why) = spec_problem(&req.spec) {
        return Err(why);
    }
    Ok(req)
}

/// Pure: the claim object a request creates.
pub fn claim_of(req: &ClaimRequest) -> HotStandbyClaim {
    HotStandbyClaim {
        metadata: ObjectMeta {
            name: Some(req.name.clone()),
            namespace: Some(req.namespace.clone()),
            ..Default::default()
        },
        spec: req.spec.clone(),
        status: None,
    }
}

/// Pure: the answer describing `claim` as it is.
pub fn answer_of(claim: &HotStandbyClaim) -> ClaimAnswer {
    let st = claim.status.as_ref();
    let cond = st.and_then(|s| s.conditions.iter().find(|c| c.type_ == BOUND_CONDITION));
    ClaimAnswer {
        name: claim.metadata.name.clone().unwrap_or_default(),
        namespace: claim.metadata.namespace.clone().unwrap_or_default(),
        phase: st.map(|s| s.phase).unwrap_or_default(),
        pod: st.and_then(|s| s.pod.clone()),
        bound_at: st.and_then(|s| s.bound_at.clone()),
        waited_ms: st.and_then(|s| s.waited_ms),
        reason: cond.map(|c| c.reason.clone()).filter(|r| !r.is_empty()),
        message: cond.map(|c| c.message.clone()).filter(|m| !m.is_empty()),
    }
}

/// Create the claim, or find the one a previous try created; its UID, or the answer to send.
async fn create_or_reuse(
    svc: &ClaimsService,
    req: &ClaimRequest,
) -> Result<HotStandbyClaim, Response> {
    let claim = claim_of(req);
    let unavailable = |e: WriteError| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    let rejected = |code: u16, msg: String| {
        let status = StatusCode::from_u16(code)
            .ok()
            .filter(|s| s.is_client_error())
            .unwrap_or(StatusCode::BAD_GATEWAY);
        error(status, format!("the API server refused the claim: {msg}"))
    };
    match svc.writer.create(&claim).await {
        Ok(created) => Ok(created),
        Err(WriteError::AlreadyExists) => match svc.writer.get(&req.namespace, &req.name).await {
            Ok(Some(existing)) if existing.spec == req.spec => Ok(existing),
            Ok(Some(_)) => Err(error(
                StatusCode::CONFLICT,
                format!(
                    "claim {}/{} exists with another spec; choose another name, or delete it first",
                    req.namespace, req.name
                ),
            )),
            Ok(None) => Err(error(
                StatusCode::CONFLICT,
                format!(
                    "claim {}/{} was being deleted; retry",
                    req.namespace, req.name
                ),
            )),
            Err(WriteError::Rejected(code, msg)) => Err(rejected(code, msg)),
            Err(e) => Err(unavailable(e)),
        },
        Err(WriteError::Rejected(code, msg)) => Err(rejected(code, msg)),
        Err(e) => Err(unavailable(e)),
    }
}

pub async fn create_claim(State(state): State<Arc<WebhookState>>, req: Request) -> Response {
    let Some(svc) = state.claims.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the claims service runs only in `run` mode",
        );
    };
    let (parts, mut body) = req.into_parts();
    let Some(token) = bearer(&parts.headers) else {
        return error(StatusCode::UNAUTHORIZED, "missing bearer token");
    };
    let caller = match svc.caller(token).await {
        Ok(c) => c,
        Err(e @ ReviewError::Unauthenticated(_)) => {
            return error(StatusCode::UNAUTHORIZED, e.to_string())
        }
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let bytes = {
        let mut admitted = match svc.body_gate.enter() {
            Ok(a) => a,
            Err(e) => return error(e.status(), e.to_string()),
        };
        match svc
            .body_gate
            .read_body(&mut admitted, &parts.headers, &mut body)
            .await
        {
            Ok(b) => b,
            Err(e) => return error(e.status(), e.to_string()),
        }
    };
    let req = match parse_request(&bytes) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match svc.access(token, &caller, &req.namespace).await {
        Ok(Access::Allowed) => {}
        Ok(Access::Denied(why)) => {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "{} may not create hotstandbyclaims.apps.paia.tech in namespace {}{}",
                    caller.username,
                    req.namespace,
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {why}")
                    }
                ),
            )
        }
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
    let started = Instant::now();
    let span = tracing::info_span!("claim_http", claim = %format!("{}/{}", req.namespace, req.name), caller = %caller.username);
    let _e = span.enter();
    let written = match create_or_reuse(&svc, &req).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let uid = written.metadata.uid.clone();
    let wait = Duration::from_secs(u64::try_from(req.spec.wait_seconds).unwrap_or(0))
        .saturating_add(WAIT_GRACE)
        .min(MAX_WAIT);
    let deadline = started + wait;
    let changes = svc
        .lookup
        .changes(&req.namespace)
        .unwrap_or_else(|| Arc::new(tokio::sync::Notify::new()));
    let mut latest = Arc::new(written);
    loop {
        // Registered before the look, so a change right after it is not missed.
        let changed = changes.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Some(c) = svc
            .lookup
            .claim(&req.namespace, &req.name)
            .filter(|c| c.metadata.uid == uid)
        {
            latest = c;
        }
        let phase = latest.status.as_ref().map(|s| s.phase).unwrap_or_default();
        if phase != ClaimPhase::Pending
            || Instant::now() >= deadline
            || state.readiness.is_stopping()
        {
            let answer = answer_of(&latest);
            tracing::info!(phase = ?answer.phase, took_ms = started.elapsed().as_millis() as u64, "claim answered");
            return Json(answer).into_response();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(svc.poll_every.min(left), changed).await;
    }
}

/// The production authoriser: TokenReview (the API server's audience) and
/// SubjectAccessReview.
pub struct KubeAuthorizer {
    pub client: kube::Client,
}

impl Authorizer for KubeAuthorizer {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFut<'a, Result<Caller, ReviewError>> {
        Box::pin(async move {
            let status = super::release::token_review(&self.client, token, None).await?;
            caller_from_review(status.as_ref())
        })
    }

    fn can_create<'a>(
        &'a self,
        caller: &'a Caller,
        namespace: &'a str,
    ) -> BoxFut<'a, Result<Access, ReviewError>> {
        Box::pin(async move {
            use k8s_openapi::api::authorization::v1::{
                ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
            };
            let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.client.clone());
            let sar = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(caller.username.clone()),
                    uid: caller.uid.clone(),
                    groups: Some(caller.groups.clone()),
                    extra: (!caller.extra.is_empty()).then(|| caller.extra.clone()),
                    resource_attributes: Some(ResourceAttributes {
                        group: Some("apps.paia.tech".into()),
                        resource: Some("hotstandbyclaims".into()),
                        verb: Some("create".into()),
                        namespace: Some(namespace.to_string()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let out = api
                .create(&kube::api::PostParams::default(), &sar)
                .await
                .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
            Ok(match out.status {
                Some(s) if s.allowed && s.denied != Some(true) => Access::Allowed,
                Some(s) => Access::Denied(s.reason.unwrap_or_default()),
                None => Access::Denied("no answer".into()),
            })
        })
    }
}

/// Pure: the caller in a TokenReview status, or why there is none.
pub fn caller_from_review(
    st: Option<&k8s_openapi::api::authentication::v1::TokenReviewStatus>,
) -> Result<Caller, ReviewError> {
    let st = st.ok_or_else(|| ReviewError::Unauthenticated("no status".into()))?;
    if st.authenticated != Some(true) {
        return Err(ReviewError::Unauthenticated(
            st.error
                .clone()
                .unwrap_or_else(|| "not authenticated".into()),
        ));
    }
    let user = st
        .user
        .as_ref()
        .ok_or_else(|| ReviewError::Unauthenticated("no user".into()))?;
    let username = user
        .username
        .clone()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ReviewError::Unauthenticated("no user name".into()))?;
    Ok(Caller {
        username,
        uid: user.uid.clone(),
        groups: user.groups.clone().unwrap_or_default(),
        extra: user.extra.clone().unwrap_or_default(),
    })
}

/// The production writer: the API, field manager `kube-standby`.
pub struct KubeClaimWriter {
    pub client: kube::Client,
}

fn write_error(e: kube::Error) -> WriteError {
    match e {
        kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists" => {
            WriteError::AlreadyExists
        }
        kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 429 => {
            WriteError::Rejected(s.code, s.message)
        }
        e => WriteError::Unavailable(e.to_string()),
    }
}

impl ClaimWriter for KubeClaimWriter {
    fn create<'a>(
        &'a self,
        claim: &'a HotStandbyClaim,
    ) -> BoxFut<'a, Result<HotStandbyClaim, WriteError>> {
        Box::pin(async move {
            let ns = claim.metadata.namespace.as_deref().unwrap_or_default();
            let api: kube::Api<HotStandbyClaim> = kube::Api::namespaced(self.client.clone(), ns);
            let pp = kube::api::PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            api.create(&pp, claim).await.map_err(write_error)
        })
    }

    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<HotStandbyClaim>, WriteError>> {
        Box::pin(async move {
            let api: kube::Api<HotStandbyClaim> =
                kube::Api::namespaced(self.client.clone(), namespace);
            api.get_opt(name).await.map_err(write_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The production reviewers send the token as a TokenReview (the pod endpoints with
    /// our audience, the claims endpoint with the API server's own) and read its answer.
    #[tokio::test]
    async fn the_production_reviewers_send_a_token_review() {
        use super::super::release::{KubeTokenReviewer, TokenReviewer};
        use crate::api::singleton::TOKEN_AUDIENCE;
        use http::{Request, Response};
        use kube::client::Body;
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "default");
        let server = tokio::spawn(async move {
            let mut seen = vec![];
            for _ in 0..2 {
                let (req, send) = handle.next_request().await.expect("a request");
                assert_eq!(req.method(), http::Method::POST);
                assert_eq!(
                    req.uri().path(),
                    "/apis/authentication.k8s.io/v1/tokenreviews"
                );
                let body = req.into_body().collect_bytes().await.expect("body");
                let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
                seen.push(v["spec"].clone());
                let answer = serde_json::json!({
                    "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                    "spec": v["spec"],
                    "status": {"authenticated": true, "audiences": [TOKEN_AUDIENCE],
                               "user": {"username": "system:serviceaccount:ns:sa", "uid": "u",
                                        "extra": {"authentication.kubernetes.io/pod-name": ["web-1"],
                                                  "authentication.kubernetes.io/pod-uid": ["pu"]}}}
                });
                send.send_response(
                    Response::builder()
                        .body(Body::from(serde_json::to_vec(&answer).expect("answer")))
                        .expect("response"),
                );
            }
            seen
        });
        let id = KubeTokenReviewer {
            client: client.clone(),
        }
        .review("pod-token")
        .await
        .expect("identity");
        assert_eq!((id.namespace.as_str(), id.name.as_str()), ("ns", "web-1"));
        let caller = KubeAuthorizer { client }
            .authenticate("user-token")
            .await
            .expect("caller");
        assert_eq!(caller.username, "system:serviceaccount:ns:sa");
        let seen = server.await.expect("server");
        assert_eq!(
            seen,
            vec![
                serde_json::json!({"token": "pod-token", "audiences": [TOKEN_AUDIENCE]}),
                serde_json::json!({"token": "user-token"}),
            ]
        );
    }
    use serde_json::json;

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn requests_parse_with_the_spec_defaults() {
        let r = parse_request(&body(json!({
            "namespace": "ns", "name": "job-1",
            "poolRef": {"kind": "HotStandbyDeployment", "name": "p"},
            "parameters": {"task": 7}
        })))
        .unwrap();
        assert_eq!(r.spec.wait_seconds, 30);
        assert_eq!(r.spec.parameters, Some(json!({"task": 7})));
        let c = claim_of(&r);
        assert_eq!(c.metadata.name.as_deref(), Some("job-1"));
        assert_eq!(c.metadata.namespace.as_deref(), Some("ns"));
    }

    #[test]
    fn bad_requests_are_named() {
        let pool = json!({"kind": "hsd", "name": "p"});
        let cases = [
            (json!({"namespace": "ns", "poolRef": pool}), "name"),
            (json!({"namespace": "ns", "name": "a"}), "poolRef"),
            (
                json!({"namespace": "ns", "name": "A_b", "poolRef": pool}),
                "not a valid object name",
            ),
            (
                json!({"namespace": "n.s", "name": "a", "poolRef": pool}),
                "not a valid namespace",
            ),
            (
                json!({"namespace": "ns", "name": "a", "poolRef": pool, "parameters": {"x": "y".repeat(17000)}}),
                "at most 16384",
            ),
            (
                json!({"namespace": "ns", "name": "a", "poolRef": {"kind": "Pod", "name": "p"}}),
                "poolRef.kind",
            ),
        ];
        for (v, want) in cases {
            let got = parse_request(&body(v.clone())).unwrap_err();
            assert!(got.contains(want), "{v}: {got}");
        }
        assert!(parse_request(b"{nope").is_err());
    }

    #[test]
    fn callers_from_reviews() {
        let st: k8s_openapi::api::authentication::v1::TokenReviewStatus = serde_json::from_value(
            json!({"authenticated": true, "user": {"username": "alice", "groups": ["dev"]}}),
        )
        .unwrap();
        let c = caller_from_review(Some(&st)).unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.groups, vec!["dev".to_string()]);
        let st: k8s_openapi::api::authentication::v1::TokenReviewStatus =
            serde_json::from_value(json!({"authenticated": false, "error": "expired"})).unwrap();
        assert!(matches!(
            caller_from_review(Some(&st)),
            Err(ReviewError::Unauthenticated(_))
        ));
    }

    #[test]
    fn api_errors_map_to_write_errors() {
        let api = |code: u16, reason: &str| {
            kube::Error::Api(Box::new(
                kube::core::Status::failure("m", reason).with_code(code),
            ))
        };
        assert_eq!(
            write_error(api(409, "AlreadyExists")),
            WriteError::AlreadyExists
        );
        assert_eq!(
            write_error(api(422, "Invalid")),
            WriteError::Rejected(422, "m".into())
        );
        assert!(matches!(
            write_error(api(500, "InternalError")),
            WriteError::Unavailable(_)
        ));
    }
}
