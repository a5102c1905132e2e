//! The exec busy probe through the REAL kube websocket client (`KubeExec` + `ExecProber`)
//! against a mock API server on 127.0.0.1 that speaks the Kubernetes exec protocol: an HTTP/1.1
//! upgrade on `GET .../pods/{pod}/exec?...`, subprotocol `v4.channel.k8s.io` (what a 1.24 API
//! server picks from kube's offer) or `v5`, binary frames whose first byte is the channel
//! (1 stdout, 2 stderr, 3 the final `Status` as JSON).
//!
//! The server records each request and counts the exec sessions running a command (from the
//! upgrade request until just before it sends the status, so a client can only start its next
//! call after the count went down). The heap is counted by a test allocator so the 10 MiB
//! stdout case can show that the output is not kept.
use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube_standby::api::probe::ExecProbe;
use kube_standby::probe::exec::{probe_pod, ExecCall, ExecError, ExecProber, KubeExec};
use kube_standby::probe::BusyState;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

// ---------------------------------------------------------------------------------------------
// Heap accounting (live bytes and the peak since the last reset), for the large-output case.

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, SeqCst) + by;
    PEAK.fetch_max(now, SeqCst);
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), SeqCst);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The heap test runs alone (write lock); the others share (read lock).
static SERIAL: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

// ---------------------------------------------------------------------------------------------
// The mock API server.

/// How the session ends after the output.
#[derive(Clone)]
enum End {
    /// Send this `Status` on channel 3, then close.
    Status(Value),
    /// Close the websocket without a status.
    Close,
    /// Send nothing more; wait for the client to hang up.
    Hang,
}

#[derive(Clone)]
struct Plan {
    /// Answer the upgrade request with this HTTP status and body instead of switching.
    refuse: Option<(u16, String)>,
    /// The subprotocol the server picks (it must be among those offered).
    protocol: &'static str,
    /// Bytes of stdout streamed (in 64 KiB frames) before the end.
    stdout: usize,
    /// Time the command "runs" before the end.
    hold: Duration,
    end: End,
}

impl Plan {
    fn status(end: Value) -> Plan {
        Plan {
            refuse: None,
            protocol: "v4.channel.k8s.io",
            stdout: 0,
            hold: Duration::ZERO,
            end: End::Status(end),
        }
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    protocols: String,
}

impl Seen {
    fn values(&self, key: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Default)]
struct Counters {
    seen: Mutex<Vec<Seen>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    stdout_sent: AtomicUsize,
    hung_up: AtomicUsize,
}

struct Mock {
    addr: SocketAddr,
    counters: Arc<Counters>,
}

impl Mock {
    async fn start(plan: Plan) -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (plan, c) = (plan.clone(), c.clone());
                let svc = hyper::service::service_fn(move |req| {
                    let (plan, c) = (plan.clone(), c.clone());
                    async move { Ok::<_, Infallible>(answer(req, plan, c)) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades(),
                );
            }
        });
        Mock { addr, counters }
    }

    fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        config.default_namespace = "ns".into();
        kube::Client::try_from(config).unwrap()
    }

    fn prober(&self, max_in_flight: usize) -> ExecProber {
        ExecProber::new(
            Arc::new(KubeExec {
                client: self.client(),
            }),
            max_in_flight,
        )
    }

    fn seen(&self) -> Vec<Seen> {
        self.counters.seen.lock().unwrap().clone()
    }
}

fn record(req: &Request<Incoming>, c: &Counters) {
    let query = req.uri().query().unwrap_or_default().as_bytes();
    let header = req.headers().get("sec-websocket-protocol");
    c.seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: form_urlencoded::parse(query).into_owned().collect(),
        protocols: header
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    });
}

