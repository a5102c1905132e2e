//! AsyncActor against a real cluster, with the reconciler running in this process (scoped to
//! the test's namespace). KEDA's CRDs come from `tests/data/crds/keda/` (a copy of the shared
//! fixtures); no KEDA controller runs, so nothing but us writes KEDA objects or replica counts.
//!
//! KEDA's CRDs are cluster-wide and one test removes them: every test here holds [`KEDA`].
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kube_standby::api::AsyncActor;
use kube_standby::controller::actor::{self, build, build::Kind, plan};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::util::{self, wait_for, PAUSE};

/// Held by every actor test: one of them uninstalls KEDA's (cluster-wide) CRDs.
pub(crate) static KEDA: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The password in the Secrets the tests create: no object we write may contain it.
const PASSWORD: &str = "e2e-password-never-copied";
const RUNTIME_V1: &str = "# asya runtime (e2e) v1\nprint('ready')\n";
const RUNTIME_V2: &str = "# asya runtime (e2e) v2\nprint('ready again')\n";

fn start_operator(
    client: Client,
    ns: &str,
    runtime: Option<PathBuf>,
) -> tokio::task::JoinHandle<()> {
    let cfg = actor::Config {
        sidecar_image: PAUSE.into(),
        runtime_file: runtime,
    };
    let ns = ns.to_string();
    tokio::spawn(async move {
        let run = actor::run(
            kube_standby::controller::Deps::standalone(client),
            Some(ns),
            cfg,
        );
        if let Err(e) = run.await {
            panic!("the AsyncActor reconciler stopped: {e}");
        }
    })
}

// ---- KEDA's CRDs ----

fn keda_crds() -> Vec<Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/crds/keda");
    let mut out = vec![];
    for file in [
        "keda.sh_scaledobjects.yaml",
        "keda.sh_scaledjobs.yaml",
        "keda.sh_triggerauthentications.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("KEDA CRD fixture");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).expect("YAML");
            if !v.is_null() {
                out.push(v);
            }
        }
    }
    assert_eq!(out.len(), 3, "three KEDA CRDs");
    out
}

async fn crd_established(api: &Api<CustomResourceDefinition>, name: &str) -> bool {
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|c| c.status)
        .and_then(|s| s.conditions)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Server-side apply KEDA's CRDs (as KEDA's docs install them) and wait until served.
pub(crate) async fn install_keda(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in keda_crds() {
        let name = crd["metadata"]["name"].as_str().expect("name").to_string();
        api.patch(
            &name,
            &PatchParams::apply("kube-standby-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("the API server accepts KEDA's CRD");
        wait_for(
            Duration::from_secs(60),
            &format!("{name} established"),
            || {
                let (api, name) = (api.clone(), name.clone());
                async move { crd_established(&api, &name).await }
            },
        )
        .await;
    }
}

async fn uninstall_keda(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in build::KEDA_CRDS {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => panic!("delete {name}: {e}"),
        }
        wait_for(Duration::from_secs(120), &format!("{name} gone"), || {
            let api = api.clone();
            async move { matches!(api.get_opt(name).await, Ok(None)) }
        })
        .await;
    }
}

// ---- objects ----

/// A seed example (`examples/<file>`) exactly as written, placed in `ns`.
fn example(file: &str, ns: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(file);
    let text = std::fs::read_to_string(path).expect("example");
    let mut v: Value = serde_yaml::from_str(&text).expect("YAML");
    v["metadata"]["namespace"] = ns.into();
    v
}

fn name_of(v: &Value) -> String {
    v["metadata"]["name"]
        .as_str()
        .expect("metadata.name")
        .to_string()
}

async fn apply(api: &Api<AsyncActor>, v: &Value) {
    api.patch(
        &name_of(v),
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(v),
    )
    .await
    .expect("the API server accepts the AsyncActor");
}

async fn secret(client: &Client, ns: &str, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    let s = serde_json::from_value(
        json!({"metadata": {"name": name}, "stringData": {"password": PASSWORD}}),
    )
    .expect("secret");
    api.create(&PostParams::default(), &s)
        .await
        .expect("create secret");
}

fn dynamic(client: &Client, ns: &str, kind: Kind) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &kind.api_resource())
}

/// The object of `kind` named `name`, as JSON (None: it does not exist).
async fn get(client: &Client, ns: &str, kind: Kind, name: &str) -> Option<Value> {
    match dynamic(client, ns, kind).get_opt(name).await {
        Ok(o) => o.map(|o| serde_json::to_value(o).expect("json")),
        // A KEDA kind whose CRD is not installed.
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => panic!("get {kind:?} {name}: {e}"),
    }
}

async fn wait_obj(client: &Client, ns: &str, kind: Kind, name: &str) -> Value {
    wait_for(
        Duration::from_secs(60),
        &format!("{kind:?} {name}"),
        || async { get(client, ns, kind, name).await.is_some() },
    )
    .await;
    get(client, ns, kind, name).await.expect("exists")
}

async fn wait_gone(client: &Client, ns: &str, kind: Kind, name: &str) {
    wait_for(
        Duration::from_secs(60),
        &format!("{kind:?} {name} gone"),
        || async { get(client, ns, kind, name).await.is_none() },
    )
    .await;
}

/// Controlled by `actor` (controller ownerReference with its UID), labelled with its name.
fn assert_owned(obj: &Value, actor: &AsyncActor) {
    let refs = obj["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        refs.iter().any(|r| r["kind"] == "AsyncActor"
            && r["controller"] == true
            && r["uid"].as_str() == actor.uid().as_deref()),
        "{} {} is not controlled by the actor: {refs:?}",
        obj["kind"],
        obj["metadata"]["name"]
    );
    assert_eq!(
        obj["metadata"]["labels"][build::ACTOR_LABEL].as_str(),
        Some(actor.name_any().as_str())
    );
}

/// (status, reason, message) of an actor's condition.
async fn condition(
    api: &Api<AsyncActor>,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let a = api.get_opt(name).await.ok().flatten()?;
    let c = a
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status, c.reason, c.message))
}

async fn wait_condition(
    api: &Api<AsyncActor>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let c = condition(api, name, type_).await;
        if c.as_ref()
            .is_some_and(|(s, r, _)| s == status && r == reason)
        {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {name}: {type_}={status} reason {reason}; last: {c:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn actor_obj(api: &Api<AsyncActor>, name: &str) -> AsyncActor {
    api.get(name).await.expect("actor")
}

/// Events about `actor` with `reason`: (count of Event objects, any repeated).
async fn events(client: &Client, ns: &str, actor: &str, reason: &str) -> (usize, bool) {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mine: Vec<_> = list
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(actor))
        .collect();
    let repeated = mine.iter().any(|e| e.series.is_some());
    (mine.len(), repeated)
}

fn container(tpl: &Value, i: usize) -> &Value {
    &tpl["spec"]["containers"][i]
}

fn env_of<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)
}

