//! A minimal fake kube-apiserver over plain HTTP: every list is empty (resourceVersion 1),
//! every watch stays open and silent. Enough for `kube-standby run` to sync its caches
//! with no cluster. Records the paths it was asked for.
#![allow(dead_code)]
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;

#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<Vec<String>>>);

pub struct FakeApi {
    pub addr: SocketAddr,
    pub seen: Seen,
    pub kubeconfig: tempfile::NamedTempFile,
}

async fn handle(State(seen): State<Seen>, req: Request) -> Response {
    let uri = req.uri().clone();
    if let Ok(mut s) = seen.0.lock() {
        s.push(format!("{} {}", req.method(), uri));
    }
    let watching = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    if watching {
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(futures::stream::pending::<
                Result<Vec<u8>, std::io::Error>,
            >()))
            .unwrap_or_default();
    }
    let body = r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":"1"},"items":[]}"#;
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

pub async fn start() -> FakeApi {
    let seen = Seen::default();
    let app = Router::new().fallback(handle).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let kubeconfig = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(
        kubeconfig.path(),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake\n"
        ),
    )
    .expect("kubeconfig");
    FakeApi {
        addr,
        seen,
        kubeconfig,
    }
}

pub struct RunProcess {
    pub child: Child,
    pub port: u16,
}

impl Drop for RunProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn spawn_run(bin: &str, api: &FakeApi) -> RunProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(bin)
        .args([
            "run",
            "--tls-self-signed",
            "--bind",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KUBECONFIG", api.kubeconfig.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn run");
    RunProcess { child, port }
}

impl RunProcess {
    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("client")
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = Self::client()
            .get(format!("https://127.0.0.1:{}{path}", self.port))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.unwrap_or_default()))
    }

    /// Poll /readyz for up to 20 s.
    pub async fn wait_ready(&self) -> bool {
        for _ in 0..200 {
            if let Some((200, _)) = self.get("/readyz").await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    pub fn rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}
