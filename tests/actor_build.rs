//! The AsyncActor builders and planner on every seed example: golden files of every object
//! the operator writes for a new actor (KEDA installed, a runtime file configured), checked
//! in under `tests/data/actor/`. `KUBE_STANDBY_UPDATE_GOLDEN=1 cargo test --test actor_build`
//! rewrites them (review the diff).
mod common;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_standby::api::AsyncActor;
use kube_standby::controller::actor::build::{self, BuildConfig, Kind};
use kube_standby::controller::actor::plan::{self, Action, Keda, Observed, RuntimeCm};
use serde_json::Value;

pub const RUNTIME: &str = "# asya runtime\nprint('hello')\n";

pub fn example(file: &str) -> AsyncActor {
    // The originals as their users wrote them (some name a namespace, which the golden
    // files keep); `examples/` holds namespace-free copies.
    let text =
        std::fs::read_to_string(common::repo().join("examples/original").join(file)).unwrap();
    let mut v: Value = serde_yaml::from_str(&text).unwrap();
    if v["metadata"]["namespace"].is_null() {
        v["metadata"]["namespace"] = "default".into();
    }
    v["metadata"]["uid"] = "actor-uid".into();
    v["metadata"]["generation"] = 1.into();
    serde_json::from_value(v).unwrap()
}

pub fn cfg(native: bool) -> BuildConfig {
    BuildConfig {
        sidecar_image: "registry.example/asya-sidecar:1.0".into(),
        runtime_hash: Some(build::runtime_hash(RUNTIME)),
        native_sidecar: native,
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap())
}

/// The objects written for a new actor, as one YAML stream.
fn writes(actor: &AsyncActor, cfg: &BuildConfig) -> (String, plan::Plan) {
    let o = Observed {
        actor,
        cfg,
        runtime: Some(RUNTIME),
        existing: vec![],
        configmap: RuntimeCm::Missing,
        keda: Keda::all(),
        pods: vec![],
    };
    let p = plan::plan(&o, &now());
    let mut out = String::new();
    for a in &p.actions {
        match a {
            Action::Apply { body, .. } => {
                out.push_str("---\n");
                out.push_str(&serde_yaml::to_string(body).unwrap());
            }
            other => panic!("a new actor only applies, got {other:?}"),
        }
    }
    (out, p)
}

fn golden(name: &str, got: &str) {
    let path = common::repo().join("tests/data/actor").join(name);
    if std::env::var("KUBE_STANDBY_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} missing: run with KUBE_STANDBY_UPDATE_GOLDEN=1",
            path.display()
        )
    });
    assert_eq!(got, want, "{name} differs from the golden file");
}

const EXAMPLES: [&str; 5] = [
    "asyncactor-hello.yaml",
    "asyncactor-advanced.yaml",
    "asyncactor-text-processor.yaml",
    "asyncactor-statefulset.yaml",
    "asyncactor-job.yaml",
];

#[test]
fn every_seed_example_builds_what_its_golden_file_holds() {
    for f in EXAMPLES {
        let (y, _) = writes(&example(f), &cfg(false));
        golden(&f.replace(".yaml", ".objects.yaml"), &y);
    }
    // A Job actor on a cluster with native sidecars (1.29+), scaled by KEDA.
    let mut job = example("asyncactor-job.yaml");
    job.spec.scaling = Some(
        serde_json::from_value(serde_json::json!({"enabled": true, "maxReplicas": 5})).unwrap(),
    );
    let (y, _) = writes(&job, &cfg(true));
    golden("asyncactor-job-scaled-native.objects.yaml", &y);
}

fn applied(p: &plan::Plan, kind: Kind) -> Option<&Value> {
    p.actions.iter().find_map(|a| match a {
        Action::Apply { kind: k, body } if *k == kind => Some(body),
        _ => None,
    })
}

