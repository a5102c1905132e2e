//! HotStandbyJob against a real cluster, with the reconciler running in this process. The
//! cluster's nodes are simulated: a Job's pod stays Running until a test patches its status.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use kube_standby::api::hsj::HotStandbyJob;
use serde_json::json;

use crate::util::{self, wait_for, PAUSE};

fn start_operator(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(kube_standby::controller::hsj::run(
        kube_standby::controller::Deps::standalone(client),
        None,
    ))
}

fn selector(hsj: &str) -> ListParams {
    ListParams::default().labels(&format!("hsj.paia.tech/name={hsj}"))
}

fn finished(j: &Job) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

/// Jobs of the pool that are neither finished nor being deleted.
async fn active_jobs(jobs: &Api<Job>, hsj: &str) -> Vec<Job> {
    jobs.list(&selector(hsj))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none() && !finished(j))
        .collect()
}

/// Running pods of the pool, oldest first, with the name of their Job.
async fn running_pods(pods: &Api<Pod>, hsj: &str) -> Vec<(String, Pod)> {
    let mut v: Vec<(String, Pod)> = pods
        .list(&selector(hsj))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| {
            let job = p
                .owner_references()
                .iter()
                .find(|o| o.kind == "Job")?
                .name
                .clone();
            Some((job, p))
        })
        .collect();
    v.sort_by_key(|(_, p)| p.metadata.creation_timestamp.clone());
    v
}

async fn mark(pods: &Api<Pod>, name: &str, busy: bool) {
    let v = if busy { "true" } else { "false" };
    let patch = json!({"metadata": {"annotations": {"paia.tech/busy": v}}});
    pods.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("annotate pod");
}

