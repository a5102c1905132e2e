//! Which cached pods belong to which HotStandbyDeployment (by its name label), fed by the
//! pod watch's events, so a reconcile reads its own pods instead of collecting every cached
//! pod of the namespace (1,000 HSDs of 10 pods in one namespace: 10 lookups, not 10,000).
//!
//! Invariants (those of [`crate::controller::claim::index::Members`]):
//! - every pod the committed cache holds under an HSD is indexed under it: an event is noted
//!   before the controller hears of it, and the end of a (re)list rebuilds the index from
//!   the committed cache;
//! - the index may also name pods the cache no longer holds under that HSD (an event in
//!   flight, a label changed): [`PodMembers::pods`] looks each one up in the cache, keeps it
//!   only if it still carries the HSD's label, and forgets the others.
use std::sync::{Arc, Mutex, MutexGuard};

use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use super::child::NAME_LABEL;
use crate::api::claim::PoolKind;
use crate::api::tags::Tags;
use crate::controller::claim::index::Members;
use crate::controller::claim::PoolKey;
use crate::controller::pool_pod::PoolPod;

/// An HSD holding over 1/`SCAN_OVER` of the cached pods is read by a pass over the cache.
const SCAN_OVER: usize = 8;

/// The HSD pod index, shared by the watch that feeds it and the reconciles that read it.
#[derive(Clone, Default)]
pub struct PodMembers(Arc<Mutex<Members>>);

fn key(namespace: &str, hsd: &str) -> PoolKey {
    PoolKey::new(namespace, PoolKind::HotStandbyDeployment.as_str(), hsd)
}

/// The HSD a cached pod belongs to, by its name label.
fn hsd_of(pod: &PoolPod) -> Option<PoolKey> {
    PoolKey::of_pod(pod).filter(|k| k.kind() == Some(PoolKind::HotStandbyDeployment))
}

/// Is the cached pod one of HSD `hsd` in `namespace`? (No allocation: read per pod.)
fn belongs(pod: &PoolPod, namespace: &str, hsd: &str) -> bool {
    pod.meta.namespace.as_deref() == Some(namespace) && pod.label(NAME_LABEL) == Some(hsd)
}

impl PodMembers {
    fn lock(&self) -> MutexGuard<'_, Members> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// An index of what `pods` holds now.
    pub fn of_store(pods: &Store<PoolPod>) -> Self {
        let m = PodMembers::default();
        m.rebuild(pods);
        m
    }

    /// Start again from the committed cache.
    pub fn rebuild(&self, pods: &Store<PoolPod>) {
        let all = pods.state();
        self.lock().rebuild(all.iter().filter_map(|p| {
            let (ns, name) = (p.meta.namespace.as_deref()?, p.meta.name.as_deref()?);
            Some((ns, name, hsd_of(p)?))
        }));
    }

    /// Note one watch event (after `pods` applied it); the pod it concerns, if any, for the
    /// controller's trigger.
    pub fn on_event(&self, pods: &Store<PoolPod>, ev: watcher::Event<PoolPod>) -> Option<PoolPod> {
        let (pod, gone) = match ev {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
            watcher::Event::Delete(p) => (p, true),
            watcher::Event::Init => return None,
            watcher::Event::InitDone => {
                self.rebuild(pods);
                return None;
            }
        };
        if let (Some(ns), Some(name)) = (pod.meta.namespace.as_deref(), pod.meta.name.as_deref()) {
            let hsd = if gone { None } else { hsd_of(&pod) };
            self.lock().note(ns, name, hsd);
        }
        Some(pod)
    }

    /// The cached pods of HSD `hsd` in `namespace`; names the cache no longer holds under
    /// it are forgotten. Looked up by name when the HSD holds under an eighth of the cache:
    /// then exactly its pods. An HSD holding more (one pool of 10,000 pods) is read by one
    /// pass over the cache, which costs less than that many lookups, and then gets every
    /// cached pod of the namespace (at most eight times its own; the caller keeps only the
    /// pods its child's ReplicaSets control, as [`super::child::counted_pods`] does).
    pub fn pods(&self, pods: &Store<PoolPod>, namespace: &str, hsd: &str) -> Vec<Arc<PoolPod>> {
        self.read(pods, namespace, hsd, SCAN_OVER)
    }

