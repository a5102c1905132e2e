//! The real `kube-standby agent` binary as a child process, as the kubelet runs it: SIGTERM
//! and SIGINT end it within a second with exit code 0, in both modes, while it long-polls,
//! while it backs off from an unreachable operator and while it stays up after the
//! release, and the signal file is never written on that path. A certificate the injected
//! CA does not verify ends it at once with status 1 and one clear line on stderr.
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_standby::certs;
use kube_standby::tls::{self, CertResolver};

/// What the fake operator does with a request.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Read the request and never answer (a long-poll that has not returned yet).
    Hold,
    /// Answer "released".
    Release,
    /// Answer "released" with this epoch.
    ReleaseWithEpoch(u64),
}

/// A TLS endpoint on 127.0.0.1 serving `bundle`'s certificate; counts requests read.
fn operator(bundle: &certs::Bundle, behaviour: Behaviour) -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let resolver = CertResolver::new(
        tls::certified_key_from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes()).unwrap(),
    );
    let config = tls::server_config(resolver).unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = vec![0u8; 4096];
                    if s.read(&mut head).await.unwrap_or(0) == 0 {
                        return;
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                    match behaviour {
                        Behaviour::Hold => {
                            // Keep the connection open, never answer.
                            let _ = s.read(&mut head).await;
                            std::future::pending::<()>().await;
                        }
                        Behaviour::Release | Behaviour::ReleaseWithEpoch(_) => {
                            let body = match behaviour {
                                Behaviour::ReleaseWithEpoch(e) => {
                                    format!(r#"{{"released":true,"pod":"db-0","epoch":{e}}}"#)
                                }
                                _ => r#"{"released":true,"pod":"db-0"}"#.to_string(),
                            };
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = s.write_all(resp.as_bytes()).await;
                            let _ = s.flush().await;
                            let _ = s.read(&mut head).await;
                        }
                    }
                });
            }
        });
    });
    (addr, requests)
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Agent {
    child: Child,
    _dir: tempfile::TempDir,
    signal: PathBuf,
}

fn spawn(ca_pem: &str, port: u16, once: bool) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok\n").unwrap();
    let signal = dir.path().join("start-signal");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kube-standby"));
    cmd.arg("agent");
    if once {
        cmd.arg("--once");
    } else {
        cmd.arg("--signal-file").arg(&signal);
    }
    let child = cmd
        .args(["--poll-seconds", "30"])
        .arg("--token-file")
        .arg(&token)
        .env(
            "KUBE_STANDBY_OPERATOR_URL",
            format!("https://localhost:{port}"),
        )
        .env("KUBE_STANDBY_CA", ca_pem)
        .env("POD_UID", "uid-0")
        .env("RUST_LOG", "info")
        .env_remove("KUBE_STANDBY_GIVE_UP_SECONDS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Agent {
        child,
        _dir: dir,
        signal,
    }
}

fn send(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} failed");
}

/// Wait up to `limit` for the child to exit.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<(ExitStatus, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some((s, start.elapsed()));
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_until(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

/// Send `signal` and check the agent exits 0 within a second, with no signal file.
fn stops_promptly(mut agent: Agent, signal: &str) {
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent ended before the signal: {}",
        stderr_of(&mut agent.child)
    );
    send(&agent.child, signal);
    let Some((status, took)) = wait_exit(&mut agent.child, Duration::from_secs(5)) else {
        let _ = agent.child.kill();
        let _ = agent.child.wait();
        panic!("the agent ignored {signal} for 5 s");
    };
    let err = stderr_of(&mut agent.child);
    eprintln!("agent exited {took:?} after {signal}: {status}");
    assert!(took < Duration::from_secs(1), "{signal} took {took:?}");
    assert_eq!(status.code(), Some(0), "{signal}: {status}; stderr: {err}");
    assert!(
        !exists(&agent.signal),
        "signal file written on the {signal} path"
    );
}

fn exists(p: &Path) -> bool {
    p.exists()
}

