//! A minimal fake kube-apiserver over plain HTTP: lists serve the objects it was given for
//! that collection path (paged with `limit`/`continue`, filtered by simple label selectors
//! `k` / `k=v` and `metadata.name=` field selectors), every other list is empty; every
//! watch stays open and silent; writes echo their body back. Enough for `kube-standby run`
//! to sync its caches with no cluster. Records the paths it was asked for.
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

/// Objects served by collection path, e.g. "/api/v1/pods" (all namespaces).
pub type Objects = Arc<std::collections::HashMap<String, Vec<serde_json::Value>>>;

/// For `/api/v1/namespaces/ns/pods/p[/status]`: ("/api/v1/pods", "ns", "p").
fn object_path(path: &str) -> Option<(String, String, String)> {
    let path = path.strip_suffix("/status").unwrap_or(path);
    let (base, rest) = path.split_once("/namespaces/")?;
    let mut parts = rest.split('/');
    let (ns, plural, name) = (parts.next()?, parts.next()?, parts.next()?);
    Some((format!("{base}/{plural}"), ns.to_string(), name.to_string()))
}

#[derive(Clone)]
struct Fake {
    seen: Seen,
    objects: Objects,
}

fn query_param(q: &str, key: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%2F", "/")
                .replace("%3D", "=")
                .replace("%2C", ",")
        })
    })
}

fn matches(item: &serde_json::Value, labels: Option<&str>, fields: Option<&str>) -> bool {
    let have = &item["metadata"]["labels"];
    let label_ok = labels.is_none_or(|sel| {
        sel.split(',')
            .filter(|t| !t.is_empty())
            .all(|t| match t.split_once('=') {
                Some((k, v)) => have[k] == v,
                None => !have[t].is_null(),
            })
    });
    let field_ok = fields.is_none_or(|sel| match sel.strip_prefix("metadata.name=") {
        Some(n) => item["metadata"]["name"] == n,
        None => true,
    });
    label_ok && field_ok
}

/// A page of the objects at `path`.
fn list(objects: &Objects, path: &str, query: &str) -> String {
    let labels = query_param(query, "labelSelector");
    let fields = query_param(query, "fieldSelector");
    let all: Vec<&serde_json::Value> = objects
        .get(path)
        .map(|v| {
            v.iter()
                .filter(|i| matches(i, labels.as_deref(), fields.as_deref()))
                .collect()
        })
        .unwrap_or_default();
    let start: usize = query_param(query, "continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query_param(query, "limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let end = start.saturating_add(limit).min(all.len());
    let page = &all[start.min(end)..end];
    let mut meta = serde_json::json!({"resourceVersion": "1"});
    if end < all.len() {
        meta["continue"] = end.to_string().into();
    }
    serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": meta, "items": page})
        .to_string()
}

async fn handle(State(fake): State<Fake>, req: Request) -> Response {
    let uri = req.uri().clone();
    if let Ok(mut s) = fake.seen.0.lock() {
        s.push(format!("{} {}", req.method(), uri));
    }
    if req.method() != axum::http::Method::GET {
        // Writes: a patch of a served object answers with the object merged with the patch
        // (not stored: the watches stay silent); anything else echoes its body.
        let path = uri.path().to_string();
        let body = axum::body::to_bytes(req.into_body(), 16 << 20)
            .await
            .unwrap_or_default();
        let merged = object_path(&path).and_then(|(coll, ns, name)| {
            let obj = fake.objects.get(&coll)?.iter().find(|o| {
                o["metadata"]["name"] == name.as_str() && o["metadata"]["namespace"] == ns.as_str()
            })?;
            let mut obj = obj.clone();
            let patch: serde_json::Value = serde_json::from_slice(&body).ok()?;
            json_patch::merge(&mut obj, &patch);
            Some(axum::body::Bytes::from(obj.to_string()))
        });
        let body = match merged {
            Some(b) => b,
            None if body.is_empty() => axum::body::Bytes::from_static(b"{}"),
            None => body,
        };
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap_or_default();
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
    let body = list(&fake.objects, uri.path(), uri.query().unwrap_or_default());
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

pub async fn start() -> FakeApi {
    start_with(Objects::default()).await
}

pub async fn start_with(objects: Objects) -> FakeApi {
    let seen = Seen::default();
    let app = Router::new().fallback(handle).with_state(Fake {
        seen: seen.clone(),
        objects,
    });
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
    /// Where the child's stderr goes, so a failing test can show what it said.
    pub log: tempfile::NamedTempFile,
    pub port: u16,
    /// The plain-HTTP operations port (/metrics, /debug/state, /healthz, /readyz).
    pub ops_port: u16,
}

impl Drop for RunProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two distinct free ports, both held until both are known (so they cannot coincide).
fn two_free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let b = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port();
    (port(&a), port(&b))
}

pub async fn spawn_run(bin: &str, api: &FakeApi) -> RunProcess {
    let (port, ops_port) = two_free_ports();
    let log = tempfile::NamedTempFile::new().expect("log file");
    let child = Command::new(bin)
        .args([
            "run",
            "--tls-self-signed",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--metrics-bind",
            &format!("127.0.0.1:{ops_port}"),
        ])
        .env("KUBECONFIG", api.kubeconfig.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("log file"))
        .spawn()
        .expect("spawn run");
    RunProcess {
        child,
        log,
        port,
        ops_port,
    }
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

    /// GET a path of the plain-HTTP operations port.
    pub async fn get_ops(&self, path: &str) -> Option<(u16, String)> {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.ops_port))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.unwrap_or_default()))
    }

    /// Poll /readyz for up to 20 s; on failure the last answer is logged.
    pub async fn wait_ready(&self) -> bool {
        let mut last = None;
        for _ in 0..200 {
            match self.get("/readyz").await {
                Some((200, _)) => return true,
                other => last = other,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("last /readyz answer: {last:?}");
        false
    }

    /// What the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
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
