use super::*;
use proptest::prelude::*;

fn pod(name: &str, created: i64) -> PodInfo {
    PodInfo {
        name: name.into(),
        uid: format!("uid-{name}"),
        created,
        gated: true,
        released: false,
        ready_condition: false,
        terminating: false,
        failed: None,
        agent_error: None,
        node: Some("n1".into()),
        replicaset: None,
        epoch: None,
        started: false,
        revision: None,
    }
}

fn released(mut p: PodInfo) -> PodInfo {
    p.released = true;
    p.ready_condition = true;
    p
}

fn ready_nodes() -> BTreeMap<String, NodeState> {
    BTreeMap::from([
        ("n1".to_string(), NodeState::Ready),
        ("n2".to_string(), NodeState::Ready),
    ])
}

fn run(pods: &[PodInfo], memory: &Memory, nodes: &BTreeMap<String, NodeState>, now: i64) -> Plan {
    plan(&Observed {
        pods,
        replicasets: &[],
        nodes,
        memory,
        now,
        max_transition_seconds: 300,
    })
}

#[test]
fn the_first_pod_is_released_at_once() {
    let p = run(&[pod("a", 1)], &Memory::default(), &ready_nodes(), 10);
    assert_eq!(
        p.actions,
        vec![Action::Release {
            name: "a".into(),
            uid: "uid-a".into()
        }]
    );
    assert_eq!(p.phase, Phase::Running);
    assert_eq!(p.memory.active_uid.as_deref(), Some("uid-a"));
    assert_eq!(p.memory.active_node.as_deref(), Some("n1"));
}

#[test]
fn a_successor_waits_while_the_old_pod_is_terminating() {
    let mut old = released(pod("old", 1));
    old.terminating = true;
    let p = run(
        &[old, pod("new", 2)],
        &Memory::default(),
        &ready_nodes(),
        10,
    );
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.phase, Phase::Transitioning);
    assert_eq!(p.memory.transition_since, Some(10));
    // gone: released
    let mem = p.memory.clone();
    let p = run(&[pod("new", 2)], &mem, &ready_nodes(), 12);
    assert_eq!(
        p.actions,
        vec![Action::Release {
            name: "new".into(),
            uid: "uid-new".into()
        }]
    );
    assert_eq!(p.memory.transition_since, None);
}

#[test]
fn an_ungated_newcomer_is_deleted_when_another_instance_runs() {
    let mut intruder = pod("intruder", 5);
    intruder.gated = false;
    let p = run(
        &[released(pod("a", 1)), intruder],
        &Memory::default(),
        &ready_nodes(),
        10,
    );
    assert_eq!(
        p.actions,
        vec![Action::Delete {
            name: "intruder".into(),
            uid: "uid-intruder".into(),
            reason: DeleteReason::UngatedDuplicate
        }]
    );
    // An ungated pod alone is the active instance; a gated newcomer waits for it.
    let mut solo = pod("solo", 1);
    solo.gated = false;
    let p = run(
        &[solo, pod("next", 2)],
        &Memory::default(),
        &ready_nodes(),
        10,
    );
    assert!(p.actions.is_empty());
    assert_eq!(p.memory.active_pod.as_deref(), Some("solo"));
}

#[test]
fn a_failed_old_pod_is_deleted_and_the_successor_released_only_after_it_is_gone() {
    let mut old = released(pod("old", 1));
    old.failed = Some("CrashLoopBackOff".into());
    let p = run(
        &[old.clone(), pod("new", 2)],
        &Memory::default(),
        &ready_nodes(),
        10,
    );
    assert_eq!(
        p.actions,
        vec![Action::Delete {
            name: "old".into(),
            uid: "uid-old".into(),
            reason: DeleteReason::FailedOldPod
        }]
    );
    old.terminating = true;
    assert!(run(&[old, pod("new", 2)], &p.memory, &ready_nodes(), 11)
        .actions
        .is_empty());
    // A failed pod with no successor is left to its kubelet.
    let mut lone = released(pod("lone", 1));
    lone.failed = Some("restarts=4".into());
    assert!(run(&[lone], &Memory::default(), &ready_nodes(), 10)
        .actions
        .is_empty());
}

/// A surge rollout: the released old pod and the new one, each of its ReplicaSet of one
/// Deployment.
fn surge() -> (PodInfo, PodInfo, [RsInfo; 2]) {
    let mut old = released(pod("old", 1));
    old.replicaset = Some("rs-old".into());
    let mut new = pod("new", 2);
    new.replicaset = Some("rs-new".into());
    let rs = |name: &str| RsInfo {
        name: name.into(),
        replicas: 1,
        deployment: Some("d".into()),
    };
    (old, new, [rs("rs-old"), rs("rs-new")])
}

