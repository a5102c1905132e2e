//! A minimal fake kube-apiserver over plain HTTP: lists serve the objects it was given for
//! that collection path (paged with `limit`/`continue`, filtered by simple label selectors
//! `k` / `k=v`, `metadata.name=` field selectors and, for a namespaced path, the namespace),
//! every other list is empty. Watches stay open and carry only what the test pushes with
//! [`FakeApi::push`] (ADDED/MODIFIED/DELETED of one object, to every open watch of that
//! collection whose namespace and selectors match; no bookmarks); a push also updates what
//! later lists serve. Writes are recorded in [`FakeApi::writes`] (method, path, body, time
//! received) and never applied: a POST to a collection answers 201 with the object named
//! from `generateName` and given a uid, resourceVersion and creationTimestamp, as a real
//! API server would; a patch of a served object answers with the object merged with the
//! patch; any other write echoes its body. Enough for `kube-standby run` to sync its caches
//! with no cluster. Records the paths it was asked for. Accepted connections have
//! TCP_NODELAY set, as a real API server's (Go sets it on every TCP connection): without it,
//! an event that follows another on the same watch within a round trip waits for the
//! client's delayed ACK (about 40 ms on Linux), which `benches/hsd_churn.rs` measured as a
//! 40 ms tail at 60 flips/s.
//!
//! Two opt-in behaviours of a real API server: [`FakeApi::set_write_latency`] holds every
//! write that long before it is answered (and recorded), and
//! [`FakeApi::check_delete_preconditions`] answers a DELETE whose `preconditions` (uid,
//! resourceVersion) differ from the served object 409 Conflict, and one of an object that
//! is not served 404 (both judged once the latency has passed, as at commit time).
#![allow(dead_code)]
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{broadcast, Notify};

#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<Vec<String>>>);

/// One write the fake API server received.
#[derive(Clone, Debug)]
pub struct Write {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The request body as JSON (Null when empty or not JSON).
    pub body: Value,
    /// What the fake answered (the created object for a POST to a collection).
    pub answer: Value,
    /// When the request arrived (before its body was read).
    pub at: Instant,
    /// When it was answered (after the write latency, if any).
    pub answered: Instant,
    /// The HTTP status of the answer.
    pub status: u16,
}

/// The log of writes, in arrival order, with a wake-up for waiters.
#[derive(Clone, Default)]
pub struct Writes {
    log: Arc<Mutex<Vec<Write>>>,
    notify: Arc<Notify>,
}

impl Writes {
    fn record(&self, w: Write) {
        self.log.lock().expect("writes").push(w);
        self.notify.notify_waiters();
    }

    /// How many writes were received so far (an index for [`Writes::since`]).
    pub fn len(&self) -> usize {
        self.log.lock().expect("writes").len()
    }

    /// Writes from index `from` on.
    pub fn since(&self, from: usize) -> Vec<Write> {
        let log = self.log.lock().expect("writes");
        log.get(from..).unwrap_or_default().to_vec()
    }

