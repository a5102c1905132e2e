//! Table tests of the AsyncActor planner, and property tests of its rules.
use proptest::prelude::*;
use serde_json::json;

use super::*;

fn actor(patch: Value) -> AsyncActor {
    let mut v = json!({
        "apiVersion": "asya.io/v1alpha1", "kind": "AsyncActor",
        "metadata": {"name": "a", "namespace": "ns", "uid": "actor-uid", "generation": 2},
        "spec": {"queueName": "q",
            "transport": {"type": "rabbitmq", "rabbitmq": {"host": "mq", "username": "u",
                "passwordSecretRef": {"name": "mq-secret", "key": "password"}}},
            "scaling": {"enabled": true, "maxReplicas": 5},
            "workload": {"type": "Deployment", "replicas": 2,
                "template": {"spec": {"containers": [{"name": "runtime", "image": "rt:1"}]}}}}
    });
    json_patch::merge(&mut v, &patch);
    serde_json::from_value(v).unwrap()
}

fn cfg() -> BuildConfig {
    BuildConfig {
        sidecar_image: "sidecar:1".into(),
        runtime_hash: None,
        native_sidecar: false,
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap())
}

fn obs<'a>(
    a: &'a AsyncActor,
    cfg: &'a BuildConfig,
    existing: Vec<Existing>,
    keda: Keda,
) -> Observed<'a> {
    Observed {
        actor: a,
        cfg,
        runtime: None,
        existing,
        configmap: RuntimeCm::NotConfigured,
        keda,
        pods: vec![],
    }
}

