//! Issue 19: the claim controller against the fake API server in store mode (every write
//! applied and sent back through the watches, a resourceVersion in a patch checked): bind,
//! a lost race picks the next pod, a claim already on a pod is finished without a second
//! pod, release Delete and Recycle, TTL, a pool that appears later, PoolExhausted, and
//! concurrent claimers never sharing a pod.
use std::time::Duration;

use serde_json::json;

#[path = "support/claim_pool.rs"]
mod claim_pool;
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use claim_pool::{Claims, BUSY, CLAIM, CLAIMS, CLAIM_UID, HSDS, PODS};

const NS: &str = "team";
const SEC5: Duration = Duration::from_secs(5);

fn spec(pool: &str) -> serde_json::Value {
    json!({"poolRef": {"kind": "HotStandbyDeployment", "name": pool}})
}

async fn pool(n: usize) -> Claims {
    claim_pool::start(claim_pool::hsd_pool(NS, "web", n, 10), Duration::ZERO).await
}

fn writes_to(c: &Claims, method: &str, path_has: &str) -> usize {
    c.api
        .writes
        .since(0)
        .iter()
        .filter(|w| w.method == method && w.path.contains(path_has))
        .count()
}

#[tokio::test]
async fn a_claim_binds_an_idle_pod_and_the_pod_learns_it() {
    let c = pool(3).await;
    let created = c
        .create(
            NS,
            "job-1",
            json!({"poolRef": {"kind": "hsd", "name": "web"}, "parameters": {"task": 7}}),
        )
        .await;
    let bound = c
        .wait_phase(NS, "job-1", "Bound", SEC5)
        .await
        .expect("bound");
    let pod = bound["status"]["pod"]["name"].as_str().unwrap().to_string();
    assert!(pod.starts_with("web-"), "{bound}");
    assert!(bound["status"]["pod"]["ip"].as_str().is_some());
    assert!(bound["status"]["waitedMs"].as_i64().is_some());
    assert_eq!(bound["status"]["conditions"][0]["type"], "Bound");
    let served = c.pod(NS, &pod).unwrap();
    let a = &served["metadata"]["annotations"];
    assert_eq!(a[BUSY], "true", "a claimed pod is busy");
    assert_eq!(a[CLAIM], format!("{NS}/job-1"));
    assert_eq!(a[CLAIM_UID], created.metadata.uid.clone().unwrap().as_str());
    assert_eq!(c.claimed(NS).len(), 1, "exactly one pod carries it");
    // The pod's answer (what /v1/assignment serves) from the caches.
    let uid = served["metadata"]["uid"].as_str().unwrap();
    let mut assignment = None;
    for _ in 0..500 {
        assignment = c.stores.assignment(NS, &pod, uid);
        if assignment.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let a = assignment.expect("assignment");
    assert_eq!((a.claim.as_str(), a.namespace.as_str()), ("job-1", NS));
    assert_eq!(a.parameters, json!({"task": 7}));
    assert!(
        c.stores.assignment(NS, &pod, "another-uid").is_none(),
        "only for the pod itself"
    );
    // The pool counts it. The counts are published at the end of a pass, after the
    // claim's status write, so they can trail the Bound phase by one pass.
    let mut counts = None;
    for _ in 0..500 {
        counts = c
            .deps
            .claims
            .get(NS, "HotStandbyDeployment", "web")
            .map(|n| (n.claimed, n.pending));
        if counts == Some((1, 0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counts, Some((1, 0)));
}

#[tokio::test]
async fn a_lost_race_on_the_pod_write_picks_the_next_pod() {
    let c = pool(2).await;
    // Someone changed both... no: one pod changed behind the cache's back (its served
    // resourceVersion moves on, no watch event yet), so a write guarded by the cached one
    // loses. The oldest pod (web-0) is the first choice.
    let mut p0 = c.pod(NS, "web-0").unwrap();
    p0["metadata"]["resourceVersion"] = json!("999999");
    c.api.replace_silently(PODS, p0);
    c.create(NS, "c1", spec("web")).await;
    let bound = c.wait_phase(NS, "c1", "Bound", SEC5).await.expect("bound");
    assert_eq!(bound["status"]["pod"]["name"], "web-1", "{bound}");
    let conflicts = c
        .api
        .writes
        .since(0)
        .iter()
        .filter(|w| w.method == "PATCH" && w.path.ends_with("/pods/web-0") && w.status == 409)
        .count();
    assert_eq!(conflicts, 1, "web-0 was tried once and lost");
    assert_eq!(
        c.claimed(NS),
        vec![("web-1".to_string(), format!("{NS}/c1"))]
    );
}

#[tokio::test]
async fn a_claim_already_on_a_pod_is_finished_without_a_second_pod() {
    // A binding whose status write was lost (the operator restarted in between): the pod
    // names the claim, the claim is still Pending. Both are in the first list.
    let mut items = claim_pool::hsd_pool(NS, "web", 3, 10);
    let p1 = &mut items[2].1;
    assert_eq!(p1["metadata"]["name"], "web-1");
    p1["metadata"]["annotations"][CLAIM] = json!(format!("{NS}/c1"));
    p1["metadata"]["annotations"][CLAIM_UID] = json!("claim-uid-1");
    p1["metadata"]["annotations"][BUSY] = json!("true");
    items.push((
        CLAIMS,
        json!({"apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyClaim",
               "metadata": {"name": "c1", "namespace": NS, "uid": "claim-uid-1",
                            "creationTimestamp": "2026-01-01T00:00:00Z"},
               "spec": spec("web")}),
    ));
    let c = claim_pool::start(items, Duration::ZERO).await;
    let bound = c.wait_phase(NS, "c1", "Bound", SEC5).await.expect("bound");
    assert_eq!(bound["status"]["pod"]["name"], "web-1");
    assert_eq!(writes_to(&c, "PATCH", "/pods/"), 0, "no pod written");
    assert_eq!(c.claimed(NS).len(), 1);
}

#[tokio::test]
async fn deleting_a_claim_releases_its_pod_by_policy() {
    let c = pool(3).await;
    c.create(NS, "del", spec("web")).await;
    c.create(
        NS,
        "rec",
        json!({"poolRef": {"kind": "HotStandbyDeployment", "name": "web"}, "release": "Recycle"}),
    )
    .await;
    let del = c.wait_phase(NS, "del", "Bound", SEC5).await.expect("bound");
    let rec = c.wait_phase(NS, "rec", "Bound", SEC5).await.expect("bound");
    let (dpod, rpod) = (
        del["status"]["pod"]["name"].as_str().unwrap().to_string(),
        rec["status"]["pod"]["name"].as_str().unwrap().to_string(),
    );
    assert_ne!(dpod, rpod);
    c.delete(NS, "del").await;
    c.delete(NS, "rec").await;
    for _ in 0..2500 {
        if c.pod(NS, &dpod).is_none() && c.claimed(NS).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(c.pod(NS, &dpod).is_none(), "Delete: the pod is deleted");
    let deletes: Vec<_> = c
        .api
        .writes
        .since(0)
        .into_iter()
        .filter(|w| w.method == "DELETE" && w.path.ends_with(&format!("/pods/{dpod}")))
        .collect();
    assert_eq!(deletes.len(), 1);
    assert!(
        deletes[0].body["preconditions"]["uid"].is_string(),
        "UID precondition"
    );
    let recycled = c.pod(NS, &rpod).expect("Recycle: the pod stays");
    let a = &recycled["metadata"]["annotations"];
    assert_eq!(a[BUSY], "false", "idle again");
    assert!(a.get(CLAIM).is_none() && a.get(CLAIM_UID).is_none());
}

#[tokio::test]
async fn ttl_releases_the_pod_and_ends_the_claim() {
    let c = pool(2).await;
    c.create(
        NS,
        "short",
        json!({"poolRef": {"kind": "HotStandbyDeployment", "name": "web"}, "ttlSeconds": 1, "release": "Recycle"}),
    )
    .await;
    let bound = c
        .wait_phase(NS, "short", "Bound", SEC5)
        .await
        .expect("bound");
    let pod = bound["status"]["pod"]["name"].as_str().unwrap().to_string();
    let released = c
        .wait_phase(NS, "short", "Released", Duration::from_secs(10))
        .await
        .expect("released after its TTL");
    assert_eq!(released["status"]["conditions"][0]["reason"], "TTLExpired");
    for _ in 0..1000 {
        if c.claimed(NS).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(c.claimed(NS).is_empty(), "the pod was given back");
    assert_eq!(
        c.pod(NS, &pod).unwrap()["metadata"]["annotations"][BUSY],
        "false"
    );
}

#[tokio::test]
async fn a_claim_on_a_missing_pool_waits_and_binds_once_the_pool_appears() {
    let c = pool(1).await;
    c.create(
        NS,
        "early",
        json!({"poolRef": {"kind": "HotStandbyDeployment", "name": "later"}}),
    )
    .await;
    let mut waiting = None;
    for _ in 0..2500 {
        let cl = c.claim(NS, "early").unwrap();
        if cl["status"]["conditions"][0]["reason"] == "PoolNotFound" {
            waiting = Some(cl);
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let waiting = waiting.expect("PoolNotFound said");
    assert_eq!(waiting["status"]["phase"], "Pending");
    let events = |c: &Claims| {
        c.api
            .writes
            .since(0)
            .iter()
            .filter(|w| {
                w.method == "POST"
                    && w.path.contains("events")
                    && w.body.to_string().contains("PoolNotFound")
            })
            .count()
    };
    for _ in 0..1000 {
        if events(&c) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(events(&c), 1, "one Warning event");
    assert_eq!(
        writes_to(&c, "PATCH", "/pods/"),
        0,
        "nothing written to any pod"
    );
    for (coll, v) in claim_pool::hsd_pool(NS, "later", 1, 5) {
        c.api.push(coll, "ADDED", v);
    }
    let bound = c
        .wait_phase(NS, "early", "Bound", SEC5)
        .await
        .expect("bound");
    assert_eq!(bound["status"]["pod"]["name"], "later-0");
}

#[tokio::test]
async fn with_no_idle_pod_a_claim_fails_pool_exhausted_after_its_wait() {
    let c = pool(1).await;
    c.create(NS, "first", spec("web")).await;
    c.wait_phase(NS, "first", "Bound", SEC5)
        .await
        .expect("bound");
    c.create(
        NS,
        "second",
        json!({"poolRef": {"kind": "HotStandbyDeployment", "name": "web"}, "waitSeconds": 1}),
    )
    .await;
    let failed = c
        .wait_phase(NS, "second", "Failed", Duration::from_secs(10))
        .await
        .expect("failed");
    assert_eq!(failed["status"]["conditions"][0]["reason"], "PoolExhausted");
    let mut counts = None;
    for _ in 0..1000 {
        counts = c.deps.claims.get(NS, "HotStandbyDeployment", "web");
        if counts.is_some_and(|n| n.exhausted == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let counts = counts.unwrap();
    assert_eq!((counts.claimed, counts.exhausted), (1, 1));
}

#[tokio::test]
async fn bad_input_gets_a_condition_and_touches_no_pod() {
    let c = pool(2).await;
    c.create(
        NS,
        "kind",
        json!({"poolRef": {"kind": "Deployment", "name": "web"}}),
    )
    .await;
    let big = "x".repeat(17 * 1024);
    c.create(NS, "big", json!({"poolRef": {"kind": "HotStandbyDeployment", "name": "web"}, "parameters": {"blob": big}}))
        .await;
    for name in ["kind", "big"] {
        let f = c
            .wait_phase(NS, name, "Failed", SEC5)
            .await
            .expect("failed");
        assert_eq!(
            f["status"]["conditions"][0]["reason"], "InvalidSpec",
            "{name}"
        );
    }
    assert_eq!(writes_to(&c, "PATCH", "/pods/"), 0);
    // A pool whose spec is invalid: the claim waits with InvalidSpec, then fails.
    let mut bad = c.api.object(HSDS, NS, "web").unwrap();
    bad["status"] = json!({"conditions": [{"type": "InvalidSpec", "status": "True", "reason": "InvalidSpec",
        "message": "maxReplicas < minReplicas", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    c.api.push(HSDS, "MODIFIED", bad);
    c.create(
        NS,
        "on-bad",
        json!({"poolRef": {"kind": "HotStandbyDeployment", "name": "web"}, "waitSeconds": 1}),
    )
    .await;
    let f = c
        .wait_phase(NS, "on-bad", "Failed", Duration::from_secs(10))
        .await
        .expect("failed");
    assert_eq!(f["status"]["conditions"][0]["reason"], "InvalidSpec");
    assert_eq!(writes_to(&c, "PATCH", "/pods/"), 0);
}

#[tokio::test]
async fn concurrent_claimers_never_share_a_pod_and_claims_are_served_in_order() {
    let c = claim_pool::start(
        claim_pool::hsd_pool(NS, "web", 5, 5),
        Duration::from_millis(2),
    )
    .await;
    let mut tasks = vec![];
    for i in 0..8 {
        let api = c.claims(NS);
        tasks.push(tokio::spawn(async move {
            let claim: kube_standby::api::claim::HotStandbyClaim = serde_json::from_value(json!({
                "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyClaim",
                "metadata": {"name": format!("c{i}"), "namespace": NS},
                "spec": {"poolRef": {"kind": "HotStandbyDeployment", "name": "web"}, "waitSeconds": 2}
            }))
            .unwrap();
            api.create(&Default::default(), &claim).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut bound = vec![];
    let mut failed = 0;
    for i in 0..8 {
        let name = format!("c{i}");
        let mut phase = None;
        for _ in 0..3000 {
            phase = c.phase(NS, &name);
            if matches!(phase.as_deref(), Some("Bound") | Some("Failed")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        match phase.as_deref() {
            Some("Bound") => bound.push(
                c.claim(NS, &name).unwrap()["status"]["pod"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
            Some("Failed") => failed += 1,
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(bound.len(), 5, "every pod bound once");
    assert_eq!(failed, 3, "the rest ran out of waitSeconds");
    let mut pods = bound.clone();
    pods.sort();
    pods.dedup();
    assert_eq!(pods.len(), 5, "no pod bound twice: {bound:?}");
    assert_eq!(c.claimed(NS).len(), 5);
}

#[tokio::test]
async fn a_hsj_unit_is_claimed_once_and_its_job_finishing_ends_the_claim() {
    let mut items = vec![(claim_pool::HSJS, claim_pool::hsj(NS, "ci"))];
    for i in 0..2 {
        items.push((PODS, claim_pool::job_pod(NS, "ci", i)));
    }
    let c = claim_pool::start(items, Duration::ZERO).await;
    c.create(NS, "run", json!({"poolRef": {"kind": "HotStandbyJob", "name": "ci"}, "parameters": {"commit": "abc"}}))
        .await;
    let bound = c.wait_phase(NS, "run", "Bound", SEC5).await.expect("bound");
    let pod = bound["status"]["pod"]["name"].as_str().unwrap().to_string();
    // The unit's Job finishes: its pod Succeeds.
    let mut done = c.pod(NS, &pod).unwrap();
    done["status"]["phase"] = json!("Succeeded");
    c.api.push(PODS, "MODIFIED", done);
    let released = c
        .wait_phase(NS, "run", "Released", SEC5)
        .await
        .expect("released");
    assert_eq!(released["status"]["conditions"][0]["reason"], "JobFinished");
    // A Recycle on a single-use unit is refused up front.
    c.create(
        NS,
        "recycle",
        json!({"poolRef": {"kind": "HotStandbyJob", "name": "ci"}, "release": "Recycle"}),
    )
    .await;
    let f = c
        .wait_phase(NS, "recycle", "Failed", SEC5)
        .await
        .expect("failed");
    assert_eq!(f["status"]["conditions"][0]["reason"], "InvalidSpec");
    // Deleting a bound claim deletes its unit's Job (the unit is used up).
    c.create(
        NS,
        "second",
        json!({"poolRef": {"kind": "HotStandbyJob", "name": "ci"}}),
    )
    .await;
    let b2 = c
        .wait_phase(NS, "second", "Bound", SEC5)
        .await
        .expect("bound");
    assert_ne!(b2["status"]["pod"]["name"].as_str().unwrap(), pod);
    c.delete(NS, "second").await;
    let mut job_deletes = 0;
    for _ in 0..1000 {
        job_deletes = writes_to(&c, "DELETE", "/jobs/ci-unit-");
        if job_deletes > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(job_deletes >= 1, "the unit's Job is deleted");
}

#[tokio::test]
async fn a_claimed_pod_that_disappears_fails_its_claim_pod_lost() {
    let c = pool(2).await;
    c.create(NS, "lost", spec("web")).await;
    let bound = c
        .wait_phase(NS, "lost", "Bound", SEC5)
        .await
        .expect("bound");
    let name = bound["status"]["pod"]["name"].as_str().unwrap().to_string();
    // Someone else deletes the pod: the watch says DELETED.
    let gone = c.pod(NS, &name).unwrap();
    c.api.push(PODS, "DELETED", gone);
    let failed = c
        .wait_phase(NS, "lost", "Failed", SEC5)
        .await
        .expect("failed");
    assert_eq!(failed["status"]["conditions"][0]["reason"], "PodLost");
    // A later claim gets the other pod, never the lost one.
    c.create(NS, "next", spec("web")).await;
    let next = c
        .wait_phase(NS, "next", "Bound", SEC5)
        .await
        .expect("bound");
    assert_ne!(next["status"]["pod"]["name"], name.as_str());
}
