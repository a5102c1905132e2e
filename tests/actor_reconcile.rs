//! The AsyncActor reconciler against a mocked API server (kube-rs ApiServerVerifier style):
//! each scenario lists the requests one reconcile must make, in order, with their bodies
//! checked, and then that it makes no other.
use kube_standby::controller::Deps;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[path = "support/verifier.rs"]
mod verifier;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::runtime::reflector;
use kube::runtime::watcher;
use kube_standby::api::AsyncActor;
use kube_standby::controller::actor::build::{BuildConfig, Kind};
use kube_standby::controller::actor::plan::{self, Action, Keda, Observed, RuntimeCm};
use kube_standby::controller::actor::{self, Ctx, KedaStore, Settings, Stores};
use serde_json::{json, Value};

use verifier::{expect, Expect};

const NS: &str = "ns";
const SIDECAR: &str = "sidecar:test";

fn actor(file: &str, patch: Value) -> AsyncActor {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let mut v: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["metadata"]["namespace"] = NS.into();
    v["metadata"]["uid"] = "actor-uid".into();
    v["metadata"]["generation"] = 1.into();
    json_patch::merge(&mut v, &patch);
    serde_json::from_value(v).unwrap()
}

fn hello(patch: Value) -> AsyncActor {
    actor("asyncactor-hello.yaml", patch)
}

/// The objects we would write for `a` (KEDA installed), as the API server returns them.
fn as_applied(a: &AsyncActor, kind: Kind) -> Value {
    let cfg = BuildConfig {
        sidecar_image: SIDECAR.into(),
        runtime_hash: None,
        native_sidecar: false,
    };
    let o = Observed {
        actor: a,
        cfg: &cfg,
        runtime: None,
        existing: vec![],
        configmap: RuntimeCm::NotConfigured,
        keda: Keda::all(),
        pods: vec![],
    };
    let p = plan::plan(&o, &Time(Timestamp::UNIX_EPOCH));
    let mut body = p
        .actions
        .into_iter()
        .find_map(|x| match x {
            Action::Apply { kind: k, body } if k == kind => Some(body),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {kind:?}"));
    body["metadata"]["uid"] = format!("uid-{kind:?}").into();
    body["metadata"]["generation"] = 1.into();
    if kind == Kind::Deployment {
        body["status"] = json!({"observedGeneration": 1, "readyReplicas": 1});
    }
    body
}

fn established(name: &str) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {"group": "keda.sh", "names": {"kind": "X", "plural": "x"}, "scope": "Namespaced", "versions": []},
        "status": {"conditions": [{"type": "Established", "status": "True"}]}})
}

#[derive(Default)]
struct World {
    deployments: Vec<Value>,
    statefulsets: Vec<Value>,
    pods: Vec<Value>,
    keda: Vec<(Kind, Value)>,
    keda_installed: bool,
}

fn fill<K>(items: &[Value]) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
{
    let (s, mut w) = reflector::store::<K>();
    w.apply_watcher_event(&watcher::Event::Init);
    for i in items {
        w.apply_watcher_event(&watcher::Event::InitApply(
            serde_json::from_value(i.clone()).unwrap(),
        ));
    }
    w.apply_watcher_event(&watcher::Event::InitDone);
    s
}

fn stores(w: &World, a: &AsyncActor) -> Stores {
    let crds = kube_standby::controller::actor::build::KEDA_CRDS
        .iter()
        .map(|n| {
            let items = if w.keda_installed {
                vec![established(n)]
            } else {
                vec![]
            };
            fill(&items)
        })
        .collect();
    let keda = [
        Kind::ScaledObject,
        Kind::ScaledJob,
        Kind::TriggerAuthentication,
    ]
    .into_iter()
    .map(|kind| {
        let mut wr = reflector::store::Writer::<DynamicObject>::new(kind.api_resource());
        let store = wr.as_reader();
        wr.apply_watcher_event(&watcher::Event::Init);
        for (k, v) in &w.keda {
            if *k == kind {
                wr.apply_watcher_event(&watcher::Event::InitApply(
                    serde_json::from_value(v.clone()).unwrap(),
                ));
            }
        }
        wr.apply_watcher_event(&watcher::Event::InitDone);
        KedaStore {
            kind,
            store,
            listed: Arc::new(AtomicBool::new(w.keda_installed)),
        }
    })
    .collect();
    Stores {
        actors: fill(&[serde_json::to_value(a).unwrap()]),
        deployments: fill(&w.deployments),
        statefulsets: fill(&w.statefulsets),
        jobs: fill(&[]),
        services: fill(&[]),
        pods: fill(&w.pods),
        configmaps: fill(&[]),
        crds,
        keda,
    }
}

