//! The busy guard against a real kube-apiserver and kube-controller-manager (run with
//! `--use-service-account-credentials`). The operator runs in this process and is
//! registered as a validating webhook at `KUBE_STANDBY_E2E_HOST` (an address of this
//! machine the API server reaches), for the test's namespace only.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kube_standby::runtime::{self, RunConfig};
use kube_standby::server::{ServerConfig, TlsMode};
use kube_standby::tls::ca_secret;
use kube_standby::webhook::guard::GuardSettings;
use kube_standby::webhook_config;
use serde_json::json;

use crate::util::{self, wait_for, PAUSE};

const CA_SECRET: &str = "kube-standby-ca";
const BUSY: &str = "paia.tech/busy";

fn host() -> String {
    std::env::var("KUBE_STANDBY_E2E_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}

/// `kube-standby run` in this process for namespace `ns`, with these guard settings; returns
/// the task and the base URL the API server reaches it at.
async fn start_operator(
    client: Client,
    ns: &str,
    guard: GuardSettings,
) -> (tokio::task::JoinHandle<kube_standby::Result<()>>, String) {
    let port = {
        let l = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let host = host();
    let url = format!("https://{host}:{port}");
    let cfg = RunConfig {
        server: ServerConfig {
            bind: format!("0.0.0.0:{port}").parse().expect("bind addr"),
            metrics_bind: "127.0.0.1:0".parse().expect("metrics addr"),
            tls: TlsMode::SelfSigned {
                sans: vec![host.clone(), "localhost".into()],
                ca: None,
                validity: Default::default(),
            },
            ca_file: None,
            ca_pem: None,
            agent_image: PAUSE.into(),
            operator_url: url.clone(),
            conn_limits: Default::default(),
            admission_limits: Default::default(),
            busy_guard: guard,
            held: Default::default(),
        },
        webhook_config_name: None,
        ca_secret: Some(CA_SECRET.into()),
        ca_secret_namespace: ns.into(),
        leader: None,
        namespaces: vec![ns.into()],
        actor: Default::default(),
    };
    let task = tokio::spawn(runtime::run(cfg, client, std::future::pending()));
    let addr = format!("127.0.0.1:{port}");
    wait_for(Duration::from_secs(30), "operator listening", || {
        let addr = addr.clone();
        async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
    })
    .await;
    (task, url)
}

/// Register `url` as the busy guard for namespace `ns` only (failing closed, so a test
/// never passes because the webhook was not called).
async fn register(client: &Client, ns: &str, url: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let ca = ca_secret::from_secret(&secrets.get(CA_SECRET).await.expect("CA Secret"))
        .expect("CA in the Secret")
        .cert_pem;
    let name = format!("kube-standby-guard-e2e-{ns}");
    let mut vwc = webhook_config::build_guard(
        &name,
        &webhook_config::Target::Url(format!("{url}/validate/pods")),
        &ca,
        "kube-standby",
        webhook_config::DEFAULT_GUARD_TIMEOUT_SECONDS,
    )
    .expect("guard configuration");
    if let Some(wh) = vwc.webhooks.as_mut().and_then(|w| w.first_mut()) {
        wh.namespace_selector = Some(
            serde_json::from_value(json!({"matchLabels": {"kubernetes.io/metadata.name": ns}}))
                .expect("selector"),
        );
        wh.failure_policy = Some("Fail".into());
    }
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&vwc),
    )
    .await
    .expect("register the guard");
    tokio::time::sleep(Duration::from_secs(2)).await; // let the API server pick it up
    name
}

async fn unregister(client: &Client, name: &str) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// A plain Deployment opted into the guard by label.
async fn deployment(client: &Client, ns: &str, name: &str, replicas: i32) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "kube-standby.dev/busy-guard": "true"}},
                "spec": {"terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "app", "image": PAUSE}]}
            }
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
}

async fn scale(client: &Client, ns: &str, name: &str, replicas: i32) {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .expect("scale");
}

