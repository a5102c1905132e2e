//! Reading an object's labels and annotations, whichever way they are kept: whole, as the
//! API types keep them (`ObjectMeta`'s two `BTreeMap`s), or compact ([`Pairs`], as the
//! pool pod cache keeps them, issue 22: a `BTreeMap` costs a 540-byte node and two
//! `String`s per entry even for one label; 10,000 cached pods paid ~1.5 KB each for it).
//!
//! Invariants:
//! - a [`Pairs`] is sorted by key, each key once; `get` answers what the object's map
//!   answered (on a repeated JSON key, the last value wins, as in a `BTreeMap`);
//! - interning only shares equal values: a looked-up value is the text that was parsed;
//!   a whole [`Pairs`] is interned too (a ReplicaSet's pods carry the same labels, so
//!   10,000 pods of 1,000 pools hold about 1,000 label sets, not 10,000; issue 22);
//! - an interner never grows without bound: when it doubles, the values no object
//!   holds any more are dropped from it. No I/O, no panics.
use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Labels and annotations by key.
pub trait Tags {
    fn label(&self, key: &str) -> Option<&str>;
    fn annotation(&self, key: &str) -> Option<&str>;
}

impl Tags for ObjectMeta {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key).map(String::as_str)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// `Tags` for API types that keep their labels and annotations in their `ObjectMeta`.
/// `impl Tags` for types whose labels and annotations are in `self.metadata`.
macro_rules! tags_in_metadata {
    ($($t:ty),* $(,)?) => {$(
        impl $crate::api::tags::Tags for $t {
            fn label(&self, key: &str) -> Option<&str> {
                self.metadata.label(key)
            }

            fn annotation(&self, key: &str) -> Option<&str> {
                self.metadata.annotation(key)
            }
        }
    )*};
}

tags_in_metadata!(
    k8s_openapi::api::core::v1::Pod,
    k8s_openapi::api::core::v1::ConfigMap,
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::apps::v1::StatefulSet,
    k8s_openapi::api::apps::v1::ReplicaSet,
    k8s_openapi::api::apps::v1::Deployment,
    k8s_openapi::api::batch::v1::Job,
    kube::api::DynamicObject,
);

impl<T: Tags + ?Sized> Tags for std::sync::Arc<T> {
    fn label(&self, key: &str) -> Option<&str> {
        (**self).label(key)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        (**self).annotation(key)
    }
}

impl<T: Tags + ?Sized> Tags for &T {
    fn label(&self, key: &str) -> Option<&str> {
        (**self).label(key)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        (**self).annotation(key)
    }
}

/// One `(key, value)` entry of a [`Pairs`].
type Pair = (Arc<str>, Arc<str>);

/// A string map kept compact: the entries in one shared allocation (equal maps share it;
/// an empty map holds none), keys and values interned (a pool's pods share their label
/// keys and values, and most annotation keys).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Pairs(SharedList<Pair>);

impl Pairs {
    /// From `(key, value)` pairs in any order; on a repeated key the last value wins.
    pub fn from_entries<K: AsRef<str>, V: AsRef<str>>(
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut v: Vec<Pair> = entries
            .into_iter()
            .map(|(k, v)| (intern(k.as_ref()), intern(v.as_ref())))
            .collect();
        // Stable sort of the reversed list: the last of equal keys comes first and is kept.
        v.reverse();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|later, first| later.0 == first.0);
        Self::shared(v)
    }

    /// The shared copy of these sorted, deduplicated entries.
    fn shared(entries: Vec<Pair>) -> Self {
        Pairs(SharedList::new(&SETS, entries))
    }

    fn entries(&self) -> &[Pair] {
        self.0.as_slice()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        let e = self.entries();
        e.binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| e[i].1.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries().iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// Whether `self` and `other` are one shared allocation (both empty counts).
    pub fn shares(&self, other: &Pairs) -> bool {
        self.0.shares(&other.0)
    }

    /// Keep only the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        if self.iter().all(|(k, v)| keep(k, v)) {
            return;
        }
        let kept: Vec<Pair> = self
            .entries()
            .iter()
            .filter(|(k, v)| keep(k, v))
            .cloned()
            .collect();
        *self = Self::shared(kept);
    }

    /// The map an API object would hold (None when empty, as the API omits it).
    pub fn to_map(&self) -> Option<BTreeMap<String, String>> {
        (!self.is_empty()).then(|| {
            self.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    }
}

impl std::fmt::Debug for Pairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Pairs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of strings, or null")
            }

            fn visit_unit<E>(self) -> Result<Pairs, E> {
                Ok(Pairs::default())
            }

            fn visit_none<E>(self) -> Result<Pairs, E> {
                Ok(Pairs::default())
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Pairs, D::Error> {
                d.deserialize_map(V)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut entries: Vec<(std::borrow::Cow<'de, str>, std::borrow::Cow<'de, str>)> =
                    Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = map.next_entry::<CowStr<'de>, CowStr<'de>>()? {
                    entries.push((entry.0 .0, entry.1 .0));
                }
                Ok(Pairs::from_entries(entries))
            }
        }
        d.deserialize_option(V)
    }
}