/// Refuse, or switch protocols and run the session on the upgraded connection.
fn answer(mut req: Request<Incoming>, plan: Plan, c: Arc<Counters>) -> Response<Full<Bytes>> {
    record(&req, &c);
    if let Some((code, body)) = plan.refuse.clone() {
        return Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
    }
    let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
    let offered = req.headers()["sec-websocket-protocol"].to_str().unwrap();
    assert!(offered.split(", ").any(|p| p == plan.protocol), "{offered}");
    let upgrade = hyper::upgrade::on(&mut req);
    c.running.fetch_add(1, SeqCst);
    c.max_running.fetch_max(c.running.load(SeqCst), SeqCst);
    let protocol = plan.protocol;
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        session(ws, plan, &c).await;
    });
    Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", derive_accept_key(&key))
        .header("sec-websocket-protocol", protocol)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn session(mut ws: Ws, plan: Plan, c: &Counters) {
    // Like the API server: one frame per channel, holding only the channel byte, on open.
    for ch in [1u8, 3] {
        if ws.send(Message::binary(vec![ch])).await.is_err() {
            return;
        }
    }
    let mut left = plan.stdout;
    while left > 0 {
        let n = left.min(64 << 10);
        let mut frame = vec![b'x'; n + 1];
        frame[0] = 1;
        if ws.send(Message::binary(frame)).await.is_err() {
            return;
        }
        c.stdout_sent.fetch_add(n, SeqCst);
        left -= n;
    }
    tokio::time::sleep(plan.hold).await;
    c.running.fetch_sub(1, SeqCst);
    match plan.end {
        End::Status(status) => {
            let mut frame = vec![3u8];
            frame.extend(serde_json::to_vec(&status).unwrap());
            let _ = ws.send(Message::binary(frame)).await;
            let _ = ws.close(None).await;
        }
        End::Close => {
            let _ = ws.close(None).await;
        }
        End::Hang => {
            while let Some(Ok(_)) = ws.next().await {}
            c.hung_up.fetch_add(1, SeqCst);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

const COMMAND: [&str; 3] = ["sh", "-c", "test -f /tmp/busy && echo 'busy: yes'"];

fn cfg(timeout: i32, success_is_busy: bool) -> ExecProbe {
    serde_json::from_value(json!({"command": COMMAND,
        "timeoutSeconds": timeout, "successIsBusy": success_is_busy}))
    .unwrap()
}

fn call() -> ExecCall {
    ExecCall {
        namespace: "ns".into(),
        pod: "worker-0".into(),
        container: "main".into(),
        command: COMMAND.iter().map(|s| s.to_string()).collect(),
    }
}

fn pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "worker-0", "namespace": "ns", "uid": "u0"},
        "spec": {"containers": [{"name": "main"}, {"name": "sidecar"}]},
        "status": {"phase": "Running"}
    }))
    .unwrap()
}

fn success() -> Value {
    json!({"metadata": {}, "status": "Success"})
}

fn exited(code: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "details": {"causes": [{"reason": "ExitCode", "message": code}]}})
}

fn forbidden() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "pods \"worker-0\" is forbidden: User \"system:serviceaccount:ks:ks\" cannot get resource \"pods/exec\" in API group \"\" in the namespace \"ns\"",
        "reason": "Forbidden", "details": {"name": "worker-0", "kind": "pods"}, "code": 403})
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn the_request_carries_the_command_the_container_and_stdout_only() {
    let _shared = SERIAL.read().await;
    let mock = Mock::start(Plan::status(success())).await;
    let prober = mock.prober(4);
    let mut with_container = cfg(5, true);
    with_container.container = Some("sidecar".into());
    assert_eq!(
        probe_pod(&prober, &pod(), &cfg(5, true)).await,
        Ok(BusyState::Busy)
    );
    assert_eq!(
        probe_pod(&prober, &pod(), &with_container).await,
        Ok(BusyState::Busy)
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    for (s, container) in seen.iter().zip(["main", "sidecar"]) {
        assert_eq!(s.method, "GET");
        assert_eq!(s.path, "/api/v1/namespaces/ns/pods/worker-0/exec");
        assert_eq!(s.values("command"), COMMAND, "every argv element, in order");
        assert_eq!(s.values("container"), [container]);
        assert_eq!(s.values("stdout"), ["true"]);
        let keys: Vec<&str> = s.query.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            keys.iter()
                .all(|k| ["command", "container", "stdout"].contains(k)),
            "no stdin, stderr or tty: {keys:?}"
        );
        assert!(s.protocols.contains("v4.channel.k8s.io"), "{}", s.protocols);
    }
}

#[tokio::test]
async fn exit_codes_map_to_busy_or_idle_under_both_polarities() {
    let _shared = SERIAL.read().await;
    let table = [
        (success(), true, BusyState::Busy),
        (success(), false, BusyState::Idle),
        (exited("1"), true, BusyState::Idle),
        (exited("1"), false, BusyState::Busy),
        (exited("137"), true, BusyState::Idle),
    ];
    for (status, success_is_busy, want) in table {
        let mock = Mock::start(Plan::status(status.clone())).await;
        let got = mock.prober(4).probe(call(), &cfg(5, success_is_busy)).await;
        assert_eq!(got, Ok(want), "{status} successIsBusy={success_is_busy}");
    }
}

#[tokio::test]
async fn the_v5_subprotocol_works_too() {
    let _shared = SERIAL.read().await;
    let mut plan = Plan::status(exited("3"));
    plan.protocol = "v5.channel.k8s.io";
    let mock = Mock::start(plan).await;
    let got = mock.prober(4).probe(call(), &cfg(5, false)).await;
    assert_eq!(got, Ok(BusyState::Busy));
}

#[tokio::test]
async fn a_status_that_is_not_an_exit_is_a_failure_with_its_message() {
    let _shared = SERIAL.read().await;
    let missing = json!({"metadata": {}, "status": "Failure", "reason": "InternalError",
        "message": "container not found (\"main\")"});
    let mock = Mock::start(Plan::status(missing)).await;
    let got = mock.prober(4).probe(call(), &cfg(5, true)).await;
    assert_eq!(
        got,
        Err(ExecError::Failed("container not found (\"main\")".into()))
    );

    // A long message is cut to 200 characters (multi-byte ones count once) and marked.
    let long = "é".repeat(150) + &"z".repeat(150);
    let status = json!({"metadata": {}, "status": "Failure",
        "reason": "InternalError", "message": long});
    let mock = Mock::start(Plan::status(status)).await;
    let got = mock.prober(4).probe(call(), &cfg(5, true)).await;
    let want = "é".repeat(150) + &"z".repeat(50) + "…";
    assert_eq!(got, Err(ExecError::Failed(want)));
}

