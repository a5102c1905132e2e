//! The HSD reconciler against a mocked API server (kube-rs ApiServerVerifier style): each
//! scenario lists the requests it must make, in order, with their bodies checked, and
//! then that it makes no other.
use kube_standby::controller::Deps;
use std::sync::Arc;
use std::time::Duration;

#[path = "support/verifier.rs"]
mod verifier;

use http::{Request, Response};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::reflector;
use kube::runtime::watcher;
use kube::Client;
use kube_standby::api::HotStandbyDeployment;
use kube_standby::controller::hsd::{self, Ctx, Stores};
use kube_standby::metrics::Metrics;
use serde_json::{json, Value};

use verifier::{expect, Expect, Handle};

const NOW: i64 = 1_800_000_000;

struct World {
    pods: Vec<Value>,
    rss: Vec<Value>,
    deployments: Vec<Value>,
}

fn hsd(extra: Value) -> HotStandbyDeployment {
    let mut v = json!({
        "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
        "metadata": {"name": "game", "namespace": "ns", "uid": "hsd-uid", "generation": 1, "resourceVersion": "10"},
        "spec": {"idleTarget": 1, "minReplicas": 0, "maxReplicas": 10, "scaleDownDelaySeconds": 30,
                 "selector": {"matchLabels": {"app": "game"}},
                 "podTemplate": {"metadata": {"labels": {"app": "game"}}, "spec": {"containers": [{"name": "app", "image": "game:1"}]}}}
    });
    json_patch::merge(&mut v, &extra);
    serde_json::from_value(v).unwrap()
}

/// The child as we would have applied it with `replicas`, as the API returns it.
fn child(h: &HotStandbyDeployment, replicas: i32, spec_replicas: i32) -> Value {
    let tpl = hsd::child::pod_template(h).unwrap();
    let mut d = serde_json::to_value(hsd::child::child_deployment(h, tpl, replicas)).unwrap();
    d["metadata"]["uid"] = "dep-uid".into();
    d["metadata"]["resourceVersion"] = "5".into();
    d["spec"]["replicas"] = spec_replicas.into();
    d["status"] = json!({"readyReplicas": spec_replicas});
    d
}

fn rs() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
           "metadata": {"name": "game-workload-abc", "namespace": "ns", "uid": "rs-uid", "labels": {"app": "game", "hsd.paia.tech/name": "game"},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "game-workload", "uid": "dep-uid", "controller": true}]},
           "spec": {"selector": {"matchLabels": {"app": "game"}}}})
}

fn pod(name: &str, busy: bool, age: i64) -> Value {
    let created = Timestamp::from_second(NOW - age).unwrap().to_string();
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "resourceVersion": format!("rv-{name}"),
                        "creationTimestamp": created,
                        "labels": {"app": "game", "hsd.paia.tech/name": "game"},
                        "annotations": {"paia.tech/busy": if busy { "true" } else { "false" },
                                        "controller.kubernetes.io/pod-deletion-cost": if busy { "1000000" } else { "1" }},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "game-workload-abc", "uid": "rs-uid", "controller": true}]},
           "spec": {"containers": [{"name": "app", "image": "game:1"}]},
           "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn stores(w: &World) -> Stores {
    stores_synced(w, true)
}

fn stores_synced(w: &World, synced: bool) -> Stores {
    // Children kept as the controller's watches keep them (no template, no RS template).
    Stores::new(
        fill_store(&w.pods, synced, |_| {}),
        fill_store(&w.rss, synced, hsd::child::strip_replicaset),
        fill_store(
            &w.deployments,
            synced,
            kube_standby::controller::watch::strip_managed,
        ),
    )
}

fn fill_store<K>(items: &[Value], synced: bool, strip: fn(&mut K)) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
{
    // The watcher's initial list: objects land in the store (and it turns ready) only at
    // InitDone; an unsynced store is still empty.
    let (s, mut wr) = reflector::store::<K>();
    wr.apply_watcher_event(&watcher::Event::Init);
    for i in items {
        let mut k: K = serde_json::from_value(i.clone()).unwrap();
        strip(&mut k);
        wr.apply_watcher_event(&watcher::Event::InitApply(k));
    }
    if synced {
        wr.apply_watcher_event(&watcher::Event::InitDone);
    }
    s
}

fn event(reason: &'static str, note_has: &'static str) -> Expect {
    verifier::event("ns", reason, note_has)
}

fn status(check: impl Fn(&Value) + Send + 'static) -> Expect {
    expect(
        "PATCH",
        "/apis/apps.paia.tech/v1alpha1/namespaces/ns/hotstandbydeployments/game/status",
        move |b, q| {
            assert!(
                q.contains("fieldManager=kube-standby") && q.contains("force=true"),
                "status is server-side applied: {q}"
            );
            assert_eq!(b["kind"], "HotStandbyDeployment");
            check(&b["status"])
        },
        200,
        json!({"apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment", "metadata": {"name": "game", "namespace": "ns"}, "spec": {"idleTarget": 1, "selector": {}, "podTemplate": {}}}),
    )
}