/// The simulated node does not run containers: end the pod as its process would.
async fn finish_pod(pods: &Api<Pod>, name: &str) {
    let patch = json!({"status": {"phase": "Succeeded",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "main", "image": PAUSE, "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("pod status Succeeded");
}

fn pool(ns: &str, name: &str, idle: i32, delay: i32) -> HotStandbyJob {
    serde_json::from_value(json!({
        "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"idleTarget": idle, "maxReplicas": 10, "scaleDownDelaySeconds": delay,
                 "jobTemplate": {"image": PAUSE, "ttlSecondsAfterFinished": 600}}
    }))
    .expect("hsj")
}

async fn apply(api: &Api<HotStandbyJob>, h: &HotStandbyJob) {
    api.patch(
        &h.name_any(),
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(h),
    )
    .await
    .expect("apply hsj");
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn hsj_seed_example_applies_unchanged_and_its_pool_reaches_idle_target() {
    if !util::enabled("hsj_seed_example_applies_unchanged_and_its_pool_reaches_idle_target") {
        return;
    }
    util::in_namespace("ks-e2e-hsj-seed", |client, ns| async move {
        let op = start_operator(client.clone());
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hsj.yaml"))
                .unwrap();
        let mut obj: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        obj["metadata"]["namespace"] = ns.clone().into();
        let h: HotStandbyJob = serde_json::from_value(obj).unwrap();
        let api: Api<HotStandbyJob> = Api::namespaced(client.clone(), &ns);
        apply(&api, &h).await;
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        // idleTarget 20; the exec probe cannot run on simulated nodes, so nothing is busy.
        wait_for(Duration::from_secs(60), "20 active Jobs", || async {
            active_jobs(&jobs, "demo-hsj").await.len() == 20
        })
        .await;
        let all = active_jobs(&jobs, "demo-hsj").await;
        for j in &all {
            let owner = &j.owner_references()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.controller),
                ("HotStandbyJob", Some(true))
            );
            assert!(j.name_any().starts_with("demo-hsj-"), "{}", j.name_any());
            let spec = j.spec.as_ref().unwrap();
            assert_eq!(
                (spec.completions, spec.ttl_seconds_after_finished),
                (Some(1), Some(60))
            );
        }
        wait_for(
            Duration::from_secs(30),
            "status desired 20 replicas 20",
            || async {
                api.get("demo-hsj")
                    .await
                    .ok()
                    .and_then(|h| h.status)
                    .is_some_and(|s| s.desired_replicas == 20 && s.replicas == 20)
            },
        )
        .await;
        // Stays there: no more Jobs are created.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            jobs.list(&selector("demo-hsj")).await.unwrap().items.len(),
            20
        );
        op.abort();
    })
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn hsj_a_pod_marked_busy_gets_a_new_idle_job_within_a_second() {
    if !util::enabled("hsj_a_pod_marked_busy_gets_a_new_idle_job_within_a_second") {
        return;
    }
    util::in_namespace("ks-e2e-hsj-busy", |client, ns| async move {
        let op = start_operator(client.clone());
        let api: Api<HotStandbyJob> = Api::namespaced(client.clone(), &ns);
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        apply(&api, &pool(&ns, "warm", 2, 30)).await;
        wait_for(Duration::from_secs(120), "2 running pods", || async {
            running_pods(&pods, "warm").await.len() == 2
        })
        .await;
        for round in 0..3 {
            let idle = running_pods(&pods, "warm").await;
            let before = active_jobs(&jobs, "warm").await.len();
            let (_, p) = idle
                .iter()
                .find(|(_, p)| {
                    p.annotations().get("paia.tech/busy").map(String::as_str) != Some("true")
                })
                .expect("an idle pod");
            let started = Instant::now();
            mark(&pods, &p.name_any(), true).await;
            // Sample every 20 ms.
            loop {
                if active_jobs(&jobs, "warm").await.len() == before + 1 {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "round {round}: no new Job within 1 s of the busy flip"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            eprintln!(
                "round {round}: busy flip -> new Job after {:?}",
                started.elapsed()
            );
            wait_for(
                Duration::from_secs(60),
                "the new Job's pod running",
                || async { running_pods(&pods, "warm").await.len() == before + 1 },
            )
            .await;
        }
        op.abort();
    })
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn hsj_finished_jobs_no_longer_count_and_the_pool_is_refilled() {
    if !util::enabled("hsj_finished_jobs_no_longer_count_and_the_pool_is_refilled") {
        return;
    }
    util::in_namespace("ks-e2e-hsj-done", |client, ns| async move {
        let op = start_operator(client.clone());
        let api: Api<HotStandbyJob> = Api::namespaced(client.clone(), &ns);
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        apply(&api, &pool(&ns, "work", 2, 30)).await;
        wait_for(Duration::from_secs(120), "2 running pods", || async {
            running_pods(&pods, "work").await.len() == 2
        })
        .await;

        // A busy unit: the pool grows to 3 (1 busy + 2 idle).
        let (busy_job, busy_pod) = running_pods(&pods, "work").await.remove(0);
        mark(&pods, &busy_pod.name_any(), true).await;
        wait_for(Duration::from_secs(60), "3 running pods", || async {
            running_pods(&pods, "work").await.len() == 3
        })
        .await;

        // Its work is done: the Job completes, no longer counts, and is left to its TTL.
        finish_pod(&pods, &busy_pod.name_any()).await;
        wait_for(
            Duration::from_secs(60),
            "status completedCount 1, replicas 2",
            || async {
                api.get("work")
                    .await
                    .ok()
                    .and_then(|h| h.status)
                    .is_some_and(|s| s.completed_count == 1 && s.replicas == 2 && s.busy_count == 0)
            },
        )
        .await;
        let done = jobs
            .get(&busy_job)
            .await
            .expect("the completed Job is kept for its TTL");
        assert!(finished(&done) && done.metadata.deletion_timestamp.is_none());

        // An idle unit ends too (e.g. the app exited): a new Job refills the pool at once.
        let (idle_job, idle_pod) = running_pods(&pods, "work").await.remove(0);
        finish_pod(&pods, &idle_pod.name_any()).await;
        wait_for(
            Duration::from_secs(30),
            "a new Job in place of the finished idle one",
            || async {
                let active = active_jobs(&jobs, "work").await;
                active.len() == 2 && active.iter().all(|j| j.name_any() != idle_job)
            },
        )
        .await;
        wait_for(Duration::from_secs(60), "2 running pods", || async {
            running_pods(&pods, "work").await.len() == 2
        })
        .await;
        op.abort();
    })
    .await;
}

/// Watch, every 20 ms, that no Job in `protected` (its pod marked busy) is deleted.
fn guard(
    jobs: Api<Job>,
    hsj: &'static str,
    protected: Arc<Mutex<HashSet<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let list = jobs.list(&selector(hsj)).await.expect("list jobs").items;
            let present: HashSet<String> = list
                .iter()
                .filter(|j| j.metadata.deletion_timestamp.is_none())
                .map(|j| j.name_any())
                .collect();
            let snapshot = protected.lock().unwrap().clone();
            for name in snapshot {
                assert!(present.contains(&name), "busy Job {name} was deleted");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn hsj_scale_down_after_the_delay_removes_only_idle_jobs_ten_times() {
    if !util::enabled("hsj_scale_down_after_the_delay_removes_only_idle_jobs_ten_times") {
        return;
    }
    util::in_namespace("ks-e2e-hsj-down", |client, ns| async move {
        let op = start_operator(client.clone());
        let api: Api<HotStandbyJob> = Api::namespaced(client.clone(), &ns);
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        apply(&api, &pool(&ns, "shrink", 1, 1)).await;
        wait_for(Duration::from_secs(120), "1 running pod", || async {
            running_pods(&pods, "shrink").await.len() == 1
        })
        .await;
        let protected = Arc::new(Mutex::new(HashSet::new()));
        let watch = guard(jobs.clone(), "shrink", protected.clone());

        for round in 0..10 {
            // Three units turn busy one after another: 4 active.
            for n in 1..=3 {
                let (job, p) = running_pods(&pods, "shrink")
                    .await
                    .into_iter()
                    .find(|(j, _)| !protected.lock().unwrap().contains(j))
                    .expect("an idle pod");
                mark(&pods, &p.name_any(), true).await;
                protected.lock().unwrap().insert(job);
                wait_for(Duration::from_secs(60), "one more running pod", || async {
                    running_pods(&pods, "shrink").await.len() == n + 1
                })
                .await;
            }
            // The two oldest busy ones are freed and the youngest (idle) one turns busy:
            // 2 busy + idleTarget 1 = 3 of 4; after the delay one idle Job goes, never a busy one.
            let running = running_pods(&pods, "shrink").await;
            let busy: Vec<&(String, Pod)> = running
                .iter()
                .filter(|(j, _)| protected.lock().unwrap().contains(j))
                .collect();
            for (job, p) in busy.iter().take(2) {
                protected.lock().unwrap().remove(job);
                mark(&pods, &p.name_any(), false).await;
            }
            let (job, p) = running
                .iter()
                .rev()
                .find(|(j, _)| {
                    !protected.lock().unwrap().contains(j)
                        && !busy.iter().take(2).any(|(b, _)| b == j)
                })
                .expect("the youngest idle pod");
            mark(&pods, &p.name_any(), true).await;
            protected.lock().unwrap().insert(job.clone());
            wait_for(
                Duration::from_secs(30),
                "3 active Jobs after the delay",
                || async { active_jobs(&jobs, "shrink").await.len() == 3 },
            )
            .await;
            // Everyone busy is freed: back to one idle Job.
            let all: Vec<String> = protected.lock().unwrap().drain().collect();
            for (j, p) in running_pods(&pods, "shrink").await {
                if all.contains(&j) {
                    mark(&pods, &p.name_any(), false).await;
                }
            }
            wait_for(Duration::from_secs(30), "1 active Job", || async {
                active_jobs(&jobs, "shrink").await.len() == 1
            })
            .await;
            wait_for(Duration::from_secs(30), "1 running pod", || async {
                running_pods(&pods, "shrink").await.len() == 1
            })
            .await;
            assert!(
                !watch.is_finished(),
                "round {round}: the guard saw a busy Job deleted"
            );
            eprintln!("round {round}: only idle Jobs were removed");
        }
        let w = watch;
        w.abort();
        if let Err(e) = w.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        op.abort();
    })
    .await;
}
