//! `GET /v1/assignment?wait=30[&since=TAG][&pod=NAME][&uid=UID]`: a pod asks which claim
//! it carries and what the claim's caller wants (`{claim, namespace, parameters, boundAt}`).
//!
//! The caller is identified only by its projected service-account token (audience
//! `kube-standby`, a TokenReview shared with `/release`, results cached): the answer is
//! about the pod the token is bound to and no other (a `pod` or `uid` naming another pod
//! is 403). Any replica answers, from its claim and pool-pod caches.
//!
//! Long-poll: the request waits (at most [`MAX_WAIT`]) until the pod's assignment differs
//! from `since` (the tag of the last answer the caller has; without it: until the pod is
//! claimed), then answers at once. Answers: 200 with the assignment, or 204 (no body)
//! when the pod carries no claim (yet, or any more); both carry the assignment's tag in
//! `ETag` (`"none"` for no claim), which the caller passes back as `since`. A replica
//! shutting down answers at once with what it has.
//!
//! Invariants: an assignment is only ever answered to the pod whose UID the token names;
//! a change in the caches wakes a waiting request at once (the wait registers before it
//! looks, so a change right after the look is not missed).
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::auth::error;
use super::release::PodTokens;
use super::WebhookState;
use crate::api::claim::Assignment;

/// Longest long-poll.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// The tag of "no assignment".
pub const NO_ASSIGNMENT_TAG: &str = "none";

/// Reads pods' claims (the claim controller's caches in production).
pub trait AssignmentLookup: Send + Sync {
    /// The claim pod `namespace/pod` carries, only if its UID is `uid`.
    fn assignment(&self, namespace: &str, pod: &str, uid: &str) -> Option<Assignment>;
    /// Notified whenever claims or pool pods of `namespace` may have changed. None: looks
    /// every `poll_every` only.
    fn changes(&self, _namespace: &str) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}

/// The assignment service: pod tokens (shared with `/release`) + lookup.
pub struct AssignmentService {
    pub tokens: Arc<PodTokens>,
    pub lookup: Arc<dyn AssignmentLookup>,
    pub poll_every: Duration,
}

impl AssignmentService {
    pub fn new(tokens: Arc<PodTokens>, lookup: Arc<dyn AssignmentLookup>) -> Self {
        AssignmentService {
            tokens,
            lookup,
            poll_every: Duration::from_millis(500),
        }
    }
}

/// A short stable tag of an assignment (its JSON's SHA-256, 16 hex digits).
pub fn tag(a: Option<&Assignment>) -> String {
    let Some(a) = a else {
        return NO_ASSIGNMENT_TAG.into();
    };
    let bytes = serde_json::to_vec(a).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct AssignmentQuery {
    /// Long-poll length in seconds (default 30, at most [`MAX_WAIT`]); 0 answers at once.
    pub wait: Option<u64>,
    /// The tag of the caller's current assignment: wait until it changes.
    pub since: Option<String>,
    /// The pod asked about: must be the token's own.
    pub pod: Option<String>,
    /// The caller's own pod UID: must be the token's.
    pub uid: Option<String>,
}

/// The answer for `a`: 200 with it, or 204; its tag in `ETag`.
fn answer(a: Option<Assignment>) -> Response {
    let t = tag(a.as_ref());
    let mut resp = match a {
        Some(a) => Json(a).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&format!("\"{t}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

pub async fn assignment(
    State(state): State<Arc<WebhookState>>,
    headers: HeaderMap,
    Query(q): Query<AssignmentQuery>,
) -> Response {
    let Some(svc) = state.assignment.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the assignment service runs only in `run` mode",
        );
    };
    let id = match svc.tokens.identify_request(&headers).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let pod = format!("{}/{}", id.namespace, id.name);
    if let Some(asked) = q.pod.as_deref().filter(|p| *p != id.name && *p != pod) {
        return error(
            StatusCode::FORBIDDEN,
            format!("token belongs to pod {pod}; it cannot read the assignment of {asked:?}"),
        );
    }
    if let Some(uid) = q.uid.as_deref().filter(|u| *u != id.uid) {
        return error(
            StatusCode::FORBIDDEN,
            format!("token belongs to pod {pod} uid {}, not uid {uid}", id.uid),
        );
    }
    let since = q
        .since
        .as_deref()
        .map(|s| s.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| NO_ASSIGNMENT_TAG.into());
    let wait = Duration::from_secs(q.wait.unwrap_or(30)).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let changes = svc
        .lookup
        .changes(&id.namespace)
        .unwrap_or_else(|| Arc::new(tokio::sync::Notify::new()));
    loop {
        // Registered before the look, so a change right after it is not missed.
        let changed = changes.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let current = svc.lookup.assignment(&id.namespace, &id.name, &id.uid);
        if tag(current.as_ref()) != since
            || Instant::now() >= deadline
            || state.readiness.is_stopping()
        {
            return answer(current);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(svc.poll_every.min(left), changed).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_content() {
        let a = Assignment {
            claim: "c".into(),
            namespace: "ns".into(),
            parameters: serde_json::json!({"k": 1}),
            bound_at: None,
        };
        let mut b = a.clone();
        assert_eq!(tag(Some(&a)), tag(Some(&b)));
        b.parameters = serde_json::json!({"k": 2});
        assert_ne!(tag(Some(&a)), tag(Some(&b)));
        assert_eq!(tag(None), NO_ASSIGNMENT_TAG);
        assert_eq!(tag(Some(&a)).len(), 16);
    }
}
