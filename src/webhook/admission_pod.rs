//! The pod of an AdmissionReview, parsed as `k8s_openapi`'s `Pod` but without building
//! `metadata.managedFields`: each entry is checked while it is read and then dropped.
//! Nothing in the webhook reads managed fields, and their `fieldsV1` trees (a
//! `serde_json::Value` map per manager) were a fifth of the cost of parsing a pod being
//! created, and as much again to free.
//!
//! Invariants (the fast path of `parse_review` relies on them; the tests below check both
//! on chosen and generated pods):
//! - Accepts exactly the JSON `Pod` accepts: an input rejected here is rejected there and
//!   the reverse (`apiVersion`/`kind` checked as `Pod` checks them; every managed-fields
//!   entry must parse as a `ManagedFieldsEntry`: a map, its strings strings, `time` a
//!   `Time`, `fieldsV1` any JSON value, unknown keys ignored; `null` is no list).
//! - What it accepts is the `Pod` that `Pod`'s own parser builds, with `managed_fields`
//!   `None`.
use std::borrow::Cow;
use std::fmt;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use crate::api::tags::CowStr;

/// A `Pod` without its managed fields (see the module header), boxed: a `Pod` is 2.4 KB
/// inline, and the request that holds it is moved several times on its way out of the
/// parser.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdmissionPod(pub Box<Pod>);

impl std::ops::Deref for AdmissionPod {
    type Target = Pod;
    fn deref(&self) -> &Pod {
        &self.0
    }
}

/// `kube::Resource` for a boxed-`Pod` newtype: a pod's kind, group, version and plural.
macro_rules! pod_resource {
    ($t:ty) => {
        impl kube::Resource for $t {
            type DynamicType = ();
            type Scope = <k8s_openapi::api::core::v1::Pod as kube::Resource>::Scope;

            fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Pod as kube::Resource>::kind(dt)
            }
            fn group(dt: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Pod as kube::Resource>::group(dt)
            }
            fn version(dt: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Pod as kube::Resource>::version(dt)
            }
            fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Pod as kube::Resource>::plural(dt)
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.0.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.0.metadata
            }
        }
    };
}
pub(crate) use pod_resource;

pod_resource!(AdmissionPod);

impl<'de> Deserialize<'de> for AdmissionPod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AdmissionPod;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("Pod")
            }
            // As `Pod`'s visitor: a map only, `apiVersion` and `kind` must be `v1` and
            // `Pod`, a repeated key overwrites, unknown keys are skipped.
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AdmissionPod, A::Error> {
                let mut metadata: Option<SlimMeta> = None;
                let mut spec: Option<PodSpec> = None;
                let mut status: Option<PodStatus> = None;
                while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
                    match key.as_ref() {
                        "apiVersion" => {
                            let v: String = map.next_value()?;
                            if v != "v1" {
                                return Err(de::Error::invalid_value(
                                    de::Unexpected::Str(&v),
                                    &"v1",
                                ));
                            }
                        }
                        "kind" => {
                            let v: String = map.next_value()?;
                            if v != "Pod" {
                                return Err(de::Error::invalid_value(
                                    de::Unexpected::Str(&v),
                                    &"Pod",
                                ));
                            }
                        }
                        "metadata" => metadata = map.next_value()?,
                        "spec" => spec = map.next_value()?,
                        "status" => status = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(AdmissionPod(Box::new(Pod {
                    metadata: metadata.map(|m| m.0).unwrap_or_default(),
                    spec,
                    status,
                })))
            }
        }
        d.deserialize_struct(
            "Pod",
            &["apiVersion", "kind", "metadata", "spec", "status"],
            V,
        )
    }
}

/// `ObjectMeta` parsed by its own parser, but with `managedFields` checked and hidden
/// from it.
struct SlimMeta(ObjectMeta);

impl<'de> Deserialize<'de> for SlimMeta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SlimMeta;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("ObjectMeta")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SlimMeta, A::Error> {
                let filtered = WithoutManagedFields { inner: map };
                ObjectMeta::deserialize(de::value::MapAccessDeserializer::new(filtered))
                    .map(SlimMeta)
            }
        }
        d.deserialize_struct("ObjectMeta", OBJECT_META_FIELDS, V)
    }
}

