//! HSJ planning cost (issue 8: "planning cost for 10,000 units"; issue 22: observe + plan of
//! one HSJ with 10,000 units <= 5 ms per reconcile): one HotStandbyJob with 10,000 units
//! (busy, idle, unknown, stale, finished, failing; idle surplus so victims are chosen and
//! broken units replaced), and 1,000 HotStandbyJobs of 10 units each. Prints the time per
//! plan (pure `plan::plan`) and per observe+plan, as the median and p99 over the
//! iterations. No I/O.
//!
//! Observe + plan is timed three ways, in the same run:
//! - every view built (`observe::pods_by_job` + `observe::unit_view` over every object);
//! - views kept between reconciles (`hsj::views::ViewCache`, what the reconciler did before
//!   the unit index): pods grouped by Job and every unit's probe state read each time;
//! - the reconciler's path now: a real `hsj::Ctx` over reflector stores holding the 10,000
//!   Jobs and pods; each iteration applies one pod watch event to the pod cache and feeds it
//!   to the unit index (`Ctx::units`, as the watch does), or records one changed probe
//!   answer (the probe cache tells the index), then runs `hsj::observe` + `plan::plan` as
//!   `reconcile` does.
//!
//! The due-probe scan an exec- or http-mode reconcile runs first is timed apart, both ways
//! in the same run: before, every live pod listed and asked of the probe cache
//! (`Units::live_pods` + `probe::exec::probe_due`); now, the reconciler's own
//! `hsj::probe_due` (the unit index's due order, `Units::due_pods`), with none due and
//! with one pod due per reconcile (its probe fails at once: the pods have no container).
//!
//!   cargo bench --bench hsj_plan
//!   BENCH_ITERATIONS=50 cargo bench --bench hsj_plan
use std::hint::black_box;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube_standby::api::hsj::HotStandbyJob;
use std::collections::HashSet;

use kube_standby::controller::hsj::observe;
use kube_standby::controller::hsj::plan::{self, Failures, Finished, Observed, PodView, UnitView};
use kube_standby::controller::hsj::views::ViewCache;
use kube_standby::probe::{BusyState, ProbeCache};
use serde_json::json;

/// An HSJ in exec mode: unit states come from the probe cache (busy, idle, unknown, stale).
fn hsj(idle: i32) -> HotStandbyJob {
    serde_json::from_value(json!({
        "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob",
        "metadata": {"name": "pool", "namespace": "ns", "uid": "hsj-uid"},
        "spec": {"idleTarget": idle, "maxReplicas": 100000, "scaleDownDelaySeconds": 0,
                 "jobTemplate": {"image": "busybox"},
                 "busyProbe": {"mode": "exec", "exec": {"command": ["cat", "/tmp/busy"], "periodSeconds": 3600}}}
    }))
    .expect("hsj")
}

/// Probe answers for pod `i` as the unit mix says: none for unknown, a failure after a
/// known state for stale.
fn record_probe(probes: &ProbeCache, i: usize) {
    let at = Instant::now();
    let uid = format!("pod-{i}");
    match unit(i).core.state {
        BusyState::Unknown => return,
        s => probes.record(&uid, Ok(s), at),
    };
    if i.is_multiple_of(97) {
        probes.record(&uid, Err("timeout".into()), at);
    }
}

/// The mix of unit `i`: about a third busy, 1/17 unknown, 1/97 stale, 1/11 completed,
/// 1/23 failed, 1/50 failing while active; the rest idle (far more than idleTarget).
fn unit(i: usize) -> UnitView {
    let state = match i {
        _ if i.is_multiple_of(3) => BusyState::Busy,
        _ if i.is_multiple_of(17) => BusyState::Unknown,
        _ => BusyState::Idle,
    };
    let finished = match i {
        _ if i.is_multiple_of(11) => Some(Finished::Complete),
        _ if i.is_multiple_of(23) => Some(Finished::Failed),
        _ => None,
    };
    UnitView {
        core: PodView {
            name: format!("pool-{i}").into(),
            uid: format!("uid-{i}").into(),
            resource_version: i.to_string().into(),
            created: (i * 7 % 1000) as i64,
            running: !i.is_multiple_of(13),
            ready: !i.is_multiple_of(5),
            state,
            stale: i.is_multiple_of(97),
            reason: String::new().into(),
            cost: None,
            detached: false,
            current: true,
            ip: None,
        },
        finished,
        finished_at: finished.map(|_| Timestamp::from_second(1_799_999_000).expect("ts")),
        failing: (i % 50 == 1).then(|| format!("pod pool-{i} container main: ImagePullBackOff")),
        ever_busy: state == BusyState::Busy,
    }
}

