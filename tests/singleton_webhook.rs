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

/// On the init gate the app containers are the same but for one added read-only mount of
/// the signal volume (an emptyDir of the patched pod) at /var/run/signal, last in each
/// container's volumeMounts: the app reads its epoch file there. Returns the volume name.
fn assert_only_the_signal_mount_added(before: &Value, after: &Value, what: &str) -> String {
    let (b, a) = (
        before["spec"]["containers"].as_array().unwrap(),
        after["spec"]["containers"].as_array().unwrap(),
    );
    assert_eq!(a.len(), b.len(), "{what}: containers added or removed");
    let mut volume: Option<String> = None;
    for (b, a) in b.iter().zip(a) {
        let mut mounts = a["volumeMounts"].as_array().cloned().unwrap_or_default();
        let added = mounts
            .pop()
            .unwrap_or_else(|| panic!("{what}: no mount added"));
        let name = added["name"].as_str().unwrap().to_string();
        assert_eq!(
            added,
            json!({"name": name, "mountPath": "/var/run/signal", "readOnly": true}),
            "{what}: the added mount"
        );
        let mut rest = a.clone();
        match b.get("volumeMounts") {
            Some(_) => rest["volumeMounts"] = Value::Array(mounts),
            None => {
                assert!(mounts.is_empty(), "{what}");
                rest.as_object_mut().unwrap().remove("volumeMounts");
            }
        }
        assert_eq!(&rest, b, "{what}: app container changed beyond the mount");
        assert!(
            find(&after["spec"]["volumes"], &name)["emptyDir"].is_object(),
            "{what}: the mount's volume"
        );
        assert!(volume.as_ref().is_none_or(|v| *v == name), "{what}");
        volume = Some(name);
    }
    volume.unwrap_or_else(|| panic!("{what}: no app container"))
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

    // App containers untouched but for the signal volume, mounted read-only: the app
    // reads its epoch from /var/run/signal/epoch, written there by the init gate.
    let signal = assert_only_the_signal_mount_added(before, &pod, "init gate");
    assert_eq!(signal, "statefulsingleton-signal");
    let init = &pod["spec"]["initContainers"][0];
    assert_eq!(
        init["volumeMounts"][0],
        json!({"name": "statefulsingleton-signal", "mountPath": "/var/run/signal"}),
        "the init gate writes the epoch file into the signal volume"
    );
    assert_eq!(
        find(&init["env"], "KUBE_STANDBY_EPOCH_FILE")["value"],
        "/var/run/signal/epoch"
    );
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
    assert_only_the_signal_mount_added(
        &review["request"]["object"],
        &pod,
        "startGate initContainer",
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

/// What the API server would reject: duplicate volume or container names, a duplicate
/// mount path in one container, a mount of a volume that does not exist.
fn validity_problems(pod: &Value) -> Vec<String> {
    let spec = &pod["spec"];
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let mut problems = vec![];
    let volumes: Vec<String> = list(&spec["volumes"])
        .iter()
        .map(|v| v["name"].as_str().unwrap_or_default().to_string())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for v in &volumes {
        if !seen.insert(v.clone()) {
            problems.push(format!("duplicate volume {v}"));
        }
    }
    let containers: Vec<Value> = list(&spec["containers"])
        .into_iter()
        .chain(list(&spec["initContainers"]))
        .collect();
    let mut names = std::collections::BTreeSet::new();
    for c in &containers {
        let name = c["name"].as_str().unwrap_or_default();
        if !names.insert(name.to_string()) {
            problems.push(format!("duplicate container {name}"));
        }
        let mut paths = std::collections::BTreeSet::new();
        for m in list(&c["volumeMounts"]) {
            let path = m["mountPath"]
                .as_str()
                .unwrap_or_default()
                .trim_end_matches('/');
            if !paths.insert(path.to_string()) {
                problems.push(format!("{name}: duplicate mount path {path}"));
            }
            let vol = m["name"].as_str().unwrap_or_default();
            if !volumes.iter().any(|v| v == vol) {
                problems.push(format!("{name}: mount of a missing volume {vol}"));
            }
        }
    }
    problems
}

enum Want {
    Gate(&'static str),
    Deny(&'static [&'static str]),
}

/// Pods that already use our names: volumes get free names, a clash on the wrapper's
/// mount paths or the sidecar's name moves to the init gate, and when no gate fits the
/// pod is denied with a message naming the clash. Every admitted pod is valid.
#[tokio::test]
async fn name_clashes_never_make_an_invalid_pod() {
    let with_cmd = "pod-create-direct-with-command.json";
    let no_cmd = "pod-create-from-replicaset.json";
    let user_volumes = json!([
        {"name": "statefulsingleton-token", "emptyDir": {}},
        {"name": "statefulsingleton-token-2", "emptyDir": {}},
        {"name": "statefulsingleton-wrapper", "emptyDir": {}},
        {"name": "statefulsingleton-signal", "emptyDir": {}},
        {"name": "mine", "emptyDir": {}}
    ]);
    let cases: Vec<(&str, &str, Value, &str, Want)> = vec![
        (
            "our volume names taken",
            with_cmd,
            json!({"volumes": user_volumes}),
            "auto",
            Want::Gate("wrapper"),
        ),
        (
            "our volume names taken, init gate",
            no_cmd,
            json!({"volumes": user_volumes}),
            "auto",
            Want::Gate("initContainer"),
        ),
        (
            "an app container mounts /opt/wrapper",
            with_cmd,
            json!({"volumes": [{"name": "mine", "emptyDir": {}}], "containers": {"0": {"volumeMounts": [{"name": "mine", "mountPath": "/opt/wrapper"}]}}}),
            "wrapper",
            Want::Gate("initContainer"),
        ),
        (
            "an app container mounts /var/run/signal/",
            with_cmd,
            json!({"volumes": [{"name": "mine", "emptyDir": {}}], "containers": {"0": {"volumeMounts": [{"name": "mine", "mountPath": "/var/run/signal/"}]}}}),
            "auto",
            Want::Deny(&[
                "already mounts",
                "/var/run/signal/",
                "epoch",
                "mount that volume elsewhere",
            ]),
        ),
        (
            "no command and /var/run/signal mounted",
            no_cmd,
            json!({"volumes": [{"name": "mine", "emptyDir": {}}], "containers": {"0": {"volumeMounts": [{"name": "mine", "mountPath": "/var/run/signal"}]}}}),
            "initContainer",
            Want::Deny(&[
                "already mounts",
                "/var/run/signal",
                "startGate is initContainer",
            ]),
        ),
        (
            "/opt/wrapper mounted and our signal volume name taken, init gate",
            with_cmd,
            json!({"volumes": [{"name": "statefulsingleton-signal", "emptyDir": {}}], "containers": {"0": {"volumeMounts": [{"name": "statefulsingleton-signal", "mountPath": "/opt/wrapper"}]}}}),
            "auto",
            Want::Gate("initContainer"),
        ),
        (
            "a user container is named status-sidecar",
            with_cmd,
            json!({"containers": {"1": {"name": "status-sidecar", "image": "busybox", "command": ["sleep", "1d"]}}}),
            "auto",
            Want::Gate("initContainer"),
        ),
        (
            "a user init container is named singleton-gate and there is no command",
            no_cmd,
            json!({"initContainers": [{"name": "singleton-gate", "image": "busybox"}]}),
            "auto",
            Want::Deny(&["singleton-gate", "has no command", "rename"]),
        ),
        (
            "singleton-gate taken and /opt/wrapper mounted",
            with_cmd,
            json!({"volumes": [{"name": "mine", "emptyDir": {}}], "containers": {"0": {"volumeMounts": [{"name": "mine", "mountPath": "/opt/wrapper"}]}},
                   "initContainers": [{"name": "singleton-gate", "image": "busybox"}]}),
            "auto",
            Want::Deny(&["singleton-gate", "/opt/wrapper"]),
        ),
        (
            "startGate initContainer and a container named singleton-gate",
            with_cmd,
            json!({"containers": {"1": {"name": "singleton-gate", "image": "busybox", "command": ["true"]}}}),
            "initContainer",
            Want::Deny(&["singleton-gate", "startGate is initContainer"]),
        ),
    ];
    for (what, fixture, change, gate, want) in cases {
        let mut review = common::fixture_json(fixture);
        let spec = &mut review["request"]["object"]["spec"];
        for (k, v) in change.as_object().unwrap() {
            match (k.as_str(), v) {
                ("containers", Value::Object(by_index)) => {
                    for (i, c) in by_index {
                        let i: usize = i.parse().unwrap();
                        let list = spec["containers"].as_array_mut().unwrap();
                        if i < list.len() {
                            let mounts = list[i]["volumeMounts"].as_array_mut().unwrap();
                            mounts.extend(c["volumeMounts"].as_array().unwrap().iter().cloned());
                        } else {
                            list.push(c.clone());
                        }
                    }
                }
                ("volumes", Value::Array(vs)) => spec["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .extend(vs.iter().cloned()),
                _ => spec[k] = v.clone(),
            }
        }
        let before = review["request"]["object"].clone();
        assert!(
            validity_problems(&before).is_empty(),
            "{what}: the test pod itself is invalid"
        );
        let labels = review["request"]["object"]["metadata"]["labels"].clone();
        let o = objects(&singleton(
            "s",
            "cap",
            json!({"matchLabels": labels}),
            json!({"startGate": gate}),
        ));
        let resp = admit(o, &review).await;
        match want {
            Want::Gate(g) => {
                assert_eq!(resp["response"]["allowed"], true, "{what}: {resp}");
                let pod = patched(&review, &resp);
                assert_eq!(
                    pod["metadata"]["annotations"]["apps.statefulsingleton.com/gate"], g,
                    "{what}"
                );
                let problems = validity_problems(&pod);
                assert!(problems.is_empty(), "{what}: {problems:?}");
                if g == "initContainer" {
                    assert_only_the_signal_mount_added(&before, &pod, what);
                }
                // The user's volumes are untouched; ours is the projected token.
                for v in before["spec"]["volumes"].as_array().unwrap() {
                    assert_eq!(
                        find(&pod["spec"]["volumes"], v["name"].as_str().unwrap()),
                        v,
                        "{what}"
                    );
                }
                let agent = pod["spec"]["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .chain(
                        pod["spec"]["initContainers"]
                            .as_array()
                            .into_iter()
                            .flatten(),
                    )
                    .find(|c| c["args"][0] == "agent")
                    .unwrap_or_else(|| panic!("{what}: no agent"));
                let token_mount = agent["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["mountPath"] == "/var/run/secrets/kube-standby")
                    .unwrap();
                let token = find(
                    &pod["spec"]["volumes"],
                    token_mount["name"].as_str().unwrap(),
                );
                assert_eq!(
                    token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
                    "kube-standby",
                    "{what}"
                );
                // Reinvoked, the injected pod is left alone.
                let mut again = review.clone();
                again["request"]["object"] = pod;
                let o = objects(&singleton(
                    "s",
                    "cap",
                    json!({"matchLabels": labels}),
                    json!({"startGate": gate}),
                ));
                assert!(
                    admit(o, &again).await["response"].get("patch").is_none(),
                    "{what}: patched twice"
                );
            }
            Want::Deny(words) => {
                assert_eq!(resp["response"]["allowed"], false, "{what}: {resp}");
                assert!(resp["response"].get("patch").is_none());
                let msg = resp["response"]["status"]["message"].as_str().unwrap();
                for w in words {
                    assert!(msg.contains(w), "{what}: {w:?} not in {msg:?}");
                }
            }
        }
    }
}

mod clash_properties {
    use super::*;
    use kube_standby::webhook::{mutate, Config};
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["app", "status-sidecar", "singleton-gate", "other"])
            .prop_map(String::from)
    }
    fn volume() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "statefulsingleton-token",
            "statefulsingleton-token-2",
            "statefulsingleton-wrapper",
            "statefulsingleton-signal",
            "statefulsingleton-signal-2",
            "data",
        ])
        .prop_map(String::from)
    }
    fn path() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "/opt/wrapper",
            "/opt/wrapper/",
            "/var/run/signal",
            "/opt",
            "/data",
            "/var/run/secrets/kube-standby",
        ])
        .prop_map(String::from)
    }
    fn container() -> impl Strategy<Value = Value> {
        (name(), any::<bool>(), prop::collection::vec(path(), 0..3)).prop_map(|(n, cmd, paths)| {
            let mut c = json!({"name": n, "image": "x"});
            if cmd {
                c["command"] = json!(["run"]);
            }
            c["volumeMounts"] = Value::Array(
                paths
                    .into_iter()
                    .map(|p| json!({"name": "data", "mountPath": p}))
                    .collect(),
            );
            c
        })
    }
    fn pod() -> impl Strategy<Value = Value> {
        (
            prop::collection::vec(container(), 1..4),
            prop::collection::vec(container(), 0..2),
            prop::collection::vec(volume(), 0..4),
        )
            .prop_map(|(cs, inits, vols)| {
                let mut vols: Vec<String> = vols;
                vols.push("data".into());
                vols.sort();
                vols.dedup();
                let mut spec = json!({
                    "containers": cs,
                    "volumes": vols.into_iter().map(|v| json!({"name": v, "emptyDir": {}})).collect::<Vec<_>>(),
                });
                if !inits.is_empty() {
                    spec["initContainers"] = Value::Array(inits);
                }
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "cap", "labels": {"app": "game"}}, "spec": spec})
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        /// For any valid pod: a denial names a container, or the patched pod is valid,
        /// carries the gate, and is left alone when reinvoked.
        #[test]
        fn valid_in_valid_out(pod in pod(), gate in prop::sample::select(vec!["auto", "wrapper", "initContainer"])) {
            prop_assume!(validity_problems(&pod).is_empty());
            let singletons = objects(&singleton("s", "cap", json!({"matchLabels": {"app": "game"}}), json!({"startGate": gate})))
                .singletons.clone();
            let injection = common::injection();
            let config = Config { singletons, injection: &injection };
            let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
            match mutate(&typed, &config) {
                Err(why) => prop_assert!(
                    why.contains("is already named") || why.contains("already mounts \"/var/run/signal"),
                    "{why}"
                ),
                Ok(ops) => {
                    let mut patched = pod.clone();
                    json_patch::patch(&mut patched, &ops).unwrap();
                    let problems = validity_problems(&patched);
                    prop_assert!(problems.is_empty(), "{:?}", problems);
                    let typed: Pod = serde_json::from_value(patched).unwrap();
                    prop_assert!(kube_standby::api::singleton::carries_gate(&typed));
                    prop_assert_eq!(mutate(&typed, &config).unwrap().len(), 0);
                }
            }
        }
    }
}

