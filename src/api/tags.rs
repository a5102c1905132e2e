//! Reading an object's labels and annotations, whichever way they are kept: whole, as the
//! API types keep them (`ObjectMeta`'s two `BTreeMap`s), or compact ([`Pairs`], as the
//! pool pod cache keeps them, issue 22: a `BTreeMap` costs a 540-byte node and two
//! `String`s per entry even for one label; 10,000 cached pods paid ~1.5 KB each for it).
//!
//! Invariants:
//! - a [`Pairs`] is sorted by key, each key once; `get` answers what the object's map
//!   answered (on a repeated JSON key, the last value wins, as in a `BTreeMap`);
//! - interning only shares equal strings: a looked-up value is the text that was parsed;
//! - the interner never grows without bound: when it doubles, the strings no object
//!   holds any more are dropped from it. No I/O, no panics.
use std::collections::{BTreeMap, HashSet};
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
pub(crate) use tags_in_metadata;

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

/// A string map kept compact: one allocation for the entries, keys and values interned
/// (a pool's pods share their label keys and values, and most annotation keys).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Pairs(Box<[(Arc<str>, Arc<str>)]>);

impl Pairs {
    /// From `(key, value)` pairs in any order; on a repeated key the last value wins.
    pub fn from_entries<K: AsRef<str>, V: AsRef<str>>(
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut v: Vec<(Arc<str>, Arc<str>)> = entries
            .into_iter()
            .map(|(k, v)| (intern(k.as_ref()), intern(v.as_ref())))
            .collect();
        // Stable sort of the reversed list: the last of equal keys comes first and is kept.
        v.reverse();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|later, first| later.0 == first.0);
        Pairs(v.into_boxed_slice())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keep only the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        if self.iter().all(|(k, v)| keep(k, v)) {
            return;
        }
        let kept: Vec<_> = self.0.iter().filter(|(k, v)| keep(k, v)).cloned().collect();
        self.0 = kept.into_boxed_slice();
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

/// The shared strings, and the size at which they are next swept.
struct Interner {
    set: HashSet<Arc<str>>,
    sweep_at: usize,
}

/// Fewest strings the interner holds before its first sweep.
const SWEEP_FLOOR: usize = 4096;

fn interner() -> MutexGuard<'static, Interner> {
    static I: OnceLock<Mutex<Interner>> = OnceLock::new();
    I.get_or_init(|| {
        Mutex::new(Interner {
            set: HashSet::new(),
            sweep_at: SWEEP_FLOOR,
        })
    })
    .lock()
    // The set holds only whole `Arc`s: a panic elsewhere cannot leave it half-written.
    .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The shared copy of `s`.
pub fn intern(s: &str) -> Arc<str> {
    let mut i = interner();
    if let Some(found) = i.set.get(s) {
        return found.clone();
    }
    if i.set.len() >= i.sweep_at {
        // Drop what only the interner still holds; sweep again when the rest doubles.
        i.set.retain(|a| Arc::strong_count(a) > 1);
        i.sweep_at = (i.set.len() * 2).max(SWEEP_FLOOR);
    }
    let a: Arc<str> = Arc::from(s);
    i.set.insert(a.clone());
    a
}

/// How many strings the interner holds now (for tests and benches).
pub fn interned_count() -> usize {
    interner().set.len()
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
    }

    #[test]
    fn retain_drops_only_what_it_is_told_to() {
        let mut p = Pairs::from_entries([("a", "1"), ("b", "22"), ("c", "3")]);
        p.retain(|_, v| v.len() < 2);
        assert_eq!(p.iter().collect::<Vec<_>>(), vec![("a", "1"), ("c", "3")]);
    }
}
