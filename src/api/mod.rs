//! CRD types for the four kinds. Pure data: no I/O lives here.
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResourceExt;
use schemars::{json_schema, Schema, SchemaGenerator};

pub mod asya;
pub mod claim;
pub mod hsd;
pub mod hsj;
pub mod json_text;
pub mod pool;
pub mod probe;
pub mod singleton;
pub mod tags;

pub use asya::AsyncActor;
pub use claim::HotStandbyClaim;
pub use hsd::HotStandbyDeployment;
pub use hsj::HotStandbyJob;
pub use singleton::StatefulSingleton;

/// Serde default: `true`.
pub(crate) fn default_true() -> bool {
    true
}

/// Serde default: `1`.
pub(crate) fn default_one() -> i32 {
    1
}

/// Schema for an embedded Kubernetes object we keep verbatim (pod or job templates):
/// an object whose unknown fields the API server must preserve.
pub(crate) fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Same as [`preserve_unknown_object`], for an optional list of such objects.
pub(crate) fn preserve_unknown_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// Every CRD the operator serves, in a stable order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        HotStandbyDeployment::crd(),
        HotStandbyJob::crd(),
        StatefulSingleton::crd(),
        singleton::legacy_group_crd(),
        AsyncActor::crd(),
        HotStandbyClaim::crd(),
    ]
    .into_iter()
    .map(normalize_schema)
    .collect()
}

/// Fields that keep `nullable: true` in the generated schemas, as
/// (`<crd name>:<path>`, reason), the path written like `.spec.scaling`. Empty: every
/// optional field of ours is expressed by leaving it out (our types never serialize
/// `null`, and a merge patch's `null` deletes a field whatever the schema says).
///
/// Why not `nullable` by default: the API server publishes a nullable field to OpenAPI v2
/// (what kubectl reads on 1.24) with no type and no properties, so `kubectl explain`
/// shows `<>` and kubectl's client-side validation cannot refuse a misspelt nested key,
/// which the server then prunes without a word.
pub const NULLABLE_FIELDS: &[(&str, &str)] = &[];

/// Schema clean-up applied to every CRD we generate:
/// - schemars lists `null` among the values of an optional enum; kubectl's client-side
///   validation against a 1.24 API server refuses such a CRD, so `null` is dropped from
///   every `enum`;
/// - kube turns `Option<T>` into `nullable: true`; that is removed everywhere except the
///   fields listed in [`NULLABLE_FIELDS`] (see there why).
fn normalize_schema(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut serde_json::Value, crd: &str, path: &str) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::Array(values)) = m.get_mut("enum") {
                    values.retain(|x| !x.is_null());
                }
                if m.get("nullable") == Some(&serde_json::Value::Bool(true)) {
                    let key = format!("{crd}:{path}");
                    if !NULLABLE_FIELDS.iter().any(|(f, _)| *f == key) {
                        m.remove("nullable");
                    }
                }
                for (k, x) in m.iter_mut() {
                    let sub = match k.as_str() {
                        "properties" => {
                            if let serde_json::Value::Object(props) = x {
                                for (name, p) in props.iter_mut() {
                                    walk(p, crd, &format!("{path}.{name}"));
                                }
                            }
                            continue;
                        }
                        "items" => format!("{path}[]"),
                        "additionalProperties" => format!("{path}{{}}"),
                        other => format!("{path}<{other}>"),
                    };
                    walk(x, crd, &sub);
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| walk(x, crd, path)),
            _ => {}
        }
    }
    let Ok(mut v) = serde_json::to_value(&crd) else {
        return crd;
    };
    let name = crd.metadata.name.clone().unwrap_or_default();
    if let Some(versions) = v
        .pointer_mut("/spec/versions")
        .and_then(|x| x.as_array_mut())
    {
        for version in versions {
            if let Some(schema) = version.pointer_mut("/schema/openAPIV3Schema") {
                walk(schema, &name, "");
            }
        }
    }
    serde_json::from_value(v).unwrap_or(crd)
}

/// All CRDs as one multi-document YAML stream (what `kube-standby crds` prints and
/// what `charts/kube-standby/crds/` holds).
pub fn crds_yaml() -> crate::Result<String> {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

/// Set (or replace) a condition, keeping `lastTransitionTime` when the status did not change.
/// Returns true when anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: &Time,
) -> bool {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        let changed = c.status != status
            || c.reason != reason
            || c.message != message
            || c.observed_generation != observed_generation;
        if c.status != status {
            c.last_transition_time = now.clone();
        }
        c.status = status;
        c.reason = reason.to_string();
        c.message = message;
        c.observed_generation = observed_generation;
        changed
    } else {
        conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation,
            last_transition_time: now.clone(),
        });
        true
    }
}