fn env_value(c: &Value, name: &str) -> Option<String> {
    env_of(c, name)
        .and_then(|e| e["value"].as_str())
        .map(str::to_string)
}

/// The runtime container of a built pod template carries the socket and runtime mounts.
fn assert_runtime_mounts(tpl: &Value, runtime_idx: usize) {
    let rt = container(tpl, runtime_idx);
    let mounts = rt["volumeMounts"].as_array().cloned().unwrap_or_default();
    assert!(
        mounts
            .iter()
            .any(|m| m["name"] == build::SOCKET_VOLUME && m["mountPath"] == "/tmp/sockets"),
        "socket dir mounted in the runtime: {mounts:?}"
    );
    assert!(
        mounts.iter().any(|m| m["name"] == build::RUNTIME_VOLUME
            && m["mountPath"] == build::RUNTIME_MOUNT
            && m["subPath"] == build::RUNTIME_KEY
            && m["readOnly"] == true),
        "runtime file mounted read-only: {mounts:?}"
    );
    let vols = tpl["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(vols
        .iter()
        .any(|v| v["name"] == build::SOCKET_VOLUME && v["emptyDir"].is_object()));
    assert!(vols.iter().any(|v| v["name"] == build::RUNTIME_VOLUME
        && v["configMap"]["name"] == build::RUNTIME_CONFIGMAP));
}

async fn actor_pods(pods: &Api<Pod>, actor: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("{}={actor}", build::ACTOR_LABEL));
    let mut v = pods.list(&lp).await.map(|l| l.items).unwrap_or_default();
    v.sort_by_key(|p| p.metadata.creation_timestamp.clone());
    v
}

fn running_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn tempfile_with(content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("asya_runtime.py");
    std::fs::write(&path, content).expect("write runtime file");
    (dir, path)
}

fn no_password(objs: &[&Value]) {
    for o in objs {
        let text = o.to_string();
        assert!(
            !text.contains(PASSWORD),
            "{} {} holds the password",
            o["kind"],
            o["metadata"]["name"]
        );
    }
}

/// A small actor of our own (not a seed example): `extra` is merged into it.
pub(crate) fn small_actor(ns: &str, name: &str, extra: Value) -> Value {
    let mut v = json!({
        "apiVersion": "asya.io/v1alpha1", "kind": "AsyncActor",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "queueName": format!("{name}-queue"),
            "transport": {"type": "sqs", "sqs": {"region": "eu-west-1"}},
            "timeout": {"gracefulShutdown": 1},
            "workload": {"type": "Deployment", "template": {"spec": {
                "containers": [{"name": "runtime", "image": PAUSE}]}}}
        }
    });
    json_patch::merge(&mut v, &extra);
    v
}