    /// The first write from index `from` on that satisfies `pred`, with its index; waits up
    /// to `timeout` for it.
    pub async fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Write) -> bool,
    ) -> Option<(usize, Write)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Scanned under the lock: only the match is cloned (waiters wake on every
            // write, so cloning the log on each wake-up costs more than what is measured).
            let found = {
                let log = self.log.lock().expect("writes");
                log.get(from..)
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                    .find(|(_, w)| pred(w))
                    .map(|(i, w)| (from + i, w.clone()))
            };
            if found.is_some() {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

/// A watch event (pushed by the test, or a stored write), serialized once: every open
/// watch shares it (a broadcast clones what it hands each receiver).
#[derive(Clone, Debug)]
struct Pushed {
    collection: Arc<str>,
    object: Arc<Value>,
    /// The watch line, `{"type":..,"object":..}\n`.
    line: axum::body::Bytes,
}

impl Pushed {
    fn new(collection: &str, type_: &'static str, object: Value) -> Self {
        let mut line = json!({"type": type_, "object": &object}).to_string();
        line.push('\n');
        Pushed {
            collection: collection.into(),
            object: Arc::new(object),
            line: line.into(),
        }
    }
}

pub struct FakeApi {
    pub addr: SocketAddr,
    pub seen: Seen,
    pub writes: Writes,
    pub kubeconfig: tempfile::NamedTempFile,
    fake: Fake,
}

/// Objects served by collection path, e.g. "/api/v1/pods" (all namespaces).
pub type Objects = Arc<HashMap<String, Vec<Value>>>;

/// For `/api/v1/namespaces/ns/pods/p[/status]`: ("/api/v1/pods", "ns", "p").
fn object_path(path: &str) -> Option<(String, String, String)> {
    let path = path.strip_suffix("/status").unwrap_or(path);
    let (base, rest) = path.split_once("/namespaces/")?;
    let mut parts = rest.split('/');
    let (ns, plural, name) = (parts.next()?, parts.next()?, parts.next()?);
    Some((format!("{base}/{plural}"), ns.to_string(), name.to_string()))
}

/// For `/api/v1/namespaces/ns/pods`: ("/api/v1/pods", Some("ns")); for a path that is not
/// a namespaced collection, the path itself and None.
fn collection_path(path: &str) -> (String, Option<String>) {
    if let Some((base, rest)) = path.split_once("/namespaces/") {
        if let [ns, plural] = rest.split('/').collect::<Vec<_>>()[..] {
            return (format!("{base}/{plural}"), Some(ns.to_string()));
        }
    }
    (path.to_string(), None)
}

/// Is `path` a collection one can create in (`/api/v1/namespaces/ns/pods`,
/// `/apis/g/v/plural`), rather than an object or a subresource?
fn is_collection(path: &str) -> bool {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segs.first() {
        Some(&"api") => segs.get(2..),
        Some(&"apis") => segs.get(3..),
        _ => None,
    };
    matches!(rest, Some([_]) | Some(["namespaces", _, _]))
}

/// The served objects of one collection, by (namespace, name), listed in the order they
/// were last written (a write moves an object to the end, as before).
#[derive(Default)]
struct Collection {
    next: u64,
    order: std::collections::BTreeMap<u64, (String, String)>,
    by_key: HashMap<(String, String), (u64, Value)>,
}

impl Collection {
    fn key_of(&self, v: &Value) -> (String, String) {
        let ns = v["metadata"]["namespace"].as_str().unwrap_or_default();
        match v["metadata"]["name"].as_str() {
            Some(n) => (ns.to_string(), n.to_string()),
            // A nameless object cannot be found by name: keep it apart from every other.
            None => (ns.to_string(), format!("\u{0}{}", self.next)),
        }
    }

    fn get(&self, ns: &str, name: &str) -> Option<&Value> {
        self.by_key
            .get(&(ns.to_string(), name.to_string()))
            .map(|(_, v)| v)
    }

    fn put(&mut self, v: Value) {
        let key = self.key_of(&v);
        self.next += 1;
        if let Some((old, _)) = self.by_key.get(&key) {
            self.order.remove(old);
        }
        self.order.insert(self.next, key.clone());
        self.by_key.insert(key, (self.next, v));
    }

    fn remove(&mut self, ns: &str, name: &str) {
        if let Some((seq, _)) = self.by_key.remove(&(ns.to_string(), name.to_string())) {
            self.order.remove(&seq);
        }
    }

    fn ordered(&self) -> Vec<&Value> {
        self.order
            .values()
            .filter_map(|k| self.by_key.get(k).map(|(_, v)| v))
            .collect()
    }
}

type Served = HashMap<String, Collection>;

fn served_of(objects: Objects) -> Served {
    let mut served = Served::new();
    for (coll, items) in Arc::unwrap_or_clone(objects) {
        let c = served.entry(coll).or_default();
        for v in items {
            c.put(v);
        }
    }
    served
}

/// The served object `name` in `ns` of `coll`, cloned.
fn served_object(fake: &Fake, coll: &str, ns: &str, name: &str) -> Option<Value> {
    let objects = fake.objects.lock().ok()?;
    objects.get(coll)?.get(ns, name).cloned()
}

#[derive(Clone)]
struct Fake {
    /// Path prefixes answered 404 (as for a CRD not yet established) until the instant.
    unserved: Arc<Mutex<Vec<(String, Instant)>>>,
    seen: Seen,
    objects: Arc<Mutex<Served>>,
    events: broadcast::Sender<Pushed>,
    writes: Writes,
    counter: Arc<AtomicU64>,
    /// Added before every write is answered (nanoseconds).
    write_latency: Arc<AtomicU64>,
    /// DELETE preconditions are checked against the served object.
    check_preconditions: Arc<std::sync::atomic::AtomicBool>,
    /// Writes change what is served and are sent to the watches (see `apply_writes`).
    store_writes: Arc<std::sync::atomic::AtomicBool>,
}

impl Fake {
    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    fn seen(&self, req: &Request) {
        if let Ok(mut s) = self.seen.0.lock() {
            s.push(format!("{} {}", req.method(), req.uri()));
        }
    }
}

fn query_param(q: &str, key: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%2F", "/")
                .replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%21", "!")
        })
    })
}

