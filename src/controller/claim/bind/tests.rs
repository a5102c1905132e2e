use super::*;
use proptest::prelude::*;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

fn pod(i: usize) -> PodFacts {
    PodFacts {
        name: format!("p{i}"),
        uid: format!("pod-{i}"),
        resource_version: "1".into(),
        node: Some(format!("n{}", i % 2)),
        ip: Some(format!("10.0.0.{i}")),
        created: i as i64,
        running: true,
        ready: true,
        terminating: false,
        busy: false,
        claim: None,
        release: ReleasePolicy::Delete,
        finished: false,
        job: None,
    }
}

fn claim(i: usize, created: i64) -> ClaimFacts {
    ClaimFacts {
        name: format!("c{i}"),
        uid: format!("claim-{i}"),
        created: t(created),
        seen: i as u64,
        problem: None,
        wait_seconds: 30,
        ttl_seconds: None,
        release: ReleasePolicy::Delete,
        phase: ClaimPhase::Pending,
        reason: None,
        bound_pod: None,
        bound_at: None,
    }
}

fn world(pods: Vec<PodFacts>, claims: Vec<ClaimFacts>) -> World {
    let live_claims = claims.iter().map(|c| c.uid.clone()).collect();
    World {
        namespace: "ns".into(),
        pool_name: "pool".into(),
        pool: PoolState::Ready {
            kind: PoolKind::HotStandbyDeployment,
            at_max: false,
            max_replicas: 10,
        },
        pods,
        claims,
        in_flight: vec![],
        live_claims,
    }
}

fn binds(p: &Plan) -> Vec<(usize, usize)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Bind { claim, pod } => Some((*claim, *pod)),
            _ => None,
        })
        .collect()
}

