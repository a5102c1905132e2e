//! The admission webhook: an axum `Router` with `/mutate/pods`, health, metrics and debug
//! endpoints. The mutation itself is pure (`mutate`); this module is the HTTP edge.
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use serde::Serialize;
use tracing::{field, info_span, Instrument};

use crate::metrics::Metrics;
use crate::state::{DebugState, Readiness};
use crate::telemetry::Untrusted;
pub use admission_pod::AdmissionPod;
pub use mutation_pod::MutationPod;

pub mod admission_pod;
pub mod assignment;
pub mod auth;
pub mod claim_agent;
pub mod claims;
pub mod config;
pub mod guard;
pub mod held_since;
pub mod limits;
pub mod mutate;
pub mod mutation_pod;
pub mod objects;
pub mod patch;
pub mod release;
pub mod reprobe;
pub mod singleton;
pub mod validate;

pub use config::{Config, Injection};
pub use limits::{AdmissionGate, AdmissionLimits};
pub use mutate::{mutate, mutate_patch};
pub use objects::{ObjectSource, StaticObjects};
pub use patch::Patch;
pub use validate::{GuardIo, GuardState};

/// Everything the handlers need.
#[derive(Clone)]
pub struct WebhookState {
    pub objects: Arc<dyn ObjectSource>,
    pub injection: Arc<Injection>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub debug: DebugState,
    /// The agent release service (`run` mode only).
    pub release: Option<Arc<release::ReleaseService>>,
    /// `GET /v1/assignment` (`run` mode only).
    pub assignment: Option<Arc<assignment::AssignmentService>>,
    /// `POST /v1/claims` (`run` mode only).
    pub claims: Option<Arc<claims::ClaimsService>>,
    /// Concurrency, body size, body time and buffer limits of `/mutate/pods` and
    /// `/validate/pods` (one budget for both).
    pub gate: Arc<AdmissionGate>,
    /// The busy guard's settings and holds (`/validate/pods`).
    pub guard: Arc<GuardState>,
}

/// The webhook's HTTPS routes (what the API server, the in-pod agents and claim callers
/// reach).
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/mutate/pods", post(mutate_pods))
        .route(VALIDATE_PATH, post(validate_pods))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/release", get(release::release))
        .route("/v1/assignment", get(assignment::assignment))
        .route("/v1/claims", post(claims::create_claim))
        // One Arc for the whole state: each request clones it once (a dozen shared
        // counters touched by every worker thread, per request, otherwise).
        .with_state(Arc::new(state))
}

/// Where the busy guard (pod DELETE and `pods/eviction`) is served.
pub const VALIDATE_PATH: &str = "/validate/pods";

/// The operations routes, served on a separate plain-HTTP port (`--metrics-bind`) so a
/// NetworkPolicy can keep metrics and debug state inside the cluster: `/metrics`,
/// `/debug/state`, and `/healthz`, `/readyz` for probes.
pub fn ops_router(state: WebhookState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/debug/state", get(debug_state))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(state))
}

/// A JSON error body: `{"error": "...", "status": 400}`.
#[derive(Debug, Serialize, PartialEq)]
pub struct ErrorBody {
    pub error: String,
    pub status: u16,
}

/// Why a request could not be turned into an AdmissionReview answer.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("request body is not an AdmissionReview v1: {0}")]
    NotAdmissionReview(String),
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("{0}")]
    Body(String, StatusCode),
}

impl AdmissionError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdmissionError::Body(_, s) => *s,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for AdmissionError {
    fn into_response(self) -> Response {
        let status = self.status();
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
                status: status.as_u16(),
            }),
        )
            .into_response()
    }
}

fn check_types(kind: &str, api_version: &str) -> Result<(), AdmissionError> {
    if kind != "AdmissionReview" || api_version != "admission.k8s.io/v1" {
        return Err(AdmissionError::NotAdmissionReview(format!(
            "expected kind AdmissionReview and apiVersion admission.k8s.io/v1, got kind {kind:?} apiVersion {api_version:?}"
        )));
    }
    Ok(())
}

