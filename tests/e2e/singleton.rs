//! StatefulSingleton against a real cluster. The operator (webhook + controllers + release
//! service) runs in this process and must be reachable from the cluster's API server and
//! pods at `KUBE_STANDBY_E2E_HOST` (an IP or DNS name of this machine); the injected agent
//! runs from `KUBE_STANDBY_E2E_AGENT_IMAGE` (build it with the repository's Dockerfile).
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use kube_standby::api::singleton::RELEASED_ANNOTATION;
use kube_standby::api::StatefulSingleton;
use kube_standby::metrics::Metrics;
use kube_standby::state::{DebugState, Readiness};
use kube_standby::webhook::release::{KubeTokenReviewer, ReleaseService};
use kube_standby::webhook::{router, Injection, WebhookState};
use kube_standby::{certs, controller, tls, webhook_config};
use serde_json::json;

use crate::util::{self, wait_for, PAUSE};

struct Env {
    host: String,
    agent_image: String,
}

fn env(test: &str) -> Option<Env> {
    if !util::enabled(test) {
        return None;
    }
    match (std::env::var("KUBE_STANDBY_E2E_HOST"), std::env::var("KUBE_STANDBY_E2E_AGENT_IMAGE")) {
        (Ok(host), Ok(agent_image)) => Some(Env { host, agent_image }),
        _ => panic!("{test}: set KUBE_STANDBY_E2E_HOST (this machine, reachable from the cluster) and KUBE_STANDBY_E2E_AGENT_IMAGE"),
    }
}

/// Start the operator in-process and register its webhook for namespace `ns` only.
async fn start_operator(
    client: Client,
    env: &Env,
    ns: &str,
) -> (tokio::task::JoinHandle<()>, String) {
    let bundle = certs::generate(&[env.host.clone(), "localhost".into()]).expect("certs");
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let url = format!("https://{}:{port}", env.host);
    let metrics = Arc::new(Metrics::new());
    let (stores, ready) = controller::singleton::start(
        client.clone(),
        metrics.clone(),
        DebugState::default(),
        controller::shell::always_leading(),
    )
    .await;
    ready.await;
    let readiness = Readiness::without_caches();
    readiness.set_certs_loaded();
    let state = WebhookState {
        objects: Arc::new(stores.clone()),
        injection: Arc::new(Injection {
            agent_image: env.agent_image.clone(),
            operator_url: url.clone(),
            ca_bundle: bundle.ca_pem.clone(),
        }),
        metrics,
        readiness,
        debug: DebugState::default(),
        release: Some(Arc::new(ReleaseService::new(
            Arc::new(KubeTokenReviewer {
                client: client.clone(),
            }),
            Arc::new(stores),
        ))),
    };
    let resolver = tls::CertResolver::new(
        tls::certified_key_from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes())
            .expect("key"),
    );
    let server = tokio::spawn(tls::serve(
        listener,
        tls::server_config(resolver).expect("tls"),
        router(state),
        std::future::pending(),
    ));
    // Register the webhook for this test namespace only.
    let name = format!("kube-standby-e2e-{ns}");
    let mut mwc = webhook_config::build(
        &name,
        &webhook_config::Target::Url(format!("{url}/mutate/pods")),
        &bundle.ca_pem,
        "kube-standby",
    );
    if let Some(wh) = mwc.webhooks.as_mut().and_then(|w| w.first_mut()) {
        wh.namespace_selector = Some(
            serde_json::from_value(json!({"matchLabels": {"kubernetes.io/metadata.name": ns}}))
                .expect("selector"),
        );
        wh.failure_policy = Some("Fail".into());
    }
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&mwc),
    )
    .await
    .expect("register webhook");
    tokio::time::sleep(Duration::from_secs(2)).await; // let the API server pick the configuration up
    (server, name)
}

async fn unregister(client: &Client, name: &str) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

fn singleton(ns: &str) -> StatefulSingleton {
    serde_json::from_value(json!({
        "apiVersion": "apps.statefulsingleton.com/v1", "kind": "StatefulSingleton",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "db"}}, "terminationGracePeriod": 5, "maxTransitionTime": 120}
    }))
    .expect("singleton")
}

/// Records every moment when two pods that may run the app coexist, and the handover gaps.
#[derive(Default)]
struct Watchdog {
    overlaps: Vec<String>,
    /// (old pod gone at, successor released at) pairs, measured on this machine.
    gone_at: Option<Instant>,
    gaps: Vec<Duration>,
}

fn instance(p: &Pod) -> bool {
    p.annotations().contains_key(RELEASED_ANNOTATION)
        || !p
            .annotations()
            .contains_key("apps.statefulsingleton.com/gate")
}

fn spawn_watchdog(client: Client, ns: String) -> Arc<Mutex<Watchdog>> {
    let dog = Arc::new(Mutex::new(Watchdog::default()));
    let d = dog.clone();
    tokio::spawn(async move {
        let api: Api<Pod> = Api::namespaced(client, &ns);
        let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
        let mut stream = watcher(api, watcher::Config::default().labels("app=db"))
            .default_backoff()
            .boxed();
        while let Some(Ok(ev)) = stream.next().await {
            let before = pods.values().filter(|p| instance(p)).count();
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    pods.insert(p.uid().unwrap_or_default(), p);
                }
                watcher::Event::Delete(p) => {
                    pods.remove(&p.uid().unwrap_or_default());
                }
                _ => continue,
            }
            let now = pods.values().filter(|p| instance(p)).count();
            let mut g = d.lock().expect("lock");
            if now > 1 {
                g.overlaps.push(
                    pods.values()
                        .filter(|p| instance(p))
                        .map(|p| p.name_any())
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
            if before >= 1 && now == 0 {
                g.gone_at = Some(Instant::now());
            }
            if before == 0 && now == 1 {
                if let Some(t) = g.gone_at.take() {
                    let gap = t.elapsed();
                    g.gaps.push(gap);
                }
            }
        }
    });
    dog
}

