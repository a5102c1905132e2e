//! Issue 22: flips that arrive while an HSD is being reconciled are coalesced into the next
//! reconcile, never lost. The real HSD controller (in this process) runs against the fake
//! API server, with `tests/support/hsd_pool.rs` playing the API server and the ReplicaSet;
//! a random sequence of busy/idle flips over two pools is pushed quickly (while writes are
//! in flight: each write is held a few milliseconds), then, once the operator's writes have
//! stopped, each child's last written `spec.replicas` must be clamp(final busy + idleTarget,
//! 0, maxReplicas), the pool must have that many pods, and no busy pod may have been deleted.
//! This waits for convergence; no latency is asserted.
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_standby::controller::{hsd, Deps};
use proptest::prelude::*;

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/hsd_pool.rs"]
mod hsd_pool;

use hsd_pool::{PoolSpec, Sim};

const NS: &str = "churn";

fn specs() -> Vec<PoolSpec> {
    vec![
        PoolSpec {
            name: "a".into(),
            idle_target: 2,
            max_replicas: 6,
            scale_down_delay_seconds: 0,
        },
        PoolSpec {
            name: "b".into(),
            idle_target: 1,
            max_replicas: 100,
            scale_down_delay_seconds: 0,
        },
    ]
}

async fn watches_open(api: &fake_apiserver::FakeApi) -> bool {
    for _ in 0..500 {
        let seen = api.seen.0.lock().map(|s| s.clone()).unwrap_or_default();
        let open = |p: &str| {
            seen.iter()
                .any(|s| s.contains(&format!("{p}?")) && s.contains("watch=true"))
        };
        if open(hsd_pool::PODS)
            && open(hsd_pool::REPLICASETS)
            && open(hsd_pool::DEPLOYMENTS)
            && open(hsd_pool::HSDS)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn child_path(pool: &str) -> String {
    format!(
        "/apis/apps/v1/namespaces/{NS}/deployments/{}",
        hsd::child::child_name(pool)
    )
}

/// The replicas of the last child write of `pool` answered 200, if any.
fn last_written(api: &fake_apiserver::FakeApi, pool: &str) -> Option<i64> {
    let path = child_path(pool);
    api.writes
        .since(0)
        .iter()
        .rev()
        .find(|w| w.path == path && w.method == "PATCH" && w.status == 200)
        .and_then(|w| w.body["spec"]["replicas"].as_i64())
}

/// Does every pool ask for what its busy pods want, and have that many pods?
fn converged(sim: &Sim, api: &fake_apiserver::FakeApi, specs: &[PoolSpec]) -> Vec<String> {
    let mut wrong = vec![];
    for (i, s) in specs.iter().enumerate() {
        let (replicas, wanted) = sim.replicas_and_wanted(i);
        let written = last_written(api, &s.name).unwrap_or(s.idle_target as i64);
        if written != wanted as i64 || replicas != wanted || sim.pods(i) != wanted as usize {
            wrong.push(format!(
                "{}: last written {written}, child {replicas}, pods {}, wanted {wanted} (busy, idle) = {:?}",
                s.name,
                sim.pods(i),
                sim.counts(i)
            ));
        }
    }
    wrong
}

/// One case: returns what was wrong at the end (empty: converged).
async fn case(flips: Vec<(usize, bool, usize, u64)>, latency_ms: u64) -> Vec<String> {
    let specs = specs();
    let (objects, model) = hsd_pool::build(NS, &specs);
    let api = Arc::new(fake_apiserver::start_with(objects).await);
    api.check_delete_preconditions(true);
    api.set_write_latency(Duration::from_millis(latency_ms));
    let sim = Sim::new(api.clone(), model);
    let follower = tokio::spawn(sim.clone().follow(0));
    let mut config = kube::Config::new(format!("http://{}", api.addr).parse().unwrap());
    config.default_namespace = NS.into();
    let client = kube::Client::try_from(config).unwrap();
    let controller = tokio::spawn(hsd::run(Deps::standalone(client), None));
    assert!(watches_open(&api).await, "the HSD controller never watched");
    // Each pool's first reconcile (already full) ends with its status write.
    let statuses = |api: &fake_apiserver::FakeApi| {
        api.writes
            .since(0)
            .iter()
            .filter(|w| w.path.ends_with("/status"))
            .count()
    };
    for _ in 0..500 {
        if statuses(&api) >= specs.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (pool, busy, pick, gap_ms) in flips {
        sim.flip(pool % specs.len(), pick, busy);
        if gap_ms > 0 {
            tokio::time::sleep(Duration::from_millis(gap_ms)).await;
        }
    }
    // Converged once the writes have stopped and every pool is right; a lost flip never
    // converges, so the wait is capped.
    let cap = Instant::now() + Duration::from_secs(30);
    let mut wrong;
    loop {
        let n = api.writes.len();
        let more = api
            .writes
            .wait_for(n, Duration::from_millis(400), |_| true)
            .await;
        wrong = converged(&sim, &api, &specs);
        if (more.is_none() && wrong.is_empty()) || Instant::now() > cap {
            break;
        }
    }
    let (stats, _) = sim.stats();
    if stats.busy_deleted_by_operator > 0 || stats.busy_removed_by_replicaset > 0 {
        wrong.push(format!(
            "busy pods deleted: by the operator {}, by the ReplicaSet {}",
            stats.busy_deleted_by_operator, stats.busy_removed_by_replicaset
        ));
    }
    if !stats.unexpected.is_empty() {
        wrong.push(format!("unexpected writes: {:?}", stats.unexpected));
    }
    controller.abort();
    follower.abort();
    wrong
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, failure_persistence: None, ..ProptestConfig::default() })]

    /// Over random flip sequences (pool, busy or idle, which pod, pause 0–2 ms), pushed
    /// while the operator's writes are in flight, the last child write of every pool asks
    /// for the final busy + idleTarget (clamped), and the pool ends with that many pods.
    #[test]
    fn coalesced_flips_end_at_the_final_busy_plus_idle_target(
        flips in prop::collection::vec((0usize..2, any::<bool>(), 0usize..64, 0u64..3), 1..30),
        latency_ms in 1u64..4,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let wrong = rt.block_on(case(flips, latency_ms));
        rt.shutdown_background();
        prop_assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
