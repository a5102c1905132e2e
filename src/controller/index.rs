//! Small per-namespace indexes of the facts a planner reads, fed by watch events.
//!
//! A reflector store keeps every watched object whole (a Pod is tens of KB with its managed
//! fields and status; a Node more). An `Index` keeps only a small fact struct per object,
//! built once from each watch event, grouped by namespace so a reconcile reads its own
//! namespace without scanning the cluster.
//!
//! Invariants (the same as kube's reflector):
//! - during a (re)list the new objects are buffered and swapped in whole at `InitDone`, so a
//!   reader never sees a half-listed index (a Node missing from a re-list in progress is
//!   not "deleted");
//! - `ready()` resolves only after the first complete list.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use kube::Resource;
use tokio::sync::watch;

type ByNamespace<F> = HashMap<String, HashMap<String, Arc<F>>>;

struct Inner<F> {
    live: ByNamespace<F>,
    /// The list in progress, if any.
    relist: Option<ByNamespace<F>>,
}

/// Facts of type `F` by namespace ("" for cluster-scoped objects) and name.
pub struct Index<F> {
    inner: Arc<RwLock<Inner<F>>>,
    ready: Arc<watch::Sender<bool>>,
    /// Woken after every applied change (long-polls waiting on a fact wake at once).
    changed: Arc<tokio::sync::Notify>,
}

impl<F> Clone for Index<F> {
    fn clone(&self) -> Self {
        Index {
            inner: self.inner.clone(),
            ready: self.ready.clone(),
            changed: self.changed.clone(),
        }
    }
}

impl<F> Default for Index<F> {
    fn default() -> Self {
        Index {
            inner: Arc::new(RwLock::new(Inner {
                live: HashMap::new(),
                relist: None,
            })),
            ready: Arc::new(watch::channel(false).0),
            changed: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

fn key<K: Resource>(obj: &K) -> (String, String) {
    let m = obj.meta();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

impl<F> Index<F> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner<F>> {
        match self.inner.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner<F>> {
        match self.inner.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The facts of one object (`namespace` "" for cluster-scoped kinds).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<F>> {
        self.read().live.get(namespace)?.get(name).cloned()
    }

    /// Every object of one namespace.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<F>> {
        self.read()
            .live
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// How many objects are indexed.
    pub fn len(&self) -> usize {
        self.read().live.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Resolves once the first list is complete.
    pub async fn ready(&self) -> bool {
        self.ready.subscribe().wait_for(|r| *r).await.is_ok()
    }

    /// Notified after every change applied to the live index (an object applied or
    /// deleted, a list swapped in). Create the `notified()` future (and `enable` it) before
    /// reading, so a change between the read and the wait is not missed.
    pub fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    /// Apply one watch event, turning objects into facts with `facts`.
    pub fn apply<K: Resource>(&self, ev: &watcher::Event<K>, facts: impl Fn(&K) -> F) {
        self.apply_inner(ev, facts);
        if !matches!(ev, watcher::Event::Init | watcher::Event::InitApply(_)) {
            self.changed.notify_waiters();
        }
    }

    fn apply_inner<K: Resource>(&self, ev: &watcher::Event<K>, facts: impl Fn(&K) -> F) {
        let mut g = self.write();
        match ev {
            watcher::Event::Apply(o) => {
                let (ns, name) = key(o);
                g.live
                    .entry(ns)
                    .or_default()
                    .insert(name, Arc::new(facts(o)));
            }
            watcher::Event::Delete(o) => {
                let (ns, name) = key(o);
                if let Some(m) = g.live.get_mut(&ns) {
                    m.remove(&name);
                    if m.is_empty() {
                        g.live.remove(&ns);
                    }
                }
            }
            watcher::Event::Init => g.relist = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                let (ns, name) = key(o);
                g.relist
                    .get_or_insert_with(HashMap::new)
                    .entry(ns)
                    .or_default()
                    .insert(name, Arc::new(facts(o)));
            }
            watcher::Event::InitDone => {
                g.live = g.relist.take().unwrap_or_default();
                drop(g);
                self.ready.send_replace(true);
            }
        }
    }
}

/// Feed `index` from a watch stream; yields each object an event touched (for triggers).
pub fn feed<K, F, S>(
    events: S,
    index: Index<F>,
    facts: impl Fn(&K) -> F + Send + 'static,
) -> impl Stream<Item = K> + Send
where
    K: Resource + Clone + Send + 'static,
    F: Send + Sync + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    events.filter_map(move |ev| {
        let touched = match ev {
            Ok(ev) => {
                index.apply(&ev, &facts);
                match ev {
                    watcher::Event::Apply(o) | watcher::Event::Delete(o) => Some(o),
                    watcher::Event::InitApply(o) => Some(o),
                    _ => None,
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "watch error (retried with backoff)");
                None
            }
        };
        async move { touched }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(ns: &str, name: &str) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": ns}}))
            .unwrap()
    }

    fn name(p: &Pod) -> String {
        p.metadata.name.clone().unwrap_or_default()
    }

    #[tokio::test]
    async fn a_relist_is_swapped_in_whole_and_ready_only_after_the_first() {
        let idx: Index<String> = Index::default();
        idx.apply(&watcher::Event::Init, name);
        idx.apply(&watcher::Event::InitApply(pod("a", "p1")), name);
        assert!(!idx.is_ready());
        assert!(idx.get("a", "p1").is_none(), "not visible before InitDone");
        idx.apply(&watcher::Event::<Pod>::InitDone, name);
        assert!(idx.is_ready());
        assert!(idx.ready().await);
        assert_eq!(
            idx.get("a", "p1").as_deref().map(String::as_str),
            Some("p1")
        );
        idx.apply(&watcher::Event::Apply(pod("b", "p2")), name);
        assert_eq!(idx.in_namespace("b").len(), 1);
        assert_eq!(idx.len(), 2);
        // A re-list in progress: the old contents stay until it completes.
        idx.apply(&watcher::Event::<Pod>::Init, name);
        idx.apply(&watcher::Event::InitApply(pod("a", "p3")), name);
        assert!(idx.get("a", "p1").is_some(), "still there mid re-list");
        idx.apply(&watcher::Event::<Pod>::InitDone, name);
        assert!(idx.get("a", "p1").is_none() && idx.get("b", "p2").is_none());
        assert!(idx.get("a", "p3").is_some());
        idx.apply(&watcher::Event::Delete(pod("a", "p3")), name);
        assert!(idx.is_empty());
        assert!(idx.in_namespace("a").is_empty());
    }
}
