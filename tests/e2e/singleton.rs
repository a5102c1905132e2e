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
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use kube_standby::api::singleton::RELEASED_ANNOTATION;
use kube_standby::api::StatefulSingleton;
use kube_standby::runtime::leader::LeaseConfig;
use kube_standby::runtime::{self, RunConfig};
use kube_standby::server::{ServerConfig, TlsMode};
use kube_standby::tls::ca_secret;
use kube_standby::webhook_config;
use serde_json::json;

use crate::util::{self, wait_for, PAUSE};

pub(crate) struct Env {
    pub(crate) host: String,
    pub(crate) agent_image: String,
}

fn env(test: &str) -> Option<Env> {
    if !util::enabled(test) {
        return None;
    }
    let host = std::env::var("KUBE_STANDBY_E2E_HOST").unwrap_or_else(|_| {
        eprintln!(
            "{test}: KUBE_STANDBY_E2E_HOST unset; the cluster must reach this process at 127.0.0.1"
        );
        "127.0.0.1".into()
    });
    let agent_image = std::env::var("KUBE_STANDBY_E2E_AGENT_IMAGE").unwrap_or_else(|_| {
        format!(
            "ghcr.io/paia-tech/kube-standby:{}",
            env!("CARGO_PKG_VERSION")
        )
    });
    Some(Env { host, agent_image })
}

/// An operator (`run` mode, in this process) restricted to one namespace.
pub(crate) struct Operator {
    pub(crate) task: tokio::task::JoinHandle<kube_standby::Result<()>>,
    pub(crate) url: String,
}

impl Operator {
    /// Kill it as a crash would: no graceful shutdown, the Lease is not released.
    fn kill(self) {
        self.task.abort();
    }
}

const CA_SECRET: &str = "kube-standby-ca";

/// Start `kube-standby run` in-process for namespace `ns` (CA kept in a Secret of `ns`;
/// with `identity`, leader election on a Lease in `ns`).
async fn start_operator(client: Client, env: &Env, ns: &str, identity: Option<&str>) -> Operator {
    let port = {
        let l = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("https://{}:{port}", env.host);
    let leader = identity.map(|id| LeaseConfig::new(ns.into(), "kube-standby".into(), id.into()));
    let cfg = RunConfig {
        server: ServerConfig {
            bind: format!("0.0.0.0:{port}").parse().expect("bind addr"),
            metrics_bind: "127.0.0.1:0".parse().expect("metrics addr"),
            tls: TlsMode::SelfSigned {
                sans: vec![env.host.clone(), "localhost".into()],
                ca: None,
                validity: Default::default(),
            },
            ca_file: None,
            ca_pem: None,
            agent_image: env.agent_image.clone(),
            operator_url: url.clone(),
            conn_limits: Default::default(),
            admission_limits: Default::default(),
            busy_guard: Default::default(),
            held: Default::default(),
        },
        webhook_config_name: None,
        ca_secret: Some(CA_SECRET.into()),
        ca_secret_namespace: ns.into(),
        leader,
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
    Operator { task, url }
}

/// Register `url` as the pod webhook for namespace `ns` only, with the CA from the Secret.
async fn register(client: &Client, ns: &str, url: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let ca = ca_secret::from_secret(&secrets.get(CA_SECRET).await.expect("CA Secret"))
        .expect("CA in the Secret")
        .cert_pem;
    let name = format!("kube-standby-e2e-{ns}");
    let mut mwc = webhook_config::build(
        &name,
        &webhook_config::Target::Url(format!("{url}/mutate/pods")),
        &ca,
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
    name
}

pub(crate) async fn unregister(client: &Client, name: &str) {
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
        || !kube_standby::api::singleton::carries_gate(p)
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
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn deployment_rollout_and_pod_delete_never_run_two_copies() {
    let Some(env) = env("deployment_rollout_and_pod_delete_never_run_two_copies") else {
        return;
    };
    util::in_namespace("ks-e2e-ss", move |client, ns| async move {
        let op = start_operator(client.clone(), &env, &ns, None).await;
        let mwc = register(&client, &ns, &op.url).await;
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
        op.kill();
    })
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn one_replica_statefulset_hands_over_with_the_wrapper_gate() {
    let Some(env) = env("one_replica_statefulset_hands_over_with_the_wrapper_gate") else {
        return;
    };
    util::in_namespace("ks-e2e-ss-sts", move |client, ns| async move {
        let op = start_operator(client.clone(), &env, &ns, None).await;
        let mwc = register(&client, &ns, &op.url).await;
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
        op.kill();
    })
    .await;
}

fn db_deployment(ns: &str) -> Deployment {
    // A default Deployment: RollingUpdate with 25% surge, pause has no command (init gate).
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "db", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"terminationGracePeriodSeconds": 2, "containers": [{"name": "db", "image": PAUSE}]}}}
    }))
    .expect("deployment")
}

/// Create the singleton and the Deployment; return the first released pod.
async fn first_release(client: &Client, ns: &str) -> String {
    Api::<StatefulSingleton>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &singleton(ns))
        .await
        .expect("singleton");
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &db_deployment(ns))
        .await
        .expect("create deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_for(Duration::from_secs(120), "first pod released", || async {
        active_released_pod(&pods).await.is_some()
    })
    .await;
    active_released_pod(&pods).await.expect("active pod")
}

/// Roll the Deployment and wait until the new (gated) pod exists: the handover has begun.
async fn start_rollout(client: &Client, ns: &str, first: &str) {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}),
            ),
        )
        .await
        .expect("rollout");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_for(
        Duration::from_secs(60),
        "the successor pod created",
        || async {
            pods.list(&ListParams::default().labels("app=db"))
                .await
                .map(|l| l.items.iter().any(|p| p.name_any() != first))
                .unwrap_or(false)
        },
    )
    .await;
}

async fn ca_of(client: &Client, ns: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    ca_secret::from_secret(&secrets.get(CA_SECRET).await.expect("CA Secret"))
        .expect("CA")
        .cert_pem
}

/// The operator is killed (no graceful stop) while a handover is under way and started
/// again: the successor is released only after the old pod is gone, never two copies, and
/// the restarted operator serves with the same CA (kept in its Secret), so the webhook
/// registration (and every gated pod's agent) keeps trusting it.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn operator_killed_and_restarted_mid_handover_never_runs_two_copies() {
    let Some(env) = env("operator_killed_and_restarted_mid_handover_never_runs_two_copies") else {
        return;
    };
    util::in_namespace("ks-e2e-ss-restart", move |client, ns| async move {
        let op = start_operator(client.clone(), &env, &ns, None).await;
        let mwc = register(&client, &ns, &op.url).await;
        let ca_before = ca_of(&client, &ns).await;
        let dog = spawn_watchdog(client.clone(), ns.clone());
        let first = first_release(&client, &ns).await;
        start_rollout(&client, &ns, &first).await;
        op.kill();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let op = start_operator(client.clone(), &env, &ns, None).await;
        assert_eq!(
            ca_of(&client, &ns).await,
            ca_before,
            "the CA survives a restart"
        );
        register(&client, &ns, &op.url).await; // new port, same CA
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        wait_for(
            Duration::from_secs(180),
            "handover finished after the restart",
            || async { active_released_pod(&pods).await.is_some_and(|p| p != first) },
        )
        .await;
        report(&dog);
        unregister(&client, &mwc).await;
        op.kill();
    })
    .await;
}

