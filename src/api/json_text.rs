//! A JSON value kept as its compact text instead of a `serde_json::Value` tree: for a pod
//! template that thousands of cached objects carry and a reconcile reads once (issue 22,
//! memory: a small template as a `Value` is five `BTreeMap` nodes of ~600 bytes and a
//! `String` per key, ~3 KB; as text, its length).
//!
//! Invariants: the text is what `serde_json` writes for the parsed value (object keys
//! sorted, as `Value` keeps them), so two `JsonText`s are equal exactly when their values
//! are; it parses back to the value that was read, and serializes as that value (not as a
//! string). No panics: the text is always valid JSON, and a caller's parse error is returned.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonText(Box<str>);

impl JsonText {
    /// The value, parsed again.
    pub fn value(&self) -> Value {
        // The text was written by serde_json from a Value: it always parses.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for JsonText {
    fn default() -> Self {
        JsonText("null".into())
    }
}

impl From<Value> for JsonText {
    fn from(v: Value) -> Self {
        JsonText(v.to_string().into_boxed_str())
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(JsonText::from)
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn it_reads_back_and_writes_out_the_value_it_was_given() {
        let v = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}]},
                       "metadata": {"labels": {"b": "2", "a": "1"}}, "n": 1.5, "none": null});
        let t: JsonText = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(t.value(), v);
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            v,
            "written as the value, not a string"
        );
        let from_text: JsonText = serde_json::from_str(
            r#"{"n": 1.5, "metadata": {"labels": {"a": "1", "b": "2"}},
               "none": null, "spec": {"containers": [{"image": "x:1", "name": "a"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            from_text, t,
            "equal values, equal texts, whatever the key order"
        );
        assert_ne!(
            JsonText::from(json!({"a": 1})),
            JsonText::from(json!({"a": 2}))
        );
        assert_eq!(JsonText::default().value(), Value::Null);
    }
}