/// KEDA took the count of Deployment `name` from us (its ScaledObject exists): our field
/// manager no longer sets spec.replicas, yet the Deployment still runs `replicas` (no
/// KEDA controller runs here to change it): dropping the field did not reset it to 1.
async fn assert_count_handed_to_keda(client: &Client, ns: &str, name: &str, replicas: i64) {
    let dep = get(client, ns, Kind::Deployment, name)
        .await
        .expect("the Deployment");
    assert_eq!(
        dep["spec"]["replicas"].as_i64(),
        Some(replicas),
        "the count was reset"
    );
    let managers = dep["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let owns_replicas = |m: &Value| m["fieldsV1"]["f:spec"].get("f:replicas").is_some();
    let ours = managers
        .iter()
        .find(|m| m["manager"] == "kube-standby")
        .expect("our manager");
    assert!(!owns_replicas(ours), "we still set spec.replicas: {ours}");
    let holder = managers
        .iter()
        .find(|m| m["manager"] == plan::HANDOVER_MANAGER);
    assert!(
        holder.is_some_and(owns_replicas),
        "no hand-over of spec.replicas: {managers:?}"
    );
}

/// The short names the API server serves for AsyncActor.
async fn served_names(client: &Client) -> Vec<String> {
    let req = http::Request::get("/apis/asya.io/v1alpha1")
        .body(Vec::new())
        .expect("request");
    let list: k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList =
        client.request(req).await.expect("discovery");
    list.resources
        .into_iter()
        .find(|r| r.name == "asyncactors")
        .and_then(|r| r.short_names)
        .unwrap_or_default()
}

/// The row `kubectl get asyas` prints for `name`, as column name -> cell (the server's
/// Table rendering of the CRD's printer columns).
async fn table_row(client: &Client, ns: &str, name: &str) -> serde_json::Map<String, Value> {
    let req = http::Request::get(format!(
        "/apis/asya.io/v1alpha1/namespaces/{ns}/asyncactors"
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .expect("request");
    let table: Value =
        serde_json::from_str(&client.request_text(req).await.expect("table")).expect("JSON");
    let cols: Vec<String> = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let row = table["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["cells"][0] == name)
        .unwrap_or_else(|| panic!("no row for {name}: {table}"));
    let cells = row["cells"].as_array().cloned().unwrap_or_default();
    cols.into_iter().zip(cells).collect()
}

// ---- the tests ----

/// Every seed example applies unchanged (only placed in the test's namespace) and gets what
/// the seed README says: the workload owned by the actor with `containers[0].name ==
/// "sidecar"`, the runtime ConfigMap next to it, KEDA objects for the scaled ones, the
/// status conditions and references. Then the runtime file changes (ConfigMap and pods
/// follow) and, once every actor is gone, so is the namespace's runtime ConfigMap.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn seed_examples_apply_unchanged_and_get_their_objects() {
    if !util::enabled("seed_examples_apply_unchanged_and_get_their_objects") {
        return;
    }
    let _keda = KEDA.lock().await;
    util::in_namespace("ks-e2e-actor-seed", |client, ns| async move {
        install_keda(&client).await;
        let (_dir, runtime) = tempfile_with(RUNTIME_V1);
        let op = start_operator(client.clone(), &ns, Some(runtime.clone()));
        let api: Api<AsyncActor> = Api::namespaced(client.clone(), &ns);
        // The Secrets the seed README tells users to create.
        secret(&client, &ns, "rabbitmq-secret").await;
        secret(&client, &ns, "rabbitmq-credentials").await;
        let files = [
            "asyncactor-hello.yaml",
            "asyncactor-advanced.yaml",
            "asyncactor-text-processor.yaml",
            "asyncactor-statefulset.yaml",
            "asyncactor-job.yaml",
        ];
        for f in files {
            apply(&api, &example(f, &ns)).await;
        }

        // The runtime ConfigMap, in the actors' namespace.
        let cm = wait_obj(&client, &ns, Kind::ConfigMap, build::RUNTIME_CONFIGMAP).await;
        assert_eq!(cm["data"][build::RUNTIME_KEY], RUNTIME_V1);
        assert_eq!(cm["metadata"]["labels"][build::MANAGED_BY], "kube-standby");

        // hello-actor: RabbitMQ, KEDA scaling.
        let hello = actor_obj(&api, "hello-actor").await;
        let dep = wait_obj(&client, &ns, Kind::Deployment, "hello-actor").await;
        assert_owned(&dep, &hello);
        let tpl = &dep["spec"]["template"];
        assert_eq!(container(tpl, 0)["name"], "sidecar", "the sidecar is containers[0]");
        assert_eq!(container(tpl, 0)["image"], PAUSE, "--actor-sidecar-image");
        assert_eq!(container(tpl, 1)["name"], "runtime");
        assert_runtime_mounts(tpl, 1);
        let pw = env_of(container(tpl, 0), "ASYA_RABBITMQ_PASSWORD").expect("password env");
        assert_eq!(pw["valueFrom"]["secretKeyRef"], json!({"name": "rabbitmq-secret", "key": "password"}));
        assert!(pw.get("value").is_none_or(Value::is_null), "the password is never copied");
        assert_eq!(env_value(container(tpl, 0), "ASYA_QUEUE_NAME").as_deref(), Some("hello-queue"));
        assert_eq!(
            env_value(container(tpl, 0), "ASYA_RABBITMQ_HOST").as_deref(),
            Some("rabbitmq.rabbitmq.svc.cluster.local")
        );
        // KEDA drives the count: our field manager never set spec.replicas.
        let ours = dep["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["manager"] == "kube-standby")
            .expect("our field manager");
        assert!(ours["fieldsV1"]["f:spec"].get("f:replicas").is_none(), "{ours}");
        let ta = wait_obj(&client, &ns, Kind::TriggerAuthentication, "hello-actor").await;
        assert_owned(&ta, &hello);
        assert_eq!(
            ta["spec"]["secretTargetRef"],
            json!([{"parameter": "password", "name": "rabbitmq-secret", "key": "password"}])
        );
        assert_eq!(
            ta["spec"]["env"],
            json!([{"parameter": "username", "name": "ASYA_RABBITMQ_USERNAME", "containerName": "sidecar"}])
        );
        let so = wait_obj(&client, &ns, Kind::ScaledObject, "hello-actor").await;
        assert_owned(&so, &hello);
        assert_eq!(so["spec"]["scaleTargetRef"]["kind"], "Deployment");
        assert_eq!(so["spec"]["scaleTargetRef"]["name"], "hello-actor");
        assert_eq!((so["spec"]["minReplicaCount"].as_i64(), so["spec"]["maxReplicaCount"].as_i64()), (Some(0), Some(10)));
        let trig = &so["spec"]["triggers"][0];
        assert_eq!(trig["type"], "rabbitmq");
        assert_eq!(
            trig["metadata"],
            json!({"queueName": "hello-queue", "mode": "QueueLength", "value": "5", "protocol": "amqp",
                   "host": "amqp://rabbitmq.rabbitmq.svc.cluster.local:5672/"})
        );
        assert_eq!(trig["authenticationRef"]["name"], "hello-actor");
        let behavior = &so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"];
        assert_eq!(behavior["scaleUp"]["selectPolicy"], "Max");
        assert_eq!(
            behavior["scaleUp"]["policies"],
            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}, {"type": "Pods", "value": 4, "periodSeconds": 15}])
        );
        assert_eq!(behavior["scaleDown"]["stabilizationWindowSeconds"], 60);
        assert_eq!(behavior["scaleDown"]["policies"], json!([{"type": "Percent", "value": 50, "periodSeconds": 15}]));
        no_password(&[&dep, &ta, &so, &cm]);
        wait_condition(&api, "hello-actor", "WorkloadReady", "True", "WorkloadCreated").await;
        wait_condition(&api, "hello-actor", "ScalingReady", "True", "ScaledObjectCreated").await;
        wait_condition(&api, "hello-actor", "RuntimeMounted", "True", "ConfigMapMounted").await;
        let st = actor_obj(&api, "hello-actor").await;
        let status = st.status.clone().expect("status");
        let wref = status.workload_ref.expect("workloadRef");
        assert_eq!(
            (wref.api_version.as_str(), wref.kind.as_str(), wref.name.as_str(), wref.namespace.as_deref()),
            ("apps/v1", "Deployment", "hello-actor", Some(ns.as_str()))
        );
        let sref = status.scaled_object_ref.expect("scaledObjectRef");
        assert_eq!((sref.name.as_str(), sref.namespace.as_deref()), ("hello-actor", Some(ns.as_str())));
        assert_eq!(status.observed_generation, st.metadata.generation);
        assert_eq!(events(&client, &ns, "hello-actor", "WorkloadCreated").await.0, 1);
        // What `kubectl get asyas` shows (the seed's commands use both short names).
        let served = served_names(&client).await;
        assert!(served.contains(&"asya".to_string()) && served.contains(&"asyas".to_string()), "{served:?}");
        let row = table_row(&client, &ns, "hello-actor").await;
        for (col, want) in [("Workload", "Deployment"), ("Ready", "True"), ("Scaling", "ScaledObjectCreated")] {
            assert_eq!(row.get(col).and_then(Value::as_str), Some(want), "column {col}: {row:?}");
        }
        assert!(row.contains_key("Age"), "{row:?}");
        assert_eq!(events(&client, &ns, "hello-actor", "ScaledObjectCreated").await.0, 1);

        // advanced-actor: SQS, the sidecar block, socket, timeouts, scaling settings.
        let adv = actor_obj(&api, "advanced-actor").await;
        let dep = wait_obj(&client, &ns, Kind::Deployment, "advanced-actor").await;
        assert_owned(&dep, &adv);
        let tpl = &dep["spec"]["template"];
        let sc = container(tpl, 0);
        assert_eq!(sc["name"], "sidecar");
        assert_eq!((sc["image"].as_str(), sc["imagePullPolicy"].as_str()), (Some("asya-sidecar:v2.0"), Some("Always")));
        assert_eq!(sc["resources"]["limits"]["memory"], "256Mi");
        for (k, v) in [
            ("ASYA_TRANSPORT", "sqs"),
            ("ASYA_SQS_REGION", "us-east-1"),
            ("ASYA_SQS_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789/my-processing-queue"),
            ("ASYA_SQS_VISIBILITY_TIMEOUT", "300"),
            ("ASYA_SQS_WAIT_TIME_SECONDS", "20"),
            ("ASYA_SOCKET_PATH", "/tmp/sockets/app.sock"),
            ("ASYA_SOCKET_MAX_SIZE", "10485760"),
            ("ASYA_PROCESSING_TIMEOUT", "300"),
            ("ASYA_GRACEFUL_SHUTDOWN_TIMEOUT", "30"),
            ("CUSTOM_VAR", "custom-value"),
        ] {
            assert_eq!(env_value(sc, k).as_deref(), Some(v), "sidecar env {k}");
        }
        assert_eq!(tpl["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(tpl["metadata"]["labels"]["app"], "my-app", "the template's own labels stay");
        assert_eq!(env_value(container(tpl, 1), "APP_CONFIG").as_deref(), Some("production"));
        let so = wait_obj(&client, &ns, Kind::ScaledObject, "advanced-actor").await;
        assert_eq!(
            so["spec"]["triggers"][0]["metadata"],
            json!({"queueURL": "https://sqs.us-east-1.amazonaws.com/123456789/my-processing-queue",
                   "queueLength": "5", "awsRegion": "us-east-1"})
        );
        assert_eq!(so["spec"]["triggers"][0]["type"], "aws-sqs-queue");
        assert_eq!(
            (so["spec"]["pollingInterval"].as_i64(), so["spec"]["cooldownPeriod"].as_i64(), so["spec"]["maxReplicaCount"].as_i64()),
            (Some(10), Some(60), Some(50))
        );
        let ta = wait_obj(&client, &ns, Kind::TriggerAuthentication, "advanced-actor").await;
        assert_eq!(ta["spec"], json!({"podIdentity": {"provider": "aws"}}));
        wait_condition(&api, "advanced-actor", "ScalingReady", "True", "ScaledObjectCreated").await;
        wait_condition(&api, "advanced-actor", "WorkloadReady", "True", "WorkloadCreated").await;

        // text-processor: transport block missing, no scaling: replicas are ours (1).
        let tp = actor_obj(&api, "text-processor").await;
        let dep = wait_obj(&client, &ns, Kind::Deployment, "text-processor").await;
        assert_owned(&dep, &tp);
        assert_eq!(container(&dep["spec"]["template"], 0)["name"], "sidecar");
        assert_eq!(dep["spec"]["replicas"], 1);
        wait_condition(&api, "text-processor", "TransportConfigured", "False", "TransportBlockMissing").await;
        wait_condition(&api, "text-processor", "ScalingReady", "True", "ScalingDisabled").await;
        wait_condition(&api, "text-processor", "WorkloadReady", "True", "WorkloadCreated").await;
        assert!(get(&client, &ns, Kind::ScaledObject, "text-processor").await.is_none());
        assert!(get(&client, &ns, Kind::TriggerAuthentication, "text-processor").await.is_none());

        // stateful-actor: StatefulSet with its claim templates and a headless Service.
        let sa = actor_obj(&api, "stateful-actor").await;
        let sts = wait_obj(&client, &ns, Kind::StatefulSet, "stateful-actor").await;
        assert_owned(&sts, &sa);
        assert_eq!(container(&sts["spec"]["template"], 0)["name"], "sidecar");
        assert_eq!(sts["spec"]["serviceName"], "stateful-actor");
        assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "data");
        assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"], "10Gi");
        let svc = wait_obj(&client, &ns, Kind::Service, "stateful-actor").await;
        assert_owned(&svc, &sa);
        assert_eq!(svc["spec"]["clusterIP"], "None");
        wait_for(Duration::from_secs(60), "stateful-actor WorkloadReady set", || async {
            condition(&api, "stateful-actor", "WorkloadReady").await.is_some()
        })
        .await;
        // Its pod waits for a volume the cluster may not provision: any pod-derived state
        // is fine, a spec or ownership problem is not.
        let (_, reason, msg) = condition(&api, "stateful-actor", "WorkloadReady").await.expect("set");
        assert!(
            !["InvalidSpec", "WorkloadConflict", "WorkloadRejected"].contains(&reason.as_str()),
            "{reason}: {msg}"
        );
        assert!(get(&client, &ns, Kind::ScaledObject, "stateful-actor").await.is_none());

        // batch-actor: a Job. Kubernetes 1.24 has no native sidecars: the sidecar stays in
        // containers[0] and the actor says so; 1.29+ gets an init container instead.
        let ba = actor_obj(&api, "batch-actor").await;
        let job = wait_obj(&client, &ns, Kind::Job, "batch-actor").await;
        assert_owned(&job, &ba);
        let tpl = &job["spec"]["template"];
        assert_eq!(tpl["spec"]["restartPolicy"], "OnFailure");
        let v = client.apiserver_version().await.expect("version");
        if actor::supports_native_sidecars(&v.major, &v.minor) {
            assert_eq!(tpl["spec"]["initContainers"][0]["name"], "sidecar");
            assert_eq!(tpl["spec"]["initContainers"][0]["restartPolicy"], "Always");
            assert_eq!(container(tpl, 0)["name"], "runtime");
            wait_condition(&api, "batch-actor", "NativeSidecar", "True", "InitContainerSidecar").await;
        } else {
            assert_eq!(container(tpl, 0)["name"], "sidecar");
            assert_eq!(container(tpl, 1)["name"], "runtime");
            let inits = tpl["spec"]["initContainers"].as_array().cloned().unwrap_or_default();
            assert!(inits.iter().all(|c| c["name"] != "sidecar"), "{inits:?}");
            wait_condition(&api, "batch-actor", "NativeSidecar", "False", "UnsupportedByCluster").await;
        }
        assert_eq!(job["spec"]["parallelism"], 1);
        wait_condition(&api, "batch-actor", "WorkloadReady", "True", "WorkloadCreated").await;
        // The Job's pod ends (all its containers, sidecar included): the Job completes.
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pod = actor_pods(&pods, "batch-actor").await.first().map(|p| p.name_any()).expect("the Job's pod");
        pods.patch_status(&pod, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Succeeded"}})))
            .await
            .expect("pod Succeeded");
        wait_for(Duration::from_secs(60), "batch-actor reports the Job completed", || async {
            condition(&api, "batch-actor", "WorkloadReady")
                .await
                .is_some_and(|(s, _, m)| s == "True" && m.contains("completed"))
        })
        .await;

        // A new runtime file reaches the ConfigMap and rolls the Deployment's pods.
        std::fs::write(&runtime, RUNTIME_V2).expect("rewrite runtime");
        let want = build::runtime_hash(RUNTIME_V2);
        wait_for(Duration::from_secs(60), "runtime ConfigMap updated", || async {
            get(&client, &ns, Kind::ConfigMap, build::RUNTIME_CONFIGMAP)
                .await
                .is_some_and(|c| c["data"][build::RUNTIME_KEY] == RUNTIME_V2)
        })
        .await;
        wait_for(Duration::from_secs(60), "hello-actor's pods on the new runtime", || async {
            get(&client, &ns, Kind::Deployment, "hello-actor").await.is_some_and(|d| {
                d["spec"]["template"]["metadata"]["annotations"][build::RUNTIME_HASH] == want.as_str()
            })
        })
        .await;

        // Every actor gone: the namespace's runtime ConfigMap goes too.
        for f in files {
            api.delete(&name_of(&example(f, &ns)), &DeleteParams::background())
                .await
                .expect("delete actor");
        }
        wait_gone(&client, &ns, Kind::ConfigMap, build::RUNTIME_CONFIGMAP).await;
        op.abort();
    })
    .await;
}

/// KEDA not installed: the workload runs `workload.replicas`, ScalingReady=False reason
/// KedaNotInstalled; KEDA's CRDs installed later: the ScaledObject appears and the actor
/// recovers without an operator restart.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn keda_missing_then_installed_recovers_without_a_restart() {
    if !util::enabled("keda_missing_then_installed_recovers_without_a_restart") {
        return;
    }
    let _keda = KEDA.lock().await;
    util::in_namespace("ks-e2e-actor-nokeda", |client, ns| async move {
        uninstall_keda(&client).await;
        let op = start_operator(client.clone(), &ns, None);
        let api: Api<AsyncActor> = Api::namespaced(client.clone(), &ns);
        let a = small_actor(
            &ns,
            "nokeda",
            json!({"spec": {"scaling": {"enabled": true, "minReplicas": 1, "maxReplicas": 5}, "workload": {"replicas": 2}}}),
        );
        apply(&api, &a).await;
        wait_condition(&api, "nokeda", "ScalingReady", "False", "KedaNotInstalled").await;
        let dep = wait_obj(&client, &ns, Kind::Deployment, "nokeda").await;
        assert_eq!(dep["spec"]["replicas"], 2, "workload.replicas while KEDA is missing");
        assert_eq!(container(&dep["spec"]["template"], 0)["name"], "sidecar");
        wait_condition(&api, "nokeda", "WorkloadReady", "True", "WorkloadCreated").await;
        wait_condition(&api, "nokeda", "RuntimeMounted", "False", "NoRuntimeFile").await;
        // No runtime file: no runtime volume and no mount (only the socket's).
        let tpl = &dep["spec"]["template"];
        let vols = tpl["spec"]["volumes"].as_array().cloned().unwrap_or_default();
        assert!(vols.iter().all(|v| v["name"] != build::RUNTIME_VOLUME), "{vols:?}");
        let mounts = container(tpl, 1)["volumeMounts"].as_array().cloned().unwrap_or_default();
        assert!(mounts.iter().all(|m| m["mountPath"] != build::RUNTIME_MOUNT), "{mounts:?}");
        assert!(mounts.iter().any(|m| m["name"] == build::SOCKET_VOLUME), "{mounts:?}");
        assert_eq!(events(&client, &ns, "nokeda", "KedaNotInstalled").await, (1, false), "one Warning");
        assert!(actor_obj(&api, "nokeda").await.status.and_then(|s| s.scaled_object_ref).is_none());

        install_keda(&client).await;
        let so = wait_obj(&client, &ns, Kind::ScaledObject, "nokeda").await;
        assert_owned(&so, &actor_obj(&api, "nokeda").await);
        assert_eq!((so["spec"]["minReplicaCount"].as_i64(), so["spec"]["maxReplicaCount"].as_i64()), (Some(1), Some(5)));
        let ta = wait_obj(&client, &ns, Kind::TriggerAuthentication, "nokeda").await;
        assert_eq!(ta["spec"], json!({"podIdentity": {"provider": "aws"}}));
        wait_condition(&api, "nokeda", "ScalingReady", "True", "ScaledObjectCreated").await;
        assert!(actor_obj(&api, "nokeda").await.status.and_then(|s| s.scaled_object_ref).is_some());
        assert_count_handed_to_keda(&client, &ns, "nokeda", 2).await;
        assert!(!op.is_finished(), "the same operator run recovered");
        op.abort();
    })
    .await;
}

/// Scaling turned off later: the ScaledObject and TriggerAuthentication we made are deleted,
/// the workload carries `workload.replicas` again and the status drops scaledObjectRef.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn scaling_disabled_later_deletes_our_keda_objects() {
    if !util::enabled("scaling_disabled_later_deletes_our_keda_objects") {
        return;
    }
    let _keda = KEDA.lock().await;
    util::in_namespace("ks-e2e-actor-scaleoff", |client, ns| async move {
        install_keda(&client).await;
        let op = start_operator(client.clone(), &ns, None);
        let api: Api<AsyncActor> = Api::namespaced(client.clone(), &ns);
        secret(&client, &ns, "rabbitmq-secret").await;
        let mut hello = example("asyncactor-hello.yaml", &ns);
        apply(&api, &hello).await;
        wait_obj(&client, &ns, Kind::ScaledObject, "hello-actor").await;
        wait_obj(&client, &ns, Kind::TriggerAuthentication, "hello-actor").await;
        wait_condition(
            &api,
            "hello-actor",
            "ScalingReady",
            "True",
            "ScaledObjectCreated",
        )
        .await;

        hello["spec"]["scaling"]["enabled"] = false.into();
        hello["spec"]["workload"]["replicas"] = 3.into();
        apply(&api, &hello).await;
        wait_gone(&client, &ns, Kind::ScaledObject, "hello-actor").await;
        wait_gone(&client, &ns, Kind::TriggerAuthentication, "hello-actor").await;
        wait_condition(
            &api,
            "hello-actor",
            "ScalingReady",
            "True",
            "ScalingDisabled",
        )
        .await;
        wait_for(
            Duration::from_secs(30),
            "replicas 3 and no scaledObjectRef",
            || async {
                let dep = get(&client, &ns, Kind::Deployment, "hello-actor").await;
                let st = actor_obj(&api, "hello-actor").await.status;
                dep.is_some_and(|d| d["spec"]["replicas"] == 3)
                    && st.is_some_and(|s| s.scaled_object_ref.is_none())
            },
        )
        .await;
        assert_eq!(
            events(&client, &ns, "hello-actor", "ScalingRemoved")
                .await
                .0,
            1
        );

        // On again: recreated.
        hello["spec"]["scaling"]["enabled"] = true.into();
        apply(&api, &hello).await;
        wait_obj(&client, &ns, Kind::ScaledObject, "hello-actor").await;
        wait_condition(
            &api,
            "hello-actor",
            "ScalingReady",
            "True",
            "ScaledObjectCreated",
        )
        .await;
        assert_count_handed_to_keda(&client, &ns, "hello-actor", 3).await;
        op.abort();
    })
    .await;
}

/// workload.type Deployment → StatefulSet → Job (scaling on): each change deletes the old
/// workload (and a StatefulSet's Service), retargets or replaces the KEDA object, and the
/// status follows.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn a_workload_type_change_replaces_the_old_workload() {
    if !util::enabled("a_workload_type_change_replaces_the_old_workload") {
        return;
    }
    let _keda = KEDA.lock().await;
    util::in_namespace("ks-e2e-actor-type", |client, ns| async move {
        install_keda(&client).await;
        let op = start_operator(client.clone(), &ns, None);
        let api: Api<AsyncActor> = Api::namespaced(client.clone(), &ns);
        let mut a = small_actor(
            &ns,
            "morph",
            json!({"spec": {"scaling": {"enabled": true}}}),
        );
        apply(&api, &a).await;
        wait_obj(&client, &ns, Kind::Deployment, "morph").await;
        let so = wait_obj(&client, &ns, Kind::ScaledObject, "morph").await;
        assert_eq!(so["spec"]["scaleTargetRef"]["kind"], "Deployment");
        wait_condition(&api, "morph", "WorkloadReady", "True", "WorkloadCreated").await;

        a["spec"]["workload"]["type"] = "StatefulSet".into();
        apply(&api, &a).await;
        let sts = wait_obj(&client, &ns, Kind::StatefulSet, "morph").await;
        assert_owned(&sts, &actor_obj(&api, "morph").await);
        assert_eq!(container(&sts["spec"]["template"], 0)["name"], "sidecar");
        wait_obj(&client, &ns, Kind::Service, "morph").await;
        wait_gone(&client, &ns, Kind::Deployment, "morph").await;
        wait_for(
            Duration::from_secs(60),
            "ScaledObject retargeted",
            || async {
                get(&client, &ns, Kind::ScaledObject, "morph")
                    .await
                    .is_some_and(|s| s["spec"]["scaleTargetRef"]["kind"] == "StatefulSet")
            },
        )
        .await;
        wait_for(
            Duration::from_secs(60),
            "workloadRef StatefulSet",
            || async {
                actor_obj(&api, "morph")
                    .await
                    .status
                    .and_then(|s| s.workload_ref)
                    .is_some_and(|w| w.kind == "StatefulSet")
            },
        )
        .await;
        assert!(events(&client, &ns, "morph", "WorkloadReplaced").await.0 >= 1);

        // A Job actor with scaling: KEDA's ScaledJob starts the Jobs, we create none.
        a["spec"]["workload"]["type"] = "Job".into();
        apply(&api, &a).await;
        let sj = wait_obj(&client, &ns, Kind::ScaledJob, "morph").await;
        let jt = &sj["spec"]["jobTargetRef"]["template"]["spec"];
        let native = {
            let v = client.apiserver_version().await.expect("version");
            actor::supports_native_sidecars(&v.major, &v.minor)
        };
        let first = if native {
            &jt["initContainers"][0]
        } else {
            &jt["containers"][0]
        };
        assert_eq!(first["name"], "sidecar");
        assert_eq!(jt["restartPolicy"], "OnFailure");
        wait_gone(&client, &ns, Kind::StatefulSet, "morph").await;
        wait_gone(&client, &ns, Kind::Service, "morph").await;
        wait_gone(&client, &ns, Kind::ScaledObject, "morph").await;
        wait_condition(&api, "morph", "ScalingReady", "True", "ScaledJobCreated").await;
        assert!(
            get(&client, &ns, Kind::Job, "morph").await.is_none(),
            "no Job of ours beside the ScaledJob"
        );
        let st = actor_obj(&api, "morph").await.status.expect("status");
        assert_eq!(
            st.workload_ref.map(|w| w.kind).as_deref(),
            Some("ScaledJob")
        );
        assert!(st.scaled_object_ref.is_some());
        op.abort();
    })
    .await;
}