fn apply_child(check: impl Fn(&Value) + Send + 'static) -> Expect {
    expect(
        "PATCH",
        "/apis/apps/v1/namespaces/ns/deployments/game-workload",
        move |b, q| {
            assert!(
                q.contains("fieldManager=kube-standby") && q.contains("force=true"),
                "server-side apply: {q}"
            );
            check(b)
        },
        200,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "game-workload", "namespace": "ns"}, "spec": {"selector": {}, "template": {}}}),
    )
}

async fn scenario(
    h: HotStandbyDeployment,
    world: World,
    expected: Vec<Expect>,
) -> kube::runtime::controller::Action {
    let (client, handle) = verifier::mock_client();
    let mut ctx = Ctx::new(&Deps::standalone(client), stores(&world));
    ctx.clock = Arc::new(|| Timestamp::from_second(NOW).unwrap());
    let task = tokio::spawn(hsd::reconcile(Arc::new(h), Arc::new(ctx)));
    verifier::verify(handle, expected, task)
        .await
        .expect("reconcile ok")
}

fn cond<'a>(st: &'a Value, t: &str) -> &'a Value {
    st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == t)
        .unwrap_or_else(|| panic!("no {t} condition in {st}"))
}

#[tokio::test]
async fn create_applies_the_child_with_owner_and_desired_replicas() {
    let h = hsd(json!({}));
    scenario(
        h,
        World {
            pods: vec![],
            rss: vec![],
            deployments: vec![],
        },
        vec![
            apply_child(|b| {
                assert_eq!(b["spec"]["replicas"], 1);
                assert_eq!(b["spec"]["selector"]["matchLabels"], json!({"app": "game"}));
                assert_eq!(
                    b["spec"]["template"]["metadata"]["labels"]["hsd.paia.tech/name"],
                    "game"
                );
                assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "hsd-uid");
                assert_eq!(b["metadata"]["ownerReferences"][0]["controller"], true);
                assert_eq!(b["metadata"]["annotations"]["hsd.paia.tech/replicas"], "1");
            }),
            event("ScaledUp", "busy=0 idle=0 desired=1: replicas 0 -> 1"),
            status(|st| {
                assert_eq!(st["desiredReplicas"], 1);
                assert_eq!(st["replicas"], 1);
                assert_eq!(st["observedGeneration"], 1);
                assert_eq!(cond(st, "ScalingLimited")["status"], "False");
            }),
        ],
    )
    .await;
}

#[tokio::test]
async fn busy_pods_scale_up_at_once() {
    let h = hsd(json!({}));
    let world = World {
        pods: vec![pod("a", true, 100), pod("b", true, 50), pod("c", false, 10)],
        rss: vec![rs()],
        deployments: vec![child(&h, 2, 2)],
    };
    scenario(
        h,
        world,
        vec![
            apply_child(|b| assert_eq!(b["spec"]["replicas"], 3)),
            event("ScaledUp", "busy=2 idle=1 desired=3: replicas 2 -> 3"),
            status(|st| {
                assert_eq!(
                    (
                        st["busyCount"].as_i64(),
                        st["idleCount"].as_i64(),
                        st["desiredReplicas"].as_i64()
                    ),
                    (Some(2), Some(1), Some(3))
                );
            }),
        ],
    )
    .await;
}

