//! The real binary with a stderr nobody reads (a container runtime's log pipe that has
//! stalled): admission reviews are still answered, because log lines are written by a
//! thread of their own and dropped, counted, when they cannot be (`telemetry::background`).
//! Each refused review logs a warning of about 200 bytes, so the 64 KiB pipe is full after
//! a few hundred; a server that wrote its logs in the request path would stop answering
//! there.
mod common;

use std::process::Stdio;
use std::time::Duration;

#[tokio::test]
async fn reviews_are_answered_while_nobody_reads_stderr() {
    // Piped, and never read: kept open by `child` until the end of the test.
    let (port, mut child) = common::spawn_webhook(Stdio::piped()).await;
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
            Ok(r) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("request {i}: status {}", r.status());
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("request {i} not answered (stderr unread): {e}");
            }
        }
    }
    assert_eq!(answered, 3000);
    let _ = child.kill();
    let _ = child.wait();
}