/// A Deployment of the actor's name that we do not own: a condition, one Warning event, and
/// the user's Deployment untouched (spec, labels, owners; no field of ours).
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn a_name_clash_leaves_the_users_deployment_alone() {
    if !util::enabled("a_name_clash_leaves_the_users_deployment_alone") {
        return;
    }
    let _keda = KEDA.lock().await;
    util::in_namespace("ks-e2e-actor-clash", |client, ns| async move {
        install_keda(&client).await;
        let deps: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), &ns);
        let user = serde_json::from_value(json!({
            "metadata": {"name": "clash", "labels": {"team": "someone-else"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "clash"}},
                     "template": {"metadata": {"labels": {"app": "clash"}},
                                  "spec": {"containers": [{"name": "app", "image": PAUSE}]}}}
        }))
        .expect("deployment");
        deps.create(&PostParams::default(), &user).await.expect("the user's Deployment");
        // The real Deployment controller adds annotations of its own
        // (`deployment.kubernetes.io/revision`): only the others could be ours.
        let fingerprint = |d: &Value| {
            let annotations: serde_json::Map<String, Value> = d["metadata"]["annotations"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| !k.starts_with("deployment.kubernetes.io/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            json!({"spec": d["spec"], "labels": d["metadata"]["labels"], "annotations": annotations,
                   "owners": d["metadata"]["ownerReferences"], "generation": d["metadata"]["generation"]})
        };
        let before = fingerprint(&get(&client, &ns, Kind::Deployment, "clash").await.expect("exists"));

        let op = start_operator(client.clone(), &ns, None);
        let api: Api<AsyncActor> = Api::namespaced(client.clone(), &ns);
        apply(&api, &small_actor(&ns, "clash", json!({"spec": {"scaling": {"enabled": true}}}))).await;
        wait_condition(&api, "clash", "WorkloadReady", "False", "WorkloadConflict").await;
        wait_condition(&api, "clash", "ScalingReady", "False", "WaitingForWorkload").await;
        // More reconciles (metadata changes of the actor), then look again.
        for i in 0..5 {
            api.patch("clash", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"poke": i.to_string()}}})))
                .await
                .expect("poke");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let after = get(&client, &ns, Kind::Deployment, "clash").await.expect("still there");
        assert_eq!(fingerprint(&after), before, "the user's Deployment changed");
        let managers: Vec<&Value> = after["metadata"]["managedFields"].as_array().into_iter().flatten().map(|m| &m["manager"]).collect();
        assert!(!managers.contains(&&json!("kube-standby")), "we wrote to it: {managers:?}");
        assert!(get(&client, &ns, Kind::ScaledObject, "clash").await.is_none(), "nothing would scale a foreign Deployment");
        assert_eq!(events(&client, &ns, "clash", "WorkloadConflict").await, (1, false), "one Warning event");
        let st = actor_obj(&api, "clash").await.status.expect("status");
        assert!(st.workload_ref.is_none());
        op.abort();
    })
    .await;
}

