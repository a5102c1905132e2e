//! Agent ↔ operator over real TLS, with the TokenReview step mocked: released, not yet,
//! operator down then up, wrong pod, bad token, review caching.
mod common;

#[path = "support/tls_server.rs"]
mod tls_server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_standby::agent::{self, AgentConfig, AgentError, Mode};
use kube_standby::certs;
use kube_standby::tls::{self, CertResolver};
use kube_standby::webhook::release::{
    BoxFut, PodIdentity, PodRelease, ReleaseLookup, ReleaseService, ReviewError, TokenReviewer,
};
use kube_standby::webhook::{router, StaticObjects};

struct Tokens {
    known: HashMap<String, PodIdentity>,
    calls: AtomicUsize,
}

impl TokenReviewer for Tokens {
    fn review<'a>(&'a self, token: &'a str) -> BoxFut<'a, Result<PodIdentity, ReviewError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.known
                .get(token)
                .cloned()
                .ok_or_else(|| ReviewError::Unauthenticated("unknown token".into()))
        })
    }
}

#[derive(Default)]
struct Pods(
    Mutex<HashMap<(String, String), PodRelease>>,
    Arc<tokio::sync::Notify>,
);

impl ReleaseLookup for Pods {
    fn lookup(&self, ns: &str, name: &str) -> Option<PodRelease> {
        self.0
            .lock()
            .unwrap()
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    fn changes(&self, _ns: &str) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.1.clone())
    }
}

impl Pods {
    fn set(&self, name: &str, uid: &str, released: bool) {
        self.set_epoch(name, uid, released, None);
    }

    fn set_epoch(&self, name: &str, uid: &str, released: bool, epoch: Option<u64>) {
        self.0.lock().unwrap().insert(
            ("prod".into(), name.into()),
            PodRelease {
                uid: uid.into(),
                released,
                epoch,
            },
        );
        self.1.notify_waiters();
    }
}

struct Operator {
    bundle: certs::Bundle,
    pods: Arc<Pods>,
    tokens: Arc<Tokens>,
}

fn operator() -> Operator {
    let known = HashMap::from([
        (
            "tok-db-0".to_string(),
            PodIdentity {
                namespace: "prod".into(),
                name: "db-0".into(),
                uid: "uid-0".into(),
            },
        ),
        (
            "tok-stale".to_string(),
            PodIdentity {
                namespace: "prod".into(),
                name: "db-0".into(),
                uid: "uid-old".into(),
            },
        ),
    ]);
    Operator {
        bundle: certs::generate(&certs::default_sans()).unwrap(),
        pods: Arc::new(Pods::default()),
        tokens: Arc::new(Tokens {
            known,
            calls: AtomicUsize::new(0),
        }),
    }
}

async fn serve(op: &Operator, listener: tokio::net::TcpListener) {
    let mut state = common::state_with(StaticObjects::default());
    state.release = Some(Arc::new(ReleaseService::new(
        op.tokens.clone(),
        op.pods.clone(),
    )));
    tls_server::serve_on(listener, state, &op.bundle);
}

async fn start(op: &Operator) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve(op, listener).await;
    addr
}

fn config(op: &Operator, addr: SocketAddr, token: &str, dir: &std::path::Path) -> AgentConfig {
    let token_file = dir.join(format!("token-{token}"));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    AgentConfig {
        operator_url: format!("https://localhost:{}", addr.port()),
        // What the webhook injects: the pins of the operator's CA.
        ca: kube_standby::tls::pin::pins_of_bundle(&op.bundle.ca_pem).unwrap(),
        token_file,
        pod_uid: Some("uid-0".into()),
        poll_seconds: 2,
        max_backoff: Duration::from_millis(200),
        give_up_after: None,
    }
}

#[tokio::test]
async fn released_pod_gets_its_signal() {
    let op = operator();
    let addr = start(&op).await;
    op.pods.set("db-0", "uid-0", true);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&op, addr, "tok-db-0", dir.path());
    assert_eq!(agent::check_once(&cfg).await, Ok(true));
    let signal = dir.path().join("start-signal");
    let task = tokio::spawn(agent::run(cfg, Mode::Signal(signal.clone())));
    for _ in 0..100 {
        if signal.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(signal.exists(), "signal never written");
    task.abort();
}