const OBJECT_META_FIELDS: &[&str] = &[
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

/// The entries of a map but `managedFields`, whose value is checked (as
/// `Option<Vec<ManagedFieldsEntry>>` would be) and skipped.
struct WithoutManagedFields<A> {
    inner: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for WithoutManagedFields<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(CowStr(key)) = self.inner.next_key::<CowStr<'de>>()? else {
                return Ok(None);
            };
            if key == "managedFields" {
                self.inner.next_value::<Option<Vec<ManagedFieldsCheck>>>()?;
                continue;
            }
            return match key {
                Cow::Borrowed(k) => seed
                    .deserialize(de::value::BorrowedStrDeserializer::new(k))
                    .map(Some),
                Cow::Owned(k) => seed
                    .deserialize(de::value::StringDeserializer::new(k))
                    .map(Some),
            };
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// One managed-fields entry, checked as `ManagedFieldsEntry` parses it and not kept.
struct ManagedFieldsCheck;

impl<'de> Deserialize<'de> for ManagedFieldsCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ManagedFieldsCheck;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("ManagedFieldsEntry")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
                    match key.as_ref() {
                        "apiVersion" | "fieldsType" | "manager" | "operation" | "subresource" => {
                            map.next_value::<Option<StrCheck>>()?;
                        }
                        "time" => {
                            map.next_value::<Option<Time>>()?;
                        }
                        // `fieldsV1` is any JSON value, like the keys it does not know.
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(ManagedFieldsCheck)
            }
        }
        d.deserialize_struct(
            "ManagedFieldsEntry",
            &[
                "apiVersion",
                "fieldsType",
                "fieldsV1",
                "manager",
                "operation",
                "subresource",
                "time",
            ],
            V,
        )
    }
}

/// A string, checked as `String` parses it, not copied.
struct StrCheck;