#[test]
fn sidecar_mode_long_polling_stops_on_sigterm_without_writing_the_signal() {
    let b = certs::generate(&certs::default_sans()).unwrap();
    let (addr, requests) = operator(&b, Behaviour::Hold);
    let agent = spawn(&b.ca_pem, addr.port(), false);
    wait_until("the long-poll to arrive", Duration::from_secs(20), || {
        requests.load(Ordering::SeqCst) > 0
    });
    std::thread::sleep(Duration::from_millis(200));
    stops_promptly(agent, "TERM");
}

#[test]
fn sidecar_mode_long_polling_stops_on_sigint() {
    let b = certs::generate(&certs::default_sans()).unwrap();
    let (addr, requests) = operator(&b, Behaviour::Hold);
    let agent = spawn(&b.ca_pem, addr.port(), false);
    wait_until("the long-poll to arrive", Duration::from_secs(20), || {
        requests.load(Ordering::SeqCst) > 0
    });
    stops_promptly(agent, "INT");
}

#[test]
fn init_gate_mode_long_polling_stops_on_sigterm_and_sigint() {
    for signal in ["TERM", "INT"] {
        let b = certs::generate(&certs::default_sans()).unwrap();
        let (addr, requests) = operator(&b, Behaviour::Hold);
        let agent = spawn(&b.ca_pem, addr.port(), true);
        wait_until("the long-poll to arrive", Duration::from_secs(20), || {
            requests.load(Ordering::SeqCst) > 0
        });
        stops_promptly(agent, signal);
    }
}

#[test]
fn backing_off_from_an_unreachable_operator_stops_on_sigterm_in_both_modes() {
    let b = certs::generate(&certs::default_sans()).unwrap();
    for once in [false, true] {
        let agent = spawn(&b.ca_pem, closed_port(), once);
        // Several refused connections and backoff sleeps.
        std::thread::sleep(Duration::from_millis(700));
        stops_promptly(agent, "TERM");
    }
}

/// The status sidecar after the release stays up (so the kubelet does not restart it):
/// it must still end at once on SIGTERM, or the pod lingers for its grace period.
#[test]
fn sidecar_mode_after_the_release_stops_on_sigterm() {
    let b = certs::generate(&certs::default_sans()).unwrap();
    let (addr, _) = operator(&b, Behaviour::Release);
    let mut agent = spawn(&b.ca_pem, addr.port(), false);
    let signal = agent.signal.clone();
    wait_until("the signal file", Duration::from_secs(20), || {
        signal.exists()
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the sidecar stays up"
    );
    send(&agent.child, "TERM");
    let (status, took) =
        wait_exit(&mut agent.child, Duration::from_secs(5)).expect("exits on SIGTERM");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(status.code(), Some(0));
}

/// An operator certificate the injected CA does not verify is permanent: exit 1 once it
/// has lasted `UNTRUSTED_GRACE` (5 s), with one line on stderr saying so (the kubelet
/// shows it in the container status).
#[test]
fn an_untrusted_operator_certificate_exits_1_with_a_clear_line() {
    let served = certs::generate(&certs::default_sans()).unwrap();
    let other = certs::generate(&certs::default_sans()).unwrap();
    let (addr, _) = operator(&served, Behaviour::Hold);
    // The other CA as PEM; and as the pin the webhook injects, against an operator that
    // serves its own CA after its chain (as every operator with pins does): no certificate
    // of the pinned key, a verdict.
    let other_pin = kube_standby::tls::pin::pins_of_bundle(&other.ca_pem).unwrap();
    let with_ca = certs::Bundle {
        cert_pem: certs::full_chain(&served),
        ..served.clone()
    };
    let (full_addr, _) = operator(&with_ca, Behaviour::Hold);
    for (once, ca, port) in [
        (true, &other.ca_pem, addr.port()),
        (false, &other.ca_pem, addr.port()),
        (true, &other_pin, full_addr.port()),
        (false, &other_pin, full_addr.port()),
    ] {
        let mut agent = spawn(ca, port, once);
        let (status, took) = wait_exit(&mut agent.child, Duration::from_secs(15)).expect("exits");
        assert!(
            took >= kube_standby::agent::UNTRUSTED_GRACE,
            "gave up after {took:?}, before the grace"
        );
        let err = stderr_of(&mut agent.child);
        assert_eq!(status.code(), Some(1), "{err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(
                "error: kube-standby agent: the operator's certificate is not trusted"
            ),
            "{err}"
        );
        assert!(!agent.signal.exists());
    }
    // An empty CA is a configuration error, also at once.
    let mut agent = spawn("", addr.port(), true);
    let (status, _) = wait_exit(&mut agent.child, Duration::from_secs(10)).expect("exits");
    let err = stderr_of(&mut agent.child);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("CA bundle holds no certificate"), "{err}");
    // An operator serving its leaf alone (a version before pins, during a rolling upgrade)
    // cannot be checked against the pins, which is no verdict on them: the agent keeps
    // retrying past the grace instead of failing the pod.
    let right_pin = kube_standby::tls::pin::pins_of_bundle(&served.ca_pem).unwrap();
    let mut agent = spawn(&right_pin, addr.port(), true);
    let grace = kube_standby::agent::UNTRUSTED_GRACE + Duration::from_secs(3);
    assert!(
        wait_exit(&mut agent.child, grace).is_none(),
        "gave up on an operator that serves no CA: {}",
        stderr_of(&mut agent.child)
    );
    let _ = agent.child.kill();
    let _ = agent.child.wait();
    // A malformed pin is a configuration error, at once.
    let mut agent = spawn("sha256:0123", addr.port(), true);
    let (status, _) = wait_exit(&mut agent.child, Duration::from_secs(10)).expect("exits");
    let err = stderr_of(&mut agent.child);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("64 hex digits"), "{err}");
}