#[tokio::test]
async fn not_yet_then_released_through_the_long_poll() {
    let op = operator();
    let addr = start(&op).await;
    op.pods.set("db-0", "uid-0", false);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&op, addr, "tok-db-0", dir.path());
    cfg.poll_seconds = 1;
    assert_eq!(
        agent::check_once(&cfg).await,
        Ok(false),
        "a long-poll that times out says not released"
    );
    cfg.poll_seconds = 10;
    let pods = op.pods.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        pods.set("db-0", "uid-0", true);
    });
    // The same long-poll returns once the release lands (well before its 10 s timeout).
    let started = std::time::Instant::now();
    assert_eq!(agent::check_once(&cfg).await, Ok(true));
    assert!(started.elapsed() < Duration::from_secs(9));
    agent::run(cfg, Mode::Once).await.unwrap();
}

#[tokio::test]
async fn operator_down_then_up_never_signals_early() {
    let op = operator();
    op.pods.set("db-0", "uid-0", true);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&op, addr, "tok-db-0", dir.path());
    assert!(matches!(
        agent::check_once(&cfg).await,
        Err(AgentError::Unreachable(_))
    ));
    let signal = dir.path().join("start-signal");
    let task = tokio::spawn(agent::run(cfg, Mode::Signal(signal.clone())));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !signal.exists(),
        "signal written while the operator was down"
    );
    serve(&op, tokio::net::TcpListener::bind(addr).await.unwrap()).await;
    for _ in 0..100 {
        if signal.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        signal.exists(),
        "agent did not recover once the operator came up"
    );
    task.abort();
}

#[tokio::test]
async fn wrong_pod_and_bad_token_are_refused_and_never_signal() {
    let op = operator();
    let addr = start(&op).await;
    op.pods.set("db-0", "uid-0", true);
    let dir = tempfile::tempdir().unwrap();

    // A token for another incarnation of db-0 (same name, old uid).
    let mut stale = config(&op, addr, "tok-stale", dir.path());
    stale.pod_uid = None;
    assert!(
        matches!(agent::check_once(&stale).await, Err(AgentError::Forbidden(m)) if m.contains("uid"))
    );
    // Our token, but we claim another uid.
    let mut liar = config(&op, addr, "tok-db-0", dir.path());
    liar.pod_uid = Some("uid-9".into());
    assert!(matches!(
        agent::check_once(&liar).await,
        Err(AgentError::Forbidden(_))
    ));
    // A token the API server does not know.
    let bad = config(&op, addr, "tok-bogus", dir.path());
    assert!(
        matches!(agent::check_once(&bad).await, Err(AgentError::Unauthorized(m)) if m.contains("unknown token"))
    );

    let signal = dir.path().join("start-signal");
    let task = tokio::spawn(agent::run(bad, Mode::Signal(signal.clone())));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!signal.exists());
    task.abort();
}