/// Two replicas with leader election: both serve the webhook (registered at the follower),
/// only the leader reconciles. The leader is killed mid-handover; the follower takes the
/// Lease once it expires and finishes the handover; never two copies.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn two_replicas_leader_killed_mid_handover_never_runs_two_copies() {
    let Some(env) = env("two_replicas_leader_killed_mid_handover_never_runs_two_copies") else {
        return;
    };
    util::in_namespace("ks-e2e-ss-ha", move |client, ns| async move {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(client.clone(), &ns);
        let holder = |leases: Api<k8s_openapi::api::coordination::v1::Lease>| async move {
            leases
                .get_opt("kube-standby")
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
        };
        let a = start_operator(client.clone(), &env, &ns, Some("replica-a")).await;
        wait_for(
            Duration::from_secs(30),
            "replica-a holds the Lease",
            || async { holder(leases.clone()).await.as_deref() == Some("replica-a") },
        )
        .await;
        let b = start_operator(client.clone(), &env, &ns, Some("replica-b")).await;
        let mwc = register(&client, &ns, &b.url).await; // the follower serves the webhook
        let dog = spawn_watchdog(client.clone(), ns.clone());
        let first = first_release(&client, &ns).await;
        assert_eq!(holder(leases.clone()).await.as_deref(), Some("replica-a"));
        start_rollout(&client, &ns, &first).await;
        a.kill();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        wait_for(
            Duration::from_secs(180),
            "handover finished by the new leader",
            || async { active_released_pod(&pods).await.is_some_and(|p| p != first) },
        )
        .await;
        assert_eq!(holder(leases.clone()).await.as_deref(), Some("replica-b"));
        report(&dog);
        unregister(&client, &mwc).await;
        b.kill();
    })
    .await;
}

