use super::*;
use crate::api::hsj::{JobBusyProbe, JobTemplate};
use proptest::prelude::*;

fn spec(idle: i32, min: i32, max: i32, delay: i32) -> HotStandbyJobSpec {
    HotStandbyJobSpec {
        idle_target: idle,
        min_replicas: min,
        max_replicas: max,
        scale_down_delay_seconds: delay,
        selector: None,
        job_template: JobTemplate {
            image: Some("busybox".into()),
            ..Default::default()
        },
        busy_probe: JobBusyProbe::default(),
        assignment: Default::default(),
    }
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

fn unit(i: usize, state: BusyState) -> UnitView {
    UnitView {
        core: PodView {
            name: format!("u{i}").into(),
            uid: format!("uid-{i}").into(),
            resource_version: format!("{}", 100 + i).into(),
            created: i as i64,
            running: true,
            ready: true,
            state,
            stale: false,
            reason: String::new().into(),
            cost: None,
            detached: false,
            current: true,
            ip: None,
        },
        finished: None,
        finished_at: None,
        failing: None,
        ever_busy: state == BusyState::Busy,
    }
}

fn units(busy: usize, idle: usize) -> Vec<UnitView> {
    (0..busy)
        .map(|i| unit(i, BusyState::Busy))
        .chain((busy..busy + idle).map(|i| unit(i, BusyState::Idle)))
        .collect()
}

fn observed<'a>(s: &'a HotStandbyJobSpec, u: &'a [UnitView], now: Timestamp) -> Observed<'a> {
    Observed {
        spec: s,
        units: u,
        in_flight: 0,
        pending_since: None,
        failures: Failures::default(),
        now,
    }
}

fn broken_unit(i: usize) -> UnitView {
    let mut u = unit(i, BusyState::Idle);
    u.core.running = false;
    u.core.ready = false;
    u.failing = Some("ImagePullBackOff: Back-off pulling image \"nope\"".into());
    u
}

#[test]
fn empty_pool_creates_idle_target() {
    let s = spec(3, 0, 10, 30);
    let p = plan(&observed(&s, &[], t(0)));
    assert_eq!((p.desired, p.create, p.active), (3, 3, 0));
}

#[test]
fn busy_unit_is_refilled_at_once() {
    let s = spec(2, 0, 10, 30);
    let u = units(1, 1);
    let p = plan(&observed(&s, &u, t(0)));
    assert_eq!((p.busy, p.idle, p.desired, p.create), (1, 1, 3, 1));
}

#[test]
fn finished_units_do_not_count_and_are_refilled() {
    let s = spec(2, 0, 10, 30);
    let mut u = units(1, 2);
    u[0].finished = Some(Finished::Complete);
    u[0].finished_at = Some(t(-1));
    let p = plan(&observed(&s, &u, t(0)));
    assert_eq!(
        (p.busy, p.active, p.completed, p.desired, p.create),
        (0, 2, 1, 2, 0)
    );
    // A busy unit finishing while the other two are idle: the pool stays at idleTarget.
    let mut u = units(1, 1);
    u[0].finished = Some(Finished::Complete);
    let p = plan(&observed(&s, &u, t(0)));
    assert_eq!((p.active, p.create), (1, 1));
    // A busy Job that failed is the workload's failure, not the template's: no backoff.
    let mut u = units(1, 1);
    u[0].finished = Some(Finished::Failed);
    let p = plan(&observed(&s, &u, t(0)));
    assert_eq!((p.failed, p.create, p.failures.consecutive), (1, 1, 0));
}

#[test]
fn in_flight_creations_count() {
    let s = spec(3, 0, 10, 30);
    let u = units(0, 1);
    let mut o = observed(&s, &u, t(0));
    o.in_flight = 2;
    assert_eq!(plan(&o).create, 0);
}

#[test]
fn scale_down_waits_for_the_delay_then_takes_idle_only() {
    let s = spec(1, 0, 10, 30);
    let mut u = units(0, 3);
    u.push(unit(9, BusyState::Busy));
    let p = plan(&observed(&s, &u, t(0)));
    assert_eq!(p.desired, 2);
    assert!(p.victims.is_empty());
    assert_eq!(p.pending_since, Some(t(0)));
    assert_eq!(p.pending_due, Some(t(30)));
    assert_eq!(p.requeue_after, Some(Duration::from_secs(30)));

    let mut o = observed(&s, &u, t(29));
    o.pending_since = Some(t(0));
    assert!(plan(&o).victims.is_empty(), "still inside the delay");
    o.now = t(30);
    let p = plan(&o);
    assert_eq!(p.victims.len(), 2);
    assert!(p.victims.iter().all(|v| v.name != "u9"));
    // Youngest first among equally ready units.
    assert_eq!(p.victims[0].name, "u2");
    assert_eq!(p.pending_since, None);
}

#[test]
fn pending_scale_down_is_forgotten_when_desired_rises() {
    let s = spec(2, 0, 10, 30);
    let u = units(1, 2);
    let mut o = observed(&s, &u, t(10));
    o.pending_since = Some(t(0));
    let p = plan(&o);
    assert_eq!(p.pending_since, None);
    assert!(p.victims.is_empty());
}

#[test]
fn unknown_and_stale_units_are_never_victims() {
    let s = spec(0, 0, 10, 0);
    let mut u = vec![unit(0, BusyState::Unknown), unit(1, BusyState::Idle)];
    u[1].core.stale = true;
    let p = plan(&observed(&s, &u, t(0)));
    assert_eq!(p.desired, 0);
    assert!(p.victims.is_empty(), "{:?}", p.victims);
}

#[test]
fn clamp_holds_and_says_limited() {
    let s = spec(5, 0, 3, 0);
    let u = units(2, 0);
    let p = plan(&observed(&s, &u, t(0)));
    assert_eq!((p.desired, p.limited, p.create), (3, true, 1));
    let s = spec(0, 4, 10, 0);
    let p = plan(&observed(&s, &[], t(0)));
    assert_eq!((p.desired, p.limited, p.create), (4, true, 4));
}

#[test]
fn a_broken_unit_is_replaced_once_then_creation_backs_off() {
    let s = spec(3, 0, 10, 30);
    let u = vec![
        broken_unit(0),
        unit(1, BusyState::Idle),
        unit(2, BusyState::Idle),
    ];
    let p = plan(&observed(&s, &u, t(0)));
    assert_eq!(p.replace.len(), 1);
    assert_eq!(p.replace[0].name, "u0");
    assert_eq!(p.create, 1);
    assert_eq!(p.failures.consecutive, 1);
    assert_eq!(p.failures.last_at, Some(t(0)));
    assert!(p
        .failures
        .last_reason
        .as_deref()
        .unwrap()
        .contains("ImagePullBackOff"));

    // The replacement fails 3 s later: it stays until the 10 s backoff is over.
    let u = vec![
        broken_unit(3),
        unit(1, BusyState::Idle),
        unit(2, BusyState::Idle),
    ];
    let mut o = observed(&s, &u, t(3));
    o.failures = p.failures.clone();
    let p2 = plan(&o);
    assert!(p2.replace.is_empty());
    assert_eq!(p2.create, 0);
    assert_eq!(p2.failures.consecutive, 1);
    // At 10 s it is replaced, and the next window is 20 s.
    o.now = t(10);
    let p3 = plan(&o);
    assert_eq!((p3.replace.len(), p3.create), (1, 1));
    assert_eq!(p3.failures.consecutive, 2);
    assert_eq!(p3.failures.last_at, Some(t(10)));
}

#[test]
fn a_busy_or_stale_failing_unit_is_never_replaced() {
    let s = spec(1, 0, 10, 0);
    let mut a = broken_unit(0);
    a.core.state = BusyState::Busy;
    let mut b = broken_unit(1);
    b.core.stale = true;
    let mut c = broken_unit(2);
    c.ever_busy = true;
    let mut d = broken_unit(3);
    d.core.state = BusyState::Unknown;
    let u = vec![a, b, c, d];
    let p = plan(&observed(&s, &u, t(0)));
    assert!(p.replace.is_empty(), "{:?}", p.replace);
    // As surplus only the idle, current one (u2, whose failure came after it was busy) may go.
    assert_eq!(p.victims.iter().map(|v| v.name).collect::<Vec<_>>(), ["u2"]);
}

#[test]
fn a_broken_unit_waiting_for_the_backoff_wakes_the_reconciler_when_it_ends() {
    let s = spec(1, 0, 10, 30);
    let u = vec![broken_unit(0)];
    let mut o = observed(&s, &u, t(4));
    o.failures = Failures {
        consecutive: 1,
        last_at: Some(t(0)),
        last_reason: Some("ImagePullBackOff".into()),
    };
    let p = plan(&o);
    assert!(p.replace.is_empty() && p.create == 0, "{p:?}");
    assert_eq!(p.backoff_until, Some(t(10)));
    assert_eq!(p.requeue_after, Some(Duration::from_secs(6)));
    // Once it is over, the unit is replaced and one Job created.
    o.now = t(10);
    let p = plan(&o);
    assert_eq!((p.replace.len(), p.create), (1, 1), "{p:?}");
}

#[test]
fn failed_jobs_back_off_creation() {
    let s = spec(2, 0, 10, 0);
    let mut f = unit(0, BusyState::Idle);
    f.finished = Some(Finished::Failed);
    f.finished_at = Some(t(0));
    let u = vec![f];
    let p = plan(&observed(&s, &u, t(1)));
    assert_eq!(p.failures.consecutive, 1);
    assert_eq!(p.create, 0, "inside the 10 s window");
    assert_eq!(p.backoff_until, Some(t(10)));
    assert_eq!(p.requeue_after, Some(Duration::from_secs(9)));
    // The same failure is not counted twice.
    let mut o = observed(&s, &u, t(10));
    o.failures = p.failures.clone();
    let p2 = plan(&o);
    assert_eq!(
        (p2.failures.consecutive, p2.create),
        (1, 1),
        "one at a time"
    );
}

#[test]
fn while_failing_nothing_is_created_while_a_unit_starts() {
    let s = spec(3, 0, 10, 0);
    let mut starting = unit(1, BusyState::Idle);
    starting.core.ready = false;
    let u = vec![starting];
    let mut o = observed(&s, &u, t(100));
    o.failures = Failures {
        consecutive: 1,
        last_at: Some(t(0)),
        last_reason: Some("x".into()),
    };
    assert_eq!(plan(&o).create, 0);
    // Once it runs ready, one more; the failure memory stays until 5 quiet minutes.
    let u = vec![unit(1, BusyState::Idle)];
    o.units = &u;
    let p = plan(&o);
    assert_eq!((p.create, p.failures.consecutive), (1, 1));
    o.now = t(300);
    let p = plan(&o);
    assert_eq!((p.create, p.failures.consecutive), (2, 0));
}

#[test]
fn backoff_doubles_and_caps() {
    assert_eq!(backoff(0), Duration::ZERO);
    assert_eq!(backoff(1), Duration::from_secs(10));
    assert_eq!(backoff(2), Duration::from_secs(20));
    assert_eq!(backoff(5), Duration::from_secs(160));
    assert_eq!(backoff(6), BACKOFF_CAP);
    assert_eq!(backoff(i32::MAX), BACKOFF_CAP);
}

#[test]
fn validate_names_each_problem() {
    let mut s = spec(1, 5, 2, 0);
    s.busy_probe.mode = JobBusyMode::Exec;
    let e = validate(&s).join("; ");
    assert!(
        e.contains("minReplicas (5) is greater than maxReplicas (2)"),
        "{e}"
    );
    assert!(e.contains("exec.command is missing"), "{e}");
    assert!(validate(&spec(1, 0, 2, 0)).is_empty());
}

// ---- properties ----

fn any_state() -> impl Strategy<Value = BusyState> {
    prop_oneof![
        Just(BusyState::Busy),
        Just(BusyState::Idle),
        Just(BusyState::Unknown)
    ]
}

prop_compose! {
    fn any_unit()(
        state in any_state(),
        stale in any::<bool>(),
        running in any::<bool>(),
        ready in any::<bool>(),
        finished in prop_oneof![Just(None), Just(Some(Finished::Complete)), Just(Some(Finished::Failed))],
        finished_at in prop::option::of(-600i64..600),
        failing in any::<bool>(),
        ever_busy in any::<bool>(),
        created in 0i64..1000,
    ) -> UnitView {
        let mut u = unit(0, state);
        u.core.stale = stale;
        u.core.running = running;
        u.core.ready = ready;
        u.core.created = created;
        u.finished = finished;
        u.finished_at = finished_at.map(t);
        u.failing = failing.then(|| "CrashLoopBackOff".to_string());
        u.ever_busy = ever_busy || state == BusyState::Busy;
        u
    }
}

prop_compose! {
    fn any_case()(
        idle in 0i32..20, min in 0i32..20, max in 1i32..30, delay in 0i32..120,
        mut us in prop::collection::vec(any_unit(), 0..40),
        in_flight in 0i32..5,
        pending in prop::option::of(-300i64..300),
        consecutive in 0i32..8,
        last_at in prop::option::of(-600i64..600),
        now in 0i64..600,
    ) -> (HotStandbyJobSpec, Vec<UnitView>, i32, Option<i64>, Failures, i64) {
        for (i, u) in us.iter_mut().enumerate() {
            u.core.name = format!("u{i}").into();
            u.core.uid = format!("uid-{i}").into();
        }
        let f = Failures { consecutive, last_at: last_at.map(t), last_reason: None };
        (spec(idle, min, max.max(min), delay), us, in_flight, pending, f, now)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Only a unit that is active, idle and current is ever deleted, as surplus or as broken.
    #[test]
    fn never_a_busy_unknown_stale_or_finished_victim(c in any_case()) {
        let (s, us, in_flight, pending, f, now) = c;
        let o = Observed { spec: &s, units: &us, in_flight, pending_since: pending.map(t), failures: f, now: t(now) };
        let p = plan(&o);
        for v in p.victims.iter().chain(p.replace.iter()) {
            let u = us.iter().find(|u| &*u.core.uid == v.uid).unwrap();
            prop_assert!(u.finished.is_none(), "finished unit {} deleted", v.name);
            prop_assert_eq!(u.core.state, BusyState::Idle, "{} is not idle", v.name);
            prop_assert!(!u.core.stale, "{} is stale", v.name);
        }
        for v in &p.replace {
            let u = us.iter().find(|u| &*u.core.uid == v.uid).unwrap();
            prop_assert!(u.failing.is_some() && !u.ever_busy);
        }
        // Never the same unit twice.
        let mut uids: Vec<&str> = p.victims.iter().chain(p.replace.iter()).map(|v| v.uid).collect();
        uids.sort_unstable();
        uids.dedup();
        prop_assert_eq!(uids.len(), p.victims.len() + p.replace.len());
    }

    /// desired is busy + idleTarget clamped to [min, max]; creation never overshoots it.
    #[test]
    fn clamp_and_creation_bound(c in any_case()) {
        let (s, us, in_flight, pending, f, now) = c;
        let o = Observed { spec: &s, units: &us, in_flight, pending_since: pending.map(t), failures: f.clone(), now: t(now) };
        let p = plan(&o);
        let busy = us.iter().filter(|u| u.finished.is_none() && u.core.state == BusyState::Busy).count() as i32;
        prop_assert_eq!(p.desired, (busy + s.idle_target).clamp(s.min_replicas, s.max_replicas));
        prop_assert!(p.desired >= s.min_replicas && p.desired <= s.max_replicas);
        let active = us.iter().filter(|u| u.finished.is_none()).count() as i32;
        prop_assert!(p.create >= 0);
        if p.create > 0 {
            prop_assert!(active - p.replace.len() as i32 + in_flight + p.create <= p.desired);
        }
        // Creating and deleting surplus never happen together.
        prop_assert!(p.create == 0 || p.victims.is_empty());
    }

    /// Surplus is deleted only after the delay: with a pending time less than the delay ago,
    /// nothing is deleted as surplus.
    #[test]
    fn delay_holds(c in any_case(), ago in 0i64..120) {
        let (s, us, in_flight, _, f, now) = c;
        let o = Observed { spec: &s, units: &us, in_flight, pending_since: Some(t(now - ago)), failures: f, now: t(now) };
        let p = plan(&o);
        if ago < s.scale_down_delay_seconds as i64 {
            prop_assert!(p.victims.is_empty());
        }
        if !p.victims.is_empty() {
            prop_assert!(p.pending_since.is_none());
        }
    }

    /// While failures are remembered, at most one Job is created, and only when the backoff
    /// window of the (updated) failure memory allows it or broken units are being replaced
    /// after the previous window.
    #[test]
    fn backoff_bounds_creation(c in any_case()) {
        let (s, us, in_flight, pending, f, now) = c;
        let o = Observed { spec: &s, units: &us, in_flight, pending_since: pending.map(t), failures: f.clone(), now: t(now) };
        let p = plan(&o);
        if p.failures.consecutive > 0 {
            prop_assert!(p.create <= 1, "{} created while failing", p.create);
            if p.create == 1 {
                prop_assert_eq!(in_flight, 0);
                let end_before = backoff_end(&f);
                prop_assert!(end_before.is_none_or(|e| t(now) >= e), "created inside the previous window");
            }
        }
    }

    /// Simulated time: a template whose every unit fails at once never creates more Jobs
    /// than backoff windows allow (1 + log2 growth, then one per 5 min).
    #[test]
    fn a_broken_template_creates_few_jobs(idle in 1i32..50, step in 1i64..5) {
        let s = spec(idle, 0, 100, 0);
        let mut failures = Failures::default();
        let mut pool: Vec<UnitView> = vec![];
        let mut created = 0usize;
        let mut next = 0usize;
        let horizon = 3600i64;
        let mut now = 0i64;
        while now < horizon {
            let p = plan(&Observed { spec: &s, units: &pool, in_flight: 0, pending_since: None, failures: failures.clone(), now: t(now) });
            let gone: Vec<String> = p.replace.iter().map(|v| v.uid.to_string()).collect();
            let create = p.create;
            failures = p.failures.clone();
            pool.retain(|u| !gone.iter().any(|g| **g == *u.core.uid));
            for _ in 0..create {
                let mut u = broken_unit(next);
                u.core.uid = format!("uid-{next}").into();
                next += 1;
                pool.push(u);
                created += 1;
            }
            now += step;
        }
        // The first creation fills the pool; after that, windows of 10, 20, 40, 80, 160 s
        // and then 300 s: far fewer than one per step.
        let bound = idle as usize + 6 + (horizon / 300) as usize;
        prop_assert!(created <= bound, "{created} Jobs in an hour (bound {bound})");
    }
}
