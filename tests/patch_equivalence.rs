//! The injection's patch, written straight to JSON text (`webhook::patch`), against the
//! implementation it replaced (kept below, verbatim apart from imports, as the reference:
//! `serde_json::Value`s in `json_patch::PatchOperation`s): the same bytes for every golden
//! body, for each of their variants below, and for random pods (proptest); and the
//! AdmissionReview answer written directly (`review_body`) against the one built as a
//! value (`review_json`).
mod common;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube_standby::api::StatefulSingleton;
use kube_standby::webhook::{review_body, review_json, Config, Decision, Injection, Patch};
use proptest::prelude::*;
use serde_json::{json, Value};

/// The Value-based injection as it was before the patch was written as text.
mod reference {
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{AddOperation, PatchOperation};
    use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
    use kube_standby::api::singleton::{
        owning_singleton, StatefulSingleton, EPOCH_FILE, GATE_ANNOTATION, MANAGED_LABEL,
        READY_CONDITION, SIDECAR_NAME, SIGNAL_DIR, SIGNAL_FILE, SINGLETON_LABEL, TOKEN_AUDIENCE,
        TOKEN_DIR, WRAPPER_CONFIGMAP, WRAPPER_DIR, WRAPPER_SCRIPT_NAME,
    };
    use kube_standby::webhook::singleton::{
        already_injected, choose_gate, injection_obstacle, Gate, VolumeNames, INIT_GATE_NAME,
    };
    use kube_standby::webhook::Config;
    use serde_json::{json, Value};

    fn ptr(tokens: &[&str]) -> PointerBuf {
        PointerBuf::from_tokens(tokens.iter().copied())
    }

    fn add(path: PointerBuf, value: Value) -> PatchOperation {
        PatchOperation::Add(AddOperation { path, value })
    }
    fn agent_env(config: &Config<'_>, never_restarted: bool) -> Value {
        let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
        let mut env = json!([
            {"name": "KUBE_STANDBY_OPERATOR_URL", "value": config.injection.operator_url},
            {"name": "KUBE_STANDBY_CA", "value": config.injection.agent_ca},
            {"name": "POD_UID", "valueFrom": field("metadata.uid")},
        ]);
        // A container that is never restarted must not give up on an unreachable operator.
        if never_restarted {
            if let Some(a) = env.as_array_mut() {
                a.push(json!({"name": "KUBE_STANDBY_GIVE_UP_SECONDS", "value": "0"}));
            }
        }
        env
    }

    /// Is the pod's agent never restarted after it exits (`restartPolicy: Never`)?
    fn never_restarted(pod: &Pod) -> bool {
        pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("Never")
    }
    fn token_mount(names: &VolumeNames) -> Value {
        json!({"name": names.token, "mountPath": TOKEN_DIR, "readOnly": true})
    }