#[tokio::test]
async fn scale_down_is_delayed_then_deletes_idle_pods_with_preconditions() {
    // 1 busy (youngest, not ready) + 3 idle, idleTarget 1 -> desired 2 from 4.
    let pods = vec![
        pod("idle-old", false, 300),
        pod("idle-mid", false, 200),
        pod("idle-new", false, 100),
        pod("busy-young", true, 5),
    ];
    let h = hsd(json!({}));
    let world = || World {
        pods: pods.clone(),
        rss: vec![rs()],
        deployments: vec![child(&hsd(json!({})), 4, 4)],
    };
    let action = scenario(
        h,
        world(),
        vec![
            event("ScaleDownPending", "busy=1 idle=3 desired=2"),
            status(|st| {
                assert_eq!(st["replicas"], 4);
                assert_eq!(
                    st["scaleDownPendingSince"],
                    Timestamp::from_second(NOW).unwrap().to_string()
                );
                assert_eq!(cond(st, "ScaleDownPending")["status"], "True");
            }),
        ],
    )
    .await;
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_millis(30_050))
    );

    // 31 s later (pending since recorded in status): delete two idle pods, newest first.
    let since = Timestamp::from_second(NOW - 31).unwrap().to_string();
    let h = hsd(json!({"status": {"scaleDownPendingSince": since}}));
    let del = |name: &'static str| {
        expect(
            "DELETE",
            format!("/api/v1/namespaces/ns/pods/{name}"),
            move |b, _| {
                assert_eq!(b["preconditions"]["uid"], format!("uid-{name}"));
                assert_eq!(b["preconditions"]["resourceVersion"], format!("rv-{name}"));
            },
            200,
            pod(name, false, 0),
        )
    };
    scenario(
        h,
        world(),
        vec![
            del("idle-new"),
            del("idle-mid"),
            apply_child(|b| assert_eq!(b["spec"]["replicas"], 2)),
            event("ScaledDown", "deleted idle pods idle-new, idle-mid"),
            status(|st| {
                assert_eq!(st["replicas"], 2);
                assert!(
                    st.get("scaleDownPendingSince").is_none()
                        || st["scaleDownPendingSince"].is_null(),
                    "{st}"
                );
                assert_eq!(cond(st, "ScaleDownPending")["status"], "False");
            }),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_victim_that_changed_is_kept_and_counted() {
    let since = Timestamp::from_second(NOW - 31).unwrap().to_string();
    let h = hsd(json!({"spec": {"idleTarget": 0}, "status": {"scaleDownPendingSince": since}}));
    let world = World {
        pods: vec![pod("a", false, 10)],
        rss: vec![rs()],
        deployments: vec![child(&hsd(json!({"spec": {"idleTarget": 0}})), 1, 1)],
    };
    scenario(
        h,
        world,
        vec![
            expect("DELETE", "/api/v1/namespaces/ns/pods/a", |_, _| {}, 409,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "Precondition failed: ResourceVersion"})),
            status(|st| assert_eq!(st["replicas"], 1)),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_foreign_replicas_change_is_put_back_with_an_event() {
    let h = hsd(json!({}));
    // We wrote 2; someone scaled to 7 and the ReplicaSet has not created pods yet.
    let world = World {
        pods: vec![pod("a", true, 10), pod("b", false, 10)],
        rss: vec![rs()],
        deployments: vec![child(&h, 2, 7)],
    };
    scenario(
        h,
        world,
        vec![
            apply_child(|b| assert_eq!(b["spec"]["replicas"], 2)),
            event(
                "ForeignScaleReverted",
                "changed from 2 to 7 by another actor; set back to 2",
            ),
            status(|st| assert_eq!(st["replicas"], 2)),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_changed_selector_replaces_the_child() {
    let old = hsd(
        json!({"spec": {"selector": {"matchLabels": {"app": "old"}}, "podTemplate": {"metadata": {"labels": {"app": "old"}}}}}),
    );
    let h = hsd(json!({}));
    scenario(
        h,
        World {
            pods: vec![],
            rss: vec![],
            deployments: vec![child(&old, 2, 2)],
        },
        vec![
            expect(
                "DELETE",
                "/apis/apps/v1/namespaces/ns/deployments/game-workload",
                |b, _| {
                    assert_eq!(b["preconditions"]["uid"], "dep-uid");
                    assert_eq!(b["propagationPolicy"], "Background");
                },
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
            event("SelectorChanged", "is replaced"),
        ],
    )
    .await;
}

#[tokio::test]
async fn steady_state_makes_no_writes() {
    let h = hsd(json!({}));
    let world = World {
        pods: vec![pod("a", true, 10), pod("b", false, 10)],
        rss: vec![rs()],
        deployments: vec![child(&h, 2, 2)],
    };
    // First pass writes the status once ...
    scenario(
        h.clone(),
        World {
            pods: world.pods.clone(),
            rss: world.rss.clone(),
            deployments: world.deployments.clone(),
        },
        vec![status(|_| {})],
    )
    .await;
    // ... with that status in place, nothing at all.
    let plan_status = {
        let pods: Vec<_> = world
            .pods
            .iter()
            .map(|p| serde_json::from_value::<Pod>(p.clone()).unwrap())
            .collect();
        let probes = kube_standby::probe::ProbeCache::default();
        let views: Vec<_> = pods
            .iter()
            .map(|p| hsd::child::pod_view(p, &h, &probes, Some("rs-uid")))
            .collect();
        let o = hsd::plan::Observed {
            spec: &h.spec,
            current_replicas: Some(2),
            our_replicas: Some(2),
            pods: &views,
            pending_since: None,
            now: Timestamp::from_second(NOW).unwrap(),
            template_changed: false,
        };
        let p = hsd::plan::plan(&o);
        hsd::child::build_status(
            &h,
            &p,
            2,
            2,
            &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::from_second(NOW).unwrap(),
            ),
        )
    };
    let mut settled = h.clone();
    settled.status = Some(plan_status);
    scenario(settled, world, vec![]).await;
}

#[tokio::test]
async fn invalid_spec_sets_a_condition_and_an_event_once() {
    let h = hsd(json!({"spec": {"minReplicas": 5, "maxReplicas": 2}}));
    scenario(
        h.clone(),
        World {
            pods: vec![],
            rss: vec![],
            deployments: vec![],
        },
        vec![
            status(|st| {
                let c = cond(st, "InvalidSpec");
                assert_eq!(c["status"], "True");
                assert!(c["message"]
                    .as_str()
                    .unwrap()
                    .contains("minReplicas (5) is greater than maxReplicas (2)"));
            }),
            event("InvalidSpec", "minReplicas (5)"),
        ],
    )
    .await;
    // Reconciling again with that status: no write, no event (no churn).
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::from_second(NOW).unwrap());
    let mut settled = h.clone();
    settled.status = Some(hsd::child::invalid_status(
        &h,
        "InvalidSpec",
        &kube_standby::controller::hsd::plan::validate(&h.spec).join("; "),
        &now,
    ));
    scenario(
        settled,
        World {
            pods: vec![],
            rss: vec![],
            deployments: vec![],
        },
        vec![],
    )
    .await;
}

#[tokio::test]
async fn a_template_the_api_server_rejects_becomes_a_condition() {
    let h = hsd(json!({}));
    scenario(
        h,
        World { pods: vec![], rss: vec![], deployments: vec![] },
        vec![
            expect("PATCH", "/apis/apps/v1/namespaces/ns/deployments/game-workload", |_, _| {}, 422,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
                       "message": "Deployment.apps \"game-workload\" is invalid: spec.template.spec.containers[0].image: Required value"})),
            status(|st| {
                let c = cond(st, "InvalidSpec");
                assert_eq!(c["reason"], "TemplateRejected");
                assert!(c["message"].as_str().unwrap().contains("Required value"));
            }),
            event("TemplateRejected", "image: Required value"),
        ],
    )
    .await;
}

#[tokio::test]
async fn an_api_error_is_returned_not_panicked() {
    let h = hsd(json!({}));
    let (svc, mut handle): (_, Handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Ctx::new(
        &Deps::standalone(Client::new(svc, "default")),
        stores(&World {
            pods: vec![],
            rss: vec![],
            deployments: vec![],
        }),
    );
    let task = tokio::spawn(hsd::reconcile(Arc::new(h), Arc::new(ctx)));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::builder().status(500).body(Body::from(serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "etcd down"})).unwrap())).unwrap());
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(
        err.metric_label(),
        "server",
        "a 500 is labelled by its class (issue 17: no catch-all \"kube\")"
    );
}

