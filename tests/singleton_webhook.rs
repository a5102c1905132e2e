//! StatefulSingleton injection, golden-tested: real AdmissionReview bodies through the
//! Router (`oneshot`), the returned JSONPatch applied with `json_patch`, the result checked.
mod common;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Pod;
use kube_standby::webhook::{router, StaticObjects};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn admit(objects: StaticObjects, review: &Value) -> Value {
    let req = Request::post("/mutate/pods")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(review).unwrap()))
        .unwrap();
    let resp = router(common::state_with(objects))
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

/// The pod after the response's patch; asserts the patch type and that the result is a valid Pod.
fn patched(review: &Value, resp: &Value) -> Value {
    let mut obj = review["request"]["object"].clone();
    if let Some(p) = resp["response"]["patch"].as_str() {
        assert_eq!(resp["response"]["patchType"], "JSONPatch");
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut obj, &patch).unwrap();
    }
    serde_json::from_value::<Pod>(obj.clone()).expect("patched object is a valid Pod");
    obj
}

fn objects(yaml: &str) -> StaticObjects {
    StaticObjects::from_yaml(yaml, "test").unwrap()
}

fn singleton(name: &str, ns: &str, selector: Value, extra: Value) -> String {
    let mut v = json!({"apiVersion": "apps.statefulsingleton.com/v1", "kind": "StatefulSingleton",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"selector": selector}});
    json_patch::merge(&mut v["spec"], &extra);
    serde_yaml::to_string(&v).unwrap()
}

fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

#[tokio::test]
async fn replicaset_pod_without_command_gets_the_init_gate_and_keeps_its_containers() {
    let review = common::fixture_json("pod-create-from-replicaset.json");
    let resp = admit(common::demo_objects(), &review).await;
    assert_eq!(resp["response"]["allowed"], true);
    assert_eq!(resp["response"]["uid"], review["request"]["uid"]);
    let pod = patched(&review, &resp);
    let before = &review["request"]["object"];

    // generateName only: nothing refers to metadata.name.
    assert!(pod["metadata"].get("name").is_none());
    assert_eq!(pod["metadata"]["generateName"], "game-6f4b7f6d76-");
    assert_eq!(
        pod["metadata"]["labels"]["apps.statefulsingleton.com/managed"],
        "true"
    );
    assert_eq!(
        pod["metadata"]["labels"]["apps.statefulsingleton.com/singleton"],
        "game"
    );
    assert_eq!(
        pod["metadata"]["labels"]["app"], "game",
        "existing labels kept"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["apps.statefulsingleton.com/gate"],
        "initContainer"
    );
    assert_eq!(
        pod["spec"]["readinessGates"],
        json!([{"conditionType": "apps.statefulsingleton.com/singleton-ready"}])
    );
    assert_eq!(
        pod["spec"]["terminationGracePeriodSeconds"], 60,
        "singleton's 60 > pod's 30"
    );

    // App containers untouched.
    assert_eq!(pod["spec"]["containers"], before["spec"]["containers"]);
    let init = &pod["spec"]["initContainers"][0];
    assert_eq!(init["name"], "singleton-gate");
    assert_eq!(init["args"], json!(["agent", "--once"]));
    assert_eq!(init["image"], "ghcr.io/paia-tech/kube-standby:test");
    assert_eq!(
        find(&init["env"], "KUBE_STANDBY_OPERATOR_URL")["value"],
        "https://kube-standby.kube-standby.svc:443"
    );
    assert!(find(&init["env"], "KUBE_STANDBY_CA")["value"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert_eq!(
        find(&init["env"], "POD_UID")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.uid"
    );
    let token = find(&pod["spec"]["volumes"], "statefulsingleton-token");
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "kube-standby"
    );
    assert!(pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["name"] != "statefulsingleton-wrapper"));
    // The original volumes are still there.
    assert!(pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "kube-api-access-wvt29"));

    let term = &pod["spec"]["affinity"]["podAntiAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(term["weight"], 100);
    assert_eq!(
        term["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        term["podAffinityTerm"]["labelSelector"],
        json!({"matchLabels": {"apps.statefulsingleton.com/singleton": "game"}})
    );
}

#[tokio::test]
async fn pod_with_command_is_wrapped_with_its_exact_argv() {
    let review = common::fixture_json("pod-create-direct-with-command.json");
    let resp = admit(common::demo_objects(), &review).await;
    let pod = patched(&review, &resp);
    let before = &review["request"]["object"]["spec"]["containers"][0];
    let app = &pod["spec"]["containers"][0];
    assert_eq!(
        app["command"],
        json!([
            "/opt/wrapper/entrypoint-wrapper.sh",
            "--",
            "/bin/server",
            "--port=8080",
            "a b"
        ])
    );
    assert_eq!(app.get("args"), before.get("args"), "args untouched");
    assert_eq!(
        pod["metadata"]["annotations"]["apps.statefulsingleton.com/gate"],
        "wrapper"
    );
    assert_eq!(
        find(&app["volumeMounts"], "statefulsingleton-wrapper")["mountPath"],
        "/opt/wrapper"
    );
    assert_eq!(
        find(&app["volumeMounts"], "statefulsingleton-signal")["mountPath"],
        "/var/run/signal"
    );
    let wrapper = find(&pod["spec"]["volumes"], "statefulsingleton-wrapper");
    assert_eq!(
        wrapper["configMap"],
        json!({"name": "statefulsingleton-wrapper", "defaultMode": 493})
    );
    assert!(find(&pod["spec"]["volumes"], "statefulsingleton-signal")["emptyDir"].is_object());
    let sidecar = find(&pod["spec"]["containers"], "status-sidecar");
    assert_eq!(
        sidecar["resources"],
        json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "20m", "memory": "64Mi"}})
    );
    assert_eq!(
        sidecar["args"],
        json!(["agent", "--signal-file", "/var/run/signal/start-signal"])
    );
    assert!(pod["spec"].get("initContainers").is_none());
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(
        pod["metadata"]["labels"]["apps.statefulsingleton.com/singleton"],
        "solo"
    );
}

