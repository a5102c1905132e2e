//! The in-pod agent (`kube-standby agent`): asks the operator over TLS whether this pod
//! is released (a long-poll), retries with backoff while the operator is unreachable,
//! and only on a positive answer writes the start signal (atomically) or exits 0 (`--once`).
//! The release's epoch is written (atomically) before either: next to the signal file, or
//! to `--epoch-file` with `--once` (the init gate), so the app never starts without it.
//!
//! Stopping: SIGTERM or SIGINT ends the agent at once with exit code 0 in both modes, at
//! any point (long-polling, backing off, or staying up after the release) and never writes
//! the signal on that path. The agent is PID 1 of its container, where a signal without a
//! handler is ignored, so the handlers are installed before anything else.
//!
//! Exit codes: 0 released (`--once`) or stopped by a signal; 1 a permanent error (bad
//! configuration at once; the operator's certificate not trusted by the injected CA for
//! [`UNTRUSTED_GRACE`]) or no answer
//! for `give_up_after`; the one-line reason goes to stderr, which the kubelet copies into
//! the container status (`terminationMessagePolicy: FallbackToLogsOnError`) for the
//! controller's `AgentUnreachable` condition.
//!
//! Claim agent (`--assignment-file`): follows `GET /v1/assignment` (long-polls that end
//! when this pod's assignment changes) and keeps the file equal to the last answer,
//! written atomically; removed while the pod carries no claim. Errors are retried with
//! the same backoff; it exits like the release agent (bad configuration, an untrusted
//! certificate that lasts, `give_up_after` without an answer).
//!
//! Invariants: an answer is read up to [`MAX_ANSWER_BYTES`] and no further (the agent's
//! memory stays bounded whatever the endpoint sends); error messages quote at most a short,
//! escaped excerpt of an answer; the signal is written on a positive answer only.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::api::claim::Assignment;
use crate::api::singleton::ReleaseAnswer;
use crate::telemetry::Untrusted;

/// Largest answer the agent reads (a real one is about a hundred bytes).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Default of `--give-up-seconds`: well past an operator restart or leader change.
pub const DEFAULT_GIVE_UP_SECONDS: u64 = 120;

/// Where the kubelet reads a container's termination message from (its default path).
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// Record a fatal error as the container's termination message, when the kubelet
/// provides the file (in a pod); best effort, the message also goes to stderr.
pub fn write_termination_message(path: &Path, message: &str) {
    if path.exists() {
        let _ = std::fs::write(path, message.as_bytes());
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgentError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot reach the operator: {0}")]
    Unreachable(String),
    #[error("the operator rejected our token: {0}")]
    Unauthorized(String),
    #[error("the operator refused this pod: {0}")]
    Forbidden(String),
    #[error("unexpected answer from the operator: {0}")]
    Protocol(String),
    #[error(
        "the operator's certificate is not trusted with the injected CA (KUBE_STANDBY_CA): {0}"
    )]
    Untrusted(String),
    #[error("no release answer from the operator for {seconds}s; last error: {last}")]
    GaveUp { seconds: u64, last: String },
}

/// What to do once released.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Init gate: return (exit 0).
    Once,
    /// Init gate: write the release's epoch to this file (atomically), then return (exit
    /// 0); the app, started after the init gate, reads it there.
    OnceWithEpoch(PathBuf),
    /// Status sidecar: write this file atomically, then stay up.
    Signal(PathBuf),
    /// Claim agent: keep this pod's assignment in this file (see [`follow_assignment`]);
    /// with `once`, end after the first assignment.
    Assignment { file: PathBuf, once: bool },
}