/// Pods that already use the injected names, created through the real API server (which
/// rejects a duplicate volume, container or mount path): volumes get free names and the pod
/// is admitted and released; a clash on the wrapper's mount path moves it to the init
/// gate (the app containers gain only the read-only signal mount); a pod that mounts the
/// signal directory itself, or whose own init container is named `singleton-gate` (with no
/// command), is denied, saying so.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn name_clashes_are_admitted_valid_or_denied_clearly() {
    let Some(env) = env("name_clashes_are_admitted_valid_or_denied_clearly") else {
        return;
    };
    util::in_namespace("ks-e2e-ss-clash", move |client, ns| async move {
        let op = start_operator(client.clone(), &env, &ns, None).await;
        let mwc = register(&client, &ns, &op.url).await;
        Api::<StatefulSingleton>::namespaced(client.clone(), &ns).create(&PostParams::default(), &singleton(&ns)).await.expect("singleton");
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pod = |name: &str, spec: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": "db"}}, "spec": spec})).expect("pod")
        };
        let volumes_of = |p: &Pod| -> Vec<String> {
            p.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default().into_iter().map(|v| v.name).collect()
        };

        // Our volume names taken, every container with a command: the wrapper gate, renamed volumes.
        let a = pods.create(&PostParams::default(), &pod("taken-volumes", json!({
            "terminationGracePeriodSeconds": 2,
            "volumes": [{"name": "statefulsingleton-token", "emptyDir": {}}, {"name": "statefulsingleton-wrapper", "emptyDir": {}},
                        {"name": "statefulsingleton-signal", "emptyDir": {}}],
            "containers": [{"name": "db", "image": "busybox:1.36", "command": ["sleep", "3600"],
                            "volumeMounts": [{"name": "statefulsingleton-token", "mountPath": "/data"}]}]
        }))).await.expect("a pod using our volume names is admitted");
        assert_eq!(a.annotations().get("apps.statefulsingleton.com/gate").map(String::as_str), Some("wrapper"));
        let names = volumes_of(&a);
        for n in ["statefulsingleton-token-2", "statefulsingleton-wrapper-2", "statefulsingleton-signal-2"] {
            assert!(names.iter().any(|v| v == n), "{n} missing: {names:?}");
        }
        wait_for(Duration::from_secs(120), "the renamed-volume pod released", || async {
            pods.get("taken-volumes").await.ok().is_some_and(|p| p.annotations().contains_key(RELEASED_ANNOTATION))
        })
        .await;

        // An app container already mounts /opt/wrapper: the init gate, containers untouched.
        let b = pods.create(&PostParams::default(), &pod("taken-mount", json!({
            "terminationGracePeriodSeconds": 2,
            "volumes": [{"name": "mine", "emptyDir": {}}],
            "containers": [{"name": "db", "image": "busybox:1.36", "command": ["sleep", "3600"],
                            "volumeMounts": [{"name": "mine", "mountPath": "/opt/wrapper"}]}]
        }))).await.expect("a pod mounting /opt/wrapper is admitted");
        assert_eq!(b.annotations().get("apps.statefulsingleton.com/gate").map(String::as_str), Some("initContainer"));
        let spec = b.spec.expect("spec");
        assert_eq!(spec.containers[0].command, Some(vec!["sleep".to_string(), "3600".to_string()]));
        // ... but for the signal volume, read-only, where the app reads its epoch file.
        let mounts = spec.containers[0].volume_mounts.clone().unwrap_or_default();
        assert!(
            mounts.iter().any(|m| m.mount_path == "/var/run/signal" && m.read_only == Some(true)),
            "no read-only signal mount: {mounts:?}"
        );
        assert_eq!(spec.init_containers.expect("init gate")[0].name, "singleton-gate");

        // An app container already mounts /var/run/signal, where either gate mounts its
        // signal volume: no gate fits, denied, naming the path.
        let err = pods.create(&PostParams::default(), &pod("taken-signal", json!({
            "volumes": [{"name": "mine", "emptyDir": {}}],
            "containers": [{"name": "db", "image": "busybox:1.36", "command": ["sleep", "3600"],
                            "volumeMounts": [{"name": "mine", "mountPath": "/var/run/signal"}]}]
        }))).await.expect_err("a pod mounting /var/run/signal is denied");
        let msg = err.to_string();
        assert!(msg.contains("/var/run/signal") && msg.contains("mount that volume elsewhere"), "{msg}");
        assert!(pods.get_opt("taken-signal").await.expect("get").is_none());

        // No command and an init container of its own named singleton-gate: denied, naming it.
        let err = pods.create(&PostParams::default(), &pod("taken-gate-name", json!({
            "initContainers": [{"name": "singleton-gate", "image": "busybox:1.36", "command": ["true"]}],
            "containers": [{"name": "db", "image": PAUSE}]
        }))).await.expect_err("a clash with no gate left is denied");
        let msg = err.to_string();
        assert!(msg.contains("singleton-gate") && msg.contains("rename"), "{msg}");
        assert!(pods.get_opt("taken-gate-name").await.expect("get").is_none());

        unregister(&client, &mwc).await;
        op.kill();
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// The review cluster's real node (`real-node-0`: a real kubelet and containerd, pods on a
// bridge network that reaches this host at 10.88.0.1): the injected agent and the app run
// for real, so the handover is measured from the app's own output.

/// Host the real node's pods reach this process at (`KUBE_STANDBY_E2E_REAL_HOST`).
const REAL_HOST_DEFAULT: &str = "10.88.0.1";
pub(crate) const REAL_NODE: &str = "real-node-0";
pub(crate) const APP_IMAGE: &str = "kube-standby.local/app:1";
/// The app: prints STARTED/STOPPED with a wall-clock time (busybox date %N when it has it)
/// and the node's uptime (same kernel for every pod of the node), exits 0 on SIGTERM.
/// Right after STARTED (not before, so the measured gap is the start's) it prints its
/// fencing epoch as README tells an app to read it: the file, and the wrapper's variable.
const APP_SCRIPT: &str = r#"t() { echo "$(date +%s.%N) $(cut -d' ' -f1 /proc/uptime)"; }; trap 'echo "STOPPED $(t)"; exit 0' TERM; echo "STARTED $(t)"; echo "EPOCH file=$(cat /var/run/signal/epoch) env=${STATEFULSINGLETON_EPOCH:-unset}"; while :; do sleep 0.1; done"#;

/// The released, not terminating pod of the real Deployment, its epoch annotation, and the
/// `EPOCH ...` line its app printed, read from its log (`kubectl logs POD -c app`).
async fn app_epoch_line(pods: &Api<Pod>, what: &str) -> (String, u64, String) {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: no EPOCH line from the active app"
        );
        let active = pods
            .list(&ListParams::default().labels("app=real"))
            .await
            .ok()
            .and_then(|l| {
                l.items.into_iter().find(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.annotations().contains_key(RELEASED_ANNOTATION)
                })
            });
        if let Some(p) = active {
            let name = p.name_any();
            let epoch = p
                .annotations()
                .get(kube_standby::api::singleton::EPOCH_ANNOTATION)
                .and_then(|e| e.parse::<u64>().ok())
                .expect("the released pod carries its epoch");
            let lp = kube::api::LogParams {
                container: Some("app".into()),
                ..Default::default()
            };
            if let Ok(log) = pods.logs(&name, &lp).await {
                if let Some(line) = log.lines().find(|l| l.starts_with("EPOCH ")) {
                    return (name, epoch, line.to_string());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The app of the active pod read its epoch: from the file on either gate, and from
/// `STATEFULSINGLETON_EPOCH` too behind the wrapper (the init gate cannot set it). Returns
/// the epoch.
async fn assert_app_read_its_epoch(pods: &Api<Pod>, gate: &str, what: &str) -> u64 {
    let (pod, epoch, line) = app_epoch_line(pods, what).await;
    let env = if gate == "wrapper" {
        epoch.to_string()
    } else {
        "unset".to_string()
    };
    assert_eq!(
        line,
        format!("EPOCH file={epoch} env={env}"),
        "{what}: the app of {pod} (epoch annotation {epoch})"
    );
    eprintln!("{gate}: {what}: {pod} printed {line:?}");
    epoch
}

pub(crate) fn real_env(test: &str) -> Option<Env> {
    if !util::enabled(test) {
        return None;
    }
    Some(Env {
        host: std::env::var("KUBE_STANDBY_E2E_REAL_HOST")
            .unwrap_or_else(|_| REAL_HOST_DEFAULT.into()),
        agent_image: format!(
            "ghcr.io/paia-tech/kube-standby:{}",
            env!("CARGO_PKG_VERSION")
        ),
    })
}

/// `kube-standby certs --dir DIR --san HOST`, as README says.
pub(crate) fn readme_certs(dir: &std::path::Path, host: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-standby"))
        .args(["certs", "--dir"])
        .arg(dir)
        .args(["--san", host])
        .output()
        .expect("run certs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `run` in this process with certificate files and NO --ca-file (README's "Against a
/// cluster"), bound on 0.0.0.0 and announced to agents at `https://HOST:PORT`.
pub(crate) async fn start_file_operator(
    client: Client,
    env: &Env,
    ns: &str,
    certs: &std::path::Path,
) -> Operator {
    start_file_operator_announcing(client, env, ns, certs, None)
        .await
        .0
}

/// [`start_file_operator`], telling agents `announce_port` instead of the port it serves on
/// (a port where nothing listens makes every agent unable to reach the operator).
async fn start_file_operator_announcing(
    client: Client,
    env: &Env,
    ns: &str,
    certs: &std::path::Path,
    announce_port: Option<u16>,
) -> (Operator, String) {
    let free_port = || {
        let l = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let port = free_port();
    let url = format!("https://{}:{}", env.host, announce_port.unwrap_or(port));
    let cfg = RunConfig {
        server: ServerConfig {
            bind: format!("0.0.0.0:{port}").parse().expect("bind addr"),
            metrics_bind: "127.0.0.1:0".parse().expect("metrics addr"),
            tls: TlsMode::Files {
                cert: certs.join("tls.crt"),
                key: certs.join("tls.key"),
                reload_every: Duration::from_secs(10),
            },
            ca_file: None,
            ca_pem: None,
            agent_image: env.agent_image.clone(),
            operator_url: url.clone(),
            conn_limits: Default::default(),
            admission_limits: Default::default(),
            busy_guard: Default::default(),
            held: Default::default(),
        },
        webhook_config_name: None,
        ca_secret: None,
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
    assert!(!task.is_finished(), "the operator refused to start");
    let served = format!("https://{}:{port}", env.host);
    (Operator { task, url }, served)
}

pub(crate) async fn register_ca(client: &Client, ns: &str, url: &str, ca: &str) -> String {
    let name = format!("kube-standby-e2e-{ns}");
    let mut mwc = webhook_config::build(
        &name,
        &webhook_config::Target::Url(format!("{url}/mutate/pods")),
        ca,
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    name
}

fn real_singleton(ns: &str, gate: &str) -> StatefulSingleton {
    serde_json::from_value(json!({
        "apiVersion": "apps.statefulsingleton.com/v1", "kind": "StatefulSingleton",
        "metadata": {"name": "app", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "real"}}, "terminationGracePeriod": 30,
                 "maxTransitionTime": 300, "startGate": gate}
    }))
    .expect("singleton")
}

fn real_deployment(ns: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "real"}},
                 // Default RollingUpdate: the successor is created (and waits, gated)
                 // while the old pod still runs; the controller scales the old RS to 0.
                 "template": {"metadata": {"labels": {"app": "real"}}, "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "nodeSelector": {"kubernetes.io/hostname": REAL_NODE},
                    "containers": [{"name": "app", "image": APP_IMAGE, "imagePullPolicy": "Never",
                                    "command": ["sh", "-c", APP_SCRIPT]}]}}}
    }))
    .expect("deployment")
}

