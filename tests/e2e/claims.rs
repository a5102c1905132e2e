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
    let claims = claim::start(&deps, Some(ns.to_string()));
    vec![
        tokio::spawn(hsd::start(&deps, Some(ns.to_string())).run()),
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
        hsds.patch("small", &PatchParams::apply("e2e"), &Patch::Apply(&seed_hsd(&ns, "small", 5, 5)))
            .await
            .expect("HSD");
        wait_for(Duration::from_secs(60), "5 idle ready pods", || async {
            ready_idle(&pods, "hsd.paia.tech/name=small").await == 5
        })
        .await;
        let mut tasks = vec![];
        for i in 0..8 {
            let (client, ns) = (client.clone(), ns.clone());
            tasks.push(tokio::spawn(async move {
                let claims: Api<HotStandbyClaim> = Api::namespaced(client, &ns);
                claim_and_wait(
                    &claims,
                    &ns,
                    &format!("r{i}"),
                    json!({"poolRef": {"kind": "HotStandbyDeployment", "name": "small"}, "waitSeconds": 5}),
                    Duration::from_secs(60),
                )
                .await
            }));
        }
        let mut bound = vec![];
        let mut exhausted = 0;
        for t in tasks {
            let (phase, pod, _) = t.await.unwrap();
            match phase.as_str() {
                "Bound" => bound.push(pod.unwrap()),
                "Failed" => exhausted += 1,
                other => panic!("phase {other}"),
            }
        }
        let mut distinct = bound.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), bound.len(), "a pod bound twice: {bound:?}");
        assert_eq!(bound.len(), 5);
        assert_eq!(exhausted, 3);
        let claims: Api<HotStandbyClaim> = Api::namespaced(client.clone(), &ns);
        for c in claims.list(&ListParams::default()).await.unwrap().items {
            let st = c.status.unwrap_or_default();
            if st.pod.is_none() {
                let reason = st.conditions.first().map(|c| c.reason.clone()).unwrap_or_default();
                assert_eq!(reason, "PoolExhausted");
                assert!(st.conditions[0].message.contains("maxReplicas"), "{}", st.conditions[0].message);
            }
        }
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
        let pool: HotStandbyJob = serde_json::from_value(json!({
            "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob",
            "metadata": {"name": "ci", "namespace": ns},
            "spec": {"idleTarget": 2, "maxReplicas": 6, "scaleDownDelaySeconds": 0,
                     "jobTemplate": {"image": PAUSE}}
        }))
        .unwrap();
        hsjs.patch("ci", &PatchParams::apply("e2e"), &Patch::Apply(&pool))
            .await
            .expect("HSJ");
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