fn ctx(client: kube::Client, w: &World, a: &AsyncActor) -> Arc<Ctx> {
    let (_, runtime) = tokio::sync::watch::channel(None);
    let mut c = Ctx::new(
        &Deps::standalone(client),
        stores(w, a),
        Settings {
            sidecar_image: SIDECAR.into(),
            native_sidecar: false,
            runtime,
        },
    );
    c.clock = Arc::new(|| Timestamp::from_second(1_800_000_000).unwrap());
    Arc::new(c)
}

async fn scenario(a: AsyncActor, w: World, expected: Vec<Expect>) -> Arc<Ctx> {
    let (client, handle) = verifier::mock_client();
    let ctx = ctx(client, &w, &a);
    run(ctx.clone(), a, handle, expected).await;
    ctx
}

async fn run(ctx: Arc<Ctx>, a: AsyncActor, handle: verifier::Handle, expected: Vec<Expect>) {
    let task = tokio::spawn(actor::reconcile(Arc::new(a), ctx));
    verifier::verify(handle, expected, task)
        .await
        .expect("reconcile ok");
}

fn path(kind: Kind, name: &str) -> String {
    let ar = kind.api_resource();
    let base = if ar.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}", ar.api_version)
    };
    format!("{base}/namespaces/{NS}/{}/{name}", ar.plural)
}

fn not_found(kind: Kind, name: &str) -> Expect {
    expect(
        "GET",
        path(kind, name),
        |_, _| {},
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

fn found(kind: Kind, name: &str, obj: Value) -> Expect {
    expect("GET", path(kind, name), |_, _| {}, 200, obj)
}

fn apply(kind: Kind, name: &str, check: impl Fn(&Value) + Send + 'static) -> Expect {
    let reply = json!({"apiVersion": kind.api_resource().api_version, "kind": kind.name(), "metadata": {"name": name, "namespace": NS}});
    expect(
        "PATCH",
        path(kind, name),
        move |b, q| {
            assert!(
                q.contains("fieldManager=kube-standby") && q.contains("force=true"),
                "server-side apply: {q}"
            );
            assert_eq!(b["kind"], kind.name());
            check(b)
        },
        200,
        reply,
    )
}

/// The count handed to another field manager before our apply drops `spec.replicas`.
fn handover(kind: Kind, name: &str, replicas: i64) -> Expect {
    let reply = json!({"apiVersion": kind.api_resource().api_version, "kind": kind.name(), "metadata": {"name": name, "namespace": NS}});
    let name = name.to_string();
    expect(
        "PATCH",
        path(kind, &name),
        move |b, q| {
            assert!(
                q.contains("fieldManager=kube-standby-handover") && q.contains("force=true"),
                "server-side apply by the hand-over manager: {q}"
            );
            assert_eq!(
                b,
                &json!({"apiVersion": kind.api_resource().api_version, "kind": kind.name(),
                        "metadata": {"name": name}, "spec": {"replicas": replicas}}),
                "only the count"
            );
        },
        200,
        reply,
    )
}

fn delete(kind: Kind, name: &str) -> Expect {
    let uid = format!("uid-{kind:?}");
    expect(
        "DELETE",
        path(kind, name),
        move |b, _| assert_eq!(b["preconditions"]["uid"], uid.as_str()),
        200,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
    )
}

fn status(name: &str, check: impl Fn(&Value) + Send + 'static) -> Expect {
    expect(
        "PATCH",
        format!("/apis/asya.io/v1alpha1/namespaces/{NS}/asyncactors/{name}/status"),
        move |b, q| {
            assert!(q.contains("fieldManager=kube-standby"), "{q}");
            check(&b["status"])
        },
        200,
        json!({"apiVersion": "asya.io/v1alpha1", "kind": "AsyncActor", "metadata": {"name": name, "namespace": NS},
               "spec": {"queueName": "q", "transport": {"type": "sqs"}, "workload": {"template": {}}}}),
    )
}

fn event(reason: &'static str, note_has: &'static str) -> Expect {
    verifier::event(NS, reason, note_has)
}

fn cond(st: &Value, t: &str) -> (String, String) {
    let c = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == t)
        .unwrap_or_else(|| panic!("no {t} in {st}"));
    (
        c["status"].as_str().unwrap().into(),
        c["reason"].as_str().unwrap().into(),
    )
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.into(), b.into())
}

