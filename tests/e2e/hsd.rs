//! HotStandbyDeployment against a real cluster, with the reconciler running in this process.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use kube_standby::api::HotStandbyDeployment;
use kube_standby::metrics::Metrics;
use kube_standby::state::DebugState;
use serde_json::json;

use crate::util::{self, wait_for, PAUSE};

fn start_operator(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(kube_standby::controller::hsd::run(
        client,
        Arc::new(Metrics::new()),
        DebugState::default(),
        kube_standby::controller::shell::always_leading(),
        None,
        || {},
    ))
}

async fn replicas(deps: &Api<Deployment>, name: &str) -> Option<i32> {
    deps.get(name).await.ok().and_then(|d| d.spec.replicas)
}

async fn running_pods(pods: &Api<Pod>, hsd: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("hsd.paia.tech/name={hsd}"));
    let mut v: Vec<Pod> = pods
        .list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect();
    v.sort_by_key(|p| p.metadata.creation_timestamp.clone());
    v
}

async fn mark(pods: &Api<Pod>, name: &str, busy: bool) {
    let patch = json!({"metadata": {"annotations": {"paia.tech/busy": if busy { "true" } else { "false" }}}});
    pods.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("annotate pod");
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn seed_example_applies_unchanged_and_gets_its_child() {
    if !util::enabled("seed_example_applies_unchanged_and_gets_its_child") {
        return;
    }
    util::in_namespace("ks-e2e-hsd-seed", |client, ns| async move {
        let op = start_operator(client.clone());
        // The seed example, unchanged apart from the namespace it lands in.
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/hsd-annotation.yaml"
        ))
        .unwrap();
        let mut obj: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        obj["metadata"]["namespace"] = ns.clone().into();
        let api: Api<HotStandbyDeployment> = Api::namespaced(client.clone(), &ns);
        let hsd: HotStandbyDeployment = serde_json::from_value(obj).unwrap();
        api.patch("game-ws", &PatchParams::apply("e2e"), &Patch::Apply(&hsd))
            .await
            .expect("the API server accepts the seed example");
        let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        wait_for(
            Duration::from_secs(30),
            "child Deployment with 3 replicas",
            || async { replicas(&deps, "game-ws-workload").await == Some(3) },
        )
        .await;
        let d = deps.get("game-ws-workload").await.unwrap();
        assert_eq!(d.owner_references()[0].kind, "HotStandbyDeployment");
        wait_for(
            Duration::from_secs(30),
            "status.desiredReplicas = 3",
            || async {
                api.get("game-ws")
                    .await
                    .ok()
                    .and_then(|h| h.status)
                    .is_some_and(|s| s.desired_replicas == 3)
            },
        )
        .await;
        op.abort();
    })
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn replicas_follow_busy_pods_and_busy_young_pods_survive_scale_down() {
    if !util::enabled("replicas_follow_busy_pods_and_busy_young_pods_survive_scale_down") {
        return;
    }
    util::in_namespace("ks-e2e-hsd", |client, ns| async move {
        let op = start_operator(client.clone());
        let api: Api<HotStandbyDeployment> = Api::namespaced(client.clone(), &ns);
        let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let hsd = |idle: i32| {
            serde_json::from_value::<HotStandbyDeployment>(json!({
                "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
                "metadata": {"name": "warm", "namespace": ns},
                "spec": {"idleTarget": idle, "maxReplicas": 10, "scaleDownDelaySeconds": 2,
                         "selector": {"matchLabels": {"app": "warm"}},
                         "podTemplate": {"metadata": {"labels": {"app": "warm"}},
                                         "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app", "image": PAUSE}]}}}
            }))
            .unwrap()
        };
        let ssa = PatchParams::apply("e2e").force();
        api.patch("warm", &ssa, &Patch::Apply(&hsd(2))).await.unwrap();
        wait_for(Duration::from_secs(120), "2 running pods", || async { running_pods(&pods, "warm").await.len() == 2 }).await;

        // A and B (the old ones) become busy: desired 4, the reaction is fast.
        let old = running_pods(&pods, "warm").await;
        for p in &old {
            mark(&pods, &p.name_any(), true).await;
        }
        let took = wait_for(Duration::from_secs(10), "replicas 4", || async { replicas(&deps, "warm-workload").await == Some(4) }).await;
        eprintln!("busy flip -> replicas 4 observed after {took:?} (includes 200 ms polling)");
        wait_for(Duration::from_secs(120), "4 running pods", || async { running_pods(&pods, "warm").await.len() == 4 }).await;

        // Now the young pods are busy and the old ones idle; then ask for no idle pods.
        let all = running_pods(&pods, "warm").await;
        let young: Vec<String> = all.iter().filter(|p| !old.iter().any(|o| o.uid() == p.uid())).map(|p| p.name_any()).collect();
        assert_eq!(young.len(), 2);
        for y in &young {
            mark(&pods, y, true).await;
        }
        for o in &old {
            mark(&pods, &o.name_any(), false).await;
        }
        api.patch("warm", &ssa, &Patch::Apply(&hsd(0))).await.unwrap();
        wait_for(Duration::from_secs(30), "replicas 2", || async { replicas(&deps, "warm-workload").await == Some(2) }).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let left: Vec<String> = running_pods(&pods, "warm").await.iter().map(|p| p.name_any()).collect();
        for y in &young {
            assert!(left.contains(y), "busy young pod {y} was killed; left: {left:?}");
        }
        for o in &old {
            assert!(!left.contains(&o.name_any()), "idle pod {} should have been the victim", o.name_any());
        }
        let st = api.get("warm").await.unwrap().status.unwrap();
        assert_eq!((st.busy_count, st.desired_replicas), (2, 2));
        op.abort();
    })
    .await;
}
