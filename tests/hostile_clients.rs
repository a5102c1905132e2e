//! The real binary in `webhook` mode, over real TLS on 127.0.0.1, against hostile clients:
//! stalled bodies (memory stays bounded, read from the process's own /proc figures), idle
//! connections (closed), a connection cap (refused beyond it, probes still answered), a
//! low descriptor limit (accept errors logged at a bounded rate), oversized bodies over
//! HTTP/2 and `Expect: 100-continue` (a 413 answer, not a reset), and log injection.
//!
//! `KUBE_STANDBY_TEST_BIN=/path/to/kube-standby` runs these against another build (e.g.
//! an older release, to see which of them it fails).
mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube_standby::certs;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const MIB: usize = 1024 * 1024;
static ZEROS: [u8; 64 * 1024] = [b' '; 64 * 1024];

fn bin() -> PathBuf {
    std::env::var_os("KUBE_STANDBY_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kube-standby")))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `kube-standby webhook` with file certificates (so clients can verify).
struct Server {
    child: Child,
    addr: SocketAddr,
    ops: SocketAddr,
    ca: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Start with `extra` flags; `ulimit_n` lowers the open-file limit of the process. The
    /// free ports are picked before the server binds them, so another process may take one
    /// in between: then it starts again on other ports.
    async fn start(extra: &[&str], ulimit_n: Option<u32>, log_format: &str) -> Server {
        for _ in 0..4 {
            if let Some(s) = Self::try_start(extra, ulimit_n, log_format).await {
                return s;
            }
        }
        panic!("no free ports for the webhook after 4 tries");
    }

