//! The StatefulSingleton reconciler against a mocked API server: which writes it makes,
//! in which order (status before release), with which bodies.
#[path = "support/verifier.rs"]
mod verifier;

use kube_standby::controller::Deps;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::runtime::reflector;
use kube::runtime::watcher;
use kube_standby::controller::index::Index;
use kube_standby::controller::singleton::{self, observe, Ctx, Stores};
use serde_json::{json, Value};
use verifier::{event, expect, Expect};

const NOW: i64 = 1_800_000_000;

fn singleton_obj(extra: Value) -> Value {
    let mut v = json!({"apiVersion": "apps.statefulsingleton.com/v1", "kind": "StatefulSingleton",
        "metadata": {"name": "db", "namespace": "ns", "uid": "s-uid", "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"selector": {"matchLabels": {"app": "db"}}}});
    json_patch::merge(&mut v, &extra);
    v
}

fn pod(name: &str, created: i64, extra: Value) -> Value {
    let mut v = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "resourceVersion": "1",
                     "creationTimestamp": Timestamp::from_second(created).unwrap().to_string(),
                     "labels": {"app": "db"}, "annotations": {"apps.statefulsingleton.com/gate": "initContainer"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "db", "image": "db:1"}],
                 "initContainers": [{"name": "singleton-gate", "image": "kube-standby", "args": ["agent", "--once"]}]},
        "status": {"phase": "Pending"}});
    json_patch::merge(&mut v, &extra);
    v
}

fn released() -> Value {
    json!({"metadata": {"annotations": {"apps.statefulsingleton.com/released": "2026-01-01T00:00:00Z"}},
           "status": {"phase": "Running", "conditions": [{"type": "apps.statefulsingleton.com/singleton-ready", "status": "True"}]}})
}

fn stores_synced(
    singletons: &[Value],
    pods: &[Value],
    with_configmap: bool,
    synced: bool,
) -> Stores {
    let ar = singleton::api_resource("apps.statefulsingleton.com");
    let mut sw = reflector::store::Writer::<DynamicObject>::new(ar);
    sw.apply_watcher_event(&watcher::Event::Init);
    for s in singletons {
        sw.apply_watcher_event(&watcher::Event::InitApply(
            serde_json::from_value(s.clone()).unwrap(),
        ));
    }
    let p: Index<observe::PodFacts> = Index::default();
    p.apply(&watcher::Event::<Pod>::Init, observe::pod_facts);
    for x in pods {
        let pod: Pod = serde_json::from_value(x.clone()).unwrap();
        p.apply(&watcher::Event::InitApply(pod), observe::pod_facts);
    }
    let n: Index<_> = Index::default();
    n.apply(&watcher::Event::<Node>::Init, observe::node_state);
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}})).unwrap();
    n.apply(&watcher::Event::InitApply(node), observe::node_state);
    let r: Index<singleton::plan::RsInfo> = Index::default();
    r.apply(&watcher::Event::<ReplicaSet>::Init, observe::rs_info);
    let (c, mut cw) = reflector::store::<ConfigMap>();
    cw.apply_watcher_event(&watcher::Event::Init);
    if with_configmap {
        cw.apply_watcher_event(&watcher::Event::InitApply(observe::wrapper_configmap("ns")));
    }
    if synced {
        sw.apply_watcher_event(&watcher::Event::InitDone);
        p.apply(&watcher::Event::<Pod>::InitDone, observe::pod_facts);
        n.apply(&watcher::Event::<Node>::InitDone, observe::node_state);
        r.apply(&watcher::Event::<ReplicaSet>::InitDone, observe::rs_info);
        cw.apply_watcher_event(&watcher::Event::InitDone);
    }
    Stores {
        pods: p,
        nodes: n,
        replicasets: r,
        configmaps: c,
        singletons: vec![sw.as_reader()],
    }
}

fn stores(singletons: &[Value], pods: &[Value], with_configmap: bool) -> Stores {
    stores_synced(singletons, pods, with_configmap, true)
}