/// A parsed request. Pods come typed in one pass (the hot path), as `P`: the whole pod
/// ([`AdmissionPod`], the busy guard's) or what the mutators read ([`MutationPod`]). Any
/// other kind, or a pod that does not parse as one, stays dynamic.
pub enum Parsed<P: kube::Resource = AdmissionPod> {
    /// Its pods boxed inside (`P` derefs to `Pod`).
    Pod(Box<AdmissionRequest<P>>),
    Other(Box<AdmissionRequest<DynamicObject>>),
}

macro_rules! on_request {
    ($self:expr, $r:ident => $e:expr) => {
        match $self {
            Parsed::Pod($r) => $e,
            Parsed::Other($r) => $e,
        }
    };
}

impl<P: kube::Resource + std::ops::Deref<Target = Pod>> Parsed<P> {
    pub fn uid(&self) -> &str {
        on_request!(self, r => &r.uid)
    }
    pub fn namespace(&self) -> Option<&str> {
        on_request!(self, r => r.namespace.as_deref())
    }
    pub fn operation(&self) -> Operation {
        on_request!(self, r => r.operation.clone())
    }
    pub fn dry_run(&self) -> bool {
        on_request!(self, r => r.dry_run)
    }
    /// The name, or `generateName*` for a pod made by a controller (no name at admission).
    pub fn display_name(&self) -> String {
        let (name, generate) = match self {
            Parsed::Pod(r) => (
                r.name.clone(),
                r.object
                    .as_ref()
                    .and_then(|o| o.metadata.generate_name.clone()),
            ),
            Parsed::Other(r) => (
                r.name.clone(),
                r.object
                    .as_ref()
                    .and_then(|o| o.metadata.generate_name.clone()),
            ),
        };
        if name.is_empty() {
            generate.map(|g| format!("{g}*")).unwrap_or_default()
        } else {
            name
        }
    }
}

/// Parse and check an AdmissionReview v1 body, its pods whole but for managed fields.
pub fn parse_review(body: &[u8]) -> Result<Parsed, AdmissionError> {
    parse_review_as::<AdmissionPod>(body)
}

/// Parse and check an AdmissionReview v1 body for the mutating webhook: its pods hold only
/// what the mutators read (see `mutation_pod`).
pub fn parse_mutation_review(body: &[u8]) -> Result<Parsed<MutationPod>, AdmissionError> {
    parse_review_as::<MutationPod>(body)
}

fn parse_review_as<P>(body: &[u8]) -> Result<Parsed<P>, AdmissionError>
where
    P: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    // The pods are parsed as `P`, which nothing here needs whole: a body `P` refuses
    // goes to the slow path below, which answers it as it always did. The body is checked
    // to be UTF-8 whole, at once, and then parsed as text: a skipped field's strings are
    // never built, so parsing the bytes would not check them (and would check every kept
    // string one by one, which cost more than checking the whole body).
    let fast = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_json::from_str::<AdmissionReview<P>>(text).ok());
    if let Some(review) = fast {
        check_types(&review.types.kind, &review.types.api_version)?;
        let req: AdmissionRequest<P> = review.try_into().map_err(|_| AdmissionError::NoRequest)?;
        if req.kind.group.is_empty() && req.kind.kind == "Pod" {
            return Ok(Parsed::Pod(Box::new(req)));
        }
    }
    // Slow path: other kinds, and bodies that need a precise error.
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| AdmissionError::MalformedJson(e.to_string()))?;
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    let api_version = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    check_types(kind, api_version)?;
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(value)
        .map_err(|e| AdmissionError::NotAdmissionReview(e.to_string()))?;
    let req: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| AdmissionError::NoRequest)?;
    Ok(Parsed::Other(Box::new(req)))
}

/// What the handler decided, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Patched,
    Denied,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Patched => "patched",
            Outcome::Denied => "denied",
        }
    }
}

/// The answer to one request: the response (without patch), and the patch operations.
pub struct Decision {
    pub response: AdmissionResponse,
    pub outcome: Outcome,
    pub patch: Patch,
}