#[tokio::test]
async fn a_rejected_template_is_not_retried_on_every_event() {
    let h = hsd(json!({}));
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::from_second(NOW - 10).unwrap(),
    );
    let mut rejected = h.clone();
    rejected.status = Some(hsd::child::invalid_status(
        &h,
        "TemplateRejected",
        "the API server rejected the child Deployment: bad",
        &now,
    ));
    // Same generation, rejected 10 s ago: no apply, no status write.
    scenario(
        rejected.clone(),
        World {
            pods: vec![],
            rss: vec![],
            deployments: vec![],
        },
        vec![],
    )
    .await;
    // A new generation is tried at once.
    rejected.metadata.generation = Some(2);
    scenario(
        rejected,
        World {
            pods: vec![],
            rss: vec![],
            deployments: vec![],
        },
        vec![
            apply_child(|b| assert_eq!(b["spec"]["replicas"], 1)),
            event("ScaledUp", "replicas 0 -> 1"),
            status(|st| assert_eq!(st["observedGeneration"], 2)),
        ],
    )
    .await;
}

/// Operator restart with busy pods up: a reconcile that arrives before the pod, ReplicaSet
/// and Deployment caches have listed must not act on their emptiness (it used to see zero
/// pods and scale down). It waits, then acts on the synced caches.
#[tokio::test]
async fn a_reconcile_before_the_caches_sync_does_nothing_until_they_do() {
    let h = hsd(json!({"spec": {"idleTarget": 2, "scaleDownDelaySeconds": 0}}));
    let (client, mut handle) = verifier::mock_client();
    let (pods, mut pw) = reflector::store();
    let (rss, mut rw) = reflector::store();
    let (deps, mut dw) = reflector::store();
    pw.apply_watcher_event(&watcher::Event::Init);
    // The pod index is fed as the pod watch feeds it (rebuilt at the end of the list).
    let members = hsd::members::PodMembers::default();
    let (pod_cache, index) = (pods.clone(), members.clone());
    let ctx = Ctx::new(
        &Deps::standalone(client),
        Stores {
            pods,
            replicasets: rss,
            deployments: deps,
            members,
        },
    );
    let task = tokio::spawn(hsd::reconcile(Arc::new(h.clone()), Arc::new(ctx)));
    let early = tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await;
    assert!(
        early.is_err(),
        "no request may be made before the caches sync"
    );
    assert!(!task.is_finished(), "the reconcile waits for the caches");

    // The caches list: 2 busy + 2 idle pods, the child at 4 = busy + idleTarget.
    for p in [
        pod("a", true, 40),
        pod("b", true, 30),
        pod("c", false, 20),
        pod("d", false, 10),
    ] {
        pw.apply_watcher_event(&watcher::Event::InitApply(
            serde_json::from_value(p).unwrap(),
        ));
    }
    pw.apply_watcher_event(&watcher::Event::InitDone);
    index.on_event(&pod_cache, watcher::Event::InitDone);
    rw.apply_watcher_event(&watcher::Event::InitApply(
        serde_json::from_value(rs()).unwrap(),
    ));
    rw.apply_watcher_event(&watcher::Event::InitDone);
    dw.apply_watcher_event(&watcher::Event::InitApply(
        serde_json::from_value(child(&h, 4, 4)).unwrap(),
    ));
    dw.apply_watcher_event(&watcher::Event::InitDone);
    // Only the status is written: replicas stay at busy + idleTarget.
    verifier::verify(
        handle,
        vec![status(|st| {
            assert_eq!(st["replicas"], 4);
            assert_eq!(st["busyCount"], 2);
            assert_eq!(st["desiredReplicas"], 4);
        })],
        task,
    )
    .await
    .expect("reconcile ok");
}

