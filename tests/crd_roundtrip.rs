//! Every seed example parses into its Rust type and the generated CRD schema accepts it
//! (no unknown field, no type or range error), and the committed chart CRDs match the code.
mod common;

use kube::CustomResourceExt;
use kube_standby::api::{self, AsyncActor, HotStandbyDeployment, HotStandbyJob, StatefulSingleton};
use serde::de::DeserializeOwned;
use serde_json::Value;

fn load(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(common::repo().join("examples").join(name)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde_yaml::from_value::<Value>(serde::Deserialize::deserialize(d).unwrap()).unwrap()
        })
        .collect()
}

fn crd_for(obj: &Value) -> Value {
    let crds: Vec<Value> = api::all_crds()
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    let group = obj["apiVersion"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    crds.into_iter()
        .find(|c| c["spec"]["group"] == group.as_str() && c["spec"]["names"]["kind"] == obj["kind"])
        .unwrap_or_else(|| panic!("no CRD for {}", obj["apiVersion"]))
}

fn check<T: DeserializeOwned>(file: &str) -> Vec<T> {
    load(file)
        .into_iter()
        .map(|obj| {
            let errors = common::schema::validate_object(&crd_for(&obj), &obj);
            assert!(errors.is_empty(), "{file}: schema rejects: {errors:?}");
            serde_json::from_value::<T>(obj).unwrap_or_else(|e| panic!("{file}: {e}"))
        })
        .collect()
}

#[test]
fn hsd_seed_examples() {
    let a = check::<HotStandbyDeployment>("hsd-annotation.yaml").remove(0);
    assert_eq!(a.spec.idle_target, 3);
    assert_eq!(a.spec.max_replicas, 50);
    assert_eq!(a.spec.scale_down_delay_seconds, 30, "default");
    assert_eq!(a.spec.busy_probe.annotation_key, "paia.tech/busy");
    let h = check::<HotStandbyDeployment>("hsd-http.yaml").remove(0);
    assert_eq!(h.spec.busy_probe.mode, api::hsd::BusyMode::Http);
    assert_eq!(h.spec.min_replicas, 0);
    assert_eq!(h.spec.max_replicas, 1000, "default");
    assert_eq!(h.spec.busy_probe.http.period_seconds, 10);
}

#[test]
fn hsj_seed_example() {
    let j = check::<HotStandbyJob>("hsj.yaml").remove(0);
    assert_eq!(j.spec.idle_target, 20);
    assert_eq!(j.spec.busy_probe.mode, api::hsj::JobBusyMode::Exec);
    assert_eq!(
        j.spec.busy_probe.exec.as_ref().unwrap().command,
        vec!["cat", "/tmp/busy_state"]
    );
    assert_eq!(j.spec.job_template.image.as_deref(), Some("busybox"));
    assert!(j.spec.job_template.to_job_spec().is_ok());
}

#[test]
fn singleton_seed_example_in_both_groups() {
    let s = check::<Value>("statefulsingleton.yaml").remove(0);
    assert_eq!(s["apiVersion"], "apps.openshift.statefulsingleton.com/v1");
    // The Rust type reads the legacy group's objects too (same schema).
    let mut typed = s.clone();
    typed["apiVersion"] = "apps.statefulsingleton.com/v1".into();
    let t: StatefulSingleton = serde_json::from_value(typed).unwrap();
    assert_eq!(t.spec.termination_grace_period, 120);
    assert!(t.spec.respect_pod_grace_period, "default true");
    assert_eq!(t.spec.start_gate, api::singleton::StartGate::Auto);
    let demo = check::<StatefulSingleton>("statefulsingleton-demo.yaml");
    assert_eq!(demo.len(), 2);
}

#[test]
fn asya_seed_examples() {
    for f in [
        "asyncactor-text-processor.yaml",
        "asyncactor-hello.yaml",
        "asyncactor-advanced.yaml",
        "asyncactor-statefulset.yaml",
        "asyncactor-job.yaml",
    ] {
        let a = check::<AsyncActor>(f).remove(0);
        assert!(!a.spec.queue_name.is_empty());
    }
    let adv = check::<AsyncActor>("asyncactor-advanced.yaml").remove(0);
    assert_eq!(
        adv.spec.socket.unwrap().max_size.as_deref(),
        Some("10485760")
    );
    assert_eq!(adv.spec.scaling.unwrap().max_replicas, Some(50));
    let sts = check::<AsyncActor>("asyncactor-statefulset.yaml").remove(0);
    assert_eq!(
        sts.spec.workload.type_,
        api::asya::WorkloadType::StatefulSet
    );
    assert_eq!(sts.spec.workload.volume_claim_templates.unwrap().len(), 1);
}

#[test]
fn schema_rejects_bad_objects() {
    let mut bad = load("hsd-annotation.yaml").remove(0);
    bad["spec"]["idleTarget"] = (-1).into();
    bad["spec"]["busyProbe"]["mode"] = "telepathy".into();
    bad["spec"]["replicaz"] = 3.into();
    let errors = common::schema::validate_object(&crd_for(&bad), &bad);
    assert_eq!(errors.len(), 3, "{errors:?}");
    let mut s = load("statefulsingleton-demo.yaml").remove(0);
    s["spec"]["maxTransitionTime"] = 7200.into();
    s["spec"].as_object_mut().unwrap().remove("selector");
    assert_eq!(common::schema::validate_object(&crd_for(&s), &s).len(), 2);
}

#[test]
fn every_field_has_a_description() {
    fn walk(s: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                let p = format!("{path}.{k}");
                if v.get("description").is_none()
                    && !["apiVersion", "kind", "metadata"].contains(&k.as_str())
                {
                    missing.push(p.clone());
                }
                walk(v, &p, missing);
            }
        }
        if let Some(items) = s.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    for crd in [
        HotStandbyDeployment::crd(),
        HotStandbyJob::crd(),
        StatefulSingleton::crd(),
        AsyncActor::crd(),
    ] {
        let v = serde_json::to_value(&crd).unwrap();
        let mut missing = vec![];
        // Our own fields only: k8s-openapi types (Condition, LabelSelector, EnvVar...) carry their own docs.
        walk(
            &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            "",
            &mut missing,
        );
        assert!(
            missing.is_empty(),
            "{}: fields without description: {missing:?}",
            crd.metadata.name.unwrap()
        );
    }
}

