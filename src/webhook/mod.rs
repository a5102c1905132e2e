//! The admission webhook: an axum `Router` with `/mutate/pods`, health, metrics and debug
//! endpoints. The mutation itself is pure (`mutate`); this module is the HTTP edge.
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
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

pub mod mutate;
pub mod objects;
pub mod release;
pub mod singleton;

pub use mutate::{mutate, Config, Injection};
pub use objects::{ObjectSource, StaticObjects};

/// Largest AdmissionReview body accepted (the API server caps objects at ~3 MiB).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

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
}

/// The webhook's HTTP routes.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/mutate/pods", post(mutate_pods))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/debug/state", get(debug_state))
        .route("/release", get(release::release))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
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

/// Parse and check an AdmissionReview v1 body.
pub fn parse_review(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, AdmissionError> {
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
    if kind != "AdmissionReview" || api_version != "admission.k8s.io/v1" {
        return Err(AdmissionError::NotAdmissionReview(format!(
            "expected kind AdmissionReview and apiVersion admission.k8s.io/v1, got kind {kind:?} apiVersion {api_version:?}"
        )));
    }
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(value)
        .map_err(|e| AdmissionError::NotAdmissionReview(e.to_string()))?;
    review.try_into().map_err(|_| AdmissionError::NoRequest)
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

/// Decide the answer to one admission request. Pure apart from reading the object source.
pub fn review(
    req: &AdmissionRequest<DynamicObject>,
    objects: &dyn ObjectSource,
    injection: &Injection,
) -> (AdmissionResponse, Outcome, usize) {
    let allowed = AdmissionResponse::from(req);
    if !req.kind.group.is_empty() || req.kind.kind != "Pod" {
        return (allowed, Outcome::Allowed, 0);
    }
    // Only CREATE is mutated: the API server rejects pod spec changes on UPDATE, and a
    // status write or annotation change must never be touched.
    if req.operation != Operation::Create {
        return (allowed, Outcome::Allowed, 0);
    }
    let Some(obj) = req.object.as_ref() else {
        return (
            allowed.deny("CREATE request carries no object"),
            Outcome::Denied,
            0,
        );
    };
    let pod: Pod = match serde_json::to_value(obj).and_then(serde_json::from_value) {
        Ok(p) => p,
        Err(e) => {
            return (
                allowed.deny(format!("object is not a valid Pod: {e}")),
                Outcome::Denied,
                0,
            )
        }
    };
    let namespace = req
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_default();
    let config = Config {
        namespace,
        singletons: objects.singletons(req.namespace.as_deref().unwrap_or_default()),
        injection,
    };
    let ops = mutate(&pod, &config);
    if ops.is_empty() {
        return (allowed, Outcome::Allowed, 0);
    }
    let n = ops.len();
    match allowed.clone().with_patch(json_patch::Patch(ops)) {
        Ok(r) => (r, Outcome::Patched, n),
        Err(e) => (
            allowed.deny(format!("could not serialize patch: {e}")),
            Outcome::Denied,
            0,
        ),
    }
}

async fn mutate_pods(
    State(state): State<WebhookState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(rej) => {
            let status = rej.status();
            state
                .metrics
                .admission("rejected", started.elapsed().as_secs_f64());
            tracing::warn!(%status, "admission body rejected: {}", rej.body_text());
            return AdmissionError::Body(rej.body_text(), status).into_response();
        }
    };
    let req = match parse_review(&body) {
        Ok(r) => r,
        Err(e) => {
            state
                .metrics
                .admission("rejected", started.elapsed().as_secs_f64());
            tracing::warn!(error = %e, "bad admission request");
            return e.into_response();
        }
    };
    let name = if req.name.is_empty() {
        req.object
            .as_ref()
            .and_then(|o| o.metadata.generate_name.clone())
            .map(|g| format!("{g}*"))
            .unwrap_or_default()
    } else {
        req.name.clone()
    };
    let span = info_span!(
        "admission",
        uid = %req.uid,
        namespace = req.namespace.as_deref().unwrap_or(""),
        name = %name,
        operation = ?req.operation,
        dry_run = req.dry_run,
        allowed = field::Empty,
        patch_ops = field::Empty,
        duration_us = field::Empty,
    );
    async move {
        let (resp, outcome, n) = review(&req, state.objects.as_ref(), &state.injection);
        let elapsed = started.elapsed();
        let span = tracing::Span::current();
        span.record("allowed", resp.allowed);
        span.record("patch_ops", n);
        span.record("duration_us", elapsed.as_micros() as u64);
        tracing::info!(outcome = outcome.label(), "admission reviewed");
        state
            .metrics
            .admission(outcome.label(), elapsed.as_secs_f64());
        match review_json(resp) {
            Ok(v) => Json(v).into_response(),
            Err(e) => AdmissionError::Body(
                format!("could not encode the response: {e}"),
                StatusCode::INTERNAL_SERVER_ERROR,
            )
            .into_response(),
        }
    }
    .instrument(span)
    .await
}

/// The AdmissionReview answer as JSON, with `response.patch` as the base64 string the
/// API documents (kube's type would write it as an array of byte values).
pub fn review_json(resp: AdmissionResponse) -> Result<serde_json::Value, serde_json::Error> {
    use base64::Engine;
    let mut v = serde_json::to_value(resp.into_review())?;
    if let Some(patch) = v.pointer_mut("/response/patch") {
        if let Some(bytes) = patch.as_array() {
            let raw: Vec<u8> = bytes
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            *patch =
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(raw));
        }
    }
    Ok(v)
}

async fn readyz(State(state): State<WebhookState>) -> Response {
    let reasons = state.readiness.not_ready_reasons();
    if reasons.is_empty() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ErrorBody {
                error: reasons.join(", "),
                status: 503,
            }),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<WebhookState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn debug_state(State(state): State<WebhookState>) -> Response {
    Json(state.debug.snapshot()).into_response()
}