/// A status field that became empty is removed: the apply leaves it out, and when the API
/// server still returns it (owned by an older writer, e.g. a merge patch of a previous
/// version) an explicit null clears it.
#[tokio::test]
async fn an_emptied_status_field_is_cleared_even_when_an_older_writer_owns_it() {
    let since = Timestamp::from_second(NOW - 31).unwrap().to_string();
    let h = hsd(json!({"spec": {"idleTarget": 2}, "status": {"scaleDownPendingSince": since}}));
    // desired (2) equals the count: the pending scale-down is over.
    let world = World {
        pods: vec![pod("a", false, 20), pod("b", false, 10)],
        rss: vec![rs()],
        deployments: vec![child(&hsd(json!({"spec": {"idleTarget": 2}})), 2, 2)],
    };
    let stale = since.clone();
    scenario(
        h,
        world,
        vec![
            expect(
                "PATCH",
                "/apis/apps.paia.tech/v1alpha1/namespaces/ns/hotstandbydeployments/game/status",
                |b, q| {
                    assert!(q.contains("fieldManager=kube-standby"), "{q}");
                    assert!(b["status"].get("scaleDownPendingSince").is_none(), "{b}");
                    assert_eq!(cond(&b["status"], "ScaleDownPending")["status"], "False");
                },
                200,
                json!({"apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
                       "metadata": {"name": "game", "namespace": "ns"},
                       "spec": {"idleTarget": 2, "selector": {}, "podTemplate": {}},
                       "status": {"replicas": 2, "scaleDownPendingSince": stale}}),
            ),
            expect(
                "PATCH",
                "/apis/apps.paia.tech/v1alpha1/namespaces/ns/hotstandbydeployments/game/status",
                |b, q| {
                    assert!(!q.contains("fieldManager"), "a merge patch: {q}");
                    assert_eq!(b, &json!({"status": {"scaleDownPendingSince": null}}));
                },
                200,
                json!({"apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
                       "metadata": {"name": "game", "namespace": "ns"},
                       "spec": {"idleTarget": 2, "selector": {}, "podTemplate": {}}}),
            ),
        ],
    )
    .await;
}

/// A context over `world` with its own metrics registry, the clock at NOW, and the handle
/// that answers for the API server.
fn ctx_with_metrics(world: &World) -> (Ctx, verifier::Handle, Arc<Metrics>) {
    let (client, handle) = verifier::mock_client();
    let metrics = Arc::new(Metrics::new());
    let mut ctx = Ctx::new(
        &Deps {
            metrics: metrics.clone(),
            ..Deps::standalone(client)
        },
        stores(world),
    );
    ctx.clock = Arc::new(|| Timestamp::from_second(NOW).unwrap());
    (ctx, handle, metrics)
}

/// An HSD that is gone leaves nothing behind: no debug entry, no per-object gauges, no
/// remembered status.
#[tokio::test]
async fn a_deleted_hsd_leaves_no_gauges_or_debug_state() {
    let h = hsd(json!({}));
    let (ctx, handle, metrics) = ctx_with_metrics(&World {
        pods: vec![],
        rss: vec![],
        deployments: vec![],
    });
    let ctx = Arc::new(ctx);
    let task = tokio::spawn(hsd::reconcile(Arc::new(h), ctx.clone()));
    verifier::verify(
        handle,
        vec![
            apply_child(|_| {}),
            event("ScaledUp", "replicas 0 -> 1"),
            status(|_| {}),
        ],
        task,
    )
    .await
    .expect("reconcile ok");
    assert!(metrics.render().contains("name=\"game\""));
    assert_ne!(ctx.debug.snapshot(), json!({}));
    assert_eq!(ctx.remembered(), 1);
    hsd::forget(&ctx, "ns", "game");
    assert!(
        !metrics.render().contains("name=\"game\""),
        "{}",
        metrics.render()
    );
    assert_eq!(ctx.debug.snapshot(), json!({}));
    assert_eq!(ctx.remembered(), 0);
}

fn pod_patch(name: &'static str, check: impl Fn(&Value) + Send + 'static) -> Expect {
    expect(
        "PATCH",
        format!("/api/v1/namespaces/ns/pods/{name}"),
        move |b, _| check(b),
        200,
        pod(name, false, 0),
    )
}