async fn active_released_pod(pods: &Api<Pod>) -> Option<String> {
    pods.list(&ListParams::default().labels("app=db"))
        .await
        .ok()?
        .items
        .into_iter()
        .find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.annotations().contains_key(RELEASED_ANNOTATION)
        })
        .map(|p| p.name_any())
}

fn report(dog: &Arc<Mutex<Watchdog>>) {
    let g = dog.lock().expect("lock");
    assert!(
        g.overlaps.is_empty(),
        "two instances coexisted: {:?}",
        g.overlaps
    );
    let mut gaps = g.gaps.clone();
    gaps.sort();
    if !gaps.is_empty() {
        eprintln!("handover gaps (old pod gone -> successor released, seen by a watch): p50={:?} all={:?}", gaps[gaps.len() / 2], gaps);
    }
}

#[tokio::test]
async fn deployment_rollout_and_pod_delete_never_run_two_copies() {
    let Some(env) = env("deployment_rollout_and_pod_delete_never_run_two_copies") else {
        return;
    };
    util::in_namespace("ks-e2e-ss", move |client, ns| async move {
        let (server, mwc) = start_operator(client.clone(), &env, &ns).await;
        let dog = spawn_watchdog(client.clone(), ns.clone());
        Api::<StatefulSingleton>::namespaced(client.clone(), &ns).create(&PostParams::default(), &singleton(&ns)).await.expect("singleton");
        // A default Deployment: RollingUpdate with 25% surge, pause has no command (init gate).
        let dep: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "db", "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"terminationGracePeriodSeconds": 2, "containers": [{"name": "db", "image": PAUSE}]}}}
        }))
        .expect("deployment");
        let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        deps.create(&PostParams::default(), &dep).await.expect("create deployment");
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        wait_for(Duration::from_secs(120), "first pod released and Ready", || async {
            pods.list(&ListParams::default().labels("app=db")).await.map(|l| l.items.iter().any(|p| {
                p.annotations().contains_key(RELEASED_ANNOTATION)
                    && p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })).unwrap_or(false)
        })
        .await;
        let first = active_released_pod(&pods).await.expect("active pod");

        // Rollout: change the template. No manual step may be needed.
        deps.patch("db", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}))).await.expect("rollout");
        wait_for(Duration::from_secs(180), "rollout handed over to a new pod", || async {
            active_released_pod(&pods).await.is_some_and(|p| p != first)
        })
        .await;

        // Delete the active pod: the ReplicaSet's replacement starts only after it is gone.
        let second = active_released_pod(&pods).await.expect("active");
        pods.delete(&second, &DeleteParams::default()).await.expect("delete pod");
        wait_for(Duration::from_secs(120), "replacement released", || async {
            active_released_pod(&pods).await.is_some_and(|p| p != second)
        })
        .await;
        let s = Api::<StatefulSingleton>::namespaced(client.clone(), &ns).get("db").await.expect("singleton");
        assert_eq!(s.status.and_then(|s| s.active_pod), active_released_pod(&pods).await);
        report(&dog);
        unregister(&client, &mwc).await;
        server.abort();
    })
    .await;
}

#[tokio::test]
async fn one_replica_statefulset_hands_over_with_the_wrapper_gate() {
    let Some(env) = env("one_replica_statefulset_hands_over_with_the_wrapper_gate") else {
        return;
    };
    util::in_namespace("ks-e2e-ss-sts", move |client, ns| async move {
        let (server, mwc) = start_operator(client.clone(), &env, &ns).await;
        let dog = spawn_watchdog(client.clone(), ns.clone());
        Api::<StatefulSingleton>::namespaced(client.clone(), &ns).create(&PostParams::default(), &singleton(&ns)).await.expect("singleton");
        // busybox with an explicit command: the wrapper gate.
        let sts: StatefulSet = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": ns},
            "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"terminationGracePeriodSeconds": 2,
                        "containers": [{"name": "db", "image": "busybox:1.36", "command": ["sh", "-c", "echo started with \"$0\"; exec sleep 3600", "a b"]}]}}}
        }))
        .expect("sts");
        Api::<StatefulSet>::namespaced(client.clone(), &ns).create(&PostParams::default(), &sts).await.expect("create sts");
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        wait_for(Duration::from_secs(120), "db-0 released", || async { active_released_pod(&pods).await.as_deref() == Some("db-0") }).await;
        let uid = pods.get("db-0").await.expect("pod").uid();
        pods.delete("db-0", &DeleteParams::default()).await.expect("delete");
        wait_for(Duration::from_secs(120), "db-0 recreated and released", || async {
            pods.get("db-0").await.ok().is_some_and(|p| p.uid() != uid && p.annotations().contains_key(RELEASED_ANNOTATION))
        })
        .await;
        report(&dog);
        unregister(&client, &mwc).await;
        server.abort();
    })
    .await;
}