    /// The status sidecar: obtains the release and writes the signal file atomically.
    pub fn sidecar(config: &Config<'_>, names: &VolumeNames, never_restarted: bool) -> Value {
        json!({
            "name": SIDECAR_NAME,
            "image": config.injection.agent_image,
            "args": ["agent", "--signal-file", SIGNAL_FILE],
            "env": agent_env(config, never_restarted),
            // The agent's one-line fatal error becomes the container status' message.
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "20m", "memory": "64Mi"}},
            "volumeMounts": [{"name": names.signal, "mountPath": SIGNAL_DIR}, token_mount(names)],
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true, "runAsUser": 65532, "capabilities": {"drop": ["ALL"]}}
        })
    }

    /// The init gate's environment: the agent's, and where to write the epoch file.
    fn init_env(config: &Config<'_>, never_restarted: bool) -> Value {
        let mut env = agent_env(config, never_restarted);
        if let Some(a) = env.as_array_mut() {
            a.push(json!({"name": "KUBE_STANDBY_EPOCH_FILE", "value": EPOCH_FILE}));
        }
        env
    }

    /// The init gate: writes the epoch file, then exits 0 once the pod is released.
    pub fn init_gate(config: &Config<'_>, names: &VolumeNames, never_restarted: bool) -> Value {
        json!({
            "name": INIT_GATE_NAME,
            "image": config.injection.agent_image,
            "args": ["agent", "--once"],
            "env": init_env(config, never_restarted),
            // The agent's one-line fatal error becomes the container status' message.
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "20m", "memory": "64Mi"}},
            "volumeMounts": [{"name": names.signal, "mountPath": SIGNAL_DIR}, token_mount(names)],
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true, "runAsUser": 65532, "capabilities": {"drop": ["ALL"]}}
        })
    }

    fn wrapped_command(c: &Container) -> Value {
        let mut cmd = vec![
            format!("{WRAPPER_DIR}/{WRAPPER_SCRIPT_NAME}"),
            "--".to_string(),
        ];
        cmd.extend(c.command.iter().flatten().cloned());
        json!(cmd)
    }

    /// Add `items` to the list at `path`: the whole list when the pod has none (`exists` is
    /// false), else each item appended (`-`).
    fn append(exists: bool, path: &[&str], items: Vec<Value>) -> Vec<PatchOperation> {
        if !exists {
            return vec![add(ptr(path), Value::Array(items))];
        }
        let mut end = path.to_vec();
        end.push("-");
        items.into_iter().map(|v| add(ptr(&end), v)).collect()
    }

    /// Set `entries` in the string map at `path`: the whole map when the pod has none, else
    /// each key on its own (keys contain '/', escaped by `from_tokens`).
    fn put_entries(exists: bool, path: &[&str], entries: &[(&str, &str)]) -> Vec<PatchOperation> {
        if !exists {
            let map = entries
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<serde_json::Map<_, _>>();
            return vec![add(ptr(path), Value::Object(map))];
        }
        entries
            .iter()
            .map(|(k, v)| {
                let mut at = path.to_vec();
                at.push(k);
                add(ptr(&at), json!(v))
            })
            .collect()
    }

    /// The managed and singleton labels, and the gate annotation.
    fn metadata_ops(pod: &Pod, singleton: &str, gate: Gate) -> Vec<PatchOperation> {
        let meta = &pod.metadata;
        let mut ops = put_entries(
            meta.labels.is_some(),
            &["metadata", "labels"],
            &[(MANAGED_LABEL, "true"), (SINGLETON_LABEL, singleton)],
        );
        ops.extend(put_entries(
            meta.annotations.is_some(),
            &["metadata", "annotations"],
            &[(GATE_ANNOTATION, gate.as_str())],
        ));
        ops
    }

    /// The singleton's readiness gate, unless the pod already lists it.
    fn readiness_gate_ops(spec: &PodSpec) -> Vec<PatchOperation> {
        let gates = spec.readiness_gates.as_ref();
        if gates.is_some_and(|g| g.iter().any(|g| g.condition_type == READY_CONDITION)) {
            return vec![];
        }
        let entry = json!({"conditionType": READY_CONDITION});
        append(gates.is_some(), &["spec", "readinessGates"], vec![entry])
    }

    /// Grace period: the singleton's, or the pod's own when longer and respected.
    fn grace_period_ops(spec: &PodSpec, singleton: &StatefulSingleton) -> Vec<PatchOperation> {
        let own = spec.termination_grace_period_seconds;
        let wanted = &singleton.spec;
        let grace = match own {
            Some(o) if wanted.respect_pod_grace_period && o > wanted.termination_grace_period => o,
            _ => wanted.termination_grace_period,
        };
        if own == Some(grace) {
            return vec![];
        }
        vec![add(
            ptr(&["spec", "terminationGracePeriodSeconds"]),
            json!(grace),
        )]
    }

    /// Preferred anti-affinity against this singleton's pods only, merged into what exists.
    fn anti_affinity_ops(spec: &PodSpec, singleton: &str) -> Vec<PatchOperation> {
        const PREFERRED: &str = "preferredDuringSchedulingIgnoredDuringExecution";
        let term = json!({"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {SINGLETON_LABEL: singleton}}}});
        let Some(affinity) = &spec.affinity else {
            return vec![add(
                ptr(&["spec", "affinity"]),
                json!({"podAntiAffinity": {PREFERRED: [term]}}),
            )];
        };
        let Some(anti) = &affinity.pod_anti_affinity else {
            return vec![add(
                ptr(&["spec", "affinity", "podAntiAffinity"]),
                json!({PREFERRED: [term]}),
            )];
        };
        let exists = anti
            .preferred_during_scheduling_ignored_during_execution
            .is_some();
        append(
            exists,
            &["spec", "affinity", "podAntiAffinity", PREFERRED],
            vec![term],
        )
    }

    /// Volumes: the agent's projected token; the wrapper script for the wrapper gate; the
    /// signal dir for both.
    fn volume_ops(spec: &PodSpec, gate: Gate, names: &VolumeNames) -> Vec<PatchOperation> {
        let mut volumes = vec![json!({"name": names.token, "projected": {"sources": [
            {"serviceAccountToken": {"audience": TOKEN_AUDIENCE, "expirationSeconds": 3600, "path": "token"}}
        ]}})];
        if gate == Gate::Wrapper {
            volumes.push(json!({"name": names.wrapper, "configMap": {"name": WRAPPER_CONFIGMAP, "defaultMode": 0o755}}));
        }
        volumes.push(json!({"name": names.signal, "emptyDir": {}}));
        append(spec.volumes.is_some(), &["spec", "volumes"], volumes)
    }

    /// The wrapper gate: every app container's command wrapped (args stay exactly as they
    /// are) with the wrapper and signal mounts, then the status sidecar.
    fn wrapper_gate_ops(
        spec: &PodSpec,
        config: &Config<'_>,
        names: &VolumeNames,
        never_restarted: bool,
    ) -> Vec<PatchOperation> {
        let mounts = [
            json!({"name": names.wrapper, "mountPath": WRAPPER_DIR, "readOnly": true}),
            json!({"name": names.signal, "mountPath": SIGNAL_DIR, "readOnly": true}),
        ];
        let mut ops = vec![];
        for (i, c) in spec.containers.iter().enumerate() {
            let idx = i.to_string();
            ops.push(add(
                ptr(&["spec", "containers", &idx, "command"]),
                wrapped_command(c),
            ));
            ops.extend(append(
                c.volume_mounts.is_some(),
                &["spec", "containers", &idx, "volumeMounts"],
                mounts.to_vec(),
            ));
        }
        ops.push(add(
            ptr(&["spec", "containers", "-"]),
            sidecar(config, names, never_restarted),
        ));
        ops
    }

    /// The init gate: the signal volume mounted read-only into every app container, and the
    /// gate first among the init containers so none runs before the release.
    fn init_gate_ops(
        spec: &PodSpec,
        config: &Config<'_>,
        names: &VolumeNames,
        never_restarted: bool,
    ) -> Vec<PatchOperation> {
        let mount = json!({"name": names.signal, "mountPath": SIGNAL_DIR, "readOnly": true});
        let mut ops = vec![];
        for (i, c) in spec.containers.iter().enumerate() {
            let idx = i.to_string();
            ops.extend(append(
                c.volume_mounts.is_some(),
                &["spec", "containers", &idx, "volumeMounts"],
                vec![mount.clone()],
            ));
        }
        let gate = init_gate(config, names, never_restarted);
        ops.push(match &spec.init_containers {
            None => add(ptr(&["spec", "initContainers"]), json!([gate])),
            Some(_) => add(ptr(&["spec", "initContainers", "0"]), gate),
        });
        ops
    }

    /// Operations injecting `singleton`'s gate into `pod`, or why the pod must be denied: one
    /// pure function per concern, concatenated in a fixed order.
    pub fn inject(
        pod: &Pod,
        singleton: &StatefulSingleton,
        config: &Config<'_>,
    ) -> Result<Vec<PatchOperation>, String> {
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(vec![]);
        };
        let name = singleton.metadata.name.clone().unwrap_or_default();
        if let Some(why) = injection_obstacle(config) {
            return Err(format!(
                "StatefulSingleton {name:?} cannot gate this pod: {why}"
            ));
        }
        let gate = choose_gate(pod, singleton.spec.start_gate)
            .map_err(|why| format!("StatefulSingleton {name:?} cannot gate this pod: {why}"))?;
        let names = VolumeNames::for_pod(spec);
        let mut ops = metadata_ops(pod, &name, gate);
        ops.extend(readiness_gate_ops(spec));
        ops.extend(grace_period_ops(spec, singleton));
        ops.extend(anti_affinity_ops(spec, &name));
        ops.extend(volume_ops(spec, gate, &names));
        ops.extend(match gate {
            Gate::Wrapper => wrapper_gate_ops(spec, config, &names, never_restarted(pod)),
            Gate::InitContainer => init_gate_ops(spec, config, &names, never_restarted(pod)),
        });
        Ok(ops)
    }

    /// The StatefulSingleton feature's mutator: the patch, or why the pod is denied.
    pub fn mutate(pod: &Pod, config: &Config<'_>) -> Result<Vec<PatchOperation>, String> {
        if already_injected(pod) {
            return Ok(vec![]);
        }
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        match owning_singleton(&config.singletons, &labels) {
            Some(s) => inject(pod, s, config),
            None => Ok(vec![]),
        }
    }
}

