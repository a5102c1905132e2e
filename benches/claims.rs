//! Claims (issue 19): the claim controller of this process against the fake API server in
//! store mode (every write applied, sent back through the watches and held
//! BENCH_WRITE_LATENCY_MS, default 3, before it is answered; a pod write guarded by a stale
//! resourceVersion answered 409 as a real API server does). Three runs, each on a fresh
//! fake and controller:
//!
//! 1. latency: claims created at BENCH_RATE per second (default 50) on an HSD pool with more
//!    idle pods than claims; from the create's arrival at the API server to the claim's
//!    status written Bound (both read off the fake's write log): p50, p99, max
//!    (targets p50 <= 20 ms, p99 <= 50 ms);
//! 2. throughput: 16 concurrent callers, each creating a claim and waiting for it to be
//!    Bound, BENCH_CLAIMS in all (default 1,000), on a pool large enough: bindings/s
//!    (target >= 300/s);
//! 3. no double binding: 16 concurrent callers on a pool of 20 pods, BENCH_CLAIMS claims
//!    with `release: Recycle`, each deleted once Bound (its pod goes back to the pool): from
//!    the write log, every pod's successful claim writes and releases must alternate
//!    (a pod claimed again while claimed is a double binding; target 0).
//!
//! Printed, never asserted.
//!
//!   cargo bench --bench claims
//!   BENCH_WRITE_LATENCY_MS=5 BENCH_CLAIMS=2000 cargo bench --bench claims
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

#[path = "../tests/support/claim_pool.rs"]
mod claim_pool;
#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;

const NS: &str = "bench";

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn spec(pool: &str, release: &str) -> serde_json::Value {
    json!({"poolRef": {"kind": "HotStandbyDeployment", "name": pool}, "release": release, "waitSeconds": 60})
}

fn is_bound_status(w: &fake_apiserver::Write, name: &str) -> bool {
    // No allocation: every caller's wait runs this over every new write.
    let names_it = w
        .path
        .strip_suffix("/status")
        .and_then(|p| p.rsplit_once('/'))
        .is_some_and(|(pre, n)| n == name && pre.ends_with("/hotstandbyclaims"));
    w.method == "PATCH" && names_it && w.status == 200 && w.body["status"]["phase"] == "Bound"
}

/// Create → Bound for each claim, from the write log.
fn latencies(c: &claim_pool::Claims) -> (Vec<Duration>, usize) {
    let mut created: HashMap<String, Instant> = HashMap::new();
    let mut bound: HashMap<String, Instant> = HashMap::new();
    for w in c.api.writes.since(0) {
        if w.method == "POST" && w.path.ends_with("/hotstandbyclaims") && w.status == 201 {
            if let Some(n) = w.answer["metadata"]["name"].as_str() {
                created.insert(n.to_string(), w.at);
            }
        }
        if w.method == "PATCH"
            && w.path.ends_with("/status")
            && w.body["status"]["phase"] == "Bound"
        {
            if let Some(n) = w.path.rsplit('/').nth(1) {
                bound.entry(n.to_string()).or_insert(w.answered);
            }
        }
    }
    let mut v: Vec<Duration> = created
        .iter()
        .filter_map(|(n, t0)| bound.get(n).map(|t1| t1.saturating_duration_since(*t0)))
        .collect();
    v.sort();
    let unbound = created.len() - v.len();
    (v, unbound)
}

async fn wait_bound(c: &claim_pool::Claims, name: &str, from: usize) -> bool {
    c.api
        .writes
        .wait_for(from, Duration::from_secs(60), |w| is_bound_status(w, name))
        .await
        .is_some()
}