    /// None when a port was taken before the server could bind it.
    async fn try_start(extra: &[&str], ulimit_n: Option<u32>, log_format: &str) -> Option<Server> {
        let dir = tempfile::tempdir().unwrap();
        let bundle = certs::generate(&certs::default_sans()).unwrap();
        certs::write_dir(dir.path(), &bundle).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let ops: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.path().join("stderr.log");
        let mut args: Vec<String> = vec![
            "--log-format".into(),
            log_format.into(),
            "webhook".into(),
            "--bind".into(),
            addr.to_string(),
            "--metrics-bind".into(),
            ops.to_string(),
            "--tls-cert-file".into(),
            dir.path().join("tls.crt").display().to_string(),
            "--tls-key-file".into(),
            dir.path().join("tls.key").display().to_string(),
            "--objects".into(),
            common::repo()
                .join("examples/statefulsingleton-demo.yaml")
                .display()
                .to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = match ulimit_n {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = cmd
            .args(&args)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Server {
            child,
            addr,
            ops,
            ca: bundle.ca_pem,
            log,
            _dir: dir,
        };
        for _ in 0..200 {
            if s.healthz().await {
                return Some(s);
            }
            if matches!(s.child.try_wait(), Ok(Some(_))) && s.stderr().contains("in use") {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the webhook never answered; it said:\n{}", s.stderr());
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `VmRSS` / `VmHWM` of the server process, in bytes.
    fn memory(&self, field: &str) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        let kb: usize = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb * 1024
    }

    /// `/healthz` on the plain operations port (what the kubelet probes).
    async fn healthz(&self) -> bool {
        let get = async {
            let mut s = TcpStream::connect(self.ops).await.ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut out = vec![];
            s.read_to_end(&mut out).await.ok()?;
            Some(out.starts_with(b"HTTP/1.1 200"))
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(5), get).await,
            Ok(Some(true))
        )
    }

    fn tls(&self, alpn: &[u8]) -> tokio_rustls::TlsConnector {
        connector(&self.ca, alpn)
    }

    async fn connect(&self, alpn: &[u8]) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        self.tls(alpn)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    /// One real admission request on a fresh connection: the status.
    async fn admit(&self) -> Option<u16> {
        let body = common::fixture("pod-create-from-replicaset.json");
        let c = common::client(&self.ca, self.addr);
        let r = c
            .post(format!(
                "https://localhost:{}/mutate/pods",
                self.addr.port()
            ))
            .header("content-type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        Some(r.status().as_u16())
    }
}

fn connector(ca: &str, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Does the server end this connection within `within`? (EOF or an error both count.)
async fn closed_within(s: &mut TlsStream<TcpStream>, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// HTTP/1.1: declare `declared` bytes (or chunked), send `send` bytes, then stall.
async fn stall_h1(server: &Server, declared: Option<usize>, send: usize) {
    let Ok(mut s) = server.connect(b"http/1.1").await else {
        return;
    };
    let framing = match declared {
        Some(n) => format!("content-length: {n}"),
        None => "transfer-encoding: chunked".into(),
    };
    let head = format!(
        "POST /mutate/pods HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
    );
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut sent = 0;
    while sent < send {
        let n = ZEROS.len().min(send - sent);
        let ok = match declared {
            Some(_) => s.write_all(&ZEROS[..n]).await.is_ok(),
            None => {
                let mut chunk = format!("{n:x}\r\n").into_bytes();
                chunk.extend_from_slice(&ZEROS[..n]);
                chunk.extend_from_slice(b"\r\n");
                s.write_all(&chunk).await.is_ok()
            }
        };
        if !ok {
            return;
        }
        sent += n;
    }
    let _ = s.flush().await;
    // Stall: keep the connection open, reading whatever the server says, until it ends.
    let mut buf = [0u8; 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
    }
}

/// HTTP/2: one connection, `streams` streams each sending `send` bytes (declaring
/// `declared` when given), then stalling. Returns once every stream is under way.
async fn stall_h2(
    server: &Server,
    streams: usize,
    declared: Option<usize>,
    send: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let Ok(tls) = server.connect(b"h2").await else {
        return vec![];
    };
    let Ok((sender, conn)) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await
    else {
        return vec![];
    };
    let mut tasks = vec![tokio::spawn(async move {
        let _ = conn.await;
    })];
    for _ in 0..streams {
        let mut sender = sender.clone();
        let chunks = (0..send.div_ceil(ZEROS.len())).map(move |i| {
            let n = ZEROS.len().min(send - i * ZEROS.len());
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(&ZEROS[..n])))
        });
        let body = StreamBody::new(futures::stream::iter(chunks).chain(futures::stream::pending()));
        let mut req = hyper::Request::post(format!(
            "https://localhost:{}/mutate/pods",
            server.addr.port()
        ))
        .header("content-type", "application/json");
        if let Some(n) = declared {
            req = req.header("content-length", n);
        }
        let req = req.body(body).unwrap();
        tasks.push(tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                if let Ok(resp) = sender.send_request(req).await {
                    let _ = resp.into_body().collect().await;
                }
            }
        }));
    }
    tasks
}

use futures::StreamExt;

/// Many connections stall mid-body; the process's peak resident memory grows by less than
/// 64 MB while a good request is still answered. Defaults only (no limit flags).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_bodies_keep_memory_bounded_and_good_requests_are_answered() {
    let server = Arc::new(Server::start(&[], None, "text").await);
    assert_eq!(server.admit().await, Some(200));
    let before = server.memory("VmRSS:");

    // The attack: 32 HTTP/1.1 connections each send 8 MiB - 4 KiB of a declared
    // 8 MiB body and stall; one HTTP/2 connection does the same on 40 streams.
    let mut attack = vec![];
    for _ in 0..32 {
        let s = server.clone();
        attack.push(tokio::spawn(async move {
            stall_h1(&s, Some(8 * MIB), 8 * MIB - 4096).await
        }));
    }
    attack.extend(stall_h2(&server, 40, Some(8 * MIB), 8 * MIB - 4096).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        server.admit().await,
        Some(200),
        "a good request during the stall"
    );