/// No answer for --give-up-seconds: exit 1 naming the last error (the kubelet restarts it).
#[test]
fn an_unreachable_operator_is_given_up_after_the_limit() {
    let b = certs::generate(&certs::default_sans()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-standby"))
        .args(["agent", "--once", "--give-up-seconds", "1"])
        .arg("--token-file")
        .arg(&token)
        .env(
            "KUBE_STANDBY_OPERATOR_URL",
            format!("https://localhost:{}", closed_port()),
        )
        .env("KUBE_STANDBY_CA", &b.ca_pem)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, took) = wait_exit(&mut child, Duration::from_secs(10)).expect("gives up");
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(
        err.contains("no release answer from the operator for 1s") && err.contains("connect"),
        "{err}"
    );
}

/// The init gate as the webhook injects it (`agent --once`, `KUBE_STANDBY_EPOCH_FILE` in
/// its environment): once released it writes the epoch to that file and exits 0, so the
/// app container, started after it, reads the file.
#[test]
fn init_gate_mode_writes_the_epoch_file_from_its_environment_then_exits_0() {
    let b = certs::generate(&certs::default_sans()).unwrap();
    let (addr, _) = operator(&b, Behaviour::ReleaseWithEpoch(42));
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok\n").unwrap();
    let epoch = dir.path().join("epoch");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-standby"))
        .args(["agent", "--once", "--poll-seconds", "30"])
        .arg("--token-file")
        .arg(&token)
        .env(
            "KUBE_STANDBY_OPERATOR_URL",
            format!("https://localhost:{}", addr.port()),
        )
        .env("KUBE_STANDBY_CA", &b.ca_pem)
        .env("KUBE_STANDBY_EPOCH_FILE", &epoch)
        .env("POD_UID", "uid-0")
        .env_remove("KUBE_STANDBY_GIVE_UP_SECONDS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, _) = wait_exit(&mut child, Duration::from_secs(20)).expect("the gate exits");
    assert_eq!(status.code(), Some(0), "{}", stderr_of(&mut child));
    assert_eq!(std::fs::read_to_string(&epoch).unwrap(), "42\n");
}
