//! Admission request limits: how many reviews run at once, how large a body may be, how
//! long reading it may take, and how many body bytes may be buffered across all requests.
//!
//! Invariants:
//! - Nothing waits for a slot: a request over the concurrency limit or the buffer budget is
//!   answered at once (503), never queued.
//! - A declared `Content-Length` over the limit is refused (413) before one body byte is
//!   read, so `Expect: 100-continue` clients and HTTP/2 streams get the answer, not a reset.
//! - Every buffered body byte is paid for from the shared budget before it is stored (the
//!   buffer's capacity is what is paid for), and the payment is returned when the review ends.
//! - Reading a body never takes longer than `body_read_timeout` (408 after that).
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Plain limits (the CLI fills them from flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Largest AdmissionReview body accepted (bytes).
    pub max_body_bytes: usize,
    /// Longest time reading one body may take.
    pub body_read_timeout: Duration,
    /// Admission reviews in progress at once (reading, parsing or answering).
    pub max_concurrent: usize,
    /// Body bytes buffered at once, across every request in progress.
    pub max_buffered_bytes: usize,
}

/// 4 MiB: the API server refuses requests over 3 MiB and etcd stores at most 1.5 MiB, so
/// an AdmissionReview of any pod that can exist fits with room for defaulting and JSON.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Body bytes buffered at once across all requests (a fixed share of the chart's 256Mi).
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 32 * 1024 * 1024;
pub const DEFAULT_MAX_CONCURRENT: usize = 32;
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// What a body of unknown length (chunked) is first given before it grows.
const CHUNKED_FIRST_RESERVE: usize = 16 * 1024;

impl Default for AdmissionLimits {
    fn default() -> Self {
        AdmissionLimits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

impl AdmissionLimits {
    /// Flag combinations that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_body_bytes < 1024 {
            return Err("--max-body-bytes must be at least 1024".into());
        }
        if self.max_buffered_bytes < self.max_body_bytes {
            return Err(format!(
                "--max-buffered-body-bytes ({}) must be at least --max-body-bytes ({}), or no body of the largest size could ever be read",
                self.max_buffered_bytes, self.max_body_bytes
            ));
        }
        if self.max_concurrent == 0 {
            return Err("--max-concurrent-admissions must be at least 1".into());
        }
        if self.body_read_timeout.is_zero() {
            return Err("--body-read-timeout-seconds must be at least 1".into());
        }
        Ok(())
    }
}

/// Why a body was not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("too many admission requests in progress (limit {0}); retry")]
    Busy(usize),
    #[error("admission request bodies already fill the {0}-byte buffer budget; retry")]
    BufferFull(usize),
    #[error("request body not received within {0:?}")]
    Timeout(Duration),
    #[error("request body could not be read: {0}")]
    Read(String),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Busy(_) | BodyError::BufferFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            BodyError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }
    /// Metric outcome label.
    pub fn outcome(&self) -> &'static str {
        match self {
            BodyError::Busy(_) | BodyError::BufferFull(_) => "busy",
            _ => "rejected",
        }
    }
}

/// The shared state behind the limits: a slot per review in progress, a permit per
/// buffered byte.
#[derive(Debug)]
pub struct AdmissionGate {
    limits: AdmissionLimits,
    slots: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

/// Held while one review is in progress: its slot and the bytes its body holds.
#[derive(Debug)]
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    bytes: Option<OwnedSemaphorePermit>,
}