async fn latency_run(latency: Duration, rate: u32, n: usize) {
    let c =
        Arc::new(claim_pool::start(claim_pool::hsd_pool(NS, "lat", n + 50, 10_000), latency).await);
    let every = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let start = tokio::time::Instant::now();
    let mut tasks = vec![];
    for i in 0..n {
        tokio::time::sleep_until(start + every * i as u32).await;
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.create(NS, &format!("l{i}"), spec("lat", "Delete")).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    // Let the last bindings land.
    for _ in 0..500 {
        if latencies(&c).1 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (v, unbound) = latencies(&c);
    println!(
        "latency: {} claims at {rate}/s, write latency {}: create → Bound p50 {} p99 {} max {} (targets p50 <= 20 ms, p99 <= 50 ms); not bound: {unbound}",
        v.len(),
        ms(latency),
        ms(pct(&v, 0.5)),
        ms(pct(&v, 0.99)),
        ms(v.last().copied().unwrap_or_default()),
    );
}

async fn throughput_run(latency: Duration, n: usize, callers: usize) {
    let c =
        Arc::new(claim_pool::start(claim_pool::hsd_pool(NS, "tp", n + 50, 100_000), latency).await);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = vec![];
    for _ in 0..callers {
        let (c, next) = (c.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return done;
                }
                let from = c.api.writes.len();
                let name = format!("t{i}");
                c.create(NS, &name, spec("tp", "Delete")).await;
                if wait_bound(&c, &name, from).await {
                    done += 1;
                }
            }
        }));
    }
    let mut bound = 0;
    for t in tasks {
        bound += t.await.unwrap_or(0);
    }
    let secs = t0.elapsed().as_secs_f64();
    let (v, _) = latencies(&c);
    println!(
        "throughput: {callers} callers, {bound} of {n} bound in {secs:.2} s: {:.0} bindings/s (target >= 300/s); create → Bound p50 {} p99 {}",
        bound as f64 / secs,
        ms(pct(&v, 0.5)),
        ms(pct(&v, 0.99)),
    );
}

async fn double_binding_run(latency: Duration, n: usize, callers: usize) {
    let c = Arc::new(claim_pool::start(claim_pool::hsd_pool(NS, "dd", 20, 20), latency).await);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = vec![];
    for _ in 0..callers {
        let (c, next) = (c.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return done;
                }
                let from = c.api.writes.len();
                let name = format!("d{i}");
                c.create(NS, &name, spec("dd", "Recycle")).await;
                if wait_bound(&c, &name, from).await {
                    done += 1;
                }
                c.delete(NS, &name).await;
            }
        }));
    }
    let mut bound = 0;
    for t in tasks {
        bound += t.await.unwrap_or(0);
    }
    let secs = t0.elapsed().as_secs_f64();
    // Per pod: successful claim writes (claim annotation set) and releases (set to null)
    // must alternate, starting with a claim.
    let mut claimed: HashMap<String, bool> = HashMap::new();
    let mut double = 0;
    let mut claims = 0;
    for w in c.api.writes.since(0) {
        if w.method != "PATCH" || !w.path.contains("/pods/") || w.status != 200 {
            continue;
        }
        let pod = w.path.rsplit('/').next().unwrap_or_default().to_string();
        let a = &w.body["metadata"]["annotations"][claim_pool::CLAIM];
        let held = claimed.entry(pod).or_insert(false);
        if a.is_string() {
            claims += 1;
            if *held {
                double += 1;
            }
            *held = true;
        } else if a.is_null()
            && w.body["metadata"]["annotations"]
                .get(claim_pool::CLAIM)
                .is_some()
        {
            *held = false;
        }
    }
    println!(
        "double binding: {callers} callers, pool of 20, {bound} of {n} claims bound ({claims} pod claim writes) in {secs:.2} s; pods claimed while claimed: {double} (target 0)"
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let latency = Duration::from_millis(env_or("BENCH_WRITE_LATENCY_MS", 3));
    let n = env_or("BENCH_CLAIMS", 1000usize);
    let rate = env_or("BENCH_RATE", 50u32);
    println!(
        "claims bench: write latency {}, {} cores",
        ms(latency),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    rt.block_on(async {
        latency_run(latency, rate, (rate as usize * 5).min(n)).await;
        throughput_run(latency, n, 16).await;
        double_binding_run(latency, n, 16).await;
    });
}
