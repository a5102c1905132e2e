//! The HTTP busy probe: one GET to the pod's own IP, bounded in time, no redirects.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;

use super::BusyState;
use crate::api::probe::HttpProbe;

/// Probes with a global bound on in-flight requests.
#[derive(Clone)]
pub struct HttpProber {
    permits: Arc<Semaphore>,
}

impl HttpProber {
    pub fn new(max_in_flight: usize) -> Self {
        HttpProber {
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    /// Probe once. Ok(state) on any HTTP answer, Err(reason) when there was none in time.
    pub async fn probe(&self, ip: IpAddr, cfg: &HttpProbe) -> Result<BusyState, String> {
        let timeout = Duration::from_secs(cfg.timeout_seconds.max(1) as u64);
        let started = Instant::now();
        let _permit = tokio::time::timeout(timeout, self.permits.acquire())
            .await
            .map_err(|_| "no probe slot free within the timeout".to_string())?
            .map_err(|_| "prober closed".to_string())?;
        let left = timeout.saturating_sub(started.elapsed());
        let ok = tokio::time::timeout(left, get_status(ip, cfg))
            .await
            .map_err(|_| format!("timed out after {}s", timeout.as_secs()))??;
        let two_xx = (200..300).contains(&ok);
        Ok(if two_xx == cfg.success_is_busy {
            BusyState::Busy
        } else {
            BusyState::Idle
        })
    }
}

fn port(cfg: &HttpProbe) -> Result<u16, String> {
    u16::try_from(cfg.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {}", cfg.port))
}

/// A bare HTTP/1.1 GET; returns the status code. Redirects are answers, not followed.
async fn get_status(ip: IpAddr, cfg: &HttpProbe) -> Result<u16, String> {
    let addr = SocketAddr::new(ip, port(cfg)?);
    let path = if cfg.path.starts_with('/') {
        cfg.path.clone()
    } else {
        format!("/{}", cfg.path)
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let host = match ip {
        IpAddr::V4(v4) => format!("{v4}:{}", addr.port()),
        IpAddr::V6(v6) => format!("[{v6}]:{}", addr.port()),
    };
    let req = hyper::Request::get(path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "kube-standby-busy-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad probe path {path:?}: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    conn.abort();
    Ok(resp.status().as_u16())
}