fn containers(tpl: &Value) -> Vec<&str> {
    tpl["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

/// What the seed README tells users to check, on every example: the sidecar is
/// containers[0], both containers share the socket directory, the runtime is mounted.
#[test]
fn the_sidecar_is_first_and_shares_the_socket_with_the_runtime() {
    for f in EXAMPLES {
        let a = example(f);
        let (_, p) = writes(&a, &cfg(false));
        let kind = Kind::of(a.spec.workload.type_);
        let w = applied(&p, kind).unwrap_or_else(|| panic!("{f}: no {kind:?}"));
        let tpl = &w["spec"]["template"];
        assert_eq!(containers(tpl)[0], "sidecar", "{f}");
        assert_eq!(containers(tpl)[1], "runtime", "{f}");
        let mounts = |i: usize| {
            tpl["spec"]["containers"][i]["volumeMounts"]
                .as_array()
                .unwrap()
                .clone()
        };
        assert!(
            mounts(0)
                .iter()
                .any(|m| m["name"] == "asya-socket" && m["mountPath"] == "/tmp/sockets"),
            "{f}"
        );
        assert!(
            mounts(1)
                .iter()
                .any(|m| m["name"] == "asya-socket" && m["mountPath"] == "/tmp/sockets"),
            "{f}"
        );
        assert!(
            mounts(1)
                .iter()
                .any(|m| m["mountPath"] == "/opt/asya/asya_runtime.py"
                    && m["readOnly"] == true
                    && m["subPath"] == "asya_runtime.py"),
            "{f}"
        );
        assert_eq!(w["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(
            w["metadata"]["name"],
            a.metadata.name.clone().unwrap().as_str()
        );
        // No password anywhere in what we write.
        for a in &p.actions {
            if let Action::Apply { body, .. } = a {
                let text = body.to_string();
                assert!(!text.contains("your-password"), "{f}");
            }
        }
    }
}

#[test]
fn the_full_example_maps_every_field() {
    let a = example("asyncactor-advanced.yaml");
    let (_, p) = writes(&a, &cfg(false));
    let d = applied(&p, Kind::Deployment).unwrap();
    assert!(
        d["spec"]["replicas"].is_null(),
        "scaling enabled: KEDA owns replicas"
    );
    let tpl = &d["spec"]["template"];
    assert_eq!(tpl["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(tpl["metadata"]["labels"]["app"], "my-app");
    let sc = &tpl["spec"]["containers"][0];
    assert_eq!(sc["image"], "asya-sidecar:v2.0");
    assert_eq!(sc["imagePullPolicy"], "Always");
    assert_eq!(sc["resources"]["limits"]["cpu"], "500m");
    let env: std::collections::BTreeMap<&str, &Value> = sc["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), &e["value"]))
        .collect();
    assert_eq!(env["ASYA_SQS_REGION"], "us-east-1");
    assert_eq!(
        env["ASYA_SQS_QUEUE_URL"],
        "https://sqs.us-east-1.amazonaws.com/123456789/my-processing-queue"
    );
    assert_eq!(env["ASYA_SQS_VISIBILITY_TIMEOUT"], "300");
    assert_eq!(env["ASYA_SQS_WAIT_TIME_SECONDS"], "20");
    assert_eq!(env["ASYA_SOCKET_MAX_SIZE"], "10485760");
    assert_eq!(env["ASYA_PROCESSING_TIMEOUT"], "300");
    assert_eq!(env["ASYA_GRACEFUL_SHUTDOWN_TIMEOUT"], "30");
    assert_eq!(env["CUSTOM_VAR"], "custom-value");
    let so = applied(&p, Kind::ScaledObject).unwrap();
    let t = &so["spec"]["triggers"][0];
    assert_eq!(t["type"], "aws-sqs-queue");
    assert_eq!(
        t["metadata"]["queueURL"],
        "https://sqs.us-east-1.amazonaws.com/123456789/my-processing-queue"
    );
    assert_eq!(t["metadata"]["queueLength"], "5");
    assert_eq!(t["metadata"]["awsRegion"], "us-east-1");
    assert_eq!(so["spec"]["pollingInterval"], 10);
    assert_eq!(so["spec"]["cooldownPeriod"], 60);
    assert_eq!(
        (
            so["spec"]["minReplicaCount"].as_i64(),
            so["spec"]["maxReplicaCount"].as_i64()
        ),
        (Some(0), Some(50))
    );
    let ta = applied(&p, Kind::TriggerAuthentication).unwrap();
    assert_eq!(
        ta["spec"],
        serde_json::json!({"podIdentity": {"provider": "aws"}})
    );
    assert_eq!(t["authenticationRef"]["name"], "advanced-actor");
}

#[test]
fn a_statefulset_gets_its_claims_and_a_headless_service() {
    let a = example("asyncactor-statefulset.yaml");
    let (_, p) = writes(&a, &cfg(false));
    let svc = applied(&p, Kind::Service).unwrap();
    assert_eq!(svc["spec"]["clusterIP"], "None");
    let s = applied(&p, Kind::StatefulSet).unwrap();
    assert_eq!(s["spec"]["serviceName"], "stateful-actor");
    assert_eq!(
        s["spec"]["replicas"], 1,
        "scaling disabled: workload.replicas (default 1)"
    );
    assert_eq!(
        s["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "data"
    );
    let order: Vec<Kind> = p.actions.iter().filter_map(|a| a.kind()).collect();
    assert_eq!(
        order,
        vec![Kind::ConfigMap, Kind::Service, Kind::StatefulSet]
    );
}

#[test]
fn a_job_sidecar_is_native_only_where_the_cluster_has_native_sidecars() {
    let a = example("asyncactor-job.yaml");
    let (_, plain) = writes(&a, &cfg(false));
    let j = applied(&plain, Kind::Job).unwrap();
    assert_eq!(containers(&j["spec"]["template"])[0], "sidecar");
    assert!(j["spec"]["template"]["spec"]["initContainers"].is_null());
    assert_eq!(j["spec"]["template"]["spec"]["restartPolicy"], "OnFailure");
    let c = kube_standby::api::condition(&plain.status.conditions, "NativeSidecar").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "UnsupportedByCluster")
    );

    let (_, native) = writes(&a, &cfg(true));
    let j = applied(&native, Kind::Job).unwrap();
    let tpl = &j["spec"]["template"]["spec"];
    assert_eq!(tpl["initContainers"][0]["name"], "sidecar");
    assert_eq!(tpl["initContainers"][0]["restartPolicy"], "Always");
    assert_eq!(containers(&j["spec"]["template"]), vec!["runtime"]);
}

#[test]
fn pods_are_guarded_only_with_a_busy_probe() {
    use kube_standby::api::probe::{BusyProbe, BUSY_ANNOTATION_KEY_ANNOTATION, BUSY_GUARD_LABEL};
    let mut a = example("asyncactor-hello.yaml");
    let labels = |a: &AsyncActor| {
        build::pod_template(a, &cfg(false))
            .unwrap()
            .metadata
            .unwrap()
            .labels
            .unwrap_or_default()
    };
    assert!(a.spec.scaling.as_ref().unwrap().busy_probe.is_none());
    assert!(!labels(&a).contains_key(BUSY_GUARD_LABEL));
    a.spec.scaling.as_mut().unwrap().busy_probe = Some(BusyProbe {
        annotation_key: "asya.io/busy".into(),
        ..BusyProbe::default()
    });
    assert_eq!(labels(&a)[BUSY_GUARD_LABEL], "true");
    let meta = build::pod_template(&a, &cfg(false))
        .unwrap()
        .metadata
        .unwrap();
    assert_eq!(
        meta.annotations.unwrap()[BUSY_ANNOTATION_KEY_ANNOTATION],
        "asya.io/busy"
    );
}
