//! Pure: which of a pool's pods the busy guard holds now, and the `DeletionHeld` Events
//! that says so (one per pod per hold: a pod is announced when it enters the pool's
//! `status.heldPods`, never again while it stays there). Plus the trigger that makes a
//! pool reconcile when one of its pods is held or let go.
use std::collections::BTreeSet;

use futures::Stream;
use kube::runtime::reflector::{ObjectRef, Store};

use super::shell::Note;
use crate::state::HeldPods;

/// The pool's pods (by name) that are held now, sorted.
pub fn held_pods<'a>(
    pool_pods: impl IntoIterator<Item = &'a str>,
    held_now: &BTreeSet<String>,
) -> Vec<String> {
    let mut v: Vec<String> = pool_pods
        .into_iter()
        .filter(|p| held_now.contains(*p))
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// One `DeletionHeld` Event per pod held now that the last status did not list.
pub fn notes(before: &[String], now: &[String]) -> Vec<Note> {
    now.iter()
        .filter(|p| !before.contains(p))
        .map(|p| {
            Note::normal(
                "DeletionHeld",
                format!("pod {p} is busy: its removal (delete or eviction) is held by the busy guard until it is idle"),
            )
        })
        .collect()
}

/// The held pods of a pool whose pods are `pool_pods`, and the Events for the newly held
/// ones (`before`: the pool's last `status.heldPods`).
pub fn observe<'a>(
    held: &HeldPods,
    namespace: &str,
    pool_pods: impl IntoIterator<Item = &'a str>,
    before: Option<&Vec<String>>,
) -> (Vec<String>, Vec<Note>) {
    let now = held_pods(pool_pods, &held.in_namespace(namespace));
    let n = notes(before.map(Vec::as_slice).unwrap_or_default(), &now);
    (now, n)
}

/// The pools to reconcile when the guard holds or lets go of a pod: the pod is looked up
/// in `pods` and mapped to its pool by `owner`. A lagging receiver skips (the resync
/// catches up); a closed channel ends the stream.
pub fn trigger<K, P>(
    held: &HeldPods,
    pods: Store<P>,
    owner: fn(&P) -> Option<ObjectRef<K>>,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: kube::Resource + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
    P: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    futures::stream::unfold(held.subscribe(), move |mut rx| {
        let pods = pods.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok((ns, name)) => {
                        let found = pods.get(&ObjectRef::new(&name).within(&ns));
                        if let Some(r) = found.and_then(|p| owner(&p)) {
                            return Some((r, rx));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_the_pools_own_pods_are_listed_and_each_new_one_is_announced_once() {
        let held: BTreeSet<String> = ["a-1", "a-2", "other-9"].map(String::from).into();
        let now = held_pods(["a-2", "a-1", "a-3"], &held);
        assert_eq!(now, vec!["a-1".to_string(), "a-2".to_string()]);
        let first = notes(&[], &now);
        assert_eq!(first.len(), 2);
        assert!(first
            .iter()
            .all(|n| n.reason == "DeletionHeld" && !n.warning));
        assert!(first[0].message.contains("a-1"), "{}", first[0].message);
        assert!(notes(&now, &now).is_empty(), "no repeat while held");
        let later = notes(&["a-1".to_string()], &now);
        assert_eq!(later.len(), 1);
        assert!(later[0].message.contains("a-2"));
    }

    proptest! {
        /// Every listed pod is the pool's and held; every held pod of the pool is listed;
        /// a pod is announced exactly when it was not listed before.
        #[test]
        fn the_list_is_exactly_the_held_pool_pods(
            pool in proptest::collection::btree_set("[a-e]", 0..5),
            held in proptest::collection::btree_set("[a-h]", 0..6),
            before in proptest::collection::vec("[a-e]", 0..4),
        ) {
            let now = held_pods(pool.iter().map(String::as_str), &held);
            let want: Vec<String> = pool.intersection(&held).cloned().collect();
            prop_assert_eq!(&now, &want);
            let announced: Vec<String> = notes(&before, &now)
                .iter()
                .map(|n| now.iter().find(|p| n.message.contains(&format!("pod {p} "))).cloned().unwrap_or_default())
                .collect();
            let expect: Vec<String> = now.iter().filter(|p| !before.contains(p)).cloned().collect();
            prop_assert_eq!(announced, expect);
        }
    }

    #[tokio::test]
    async fn a_hold_reconciles_the_pool_of_the_pod() {
        use futures::StreamExt;
        use k8s_openapi::api::core::v1::Pod;
        use kube::runtime::watcher::Event;
        let (store, mut writer) = kube::runtime::reflector::store::<Pod>();
        let mut pod = Pod::default();
        pod.metadata.name = Some("w-1".into());
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.labels = Some([("pool".to_string(), "web".to_string())].into());
        writer.apply_watcher_event(&Event::InitApply(pod));
        writer.apply_watcher_event(&Event::InitDone);
        let held = HeldPods::default();
        fn owner(p: &Pod) -> Option<ObjectRef<k8s_openapi::api::apps::v1::Deployment>> {
            crate::controller::labelled_owner("pool", p)
        }
        let mut s = Box::pin(trigger(&held, store, owner));
        let t = std::time::Instant::now();
        held.set("ns", "unknown-pod", true, t);
        held.set("ns", "w-1", true, t);
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), s.next())
            .await
            .expect("a trigger")
            .expect("open");
        assert_eq!(
            (r.name.as_str(), r.namespace.as_deref()),
            ("web", Some("ns"))
        );
    }
}