/// The RabbitMQ password Secret does not exist: we never read Secrets, so the pods' own
/// reason (the kubelet's CreateContainerConfigError) shows as WorkloadReady=False with one
/// Warning event. A simulated node does not resolve Secrets and starts the pod anyway; the
/// test then writes the status a kubelet reports for this pod, as a real node would.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn a_missing_password_secret_shows_as_workload_not_ready() {
    if !util::enabled("a_missing_password_secret_shows_as_workload_not_ready") {
        return;
    }
    let _keda = KEDA.lock().await;
    util::in_namespace("ks-e2e-actor-nosecret", |client, ns| async move {
        install_keda(&client).await;
        let op = start_operator(client.clone(), &ns, None);
        let api: Api<AsyncActor> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let a = small_actor(
            &ns,
            "nosecret",
            json!({"spec": {"transport": {"type": "rabbitmq", "sqs": null,
                "rabbitmq": {"host": "rabbitmq.example", "username": "u",
                             "passwordSecretRef": {"name": "absent-secret", "key": "password"}}}}}),
        );
        apply(&api, &a).await;
        let failing = |p: &Pod| {
            p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref())
                        == Some("CreateContainerConfigError")
                })
            })
        };
        wait_for(Duration::from_secs(120), "the pod fails or (simulated node) runs", || async {
            actor_pods(&pods, "nosecret").await.iter().any(|p| failing(p) || running_ready(p))
        })
        .await;
        let pod = actor_pods(&pods, "nosecret").await.into_iter().next().expect("pod");
        if !failing(&pod) {
            let waiting = |name: &str, reason: &str, msg: &str| {
                json!({"name": name, "ready": false, "restartCount": 0, "image": PAUSE, "imageID": "",
                       "state": {"waiting": {"reason": reason, "message": msg}}})
            };
            let patch = json!({"status": {"containerStatuses": [
                waiting("sidecar", "CreateContainerConfigError", "secret \"absent-secret\" not found"),
                waiting("runtime", "ContainerCreating", ""),
            ]}});
            pods.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                .await
                .expect("the kubelet's status");
        }
        // Sampled every 20 ms: a simulated node may overwrite the status again.
        let deadline = Instant::now() + Duration::from_secs(60);
        let msg = loop {
            match condition(&api, "nosecret", "WorkloadReady").await {
                Some((s, r, m)) if s == "False" && r == "CreateContainerConfigError" => break m,
                other if Instant::now() > deadline => panic!("WorkloadReady never showed the missing Secret: {other:?}"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        assert!(msg.contains("absent-secret") && msg.contains("container sidecar"), "{msg}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(events(&client, &ns, "nosecret", "CreateContainerConfigError").await, (1, false), "one Warning event");
        op.abort();
    })
    .await;
}

/// Beyond the original: with `scaling.busyProbe`, the actor's pods carry
/// pod-deletion-cost (busy high, idle low), so a Deployment scaled down by hand (as KEDA's
/// HPA would) removes idle pods and no busy one. Pods sampled every 20 ms.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn busy_pods_survive_a_scale_down_by_deletion_cost() {
    if !util::enabled("busy_pods_survive_a_scale_down_by_deletion_cost") {
        return;
    }
    let _keda = KEDA.lock().await;
    util::in_namespace("ks-e2e-actor-busy", |client, ns| async move {
        use kube_standby::controller::cost::{COST_IDLE, COST_PROTECTED, DELETION_COST};
        install_keda(&client).await;
        let op = start_operator(client.clone(), &ns, None);
        let api: Api<AsyncActor> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let deps: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(client.clone(), &ns);
        let a = small_actor(
            &ns,
            "busy",
            json!({"spec": {"scaling": {"enabled": false, "busyProbe": {"mode": "annotation"}},
                            "workload": {"replicas": 4}}}),
        );
        apply(&api, &a).await;
        let cost = |p: &Pod| p.annotations().get(DELETION_COST).cloned();
        wait_for(
            Duration::from_secs(120),
            "4 ready pods, each with the idle cost",
            || async {
                let v = actor_pods(&pods, "busy").await;
                v.len() == 4
                    && v.iter()
                        .all(|p| running_ready(p) && cost(p) == Some(COST_IDLE.to_string()))
            },
        )
        .await;
        let all: Vec<String> = actor_pods(&pods, "busy")
            .await
            .iter()
            .map(|p| p.name_any())
            .collect();
        let (busy, idle) = (all[..2].to_vec(), all[2..].to_vec());
        for b in &busy {
            pods.patch(
                b,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"paia.tech/busy": "true"}}})),
            )
            .await
            .expect("mark busy");
        }
        wait_for(
            Duration::from_secs(30),
            "busy pods cost high, idle low",
            || async {
                actor_pods(&pods, "busy").await.iter().all(|p| {
                    let want = if busy.contains(&p.name_any()) {
                        COST_PROTECTED
                    } else {
                        COST_IDLE
                    };
                    cost(p) == Some(want.to_string())
                })
            },
        )
        .await;

        // Every 20 ms: a busy pod missing or terminating is a failure.
        let lost: Arc<Mutex<Vec<String>>> = Arc::default();
        let sampler = {
            let (pods, lost, busy) = (pods.clone(), lost.clone(), busy.clone());
            tokio::spawn(async move {
                loop {
                    if let Ok(l) = pods
                        .list(&ListParams::default().labels("asya.io/actor=busy"))
                        .await
                    {
                        for b in &busy {
                            let alive = l.items.iter().any(|p| {
                                &p.name_any() == b && p.metadata.deletion_timestamp.is_none()
                            });
                            if !alive {
                                lost.lock().unwrap().push(b.clone());
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        deps.patch_scale(
            "busy",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("scale down by hand");
        wait_for(
            Duration::from_secs(60),
            "the two idle pods gone",
            || async {
                let left: Vec<String> = actor_pods(&pods, "busy")
                    .await
                    .iter()
                    .map(|p| p.name_any())
                    .collect();
                idle.iter().all(|i| !left.contains(i))
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        sampler.abort();
        let lost = lost.lock().unwrap().clone();
        assert!(lost.is_empty(), "busy pods were deleted: {lost:?}");
        let left: Vec<String> = actor_pods(&pods, "busy")
            .await
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        for b in &busy {
            assert!(left.contains(b), "busy pod {b} is gone; left: {left:?}");
        }
        op.abort();
    })
    .await;
}

/// Bad input: a template with no containers, then a running actor edited into one, then a
/// transport type without its block. Each gets a clear condition and one Warning event
/// (however often it is reconciled), and nothing that runs is overwritten.
#[tokio::test]
#[cfg_attr(
    not(kube_standby_e2e),
    ignore = "needs a cluster: set KUBE_STANDBY_E2E=1 and KUBECONFIG"
)]
async fn bad_input_gets_a_condition_one_warning_and_overwrites_nothing() {
    if !util::enabled("bad_input_gets_a_condition_one_warning_and_overwrites_nothing") {
        return;
    }
    let _keda = KEDA.lock().await;
    util::in_namespace("ks-e2e-actor-bad", |client, ns| async move {
        install_keda(&client).await;
        let op = start_operator(client.clone(), &ns, None);
        let api: Api<AsyncActor> = Api::namespaced(client.clone(), &ns);
        let no_containers =
            json!({"spec": {"workload": {"template": {"spec": {"containers": []}}}}});
        let poke = |name: &'static str| {
            let api = api.clone();
            async move {
                for i in 0..5 {
                    let p = json!({"metadata": {"annotations": {"poke": i.to_string()}}});
                    api.patch(name, &PatchParams::default(), &Patch::Merge(p))
                        .await
                        .expect("poke");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };

        // A new actor whose template has no containers: nothing is created.
        apply(&api, &small_actor(&ns, "empty", no_containers.clone())).await;
        wait_condition(&api, "empty", "WorkloadReady", "False", "InvalidSpec").await;
        let (_, _, msg) = condition(&api, "empty", "WorkloadReady")
            .await
            .expect("set");
        assert!(msg.contains("at least one container"), "{msg}");
        wait_condition(&api, "empty", "ScalingReady", "False", "WaitingForWorkload").await;
        poke("empty").await;
        assert!(get(&client, &ns, Kind::Deployment, "empty").await.is_none());
        assert_eq!(
            events(&client, &ns, "empty", "InvalidSpec").await,
            (1, false),
            "one Warning event"
        );

        // A running actor edited into the same mistake: its Deployment is left as it was.
        let good = small_actor(&ns, "good", json!({}));
        apply(&api, &good).await;
        wait_condition(&api, "good", "WorkloadReady", "True", "WorkloadCreated").await;
        let before = get(&client, &ns, Kind::Deployment, "good")
            .await
            .expect("exists");
        let mut bad = good.clone();
        json_patch::merge(&mut bad, &no_containers);
        apply(&api, &bad).await;
        wait_condition(&api, "good", "WorkloadReady", "False", "InvalidSpec").await;
        poke("good").await;
        let after = get(&client, &ns, Kind::Deployment, "good")
            .await
            .expect("still there");
        assert_eq!(
            after["metadata"]["generation"],
            before["metadata"]["generation"]
        );
        assert_eq!(
            after["spec"], before["spec"],
            "the running Deployment was rewritten"
        );
        assert_eq!(
            events(&client, &ns, "good", "InvalidSpec").await,
            (1, false),
            "one Warning event"
        );
        // Fixed again: back to normal, with no second InvalidSpec event.
        apply(&api, &good).await;
        wait_condition(&api, "good", "WorkloadReady", "True", "WorkloadCreated").await;
        assert_eq!(
            events(&client, &ns, "good", "InvalidSpec").await,
            (1, false)
        );

        // RabbitMQ named but no rabbitmq block, scaling on: the workload runs (the sidecar
        // uses its own defaults), KEDA gets nothing it cannot build, one Warning.
        let a = small_actor(
            &ns,
            "noblock",
            json!({"spec": {"transport": {"type": "rabbitmq", "sqs": null},
                            "scaling": {"enabled": true}, "workload": {"replicas": 2}}}),
        );
        apply(&api, &a).await;
        wait_condition(
            &api,
            "noblock",
            "TransportConfigured",
            "False",
            "TransportBlockMissing",
        )
        .await;
        wait_condition(
            &api,
            "noblock",
            "ScalingReady",
            "False",
            "TransportIncomplete",
        )
        .await;
        let dep = wait_obj(&client, &ns, Kind::Deployment, "noblock").await;
        assert_eq!(
            dep["spec"]["replicas"], 2,
            "workload.replicas while KEDA cannot scale it"
        );
        assert_eq!(container(&dep["spec"]["template"], 0)["name"], "sidecar");
        poke("noblock").await;
        assert!(get(&client, &ns, Kind::ScaledObject, "noblock")
            .await
            .is_none());
        assert!(get(&client, &ns, Kind::TriggerAuthentication, "noblock")
            .await
            .is_none());
        assert_eq!(
            events(&client, &ns, "noblock", "TransportBlockMissing").await,
            (1, false)
        );
        assert_eq!(
            events(&client, &ns, "noblock", "TransportIncomplete")
                .await
                .0,
            0,
            "said once, by TransportBlockMissing"
        );
        op.abort();
    })
    .await;
}
