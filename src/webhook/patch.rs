//! A JSON Patch (RFC 6902) of `add` operations, written straight to its JSON text as the
//! operations are added, and base64-encoded straight into the AdmissionReview answer.
//!
//! Why not `Vec<json_patch::PatchOperation>`: each value there is a `serde_json::Value`
//! tree, built, serialized, then freed, and its base64 text was then escaped once more as a
//! JSON string. For a pod being injected that was as costly as TLS and parsing together.
//!
//! Invariants:
//! - The text is exactly what serializing the same operations as `PatchOperation`s writes
//!   (`{"op":"add","path":...,"value":...}`, pointer tokens escaped as RFC 6901 says); values
//!   are written by their own `Serialize` (the mutators use structs whose fields are in the
//!   sorted order a `Value` map has, so the bytes are the same too).
//! - Text added as JSON ([`Patch::add_json`], crate-internal) is text `serde_json` wrote
//!   for the value (the cached agent containers, `singleton`), so it keeps the above.
//! - A value that fails to serialize leaves no partial operation: the error is kept and
//!   returned by [`Patch::to_json`] / [`Patch::write_base64`], never dropped.
use serde::Serialize;

/// The operations of one JSON Patch, as JSON text.
#[derive(Debug, Default)]
pub struct Patch {
    /// The operations' JSON text, comma separated, without the enclosing brackets.
    body: Vec<u8>,
    ops: usize,
    error: Option<serde_json::Error>,
}

/// The JSON pointer made of `tokens` (`~` written `~0`, `/` written `~1`).
pub fn pointer(tokens: &[&str]) -> String {
    let mut out = String::with_capacity(tokens.iter().map(|t| t.len() + 1).sum());
    for t in tokens {
        out.push('/');
        if !t.contains(['~', '/']) {
            out.push_str(t);
            continue;
        }
        for c in t.chars() {
            match c {
                '~' => out.push_str("~0"),
                '/' => out.push_str("~1"),
                c => out.push(c),
            }
        }
    }
    out
}

/// Write the pointer made of `tokens` as a JSON string: the same text as serializing
/// [`pointer`]`(tokens)`, written directly when no token holds a byte that either escaping
/// would change (`~`, `/`, `"`, backslash, control bytes), the case of every pointer the
/// mutators write but label and annotation keys.
fn write_pointer(out: &mut Vec<u8>, tokens: &[&str]) -> Result<(), serde_json::Error> {
    let plain = tokens.iter().all(|t| {
        t.bytes()
            .all(|b| b >= 0x20 && b != 0x7f && !matches!(b, b'~' | b'/' | b'"' | b'\\'))
    });
    if !plain {
        return serde_json::to_writer(out, &pointer(tokens));
    }
    out.push(b'"');
    for t in tokens {
        out.push(b'/');
        out.extend_from_slice(t.as_bytes());
    }
    out.push(b'"');
    Ok(())
}

impl Patch {
    pub fn new() -> Self {
        Patch::default()
    }

    /// An empty patch with room for `bytes` of operations.
    pub fn with_capacity(bytes: usize) -> Self {
        Patch {
            body: Vec::with_capacity(bytes),
            ops: 0,
            error: None,
        }
    }

    /// How many operations.
    pub fn len(&self) -> usize {
        self.ops
    }

    pub fn is_empty(&self) -> bool {
        self.ops == 0 && self.error.is_none()
    }

    /// Add `value` at the pointer made of `tokens`.
    pub fn add<V: Serialize + ?Sized>(&mut self, tokens: &[&str], value: &V) {
        self.add_with(tokens, |body| serde_json::to_writer(body, value));
    }

    /// Add the value whose JSON text is the concatenation of `parts` at the pointer made
    /// of `tokens`. The caller guarantees the text is what `serde_json` writes for that
    /// value (the agent containers' text, serialized once per injection settings).
    pub(in crate::webhook) fn add_json(&mut self, tokens: &[&str], parts: &[&[u8]]) {
        self.add_with(tokens, |body| {
            for p in parts {
                body.extend_from_slice(p);
            }
            Ok(())
        });
    }

