//! The pod of a review the mutating webhook answers, parsed for what the mutators and the
//! handler read and nothing else. A pod being created is mostly what no mutator looks at
//! (images, env, probes, resources, tolerations, the API server's token volume, managed
//! fields, status), and building it all as k8s-openapi values was the largest share of the
//! webhook's own cost per injection. The skipped fields are still read as JSON (a syntax
//! error fails the parse, and `parse_review` checks the whole body is UTF-8 first) but not
//! built, and not checked against their types.
//!
//! Invariants (tested below on the admission fixtures and on generated pods):
//! - The fields kept are exactly those of [`project`]: `metadata.{name, generateName,
//!   namespace, labels, annotations}`; `spec.{containers, initContainers}[*].{name,
//!   command, args, volumeMounts}`; `spec.volumes[*].name`; `spec.{readinessGates,
//!   terminationGracePeriodSeconds, affinity, restartPolicy}`. Nothing else is built.
//! - A pod text `Pod` accepts, without a repeated key, is accepted here, and the pod built
//!   is `project` of the pod `Pod` builds. The shapes are checked as `Pod` checks them: a
//!   map where `Pod` wants a map (never a list in its place), `apiVersion` and `kind` strings
//!   that, when present, are `v1` and `Pod`, and every kept field of its type.
//! - A text refused here (a repeated key among them, which `Pod` lets the last one win) goes
//!   to `parse_review`'s slow path, which answers it as it always did.
//! - A wrong type in a field no mutator reads is not seen: such a pod is admitted and
//!   patched (`Pod` would refuse it, and the webhook used to deny it as "not a valid Pod").
//!   The API server sends only pods it has decoded itself.
//! - The mutators (`mutate::mutate_patch`) write the same patch for a pod and for its
//!   projection: they read no field `project` drops.
//!
//! The validating webhook (the busy guard) keeps the whole pod ([`super::AdmissionPod`]).
use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, Pod, PodReadinessGate, PodSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::api::tags::CowStr;

/// A `Pod` holding only what the mutators read (see the module header), boxed as
/// [`super::AdmissionPod`] is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MutationPod(pub Box<Pod>);

impl std::ops::Deref for MutationPod {
    type Target = Pod;
    fn deref(&self) -> &Pod {
        &self.0
    }
}

super::admission_pod::pod_resource!(MutationPod);

/// What `Pod` keeps that a mutator reads; the projection the parse builds.
pub fn project(pod: &Pod) -> Pod {
    let container = |c: &Container| Container {
        name: c.name.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        volume_mounts: c.volume_mounts.clone(),
        ..Default::default()
    };
    let m = &pod.metadata;
    Pod {
        metadata: ObjectMeta {
            name: m.name.clone(),
            generate_name: m.generate_name.clone(),
            namespace: m.namespace.clone(),
            labels: m.labels.clone(),
            annotations: m.annotations.clone(),
            ..Default::default()
        },
        spec: pod.spec.as_ref().map(|s| PodSpec {
            containers: s.containers.iter().map(container).collect(),
            init_containers: s
                .init_containers
                .as_ref()
                .map(|c| c.iter().map(container).collect()),
            volumes: s.volumes.as_ref().map(|v| {
                v.iter()
                    .map(|v| Volume {
                        name: v.name.clone(),
                        ..Default::default()
                    })
                    .collect()
            }),
            readiness_gates: s.readiness_gates.clone(),
            termination_grace_period_seconds: s.termination_grace_period_seconds,
            affinity: s.affinity.clone(),
            restart_policy: s.restart_policy.clone(),
            ..Default::default()
        }),
        status: None,
    }
}

// The wire shapes. Every field is an `Option`, as in k8s-openapi (a `null` is no value,
// a missing required field is its default); unknown keys are skipped. Each struct is read
// through `MapOnly`: serde's derived parsers would also take a list of the values in order.

/// `T` from a JSON map only (k8s-openapi's parsers refuse anything else).
struct MapOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = MapOnly<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MapOnly<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(MapOnly)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A string that is there: `null` is refused, as `Pod` refuses it for `apiVersion` and `kind`.
fn present_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    CowStr::deserialize(d).map(|s| Some(s.0))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePod<'a> {
    #[serde(default, borrow, deserialize_with = "present_str")]
    api_version: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present_str")]
    kind: Option<Cow<'a, str>>,
    metadata: Option<MapOnly<WireMeta>>,
    spec: Option<MapOnly<WireSpec>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    containers: Option<Vec<MapOnly<WireContainer>>>,
    init_containers: Option<Vec<MapOnly<WireContainer>>>,
    volumes: Option<Vec<MapOnly<WireVolume>>>,
    readiness_gates: Option<Vec<PodReadinessGate>>,
    termination_grace_period_seconds: Option<i64>,
    affinity: Option<Affinity>,
    restart_policy: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireContainer {
    name: Option<String>,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    volume_mounts: Option<Vec<VolumeMount>>,
}