/// Look a condition up by type.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The UID of the owner of `kind` that controls the object `meta` describes.
pub fn controller_uid<'m>(
    meta: &'m k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: &str,
) -> Option<&'m str> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == kind)
        .map(|o| o.uid.as_str())
}

/// Is this a pod of a HotStandbyDeployment or HotStandbyJob pool (it carries its pool's
/// name label)? Such a pod is never a StatefulSingleton instance: a pool keeps several warm
/// copies on purpose, so the webhook does not gate it and the singleton controller does not
/// watch it (at 10,000 pool pods that watch would hold and parse all of them for nothing).
pub fn is_pool_pod<T: tags::Tags + ?Sized>(pod: &T) -> bool {
    pod.label(hsd::NAME_LABEL).is_some() || pod.label(hsj::NAME_LABEL).is_some()
}

/// The label selector that leaves pool pods out (see [`is_pool_pod`]).
pub fn not_pool_pods() -> String {
    format!("!{},!{}", hsd::NAME_LABEL, hsj::NAME_LABEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_pod_carries_its_pools_name_label() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        let meta = |labels: &[(&str, &str)]| ObjectMeta {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        assert!(is_pool_pod(&meta(&[("hsd.paia.tech/name", "web")])));
        assert!(is_pool_pod(&meta(&[
            ("hsj.paia.tech/name", "ci"),
            ("app", "x")
        ])));
        assert!(!is_pool_pod(&meta(&[("app", "web")])));
        assert!(!is_pool_pod(&ObjectMeta::default()));
        assert_eq!(not_pool_pods(), "!hsd.paia.tech/name,!hsj.paia.tech/name");
    }

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn set_condition_keeps_transition_time_when_status_is_unchanged() {
        let mut c = vec![];
        assert!(set_condition(
            &mut c,
            "Ready",
            true,
            "Ok",
            "fine",
            Some(1),
            &t(10)
        ));
        assert!(!set_condition(
            &mut c,
            "Ready",
            true,
            "Ok",
            "fine",
            Some(1),
            &t(20)
        ));
        assert_eq!(c[0].last_transition_time, t(10));
        assert!(set_condition(
            &mut c,
            "Ready",
            true,
            "Ok",
            "still fine",
            Some(1),
            &t(30)
        ));
        assert_eq!(c[0].last_transition_time, t(10));
        assert!(set_condition(
            &mut c,
            "Ready",
            false,
            "Broken",
            "no",
            Some(2),
            &t(40)
        ));
        assert_eq!(c[0].last_transition_time, t(40));
        assert_eq!(c.len(), 1);
        assert_eq!(
            condition(&c, "Ready").map(|c| c.status.as_str()),
            Some("False")
        );
    }

    #[test]
    fn no_enum_lists_null() {
        let v = serde_json::to_value(all_crds()).unwrap();
        fn check(v: &serde_json::Value, path: &str) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(serde_json::Value::Array(values)) = m.get("enum") {
                        assert!(
                            !values.iter().any(|x| x.is_null()),
                            "null in enum at {path}"
                        );
                        assert!(!values.is_empty(), "empty enum at {path}");
                    }
                    for (k, x) in m {
                        check(x, &format!("{path}.{k}"));
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| check(x, path)),
                _ => {}
            }
        }
        check(&v, "");
        // The singleton phase keeps its three values.
        let y = crds_yaml().unwrap();
        assert!(y.contains("- Running\n") && y.contains("- Blocked\n"));
    }

    #[test]
    fn crds_yaml_has_every_kind() {
        let y = crds_yaml().unwrap();
        for k in [
            "hotstandbydeployments.apps.paia.tech",
            "hotstandbyjobs.apps.paia.tech",
            "statefulsingletons.apps.statefulsingleton.com",
            "statefulsingletons.apps.openshift.statefulsingleton.com",
            "asyncactors.asya.io",
            "hotstandbyclaims.apps.paia.tech",
        ] {
            assert!(y.contains(&format!("name: {k}")), "missing {k}");
        }
    }
}
