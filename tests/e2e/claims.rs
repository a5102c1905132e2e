//! Claims (issue 19) against a real control plane, with the HSD, HSJ and claim controllers
//! running in this process over the test's namespace: bind from the seed HSD example, the
//! pool refilling, release Delete and Recycle, PoolExhausted after waitSeconds, 8
//! concurrent claimers on a pool of 5, and an HSJ unit whose Job finishing ends its claim.
//! Claim → Bound times are printed (target p50 <= 20 ms, p99 <= 50 ms on the CRD path).
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use kube_standby::api::claim::HotStandbyClaim;
use kube_standby::api::{HotStandbyDeployment, HotStandbyJob};
use kube_standby::controller::{claim, hsd, hsj, Deps};
use serde_json::json;

use crate::util::{self, wait_for, PAUSE};

/// The three controllers over `ns`, sharing one Deps (the pools show the claim counts).
fn start_operator(client: Client, ns: &str) -> Vec<tokio::task::JoinHandle<()>> {
    let deps = Deps::standalone(client);
    let (hsd, hsd_feed) = hsd::start_with_claims(&deps, Some(ns.to_string()));
    let hsj_feed = claim::own_feed(
        &deps,
        Some(ns),
        kube_standby::api::hsj::NAME_LABEL,
        kube_standby::api::claim::PoolKind::HotStandbyJob,
    );
    let claims = claim::start(&deps, Some(ns.to_string()), hsd_feed, hsj_feed);
    vec![
        tokio::spawn(hsd.run()),
        tokio::spawn(hsj::start(&deps, Some(ns.to_string())).run()),
        tokio::spawn(claims.started.run()),
    ]
}

/// The seed README's HSD example with a pause image and no service account (the test
/// namespace has none by that name); everything else as users write it.
fn seed_hsd(ns: &str, name: &str, idle: i32, max: i32) -> HotStandbyDeployment {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/hsd-annotation.yaml"
    ))
    .unwrap();
    let mut obj: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    obj["metadata"]["name"] = name.into();
    obj["metadata"]["namespace"] = ns.into();
    obj["spec"]["idleTarget"] = idle.into();
    obj["spec"]["maxReplicas"] = max.into();
    obj["spec"]["scaleDownDelaySeconds"] = 0.into();
    let spec = &mut obj["spec"]["podTemplate"]["spec"];
    spec.as_object_mut().unwrap().remove("serviceAccountName");
    spec["terminationGracePeriodSeconds"] = 1.into();
    spec["containers"][0]["image"] = PAUSE.into();
    serde_json::from_value(obj).unwrap()
}

fn claim_obj(ns: &str, name: &str, spec: serde_json::Value) -> HotStandbyClaim {
    serde_json::from_value(json!({
        "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyClaim",
        "metadata": {"name": name, "namespace": ns}, "spec": spec
    }))
    .unwrap()
}

async fn ready_idle(pods: &Api<Pod>, label: &str) -> usize {
    let lp = ListParams::default().labels(label);
    pods.list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter(|p| {
            let a = p.metadata.annotations.clone().unwrap_or_default();
            a.get("paia.tech/busy").map(String::as_str) != Some("true")
                && !a.contains_key("apps.paia.tech/claim")
        })
        .count()
}