impl Decision {
    pub fn allow(response: AdmissionResponse) -> Self {
        Decision {
            response,
            outcome: Outcome::Allowed,
            patch: Patch::default(),
        }
    }
    pub fn deny(response: AdmissionResponse, why: String) -> Self {
        Decision {
            response: response.deny(why),
            outcome: Outcome::Denied,
            patch: Patch::default(),
        }
    }
}

/// Decide the answer to one admission request. Pure apart from reading the object source.
pub fn review<P: kube::Resource + std::ops::Deref<Target = Pod>>(
    req: &Parsed<P>,
    objects: &dyn ObjectSource,
    injection: &Injection,
) -> Decision {
    let converted;
    let (base, op, namespace, pod) = match req {
        Parsed::Pod(r) => (
            AdmissionResponse::from(r.as_ref()),
            &r.operation,
            &r.namespace,
            r.object.as_deref(),
        ),
        Parsed::Other(r) => {
            let base = AdmissionResponse::from(r.as_ref());
            if !r.kind.group.is_empty() || r.kind.kind != "Pod" || r.operation != Operation::Create
            {
                return Decision::allow(base);
            }
            converted = match r
                .object
                .as_ref()
                .map(|o| serde_json::to_value(o).and_then(serde_json::from_value::<Pod>))
            {
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    return Decision::deny(base, format!("object is not a valid Pod: {e}"))
                }
                None => None,
            };
            (base, &r.operation, &r.namespace, converted.as_ref())
        }
    };
    // Only CREATE is mutated: the API server rejects pod spec changes on UPDATE, and a
    // status write or annotation change must never be touched.
    if *op != Operation::Create {
        return Decision::allow(base);
    }
    let Some(pod) = pod else {
        return Decision::deny(base, "CREATE request carries no object".into());
    };
    let ns = namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_default();
    let config = Config {
        singletons: objects.singletons(&ns),
        injection,
    };
    let ops = match mutate_patch(pod, &config) {
        Ok(ops) => ops,
        Err(why) => return Decision::deny(base, why),
    };
    if ops.is_empty() {
        return Decision::allow(base);
    }
    Decision {
        response: base,
        outcome: Outcome::Patched,
        patch: ops,
    }
}

/// The AdmissionReview answer as a JSON value, the patch as the base64 string the API
/// documents (kube's response type would write an array of byte values). The reference
/// for [`review_body`], which the handlers use: the same JSON, without building it as a
/// value first.
pub fn review_json(d: &Decision) -> Result<serde_json::Value, serde_json::Error> {
    use base64::Engine;
    let mut v = serde_json::to_value(d.response.clone().into_review())?;
    if !d.patch.is_empty() {
        let bytes = d.patch.to_json()?;
        if let Some(r) = v.get_mut("response").and_then(|r| r.as_object_mut()) {
            r.insert(
                "patch".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .into(),
            );
            r.insert("patchType".into(), "JSONPatch".into());
        }
    }
    Ok(v)
}