/// How long the operator's certificate may go on failing verification with the injected CA
/// before the agent gives up (exit 1, the message in the container status): long enough
/// to ride out a replica briefly serving another certificate, short enough to show a
/// wrong CA within seconds.
pub const UNTRUSTED_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub operator_url: String,
    /// What the agent trusts for the operator: CA pins (`sha256:<hex>,...`, what the
    /// webhook injects) or a PEM CA bundle.
    pub ca: String,
    pub token_file: PathBuf,
    pub pod_uid: Option<String>,
    pub poll_seconds: u64,
    pub max_backoff: Duration,
    /// Exit non-zero after this long without an answer (`None`: retry forever).
    pub give_up_after: Option<Duration>,
}

/// A TLS client config trusting exactly the given CA pins or PEM CA bundle.
pub fn tls_connector(ca: &str) -> Result<TlsConnector, AgentError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| AgentError::Config(e.to_string()))?;
    // What the webhook injects: the pins of the operator's CA keys (see tls::pin).
    if crate::tls::pin::is_pin_list(ca) {
        let pins = crate::tls::pin::parse_pins(ca).map_err(AgentError::Config)?;
        let verifier = crate::tls::pin::PinnedVerifier::new(pins, provider);
        let cfg = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        return Ok(TlsConnector::from(Arc::new(cfg)));
    }
    // A PEM bundle (pods injected by earlier versions, or an agent run by hand).
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        let cert = cert.map_err(|e| AgentError::Config(format!("CA bundle: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| AgentError::Config(format!("CA bundle: {e}")))?;
    }
    if roots.is_empty() {
        return Err(AgentError::Config("CA bundle holds no certificate".into()));
    }
    let cfg = builder.with_root_certificates(roots).with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// Aborts the connection task when the request is done or abandoned.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn too_large() -> AgentError {
    AgentError::Protocol(format!(
        "answer larger than {MAX_ANSWER_BYTES} bytes; not read further"
    ))
}

/// Read an answer body up to [`MAX_ANSWER_BYTES`].
async fn read_capped(resp: hyper::Response<hyper::body::Incoming>) -> Result<Vec<u8>, AgentError> {
    let declared = resp
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_ANSWER_BYTES as u64) {
        return Err(too_large());
    }
    match Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(AgentError::Unreachable(format!(
            "body: {}",
            Untrusted::long(&e.to_string())
        ))),
    }
}

/// A failed TLS handshake: a certificate the injected CA does not verify is permanent,
/// anything else (reset, timeout, an operator serving no CA for the pins) is transient.
fn tls_error(e: std::io::Error) -> AgentError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        // An operator of an earlier version serves no CA to check the pins against: retried
        // like an unreachable one (it is replaced within a rolling upgrade).
        Some(r) if crate::tls::pin::is_anchor_not_served(r) => {
            AgentError::Unreachable(format!("TLS: {}", crate::tls::pin::AnchorNotServed))
        }
        Some(
            r @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType),
        ) => AgentError::Untrusted(r.to_string()),
        _ => AgentError::Unreachable(format!("TLS: {e}")),
    }
}

/// One HTTPS GET; returns (status, ETag, body).
async fn https_get(
    connector: &TlsConnector,
    url: &Uri,
    bearer: &str,
    timeout: Duration,
) -> Result<(u16, Option<String>, Vec<u8>), AgentError> {
    let host = url
        .host()
        .ok_or_else(|| AgentError::Config(format!("no host in {url}")))?
        .to_string();
    let port = url.port_u16().unwrap_or(443);
    let server_name = ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|e| AgentError::Config(format!("bad host {host}: {e}")))?;
    let fut = async {
        let tcp = tokio::net::TcpStream::connect((
            host.trim_start_matches('[').trim_end_matches(']'),
            port,
        ))
        .await
        .map_err(|e| AgentError::Unreachable(format!("connect {host}:{port}: {e}")))?;
        let tls = connector
            .connect(server_name, tcp)
            .await
            .map_err(tls_error)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| AgentError::Unreachable(format!("http: {e}")))?;
        let _conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let req = hyper::Request::get(url.clone())
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .header(hyper::header::AUTHORIZATION, format!("Bearer {bearer}"))
            .header(hyper::header::USER_AGENT, "kube-standby-agent")
            .body(Empty::<Bytes>::new())
            .map_err(|e| AgentError::Config(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| AgentError::Unreachable(format!("request: {e}")))?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get(hyper::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_matches('"').to_string());
        let body = read_capped(resp).await?;
        Ok((status, etag, body))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| AgentError::Unreachable("timed out".into()))?
}