fn matches(item: &Value, labels: Option<&str>, fields: Option<&str>) -> bool {
    let have = &item["metadata"]["labels"];
    let label_ok = labels.is_none_or(|sel| {
        sel.split(',').filter(|t| !t.is_empty()).all(|t| {
            match (t.strip_prefix('!'), t.split_once('=')) {
                (Some(k), _) => have[k].is_null(),
                (None, Some((k, v))) => have[k] == v,
                (None, None) => !have[t].is_null(),
            }
        })
    });
    let field_ok = fields.is_none_or(|sel| match sel.strip_prefix("metadata.name=") {
        Some(n) => item["metadata"]["name"] == n,
        None => true,
    });
    label_ok && field_ok
}

/// Does `item` belong to the view of a request for `path?query`?
struct Filter {
    collection: String,
    namespace: Option<String>,
    labels: Option<String>,
    fields: Option<String>,
}

impl Filter {
    fn new(path: &str, query: &str) -> Self {
        let (collection, namespace) = collection_path(path);
        Filter {
            collection,
            namespace,
            labels: query_param(query, "labelSelector"),
            fields: query_param(query, "fieldSelector"),
        }
    }

    fn admits(&self, item: &Value) -> bool {
        let ns_ok = self
            .namespace
            .as_deref()
            .is_none_or(|ns| item["metadata"]["namespace"] == ns);
        ns_ok && matches(item, self.labels.as_deref(), self.fields.as_deref())
    }
}

