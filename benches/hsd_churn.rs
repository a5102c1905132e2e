//! HotStandbyDeployment reaction under churn (issue 22, items 1 and 3): `kube-standby run`
//! against the fake API server, which holds every write a few milliseconds
//! (BENCH_WRITE_LATENCY_MS, default 4) before answering and checks DELETE preconditions as a
//! real one does. BENCH_POOLS HSDs (default 5; annotation mode, idleTarget 2,
//! scaleDownDelaySeconds 0, maxReplicas 100), each with its child Deployment, one ReplicaSet
//! and BENCH_PODS_PER_POOL pods at the start (default 2 for up to 5 pools, all idle, as
//! before; 10 above, issue 22's 1,000 x 10: 8 busy and 2 idle, so every pool starts settled);
//! `tests/support/hsd_pool.rs` plays the API server and the ReplicaSet (a child write is
//! answered by a MODIFIED Deployment and pods ADDED or DELETED to the new count; a pod the
//! operator deletes is DELETED; a cost patch is a MODIFIED pod). Once the operator has
//! settled (every HSD's status written, then a second without a write; the time is printed),
//! pods are flipped busy and idle across random HSDs at BENCH_FLIPS_PER_S (default 20) in all
//! for BENCH_SECONDS (default 30), from a seeded generator (BENCH_SEED), keeping each pool
//! between about 2 and 8 busy pods.
//!
//! Printed (never asserted):
//! - from each busy flip (its watch event sent, in this process) to the arrival of the first
//!   child write whose `spec.replicas` is at least busy + idleTarget of that HSD: p50, p99,
//!   max (targets p50 <= 30 ms, p99 <= 100 ms); the same to that write's answer;
//! - the longest stretch any HSD had fewer than idleTarget idle pods while below maxReplicas
//!   (target <= 2 s), the total, and how many stretches were over 2 s;
//! - the writes by kind, and the counts that must be 0 (busy pods deleted);
//! - the CPU time the operator and this process (fake API server + pool player) used during
//!   the flips, so a slow bench process shows; the HSD reconciles meanwhile;
//! - with BENCH_SLOWEST=N, the N slowest busy flips, each with its pool's writes around it
//!   and the writes in flight when it was sent (where the time went).
//!
//!   cargo bench --bench hsd_churn
//!   BENCH_SECONDS=60 BENCH_WRITE_LATENCY_MS=5 cargo bench --bench hsd_churn
//!   BENCH_POOLS=1000 cargo bench --bench hsd_churn          # 1,000 HSDs x 10 pods
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "../tests/support/hsd_pool.rs"]
mod hsd_pool;

use hsd_pool::{PoolSpec, Sim};

const NS: &str = "bench";
const POOLS: usize = 5;
/// Pods per pool at the start above the default pool count (issue 22: 1,000 pools x 10).
const PODS_AT_SCALE: i32 = 10;
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