/// Ask once (a long-poll of up to `poll_seconds`). Ok(true) only on a positive answer.
pub async fn check_once(cfg: &AgentConfig) -> Result<bool, AgentError> {
    ask_once(cfg).await.map(|a| a.released)
}

/// Ask once (a long-poll of up to `poll_seconds`): the operator's whole answer.
pub async fn ask_once(cfg: &AgentConfig) -> Result<ReleaseAnswer, AgentError> {
    let connector = tls_connector(&cfg.ca)?;
    let token = std::fs::read_to_string(&cfg.token_file)
        .map_err(|e| AgentError::Config(format!("token file {}: {e}", cfg.token_file.display())))?;
    let mut pq = format!("/release?timeoutSeconds={}", cfg.poll_seconds);
    if let Some(uid) = &cfg.pod_uid {
        pq.push_str(&format!("&uid={uid}"));
    }
    let uri = operator_uri(cfg, &pq)?;
    let (status, _, body) = https_get(
        &connector,
        &uri,
        token.trim(),
        Duration::from_secs(cfg.poll_seconds + 10),
    )
    .await?;
    match status {
        200 => serde_json::from_slice::<ReleaseAnswer>(&body).map_err(|e| {
            AgentError::Protocol(format!(
                "{}: {}",
                Untrusted::long(&e.to_string()),
                excerpt(&body)
            ))
        }),
        s => Err(status_error(s, &body)),
    }
}

/// A short, escaped excerpt of an answer, for error messages.
fn excerpt(body: &[u8]) -> String {
    Untrusted::long(&String::from_utf8_lossy(body)).to_string()
}

/// The error of an answer that is not a success.
fn status_error(status: u16, body: &[u8]) -> AgentError {
    let text = excerpt(body);
    match status {
        401 => AgentError::Unauthorized(text),
        403 => AgentError::Forbidden(text),
        s if s >= 500 => AgentError::Unreachable(format!("status {s}: {text}")),
        s => AgentError::Protocol(format!("status {s}: {text}")),
    }
}

/// The operator's URL for `path_and_query`, checked to be https.
fn operator_uri(cfg: &AgentConfig, path_and_query: &str) -> Result<Uri, AgentError> {
    let url = format!("{}{path_and_query}", cfg.operator_url.trim_end_matches('/'));
    let uri: Uri = url
        .parse()
        .map_err(|e| AgentError::Config(format!("operator URL {url}: {e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(AgentError::Config(format!(
            "operator URL must be https: {url}"
        )));
    }
    Ok(uri)
}

/// The tag of "no assignment" (as `/v1/assignment` writes it).
pub const NO_ASSIGNMENT_TAG: &str = "none";

/// Ask `/v1/assignment` once: a long-poll of up to `poll_seconds` that returns early when
/// this pod's assignment differs from the one tagged `since`. The assignment (None: the
/// pod carries no claim) and its tag.
pub async fn ask_assignment(
    cfg: &AgentConfig,
    since: &str,
) -> Result<(Option<Assignment>, String), AgentError> {
    let connector = tls_connector(&cfg.ca)?;
    let token = std::fs::read_to_string(&cfg.token_file)
        .map_err(|e| AgentError::Config(format!("token file {}: {e}", cfg.token_file.display())))?;
    let mut pq = format!("/v1/assignment?wait={}", cfg.poll_seconds);
    if since.bytes().all(|b| b.is_ascii_alphanumeric()) {
        pq.push_str(&format!("&since={since}"));
    }
    if let Some(uid) = &cfg.pod_uid {
        pq.push_str(&format!("&uid={uid}"));
    }
    let uri = operator_uri(cfg, &pq)?;
    let (status, etag, body) = https_get(
        &connector,
        &uri,
        token.trim(),
        Duration::from_secs(cfg.poll_seconds + 10),
    )
    .await?;
    match status {
        200 => {
            let a = serde_json::from_slice::<Assignment>(&body).map_err(|e| {
                AgentError::Protocol(format!(
                    "{}: {}",
                    Untrusted::long(&e.to_string()),
                    excerpt(&body)
                ))
            })?;
            // Without a tag, the content itself tells changes apart.
            let tag = etag.unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            Ok((Some(a), tag))
        }
        204 => Ok((None, NO_ASSIGNMENT_TAG.into())),
        s => Err(status_error(s, &body)),
    }
}

