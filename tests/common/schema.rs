//! A small structural-schema checker that behaves like the API server's strict field
//! validation: wrong types, missing required fields, out-of-range numbers, values outside
//! an enum and *unknown fields* (which the API server would prune or reject) are errors.
use serde_json::Value;

pub fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() && schema.get("nullable").and_then(Value::as_bool) == Some(true) {
        return;
    }
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            errors.push(format!("{path}: want int or string, got {value}"));
        }
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            errors.push(format!("{path}: {value} not in {options:?}"));
        }
    }
    let ty = schema.get("type").and_then(Value::as_str);
    match ty {
        Some("object") => {
            let Some(obj) = value.as_object() else {
                errors.push(format!("{path}: want object, got {value}"));
                return;
            };
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = r.as_str() {
                    if !obj.contains_key(r) {
                        errors.push(format!("{path}: missing required field {r}"));
                    }
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            for (k, v) in obj {
                let p = format!("{path}.{k}");
                if let Some(s) = props.and_then(|m| m.get(k)) {
                    validate(s, v, &p, errors);
                } else if let Some(a) = additional.filter(|a| a.is_object()) {
                    validate(a, v, &p, errors);
                } else if !preserve && additional.and_then(Value::as_bool) != Some(true) {
                    errors.push(format!("{p}: unknown field"));
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                errors.push(format!("{path}: want array, got {value}"));
                return;
            };
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    validate(s, v, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Some(t @ ("string" | "integer" | "number" | "boolean")) => {
            let ok = match t {
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                _ => value.is_boolean(),
            };
            if !ok {
                errors.push(format!("{path}: want {t}, got {value}"));
            }
        }
        _ => {}
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if n < min {
                errors.push(format!("{path}: {n} < minimum {min}"));
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if n > max {
                errors.push(format!("{path}: {n} > maximum {max}"));
            }
        }
    }
}

/// Validate a whole custom object against a CRD (as JSON): group, version and kind must
/// be served, and `spec`/`status` must satisfy the version's schema.
pub fn validate_object(crd: &Value, object: &Value) -> Vec<String> {
    let mut errors = vec![];
    let group = crd["spec"]["group"].as_str().unwrap_or_default();
    let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let Some((g, v)) = api_version.split_once('/') else {
        return vec![format!("apiVersion {api_version:?} has no group")];
    };
    if g != group || object["kind"].as_str() != Some(kind) {
        return vec![format!(
            "{api_version} {} is not served by this CRD ({group} {kind})",
            object["kind"]
        )];
    }
    let Some(version) = crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|x| x["name"] == v && x["served"] == true))
    else {
        return vec![format!("version {v} not served")];
    };
    let schema = &version["schema"]["openAPIV3Schema"];
    let mut body = object.clone();
    if let Some(m) = body.as_object_mut() {
        for k in ["apiVersion", "kind", "metadata"] {
            m.remove(k);
        }
    }
    validate(schema, &body, "", &mut errors);
    errors
}