#[tokio::test]
async fn create_writes_workload_auth_and_scaled_object_then_status_and_events() {
    let a = hello(json!({}));
    let w = World {
        keda_installed: true,
        ..Default::default()
    };
    scenario(
        a,
        w,
        vec![
            not_found(Kind::Deployment, "hello-actor"),
            not_found(Kind::ScaledObject, "hello-actor"),
            not_found(Kind::TriggerAuthentication, "hello-actor"),
            apply(Kind::Deployment, "hello-actor", |b| {
                let c = &b["spec"]["template"]["spec"]["containers"];
                assert_eq!(c[0]["name"], "sidecar");
                assert_eq!(c[0]["image"], SIDECAR);
                assert!(b["spec"]["replicas"].is_null(), "KEDA owns replicas");
                assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "actor-uid");
                let pw = c[0]["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["name"] == "ASYA_RABBITMQ_PASSWORD")
                    .unwrap();
                assert_eq!(
                    pw["valueFrom"]["secretKeyRef"],
                    json!({"name": "rabbitmq-secret", "key": "password"})
                );
                assert!(pw["value"].is_null());
            }),
            apply(Kind::TriggerAuthentication, "hello-actor", |b| {
                assert_eq!(
                    b["spec"]["secretTargetRef"],
                    json!([{"parameter": "password", "name": "rabbitmq-secret", "key": "password"}])
                );
            }),
            apply(Kind::ScaledObject, "hello-actor", |b| {
                assert_eq!(b["spec"]["scaleTargetRef"]["name"], "hello-actor");
                assert_eq!(b["spec"]["triggers"][0]["type"], "rabbitmq");
            }),
            status("hello-actor", |st| {
                assert_eq!(
                    cond(st, "ScalingReady"),
                    pair("True", "ScaledObjectCreated")
                );
                assert_eq!(
                    cond(st, "WorkloadReady"),
                    pair("False", "WorkloadProgressing")
                );
                assert_eq!(cond(st, "RuntimeMounted"), pair("False", "NoRuntimeFile"));
                assert_eq!(st["workloadRef"]["kind"], "Deployment");
                assert_eq!(st["scaledObjectRef"]["name"], "hello-actor");
                assert_eq!(st["observedGeneration"], 1);
            }),
            event("WorkloadCreated", "Deployment hello-actor created"),
            event("ScaledObjectCreated", "ScaledObject hello-actor created"),
        ],
    )
    .await;
}

#[tokio::test]
async fn an_update_rewrites_only_what_changed_and_a_ready_workload_says_so() {
    let a = hello(json!({}));
    let w = || World {
        deployments: vec![as_applied(&a, Kind::Deployment)],
        keda: vec![
            (Kind::ScaledObject, as_applied(&a, Kind::ScaledObject)),
            (
                Kind::TriggerAuthentication,
                as_applied(&a, Kind::TriggerAuthentication),
            ),
        ],
        keda_installed: true,
        ..Default::default()
    };
    // Nothing changed: only the status (now ready) is written.
    scenario(
        a.clone(),
        w(),
        vec![status("hello-actor", |st| {
            assert_eq!(cond(st, "WorkloadReady"), pair("True", "WorkloadCreated"));
        })],
    )
    .await;
    // A new image and a new maximum: the Deployment and the ScaledObject, not the auth.
    let b = hello(json!({"spec": {"scaling": {"maxReplicas": 20},
        "workload": {"template": {"spec": {"containers": [{"name": "runtime", "image": "asya-runtime:v2"}]}}}}}));
    scenario(
        b,
        w(),
        vec![
            apply(Kind::Deployment, "hello-actor", |b| {
                assert_eq!(
                    b["spec"]["template"]["spec"]["containers"][1]["image"],
                    "asya-runtime:v2"
                );
            }),
            apply(Kind::ScaledObject, "hello-actor", |b| {
                assert_eq!(b["spec"]["maxReplicaCount"], 20)
            }),
            status("hello-actor", |_| {}),
        ],
    )
    .await;
}