/// Wait (up to `within`) until the HSD controller's pod, ReplicaSet and Deployment watches
/// are open (events pushed before would be lost).
async fn watches_open(api: &fake_apiserver::FakeApi, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        // Read under the lock, not cloned: the log holds every request (thousands of writes
        // at scale).
        let all_open = api.seen.0.lock().is_ok_and(|seen| {
            let open = |p: &str| {
                let prefix = format!("{p}?");
                seen.iter().any(|s| {
                    s.contains(&prefix)
                        && s.contains("watch=true")
                        && s.contains("labelSelector=hsd.paia.tech")
                })
            };
            open(hsd_pool::PODS) && open(hsd_pool::REPLICASETS) && open(hsd_pool::DEPLOYMENTS)
        });
        if all_open {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn is_status_write(w: &fake_apiserver::Write) -> bool {
    w.path.contains("/hotstandbydeployments/") && w.path.ends_with("/status")
}

/// A write's kind, as the pool player counts them.
fn kind_of(w: &fake_apiserver::Write) -> &'static str {
    match w.method.as_str() {
        _ if is_status_write(w) => "HSD status",
        _ if w.path.contains("/events") => "event",
        "PATCH" if w.path.contains("/deployments/") => "child Deployment",
        "PATCH" if w.path.contains("/pods/") => "pod cost",
        "DELETE" if w.path.contains("/pods/") => "pod delete",
        _ => "other",
    }
}

fn by_kind(counts: &BTreeMap<&str, usize>) -> String {
    let all: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    all.join(", ")
}

/// Wait (up to `within`) until every one of `pools` HSDs has had its status written (the end
/// of its first reconcile) and then no write came for `quiet`. The writes meanwhile by kind,
/// or None if that never happened.
async fn settled(
    api: &fake_apiserver::FakeApi,
    pools: usize,
    quiet: Duration,
    within: Duration,
) -> Option<BTreeMap<&'static str, usize>> {
    let end = Instant::now() + within;
    let mut from = 0;
    let mut written: HashSet<String> = HashSet::new();
    let mut kinds = BTreeMap::new();
    while Instant::now() < end {
        let all = written.len() >= pools;
        let wait = if all {
            quiet
        } else {
            Duration::from_millis(200)
        };
        match api.writes.wait_for(from, wait, |_| true).await {
            None if all => return Some(kinds),
            None => {}
            Some(_) => {
                // Only the new writes are cloned.
                for w in api.writes.since(from) {
                    from += 1;
                    *kinds.entry(kind_of(&w)).or_default() += 1;
                    if is_status_write(&w) {
                        written.insert(w.path);
                    }
                }
            }
        }
    }
    None
}

/// CPU time (user + system) of process `pid` ("self" for this one) so far, from
/// /proc/PID/stat (in USER_HZ ticks, 100 per second on Linux).
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// CPU time of the operator and of this process so far.
struct Cpu {
    operator: Option<Duration>,
    bench: Option<Duration>,
    at: Instant,
}

impl Cpu {
    fn now(operator_pid: u32) -> Cpu {
        Cpu {
            operator: cpu_time(&operator_pid.to_string()),
            bench: cpu_time("self"),
            at: Instant::now(),
        }
    }

