//! The webhook over TLS against its floor, with the same client in the same run.
//!
//! Two servers on the product's connection loop (`tls::serve`: rustls, hyper, axum, HTTP/1.1
//! keep-alive): the real webhook (`examples/statefulsingleton-demo.yaml` objects) and the
//! floor (`support/webhook_bench.rs`: parse the AdmissionReview JSON, answer allowed). Each
//! is driven in turn by N concurrent clients, alternating which goes first in each round:
//! - saturation, per workload: rps of each and the ratio real/floor (targets: injection, a
//!   pod CREATE a StatefulSingleton matches, >= 0.85; pass-through, an UPDATE the webhook
//!   leaves alone, >= 0.95);
//! - a fixed 1,000 rps, per workload, the clients' sends spread evenly over time: p50/p99
//!   of each and the ratio of the p99s (target: the real p99 no worse than the floor's,
//!   <= 1.00). The two servers' paced phases are interleaved in slices (A B B A ...,
//!   `BENCH_SLICE_MS`, 100 by default), so a burst of load from a neighbour falls on both
//!   rather than on whichever ran during it.
//!
//! The figures are the medians of the per-round ratios: on a shared machine an absolute rps
//! says more about the neighbours than about the webhook.
//!
//!   cargo bench --bench webhook    (BENCH_SECONDS=4, BENCH_CLIENTS=32, BENCH_ROUNDS=5,
//!                                   BENCH_SLICE_MS=100, BENCH_LOG=off for no log subscriber)
//!
//! The pooled p99 ratio is printed with a 90 % interval from a paired block bootstrap over
//! the slices (`p99_ratio_interval`). With `BENCH_CONTROL=floor` a second floor stands in for
//! the real webhook: an A/A test of the bench itself, whose ratios should sit around 1.00.
//! `BENCH_PACED=only` skips the saturation phases.
//!
//! `cargo bench` builds with the `release` settings; the image ships the `dist` profile (fat
//! LTO, one codegen unit), whose figures differ (PERFORMANCE.md, "The shipped build against
//! its floor"). To measure that build: `cargo bench --profile dist --bench webhook`. The
//! image also runs with glibc's fastbins off (`Dockerfile`): for that, run the built bench
//! with `GLIBC_TUNABLES=glibc.malloc.mxfast=0` set (glibc reads it at start; both servers
//! share the process, so both get it).
//!
//! With `BENCH_COUNT=N` (and `BENCH_SERVER=floor|real`, `BENCH_BODIES=inject|pass`) it sends
//! N requests from one client and exits, to be run under `valgrind --tool=callgrind`.
//! With `BENCH_SATURATE=floor|real` (and `BENCH_BODIES`) it runs one saturation phase of that
//! server and exits, to be profiled (e.g. `perf record`).
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kube_standby::webhook::router;
use kube_standby::{certs, tls};

#[path = "support/webhook_bench.rs"]
mod support;

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// Where the `p` quantile sits among `len` sorted values (len > 0).
fn rank(len: usize, p: f64) -> usize {
    (((len - 1) as f64 * p).round() as usize).min(len - 1)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[rank(sorted.len(), p)]
}

/// What one phase measured.
struct Figures {
    requests: usize,
    errors: usize,
    rps: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// Every latency, sorted, for pooling over rounds.
    sorted: Vec<Duration>,
}

impl Figures {
    fn new(mut lat: Vec<Duration>, errors: usize, elapsed: Duration) -> Self {
        lat.sort();
        Figures {
            requests: lat.len(),
            errors,
            rps: lat.len() as f64 / elapsed.as_secs_f64(),
            p50: percentile(&lat, 0.50),
            p99: percentile(&lat, 0.99),
            max: lat.last().copied().unwrap_or_default(),
            sorted: lat,
        }
    }

    fn print(&self, name: &str) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "  {name:32} requests={:6} errors={} rps={:6.0} p50={:.3}ms p99={:.3}ms max={:.3}ms",
            self.requests,
            self.errors,
            self.rps,
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
        );
    }
}

fn client(ca: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca"))
        .resolve("localhost", addr)
        .pool_max_idle_per_host(1)
        .build()
        .expect("client")
}

async fn one(c: &reqwest::Client, url: &str, body: &'static [u8]) -> Result<Duration, String> {
    let t = Instant::now();
    let r = c
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("status {}", r.status()));
    }
    r.bytes().await.map_err(|e| e.to_string())?;
    Ok(t.elapsed())
}

/// Opens `clients` connections to `addr`, one request each, before any clock starts.
async fn connect(
    ca: &str,
    addr: SocketAddr,
    clients: u64,
    bodies: &'static [&'static [u8]],
) -> (String, Vec<reqwest::Client>) {
    let url = format!("https://localhost:{}/mutate/pods", addr.port());
    let mut conns = vec![];
    for _ in 0..clients {
        let c = client(ca, addr);
        let _ = one(&c, &url, bodies[0]).await;
        conns.push(c);
    }
    (url, conns)
}