#[tokio::test]
async fn reinvocation_leaves_an_injected_pod_alone() {
    for f in [
        "pod-create-from-replicaset.json",
        "pod-create-direct-with-command.json",
    ] {
        let review = common::fixture_json(f);
        let first = admit(common::demo_objects(), &review).await;
        let mut again = review.clone();
        again["request"]["object"] = patched(&review, &first);
        let second = admit(common::demo_objects(), &again).await;
        assert_eq!(second["response"]["allowed"], true);
        assert!(
            second["response"].get("patch").is_none(),
            "{f}: reinvocation patched again"
        );
    }
}

#[tokio::test]
async fn the_gate_annotation_alone_does_not_bypass_the_gate() {
    // A pod that only carries the gate annotation (set by a user, or copied from an old
    // pod's YAML) is still injected: "injected" is decided from the injected containers.
    let mut review = common::fixture_json("pod-create-from-replicaset.json");
    review["request"]["object"]["metadata"]["annotations"] =
        json!({"apps.statefulsingleton.com/gate": "initContainer"});
    let resp = admit(common::demo_objects(), &review).await;
    let pod = patched(&review, &resp);
    let gate = find(&pod["spec"]["initContainers"], "singleton-gate");
    assert_eq!(gate["args"][0], "agent");
    // A user container that merely reuses the gate's name is not a gate either.
    let mut review = common::fixture_json("pod-create-direct-with-command.json");
    review["request"]["object"]["spec"]["initContainers"] =
        json!([{"name": "singleton-gate", "image": "busybox", "command": ["true"]}]);
    let resp = admit(common::demo_objects(), &review).await;
    assert!(resp["response"]["patch"].is_string(), "{resp}");
}

#[tokio::test]
async fn update_is_never_patched_and_dry_run_gets_the_real_patch() {
    for f in ["pod-update-annotation.json", "pod-update-status.json"] {
        let resp = admit(common::demo_objects(), &common::fixture_json(f)).await;
        assert!(resp["response"].get("patch").is_none(), "{f}");
    }
    let mut dry = common::fixture_json("pod-create-dry-run.json");
    dry["request"]["object"]["metadata"]["labels"] = json!({"run": "solo"});
    let mut real = dry.clone();
    real["request"]["dryRun"] = false.into();
    let a = admit(common::demo_objects(), &dry).await;
    let b = admit(common::demo_objects(), &real).await;
    assert!(a["response"]["patch"].is_string());
    assert_eq!(a, b);
}