#[tokio::test]
async fn token_reviews_are_cached() {
    let op = operator();
    let addr = start(&op).await;
    op.pods.set("db-0", "uid-0", true);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&op, addr, "tok-db-0", dir.path());
    for _ in 0..3 {
        assert_eq!(agent::check_once(&cfg).await, Ok(true));
    }
    assert_eq!(op.tokens.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn missing_token_and_webhook_mode_answers() {
    let op = operator();
    let addr = start(&op).await;
    let c = common::client(&op.bundle.ca_pem, addr);
    let r = c
        .get(format!("https://localhost:{}/release", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // webhook mode: no release service.
    let addr2 = tls_server::serve(common::state_with(StaticObjects::default()), &op.bundle).await;
    let r = common::client(&op.bundle.ca_pem, addr2)
        .get(format!("https://localhost:{}/release", addr2.port()))
        .bearer_auth("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    // A config without a token file is a configuration error, not a retry loop.
    let mut cfg = config(&op, addr, "tok-db-0", tempfile::tempdir().unwrap().path());
    cfg.token_file = "/nonexistent/token".into();
    assert!(matches!(
        agent::wait_released(&cfg).await,
        Err(AgentError::Config(_))
    ));
}

#[path = "support/verifier.rs"]
mod verifier;

/// Serve the release endpoint with the certificate `Tls::new(mode)` makes, on `listener`.
fn serve_mode(
    op: &Operator,
    listener: tokio::net::TcpListener,
    mode: &kube_standby::server::TlsMode,
) -> tokio::task::JoinHandle<()> {
    let mut state = common::state_with(StaticObjects::default());
    state.release = Some(Arc::new(ReleaseService::new(
        op.tokens.clone(),
        op.pods.clone(),
    )));
    let tls = kube_standby::server::Tls::new(mode).unwrap();
    let ca = tls.ca_pem.clone().unwrap();
    tls.pin_agent_ca(&ca).unwrap();
    tokio::spawn(tls::serve(
        listener,
        tls.config.clone(),
        router(state),
        tls::ConnLimits::default(),
        std::future::pending(),
    ))
}

/// Self-signed mode with the CA kept in a Secret: an agent admitted before a restart (it
/// holds the CA of the first process) is still released by the restarted server, which
/// issued itself a new serving certificate from the same stored CA. With a fresh CA (the
/// behaviour before), the same agent could not be released.
#[tokio::test]
async fn an_agent_admitted_before_a_restart_is_released_after_it() {
    use kube_standby::server::TlsMode;
    use kube_standby::tls::ca_secret;
    use serde_json::{json, Value};

    // First start: no Secret yet, so the CA is made and stored.
    let stored: Arc<Mutex<Value>> = Arc::default();
    let (client, handle) = verifier::mock_client();
    let path = "/api/v1/namespaces/kube-standby/secrets";
    let keep = stored.clone();
    let expected = vec![
        verifier::expect(
            "GET",
            format!("{path}/kube-standby-ca"),
            |_, _| {},
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
        ),
        verifier::expect(
            "POST",
            path,
            move |b, _| *keep.lock().unwrap() = b.clone(),
            201,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kube-standby-ca"}}),
        ),
    ];
    let first = tokio::spawn(async move {
        ca_secret::load_or_create(client, "kube-standby", "kube-standby-ca").await
    });
    let ca = verifier::verify(handle, expected, first).await.unwrap();
    let mode = |ca: Option<ca_secret::CaPair>| TlsMode::SelfSigned {
        sans: certs::default_sans(),
        ca,
        validity: Default::default(),
    };

    let mut op = operator();
    op.bundle.ca_pem = ca.cert_pem.clone(); // what the webhook injected into the pod
    op.pods.set("db-0", "uid-0", false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve_mode(&op, listener, &mode(Some(ca.clone())));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&op, addr, "tok-db-0", dir.path());
    cfg.poll_seconds = 1;
    assert_eq!(
        agent::check_once(&cfg).await,
        Ok(false),
        "reaches the first process"
    );
    let signal = dir.path().join("start-signal");
    let agent_task = tokio::spawn(agent::run(cfg.clone(), Mode::Signal(signal.clone())));

    // The operator restarts: the stored Secret is read back.
    server.abort();
    let _ = server.await;
    let secret = stored.lock().unwrap().clone();
    let (client, handle) = verifier::mock_client();
    let again = tokio::spawn(async move {
        ca_secret::load_or_create(client, "kube-standby", "kube-standby-ca").await
    });
    let expected = vec![verifier::expect(
        "GET",
        format!("{path}/kube-standby-ca"),
        |_, _| {},
        200,
        secret,
    )];
    let reloaded = verifier::verify(handle, expected, again).await.unwrap();
    assert_eq!(reloaded, ca, "the same CA comes back");

    // A restarted process with a fresh CA is not trusted by the waiting agent...
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let fresh = serve_mode(&op, listener, &mode(None));
    assert!(
        agent::check_once(&cfg).await.is_err(),
        "a fresh CA must not be trusted"
    );
    fresh.abort();
    let _ = fresh.await;
    // ...one issuing from the stored CA is, and releases the pod.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let _server = serve_mode(&op, listener, &mode(Some(reloaded)));
    op.pods.set("db-0", "uid-0", true);
    for _ in 0..200 {
        if signal.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        signal.exists(),
        "the agent admitted before the restart was not released"
    );
    agent_task.abort();
}

/// A misbehaving endpoint on a raw TLS socket: answers every request with `status`, the
/// then `total` bytes of body (chunked), counting what it managed to write.
async fn misbehaving_endpoint(
    bundle: &certs::Bundle,
    status: &'static str,
    total: usize,
) -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let resolver = CertResolver::new(
        tls::certified_key_from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes()).unwrap(),
    );
    resolver.serve_anchors(tls::agent_ca::pem_certs(&bundle.ca_pem).unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver).unwrap());
    let written = Arc::new(AtomicUsize::new(0));
    let count = written.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = vec![0u8; 4096];
                let _ = s.read(&mut head).await;
                let h = format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n");
                if s.write_all(h.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let framed = [
                    format!("{:x}\r\n", chunk.len()).into_bytes(),
                    chunk,
                    b"\r\n".to_vec(),
                ]
                .concat();
                let mut sent = 0;
                while sent < total {
                    if s.write_all(&framed).await.is_err() {
                        return;
                    }
                    sent += 64 * 1024;
                    count.fetch_add(64 * 1024, Ordering::SeqCst);
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
                let _ = s.flush().await;
                let _ = s.read(&mut head).await;
            });
        }
    });
    (addr, written)
}