/// The AdmissionReview answer as JSON text: the same text as serializing [`review_json`]
/// (keys in the same, sorted, order), written directly, with the patch base64-encoded
/// straight into it (base64 needs no JSON escaping).
pub fn review_body(d: &Decision) -> Result<Vec<u8>, serde_json::Error> {
    let r = &d.response;
    if r.patch.is_some() {
        // A patch set through kube's own response type: its serialization is kube's.
        return serde_json::to_vec(&review_json(d)?);
    }
    let mut out = Vec::with_capacity(192 + r.uid.len() + d.patch.base64_len());
    out.extend_from_slice(br#"{"apiVersion":"#);
    serde_json::to_writer(&mut out, &r.types.api_version)?;
    out.extend_from_slice(br#","kind":"#);
    serde_json::to_writer(&mut out, &r.types.kind)?;
    out.extend_from_slice(br#","response":{"allowed":"#);
    out.extend_from_slice(if r.allowed { b"true" } else { b"false" });
    if !r.audit_annotations.is_empty() {
        out.extend_from_slice(br#","auditAnnotations":"#);
        let sorted: std::collections::BTreeMap<_, _> = r.audit_annotations.iter().collect();
        serde_json::to_writer(&mut out, &sorted)?;
    }
    if !d.patch.is_empty() {
        out.extend_from_slice(br#","patch":""#);
        d.patch.write_base64(&mut out)?;
        out.extend_from_slice(br#"","patchType":"JSONPatch""#);
    }
    out.extend_from_slice(br#","status":"#);
    // Through a value, for its sorted keys (a handful of fields).
    serde_json::to_writer(&mut out, &serde_json::to_value(&r.result)?)?;
    out.extend_from_slice(br#","uid":"#);
    serde_json::to_writer(&mut out, &r.uid)?;
    if let Some(w) = &r.warnings {
        out.extend_from_slice(br#","warnings":"#);
        serde_json::to_writer(&mut out, w)?;
    }
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// The answer to send: the review as JSON, or a 500 saying it could not be written.
fn review_response(d: &Decision) -> Response {
    match review_body(d) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => AdmissionError::Body(
            format!("could not encode the response: {e}"),
            StatusCode::INTERNAL_SERVER_ERROR,
        )
        .into_response(),
    }
}

/// A JSON error answer for a request that was not reviewed, counted under `outcome`.
fn refuse(
    state: &WebhookState,
    started: Instant,
    e: AdmissionError,
    outcome: &'static str,
) -> Response {
    state
        .metrics
        .admission(outcome, started.elapsed().as_secs_f64());
    tracing::warn!(status = %e.status(), error = %Untrusted::long(&e.to_string()), "admission request refused");
    let mut resp = e.into_response();
    if outcome == "busy" {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    resp
}

/// Take a review slot and read the body within the limits; or the refusal to send.
async fn admitted_body(
    state: &WebhookState,
    started: Instant,
    req: Request,
) -> Result<(limits::Admitted, Vec<u8>), Response> {
    let (parts, mut body) = req.into_parts();
    let gate = state.gate.clone();
    // Held until the answer is built: the slot and the buffered bytes.
    let mut admitted = gate.enter().map_err(|e| {
        let outcome = e.outcome();
        refuse(
            state,
            started,
            AdmissionError::Body(e.to_string(), e.status()),
            outcome,
        )
    })?;
    let body = gate
        .read_body(&mut admitted, &parts.headers, &mut body)
        .await
        .map_err(|e| {
            let outcome = e.outcome();
            refuse(
                state,
                started,
                AdmissionError::Body(e.to_string(), e.status()),
                outcome,
            )
        })?;
    Ok((admitted, body))
}

/// A review admitted within the limits and parsed (the body is not kept), or the answer
/// that refused it; the permit must be held while the review is handled.
async fn admitted_review<P: kube::Resource>(
    state: &WebhookState,
    started: Instant,
    req: Request,
    parse: fn(&[u8]) -> Result<Parsed<P>, AdmissionError>,
) -> Result<(limits::Admitted, Parsed<P>), Response> {
    let (admitted, body) = admitted_body(state, started, req).await?;
    match parse(&body) {
        Ok(r) => Ok((admitted, r)),
        Err(e) => Err(refuse(state, started, e, "rejected")),
    }
}

async fn mutate_pods(State(state): State<Arc<WebhookState>>, req: Request) -> Response {
    let started = Instant::now();
    let (admitted, req) = match admitted_review(&state, started, req, parse_mutation_review).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let decision = review(&req, state.objects.as_ref(), &state.injection);
    let elapsed = started.elapsed();
    let outcome = decision.outcome;
    state
        .metrics
        .admission(outcome.label(), elapsed.as_secs_f64());
    let resp = review_response(&decision);
    drop(admitted);
    let line = ReviewLine {
        allowed: decision.response.allowed,
        patch_ops: decision.patch.len(),
        duration_us: elapsed.as_micros() as u64,
        outcome: outcome.label(),
    };
    // The review's log line is formatted after the answer is on its way: a task spawned
    // here runs once this one yields, that is after the response is written, so neither
    // the formatting nor freeing the parsed pod is part of the API server's wait (at
    // 1,000 rps they were about half of this handler's median latency above a bare
    // answer's; at the p99 the gain was not clear, PERFORMANCE.md).
    tokio::spawn(async move { line.log(&req) });
    resp
}

/// What the log line of one mutating review says besides the request's own fields.
struct ReviewLine {
    allowed: bool,
    patch_ops: usize,
    duration_us: u64,
    outcome: &'static str,
}

impl ReviewLine {
    fn log<P: kube::Resource + std::ops::Deref<Target = Pod>>(&self, req: &Parsed<P>) {
        // One event per review, its fields written once (a span would format them on
        // creation and again on every record, and be entered and left on every poll).
        tracing::info!(
            uid = %Untrusted::short(req.uid()),
            namespace = %Untrusted::short(req.namespace().unwrap_or("")),
            name = %Untrusted::short(&req.display_name()),
            operation = ?req.operation(),
            dry_run = req.dry_run(),
            allowed = self.allowed,
            patch_ops = self.patch_ops,
            duration_us = self.duration_us,
            outcome = self.outcome,
            "admission reviewed"
        );
    }
}

async fn readyz(State(state): State<Arc<WebhookState>>) -> Response {
    let reasons = state.readiness.not_ready_reasons();
    if reasons.is_empty() {
        (StatusCode::OK, "ready").into_response()
    } else {
        let waiting = state.readiness.waiting_for();
        let errors: serde_json::Map<String, serde_json::Value> = waiting
            .iter()
            .filter_map(|w| Some((w.resource.clone(), w.last_error.clone()?.into())))
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "error": reasons.join(", "),
                "status": 503,
                "waiting_for": waiting.iter().map(|w| w.resource.as_str()).collect::<Vec<_>>(),
                "last_errors": errors,
            })),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<WebhookState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn debug_state(State(state): State<Arc<WebhookState>>) -> Response {
    let mut v = state.debug.snapshot();
    let held = state.guard.held();
    if !held.is_empty() {
        if let (Some(m), Ok(h)) = (v.as_object_mut(), serde_json::to_value(held)) {
            m.insert("busy_guard/held_pods".into(), h);
        }
    }
    Json(v).into_response()
}

async fn validate_pods(State(state): State<Arc<WebhookState>>, req: Request) -> Response {
    let started = Instant::now();
    let (admitted, req) = match admitted_review(&state, started, req, parse_review).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let span = info_span!(
        "busy_guard",
        uid = %Untrusted::short(req.uid()),
        namespace = %Untrusted::short(req.namespace().unwrap_or("")),
        name = %Untrusted::short(&req.display_name()),
        operation = ?req.operation(),
        dry_run = req.dry_run(),
        allowed = field::Empty,
        duration_us = field::Empty,
    );
    async move {
        let answer = validate::guard_review_probing(&req, state.objects.as_ref(), &state.guard).await;
        let elapsed = started.elapsed();
        let span = tracing::Span::current();
        span.record("allowed", answer.response.allowed);
        span.record("duration_us", elapsed.as_micros() as u64);
        let outcome = if answer.response.allowed {
            Outcome::Allowed
        } else {
            Outcome::Denied
        };
        if let Some(j) = &answer.judged {
            state
                .metrics
                .busy_guard_decisions
                .get_or_create(&crate::metrics::GuardLabels {
                    decision: j.verdict.label(),
                    requester_class: j.requester_class,
                    operation: j.op.label(),
                })
                .inc();
            match &j.verdict {
                guard::Verdict::Deny { message, .. } => {
                    tracing::info!(pod = %Untrusted::short(&j.pod), requester = j.requester_class, reason = %Untrusted::long(message), "busy guard held a removal")
                }
                guard::Verdict::Allow {
                    warning: Some(w), ..
                } => {
                    tracing::warn!(pod = %Untrusted::short(&j.pod), warning = %Untrusted::long(w), "busy guard let a busy pod go")
                }
                _ => tracing::debug!(decision = j.verdict.label(), "busy guard reviewed"),
            }
        }
        state
            .metrics
            .admission(outcome.label(), elapsed.as_secs_f64());
        let decision = Decision {
            response: answer.response,
            outcome,
            patch: Patch::default(),
        };
        let resp = review_response(&decision);
        drop(admitted);
        resp
    }
    .instrument(span)
    .await
}
