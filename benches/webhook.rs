//! Drives `POST /mutate/pods` over TLS with keep-alive from N concurrent clients and prints
//! rps, p50 and p99: once at a fixed 1,000 rps, once at saturation.
//!
//!   cargo bench --bench webhook            (BENCH_SECONDS, BENCH_CLIENTS to tune)
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_standby::metrics::Metrics;
use kube_standby::state::{DebugState, Readiness};
use kube_standby::webhook::{router, Injection, ObjectSource, StaticObjects, WebhookState};
use kube_standby::{certs, tls};

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut lat: Vec<Duration>, errors: usize, elapsed: Duration) {
    lat.sort();
    println!(
        "{name}: requests={} errors={} rps={:.0} p50={:.3}ms p99={:.3}ms max={:.3}ms",
        lat.len(),
        errors,
        lat.len() as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
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

/// Each client sends at `rate` per second (0 = as fast as it can) for `secs`.
async fn phase(
    ca: &str,
    addr: SocketAddr,
    clients: u64,
    rate_per_client: f64,
    secs: u64,
    bodies: &'static [&'static [u8]],
) -> (Vec<Duration>, usize, Duration) {
    let url = format!("https://localhost:{}/mutate/pods", addr.port());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = vec![];
    for i in 0..clients {
        let c = client(ca, addr);
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            let mut errors = 0;
            let _ = one(&c, &url, bodies[0]).await; // open the connection
            let mut tick = (rate_per_client > 0.0).then(|| {
                let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate_per_client));
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            let mut n = i as usize;
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
    (all, errors, start.elapsed())
}

fn main() {
    let secs = env_u64("BENCH_SECONDS", 5);
    let clients = env_u64("BENCH_CLIENTS", 16);
    let bundle = certs::generate(&certs::default_sans()).expect("certs");
    let resolver = tls::CertResolver::new(
        tls::certified_key_from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes())
            .expect("key"),
    );
    let objects = StaticObjects::from_files(&[concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/statefulsingleton-demo.yaml"
    )])
    .expect("objects");
    let readiness = Readiness::without_caches();
    readiness.set_certs_loaded();
    let state = WebhookState {
        objects: Arc::new(objects) as Arc<dyn ObjectSource>,
        injection: Arc::new(Injection {
            agent_image: "ghcr.io/paia-tech/kube-standby:bench".into(),
            operator_url: "https://kube-standby.kube-standby.svc:443".into(),
            ca_bundle: bundle.ca_pem.clone(),
        }),
        metrics: Arc::new(Metrics::new()),
        readiness,
        debug: DebugState::default(),
        release: None,
        gate: kube_standby::webhook::AdmissionGate::new(Default::default()),
        guard: Default::default(),
    };

    // The server gets its own runtime (2 workers), the clients another.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let addr = server_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cfg = tls::server_config(resolver).expect("tls config");
        tokio::spawn(tls::serve(
            listener,
            cfg,
            router(state),
            tls::ConnLimits::default(),
            std::future::pending(),
        ));
        addr
    });

    let bodies: &'static [&'static [u8]] = Box::leak(Box::new([
        &include_bytes!("../tests/data/admission/pod-create-from-replicaset.json")[..],
        &include_bytes!("../tests/data/admission/pod-create-direct-with-command.json")[..],
        &include_bytes!("../tests/data/admission/pod-create-dry-run.json")[..],
    ]));
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    println!("webhook bench: TLS + HTTP/1.1 keep-alive, {clients} clients, {secs}s per phase, fixture pods");
    let ca = bundle.ca_pem.clone();
    let (lat, err, el) = client_rt.block_on(phase(
        &ca,
        addr,
        clients,
        1000.0 / clients as f64,
        secs,
        bodies,
    ));
    report("fixed 1000 rps", lat, err, el);
    let (lat, err, el) = client_rt.block_on(phase(&ca, addr, clients, 0.0, secs, bodies));
    report("saturation", lat, err, el);
}