/// One app line: (what, wall-clock seconds if the date had %N, node uptime seconds).
#[derive(Clone, Debug)]
struct AppLine {
    pod: String,
    what: String,
    wall: Option<f64>,
    uptime: f64,
}

impl AppLine {
    fn parse(pod: &str, line: &str) -> Option<AppLine> {
        let mut it = line.split_whitespace();
        let what = it.next().filter(|w| *w == "STARTED" || *w == "STOPPED")?;
        let wall = it
            .next()
            .and_then(|w| w.parse::<f64>().ok())
            .filter(|w| w.fract() != 0.0);
        let uptime = it.next()?.parse::<f64>().ok()?;
        Some(AppLine {
            pod: pod.into(),
            what: what.into(),
            wall,
            uptime,
        })
    }
    /// The best clock both pods share: wall time with nanoseconds, else the node's uptime.
    fn at(&self, other: &AppLine) -> (f64, f64) {
        match (self.wall, other.wall) {
            (Some(a), Some(b)) => (a, b),
            _ => (self.uptime, other.uptime),
        }
    }
}

/// Follow the `app` container's log of every pod of the Deployment as soon as it can be
/// read (a pod's log is gone once it is deleted, so it is read while the pod lives).
fn follow_app_logs(client: Client, ns: String) -> Arc<Mutex<Vec<AppLine>>> {
    use futures::{AsyncBufReadExt, TryStreamExt};
    let lines = Arc::new(Mutex::new(Vec::<AppLine>::new()));
    let out = lines.clone();
    tokio::spawn(async move {
        let api: Api<Pod> = Api::namespaced(client, &ns);
        let mut following = std::collections::BTreeSet::new();
        loop {
            let names: Vec<String> = api
                .list(&ListParams::default().labels("app=real"))
                .await
                .map(|l| l.items.iter().map(|p| p.name_any()).collect())
                .unwrap_or_default();
            for name in names {
                if following.contains(&name) {
                    continue;
                }
                let lp = kube::api::LogParams {
                    container: Some("app".into()),
                    follow: true,
                    ..Default::default()
                };
                // Fails until the app container has started (after the release).
                let Ok(stream) = api.log_stream(&name, &lp).await else {
                    continue;
                };
                following.insert(name.clone());
                let out = out.clone();
                tokio::spawn(async move {
                    let mut l = stream.lines();
                    while let Ok(Some(line)) = l.try_next().await {
                        if let Some(a) = AppLine::parse(&name, &line) {
                            eprintln!("{name}: {line}");
                            out.lock().expect("lock").push(a);
                        }
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    lines
}

/// From the apps' own output: every STARTED of a pod comes after the STOPPED of the pod
/// before it (0 overlap), and the gaps old-app-exit → new-app-start, in seconds.
fn handovers(lines: &[AppLine]) -> Vec<f64> {
    let mut starts: Vec<&AppLine> = lines.iter().filter(|l| l.what == "STARTED").collect();
    starts.sort_by(|a, b| a.uptime.total_cmp(&b.uptime));
    let mut gaps = vec![];
    for pair in starts.windows(2) {
        let (old, new) = (pair[0], pair[1]);
        let stopped = lines
            .iter()
            .find(|l| l.pod == old.pod && l.what == "STOPPED")
            .unwrap_or_else(|| {
                panic!(
                    "{} started while {} never printed STOPPED: overlap",
                    new.pod, old.pod
                )
            });
        let (stop, start) = stopped.at(new);
        assert!(
            start >= stop,
            "overlap: {} STARTED at {start} before {} STOPPED at {stop}",
            new.pod,
            old.pod
        );
        gaps.push(start - stop);
    }
    gaps
}

fn p99(gaps: &[f64]) -> f64 {
    let mut g = gaps.to_vec();
    g.sort_by(f64::total_cmp);
    let i = ((g.len() as f64) * 0.99).ceil() as usize;
    g[i.saturating_sub(1).min(g.len() - 1)]
}

async fn app_started(lines: &Arc<Mutex<Vec<AppLine>>>, n: usize) -> bool {
    lines
        .lock()
        .expect("lock")
        .iter()
        .filter(|l| l.what == "STARTED")
        .count()
        >= n
}

/// Three rollouts of a Deployment on the real node with `gate`: the first app starts only
/// after its release, never two apps at once, each handover gap printed; every app reads
/// its epoch (1, 2, 3, 4) from /var/run/signal/epoch (and, behind the wrapper, from
/// `STATEFULSINGLETON_EPOCH`), checked in its log; returns the gaps.
async fn three_rollouts_on_the_real_node(
    client: Client,
    ns: String,
    env: Env,
    gate: &str,
) -> Vec<f64> {
    let dir = tempfile::tempdir().expect("tempdir");
    readme_certs(dir.path(), &env.host);
    let op = start_file_operator(client.clone(), &env, &ns, dir.path()).await;
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).expect("ca.crt");
    let mwc = register_ca(&client, &ns, &op.url, &ca).await;
    let lines = follow_app_logs(client.clone(), ns.clone());
    Api::<StatefulSingleton>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &real_singleton(&ns, gate))
        .await
        .expect("singleton");
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deps.create(&PostParams::default(), &real_deployment(&ns))
        .await
        .expect("deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_for(Duration::from_secs(120), "first app STARTED", || {
        app_started(&lines, 1)
    })
    .await;
    // The first app started only after its pod was released.
    let first = pods
        .list(&ListParams::default().labels("app=real"))
        .await
        .expect("list")
        .items
        .into_iter()
        .next()
        .expect("first pod");
    assert_eq!(
        first
            .annotations()
            .get("apps.statefulsingleton.com/gate")
            .map(String::as_str),
        Some(gate),
        "the gate asked for"
    );
    let released_at = first
        .annotations()
        .get(RELEASED_ANNOTATION)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .expect("the first pod is released");
    let started = lines.lock().expect("lock")[0].clone();
    if let Some(wall) = started.wall {
        // The release annotation has second precision.
        assert!(
            wall + 1.0 >= released_at.as_second() as f64,
            "the app started before its release"
        );
    }
    let mut epochs = vec![assert_app_read_its_epoch(&pods, gate, "first app").await];
    for rev in 1..=3 {
        deps.patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {"rev": rev.to_string()}}}}})),
        )
        .await
        .expect("rollout");
        wait_for(
            Duration::from_secs(180),
            &format!("app of rollout {rev} STARTED"),
            || app_started(&lines, rev + 1),
        )
        .await;
        epochs.push(assert_app_read_its_epoch(&pods, gate, &format!("rollout {rev}")).await);
    }
    assert_eq!(
        epochs,
        vec![1, 2, 3, 4],
        "{gate}: one epoch more per release"
    );
    let gaps = handovers(&lines.lock().expect("lock"));
    assert_eq!(gaps.len(), 3, "three handovers");
    for (i, g) in gaps.iter().enumerate() {
        eprintln!(
            "{gate}: handover {}: old app STOPPED -> new app STARTED {:.3} s",
            i + 1,
            g
        );
    }
    eprintln!(
        "{gate}: p99 {:.3} s over {} handovers",
        p99(&gaps),
        gaps.len()
    );
    unregister(&client, &mwc).await;
    op.kill();
    gaps
}

