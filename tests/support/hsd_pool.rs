//! Plays the API server's and the ReplicaSet controller's part for HotStandbyDeployments
//! that the real HSD controller drives through the fake API server (`fake_apiserver`, which
//! records writes but never applies them): `benches/hsd_churn.rs` and
//! `tests/hsd_coalescing.rs`.
//!
//! The model holds, per HSD, its child Deployment, one ReplicaSet (the child's current one)
//! and that ReplicaSet's pods, each running and ready, busy or idle by the `paia.tech/busy`
//! annotation. [`Sim::follow`] reads the operator's writes as the fake answers them and
//! pushes what a real cluster would show next:
//! - a child write: MODIFIED Deployment with the written `spec.replicas` (status all ready),
//!   then the ReplicaSet's move to that count: new idle pods ADDED, or surplus pods DELETED
//!   in the ReplicaSet's order (lowest pod-deletion-cost first, newest first among equals);
//! - a pod DELETE that passed its preconditions: DELETED pod;
//! - a pod-deletion-cost patch: MODIFIED pod with that cost.
//!
//! [`Sim::flip`] turns a pod busy or idle (a MODIFIED pod event), as the workload would. Every
//! event is built from the model under one lock, so events reach the operator in the order
//! the model changed (a cost patch never undoes a flip). The model also keeps the figures
//! the benchmark prints: for each busy flip, the time to the first child write asking for at
//! least busy + idleTarget replicas, and how long each pool had fewer than idleTarget idle
//! pods while below maxReplicas.
#![allow(dead_code)]
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kube_standby::api::HotStandbyDeployment;
use kube_standby::controller::hsd::child;
use kube_standby::controller::hsd::plan::{COST_IDLE, COST_PROTECTED};
use serde_json::{json, Value};

use crate::fake_apiserver::{FakeApi, Objects, Write};

pub const HSDS: &str = "/apis/apps.paia.tech/v1alpha1/hotstandbydeployments";
pub const DEPLOYMENTS: &str = "/apis/apps/v1/deployments";
pub const REPLICASETS: &str = "/apis/apps/v1/replicasets";
pub const PODS: &str = "/api/v1/pods";
const BUSY: &str = "paia.tech/busy";
/// The first pods' creation time; later pods are a second younger each.
const EPOCH: i64 = 1_767_225_600;

/// One HotStandbyDeployment of the model.
#[derive(Clone, Debug)]
pub struct PoolSpec {
    pub name: String,
    pub idle_target: i32,
    pub max_replicas: i32,
    pub scale_down_delay_seconds: i32,
}

impl PoolSpec {
    /// clamp(busy + idleTarget, 0, maxReplicas).
    pub fn wanted(&self, busy: i32) -> i32 {
        (busy + self.idle_target).clamp(0, self.max_replicas)
    }
}

pub fn hsd_json(ns: &str, s: &PoolSpec) -> Value {
    json!({
        "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyDeployment",
        "metadata": {"name": s.name, "namespace": ns, "uid": format!("hsd-{}-uid", s.name),
                     "generation": 1, "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"idleTarget": s.idle_target, "minReplicas": 0, "maxReplicas": s.max_replicas,
                 "scaleDownDelaySeconds": s.scale_down_delay_seconds,
                 "selector": {"matchLabels": {"app": s.name}},
                 "busyProbe": {"mode": "annotation"},
                 "podTemplate": {"metadata": {"labels": {"app": s.name}},
                                 "spec": {"containers": [{"name": "app", "image": "game:1"}]}}}
    })
}

struct Pod {
    busy: bool,
    cost: Option<String>,
    seq: i64,
}

struct Pool {
    spec: PoolSpec,
    ns: String,
    child: Value,
    child_path: String,
    replicas: i32,
    pods: BTreeMap<String, Pod>,
    next: i64,
    rs_name: String,
    rs_uid: String,
    labels: Value,
    short_since: Option<Instant>,
}

impl Pool {
    fn busy(&self) -> i32 {
        self.pods.values().filter(|p| p.busy).count() as i32
    }

    fn idle(&self) -> i32 {
        self.pods.len() as i32 - self.busy()
    }