#[tokio::test]
async fn existing_affinity_and_init_containers_are_merged_not_replaced() {
    let mut review = common::fixture_json("pod-create-from-replicaset.json");
    let obj = &mut review["request"]["object"]["spec"];
    obj["affinity"] = json!({
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}},
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm": {"topologyKey": "zone", "labelSelector": {"matchLabels": {"x": "y"}}}}]}
    });
    obj["initContainers"] = json!([{"name": "migrate", "image": "migrate:1"}]);
    let resp = admit(common::demo_objects(), &review).await;
    let pod = patched(&review, &resp);
    assert_eq!(
        pod["spec"]["affinity"]["nodeAffinity"],
        review["request"]["object"]["spec"]["affinity"]["nodeAffinity"]
    );
    let terms = pod["spec"]["affinity"]["podAntiAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .unwrap();
    assert_eq!(terms.len(), 2);
    assert_eq!(terms[0]["weight"], 10);
    assert_eq!(
        terms[1]["podAffinityTerm"]["labelSelector"]["matchLabels"]
            ["apps.statefulsingleton.com/singleton"],
        "game"
    );
    let inits: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        inits,
        vec!["singleton-gate", "migrate"],
        "the gate runs before any other init container"
    );
}

#[tokio::test]
async fn grace_period_rules() {
    let mut review = common::fixture_json("pod-create-from-replicaset.json");
    review["request"]["object"]["spec"]["terminationGracePeriodSeconds"] = 600.into();
    let pod = patched(&review, &admit(common::demo_objects(), &review).await);
    assert_eq!(
        pod["spec"]["terminationGracePeriodSeconds"], 600,
        "pod's own is longer and respected"
    );
    let o = objects(&singleton(
        "game",
        "cap",
        json!({"matchLabels": {"app": "game"}}),
        json!({"terminationGracePeriod": 45, "respectPodGracePeriod": false}),
    ));
    let pod = patched(&review, &admit(o, &review).await);
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 45);
}

#[tokio::test]
async fn overlapping_singletons_the_oldest_wins() {
    let mut yaml = singleton(
        "newer",
        "cap",
        json!({"matchLabels": {"app": "game"}}),
        json!({}),
    );
    yaml = yaml.replace("2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z");
    yaml.push_str("---\n");
    yaml.push_str(&singleton(
        "older",
        "cap",
        json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["game"]}]}),
        json!({}),
    ));
    let review = common::fixture_json("pod-create-from-replicaset.json");
    let pod = patched(&review, &admit(objects(&yaml), &review).await);
    assert_eq!(
        pod["metadata"]["labels"]["apps.statefulsingleton.com/singleton"],
        "older"
    );
}

#[tokio::test]
async fn explicit_gates_and_non_matching_pods() {
    let review = common::fixture_json("pod-create-direct-with-command.json");
    let o = objects(&singleton(
        "solo",
        "cap",
        json!({"matchLabels": {"run": "solo"}}),
        json!({"startGate": "initContainer"}),
    ));
    let pod = patched(&review, &admit(o, &review).await);
    assert_eq!(
        pod["metadata"]["annotations"]["apps.statefulsingleton.com/gate"],
        "initContainer"
    );
    assert_eq!(
        pod["spec"]["containers"],
        review["request"]["object"]["spec"]["containers"]
    );

    // wrapper requested, but a container has no command: the init gate, never a guessed entrypoint.
    let review = common::fixture_json("pod-create-from-replicaset.json");
    let o = objects(&singleton(
        "game",
        "cap",
        json!({"matchLabels": {"app": "game"}}),
        json!({"startGate": "wrapper"}),
    ));
    let pod = patched(&review, &admit(o, &review).await);
    assert_eq!(
        pod["metadata"]["annotations"]["apps.statefulsingleton.com/gate"],
        "initContainer"
    );

    // Another namespace, or labels that do not match: unchanged.
    let o = objects(&singleton(
        "game",
        "elsewhere",
        json!({"matchLabels": {"app": "game"}}),
        json!({}),
    ));
    assert!(admit(o, &review).await["response"].get("patch").is_none());
    let o = objects(&singleton(
        "game",
        "cap",
        json!({"matchLabels": {"app": "other"}}),
        json!({}),
    ));
    assert!(admit(o, &review).await["response"].get("patch").is_none());
}

#[tokio::test]
async fn pods_without_labels_or_annotations_get_whole_maps() {
    let mut review = common::fixture_json("pod-create-direct-with-command.json");
    let obj = review["request"]["object"]["metadata"]
        .as_object_mut()
        .unwrap();
    obj.remove("labels");
    let o = objects(&singleton(
        "any",
        "cap",
        json!({"matchExpressions": [{"key": "run", "operator": "DoesNotExist"}]}),
        json!({}),
    ));
    let pod = patched(&review, &admit(o, &review).await);
    assert_eq!(
        pod["metadata"]["labels"],
        json!({"apps.statefulsingleton.com/managed": "true", "apps.statefulsingleton.com/singleton": "any"})
    );
    assert_eq!(
        pod["metadata"]["annotations"],
        json!({"apps.statefulsingleton.com/gate": "wrapper"})
    );
}