/// Wrapper gate on the real node: 0 overlap, and the old app's exit → the new app's start
/// is short whatever the grace period (30 s here): the agent and the wrapper end at once
/// on SIGTERM, so the old pod is gone as soon as its app has stopped.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn real_node_wrapper_gate_three_rollouts_no_overlap_and_short_handover() {
    let Some(env) = real_env("real_node_wrapper_gate_three_rollouts_no_overlap_and_short_handover")
    else {
        return;
    };
    util::in_namespace("ks-e2e-real-wrap", move |client, ns| async move {
        let gaps = three_rollouts_on_the_real_node(client, ns, env, "wrapper").await;
        assert!(
            p99(&gaps) <= 0.3,
            "wrapper handover p99 {:.3} s > 300 ms: {gaps:?}",
            p99(&gaps)
        );
    })
    .await;
}

/// Init-container gate on the real node: 0 overlap; the gap is bounded by the kubelet
/// starting the app container after the init container exits; each app reads its epoch
/// from /var/run/signal/epoch (`cat`, asserted through its log).
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn real_node_init_gate_three_rollouts_no_overlap_and_bounded_handover() {
    let Some(env) = real_env("real_node_init_gate_three_rollouts_no_overlap_and_bounded_handover")
    else {
        return;
    };
    util::in_namespace("ks-e2e-real-init", move |client, ns| async move {
        let gaps = three_rollouts_on_the_real_node(client, ns, env, "initContainer").await;
        assert!(
            p99(&gaps) <= 3.0,
            "init-gate handover p99 {:.3} s > 3 s: {gaps:?}",
            p99(&gaps)
        );
    })
    .await;
}

/// File-mode TLS with `kube-standby certs` and no --ca-file on the real node: the injected
/// CA is not empty, the agent trusts the operator, the pod is released and its app runs,
/// and the singleton shows no AgentUnreachable.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn real_node_file_tls_without_ca_file_releases_the_pod() {
    let Some(env) = real_env("real_node_file_tls_without_ca_file_releases_the_pod") else {
        return;
    };
    util::in_namespace("ks-e2e-real-tls", move |client, ns| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        readme_certs(dir.path(), &env.host);
        let op = start_file_operator(client.clone(), &env, &ns, dir.path()).await;
        let ca = std::fs::read_to_string(dir.path().join("ca.crt")).expect("ca.crt");
        let mwc = register_ca(&client, &ns, &op.url, &ca).await;
        let lines = follow_app_logs(client.clone(), ns.clone());
        Api::<StatefulSingleton>::namespaced(client.clone(), &ns)
            .create(
                &PostParams::default(),
                &real_singleton(&ns, "initContainer"),
            )
            .await
            .expect("singleton");
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &real_deployment(&ns))
            .await
            .expect("deployment");
        wait_for(Duration::from_secs(120), "the app STARTED", || {
            app_started(&lines, 1)
        })
        .await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pod = pods
            .list(&ListParams::default().labels("app=real"))
            .await
            .expect("list")
            .items
            .into_iter()
            .next()
            .expect("pod");
        let gate = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .and_then(|c| c.iter().find(|c| c.name == "singleton-gate"))
            .cloned()
            .expect("init gate");
        let injected = gate
            .env
            .unwrap_or_default()
            .into_iter()
            .find(|e| e.name == "KUBE_STANDBY_CA")
            .and_then(|e| e.value)
            .unwrap_or_default();
        assert_eq!(
            injected,
            kube_standby::tls::pin::pins_of_bundle(&ca).expect("pins of ca.crt"),
            "the pins of ca.crt are injected"
        );
        assert_eq!(
            gate.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        let s = Api::<StatefulSingleton>::namespaced(client.clone(), &ns)
            .get("app")
            .await
            .expect("singleton");
        let unreachable = s
            .status
            .as_ref()
            .and_then(|st| st.conditions.iter().find(|c| c.type_ == "AgentUnreachable"))
            .map(|c| c.status.clone());
        assert_ne!(unreachable.as_deref(), Some("True"));
        unregister(&client, &mwc).await;
        op.kill();
    })
    .await;
}

/// An agent that cannot reach the operator (it is told a port where nothing listens): the
/// pod is never released (its app never starts), and once the agent gives up (120 s) and
/// exits with its one-line error, the StatefulSingleton shows `AgentUnreachable=True`
/// naming the pod, with an `AgentUnreachable` Warning event.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn real_node_unreachable_operator_shows_agent_unreachable() {
    let Some(env) = real_env("real_node_unreachable_operator_shows_agent_unreachable") else {
        return;
    };
    util::in_namespace("ks-e2e-real-unreach", move |client, ns| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        readme_certs(dir.path(), &env.host);
        let nowhere = {
            let l = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let (op, served) =
            start_file_operator_announcing(client.clone(), &env, &ns, dir.path(), Some(nowhere))
                .await;
        assert!(op.url.ends_with(&format!(":{nowhere}")), "{}", op.url);
        let ca = std::fs::read_to_string(dir.path().join("ca.crt")).expect("ca.crt");
        // The API server reaches the webhook where it really listens.
        let mwc = register_ca(&client, &ns, &served, &ca).await;
        let lines = follow_app_logs(client.clone(), ns.clone());
        Api::<StatefulSingleton>::namespaced(client.clone(), &ns)
            .create(
                &PostParams::default(),
                &real_singleton(&ns, "initContainer"),
            )
            .await
            .expect("singleton");
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &real_deployment(&ns))
            .await
            .expect("deployment");
        let singletons = Api::<StatefulSingleton>::namespaced(client.clone(), &ns);
        wait_for(Duration::from_secs(300), "AgentUnreachable=True", || {
            let singletons = singletons.clone();
            async move {
                singletons.get("app").await.ok().is_some_and(|s| {
                    s.status.as_ref().is_some_and(|st| {
                        st.conditions.iter().any(|c| {
                            c.type_ == "AgentUnreachable"
                                && c.status == "True"
                                && c.message.contains("pod ")
                        })
                    })
                })
            }
        })
        .await;
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
        let warned = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("AgentUnreachable"));
        assert!(warned, "no AgentUnreachable event");
        assert!(
            !app_started(&lines, 1).await,
            "the app started although its agent never reached the operator"
        );
        unregister(&client, &mwc).await;
        op.kill();
    })
    .await;
}

