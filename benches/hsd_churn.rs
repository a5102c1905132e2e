//! HotStandbyDeployment reaction under churn (issue 22, item 1): `kube-standby run` against
//! the fake API server, which holds every write a few milliseconds (BENCH_WRITE_LATENCY_MS,
//! default 4) before answering and checks DELETE preconditions as a real one does. Five HSDs
//! (annotation mode, idleTarget 2, scaleDownDelaySeconds 0, maxReplicas 100), each with its
//! child Deployment, one ReplicaSet and idle pods; `tests/support/hsd_pool.rs` plays the API
//! server and the ReplicaSet (a child write is answered by a MODIFIED Deployment and pods
//! ADDED or DELETED to the new count; a pod the operator deletes is DELETED; a cost patch is
//! a MODIFIED pod). Pods are flipped busy and idle across the five HSDs at BENCH_FLIPS_PER_S
//! (default 20) in all for BENCH_SECONDS (default 30), from a seeded generator
//! (BENCH_SEED), keeping each pool between about 2 and 8 busy pods.
//!
//! Printed (never asserted):
//! - from each busy flip (its watch event sent, in this process) to the arrival of the first
//!   child write whose `spec.replicas` is at least busy + idleTarget of that HSD: p50, p99,
//!   max (targets p50 <= 30 ms, p99 <= 100 ms); the same to that write's answer;
//! - the longest stretch any HSD had fewer than idleTarget idle pods while below maxReplicas
//!   (target <= 2 s), the total, and how many stretches were over 2 s;
//! - the writes by kind, and the counts that must be 0 (busy pods deleted).
//!
//!   cargo bench --bench hsd_churn
//!   BENCH_SECONDS=60 BENCH_WRITE_LATENCY_MS=5 cargo bench --bench hsd_churn
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "../tests/support/hsd_pool.rs"]
mod hsd_pool;

use hsd_pool::{PoolSpec, Sim};