/// How the agent keeps asking after errors: exponential backoff, fatal once a bad
/// certificate lasts [`UNTRUSTED_GRACE`] or nothing answers for `give_up_after`.
struct Retry {
    backoff: Duration,
    failing_since: Option<std::time::Instant>,
}

impl Retry {
    fn new() -> Self {
        Retry {
            backoff: Duration::from_millis(100),
            failing_since: None,
        }
    }

    fn ok(&mut self) {
        self.backoff = Duration::from_millis(100);
        self.failing_since = None;
    }

    /// After an error: Err when it is fatal, else wait the backoff.
    async fn failed(
        &mut self,
        cfg: &AgentConfig,
        e: AgentError,
        what: &str,
    ) -> Result<(), AgentError> {
        if matches!(e, AgentError::Config(_)) {
            return Err(e);
        }
        let since = *self
            .failing_since
            .get_or_insert_with(std::time::Instant::now);
        // A certificate the injected CA does not verify is permanent unless the
        // operator is restarting onto its kept CA: fatal once it lasts.
        if matches!(e, AgentError::Untrusted(_)) && since.elapsed() >= UNTRUSTED_GRACE {
            return Err(e);
        }
        if let Some(limit) = cfg.give_up_after {
            if since.elapsed() >= limit {
                return Err(AgentError::GaveUp {
                    seconds: limit.as_secs(),
                    last: e.to_string(),
                });
            }
        }
        tracing::warn!(error = %e, retry_in_ms = self.backoff.as_millis() as u64, "{what} failed; retrying");
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(cfg.max_backoff);
        Ok(())
    }
}

/// Put `a` in `path` (atomically), or remove the file when the pod carries no claim.
pub fn write_assignment(path: &Path, a: Option<&Assignment>) -> Result<(), AgentError> {
    let io = |e: std::io::Error| AgentError::Config(format!("writing {}: {e}", path.display()));
    match a {
        Some(a) => {
            let mut text =
                serde_json::to_vec_pretty(a).map_err(|e| AgentError::Protocol(e.to_string()))?;
            text.push(b'\n');
            write_atomic(path, &text).map_err(io)
        }
        None => match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        },
    }
}

/// Follow this pod's assignment into `path`: written (atomically) when the pod is claimed
/// and each time the assignment changes, removed when the claim goes. Retries with
/// backoff on errors. Returns after the first assignment when `once` (a Job pod, whose
/// containers must all end for it to complete), else runs until cancelled.
pub async fn follow_assignment(
    cfg: &AgentConfig,
    path: &Path,
    once: bool,
) -> Result<(), AgentError> {
    let mut since: Option<String> = None;
    let mut retry = Retry::new();
    loop {
        let asked = since.as_deref().unwrap_or(NO_ASSIGNMENT_TAG);
        match ask_assignment(cfg, asked).await {
            Ok((a, tag)) => {
                retry.ok();
                if since.as_deref() != Some(tag.as_str()) {
                    write_assignment(path, a.as_ref())?;
                    match &a {
                        Some(a) => {
                            tracing::info!(claim = %a.claim, namespace = %a.namespace, file = %path.display(), "assignment written")
                        }
                        None => tracing::info!(file = %path.display(), "not claimed"),
                    }
                    since = Some(tag);
                }
                if once && a.is_some() {
                    return Ok(());
                }
            }
            Err(e) => retry.failed(cfg, e, "assignment check").await?,
        }
    }
}

