//! HotStandbyJob reaction time in run mode (issue 8): `kube-standby run` against the fake
//! API server, one HotStandbyJob (idleTarget 1, annotation mode) with one idle unit. Each
//! iteration pushes a pod watch event that flips the idle unit's pod to busy
//! (`paia.tech/busy=true`) and measures, in this process, from sending that event to the
//! fake API server receiving the POST that creates the replacement Job. Then, as the real
//! API server and Job controller would, the new Job and its running, ready, idle pod are
//! ADDED, and the busy unit completes and is deleted (TTL), so the next iteration starts
//! from the same steady pool: one idle unit.
//!
//! Target (issue 8): p99 <= 100 ms. Printed, never asserted.
//!
//!   cargo bench --bench hsj_reaction
//!   BENCH_ITERATIONS=50 cargo bench --bench hsj_reaction
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;

const NS: &str = "bench";
const HSJ: &str = "pool";
const HSJ_UID: &str = "hsj-pool-uid";
const NAME_LABEL: &str = "hsj.paia.tech/name";
const HSJS: &str = "/apis/apps.paia.tech/v1alpha1/hotstandbyjobs";
const JOBS: &str = "/apis/batch/v1/jobs";
const PODS: &str = "/api/v1/pods";
const TARGET_P99: Duration = Duration::from_millis(100);

fn hsj() -> Value {
    json!({
        "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob",
        "metadata": {"name": HSJ, "namespace": NS, "uid": HSJ_UID, "generation": 1, "resourceVersion": "1",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"idleTarget": 1, "maxReplicas": 100000,
                 "jobTemplate": {"image": "busybox", "command": ["sleep", "3600"]},
                 "busyProbe": {"mode": "annotation"}}
    })
}

/// The first unit's Job, as if created by the operator earlier.
fn first_job() -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "pool-first", "namespace": NS, "uid": "job-first-uid", "resourceVersion": "2",
                     "generateName": "pool-", "creationTimestamp": "2026-01-01T00:00:00Z",
                     "labels": {NAME_LABEL: HSJ},
                     "ownerReferences": [{"apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob",
                                          "name": HSJ, "uid": HSJ_UID, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"completions": 1, "template": {"metadata": {"labels": {NAME_LABEL: HSJ}},
                 "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}}}
    })
}

/// A Job as the API server shows it once the Job controller started its pod.
fn running_job(mut job: Value) -> Value {
    job["status"] = json!({"active": 1, "ready": 1, "startTime": "2026-01-01T00:00:01Z"});
    job
}

fn completed_job(mut job: Value) -> Value {
    job["status"] = json!({"succeeded": 1, "completionTime": "2026-01-01T00:00:09Z",
        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T00:00:09Z"}]});
    job
}

/// The running, ready pod of `job`, busy or not.
fn pod(job: &Value, busy: bool) -> Value {
    let job_name = job["metadata"]["name"].as_str().unwrap_or_default();
    let job_uid = job["metadata"]["uid"].as_str().unwrap_or_default();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{job_name}-pod"), "namespace": NS, "uid": format!("{job_uid}-pod"),
                     "creationTimestamp": "2026-01-01T00:00:01Z",
                     "labels": {NAME_LABEL: HSJ, "batch.kubernetes.io/job-name": job_name},
                     "annotations": {"paia.tech/busy": busy.to_string()},
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                          "uid": job_uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1",
                   "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]}
    })
}

