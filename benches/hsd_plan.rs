//! HSD planning cost: one HSD with 10,000 pods, and 1,000 HSDs of 10 pods each.
//! Prints the time per plan (pure `plan`), and per observe+plan (pod views from the cached pods, as the HSD cache holds them).
//!
//!   cargo bench --bench hsd_plan
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use kube_standby::api::HotStandbyDeployment;
use kube_standby::controller::hsd::child;
use kube_standby::controller::hsd::child::ChildReplicaSet;
use kube_standby::controller::hsd::plan::{self, BusyState, Observed, PodView};
use kube_standby::controller::pool_pod::PoolPod as Pod;
use kube_standby::probe::ProbeCache;
use serde_json::json;

fn hsd(idle: i32) -> HotStandbyDeployment {
    serde_json::from_value(json!({
        "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
        "metadata": {"name": "game", "namespace": "ns", "uid": "hsd-uid"},
        "spec": {"idleTarget": idle, "maxReplicas": 100000, "scaleDownDelaySeconds": 0,
                 "selector": {"matchLabels": {"app": "game"}},
                 "podTemplate": {"spec": {"containers": [{"name": "app", "image": "x"}]}}}
    }))
    .expect("hsd")
}

/// Busy or stale in [`views`].
fn protected(i: usize) -> bool {
    i.is_multiple_of(3) || i.is_multiple_of(97)
}

fn views(n: usize) -> Vec<PodView> {
    (0..n)
        .map(|i| PodView {
            name: format!("pod-{i}").into(),
            uid: format!("uid-{i}").into(),
            resource_version: i.to_string().into(),
            created: (i * 7 % 1000) as i64,
            // Only idle pods are not running or not ready: a protected pod that is not would
            // hold the scale-down, and the victim choice below would not run.
            running: i % 13 != 0 || protected(i),
            ready: i % 5 != 0 || protected(i),
            state: if i % 3 == 0 {
                BusyState::Busy
            } else {
                BusyState::Idle
            },
            stale: i % 97 == 0,
            reason: String::new().into(),
            cost: Some(if i % 3 == 0 {
                plan::COST_PROTECTED
            } else {
                plan::COST_IDLE
            }),
            detached: false,
            current: true,
            ip: None,
        })
        .collect()
}

fn pods(n: usize) -> Vec<Arc<Pod>> {
    (0..n)
        .map(|i| {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": format!("pod-{i}"), "namespace": "ns", "uid": format!("uid-{i}"), "resourceVersion": i.to_string(),
                                 "creationTimestamp": "2026-01-01T00:00:00Z",
                                 "annotations": {"paia.tech/busy": if i % 3 == 0 { "true" } else { "false" }},
                                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-uid", "controller": true}]},
                    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
                }))
                .expect("pod"),
            )
        })
        .collect()
}

/// A reconcile's observation of `pods` with `replicas` current and ours, nothing pending.
fn observed<'a>(
    h: &'a HotStandbyDeployment,
    replicas: i32,
    pods: &'a [PodView],
    now: Timestamp,
) -> Observed<'a> {
    Observed {
        spec: &h.spec,
        current_replicas: Some(replicas),
        our_replicas: Some(replicas),
        pods,
        pending_since: None,
        now,
        template_changed: false,
    }
}

fn time<F: FnMut()>(iters: u32, mut f: F) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_secs_f64() / iters as f64
}