/// Running pods of `app` not being deleted, by name.
async fn live_pods(api: &Api<Pod>, app: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

async fn wait_running(api: &Api<Pod>, app: &str, n: usize) -> Vec<String> {
    wait_for(
        Duration::from_secs(120),
        &format!("{n} running pods of {app}"),
        || async move {
            let pods = live_pods(api, app).await;
            pods.len() == n
                && pods
                    .iter()
                    .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        },
    )
    .await;
    live_pods(api, app)
        .await
        .iter()
        .map(|p| p.name_any())
        .collect()
}

async fn set_busy(api: &Api<Pod>, name: &str, busy: bool) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {BUSY: busy.to_string()}}})),
    )
    .await
    .expect("annotate");
}

/// Samples the pods every 20 ms: a pod in `busy` that disappears or gets a deletion
/// timestamp is a violation.
#[derive(Default)]
struct Watchdog {
    busy: BTreeSet<String>,
    violations: Vec<String>,
    samples: u64,
}

fn spawn_watchdog(api: Api<Pod>, app: String) -> Arc<Mutex<Watchdog>> {
    let dog = Arc::new(Mutex::new(Watchdog::default()));
    let d = dog.clone();
    tokio::spawn(async move {
        loop {
            if let Ok(list) = api
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
            {
                let present: BTreeMap<String, bool> = list
                    .items
                    .iter()
                    .map(|p| (p.name_any(), p.metadata.deletion_timestamp.is_some()))
                    .collect();
                let mut g = d.lock().expect("lock");
                g.samples += 1;
                let gone: Vec<String> = g
                    .busy
                    .iter()
                    .filter(|b| present.get(*b).is_none_or(|deleting| *deleting))
                    .cloned()
                    .collect();
                for b in gone {
                    g.violations
                        .push(format!("busy pod {b} deleted while busy"));
                    g.busy.remove(&b);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            // The test dropped its handle: the phase it watched is over.
            if Arc::strong_count(&d) == 1 {
                break;
            }
        }
    });
    dog
}

/// Free `name` and measure how long until it is being deleted (or gone).
async fn free_and_time(api: &Api<Pod>, dog: &Arc<Mutex<Watchdog>>, name: &str) -> Duration {
    dog.lock().expect("lock").busy.remove(name);
    let t = Instant::now();
    set_busy(api, name, false).await;
    loop {
        let deleting = match api.get_opt(name).await {
            Ok(None) => true,
            Ok(Some(p)) => p.metadata.deletion_timestamp.is_some(),
            Err(_) => false,
        };
        if deleting {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{name} not deleted 30 s after it turned idle"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn scale_down_never_deletes_a_busy_pod_and_idle_ones_go_at_once() {
    if !util::enabled("scale_down_never_deletes_a_busy_pod_and_idle_ones_go_at_once") {
        return;
    }
    util::in_namespace("guard-scale", |client, ns| async move {
        let rounds: usize = std::env::var("KUBE_STANDBY_E2E_GUARD_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        let (op, url) = start_operator(client.clone(), &ns, GuardSettings::default()).await;
        let hook = register(&client, &ns, &url).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        deployment(&client, &ns, "web", 6).await;
        let dog = spawn_watchdog(pods.clone(), "web".into());
        let mut delays = vec![];
        for round in 0..rounds {
            // 6 pods, 4 busy (the 2 left from the last round stay busy).
            scale(&client, &ns, "web", 6).await;
            let names = wait_running(&pods, "web", 6).await;
            let already: BTreeSet<String> = dog.lock().expect("lock").busy.clone();
            let mut busy: Vec<String> = names
                .iter()
                .filter(|n| already.contains(*n))
                .cloned()
                .collect();
            for n in names.iter().filter(|n| !already.contains(*n)) {
                if busy.len() == 4 {
                    break;
                }
                set_busy(&pods, n, true).await;
                dog.lock().expect("lock").busy.insert(n.clone());
                busy.push(n.clone());
            }
            let idle: Vec<String> = names
                .iter()
                .filter(|n| !busy.contains(n))
                .cloned()
                .collect();
            // `kubectl scale --replicas=2`, as KEDA or an HPA would.
            scale(&client, &ns, "web", 2).await;
            // The idle ones go.
            wait_for(Duration::from_secs(30), "the idle pods deleted", || {
                let pods = pods.clone();
                let idle = idle.clone();
                async move {
                    let live: Vec<String> = live_pods(&pods, "web")
                        .await
                        .iter()
                        .map(|p| p.name_any())
                        .collect();
                    idle.iter().all(|i| !live.contains(i))
                }
            })
            .await;
            // The busy ones stay while busy (the ReplicaSet keeps trying).
            tokio::time::sleep(Duration::from_secs(3)).await;
            let live = live_pods(&pods, "web").await;
            assert_eq!(live.len(), 4, "round {round}: the 4 busy pods stay");
            // Freeing a busy pod lets it go within 2 s, until the count is reached.
            for name in busy.iter().take(2) {
                let d = free_and_time(&pods, &dog, name).await;
                println!(
                    "round {round}: {name} idle -> deleting in {} ms",
                    d.as_millis()
                );
                delays.push(d);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(live_pods(&pods, "web").await.len(), 2, "round {round}");
        }
        {
            let g = dog.lock().expect("lock");
            assert!(g.violations.is_empty(), "{:?}", g.violations);
            assert!(
                g.samples > 100,
                "the watchdog sampled ({} samples)",
                g.samples
            );
        }
        delays.sort();
        let p = |q: f64| delays[((delays.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "busy guard: idle -> deleted over {} pods: p50 {} ms, p99 {} ms, max {} ms",
            delays.len(),
            p(0.5).as_millis(),
            p(0.99).as_millis(),
            p(1.0).as_millis()
        );
        assert!(p(0.99) <= Duration::from_secs(2), "p99 {:?} > 2 s", p(0.99));

        // Deleting the namespace still deletes everything, busy pods included.
        let busy_left = live_pods(&pods, "web").await;
        assert!(busy_left
            .iter()
            .all(|p| p.annotations().get(BUSY).map(String::as_str) == Some("true")));
        dog.lock().expect("lock").busy.clear();
        drop(dog); // the sampler stops: its phase is over
        Api::<Namespace>::all(client.clone())
            .delete(&ns, &DeleteParams::background())
            .await
            .expect("delete namespace");
        wait_for(
            Duration::from_secs(120),
            "every pod of the namespace gone",
            || {
                let pods = pods.clone();
                async move {
                    pods.list(&ListParams::default())
                        .await
                        .map(|l| l.items.is_empty())
                        .unwrap_or(true)
                }
            },
        )
        .await;
        unregister(&client, &hook).await;
        op.abort();
    })
    .await;
}

/// The HTTP code of a failed eviction.
fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn eviction_of_a_busy_pod_waits_until_idle_or_the_max_hold() {
    if !util::enabled("eviction_of_a_busy_pod_waits_until_idle_or_the_max_hold") {
        return;
    }
    util::in_namespace("guard-evict", |client, ns| async move {
        let hold = Duration::from_secs(8);
        let settings = GuardSettings {
            max_hold: hold,
            ..GuardSettings::default()
        };
        let (op, url) = start_operator(client.clone(), &ns, settings).await;
        let hook = register(&client, &ns, &url).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        deployment(&client, &ns, "work", 3).await;
        let names = wait_running(&pods, "work", 3).await;
        let (busy, idle, late) = (&names[0], &names[1], &names[2]);
        set_busy(&pods, busy, true).await;
        set_busy(&pods, late, true).await;
        // The guard's cache sees the annotations (no API call on the eviction path).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let refused = pods
            .evict(busy, &EvictParams::default())
            .await
            .expect_err("busy pod evicted");
        assert_eq!(code(&refused), Some(429), "{refused}");
        assert!(refused.to_string().contains("busy"), "{refused}");
        pods.evict(idle, &EvictParams::default())
            .await
            .expect("idle pod evicted");
        // Freed: the next eviction (as drain retries) passes.
        set_busy(&pods, busy, false).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        pods.evict(busy, &EvictParams::default())
            .await
            .expect("freed pod evicted");
        // Past the max hold a busy pod's eviction passes.
        let started = Instant::now();
        let first = pods
            .evict(late, &EvictParams::default())
            .await
            .expect_err("held");
        assert_eq!(code(&first), Some(429));
        loop {
            match pods.evict(late, &EvictParams::default()).await {
                Ok(_) => break,
                Err(e) => {
                    assert_eq!(code(&e), Some(429), "{e}");
                    assert!(
                        started.elapsed() < hold + Duration::from_secs(10),
                        "still held after {:?}",
                        started.elapsed()
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let held = started.elapsed();
        println!(
            "busy pod evicted after a hold of {} ms (max hold {} s)",
            held.as_millis(),
            hold.as_secs()
        );
        assert!(held >= hold - Duration::from_secs(1), "{held:?}");
        unregister(&client, &hook).await;
        op.abort();
    })
    .await;
}

/// Every live pod of `app` carries the guard label (our templates put it there).
async fn assert_guarded(api: &Api<Pod>, app: &str) {
    for p in live_pods(api, app).await {
        assert_eq!(
            p.labels()
                .get("kube-standby.dev/busy-guard")
                .map(String::as_str),
            Some("true"),
            "pod {} of {app} is not guarded",
            p.name_any()
        );
    }
}

/// Mark the first `n` of `names` busy; returns them.
async fn mark_busy(api: &Api<Pod>, names: &[String], n: usize) -> Vec<String> {
    let busy: Vec<String> = names.iter().take(n).cloned().collect();
    for b in &busy {
        set_busy(api, b, true).await;
    }
    busy
}

/// Wait until `pods` of `app` are all live, sampling every 20 ms, for `hold`; panics if any
/// is deleted (or starts terminating) meanwhile.
async fn assert_stay(api: &Api<Pod>, app: &str, pods: &[String], hold: Duration) {
    let until = Instant::now() + hold;
    while Instant::now() < until {
        let live: Vec<String> = live_pods(api, app)
            .await
            .iter()
            .map(|p| p.name_any())
            .collect();
        for p in pods {
            assert!(live.contains(p), "busy pod {p} deleted while busy");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hsd_object(ns: &str, name: &str, min: i32) -> serde_json::Value {
    json!({
        "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "idleTarget": 1, "minReplicas": min, "maxReplicas": 8,
            "selector": {"matchLabels": {"app": name}},
            "busyProbe": {"mode": "annotation", "annotationKey": BUSY},
            "podTemplate": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "app", "image": PAUSE}]}
            }
        }
    })
}

async fn create_hsd(client: &Client, ns: &str, v: serde_json::Value) {
    let api: Api<kube_standby::api::HotStandbyDeployment> = Api::namespaced(client.clone(), ns);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(v).expect("HSD"),
    )
    .await
    .expect("create HSD");
}

/// Issue 18: an HSD template rollout (another actor changes the child's template) while the
/// operator's controllers are stopped but its webhook serves: no busy pod is deleted; the
/// idle ones are replaced; a freed one goes.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn a_rollout_with_only_the_webhook_serving_keeps_busy_hsd_pods() {
    if !util::enabled("a_rollout_with_only_the_webhook_serving_keeps_busy_hsd_pods") {
        return;
    }
    util::in_namespace("guard-rollout", |client, ns| async move {
        let (op, url) = start_operator(client.clone(), &ns, GuardSettings::default()).await;
        let hook = register(&client, &ns, &url).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        create_hsd(&client, &ns, hsd_object(&ns, "pool", 4)).await;
        let names = wait_running(&pods, "pool", 4).await;
        assert_guarded(&pods, "pool").await;
        let busy = mark_busy(&pods, &names, 2).await;
        // Stop the controllers; serve the webhook alone on the same address, with the CA
        // the guard was registered with.
        op.abort();
        let _ = op.await;
        let port: u16 = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let ca = ca_secret::from_secret(&secrets.get(CA_SECRET).await.expect("CA Secret"))
            .expect("CA pair");
        let cfg = ServerConfig {
            bind: format!("0.0.0.0:{port}").parse().expect("bind addr"),
            metrics_bind: "127.0.0.1:0".parse().expect("metrics addr"),
            tls: TlsMode::SelfSigned {
                sans: vec![host(), "localhost".into()],
                ca: Some(ca),
                validity: Default::default(),
            },
            ca_file: None,
            ca_pem: None,
            agent_image: PAUSE.into(),
            operator_url: url.clone(),
            conn_limits: Default::default(),
            admission_limits: Default::default(),
            busy_guard: GuardSettings::default(),
            held: Default::default(),
        };
        let objects = Arc::new(kube_standby::webhook::StaticObjects::default());
        let webhook = tokio::spawn(async move {
            // The port is free again once the aborted operator's listener is dropped.
            for _ in 0..50 {
                match kube_standby::server::run_webhook(cfg.clone(), objects.clone()).await {
                    Err(e) if e.to_string().contains("in use") => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    other => return other,
                }
            }
            Ok(())
        });
        let addr = format!("127.0.0.1:{port}");
        wait_for(Duration::from_secs(30), "webhook-only listening", || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
        })
        .await;
        // Another actor rolls the child's template.
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .patch(
                "pool-workload",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"template": {"metadata": {"annotations": {"rolled": "1"}}}}}),
                ),
            )
            .await
            .expect("roll the child's template");
        assert_stay(&pods, "pool", &busy, Duration::from_secs(15)).await;
        // The idle pods of the old revision were replaced.
        let idle_old: Vec<&String> = names.iter().filter(|n| !busy.contains(n)).collect();
        let live: Vec<String> = live_pods(&pods, "pool")
            .await
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert!(
            idle_old.iter().all(|n| !live.contains(n)),
            "idle old pods replaced: live {live:?}"
        );
        // Freed, a busy pod goes.
        set_busy(&pods, &busy[0], false).await;
        let t = Instant::now();
        wait_for(Duration::from_secs(30), "the freed pod deleted", || {
            let pods = pods.clone();
            let name = busy[0].clone();
            async move {
                !live_pods(&pods, "pool")
                    .await
                    .iter()
                    .any(|p| p.name_any() == name)
            }
        })
        .await;
        println!(
            "rollout, webhook only: freed pod deleted {} ms after it turned idle",
            t.elapsed().as_millis()
        );
        assert_stay(&pods, "pool", &busy[1..], Duration::from_secs(2)).await;
        unregister(&client, &hook).await;
        webhook.abort();
    })
    .await;
}

/// Issue 18: a refused eviction shows on the HSD: `status.heldPods` names the pod and one
/// `DeletionHeld` Event says so; once the pod may go, the list empties.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn a_held_hsd_pod_shows_in_status_and_one_event() {
    if !util::enabled("a_held_hsd_pod_shows_in_status_and_one_event") {
        return;
    }
    util::in_namespace("guard-status", |client, ns| async move {
        let (op, url) = start_operator(client.clone(), &ns, GuardSettings::default()).await;
        let hook = register(&client, &ns, &url).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        create_hsd(&client, &ns, hsd_object(&ns, "held", 2)).await;
        let names = wait_running(&pods, "held", 2).await;
        let busy = names[0].clone();
        set_busy(&pods, &busy, true).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..3 {
            let e = pods
                .evict(&busy, &EvictParams::default())
                .await
                .expect_err("busy pod evicted");
            assert_eq!(code(&e), Some(429), "{e}");
        }
        let hsds: Api<kube_standby::api::HotStandbyDeployment> =
            Api::namespaced(client.clone(), &ns);
        let held_now = |want: Vec<String>| {
            let hsds = hsds.clone();
            move || {
                let (hsds, want) = (hsds.clone(), want.clone());
                async move {
                    hsds.get("held")
                        .await
                        .ok()
                        .and_then(|h| h.status)
                        .is_some_and(|s| s.held_pods == want)
                }
            }
        };
        wait_for(
            Duration::from_secs(10),
            "status.heldPods names the pod",
            held_now(vec![busy.clone()]),
        )
        .await;
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
        let held_events = || async {
            events
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|e| e.reason.as_deref() == Some("DeletionHeld"))
                        .filter(|e| e.involved_object.name.as_deref() == Some("held"))
                        .map(|e| e.count.unwrap_or(1))
                        .sum::<i32>()
                })
                .unwrap_or(0)
        };
        wait_for(Duration::from_secs(10), "a DeletionHeld Event", || async {
            held_events().await >= 1
        })
        .await;
        assert_eq!(held_events().await, 1, "one Event per pod per hold");
        // Freed: the eviction passes and the list empties.
        set_busy(&pods, &busy, false).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        pods.evict(&busy, &EvictParams::default())
            .await
            .expect("freed pod evicted");
        wait_for(
            Duration::from_secs(10),
            "status.heldPods empty",
            held_now(vec![]),
        )
        .await;
        unregister(&client, &hook).await;
        op.abort();
    })
    .await;
}