    /// One "add" operation whose value `value` writes; on any error the body is left as
    /// it was and the error kept.
    fn add_with(
        &mut self,
        tokens: &[&str],
        value: impl FnOnce(&mut Vec<u8>) -> Result<(), serde_json::Error>,
    ) {
        if self.error.is_some() {
            return;
        }
        let mark = self.body.len();
        if self.ops > 0 {
            self.body.push(b',');
        }
        self.body.extend_from_slice(br#"{"op":"add","path":"#);
        let written = write_pointer(&mut self.body, tokens).and_then(|()| {
            self.body.extend_from_slice(br#","value":"#);
            value(&mut self.body)
        });
        match written {
            Ok(()) => {
                self.body.push(b'}');
                self.ops += 1;
            }
            Err(e) => {
                self.body.truncate(mark);
                self.error = Some(e);
            }
        }
    }

    /// The operations of `other` after these (or its error).
    pub fn extend(&mut self, other: Patch) {
        if self.error.is_some() {
            return;
        }
        if let Some(e) = other.error {
            self.error = Some(e);
            return;
        }
        if other.ops == 0 {
            return;
        }
        if self.ops > 0 {
            self.body.push(b',');
        }
        self.body.extend_from_slice(&other.body);
        self.ops += other.ops;
    }

    fn check(&self) -> Result<(), serde_json::Error> {
        match &self.error {
            Some(e) => Err(serde_json::Error::io(std::io::Error::other(e.to_string()))),
            None => Ok(()),
        }
    }

    /// The patch as JSON text: `[{"op":"add",...},...]`.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        self.check()?;
        let mut out = Vec::with_capacity(self.body.len() + 2);
        out.push(b'[');
        out.extend_from_slice(&self.body);
        out.push(b']');
        Ok(out)
    }

    /// The operations as `json_patch` has them (for tests and tools; the webhook never
    /// parses its own patch).
    pub fn operations(&self) -> Result<json_patch::Patch, serde_json::Error> {
        serde_json::from_slice(&self.to_json()?)
    }

    /// Length of the base64 text of [`Patch::to_json`].
    pub fn base64_len(&self) -> usize {
        base64::encoded_len(self.body.len() + 2, true).unwrap_or(0)
    }

    /// Append the base64 text of [`Patch::to_json`] (standard alphabet, padded) to `out`,
    /// with a SIMD encoder (`base64_simd`, the CPU's features found at run time): the
    /// `base64` crate's engine took a tenth of the webhook's own instructions per
    /// injection (PERFORMANCE.md).
    pub fn write_base64(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let json = self.to_json()?;
        base64_simd::STANDARD.encode_append(json, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{AddOperation, PatchOperation};
    use serde_json::json;

    fn reference(ops: &[(&[&str], serde_json::Value)]) -> Vec<u8> {
        let ops: Vec<PatchOperation> = ops
            .iter()
            .map(|(p, v)| {
                PatchOperation::Add(AddOperation {
                    path: PointerBuf::from_tokens(p.iter().copied()),
                    value: v.clone(),
                })
            })
            .collect();
        serde_json::to_vec(&ops).unwrap()
    }

    #[test]
    fn the_text_is_what_patch_operations_serialize_to() {
        let ops: Vec<(&[&str], serde_json::Value)> = vec![
            (&["metadata", "labels", "a.b/c~d"], json!("x\"\n\u{2028}")),
            (
                &["spec", "containers", "-"],
                json!({"b": [1, 2.5, null], "a": {}}),
            ),
            (&[], json!(true)),
            (&["spec", "x~/y", "0"], json!(-7)),
        ];
        let mut p = Patch::new();
        for (path, v) in &ops {
            p.add(path, v);
        }
        assert_eq!(p.len(), 4);
        assert_eq!(p.to_json().unwrap(), reference(&ops));
        assert_eq!(
            serde_json::to_vec(&p.operations().unwrap()).unwrap(),
            reference(&ops)
        );
        let mut b64 = b"prefix".to_vec();
        p.write_base64(&mut b64).unwrap();
        assert_eq!(
            &b64[6..],
            base64::engine::general_purpose::STANDARD
                .encode(reference(&ops))
                .as_bytes()
        );
        assert_eq!(b64.len() - 6, p.base64_len());
    }

    proptest::proptest! {
        #[test]
        fn pointers_written_directly_are_the_pointer_serialized(
            tokens in proptest::collection::vec(
                proptest::prop_oneof![
                    "[a-zA-Z0-9.-]{0,12}",
                    "[a-z~/\"\\\\\\x00-\\x1f\\x7fé\\u{2028}]{0,6}",
                    proptest::prelude::any::<String>(),
                ],
                0..5,
            )
        ) {
            let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
            let mut out = b"x".to_vec();
            write_pointer(&mut out, &tokens).unwrap();
            proptest::prop_assert_eq!(&out[1..], &serde_json::to_vec(&pointer(&tokens)).unwrap()[..]);
        }
    }

    proptest::proptest! {
        /// The base64 text appended is the `base64` crate's (standard alphabet, padded)
        /// for every length: the encoder works in blocks and the tail is written apart.
        #[test]
        fn the_base64_appended_is_the_reference_encoding_of_the_patch(
            value in "(?s).{0,300}",
            prefix in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let mut p = Patch::new();
            p.add(&["spec", "v"], &value);
            let mut out = prefix.clone();
            p.write_base64(&mut out).unwrap();
            let want = base64::engine::general_purpose::STANDARD.encode(p.to_json().unwrap());
            proptest::prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
            proptest::prop_assert_eq!(&out[prefix.len()..], want.as_bytes());
            proptest::prop_assert_eq!(out.len() - prefix.len(), p.base64_len());
        }
    }

    #[test]
    fn json_text_added_is_the_same_as_the_value_added() {
        let v = json!({"a": ["x\n", 1], "b": null});
        let text = serde_json::to_vec(&v).unwrap();
        let mut by_value = Patch::new();
        by_value.add(&["spec", "a~b"], &v);
        by_value.add(&["list"], &[&v]);
        let mut by_text = Patch::new();
        by_text.add_json(&["spec", "a~b"], &[&text]);
        by_text.add_json(&["list"], &[b"[", &text, b"]"]);
        assert_eq!(by_text.len(), 2);
        assert_eq!(by_text.to_json().unwrap(), by_value.to_json().unwrap());
    }

    #[test]
    fn extending_concatenates_and_an_empty_patch_is_an_empty_list() {
        let mut a = Patch::new();
        assert!(a.is_empty());
        assert_eq!(a.to_json().unwrap(), b"[]");
        a.extend(Patch::new());
        let mut b = Patch::new();
        b.add(&["x"], &1);
        b.add(&["y"], &2);
        a.extend(b);
        let mut c = Patch::new();
        c.add(&["z"], &3);
        a.extend(c);
        assert_eq!(
            a.to_json().unwrap(),
            reference(&[(&["x"], json!(1)), (&["y"], json!(2)), (&["z"], json!(3))])
        );
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn a_value_that_fails_to_serialize_is_an_error_not_a_partial_patch() {
        use std::collections::BTreeMap;
        let mut p = Patch::new();
        p.add(&["ok"], &1);
        // Map keys must be strings in JSON.
        let bad: BTreeMap<Vec<u8>, u8> = BTreeMap::from([(vec![1], 1)]);
        p.add(&["bad"], &bad);
        p.add(&["after"], &2);
        assert!(!p.is_empty());
        assert!(p.to_json().is_err());
        assert!(p.write_base64(&mut vec![]).is_err());
        let mut q = Patch::new();
        q.extend(p);
        assert!(q.to_json().is_err());
    }
}
