#![allow(dead_code)]
//! Helpers shared by the integration tests.
pub mod schema;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kube_standby::metrics::Metrics;
use kube_standby::state::{DebugState, Readiness};
use kube_standby::webhook::{Injection, ObjectSource, StaticObjects, WebhookState};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("tests/data/admission").join(name)).expect("fixture")
}

pub fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(name)).expect("fixture json")
}

pub const FIXTURES: [&str; 5] = [
    "pod-create-from-replicaset.json",
    "pod-create-direct-with-command.json",
    "pod-create-dry-run.json",
    "pod-update-annotation.json",
    "pod-update-status.json",
];

pub fn injection() -> Injection {
    Injection {
        agent_image: "ghcr.io/paia-tech/kube-standby:test".into(),
        operator_url: "https://kube-standby.kube-standby.svc:443".into(),
        agent_ca: "-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n".into(),
    }
}

pub fn state_with(objects: StaticObjects) -> WebhookState {
    let readiness = Readiness::without_caches();
    readiness.set_certs_loaded();
    WebhookState {
        objects: Arc::new(objects) as Arc<dyn ObjectSource>,
        injection: Arc::new(injection()),
        metrics: Arc::new(Metrics::new()),
        readiness,
        debug: DebugState::default(),
        release: None,
        assignment: None,
        claims: None,
        gate: kube_standby::webhook::AdmissionGate::new(Default::default()),
        guard: Default::default(),
    }
}

pub fn demo_objects() -> StaticObjects {
    StaticObjects::from_files(&[repo().join("examples/statefulsingleton-demo.yaml")])
        .expect("demo objects")
}

/// A reqwest client that trusts only `ca_pem` and resolves `localhost` to `addr`.
/// Each call makes a new client, so each request opens a new connection.
pub fn client(ca_pem: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca"))
        .resolve("localhost", addr)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// A port free on 127.0.0.1 when asked (for a child process to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `kube-standby webhook` on free ports, `--tls-self-signed`, with stderr as given, once its
/// operations port answers `/healthz` (panics after 10 s). The webhook port and the child.
pub async fn spawn_webhook(stderr: std::process::Stdio) -> (u16, std::process::Child) {
    let (port, ops) = (free_port(), free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kube-standby"))
        .args(["webhook", "--tls-self-signed", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--metrics-bind")
        .arg(format!("127.0.0.1:{ops}"))
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn webhook");
    let plain = reqwest::Client::new();
    for _ in 0..100 {
        let url = format!("http://127.0.0.1:{ops}/healthz");
        if plain.get(url).send().await.is_ok() {
            return (port, child);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("webhook never listened");
}
