//! `GET /release`: the in-pod agent asks whether its pod is released. The caller is
//! identified only by its projected service-account token (audience `kube-standby`),
//! checked with a TokenReview (results cached briefly). The answer is about that pod
//! only. Long-poll: it returns as soon as the pod is released, or after the timeout.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::auth::{bearer, error, token_key, TtlCache};
use super::WebhookState;
use crate::api::singleton::{ReleaseAnswer, TOKEN_AUDIENCE};

/// Who a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    #[error("token rejected: {0}")]
    Unauthenticated(String),
    #[error("token review failed: {0}")]
    Unavailable(String),
}

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Authenticates agent tokens (a TokenReview in production, a table in tests).
pub trait TokenReviewer: Send + Sync {
    fn review<'a>(&'a self, token: &'a str) -> BoxFut<'a, Result<PodIdentity, ReviewError>>;
}

/// Release state of a pod as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRelease {
    pub uid: String,
    pub released: bool,
    /// The fencing epoch of the release (annotation `apps.statefulsingleton.com/epoch`).
    pub epoch: Option<u64>,
}

/// Reads pods' release state (the controller's pod cache in production).
pub trait ReleaseLookup: Send + Sync {
    fn lookup(&self, namespace: &str, name: &str) -> Option<PodRelease>;
    /// Notified whenever the pods of `namespace` may have changed: a long-poll wakes at
    /// once instead of at its next look. None: looks every `poll_every` only.
    fn changes(&self, _namespace: &str) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}

/// Pod tokens checked with the reviewer, results remembered for a minute (shared by
/// `/release` and `/v1/assignment`: one review per token, whichever endpoint asks).
pub struct PodTokens {
    pub reviewer: Arc<dyn TokenReviewer>,
    cache: TtlCache<[u8; 32], PodIdentity>,
}

impl PodTokens {
    pub fn new(reviewer: Arc<dyn TokenReviewer>) -> Self {
        PodTokens {
            reviewer,
            cache: TtlCache::new(Duration::from_secs(60)),
        }
    }

    /// The pod `token` is bound to (from the cache while it is fresh).
    pub async fn identify(&self, token: &str) -> Result<PodIdentity, ReviewError> {
        let key = token_key(token);
        if let Some(id) = self.cache.get(&key) {
            return Ok(id);
        }
        let id = self.reviewer.review(token).await?;
        self.cache.insert(key, id.clone());
        Ok(id)
    }

    /// The pod of a request's bearer token, or the 401/503 answer to send.
    pub async fn identify_request(&self, headers: &HeaderMap) -> Result<PodIdentity, Response> {
        let Some(token) = bearer(headers) else {
            return Err(error(StatusCode::UNAUTHORIZED, "missing bearer token"));
        };
        match self.identify(token).await {
            Ok(id) => Ok(id),
            Err(e @ ReviewError::Unauthenticated(_)) => {
                Err(error(StatusCode::UNAUTHORIZED, e.to_string()))
            }
            Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        }
    }
}

/// The release service: pod tokens + lookup.
pub struct ReleaseService {
    pub tokens: Arc<PodTokens>,
    pub lookup: Arc<dyn ReleaseLookup>,
    pub poll_every: Duration,
}

impl ReleaseService {
    pub fn new(reviewer: Arc<dyn TokenReviewer>, lookup: Arc<dyn ReleaseLookup>) -> Self {
        Self::with_tokens(Arc::new(PodTokens::new(reviewer)), lookup)
    }

