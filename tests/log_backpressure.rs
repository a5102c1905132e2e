//! The real binary with a stderr nobody reads (a container runtime's log pipe that has
//! stalled): admission reviews are still answered, because log lines are written by a
//! thread of their own and dropped, counted, when they cannot be (`telemetry::background`).
//! Each refused review logs a warning of about 200 bytes, so the 64 KiB pipe is full after
//! a few hundred; a server that wrote its logs in the request path would stop answering
//! there.
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn reviews_are_answered_while_nobody_reads_stderr() {
    let (port, ops) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-standby"))
        .args([
            "webhook",
            "--tls-self-signed",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--metrics-bind",
            &format!("127.0.0.1:{ops}"),
        ])
        .stdout(Stdio::null())
        // Piped, and never read: kept open by `child` until the end of the test.
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn webhook");
    let plain = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if plain
            .get(format!("http://127.0.0.1:{ops}/healthz"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "webhook never listened");
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("https://127.0.0.1:{port}/mutate/pods");
    let mut answered = 0;
    for i in 0..3000 {
        // Not an AdmissionReview: refused with 400, and a warning logged for each.
        let r = client
            .post(&url)
            .header("content-type", "application/json")
            .body(format!(
                "{{\"not a review\": {i}, \"pad\": \"{}\"}}",
                "x".repeat(100)
            ))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 400 => answered += 1,
            Ok(r) => panic!("request {i}: status {}", r.status()),
            Err(e) => {
                let _ = child.kill();
                panic!("request {i} not answered (stderr unread): {e}");
            }
        }
    }
    assert_eq!(answered, 3000);
    let _ = child.kill();
    let _ = child.wait();
}