#[tokio::test]
async fn scaling_off_deletes_keda_objects_and_sets_replicas_then_on_again() {
    let on = hello(json!({}));
    let off = hello(json!({"spec": {"scaling": {"enabled": false}, "workload": {"replicas": 3}}}));
    scenario(
        off.clone(),
        World {
            deployments: vec![as_applied(&on, Kind::Deployment)],
            keda: vec![
                (Kind::ScaledObject, as_applied(&on, Kind::ScaledObject)),
                (
                    Kind::TriggerAuthentication,
                    as_applied(&on, Kind::TriggerAuthentication),
                ),
            ],
            keda_installed: true,
            ..Default::default()
        },
        vec![
            delete(Kind::ScaledObject, "hello-actor"),
            delete(Kind::TriggerAuthentication, "hello-actor"),
            apply(Kind::Deployment, "hello-actor", |b| {
                assert_eq!(b["spec"]["replicas"], 3)
            }),
            status("hello-actor", |st| {
                assert_eq!(cond(st, "ScalingReady"), pair("True", "ScalingDisabled"));
                assert!(st.get("scaledObjectRef").is_none(), "{st}");
            }),
            event("ScalingRemoved", "ScaledObject hello-actor deleted"),
        ],
    )
    .await;
    // On again: the objects come back and replicas are left to KEDA.
    scenario(
        on,
        World {
            deployments: vec![as_applied(&off, Kind::Deployment)],
            keda_installed: true,
            ..Default::default()
        },
        vec![
            not_found(Kind::ScaledObject, "hello-actor"),
            not_found(Kind::TriggerAuthentication, "hello-actor"),
            handover(Kind::Deployment, "hello-actor", 3),
            apply(Kind::Deployment, "hello-actor", |b| {
                assert!(b["spec"]["replicas"].is_null())
            }),
            apply(Kind::TriggerAuthentication, "hello-actor", |_| {}),
            apply(Kind::ScaledObject, "hello-actor", |_| {}),
            status("hello-actor", |st| {
                assert_eq!(
                    cond(st, "ScalingReady"),
                    pair("True", "ScaledObjectCreated")
                )
            }),
            event("ScaledObjectCreated", "created"),
        ],
    )
    .await;
}

#[tokio::test]
async fn keda_missing_then_installed() {
    let a = hello(json!({}));
    // No KEDA CRDs: the workload with workload.replicas (default 1), one Warning.
    scenario(
        a.clone(),
        World::default(),
        vec![
            not_found(Kind::Deployment, "hello-actor"),
            apply(Kind::Deployment, "hello-actor", |b| {
                assert_eq!(b["spec"]["replicas"], 1)
            }),
            status("hello-actor", |st| {
                assert_eq!(cond(st, "ScalingReady"), pair("False", "KedaNotInstalled"));
                assert!(st.get("scaledObjectRef").is_none());
            }),
            event("WorkloadCreated", "created"),
            event("KedaNotInstalled", "scaledobjects.keda.sh"),
        ],
    )
    .await;
    // KEDA's CRDs are established now; its caches have not listed yet: looked up by name.
    let without = hello(json!({"spec": {"scaling": {"enabled": false}}}));
    let mut world = World {
        deployments: vec![as_applied(&without, Kind::Deployment)],
        keda_installed: true,
        ..Default::default()
    };
    world.keda.clear();
    let (client, handle) = verifier::mock_client();
    let c = ctx(client, &world, &a);
    for k in &c.stores.keda {
        k.listed.store(false, std::sync::atomic::Ordering::Relaxed);
    }
    run(
        c,
        a,
        handle,
        vec![
            not_found(Kind::ScaledObject, "hello-actor"),
            not_found(Kind::ScaledJob, "hello-actor"),
            not_found(Kind::TriggerAuthentication, "hello-actor"),
            handover(Kind::Deployment, "hello-actor", 1),
            apply(Kind::Deployment, "hello-actor", |b| {
                assert!(b["spec"]["replicas"].is_null())
            }),
            apply(Kind::TriggerAuthentication, "hello-actor", |_| {}),
            apply(Kind::ScaledObject, "hello-actor", |_| {}),
            status("hello-actor", |st| {
                assert_eq!(
                    cond(st, "ScalingReady"),
                    pair("True", "ScaledObjectCreated")
                )
            }),
            event("ScaledObjectCreated", "created"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_type_change_replaces_the_deployment_with_a_statefulset() {
    let before = hello(json!({"spec": {"scaling": {"enabled": false}}}));
    let after = hello(
        json!({"spec": {"scaling": {"enabled": false}, "workload": {"type": "StatefulSet"}}}),
    );
    scenario(
        after,
        World {
            deployments: vec![as_applied(&before, Kind::Deployment)],
            keda_installed: true,
            ..Default::default()
        },
        vec![
            not_found(Kind::StatefulSet, "hello-actor"),
            not_found(Kind::Service, "hello-actor"),
            delete(Kind::Deployment, "hello-actor"),
            apply(Kind::Service, "hello-actor", |b| {
                assert_eq!(b["spec"]["clusterIP"], "None")
            }),
            apply(Kind::StatefulSet, "hello-actor", |b| {
                assert_eq!(b["spec"]["serviceName"], "hello-actor");
                assert_eq!(
                    b["spec"]["template"]["spec"]["containers"][0]["name"],
                    "sidecar"
                );
            }),
            status("hello-actor", |st| {
                assert_eq!(st["workloadRef"]["kind"], "StatefulSet")
            }),
            event("WorkloadReplaced", "the old Deployment was deleted"),
            event("WorkloadCreated", "StatefulSet hello-actor created"),
        ],
    )
    .await;
}

fn failing_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hello-actor-abc", "namespace": NS, "uid": "pod-uid", "labels": {"asya.io/actor": "hello-actor"}},
        "status": {"phase": "Pending", "containerStatuses": [
            {"name": "sidecar", "ready": false, "restartCount": 0, "image": SIDECAR, "imageID": "",
             "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "secret \"rabbitmq-secret\" not found"}}},
            {"name": "runtime", "ready": false, "restartCount": 0, "image": "asya-runtime:latest", "imageID": "",
             "state": {"waiting": {"reason": "ContainerCreating"}}}]}})
}