// ---- Warm standby (issue 20): replicas 2, failover to the gated standby, epochs ----

/// The singleton of the warm-standby tests: a long maxTransitionTime (the standby waits
/// for as long as the active pod lives).
fn standby_singleton(ns: &str) -> StatefulSingleton {
    serde_json::from_value(json!({
        "apiVersion": "apps.statefulsingleton.com/v1", "kind": "StatefulSingleton",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "db"}}, "terminationGracePeriod": 2, "maxTransitionTime": 3600}
    }))
    .expect("singleton")
}

/// A Deployment with two replicas: one active, one gated warm standby.
fn standby_deployment(ns: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "db", "namespace": ns},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"terminationGracePeriodSeconds": 2, "containers": [{"name": "db", "image": PAUSE}]}}}
    }))
    .expect("deployment")
}

/// Samples the pods every 20 ms and records every sample in which two pods that may run
/// the app (released or ungated, Terminating included) exist at once.
#[derive(Default)]
struct Sampler {
    samples: usize,
    overlaps: Vec<String>,
}

fn spawn_sampler(client: Client, ns: String) -> Arc<Mutex<Sampler>> {
    let s = Arc::new(Mutex::new(Sampler::default()));
    let out = s.clone();
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        loop {
            if let Ok(list) = pods.list(&ListParams::default().labels("app=db")).await {
                let running: Vec<String> = list
                    .items
                    .iter()
                    .filter(|p| instance(p))
                    .map(|p| p.name_any())
                    .collect();
                let mut g = out.lock().expect("lock");
                g.samples += 1;
                if running.len() > 1 {
                    g.overlaps.push(running.join(","));
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    s
}

fn assert_no_overlap(s: &Arc<Mutex<Sampler>>) {
    let g = s.lock().expect("lock");
    eprintln!("sampled the pods {} times (every 20 ms)", g.samples);
    assert!(g.samples > 0, "the sampler never listed the pods");
    assert!(
        g.overlaps.is_empty(),
        "two instances coexisted: {:?}",
        g.overlaps
    );
}

fn epoch_of(p: &Pod) -> Option<u64> {
    p.annotations()
        .get(kube_standby::api::singleton::EPOCH_ANNOTATION)
        .and_then(|e| e.parse().ok())
}

/// The released, not terminating pod and its epoch annotation.
async fn active_with_epoch(pods: &Api<Pod>) -> Option<(String, Option<u64>)> {
    pods.list(&ListParams::default().labels("app=db"))
        .await
        .ok()?
        .items
        .into_iter()
        .find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.annotations().contains_key(RELEASED_ANNOTATION)
        })
        .map(|p| (p.name_any(), epoch_of(&p)))
}

/// Wait until the singleton shows a warm standby (StandbyReady=True, standbyPods) and
/// return it.
async fn standby_ready(client: &Client, ns: &str) -> String {
    let api = Api::<StatefulSingleton>::namespaced(client.clone(), ns);
    wait_for(Duration::from_secs(120), "StandbyReady=True", || {
        let api = api.clone();
        async move {
            api.get("db")
                .await
                .ok()
                .and_then(|s| s.status)
                .is_some_and(|st| {
                    !st.standby_pods.is_empty()
                        && st
                            .conditions
                            .iter()
                            .any(|c| c.type_ == "StandbyReady" && c.status == "True")
                })
        }
    })
    .await;
    api.get("db")
        .await
        .ok()
        .and_then(|s| s.status)
        .and_then(|st| st.standby_pods.first().cloned())
        .expect("a standby pod")
}

async fn status_epoch(client: &Client, ns: &str) -> Option<i64> {
    Api::<StatefulSingleton>::namespaced(client.clone(), ns)
        .get("db")
        .await
        .ok()
        .and_then(|s| s.status)
        .and_then(|st| st.epoch)
}

/// Create the singleton and the 2-replica Deployment; wait for the first release: epoch 1.
async fn first_standby_release(client: &Client, ns: &str) -> u64 {
    Api::<StatefulSingleton>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &standby_singleton(ns))
        .await
        .expect("singleton");
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &standby_deployment(ns))
        .await
        .expect("create deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_for(Duration::from_secs(120), "first pod released", || async {
        active_with_epoch(&pods).await.is_some()
    })
    .await;
    let (_, epoch) = active_with_epoch(&pods).await.expect("active pod");
    epoch.expect("the released pod carries its epoch")
}

