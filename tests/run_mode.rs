//! `kube-standby run` against a fake API server: it lists and watches what it needs,
//! reports not-ready until its caches sync, then ready, and serves metrics and debug state.
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

#[tokio::test]
async fn run_mode_syncs_caches_then_reports_ready() {
    let api = fake_apiserver::start().await;
    let run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
    assert!(
        run.wait_ready().await,
        "run mode never became ready; it said:\n{}\nrequests: {:#?}",
        run.stderr(),
        api.seen.0.lock().unwrap()
    );
    // Ready means every cache has listed; the watches that follow the lists may still be on
    // their way (KEDA's kinds are listed only once their CRDs are seen). Wait for a watch of
    // each (path, selector) asserted below, for up to 30 s on a loaded machine.
    let wanted: &[(&str, &str)] = &[
        ("/apis/apps.paia.tech/v1alpha1/hotstandbydeployments", ""),
        ("/apis/apps.statefulsingleton.com/v1/statefulsingletons", ""),
        (
            "/apis/apps.openshift.statefulsingleton.com/v1/statefulsingletons",
            "",
        ),
        ("/api/v1/pods", "labelSelector=hsd.paia.tech"),
        ("/api/v1/pods", "labelSelector=hsj.paia.tech"),
        ("/apis/apps/v1/replicasets", "labelSelector=hsd.paia.tech"),
        ("/apis/apps/v1/deployments", ""),
        ("/api/v1/nodes", ""),
        (
            "/api/v1/configmaps",
            "metadata.name%3Dstatefulsingleton-wrapper",
        ),
        ("/api/v1/configmaps", "metadata.name%3Dasya-runtime"),
        ("/apis/asya.io/v1alpha1/asyncactors", ""),
        ("/apis/apps/v1/statefulsets", ""),
        ("/api/v1/services", ""),
        ("/apis/keda.sh/v1alpha1/scaledobjects", ""),
        ("/apis/keda.sh/v1alpha1/scaledjobs", ""),
        ("/apis/keda.sh/v1alpha1/triggerauthentications", ""),
        ("/apis/apps.paia.tech/v1alpha1/hotstandbyjobs", ""),
        ("/apis/batch/v1/jobs", "labelSelector=hsj.paia.tech"),
        ("/apis/batch/v1/jobs", "labelSelector=asya.io"),
    ];
    let complete = |seen: &[String]| {
        let crds = seen
            .iter()
            .filter(|s| s.contains("customresourcedefinitions") && s.contains("watch=true"))
            .count();
        crds >= 3
            && wanted.iter().all(|(path, with)| {
                seen.iter()
                    .any(|s| s.contains(path) && s.contains(with) && s.contains("watch=true"))
            })
    };
    let mut seen = vec![];
    for _ in 0..300 {
        seen = api.seen.0.lock().unwrap().clone();
        if complete(&seen) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for path in [
        "/apis/apps.paia.tech/v1alpha1/hotstandbydeployments",
        "/apis/apps.statefulsingleton.com/v1/statefulsingletons",
        "/api/v1/pods",
        "/apis/apps/v1/replicasets",
        "/apis/apps/v1/deployments",
    ] {
        assert!(
            seen.iter()
                .any(|s| s.contains(path) && s.contains("watch=true")),
            "no watch on {path}: {seen:#?}"
        );
    }
    // The HSD controller watches pods, ReplicaSets and Deployments by its label only; the
    // singleton controller needs every pod (a pod admitted without the webhook has no label
    // of ours), every ReplicaSet (kept as small facts: a surge rollout's old ReplicaSet is
    // scaled from that cache, and a singleton's ReplicaSets carry no label of ours either)
    // and nodes, and only our ConfigMap by name.
    let watches = |p: &str| {
        seen.iter()
            .filter(|s| s.contains(p) && s.contains("watch=true"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        watches("/api/v1/pods")
            .iter()
            .any(|s| s.contains("labelSelector=hsd.paia.tech")),
        "{seen:#?}"
    );
    let rs = watches("/apis/apps/v1/replicasets");
    assert!(
        rs.iter().any(|s| s.contains("labelSelector=hsd.paia.tech"))
            && rs.iter().any(|s| !s.contains("labelSelector")),
        "{seen:#?}"
    );
    // No other kind watches every ReplicaSet: only the HSD's label and the singleton's one.
    assert!(
        rs.iter()
            .all(|s| s.contains("labelSelector=hsd.paia.tech") || !s.contains("labelSelector")),
        "{seen:#?}"
    );
    assert_eq!(watches("/api/v1/nodes").len(), 1, "{seen:#?}");
    // ConfigMaps only by name: the singleton wrapper and the actor runtime.
    let cms = watches("/api/v1/configmaps");
    assert!(
        cms.iter()
            .any(|s| s.contains("fieldSelector=metadata.name%3Dstatefulsingleton-wrapper"))
            && cms
                .iter()
                .any(|s| s.contains("fieldSelector=metadata.name%3Dasya-runtime"))
            && cms
                .iter()
                .all(|s| s.contains("fieldSelector=metadata.name")),
        "{seen:#?}"
    );
    // AsyncActor: its own kind, what it owns by its label only, KEDA's CRDs by name.
    assert!(
        !watches("/apis/asya.io/v1alpha1/asyncactors").is_empty(),
        "{seen:#?}"
    );
    for p in [
        "/apis/apps/v1/statefulsets",
        "/api/v1/services",
        "/apis/keda.sh/v1alpha1/scaledobjects",
        "/apis/keda.sh/v1alpha1/scaledjobs",
        "/apis/keda.sh/v1alpha1/triggerauthentications",
    ] {
        let w = watches(p);
        assert!(
            !w.is_empty() && w.iter().all(|s| s.contains("labelSelector=asya.io")),
            "{p}: {seen:#?}"
        );
    }
    // HotStandbyJob: its own kind; Jobs (shared with AsyncActor) and pods by a label of ours.
    assert!(
        !watches("/apis/apps.paia.tech/v1alpha1/hotstandbyjobs").is_empty(),
        "{seen:#?}"
    );
    let jobs = watches("/apis/batch/v1/jobs");
    assert!(
        jobs.iter()
            .any(|s| s.contains("labelSelector=hsj.paia.tech"))
            && jobs.iter().any(|s| s.contains("labelSelector=asya.io"))
            && jobs
                .iter()
                .all(|s| s.contains("labelSelector=hsj.paia.tech")
                    || s.contains("labelSelector=asya.io")),
        "{seen:#?}"
    );
    assert!(
        watches("/api/v1/pods")
            .iter()
            .any(|s| s.contains("labelSelector=hsj.paia.tech")),
        "{seen:#?}"
    );
    let crds = watches("/apis/apiextensions.k8s.io/v1/customresourcedefinitions");
    assert_eq!(crds.len(), 3, "{seen:#?}");
    assert!(crds.iter().all(|s| s.contains("keda.sh")), "{seen:#?}");
    // The seed's legacy group is served by this fake API server, so it is watched too.
    assert!(
        !watches("/apis/apps.openshift.statefulsingleton.com/v1/statefulsingletons").is_empty(),
        "{seen:#?}"
    );
    let (status, metrics) = run.get_ops("/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("kube_standby_admission_duration_seconds_count 0"),
        "{metrics}"
    );
    let (status, state) = run.get_ops("/debug/state").await.expect("debug");
    assert_eq!((status, state.as_str()), (200, "{}"));
}

#[tokio::test]
async fn run_mode_without_a_reachable_cluster_is_not_ready() {
    // A kubeconfig pointing at a closed port: the process lives, /readyz says why not.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut api = fake_apiserver::start().await;
    std::fs::write(
        api.kubeconfig.path(),
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: x\n  context: {{cluster: x, user: x}}\ncurrent-context: x\nusers:\n- name: x\n  user: {{token: x}}\n"),
    )
    .unwrap();
    api.addr.set_port(port);
    let run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
    let mut answer = None;
    for _ in 0..100 {
        if let Some(a) = run.get("/readyz").await {
            answer = Some(a);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, body) = answer.expect("webhook served");
    assert_eq!(status, 503);
    assert!(body.contains("caches not synced"), "{body}");
}

#[tokio::test]
async fn run_mode_refuses_an_unusable_actor_runtime_file() {
    let api = fake_apiserver::start().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-standby"))
        .args([
            "run",
            "--tls-self-signed",
            "--bind",
            "127.0.0.1:0",
            "--metrics-bind",
            "127.0.0.1:0",
            "--actor-runtime-file",
            "/nonexistent/asya_runtime.py",
        ])
        .env("KUBECONFIG", api.kubeconfig.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/asya_runtime.py"), "{err}");
}

/// The fake API server itself: pushed watch events reach only the watches whose namespace
/// and label selector admit them (and later lists), and a POST to a collection is named
/// from generateName, answered 201 and logged.
#[tokio::test]
async fn fake_api_pushes_filtered_watch_events_and_names_created_objects() {
    use serde_json::{json, Value};
    let api = fake_apiserver::start().await;
    let base = format!("http://{}", api.addr);
    let client = reqwest::Client::new();
    let mut watch = client
        .get(format!(
            "{base}/api/v1/namespaces/a/pods?watch=true&labelSelector=app%3Dx"
        ))
        .send()
        .await
        .unwrap();
    let pod = |ns: &str, name: &str, app: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "labels": {"app": app}}})
    };
    api.push("/api/v1/pods", "ADDED", pod("b", "other-ns", "x"));
    api.push("/api/v1/pods", "ADDED", pod("a", "other-label", "y"));
    api.push(
        "/apis/apps/v1/replicasets",
        "ADDED",
        pod("a", "other-kind", "x"),
    );
    api.push("/api/v1/pods", "MODIFIED", pod("a", "mine", "x"));
    let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), watch.chunk())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    let ev: Value = serde_json::from_slice(&chunk).unwrap();
    assert_eq!(ev["type"], "MODIFIED");
    assert_eq!(ev["object"]["metadata"]["name"], "mine");
    assert!(ev["object"]["metadata"]["resourceVersion"].is_string());
    api.push("/api/v1/pods", "DELETED", pod("a", "other-label", "y"));
    let list: Value = client
        .get(format!("{base}/api/v1/namespaces/a/pods"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mine"]);

    let from = api.writes.len();
    let sent =
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "pool-"}});
    let r = client
        .post(format!("{base}/apis/batch/v1/namespaces/a/jobs"))
        .json(&sent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let made: Value = r.json().await.unwrap();
    let name = made["metadata"]["name"].as_str().unwrap();
    assert!(
        name.starts_with("pool-") && name.len() == "pool-".len() + 5,
        "{made}"
    );
    assert_eq!(made["metadata"]["namespace"], "a");
    assert!(made["metadata"]["uid"].is_string() && made["metadata"]["resourceVersion"].is_string());
    let w = api.writes.since(from);
    assert_eq!(w.len(), 1);
    assert_eq!(
        (w[0].method.as_str(), w[0].path.as_str()),
        ("POST", "/apis/batch/v1/namespaces/a/jobs")
    );
    assert_eq!((&w[0].body, &w[0].answer), (&sent, &made));
}

