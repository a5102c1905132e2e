//! Which claims and which pods belong to which pool: a small index fed by the watch events,
//! so a pass reads only its own pool's objects and a pod event asks "does a claim name
//! this pool?" in constant time, instead of scanning every cached claim and pod.
//!
//! Invariants:
//! - the index holds every name the committed cache holds under a pool (an event notes an
//!   object before the pass it triggers runs; a relist rebuilds from the committed cache);
//! - it may also hold names the cache no longer has under that pool (a watch event in
//!   flight, a pool label changed): readers look each name up in the cache, check it
//!   still belongs to the pool, and [`Members::forget`] what does not;
//! - a pool with no member has no entry, so the index is as large as what is cached.
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::observe::PoolKey;

/// Objects of one kind (claims, or pods) by pool, and each object's pool. Each object's
/// name is kept once (shared by both maps), each pool's key once (shared by its members),
/// each namespace once: about 100 bytes per object instead of ~360 with a `String` per
/// use (issue 22, memory: 10,000 pool pods are indexed twice).
#[derive(Debug, Default)]
pub struct Members {
    by_pool: HashMap<Arc<PoolKey>, BTreeSet<Arc<str>>>,
    /// namespace → name → its pool.
    pool_of: HashMap<Arc<str>, HashMap<Arc<str>, Arc<PoolKey>>>,
    /// Objects indexed.
    len: usize,
}

impl Members {
    /// An object was seen belonging to `pool` (`None`: to no pool, or deleted).
    pub fn note(&mut self, namespace: &str, name: &str, pool: Option<PoolKey>) {
        let current = self.pool_of.get(namespace).and_then(|m| m.get(name));
        match (&pool, current) {
            (Some(p), Some(c)) if **c == *p => return,
            (None, None) => return,
            _ => {}
        }
        let old = self.remove_of(namespace, name);
        if let Some(old) = &old {
            self.drop_member(old, name);
        }
        let Some(p) = pool else { return };
        let (key, set) = match self.by_pool.get_key_value(&p) {
            Some((k, _)) => (k.clone(), None),
            None => (Arc::new(p), Some(BTreeSet::new())),
        };
        let name: Arc<str> = Arc::from(name);
        let ns = match self.pool_of.get_key_value(namespace) {
            Some((k, _)) => k.clone(),
            None => Arc::from(namespace),
        };
        self.pool_of
            .entry(ns)
            .or_default()
            .insert(name.clone(), key.clone());
        self.len += 1;
        self.by_pool
            .entry(key)
            .or_insert_with(|| set.unwrap_or_default())
            .insert(name);
    }

    /// Take `name`'s entry out of `pool_of`; its pool, if it had one.
    fn remove_of(&mut self, namespace: &str, name: &str) -> Option<Arc<PoolKey>> {
        let names = self.pool_of.get_mut(namespace)?;
        let old = names.remove(name)?;
        if names.is_empty() {
            self.pool_of.remove(namespace);
        }
        self.len -= 1;
        Some(old)
    }

    /// A reader found `name` not (or no longer) under `pool` in the cache.
    pub fn forget(&mut self, pool: &PoolKey, name: &str) {
        let current = self
            .pool_of
            .get(pool.namespace.as_str())
            .and_then(|m| m.get(name));
        if current.is_some_and(|c| **c == *pool) {
            self.remove_of(&pool.namespace, name);
        }
        self.drop_member(pool, name);
    }

    fn drop_member(&mut self, pool: &PoolKey, name: &str) {
        if let Some(set) = self.by_pool.get_mut(pool) {
            set.remove(name);
            if set.is_empty() {
                self.by_pool.remove(pool);
            }
        }
    }

    /// The names under `pool`, in name order.
    pub fn of(&self, pool: &PoolKey) -> Vec<String> {
        self.by_pool
            .get(pool)
            .map(|s| s.iter().map(|n| n.to_string()).collect())
            .unwrap_or_default()
    }

    /// How many objects belong to `pool`.
    pub fn count(&self, pool: &PoolKey) -> usize {
        self.by_pool.get(pool).map_or(0, BTreeSet::len)
    }

    /// Does any object belong to `pool`?
    pub fn any(&self, pool: &PoolKey) -> bool {
        self.by_pool.contains_key(pool)
    }