    // Bodies of undeclared length under the size limit: the buffer budget holds.
    for _ in 0..32 {
        let s = server.clone();
        attack.push(tokio::spawn(
            async move { stall_h1(&s, None, 3 * MIB).await },
        ));
    }
    attack.extend(stall_h2(&server, 40, None, 3 * MIB).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(server.healthz().await, "/healthz during the stall");

    let peak = server.memory("VmHWM:");
    let grown = peak.saturating_sub(before);
    eprintln!(
        "resident before {} MiB, peak {} MiB, growth {} MiB",
        before / MIB,
        peak / MIB,
        grown / MIB
    );
    assert!(
        grown < 64_000_000,
        "peak resident memory grew by {} MiB under stalled bodies",
        grown / MIB
    );
    // Stalled bodies are given up after the body read timeout; good requests go through.
    let mut answered = None;
    for _ in 0..30 {
        answered = server.admit().await;
        if answered == Some(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(answered, Some(200), "{}", server.stderr());
    for t in attack {
        t.abort();
    }
}

/// With short timeouts configured, the server ends every kind of idle connection.
#[tokio::test]
async fn idle_connections_are_closed_within_the_configured_timeout() {
    let server = Server::start(
        &[
            "--idle-timeout-seconds",
            "1",
            "--header-read-timeout-seconds",
            "1",
            "--tls-handshake-timeout-seconds",
            "1",
        ],
        None,
        "text",
    )
    .await;
    let bound = Duration::from_secs(10);

    // TCP only, no handshake.
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    let mut b = [0u8; 16];
    let r = tokio::time::timeout(bound, raw.read(&mut b)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "no-handshake connection left open"
    );

    // TLS done, nothing sent, for both protocols.
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut s = server.connect(alpn).await.unwrap();
        assert!(
            closed_within(&mut s, bound).await,
            "{}: idle TLS connection left open",
            String::from_utf8_lossy(alpn)
        );
    }

    // HTTP/1.1 keep-alive after a full request.
    let mut s = server.connect(b"http/1.1").await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert!(
        closed_within(&mut s, bound).await,
        "kept-alive connection left open"
    );

    // A header trickled byte by byte never completes.
    let mut s = server.connect(b"http/1.1").await.unwrap();
    let started = Instant::now();
    let mut ended = false;
    for byte in
        b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
    {
        if s.write_all(&[*byte]).await.is_err() || started.elapsed() > bound {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        ended || closed_within(&mut s, Duration::from_secs(1)).await,
        "slow header kept open"
    );

    // HTTP/2 after a full request.
    let tls = server.connect(b"h2").await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(format!("https://localhost:{}/healthz", server.addr.port()))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        tokio::time::timeout(bound, conn).await.is_ok(),
        "idle HTTP/2 connection left open"
    );
}

/// A low descriptor limit and a cap below it: connections beyond the cap are ended at
/// once, /healthz still answers, and once a slot frees a new connection is served.
#[tokio::test]
async fn connections_beyond_the_cap_are_refused_while_healthz_answers() {
    let server = Server::start(&["--max-connections", "8"], Some(64), "text").await;
    let mut held = vec![];
    for _ in 0..8 {
        held.push(server.connect(b"http/1.1").await.unwrap());
    }
    // Many more: each is refused (the handshake fails or the connection ends at once).
    for i in 0..100 {
        let r = tokio::time::timeout(Duration::from_secs(10), server.connect(b"http/1.1")).await;
        match r {
            Ok(Err(_)) => {}
            Ok(Ok(mut s)) => assert!(
                closed_within(&mut s, Duration::from_secs(10)).await,
                "connection {i} beyond the cap was served"
            ),
            Err(_) => panic!("connection {i} beyond the cap neither refused nor served"),
        }
    }
    assert!(server.healthz().await, "/healthz with the cap reached");
    // The held connections are still served.
    let s = &mut held[0];
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // A freed slot is used again.
    held.clear();
    let mut served = false;
    for _ in 0..50 {
        if server.admit().await == Some(200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served, "{}", server.stderr());
    let log = server.stderr();
    let refusals = log.matches("connection refused").count();
    assert!(
        (1..=2).contains(&refusals),
        "refusals are logged at a bounded rate, got {refusals}:\n{log}"
    );
}

/// Out of descriptors (cap above the limit): accept errors are logged at a bounded rate,
/// not 20 lines a second.
#[tokio::test]
async fn accept_errors_are_logged_at_a_bounded_rate() {
    let server = Server::start(&["--max-connections", "10000"], Some(48), "text").await;
    let mut held = vec![];
    for _ in 0..80 {
        if let Ok(s) = TcpStream::connect(server.addr).await {
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = server.stderr();
    let lines = log.matches("accept failed").count();
    assert!(lines >= 1, "the descriptor limit was never hit:\n{log}");
    assert!(lines <= 2, "{lines} accept-error lines in 3 s:\n{log}");
    drop(held);
}

async fn read_head(s: &mut TlsStream<TcpStream>) -> String {
    let mut out = vec![];
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

/// An oversized declared body gets the 413 JSON answer before any of it is sent, over
/// HTTP/1.1 with `Expect: 100-continue` and over HTTP/2.
#[tokio::test]
async fn oversized_bodies_get_413_not_a_reset() {
    let server = Server::start(&[], None, "text").await;
    let size = 9 * MIB;

    // HTTP/1.1, Expect: 100-continue: the final answer comes instead of "100 Continue".
    let mut s = server.connect(b"http/1.1").await.unwrap();
    let head = format!(
        "POST /mutate/pods HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {size}\r\nexpect: 100-continue\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let answer = read_head(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");

    // HTTP/2 (reqwest negotiates h2): the body is refused with the JSON answer.
    let c = common::client(&server.ca, server.addr);
    let resp = c
        .post(format!(
            "https://localhost:{}/mutate/pods",
            server.addr.port()
        ))
        .header("content-type", "application/json")
        .body(vec![b' '; size])
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("an answer, not a reset");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 413);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["status"], 413);
    assert!(v["error"].as_str().unwrap().contains("larger than"), "{v}");

    // HTTP/2, the body declared but not sent yet: the answer does not wait for it, and the
    // stream ends with the whole JSON answer.
    let tls = server.connect(b"h2").await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let body = StreamBody::new(futures::stream::pending::<
        Result<Frame<Bytes>, std::convert::Infallible>,
    >());
    let req = hyper::Request::post(format!(
        "https://localhost:{}/mutate/pods",
        server.addr.port()
    ))
    .header("content-type", "application/json")
    .header("content-length", size)
    .body(body)
    .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("413 before the body")
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the answer's body")
        .unwrap()
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], 413);
}

fn review_with(uid: &str, generate_name: &str) -> Vec<u8> {
    let mut r = common::fixture_json("pod-create-from-replicaset.json");
    r["request"]["uid"] = uid.into();
    r["request"]["object"]["metadata"]["generateName"] = generate_name.into();
    serde_json::to_vec(&r).unwrap()
}

/// A uid with a newline, a name with terminal escapes and a 1 MB uid: each review is one
/// log line, of bounded length, with no escape sequences, in both formats.
#[tokio::test]
async fn untrusted_strings_make_one_short_log_line() {
    for format in ["text", "json"] {
        let server = Server::start(&[], None, format).await;
        let c = common::client(&server.ca, server.addr);
        let url = format!("https://localhost:{}/mutate/pods", server.addr.port());
        let forged = "abc\n2026-01-01T00:00:00.000000Z  INFO FORGED line";
        let huge = "u".repeat(1_000_000);
        for body in [
            review_with(forged, "game-\x1b[31mred-"),
            review_with(&huge, "game-"),
        ] {
            let r = c
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let mut log = String::new();
        for _ in 0..50 {
            log = server.stderr();
            if log.matches("admission reviewed").count() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let forged_lines: Vec<&str> = log.lines().filter(|l| l.contains("FORGED")).collect();
        assert_eq!(forged_lines.len(), 1, "{format}: {log}");
        assert!(
            forged_lines[0].contains("admission reviewed") && forged_lines[0].contains("abc"),
            "{format}: the forged text is not on the review's own line: {log}"
        );
        assert!(
            !log.contains('\x1b'),
            "{format}: escape sequences in the log"
        );
        let longest = log.lines().map(str::len).max().unwrap_or(0);
        assert!(longest < 4096, "{format}: a {longest}-byte log line");
        assert_eq!(
            log.matches("admission reviewed").count(),
            2,
            "{format}: {log}"
        );
    }
}