impl<'de> Deserialize<'de> for StrCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrCheck;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<StrCheck, E> {
                Ok(StrCheck)
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<StrCheck, E> {
                // As `String` does: bytes are a string when they are UTF-8.
                match std::str::from_utf8(v) {
                    Ok(_) => Ok(StrCheck),
                    Err(_) => Err(de::Error::invalid_value(de::Unexpected::Bytes(v), &self)),
                }
            }
        }
        d.deserialize_string(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn full(text: &[u8]) -> Result<Pod, String> {
        serde_json::from_slice::<Pod>(text).map_err(|e| e.to_string())
    }

    fn slim(text: &[u8]) -> Result<Pod, String> {
        serde_json::from_slice::<AdmissionPod>(text)
            .map(|p| *p.0)
            .map_err(|e| e.to_string())
    }

    /// The invariant of the module header, for one pod's JSON text.
    fn check_text(text: &[u8]) -> Result<(), String> {
        match (full(text), slim(text)) {
            (Ok(mut f), Ok(s)) => {
                f.metadata.managed_fields = None;
                if f == s {
                    Ok(())
                } else {
                    Err(format!("{f:?} != {s:?}"))
                }
            }
            (Err(_), Err(_)) => Ok(()),
            (f, s) => Err(format!("Pod {f:?}, AdmissionPod {s:?}")),
        }
    }

    fn same_as_pod(v: &Value) {
        let text = serde_json::to_vec(v).unwrap();
        if let Err(e) = check_text(&text) {
            panic!("{v}: {e}");
        }
    }

    fn with_managed(m: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "a", "labels": {"x": "y"}, "managedFields": m},
               "spec": {"containers": [{"name": "c", "image": "i"}]}})
    }

    #[test]
    fn managed_fields_are_checked_like_pod_checks_them_and_dropped() {
        let entry = json!({"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                           "time": "2024-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                           "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}, "other": [1]});
        let cases = [
            json!(null),
            json!([]),
            json!([entry]),
            json!([entry, {}]),
            json!([{"fieldsV1": null}, {"fieldsV1": 3}, {"fieldsV1": "x"}]),
            json!([{"manager": null, "time": null}]),
            // Rejected by both:
            json!([{"time": "yesterday"}]),
            json!([{"manager": 3}]),
            json!([["kubectl"]]),
            json!([null]),
            json!({}),
            json!("x"),
            json!([{"subresource": {}}]),
        ];
        for m in cases {
            same_as_pod(&with_managed(m));
        }
        let p = slim(&serde_json::to_vec(&with_managed(json!([entry]))).unwrap()).unwrap();
        assert!(p.metadata.managed_fields.is_none());
        assert_eq!(p.metadata.name.as_deref(), Some("a"));
    }

    #[test]
    fn the_pod_around_them_is_checked_like_pod_checks_it() {
        let cases = [
            json!({}),
            json!({"metadata": null, "spec": null}),
            json!({"apiVersion": "v2", "kind": "Pod"}),
            json!({"apiVersion": "v1", "kind": "Service"}),
            json!({"kind": 1}),
            json!({"metadata": {"name": 1}}),
            json!({"metadata": [], "spec": {}}),
            json!([{}]),
            json!({"metadata": {"labels": {"a": "b"}}, "metadata ": 1, "x": {"managedFields": 1}}),
            json!({"spec": {"containers": []}, "status": {"phase": "Pending"}}),
            json!({"spec": {"containers": {}}}),
        ];
        for v in cases {
            same_as_pod(&v);
        }
        // Repeated keys: the last one wins, and each must parse.
        for text in [
            &br#"{"metadata":{"name":"a"},"metadata":{"namespace":"b"}}"#[..],
            br#"{"metadata":{"managedFields":[],"managedFields":[{"time":"x"}]}}"#,
            br#"{"metadata":{"managedFields":[{"time":"x"}],"managedFields":null}}"#,
            br#"{"metadata":{"name":"a","name":"b","managedFields":[{"manager":"m","manager":"n"}]}}"#,
            br#"{"kind":"Pod","kind":"Pods"}"#,
        ] {
            check_text(text).unwrap();
        }
    }

    #[test]
    fn escaped_keys_are_read_like_plain_ones() {
        let text = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"n\u0061me":"a","m\u0061nagedFields":[{"t\u0069me":"bad"}]}}"#;
        let full: Result<Pod, _> = serde_json::from_slice(text);
        let slim: Result<AdmissionPod, _> = serde_json::from_slice(text);
        assert!(full.is_err() && slim.is_err());
        let text = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"n\u0061me":"a","m\u0061nagedFields":[{"t\u0069me":"2024-01-01T00:00:00Z"}]}}"#;
        let mut full: Pod = serde_json::from_slice(text).unwrap();
        let slim: AdmissionPod = serde_json::from_slice(text).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        full.metadata.managed_fields = None;
        assert_eq!(full, *slim.0);
        assert_eq!(slim.0.metadata.name.as_deref(), Some("a"));
    }

    /// Any JSON value, with keys that mean something to a pod or a managed-fields entry.
    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec![
            "apiVersion",
            "kind",
            "metadata",
            "spec",
            "status",
            "name",
            "labels",
            "managedFields",
            "manager",
            "time",
            "fieldsV1",
            "fieldsType",
            "operation",
            "subresource",
            "containers",
            "x",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            prop::sample::select(vec!["v1", "Pod", "", "2024-01-01T00:00:00Z", "kubectl"])
                .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(key.clone(), inner, 0..5).prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn generated_managed_fields_are_checked_like_pod_checks_them(m in json_value(), entries in prop::collection::vec(json_value(), 0..3)) {
            let text = serde_json::to_vec(&with_managed(m)).unwrap();
            prop_assert!(check_text(&text).is_ok(), "{}", check_text(&text).unwrap_err());
            let text = serde_json::to_vec(&with_managed(Value::from(entries))).unwrap();
            prop_assert!(check_text(&text).is_ok(), "{}", check_text(&text).unwrap_err());
        }

        #[test]
        fn generated_pods_are_checked_like_pod_checks_them(v in json_value()) {
            let text = serde_json::to_vec(&v).unwrap();
            prop_assert!(check_text(&text).is_ok(), "{}", check_text(&text).unwrap_err());
        }
    }
}