/// `kube-standby run` with one HotStandbyJob (idleTarget 1, annotation mode) and its one
/// idle unit: nothing is created until a pod watch event says the unit turned busy, then
/// one replacement Job of the pool is created.
#[tokio::test]
async fn run_mode_hsj_creates_a_job_when_its_unit_turns_busy() {
    use serde_json::json;
    use std::time::Duration;
    let owner = json!([{"apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob",
                        "name": "pool", "uid": "hsj-uid", "controller": true}]);
    let hsj = json!({"apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob",
        "metadata": {"name": "pool", "namespace": "t", "uid": "hsj-uid", "generation": 1},
        "spec": {"idleTarget": 1, "jobTemplate": {"image": "busybox"}, "busyProbe": {"mode": "annotation"}}});
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "pool-a", "namespace": "t", "uid": "job-a",
                     "labels": {"hsj.paia.tech/name": "pool"}, "ownerReferences": owner},
        "status": {"active": 1}});
    let pod = |busy: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "pool-a-p", "namespace": "t", "uid": "pod-a",
                         "labels": {"hsj.paia.tech/name": "pool"}, "annotations": {"paia.tech/busy": busy},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "pool-a", "uid": "job-a", "controller": true}]},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    };
    let objects = std::collections::HashMap::from([
        (
            "/apis/apps.paia.tech/v1alpha1/hotstandbyjobs".to_string(),
            vec![hsj],
        ),
        ("/apis/batch/v1/jobs".to_string(), vec![job]),
        ("/api/v1/pods".to_string(), vec![pod("false")]),
    ]);
    let api = fake_apiserver::start_with(std::sync::Arc::new(objects)).await;
    let run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
    assert!(run.wait_ready().await, "{}", run.stderr());
    let status = "/apis/apps.paia.tech/v1alpha1/namespaces/t/hotstandbyjobs/pool/status";
    let first = api
        .writes
        .wait_for(0, Duration::from_secs(20), |w| w.path == status)
        .await;
    assert!(first.is_some(), "no status write: {}", run.stderr());
    // The pod watch of the HSJ controller is open (listed after the caches synced).
    for _ in 0..250 {
        let seen = api.seen.0.lock().unwrap().clone();
        if seen.iter().any(|s| {
            s.contains("/api/v1/pods?") && s.contains("watch=true") && s.contains("hsj.paia.tech")
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let is_create = |w: &fake_apiserver::Write| {
        w.method == "POST" && w.path == "/apis/batch/v1/namespaces/t/jobs"
    };
    assert!(
        !api.writes.since(0).iter().any(is_create),
        "a full pool creates nothing"
    );
    let from = api.writes.len();
    api.push("/api/v1/pods", "MODIFIED", pod("true"));
    let (_, w) = api
        .writes
        .wait_for(from, Duration::from_secs(20), is_create)
        .await
        .unwrap_or_else(|| panic!("no Job created after the flip: {}", run.stderr()));
    assert_eq!(w.body["metadata"]["generateName"], "pool-");
    assert_eq!(w.body["metadata"]["ownerReferences"][0]["uid"], "hsj-uid");
    assert_eq!(w.body["metadata"]["labels"]["hsj.paia.tech/name"], "pool");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let creates = api.writes.since(0).iter().filter(|w| is_create(w)).count();
    assert_eq!(creates, 1, "one busy unit, one new Job");
}

/// Cluster-wide caches are built once whatever the number of `--namespace` scopes: one
/// Node watch and one watch per KEDA CRD serve every scope, while the namespaced kinds are
/// watched once per scope.
#[tokio::test]
async fn one_node_cache_and_one_keda_crd_cache_serve_several_namespace_scopes() {
    let api = fake_apiserver::start().await;
    let run = fake_apiserver::spawn_run_with(
        env!("CARGO_BIN_EXE_kube-standby"),
        &api,
        &[
            "--namespace",
            "team-a",
            "--namespace",
            "team-b",
            "--namespace",
            "team-c",
        ],
    )
    .await;
    assert!(run.wait_ready().await, "{}", run.stderr());
    let mut seen = vec![];
    for _ in 0..50 {
        seen = api.seen.0.lock().unwrap().clone();
        let ns_watches = |ns: &str| {
            seen.iter()
                .filter(|s| s.contains(&format!("/namespaces/{ns}/")) && s.contains("watch=true"))
                .count()
        };
        if ["team-a", "team-b", "team-c"]
            .iter()
            .all(|ns| ns_watches(ns) >= 10)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let watches = |p: &str| {
        seen.iter()
            .filter(|s| s.contains(p) && s.contains("watch=true"))
            .count()
    };
    assert_eq!(watches("/api/v1/nodes"), 1, "{seen:#?}");
    assert_eq!(
        watches("/apis/apiextensions.k8s.io/v1/customresourcedefinitions"),
        3,
        "{seen:#?}"
    );
    for ns in ["team-a", "team-b", "team-c"] {
        assert!(
            watches(&format!("/api/v1/namespaces/{ns}/pods")) >= 1,
            "no pod watch in {ns}: {seen:#?}"
        );
    }
    // Nothing is watched cluster-wide but Nodes and CRDs.
    assert!(
        !seen
            .iter()
            .any(|s| s.contains("watch=true") && s.contains("/api/v1/pods")),
        "{seen:#?}"
    );
}

/// The busy guard in `run` mode: a pool pod is found in the pool caches (the guard's own
/// watch leaves HSD and HSJ pods to them), a standalone guarded pod in the guard's cache.
/// An eviction of either while busy is held (429); an idle pool pod passes; a pool pod
/// without the guard label is not guarded.
#[tokio::test]
async fn run_mode_guard_holds_evictions_of_busy_pool_and_standalone_pods() {
    use serde_json::{json, Value};
    let pod = |name: &str, labels: Value, busy: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "cap-ns", "uid": format!("uid-{name}"), "resourceVersion": "1",
                            "labels": labels, "annotations": {"paia.tech/busy": busy}},
               "spec": {"containers": [{"name": "a", "image": "x"}]},
               "status": {"phase": "Running"}})
    };
    let guarded = |pool: bool| {
        let mut l = json!({"kube-standby.dev/busy-guard": "true"});
        if pool {
            l["hsd.paia.tech/name"] = json!("web");
        }
        l
    };
    let pods = vec![
        pod("pool-busy", guarded(true), "true"),
        pod("pool-idle", guarded(true), "false"),
        pod("alone-busy", guarded(false), "true"),
        pod(
            "pool-unlabelled",
            json!({"hsd.paia.tech/name": "web"}),
            "true",
        ),
    ];
    let objects = std::collections::HashMap::from([("/api/v1/pods".to_string(), pods)]);
    let api = fake_apiserver::start_with(std::sync::Arc::new(objects)).await;
    let run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
    assert!(run.wait_ready().await, "not ready:\n{}", run.stderr());
    let seen = api.seen.0.lock().unwrap().clone();
    assert!(
        seen.iter().any(
            |s| s.contains("busy-guard%3Dtrue%2C%21hsd.paia.tech%2Fname")
                || s.contains("busy-guard=true,!hsd.paia.tech/name")
        ),
        "the guard's watch excludes pool pods: {seen:#?}"
    );
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/admission/pod-eviction.json"
        ))
        .expect("fixture"),
    )
    .expect("json");
    let mut answers = vec![];
    for name in ["pool-busy", "pool-idle", "alone-busy", "pool-unlabelled"] {
        let mut review = fixture.clone();
        review["request"]["name"] = json!(name);
        review["request"]["object"]["metadata"]["name"] = json!(name);
        let (code, body) = run
            .post_json("/validate/pods", &review)
            .await
            .expect("an answer");
        assert_eq!(code, 200, "{body}");
        let r: Value = serde_json::from_str(&body).expect("json");
        answers.push((
            name,
            r["response"]["allowed"].clone(),
            r["response"]["status"]["code"].clone(),
        ));
    }
    assert_eq!(
        answers,
        vec![
            ("pool-busy", json!(false), json!(429)),
            ("pool-idle", json!(true), Value::Null),
            ("alone-busy", json!(false), json!(429)),
            ("pool-unlabelled", json!(true), Value::Null),
        ],
        "log:\n{}",
        run.stderr()
    );
}