    /// "operator N %, bench process M %" of one core since `before`.
    fn since(&self, before: &Cpu) -> String {
        let wall = self.at.saturating_duration_since(before.at).as_secs_f64();
        let share = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) if wall > 0.0 => {
                format!("{:.0} %", a.saturating_sub(b).as_secs_f64() / wall * 100.0)
            }
            _ => "?".to_string(),
        };
        format!(
            "operator {}, bench process (fake API server + pool player) {}",
            share(self.operator, before.operator),
            share(self.bench, before.bench)
        )
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
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
async fn flip_for(
    sim: &Sim,
    pools: usize,
    run: Duration,
    period: Duration,
    rng: &mut Rng,
) -> usize {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + run;
    let mut flips = 0;
    while Instant::now() < end {
        tick.tick().await;
        let pool = rng.below(pools as u64) as usize;
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

/// The HSD ("poolN") a write is for: from its path (child Deployment, pod, HSD status) or,
/// for an Event, the object it is about.
fn pool_of_write(w: &fake_apiserver::Write) -> Option<String> {
    let path = w.path.strip_suffix("/status").unwrap_or(&w.path);
    let last = path.rsplit('/').next()?;
    let name = if w.path.contains("/events") {
        ["regarding", "involvedObject"]
            .iter()
            .find_map(|k| w.body[k]["name"].as_str())?
    } else if w.path.contains("/hotstandbydeployments/") {
        last
    } else if w.path.contains("/deployments/") {
        last.strip_suffix("-workload")?
    } else if w.path.contains("/pods/") {
        last.rsplit_once('-')?.0
    } else {
        return None;
    };
    Some(name.to_string())
}

/// For each of the `n` slowest measured busy flips: the writes of all pools in flight when
/// it was sent, and its pool's own writes from 100 ms before to the answering child write
/// (times from the flip: arrival..answer), so a flip that waited for its own HSD's reconcile
/// shows apart from one that waited for something shared.
fn slowest(api: &fake_apiserver::FakeApi, stats: &hsd_pool::Stats, n: usize) {
    let mut measured = stats.measured.clone();
    let Some(first) = measured.iter().map(|m| m.1).min() else {
        return;
    };
    let over = |limit: u64| {
        measured
            .iter()
            .filter(|m| m.2 > Duration::from_millis(limit))
            .count()
    };
    println!(
        "  busy flips measured over 10 / 20 / 30 ms: {} / {} / {}",
        over(10),
        over(20),
        over(30)
    );
    measured.sort_by_key(|m| std::cmp::Reverse(m.2));
    let writes = api.writes.since(0);
    println!(
        "  the {n} slowest busy flips (BENCH_SLOWEST), sent at (s from the first measured one), times from the flip in ms:"
    );
    for (pool, at, latency) in measured.into_iter().take(n) {
        let name = format!("pool{pool}");
        let in_flight = writes
            .iter()
            .filter(|w| w.at <= at && w.answered > at)
            .count();
        let rel = |t: Instant| {
            if t >= at {
                ms(t - at)
            } else {
                -ms(at - t)
            }
        };
        let own: Vec<String> = writes
            .iter()
            .filter(|w| {
                w.answered + Duration::from_millis(100) >= at
                    && w.at <= at + latency
                    && pool_of_write(w).as_deref() == Some(name.as_str())
            })
            .map(|w| format!("{} {:.1}..{:.1}", kind_of(w), rel(w.at), rel(w.answered)))
            .collect();
        println!(
            "    {:.2} ms {name} at {:.3} s: {in_flight} write(s) in flight at the flip; the pool's writes: {}",
            ms(latency),
            at.saturating_duration_since(first).as_secs_f64(),
            own.join(", ")
        );
    }
}

/// The HSD controller's reconciles so far and their total duration (seconds), from the
/// operator's metrics (`kube_standby_reconciles_total`, `..._reconcile_duration_seconds`).
fn hsd_reconciles(metrics: &str) -> Option<(f64, f64)> {
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("controller=\"hsd\""))?
            .split_whitespace()
            .last()?
            .parse::<f64>()
            .ok()
    };
    Some((
        value("kube_standby_reconciles_total{")?,
        value("kube_standby_reconcile_duration_seconds_sum{")?,
    ))
}

struct Setup {
    pools: usize,
    pods: i32,
    seconds: u64,
    rate: f64,
    latency_ms: u64,
}