#[tokio::test]
async fn a_403_on_the_upgrade_is_forbidden_with_the_api_message() {
    let _shared = SERIAL.read().await;
    let mut plan = Plan::status(success());
    plan.refuse = Some((403, forbidden().to_string()));
    let mock = Mock::start(plan).await;
    let got = mock.prober(4).probe(call(), &cfg(5, true)).await;
    let message = forbidden()["message"].as_str().unwrap().to_string();
    assert_eq!(got, Err(ExecError::Forbidden(message)));
    assert_eq!(mock.seen().len(), 1, "a 403 is not retried");

    // A 403 whose body is not a Status (e.g. from a proxy) is still forbidden.
    let mut plan = Plan::status(success());
    plan.refuse = Some((403, "RBAC: access denied".into()));
    let mock = Mock::start(plan).await;
    let got = mock.prober(4).probe(call(), &cfg(5, true)).await;
    assert_eq!(got, Err(ExecError::Forbidden("RBAC: access denied".into())));
}

#[tokio::test]
async fn other_refusals_of_the_upgrade_are_failures() {
    let _shared = SERIAL.read().await;
    // What the API server answers for a container the pod does not have.
    let bad = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "reason": "BadRequest", "code": 400,
        "message": "container nope is not valid for pod worker-0"});
    let mut plan = Plan::status(success());
    plan.refuse = Some((400, bad.to_string()));
    let mock = Mock::start(plan).await;
    let got = mock.prober(4).probe(call(), &cfg(5, true)).await;
    let want =
        "the API server answered 400 BadRequest: container nope is not valid for pod worker-0";
    assert_eq!(got, Err(ExecError::Failed(want.into())));
}

#[tokio::test]
async fn a_session_closed_without_a_status_fails_at_once() {
    let _shared = SERIAL.read().await;
    let mut plan = Plan::status(success());
    plan.end = End::Close;
    let mock = Mock::start(plan).await;
    let started = Instant::now();
    let got = mock.prober(4).probe(call(), &cfg(30, true)).await;
    assert_eq!(
        got,
        Err(ExecError::Failed(
            "no exit status from the API server".into()
        ))
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "ended by the close, not by the 30 s timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_session_that_never_ends_times_out_and_is_hung_up() {
    let _shared = SERIAL.read().await;
    let mut plan = Plan::status(success());
    plan.end = End::Hang;
    let mock = Mock::start(plan).await;
    let started = Instant::now();
    let got = mock.prober(4).probe(call(), &cfg(1, true)).await;
    let took = started.elapsed();
    assert_eq!(got, Err(ExecError::Failed("timed out after 1s".into())));
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(
        took < Duration::from_secs(5),
        "the 1 s bound holds: {took:?}"
    );
    // The abandoned call closes its connection: the server sees the hang-up.
    for _ in 0..100 {
        if mock.counters.hung_up.load(SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server never saw the timed-out session close");
}

#[tokio::test]
async fn ten_mib_of_stdout_is_drained_not_kept_and_does_not_block_the_status() {
    let _alone = SERIAL.write().await;
    const SIZE: usize = 10 << 20;
    let mut plan = Plan::status(success());
    plan.stdout = SIZE;
    let mock = Mock::start(plan).await;
    let prober = mock.prober(4);
    // Warm the client up (connection pool, TLS-free but lazily built layers).
    let mut warm = Plan::status(success());
    warm.stdout = 1 << 20;
    let warm_mock = Mock::start(warm).await;
    let _ = warm_mock.prober(4).probe(call(), &cfg(30, true)).await;

    let before = LIVE.load(SeqCst);
    PEAK.store(before, SeqCst);
    let got = prober.probe(call(), &cfg(30, true)).await;
    let peak_growth = PEAK.load(SeqCst).saturating_sub(before);
    assert_eq!(got, Ok(BusyState::Busy));
    assert_eq!(mock.counters.stdout_sent.load(SeqCst), SIZE);
    assert!(
        peak_growth < SIZE / 4,
        "the heap grew by {peak_growth} bytes while {SIZE} bytes streamed through"
    );
}

#[tokio::test]
async fn at_most_max_in_flight_sessions_are_open_at_once() {
    let _shared = SERIAL.read().await;
    let mut plan = Plan::status(success());
    plan.hold = Duration::from_millis(300);
    let mock = Mock::start(plan).await;
    let prober = mock.prober(2);
    let c = cfg(10, true);
    let all = (0..5).map(|_| prober.probe(call(), &c));
    let results = futures::future::join_all(all).await;
    assert_eq!(results, vec![Ok(BusyState::Busy); 5]);
    assert_eq!(mock.seen().len(), 5);
    assert_eq!(
        mock.counters.max_running.load(SeqCst),
        2,
        "two sessions ran side by side, never more"
    );
}