#[test]
fn status_subresource_and_columns() {
    for crd in api::all_crds() {
        let v = &crd.spec.versions[0];
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{:?}",
            crd.metadata.name
        );
        assert!(v
            .additional_printer_columns
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| c.name == "Age")));
    }
}

#[test]
fn committed_chart_crds_match_the_code() {
    let committed =
        std::fs::read_to_string(common::repo().join("charts/kube-standby/crds/crds.yaml"))
            .expect("charts/kube-standby/crds/crds.yaml (regenerate with `kube-standby crds`)");
    assert!(
        committed == api::crds_yaml().unwrap(),
        "chart CRDs drifted: run `cargo run -- crds > charts/kube-standby/crds/crds.yaml`"
    );
}

#[test]
fn checker_catches_unknown_fields_types_and_ranges() {
    let schema = serde_json::json!({
        "type": "object", "required": ["a"],
        "properties": {"a": {"type": "integer", "minimum": 0}, "b": {"type": "string", "enum": ["x"]},
                        "m": {"type": "object", "additionalProperties": {"type": "string"}},
                        "p": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
    });
    let mut e = vec![];
    common::schema::validate(
        &schema,
        &serde_json::json!({"a": 1, "b": "x", "m": {"k": "v"}, "p": {"any": 1}}),
        "",
        &mut e,
    );
    assert!(e.is_empty(), "{e:?}");
    common::schema::validate(
        &schema,
        &serde_json::json!({"a": -1, "b": "y", "c": 1, "m": {"k": 1}}),
        "",
        &mut e,
    );
    assert_eq!(e.len(), 4, "{e:?}");
    let mut e = vec![];
    common::schema::validate(&schema, &serde_json::json!({}), "", &mut e);
    assert_eq!(e, vec![": missing required field a".to_string()]);
}

fn docs_of(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// `examples/original/` keeps the originals' files; each top-level example is the same
/// objects without `metadata.namespace` (so `kubectl apply -n ANY -f examples/` works),
/// and the originals still validate against the CRDs.
#[test]
fn top_level_examples_are_the_originals_without_a_namespace() {
    let dir = common::repo().join("examples");
    let mut originals = 0;
    for entry in std::fs::read_dir(dir.join("original")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        let top = docs_of(&dir.join(&name));
        let orig = docs_of(&path);
        assert_eq!(top.len(), orig.len(), "{name:?}");
        for (mut o, t) in orig.into_iter().zip(top) {
            let errors = common::schema::validate_object(&crd_for(&o), &o);
            assert!(errors.is_empty(), "original {name:?}: {errors:?}");
            if let Some(m) = o["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            assert_eq!(
                o, t,
                "{name:?}: differs from its original beyond the namespace"
            );
        }
        originals += 1;
    }
    assert!(originals >= 9, "only {originals} originals");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "yaml") {
            for doc in docs_of(&path) {
                assert!(
                    doc["metadata"].get("namespace").is_none(),
                    "{}: names a namespace",
                    path.display()
                );
            }
        }
    }
}