/// An object of ours exactly as the plan for `a` would write it now.
fn current(a: &AsyncActor, cfg: &BuildConfig, kind: Kind) -> Existing {
    let p = plan(&obs(a, cfg, vec![], Keda::all()), &now());
    let body = p
        .actions
        .iter()
        .find_map(|x| match x {
            Action::Apply { kind: k, body } if *k == kind => Some(body.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {kind:?} planned"));
    let mut e = ours(kind);
    e.spec_hash = body["metadata"]["annotations"][build::SPEC_HASH]
        .as_str()
        .map(str::to_string);
    e.template_hash = body["metadata"]["annotations"][build::TEMPLATE_HASH]
        .as_str()
        .map(str::to_string);
    e
}

fn ours(kind: Kind) -> Existing {
    Existing {
        kind,
        uid: format!("uid-{kind:?}"),
        owned: true,
        spec_hash: Some("old".into()),
        template_hash: None,
        deleting: false,
        facts: WorkloadFacts {
            generation: 1,
            observed_generation: 1,
            desired: 2,
            ready: 2,
            ..Default::default()
        },
    }
}

fn foreign(kind: Kind) -> Existing {
    Existing {
        owned: false,
        ..ours(kind)
    }
}

fn writes(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|a| match a {
            Action::Apply { kind, .. } => format!("apply {kind:?}"),
            Action::Delete { kind, .. } => format!("delete {kind:?}"),
            Action::Costs(c) => format!("costs {c:?}"),
            Action::Handover { kind, replicas } => format!("handover {kind:?} {replicas}"),
        })
        .collect()
}

fn applied(p: &Plan, kind: Kind) -> &Value {
    p.actions
        .iter()
        .find_map(|a| match a {
            Action::Apply { kind: k, body } if *k == kind => Some(body),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {kind:?} applied: {:?}", writes(p)))
}

fn cond<'a>(p: &'a Plan, t: &str) -> (&'a str, &'a str) {
    let c = crate::api::condition(&p.status.conditions, t).unwrap_or_else(|| panic!("no {t}"));
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn a_new_actor_gets_workload_then_auth_then_scaled_object() {
    let (a, c) = (actor(json!({})), cfg());
    let p = plan(&obs(&a, &c, vec![], Keda::all()), &now());
    assert_eq!(
        writes(&p),
        [
            "apply Deployment",
            "apply TriggerAuthentication",
            "apply ScaledObject"
        ]
    );
    assert!(applied(&p, Kind::Deployment)["spec"]["replicas"].is_null());
    assert_eq!(cond(&p, "ScalingReady"), ("True", "ScaledObjectCreated"));
    assert_eq!(cond(&p, "WorkloadReady"), ("False", "WorkloadProgressing"));
    let reasons: Vec<&str> = p.notes.iter().map(|n| n.reason.as_str()).collect();
    assert_eq!(reasons, ["WorkloadCreated", "ScaledObjectCreated"]);
    assert_eq!(p.status.scaled_object_ref.as_ref().unwrap().name, "a");
    assert_eq!(p.status.workload_ref.as_ref().unwrap().kind, "Deployment");
    assert_eq!(p.status.observed_generation, Some(2));
}

#[test]
fn an_unchanged_actor_writes_nothing_and_reports_ready() {
    let (a, c) = (actor(json!({})), cfg());
    let existing = vec![
        current(&a, &c, Kind::Deployment),
        current(&a, &c, Kind::TriggerAuthentication),
        current(&a, &c, Kind::ScaledObject),
    ];
    let p = plan(&obs(&a, &c, existing, Keda::all()), &now());
    assert!(p.actions.is_empty(), "{:?}", writes(&p));
    assert!(p.notes.is_empty());
    assert_eq!(cond(&p, "WorkloadReady"), ("True", "WorkloadCreated"));
}

#[test]
fn a_spec_change_is_applied() {
    let (a, c) = (actor(json!({})), cfg());
    let existing = vec![
        current(&a, &c, Kind::Deployment),
        current(&a, &c, Kind::TriggerAuthentication),
        current(&a, &c, Kind::ScaledObject),
    ];
    let b = actor(
        json!({"spec": {"workload": {"template": {"spec": {"containers": [{"name": "runtime", "image": "rt:2"}]}}}}}),
    );
    let p = plan(&obs(&b, &c, existing, Keda::all()), &now());
    assert_eq!(
        writes(&p),
        ["apply Deployment"],
        "the ScaledObject does not depend on the template"
    );
    let b = actor(json!({"spec": {"scaling": {"maxReplicas": 6}}}));
    let existing = vec![
        current(&a, &c, Kind::Deployment),
        current(&a, &c, Kind::TriggerAuthentication),
        current(&a, &c, Kind::ScaledObject),
    ];
    let p = plan(&obs(&b, &c, existing, Keda::all()), &now());
    assert_eq!(writes(&p), ["apply ScaledObject"]);
}

#[test]
fn scaling_off_deletes_our_keda_objects_first_and_sets_replicas() {
    let a = actor(json!({"spec": {"scaling": {"enabled": false}}}));
    let c = cfg();
    let existing = vec![
        ours(Kind::Deployment),
        ours(Kind::ScaledObject),
        ours(Kind::TriggerAuthentication),
    ];
    let p = plan(&obs(&a, &c, existing, Keda::all()), &now());
    assert_eq!(
        writes(&p),
        [
            "delete ScaledObject",
            "delete TriggerAuthentication",
            "apply Deployment"
        ]
    );
    assert_eq!(applied(&p, Kind::Deployment)["spec"]["replicas"], 2);
    assert_eq!(cond(&p, "ScalingReady"), ("True", "ScalingDisabled"));
    assert!(p.status.scaled_object_ref.is_none());
    assert!(p.notes.iter().any(|n| n.reason == "ScalingRemoved"));
}

#[test]
fn without_keda_the_workload_runs_its_replicas_and_says_why() {
    let (a, c) = (actor(json!({})), cfg());
    let p = plan(&obs(&a, &c, vec![], Keda::default()), &now());
    assert_eq!(writes(&p), ["apply Deployment"]);
    assert_eq!(applied(&p, Kind::Deployment)["spec"]["replicas"], 2);
    assert_eq!(cond(&p, "ScalingReady"), ("False", "KedaNotInstalled"));
    let msg = &crate::api::condition(&p.status.conditions, "ScalingReady")
        .unwrap()
        .message;
    assert!(
        msg.contains("scaledobjects.keda.sh") && msg.contains("replicas=2"),
        "{msg}"
    );
    // Installed later: the next plan creates the KEDA objects and hands replicas to KEDA.
    let existing = vec![current(
        &actor(json!({"spec": {"scaling": {"enabled": false}}})),
        &c,
        Kind::Deployment,
    )];
    let p = plan(&obs(&a, &c, existing, Keda::all()), &now());
    // The count it runs (2) is first handed to another field manager: dropping
    // spec.replicas from our apply must not reset it to 1.
    assert_eq!(
        writes(&p),
        [
            "handover Deployment 2",
            "apply Deployment",
            "apply TriggerAuthentication",
            "apply ScaledObject"
        ]
    );
    assert!(applied(&p, Kind::Deployment)["spec"]["replicas"].is_null());
}

#[test]
fn replicas_are_handed_over_only_when_keda_takes_the_count_from_us() {
    let c = cfg();
    // A new actor: there is no count to keep.
    let a = actor(json!({}));
    let p = plan(&obs(&a, &c, vec![], Keda::all()), &now());
    assert!(
        !writes(&p).iter().any(|w| w.starts_with("handover")),
        "{:?}",
        writes(&p)
    );
    // KEDA already drives it (our ScaledObject exists): a template change is applied
    // without touching the count KEDA set.
    let driven = actor(
        json!({"spec": {"workload": {"template": {"spec": {"containers": [{"name": "runtime", "image": "new"}]}}}}}),
    );
    let existing = vec![
        ours(Kind::Deployment),
        ours(Kind::ScaledObject),
        ours(Kind::TriggerAuthentication),
    ];
    let p = plan(&obs(&driven, &c, existing, Keda::all()), &now());
    assert!(
        writes(&p).contains(&"apply Deployment".to_string()),
        "{:?}",
        writes(&p)
    );
    assert!(
        !writes(&p).iter().any(|w| w.starts_with("handover")),
        "{:?}",
        writes(&p)
    );
    // A StatefulSet handed to KEDA keeps its count too.
    let sts = actor(json!({"spec": {"workload": {"type": "StatefulSet"}}}));
    let mut e = ours(Kind::StatefulSet);
    e.facts.desired = 5;
    let p = plan(
        &obs(&sts, &c, vec![e, ours(Kind::Service)], Keda::all()),
        &now(),
    );
    let w = writes(&p);
    let h = w
        .iter()
        .position(|x| x == "handover StatefulSet 5")
        .expect("handover");
    let a = w
        .iter()
        .position(|x| x == "apply StatefulSet")
        .expect("apply");
    assert!(h < a, "{w:?}");
}

#[test]
fn a_type_change_replaces_the_workload() {
    let a = actor(
        json!({"spec": {"scaling": {"enabled": false}, "workload": {"type": "StatefulSet"}}}),
    );
    let c = cfg();
    let existing = vec![ours(Kind::Deployment)];
    let p = plan(&obs(&a, &c, existing, Keda::all()), &now());
    assert_eq!(
        writes(&p),
        ["delete Deployment", "apply Service", "apply StatefulSet"]
    );
    assert!(p.notes.iter().any(|n| n.reason == "WorkloadReplaced"));
    // And back: the StatefulSet and its Service go.
    let b = actor(json!({"spec": {"scaling": {"enabled": false}}}));
    let p = plan(
        &obs(
            &b,
            &c,
            vec![ours(Kind::StatefulSet), ours(Kind::Service)],
            Keda::all(),
        ),
        &now(),
    );
    assert_eq!(
        writes(&p),
        ["delete StatefulSet", "delete Service", "apply Deployment"]
    );
}

#[test]
fn deployment_to_job_with_keda_swaps_scaled_object_for_scaled_job() {
    let a = actor(json!({"spec": {"workload": {"type": "Job"}}}));
    let c = cfg();
    let existing = vec![
        ours(Kind::Deployment),
        ours(Kind::ScaledObject),
        current(&actor(json!({})), &c, Kind::TriggerAuthentication),
    ];
    let p = plan(&obs(&a, &c, existing, Keda::all()), &now());
    assert_eq!(
        writes(&p),
        [
            "delete Deployment",
            "delete ScaledObject",
            "apply ScaledJob"
        ]
    );
    assert_eq!(p.status.workload_ref.as_ref().unwrap().kind, "ScaledJob");
    assert_eq!(cond(&p, "ScalingReady"), ("True", "ScaledJobCreated"));
}

#[test]
fn a_job_whose_template_changed_is_replaced_and_a_scaled_job_replaces_our_job() {
    let a = actor(json!({"spec": {"scaling": {"enabled": false}, "workload": {"type": "Job"}}}));
    let c = cfg();
    let mut job = current(&a, &c, Kind::Job);
    let p = plan(&obs(&a, &c, vec![job.clone()], Keda::all()), &now());
    assert!(p.actions.is_empty(), "{:?}", writes(&p));
    job.template_hash = Some("other".into());
    let p = plan(&obs(&a, &c, vec![job.clone()], Keda::all()), &now());
    assert_eq!(writes(&p), ["delete Job"]);
    assert!(p.requeue_soon);
    // Scaling on with KEDA: KEDA starts the Jobs, ours goes.
    let b = actor(json!({"spec": {"workload": {"type": "Job"}}}));
    let p = plan(&obs(&b, &c, vec![job], Keda::all()), &now());
    assert_eq!(
        writes(&p),
        [
            "delete Job",
            "apply TriggerAuthentication",
            "apply ScaledJob"
        ]
    );
}

#[test]
fn a_name_clash_writes_nothing() {
    let (a, c) = (actor(json!({})), cfg());
    let p = plan(
        &obs(&a, &c, vec![foreign(Kind::Deployment)], Keda::all()),
        &now(),
    );
    assert!(p.actions.is_empty());
    let p = plan(
        &obs(
            &a,
            &c,
            vec![foreign(Kind::Deployment), ours(Kind::ScaledObject)],
            Keda::all(),
        ),
        &now(),
    );
    assert_eq!(
        writes(&p),
        ["delete ScaledObject"],
        "ours would scale theirs"
    );
    assert_eq!(cond(&p, "WorkloadReady"), ("False", "WorkloadConflict"));
    assert!(p.status.workload_ref.is_none());
    // A foreign ScaledObject: the workload is still ours to run, with its own replicas.
    let p = plan(
        &obs(&a, &c, vec![foreign(Kind::ScaledObject)], Keda::all()),
        &now(),
    );
    assert_eq!(writes(&p), ["apply Deployment"]);
    assert_eq!(applied(&p, Kind::Deployment)["spec"]["replicas"], 2);
    assert_eq!(cond(&p, "ScalingReady"), ("False", "ScaledObjectConflict"));
    // A foreign Service blocks a StatefulSet.
    let s = actor(json!({"spec": {"workload": {"type": "StatefulSet"}}}));
    let p = plan(
        &obs(&s, &c, vec![foreign(Kind::Service)], Keda::all()),
        &now(),
    );
    assert!(p.actions.is_empty());
    assert_eq!(cond(&p, "WorkloadReady"), ("False", "WorkloadConflict"));
}

#[test]
fn bad_input_is_explained_and_writes_nothing() {
    let c = cfg();
    for (patch, has) in [
        (
            json!({"spec": {"workload": {"template": {"spec": {"containers": []}}}}}),
            "at least one container",
        ),
        (
            json!({"spec": {"workload": {"template": {"metadata": {}, "spec": null}}}}),
            "spec is missing",
        ),
        (
            json!({"spec": {"workload": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "x"}]}}}}}),
            "reserved",
        ),
        (
            json!({"spec": {"socket": {"path": "relative.sock"}}}),
            "socket.path",
        ),
        (
            json!({"spec": {"workload": {"type": "Job", "template": {"spec": {"restartPolicy": "Always"}}}}}),
            "restartPolicy",
        ),
    ] {
        let a = actor(patch);
        let p = plan(&obs(&a, &c, vec![], Keda::all()), &now());
        assert!(p.actions.is_empty(), "{has}: {:?}", writes(&p));
        assert_eq!(cond(&p, "WorkloadReady"), ("False", "InvalidSpec"));
        let msg = &crate::api::condition(&p.status.conditions, "WorkloadReady")
            .unwrap()
            .message;
        assert!(msg.contains(has), "{msg}");
    }
}