const AGENT_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2Fu\"quote\\backslash\u{1}\n-----END CERTIFICATE-----\n";

fn injection() -> Injection {
    Injection {
        agent_image: "ghcr.io/paia-tech/kube-standby:test".into(),
        operator_url: "https://kube-standby.kube-standby.svc:443".into(),
        agent_ca: AGENT_CA.into(),
    }
}

fn singletons() -> Vec<Arc<StatefulSingleton>> {
    common::demo_objects().singletons
}

/// Both implementations on `object` (a pod, else skipped): the same denial, or the same
/// patch text; the patch applies and leaves a valid Pod. True when a patch was made.
fn same_patch(object: &Value, singletons: Vec<Arc<StatefulSingleton>>, inj: &Injection) -> bool {
    let Ok(pod) = serde_json::from_value::<Pod>(object.clone()) else {
        return false;
    };
    let config = Config {
        singletons,
        injection: inj,
    };
    let new = kube_standby::webhook::mutate_patch(&pod, &config);
    let old = reference::mutate(&pod, &config);
    match (new, old) {
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            false
        }
        (Ok(patch), Ok(ops)) => {
            let text = patch.to_json().unwrap();
            assert_eq!(
                String::from_utf8(text).unwrap(),
                serde_json::to_string(&ops).unwrap(),
                "patch text differs for {object}"
            );
            assert_eq!(patch.len(), ops.len());
            let mut patched = object.clone();
            json_patch::patch(&mut patched, &patch.operations().unwrap()).unwrap();
            serde_json::from_value::<Pod>(patched).expect("the patched object is a Pod");
            !ops.is_empty()
        }
        (a, b) => panic!(
            "one denies, the other does not: {:?} / {:?}",
            a.map(|p| p.len()),
            b.map(|o| o.len())
        ),
    }
}