fn job(i: usize) -> Job {
    let conditions = match i {
        _ if i.is_multiple_of(11) => {
            json!([{"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}])
        }
        _ if i.is_multiple_of(23) => {
            json!([{"type": "Failed", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}])
        }
        _ => json!([]),
    };
    serde_json::from_value(json!({
        "metadata": {"name": format!("pool-{i}"), "namespace": "ns", "uid": format!("uid-{i}"), "resourceVersion": i.to_string(),
                     "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"hsj.paia.tech/name": "pool"},
                     "ownerReferences": [{"apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob", "name": "pool", "uid": "hsj-uid", "controller": true}]},
        "status": {"active": 1, "conditions": conditions}
    }))
    .expect("job")
}

fn pod(i: usize) -> Pod {
    let waiting = if i % 50 == 1 {
        json!([{"name": "main", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}])
    } else {
        json!([{"name": "main", "state": {}}])
    };
    serde_json::from_value(json!({
        "metadata": {"name": format!("pool-{i}-p"), "namespace": "ns", "uid": format!("pod-{i}"),
                     "labels": {"hsj.paia.tech/name": "pool"},
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": format!("pool-{i}"), "uid": format!("uid-{i}"), "controller": true}]},
        "status": {"phase": if i.is_multiple_of(13) { "Pending" } else { "Running" }, "podIP": "10.0.0.1",
                   "conditions": [{"type": "Ready", "status": if i.is_multiple_of(5) { "False" } else { "True" }}],
                   "containerStatuses": waiting}
    }))
    .expect("pod")
}

fn observed<'a>(h: &'a HotStandbyJob, units: &'a [UnitView], now: Timestamp) -> Observed<'a> {
    Observed {
        spec: &h.spec,
        units,
        in_flight: 0,
        pending_since: None,
        failures: Failures::default(),
        now,
    }
}

/// Per-iteration times (one warm-up run first), sorted.
fn times<F: FnMut()>(iters: usize, mut f: F) -> Vec<Duration> {
    f();
    let mut t: Vec<Duration> = (0..iters)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn print(what: &str, t: &[Duration], per: u32) {
    let us = |d: Duration| d.as_secs_f64() * 1e6 / per as f64;
    let unit = if per == 1 {
        "plan"
    } else {
        "plan (of the batch)"
    };
    println!(
        "{what}: median {:.1} us/{unit}, p99 {:.1} us, max {:.1} us ({} iterations)",
        us(pct(t, 50.0)),
        us(pct(t, 99.0)),
        us(t[t.len() - 1]),
        t.len()
    );
}

fn views_of(h: &HotStandbyJob, jobs: &[Job], pods: &[Pod], probes: &ProbeCache) -> Vec<UnitView> {
    let by_job = observe::pods_by_job(pods.iter());
    jobs.iter()
        .map(|j| {
            let uid = j.metadata.uid.as_deref().unwrap_or_default();
            let ps = by_job.get(uid).map(Vec::as_slice).unwrap_or_default();
            observe::unit_view(j, ps, &h.spec.busy_probe, probes, false)
        })
        .collect()
}

fn main() {
    let iters: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let now = Timestamp::from_second(1_800_000_000).expect("ts");
    let h = hsj(5);
    let probes = ProbeCache::default();
    (0..10_000).for_each(|i| record_probe(&probes, i));

    let big: Vec<UnitView> = (0..10_000).map(unit).collect();
    let p = plan::plan(&observed(&h, &big, now));
    println!(
        "1 HSJ x 10,000 units: busy {} idle {} unknown {} stale {} completed {} failed {} -> desired {}, {} victims, {} replaced, create {}",
        p.busy, p.idle, p.unknown, p.stale, p.completed, p.failed, p.desired, p.victims.len(), p.replace.len(), p.create
    );
    let t = times(iters, || {
        black_box(plan::plan(&observed(&h, &big, now)));
    });
    print(
        "plan, 1 HSJ x 10,000 units (surplus: victims chosen, broken replaced)",
        &t,
        1,
    );

    let jobs: Vec<Job> = (0..10_000).map(job).collect();
    let pods: Vec<Pod> = (0..10_000).map(pod).collect();
    let t = times(iters / 4 + 1, || {
        let units = views_of(&h, &jobs, &pods, &probes);
        black_box(plan::plan(&observed(&h, &units, now)));
    });
    print(
        "observe+plan, 1 HSJ x 10,000 Job + 10,000 Pod objects, every view built",
        &t,
        1,
    );

    // What a reconcile does now: views kept between reconciles (`hsj::views`), rebuilt for
    // changed units; one pod changed per reconcile (a busy flip, as under churn). Exec
    // mode: every unit's state is read fresh from the probe cache each time.
    let cache = ViewCache::default();
    let mut ever = HashSet::new();
    let mut changing = pods.clone();
    let mut flip = 0usize;
    let t = times(iters / 4 + 1, || {
        flip = (flip + 1) % changing.len();
        changing[flip].metadata.resource_version = Some(format!("flip-{flip}"));
        let by_job = observe::pods_by_job(changing.iter());
        let units = cache.views(
            "ns/pool",
            jobs.iter(),
            &by_job,
            &h.spec.busy_probe,
            &probes,
            &mut ever,
        );
        black_box(plan::plan(&observed(&h, &units, now)));
    });
    print(
        "observe+plan, 1 HSJ x 10,000 Job + 10,000 Pod objects, views kept (1 pod changed per reconcile; target <= 5 ms)",
        &t,
        1,
    );
    // Where that time goes.
    let t = times(iters / 4 + 1, || {
        black_box(observe::pods_by_job(changing.iter()));
    });
    print("  of which: pods by Job", &t, 1);
    let by_job = observe::pods_by_job(changing.iter());
    let t = times(iters / 4 + 1, || {
        black_box(cache.views(
            "ns/pool",
            jobs.iter(),
            &by_job,
            &h.spec.busy_probe,
            &probes,
            &mut ever,
        ));
    });
    print("  of which: views (kept)", &t, 1);
    let units = cache.views(
        "ns/pool",
        jobs.iter(),
        &by_job,
        &h.spec.busy_probe,
        &probes,
        &mut ever,
    );
    let t = times(iters / 4 + 1, || {
        black_box(plan::plan(&observed(&h, &units, now)));
    });
    print("  of which: plan", &t, 1);
    let p = plan::plan(&observed(&h, &units, now));
    println!(
        "  views kept: {} units, busy {} idle {} unknown {} stale {} -> {} victims, {} replaced",
        units.len(),
        p.busy,
        p.idle,
        p.unknown,
        p.stale,
        p.victims.len(),
        p.replace.len()
    );

    index_path(&h, &jobs, &pods, &probes, iters, now);

    let small: Vec<Vec<UnitView>> = (0..1000)
        .map(|k| (0..10).map(|i| unit(k * 10 + i)).collect())
        .collect();
    let t = times(iters / 4 + 1, || {
        for units in &small {
            black_box(plan::plan(&observed(&h, units, now)));
        }
    });
    print("plan, 1,000 HSJs x 10 units", &t, 1000);
    let small_objs: Vec<(Vec<Job>, Vec<Pod>)> = (0..1000)
        .map(|k| {
            (
                (0..10).map(|i| job(k * 10 + i)).collect(),
                (0..10).map(|i| pod(k * 10 + i)).collect(),
            )
        })
        .collect();
    let t = times(iters / 4 + 1, || {
        for (jobs, pods) in &small_objs {
            let units = views_of(&h, jobs, pods, &probes);
            black_box(plan::plan(&observed(&h, &units, now)));
        }
    });
    print(
        "observe+plan, 1,000 HSJs x 10 Job + 10 Pod objects",
        &t,
        1000,
    );
}

/// An exec runner that answers at once with no status (the bench's pods have no container,
/// so it is not reached: each probe fails before the call).
struct NoExec;

impl kube_standby::probe::exec::ExecRunner for NoExec {
    fn run(
        &self,
        _call: kube_standby::probe::exec::ExecCall,
    ) -> futures::future::BoxFuture<
        '_,
        Result<
            Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
            kube_standby::probe::exec::ExecError,
        >,
    > {
        Box::pin(async { Ok(None) })
    }
}

/// The reconciler's observe + plan: a real `Ctx` (its unit index built from the caches, as
/// at start), one watch event or probe answer per reconcile, then `hsj::observe` + plan.
fn index_path(
    h: &HotStandbyJob,
    jobs: &[Job],
    pods: &[Pod],
    answers: &ProbeCache,
    iters: usize,
    now: Timestamp,
) {
    use kube::runtime::{reflector, watcher};
    use kube_standby::controller::hsj::{self, units::HsjRef, Ctx, Stores};
    use std::sync::Arc;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _in_rt = rt.enter();
    let (svc, _api) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    let client = kube::Client::new(svc, "default");
    let deps = kube_standby::controller::Deps::standalone(client);
    // The probe answers of the mix, in the Ctx's probe cache.
    (0..10_000).for_each(|i| record_probe(&deps.probes, i));
    let _ = answers;
    let (job_store, mut job_w) = reflector::store::<Job>();
    let (pod_store, mut pod_w) = reflector::store::<Pod>();
    job_w.apply_watcher_event(&watcher::Event::Init);
    jobs.iter()
        .for_each(|j| job_w.apply_watcher_event(&watcher::Event::InitApply(j.clone())));
    job_w.apply_watcher_event(&watcher::Event::InitDone);
    pod_w.apply_watcher_event(&watcher::Event::Init);
    pods.iter()
        .for_each(|p| pod_w.apply_watcher_event(&watcher::Event::InitApply(p.clone())));
    pod_w.apply_watcher_event(&watcher::Event::InitDone);
    let stores = Stores {
        jobs: job_store,
        pods: pod_store.clone(),
    };
    let exec = kube_standby::probe::exec::ExecProber::new(Arc::new(NoExec), 4);
    let ctx = Ctx::new(&deps, stores, exec);
    let me = HsjRef {
        namespace: "ns",
        name: "pool",
        uid: "hsj-uid",
    };
    let reconcile = |ctx: &Ctx| {
        let seen = hsj::observe(ctx, h, me, ctx.expect.deleting());
        let p = plan::plan(&seen.observed(h, now));
        black_box((p.victims.len(), p.replace.len(), p.create));
    };
    reconcile(&ctx);
    {
        let seen = hsj::observe(&ctx, h, me, ctx.expect.deleting());
        let p = plan::plan(&seen.observed(h, now));
        println!(
            "  unit index: {} units, busy {} idle {} unknown {} stale {} -> {} victims, {} replaced",
            seen.units().len(), p.busy, p.idle, p.unknown, p.stale, p.victims.len(), p.replace.len()
        );
    }

    // One pod watch event per reconcile (a new resourceVersion, as the old rows change).
    let mut flip = 0usize;
    let mut changing = pods.to_vec();
    let t = times(iters / 4 + 1, || {
        flip = (flip + 1) % changing.len();
        changing[flip].metadata.resource_version = Some(format!("flip-{flip}"));
        let ev = watcher::Event::Apply(changing[flip].clone());
        pod_w.apply_watcher_event(&ev);
        ctx.units.on_pod_event(&pod_store, ev);
        reconcile(&ctx);
    });
    print(
        "observe+plan, reconciler's path (unit index; 1 pod watch event per reconcile; target <= 5 ms)",
        &t,
        1,
    );
    // One probe answer changed per reconcile (a busy flip in exec mode), told by the cache.
    let mut k = 0usize;
    let t = times(iters / 4 + 1, || {
        k = (k + 1) % 10_000;
        let i = (k * 3) % 10_000; // a busy unit: flip it idle, and back next time round
        let uid = format!("pod-{i}");
        let state = match deps.probes.get(&uid).and_then(|r| r.last_known) {
            Some(BusyState::Busy) => BusyState::Idle,
            _ => BusyState::Busy,
        };
        deps.probes.record(&uid, Ok(state), Instant::now());
        reconcile(&ctx);
    });
    print(
        "observe+plan, reconciler's path (unit index; 1 probe answer changed per reconcile)",
        &t,
        1,
    );
    // Where that time goes.
    let t = times(iters / 4 + 1, || {
        black_box(
            hsj::observe(&ctx, h, me, ctx.expect.deleting())
                .units()
                .len(),
        );
    });
    print("  of which: observe (nothing changed)", &t, 1);
    let seen = hsj::observe(&ctx, h, me, ctx.expect.deleting());
    let t = times(iters / 4 + 1, || {
        black_box(plan::plan(&seen.observed(h, now)));
    });
    print("  of which: plan", &t, 1);
    drop(seen);
    // The due-probe scan a reconcile in exec mode runs before observe. Before: the live
    // units' pods listed, each asked of the probe cache whether its probe is due.
    let cfg = h.spec.busy_probe.exec.clone().expect("exec");
    let deleting = ctx.expect.deleting();
    let old_scan = || {
        let live = ctx.units.live_pods(me, &deleting);
        let refs: Vec<&Pod> = live.iter().map(Arc::as_ref).collect();
        rt.block_on(kube_standby::probe::exec::probe_due(
            &ctx.exec,
            &ctx.probes,
            &ctx.metrics,
            &cfg,
            &refs,
        ))
    };
    old_scan(); // the never-probed (unknown) pods are probed once here
    let t = times(iters / 4 + 1, || {
        black_box(old_scan());
    });
    print(
        "  due-probe scan, before: every live pod asked (live_pods + exec::probe_due; none due; was \"not included\")",
        &t,
        1,
    );
    // Now: the reconciler's own scan, the unit index's due order (`Units::due_pods`).
    let new_scan = || rt.block_on(hsj::probe_due(&ctx, h, me, &deleting));
    new_scan(); // the index checks each pod against the cache once after it appeared
    let t = times(iters / 4 + 1, || {
        black_box(new_scan());
    });
    print(
        "  due-probe scan, reconciler's path (unit index due order; none due)",
        &t,
        1,
    );
    // One pod due per reconcile: a live running pod's last probe moved two periods back.
    let period = kube_standby::probe::exec::period_of(&cfg);
    let long_ago = Instant::now()
        .checked_sub(period * 2)
        .expect("an old instant");
    let live_running: Vec<usize> = (0..10_000)
        .filter(|&i: &usize| {
            !i.is_multiple_of(11) && !i.is_multiple_of(23) && !i.is_multiple_of(13)
        })
        .collect();
    let mut k = 0usize;
    // (pods made due, of which probed again by the scan that followed)
    let mut reprobed = (0usize, 0usize);
    let mut make_one_due = || {
        let last = format!("pod-{}", live_running[k]);
        if reprobed.0 > 0
            && ctx
                .probes
                .get(&last)
                .is_some_and(|r| r.probed_at > long_ago)
        {
            reprobed.1 += 1;
        }
        k = (k + 1) % live_running.len();
        let uid = format!("pod-{}", live_running[k]);
        ctx.probes
            .record_every(&uid, Ok(BusyState::Idle), long_ago, Some(period));
        reprobed.0 += 1;
    };
    let t = times(iters / 4 + 1, || {
        make_one_due();
        black_box(old_scan());
    });
    print("  due-probe scan, before (1 pod due per reconcile)", &t, 1);
    let t = times(iters / 4 + 1, || {
        make_one_due();
        black_box(new_scan());
    });
    print(
        "  due-probe scan, reconciler's path (1 pod due per reconcile)",
        &t,
        1,
    );
    // The whole exec-mode reconcile's observe: scan (1 due) + observe + plan.
    let t = times(iters / 4 + 1, || {
        make_one_due();
        black_box(new_scan());
        reconcile(&ctx);
    });
    print(
        "observe+plan with the due-probe scan, reconciler's path (1 pod due per reconcile; target <= 5 ms)",
        &t,
        1,
    );
    make_one_due();
    println!(
        "  pods made due: {}, found due and probed by the scan after: {} (the bench's pods have no container: each probe is a failure, recorded without an exec call)",
        reprobed.0 - 1,
        reprobed.1
    );
    // Nor the debug state a reconcile publishes (the plan and every unit's view).
    let seen = hsj::observe(&ctx, h, me, ctx.expect.deleting());
    let p = plan::plan(&seen.observed(h, now));
    let t = times(iters / 4 + 1, || {
        ctx.debug.set(
            "hsj/ns/pool".into(),
            serde_json::json!({"mode": h.spec.busy_probe.mode, "plan": p, "units": seen.units(),
                               "created": [], "deleted": [], "replaced": [], "at": now.to_string()}),
        );
    });
    print(
        "  not included: debug state, as a JSON value first (before)",
        &t,
        1,
    );
    let t = times(iters / 4 + 1, || {
        let entry = hsj::DebugHead {
            mode: h.spec.busy_probe.mode,
            plan: &p,
            created: &[],
            deleted: &[],
            replaced: &[],
            at: now.to_string(),
        };
        let head = kube_standby::state::json_text(&entry);
        ctx.debug
            .set_with_list("hsj/ns/pool".into(), head, "units", seen.units().to_vec());
    });
    print(
        "  debug state, units kept and rendered on read (after, what reconcile does)",
        &t,
        1,
    );
}
