//! The published CRD schemas are readable by kubectl on a 1.24 API server: no `nullable`
//! without a documented reason (the API server publishes a nullable field to OpenAPI v2
//! with no type and no properties, so `kubectl explain` shows `<>` and client-side
//! validation lets a misspelt nested key through), and a description on every property.
mod common;

use kube_standby::api;
use serde_json::{json, Value};

fn schemas() -> Vec<(String, Value)> {
    api::all_crds()
        .iter()
        .flat_map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let v = serde_json::to_value(crd).expect("CRD serializes");
            v["spec"]["versions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |ver| (name.clone(), ver["schema"]["openAPIV3Schema"].clone()))
        })
        .collect()
}

/// Every sub-schema with its path (`.spec.scaling`, `[]` for items, `{}` for map values).
fn walk<'a>(s: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    out.push((path.to_string(), s));
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = s.get("items") {
        walk(items, &format!("{path}[]"), out);
    }
    if let Some(add) = s.get("additionalProperties").filter(|a| a.is_object()) {
        walk(add, &format!("{path}{{}}"), out);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for (i, x) in s
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            walk(x, &format!("{path}<{key}{i}>"), out);
        }
    }
}

#[test]
fn no_nullable_without_a_documented_reason() {
    for (_, reason) in api::NULLABLE_FIELDS {
        assert!(
            reason.trim().len() > 10,
            "NULLABLE_FIELDS entry without a reason"
        );
    }
    let mut bad = vec![];
    for (crd, schema) in schemas() {
        let mut all = vec![];
        walk(&schema, "", &mut all);
        for (path, s) in all {
            if s.get("nullable").and_then(Value::as_bool) == Some(true) {
                let key = format!("{crd}:{path}");
                if !api::NULLABLE_FIELDS.iter().any(|(f, _)| *f == key) {
                    bad.push(key);
                }
            }
        }
    }
    assert!(bad.is_empty(), "nullable without a reason: {bad:#?}");
}

#[test]
fn every_property_has_a_description() {
    let mut missing = vec![];
    for (crd, schema) in schemas() {
        let mut all = vec![];
        walk(&schema, "", &mut all);
        for (path, s) in all {
            for (k, v) in s
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                // The object's envelope is described by the API server itself.
                if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) {
                    continue;
                }
                let ok = v
                    .get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| !d.trim().is_empty());
                if !ok {
                    missing.push(format!("{crd}:{path}.{k}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "no description: {missing:#?}");
}

/// What kubectl 1.24 validates against: the API server's OpenAPI v2 view of a CRD schema,
/// where a nullable field loses its type, properties and items
/// (apiextensions-apiserver `controller/openapi/v2/conversion.go`).
fn openapi_v2_view(s: &Value) -> Value {
    let mut s = s.clone();
    if let Some(m) = s.as_object_mut() {
        if m.remove("nullable") == Some(Value::Bool(true)) {
            m.remove("type");
            m.remove("properties");
            m.remove("items");
            m.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
        }
        if let Some(Value::Object(props)) = m.get_mut("properties") {
            for v in props.values_mut() {
                *v = openapi_v2_view(v);
            }
        }
        if let Some(items) = m.get_mut("items") {
            *items = openapi_v2_view(items);
        }
    }
    s
}

fn schema_of(group: &str, kind: &str) -> Value {
    schemas()
        .into_iter()
        .find(|(name, _)| name.starts_with(&format!("{}s.{group}", kind.to_lowercase())))
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no schema for {kind}.{group}"))
}

fn example(file: &str) -> Value {
    let text = std::fs::read_to_string(common::repo().join("examples").join(file)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

#[test]
fn nested_typos_are_refused_by_what_kubectl_sees() {
    // (example, where the typo goes, the misspelt object, its unknown key)
    let cases = [
        (
            "asyncactor-hello.yaml",
            "scaling",
            json!({"enabeld": true}),
            "enabeld",
        ),
        (
            "asyncactor-hello.yaml",
            "timeout",
            json!({"procesing": 5}),
            "procesing",
        ),
        (
            "hsd-annotation.yaml",
            "busyProbe",
            json!({"mode": "annotation", "anotationKey": "x"}),
            "anotationKey",
        ),
    ];
    for (file, field, bad, typo) in cases {
        let mut obj = example(file);
        let group = obj["apiVersion"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let kind = obj["kind"].as_str().unwrap().to_string();
        let schema = openapi_v2_view(&schema_of(&group, &kind))["properties"]["spec"].clone();
        let mut errors = vec![];
        common::schema::validate(&schema, &obj["spec"], ".spec", &mut errors);
        assert!(errors.is_empty(), "{file} as it is: {errors:?}");
        obj["spec"][field] = bad;
        let mut errors = vec![];
        common::schema::validate(&schema, &obj["spec"], ".spec", &mut errors);
        assert_eq!(
            errors,
            vec![format!(".spec.{field}.{typo}: unknown field")],
            "{file}: {field}.{typo}"
        );
    }
}

#[test]
fn the_v2_view_of_a_nullable_object_would_let_a_typo_through() {
    // The check above is only meaningful if the model drops what the API server drops.
    let schema = json!({"type": "object", "properties": {"scaling": {
        "type": "object", "nullable": true, "description": "d",
        "properties": {"enabled": {"type": "boolean", "description": "d"}}}}});
    let mut errors = vec![];
    common::schema::validate(
        &openapi_v2_view(&schema),
        &json!({"scaling": {"enabeld": true}}),
        "",
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    common::schema::validate(
        &schema,
        &json!({"scaling": {"enabeld": true}}),
        "",
        &mut errors,
    );
    assert!(!errors.is_empty());
}

#[test]
fn every_kind_is_in_the_kube_standby_category_with_distinct_short_names() {
    let mut seen = std::collections::BTreeMap::new();
    // Short names of built-in kinds a user may have in muscle memory.
    let builtin = [
        "sts", "deploy", "rs", "po", "svc", "cm", "ns", "ds", "hpa", "pdb",
    ];
    for crd in api::all_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let names = &crd.spec.names;
        assert_eq!(
            names.categories.as_deref(),
            Some(&["kube-standby".to_string()][..]),
            "{name}: `kubectl get kube-standby` must list it"
        );
        let short = names.short_names.clone().unwrap_or_default();
        assert!(!short.is_empty(), "{name}: no short name");
        for s in short {
            assert!(!builtin.contains(&s.as_str()), "{name}: {s} is a built-in");
            if let Some(other) = seen.insert(s.clone(), name.clone()) {
                panic!("short name {s} of both {other} and {name}: kubectl would show one only");
            }
        }
    }
    assert_eq!(
        seen.get("singleton").map(String::as_str),
        Some("statefulsingletons.apps.statefulsingleton.com")
    );
    assert_eq!(
        seen.get("ossingleton").map(String::as_str),
        Some("statefulsingletons.apps.openshift.statefulsingleton.com")
    );
}