/// A pod that just turned busy gets the protected pod-deletion-cost (so the ReplicaSet, if
/// it ever chooses, takes idle or new pods first); pods whose cost is right are not written.
#[tokio::test]
async fn a_pod_that_turns_busy_gets_the_protected_deletion_cost() {
    let h = hsd(json!({}));
    let mut turned = pod("b", true, 10);
    turned["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"] = "1".into();
    let world = World {
        pods: vec![pod("a", true, 20), turned, pod("c", false, 5)],
        rss: vec![rs()],
        deployments: vec![child(&h, 3, 3)],
    };
    scenario(
        h,
        world,
        vec![
            pod_patch("b", |b| {
                assert_eq!(
                    b["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"],
                    "1000000"
                )
            }),
            status(|st| assert_eq!(st["busyCount"], 2)),
        ],
    )
    .await;
}

/// A template change with a busy pod: the busy pod first leaves its ReplicaSet (a
/// `pod-template-hash` nobody selects, the HSD as owner, guarded by its resourceVersion),
/// and the child keeps its current template until then; no pod is deleted.
#[tokio::test]
async fn a_template_change_detaches_busy_pods_before_the_rollout() {
    let old = hsd(json!({}));
    let new = hsd(json!({"metadata": {"generation": 2},
        "spec": {"podTemplate": {"metadata": {"labels": {"app": "game"}}, "spec": {"containers": [{"name": "app", "image": "game:2"}]}}}}));
    let world = World {
        pods: vec![pod("busy", true, 20), pod("idle", false, 10)],
        rss: vec![rs()],
        deployments: vec![child(&old, 2, 2)],
    };
    scenario(
        new,
        world,
        vec![
            pod_patch("busy", |b| {
                let m = &b["metadata"];
                assert_eq!(m["uid"], "uid-busy");
                assert_eq!(m["resourceVersion"], "rv-busy");
                assert_eq!(m["labels"]["hsd.paia.tech/detached"], "true");
                assert!(m["labels"]["pod-template-hash"]
                    .as_str()
                    .unwrap()
                    .starts_with("detached-"));
                assert_eq!(m["ownerReferences"][0]["kind"], "HotStandbyDeployment");
                assert_eq!(m["ownerReferences"][0]["controller"], false);
            }),
            event(
                "BusyPodDetached",
                "busy pod busy of an old template revision",
            ),
            status(|st| {
                assert_eq!(cond(st, "RolloutProtectingBusyPods")["status"], "True");
                assert!(cond(st, "RolloutProtectingBusyPods")["message"]
                    .as_str()
                    .unwrap()
                    .contains("template change waits"));
            }),
        ],
    )
    .await;
}

/// A held rollout that must also scale: the cache keeps the child without its template, so
/// the child is read once, and written with the template (and template hash) it has, never
/// the new one; the busy pod leaves its ReplicaSet first.
#[tokio::test]
async fn a_held_child_is_scaled_with_the_template_read_from_the_api_server() {
    let old = hsd(json!({}));
    let new = hsd(json!({"metadata": {"generation": 2},
        "spec": {"idleTarget": 2, "podTemplate": {"metadata": {"labels": {"app": "game"}}, "spec": {"containers": [{"name": "app", "image": "game:2"}]}}}}));
    let current = child(&old, 2, 2);
    let old_hash = current["metadata"]["annotations"]["hsd.paia.tech/template-hash"].clone();
    assert!(old_hash.is_string());
    let world = World {
        pods: vec![pod("busy", true, 20), pod("idle", false, 10)],
        rss: vec![rs()],
        deployments: vec![current.clone()],
    };
    scenario(
        new,
        world,
        vec![
            pod_patch("busy", |b| {
                assert_eq!(b["metadata"]["labels"]["hsd.paia.tech/detached"], "true");
            }),
            expect(
                "GET",
                "/apis/apps/v1/namespaces/ns/deployments/game-workload",
                |_, _| {},
                200,
                current,
            ),
            apply_child(move |b| {
                assert_eq!(
                    b["spec"]["template"]["spec"]["containers"][0]["image"], "game:1",
                    "the held child keeps its template"
                );
                assert_eq!(
                    b["metadata"]["annotations"]["hsd.paia.tech/template-hash"],
                    old_hash
                );
                // desired = busy 1 + idleTarget 2 = 3.
                assert_eq!(b["spec"]["replicas"], 3);
            }),
            event("BusyPodDetached", "busy=1 idle=1 desired=3"),
            event("ScaledUp", "replicas 2 -> 3"),
            status(|st| {
                assert_eq!(cond(st, "RolloutProtectingBusyPods")["status"], "True");
                assert_eq!(st["replicas"], 3);
            }),
        ],
    )
    .await;
}