/// Each of `conns` sends at `rate_per_client` per second (0 = as fast as it can) until
/// `dur` has passed; the latencies of every answered request and the count of failed ones.
async fn drive(
    conns: &[reqwest::Client],
    url: &str,
    rate_per_client: f64,
    dur: Duration,
    bodies: &'static [&'static [u8]],
) -> (Vec<Duration>, usize) {
    let start = Instant::now();
    let deadline = start + dur;
    let clients = conns.len();
    let mut tasks = vec![];
    for (i, c) in conns.iter().cloned().enumerate() {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            let mut errors = 0;
            // Paced clients are spread evenly over the period (client i starts i/N of it
            // late), so the server sees a steady rate, as a rate-limited load generator
            // (`oha -q`) sends it, not N requests at once every period.
            let mut tick = (rate_per_client > 0.0).then(|| {
                let period = Duration::from_secs_f64(1.0 / rate_per_client);
                let first = tokio::time::Instant::from_std(start)
                    + period.mul_f64(i as f64 / clients as f64);
                let mut t = tokio::time::interval_at(first, period);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            let mut n = i;
            while Instant::now() < deadline {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                n += 1;
                match one(&c, &url, bodies[n % bodies.len()]).await {
                    Ok(d) => lat.push(d),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = vec![];
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("client task");
        all.extend(l);
        errors += e;
    }
    (all, errors)
}

/// Each client sends at `rate` per second (0 = as fast as it can) for `secs`.
async fn phase(
    ca: &str,
    addr: SocketAddr,
    clients: u64,
    rate_per_client: f64,
    secs: u64,
    bodies: &'static [&'static [u8]],
) -> Figures {
    let (url, conns) = connect(ca, addr, clients, bodies).await;
    let start = Instant::now();
    let (lat, errors) = drive(
        &conns,
        &url,
        rate_per_client,
        Duration::from_secs(secs),
        bodies,
    )
    .await;
    Figures::new(lat, errors, start.elapsed())
}

/// The paced phase of two servers at once, interleaved in time: `secs` each, cut into
/// slices of `slice`, sent to the servers in the order A B B A A B B A ... on connections
/// opened to both beforehand. A burst of load from a neighbour lasts a few hundred
/// milliseconds to seconds; phases run one after the other put a whole burst on one server,
/// slices spread it over both. Each server's latencies are pooled over its slices; the
/// slices are also returned as time-adjacent pairs (`[A's, B's]`: slices 0 and 1, 2 and 3,
/// ...), the blocks of [`p99_ratio_interval`].
async fn paced_interleaved(
    ca: &str,
    addrs: [SocketAddr; 2],
    clients: u64,
    rate_per_client: f64,
    secs: u64,
    slice: Duration,
    bodies: &'static [&'static [u8]],
) -> ([Figures; 2], Vec<SlicePair>) {
    let a = connect(ca, addrs[0], clients, bodies).await;
    let b = connect(ca, addrs[1], clients, bodies).await;
    let ends = [&a, &b];
    let per_server = (Duration::from_secs(secs).as_secs_f64() / slice.as_secs_f64())
        .ceil()
        .max(1.0) as usize;
    let mut errors = [0; 2];
    let mut elapsed = [Duration::ZERO; 2];
    let mut pairs: Vec<SlicePair> = vec![];
    for k in 0..2 * per_server {
        let who = [0, 1, 1, 0][k % 4];
        let (url, conns) = ends[who];
        let t = Instant::now();
        let (l, e) = drive(conns, url, rate_per_client, slice, bodies).await;
        elapsed[who] += t.elapsed();
        if k % 2 == 0 {
            pairs.push([vec![], vec![]]);
        }
        if let Some(p) = pairs.last_mut() {
            p[who] = l;
        }
        errors[who] += e;
    }
    // Each server's latencies, pooled over its slices.
    let pooled = |side: usize| pairs.iter().flat_map(|p| p[side].iter().copied()).collect();
    (
        [
            Figures::new(pooled(0), errors[0], elapsed[0]),
            Figures::new(pooled(1), errors[1], elapsed[1]),
        ],
        pairs,
    )
}

/// One slice's latencies of each server, from two slices run one right after the other.
type SlicePair = [Vec<Duration>; 2];

/// A small deterministic generator (xorshift64*), so the interval is the same for the
/// same latencies.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

/// The p99 of `pairs`' slices of side `side`, pooled, for the pairs at `picks`.
fn pooled_p99(pairs: &[SlicePair], picks: &[usize], side: usize, buf: &mut Vec<Duration>) -> f64 {
    buf.clear();
    for &i in picks {
        buf.extend_from_slice(&pairs[i][side]);
    }
    if buf.is_empty() {
        return f64::NAN;
    }
    let k = rank(buf.len(), 0.99);
    let (_, v, _) = buf.select_nth_unstable(k);
    v.as_secs_f64()
}

/// A 90 % interval of the pooled p99 ratio `pairs[..][1]` / `pairs[..][0]`, by a paired
/// block bootstrap: `resamples` times, as many pairs as there are are drawn with
/// replacement, and the ratio of the two sides' pooled p99s is taken. Whole slices are the
/// blocks (latencies within a slice move together: a stall delays every request in
/// flight), and the two sides of a pair stay together (they ran back to back, under the
/// same neighbours). The 5th and 95th percentiles of the ratios.
fn p99_ratio_interval(pairs: &[SlicePair], resamples: usize) -> (f64, f64) {
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut buf = vec![];
    let mut picks = vec![0; pairs.len()];
    let mut ratios = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for p in picks.iter_mut() {
            *p = rng.below(pairs.len());
        }
        let side = |s, buf: &mut Vec<Duration>| pooled_p99(pairs, &picks, s, buf);
        ratios.push(side(1, &mut buf) / side(0, &mut buf));
    }
    ratios.retain(|r| r.is_finite());
    ratios.sort_by(f64::total_cmp);
    if ratios.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let at = |q: f64| ratios[rank(ratios.len(), q)];
    (at(0.05), at(0.95))
}

/// One client, `n` requests one after another (after one that opens the connection): for
/// counting instructions under callgrind, where time means nothing.
async fn count_run(ca: &str, addr: SocketAddr, n: u64, bodies: &'static [&'static [u8]]) -> usize {
    let url = format!("https://localhost:{}/mutate/pods", addr.port());
    let c = client(ca, addr);
    let _ = one(&c, &url, bodies[0]).await;
    let mut ok = 0;
    for i in 0..n as usize {
        ok += usize::from(one(&c, &url, bodies[i % bodies.len()]).await.is_ok());
        // Let the client's connection go back to its pool before the next request: else
        // the request can find the pool empty and open (and handshake) a new connection,
        // at random (the race depends on thread timing, and under callgrind that is the
        // slower server's loss). One connection for the whole run makes the count repeatable.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    ok
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let secs = env_u64("BENCH_SECONDS", 4);
    let clients = env_u64("BENCH_CLIENTS", 32);
    let rounds = env_u64("BENCH_ROUNDS", 5);
    let slice = Duration::from_millis(env_u64("BENCH_SLICE_MS", 100).max(10));
    let logs = support::install_logs();
    let bundle = certs::generate(&certs::default_sans()).expect("certs");
    let resolver = tls::CertResolver::new(
        tls::certified_key_from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes())
            .expect("key"),
    );
    let cfg = tls::server_config(resolver).expect("tls config");

    // The servers share one runtime (2 workers) and are loaded one at a time; the clients
    // have another.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let serve = |app: axum::Router| {
        let cfg = cfg.clone();
        server_rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(tls::serve(
                listener,
                cfg,
                app,
                tls::ConnLimits::default(),
                std::future::pending(),
            ));
            addr
        })
    };
    // `BENCH_CONTROL=floor`: a second floor in the real webhook's place, so the printed
    // ratios show the bench's own noise (an A/A test); they should sit around 1.00.
    let control = std::env::var("BENCH_CONTROL").is_ok_and(|v| v == "floor");
    // `BENCH_PACED=only`: the 1,000 rps phase alone, no saturation phases.
    let paced_only = std::env::var("BENCH_PACED").is_ok_and(|v| v == "only");
    let real = if control {
        serve(support::floor_router())
    } else {
        serve(router(support::webhook_state(&bundle.ca_pem)))
    };
    let floor = serve(support::floor_router());

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let ca = bundle.ca_pem.clone();
    let run = |addr, rate: f64, bodies| {
        client_rt.block_on(phase(
            &ca,
            addr,
            clients,
            rate / clients as f64,
            secs,
            bodies,
        ))
    };
    // Instruction counting: BENCH_COUNT=N BENCH_SERVER=floor|real BENCH_BODIES=inject|pass
    // under `valgrind --tool=callgrind`; two values of N give the instructions per request of
    // server and client together, TLS included.
    if let Some(n) = std::env::var("BENCH_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        let addr = if std::env::var("BENCH_SERVER").is_ok_and(|v| v == "floor") {
            floor
        } else {
            real
        };
        let bodies: &'static [&'static [u8]] =
            if std::env::var("BENCH_BODIES").is_ok_and(|v| v == "pass") {
                &support::PASS_BODIES
            } else {
                &support::INJECT_BODIES
            };
        let ok = client_rt.block_on(count_run(&ca, addr, n, bodies));
        println!("{ok} of {n} requests answered");
        return;
    }
    if let Ok(who) = std::env::var("BENCH_SATURATE") {
        let addr = if who == "floor" { floor } else { real };
        let bodies: &'static [&'static [u8]] =
            if std::env::var("BENCH_BODIES").is_ok_and(|v| v == "pass") {
                &support::PASS_BODIES
            } else {
                &support::INJECT_BODIES
            };
        run(addr, 0.0, bodies).print(&format!("saturation, {who}"));
        return;
    }
    if control {
        println!("CONTROL: the \"real\" server below is a second floor");
    }
    println!(
        "webhook vs floor: TLS + HTTP/1.1 keep-alive, {clients} clients, {secs}s per phase, {rounds} rounds, 1000 rps in {}ms slices, logs {logs}",
        slice.as_millis()
    );
    let workloads: [(&str, &'static [&'static [u8]], f64); 2] = [
        (
            "injection (pod CREATE, singleton matches)",
            &support::INJECT_BODIES,
            0.85,
        ),
        ("pass-through (pod UPDATE)", &support::PASS_BODIES, 0.95),
    ];
    for (name, bodies, target) in workloads {
        println!("{name}:");
        let (mut ratios, mut p99s) = (vec![], vec![]);
        let mut pooled: [Vec<Duration>; 2] = [vec![], vec![]];
        let mut pairs: Vec<SlicePair> = vec![];
        for round in 0..rounds {
            // Alternate which server goes first, so a drift in machine load favours neither.
            let order = if round % 2 == 0 {
                [("floor", floor), ("real", real)]
            } else {
                [("real", real), ("floor", floor)]
            };
            let (mut rps, mut p99) = ([0.0; 2], [Duration::ZERO; 2]);
            for (who, addr) in order.into_iter().filter(|_| !paced_only) {
                let f = run(addr, 0.0, bodies);
                f.print(&format!("round {}, saturation, {who}", round + 1));
                rps[usize::from(who == "real")] = f.rps;
            }
            let (figures, round_pairs) = client_rt.block_on(paced_interleaved(
                &ca,
                [order[0].1, order[1].1],
                clients,
                1000.0 / clients as f64,
                secs,
                slice,
                bodies,
            ));
            for ((who, _), f) in order.iter().zip(figures) {
                f.print(&format!("round {}, 1000 rps, {who}", round + 1));
                let i = usize::from(*who == "real");
                p99[i] = f.p99;
                pooled[i].extend(f.sorted);
            }
            // Each pair as [floor's slice, real's slice].
            let real_first = order[0].0 == "real";
            pairs.extend(round_pairs.into_iter().map(
                |[a, b]| {
                    if real_first {
                        [b, a]
                    } else {
                        [a, b]
                    }
                },
            ));
            if !paced_only {
                ratios.push(rps[1] / rps[0]);
            }
            p99s.push(p99[1].as_secs_f64() / p99[0].as_secs_f64());
        }
        let shown = |v: &[f64]| {
            v.iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !paced_only {
            println!(
                "  => throughput real/floor at saturation: median {:.2}x (rounds: {}; target >= {target})",
                median(ratios.clone()),
                shown(&ratios)
            );
        }
        println!(
            "  => p99 real/floor at 1000 rps: median {:.2}x (rounds: {}; target <= 1.00)",
            median(p99s.clone()),
            shown(&p99s)
        );
        // All rounds' paced latencies pooled per server: many more samples behind each p99
        // than one round's, so a single noisy round moves it less.
        let [pf, pr] = pooled.map(|mut v| {
            v.sort();
            v
        });
        let (f99, r99) = (percentile(&pf, 0.99), percentile(&pr, 0.99));
        let (f50, r50) = (percentile(&pf, 0.50), percentile(&pr, 0.50));
        println!(
            "  => pooled over rounds at 1000 rps ({} and {} requests): p99 real/floor {:.2}x ({:.3}ms / {:.3}ms; target <= 1.00), p50 {:.2}x ({:.3}ms / {:.3}ms)",
            pr.len(),
            pf.len(),
            r99.as_secs_f64() / f99.as_secs_f64(),
            r99.as_secs_f64() * 1e3,
            f99.as_secs_f64() * 1e3,
            r50.as_secs_f64() / f50.as_secs_f64(),
            r50.as_secs_f64() * 1e3,
            f50.as_secs_f64() * 1e3,
        );
        let (lo, hi) = p99_ratio_interval(&pairs, 2000);
        println!(
            "  => pooled p99 real/floor, 90% interval (paired block bootstrap over {} slice pairs): {lo:.2}x to {hi:.2}x",
            pairs.len()
        );
    }
}