fn verdicts(p: &Plan) -> Vec<(usize, &Verdict)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Status { claim, verdict } => Some((*claim, verdict)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_idle_ready_pod_is_bound_spread_across_nodes_then_oldest() {
    // p0 (n0, oldest), p1 (n1), p2 (n0); p0 already claimed → n0 has one claim.
    let mut pods = vec![pod(0), pod(1), pod(2)];
    pods[0].claim = Some(("ns/old".into(), "claim-old".into()));
    let mut w = world(pods, vec![claim(1, 0), claim(2, 0)]);
    w.live_claims.insert("claim-old".into());
    let p = plan(&w, t(1));
    // c1 goes to n1 (fewest claims), c2 then to p2 (n0 and n1 both have one; p2 is the only one left).
    assert_eq!(binds(&p), vec![(0, 1), (1, 2)]);
    assert_eq!(p.counts.claimed, 3, "two new and the old one");
    assert_eq!(p.counts.pending, 0);
}

#[test]
fn busy_unready_terminating_finished_or_claimed_pods_are_never_chosen() {
    let mut pods: Vec<PodFacts> = (0..6).map(pod).collect();
    pods[0].busy = true;
    pods[1].ready = false;
    pods[2].running = false;
    pods[3].terminating = true;
    pods[4].finished = true;
    pods[5].claim = Some(("ns/x".into(), "claim-x".into()));
    let mut w = world(pods, vec![claim(1, 0)]);
    w.live_claims.insert("claim-x".into());
    let p = plan(&w, t(1));
    assert!(binds(&p).is_empty());
    assert_eq!(p.counts.pending, 1);
    match verdicts(&p).as_slice() {
        [(0, Verdict::Waiting { reason, message })] => {
            assert_eq!(*reason, reason::WAITING);
            assert!(message.contains("scaling up"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.wake_at, Some(t(30)), "woken when the wait runs out");
}

#[test]
fn past_wait_seconds_the_claim_fails_pool_exhausted_and_the_pool_counts_it() {
    let mut w = world(vec![], vec![claim(1, 0)]);
    w.pool = PoolState::Ready {
        kind: PoolKind::HotStandbyDeployment,
        at_max: true,
        max_replicas: 3,
    };
    let p = plan(&w, t(30));
    match verdicts(&p).as_slice() {
        [(0, Verdict::Failed { reason, message })] => {
            assert_eq!(*reason, reason::POOL_EXHAUSTED);
            assert!(message.contains("maxReplicas (3)"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.counts.exhausted, 1);
}

#[test]
fn a_missing_pool_waits_with_pool_not_found_then_fails() {
    let mut w = world(vec![pod(0)], vec![claim(1, 0)]);
    w.pool = PoolState::NotFound;
    let p = plan(&w, t(5));
    assert!(binds(&p).is_empty(), "no pod of a pool that is not there");
    assert!(matches!(
        verdicts(&p).as_slice(),
        [(0, Verdict::Waiting { reason, .. })] if *reason == reason::POOL_NOT_FOUND
    ));
    // Already said: not written again.
    w.claims[0].reason = Some(reason::POOL_NOT_FOUND.into());
    assert!(verdicts(&plan(&w, t(6))).is_empty());
    assert!(matches!(
        verdicts(&plan(&w, t(31))).as_slice(),
        [(0, Verdict::Failed { reason, .. })] if *reason == reason::POOL_NOT_FOUND
    ));
}

#[test]
fn an_invalid_claim_fails_at_once_and_touches_no_pod() {
    let mut c = claim(1, 0);
    c.problem = Some("spec.parameters is 20000 bytes".into());
    let p = plan(&world(vec![pod(0)], vec![c]), t(1));
    assert!(binds(&p).is_empty());
    assert!(matches!(
        verdicts(&p).as_slice(),
        [(0, Verdict::Failed { reason, .. })] if *reason == reason::INVALID_SPEC
    ));
    assert!(!p
        .actions
        .iter()
        .any(|a| matches!(a, Action::Release { .. })));
}

#[test]
fn a_pod_of_a_deleted_claim_is_released_by_its_policy() {
    let mut pods = vec![pod(0), pod(1)];
    pods[0].claim = Some(("ns/gone".into(), "claim-gone".into()));
    pods[1].claim = Some(("ns/gone2".into(), "claim-gone2".into()));
    pods[1].release = ReleasePolicy::Recycle;
    let p = plan(&world(pods, vec![]), t(1));
    assert_eq!(
        p.actions,
        vec![
            Action::Release {
                pod: 0,
                how: Release::DeletePod
            },
            Action::Release {
                pod: 1,
                how: Release::Recycle
            }
        ]
    );
}

#[test]
fn a_hsj_unit_is_released_by_deleting_its_job() {
    let mut pods = vec![pod(0)];
    pods[0].claim = Some(("ns/gone".into(), "claim-gone".into()));
    pods[0].job = Some(("unit-0".into(), "job-0".into()));
    let mut w = world(pods, vec![]);
    w.pool = PoolState::Ready {
        kind: PoolKind::HotStandbyJob,
        at_max: false,
        max_replicas: 5,
    };
    assert_eq!(
        plan(&w, t(1)).actions,
        vec![Action::Release {
            pod: 0,
            how: Release::DeleteJob
        }]
    );
}

#[test]
fn ttl_releases_the_pod_and_ends_the_claim() {
    let mut pods = vec![pod(0)];
    pods[0].claim = Some(("ns/c1".into(), "claim-1".into()));
    pods[0].busy = true;
    let mut c = claim(1, 0);
    c.phase = ClaimPhase::Bound;
    c.bound_at = Some(t(1));
    c.ttl_seconds = Some(10);
    c.release = ReleasePolicy::Recycle;
    let w = world(pods, vec![c]);
    let early = plan(&w, t(5));
    assert!(early.actions.is_empty());
    assert_eq!(early.wake_at, Some(t(11)));
    assert_eq!(early.counts.claimed, 1);
    let late = plan(&w, t(11));
    assert!(matches!(
        verdicts(&late).as_slice(),
        [(0, Verdict::Released { reason, .. })] if *reason == reason::TTL_EXPIRED
    ));
    assert!(late.actions.contains(&Action::Release {
        pod: 0,
        how: Release::Recycle
    }));
}

#[test]
fn a_bound_claim_whose_pod_is_gone_fails_pod_lost() {
    let mut c = claim(1, 0);
    c.phase = ClaimPhase::Bound;
    c.bound_pod = Some("pod-9".into());
    let p = plan(&world(vec![pod(0)], vec![c]), t(1));
    assert!(matches!(
        verdicts(&p).as_slice(),
        [(0, Verdict::Failed { reason, .. })] if *reason == reason::POD_LOST
    ));
    assert!(binds(&p).is_empty(), "a lost claim is not bound again");
}

#[test]
fn a_hsj_claim_ends_when_its_job_finishes() {
    let mut pods = vec![pod(0)];
    pods[0].claim = Some(("ns/c1".into(), "claim-1".into()));
    pods[0].finished = true;
    pods[0].job = Some(("unit-0".into(), "job-0".into()));
    let mut c = claim(1, 0);
    c.phase = ClaimPhase::Bound;
    let mut w = world(pods, vec![c]);
    w.pool = PoolState::Ready {
        kind: PoolKind::HotStandbyJob,
        at_max: false,
        max_replicas: 5,
    };
    let p = plan(&w, t(1));
    assert!(matches!(
        verdicts(&p).as_slice(),
        [(0, Verdict::Released { reason, .. })] if *reason == reason::JOB_FINISHED
    ));
}

#[test]
fn a_pending_claim_already_on_a_pod_is_finished_not_bound_again() {
    let mut pods = vec![pod(0), pod(1)];
    pods[0].claim = Some(("ns/c1".into(), "claim-1".into()));
    let p = plan(&world(pods, vec![claim(1, 0)]), t(1));
    assert!(binds(&p).is_empty());
    assert_eq!(verdicts(&p), vec![(0, &Verdict::Bound { pod: 0 })]);
}

#[test]
fn a_binding_in_flight_reserves_its_pod_and_its_claim() {
    let mut w = world(vec![pod(0), pod(1)], vec![claim(1, 0), claim(2, 0)]);
    w.in_flight = vec![InFlight {
        claim_uid: "claim-1".into(),
        pod_uid: "pod-0".into(),
    }];
    let p = plan(&w, t(1));
    assert_eq!(
        binds(&p),
        vec![(1, 1)],
        "c1 is in flight; c2 gets the other pod"
    );
    assert!(verdicts(&p).is_empty(), "c1's own write is in flight");
}

fn arb_pod(i: usize) -> impl Strategy<Value = PodFacts> {
    (
        any::<[bool; 6]>(),
        0..3usize,
        0..4usize,
        prop::option::of(0..4usize),
    )
        .prop_map(move |(f, node, age, claim)| {
            let mut p = pod(i);
            p.running = f[0] || f[5];
            p.ready = f[1] || f[5];
            p.terminating = f[2] && !f[5];
            p.busy = f[3] && !f[5];
            p.finished = f[4] && !f[5];
            p.node = Some(format!("n{node}"));
            p.created = age as i64;
            p.claim = claim.map(|c| (format!("ns/c{c}"), format!("claim-{c}")));
            p
        })
}

fn arb_world() -> impl Strategy<Value = World> {
    let pods = (0..8usize).prop_flat_map(|n| (0..n).map(arb_pod).collect::<Vec<_>>());
    let claims = prop::collection::vec((0..3i64, any::<bool>()), 0..8).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (created, bound))| {
                let mut c = claim(i, created);
                if bound {
                    c.phase = ClaimPhase::Bound;
                }
                c
            })
            .collect::<Vec<_>>()
    });
    (
        pods,
        claims,
        prop::collection::vec((0..8usize, 0..8usize), 0..3),
    )
        .prop_map(|(pods, claims, flights)| {
            let mut w = world(pods, claims);
            w.in_flight = flights
                .into_iter()
                .map(|(c, p)| InFlight {
                    claim_uid: format!("claim-{c}"),
                    pod_uid: format!("pod-{p}"),
                })
                .collect();
            w
        })
}

proptest! {
    /// No pod is chosen twice, never an ineligible or reserved one, no claim that owns a
    /// pod gets another, and FIFO holds: a bound claim is never later than one left waiting.
    #[test]
    fn binding_rules_hold(w in arb_world(), at in 0..40i64) {
        let p = plan(&w, t(at));
        let b = binds(&p);
        let mut pods_seen = HashSet::new();
        let mut claims_seen = HashSet::new();
        for (c, pi) in &b {
            prop_assert!(pods_seen.insert(*pi), "pod {} chosen twice", pi);
            prop_assert!(claims_seen.insert(*c), "claim {} bound twice", c);
            let pod = &w.pods[*pi];
            prop_assert!(pod.running && pod.ready && !pod.terminating && !pod.busy && !pod.finished);
            prop_assert!(pod.claim.is_none());
            prop_assert!(!w.in_flight.iter().any(|f| f.pod_uid == pod.uid));
            let claim = &w.claims[*c];
            prop_assert_eq!(claim.phase, ClaimPhase::Pending);
            prop_assert!(!w.pods.iter().any(|x| x.claim.as_ref().map(|k| &k.1) == Some(&claim.uid)));
            prop_assert!(!w.in_flight.iter().any(|f| f.claim_uid == claim.uid && w.pods.iter().any(|x| x.uid == f.pod_uid)));
        }
        // FIFO: every claim left waiting (or failed) is not earlier than any bound one.
        let key = |i: usize| { let c = &w.claims[i]; (c.created, c.seen, c.name.clone()) };
        let left: Vec<usize> = verdicts(&p).iter().filter_map(|(c, v)| matches!(v, Verdict::Waiting { .. } | Verdict::Failed { reason: reason::POOL_EXHAUSTED, .. }).then_some(*c)).collect();
        for (c, _) in &b {
            for l in &left {
                prop_assert!(key(*c) < key(*l), "claim {} bound before earlier {}", c, l);
            }
        }
    }
}