/// The agent reads at most its cap of an answer, says so briefly, and never writes the
/// signal: a 128 MiB "200" body, and a 5xx / 403 with bodies over and under the cap.
#[tokio::test]
async fn the_agent_stops_reading_past_its_cap_and_keeps_errors_short() {
    let op = operator();
    let (addr, written) = misbehaving_endpoint(&op.bundle, "200 OK", 128 * 1024 * 1024).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&op, addr, "tok-db-0", dir.path());
    let e = agent::check_once(&cfg).await.unwrap_err();
    assert!(
        matches!(&e, AgentError::Protocol(m) if m.contains("larger than")),
        "{:.300}",
        e.to_string()
    );
    assert!(e.to_string().len() < 200, "{:.300}", e.to_string());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = written.load(Ordering::SeqCst);
    assert!(
        sent < 32 * 1024 * 1024,
        "the endpoint could write {} MiB: the agent kept reading",
        sent / (1024 * 1024)
    );
    // No signal on this error, however long the agent keeps trying.
    let signal = dir.path().join("start-signal");
    let task = tokio::spawn(agent::run(cfg.clone(), Mode::Signal(signal.clone())));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!signal.exists());
    task.abort();

    for (status, size) in [
        ("503 Service Unavailable", 1024 * 1024),
        ("403 Forbidden", 48 * 1024),
    ] {
        let (addr, _) = misbehaving_endpoint(&op.bundle, status, size).await;
        let cfg = config(&op, addr, "tok-db-0", dir.path());
        let e = agent::check_once(&cfg).await.unwrap_err().to_string();
        assert!(
            e.len() < 1024,
            "{status}: a {}-byte error: {e:.200}",
            e.len()
        );
    }
}