#[test]
fn surge_rollout_scales_the_old_replicaset_to_zero() {
    let (old, new, rss) = surge();
    let nodes = ready_nodes();
    let p = plan(&Observed {
        pods: &[old.clone(), new.clone()],
        replicasets: &rss,
        nodes: &nodes,
        memory: &Memory::default(),
        now: 0,
        max_transition_seconds: 300,
    });
    assert_eq!(
        p.actions,
        vec![Action::ScaleToZero {
            replicaset: "rs-old".into()
        }]
    );
    // Already at zero: nothing more.
    let rss0 = [
        RsInfo {
            replicas: 0,
            ..rss[0].clone()
        },
        rss[1].clone(),
    ];
    let p = plan(&Observed {
        pods: &[old, new],
        replicasets: &rss0,
        nodes: &nodes,
        memory: &Memory::default(),
        now: 0,
        max_transition_seconds: 300,
    });
    assert!(p.actions.is_empty());
}

#[test]
fn force_deleted_pod_on_a_lost_node_blocks_until_the_node_is_resolved() {
    let mem = Memory {
        active_pod: Some("old".into()),
        active_uid: Some("uid-old".into()),
        active_node: Some("n1".into()),
        ..Default::default()
    };
    let mut nodes = ready_nodes();
    nodes.insert("n1".into(), NodeState::NotReady);
    let p = run(&[pod("new", 2)], &mem, &nodes, 10);
    assert!(p.actions.is_empty());
    assert_eq!(
        (p.phase, p.node_lost.as_deref()),
        (Phase::Blocked, Some("n1"))
    );
    for resolved in [Some(NodeState::Ready), Some(NodeState::OutOfService), None] {
        let mut nodes = ready_nodes();
        match resolved {
            Some(s) => {
                nodes.insert("n1".into(), s);
            }
            None => {
                nodes.remove("n1");
            }
        }
        let p = run(&[pod("new", 2)], &mem, &nodes, 11);
        assert_eq!(
            p.actions,
            vec![Action::Release {
                name: "new".into(),
                uid: "uid-new".into()
            }],
            "{resolved:?}"
        );
    }
}

#[test]
fn max_transition_time_is_reported_once_and_waiting_goes_on() {
    let old = released(pod("old", 1));
    let p1 = run(
        &[old.clone(), pod("new", 2)],
        &Memory::default(),
        &ready_nodes(),
        0,
    );
    let p2 = run(
        &[old.clone(), pod("new", 2)],
        &p1.memory,
        &ready_nodes(),
        301,
    );
    assert!(p2.timed_out && p2.newly_timed_out);
    assert!(p2.actions.is_empty(), "never forces anything");
    let p3 = run(&[old, pod("new", 2)], &p2.memory, &ready_nodes(), 400);
    assert!(p3.timed_out && !p3.newly_timed_out);
    // Once the old pod is gone, the successor is released: nothing stalls.
    let p4 = run(&[pod("new", 2)], &p3.memory, &ready_nodes(), 401);
    assert_eq!(
        p4.actions,
        vec![Action::Release {
            name: "new".into(),
            uid: "uid-new".into()
        }]
    );
}

#[test]
fn an_interrupted_release_is_completed() {
    let mut a = pod("a", 1);
    a.released = true;
    let p = run(&[a], &Memory::default(), &ready_nodes(), 1);
    assert_eq!(
        p.actions,
        vec![Action::MarkReady {
            name: "a".into(),
            uid: "uid-a".into()
        }]
    );
}

#[test]
fn only_one_of_several_candidates_is_released() {
    let p = run(
        &[pod("a", 1), pod("b", 2)],
        &Memory::default(),
        &ready_nodes(),
        1,
    );
    assert_eq!(
        p.actions,
        vec![Action::Release {
            name: "b".into(),
            uid: "uid-b".into()
        }]
    );
    assert_eq!(p.extra_candidates, 1);
}

// ---- Interleavings ----------------------------------------------------------------

#[derive(Clone, Debug)]
enum Ev {
    CreateGated {
        node: u8,
        rs: u8,
    },
    CreateUngated {
        node: u8,
    },
    StartDelete(usize),
    FinishDelete(usize),
    ForceDelete(usize),
    Fail(usize),
    NodeNotReady(u8),
    NodeReady(u8),
    NodeOutOfService(u8),
    /// The controller acts. It writes the status (its memory) first, then the actions;
    /// `complete: false` models a crash between the two.
    Step {
        complete: bool,
    },
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        3 => (0..2u8, 0..2u8).prop_map(|(node, rs)| Ev::CreateGated { node, rs }),
        1 => (0..2u8).prop_map(|node| Ev::CreateUngated { node }),
        2 => (0..6usize).prop_map(Ev::StartDelete),
        2 => (0..6usize).prop_map(Ev::FinishDelete),
        1 => (0..6usize).prop_map(Ev::ForceDelete),
        1 => (0..6usize).prop_map(Ev::Fail),
        1 => (0..2u8).prop_map(Ev::NodeNotReady),
        1 => (0..2u8).prop_map(Ev::NodeReady),
        1 => (0..2u8).prop_map(Ev::NodeOutOfService),
        6 => any::<bool>().prop_map(|complete| Ev::Step { complete }),
    ]
}