/// A string (or map key) borrowed from the input when it has no escapes, owned otherwise.
pub struct CowStr<'de>(pub std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(std::borrow::Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(std::borrow::Cow::Owned(v.to_string())))
            }

            fn visit_string<E>(self, v: String) -> Result<CowStr<'de>, E> {
                Ok(CowStr(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Shared values of one type, and the size at which they are next swept. One lives in a
/// [`InternerCell`] static per type of value.
pub struct Interner<T: ?Sized> {
    set: HashSet<Arc<T>>,
    sweep_at: usize,
}

/// Fewest values an interner holds before its first sweep.
const SWEEP_FLOOR: usize = 4096;

/// Where an [`Interner`] lives: `static X: InternerCell<T> = InternerCell::new();`.
pub type InternerCell<T> = OnceLock<Mutex<Interner<T>>>;

impl<T: ?Sized + Hash + Eq> Interner<T> {
    fn lock(cell: &'static InternerCell<T>) -> MutexGuard<'static, Self> {
        cell.get_or_init(|| {
            Mutex::new(Interner {
                set: HashSet::new(),
                sweep_at: SWEEP_FLOOR,
            })
        })
        .lock()
        // The set holds only whole `Arc`s: a panic elsewhere cannot leave it half-written.
        .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The shared copy of `value` (made by `make` when there is none yet).
    fn share<V: std::borrow::Borrow<T>>(
        cell: &'static InternerCell<T>,
        value: V,
        make: impl FnOnce(V) -> Arc<T>,
    ) -> Arc<T> {
        let mut i = Self::lock(cell);
        if let Some(found) = i.set.get(value.borrow()) {
            return found.clone();
        }
        if i.set.len() >= i.sweep_at {
            // Drop what only the interner still holds; sweep again when the rest doubles.
            i.set.retain(|a| Arc::strong_count(a) > 1);
            i.sweep_at = (i.set.len() * 2).max(SWEEP_FLOOR);
        }
        let a = make(value);
        i.set.insert(a.clone());
        a
    }
}

/// A list held once for every holder of an equal one (interned whole); an empty list
/// holds no allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedList<T: 'static>(Option<Arc<[T]>>);

impl<T> Default for SharedList<T> {
    fn default() -> Self {
        SharedList(None)
    }
}

impl<T: Hash + Eq> SharedList<T> {
    /// The shared copy of `items`, from the interner in `cell`.
    pub fn new(cell: &'static InternerCell<[T]>, items: Vec<T>) -> Self {
        if items.is_empty() {
            return SharedList(None);
        }
        SharedList(Some(Interner::share(cell, items, Arc::from)))
    }
}

impl<T> SharedList<T> {
    pub fn as_slice(&self) -> &[T] {
        self.0.as_deref().unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Whether `self` and `other` are one shared allocation (both empty counts).
    pub fn shares(&self, other: &SharedList<T>) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

static STRINGS: InternerCell<str> = InternerCell::new();
static SETS: InternerCell<[Pair]> = InternerCell::new();

/// The shared copy of `s`.
pub fn intern(s: &str) -> Arc<str> {
    Interner::share(&STRINGS, s, Arc::from)
}

/// How many strings the interner holds now (for tests and benches).
pub fn interned_count() -> usize {
    Interner::lock(&STRINGS).set.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the entries and their order, `Pairs` answers every key as a `BTreeMap`
        /// built from the same entries does, and iterates in the map's order.
        #[test]
        fn pairs_answer_as_a_btreemap_does(
            entries in proptest::collection::vec(("[a-d]{1,2}", "[x-z]{0,3}"), 0..12),
            probe in "[a-d]{1,2}",
        ) {
            let map: BTreeMap<String, String> = entries.iter().cloned().collect();
            let pairs = Pairs::from_entries(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            prop_assert_eq!(pairs.get(&probe), map.get(&probe).map(String::as_str));
            let listed: Vec<(String, String)> =
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let want: Vec<(String, String)> = map.clone().into_iter().collect();
            prop_assert_eq!(listed, want);
            prop_assert_eq!(pairs.to_map(), (!map.is_empty()).then_some(map));
        }
    }

    #[test]
    fn json_with_a_repeated_key_keeps_the_last_value_as_a_btreemap_does() {
        let text = r#"{"b": "1", "a": "x\"y", "b": "2"}"#;
        let pairs: Pairs = serde_json::from_str(text).unwrap();
        let map: BTreeMap<String, String> = serde_json::from_str(text).unwrap();
        assert_eq!(pairs.to_map(), Some(map));
        assert_eq!(pairs.get("a"), Some("x\"y"));
        let null: Pairs = serde_json::from_str("null").unwrap();
        assert!(null.is_empty());
        assert!(serde_json::from_str::<Pairs>(r#"{"a": 1}"#).is_err());
        assert_eq!(
            serde_json::to_string(&pairs).unwrap(),
            r#"{"a":"x\"y","b":"2"}"#
        );
    }

    #[test]
    fn equal_strings_are_shared_and_unused_ones_are_swept() {
        let a = intern("tags-test-shared");
        let b = intern("tags-test-shared");
        assert!(Arc::ptr_eq(&a, &b));
        // Fill past a sweep with strings nobody keeps: the interner does not keep them all.
        for n in 0..(SWEEP_FLOOR * 3) {
            drop(intern(&format!("tags-test-unused-{n}")));
        }
        assert!(interned_count() < SWEEP_FLOOR * 3, "{}", interned_count());
        // What is still held survives every sweep.
        assert!(Arc::ptr_eq(&a, &intern("tags-test-shared")));
        // The same for whole maps.
        let held = Pairs::from_entries([("tags-test-set", "held")]);
        for n in 0..(SWEEP_FLOOR * 3) {
            drop(Pairs::from_entries([("tags-test-set", n.to_string())]));
        }
        let sets = Interner::lock(&SETS).set.len();
        assert!(sets < SWEEP_FLOOR * 3, "{sets}");
        assert!(held.shares(&Pairs::from_entries([("tags-test-set", "held")])));
    }

    #[test]
    fn equal_maps_share_one_allocation_and_unequal_ones_do_not() {
        let a: Pairs = serde_json::from_str(r#"{"app": "web", "tier": "x"}"#).unwrap();
        let b: Pairs = serde_json::from_str(r#"{"tier": "x", "app": "web"}"#).unwrap();
        let c = Pairs::from_entries([("app", "web"), ("tier", "y"), ("tier", "x")]);
        assert!(a.shares(&b) && a.shares(&c), "{a:?} {b:?} {c:?}");
        let d = Pairs::from_entries([("app", "web"), ("tier", "y")]);
        assert!(!a.shares(&d));
        assert_eq!(d.get("tier"), Some("y"));
        // What `retain` leaves is shared with an equal map built directly.
        let mut e = Pairs::from_entries([("app", "web"), ("tier", "x"), ("zone", "1")]);
        e.retain(|k, _| k != "zone");
        assert!(e.shares(&a));
        // Empty maps hold nothing, however they came about.
        let mut f = Pairs::from_entries([("gone", "1")]);
        f.retain(|_, _| false);
        assert!(f.is_empty() && f.shares(&Pairs::default()));
        assert!(serde_json::from_str::<Pairs>("{}")
            .unwrap()
            .shares(&Pairs::default()));
    }

    #[test]
    fn retain_drops_only_what_it_is_told_to() {
        let mut p = Pairs::from_entries([("a", "1"), ("b", "22"), ("c", "3")]);
        p.retain(|_, v| v.len() < 2);
        assert_eq!(p.iter().collect::<Vec<_>>(), vec![("a", "1"), ("c", "3")]);
    }
}