    fn pod_json(&self, name: &str, pod: &Pod) -> Value {
        let mut annotations = json!({BUSY: pod.busy.to_string()});
        if let Some(c) = &pod.cost {
            annotations[child::DELETION_COST] = c.clone().into();
        }
        let created = jiff::Timestamp::from_second(EPOCH + pod.seq)
            .map(|t| t.to_string())
            .unwrap_or_default();
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.ns, "uid": format!("uid-{name}"),
                         "creationTimestamp": created, "labels": self.labels, "annotations": annotations,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": self.rs_name,
                                              "uid": self.rs_uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"containers": [{"name": "app", "image": "game:1"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]}
        })
    }

    fn rs_json(&self) -> Value {
        let hash = &self.labels[child::TEMPLATE_HASH_LABEL];
        json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": self.rs_name, "namespace": self.ns, "uid": self.rs_uid, "labels": self.labels,
                         "annotations": {"deployment.kubernetes.io/revision": "1"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": self.child["metadata"]["name"], "uid": self.child["metadata"]["uid"],
                                              "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"replicas": self.replicas,
                     "selector": {"matchLabels": {"app": self.spec.name, child::TEMPLATE_HASH_LABEL: hash}}}
        })
    }

    fn set_child_status(&mut self) {
        let r = self.replicas;
        let generation = self.child["metadata"]["generation"].clone();
        self.child["status"] = json!({"observedGeneration": generation, "replicas": r,
            "updatedReplicas": r, "readyReplicas": r, "availableReplicas": r});
    }

    fn add_pod(&mut self) -> String {
        self.next += 1;
        let name = format!("{}-{}", self.spec.name, self.next);
        let pod = Pod {
            busy: false,
            cost: None,
            seq: self.next,
        };
        self.pods.insert(name.clone(), pod);
        name
    }

    /// The pod the ReplicaSet removes first: the lowest cost (none counts 0), then the newest.
    fn replicaset_victim(&self) -> Option<String> {
        let cost = |p: &Pod| -> i64 { p.cost.as_deref().and_then(|c| c.parse().ok()).unwrap_or(0) };
        self.pods
            .iter()
            .min_by_key(|(_, p)| (cost(p), -p.seq))
            .map(|(n, _)| n.clone())
    }
}

/// A busy flip waiting for its child write.
struct Pending {
    pool: usize,
    pod: String,
    at: Instant,
    target: i32,
    /// The child already asked for the target when the flip was sent: no write is due
    /// unless a later one lowers the count below it (then it waits as any other).
    met_already: bool,
}

/// What the model saw.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    /// Busy flip sent → arrival of the first child write with replicas ≥ busy + idleTarget.
    pub latencies: Vec<Duration>,
    /// The same, to that write's answer (arrival + the write latency).
    pub answered: Vec<Duration>,
    /// Each measured flip: its pool, when it was sent, and the latency (as in `latencies`).
    pub measured: Vec<(usize, Instant, Duration)>,
    /// Busy flips whose target an idle flip of the same pool lowered before it was met.
    pub superseded: usize,
    /// Busy flips the child's count already covered (a scale-down not yet made): no write due.
    pub covered: usize,
    /// Busy flips of a pod whose (earlier) deletion the API server had already committed.
    pub lost_to_delete: usize,
    /// Pods the operator deleted that were busy when the delete committed (must be 0).
    pub busy_deleted_by_operator: usize,
    /// Busy pods the ReplicaSet removed on a lowered count (must be 0).
    pub busy_removed_by_replicaset: usize,
    /// Pod deletes the API server refused (preconditions), pods kept.
    pub deletes_refused: usize,
    /// Longest stretch of a pool below idleTarget idle pods while below maxReplicas.
    pub longest_short: Duration,
    pub longest_short_pool: String,
    pub total_short: Duration,
    pub short_over_2s: usize,
    /// Writes by kind.
    pub writes: BTreeMap<String, usize>,
    /// Writes nobody expected (method and path).
    pub unexpected: Vec<String>,
    /// Flips sent (busy, idle).
    pub busy_flips: usize,
    pub idle_flips: usize,
}

struct State {
    pools: Vec<Pool>,
    /// Pool index by child path and by pod name (a write is matched in O(1), not by a scan
    /// of every pool: the benchmark runs up to 1,000 pools).
    by_child: HashMap<String, usize>,
    by_pod: HashMap<String, usize>,
    pending: Vec<Pending>,
    stats: Stats,
}

/// The model and the fake API server it pushes to.
pub struct Sim {
    api: Arc<FakeApi>,
    state: Mutex<State>,
}

/// The served objects of `specs` in namespace `ns` (each pool with idleTarget idle pods
/// and a child asking for them), and the model that matches them.
pub fn build(ns: &str, specs: &[PoolSpec]) -> (Objects, Model) {
    build_sized(ns, specs, 0)
}