#[test]
fn a_transport_without_its_block_still_runs_but_never_scales() {
    let a = actor(json!({"spec": {"transport": {"rabbitmq": null}}}));
    let c = cfg();
    let p = plan(&obs(&a, &c, vec![], Keda::all()), &now());
    assert_eq!(writes(&p), ["apply Deployment"]);
    assert_eq!(
        cond(&p, "TransportConfigured"),
        ("False", "TransportBlockMissing")
    );
    assert_eq!(cond(&p, "ScalingReady"), ("False", "TransportIncomplete"));
    // One mistake, one Warning: ScalingReady's reason is a consequence of it.
    let notes = transition_notes(None, &p.status);
    let reasons: Vec<(bool, &str)> = notes
        .iter()
        .map(|n| (n.warning, n.reason.as_str()))
        .collect();
    assert_eq!(reasons, [(true, "TransportBlockMissing")]);
}

#[test]
fn scaling_settings_out_of_range_are_refused() {
    let a =
        actor(json!({"spec": {"scaling": {"minReplicas": 9, "maxReplicas": 3, "queueLength": 0}}}));
    let c = cfg();
    let p = plan(&obs(&a, &c, vec![], Keda::all()), &now());
    assert_eq!(writes(&p), ["apply Deployment"]);
    assert_eq!(cond(&p, "ScalingReady"), ("False", "InvalidScaling"));
    let msg = &crate::api::condition(&p.status.conditions, "ScalingReady")
        .unwrap()
        .message;
    assert!(
        msg.contains("queueLength") && msg.contains("greater than"),
        "{msg}"
    );
}