/// A page of the objects at `path` (exactly that key, else the namespace's share of the
/// all-namespaces collection).
fn list(objects: &Served, path: &str, query: &str) -> String {
    let filter = Filter::new(path, query);
    let exact = objects.get(path);
    let (items, filter) = match exact {
        Some(items) => (
            Some(items),
            Filter {
                namespace: None,
                ..filter
            },
        ),
        None => (objects.get(&filter.collection), filter),
    };
    let all: Vec<&Value> = items
        .map(|c| {
            c.ordered()
                .into_iter()
                .filter(|i| filter.admits(i))
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
    let mut meta = json!({"resourceVersion": "1"});
    if end < all.len() {
        meta["continue"] = end.to_string().into();
    }
    json!({"apiVersion": "v1", "kind": "List", "metadata": meta, "items": page}).to_string()
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap_or_default()
}

/// A name like the API server's for `generateName` (five characters of its alphabet).
fn generated(prefix: &str, n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
    let suffix: String = (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect();
    format!("{prefix}{suffix}")
}

/// What a POST to a collection creates: the body, named, with uid and resourceVersion.
fn create(fake: &Fake, path: &str, mut obj: Value) -> Value {
    let n = fake.next();
    let meta = &mut obj["metadata"];
    if !meta.is_object() {
        *meta = json!({});
    }
    if meta["name"].as_str().is_none_or(str::is_empty) {
        let prefix = meta["generateName"].as_str().unwrap_or("fake-").to_string();
        meta["name"] = generated(&prefix, n).into();
    }
    if let (_, Some(ns)) = collection_path(path) {
        meta["namespace"] = ns.into();
    }
    meta["uid"] = format!("fake-uid-{n}").into();
    meta["resourceVersion"] = (1000 + n).to_string().into();
    meta["creationTimestamp"] = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
        .into();
    obj
}

/// The answer to a DELETE with preconditions when they are checked: the served object it
/// deletes (200), else a Conflict (the uid or resourceVersion differ) or NotFound Status.
fn checked_delete(fake: &Fake, path: &str, body: &Value) -> Option<(StatusCode, Value)> {
    let pre = body.get("preconditions").filter(|p| p.is_object())?;
    let (coll, ns, name) = object_path(path)?;
    let served = served_object(fake, &coll, &ns, &name);
    let status = |code: StatusCode, reason: &str, message: String| {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
               "code": code.as_u16(), "message": message})
    };
    let Some(obj) = served else {
        let s = status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{name} not found"),
        );
        return Some((StatusCode::NOT_FOUND, s));
    };
    for field in ["uid", "resourceVersion"] {
        let want = &pre[field];
        if !want.is_null() && *want != obj["metadata"][field] {
            let message = format!(
                "Precondition failed: {field}: {want}, {field} in object meta: {}",
                obj["metadata"][field]
            );
            let s = status(StatusCode::CONFLICT, "Conflict", message);
            return Some((StatusCode::CONFLICT, s));
        }
    }
    Some((StatusCode::OK, obj))
}

async fn write(fake: Fake, req: Request, at: Instant) -> Response {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let path = uri.path().to_string();
    let bytes = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let latency = Duration::from_nanos(fake.write_latency.load(Ordering::Relaxed));
    if !latency.is_zero() {
        tokio::time::sleep_until((at + latency).into()).await;
    }
    let checked = (method == Method::DELETE && fake.check_preconditions.load(Ordering::Relaxed))
        .then(|| checked_delete(&fake, &path, &body))
        .flatten();
    let stored = fake.store_writes.load(Ordering::Relaxed);
    if stored {
        if let Some((status, answer)) = stored_write(&fake, &method, &path, &body) {
            let text = axum::body::Bytes::from(answer.to_string());
            fake.writes.record(Write {
                method: method.to_string(),
                path,
                query: uri.query().unwrap_or_default().to_string(),
                body,
                answer,
                at,
                answered: Instant::now(),
                status: status.as_u16(),
            });
            return json_response(status, text);
        }
    }
    let merged = object_path(&path).and_then(|(coll, ns, name)| {
        let mut obj = served_object(&fake, &coll, &ns, &name)?;
        json_patch::merge(&mut obj, body.is_object().then_some(&body)?);
        Some(obj)
    });
    let (status, answer) = match (checked, merged) {
        (Some(checked), _) => checked,
        (None, Some(obj)) => (StatusCode::OK, obj),
        (None, None) if method == Method::POST && body.is_object() && is_collection(&path) => {
            (StatusCode::CREATED, create(&fake, &path, body.clone()))
        }
        (None, None) if bytes.is_empty() => (StatusCode::OK, json!({})),
        (None, None) => (StatusCode::OK, body.clone()),
    };
    let text = match &answer {
        Value::Null => bytes.clone(),
        a => axum::body::Bytes::from(a.to_string()),
    };
    fake.writes.record(Write {
        method: method.to_string(),
        path,
        query: uri.query().unwrap_or_default().to_string(),
        body,
        answer,
        at,
        answered: Instant::now(),
        status: status.as_u16(),
    });
    json_response(status, text)
}

fn failure(code: StatusCode, reason: &str, message: String) -> (StatusCode, Value) {
    let s = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                   "code": code.as_u16(), "message": message});
    (code, s)
}