#[tokio::test]
async fn pods_failing_on_a_missing_secret_show_in_status_with_one_warning() {
    let a = hello(json!({"spec": {"scaling": {"enabled": false}}}));
    let mut dep = as_applied(&a, Kind::Deployment);
    dep["status"]["readyReplicas"] = 0.into();
    let w = World {
        deployments: vec![dep],
        pods: vec![failing_pod()],
        keda_installed: true,
        ..Default::default()
    };
    let (client, handle) = verifier::mock_client();
    let c = ctx(client, &w, &a);
    run(
        c.clone(),
        a.clone(),
        handle,
        vec![
            status("hello-actor", |st| {
                assert_eq!(
                    cond(st, "WorkloadReady"),
                    pair("False", "CreateContainerConfigError")
                );
                let msg = st["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["type"] == "WorkloadReady")
                    .unwrap()["message"]
                    .as_str()
                    .unwrap()
                    .to_string();
                assert!(
                    msg.contains("rabbitmq-secret") && msg.contains("hello-actor-abc"),
                    "{msg}"
                );
            }),
            event(
                "CreateContainerConfigError",
                "secret \"rabbitmq-secret\" not found",
            ),
        ],
    )
    .await;
    // The next reconcile (the same state) writes and reports nothing: one Warning in all.
    let (client, handle) = verifier::mock_client();
    let mut again = Ctx::new(
        &Deps::standalone(client),
        c.stores.clone(),
        c.settings.clone(),
    );
    again.clock = c.clock.clone();
    // Carry the status memory over: what the first reconcile wrote.
    let mut seen = a.clone();
    seen.status = c.last_status(&a, None::<&kube_standby::api::asya::AsyncActorStatus>);
    assert!(seen.status.is_some());
    run(Arc::new(again), seen, handle, vec![]).await;
}

#[tokio::test]
async fn a_clash_with_a_foreign_deployment_changes_nothing_and_warns_once() {
    let a = hello(json!({}));
    let theirs = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "hello-actor", "namespace": NS, "uid": "theirs"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {}}});
    scenario(
        a,
        World {
            keda_installed: true,
            ..Default::default()
        },
        vec![
            found(Kind::Deployment, "hello-actor", theirs),
            not_found(Kind::ScaledObject, "hello-actor"),
            not_found(Kind::TriggerAuthentication, "hello-actor"),
            status("hello-actor", |st| {
                assert_eq!(cond(st, "WorkloadReady"), pair("False", "WorkloadConflict"));
                assert!(st.get("workloadRef").is_none());
            }),
            event("WorkloadConflict", "not controlled by this AsyncActor"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_workload_the_api_server_refuses_is_reported() {
    let a = hello(json!({"spec": {"scaling": {"enabled": false}}}));
    scenario(
        a,
        World {
            keda_installed: true,
            ..Default::default()
        },
        vec![
            not_found(Kind::Deployment, "hello-actor"),
            expect("PATCH", path(Kind::Deployment, "hello-actor"), |_, _| {}, 422,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
                       "message": "Deployment.apps \"hello-actor\" is invalid: spec.template.spec.containers[1].image: Required value"})),
            status("hello-actor", |st| {
                assert_eq!(cond(st, "WorkloadReady"), pair("False", "WorkloadRejected"))
            }),
            event("WorkloadRejected", "Required value"),
        ],
    )
    .await;
}