/// Delete the active pod and wait for the standby's release: the standby (not a new pod)
/// is released, with the next epoch, recorded in the status too. Returns the epoch and
/// the gap old pod gone → standby released, both seen by polling every 20 ms.
async fn fail_over(client: &Client, ns: &str, round: usize) -> (u64, Duration) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let standby = standby_ready(client, ns).await;
    let (active, _) = active_with_epoch(&pods).await.expect("an active pod");
    assert_ne!(active, standby);
    pods.delete(&active, &DeleteParams::default())
        .await
        .expect("delete the active pod");
    let start = Instant::now();
    let (mut gone_at, mut released_at) = (None, None);
    let mut epoch = None;
    while released_at.is_none() || gone_at.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "failover {round}: {active} gone: {gone_at:?}, {standby} released: {released_at:?}"
        );
        if gone_at.is_none() && matches!(pods.get_opt(&active).await, Ok(None)) {
            gone_at = Some(Instant::now());
        }
        if released_at.is_none() {
            if let Ok(Some(p)) = pods.get_opt(&standby).await {
                if p.annotations().contains_key(RELEASED_ANNOTATION) {
                    released_at = Some(Instant::now());
                    epoch = epoch_of(&p);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (gone, released) = (gone_at.expect("gone"), released_at.expect("released"));
    let gap = released.saturating_duration_since(gone);
    let epoch = epoch.expect("the standby carries its epoch");
    assert_eq!(
        status_epoch(client, ns).await,
        Some(epoch as i64),
        "status.epoch"
    );
    eprintln!(
        "failover {round}: {active} -> standby {standby}: epoch {epoch}, gap {:.1} ms (old pod gone -> standby released, polled every 20 ms; target <= 100 ms)",
        gap.as_secs_f64() * 1e3
    );
    (epoch, gap)
}

/// The operator's own account of each failover: the PodTransition events with their gap.
async fn print_failover_events(client: &Client, ns: &str) {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    for e in events
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .iter()
        .filter(|e| e.reason.as_deref() == Some("PodTransition"))
    {
        eprintln!(
            "event PodTransition: {}",
            e.note.as_deref().unwrap_or_default()
        );
    }
}

/// replicas 2: deleting the active pod releases the waiting standby (0 overlaps, sampled
/// every 20 ms); three failovers give epochs 1, 2, 3, 4 (the first release is 1).
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn warm_standby_failovers_release_the_standby_with_increasing_epochs() {
    let Some(env) = env("warm_standby_failovers_release_the_standby_with_increasing_epochs") else {
        return;
    };
    util::in_namespace("ks-e2e-ss-standby", move |client, ns| async move {
        let op = start_operator(client.clone(), &env, &ns, None).await;
        let mwc = register(&client, &ns, &op.url).await;
        let sampler = spawn_sampler(client.clone(), ns.clone());
        let mut epochs = vec![first_standby_release(&client, &ns).await];
        let mut gaps = vec![];
        for round in 1..=3 {
            let (epoch, gap) = fail_over(&client, &ns, round).await;
            epochs.push(epoch);
            gaps.push(gap);
        }
        assert_eq!(epochs, vec![1, 2, 3, 4]);
        gaps.sort();
        eprintln!(
            "warm standby failover gaps: p50={:.1} ms max={:.1} ms",
            gaps[gaps.len() / 2].as_secs_f64() * 1e3,
            gaps[gaps.len() - 1].as_secs_f64() * 1e3
        );
        print_failover_events(&client, &ns).await;
        assert_no_overlap(&sampler);
        unregister(&client, &mwc).await;
        op.kill();
    })
    .await;
}

/// replicas 2 with nothing changing: the second pod is a warm standby, not a handover.
/// With a short maxTransitionTime (3 s) the singleton stays Running (sampled every 250 ms
/// for 12 s, four times the limit) with the standby listed and StandbyReady=True, never
/// TransitionTimedOut=True, and no TransitionTimeout event is recorded.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn warm_standby_is_running_not_transitioning_past_max_transition_time() {
    let Some(env) = env("warm_standby_is_running_not_transitioning_past_max_transition_time")
    else {
        return;
    };
    util::in_namespace("ks-e2e-ss-standby-run", move |client, ns| async move {
        use kube_standby::api::singleton::Phase;
        let op = start_operator(client.clone(), &env, &ns, None).await;
        let mwc = register(&client, &ns, &op.url).await;
        let mut s = standby_singleton(&ns);
        s.spec.max_transition_time = 3;
        let singletons = Api::<StatefulSingleton>::namespaced(client.clone(), &ns);
        singletons
            .create(&PostParams::default(), &s)
            .await
            .expect("singleton");
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &standby_deployment(&ns))
            .await
            .expect("create deployment");
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        wait_for(Duration::from_secs(120), "first pod released", || async {
            active_with_epoch(&pods).await.is_some()
        })
        .await;
        // The second pod waits gated (admitted through the webhook, not released).
        let standby = standby_ready(&client, &ns).await;
        let p = pods.get(&standby).await.expect("the standby pod");
        assert!(kube_standby::api::singleton::carries_gate(&p), "{standby} is gated");
        assert!(!p.annotations().contains_key(RELEASED_ANNOTATION));
        let (active, _) = active_with_epoch(&pods).await.expect("an active pod");

        let start = Instant::now();
        let mut samples = 0;
        while start.elapsed() < Duration::from_secs(12) {
            let st = singletons
                .get("db")
                .await
                .expect("get singleton")
                .status
                .expect("status");
            samples += 1;
            let at = start.elapsed().as_secs_f64();
            assert_eq!(
                st.phase,
                Some(Phase::Running),
                "at {at:.2} s: a waiting standby is not a transition: {:?}",
                st.message
            );
            assert_eq!(st.active_pod.as_deref(), Some(active.as_str()), "at {at:.2} s");
            assert_eq!(st.standby_pods, vec![standby.clone()], "at {at:.2} s");
            assert!(
                st.transition_timestamp.is_none(),
                "at {at:.2} s: a handover clock runs: {:?}",
                st.transition_timestamp
            );
            for c in &st.conditions {
                if c.type_ == "TransitionTimedOut" {
                    assert_ne!(c.status, "True", "at {at:.2} s: {}", c.message);
                }
                if c.type_ == "StandbyReady" {
                    assert_eq!(c.status, "True", "at {at:.2} s: {}", c.message);
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!("standby {standby} of {active}: Running in all {samples} samples over 12 s (maxTransitionTime 3 s)");
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(client.clone(), &ns);
        let timeouts: Vec<String> = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("TransitionTimeout"))
            .map(|e| e.note.unwrap_or_default())
            .collect();
        assert!(timeouts.is_empty(), "TransitionTimeout events: {timeouts:?}");
        unregister(&client, &mwc).await;
        op.kill();
    })
    .await;
}

/// The operator is killed and started again between failovers: the epochs keep going up
/// by one (1, 2, 3), never reused or reset, and never two instances.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn warm_standby_operator_restart_between_failovers_keeps_the_epoch_sequence() {
    let Some(env) = env("warm_standby_operator_restart_between_failovers_keeps_the_epoch_sequence")
    else {
        return;
    };
    util::in_namespace("ks-e2e-ss-standby-rs", move |client, ns| async move {
        let mut op = start_operator(client.clone(), &env, &ns, None).await;
        let mut mwc = register(&client, &ns, &op.url).await;
        let sampler = spawn_sampler(client.clone(), ns.clone());
        let mut epochs = vec![first_standby_release(&client, &ns).await];
        for round in 1..=2 {
            // The standby must be waiting before the restart, so the new process's first
            // look sees it (admitted by the previous one).
            standby_ready(&client, &ns).await;
            op.kill();
            tokio::time::sleep(Duration::from_secs(2)).await;
            op = start_operator(client.clone(), &env, &ns, None).await;
            mwc = register(&client, &ns, &op.url).await; // new port, same CA
            let (epoch, _) = fail_over(&client, &ns, round).await;
            epochs.push(epoch);
        }
        assert_eq!(epochs, vec![1, 2, 3]);
        print_failover_events(&client, &ns).await;
        assert_no_overlap(&sampler);
        unregister(&client, &mwc).await;
        op.kill();
    })
    .await;
}

/// A Node object of our own (no kubelet, no simulator behind it): pods bound to it by
/// `nodeName` stay as the API has them, and its Ready condition is what we set.
async fn fake_node(client: &Client, name: &str, ready: &str) {
    use k8s_openapi::api::core::v1::Node;
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kube-standby-e2e": "node-loss"}}}))
    .expect("node");
    if nodes.get_opt(name).await.ok().flatten().is_none() {
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }
    set_node_ready(client, name, ready).await;
}

async fn set_node_ready(client: &Client, name: &str, ready: &str) {
    use k8s_openapi::api::core::v1::Node;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    Api::<Node>::all(client.clone())
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"status": {"conditions": [{"type": "Ready", "status": ready,
                "reason": "KubeStandbyE2E", "message": "set by the e2e test",
                "lastHeartbeatTime": now, "lastTransitionTime": now}]}}),
            ),
        )
        .await
        .expect("node status");
}