fn main() {
    // HSD_PLAN_PROFILE=N: run only the "views kept" scale-down case, N times (for `perf
    // record`, valgrind, or A/B runs of two builds).
    let profile: Option<u32> = std::env::var("HSD_PLAN_PROFILE")
        .ok()
        .and_then(|v| v.parse().ok());
    let now = Timestamp::from_second(1_800_000_000).expect("ts");
    let h = hsd(5);
    if profile.is_none() {
        pure_plans(&h, now);
    }
    // Observe + plan from Pod objects (what a reconcile does apart from I/O).
    let mut d = child::child_deployment(&h, child::pod_template(&h).expect("tpl"), 10_000);
    d.metadata.uid = Some("dep-uid".into());
    let rs: Vec<Arc<ChildReplicaSet>> = vec![Arc::new(
        serde_json::from_value(json!({"metadata": {"name": "rs", "uid": "rs-uid",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "dep-uid", "controller": true}]}}))
        .expect("rs"),
    )];
    let probes = ProbeCache::default();
    if profile.is_none() {
        let pod_objs = pods(10_000);
        let per = time(50, || {
            let (counted, current) = child::counted_pods(&d, &h, &rs, &pod_objs);
            let v: Vec<PodView> = counted
                .iter()
                .map(|p| child::pod_view(p, &h, &probes, current.as_deref()))
                .collect();
            let o = observed(&h, 10_000, &v, now);
            black_box(plan::plan(&o));
        });
        println!(
            "observe+plan, 1 HSD x 10,000 Pod objects, every view built: {:.3} ms/reconcile (no I/O)",
            per * 1e3
        );
    }
    // What a reconcile does now: views kept between reconciles, rebuilt for changed pods.
    let cache = kube_standby::controller::hsd::views::ViewCache::default();
    let mut flip = 0usize;
    let mut changing = pods(10_000);
    let per = time(profile.unwrap_or(50), || {
        // One pod changed since the last reconcile (a busy flip), as under churn.
        flip = (flip + 1) % changing.len();
        let mut p = (*changing[flip]).clone();
        p.meta.resource_version = Some(format!("flip-{flip}"));
        changing[flip] = Arc::new(p);
        let (counted, current) = child::counted_pods(&d, &h, &rs, &changing);
        let v = cache.views("ns/game", &counted, &h, &probes, current.as_deref());
        let o = observed(&h, 10_000, &v, now);
        black_box(plan::plan(&o));
    });
    println!(
        "observe+plan, 1 HSD x 10,000 Pod objects, views kept (1 pod changed per reconcile): {:.3} ms/reconcile (no I/O; target <= 5 ms)",
        per * 1e3
    );
    if profile.is_some() {
        return;
    }
    // Where that time goes.
    let (counted, current) = child::counted_pods(&d, &h, &rs, &changing);
    let t_count = time(50, || {
        black_box(child::counted_pods(&d, &h, &rs, &changing));
    });
    let t_views = time(50, || {
        black_box(cache.views("ns/game", &counted, &h, &probes, current.as_deref()));
    });
    let v = cache.views("ns/game", &counted, &h, &probes, current.as_deref());
    let t_plan = time(50, || {
        let o = observed(&h, 10_000, &v, now);
        black_box(plan::plan(&o));
    });
    println!(
        "  of which: counted pods {:.3} ms, views {:.3} ms, plan {:.3} ms",
        t_count * 1e3,
        t_views * 1e3,
        t_plan * 1e3
    );
    steady_flips(&h, &d, &rs, &probes, now);
    debug_record(&h, &v, now);
    pods_of_one_hsd();
}

/// The pure plan alone: one pool of 10,000 views scaling down, and 1,000 pools of 10.
fn pure_plans(h: &HotStandbyDeployment, now: Timestamp) {
    let big = views(10_000);
    // Current replicas above desired, so victims are chosen (the expensive path).
    let o = observed(h, 10_000, &big, now);
    let per = time(200, || {
        black_box(plan::plan(&o));
    });
    let chosen = plan::plan(&o).victims.len();
    println!(
        "plan, 1 HSD x 10,000 pods (scale-down with victim choice, {chosen} victims): {:.3} ms/plan",
        per * 1e3
    );

    let small: Vec<Vec<PodView>> = (0..1000).map(|_| views(10)).collect();
    let per_all = time(50, || {
        for v in &small {
            let o = observed(h, 10, v, now);
            black_box(plan::plan(&o));
        }
    });
    println!(
        "plan, 1,000 HSDs x 10 pods: {:.3} ms for all, {:.2} us/plan",
        per_all * 1e3,
        per_all * 1e6 / 1000.0
    );
}

/// The pool a busy flip meets in practice: 10,000 pods because 9,995 are busy (idleTarget
/// 5), every pod carrying the cost it should, replicas at busy + idleTarget; each reconcile
/// follows one pod turning busy or idle (alternately, so the pool stays this size).
fn steady_flips(
    h: &HotStandbyDeployment,
    d: &k8s_openapi::api::apps::v1::Deployment,
    rs: &[Arc<ChildReplicaSet>],
    probes: &ProbeCache,
    now: Timestamp,
) {
    let n = 10_000;
    let pod = |i: usize, busy: bool, rv: String| -> Arc<Pod> {
        let cost = if busy {
            plan::COST_PROTECTED
        } else {
            plan::COST_IDLE
        };
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("pod-{i}"), "namespace": "ns", "uid": format!("0b7c4c1e-5d4f-4a8e-9c1a-{i:012}"),
                             "resourceVersion": rv, "creationTimestamp": "2026-01-01T00:00:00Z",
                             "annotations": {"paia.tech/busy": busy.to_string(),
                                             "controller.kubernetes.io/pod-deletion-cost": cost.to_string()},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-uid", "controller": true}]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .expect("pod"),
        )
    };
    let mut pods: Vec<Arc<Pod>> = (0..n).map(|i| pod(i, i >= 5, i.to_string())).collect();
    let cache = kube_standby::controller::hsd::views::ViewCache::default();
    let mut step = 0usize;
    let mut replicas = 0;
    let per = time(200, || {
        // Pod 0 flips busy, then idle again; a third of the time another pod's flip is seen.
        step += 1;
        let i = if step.is_multiple_of(3) { 7 } else { 0 };
        let busy = step % 2 == 1;
        pods[i] = pod(i, busy, format!("flip-{step}"));
        let (counted, current) = child::counted_pods(d, h, rs, &pods);
        let v = cache.views("ns/game", &counted, h, probes, current.as_deref());
        let o = observed(h, n as i32, &v, now);
        let p = plan::plan(&o);
        replicas = p.replicas;
        black_box(p);
    });
    println!(
        "observe+plan, 1 HSD x 10,000 Pod objects, steady pool (9,995 busy), one busy flip per reconcile: {:.3} ms/reconcile (no I/O; target <= 5 ms; replicas planned {replicas})",
        per * 1e3
    );
}

