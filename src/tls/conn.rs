//! The connection loop shared by the TLS webhook port and the plain operations port.
//!
//! Invariants:
//! - At most `max_connections` connections are open; one more is accepted and closed at
//!   once (its client sees the connection end, the process keeps its descriptors).
//! - A TLS handshake that does not finish within `tls_handshake_timeout` is dropped.
//! - HTTP/1.1: a request head (the first, or the next on a kept-alive connection) that does
//!   not arrive within `header_read_timeout` ends the connection.
//! - Any connection with no request in progress for `idle_timeout` is shut down gracefully
//!   (HTTP/2: GOAWAY), and dropped if it has not ended `CLOSE_GRACE` later. Requests in
//!   progress are bounded by their handlers (body read timeout, the 30 s release poll).
//! - HTTP/2 connections carry at most `max_http2_streams` concurrent streams.
//! - On shutdown the listener closes first; every open connection is then shut down
//!   gracefully (requests in flight are answered) and the loop returns once all have ended,
//!   or after twice `CLOSE_GRACE`.
//! - Accept errors (e.g. out of file descriptors) are logged at most once per
//!   `LOG_EVERY`, with the number left out.
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::Instant as TokioInstant;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Connection limits (plain data; the CLI fills them from flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_http2_streams: u32,
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_HTTP2_STREAMS: u32 = 32;
/// The operations port (probes, metrics scrapes) needs few connections.
pub const OPS_MAX_CONNECTIONS: usize = 64;
/// How long a connection told to shut down may take to end.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// At most one log line per kind of accept problem this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// HTTP/1.1 read buffer: request heads are small; bodies stream through.
const H1_MAX_BUF: usize = 64 * 1024;
/// HTTP/2 header block limit.
const H2_MAX_HEADER_LIST: u32 = 16 * 1024;

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_http2_streams: DEFAULT_MAX_HTTP2_STREAMS,
        }
    }
}

impl ConnLimits {
    /// Flag combinations that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.max_http2_streams == 0 {
            return Err("--max-http2-streams must be at least 1".into());
        }
        for (flag, d) in [
            (
                "--tls-handshake-timeout-seconds",
                self.tls_handshake_timeout,
            ),
            ("--header-read-timeout-seconds", self.header_read_timeout),
            ("--idle-timeout-seconds", self.idle_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        Ok(())
    }

    /// The same timeouts with the operations port's connection cap.
    pub fn for_ops(&self) -> ConnLimits {
        ConnLimits {
            max_connections: OPS_MAX_CONNECTIONS.min(self.max_connections),
            ..self.clone()
        }
    }

    fn builder(&self) -> Builder<TokioExecutor> {
        let mut b = Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(H1_MAX_BUF);
        b.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_http2_streams)
            .max_header_list_size(H2_MAX_HEADER_LIST);
        b
    }
}

/// Lets one line through per `every`, counting what it holds back.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl LogLimiter {
    pub fn new(every: Duration) -> Self {
        LogLimiter {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(n)`: log now, mentioning the `n` occurrences left out since the last line.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

/// Requests in progress on one connection and when the last one ended.
struct Activity {
    born: TokioInstant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            born: TokioInstant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        })
    }
    fn touch(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
    }
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
    /// Resolves once nothing has been in progress for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let wait = if self.in_flight.load(Ordering::Acquire) > 0 {
                idle
            } else {
                let since = self.born + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
                match (since + idle).checked_duration_since(TokioInstant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Serve HTTP (1.1 or h2) on one accepted connection until it ends or goes idle.
async fn serve_connection<I>(
    io: I,
    app: Router,
    builder: Builder<TokioExecutor>,
    idle: Duration,
    mut closing: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let tracker = activity.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = tracker.begin();
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await;
            drop(guard);
            resp
        }
    });
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = activity.idle_for(idle) => None,
        // The server stops: requests in flight are answered, then the connection closes.
        _ = closing.wait_for(|c| *c) => None,
    };
    let result = match ended {
        Some(r) => r,
        None => {
            tracing::debug!("closing a connection (idle, or the server stops)");
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, conn).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Accept connections until `shutdown`, within `limits`; `handle` runs each one.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send,
    handle: F,
) where
    F: Fn(TcpStream, std::net::SocketAddr, tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let mut accept_errors = LogLimiter::new(LOG_EVERY);
    let mut refusals = LogLimiter::new(LOG_EVERY);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    if let Some(left_out) = accept_errors.allow(Instant::now()) {
                        tracing::warn!(error = %e, left_out, "accept failed (logged at most every {}s)", LOG_EVERY.as_secs());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            if let Some(left_out) = refusals.allow(Instant::now()) {
                tracing::warn!(%peer, left_out, limit = limits.max_connections, "connection refused: too many open connections (logged at most every {}s)", LOG_EVERY.as_secs());
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let fut = handle(tcp, peer, closing_rx.clone());
        tokio::spawn(async move {
            fut.await;
            drop(slot);
        });
    }
    // Stop accepting; let every open connection answer what is in flight and close. Each
    // closes within CLOSE_GRACE of being told (in-flight work is bounded by its own
    // timeouts), so waiting for every slot to come back ends.
    drop(listener);
    let _ = closing.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(CLOSE_GRACE * 2, slots.acquire_many(all)).await;
    if drained.is_err() {
        tracing::warn!("connections still open after the drain period; closing them");
    }
}

/// Serve `app` over TLS on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let builder = limits.builder();
    let (handshake, idle) = (limits.tls_handshake_timeout, limits.idle_timeout);
    accept_loop(listener, limits, shutdown, move |tcp, peer, closing| {
        let accept = acceptor.accept(tcp);
        let (app, builder) = (app.clone(), builder.clone());
        async move {
            let tls = match tokio::time::timeout(handshake, accept).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            serve_connection(tls, app, builder, idle, closing).await;
        }
    })
    .await
}

/// Serve `app` over plain HTTP on `listener` until `shutdown` resolves (the operations port).
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let builder = limits.builder();
    let idle = limits.idle_timeout;
    accept_loop(listener, limits, shutdown, move |tcp, _peer, closing| {
        serve_connection(tcp, app.clone(), builder.clone(), idle, closing)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_limiter_lets_one_line_through_per_period() {
        let mut l = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        let mut lines = 0;
        // 20 errors a second for 25 seconds.
        for i in 1..500u64 {
            if l.allow(t0 + Duration::from_millis(50 * i)).is_some() {
                lines += 1;
            }
        }
        assert_eq!(lines, 2, "at 10 s and 20 s");
        assert_eq!(l.allow(t0 + Duration::from_secs(31)), Some(99));
    }

    #[tokio::test(start_paused = true)]
    async fn activity_is_idle_only_with_nothing_in_progress() {
        let a = Activity::new();
        let guard = a.begin();
        let idle = tokio::spawn({
            let a = a.clone();
            async move { a.idle_for(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!idle.is_finished(), "a request in progress is not idle");
        drop(guard);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(idle.is_finished());
    }

    #[test]
    fn zero_limits_are_refused() {
        assert_eq!(ConnLimits::default().validate(), Ok(()));
        let l = ConnLimits {
            idle_timeout: Duration::ZERO,
            ..ConnLimits::default()
        };
        assert!(l.validate().unwrap_err().contains("--idle-timeout-seconds"));
        let l = ConnLimits {
            max_connections: 0,
            ..ConnLimits::default()
        };
        assert!(l.validate().is_err());
    }
}