#[test]
fn pods_failing_on_a_missing_secret_show_the_kubelets_reason() {
    let (a, c) = (
        actor(json!({"spec": {"scaling": {"enabled": false}}})),
        cfg(),
    );
    let mut o = obs(&a, &c, vec![current(&a, &c, Kind::Deployment)], Keda::all());
    o.existing[0].facts.ready = 0;
    o.pods = vec![PodFacts {
        name: "a-1".into(),
        running: false,
        ready: false,
        deleting: false,
        failing: Some((
            "CreateContainerConfigError".into(),
            "container sidecar: secret \"mq-secret\" not found".into(),
        )),
        busy: BusyState::Idle,
        stale: false,
        cost: None,
    }];
    let p = plan(&o, &now());
    assert_eq!(
        cond(&p, "WorkloadReady"),
        ("False", "CreateContainerConfigError")
    );
    let notes = transition_notes(None, &p.status);
    assert_eq!(
        notes
            .iter()
            .filter(|n| n.reason == "CreateContainerConfigError")
            .count(),
        1
    );
    // Reported once: the same state again is no new event.
    assert!(transition_notes(Some(&p.status), &p.status).is_empty());
}

#[test]
fn busy_pods_get_the_protected_cost_on_deployments_only() {
    let probe = json!({"busyProbe": {"mode": "annotation"}});
    let a = actor(json!({"spec": {"scaling": probe.clone()}}));
    let c = cfg();
    let pod = |name: &str, busy: BusyState, cost: Option<i32>| PodFacts {
        name: name.into(),
        running: true,
        ready: true,
        deleting: false,
        failing: None,
        busy,
        stale: false,
        cost,
    };
    let mut o = obs(&a, &c, vec![], Keda::all());
    o.pods = vec![
        pod("busy", BusyState::Busy, None),
        pod(
            "idle",
            BusyState::Idle,
            Some(crate::controller::cost::COST_IDLE),
        ),
        pod(
            "was-busy",
            BusyState::Idle,
            Some(crate::controller::cost::COST_PROTECTED),
        ),
    ];
    let p = plan(&o, &now());
    assert_eq!(
        p.actions.last(),
        Some(&Action::Costs(vec![
            ("busy".into(), crate::controller::cost::COST_PROTECTED),
            ("was-busy".into(), crate::controller::cost::COST_IDLE)
        ]))
    );
    let s = actor(json!({"spec": {"scaling": probe, "workload": {"type": "StatefulSet"}}}));
    let mut o = obs(&s, &c, vec![], Keda::all());
    o.pods = vec![pod("busy", BusyState::Busy, None)];
    assert!(!plan(&o, &now())
        .actions
        .iter()
        .any(|a| matches!(a, Action::Costs(_))));
}

