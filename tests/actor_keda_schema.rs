//! Every KEDA object the operator generates validates against KEDA's own CRD schemas
//! (`tests/data/crds/keda/`, KEDA v2.20, copied from the shared fixtures) with unknown fields
//! as errors, the way a strict API server would; and a misspelled field of ours fails.
mod common;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_standby::api::AsyncActor;
use kube_standby::controller::actor::build::{self, BuildConfig, Kind};
use kube_standby::controller::actor::plan::{self, Action, Keda, Observed, RuntimeCm};
use serde_json::{json, Value};

fn crd(kind: Kind) -> &'static Value {
    static CRDS: std::sync::OnceLock<std::collections::HashMap<Kind, Value>> =
        std::sync::OnceLock::new();
    CRDS.get_or_init(|| {
        [
            Kind::ScaledObject,
            Kind::ScaledJob,
            Kind::TriggerAuthentication,
        ]
        .into_iter()
        .map(|k| (k, load_crd(k)))
        .collect()
    })
    .get(&kind)
    .expect("a KEDA kind")
}

fn load_crd(kind: Kind) -> Value {
    let file = match kind {
        Kind::ScaledObject => "keda.sh_scaledobjects.yaml",
        Kind::ScaledJob => "keda.sh_scaledjobs.yaml",
        _ => "keda.sh_triggerauthentications.yaml",
    };
    let text =
        std::fs::read_to_string(common::repo().join("tests/data/crds/keda").join(file)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn actor(file: &str, patch: Value) -> AsyncActor {
    let text = std::fs::read_to_string(common::repo().join("examples").join(file)).unwrap();
    let mut v: Value = serde_yaml::from_str(&text).unwrap();
    v["metadata"]["namespace"] = "ns".into();
    v["metadata"]["uid"] = "actor-uid".into();
    json_patch::merge(&mut v, &patch);
    serde_json::from_value(v).unwrap()
}

/// The KEDA objects a new actor gets.
fn keda_objects(a: &AsyncActor, native: bool) -> Vec<(Kind, Value)> {
    let cfg = BuildConfig {
        sidecar_image: "sidecar:1".into(),
        runtime_hash: Some("abc".into()),
        native_sidecar: native,
    };
    let o = Observed {
        actor: a,
        cfg: &cfg,
        runtime: Some("x"),
        existing: vec![],
        configmap: RuntimeCm::Missing,
        keda: Keda::all(),
        pods: vec![],
    };
    let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    plan::plan(&o, &now)
        .actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Apply { kind, body } if kind.crd().is_some() => Some((kind, body)),
            _ => None,
        })
        .collect()
}

/// Every scaling-enabled variant of the seed examples, for each workload kind and transport.
fn variants() -> Vec<(String, AsyncActor, bool)> {
    let scaled = json!({"spec": {"scaling": {"enabled": true, "minReplicas": 1, "maxReplicas": 7,
        "pollingInterval": 5, "cooldownPeriod": 30, "queueLength": 3}}});
    let mut v = vec![];
    for f in [
        "asyncactor-hello.yaml",
        "asyncactor-advanced.yaml",
        "asyncactor-statefulset.yaml",
        "asyncactor-job.yaml",
    ] {
        for native in [false, true] {
            v.push((format!("{f} native={native}"), actor(f, json!({})), native));
            v.push((
                format!("{f} scaled native={native}"),
                actor(f, scaled.clone()),
                native,
            ));
        }
    }
    v
}