fn report(setup: &Setup, flips: usize, stats: &hsd_pool::Stats, waiting: &[Duration]) {
    println!(
        "hsd churn: {} HSDs ({} pods each at the start, idleTarget {IDLE_TARGET}, scaleDownDelaySeconds 0, \
         maxReplicas {MAX_REPLICAS}), {} ms per write, {flips} flips in {} s ({:.1}/s asked {:.1}/s: {} busy, {} idle)",
        setup.pools,
        setup.pods,
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
    let pools: usize = env_or("BENCH_POOLS", POOLS).max(1);
    let default_pods = if pools <= POOLS {
        IDLE_TARGET
    } else {
        PODS_AT_SCALE
    };
    let setup = Setup {
        pools,
        pods: env_or("BENCH_PODS_PER_POOL", default_pods).max(IDLE_TARGET),
        seconds: env_or("BENCH_SECONDS", 30),
        rate: env_or("BENCH_FLIPS_PER_S", 20.0f64).max(0.1),
        latency_ms: env_or("BENCH_WRITE_LATENCY_MS", 4),
    };
    let seed: u64 = env_or("BENCH_SEED", 22);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let specs: Vec<PoolSpec> = (0..setup.pools)
            .map(|i| PoolSpec {
                name: format!("pool{i}"),
                idle_target: IDLE_TARGET,
                max_replicas: MAX_REPLICAS,
                scale_down_delay_seconds: 0,
            })
            .collect();
        let (objects, model) = hsd_pool::build_sized(NS, &specs, setup.pods);
        let api = Arc::new(fake_apiserver::start_with(objects).await);
        api.check_delete_preconditions(true);
        let started = Instant::now();
        let run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
        let cpu_start = Cpu::now(run.child.id());
        // wait_ready gives up after 20 s; listing 1,000 pools' objects may take longer.
        let mut ready = false;
        for _ in 0..6 {
            ready = run.wait_ready().await;
            if ready {
                break;
            }
        }
        let ready_after = started.elapsed();
        if !ready || !watches_open(&api, Duration::from_secs(120)).await {
            println!(
                "run mode never became ready or never watched; it said:\n{}",
                run.stderr()
            );
            return;
        }
        // Each pool's first reconcile (already full) ends with its status write; then wait
        // for a second without a write (the writes are answered at once until then).
        let quiet = Duration::from_secs(1);
        let Some(start_writes) =
            settled(&api, setup.pools, quiet, Duration::from_secs(600)).await
        else {
            println!(
                "the operator never settled (every HSD's status written, then {} s without a write) in 600 s",
                quiet.as_secs()
            );
            return;
        };
        let settled_after = started.elapsed();
        let cpu_settled = Cpu::now(run.child.id());
        api.set_write_latency(Duration::from_millis(setup.latency_ms));
        let sim = Sim::new(api.clone(), model);
        let follower = tokio::spawn(sim.clone().follow(api.writes.len()));
        let period = Duration::from_secs_f64(1.0 / setup.rate);
        let mut rng = Rng(seed.max(1));
        let metrics_before = run
            .get_ops("/metrics")
            .await
            .map(|(_, m)| m)
            .unwrap_or_default();
        let cpu_flips = Cpu::now(run.child.id());
        let flips = flip_for(
            &sim,
            setup.pools,
            Duration::from_secs(setup.seconds),
            period,
            &mut rng,
        )
        .await;
        let cpu_flipped = Cpu::now(run.child.id());
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
        println!(
            "  start: ready after {:.1} s, settled after {:.1} s (every HSD's status written, then {} s without a write; \
             writes answered at once until then): {}; CPU of one core meanwhile: {}",
            ready_after.as_secs_f64(),
            settled_after.as_secs_f64(),
            quiet.as_secs(),
            by_kind(&start_writes),
            cpu_settled.since(&cpu_start)
        );
        println!(
            "  CPU of one core during the flips: {}; load average at the end {}",
            cpu_flipped.since(&cpu_flips),
            load_average()
        );
        if let Some((sum, count)) = reaction_metric(&metrics).filter(|(_, c)| *c > 0.0) {
            println!(
                "  operator's own measure (reconcile start -> child write answered, every scale): mean {:.2} ms over {count}",
                sum / count * 1e3
            );
        }
        let n_slowest: usize = env_or("BENCH_SLOWEST", 0);
        if n_slowest > 0 {
            slowest(&api, &stats, n_slowest);
            // The operator's own split: reconcile start -> child write answered (every
            // scale), and whole HSD reconciles, as cumulative counts per bucket.
            for (what, prefix, label) in [
                (
                    "reconcile start -> child write answered",
                    "kube_standby_hsd_reaction_seconds_bucket{",
                    "",
                ),
                (
                    "HSD reconcile durations (whole run)",
                    "kube_standby_reconcile_duration_seconds_bucket{",
                    "controller=\"hsd\"",
                ),
            ] {
                let buckets: Vec<String> = metrics
                    .lines()
                    .filter(|l| l.starts_with(prefix) && l.contains(label))
                    .filter_map(|l| {
                        let le = l.split("le=\"").nth(1)?.split('"').next()?;
                        Some(format!("<={le} s: {}", l.split_whitespace().last()?))
                    })
                    .collect();
                println!("  {what}, cumulative: {}", buckets.join(", "));
            }
        }
        if let (Some((n0, d0)), Some((n1, d1))) =
            (hsd_reconciles(&metrics_before), hsd_reconciles(&metrics))
        {
            let n = n1 - n0;
            println!(
                "  HSD reconciles from the first flip to the end: {n} ({:.1} per flip), mean duration {:.2} ms",
                n / flips.max(1) as f64,
                if n > 0.0 { (d1 - d0) / n * 1e3 } else { 0.0 }
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
