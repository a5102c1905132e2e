//! Claims against the fake API server in store mode: HSD and HSJ pools with ready idle pods,
//! the claim controller of this process, and helpers to create claims and read what the
//! controller wrote (the fake applies every write and sends it to the watches, so the
//! controller sees its own writes as on a real API server).
#![allow(dead_code)]
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, PostParams};
use kube_standby::api::claim::{HotStandbyClaim, PoolKind};
use kube_standby::api::{hsd::NAME_LABEL as HSD_LABEL, hsj::NAME_LABEL as HSJ_LABEL};
use kube_standby::controller::{claim, Deps};
use serde_json::{json, Value};

use super::fake_apiserver::{self, FakeApi, Objects};

pub const PODS: &str = "/api/v1/pods";
pub const HSDS: &str = "/apis/apps.paia.tech/v1alpha1/hotstandbydeployments";
pub const HSJS: &str = "/apis/apps.paia.tech/v1alpha1/hotstandbyjobs";
pub const CLAIMS: &str = "/apis/apps.paia.tech/v1alpha1/hotstandbyclaims";
pub const CLAIM: &str = "apps.paia.tech/claim";
pub const CLAIM_UID: &str = "apps.paia.tech/claim-uid";
pub const BUSY: &str = "paia.tech/busy";

pub fn hsd(ns: &str, name: &str, max: i32) -> Value {
    json!({
        "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
        "metadata": {"name": name, "namespace": ns, "uid": format!("hsd-{name}"), "resourceVersion": "5", "generation": 1},
        "spec": {"idleTarget": 2, "maxReplicas": max, "selector": {"matchLabels": {"app": name}}, "podTemplate": {}}
    })
}

pub fn hsj(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob",
        "metadata": {"name": name, "namespace": ns, "uid": format!("hsj-{name}"), "resourceVersion": "5", "generation": 1},
        "spec": {"idleTarget": 2, "maxReplicas": 10, "jobTemplate": {"image": "busybox"}}
    })
}

/// A Running, Ready, idle pod of pool `pool` (label `label`) on `node`.
pub fn pod(ns: &str, label: &str, pool: &str, i: usize, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{pool}-{i}"), "namespace": ns, "uid": format!("uid-{pool}-{i}"),
            "resourceVersion": format!("{}", 100 + i), "creationTimestamp": format!("2026-01-01T00:00:{:02}Z", i % 60),
            "labels": {label: pool}, "annotations": {BUSY: "false"}},
        "spec": {"nodeName": node, "containers": [{"name": "app"}]},
        "status": {"phase": "Running", "podIP": format!("10.0.0.{}", i + 1),
            "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

/// A HSJ unit's pod: owned by Job `unit-<i>`.
pub fn job_pod(ns: &str, pool: &str, i: usize) -> Value {
    let mut p = pod(ns, "hsj.paia.tech/name", pool, i, "n0");
    p["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job",
        "name": format!("{pool}-unit-{i}"), "uid": format!("job-{pool}-{i}"), "controller": true}]);
    p
}

/// An HSD pool `name` with `n` idle pods spread over two nodes.
pub fn hsd_pool(ns: &str, name: &str, n: usize, max: i32) -> Vec<(&'static str, Value)> {
    let mut v = vec![(HSDS, hsd(ns, name, max))];
    for i in 0..n {
        v.push((
            PODS,
            pod(ns, "hsd.paia.tech/name", name, i, &format!("n{}", i % 2)),
        ));
    }
    v
}

pub fn objects(items: Vec<(&'static str, Value)>) -> Objects {
    let mut m: std::collections::HashMap<String, Vec<Value>> = Default::default();
    for (coll, v) in items {
        m.entry(coll.to_string()).or_default().push(v);
    }
    Arc::new(m)
}

pub struct Claims {
    pub api: Arc<FakeApi>,
    pub client: kube::Client,
    pub deps: Deps,
    pub stores: claim::Stores,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Claims {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start the fake (store mode, `latency` per write) with `items` and the claim controller.
pub async fn start(items: Vec<(&'static str, Value)>, latency: Duration) -> Claims {
    let api = Arc::new(fake_apiserver::start_with(objects(items)).await);
    api.store_writes(true);
    api.set_write_latency(latency);
    let mut config = kube::Config::new(format!("http://{}", api.addr).parse().unwrap());
    config.default_namespace = "default".into();
    let client = kube::Client::try_from(config).unwrap();
    let deps = Deps::standalone(client.clone());
    let started = claim::start(
        &deps,
        None,
        claim::own_feed(&deps, None, HSD_LABEL, PoolKind::HotStandbyDeployment),
        claim::own_feed(&deps, None, HSJ_LABEL, PoolKind::HotStandbyJob),
    );
    let stores = started.stores.clone();
    let task = tokio::spawn(started.started.run());
    let c = Claims {
        api,
        client,
        deps,
        stores,
        task,
    };
    assert!(
        c.synced().await,
        "the claim controller's caches never listed"
    );
    c
}

impl Claims {
    async fn synced(&self) -> bool {
        for _ in 0..1000 {
            let seen = self
                .api
                .seen
                .0
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default();
            let open = |p: &str| {
                seen.iter()
                    .any(|s| s.contains(&format!("{p}?")) && s.contains("watch=true"))
            };
            if open(PODS) && open(HSDS) && open(HSJS) && open(CLAIMS) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    pub fn claims(&self, ns: &str) -> Api<HotStandbyClaim> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Create a claim from `spec` (JSON); returns when the API server answered.
    pub async fn create(&self, ns: &str, name: &str, spec: Value) -> HotStandbyClaim {
        let c: HotStandbyClaim = serde_json::from_value(json!({
            "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyClaim",
            "metadata": {"name": name, "namespace": ns}, "spec": spec
        }))
        .unwrap();
        self.claims(ns)
            .create(&PostParams::default(), &c)
            .await
            .unwrap()
    }

    pub async fn delete(&self, ns: &str, name: &str) {
        self.claims(ns)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// The served claim.
    pub fn claim(&self, ns: &str, name: &str) -> Option<Value> {
        self.api.object(CLAIMS, ns, name)
    }

    pub fn phase(&self, ns: &str, name: &str) -> Option<String> {
        self.claim(ns, name)?["status"]["phase"]
            .as_str()
            .map(String::from)
    }

    /// Wait (up to `within`) until the claim's phase is `phase`; the served claim.
    pub async fn wait_phase(
        &self,
        ns: &str,
        name: &str,
        phase: &str,
        within: Duration,
    ) -> Option<Value> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.phase(ns, name).as_deref() == Some(phase) {
                return self.claim(ns, name);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    }

    pub fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.api.object(PODS, ns, name)
    }

    /// The pods that carry a claim now: (pod, claim).
    pub fn claimed(&self, ns: &str) -> Vec<(String, String)> {
        self.api
            .objects(PODS)
            .iter()
            .filter(|p| p["metadata"]["namespace"] == ns)
            .filter_map(|p| {
                let c = p["metadata"]["annotations"][CLAIM].as_str()?;
                Some((p["metadata"]["name"].as_str()?.to_string(), c.to_string()))
            })
            .collect()
    }
}