/// The answer carries the release's epoch; the agent writes it (atomically) next to the
/// signal file, before the signal.
#[tokio::test]
async fn the_epoch_is_answered_and_written_before_the_signal() {
    let op = operator();
    let addr = start(&op).await;
    op.pods.set_epoch("db-0", "uid-0", true, Some(7));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&op, addr, "tok-db-0", dir.path());
    let answer = agent::ask_once(&cfg).await.unwrap();
    assert!(answer.released);
    assert_eq!(answer.epoch, Some(7));
    let signal = dir.path().join("start-signal");
    let task = tokio::spawn(agent::run(cfg.clone(), Mode::Signal(signal.clone())));
    for _ in 0..250 {
        if signal.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(signal.exists(), "signal never written");
    assert_eq!(
        std::fs::read_to_string(agent::epoch_file_for(&signal)).unwrap(),
        "7\n"
    );
    task.abort();

    // The epoch file cannot be written (a directory in its place): the agent fails and
    // never writes the signal, so no app starts without its epoch.
    let dir = tempfile::tempdir().unwrap();
    let signal = dir.path().join("start-signal");
    std::fs::create_dir(agent::epoch_file_for(&signal)).unwrap();
    std::fs::write(agent::epoch_file_for(&signal).join("x"), "").unwrap();
    let cfg = config(&op, addr, "tok-db-0", dir.path());
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        agent::run(cfg, Mode::Signal(signal.clone())),
    )
    .await
    .expect("the agent ends");
    assert!(matches!(r, Err(AgentError::Config(m)) if m.contains("epoch")));
    assert!(!signal.exists(), "signal written without the epoch");
}

/// The long-poll answers as soon as the pod cache changes, not at its next look.
#[tokio::test]
async fn the_long_poll_wakes_on_a_cache_change() {
    let op = operator();
    let addr = start(&op).await;
    op.pods.set("db-0", "uid-0", false);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&op, addr, "tok-db-0", dir.path());
    assert_eq!(agent::check_once(&cfg).await, Ok(false)); // warms the review cache
    let mut took = vec![];
    for _ in 0..5 {
        op.pods.set("db-0", "uid-0", false);
        let cfg = cfg.clone();
        let ask = tokio::spawn(async move { agent::ask_once(&cfg).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        let t0 = std::time::Instant::now();
        op.pods.set_epoch("db-0", "uid-0", true, Some(1));
        let a = ask.await.unwrap().unwrap();
        took.push(t0.elapsed());
        assert!(a.released);
    }
    took.sort();
    // The fallback look is every 50 ms: a median far below it shows the wake-up.
    assert!(took[2] < Duration::from_millis(20), "{took:?}");
}

/// The init gate (`--once` with `--epoch-file`): the release's epoch is written
/// (atomically) to the file before the agent returns, so the app, started after it,
/// reads it; a file that cannot be written fails the gate (no app without its epoch).
#[tokio::test]
async fn the_init_gate_writes_the_epoch_file_before_it_exits() {
    let op = operator();
    let addr = start(&op).await;
    op.pods.set_epoch("db-0", "uid-0", true, Some(5));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("epoch");
    let cfg = config(&op, addr, "tok-db-0", dir.path());
    tokio::time::timeout(
        Duration::from_secs(10),
        agent::run(cfg.clone(), Mode::OnceWithEpoch(file.clone())),
    )
    .await
    .expect("the gate returns once released")
    .unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "5\n");
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["epoch", "token-tok-db-0"], "no temp file left");

    // Not released yet: the gate waits and writes nothing.
    op.pods.set_epoch("db-0", "uid-0", false, None);
    let dir2 = tempfile::tempdir().unwrap();
    let waiting = dir2.path().join("epoch");
    let mut short = config(&op, addr, "tok-db-0", dir2.path());
    short.poll_seconds = 1;
    let r = tokio::time::timeout(
        Duration::from_millis(1500),
        agent::run(short, Mode::OnceWithEpoch(waiting.clone())),
    )
    .await;
    assert!(r.is_err(), "the gate returned before the release");
    assert!(!waiting.exists(), "epoch written before the release");

    // A directory in the file's place: the gate fails.
    op.pods.set_epoch("db-0", "uid-0", true, Some(6));
    std::fs::create_dir(&waiting).unwrap();
    std::fs::write(waiting.join("x"), "").unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        agent::run(cfg, Mode::OnceWithEpoch(waiting)),
    )
    .await
    .expect("the gate ends");
    assert!(matches!(r, Err(AgentError::Config(m)) if m.contains("epoch")));
}