/// Once detached, the busy pod counts outside the child; the new template is applied, and
/// the child's rollout can never take capacity below replicas (maxUnavailable 0).
#[tokio::test]
async fn a_detached_busy_pod_keeps_counting_while_the_new_template_rolls() {
    let old = hsd(json!({}));
    let new = hsd(json!({"metadata": {"generation": 2},
        "spec": {"podTemplate": {"metadata": {"labels": {"app": "game"}}, "spec": {"containers": [{"name": "app", "image": "game:2"}]}}}}));
    let mut detached = pod("busy", true, 20);
    detached["metadata"]["labels"]["hsd.paia.tech/detached"] = "true".into();
    detached["metadata"]["labels"]["pod-template-hash"] = "detached-uid-busy".into();
    detached["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment", "name": "game", "uid": "hsd-uid", "controller": false}]);
    let world = World {
        // The old ReplicaSet replaced the detached pod with a new idle one.
        pods: vec![
            detached,
            pod("idle", false, 10),
            pod("replacement", false, 1),
        ],
        rss: vec![rs()],
        deployments: vec![child(&old, 2, 2)],
    };
    scenario(
        new,
        world,
        vec![
            apply_child(|b| {
                assert_eq!(
                    b["spec"]["template"]["spec"]["containers"][0]["image"],
                    "game:2"
                );
                assert_eq!(b["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
                // desired = busy 1 + idleTarget 1 = 2; the detached busy pod holds one.
                assert_eq!(b["spec"]["replicas"], 2, "held by the scale-down delay");
            }),
            event("ScaleDownPending", "busy=1 idle=2 desired=2"),
            status(|st| {
                assert_eq!(st["busyCount"], 1);
                assert_eq!(st["detachedBusyPods"], json!(["busy"]));
            }),
        ],
    )
    .await;
}

/// The API server refused generation 1's template long ago (well past any resync): it is
/// still not applied again on an event, until the spec changes.
#[tokio::test]
async fn a_rejected_generation_is_never_reapplied_on_events() {
    let h = hsd(json!({}));
    let long_ago = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::from_second(NOW - 3600).unwrap(),
    );
    let mut rejected = h.clone();
    rejected.status = Some(hsd::child::invalid_status(
        &h,
        "TemplateRejected",
        "the API server rejected the child Deployment: bad",
        &long_ago,
    ));
    assert_eq!(
        rejected.status.as_ref().unwrap().rejected_generation,
        Some(1)
    );
    scenario(
        rejected,
        World {
            pods: vec![],
            rss: vec![],
            deployments: vec![],
        },
        vec![],
    )
    .await;
}

/// HTTP mode: one idle pod `a` due to go (idleTarget 0, no delay) whose cached answer says
/// idle, served by a real HTTP server on `ip` that answers `answer` (2xx: busy). Runs one
/// reconcile against `expected`; returns how many fresh probes the server answered.
async fn http_victim(ip: &str, answer: axum::http::StatusCode, expected: Vec<Expect>) -> usize {
    use axum::routing::get;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let app = axum::Router::new().route(
        "/busy",
        get(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            async move { (answer, "") }
        }),
    );
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let h = hsd(json!({"spec": {"idleTarget": 0, "scaleDownDelaySeconds": 0,
        "busyProbe": {"mode": "http", "http": {"port": port, "path": "/busy", "periodSeconds": 3600}}}}));
    let mut a = pod("a", false, 10);
    a["status"]["podIP"] = ip.into();
    let world = World {
        pods: vec![a],
        rss: vec![rs()],
        deployments: vec![child(&h, 1, 1)],
    };
    let (client, handle) = verifier::mock_client();
    let mut ctx = Ctx::new(&Deps::standalone(client), stores(&world));
    ctx.clock = Arc::new(|| Timestamp::from_second(NOW).unwrap());
    // Last periodic probe: idle.
    ctx.probes.record(
        "uid-a",
        Ok(kube_standby::controller::hsd::plan::BusyState::Idle),
        std::time::Instant::now(),
    );
    let task = tokio::spawn(hsd::reconcile(Arc::new(h), Arc::new(ctx)));
    verifier::verify(handle, expected, task)
        .await
        .expect("reconcile ok");
    hits.load(Ordering::SeqCst)
}

/// HTTP mode: the cached answer says idle, but the pod turned busy since. The fresh probe
/// made right before the delete says busy: it is kept.
#[tokio::test]
async fn http_mode_probes_a_victim_again_and_keeps_it_when_it_turned_busy() {
    let expected = vec![status(|st| {
        assert_eq!(st["replicas"], 1, "the busy pod keeps its place");
        assert_eq!(st["busyCount"], 0, "the plan was made on the cached answer");
    })];
    let probes = http_victim("127.0.0.3", axum::http::StatusCode::OK, expected).await;
    assert_eq!(probes, 1);
}

