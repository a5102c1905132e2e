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
    // Ready means every cache has listed; the watches that follow the lists may still be on their way.
    let mut seen = vec![];
    for _ in 0..50 {
        seen = api.seen.0.lock().unwrap().clone();
        if seen.iter().filter(|s| s.contains("watch=true")).count() >= 25 {
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
    // of ours) and nodes, and only our ConfigMap by name.
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
    assert!(
        watches("/apis/apps/v1/replicasets")
            .iter()
            .all(|s| s.contains("labelSelector=hsd.paia.tech")),
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