/// [`build`] with `pods` pods per pool at the start (at least idleTarget): idleTarget of
/// them idle, the rest busy, each with the cost the operator wants for it (busy pods
/// protected), and a child asking for them all, so a pool starts settled.
pub fn build_sized(ns: &str, specs: &[PoolSpec], pods: i32) -> (Objects, Model) {
    let mut pools = vec![];
    for s in specs {
        let hsd: HotStandbyDeployment = match serde_json::from_value(hsd_json(ns, s)) {
            Ok(h) => h,
            Err(e) => panic!("hsd: {e}"),
        };
        let tpl = match child::pod_template(&hsd) {
            Ok(t) => t,
            Err(e) => panic!("template: {e}"),
        };
        let replicas = pods.max(s.idle_target);
        let mut c = serde_json::to_value(child::child_deployment(&hsd, tpl.clone(), replicas))
            .unwrap_or_default();
        c["metadata"]["uid"] = format!("dep-{}-uid", s.name).into();
        c["metadata"]["generation"] = 1.into();
        c["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z".into();
        let hash = format!("{:x}", 0x5d8f_7000_u64 + pools.len() as u64);
        let mut labels =
            serde_json::to_value(tpl.metadata.and_then(|m| m.labels)).unwrap_or_else(|_| json!({}));
        labels[child::TEMPLATE_HASH_LABEL] = hash.clone().into();
        let child_name = child::child_name(&s.name);
        let mut pool = Pool {
            spec: s.clone(),
            ns: ns.to_string(),
            child_path: format!("/apis/apps/v1/namespaces/{ns}/deployments/{child_name}"),
            rs_name: format!("{child_name}-{hash}"),
            rs_uid: format!("rs-{}-uid", s.name),
            child: c,
            replicas,
            pods: BTreeMap::new(),
            next: 0,
            labels,
            short_since: None,
        };
        pool.set_child_status();
        for k in 0..replicas {
            let n = pool.add_pod();
            let busy = k < replicas - s.idle_target;
            if let Some(p) = pool.pods.get_mut(&n) {
                p.busy = busy;
                p.cost = Some(if busy { COST_PROTECTED } else { COST_IDLE }.to_string());
            }
        }
        pools.push(pool);
    }
    let mut objects: HashMap<String, Vec<Value>> = HashMap::new();
    let mut serve = |collection: &str, mut v: Value| {
        // Listed objects carry a resourceVersion, as the DELETE preconditions compare it.
        v["metadata"]["resourceVersion"] = "1".into();
        objects.entry(collection.into()).or_default().push(v);
    };
    for p in &pools {
        serve(HSDS, hsd_json(ns, &p.spec));
        serve(DEPLOYMENTS, p.child.clone());
        serve(REPLICASETS, p.rs_json());
        for (n, pod) in &p.pods {
            serve(PODS, p.pod_json(n, pod));
        }
    }
    (Arc::new(objects), Model(pools))
}

/// The model [`build`] made, to hand to [`Sim::new`] once the fake API server serves it.
pub struct Model(Vec<Pool>);

impl Sim {
    pub fn new(api: Arc<FakeApi>, model: Model) -> Arc<Sim> {
        let pools = model.0;
        let by_child = pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.child_path.clone(), i))
            .collect();
        let by_pod = pools
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.pods.keys().map(move |n| (n.clone(), i)))
            .collect();
        Arc::new(Sim {
            api,
            state: Mutex::new(State {
                pools,
                by_child,
                by_pod,
                pending: vec![],
                stats: Stats::default(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn api(&self) -> &FakeApi {
        &self.api
    }

    /// Apply the operator's writes from index `from` on, as they are answered, forever
    /// (abort the task to stop).
    pub async fn follow(self: Arc<Self>, mut from: usize) {
        loop {
            let got = self
                .api
                .writes
                .wait_for(from, Duration::from_millis(500), |_| true)
                .await;
            if got.is_none() {
                continue;
            }
            let new = self.api.writes.since(from);
            from += new.len();
            let mut st = self.lock();
            for w in &new {
                self.apply(&mut st, w);
            }
        }
    }

    fn count(st: &mut State, kind: &str) {
        *st.stats.writes.entry(kind.to_string()).or_default() += 1;
    }

    fn apply(&self, st: &mut State, w: &Write) {
        let child = st.by_child.get(&w.path).copied();
        if let (Some(i), "PATCH") = (child, w.method.as_str()) {
            Self::count(st, "child Deployment");
            if w.status == 200 {
                self.child_written(st, i, w);
            }
            return;
        }
        let pod_prefix = st
            .pools
            .first()
            .map(|p| format!("/api/v1/namespaces/{}/pods/", p.ns))
            .unwrap_or_default();
        if let Some(name) = w.path.strip_prefix(&pod_prefix) {
            match w.method.as_str() {
                "DELETE" => {
                    Self::count(st, "pod delete");
                    self.pod_deleted(st, name, w);
                }
                "PATCH" => {
                    Self::count(st, "pod cost");
                    self.pod_patched(st, name, w);
                }
                _ => st.stats.unexpected.push(format!("{} {}", w.method, w.path)),
            }
            return;
        }
        if w.path.contains("/hotstandbydeployments/") && w.path.ends_with("/status") {
            Self::count(st, "HSD status");
        } else if w.path.contains("/events") {
            Self::count(st, "event");
        } else {
            Self::count(st, "other");
            st.stats.unexpected.push(format!("{} {}", w.method, w.path));
        }
    }

    fn child_written(&self, st: &mut State, i: usize, w: &Write) {
        let Some(r) = w.body["spec"]["replicas"].as_i64() else {
            return;
        };
        let r = r as i32;
        let now = Instant::now();
        {
            let pool = &mut st.pools[i];
            pool.child["metadata"]["annotations"] = w.body["metadata"]["annotations"].clone();
            pool.child["spec"] = w.body["spec"].clone();
            let generation = pool.child["metadata"]["generation"].as_i64().unwrap_or(1);
            pool.child["metadata"]["generation"] = (generation + 1).into();
            pool.replicas = r;
            pool.set_child_status();
            self.api.push(DEPLOYMENTS, "MODIFIED", pool.child.clone());
        }
        // The busy flips this write answers (one sent after the flip, asking enough).
        let mut waiting = vec![];
        for mut p in std::mem::take(&mut st.pending) {
            match (p.pool == i && w.at >= p.at, p.target <= r, p.met_already) {
                (false, _, _) => waiting.push(p),
                (true, true, true) => st.stats.covered += 1,
                (true, true, false) => {
                    let latency = w.at.saturating_duration_since(p.at);
                    st.stats.measured.push((p.pool, p.at, latency));
                    st.stats.latencies.push(latency);
                    st.stats
                        .answered
                        .push(w.answered.saturating_duration_since(p.at));
                }
                (true, false, _) => {
                    p.met_already = false;
                    waiting.push(p);
                }
            }
        }
        st.pending = waiting;
        // The ReplicaSet follows.
        let pool = &mut st.pools[i];
        while (pool.pods.len() as i32) < r {
            let name = pool.add_pod();
            if let Some(p) = pool.pods.get(&name) {
                self.api.push(PODS, "ADDED", pool.pod_json(&name, p));
            }
            st.by_pod.insert(name, i);
        }
        let mut removed_busy = vec![];
        while (pool.pods.len() as i32) > r {
            let Some(name) = pool.replicaset_victim() else {
                break;
            };
            if let Some(p) = pool.pods.remove(&name) {
                if p.busy {
                    removed_busy.push(name.clone());
                }
                self.api.push(PODS, "DELETED", pool.pod_json(&name, &p));
            }
            st.by_pod.remove(&name);
        }
        st.stats.busy_removed_by_replicaset += removed_busy.len();
        st.pending.retain(|p| !removed_busy.contains(&p.pod));
        Self::touch(st, i, now);
    }

    fn pool_of(st: &State, pod: &str) -> Option<usize> {
        st.by_pod.get(pod).copied()
    }

    fn pod_deleted(&self, st: &mut State, name: &str, w: &Write) {
        if w.status != 200 {
            st.stats.deletes_refused += 1;
            return;
        }
        if w.answer["metadata"]["annotations"][BUSY] == "true" {
            st.stats.busy_deleted_by_operator += 1;
        }
        let Some(i) = Self::pool_of(st, name) else {
            return;
        };
        let pool = &mut st.pools[i];
        let Some(p) = pool.pods.remove(name) else {
            return;
        };
        st.by_pod.remove(name);
        if p.busy {
            // Flipped after the delete committed: a real API server would have refused the
            // flip (the pod was gone).
            st.stats.lost_to_delete += 1;
            st.pending.retain(|x| x.pod != name);
        }
        let pool = &st.pools[i];
        self.api.push(PODS, "DELETED", pool.pod_json(name, &p));
        Self::touch(st, i, Instant::now());
    }

    fn pod_patched(&self, st: &mut State, name: &str, w: &Write) {
        let Some(cost) = w.body["metadata"]["annotations"][child::DELETION_COST].as_str() else {
            st.stats
                .unexpected
                .push(format!("{} {} {}", w.method, w.path, w.body));
            return;
        };
        let Some(i) = Self::pool_of(st, name) else {
            return;
        };
        let pool = &mut st.pools[i];
        if let Some(p) = pool.pods.get_mut(name) {
            p.cost = Some(cost.to_string());
        }
        if let Some(p) = pool.pods.get(name) {
            self.api.push(PODS, "MODIFIED", pool.pod_json(name, p));
        }
    }

    /// Record the pool's idle shortfall as of `now`.
    fn touch(st: &mut State, i: usize, now: Instant) {
        let pool = &mut st.pools[i];
        let short = pool.idle() < pool.spec.idle_target
            && (pool.pods.len() as i32) < pool.spec.max_replicas;
        match (short, pool.short_since) {
            (true, None) => pool.short_since = Some(now),
            (false, Some(since)) => {
                pool.short_since = None;
                let d = now.saturating_duration_since(since);
                let name = pool.spec.name.clone();
                Self::stretch(&mut st.stats, d, name);
            }
            _ => {}
        }
    }

    fn stretch(stats: &mut Stats, d: Duration, pool: String) {
        stats.total_short += d;
        if d > Duration::from_secs(2) {
            stats.short_over_2s += 1;
        }
        if d > stats.longest_short {
            stats.longest_short = d;
            stats.longest_short_pool = pool;
        }
    }

    /// (busy, idle) pods of pool `i`.
    pub fn counts(&self, i: usize) -> (i32, i32) {
        let st = self.lock();
        st.pools.get(i).map_or((0, 0), |p| (p.busy(), p.idle()))
    }

    /// The replicas the child of pool `i` asks for now, and what the operator should ask
    /// for: clamp(busy + idleTarget, 0, max).
    pub fn replicas_and_wanted(&self, i: usize) -> (i32, i32) {
        let st = self.lock();
        st.pools
            .get(i)
            .map_or((0, 0), |p| (p.replicas, p.spec.wanted(p.busy())))
    }

    /// How many pods pool `i` has.
    pub fn pods(&self, i: usize) -> usize {
        self.lock().pools.get(i).map_or(0, |p| p.pods.len())
    }

    /// Turn the `pick`-th (modulo) idle pod of pool `i` busy (`busy`), or the `pick`-th busy
    /// pod idle. None when there is no such pod. A busy flip waits for its child write.
    pub fn flip(&self, i: usize, pick: usize, busy: bool) -> Option<String> {
        let mut st = self.lock();
        let pool = st.pools.get_mut(i)?;
        let candidates: Vec<String> = pool
            .pods
            .iter()
            .filter(|(_, p)| p.busy != busy)
            .map(|(n, _)| n.clone())
            .collect();
        let name = candidates.get(pick % candidates.len().max(1))?.clone();
        let p = pool.pods.get_mut(&name)?;
        p.busy = busy;
        let target = pool.spec.wanted(pool.busy());
        let met_already = pool.replicas >= target;
        let event = pool.pods.get(&name).map(|p| pool.pod_json(&name, p))?;
        let at = Instant::now();
        self.api.push(PODS, "MODIFIED", event);
        if busy {
            st.stats.busy_flips += 1;
            st.pending.push(Pending {
                pool: i,
                pod: name.clone(),
                at,
                target,
                met_already,
            });
        } else {
            st.stats.idle_flips += 1;
            let before = st.pending.len();
            st.pending.retain(|p| p.pool != i || p.target <= target);
            st.stats.superseded += before - st.pending.len();
        }
        Self::touch(&mut st, i, at);
        Some(name)
    }

    /// The figures so far; open shortfalls count up to now, busy flips still waiting are
    /// returned apart (their age).
    pub fn stats(&self) -> (Stats, Vec<Duration>) {
        let st = self.lock();
        let now = Instant::now();
        let mut stats = st.stats.clone();
        for p in &st.pools {
            if let Some(since) = p.short_since {
                Self::stretch(
                    &mut stats,
                    now.saturating_duration_since(since),
                    p.spec.name.clone(),
                );
            }
        }
        stats.covered += st.pending.iter().filter(|p| p.met_already).count();
        let waiting = st
            .pending
            .iter()
            .filter(|p| !p.met_already)
            .map(|p| now.saturating_duration_since(p.at))
            .collect();
        (stats, waiting)
    }
}