/// HTTP mode, the other way: the fresh probe (sent to the victim's own IP) still says idle
/// (not 2xx), so the victim is deleted with its preconditions. A victim whose IP were lost
/// on the way to the delete would be kept instead.
#[tokio::test]
async fn http_mode_deletes_a_victim_the_fresh_probe_still_finds_idle() {
    let expected = vec![
        expect(
            "DELETE",
            "/api/v1/namespaces/ns/pods/a",
            |b, _| assert_eq!(b["preconditions"]["uid"], "uid-a"),
            200,
            pod("a", false, 0),
        ),
        apply_child(|b| assert_eq!(b["spec"]["replicas"], 0)),
        event("ScaledDown", "deleted idle pods a"),
        status(|st| assert_eq!(st["replicas"], 0)),
    ];
    let status = axum::http::StatusCode::SERVICE_UNAVAILABLE;
    let probes = http_victim("127.0.0.4", status, expected).await;
    assert_eq!(probes, 1, "one fresh probe, to the pod's IP");
}

/// Issue 18: a pod the busy guard holds is listed in `status.heldPods` (only this pool's,
/// only this namespace's) with one `DeletionHeld` Event.
#[tokio::test]
async fn a_held_pod_is_listed_in_status_with_one_deletion_held_event() {
    let h = hsd(json!({}));
    let world = World {
        pods: vec![pod("a", true, 100), pod("b", true, 50), pod("c", false, 10)],
        rss: vec![rs()],
        deployments: vec![child(&h, 2, 2)],
    };
    let (client, handle) = verifier::mock_client();
    let deps = Deps::standalone(client);
    let t = std::time::Instant::now();
    deps.held.set("ns", "a", true, t);
    deps.held.set("other", "b", true, t);
    deps.held.set("ns", "not-of-this-pool", true, t);
    let mut ctx = Ctx::new(&deps, stores(&world));
    ctx.clock = Arc::new(|| Timestamp::from_second(NOW).unwrap());
    let expected = vec![
        apply_child(|b| assert_eq!(b["spec"]["replicas"], 3)),
        event("ScaledUp", "busy=2 idle=1 desired=3: replicas 2 -> 3"),
        event("DeletionHeld", "pod a is busy"),
        status(|st| assert_eq!(st["heldPods"], json!(["a"]))),
    ];
    let task = tokio::spawn(hsd::reconcile(Arc::new(h), Arc::new(ctx)));
    verifier::verify(handle, expected, task)
        .await
        .expect("reconcile ok");
}

/// Two busy pods (pod "a" turned busy a moment ago: its cost still says idle) and one idle
/// under a child of 2: a scale-up to 3.
fn just_flipped(h: &HotStandbyDeployment) -> World {
    let mut flipped = pod("a", true, 100);
    flipped["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"] = json!("1");
    World {
        pods: vec![flipped, pod("b", true, 50), pod("c", false, 10)],
        rss: vec![rs()],
        deployments: vec![child(h, 2, 2)],
    }
}

/// Issue 22: on a scale-up, the write that restores capacity (the child's replicas) comes
/// before the pod-deletion-cost of the pod that just turned busy, and status after both.
#[tokio::test]
async fn a_scale_up_writes_replicas_before_costs_and_status() {
    let h = hsd(json!({}));
    let world = just_flipped(&h);
    scenario(
        h,
        world,
        vec![
            apply_child(|b| assert_eq!(b["spec"]["replicas"], 3)),
            expect(
                "PATCH",
                "/api/v1/namespaces/ns/pods/a",
                |b, _| {
                    assert_eq!(
                        b["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"],
                        "1000000"
                    )
                },
                200,
                pod("a", true, 100),
            ),
            event("ScaledUp", "busy=2 idle=1 desired=3: replicas 2 -> 3"),
            status(|st| assert_eq!(st["desiredReplicas"], 3)),
        ],
    )
    .await;
}

/// The reaction a scale-up records ends when the child's replicas are written, not after
/// the cost patch that follows it (here answered 300 ms late).
#[tokio::test]
async fn the_reaction_metric_ends_at_the_replicas_write() {
    let h = hsd(json!({}));
    let (ctx, handle, metrics) = ctx_with_metrics(&just_flipped(&h));
    let task = tokio::spawn(hsd::reconcile(Arc::new(h), Arc::new(ctx)));
    let slow_cost = expect(
        "PATCH",
        "/api/v1/namespaces/ns/pods/a",
        |_, _| std::thread::sleep(std::time::Duration::from_millis(300)),
        200,
        pod("a", true, 100),
    );
    verifier::verify(
        handle,
        vec![
            apply_child(|b| assert_eq!(b["spec"]["replicas"], 3)),
            slow_cost,
            event("ScaledUp", "busy=2 idle=1 desired=3: replicas 2 -> 3"),
            status(|st| assert_eq!(st["desiredReplicas"], 3)),
        ],
        task,
    )
    .await
    .expect("reconcile ok");
    let text = metrics.render();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert_eq!(value("kube_standby_hsd_reaction_seconds_count"), 1.0);
    let sum = value("kube_standby_hsd_reaction_seconds_sum");
    assert!(
        sum < 0.3,
        "the reaction took the cost patch's 300 ms too: {sum}"
    );
}
