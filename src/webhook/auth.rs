//! What the token-authenticated endpoints (`/release`, `/v1/assignment`, `/v1/claims`)
//! share: the bearer token of a request, JSON error answers, and a short-lived cache of
//! review results keyed by the SHA-256 of the token (never the token itself).
//!
//! Invariants: a cached entry is never served after its time to live; the cache holds at
//! most [`MAX_ENTRIES`] entries (it is emptied when full: a flood of distinct tokens costs
//! reviews, never memory).
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};

use super::ErrorBody;

/// Most entries a [`TtlCache`] keeps.
pub const MAX_ENTRIES: usize = 10_000;

/// The bearer token of a request, if it carries a non-empty one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The cache key of a token.
pub fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A JSON error answer: `{"error": "...", "status": N}`.
pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: msg.into(),
            status: status.as_u16(),
        }),
    )
        .into_response()
}

/// Values remembered for a while.
pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            entries: Mutex::default(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The value stored for `key` less than the time to live ago.
    pub fn get(&self, key: &K) -> Option<V> {
        let now = Instant::now();
        let c = self.entries.lock().ok()?;
        c.get(key)
            .filter(|(_, at)| now.duration_since(*at) < self.ttl)
            .map(|(v, _)| v.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        let now = Instant::now();
        if let Ok(mut c) = self.entries.lock() {
            c.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
            if c.len() >= MAX_ENTRIES {
                c.clear();
            }
            c.insert(key, (value, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_cache_stays_bounded() {
        let c = TtlCache::new(Duration::from_millis(30));
        c.insert(1u32, "a");
        assert_eq!(c.get(&1), Some("a"));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get(&1), None);
        let c = TtlCache::new(Duration::from_secs(60));
        for i in 0..(MAX_ENTRIES as u32 + 5) {
            c.insert(i, i);
        }
        assert!(c.entries.lock().unwrap().len() <= MAX_ENTRIES);
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer  ".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