struct World {
    pods: Vec<PodInfo>,
    nodes: BTreeMap<String, NodeState>,
    /// Instances force-deleted from a NotReady node: their containers may still run there.
    ghosts: Vec<String>,
    memory: Memory,
    next: i64,
    ungated_created: bool,
}

fn node(n: u8) -> String {
    format!("n{n}")
}

impl World {
    fn new() -> Self {
        World {
            pods: vec![],
            nodes: BTreeMap::from([(node(0), NodeState::Ready), (node(1), NodeState::Ready)]),
            ghosts: vec![],
            memory: Memory::default(),
            next: 0,
            ungated_created: false,
        }
    }

    fn running_instances(&self) -> usize {
        self.pods.iter().filter(|p| p.is_instance()).count() + self.ghosts.len()
    }

    fn apply(&mut self, e: &Ev) -> Result<(), TestCaseError> {
        match e {
            Ev::CreateGated { node: n, rs } => {
                self.next += 1;
                let mut p = pod(&format!("p{}", self.next), self.next);
                p.node = Some(node(*n));
                p.replicaset = Some(format!("rs{rs}"));
                self.pods.push(p);
            }
            Ev::CreateUngated { node: n } => {
                self.next += 1;
                let mut p = pod(&format!("p{}", self.next), self.next);
                p.gated = false;
                p.node = Some(node(*n));
                self.pods.push(p);
                self.ungated_created = true;
            }
            Ev::StartDelete(i) => {
                if let Some(p) = self.pods.get_mut(*i) {
                    p.terminating = true;
                }
            }
            Ev::FinishDelete(i) => {
                // A graceful delete completes only when the kubelet confirms: node Ready.
                if let Some(p) = self.pods.get(*i) {
                    let node_ready = p
                        .node
                        .as_ref()
                        .is_none_or(|n| self.nodes.get(n) == Some(&NodeState::Ready));
                    if p.terminating && node_ready {
                        self.pods.remove(*i);
                    }
                }
            }
            Ev::ForceDelete(i) => {
                if *i < self.pods.len() {
                    let p = self.pods.remove(*i);
                    if p.is_instance() {
                        if let Some(n) = &p.node {
                            if self.nodes.get(n) == Some(&NodeState::NotReady) {
                                self.ghosts.push(n.clone());
                            }
                        }
                    }
                }
            }
            Ev::Fail(i) => {
                if let Some(p) = self.pods.get_mut(*i) {
                    p.failed = Some("CrashLoopBackOff".into());
                }
            }
            Ev::NodeNotReady(n) => {
                self.nodes.insert(node(*n), NodeState::NotReady);
            }
            Ev::NodeReady(n) | Ev::NodeOutOfService(n) => {
                let state = if matches!(e, Ev::NodeReady(_)) {
                    NodeState::Ready
                } else {
                    NodeState::OutOfService
                };
                self.nodes.insert(node(*n), state);
                self.ghosts.retain(|g| g != &node(*n)); // kubelet back (kills them) or node fenced
            }
            Ev::Step { complete } => {
                let rss: Vec<RsInfo> = (0..2)
                    .map(|i| RsInfo {
                        name: format!("rs{i}"),
                        replicas: 1,
                        deployment: Some("d".into()),
                    })
                    .collect();
                let p = plan(&Observed {
                    pods: &self.pods,
                    replicasets: &rss,
                    nodes: &self.nodes,
                    memory: &self.memory,
                    now: self.next,
                    max_transition_seconds: 5,
                });
                for cm in [false, true] {
                    let order = steps(cm, &p);
                    prop_assert!(status_first(&order), "{:?}", order);
                }
                self.memory = p.memory.clone();
                let actions = if *complete { p.actions.clone() } else { vec![] };
                for a in &actions {
                    match a {
                        Action::Release { uid, .. } => {
                            let others = self
                                .pods
                                .iter()
                                .filter(|x| x.is_instance() && &x.uid != uid)
                                .count();
                            prop_assert_eq!(
                                others,
                                0,
                                "released {} while another instance is present: {:?}",
                                uid,
                                self.pods
                            );
                            // An ungated pod created and force-deleted between two looks is never seen,
                            // so it can only be fenced when the webhook was up (every instance ours).
                            if !self.ungated_created {
                                prop_assert!(self.ghosts.is_empty(), "released {} while a force-deleted instance may still run on {:?}", uid, self.ghosts);
                            }
                            let target = self.pods.iter_mut().find(|x| &x.uid == uid);
                            prop_assert!(target.is_some());
                            if let Some(t) = target {
                                prop_assert!(t.is_candidate());
                                t.released = true;
                                t.ready_condition = true;
                            }
                        }
                        Action::MarkReady { uid, .. } => {
                            if let Some(t) = self.pods.iter_mut().find(|x| &x.uid == uid) {
                                t.ready_condition = true;
                            }
                        }
                        Action::Delete { uid, .. } => {
                            if let Some(t) = self.pods.iter_mut().find(|x| &x.uid == uid) {
                                t.terminating = true;
                            }
                        }
                        Action::ScaleToZero { replicaset } => {
                            for t in self
                                .pods
                                .iter_mut()
                                .filter(|x| x.replicaset.as_ref() == Some(replicaset))
                            {
                                t.terminating = true;
                            }
                        }
                    }
                }
            }
        }
        self.next += 1;
        if !self.ungated_created {
            // With the webhook up, never two pods that may run the app.
            prop_assert!(
                self.running_instances() <= 1,
                "two copies may run: pods={:?} ghosts={:?}",
                self.pods,
                self.ghosts
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn never_two_released_or_ungated_pods(events in proptest::collection::vec(ev(), 1..80)) {
        let mut w = World::new();
        for e in &events {
            w.apply(e)?;
        }
    }

    #[test]
    fn progress_once_the_old_pod_is_gone(events in proptest::collection::vec(ev(), 1..40)) {
        // Whatever happened, once every pod but one gated candidate is gone and all nodes
        // are Ready, the next step releases it (nothing stalls, even after a timeout).
        let mut w = World::new();
        for e in &events {
            w.apply(e)?;
        }
        w.pods.clear();
        for n in 0..2 { w.apply(&Ev::NodeReady(n))?; }
        w.apply(&Ev::CreateGated { node: 0, rs: 0 })?;
        w.apply(&Ev::Step { complete: true })?;
        prop_assert!(w.pods[0].released, "not released: memory={:?}", w.memory);
    }
}

#[test]
fn failing_agents_give_the_condition_and_one_event_per_pod_and_message() {
    let mut a = pod("a", 1);
    a.agent_error = Some("CA bundle holds no certificate".into());
    let mut b = pod("b", 2);
    b.agent_error = Some("timed out".into());
    let ok = pod("c", 3);
    let r = agents(&[a.clone(), b.clone(), ok.clone()], &Default::default());
    assert_eq!(
        r.failing.iter().map(|p| p.pod.as_str()).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert_eq!(r.warn, r.failing, "first sight: one event each");
    // The same errors again: no new event.
    let again = agents(&[a.clone(), b.clone(), ok.clone()], &r.reported);
    assert_eq!(again.failing.len(), 2);
    assert!(again.warn.is_empty(), "{:?}", again.warn);
    // A new message for b: one event for b only.
    b.agent_error = Some("connection refused".into());
    let changed = agents(&[a.clone(), b.clone()], &again.reported);
    assert_eq!(changed.warn.len(), 1);
    assert_eq!(changed.warn[0].pod, "b");
    assert_eq!(changed.warn[0].message, "connection refused");
    // Pods that are gone are forgotten; healthy pods give no condition.
    let healthy = agents(std::slice::from_ref(&ok), &changed.reported);
    assert!(healthy.failing.is_empty() && healthy.warn.is_empty());
    assert!(healthy.reported.is_empty());
    // A terminating pod's agent is not reported.
    let mut t = a.clone();
    t.terminating = true;
    assert!(agents(&[t], &Default::default()).failing.is_empty());
}

/// The status step comes before every handover action (and the ConfigMap, if any, first).
fn status_first(steps: &[Step]) -> bool {
    let status = steps.iter().position(|s| *s == Step::Status);
    let first_action = steps
        .iter()
        .position(|s| matches!(s, Step::Handover(_)))
        .unwrap_or(steps.len());
    let configmap_first = steps
        .iter()
        .position(|s| *s == Step::ConfigMap)
        .is_none_or(|i| i == 0);
    status.is_some_and(|i| i < first_action) && configmap_first
}

#[test]
fn the_status_write_precedes_every_release_delete_and_scale() {
    let (old, new, rss) = surge();
    let mut ungated = pod("x", 3);
    ungated.gated = false;
    let mut failed = released(pod("f", 1));
    failed.failed = Some("CrashLoopBackOff".into());
    let mut half = released(pod("h", 1));
    half.ready_condition = false;
    let nodes = ready_nodes();
    let memory = Memory::default();
    let table: [(&str, Vec<PodInfo>); 5] = [
        ("release", vec![pod("a", 1)]),
        ("ungated duplicate", vec![released(pod("a", 1)), ungated]),
        ("failed old pod", vec![failed, pod("b", 2)]),
        ("surge rollout", vec![old, new]),
        ("interrupted release", vec![half]),
    ];
    for (case, pods) in table {
        let p = plan(&Observed {
            pods: &pods,
            replicasets: &rss,
            nodes: &nodes,
            memory: &memory,
            now: 10,
            max_transition_seconds: 300,
        });
        assert!(!p.actions.is_empty(), "{case}: the case acts");
        for cm in [false, true] {
            let order = steps(cm, &p);
            assert!(status_first(&order), "{case}: {order:?}");
            assert_eq!(order.len(), p.actions.len() + 1 + cm as usize, "{case}");
        }
    }
}

#[test]
fn events_follow_what_took_effect() {
    let p = run(&[pod("a", 1)], &Memory::default(), &ready_nodes(), 10);
    let agents = AgentReport {
        warn: vec![AgentProblem {
            pod: "b".into(),
            uid: "uid-b".into(),
            message: "boom".into(),
        }],
        ..Default::default()
    };
    let before = Memory {
        active_pod: Some("old".into()),
        ..Default::default()
    };
    let notes_for = |outcome: &Outcome| {
        let input = NoteInput {
            plan: &p,
            before: &before,
            node_lost_before: false,
            max_transition_seconds: 300,
            agents: &agents,
            gap: None,
        };
        notes(&input, outcome)
    };
    let done = Outcome {
        done: p.actions.clone(),
        complete: true,
    };
    let reasons = |n: Vec<Note>| {
        n.into_iter()
            .map(|n| (n.reason, n.message))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        reasons(notes_for(&done)),
        [
            (
                "PodTransition".to_string(),
                "released a after old was gone".to_string()
            ),
            (
                "AgentUnreachable".to_string(),
                "pod b: its kube-standby agent cannot get the release: boom".to_string()
            )
        ]
    );
    // The pod was gone: no release Event; a failed write: nothing after the actions done.
    let gone = Outcome {
        done: vec![],
        complete: true,
    };
    assert_eq!(reasons(notes_for(&gone)).len(), 1);
    let failed = Outcome {
        done: vec![],
        complete: false,
    };
    assert!(notes_for(&failed).is_empty());
}

// ---- Fencing epochs ----

#[test]
fn epochs_start_at_one_and_grow_by_one_per_release() {
    let p1 = run(&[pod("a", 1)], &Memory::default(), &ready_nodes(), 10);
    assert_eq!(p1.memory.epoch, 1);
    let mut a = released(pod("a", 1));
    a.epoch = Some(1);
    // Active with a standby: the epoch stays; b is a warm standby once it has started.
    let mut b = pod("b", 2);
    let p2 = run(&[a.clone(), b.clone()], &p1.memory, &ready_nodes(), 11);
    assert!(p2.standby.is_empty(), "not started yet");
    b.started = true;
    let p2 = run(&[a.clone(), b], &p1.memory, &ready_nodes(), 11);
    assert_eq!(p2.memory.epoch, 1);
    assert_eq!(p2.standby, vec!["b".to_string()]);
    // a gone: b gets 2.
    let p3 = run(&[pod("b", 2)], &p2.memory, &ready_nodes(), 12);
    assert_eq!(p3.memory.epoch, 2);
    assert!(
        p3.standby.is_empty(),
        "the pod being released is no standby"
    );
    // Every pod gone: the epoch is remembered; the next release gets 3.
    let p4 = run(&[], &p3.memory, &ready_nodes(), 13);
    assert_eq!(p4.memory.epoch, 2);
    let p5 = run(&[pod("c", 3)], &p4.memory, &ready_nodes(), 14);
    assert_eq!(p5.memory.epoch, 3);
}

#[test]
fn an_interrupted_release_keeps_its_epoch_and_a_lost_status_never_goes_below_a_released_pod() {
    // The status recorded b with epoch 5, the release did not land: b is released with 5.
    let mem = Memory {
        active_pod: Some("b".into()),
        active_uid: Some("uid-b".into()),
        epoch: 5,
        ..Default::default()
    };
    assert_eq!(
        run(&[pod("b", 2)], &mem, &ready_nodes(), 10).memory.epoch,
        5
    );
    // Another pod than the recorded one: one more.
    assert_eq!(
        run(&[pod("c", 2)], &mem, &ready_nodes(), 10).memory.epoch,
        6
    );
    // The status was reset, but a released pod still carries epoch 7: never below it.
    let mut old = released(pod("old", 1));
    old.epoch = Some(7);
    old.terminating = true;
    let p = run(
        &[old.clone(), pod("new", 2)],
        &Memory::default(),
        &ready_nodes(),
        10,
    );
    assert_eq!(p.memory.epoch, 7);
    assert_eq!(
        run(&[pod("new", 2)], &p.memory, &ready_nodes(), 11)
            .memory
            .epoch,
        8
    );
}

#[test]
fn the_failover_event_names_the_gap_and_the_epoch() {
    let p = run(&[pod("b", 2)], &Memory::default(), &ready_nodes(), 10);
    let before = Memory {
        active_pod: Some("a".into()),
        ..Default::default()
    };
    let agents = AgentReport::default();
    let input = NoteInput {
        plan: &p,
        before: &before,
        node_lost_before: false,
        max_transition_seconds: 300,
        agents: &agents,
        gap: Some(HandoverGap {
            detection: Some(std::time::Duration::from_millis(3)),
            release: std::time::Duration::from_micros(12_500),
        }),
    };
    let done = Outcome {
        done: p.actions.clone(),
        complete: true,
    };
    let n = notes(&input, &done);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].reason, "PodTransition");
    assert_eq!(
        n[0].message,
        "released b after a was gone; handover gap 15.5 ms (detection 3.0 ms, release 12.5 ms), epoch 1"
    );
}

#[derive(Clone, Debug)]
enum EpochEv {
    Create,
    /// The pod is gone from the API (deleted, or its delete finished).
    Gone(usize),
    /// A reconcile: 0 its status write fails (nothing written), 1 the status is written
    /// and the process dies before the pod writes, 2 everything is written.
    Step(u8),
    /// The operator restarts or another replica takes the lease: it plans from the status
    /// as stored (this process kept nothing else that matters for epochs).
    NewProcess,
    /// Someone resets the status while the last released pod still exists.
    StatusReset,
}

fn epoch_ev() -> impl Strategy<Value = EpochEv> {
    prop_oneof![
        3 => Just(EpochEv::Create),
        3 => (0..4usize).prop_map(EpochEv::Gone),
        5 => (0..3u8).prop_map(EpochEv::Step),
        1 => Just(EpochEv::NewProcess),
        1 => Just(EpochEv::StatusReset),
    ]
}

/// The epoch model's state: pods, the status in the API, what the acting process plans
/// from, and every (pod UID, epoch) actually handed out, in order.
#[derive(Default)]
struct EpochWorld {
    pods: Vec<PodInfo>,
    stored: Memory,
    process: Memory,
    handed: Vec<(String, u64)>,
    next: i64,
}

impl EpochWorld {
    fn step(&mut self, outcome: u8) -> Result<(), TestCaseError> {
        self.next += 1;
        let p = run(&self.pods, &self.process, &ready_nodes(), self.next);
        let order = steps(false, &p);
        prop_assert!(status_first(&order), "{:?}", order);
        if outcome == 0 {
            return Ok(());
        }
        self.stored = p.memory.clone();
        self.process = self.stored.clone();
        if outcome == 1 {
            return Ok(());
        }
        for a in &p.actions {
            if let Action::Release { uid, .. } = a {
                // The status written before this release names its epoch.
                let epoch = self.stored.epoch;
                prop_assert!(epoch >= 1);
                for (other, before) in &self.handed {
                    prop_assert!(
                        epoch > *before,
                        "{} released with epoch {} after {} had {}",
                        uid,
                        epoch,
                        other,
                        before
                    );
                }
                self.handed.push((uid.clone(), epoch));
                if let Some(t) = self.pods.iter_mut().find(|x| &x.uid == uid) {
                    t.released = true;
                    t.ready_condition = true;
                    t.epoch = Some(epoch);
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the interleaving of releases, failed writes, restarts and leader changes:
    /// every pod actually released gets an epoch higher than every pod released before
    /// it, and the status naming that epoch is written before the release (the first
    /// step).
    #[test]
    fn epochs_strictly_increase(events in proptest::collection::vec(epoch_ev(), 1..60)) {
        let mut w = EpochWorld::default();
        for e in &events {
            match e {
                EpochEv::Create => {
                    w.next += 1;
                    let p = pod(&format!("p{}", w.next), w.next);
                    w.pods.push(p);
                }
                EpochEv::Gone(i) => {
                    if *i < w.pods.len() {
                        w.pods.remove(*i);
                    }
                }
                EpochEv::NewProcess => w.process = w.stored.clone(),
                EpochEv::StatusReset => {
                    // Reset while the last released pod exists; the status change itself
                    // triggers a reconcile, whose status write restores the floor from
                    // that pod's annotation (it dies before any pod write).
                    let last = w.handed.last().map(|(u, _)| u.clone());
                    if last.is_some_and(|u| w.pods.iter().any(|p| p.uid == u)) {
                        w.stored = Memory::default();
                        w.process = w.stored.clone();
                        w.step(1)?;
                    }
                }
                EpochEv::Step(outcome) => w.step(*outcome)?,
            }
        }
    }
}

/// After the active pod of a 2-replica Deployment is deleted, its ReplicaSet makes a
/// replacement at once: the warm standby that has waited is released, not the newcomer.
/// A rollout's new ReplicaSet still wins over an old one's standby.
#[test]
fn the_warm_standby_is_released_before_a_fresh_replacement() {
    let in_rs = |mut p: PodInfo, rs: &str, started: bool| {
        p.replicaset = Some(rs.into());
        p.started = started;
        p
    };
    let standby = in_rs(pod("standby", 5), "rs1", true);
    let fresh = in_rs(pod("fresh", 9), "rs1", false);
    let p = run(
        &[fresh.clone(), standby.clone()],
        &Memory::default(),
        &ready_nodes(),
        10,
    );
    assert_eq!(
        p.actions,
        vec![Action::Release {
            name: "standby".into(),
            uid: "uid-standby".into()
        }]
    );
    assert!(
        p.standby.is_empty(),
        "the replacement has not started: no warm standby yet"
    );
    // Both started: the one that waited longest.
    let fresh_started = in_rs(pod("fresh", 9), "rs1", true);
    let p = run(
        &[fresh_started, standby.clone()],
        &Memory::default(),
        &ready_nodes(),
        10,
    );
    assert_eq!(
        p.actions,
        vec![Action::Release {
            name: "standby".into(),
            uid: "uid-standby".into()
        }]
    );
    // A rollout: the new template's pod, even though the old standby is warm.
    let new_template = in_rs(pod("new", 9), "rs2", false);
    let p = run(
        &[new_template, standby],
        &Memory::default(),
        &ready_nodes(),
        10,
    );
    assert_eq!(
        p.actions,
        vec![Action::Release {
            name: "new".into(),
            uid: "uid-new".into()
        }]
    );
    // StatefulSet pods (no ReplicaSet): a started standby before the pod just recreated.
    let mut warm = pod("db-1", 5);
    warm.started = true;
    let p = run(
        &[pod("db-0", 9), warm],
        &Memory::default(),
        &ready_nodes(),
        10,
    );
    assert_eq!(
        p.actions,
        vec![Action::Release {
            name: "db-1".into(),
            uid: "uid-db-1".into()
        }]
    );
}

// ---- replicas 2: a warm standby is not a handover -----------------------------------

fn in_rs(mut p: PodInfo, rs: &str) -> PodInfo {
    p.replicaset = Some(rs.into());
    p.started = true;
    p
}

fn two_rs(replicas: i32) -> [RsInfo; 2] {
    let rs = |name: &str| RsInfo {
        name: name.into(),
        replicas,
        deployment: Some("d".into()),
    };
    [rs("rs1"), rs("rs2")]
}

fn run_rs(pods: &[PodInfo], rss: &[RsInfo], memory: &Memory, now: i64) -> Plan {
    plan(&Observed {
        pods,
        replicasets: rss,
        nodes: &ready_nodes(),
        memory,
        now,
        max_transition_seconds: 5,
    })
}

/// A Deployment of 2 replicas: the second pod of the active pod's ReplicaSet waits gated
/// as a standby. Nothing is in transition: phase Running, no handover clock, never a
/// timeout however long it waits; the standby is listed.
#[test]
fn a_second_replica_of_the_same_template_is_a_standby_not_a_transition() {
    let active = in_rs(released(pod("a", 1)), "rs1");
    let standby = in_rs(pod("b", 2), "rs1");
    let rss = two_rs(2);
    let mut memory = Memory::default();
    for now in [3, 10, 100, 100_000] {
        let p = run_rs(&[active.clone(), standby.clone()], &rss, &memory, now);
        assert_eq!(p.phase, Phase::Running, "at {now}: {}", p.message);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.memory.transition_since, None);
        assert!(!p.timed_out && !p.newly_timed_out);
        assert_eq!(p.standby, vec!["b".to_string()]);
        assert_eq!(p.memory.active_pod.as_deref(), Some("a"));
        assert!(p.message.contains("standby"), "{}", p.message);
        memory = p.memory;
    }
    // A StatefulSet's pods of one revision: the same.
    let sts = |p: PodInfo, rev: &str| PodInfo {
        revision: Some(format!("StatefulSet/db@{rev}")),
        started: true,
        ..p
    };
    let pods = [
        sts(released(pod("db-0", 1)), "r1"),
        sts(pod("db-1", 2), "r1"),
    ];
    let p = run_rs(&pods, &[], &Memory::default(), 1_000);
    assert_eq!(p.phase, Phase::Running);
    assert_eq!(p.standby, vec!["db-1".to_string()]);
    // Its rollout (a new revision) is a handover, timed as always.
    let pods = [
        sts(released(pod("db-0", 1)), "r1"),
        sts(pod("db-1", 2), "r2"),
    ];
    let p1 = run_rs(&pods, &[], &Memory::default(), 0);
    assert_eq!(p1.phase, Phase::Transitioning);
    let p2 = run_rs(&pods, &[], &p1.memory, 6);
    assert!(p2.timed_out && p2.newly_timed_out);
}

/// A real handover is still one, timed against maxTransitionTime: the active pod
/// terminating or failed with a standby of its own template, or a rollout's new-template
/// pod (with or without an old standby).
#[test]
fn a_real_handover_still_transitions_and_times_out() {
    let active = in_rs(released(pod("a", 1)), "rs1");
    let standby = in_rs(pod("b", 2), "rs1");
    let terminating = PodInfo {
        terminating: true,
        ..active.clone()
    };
    let failed = PodInfo {
        failed: Some("CrashLoopBackOff".into()),
        ..active.clone()
    };
    let rollout_new = in_rs(pod("c", 3), "rs2");
    let cases: Vec<(&str, Vec<PodInfo>, i32)> = vec![
        ("active terminating", vec![terminating, standby.clone()], 2),
        ("active failed", vec![failed, standby.clone()], 2),
        (
            "a rollout with a standby",
            vec![active.clone(), standby.clone(), rollout_new.clone()],
            2,
        ),
        (
            "a one-replica rollout",
            vec![active.clone(), rollout_new],
            1,
        ),
    ];
    for (what, pods, replicas) in cases {
        let rss = two_rs(replicas);
        let p1 = run_rs(&pods, &rss, &Memory::default(), 100);
        assert_eq!(p1.phase, Phase::Transitioning, "{what}: {}", p1.message);
        assert_eq!(p1.memory.transition_since, Some(100), "{what}");
        assert!(!p1.timed_out, "{what}");
        let p2 = run_rs(&pods, &rss, &p1.memory, 106);
        assert!(p2.timed_out && p2.newly_timed_out, "{what}");
        assert_eq!(p2.phase, Phase::Transitioning, "{what}");
    }
    // The rollout still scales the old ReplicaSet (with its standby) to zero.
    let p = run_rs(
        &[active, standby, in_rs(pod("c", 3), "rs2")],
        &two_rs(2),
        &Memory::default(),
        0,
    );
    assert_eq!(
        p.actions,
        vec![Action::ScaleToZero {
            replicaset: "rs1".into()
        }]
    );
}

/// Once a rollout is over (the new pods are active and standby), a timeout it had is
/// cleared: the standby does not inherit the handover clock.
#[test]
fn a_finished_rollout_leaves_no_clock_for_the_standby() {
    let memory = Memory {
        transition_since: Some(0),
        timed_out: true,
        ..Memory::default()
    };
    let p = run_rs(
        &[
            in_rs(released(pod("c", 3)), "rs2"),
            in_rs(pod("d", 4), "rs2"),
        ],
        &two_rs(2),
        &memory,
        50,
    );
    assert_eq!(p.phase, Phase::Running);
    assert_eq!(p.memory.transition_since, None);
    assert!(!p.timed_out && !p.memory.timed_out);
}

/// Bare pods (no controller, no revision): not known to be of one template, so a second
/// one waiting is a handover as before.
#[test]
fn bare_pods_are_not_known_to_share_a_template() {
    assert!(!pod("a", 1).same_template(&pod("b", 2)));
    let a = in_rs(pod("a", 1), "rs1");
    assert!(a.same_template(&in_rs(pod("b", 2), "rs1")));
    assert!(!a.same_template(&in_rs(pod("b", 2), "rs2")));
    assert!(!a.same_template(&pod("b", 2)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever happened before (any interleaving of the world's events), the phase of
    /// each plan follows the standby rule: Transitioning exactly when an instance is
    /// active and its successor is a real handover (active terminating or failed, or a
    /// different template), with the handover clock; a healthy active pod with a
    /// same-template candidate is Running with no clock and no timeout.
    #[test]
    fn a_standby_never_transitions_and_a_real_handover_always_does(
        events in proptest::collection::vec(ev(), 1..60),
        // the second pod of the active pod's ReplicaSet, created at the end
        add_standby in any::<bool>(),
        wait in 0..20i64,
    ) {
        let mut w = World::new();
        for e in &events {
            w.apply(e)?;
        }
        if add_standby {
            if let Some(rs) = w.pods.iter().find(|p| p.is_instance()).and_then(|p| p.replicaset.clone()) {
                let rs_n = if rs == "rs0" { 0 } else { 1 };
                w.apply(&Ev::CreateGated { node: 1, rs: rs_n })?;
            }
        }
        let rss: Vec<RsInfo> = (0..2)
            .map(|i| RsInfo { name: format!("rs{i}"), replicas: 1, deployment: Some("d".into()) })
            .collect();
        let max = 5;
        let mut memory = w.memory.clone();
        for dt in [0, wait] {
            let now = w.next + dt;
            let p = plan(&Observed {
                pods: &w.pods,
                replicasets: &rss,
                nodes: &w.nodes,
                memory: &memory,
                now,
                max_transition_seconds: max,
            });
            let instances: Vec<&PodInfo> = w.pods.iter().filter(|p| p.is_instance()).collect();
            let active = keeper(&instances);
            let next = best_candidate(&w.pods);
            match (active, next) {
                (Some(a), Some(n)) if waits_as_standby(a, n) => {
                    prop_assert_eq!(p.phase, Phase::Running, "{}", p.message);
                    prop_assert_eq!(p.memory.transition_since, None);
                    prop_assert!(!p.timed_out && !p.newly_timed_out);
                }
                (Some(_), Some(_)) => {
                    prop_assert_eq!(p.phase, Phase::Transitioning, "{}", p.message);
                    let since = p.memory.transition_since;
                    prop_assert!(since.is_some());
                    prop_assert_eq!(p.timed_out, now - since.unwrap_or(now) > max);
                }
                _ => prop_assert!(p.phase != Phase::Transitioning, "{}", p.message),
            }
            memory = p.memory.clone();
        }
    }
}