    /// [`PodMembers::pods`], scanning the cache when the HSD's indexed pods times
    /// `scan_over` exceed the cache's size (0: never scan).
    fn read(
        &self,
        pods: &Store<PoolPod>,
        namespace: &str,
        hsd: &str,
        scan_over: usize,
    ) -> Vec<Arc<PoolPod>> {
        let k = key(namespace, hsd);
        let indexed = self.lock().count(&k);
        if indexed.saturating_mul(scan_over) > pods.len() {
            return pods
                .state()
                .into_iter()
                .filter(|p| p.meta.namespace.as_deref() == Some(namespace))
                .collect();
        }
        let names = self.lock().of(&k);
        let mut found = Vec::with_capacity(names.len());
        let mut stale = vec![];
        for name in names {
            match pods.get(&ObjectRef::new(&name).within(namespace)) {
                Some(p) if belongs(&p, namespace, hsd) => found.push(p),
                _ => stale.push(name),
            }
        }
        if !stale.is_empty() {
            let mut m = self.lock();
            for name in stale {
                m.forget(&k, &name);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use proptest::prelude::*;

    fn pod(name: &str, hsd: Option<&str>) -> PoolPod {
        let mut p = PoolPod::default();
        p.meta.name = Some(name.into());
        p.meta.namespace = Some("ns".into());
        p.labels = crate::api::tags::Pairs::from_entries(hsd.map(|h| (NAME_LABEL, h)));
        p
    }

    fn names(pods: Vec<Arc<PoolPod>>) -> Vec<String> {
        let mut v: Vec<String> = pods.iter().filter_map(|p| p.meta.name.clone()).collect();
        v.sort();
        v
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Pod i applied, labelled for HSD h (None: no label).
        Apply(usize, Option<usize>),
        Delete(usize),
        /// A relist of what the cache holds.
        Relist,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..8, proptest::option::of(0usize..3)).prop_map(|(i, h)| Op::Apply(i, h)),
            2 => (0usize..8).prop_map(Op::Delete),
            1 => Just(Op::Relist),
        ]
    }

    proptest! {
        /// After any sequence of watch events, each HSD's pods read through the index are
        /// exactly the cached pods carrying its label.
        #[test]
        fn the_index_reads_exactly_the_cached_pods_of_each_hsd(ops in proptest::collection::vec(op(), 0..40)) {
            let (store, mut w) = reflector::store::<PoolPod>();
            let members = PodMembers::default();
            let mut apply = |ev: watcher::Event<PoolPod>| {
                w.apply_watcher_event(&ev);
                members.on_event(&store, ev);
            };
            apply(watcher::Event::Init);
            apply(watcher::Event::InitDone);
            let mut live: std::collections::BTreeMap<usize, Option<usize>> = Default::default();
            for op in ops {
                match op {
                    Op::Apply(i, h) => {
                        live.insert(i, h);
                        let hsd = h.map(|h| format!("h{h}"));
                        apply(watcher::Event::Apply(pod(&format!("p{i}"), hsd.as_deref())));
                    }
                    Op::Delete(i) => {
                        if let Some(h) = live.remove(&i) {
                            let hsd = h.map(|h| format!("h{h}"));
                            apply(watcher::Event::Delete(pod(&format!("p{i}"), hsd.as_deref())));
                        }
                    }
                    Op::Relist => {
                        apply(watcher::Event::Init);
                        for (i, h) in &live {
                            let hsd = h.map(|h| format!("h{h}"));
                            apply(watcher::Event::InitApply(pod(&format!("p{i}"), hsd.as_deref())));
                        }
                        apply(watcher::Event::InitDone);
                    }
                }
                for h in 0..3 {
                    let want: Vec<String> = live
                        .iter()
                        .filter(|(_, ph)| **ph == Some(h))
                        .map(|(i, _)| format!("p{i}"))
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    // By name through the index: exactly the HSD's pods.
                    let got = names(members.read(&store, "ns", &format!("h{h}"), 0));
                    prop_assert_eq!(&got, &want);
                    // By a pass: every pod of the namespace, so the HSD's among them.
                    let all = names(members.read(&store, "ns", &format!("h{h}"), usize::MAX));
                    if !want.is_empty() {
                        let live_names: Vec<String> = live.keys().map(|i| format!("p{i}")).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
                        prop_assert_eq!(all, live_names);
                    }
                }
            }
        }
    }

    #[test]
    fn a_pod_relabelled_away_is_not_read_and_is_forgotten() {
        let (store, mut w) = reflector::store::<PoolPod>();
        w.apply_watcher_event(&watcher::Event::InitApply(pod("a", Some("web"))));
        w.apply_watcher_event(&watcher::Event::InitDone);
        let m = PodMembers::of_store(&store);
        assert_eq!(names(m.pods(&store, "ns", "web")), vec!["a".to_string()]);
        assert!(m.pods(&store, "other", "web").is_empty());
        // The cache changed without the index hearing of it (an event still in flight).
        w.apply_watcher_event(&watcher::Event::Apply(pod("a", Some("db"))));
        assert!(m.read(&store, "ns", "web", 0).is_empty());
        assert!(m.lock().is_empty(), "the stale name is forgotten");
    }
}