/// What a reconcile records for `/debug/state` after the plan, with 10,000 pod views: the
/// whole record serialized to JSON text (what every reconcile did before), against the plan
/// as text and the views kept for rendering when the endpoint is read (what it does now).
fn debug_record(h: &HotStandbyDeployment, v: &[PodView], now: Timestamp) {
    use kube_standby::controller::hsd::report;
    let o = observed(h, 10_000, v, now);
    let p = plan::plan(&o);
    // A scale-down plan lists thousands of victims and costs; the steady state lists none.
    let steady = Observed {
        current_replicas: Some(p.busy + 5),
        our_replicas: Some(p.busy + 5),
        ..o.clone()
    };
    let quiet = plan::plan(&steady);
    for (what, p) in [("scale-down plan", &p), ("steady plan", &quiet)] {
        let as_text = time(20, || {
            let record = json!({ "mode": h.spec.busy_probe.mode, "plan": p, "pods": v,
                                 "replicasWritten": 10, "at": now.to_string() });
            black_box(serde_json::to_string(&record).expect("text"));
        });
        let mut copies: Vec<Vec<PodView>> = (0..21).map(|_| v.to_vec()).collect();
        let debug = kube_standby::state::DebugState::default();
        let later = time(20, || {
            let head = kube_standby::state::json_text(&report::DebugHead {
                mode: h.spec.busy_probe.mode,
                plan: p,
                replicas_written: 10,
                at: now.to_string(),
            });
            let pods = copies.pop().unwrap_or_default();
            debug.set_with_list("hsd/ns/game".into(), head, "pods", pods);
        });
        println!(
            "/debug/state record, 10,000 pod views, {what}: as JSON text {:.3} ms, kept for rendering on read {:.3} ms",
            as_text * 1e3,
            later * 1e3
        );
    }
}

/// Finding one HSD's pods among 1,000 HSDs x 10 pods in one namespace: every cached pod of
/// the namespace collected (what a reconcile did before the pod index), against the index.
fn pods_of_one_hsd() {
    for (hsds, pods) in [(1000, 10), (1, 10_000)] {
        pods_of_one_hsd_among(hsds, pods);
    }
}

fn pods_of_one_hsd_among(hsds: usize, pods_each: usize) {
    use kube::runtime::{reflector, watcher};
    use kube_standby::controller::hsd::members::PodMembers;
    let (store, mut w) = reflector::store::<Pod>();
    for h in 0..hsds {
        for i in 0..pods_each {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("game-{h}-{i}"), "namespace": "games", "uid": format!("u-{h}-{i}"),
                             "labels": {"hsd.paia.tech/name": format!("game-{h}")}}
            }))
            .expect("pod");
            w.apply_watcher_event(&watcher::Event::InitApply(pod));
        }
    }
    w.apply_watcher_event(&watcher::Event::InitDone);
    let members = PodMembers::of_store(&store);
    let scan = time(200, || {
        black_box(kube_standby::controller::in_namespace(&store, "games"));
    });
    let one = format!("game-{}", hsds / 2);
    let indexed = time(200, || {
        black_box(members.pods(&store, "games", &one));
    });
    assert_eq!(members.pods(&store, "games", &one).len(), pods_each);
    println!(
        "one HSD's pods, {hsds} HSDs x {pods_each} pods in one namespace: namespace scan {:.1} us, pod index {:.2} us ({:.1}x)",
        scan * 1e6,
        indexed * 1e6,
        scan / indexed
    );
}