/// Create a claim and wait for it to leave Pending; (phase, pod name, time to that phase
/// sampled every 5 ms).
async fn claim_and_wait(
    api: &Api<HotStandbyClaim>,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
    within: Duration,
) -> (String, Option<String>, Duration) {
    let t0 = Instant::now();
    api.create(&PostParams::default(), &claim_obj(ns, name, spec))
        .await
        .expect("create claim");
    loop {
        let c = api.get(name).await.expect("get claim");
        let st = c.status.unwrap_or_default();
        let phase = serde_json::to_value(st.phase).unwrap();
        let phase = phase.as_str().unwrap_or_default().to_string();
        if phase != "Pending" {
            return (phase, st.pod.map(|p| p.name), t0.elapsed());
        }
        assert!(
            t0.elapsed() < within,
            "claim {name} still Pending after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn claims_bind_from_the_seed_hsd_the_pool_refills_and_both_releases_work() {
    if !util::enabled("claims_bind_from_the_seed_hsd_the_pool_refills_and_both_releases_work") {
        return;
    }
    util::in_namespace("ks-e2e-claims", |client, ns| async move {
        let ops = start_operator(client.clone(), &ns);
        let hsds: Api<HotStandbyDeployment> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let claims: Api<HotStandbyClaim> = Api::namespaced(client.clone(), &ns);
        hsds.patch("game-ws", &PatchParams::apply("e2e"), &Patch::Apply(&seed_hsd(&ns, "game-ws", 3, 50)))
            .await
            .expect("seed HSD");
        let label = "hsd.paia.tech/name=game-ws";
        wait_for(Duration::from_secs(60), "3 idle ready pods", || async {
            ready_idle(&pods, label).await == 3
        })
        .await;
        // Bind, ten times in a row, measuring claim → Bound.
        let mut times = vec![];
        let mut bound_pods = vec![];
        for i in 0..10 {
            let (phase, pod, t) = claim_and_wait(
                &claims,
                &ns,
                &format!("c{i}"),
                json!({"poolRef": {"kind": "HotStandbyDeployment", "name": "game-ws"}, "parameters": {"i": i}}),
                Duration::from_secs(60),
            )
            .await;
            assert_eq!(phase, "Bound", "claim c{i}");
            let pod = pod.expect("bound pod");
            assert!(!bound_pods.contains(&pod), "pod {pod} bound twice");
            let p = pods.get(&pod).await.expect("the bound pod");
            let a = p.metadata.annotations.unwrap_or_default();
            assert_eq!(a.get("paia.tech/busy").map(String::as_str), Some("true"));
            assert_eq!(a.get("apps.paia.tech/claim"), Some(&format!("{ns}/c{i}")));
            bound_pods.push(pod);
            times.push(t);
            // The pool refills to idleTarget before the next claim.
            wait_for(Duration::from_secs(60), "the pool back at 3 idle", || async {
                ready_idle(&pods, label).await == 3
            })
            .await;
        }
        let (p50, p99) = (pct(&mut times, 0.5), pct(&mut times, 0.99));
        println!("claims e2e: claim → Bound (sampled every 5 ms) p50 {p50:?} p99 {p99:?} over {} claims", times.len());
        wait_for(Duration::from_secs(30), "status.claimedCount = 10", || async {
            hsds.get("game-ws").await.ok().and_then(|h| h.status).and_then(|s| s.claimed_count) == Some(10)
        })
        .await;
        // Release Delete: the pod goes.
        let first = bound_pods[0].clone();
        claims.delete("c0", &DeleteParams::default()).await.expect("delete claim");
        wait_for(Duration::from_secs(30), "the Delete pod is gone", || async {
            pods.get(&first).await.map(|p| p.metadata.deletion_timestamp.is_some()).unwrap_or(true)
        })
        .await;
        // Release Recycle: the pod stays, idle, without our annotations.
        let (phase, pod, _) = claim_and_wait(
            &claims,
            &ns,
            "recycle",
            json!({"poolRef": {"kind": "HotStandbyDeployment", "name": "game-ws"}, "release": "Recycle"}),
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(phase, "Bound");
        let pod = pod.unwrap();
        claims.delete("recycle", &DeleteParams::default()).await.expect("delete claim");
        wait_for(Duration::from_secs(30), "the Recycle pod idle again", || async {
            pods.get(&pod).await.ok().and_then(|p| p.metadata.annotations).is_some_and(|a| {
                a.get("paia.tech/busy").map(String::as_str) == Some("false")
                    && !a.contains_key("apps.paia.tech/claim")
            })
        })
        .await;
        for op in ops {
            op.abort();
        }
    })
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn eight_concurrent_claimers_on_a_pool_of_five_never_share_a_pod() {
    if !util::enabled("eight_concurrent_claimers_on_a_pool_of_five_never_share_a_pod") {
        return;
    }
    util::in_namespace("ks-e2e-claims-race", |client, ns| async move {
        let ops = start_operator(client.clone(), &ns);
        let hsds: Api<HotStandbyDeployment> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        // maxReplicas 5 = idleTarget: the pool cannot grow, so 3 claimers must run out.
        hsds.patch(
            "small",
            &PatchParams::apply("e2e"),
            &Patch::Apply(&seed_hsd(&ns, "small", 5, 5)),
        )
        .await
        .expect("HSD");
        wait_for(Duration::from_secs(60), "5 idle ready pods", || async {
            ready_idle(&pods, "hsd.paia.tech/name=small").await == 5
        })
        .await;
        let results = concurrent_claims(&client, &ns, "HotStandbyDeployment", "small", 8, 5).await;
        assert_five_bound_three_exhausted(&client, &ns, results).await;
        for op in ops {
            op.abort();
        }
    })
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn a_hsj_unit_is_claimed_and_its_job_finishing_ends_the_claim() {
    if !util::enabled("a_hsj_unit_is_claimed_and_its_job_finishing_ends_the_claim") {
        return;
    }
    util::in_namespace("ks-e2e-claims-hsj", |client, ns| async move {
        let ops = start_operator(client.clone(), &ns);
        let hsjs: Api<HotStandbyJob> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let claims: Api<HotStandbyClaim> = Api::namespaced(client.clone(), &ns);
        apply_pause_hsj(&hsjs, &ns, "ci", 2, 6).await;
        wait_for(Duration::from_secs(60), "2 idle ready unit pods", || async {
            ready_idle(&pods, "hsj.paia.tech/name=ci").await == 2
        })
        .await;
        let (phase, pod, t) = claim_and_wait(
            &claims,
            &ns,
            "build-1",
            json!({"poolRef": {"kind": "HotStandbyJob", "name": "ci"}, "parameters": {"commit": "abc"}}),
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(phase, "Bound");
        println!("claims e2e (HSJ): claim → Bound {t:?}");
        let pod = pod.unwrap();
        wait_for(Duration::from_secs(60), "the HSJ pool back at 2 idle", || async {
            ready_idle(&pods, "hsj.paia.tech/name=ci").await == 2
        })
        .await;
        // The unit's work ends: its pod Succeeds, the claim is Released.
        let patch = json!({"status": {"phase": "Succeeded"}});
        pods.patch_status(&pod, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("pod Succeeded");
        wait_for(Duration::from_secs(30), "claim Released (JobFinished)", || async {
            claims.get("build-1").await.ok().and_then(|c| c.status).is_some_and(|s| {
                s.conditions.first().is_some_and(|c| c.reason == "JobFinished")
            })
        })
        .await;
        for op in ops {
            op.abort();
        }
    })
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn eight_concurrent_claimers_on_a_hsj_pool_of_five_units_never_share_one() {
    if !util::enabled("eight_concurrent_claimers_on_a_hsj_pool_of_five_units_never_share_one") {
        return;
    }
    util::in_namespace("ks-e2e-claims-hsj-race", |client, ns| async move {
        let ops = start_operator(client.clone(), &ns);
        let hsjs: Api<HotStandbyJob> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        // maxReplicas 5 = idleTarget: the pool cannot grow, so 3 claimers must run out.
        apply_pause_hsj(&hsjs, &ns, "units", 5, 5).await;
        wait_for(
            Duration::from_secs(90),
            "5 idle ready unit pods",
            || async { ready_idle(&pods, "hsj.paia.tech/name=units").await == 5 },
        )
        .await;
        let results = concurrent_claims(&client, &ns, "HotStandbyJob", "units", 8, 5).await;
        assert_five_bound_three_exhausted(&client, &ns, results).await;
        wait_for(
            Duration::from_secs(30),
            "HSJ status counts 5 claimed, 3 exhausted",
            || async {
                hsjs.get("units")
                    .await
                    .ok()
                    .and_then(|h| h.status)
                    .is_some_and(|s| s.claimed_count == Some(5) && s.exhausted_claims == Some(3))
            },
        )
        .await;
        for op in ops {
            op.abort();
        }
    })
    .await;
}

/// `n` claimers at once on one pool, each waiting `wait_seconds`; (phase, pod) of each.
async fn concurrent_claims(
    client: &Client,
    ns: &str,
    kind: &str,
    pool: &str,
    n: usize,
    wait_seconds: i64,
) -> Vec<(String, Option<String>)> {
    let mut tasks = vec![];
    for i in 0..n {
        let (client, ns) = (client.clone(), ns.to_string());
        let spec = json!({"poolRef": {"kind": kind, "name": pool}, "waitSeconds": wait_seconds});
        tasks.push(tokio::spawn(async move {
            let claims: Api<HotStandbyClaim> = Api::namespaced(client, &ns);
            let (phase, pod, _) = claim_and_wait(
                &claims,
                &ns,
                &format!("r{i}"),
                spec,
                Duration::from_secs(60),
            )
            .await;
            (phase, pod)
        }));
    }
    let mut out = vec![];
    for t in tasks {
        out.push(t.await.expect("claimer"));
    }
    out
}

/// An HSJ pool of pause units, applied server-side.
async fn apply_pause_hsj(hsjs: &Api<HotStandbyJob>, ns: &str, name: &str, idle: i32, max: i32) {
    let pool: HotStandbyJob = serde_json::from_value(json!({
        "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"idleTarget": idle, "maxReplicas": max, "scaleDownDelaySeconds": 0,
                 "jobTemplate": {"image": PAUSE}}
    }))
    .unwrap();
    hsjs.patch(name, &PatchParams::apply("e2e"), &Patch::Apply(&pool))
        .await
        .expect("HSJ");
}

/// 8 claimers on a pool capped at 5: 5 distinct pods bound, 3 Failed PoolExhausted with a
/// message naming maxReplicas.
async fn assert_five_bound_three_exhausted(
    client: &Client,
    ns: &str,
    results: Vec<(String, Option<String>)>,
) {
    let (bound, failed) = bound_and_failed(results);
    let mut distinct = bound.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), bound.len(), "a pod bound twice: {bound:?}");
    assert_eq!(bound.len(), 5, "{bound:?}");
    assert_eq!(failed, 3);
    let claims: Api<HotStandbyClaim> = Api::namespaced(client.clone(), ns);
    for c in claims.list(&ListParams::default()).await.unwrap().items {
        let st = c.status.unwrap_or_default();
        if st.pod.is_none() {
            let cond = st.conditions.first().cloned().expect("a condition");
            assert_eq!(cond.reason, "PoolExhausted");
            assert!(cond.message.contains("maxReplicas"), "{}", cond.message);
        }
    }
}

/// The pods of the Bound results, and how many Failed (any other phase fails the test).
fn bound_and_failed(results: Vec<(String, Option<String>)>) -> (Vec<String>, usize) {
    let mut bound = vec![];
    let mut failed = 0;
    for (phase, pod) in results {
        match phase.as_str() {
            "Bound" => bound.push(pod.expect("a Bound claim names its pod")),
            "Failed" => failed += 1,
            other => panic!("phase {other}"),
        }
    }
    (bound, failed)
}

// ---------------------------------------------------------------------------------------
// The real node: the webhook injects the claim agent into a pool's pods
// (`spec.assignment: file`), the agent reaches the operator in this process at
// https://10.88.0.1:PORT and writes the assignment file, and the app (a real container)
// reads it: asserted through the app's own log.

/// Wait for the file, print it on one line, then idle (HSD) or exit 0 (HSJ).
fn reader_script(then: &str) -> String {
    format!(
        r#"F=/var/run/kube-standby/assignment/assignment.json; trap 'exit 0' TERM; until [ -s "$F" ]; do sleep 0.05; done; echo "ASSIGNMENT $(tr -d '\n' < "$F")"; {then}"#
    )
}

fn real_container(script: &str) -> serde_json::Value {
    json!({"name": "app", "image": crate::singleton::APP_IMAGE, "imagePullPolicy": "Never",
           "command": ["sh", "-c", script]})
}

/// The JSON the app printed after `ASSIGNMENT `, read from its log; and when it was seen
/// (polled every 100 ms).
async fn assignment_line(pods: &Api<Pod>, pod: &str) -> (serde_json::Value, Instant) {
    let t0 = Instant::now();
    let lp = kube::api::LogParams {
        container: Some("app".into()),
        ..Default::default()
    };
    loop {
        if let Ok(log) = pods.logs(pod, &lp).await {
            if let Some(rest) = log.lines().find_map(|l| l.strip_prefix("ASSIGNMENT ")) {
                let v: serde_json::Value = serde_json::from_str(rest)
                    .unwrap_or_else(|e| panic!("the app printed {rest:?}: {e}"));
                return (v, Instant::now());
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "pod {pod}: no ASSIGNMENT line from its app"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_assignment(got: &serde_json::Value, ns: &str, claim: &str, params: &serde_json::Value) {
    assert_eq!(got["claim"], claim, "{got}");
    assert_eq!(got["namespace"], ns, "{got}");
    assert_eq!(&got["parameters"], params, "{got}");
    assert!(got["boundAt"].is_string(), "{got}");
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn real_node_a_claimed_hsd_pod_reads_its_assignment_from_the_file() {
    let Some(env) = crate::singleton::real_env(
        "real_node_a_claimed_hsd_pod_reads_its_assignment_from_the_file",
    ) else {
        return;
    };
    util::in_namespace("ks-e2e-real-claim", move |client, ns| async move {
        use crate::singleton::{readme_certs, register_ca, start_file_operator, unregister};
        let dir = tempfile::tempdir().expect("tempdir");
        readme_certs(dir.path(), &env.host);
        let op = start_file_operator(client.clone(), &env, &ns, dir.path()).await;
        let ca = std::fs::read_to_string(dir.path().join("ca.crt")).expect("ca.crt");
        let mwc = register_ca(&client, &ns, &op.url, &ca).await;
        let mut hsd = serde_json::to_value(seed_hsd(&ns, "warm", 1, 3)).unwrap();
        hsd["spec"]["assignment"] = "file".into();
        let spec = &mut hsd["spec"]["podTemplate"]["spec"];
        spec["nodeSelector"] = json!({"kubernetes.io/hostname": crate::singleton::REAL_NODE});
        spec["containers"] = json!([real_container(&reader_script("while :; do sleep 1; done"))]);
        let hsd: HotStandbyDeployment = serde_json::from_value(hsd).unwrap();
        Api::<HotStandbyDeployment>::namespaced(client.clone(), &ns)
            .patch("warm", &PatchParams::apply("e2e"), &Patch::Apply(&hsd))
            .await
            .expect("HSD");
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let label = "hsd.paia.tech/name=warm";
        wait_for(Duration::from_secs(120), "1 idle ready pod on the real node", || async {
            ready_idle(&pods, label).await == 1
        })
        .await;
        let injected = pods.list(&ListParams::default().labels(label)).await.expect("list").items;
        assert!(
            injected.iter().all(|p| p.spec.as_ref().is_some_and(|s| s.containers.iter().any(|c| c.name == "claim-agent"))),
            "every pool pod carries the claim agent"
        );
        let params = json!({"task": "render", "frame": 7});
        let claims: Api<HotStandbyClaim> = Api::namespaced(client.clone(), &ns);
        let (phase, pod, t) = claim_and_wait(
            &claims,
            &ns,
            "job-7",
            json!({"poolRef": {"kind": "HotStandbyDeployment", "name": "warm"}, "parameters": params}),
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(phase, "Bound");
        let bound_at = Instant::now();
        let pod = pod.expect("pod");
        let (got, seen) = assignment_line(&pods, &pod).await;
        assert_assignment(&got, &ns, "job-7", &params);
        println!(
            "claims e2e (real node, HSD): claim → Bound {t:?}; Bound → the app printed its assignment within {:?} (log polled every 100 ms)",
            seen.duration_since(bound_at)
        );
        // Only the claimed pod learned it: the refill pod still waits.
        wait_for(Duration::from_secs(120), "the pool back at 1 idle", || async {
            ready_idle(&pods, label).await == 1
        })
        .await;
        let lp = kube::api::LogParams { container: Some("app".into()), ..Default::default() };
        for p in pods.list(&ListParams::default().labels(label)).await.expect("list").items {
            let name = p.metadata.name.clone().unwrap_or_default();
            if name != pod && p.metadata.deletion_timestamp.is_none() {
                let log = pods.logs(&name, &lp).await.unwrap_or_default();
                assert!(!log.contains("ASSIGNMENT"), "unclaimed pod {name} printed: {log}");
            }
        }
        unregister(&client, &mwc).await;
        op.task.abort();
    })
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn real_node_a_claimed_hsj_unit_reads_its_assignment_and_its_job_ends_the_claim() {
    let Some(env) = crate::singleton::real_env(
        "real_node_a_claimed_hsj_unit_reads_its_assignment_and_its_job_ends_the_claim",
    ) else {
        return;
    };
    util::in_namespace("ks-e2e-real-claim-hsj", move |client, ns| async move {
        use crate::singleton::{readme_certs, register_ca, start_file_operator, unregister};
        let dir = tempfile::tempdir().expect("tempdir");
        readme_certs(dir.path(), &env.host);
        let op = start_file_operator(client.clone(), &env, &ns, dir.path()).await;
        let ca = std::fs::read_to_string(dir.path().join("ca.crt")).expect("ca.crt");
        let mwc = register_ca(&client, &ns, &op.url, &ca).await;
        // The app exits 0 once it has read its assignment; the agent exits once it has
        // written it (Job pods): the pod Succeeds, the Job completes, the claim is Released.
        let pool: HotStandbyJob = serde_json::from_value(json!({
            "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob",
            "metadata": {"name": "units", "namespace": ns},
            "spec": {"idleTarget": 1, "maxReplicas": 3, "scaleDownDelaySeconds": 0, "assignment": "file",
                     "jobTemplate": {"template": {"spec": {
                        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                        "nodeSelector": {"kubernetes.io/hostname": crate::singleton::REAL_NODE},
                        "containers": [real_container(&reader_script("exit 0"))]}}}}
        }))
        .unwrap();
        Api::<HotStandbyJob>::namespaced(client.clone(), &ns)
            .patch("units", &PatchParams::apply("e2e"), &Patch::Apply(&pool))
            .await
            .expect("HSJ");
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let label = "hsj.paia.tech/name=units";
        wait_for(Duration::from_secs(120), "1 idle ready unit on the real node", || async {
            ready_idle(&pods, label).await == 1
        })
        .await;
        let params = json!({"commit": "abc123", "suite": ["unit", "e2e"]});
        let claims: Api<HotStandbyClaim> = Api::namespaced(client.clone(), &ns);
        let (phase, pod, t) = claim_and_wait(
            &claims,
            &ns,
            "build-9",
            json!({"poolRef": {"kind": "HotStandbyJob", "name": "units"}, "parameters": params}),
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(phase, "Bound");
        let pod = pod.expect("pod");
        let (got, _) = assignment_line(&pods, &pod).await;
        assert_assignment(&got, &ns, "build-9", &params);
        println!("claims e2e (real node, HSJ): claim → Bound {t:?}; the unit's app read its assignment");
        wait_for(Duration::from_secs(90), "claim Released (JobFinished)", || async {
            claims.get("build-9").await.ok().and_then(|c| c.status).is_some_and(|s| {
                serde_json::to_value(s.phase).ok() == Some(json!("Released"))
                    && s.conditions.first().is_some_and(|c| c.reason == "JobFinished")
            })
        })
        .await;
        unregister(&client, &mwc).await;
        op.task.abort();
    })
    .await;
}