fn status_patch(check: impl Fn(&Value) + Send + 'static) -> Expect {
    expect(
        "PATCH",
        "/apis/apps.statefulsingleton.com/v1/namespaces/ns/statefulsingletons/db/status",
        move |b, q| {
            assert!(
                q.contains("fieldManager=kube-standby") && q.contains("force=true"),
                "status is server-side applied: {q}"
            );
            assert_eq!(b["metadata"]["name"], "db");
            check(&b["status"])
        },
        200,
        singleton_obj(json!({})),
    )
}

async fn scenario(obj: Value, st: Stores, expected: Vec<Expect>) {
    let (client, handle) = verifier::mock_client();
    let mut ctx = Ctx::new(&Deps::standalone(client), st);
    ctx.clock = Arc::new(|| Timestamp::from_second(NOW).unwrap());
    let ar = singleton::api_resource("apps.statefulsingleton.com");
    let dynobj: DynamicObject = serde_json::from_value(obj).unwrap();
    let task = tokio::spawn(singleton::reconcile(Arc::new(dynobj), Arc::new((ctx, ar))));
    verifier::verify(handle, expected, task)
        .await
        .expect("reconcile ok");
}

#[tokio::test]
async fn first_pod_status_is_written_before_the_release() {
    let s = singleton_obj(json!({}));
    let st = stores(
        std::slice::from_ref(&s),
        &[pod("db-0", NOW - 5, json!({}))],
        true,
    );
    scenario(
        s,
        st,
        vec![
            status_patch(|st| {
                assert_eq!(st["activePod"], "db-0");
                assert_eq!(st["activePodUid"], "uid-db-0");
                assert_eq!(st["activeNode"], "n1");
                assert_eq!(st["phase"], "Running");
            }),
            expect(
                "PATCH",
                "/api/v1/namespaces/ns/pods/db-0",
                |b, _| {
                    assert_eq!(
                        b["metadata"]["uid"], "uid-db-0",
                        "the patch is bound to the pod we saw"
                    );
                    assert!(
                        b["metadata"]["annotations"]["apps.statefulsingleton.com/released"]
                            .is_string()
                    );
                },
                200,
                pod("db-0", NOW - 5, json!({})),
            ),
            expect(
                "PATCH",
                "/api/v1/namespaces/ns/pods/db-0/status",
                |b, _| {
                    let c = &b["status"]["conditions"][0];
                    assert_eq!(
                        (c["type"].as_str(), c["status"].as_str()),
                        (
                            Some("apps.statefulsingleton.com/singleton-ready"),
                            Some("True")
                        )
                    );
                },
                200,
                pod("db-0", NOW - 5, json!({})),
            ),
            event("ns", "PodStarted", "released db-0"),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_wrapper_configmap_is_applied_when_missing() {
    let s = singleton_obj(
        json!({"status": {"phase": "Running", "activePod": "db-0", "activePodUid": "uid-db-0", "activeNode": "n1"}}),
    );
    let st = stores(
        std::slice::from_ref(&s),
        &[pod("db-0", NOW - 5, released())],
        false,
    );
    scenario(
        s,
        st,
        vec![
            expect(
                "PATCH",
                "/api/v1/namespaces/ns/configmaps/statefulsingleton-wrapper",
                |b, q| {
                    assert!(q.contains("fieldManager=kube-standby"), "{q}");
                    assert!(b["data"]["entrypoint-wrapper.sh"]
                        .as_str()
                        .unwrap()
                        .contains("exec \"$@\""));
                },
                200,
                serde_json::to_value(observe::wrapper_configmap("ns")).unwrap(),
            ),
            status_patch(|st| assert_eq!(st["message"], "db-0 is active")),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_successor_waits_for_a_terminating_pod_and_nothing_is_released() {
    let s = singleton_obj(json!({}));
    let old = pod("db-old", NOW - 100, {
        let mut r = released();
        r["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        r
    });
    let st = stores(
        std::slice::from_ref(&s),
        &[old, pod("db-new", NOW - 1, json!({}))],
        true,
    );
    scenario(
        s,
        st,
        vec![status_patch(|st| {
            assert_eq!(st["phase"], "Transitioning");
            assert_eq!(st["activePod"], "db-old");
            assert!(st["message"]
                .as_str()
                .unwrap()
                .contains("db-new waits for db-old"));
        })],
    )
    .await;
}

#[tokio::test]
async fn an_ungated_newcomer_is_deleted_with_a_uid_precondition() {
    let s = singleton_obj(json!({}));
    let intruder = pod(
        "db-x",
        NOW - 1,
        // Admitted while the webhook was down: no gate container (merge patch: null removes it).
        json!({"spec": {"initContainers": null}, "status": {"phase": "Running"}}),
    );
    let st = stores(
        std::slice::from_ref(&s),
        &[pod("db-0", NOW - 100, released()), intruder],
        true,
    );
    scenario(
        s,
        st,
        vec![
            status_patch(|st| assert_eq!(st["activePod"], "db-0")),
            expect(
                "DELETE",
                "/api/v1/namespaces/ns/pods/db-x",
                |b, _| assert_eq!(b["preconditions"]["uid"], "uid-db-x"),
                200,
                pod("db-x", NOW, json!({})),
            ),
            event("ns", "UngatedPodDeleted", "admitted without the start gate"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_surge_rollout_scales_the_old_replicaset_to_zero() {
    let s = singleton_obj(json!({}));
    let owned = |rs: &str| json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": rs, "controller": true}]}});
    let mut old = pod("db-old", NOW - 100, released());
    json_patch::merge(&mut old, &owned("rs-old"));
    let new = pod("db-new", NOW - 1, owned("rs-new"));
    let rs = |name: &str| {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "namespace": "ns", "uid": name,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "db", "uid": "dep", "controller": true}]},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "db"}}}})
    };
    let st = stores(std::slice::from_ref(&s), &[old, new], true);
    // The ReplicaSets come from the controller's ReplicaSet cache, not from live GETs.
    for name in ["rs-new", "rs-old"] {
        let obj: ReplicaSet = serde_json::from_value(rs(name)).unwrap();
        st.replicasets
            .apply(&watcher::Event::Apply(obj), observe::rs_info);
    }
    scenario(
        s,
        st,
        vec![
            status_patch(|st| assert_eq!(st["phase"], "Transitioning")),
            expect(
                "PATCH",
                "/apis/apps/v1/namespaces/ns/replicasets/rs-old",
                |b, _| assert_eq!(b["spec"]["replicas"], 0),
                200,
                rs("rs-old"),
            ),
            event("ns", "PodTransition", "scaled old ReplicaSet rs-old to 0"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_settled_singleton_makes_no_writes() {
    let base = singleton_obj(json!({}));
    let st = stores(
        std::slice::from_ref(&base),
        &[pod("db-0", NOW - 5, released())],
        true,
    );
    // Compute the status the reconciler would write, then reconcile with it in place.
    let typed = singleton::from_dynamic(&serde_json::from_value(base.clone()).unwrap()).unwrap();
    let infos = vec![observe::pod_info(
        &serde_json::from_value(pod("db-0", NOW - 5, released())).unwrap(),
    )];
    let nodes =
        std::collections::BTreeMap::from([("n1".to_string(), singleton::plan::NodeState::Ready)]);
    let memory = singleton::plan::Memory::default();
    let p = singleton::plan::plan(&singleton::plan::Observed {
        pods: &infos,
        replicasets: &[],
        nodes: &nodes,
        memory: &memory,
        now: NOW,
        max_transition_seconds: 300,
    });
    let status = observe::status(
        &typed,
        &p,
        &observe::Overlap::default(),
        None,
        &Default::default(),
        Timestamp::from_second(NOW).unwrap(),
    );
    let mut settled = base;
    settled["status"] = serde_json::to_value(status).unwrap();
    scenario(settled, st, vec![]).await;
}

/// Before the pod, node, ConfigMap and StatefulSingleton caches have listed, nothing is
/// written and nothing released: an unlisted node or pod is not a gone one.
#[tokio::test]
async fn nothing_is_released_before_the_caches_sync() {
    let s = singleton_obj(json!({}));
    let st = stores_synced(
        std::slice::from_ref(&s),
        &[pod("db-0", NOW - 5, json!({}))],
        true,
        false,
    );
    let (client, mut handle) = verifier::mock_client();
    let ctx = Ctx::new(&Deps::standalone(client), st);
    let ar = singleton::api_resource("apps.statefulsingleton.com");
    let dynobj: DynamicObject = serde_json::from_value(s).unwrap();
    let task = tokio::spawn(singleton::reconcile(Arc::new(dynobj), Arc::new((ctx, ar))));
    let early =
        tokio::time::timeout(std::time::Duration::from_millis(300), handle.next_request()).await;
    assert!(
        early.is_err(),
        "a request was made before the caches synced"
    );
    assert!(!task.is_finished());
    task.abort();
}

/// Leadership closes the gate the same way: a replica that does not hold the lease writes nothing.
#[tokio::test]
async fn a_replica_that_does_not_lead_writes_nothing() {
    let s = singleton_obj(json!({}));
    let st = stores(
        std::slice::from_ref(&s),
        &[pod("db-0", NOW - 5, json!({}))],
        true,
    );
    let (client, mut handle) = verifier::mock_client();
    let (lead_tx, lead_rx) = tokio::sync::watch::channel(false);
    let mut ctx = Ctx::new(
        &Deps {
            leading: lead_rx,
            ..Deps::standalone(client)
        },
        st,
    );
    ctx.clock = Arc::new(|| Timestamp::from_second(NOW).unwrap());
    let ar = singleton::api_resource("apps.statefulsingleton.com");
    let dynobj: DynamicObject = serde_json::from_value(s).unwrap();
    let task = tokio::spawn(singleton::reconcile(Arc::new(dynobj), Arc::new((ctx, ar))));
    let early =
        tokio::time::timeout(std::time::Duration::from_millis(300), handle.next_request()).await;
    assert!(early.is_err(), "a follower made a request");
    // Once it leads, the same reconcile goes on: status first, then the release.
    lead_tx.send_replace(true);
    verifier::verify(
        handle,
        vec![
            status_patch(|st| assert_eq!(st["activePod"], "db-0")),
            expect(
                "PATCH",
                "/api/v1/namespaces/ns/pods/db-0",
                |b, _| {
                    assert!(
                        b["metadata"]["annotations"]["apps.statefulsingleton.com/released"]
                            .is_string()
                    )
                },
                200,
                pod("db-0", NOW - 5, json!({})),
            ),
            expect(
                "PATCH",
                "/api/v1/namespaces/ns/pods/db-0/status",
                |_, _| {},
                200,
                pod("db-0", NOW - 5, json!({})),
            ),
            event("ns", "PodStarted", "released db-0"),
        ],
        task,
    )
    .await
    .expect("reconcile ok");
}

/// Answer every request for `window` with a bare object and record (method, path, body).
async fn record_requests(
    mut handle: verifier::Handle,
    window: std::time::Duration,
) -> Vec<(String, String, Value)> {
    let mut seen = vec![];
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some((req, send))) = tokio::time::timeout_at(deadline, handle.next_request()).await
    {
        let (method, path) = (req.method().to_string(), req.uri().path().to_string());
        let body = req.into_body().collect_bytes().await.unwrap_or_default();
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let reply = if path.contains("/pods/") {
            pod("x", NOW, json!({}))
        } else if path.contains("/events") {
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "ns"}, "eventTime": "2026-01-01T00:00:00.000000Z"})
        } else {
            singleton_obj(json!({}))
        };
        seen.push((method, path, v));
        send.send_response(
            http::Response::builder()
                .status(200)
                .body(kube::client::Body::from(
                    serde_json::to_vec(&reply).unwrap(),
                ))
                .unwrap(),
        );
    }
    seen
}

/// A leader change mid-handover: the old leader recorded db-0 as the active instance and
/// db-0 is still terminating; the new leader (a fresh process: nothing in memory, caches
/// synced, the status read from its cache) must not release the waiting successor until
/// db-0 is gone from the API, and then releases it.
#[tokio::test]
async fn a_new_leader_mid_handover_releases_only_once_the_old_pod_is_gone() {
    let s = singleton_obj(
        json!({"status": {"phase": "Transitioning", "activePod": "db-0",
        "activePodUid": "uid-db-0", "activeNode": "n1"}}),
    );
    let old = pod("db-0", NOW - 100, released());
    let mut terminating = old.clone();
    json_patch::merge(
        &mut terminating,
        &json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
    );
    let successor = pod("db-1", NOW - 5, json!({}));
    let run = |pods: Vec<Value>| {
        let s = s.clone();
        async move {
            let st = stores(std::slice::from_ref(&s), &pods, true);
            let (client, handle) = verifier::mock_client();
            let (lead_tx, lead_rx) = tokio::sync::watch::channel(false);
            let mut ctx = Ctx::new(
                &Deps {
                    leading: lead_rx,
                    ..Deps::standalone(client)
                },
                st,
            );
            ctx.clock = Arc::new(|| Timestamp::from_second(NOW).unwrap());
            let ar = singleton::api_resource("apps.statefulsingleton.com");
            let obj: DynamicObject = serde_json::from_value(s).unwrap();
            let task = tokio::spawn(singleton::reconcile(Arc::new(obj), Arc::new((ctx, ar))));
            // The lease arrives after the caches synced.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            lead_tx.send_replace(true);
            let seen = record_requests(handle, std::time::Duration::from_millis(400)).await;
            task.await.unwrap().expect("reconcile ok");
            seen
        }
    };
    let touches_successor = |seen: &[(String, String, Value)]| {
        seen.iter()
            .any(|(m, p, _)| m == "PATCH" && p.starts_with("/api/v1/namespaces/ns/pods/db-1"))
    };

    let seen = run(vec![terminating, successor.clone()]).await;
    assert!(
        !touches_successor(&seen),
        "released while db-0 still exists: {seen:?}"
    );

    let seen = run(vec![successor]).await;
    assert!(
        touches_successor(&seen),
        "db-0 is gone: db-1 must be released: {seen:?}"
    );
    let status_at = seen
        .iter()
        .position(|(_, p, _)| p.ends_with("/statefulsingletons/db/status"));
    let release_at = seen
        .iter()
        .position(|(_, p, _)| p == "/api/v1/namespaces/ns/pods/db-1");
    assert!(
        status_at < release_at,
        "status (memory) is written before the release: {seen:?}"
    );
}

/// The last StatefulSingleton of a namespace is gone and no pod mounts the wrapper
/// ConfigMap: it is deleted (and the debug entry dropped). While a pod still mounts it, it stays.
#[tokio::test]
async fn the_wrapper_configmap_goes_with_the_last_user() {
    let ar = singleton::api_resource("apps.statefulsingleton.com");
    let mounting = pod(
        "db-0",
        NOW - 5,
        json!({"spec": {"volumes": [{"name": "w", "configMap": {"name": "statefulsingleton-wrapper"}}]}}),
    );
    // A pod still mounts it: nothing is deleted.
    let (client, mut handle) = verifier::mock_client();
    let ctx = Ctx::new(&Deps::standalone(client), stores(&[], &[mounting], true));
    ctx.debug.set(
        "singleton/apps.statefulsingleton.com/ns/db".into(),
        json!({}),
    );
    ctx.gate.opened().await;
    singleton::forget(&ctx, &ar, "ns", "db").await;
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(100), handle.next_request())
            .await
            .is_err()
    );
    assert_eq!(
        ctx.debug.snapshot(),
        json!({}),
        "the debug entry is dropped"
    );

    // No user left: the ConfigMap is deleted.
    let (client, handle) = verifier::mock_client();
    let ctx = Ctx::new(&Deps::standalone(client), stores(&[], &[], true));
    ctx.gate.opened().await;
    let task = tokio::spawn(async move { singleton::forget(&ctx, &ar, "ns", "db").await });
    verifier::verify(
        handle,
        vec![expect(
            "DELETE",
            "/api/v1/namespaces/ns/configmaps/statefulsingleton-wrapper",
            |_, _| {},
            200,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        )],
        task,
    )
    .await;
}

/// A waiting pod whose init gate crash-loops because it cannot trust the operator: the
/// singleton says so (`AgentUnreachable` with the pod and the agent's own error line) and
/// one Warning event carries the error; a healthy pod gives the condition False.
#[tokio::test]
async fn a_crash_looping_agent_sets_agent_unreachable_with_its_error() {
    let s = singleton_obj(
        json!({"status": {"phase": "Running", "activePod": "db-0", "activePodUid": "uid-db-0", "activeNode": "n1"}}),
    );
    let crash = json!({"status": {"phase": "Pending", "initContainerStatuses": [{
        "name": "singleton-gate", "image": "kube-standby", "imageID": "", "ready": false, "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
            "message": "error: kube-standby agent: configuration: CA bundle holds no certificate"}}}]}});
    let st = stores(
        std::slice::from_ref(&s),
        &[
            pod("db-0", NOW - 50, released()),
            pod("db-1", NOW - 5, crash),
        ],
        true,
    );
    scenario(
        s,
        st,
        vec![
            status_patch(|st| {
                let c = st["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "AgentUnreachable"))
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(c["status"], "True", "{st}");
                assert_eq!(
                    c["message"],
                    "pod db-1: kube-standby agent: configuration: CA bundle holds no certificate"
                );
                assert_eq!(
                    st["phase"], "Transitioning",
                    "db-1 still counts as a successor"
                );
            }),
            event("ns", "AgentUnreachable", "CA bundle holds no certificate"),
        ],
    )
    .await;

    let s = singleton_obj(json!({}));
    let st = stores(
        std::slice::from_ref(&s),
        &[pod("db-0", NOW - 5, released())],
        true,
    );
    scenario(
        s,
        st,
        vec![status_patch(|st| {
            let c = st["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "AgentUnreachable"))
                .cloned()
                .unwrap_or_default();
            assert_eq!(c["status"], "False", "{st}");
        })],
    )
    .await;
}

/// A failover: db-0 (epoch 4) is gone and db-1 waits. The status naming epoch 5 is written
/// before the release, the release carries the epoch annotation, and the event names the
/// measured gap and the epoch.
#[tokio::test]
async fn a_failover_writes_the_next_epoch_to_status_before_the_release_and_names_the_gap() {
    let s = singleton_obj(
        json!({"status": {"phase": "Transitioning", "activePod": "db-0",
        "activePodUid": "uid-db-0", "activeNode": "n1", "epoch": 4}}),
    );
    let st = stores(
        std::slice::from_ref(&s),
        &[pod("db-1", NOW - 5, json!({}))],
        true,
    );
    scenario(
        s,
        st,
        vec![
            status_patch(|st| {
                assert_eq!(st["activePod"], "db-1");
                assert_eq!(st["epoch"], 5, "{st}");
                assert!(st.get("standbyPods").is_none(), "{st}");
            }),
            expect(
                "PATCH",
                "/api/v1/namespaces/ns/pods/db-1",
                |b, _| {
                    let ann = &b["metadata"]["annotations"];
                    assert_eq!(ann["apps.statefulsingleton.com/epoch"], "5", "{b}");
                    assert!(ann["apps.statefulsingleton.com/released"].is_string());
                },
                200,
                pod("db-1", NOW - 5, json!({})),
            ),
            expect(
                "PATCH",
                "/api/v1/namespaces/ns/pods/db-1/status",
                |_, _| {},
                200,
                pod("db-1", NOW - 5, json!({})),
            ),
            event(
                "ns",
                "PodTransition",
                "released db-1 after db-0 was gone; handover gap",
            ),
        ],
    )
    .await;
}

/// Two replicas: the active pod runs and the second waits gated with its gate running: it
/// is listed as a warm standby and StandbyReady is True (a pod not started yet is not);
/// the epoch already handed out is kept.
#[tokio::test]
async fn a_gated_second_replica_is_a_warm_standby() {
    let s = singleton_obj(json!({"status": {"phase": "Running", "activePod": "db-0",
        "activePodUid": "uid-db-0", "activeNode": "n1", "epoch": 2}}));
    let mut active = released();
    active["metadata"]["annotations"]["apps.statefulsingleton.com/epoch"] = "2".into();
    let st = stores(
        std::slice::from_ref(&s),
        &[
            pod("db-0", NOW - 50, active),
            // Its init gate runs: started, waiting for the release.
            pod(
                "db-1",
                NOW - 5,
                json!({"status": {"initContainerStatuses": [{"name": "singleton-gate",
                "image": "kube-standby", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"running": {}}}]}}),
            ),
            pod("db-2", NOW - 1, json!({})),
        ],
        true,
    );
    scenario(
        s,
        st,
        vec![status_patch(|st| {
            assert_eq!(st["standbyPods"], json!(["db-1"]), "{st}");
            assert_eq!(st["epoch"], 2);
            let c = st["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "StandbyReady"))
                .cloned()
                .unwrap_or_default();
            assert_eq!(c["status"], "True", "{st}");
            assert!(c["message"].as_str().unwrap_or_default().contains("db-1"));
        })],
    )
    .await;
}

/// replicas 2 of one ReplicaSet, with a status still saying Transitioning and timed out
/// long ago (as an older operator wrote it for a waiting standby): the reconcile writes
/// phase Running, no transitionTimestamp, TransitionTimedOut False and StandbyReady True,
/// and records no TransitionTimeout event (the verifier refuses any request not expected).
#[tokio::test]
async fn a_standby_of_the_same_replicaset_is_running_not_transitioning() {
    let s = singleton_obj(json!({"spec": {"maxTransitionTime": 5},
        "status": {"phase": "Transitioning", "activePod": "db-0", "activePodUid": "uid-db-0",
            "activeNode": "n1", "epoch": 1,
            "transitionTimestamp": Timestamp::from_second(NOW - 1000).unwrap().to_string(),
            "conditions": [{"type": "TransitionTimedOut", "status": "True", "reason": "MaxTransitionTimeExceeded",
                "message": "old", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}));
    let owned = json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs-1", "uid": "rs-1", "controller": true}]}});
    let mut active = pod("db-0", NOW - 2000, released());
    active["metadata"]["annotations"]["apps.statefulsingleton.com/epoch"] = "1".into();
    json_patch::merge(&mut active, &owned);
    let mut standby = pod(
        "db-1",
        NOW - 1500,
        json!({"status": {"initContainerStatuses": [{"name": "singleton-gate",
        "image": "kube-standby", "imageID": "", "ready": false, "restartCount": 0, "state": {"running": {}}}]}}),
    );
    json_patch::merge(&mut standby, &owned);
    let st = stores(std::slice::from_ref(&s), &[active, standby], true);
    scenario(
        s,
        st,
        vec![status_patch(|st| {
            assert_eq!(st["phase"], "Running", "{st}");
            assert!(
                st.get("transitionTimestamp").is_none_or(Value::is_null),
                "{st}"
            );
            assert_eq!(st["standbyPods"], json!(["db-1"]), "{st}");
            let cond = |t: &str| {
                st["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == t))
                    .cloned()
                    .unwrap_or_default()
            };
            assert_eq!(cond("TransitionTimedOut")["status"], "False", "{st}");
            assert_eq!(cond("StandbyReady")["status"], "True", "{st}");
        })],
    )
    .await;
}