/// Variants of a pod that take each branch of the injection.
fn variants(object: &Value) -> Vec<Value> {
    let mut out = vec![object.clone()];
    let mut with = |f: &dyn Fn(&mut Value)| {
        let mut v = object.clone();
        f(&mut v);
        out.push(v);
    };
    for labels in [
        json!({"app": "game"}),
        json!({"run": "solo"}),
        json!({"app": "game", "run": "solo"}),
        json!({"app": "other"}),
    ] {
        with(&|v| v["metadata"]["labels"] = labels.clone());
    }
    with(&|v| {
        v["metadata"]["labels"] = json!({"run": "solo"});
        v["metadata"].as_object_mut().unwrap().remove("annotations");
    });
    with(&|v| {
        v["metadata"]["labels"] = json!({"app": "game"});
        v["metadata"]["annotations"] = json!({"a/b~c": "d"});
    });
    with(&|v| v["spec"]["restartPolicy"] = "Never".into());
    with(&|v| v["spec"]["terminationGracePeriodSeconds"] = 60.into());
    with(&|v| v["spec"]["terminationGracePeriodSeconds"] = 600.into());
    with(&|v| {
        v["spec"]
            .as_object_mut()
            .unwrap()
            .remove("volumes")
            .map(drop)
            .unwrap_or(())
    });
    with(&|v| {
        v["spec"]["volumes"] = json!([{"name": "statefulsingleton-token", "emptyDir": {}},
            {"name": "statefulsingleton-wrapper", "emptyDir": {}}, {"name": "statefulsingleton-signal-2", "emptyDir": {}}])
    });
    with(&|v| v["spec"]["readinessGates"] = json!([{"conditionType": "x"}]));
    with(&|v| {
        v["spec"]["readinessGates"] =
            json!([{"conditionType": "apps.statefulsingleton.com/singleton-ready"}])
    });
    with(&|v| v["spec"]["affinity"] = json!({"nodeAffinity": {}}));
    with(&|v| v["spec"]["affinity"] = json!({"podAntiAffinity": {}}));
    with(&|v| {
        v["spec"]["affinity"] = json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"topologyKey": "zone"}}]}})
    });
    with(&|v| v["spec"]["initContainers"] = json!([{"name": "setup", "image": "busybox"}]));
    with(&|v| {
        v["spec"]["initContainers"] = json!([{"name": "singleton-gate", "image": "busybox"}])
    });
    with(&|v| {
        v["spec"]["containers"][0]["command"] = json!(["/bin/app", "quote\"d", "tab\t"]);
        v["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "second", "image": "x", "command": ["run"]}));
    });
    with(&|v| {
        v["spec"]["containers"][0]["command"] = json!(["/bin/app"]);
        v["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("volumeMounts");
    });
    with(&|v| {
        v["spec"]["containers"][0]["command"] = json!(["/bin/app"]);
        v["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "x", "mountPath": "/opt/wrapper/"}]);
    });
    with(&|v| {
        v["spec"]["containers"][0]["command"] = json!(["/bin/app"]);
        v["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "status-sidecar", "image": "x"}));
    });
    with(&|v| {
        v["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "singleton-gate", "image": "x"}));
    });
    with(&|v| {
        v["spec"]["containers"] =
            json!([{"name": "status-sidecar", "image": "x", "args": ["agent"]}])
    });
    with(&|v| {
        v.as_object_mut().unwrap().remove("spec");
    });
    with(&|v| v["spec"]["containers"] = json!([]));
    out
}

#[test]
fn the_patch_text_is_the_reference_for_every_golden_body_and_its_variants() {
    let mut patched = 0;
    let mut cases = 0;
    for name in [
        "pod-create-from-replicaset.json",
        "pod-create-direct-with-command.json",
        "pod-create-dry-run.json",
        "pod-update-annotation.json",
        "pod-update-status.json",
        "pod-delete-by-user.json",
        "pod-delete-busy-force.json",
    ] {
        let review = common::fixture_json(name);
        for key in ["object", "oldObject"] {
            let object = &review["request"][key];
            if !object.is_object() {
                continue;
            }
            for v in variants(object) {
                for inj in [injection(), common::injection(), Injection::default()] {
                    cases += 1;
                    patched += usize::from(same_patch(&v, singletons(), &inj));
                }
            }
        }
    }
    assert!(patched > 100, "{patched} of {cases} cases made a patch");
}

/// A random pod: which fields it has and what they hold.
fn pod_strategy() -> impl Strategy<Value = Value> {
    let container = (
        prop_oneof![
            Just("app"),
            Just("status-sidecar"),
            Just("singleton-gate"),
            Just("x/y~z")
        ],
        proptest::option::of(proptest::collection::vec("[a-z\"\\\\ /]{0,6}", 0..3)),
        proptest::option::of(proptest::collection::vec(
            prop_oneof![
                Just("/opt/wrapper"),
                Just("/var/run/signal/"),
                Just("/data")
            ],
            0..2,
        )),
        proptest::option::of(proptest::collection::vec(Just("agent"), 0..2)),
    )
        .prop_map(|(name, command, mounts, args)| {
            let mut c = json!({"name": name, "image": "img"});
            if let Some(cmd) = command {
                c["command"] = json!(cmd);
            }
            if let Some(m) = mounts {
                c["volumeMounts"] = m
                    .iter()
                    .map(|p| json!({"name": "v", "mountPath": p}))
                    .collect();
            }
            if let Some(a) = args {
                c["args"] = json!(a);
            }
            c
        });
    let volume = prop_oneof![
        Just("statefulsingleton-token"),
        Just("statefulsingleton-token-2"),
        Just("statefulsingleton-wrapper"),
        Just("statefulsingleton-signal"),
        Just("data"),
    ];
    (
        (
            proptest::option::of(prop_oneof![
                Just(json!({"app": "game"})),
                Just(json!({"run": "solo"})),
                Just(json!({"app": "game", "run": "solo", "k/x": "v"})),
                Just(json!({"app": "none"})),
            ]),
            proptest::option::of(Just(json!({"note": "n"}))),
            proptest::collection::vec(container.clone(), 0..3),
            proptest::option::of(proptest::collection::vec(container, 0..2)),
            proptest::option::of(proptest::collection::vec(volume, 0..4)),
        ),
        (
            proptest::option::of(prop_oneof![Just("Never"), Just("Always"), Just("OnFailure")]),
            proptest::option::of(0i64..120),
            proptest::option::of(prop_oneof![
                Just(json!({})),
                Just(json!({"podAntiAffinity": {}})),
                Just(json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}})),
            ]),
            proptest::option::of(prop_oneof![
                Just(json!([])),
                Just(json!([{"conditionType": "apps.statefulsingleton.com/singleton-ready"}])),
                Just(json!([{"conditionType": "other"}])),
            ]),
        ),
    )
        .prop_map(
            |((labels, annotations, containers, init, volumes), (restart, grace, affinity, gates))| {
                let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"generateName": "p-", "namespace": "ns"},
                    "spec": {"containers": containers}});
                if let Some(l) = labels {
                    pod["metadata"]["labels"] = l;
                }
                if let Some(a) = annotations {
                    pod["metadata"]["annotations"] = a;
                }
                let spec = &mut pod["spec"];
                if let Some(i) = init {
                    spec["initContainers"] = json!(i);
                }
                if let Some(v) = volumes {
                    spec["volumes"] = v.iter().map(|n| json!({"name": n, "emptyDir": {}})).collect();
                }
                if let Some(r) = restart {
                    spec["restartPolicy"] = r.into();
                }
                if let Some(g) = grace {
                    spec["terminationGracePeriodSeconds"] = g.into();
                }
                if let Some(a) = affinity {
                    spec["affinity"] = a;
                }
                if let Some(g) = gates {
                    spec["readinessGates"] = g;
                }
                pod
            },
        )
}

