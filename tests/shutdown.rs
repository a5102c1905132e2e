//! The real binary and SIGTERM (every pod deletion and rollout of the operator): a requested
//! shutdown exits 0 and says so, answering the admission review in flight first (and writing
//! its log line, which follows the answer) before it stops; a task that dies on its own
//! still ends the process non-zero, naming it.
mod common;
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} failed");
}

/// Wait up to `limit` for the child to exit.
async fn exited(child: &mut Child, limit: Duration) -> Option<(ExitStatus, Duration)> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some((s, start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The grace period a pod gets by default; a clean shutdown must fit well inside it.
const GRACE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn sigterm_while_idle_exits_0_and_says_it_shut_down() {
    let api = fake_apiserver::start().await;
    let mut run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
    assert!(run.wait_ready().await, "{}", run.stderr());
    signal(&run.child, "TERM");
    let (status, took) = exited(&mut run.child, GRACE)
        .await
        .unwrap_or_else(|| panic!("still running {GRACE:?} after SIGTERM:\n{}", run.stderr()));
    let log = run.stderr();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("shut down cleanly"), "{log}");
    assert!(!log.contains("error:"), "{log}");
    assert!(
        !log.contains("exiting so the process is restarted"),
        "{log}"
    );
    eprintln!("exited {took:?} after SIGTERM");
}

#[tokio::test]
async fn sigint_in_webhook_mode_exits_0() {
    let (_, mut child) = common::spawn_webhook(Stdio::null()).await;
    signal(&child, "INT");
    let (status, _) = exited(&mut child, GRACE).await.expect("exit after SIGINT");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigterm_answers_the_admission_review_in_flight_before_exiting() {
    let api = fake_apiserver::start().await;
    let mut run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
    assert!(run.wait_ready().await, "{}", run.stderr());
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/admission/pod-create-from-replicaset.json"
    ))
    .expect("example review");
    let (first, rest) = body.split_at(body.len() / 2);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    // The body arrives in two parts: the review is in flight when SIGTERM comes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(hyper::body::Bytes::from(b)), rx))
    });
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .build()
        .expect("client");
    let url = format!("https://127.0.0.1:{}/mutate/pods", run.port);
    let len = body.len();
    let request = tokio::spawn(async move {
        client
            .post(url)
            .header("content-type", "application/json")
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
    });
    tx.send(first).await.expect("first half");
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&run.child, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        run.child.try_wait().expect("try_wait").is_none(),
        "exited with a review in flight:\n{}",
        run.stderr()
    );
    tx.send(rest).await.expect("second half");
    drop(tx);
    let answer = request
        .await
        .expect("request task")
        .unwrap_or_else(|e| panic!("no answer to the review in flight: {e}\n{}", run.stderr()));
    assert_eq!(answer.status(), 200);
    let review: serde_json::Value = answer.json().await.expect("JSON answer");
    assert_eq!(review["response"]["allowed"], true, "{review}");
    let (status, _) = exited(&mut run.child, GRACE)
        .await
        .unwrap_or_else(|| panic!("still running after the review:\n{}", run.stderr()));
    assert_eq!(status.code(), Some(0), "{}", run.stderr());
    // Once stopped, nothing is accepted any more.
    assert!(std::net::TcpStream::connect(("127.0.0.1", run.port)).is_err());
    // The review's log line is written after its answer (by a task of its own, and then by
    // the log writer thread): a shutdown that follows the answer at once still writes it.
    let uid = serde_json::from_slice::<serde_json::Value>(&body).expect("review")["request"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let log = run.stderr();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("admission reviewed"))
        .collect();
    assert_eq!(lines.len(), 1, "one line for the one review:\n{log}");
    assert!(lines[0].contains(&uid), "{}", lines[0]);
}

#[tokio::test]
async fn a_task_that_dies_on_its_own_still_exits_non_zero_naming_it() {
    let api = fake_apiserver::start().await;
    let mut run = fake_apiserver::spawn_run_with(
        env!("CARGO_BIN_EXE_kube-standby"),
        &api,
        &["--leader-elect", "--leader-election-namespace", "ops"],
    )
    .await;
    assert!(run.wait_ready().await, "{}", run.stderr());
    // Ready does not mean leading: the first lease round can come later on a loaded machine,
    // and a lease never held is retried, not failed. Wait until it is held.
    let mut leading = false;
    for _ in 0..300 {
        if run.stderr().contains("leader election: leading") {
            leading = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(leading, "never led:\n{}", run.stderr());
    // The Lease API disappears: leader election can no longer renew and fails.
    api.not_served("/apis/coordination.k8s.io", Duration::from_secs(3600));
    let (status, _) = exited(&mut run.child, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("still running:\n{}", run.stderr()));
    let log = run.stderr();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("task leader-election failed"), "{log}");
    assert!(!log.contains("shut down cleanly"), "{log}");
}
