//! `kube-standby run` started before its resources are served (a first install: CRDs applied
//! a moment before the operator starts). Each watched resource answers 404 for its first
//! seconds, then serves: the real binary must say what it waits for on `/readyz`, log one
//! warning naming the resource and one line when it recovers, and become ready within the
//! backoff, without a restart. KEDA's kinds are optional: their absence never holds
//! readiness.
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use std::time::{Duration, Instant};

/// (path prefix answered 404, resource name in logs and `/readyz`).
const CASES: &[(&str, &str)] = &[
    (
        "/apis/apps.paia.tech/v1alpha1/hotstandbydeployments",
        "hotstandbydeployments.apps.paia.tech list",
    ),
    (
        "/apis/apps.paia.tech/v1alpha1/hotstandbyjobs",
        "hotstandbyjobs.apps.paia.tech list",
    ),
    (
        "/apis/apps.statefulsingleton.com/v1/statefulsingletons",
        "statefulsingletons.apps.statefulsingleton.com list",
    ),
    (
        "/apis/apps.openshift.statefulsingleton.com/v1/statefulsingletons",
        "statefulsingletons.apps.openshift.statefulsingleton.com list",
    ),
    (
        "/apis/asya.io/v1alpha1/asyncactors",
        "asyncactors.asya.io list",
    ),
    ("/api/v1/pods", "pods list"),
    ("/api/v1/nodes", "nodes list"),
    ("/api/v1/configmaps", "configmaps list"),
    ("/api/v1/services", "services list"),
    ("/apis/apps/v1/replicasets", "replicasets.apps list"),
    ("/apis/apps/v1/deployments", "deployments.apps list"),
    ("/apis/apps/v1/statefulsets", "statefulsets.apps list"),
    ("/apis/batch/v1/jobs", "jobs.batch list"),
    (
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "customresourcedefinitions.apiextensions.k8s.io list (scaledobjects.keda.sh)",
    ),
];

/// How long each resource is not served.
const OUTAGE: Duration = Duration::from_secs(3);
/// Ready at the latest this long after the resource is served: the backoff's cap (5 s,
/// plus its jitter) and a margin for a loaded machine.
const READY_WITHIN: Duration = Duration::from_secs(9);

fn count(log: &str, what: &str, resource: &str) -> usize {
    let field = format!("resource={resource}");
    log.lines()
        .filter(|l| l.contains(what) && l.contains(&field))
        .count()
}

/// One case: returns a description of what went wrong, if anything.
async fn case(prefix: &'static str, resource: &'static str) -> Result<String, String> {
    let api = fake_apiserver::start().await;
    api.not_served(prefix, OUTAGE);
    let started = Instant::now();
    let run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
    let mut named = false;
    let ready_at = loop {
        match run.get_ops("/readyz").await {
            Some((200, _)) => break started.elapsed(),
            Some((503, body)) => {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                    let waiting = v["waiting_for"].as_array().cloned().unwrap_or_default();
                    if waiting.iter().any(|w| w == resource)
                        && v["last_errors"][resource]
                            .as_str()
                            .is_some_and(|e| e.contains("404"))
                    {
                        named = true;
                    }
                }
            }
            _ => {}
        }
        if started.elapsed() > OUTAGE + READY_WITHIN {
            return Err(format!(
                "{resource}: not ready {:?} after start; it said:\n{}",
                started.elapsed(),
                run.stderr()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The log lines come from the same process; give the recovery line a moment to flush.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = run.stderr();
    let warned = count(&log, "watch failing", resource);
    let recovered = count(&log, "watch recovered", resource);
    let mut problems = vec![];
    if ready_at < OUTAGE {
        problems.push(format!(
            "ready after {ready_at:?}, while {prefix} was not served"
        ));
    }
    if !named {
        problems.push("/readyz never named it with its 404".to_string());
    }
    if warned != 1 {
        problems.push(format!("{warned} 'watch failing' lines, want 1"));
    }
    if recovered != 1 {
        problems.push(format!("{recovered} 'watch recovered' lines, want 1"));
    }
    if problems.is_empty() {
        Ok(format!("{resource}: ready {ready_at:?} after start"))
    } else {
        Err(format!("{resource}: {}\n{log}", problems.join("; ")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watched_resource_served_late_is_retried_named_and_then_ready() {
    let mut failures = vec![];
    // A few processes at a time: the machine has two cores.
    for chunk in CASES.chunks(4) {
        let results = futures::future::join_all(
            chunk
                .iter()
                .map(|(prefix, resource)| case(prefix, resource)),
        )
        .await;
        for r in results {
            match r {
                Ok(line) => eprintln!("{line}"),
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test]
async fn keda_missing_never_holds_readiness_and_is_said_once_per_kind() {
    let api = fake_apiserver::start().await;
    api.not_served("/apis/keda.sh/", Duration::from_secs(3600));
    let run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
    assert!(run.wait_ready().await, "{}", run.stderr());
    let kinds = ["scaledobjects", "scaledjobs", "triggerauthentications"];
    // Readiness does not wait for the optional watches, so a kind's first failure can be
    // logged just after it: wait (a while) until each has been said, then count.
    let said_all = |log: &str| {
        kinds.iter().all(|k| {
            count(
                log,
                "optional watch not available",
                &format!("{k}.keda.sh list"),
            ) > 0
        })
    };
    for _ in 0..100 {
        if said_all(&run.stderr()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Time for a second line of any kind, were one coming.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = run.stderr();
    for kind in kinds {
        let resource = format!("{kind}.keda.sh list");
        assert_eq!(
            count(&log, "optional watch not available", &resource),
            1,
            "{log}"
        );
        assert_eq!(count(&log, "watch failing", &resource), 0, "{log}");
    }
    let (_, metrics) = run.get_ops("/metrics").await.expect("metrics");
    assert!(
        metrics.contains(r#"kube_standby_cache_synced{resource="pods list"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kube_standby_cache_synced{resource="scaledobjects.keda.sh list"} 0"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_resource_never_served_keeps_the_process_unready_and_named() {
    let api = fake_apiserver::start().await;
    api.not_served(
        "/apis/apps.paia.tech/v1alpha1/hotstandbyjobs",
        Duration::from_secs(3600),
    );
    let run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut last = None;
    while Instant::now() < deadline {
        last = run.get_ops("/readyz").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = last.expect("an answer from /readyz");
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        v["waiting_for"],
        serde_json::json!(["hotstandbyjobs.apps.paia.tech list"]),
        "{body}"
    );
    let (_, metrics) = run.get_ops("/metrics").await.expect("metrics");
    assert!(
        metrics.contains(
            r#"kube_standby_cache_synced{resource="hotstandbyjobs.apps.paia.tech list"} 0"#
        ),
        "{metrics}"
    );
    // Retried, but said once.
    assert_eq!(
        count(
            &run.stderr(),
            "watch failing",
            "hotstandbyjobs.apps.paia.tech list"
        ),
        1,
        "{}",
        run.stderr()
    );
    let retries = api
        .seen
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.contains("/hotstandbyjobs"))
        .count();
    assert!(retries >= 3, "retried {retries} times in 8 s");
}