/// A write applied to what is served, as a real API server commits it (store mode): a
/// PATCH whose body names a `metadata.resourceVersion` other than the served one is a 409
/// Conflict; a `/status` patch replaces the status; a POST of a taken name is a 409
/// AlreadyExists; a DELETE removes the object (its preconditions checked). Each change
/// gets a new resourceVersion and is sent to the watches. None: not a write this models.
fn stored_write(
    fake: &Fake,
    method: &Method,
    path: &str,
    body: &Value,
) -> Option<(StatusCode, Value)> {
    let (collection, event, object) = if *method == Method::POST && is_collection(path) {
        let (coll, ns) = collection_path(path);
        let obj = create(fake, path, body.clone());
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let taken = served_object(fake, &coll, ns.as_deref().unwrap_or_default(), &name).is_some();
        if taken {
            return Some(failure(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{name} already exists"),
            ));
        }
        (coll, "ADDED", obj)
    } else {
        let (coll, ns, name) = object_path(path)?;
        let served = served_object(fake, &coll, &ns, &name);
        let Some(mut obj) = served else {
            return Some(failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{name} not found"),
            ));
        };
        if *method == Method::DELETE {
            if let Some(pre) = body.get("preconditions").filter(|p| p.is_object()) {
                for field in ["uid", "resourceVersion"] {
                    if !pre[field].is_null() && pre[field] != obj["metadata"][field] {
                        return Some(failure(
                            StatusCode::CONFLICT,
                            "Conflict",
                            format!("Precondition failed: {field}"),
                        ));
                    }
                }
            }
            (coll, "DELETED", obj)
        } else if *method == Method::PATCH || *method == Method::PUT {
            let rv = &body["metadata"]["resourceVersion"];
            if !rv.is_null() && *rv != obj["metadata"]["resourceVersion"] {
                return Some(failure(StatusCode::CONFLICT, "Conflict", format!(
                    "Operation cannot be fulfilled on {name}: the object has been modified; please apply your changes to the latest version and try again"
                )));
            }
            if path.ends_with("/status") {
                obj["status"] = body["status"].clone();
            } else {
                let mut patch = body.clone();
                if let Some(m) = patch["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                json_patch::merge(&mut obj, &patch);
            }
            obj["metadata"]["resourceVersion"] = (1000 + fake.next()).to_string().into();
            (coll, "MODIFIED", obj)
        } else {
            return None;
        }
    };
    if let Ok(mut objects) = fake.objects.lock() {
        let items = objects.entry(collection.clone()).or_default();
        if event == "DELETED" {
            let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            items.remove(ns, name);
        } else {
            items.put(object.clone());
        }
    }
    let _ = fake
        .events
        .send(Pushed::new(&collection, event, object.clone()));
    let code = if event == "ADDED" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Some((code, object))
}