/// Issue 18: an AsyncActor with `scaling.busyProbe` whose Deployment is scaled down by
/// hand (as KEDA or an HPA would): no busy pod is deleted while busy; the idle ones go.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn a_hand_scaled_asyncactor_keeps_its_busy_pods() {
    if !util::enabled("a_hand_scaled_asyncactor_keeps_its_busy_pods") {
        return;
    }
    let _keda = crate::actor::KEDA.lock().await;
    util::in_namespace("guard-actor", |client, ns| async move {
        crate::actor::install_keda(&client).await;
        let (op, url) = start_operator(client.clone(), &ns, GuardSettings::default()).await;
        let hook = register(&client, &ns, &url).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let actor = crate::actor::small_actor(
            &ns,
            "worker",
            json!({"spec": {
                "scaling": {"enabled": true, "minReplicas": 1, "maxReplicas": 10,
                            "busyProbe": {"mode": "annotation", "annotationKey": BUSY}},
                "workload": {"replicas": 5, "template": {"metadata": {"labels": {"app": "worker"}},
                             "spec": {"terminationGracePeriodSeconds": 0,
                                      "containers": [{"name": "runtime", "image": PAUSE}]}}}
            }}),
        );
        let actors: Api<kube_standby::api::asya::AsyncActor> = Api::namespaced(client.clone(), &ns);
        actors
            .create(
                &PostParams::default(),
                &serde_json::from_value(actor).expect("actor"),
            )
            .await
            .expect("create actor");
        // KEDA (not running here) would set the count: do it as it would.
        wait_for(Duration::from_secs(30), "the actor's Deployment", || {
            let deps = Api::<Deployment>::namespaced(client.clone(), &ns);
            async move { matches!(deps.get_opt("worker").await, Ok(Some(_))) }
        })
        .await;
        scale(&client, &ns, "worker", 5).await;
        let names = wait_running(&pods, "worker", 5).await;
        assert_guarded(&pods, "worker").await;
        let busy = mark_busy(&pods, &names, 3).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        scale(&client, &ns, "worker", 1).await;
        assert_stay(&pods, "worker", &busy, Duration::from_secs(10)).await;
        let live: Vec<String> = live_pods(&pods, "worker")
            .await
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(
            live.len(),
            3,
            "the idle pods went, the busy stayed: {live:?}"
        );
        // Freed ones go until the count is reached; the last busy one stays.
        for b in busy.iter().take(2) {
            set_busy(&pods, b, false).await;
        }
        wait_for(Duration::from_secs(30), "the freed pods deleted", || {
            let pods = pods.clone();
            async move { live_pods(&pods, "worker").await.len() == 1 }
        })
        .await;
        assert_stay(&pods, "worker", &busy[2..], Duration::from_secs(2)).await;
        unregister(&client, &hook).await;
        op.abort();
    })
    .await;
}