/// Ask until released, with exponential backoff on errors. Never returns an error for
/// transient problems; configuration errors are returned at once. The release's epoch,
/// when the operator gave one.
pub async fn wait_released(cfg: &AgentConfig) -> Result<Option<u64>, AgentError> {
    let mut retry = Retry::new();
    loop {
        match ask_once(cfg).await.map(|a| (a.released, a.epoch)) {
            Ok((true, epoch)) => {
                tracing::info!(epoch, "released by the operator");
                return Ok(epoch);
            }
            Ok((false, _)) => {
                tracing::debug!("not released yet; asking again");
                retry.ok();
            }
            Err(e) => retry.failed(cfg, e, "release check").await?,
        }
    }
}

/// Write a file atomically (temp file in the same directory, then rename): a reader sees
/// it whole or not at all.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("signal")
    ));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Write the signal file atomically (temp file in the same directory, then rename).
pub fn write_signal(path: &Path) -> std::io::Result<()> {
    write_atomic(path, b"released\n")
}

/// The epoch file next to the signal file (the wrapper exports it as
/// `STATEFULSINGLETON_EPOCH`).
pub fn epoch_file_for(signal: &Path) -> PathBuf {
    signal
        .parent()
        .unwrap_or(Path::new("."))
        .join(crate::api::singleton::EPOCH_FILE_NAME)
}

/// The wake FIFO next to the signal file (the wrapper blocks opening it for reading).
pub fn wake_fifo_for(signal: &Path) -> PathBuf {
    signal
        .parent()
        .unwrap_or(Path::new("."))
        .join(crate::api::singleton::WAKE_FIFO_NAME)
}

/// Make the wake FIFO unless it exists, readable and writable by everyone (the app may run
/// as any user; the wrapper makes it the same way with `mkfifo -m 666` when it comes
/// first). An existing path that is not a FIFO is an error: it is never written to.
pub fn ensure_fifo(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let mode = rustix::fs::Mode::from_raw_mode(0o666);
    match rustix::fs::mkfifoat(rustix::fs::CWD, path, mode) {
        Ok(()) => {
            // mkfifo applies the umask; ours, so the chmod cannot be refused.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        }
        Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    if std::fs::symlink_metadata(path)?.file_type().is_fifo() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{} exists and is not a FIFO",
            path.display()
        )))
    }
}

/// Wakes every wrapper that waits on the FIFO, now and later, from its own thread: open
/// the FIFO for writing (this blocks until a reader opens it, so nothing spins), write one
/// line, close, again. Each reader's open returns as soon as ours does, whichever came
/// first, so no wake-up is lost: a wrapper that checked for the signal file just before
/// it was written still wakes. Dropping the waker ends the thread.
pub struct Waker {
    stop: Arc<std::sync::atomic::AtomicBool>,
    fifo: PathBuf,
}

impl Waker {
    /// Start waking readers of `fifo`. Call only once the signal file is written.
    pub fn start(fifo: PathBuf) -> Waker {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, path) = (stop.clone(), fifo.clone());
        // A plain thread, not spawn_blocking: a runtime waits for its blocking tasks on
        // shutdown, and this one may block for ever.
        let spawned = std::thread::Builder::new()
            .name("wake-fifo".into())
            .spawn(move || wake_loop(&path, &flag));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the wake thread; the wrapper waits for a reader");
        }
        Waker { stop, fifo }
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Unblock the thread's open: a reader that goes away at once.
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&self.fifo);
    }
}

