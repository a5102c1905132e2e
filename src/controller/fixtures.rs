//! Test fixtures the controllers' unit tests share (compiled only for tests).
use kube::runtime::reflector::{self, Store};

/// A running pod `name` in namespace "ns" with one label, as a cache would hold it (a
/// full `Pod` or a `PoolPod`).
pub fn cached_pod<P: serde::de::DeserializeOwned>(name: &str, label: (&str, &str)) -> P {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                     "labels": {label.0: label.1}},
        "spec": {"containers": [{"name": "main"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.9"}
    }))
    .expect("a valid pod")
}

/// A store that has listed `objs`.
pub fn store_of<K>(objs: Vec<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut w) = reflector::store::<K>();
    for o in objs {
        w.apply_watcher_event(&kube::runtime::watcher::Event::InitApply(o));
    }
    w.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
    store
}