fn singleton_strategy() -> impl Strategy<Value = Vec<Arc<StatefulSingleton>>> {
    (
        prop_oneof![Just("auto"), Just("wrapper"), Just("initContainer")],
        any::<bool>(),
        0i64..100,
        prop_oneof![Just("game"), Just("a\"b/c~d")],
    )
        .prop_map(|(gate, respect, grace, name)| {
            let s = json!({"apiVersion": "apps.statefulsingleton.com/v1", "kind": "StatefulSingleton",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"selector": {"matchLabels": {"app": "game"}}, "startGate": gate,
                         "respectPodGracePeriod": respect, "terminationGracePeriod": grace}});
            let solo = json!({"apiVersion": "apps.statefulsingleton.com/v1", "kind": "StatefulSingleton",
                "metadata": {"name": "solo"},
                "spec": {"selector": {"matchLabels": {"run": "solo"}}}});
            vec![
                Arc::new(serde_json::from_value(s).unwrap()),
                Arc::new(serde_json::from_value(solo).unwrap()),
            ]
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_patch_text_is_the_reference_for_random_pods(
        pod in pod_strategy(),
        singletons in singleton_strategy(),
    ) {
        same_patch(&pod, singletons, &injection());
    }
}

/// The answer to `review` with `decide`'s decision, both ways.
fn same_answer(review: &Value, decide: impl Fn(AdmissionResponse) -> Decision) {
    let parsed: AdmissionReview<kube::core::DynamicObject> =
        serde_json::from_value(review.clone()).unwrap();
    let req: AdmissionRequest<kube::core::DynamicObject> = parsed.try_into().unwrap();
    let d = decide(AdmissionResponse::from(&req));
    let direct = review_body(&d).unwrap();
    let via_value = serde_json::to_vec(&review_json(&d).unwrap()).unwrap();
    assert_eq!(
        String::from_utf8(direct).unwrap(),
        String::from_utf8(via_value).unwrap()
    );
}

#[test]
fn the_answer_written_directly_is_the_one_built_as_a_value() {
    for name in common::FIXTURES {
        let mut review = common::fixture_json(name);
        for uid in ["plain", "quote\" and \u{2028} and \u{7}"] {
            review["request"]["uid"] = uid.into();
            same_answer(&review, Decision::allow);
            same_answer(&review, |r| Decision::deny(r, "no: \"why\"\n".into()));
            same_answer(&review, |r| {
                let mut d = Decision::allow(r);
                d.patch.extend(Patch::new());
                d.response.warnings = Some(vec!["w1".into(), "w\"2".into()]);
                d.response.audit_annotations.extend([
                    ("z".to_string(), "1".to_string()),
                    ("a".into(), "\"2\"".into()),
                ]);
                d
            });
            same_answer(&review, |r| {
                let mut d = Decision::allow(r);
                let mut p = Patch::new();
                p.add(&["metadata", "labels", "a/b"], &"v\"\n");
                p.add(&["spec", "x"], &json!({"k": [1, 2]}));
                d.patch = p;
                d
            });
        }
    }
}