    /// Every pool with a member.
    pub fn pools(&self) -> Vec<PoolKey> {
        self.by_pool.keys().map(|k| PoolKey::clone(k)).collect()
    }

    /// Start again from what a committed cache holds.
    pub fn rebuild<'a>(&mut self, objects: impl IntoIterator<Item = (&'a str, &'a str, PoolKey)>) {
        self.by_pool.clear();
        self.pool_of.clear();
        self.len = 0;
        for (ns, name, pool) in objects {
            self.note(ns, name, Some(pool));
        }
    }

    /// Objects indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The claim controller's index: claims and pool pods.
#[derive(Debug, Default)]
pub struct PoolIndex {
    pub claims: Members,
    pub pods: Members,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(name: &str) -> PoolKey {
        PoolKey::new("ns", "HotStandbyDeployment", name)
    }

    #[test]
    fn an_object_moves_between_pools_and_leaves_no_empty_pool() {
        let mut m = Members::default();
        m.note("ns", "a", Some(key("p")));
        m.note("ns", "b", Some(key("p")));
        assert_eq!(m.of(&key("p")), vec!["a", "b"]);
        m.note("ns", "a", Some(key("q")));
        assert_eq!(m.of(&key("p")), vec!["b"]);
        assert_eq!(m.of(&key("q")), vec!["a"]);
        m.note("ns", "b", None);
        assert!(!m.any(&key("p")), "an emptied pool has no entry");
        m.forget(&key("q"), "a");
        assert!(m.is_empty() && m.pools().is_empty());
    }

    #[test]
    fn forgetting_a_stale_pool_keeps_the_current_one() {
        let mut m = Members::default();
        m.note("ns", "a", Some(key("p")));
        m.note("ns", "a", Some(key("q")));
        m.forget(&key("p"), "a");
        assert_eq!(m.of(&key("q")), vec!["a"]);
        assert_eq!(m.len(), 1);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Note(u8, Option<u8>),
        Forget(u8, u8),
        Rebuild,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..6, proptest::option::of(0u8..3)).prop_map(|(o, p)| Op::Note(o, p)),
            1 => (0u8..6, 0u8..3).prop_map(|(o, p)| Op::Forget(o, p)),
            1 => Just(Op::Rebuild),
        ]
    }

    proptest! {
        /// Against a plain map of object → pool (what the cache says): after any sequence
        /// of notes, stale forgets (a reader's check of a pool the object is not in) and
        /// rebuilds, the index lists exactly the cache's members of every pool.
        #[test]
        fn the_index_lists_exactly_what_the_cache_holds(ops in proptest::collection::vec(op(), 0..60)) {
            let mut m = Members::default();
            let mut truth: HashMap<String, PoolKey> = HashMap::new();
            for op in ops {
                match op {
                    Op::Note(o, p) => {
                        let name = format!("o{o}");
                        let pool = p.map(|p| key(&format!("p{p}")));
                        match &pool {
                            Some(p) => { truth.insert(name.clone(), p.clone()); }
                            None => { truth.remove(&name); }
                        }
                        m.note("ns", &name, pool);
                    }
                    Op::Forget(o, p) => {
                        let (name, pool) = (format!("o{o}"), key(&format!("p{p}")));
                        // A reader forgets only what the cache does not hold there.
                        if truth.get(&name) != Some(&pool) {
                            m.forget(&pool, &name);
                        }
                    }
                    Op::Rebuild => {
                        let items: Vec<(String, PoolKey)> =
                            truth.iter().map(|(n, p)| (n.clone(), p.clone())).collect();
                        m.rebuild(items.iter().map(|(n, p)| ("ns", n.as_str(), p.clone())));
                    }
                }
                for p in 0..3 {
                    let pool = key(&format!("p{p}"));
                    let mut want: Vec<String> = truth
                        .iter()
                        .filter(|(_, k)| **k == pool)
                        .map(|(n, _)| n.clone())
                        .collect();
                    want.sort();
                    prop_assert_eq!(m.of(&pool), want.clone());
                    prop_assert_eq!(m.any(&pool), !want.is_empty());
                }
                prop_assert_eq!(m.len(), truth.len());
            }
        }
    }
}
