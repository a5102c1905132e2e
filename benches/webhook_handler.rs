//! The admission handler in process, without TLS or sockets: N AdmissionReviews driven
//! through the webhook's `Router` (and through the floor's, see `support/webhook_bench.rs`)
//! on one thread, the two in alternating batches of 50. Prints nanoseconds per review. Built to be profiled: under
//! `valgrind --tool=callgrind` the instruction count of a run is repeatable, and the
//! difference between two runs of different N is the cost of N reviews alone.
//!
//!   cargo bench --bench webhook_handler
//!   WEBHOOK_SERVER=real|floor WEBHOOK_BODIES=inject|pass WEBHOOK_N=2000 \
//!     valgrind --tool=callgrind target/release/deps/webhook_handler-*  (the bench binary)
//!
//! BENCH_LOG=off: no log subscriber (default: production text logs to a sink).
//! WEBHOOK_PHASES=1: also time the injection's phases apart (parse, review, answer text, drop)
//! against the floor's parse into a `Value`, without the router.
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
        // The real handler spawns its review's log line as a task; a current-thread runtime
        // runs it only when this future yields. Without the yield the lines would never be
        // written (the tasks are dropped with the runtime) and not counted.
        tokio::task::yield_now().await;
    }
    answered
}

/// Nanoseconds per body of `f` over `n` rounds of `bodies`.
fn per_body(bodies: &[&'static [u8]], n: usize, mut f: impl FnMut(&[u8])) -> f64 {
    for b in bodies.iter().cycle().take(n.min(200)) {
        f(b);
    }
    let t = Instant::now();
    for b in bodies.iter().cycle().take(n) {
        f(b);
    }
    t.elapsed().as_nanos() as f64 / n.max(1) as f64
}

/// The injection's phases apart: what each costs on top of the previous one.
fn phases(state: &kube_standby::webhook::WebhookState, n: usize) {
    use kube_standby::webhook::{parse_mutation_review, review, review_body};
    let bodies = &support::INJECT_BODIES;
    let floor = per_body(bodies, n, |b| {
        black_box(serde_json::from_slice::<serde_json::Value>(b).expect("json"));
    });
    let parse = per_body(bodies, n, |b| {
        black_box(parse_mutation_review(b).expect("review"));
    });
    let decide = per_body(bodies, n, |b| {
        let r = parse_mutation_review(b).expect("review");
        black_box(review(&r, state.objects.as_ref(), &state.injection));
    });
    let answer = per_body(bodies, n, |b| {
        let r = parse_mutation_review(b).expect("review");
        let d = review(&r, state.objects.as_ref(), &state.injection);
        black_box(review_body(&d).expect("body"));
    });
    println!("injection phases, {n} reviews (ns per review, each including the ones before):");
    println!("  floor: parse into a Value and drop it  {floor:8.0}");
    println!("  parse_mutation_review and drop         {parse:8.0}");
    println!("  + review (the patch)                   {decide:8.0}");
    println!("  + review_body (the answer text)        {answer:8.0}");
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
    if var("WEBHOOK_PHASES").is_some_and(|v| v == "1") {
        phases(&support::webhook_state(&ca), n);
    }
    println!("webhook handler in process: {n} reviews per case, logs {logs}");
    for (workload, bodies) in workloads {
        // Both servers in turn, a batch each, so that the machine's noise falls on both alike.
        let batch = 50.min(n.max(1));
        let mut ns = vec![0u128; servers.len()];
        for (_, app) in &servers {
            rt.block_on(drive(app, bodies, n.min(200))); // warm up
        }
        let mut done = 0;
        while done < n {
            let k = batch.min(n - done);
            for (i, (_, app)) in servers.iter().enumerate() {
                let t = Instant::now();
                rt.block_on(drive(app, bodies, k));
                ns[i] += t.elapsed().as_nanos();
            }
            done += k;
        }
        let per: Vec<f64> = ns.iter().map(|t| *t as f64 / n.max(1) as f64).collect();
        for ((server, _), ns) in servers.iter().zip(&per) {
            println!("  {workload:6} {server:5}: {ns:8.0} ns per review");
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