/// A gated pod of the singleton bound to `node`.
fn pod_on(ns: &str, name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "db"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 2,
                 "containers": [{"name": "db", "image": PAUSE}]}}))
    .expect("pod")
}

/// Node loss with a warm standby: the active pod's node stops reporting and the pod is
/// force-deleted (its containers may still run there): nothing is released, the singleton
/// is Blocked with NodeLost; once the node is confirmed gone (deleted) the standby is
/// released at once (the gap is printed; target <= 100 ms).
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn warm_standby_node_loss_releases_only_once_the_node_is_gone() {
    let Some(env) = env("warm_standby_node_loss_releases_only_once_the_node_is_gone") else {
        return;
    };
    util::in_namespace("ks-e2e-ss-nodeloss", move |client, ns| async move {
        use k8s_openapi::api::core::v1::Node;
        let (lost, other) = (format!("{ns}-lost"), format!("{ns}-other"));
        fake_node(&client, &lost, "True").await;
        fake_node(&client, &other, "True").await;
        let op = start_operator(client.clone(), &env, &ns, None).await;
        let mwc = register(&client, &ns, &op.url).await;
        let sampler = spawn_sampler(client.clone(), ns.clone());
        Api::<StatefulSingleton>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &standby_singleton(&ns))
            .await
            .expect("singleton");
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        pods.create(&PostParams::default(), &pod_on(&ns, "db-a", &lost))
            .await
            .expect("db-a");
        wait_for(Duration::from_secs(60), "db-a released", || async {
            active_with_epoch(&pods).await.is_some_and(|(p, _)| p == "db-a")
        })
        .await;
        pods.create(&PostParams::default(), &pod_on(&ns, "db-b", &other))
            .await
            .expect("db-b");
        // No kubelet behind the fake node: db-b never starts, so it is a waiting
        // candidate but not listed as a warm standby.
        wait_for(Duration::from_secs(30), "db-b gated and seen", || async {
            pods.get("db-b")
                .await
                .is_ok_and(|p| kube_standby::api::singleton::carries_gate(&p))
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;

        // The node stops reporting; the pod object is force-deleted.
        set_node_ready(&client, &lost, "Unknown").await;
        tokio::time::sleep(Duration::from_secs(1)).await; // the operator's Node watch
        pods.delete(
            "db-a",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("force delete");
        let singletons = Api::<StatefulSingleton>::namespaced(client.clone(), &ns);
        wait_for(Duration::from_secs(30), "Blocked with NodeLost", || {
            let singletons = singletons.clone();
            async move {
                singletons.get("db").await.ok().and_then(|s| s.status).is_some_and(|st| {
                    st.phase == Some(kube_standby::api::singleton::Phase::Blocked)
                        && st
                            .conditions
                            .iter()
                            .any(|c| c.type_ == "NodeLost" && c.status == "True")
                })
            }
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let b = pods.get("db-b").await.expect("db-b");
        assert!(
            !b.annotations().contains_key(RELEASED_ANNOTATION),
            "the standby was released while the lost node may still run db-a"
        );

        // The node is confirmed gone: the standby is released at once.
        Api::<Node>::all(client.clone())
            .delete(&lost, &DeleteParams::default())
            .await
            .expect("delete the lost node");
        let gone = Instant::now();
        let released = loop {
            assert!(gone.elapsed() < Duration::from_secs(60), "db-b never released");
            if let Ok(p) = pods.get("db-b").await {
                if p.annotations().contains_key(RELEASED_ANNOTATION) {
                    break Instant::now();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let gap = released.saturating_duration_since(gone);
        eprintln!(
            "node loss: node deleted -> standby db-b released in {:.1} ms (polled every 20 ms; target <= 100 ms)",
            gap.as_secs_f64() * 1e3
        );
        let epoch = epoch_of(&pods.get("db-b").await.expect("db-b"));
        assert_eq!(epoch, Some(2));
        assert_no_overlap(&sampler);
        unregister(&client, &mwc).await;
        op.kill();
        let _ = Api::<Node>::all(client.clone())
            .delete(&other, &DeleteParams::default())
            .await;
    })
    .await;
}

/// A pod of a HotStandbyDeployment pool is never a singleton instance, even when a
/// StatefulSingleton's selector matches it: the webhook admits it without a gate (the
/// singleton controller does not watch pool pods, so a gated one would never be
/// released) and the pool's pods all become Ready.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn pool_pods_a_singleton_selects_are_never_gated() {
    let Some(env) = env("pool_pods_a_singleton_selects_are_never_gated") else {
        return;
    };
    util::in_namespace("ks-e2e-ss-pool", move |client, ns| async move {
        let op = start_operator(client.clone(), &env, &ns, None).await;
        let mwc = register(&client, &ns, &op.url).await;
        Api::<StatefulSingleton>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &singleton(&ns))
            .await
            .expect("singleton");
        // The singleton selects app=db; so does the pool's template.
        let hsd: kube_standby::api::HotStandbyDeployment = serde_json::from_value(json!({
            "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
            "metadata": {"name": "pool", "namespace": ns},
            "spec": {"idleTarget": 2, "maxReplicas": 5,
                     "selector": {"matchLabels": {"app": "db"}},
                     "podTemplate": {"metadata": {"labels": {"app": "db"}},
                                     "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app", "image": PAUSE}]}}}
        }))
        .expect("hsd");
        Api::<kube_standby::api::HotStandbyDeployment>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &hsd)
            .await
            .expect("create hsd");
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let ready = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        wait_for(Duration::from_secs(120), "two Ready pool pods", || async {
            pods.list(&ListParams::default().labels("hsd.paia.tech/name=pool"))
                .await
                .map(|l| l.items.iter().filter(|p| ready(p)).count() >= 2)
                .unwrap_or(false)
        })
        .await;
        let list = pods
            .list(&ListParams::default().labels("hsd.paia.tech/name=pool"))
            .await
            .expect("pods");
        for p in &list.items {
            let name = p.name_any();
            assert!(
                !p.labels().contains_key("apps.statefulsingleton.com/singleton"),
                "{name} was made a singleton instance"
            );
            let inits = p.spec.as_ref().and_then(|s| s.init_containers.as_ref());
            assert!(
                inits.is_none_or(|c| c.iter().all(|c| c.name != "singleton-gate")),
                "{name} got the singleton gate"
            );
        }
        unregister(&client, &mwc).await;
        op.kill();
    })
    .await;
}