impl AdmissionGate {
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(AdmissionGate {
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            bytes: Arc::new(Semaphore::new(
                limits.max_buffered_bytes.min(Semaphore::MAX_PERMITS),
            )),
            limits,
        })
    }

    pub fn limits(&self) -> &AdmissionLimits {
        &self.limits
    }

    /// Take a slot, or say at once that there is none.
    pub fn enter(&self) -> Result<Admitted, BodyError> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| BodyError::Busy(self.limits.max_concurrent))?;
        Ok(Admitted {
            _slot: slot,
            bytes: None,
        })
    }

    /// Pay for `more` bytes of buffer, or fail at once.
    fn pay(&self, admitted: &mut Admitted, more: usize) -> Result<(), BodyError> {
        if more == 0 {
            return Ok(());
        }
        let n = u32::try_from(more).map_err(|_| BodyError::TooLarge {
            limit: self.limits.max_body_bytes,
        })?;
        let permit = self
            .bytes
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| BodyError::BufferFull(self.limits.max_buffered_bytes))?;
        match admitted.bytes.as_mut() {
            Some(p) => p.merge(permit),
            None => admitted.bytes = Some(permit),
        }
        Ok(())
    }

    /// Read a whole body within the limits. `headers` are checked first: a declared
    /// length over the limit is refused before the body is touched.
    pub async fn read_body(
        &self,
        admitted: &mut Admitted,
        headers: &HeaderMap,
        body: &mut Body,
    ) -> Result<Vec<u8>, BodyError> {
        let max = self.limits.max_body_bytes;
        let declared = content_length(headers);
        if declared.is_some_and(|n| n > max as u64) {
            return Err(BodyError::TooLarge { limit: max });
        }
        let first = declared.map_or(CHUNKED_FIRST_RESERVE.min(max), |n| n as usize);
        self.pay(admitted, first)?;
        let mut buf = Vec::with_capacity(first);
        let timeout = self.limits.body_read_timeout;
        match tokio::time::timeout(timeout, self.fill(admitted, body, &mut buf)).await {
            Ok(Ok(())) => Ok(buf),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BodyError::Timeout(timeout)),
        }
    }

    async fn fill(
        &self,
        admitted: &mut Admitted,
        body: &mut Body,
        buf: &mut Vec<u8>,
    ) -> Result<(), BodyError> {
        let max = self.limits.max_body_bytes;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let needed = buf.len() + data.len();
            if needed > max {
                return Err(BodyError::TooLarge { limit: max });
            }
            if needed > buf.capacity() {
                let grown = needed.max(buf.capacity() * 2).min(max);
                self.pay(admitted, grown - buf.capacity())?;
                buf.reserve_exact(grown - buf.len());
            }
            buf.extend_from_slice(&data);
        }
        Ok(())
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;

    fn gate(max_body: usize, budget: usize, slots: usize) -> Arc<AdmissionGate> {
        AdmissionGate::new(AdmissionLimits {
            max_body_bytes: max_body,
            body_read_timeout: Duration::from_millis(200),
            max_concurrent: slots,
            max_buffered_bytes: budget,
        })
    }

    fn headers(len: Option<usize>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(n) = len {
            h.insert(header::CONTENT_LENGTH, n.to_string().parse().unwrap());
        }
        h
    }

    fn chunked(parts: Vec<Vec<u8>>) -> Body {
        let s = futures::stream::iter(
            parts
                .into_iter()
                .map(|p| Ok::<_, std::io::Error>(Bytes::from(p))),
        );
        Body::from_stream(s)
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_without_reading() {
        let g = gate(1024, 4096, 2);
        let mut a = g.enter().unwrap();
        // A body that would fail if it were polled.
        let mut body = Body::from_stream(futures::stream::iter([Err::<Bytes, _>(
            std::io::Error::other("polled"),
        )]));
        let e = g
            .read_body(&mut a, &headers(Some(2000)), &mut body)
            .await
            .unwrap_err();
        assert_eq!(e, BodyError::TooLarge { limit: 1024 });
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_chunked_body_over_the_limit_stops_at_the_limit() {
        let g = gate(1024, 4096, 2);
        let mut a = g.enter().unwrap();
        let mut body = chunked(vec![vec![b'a'; 600], vec![b'b'; 600], vec![b'c'; 600]]);
        let e = g
            .read_body(&mut a, &headers(None), &mut body)
            .await
            .unwrap_err();
        assert_eq!(e, BodyError::TooLarge { limit: 1024 });
    }

    #[tokio::test]
    async fn bodies_within_the_limit_are_read_whole() {
        let g = gate(4096, 8192, 2);
        let mut a = g.enter().unwrap();
        let parts: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 300]).collect();
        let want: Vec<u8> = parts.concat();
        let mut body = chunked(parts);
        assert_eq!(
            g.read_body(&mut a, &headers(None), &mut body)
                .await
                .unwrap(),
            want
        );
        let mut b = g.enter().unwrap();
        let mut body = Body::from(want.clone());
        assert_eq!(
            g.read_body(&mut b, &headers(Some(want.len())), &mut body)
                .await
                .unwrap(),
            want
        );
    }

    #[tokio::test]
    async fn slots_are_never_queued_and_come_back() {
        let g = gate(1024, 4096, 2);
        let a = g.enter().unwrap();
        let _b = g.enter().unwrap();
        assert_eq!(g.enter().unwrap_err(), BodyError::Busy(2));
        drop(a);
        assert!(g.enter().is_ok());
    }

    #[tokio::test]
    async fn the_buffer_budget_is_shared_and_returned() {
        let g = gate(3000, 4000, 4);
        let mut a = g.enter().unwrap();
        let mut body = Body::from(vec![1u8; 3000]);
        g.read_body(&mut a, &headers(Some(3000)), &mut body)
            .await
            .unwrap();
        // 3000 of 4000 bytes are held by `a`: a second 3000-byte body does not fit.
        let mut b = g.enter().unwrap();
        let mut body = Body::from(vec![1u8; 3000]);
        let e = g
            .read_body(&mut b, &headers(Some(3000)), &mut body)
            .await
            .unwrap_err();
        assert_eq!(e, BodyError::BufferFull(4000));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        drop(a);
        let mut c = g.enter().unwrap();
        let mut body = Body::from(vec![1u8; 3000]);
        assert!(g
            .read_body(&mut c, &headers(Some(3000)), &mut body)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let g = gate(4096, 8192, 2);
        let mut a = g.enter().unwrap();
        let stalled = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"{"))])
            .chain(futures::stream::pending());
        let mut body = Body::from_stream(stalled);
        let e = g
            .read_body(&mut a, &headers(Some(100)), &mut body)
            .await
            .unwrap_err();
        assert_eq!(e, BodyError::Timeout(Duration::from_millis(200)));
        assert_eq!(e.status(), StatusCode::REQUEST_TIMEOUT);
    }

    #[test]
    fn impossible_combinations_are_refused() {
        let ok = AdmissionLimits::default();
        assert_eq!(ok.validate(), Ok(()));
        let small_budget = AdmissionLimits {
            max_buffered_bytes: ok.max_body_bytes - 1,
            ..ok.clone()
        };
        assert!(small_budget
            .validate()
            .unwrap_err()
            .contains("--max-buffered-body-bytes"));
        let no_slots = AdmissionLimits {
            max_concurrent: 0,
            ..ok.clone()
        };
        assert!(no_slots.validate().is_err());
    }

    use futures::StreamExt;
}