/// A watch: the events pushed from now on that this request's filter admits.
fn watch(fake: &Fake, path: &str, query: &str) -> Response {
    let filter = Filter::new(path, query);
    let rx = fake.events.subscribe();
    let stream = futures::stream::unfold((rx, filter), |(mut rx, filter)| async move {
        loop {
            match rx.recv().await {
                Ok(ev) if *ev.collection == filter.collection && filter.admits(&ev.object) => {
                    return Some((Ok::<_, std::io::Error>(ev.line), (rx, filter)));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    json_response(StatusCode::OK, Body::from_stream(stream))
}

async fn handle(State(fake): State<Fake>, req: Request) -> Response {
    let at = Instant::now();
    let uri = req.uri().clone();
    let unserved = fake
        .unserved
        .lock()
        .map(|u| {
            u.iter()
                .any(|(prefix, until)| uri.path().starts_with(prefix.as_str()) && at < *until)
        })
        .unwrap_or(false);
    if unserved {
        fake.seen(&req);
        // What a real API server answers for a group/version it does not serve (yet).
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Body::from("404 page not found\n"))
            .unwrap_or_default();
    }
    if req.method() != Method::GET {
        fake.seen(&req);
        return write(fake, req, at).await;
    }
    let query = uri.query().unwrap_or_default();
    let watching = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    if watching {
        // Subscribed before the request is recorded: an event pushed once the test has
        // seen the watch reaches it.
        let response = watch(&fake, uri.path(), query);
        fake.seen(&req);
        return response;
    }
    fake.seen(&req);
    // A GET of one namespaced object: the object if served, else a NotFound Status.
    if !is_collection(uri.path()) && !uri.path().ends_with("/status") {
        if let Some((collection, ns, name)) = object_path(uri.path()) {
            let found = served_object(&fake, &collection, &ns, &name);
            return match found {
                Some(obj) => json_response(StatusCode::OK, obj.to_string()),
                None => json_response(
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "NotFound", "code": 404,
                           "message": format!("{name} not found")})
                    .to_string(),
                ),
            };
        }
    }
    let body = match fake.objects.lock() {
        Ok(objects) => list(&objects, uri.path(), query),
        Err(_) => return json_response(StatusCode::INTERNAL_SERVER_ERROR, "{}"),
    };
    json_response(StatusCode::OK, body)
}

impl FakeApi {
    /// Hold every write (any request but a GET) `latency` from its arrival before it is
    /// answered, as a real API server's storage round trip does. Default: none.
    pub fn set_write_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.fake.write_latency.store(nanos, Ordering::Relaxed);
    }

    /// Check the `preconditions` of every DELETE against the served object from now on
    /// (409 Conflict when the uid or resourceVersion differ, 404 when it is not served);
    /// the answer of a passing DELETE is the served object. Default: off (any DELETE is
    /// answered as another write is).
    pub fn check_delete_preconditions(&self, on: bool) {
        self.fake.check_preconditions.store(on, Ordering::Relaxed);
    }

    /// From now on writes change what is served and reach the watches, as on a real API
    /// server (see `stored_write`): what a controller writes, it then sees. Default: off.
    pub fn store_writes(&self, on: bool) {
        self.fake.store_writes.store(on, Ordering::Relaxed);
    }

    /// The served object `name` in `ns` of `collection` (all-namespaces path).
    pub fn object(&self, collection: &str, ns: &str, name: &str) -> Option<Value> {
        served_object(&self.fake, collection, ns, name)
    }

    /// Replace a served object without telling any watch (a change the caches have not
    /// seen yet, e.g. another writer's).
    pub fn replace_silently(&self, collection: &str, object: Value) {
        let mut objects = self.fake.objects.lock().expect("objects");
        objects
            .entry(collection.to_string())
            .or_default()
            .put(object);
    }

    /// Every served object of `collection`.
    pub fn objects(&self, collection: &str) -> Vec<Value> {
        self.fake
            .objects
            .lock()
            .ok()
            .and_then(|o| {
                let c = o.get(collection)?;
                Some(c.ordered().into_iter().cloned().collect())
            })
            .unwrap_or_default()
    }

    /// Answer 404 to every request whose path starts with `prefix` for the next `for_`, as a
    /// real API server does while a CRD is not established yet (`Duration::MAX`-like values:
    /// never served).
    pub fn not_served(&self, prefix: &str, for_: Duration) {
        let until = Instant::now()
            .checked_add(for_)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        self.fake
            .unserved
            .lock()
            .expect("unserved")
            .push((prefix.to_string(), until));
    }

    /// Send a watch event (`ADDED`, `MODIFIED` or `DELETED`) for `object` to every open watch
    /// of `collection` (all-namespaces path, e.g. "/api/v1/pods") that admits it, and apply
    /// it to what later lists serve. A missing resourceVersion is filled in.
    pub fn push(&self, collection: &str, type_: &'static str, mut object: Value) {
        assert!(
            matches!(type_, "ADDED" | "MODIFIED" | "DELETED"),
            "watch event type {type_}"
        );
        if object["metadata"]["resourceVersion"].is_null() {
            object["metadata"]["resourceVersion"] = (1000 + self.fake.next()).to_string().into();
        }
        {
            let mut objects = self.fake.objects.lock().expect("objects");
            let items = objects.entry(collection.to_string()).or_default();
            if type_ == "DELETED" {
                let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
                let name = object["metadata"]["name"].as_str().unwrap_or_default();
                items.remove(ns, name);
            } else {
                items.put(object.clone());
            }
        }
        let _ = self
            .fake
            .events
            .send(Pushed::new(collection, type_, object));
    }
}

pub async fn start() -> FakeApi {
    start_with(Objects::default()).await
}

pub async fn start_with(objects: Objects) -> FakeApi {
    let seen = Seen::default();
    let fake = Fake {
        unserved: Arc::default(),
        seen: seen.clone(),
        objects: Arc::new(Mutex::new(served_of(objects))),
        events: broadcast::channel(4096).0,
        writes: Writes::default(),
        counter: Arc::new(AtomicU64::new(1)),
        write_latency: Arc::default(),
        check_preconditions: Arc::default(),
        store_writes: Arc::default(),
    };
    let app = Router::new().fallback(handle).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Nagle off, as on a real API server (see the module doc).
    let listener = {
        use axum::serve::ListenerExt;
        listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        })
    };
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
        writes: fake.writes.clone(),
        kubeconfig,
        fake,
    }
}