#[derive(Deserialize)]
struct WireVolume {
    name: Option<String>,
}

impl From<MapOnly<WireContainer>> for Container {
    fn from(MapOnly(c): MapOnly<WireContainer>) -> Self {
        Container {
            name: c.name.unwrap_or_default(),
            command: c.command,
            args: c.args,
            volume_mounts: c.volume_mounts,
            ..Default::default()
        }
    }
}

impl<'de> Deserialize<'de> for MutationPod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let MapOnly(w) = MapOnly::<WirePod>::deserialize(d)?;
        // As `Pod` checks them: when present, `v1` and `Pod`.
        if let Some(v) = w.api_version.as_deref().filter(|v| *v != "v1") {
            return Err(de::Error::invalid_value(de::Unexpected::Str(v), &"v1"));
        }
        if let Some(v) = w.kind.as_deref().filter(|v| *v != "Pod") {
            return Err(de::Error::invalid_value(de::Unexpected::Str(v), &"Pod"));
        }
        let metadata = w
            .metadata
            .map(|MapOnly(m)| ObjectMeta {
                name: m.name,
                generate_name: m.generate_name,
                namespace: m.namespace,
                labels: m.labels,
                annotations: m.annotations,
                ..Default::default()
            })
            .unwrap_or_default();
        let spec = w.spec.map(|MapOnly(s)| PodSpec {
            containers: s
                .containers
                .unwrap_or_default()
                .into_iter()
                .map(Container::from)
                .collect(),
            init_containers: s
                .init_containers
                .map(|c| c.into_iter().map(Container::from).collect()),
            volumes: s.volumes.map(|v| {
                v.into_iter()
                    .map(|MapOnly(v)| Volume {
                        name: v.name.unwrap_or_default(),
                        ..Default::default()
                    })
                    .collect()
            }),
            readiness_gates: s.readiness_gates,
            termination_grace_period_seconds: s.termination_grace_period_seconds,
            affinity: s.affinity,
            restart_policy: s.restart_policy,
            ..Default::default()
        });
        Ok(MutationPod(Box::new(Pod {
            metadata,
            spec,
            status: None,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::claim::{ASSIGNMENT_ANNOTATION, ASSIGNMENT_DIR, CLAIM_AGENT_NAME};
    use crate::api::singleton::{
        INIT_GATE_NAME, READY_CONDITION, SIDECAR_NAME, SIGNAL_DIR, SIGNAL_VOLUME, TOKEN_VOLUME,
        WRAPPER_DIR, WRAPPER_VOLUME,
    };
    use crate::api::StatefulSingleton;
    use crate::webhook::{mutate_patch, Config, Injection};
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use std::sync::Arc;

    fn full(text: &[u8]) -> Result<Pod, String> {
        serde_json::from_slice::<Pod>(text).map_err(|e| e.to_string())
    }

    fn slim(text: &[u8]) -> Result<Pod, String> {
        serde_json::from_slice::<MutationPod>(text)
            .map(|p| *p.0)
            .map_err(|e| e.to_string())
    }

    /// The parse invariant of the module header, for one pod's JSON text.
    fn check_text(text: &[u8]) -> Result<(), String> {
        match (full(text), slim(text)) {
            (Ok(f), Ok(s)) if project(&f) == s => Ok(()),
            (Ok(f), Ok(s)) => Err(format!("{:?} != {s:?}", project(&f))),
            (Ok(_), Err(e)) => Err(format!("Pod accepts it, MutationPod refuses it: {e}")),
            (Err(_), _) => Ok(()),
        }
    }

    fn singleton(gate: &str, respect: bool, grace: i64) -> Arc<StatefulSingleton> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "apps.statefulsingleton.com/v1",
                "kind": "StatefulSingleton",
                "metadata": {"name": "game", "namespace": "prod"},
                "spec": {"selector": {"matchLabels": {"app": "game"}}, "startGate": gate,
                         "respectPodGracePeriod": respect, "terminationGracePeriod": grace},
            }))
            .unwrap(),
        )
    }

    fn injection() -> Injection {
        Injection {
            agent_image: "ghcr.io/paia-tech/kube-standby:test".into(),
            operator_url: "https://kube-standby.kube-standby.svc:443".into(),
            agent_ca: format!("sha256:{}", "ab".repeat(32)),
        }
    }

    /// The mutators' invariant of the module header, for one pod: the same answer (patch
    /// text or denial) from the whole pod and from what the parse keeps, with each gate.
    fn check_mutators(whole: &Pod, kept: &Pod) -> Result<(), String> {
        let injection = injection();
        for gate in ["auto", "wrapper", "initContainer"] {
            for (respect, grace) in [(true, 30), (false, 60)] {
                let config = Config {
                    singletons: vec![singleton(gate, respect, grace)],
                    injection: &injection,
                };
                let a = mutate_patch(whole, &config).map(|p| p.operations().map(|o| o.0).ok());
                let b = mutate_patch(kept, &config).map(|p| p.operations().map(|o| o.0).ok());
                if a != b {
                    return Err(format!("startGate {gate}: whole {a:?}, kept {b:?}"));
                }
            }
        }
        Ok(())
    }

    /// JSON text is UTF-8 (RFC 8259). The typed parse skips the fields no mutator reads
    /// without building their strings, so the body is checked whole first: a byte that is
    /// not UTF-8 in a skipped field (here the image) is refused as malformed JSON, as the
    /// slow path refuses it, not admitted and patched.
    #[test]
    fn a_body_that_is_not_utf8_is_refused_even_in_a_field_no_mutator_reads() {
        use crate::webhook::{parse_mutation_review, AdmissionError};
        let good = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/admission/pod-create-from-replicaset.json"
        ))
        .unwrap();
        assert!(parse_mutation_review(&good).is_ok());
        let text = String::from_utf8(good.clone()).unwrap();
        let at = text.find("\"image\"").expect("an image field");
        let quote = at + text[at + 8..].find('"').unwrap() + 9;
        let mut bad = good;
        bad[quote] = 0xff;
        match parse_mutation_review(&bad) {
            Err(AdmissionError::MalformedJson(e)) => assert!(e.contains("unicode"), "{e}"),
            Err(e) => panic!("refused, but not as malformed JSON: {e}"),
            Ok(_) => panic!("a body that is not UTF-8 was parsed"),
        }
    }

    #[test]
    fn every_admission_fixture_parses_to_the_projection_and_mutates_alike() {
        let dirs = [
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/admission"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/admission"),
        ];
        let mut pods = 0;
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries {
                let path = e.unwrap().path();
                let review: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                for key in ["object", "oldObject"] {
                    let Some(obj) = review["request"].get(key).filter(|o| o["kind"] == "Pod")
                    else {
                        continue;
                    };
                    let text = serde_json::to_vec(obj).unwrap();
                    check_text(&text).unwrap_or_else(|e| panic!("{path:?} {key}: {e}"));
                    let whole = full(&text).unwrap();
                    check_mutators(&whole, &slim(&text).unwrap())
                        .unwrap_or_else(|e| panic!("{path:?} {key}: {e}"));
                    pods += 1;
                }
            }
        }
        // The repository's own fixtures alone hold 8 pods (creates, updates' old and new).
        assert!(pods >= 8, "only {pods} pods found");
    }

    /// The demo's singletons, and one that selects every pod but pool pods.
    fn objects() -> crate::webhook::StaticObjects {
        let mut o = crate::webhook::StaticObjects::from_files(&[concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/statefulsingleton-demo.yaml"
        )])
        .unwrap();
        for ns in ["default", "prod", "cap"] {
            o.add_yaml(
                &format!(
                    "apiVersion: apps.statefulsingleton.com/v1\nkind: StatefulSingleton\n\
                     metadata: {{name: all, namespace: {ns}}}\n\
                     spec: {{selector: {{matchExpressions: [{{key: none, operator: DoesNotExist}}]}}}}\n"
                ),
                "test",
            )
            .unwrap();
        }
        o
    }

    /// What the handler takes from a review: the decision as JSON, and the names it logs.
    fn answer<P: kube::Resource + std::ops::Deref<Target = Pod>>(
        r: &crate::webhook::Parsed<P>,
        objects: &crate::webhook::StaticObjects,
    ) -> (Value, String, Option<String>) {
        let d = crate::webhook::review(r, objects, &injection());
        (
            crate::webhook::review_json(&d).unwrap(),
            r.display_name(),
            r.namespace().map(str::to_string),
        )
    }

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/data/admission/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn every_admission_fixture_is_answered_as_with_the_whole_pod() {
        let objects = objects();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/admission");
        let mut patched = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let body = std::fs::read(&path).unwrap();
            let whole = crate::webhook::parse_review(&body).ok().unwrap();
            let kept = crate::webhook::parse_mutation_review(&body).ok().unwrap();
            assert_eq!(
                matches!(kept, crate::webhook::Parsed::Pod(_)),
                matches!(whole, crate::webhook::Parsed::Pod(_)),
                "{path:?}"
            );
            let (a, b) = (answer(&whole, &objects), answer(&kept, &objects));
            assert_eq!(a, b, "{path:?}");
            patched += usize::from(a.0["response"]["patch"].is_string());
        }
        // Each pod CREATE is gated by a singleton (dry run included).
        assert!(patched >= 3, "only {patched} patched");
    }

    #[test]
    fn lists_in_place_of_maps_and_null_kinds_are_refused_as_pod_refuses_them() {
        for v in [
            json!([{"metadata": {}}]),
            json!({"metadata": [null, "x"]}),
            json!({"spec": [[{"name": "a", "command": ["x"]}], null, null, null, null, null, "Never"]}),
            json!({"spec": {"containers": [["a", ["x"]]]}}),
            json!({"spec": {"initContainers": [["a"]]}}),
            json!({"spec": {"volumes": [["v"]]}}),
            json!({"apiVersion": null}),
            json!({"kind": null}),
        ] {
            let text = serde_json::to_vec(&v).unwrap();
            assert!(full(&text).is_err(), "Pod accepts {v}");
            assert!(slim(&text).is_err(), "MutationPod accepts {v}");
        }
    }

    #[test]
    fn a_repeated_key_is_answered_by_the_slow_path_as_before() {
        let text = serde_json::to_string(&fixture("pod-create-from-replicaset.json")).unwrap();
        // A first `labels` that the real one, later, overrides (the last one wins in `Pod`).
        let text = text.replacen(
            "\"generateName\":",
            "\"labels\":{\"app\":\"other\"},\"generateName\":",
            1,
        );
        let review: Value = serde_json::from_str(&text).unwrap();
        let obj = serde_json::to_string(&review["request"]["object"]).unwrap();
        assert!(text.matches("\"labels\":").count() > obj.matches("\"labels\":").count());
        let start = text.find("\"object\":").unwrap() + "\"object\":".len();
        // The object alone (the rest of the review follows it): refused here, taken by `Pod`.
        let mut de = serde_json::Deserializer::from_str(&text[start..]);
        let err = MutationPod::deserialize(&mut de).unwrap_err().to_string();
        assert!(err.contains("duplicate field `labels`"), "{err}");
        let mut de = serde_json::Deserializer::from_str(&text[start..]);
        let pod = Pod::deserialize(&mut de).unwrap();
        assert_eq!(pod.metadata.labels.unwrap()["app"], "game");
        let objects = objects();
        let whole = crate::webhook::parse_review(text.as_bytes()).ok().unwrap();
        let kept = crate::webhook::parse_mutation_review(text.as_bytes())
            .ok()
            .unwrap();
        assert!(matches!(kept, crate::webhook::Parsed::Other(_)));
        let (a, b) = (answer(&whole, &objects), answer(&kept, &objects));
        assert_eq!(a, b);
        assert!(a.0["response"]["patch"].is_string(), "{}", a.0);
    }

    #[test]
    fn a_wrong_type_in_a_field_no_mutator_reads_is_admitted_and_patched() {
        let mut review = fixture("pod-create-from-replicaset.json");
        review["request"]["object"]["spec"]["nodeSelector"] = json!(5);
        let body = serde_json::to_vec(&review).unwrap();
        let objects = objects();
        let kept = crate::webhook::parse_mutation_review(&body).ok().unwrap();
        let (a, ..) = answer(&kept, &objects);
        assert_eq!(a["response"]["allowed"], true, "{a}");
        assert!(a["response"]["patch"].is_string(), "{a}");
        // The whole pod refuses it: the guard's parse denies such a pod as not a Pod.
        let whole = crate::webhook::parse_review(&body).ok().unwrap();
        let (b, ..) = answer(&whole, &objects);
        assert_eq!(b["response"]["allowed"], false, "{b}");
        assert!(b["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not a valid Pod"));
    }

    #[test]
    fn what_is_kept_and_what_is_not() {
        let text = serde_json::to_vec(&json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "namespace": "prod", "labels": {"app": "game"},
                         "annotations": {"a": "b"}, "uid": "u", "ownerReferences": [],
                         "managedFields": [{"manager": "m"}], "creationTimestamp": null},
            "spec": {"containers": [{"name": "app", "image": "i", "command": ["/bin/app"],
                                     "args": ["x"], "env": [{"name": "E", "value": "v"}],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                                     "resources": {"limits": {"cpu": "1"}}}],
                     "initContainers": [{"name": "init", "image": "i"}],
                     "volumes": [{"name": "data", "emptyDir": {}}],
                     "readinessGates": [{"conditionType": "c"}],
                     "terminationGracePeriodSeconds": 5, "restartPolicy": "Never",
                     "affinity": {"podAntiAffinity": {}},
                     "nodeSelector": {"n": "1"}, "tolerations": [{"key": "k"}]},
            "status": {"phase": "Pending"},
        }))
        .unwrap();
        let p = slim(&text).unwrap();
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("prod"));
        assert_eq!(p.metadata.labels.as_ref().unwrap()["app"], "game");
        assert_eq!(p.metadata.annotations.as_ref().unwrap()["a"], "b");
        assert!(p.metadata.uid.is_none() && p.metadata.managed_fields.is_none());
        assert!(p.metadata.owner_references.is_none());
        let spec = p.spec.as_ref().unwrap();
        let c = &spec.containers[0];
        assert_eq!(c.name, "app");
        assert_eq!(c.command.as_deref(), Some(&["/bin/app".to_string()][..]));
        assert_eq!(c.args.as_deref(), Some(&["x".to_string()][..]));
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, "/data");
        assert!(c.image.is_none() && c.env.is_none() && c.resources.is_none());
        assert_eq!(spec.init_containers.as_ref().unwrap()[0].name, "init");
        let v = &spec.volumes.as_ref().unwrap()[0];
        assert_eq!(v.name, "data");
        assert!(v.empty_dir.is_none());
        assert_eq!(
            spec.readiness_gates.as_ref().unwrap()[0].condition_type,
            "c"
        );
        assert_eq!(spec.termination_grace_period_seconds, Some(5));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert!(spec.affinity.as_ref().unwrap().pod_anti_affinity.is_some());
        assert!(spec.node_selector.is_none() && spec.tolerations.is_none());
        assert!(p.status.is_none());
        check_text(&text).unwrap();
    }

    #[test]
    fn wrong_types_where_kept_and_wrong_kinds_are_refused() {
        for v in [
            json!({"apiVersion": "v2"}),
            json!({"kind": "Service"}),
            json!({"metadata": {"labels": {"a": 1}}}),
            json!({"spec": {"containers": [{"name": "a", "command": "sh"}]}}),
            json!({"spec": {"volumes": [{"name": 3}]}}),
            json!({"spec": {"terminationGracePeriodSeconds": "5"}}),
        ] {
            let text = serde_json::to_vec(&v).unwrap();
            assert!(slim(&text).is_err(), "{v}");
            assert!(full(&text).is_err(), "{v}");
        }
        // Broken JSON in a skipped field still fails the parse.
        assert!(slim(br#"{"spec":{"nodeSelector":{"a":}}}"#).is_err());
    }

    /// A pod as the API server sends it, with every field a mutator reads drawn from
    /// values that steer the mutators (our names, paths, labels), and fields no mutator
    /// reads alongside.
    fn arb_pod() -> impl Strategy<Value = Value> {
        let path = prop::sample::select(vec![
            "/data",
            SIGNAL_DIR,
            "/var/run/signal/",
            WRAPPER_DIR,
            ASSIGNMENT_DIR,
        ]);
        let mount = (path, prop::sample::select(vec!["data", SIGNAL_VOLUME]))
            .prop_map(|(p, n)| json!({"name": n, "mountPath": p, "readOnly": true}));
        let name = prop::sample::select(vec![
            "app",
            "side",
            SIDECAR_NAME,
            INIT_GATE_NAME,
            CLAIM_AGENT_NAME,
        ]);
        let words = prop::option::of(prop::collection::vec(
            prop::sample::select(vec!["agent", "/bin/app", "--once", "a b"]),
            0..3,
        ));
        let container = (
            name,
            words.clone(),
            words,
            prop::option::of(prop::collection::vec(mount, 0..3)),
            any::<bool>(),
        )
            .prop_map(|(n, cmd, args, mounts, noise)| {
                let mut c = json!({"name": n, "image": "img:1"});
                if let Some(v) = cmd {
                    c["command"] = json!(v);
                }
                if let Some(v) = args {
                    c["args"] = json!(v);
                }
                if let Some(v) = mounts {
                    c["volumeMounts"] = json!(v);
                }
                if noise {
                    c["env"] =
                        json!([{"name": "E", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]);
                    c["ports"] = json!([{"containerPort": 80}]);
                    c["readinessProbe"] = json!({"httpGet": {"port": 80}});
                }
                c
            });
        let volume = prop::sample::select(vec![
            "data",
            SIGNAL_VOLUME,
            TOKEN_VOLUME,
            WRAPPER_VOLUME,
            "kube-standby-assignment",
            "kube-standby-claim-token",
        ])
        .prop_map(|n| json!({"name": n, "emptyDir": {}}));
        let labels = prop::option::of(prop::collection::btree_map(
            prop::sample::select(vec![
                "app",
                crate::api::hsd::NAME_LABEL,
                crate::api::hsj::NAME_LABEL,
            ]),
            prop::sample::select(vec!["game", "web"]),
            0..3,
        ));
        let annotations = prop::option::of(prop::collection::btree_map(
            prop::sample::select(vec![ASSIGNMENT_ANNOTATION, "other"]),
            prop::sample::select(vec!["file", " file ", "env"]),
            0..2,
        ));
        let gates = prop::option::of(prop::collection::vec(
            prop::sample::select(vec![READY_CONDITION, "other"]),
            0..2,
        ));
        let affinity = prop::sample::select(vec![
            Value::Null,
            json!({}),
            json!({"podAntiAffinity": {}}),
            json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}),
            json!({"nodeAffinity": {}}),
        ]);
        (
            (labels, annotations, any::<bool>(), prop::bool::weighted(0.75)),
            prop::collection::vec(container.clone(), 0..3),
            prop::option::of(prop::collection::vec(container, 0..2)),
            prop::option::of(prop::collection::vec(volume, 0..3)),
            (gates, prop::option::of(prop::sample::select(vec![0i64, 30, 90]))),
            (
                affinity,
                prop::option::of(prop::sample::select(vec!["Always", "OnFailure", "Never"])),
            ),
        )
            .prop_map(
                |((labels, annotations, noise, selected), cs, inits, vols, (gates, grace), (aff, restart))| {
                    let mut meta = json!({"generateName": "web-", "namespace": "prod"});
                    if let Some(mut l) = labels {
                        // Mostly a pod the singleton selects, so its gates are chosen.
                        if selected {
                            l.insert("app", "game");
                        }
                        meta["labels"] = json!(l);
                    }
                    if let Some(a) = annotations {
                        meta["annotations"] = json!(a);
                    }
                    let mut spec = json!({"containers": cs});
                    if let Some(v) = inits {
                        spec["initContainers"] = json!(v);
                    }
                    if let Some(v) = vols {
                        spec["volumes"] = json!(v);
                    }
                    if let Some(g) = gates {
                        spec["readinessGates"] =
                            json!(g.iter().map(|c| json!({"conditionType": c})).collect::<Vec<_>>());
                    }
                    if let Some(g) = grace {
                        spec["terminationGracePeriodSeconds"] = json!(g);
                    }
                    if !aff.is_null() {
                        spec["affinity"] = aff;
                    }
                    if let Some(r) = restart {
                        spec["restartPolicy"] = json!(r);
                    }
                    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec});
                    if noise {
                        pod["metadata"]["uid"] = json!("u-1");
                        pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1",
                            "kind": "ReplicaSet", "name": "web-1", "uid": "r", "controller": true}]);
                        pod["metadata"]["managedFields"] = json!([{"manager": "m",
                            "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]);
                        pod["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
                        pod["spec"]["serviceAccountName"] = json!("default");
                        pod["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
                    }
                    pod
                },
            )
    }

    proptest! {
        #[test]
        fn generated_pods_parse_to_their_projection_and_mutate_alike(pod in arb_pod()) {
            let text = serde_json::to_vec(&pod).unwrap();
            prop_assert!(check_text(&text).is_ok(), "{}", check_text(&text).unwrap_err());
            let whole = full(&text).unwrap();
            let kept = slim(&text).unwrap();
            let same = check_mutators(&whole, &kept);
            prop_assert!(same.is_ok(), "{}", same.unwrap_err());
        }
    }
}