    /// A release service sharing `tokens` (and their cache) with other endpoints.
    pub fn with_tokens(tokens: Arc<PodTokens>, lookup: Arc<dyn ReleaseLookup>) -> Self {
        ReleaseService {
            tokens,
            lookup,
            poll_every: Duration::from_millis(50),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseQuery {
    /// The caller's own pod UID (from the downward API), checked against the token.
    pub uid: Option<String>,
    /// Long-poll timeout, at most 30 s.
    pub timeout_seconds: Option<u64>,
}

pub async fn release(
    State(state): State<Arc<WebhookState>>,
    headers: HeaderMap,
    Query(q): Query<ReleaseQuery>,
) -> Response {
    let Some(svc) = state.release.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the release service runs only in `run` mode",
        );
    };
    let id = match svc.tokens.identify_request(&headers).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let pod = format!("{}/{}", id.namespace, id.name);
    if let Some(uid) = &q.uid {
        if uid != &id.uid {
            return error(
                StatusCode::FORBIDDEN,
                format!("token belongs to pod {pod} uid {}, not uid {uid}", id.uid),
            );
        }
    }
    let timeout = Duration::from_secs(q.timeout_seconds.unwrap_or(30).min(30));
    let deadline = Instant::now() + timeout;
    let span = tracing::info_span!("release", pod = %pod, uid = %id.uid);
    let _e = span.enter();
    let changes = svc
        .lookup
        .changes(&id.namespace)
        .unwrap_or_else(|| Arc::new(tokio::sync::Notify::new()));
    loop {
        // Registered before the look, so a change right after it is not missed.
        let changed = changes.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match svc.lookup.lookup(&id.namespace, &id.name) {
            Some(r) if r.uid != id.uid => {
                return error(
                    StatusCode::FORBIDDEN,
                    format!(
                        "pod {pod} now has uid {}, the token is for uid {}",
                        r.uid, id.uid
                    ),
                )
            }
            Some(r) if r.released => {
                return Json(ReleaseAnswer {
                    released: true,
                    pod,
                    epoch: r.epoch,
                })
                .into_response()
            }
            _ => {}
        }
        // A replica shutting down answers at once; the agent asks again (another replica).
        if Instant::now() >= deadline || state.readiness.is_stopping() {
            return Json(ReleaseAnswer {
                released: false,
                pod,
                epoch: None,
            })
            .into_response();
        }
        let _ = tokio::time::timeout(svc.poll_every, changed).await;
    }
}

/// The production reviewer: a TokenReview with audience `kube-standby`.
pub struct KubeTokenReviewer {
    pub client: kube::Client,
}

impl TokenReviewer for KubeTokenReviewer {
    fn review<'a>(&'a self, token: &'a str) -> BoxFut<'a, Result<PodIdentity, ReviewError>> {
        Box::pin(async move {
            let audiences = Some(vec![TOKEN_AUDIENCE.into()]);
            let status = token_review(&self.client, token, audiences).await?;
            identity_from_review(status.as_ref())
        })
    }
}

/// A TokenReview of `token` (for `audiences`; None: the API server's own), its status.
/// The API unreachable or refusing is [`ReviewError::Unavailable`].
pub async fn token_review(
    client: &kube::Client,
    token: &str,
    audiences: Option<Vec<String>>,
) -> Result<Option<k8s_openapi::api::authentication::v1::TokenReviewStatus>, ReviewError> {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    let api: kube::Api<TokenReview> = kube::Api::all(client.clone());
    let tr = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences,
        },
        ..Default::default()
    };
    let out = api
        .create(&kube::api::PostParams::default(), &tr)
        .await
        .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
    Ok(out.status)
}

/// Pure: the pod identity in a TokenReview status, or why there is none.
pub fn identity_from_review(
    st: Option<&k8s_openapi::api::authentication::v1::TokenReviewStatus>,
) -> Result<PodIdentity, ReviewError> {
    let st = st.ok_or_else(|| ReviewError::Unauthenticated("no status".into()))?;
    if st.authenticated != Some(true) {
        return Err(ReviewError::Unauthenticated(
            st.error
                .clone()
                .unwrap_or_else(|| "not authenticated".into()),
        ));
    }
    if let Some(aud) = &st.audiences {
        if !aud.iter().any(|a| a == TOKEN_AUDIENCE) {
            return Err(ReviewError::Unauthenticated(format!(
                "audience {TOKEN_AUDIENCE} not granted"
            )));
        }
    }
    let user = st
        .user
        .as_ref()
        .ok_or_else(|| ReviewError::Unauthenticated("no user".into()))?;
    let username = user.username.clone().unwrap_or_default();
    let namespace = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split(':').next())
        .ok_or_else(|| {
            ReviewError::Unauthenticated(format!("{username} is not a service account"))
        })?
        .to_string();
    let extra = |k: &str| {
        user.extra
            .as_ref()
            .and_then(|e| e.get(k))
            .and_then(|v| v.first())
            .cloned()
    };
    let name = extra("authentication.kubernetes.io/pod-name")
        .ok_or_else(|| ReviewError::Unauthenticated("token is not bound to a pod".into()))?;
    let uid = extra("authentication.kubernetes.io/pod-uid")
        .ok_or_else(|| ReviewError::Unauthenticated("token is not bound to a pod".into()))?;
    Ok(PodIdentity {
        namespace,
        name,
        uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::TokenReviewStatus;

    fn status(v: serde_json::Value) -> TokenReviewStatus {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn identity_from_a_bound_token() {
        let st = status(serde_json::json!({
            "authenticated": true, "audiences": ["kube-standby"],
            "user": {"username": "system:serviceaccount:prod:default",
                     "extra": {"authentication.kubernetes.io/pod-name": ["db-0"], "authentication.kubernetes.io/pod-uid": ["u1"]}}
        }));
        assert_eq!(
            identity_from_review(Some(&st)).unwrap(),
            PodIdentity {
                namespace: "prod".into(),
                name: "db-0".into(),
                uid: "u1".into()
            }
        );
    }

    #[test]
    fn rejections() {
        let cases = [
            serde_json::json!({"authenticated": false, "error": "expired"}),
            serde_json::json!({"authenticated": true, "audiences": ["other"], "user": {"username": "system:serviceaccount:a:b"}}),
            serde_json::json!({"authenticated": true, "user": {"username": "alice"}}),
            serde_json::json!({"authenticated": true, "user": {"username": "system:serviceaccount:a:b"}}),
        ];
        for c in cases {
            assert!(
                matches!(
                    identity_from_review(Some(&status(c.clone()))),
                    Err(ReviewError::Unauthenticated(_))
                ),
                "{c}"
            );
        }
        assert!(identity_from_review(None).is_err());
    }
}