fn succeeded(mut pod: Value) -> Value {
    pod["status"]["phase"] = "Succeeded".into();
    pod["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
    pod
}

fn is_job_create(w: &fake_apiserver::Write) -> bool {
    w.method == "POST" && w.path == format!("/apis/batch/v1/namespaces/{NS}/jobs")
}

fn is_status_write(w: &fake_apiserver::Write) -> bool {
    w.path == format!("/apis/apps.paia.tech/v1alpha1/namespaces/{NS}/hotstandbyjobs/{HSJ}/status")
}

/// Wait until the HSJ controller's Job and pod watches are open (events pushed before
/// would be lost).
async fn watches_open(api: &fake_apiserver::FakeApi) -> bool {
    for _ in 0..500 {
        let seen = api.seen.0.lock().map(|s| s.clone()).unwrap_or_default();
        let open = |p: &str| {
            seen.iter().any(|s| {
                s.contains(&format!("{p}?"))
                    && s.contains("watch=true")
                    && s.contains("labelSelector=hsj.paia.tech")
            })
        };
        if open(JOBS) && open(PODS) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `kube_standby_hsd_reaction_seconds` sum and count (the operator's own measure: from the
/// start of the reconcile to the create answered).
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

struct Outcome {
    latencies: Vec<Duration>,
    /// Job creations nobody flipped for (should be 0), and Job deletions (should be 0).
    extra_creates: usize,
    deletes: usize,
    missed: bool,
}

/// One flip: returns the latency and the created Job (as the API server answered it).
async fn flip(api: &fake_apiserver::FakeApi, idle_job: &Value) -> Option<(Duration, Value)> {
    let from = api.writes.len();
    let t0 = Instant::now();
    api.push(PODS, "MODIFIED", pod(idle_job, true));
    let (_, w) = api
        .writes
        .wait_for(from, Duration::from_secs(5), is_job_create)
        .await?;
    Some((w.at.saturating_duration_since(t0), w.answer))
}

/// The new unit comes up; the busy unit completes and its Job is deleted after its TTL.
fn settle_pool(api: &fake_apiserver::FakeApi, busy_job: &Value, new_job: &Value) {
    let new_job = running_job(new_job.clone());
    api.push(JOBS, "ADDED", new_job.clone());
    api.push(PODS, "ADDED", pod(&new_job, false));
    let done_pod = succeeded(pod(busy_job, true));
    api.push(PODS, "MODIFIED", done_pod.clone());
    api.push(JOBS, "MODIFIED", completed_job(busy_job.clone()));
    api.push(PODS, "DELETED", done_pod);
    api.push(JOBS, "DELETED", completed_job(busy_job.clone()));
}

async fn measure(api: &fake_apiserver::FakeApi, iterations: usize, settle: Duration) -> Outcome {
    let start = api.writes.len();
    let mut idle_job = running_job(first_job());
    let mut out = Outcome {
        latencies: vec![],
        extra_creates: 0,
        deletes: 0,
        missed: false,
    };
    for _ in 0..iterations {
        let Some((latency, created)) = flip(api, &idle_job).await else {
            out.missed = true;
            break;
        };
        out.latencies.push(latency);
        settle_pool(api, &idle_job, &created);
        tokio::time::sleep(settle).await;
        idle_job = running_job(created);
    }
    let writes = api.writes.since(start);
    out.extra_creates = writes
        .iter()
        .filter(|w| is_job_create(w))
        .count()
        .saturating_sub(out.latencies.len());
    out.deletes = writes
        .iter()
        .filter(|w| w.method == "DELETE" && w.path.contains("/jobs/"))
        .count();
    out
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(out: &Outcome, operator: Option<(f64, f64)>) {
    let mut sorted = out.latencies.clone();
    sorted.sort();
    if sorted.is_empty() {
        println!("no flip was answered by a Job creation");
        return;
    }
    let (p50, p99, max) = (
        pct(&sorted, 50.0),
        pct(&sorted, 99.0),
        sorted[sorted.len() - 1],
    );
    let mean = sorted.iter().sum::<Duration>() / sorted.len() as u32;
    println!(
        "hsj reaction, busy flip (pod watch event) -> replacement Job POST received, {} flips:",
        sorted.len()
    );
    println!(
        "  p50 = {:.2} ms   p99 = {:.2} ms   max = {:.2} ms   mean = {:.2} ms   min = {:.2} ms",
        ms(p50),
        ms(p99),
        ms(max),
        ms(mean),
        ms(sorted[0])
    );
    if let Some((sum, count)) = operator.filter(|(_, c)| *c > 0.0) {
        println!(
            "  operator's own measure (reconcile start -> create answered): mean {:.2} ms over {count} creates",
            sum / count * 1e3
        );
    }
    println!(
        "  target p99 <= {} ms: {}",
        TARGET_P99.as_millis(),
        if p99 <= TARGET_P99 { "met" } else { "MISSED" }
    );
    println!(
        "  unexpected Job creations: {}, Job deletions: {}{}",
        out.extra_creates,
        out.deletes,
        if out.missed {
            "; a flip got no Job within 5 s (stopped)"
        } else {
            ""
        }
    );
}

fn main() {
    let iterations: usize = env_or("BENCH_ITERATIONS", 200);
    let settle = Duration::from_millis(env_or("BENCH_SETTLE_MS", 100));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let objects = HashMap::from([
            (HSJS.to_string(), vec![hsj()]),
            (JOBS.to_string(), vec![running_job(first_job())]),
            (PODS.to_string(), vec![pod(&first_job(), false)]),
        ]);
        let api = fake_apiserver::start_with(Arc::new(objects)).await;
        let run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
        if !run.wait_ready().await || !watches_open(&api).await {
            println!(
                "run mode never became ready or never watched; it said:\n{}",
                run.stderr()
            );
            return;
        }
        // The first reconcile (pool already full) ends with its status write.
        if api
            .writes
            .wait_for(0, Duration::from_secs(10), is_status_write)
            .await
            .is_none()
        {
            println!(
                "no status write for the HotStandbyJob; it said:\n{}",
                run.stderr()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let out = measure(&api, iterations, settle).await;
        let metrics = run
            .get_ops("/metrics")
            .await
            .map(|(_, m)| m)
            .unwrap_or_default();
        report(&out, reaction_metric(&metrics));
        if out.missed {
            println!("operator log (tail):");
            let log = run.stderr();
            for l in log
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                println!("  {l}");
            }
        }
    });
}