const NS: &str = "bench";
const POOLS: usize = 5;
const IDLE_TARGET: i32 = 2;
const MAX_REPLICAS: i32 = 100;
const TARGET_P50: Duration = Duration::from_millis(30);
const TARGET_P99: Duration = Duration::from_millis(100);
const TARGET_SHORT: Duration = Duration::from_secs(2);

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: a small seeded generator (the flips are the same from run to run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Wait until the HSD controller's pod, ReplicaSet and Deployment watches are open (events
/// pushed before would be lost).
async fn watches_open(api: &fake_apiserver::FakeApi) -> bool {
    for _ in 0..500 {
        let seen = api.seen.0.lock().map(|s| s.clone()).unwrap_or_default();
        let open = |p: &str| {
            seen.iter().any(|s| {
                s.contains(&format!("{p}?"))
                    && s.contains("watch=true")
                    && s.contains("labelSelector=hsd.paia.tech")
            })
        };
        if open(hsd_pool::PODS) && open(hsd_pool::REPLICASETS) && open(hsd_pool::DEPLOYMENTS) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn is_status_write(w: &fake_apiserver::Write) -> bool {
    w.path.contains("/hotstandbydeployments/") && w.path.ends_with("/status")
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// One flip every `period` for `run`: a random pool; a busy flip when it has few busy pods,
/// an idle flip when it has many, else either.
async fn flip_for(sim: &Sim, run: Duration, period: Duration, rng: &mut Rng) -> usize {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + run;
    let mut flips = 0;
    while Instant::now() < end {
        tick.tick().await;
        let pool = rng.below(POOLS as u64) as usize;
        let (busy, idle) = sim.counts(pool);
        let p_busy = match busy {
            b if b < 2 => 80,
            b if b > 8 => 20,
            _ => 50,
        };
        let want_busy = (rng.below(100) < p_busy && idle > 0) || busy == 0;
        let pick = rng.below(1 << 16) as usize;
        if sim.flip(pool, pick, want_busy).is_some() {
            flips += 1;
        }
    }
    flips
}

/// `kube_standby_hsd_reaction_seconds` sum and count (the operator's own measure: from the
/// start of a reconcile that scaled to its child write answered).
fn reaction_metric(metrics: &str) -> Option<(f64, f64)> {
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .last()?
            .parse::<f64>()
            .ok()
    };
    Some((
        value("kube_standby_hsd_reaction_seconds_sum")?,
        value("kube_standby_hsd_reaction_seconds_count")?,
    ))
}

struct Setup {
    seconds: u64,
    rate: f64,
    latency_ms: u64,
}

fn report(setup: &Setup, flips: usize, stats: &hsd_pool::Stats, waiting: &[Duration]) {
    println!(
        "hsd churn: {POOLS} HSDs (idleTarget {IDLE_TARGET}, scaleDownDelaySeconds 0, maxReplicas {MAX_REPLICAS}), \
         {} ms per write, {flips} flips in {} s ({:.1}/s asked {:.1}/s: {} busy, {} idle)",
        setup.latency_ms,
        setup.seconds,
        flips as f64 / setup.seconds as f64,
        setup.rate,
        stats.busy_flips,
        stats.idle_flips
    );
    let mut sorted = stats.latencies.clone();
    sorted.sort();
    let mut answered = stats.answered.clone();
    answered.sort();
    if sorted.is_empty() {
        println!("  no busy flip was answered by a child write");
    } else {
        let (p50, p99, max) = (
            pct(&sorted, 50.0),
            pct(&sorted, 99.0),
            sorted[sorted.len() - 1],
        );
        println!(
            "  busy flip -> child write with replicas >= busy + idleTarget (arrival), {} flips measured:",
            sorted.len()
        );
        println!(
            "    p50 = {:.2} ms   p99 = {:.2} ms   max = {:.2} ms   min = {:.2} ms",
            ms(p50),
            ms(p99),
            ms(max),
            ms(sorted[0])
        );
        println!(
            "    same, to the write's answer: p50 = {:.2} ms   p99 = {:.2} ms   max = {:.2} ms",
            ms(pct(&answered, 50.0)),
            ms(pct(&answered, 99.0)),
            ms(answered[answered.len() - 1])
        );
        println!(
            "    target p50 <= {} ms: {}; p99 <= {} ms: {}",
            TARGET_P50.as_millis(),
            met(p50 <= TARGET_P50),
            TARGET_P99.as_millis(),
            met(p99 <= TARGET_P99)
        );
    }
    println!(
        "    not measured: {} covered (the child already asked for enough), {} superseded (an idle flip \
         lowered the need first), {} lost to a delete committed first; {} still waiting at the end{}",
        stats.covered,
        stats.superseded,
        stats.lost_to_delete,
        waiting.len(),
        waiting
            .iter()
            .max()
            .map(|d| format!(" (oldest {:.0} ms)", ms(*d)))
            .unwrap_or_default()
    );
    println!(
        "  idle pods short of idleTarget while below maxReplicas: longest {:.0} ms ({}), total {:.2} s, \
         {} stretch(es) over 2 s; target <= 2 s: {}",
        ms(stats.longest_short),
        stats.longest_short_pool,
        stats.total_short.as_secs_f64(),
        stats.short_over_2s,
        met(stats.longest_short <= TARGET_SHORT)
    );
    let writes: Vec<String> = stats
        .writes
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!("  writes: {}", writes.join(", "));
    println!(
        "  busy pods deleted by the operator: {}, removed by the ReplicaSet: {}; deletes refused (preconditions): {}",
        stats.busy_deleted_by_operator, stats.busy_removed_by_replicaset, stats.deletes_refused
    );
    if !stats.unexpected.is_empty() {
        println!(
            "  unexpected writes ({}), first: {:?}",
            stats.unexpected.len(),
            stats.unexpected.first()
        );
    }
}

fn main() {
    let setup = Setup {
        seconds: env_or("BENCH_SECONDS", 30),
        rate: env_or("BENCH_FLIPS_PER_S", 20.0f64).max(0.1),
        latency_ms: env_or("BENCH_WRITE_LATENCY_MS", 4),
    };
    let seed: u64 = env_or("BENCH_SEED", 22);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let specs: Vec<PoolSpec> = (0..POOLS)
            .map(|i| PoolSpec {
                name: format!("pool{i}"),
                idle_target: IDLE_TARGET,
                max_replicas: MAX_REPLICAS,
                scale_down_delay_seconds: 0,
            })
            .collect();
        let (objects, model) = hsd_pool::build(NS, &specs);
        let api = Arc::new(fake_apiserver::start_with(objects).await);
        api.check_delete_preconditions(true);
        let run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
        if !run.wait_ready().await || !watches_open(&api).await {
            println!(
                "run mode never became ready or never watched; it said:\n{}",
                run.stderr()
            );
            return;
        }
        // Each pool's first reconcile (already full) ends with its status write.
        for _ in 0..100 {
            let n = api.writes.since(0).iter().filter(|w| is_status_write(w)).count();
            if n >= POOLS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        api.set_write_latency(Duration::from_millis(setup.latency_ms));
        let sim = Sim::new(api.clone(), model);
        let follower = tokio::spawn(sim.clone().follow(api.writes.len()));
        let period = Duration::from_secs_f64(1.0 / setup.rate);
        let mut rng = Rng(seed.max(1));
        let flips = flip_for(&sim, Duration::from_secs(setup.seconds), period, &mut rng).await;
        // Let the last flips be answered.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (stats, waiting) = sim.stats();
        follower.abort();
        let metrics = run
            .get_ops("/metrics")
            .await
            .map(|(_, m)| m)
            .unwrap_or_default();
        report(&setup, flips, &stats, &waiting);
        if let Some((sum, count)) = reaction_metric(&metrics).filter(|(_, c)| *c > 0.0) {
            println!(
                "  operator's own measure (reconcile start -> child write answered, every scale): mean {:.2} ms over {count}",
                sum / count * 1e3
            );
        }
        let stderr = run.stderr();
        let warnings = stderr.lines().filter(|l| l.contains("WARN")).count();
        if warnings > 0 {
            println!("  operator warnings: {warnings}; first:");
            for l in stderr.lines().filter(|l| l.contains("WARN")).take(3) {
                println!("    {l}");
            }
        }
    });
}