pub struct RunProcess {
    pub child: Child,
    /// Where the child's stderr goes, so a failing test can show what it said.
    pub log: tempfile::NamedTempFile,
    pub port: u16,
    /// The plain-HTTP operations port (/metrics, /debug/state, /healthz, /readyz).
    pub ops_port: u16,
    /// Run under `KUBE_STANDBY_RUN_WRAPPER` in a process group of its own: the operator is
    /// the wrapper's child, and killing the wrapper alone left it running (and retrying
    /// against a fake API server that was gone).
    pub wrapped: bool,
}

impl Drop for RunProcess {
    fn drop(&mut self) {
        if self.wrapped {
            // The whole group: SIGTERM first (a profiler writes its data as the operator
            // exits), SIGKILL for whatever is left.
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
            std::thread::sleep(std::time::Duration::from_secs(2));
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        }
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
    spawn_run_with(bin, api, &[]).await
}

/// [`spawn_run`] with extra arguments after the defaults.
///
/// The two ports are free when chosen but are bound by the child later, so another
/// process (an outgoing connection's ephemeral port, often) can take one in between; the
/// child then exits with "Address already in use". Such a start is retried with new ports
/// (a few times); otherwise this returns once the child listens on both, has exited, or
/// has not said either within 15 s.
pub async fn spawn_run_with(bin: &str, api: &FakeApi, extra: &[&str]) -> RunProcess {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut run = spawn_run_once(bin, api, extra);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            if run.stderr().contains("listening (plain HTTP)") {
                return run;
            }
            if let Ok(Some(_)) = run.child.try_wait() {
                if attempts < 5 && run.stderr().contains("Address already in use") {
                    break; // again, with other ports
                }
                return run;
            }
            if std::time::Instant::now() > deadline {
                return run;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

fn spawn_run_once(bin: &str, api: &FakeApi, extra: &[&str]) -> RunProcess {
    let (port, ops_port) = two_free_ports();
    let log = tempfile::NamedTempFile::new().expect("log file");
    // KUBE_STANDBY_RUN_WRAPPER (e.g. "heaptrack -o /tmp/run"): run the binary under a
    // profiler, for a diagnosis; the measured process is then the wrapper's.
    let wrapper = std::env::var("KUBE_STANDBY_RUN_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut cmd = match words.next() {
        Some(w) => {
            use std::os::unix::process::CommandExt;
            let mut c = Command::new(w);
            c.args(words).arg(bin).process_group(0);
            c
        }
        None => Command::new(bin),
    };
    let child = cmd
        .args([
            "run",
            "--tls-self-signed",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--metrics-bind",
            &format!("127.0.0.1:{ops_port}"),
        ])
        .args(extra)
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
        wrapped: !wrapper.trim().is_empty(),
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

    /// POST a JSON body to a path of the TLS port.
    pub async fn post_json(&self, path: &str, body: &Value) -> Option<(u16, String)> {
        let r = Self::client()
            .post(format!("https://127.0.0.1:{}{path}", self.port))
            .json(body)
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
        self.status_kib("VmRSS")
    }

    /// One `kB` field of the child's `/proc/<pid>/status` (`VmRSS`, `RssAnon`, `RssFile`, ...).
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        s.lines()
            .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}