fn wake_loop(fifo: &Path, stop: &std::sync::atomic::AtomicBool) {
    use std::io::Write;
    let mut failures = 0u32;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if let Err(e) = ensure_fifo(fifo) {
            tracing::warn!(fifo = %fifo.display(), error = %e, "cannot wake the wrapper through its FIFO; it starts when it next looks");
            return;
        }
        match std::fs::OpenOptions::new().write(true).open(fifo) {
            Ok(mut f) => {
                // A reader that left already (EPIPE) is no error: it was woken.
                let _ = f.write_all(b"released\n");
                failures = 0;
                // Let the woken readers go before the next round.
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(fifo = %fifo.display(), error = %e, "cannot open the wake FIFO; retrying");
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed by this call
/// (before it returns), not when the future is first polled.
pub fn stop_signal() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// How the agent ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Released (`--once`).
    Released,
    /// Stopped by SIGTERM or SIGINT (the signal file is not written on this path).
    Stopped(&'static str),
}

/// `kube-standby agent` until released (`--once`) or stopped by `stop`. Dropping the agent
/// on `stop` cancels it at its current await point: the signal file is written
/// synchronously after a positive answer, so it is either whole or absent.
pub async fn run_until(
    cfg: AgentConfig,
    mode: Mode,
    stop: impl std::future::Future<Output = &'static str>,
) -> Result<Ended, AgentError> {
    tokio::select! {
        r = run(cfg, mode) => r.map(|()| Ended::Released),
        sig = stop => {
            tracing::info!(signal = sig, "stopping");
            Ok(Ended::Stopped(sig))
        }
    }
}

/// Write the release's epoch to `file` (atomically), when the operator gave one. The app
/// must not start without it, so a failure is an error.
fn write_epoch(file: &Path, epoch: Option<u64>) -> Result<(), AgentError> {
    let Some(epoch) = epoch else {
        return Ok(());
    };
    write_atomic(file, format!("{epoch}\n").as_bytes())
        .map_err(|e| AgentError::Config(format!("writing {}: {e}", file.display())))
}

/// `kube-standby agent`.
///
/// Sidecar mode, in this order: make the wake FIFO (so the wrapper need not), wait for the
/// release, write the epoch file (atomically, when the operator gave an epoch), write the
/// signal file (atomically), then wake the wrapper through the FIFO and stay up. An agent
/// restarted after the release finds the signal file and only wakes (a wrapper may still
/// wait if the previous agent died between the signal and the wake-up).
pub async fn run(cfg: AgentConfig, mode: Mode) -> Result<(), AgentError> {
    if let Mode::Assignment { file, once } = &mode {
        return follow_assignment(&cfg, file, *once).await;
    }
    if let Mode::Signal(p) = &mode {
        let fifo = wake_fifo_for(p);
        if let Err(e) = ensure_fifo(&fifo) {
            tracing::warn!(fifo = %fifo.display(), error = %e, "cannot make the wake FIFO");
        }
        if p.exists() {
            tracing::info!(signal = %p.display(), "already released (signal present)");
            let _waker = Waker::start(fifo);
            std::future::pending::<()>().await;
        }
    }
    let epoch = wait_released(&cfg).await?;
    match mode {
        Mode::Once | Mode::Assignment { .. } => Ok(()),
        Mode::OnceWithEpoch(file) => {
            write_epoch(&file, epoch)?;
            tracing::info!(file = %file.display(), epoch, "released; epoch file written");
            Ok(())
        }
        Mode::Signal(p) => {
            write_epoch(&epoch_file_for(&p), epoch)?;
            write_signal(&p)
                .map_err(|e| AgentError::Config(format!("writing {}: {e}", p.display())))?;
            tracing::info!(signal = %p.display(), epoch, "start signal written");
            let _waker = Waker::start(wake_fifo_for(&p));
            // Stay up: a status sidecar that exits would be restarted by the kubelet.
            std::future::pending::<()>().await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_is_written_atomically_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("start-signal");
        write_signal(&p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"released\n");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn bad_ca_is_a_config_error() {
        assert!(matches!(tls_connector("nope"), Err(AgentError::Config(_))));
    }
}