/// A pod of a HotStandbyDeployment or HotStandbyJob pool is never a singleton instance,
/// even when a StatefulSingleton's selector matches it: the singleton controller does not
/// watch pool pods, so a gated one would never be released. It is admitted without the
/// gate; a pool pod that asks for the claim agent gets that instead.
#[tokio::test]
async fn a_pool_pod_is_never_gated_even_when_a_singleton_selects_it() {
    let base = common::fixture_json("pod-create-from-replicaset.json");
    let gated = admit(common::demo_objects(), &base).await;
    assert!(
        patched(&base, &gated)["metadata"]["labels"]["apps.statefulsingleton.com/singleton"]
            .is_string(),
        "the fixture pod is a singleton's"
    );
    for label in ["hsd.paia.tech/name", "hsj.paia.tech/name"] {
        let mut review = base.clone();
        review["request"]["object"]["metadata"]["labels"][label] = "pool".into();
        let resp = admit(common::demo_objects(), &review).await;
        assert_eq!(resp["response"]["allowed"], true, "{label}");
        assert!(resp["response"].get("patch").is_none(), "{label}: {resp}");

        review["request"]["object"]["metadata"]["annotations"]["apps.paia.tech/assignment"] =
            "file".into();
        let resp = admit(common::demo_objects(), &review).await;
        let pod = patched(&review, &resp);
        assert!(
            pod["metadata"]["labels"]
                .get("apps.statefulsingleton.com/singleton")
                .is_none(),
            "{label}"
        );
        let names: Vec<&str> = pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert!(names.contains(&"claim-agent"), "{label}: {names:?}");
    }
}
