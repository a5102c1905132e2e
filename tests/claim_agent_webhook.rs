//! Claim agent injection (`spec.assignment: file`), golden-tested: real AdmissionReview
//! bodies through the Router, the returned JSONPatch applied, the pod checked.
mod common;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Pod;
use kube_standby::api::claim::{
    AssignmentMode, ASSIGNMENT_ANNOTATION, ASSIGNMENT_DIR, ASSIGNMENT_FILE, CLAIM_AGENT_NAME,
};
use kube_standby::webhook::{router, StaticObjects};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn admit(review: &Value) -> Value {
    let req = Request::post("/mutate/pods")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(review).unwrap()))
        .unwrap();
    let resp = router(common::state_with(StaticObjects::default()))
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

/// The pod after the response's patch, checked to be a valid Pod.
fn patched(review: &Value, resp: &Value) -> Value {
    let mut obj = review["request"]["object"].clone();
    if let Some(p) = resp["response"]["patch"].as_str() {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut obj, &patch).unwrap();
    }
    serde_json::from_value::<Pod>(obj.clone()).expect("patched object is a valid Pod");
    obj
}

fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

/// A ReplicaSet-made pod (no metadata.name) of a pool with `spec.assignment: file`.
fn pool_pod_review() -> Value {
    let mut review = common::fixture_json("pod-create-from-replicaset.json");
    review["request"]["object"]["metadata"]["annotations"] = json!({ASSIGNMENT_ANNOTATION: "file"});
    review
}

fn env<'a>(c: &'a Value, name: &str) -> &'a Value {
    &find(&c["env"], name)["value"]
}

#[tokio::test]
async fn a_pool_pod_gets_the_claim_agent_and_the_read_only_file() {
    let review = pool_pod_review();
    let resp = admit(&review).await;
    assert_eq!(resp["response"]["allowed"], true, "{resp}");
    let pod = patched(&review, &resp);
    assert!(pod["metadata"].get("name").is_none(), "generateName only");
    let containers = &pod["spec"]["containers"];
    assert_eq!(containers.as_array().unwrap().len(), 2);
    let agent = find(containers, CLAIM_AGENT_NAME);
    assert_eq!(
        agent["args"],
        json!(["agent", "--assignment-file", ASSIGNMENT_FILE])
    );
    assert_eq!(
        env(agent, "KUBE_STANDBY_OPERATOR_URL"),
        "https://kube-standby.kube-standby.svc:443"
    );
    assert!(env(agent, "KUBE_STANDBY_CA")
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert_eq!(
        find(&agent["env"], "POD_UID")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.uid"
    );
    assert!(agent["env"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["name"] != "KUBE_STANDBY_GIVE_UP_SECONDS"));
    assert_eq!(agent["securityContext"]["runAsNonRoot"], true);
    let mounts = &agent["volumeMounts"];
    let files = mounts
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == ASSIGNMENT_DIR)
        .unwrap();
    assert!(files.get("readOnly").is_none(), "the agent writes there");
    let token_mount = mounts
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/run/secrets/kube-standby")
        .unwrap();
    assert_eq!(token_mount["readOnly"], true);
    // The app container: its own mounts kept, the file directory added read-only.
    let app = find(containers, "game");
    let app_mounts = app["volumeMounts"].as_array().unwrap();
    assert_eq!(app_mounts.len(), 2);
    assert_eq!(
        app_mounts[0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    assert_eq!(
        app_mounts[1],
        json!({"mountPath": ASSIGNMENT_DIR, "name": "kube-standby-assignment", "readOnly": true})
    );
    // Volumes: the pod's own, the emptyDir, the projected token of our audience.
    let volumes = &pod["spec"]["volumes"];
    assert!(find(volumes, "kube-api-access-wvt29").is_object());
    assert_eq!(
        find(volumes, "kube-standby-assignment")["emptyDir"],
        json!({})
    );
    let token = find(volumes, "kube-standby-claim-token");
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "kube-standby"
    );
    assert_eq!(token_mount["name"], "kube-standby-claim-token");

    // Reinvocation (or a pod made from the patched spec): left alone.
    let mut again = review.clone();
    again["request"]["object"] = pod;
    let resp = admit(&again).await;
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("patch").is_none(), "{resp}");
}

#[tokio::test]
async fn pods_without_the_annotation_are_left_alone() {
    let mut review = common::fixture_json("pod-create-from-replicaset.json");
    let resp = admit(&review).await;
    assert!(resp["response"].get("patch").is_none());
    review["request"]["object"]["metadata"]["annotations"] = json!({ASSIGNMENT_ANNOTATION: "none"});
    let resp = admit(&review).await;
    assert!(resp["response"].get("patch").is_none());
}

#[tokio::test]
async fn a_job_pod_gets_an_agent_that_ends_once_assigned_and_never_gives_up() {
    let mut review = pool_pod_review();
    review["request"]["object"]["spec"]["restartPolicy"] = json!("Never");
    let resp = admit(&review).await;
    let pod = patched(&review, &resp);
    let agent = find(&pod["spec"]["containers"], CLAIM_AGENT_NAME);
    assert_eq!(
        agent["args"],
        json!([
            "agent",
            "--assignment-file",
            ASSIGNMENT_FILE,
            "--exit-when-assigned"
        ])
    );
    assert_eq!(env(agent, "KUBE_STANDBY_GIVE_UP_SECONDS"), "0");
}

#[tokio::test]
async fn taken_volume_names_get_a_suffix_and_a_taken_mount_path_is_denied() {
    let mut review = pool_pod_review();
    review["request"]["object"]["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "kube-standby-assignment", "emptyDir": {}}));
    let resp = admit(&review).await;
    let pod = patched(&review, &resp);
    let app = find(&pod["spec"]["containers"], "game");
    assert_eq!(app["volumeMounts"][1]["name"], "kube-standby-assignment-2");
    assert!(find(&pod["spec"]["volumes"], "kube-standby-assignment-2").is_object());

    let mut review = pool_pod_review();
    review["request"]["object"]["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "mine", "mountPath": format!("{ASSIGNMENT_DIR}/")}));
    let resp = admit(&review).await;
    assert_eq!(resp["response"]["allowed"], false);
    let msg = resp["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("already mounts") && msg.contains("spec.assignment file"),
        "{msg}"
    );
}

/// The whole chain from the pool: an HSD with `spec.assignment: file` makes pods that get
/// the agent.
#[tokio::test]
async fn an_hsd_with_assignment_file_makes_pods_that_get_the_agent() {
    let mut hsd: kube_standby::api::HotStandbyDeployment = serde_json::from_value(json!({
        "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
        "metadata": {"name": "warm", "namespace": "cap", "uid": "u"},
        "spec": {"idleTarget": 1, "selector": {"matchLabels": {"app": "warm"}},
                 "podTemplate": {"spec": {"containers": [{"name": "app", "image": "x"}]}}}
    }))
    .unwrap();
    hsd.spec.assignment = AssignmentMode::File;
    let tpl = kube_standby::controller::hsd::child::pod_template(&hsd).unwrap();
    let mut review = common::fixture_json("pod-create-from-replicaset.json");
    review["request"]["object"]["metadata"] = serde_json::to_value(&tpl.metadata).unwrap();
    review["request"]["object"]["metadata"]["generateName"] = json!("warm-abc-");
    review["request"]["object"]["spec"] = serde_json::to_value(&tpl.spec).unwrap();
    let resp = admit(&review).await;
    let pod = patched(&review, &resp);
    assert!(find(&pod["spec"]["containers"], CLAIM_AGENT_NAME).is_object());
}