#[test]
fn the_runtime_configmap_is_written_first_and_a_users_own_is_left_alone() {
    let a = actor(json!({}));
    let c = BuildConfig {
        runtime_hash: Some(build::runtime_hash("x")),
        ..cfg()
    };
    let mut o = obs(&a, &c, vec![], Keda::all());
    o.runtime = Some("x");
    for (cm, first) in [
        (RuntimeCm::Missing, Some(Kind::ConfigMap)),
        (RuntimeCm::Outdated, Some(Kind::ConfigMap)),
        (RuntimeCm::Current, Some(Kind::Deployment)),
        (RuntimeCm::Foreign, Some(Kind::Deployment)),
    ] {
        o.configmap = cm;
        let p = plan(&o, &now());
        assert_eq!(p.actions.first().and_then(Action::kind), first, "{cm:?}");
        assert_eq!(cond(&p, "RuntimeMounted").0, "True");
    }
    let p = plan(&obs(&a, &cfg(), vec![], Keda::all()), &now());
    assert_eq!(cond(&p, "RuntimeMounted"), ("False", "NoRuntimeFile"));
    let d = applied(&p, Kind::Deployment).to_string();
    assert!(
        !d.contains("asya_runtime.py"),
        "no mount without a runtime file"
    );
}

fn kinds() -> impl Strategy<Value = Kind> {
    prop::sample::select(vec![
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::Job,
        Kind::Service,
        Kind::ScaledObject,
        Kind::ScaledJob,
        Kind::TriggerAuthentication,
    ])
}

