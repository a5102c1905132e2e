//! The admission handler in process, without TLS or sockets: N AdmissionReviews driven
//! through the webhook's `Router` (and through the floor's, see `support/webhook_bench.rs`)
//! on one thread. Prints nanoseconds per review. Built to be profiled: under
//! `valgrind --tool=callgrind` the instruction count of a run is repeatable, and the
//! difference between two runs of different N is the cost of N reviews alone.
//!
//!   cargo bench --bench webhook_handler
//!   WEBHOOK_SERVER=real|floor WEBHOOK_BODIES=inject|pass WEBHOOK_N=2000 \
//!     valgrind --tool=callgrind target/release/deps/webhook_handler-*  (the bench binary)
//!
//! BENCH_LOG=off: no log subscriber (default: production text logs to a sink).
use std::hint::black_box;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

#[path = "support/webhook_bench.rs"]
mod support;

async fn drive(app: &Router, bodies: &[&'static [u8]], n: usize) -> usize {
    let mut answered = 0;
    for i in 0..n {
        let body = bodies[i % bodies.len()];
        let req = Request::post("/mutate/pods")
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(Body::from(body))
            .expect("request");
        let resp = app.clone().oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), 200);
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        answered += black_box(bytes).len();
    }
    answered
}

fn main() {
    let logs = support::install_logs();
    let ca = kube_standby::certs::generate(&kube_standby::certs::default_sans())
        .expect("certs")
        .ca_pem;
    let real = kube_standby::webhook::router(support::webhook_state(&ca));
    let floor = support::floor_router();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let var = |k: &str| std::env::var(k).ok();
    let n: usize = var("WEBHOOK_N")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let servers: Vec<(&str, &Router)> = match var("WEBHOOK_SERVER").as_deref() {
        Some("real") => vec![("real", &real)],
        Some("floor") => vec![("floor", &floor)],
        _ => vec![("floor", &floor), ("real", &real)],
    };
    let workloads: Vec<(&str, &[&'static [u8]])> = match var("WEBHOOK_BODIES").as_deref() {
        Some("inject") => vec![("inject", &support::INJECT_BODIES)],
        Some("pass") => vec![("pass", &support::PASS_BODIES)],
        _ => vec![
            ("inject", &support::INJECT_BODIES),
            ("pass", &support::PASS_BODIES),
        ],
    };
    println!("webhook handler in process: {n} reviews per case, logs {logs}");
    for (workload, bodies) in workloads {
        let mut per = vec![];
        for (server, app) in &servers {
            rt.block_on(drive(app, bodies, n.min(200))); // warm up
            let t = Instant::now();
            rt.block_on(drive(app, bodies, n));
            let ns = t.elapsed().as_nanos() as f64 / n.max(1) as f64;
            println!("  {workload:6} {server:5}: {ns:8.0} ns per review");
            per.push(ns);
        }
        if let [floor, real] = per[..] {
            println!(
                "  {workload:6} real/floor time: {:.2}x (throughput ratio {:.2})",
                real / floor,
                floor / real
            );
        }
    }
}