#[test]
fn every_generated_keda_object_validates_against_the_keda_crds() {
    let mut seen = std::collections::BTreeSet::new();
    for (name, a, native) in variants() {
        for (kind, obj) in keda_objects(&a, native) {
            seen.insert(kind);
            let errors = common::schema::validate_object(crd(kind), &obj);
            assert!(
                errors.is_empty(),
                "{name}: {kind:?} rejected: {errors:?}\n{obj:#}"
            );
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![
            Kind::ScaledObject,
            Kind::ScaledJob,
            Kind::TriggerAuthentication
        ],
        "every KEDA kind was generated and checked"
    );
}

/// Rename one object key at a time; a key whose schema is a free-form map (labels, trigger
/// metadata, resource quantities) may take any name, every other rename must be refused.
fn renames(v: &Value, path: &mut Vec<String>, out: &mut Vec<(String, Value)>, root: &Value) {
    const FREE_FORM: [&str; 6] = [
        "metadata",
        "labels",
        "annotations",
        "matchLabels",
        "limits",
        "requests",
    ];
    match v {
        Value::Object(m) => {
            let parent = path.last().cloned().unwrap_or_default();
            for (k, child) in m {
                if !FREE_FORM.contains(&parent.as_str()) {
                    let mut bad = root.clone();
                    let mut cur = &mut bad;
                    for p in path.iter() {
                        cur = match p.parse::<usize>() {
                            Ok(i) => &mut cur[i],
                            Err(_) => &mut cur[p.as_str()],
                        };
                    }
                    if let Some(o) = cur.as_object_mut() {
                        let val = o.remove(k).unwrap_or(Value::Null);
                        o.insert(format!("{k}Typo"), val);
                    }
                    out.push((format!("{}.{k}", path.join(".")), bad));
                }
                path.push(k.clone());
                renames(child, path, out, root);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                path.push(i.to_string());
                renames(child, path, out, root);
                path.pop();
            }
        }
        _ => {}
    }
}

#[test]
fn a_misspelled_field_in_any_generated_keda_object_is_refused() {
    for (name, a, native) in variants()
        .into_iter()
        .filter(|(n, ..)| n.contains("scaled"))
    {
        for (kind, obj) in keda_objects(&a, native) {
            let spec_only = json!({"spec": obj["spec"].clone()});
            let mut cases = vec![];
            renames(&spec_only, &mut vec![], &mut cases, &spec_only);
            assert!(cases.len() >= 3, "{name}: {kind:?} has fields to check");
            for (path, mut bad) in cases {
                for k in ["apiVersion", "kind", "metadata"] {
                    bad[k] = obj[k].clone();
                }
                let errors = common::schema::validate_object(crd(kind), &bad);
                assert!(
                    !errors.is_empty(),
                    "{name}: {kind:?} with {path} misspelled was accepted"
                );
            }
        }
    }
}

#[test]
fn the_checker_is_not_blind() {
    // Hand-made mistakes of the kind a builder could make.
    let a = actor("asyncactor-advanced.yaml", json!({}));
    let objs = keda_objects(&a, false);
    let (_, so) = objs.iter().find(|(k, _)| *k == Kind::ScaledObject).unwrap();
    for (patch, what) in [
        (
            json!({"spec": {"minReplicas": 0}}),
            "seed field name instead of KEDA's",
        ),
        (
            json!({"spec": {"pollingInterval": "10"}}),
            "string for an integer",
        ),
        (
            json!({"spec": {"triggers": [{"type": "rabbitmq", "metadata": {"value": 5}}]}}),
            "non-string trigger metadata",
        ),
        (
            json!({"spec": {"advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 4}]}}}}}}),
            "policy without periodSeconds",
        ),
    ] {
        let mut bad = so.clone();
        json_patch::merge(&mut bad, &patch);
        assert!(
            !common::schema::validate_object(crd(Kind::ScaledObject), &bad).is_empty(),
            "{what}"
        );
    }
    let (_, ta) = objs
        .iter()
        .find(|(k, _)| *k == Kind::TriggerAuthentication)
        .unwrap();
    let mut bad = ta.clone();
    bad["spec"]["podIdentity"]["provider"] = "aws-kiam".into();
    assert!(!common::schema::validate_object(crd(Kind::TriggerAuthentication), &bad).is_empty());
    let _ = build::KEDA_API_VERSION;
}