prop_compose! {
    fn world()(
        wtype in prop::sample::select(vec!["Deployment", "StatefulSet", "Job"]),
        enabled in any::<bool>(),
        sqs in any::<bool>(),
        block in prop::bool::weighted(0.8),
        keda in (any::<bool>(), any::<bool>(), any::<bool>()),
        objs in prop::collection::vec((kinds(), any::<bool>(), any::<bool>()), 0..6),
    ) -> (Value, Keda, Vec<Existing>) {
        let transport = match (sqs, block) {
            (true, true) => json!({"type": "sqs", "sqs": {"region": "eu-west-1"}, "rabbitmq": null}),
            (true, false) => json!({"type": "sqs", "rabbitmq": null}),
            (false, true) => json!({"type": "rabbitmq"}),
            (false, false) => json!({"type": "rabbitmq", "rabbitmq": null}),
        };
        let patch = json!({"spec": {"transport": transport, "scaling": {"enabled": enabled}, "workload": {"type": wtype}}});
        let keda = Keda { scaled_objects: keda.0, scaled_jobs: keda.1, trigger_authentications: keda.2 };
        let mut seen = std::collections::HashSet::new();
        // KEDA objects are only ever observed while their CRD is established.
        let existing = objs.into_iter().filter(|(k, ..)| seen.insert(*k) && keda.has(*k)).map(|(k, owned, deleting)| {
            let mut e = if owned { ours(k) } else { foreign(k) };
            e.deleting = deleting && owned;
            e
        }).collect();
        (patch, keda, existing)
    }
}

proptest! {
    /// The planner's rules (module header), for any world.
    #[test]
    fn rules_hold((patch, keda, existing) in world()) {
        let a = actor(patch);
        let c = cfg();
        let o = obs(&a, &c, existing.clone(), keda);
        let p = plan(&o, &now());
        let get = |k: Kind| existing.iter().find(|e| e.kind == k);
        for act in &p.actions {
            if let Some(k) = act.kind() {
                // Never a write to an object we do not control.
                prop_assert!(get(k).is_none_or(|e| e.owned), "{k:?} is foreign: {:?}", writes(&p));
            }
            if let Action::Delete { kind, uid } = act {
                prop_assert!(get(*kind).is_some_and(|e| e.owned && &e.uid == uid));
            }
            if let Action::Apply { kind, .. } = act {
                if kind.crd().is_some() {
                    prop_assert!(p.keda_drives && keda.has(*kind));
                }
            }
            if let Action::Handover { kind, .. } = act {
                // Only to hand the count to KEDA, and only ahead of our apply without it.
                prop_assert!(p.keda_drives);
                let later = p.actions.iter().skip_while(|x| *x != act).any(|x| matches!(x, Action::Apply { kind: k, body } if k == kind && body["spec"]["replicas"].is_null()));
                prop_assert!(later, "{:?}", writes(&p));
            }
        }
        if !p.keda_drives {
            for k in [Kind::ScaledObject, Kind::ScaledJob, Kind::TriggerAuthentication] {
                if get(k).is_some_and(|e| e.owned && !e.deleting) {
                    prop_assert!(p.actions.iter().any(|a| matches!(a, Action::Delete { kind, .. } if *kind == k)), "{k:?} of ours kept");
                }
            }
        }
        let workload_applies: Vec<&Value> = p.actions.iter().filter_map(|a| match a {
            Action::Apply { kind: Kind::Deployment | Kind::StatefulSet | Kind::Job, body } => Some(body),
            _ => None,
        }).collect();
        prop_assert!(workload_applies.len() <= 1);
        for b in workload_applies {
            if b["kind"] != "Job" {
                prop_assert_eq!(b["spec"]["replicas"].is_null(), p.keda_drives);
            }
        }
        let foreign_workload = get(Kind::of(a.spec.workload.type_)).is_some_and(|e| !e.owned);
        if foreign_workload {
            let only_keda_deletes = p.actions.iter().all(|a| matches!(a, Action::Delete { kind, .. } if kind.crd().is_some()));
            prop_assert!(only_keda_deletes, "{:?}", writes(&p));
        }
    }
}
