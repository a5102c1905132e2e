//! Where the webhook learns about the StatefulSingletons it matches pods against: a
//! reflector cache in `run` mode, YAML files in `webhook` mode.
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::guard::ProbeView;
use crate::api::StatefulSingleton;
use crate::{Error, Result};

/// A read-only view of the custom objects the mutators need.
pub trait ObjectSource: Send + Sync {
    /// The StatefulSingletons of a namespace.
    fn singletons(&self, namespace: &str) -> Vec<Arc<StatefulSingleton>>;

    /// A pod the busy guard may hold (one carrying the guard label), from a cache: the
    /// eviction path looks it up here, never through the API. None: unknown (allowed).
    fn guarded_pod(&self, _namespace: &str, _name: &str) -> Option<ObjectMeta> {
        None
    }

    /// The operator's latest probe result for a pod of an http/exec pool, by UID.
    fn probe(&self, _uid: &str) -> Option<ProbeView> {
        None
    }

    /// The http/exec probe of the pod `namespace/name`, when its pool probes it (a lookup
    /// in the kinds' caches, no I/O). None: annotation mode or unknown here.
    fn probe_target(&self, _namespace: &str, _name: &str) -> Option<crate::probe::target::Found> {
        None
    }
}

/// A fixed set of objects, e.g. loaded from `--objects` files.
#[derive(Default, Clone)]
pub struct StaticObjects {
    pub singletons: Vec<Arc<StatefulSingleton>>,
    /// Pods for the busy guard's eviction path (`kind: Pod` documents).
    pub pods: Vec<Arc<Pod>>,
}

impl ObjectSource for StaticObjects {
    /// An object with a namespace matches that namespace's pods; one without (like the
    /// namespace-free `examples/`, which `kubectl apply -n NS` places anywhere) matches
    /// pods of every namespace.
    fn singletons(&self, namespace: &str) -> Vec<Arc<StatefulSingleton>> {
        self.singletons
            .iter()
            .filter(|s| s.namespace().is_none_or(|ns| ns == namespace))
            .cloned()
            .collect()
    }

    fn guarded_pod(&self, namespace: &str, name: &str) -> Option<ObjectMeta> {
        self.pods
            .iter()
            .find(|p| {
                p.namespace().as_deref().unwrap_or("default") == namespace && p.name_any() == name
            })
            .map(|p| p.metadata.clone())
    }
}

impl StaticObjects {
    /// Load objects from multi-document YAML (or JSON) text. StatefulSingletons (either
    /// group) and Pods are kept; other kinds are ignored. A malformed one is an error.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self> {
        let mut out = StaticObjects::default();
        out.add_yaml(text, origin)?;
        Ok(out)
    }

    pub fn add_yaml(&mut self, text: &str, origin: &str) -> Result<()> {
        use serde::Deserialize;
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = serde_yaml::Value::deserialize(doc)
                .map_err(|e| Error::Config(format!("{origin}: document {}: {e}", i + 1)))?;
            if value.is_null() {
                continue;
            }
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default();
            if kind == "Pod" {
                let p: Pod = serde_yaml::from_value(value).map_err(|e| {
                    Error::Config(format!("{origin}: document {}: invalid Pod: {e}", i + 1))
                })?;
                self.pods.push(Arc::new(p));
                continue;
            }
            if kind != "StatefulSingleton" {
                continue;
            }
            let s: StatefulSingleton = serde_yaml::from_value(value).map_err(|e| {
                Error::Config(format!(
                    "{origin}: document {}: invalid StatefulSingleton: {e}",
                    i + 1
                ))
            })?;
            self.singletons.push(Arc::new(s));
        }
        Ok(())
    }

    pub fn from_files(paths: &[impl AsRef<Path>]) -> Result<Self> {
        let mut out = StaticObjects::default();
        for p in paths {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            out.add_yaml(&text, &p.as_ref().display().to_string())?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_singletons_and_skips_other_kinds() {
        let y = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
---
apiVersion: apps.statefulsingleton.com/v1
kind: StatefulSingleton
metadata: {name: db, namespace: prod}
spec:
  selector: {matchLabels: {app: db}}
"#;
        let o = StaticObjects::from_yaml(y, "t").unwrap();
        assert_eq!(o.singletons("prod").len(), 1);
        assert_eq!(o.singletons("other").len(), 0);
        assert_eq!(o.singletons("prod")[0].spec.termination_grace_period, 30);
    }

    #[test]
    fn loads_pods_for_the_guard() {
        let y = "apiVersion: v1\nkind: Pod\nmetadata: {name: w, namespace: prod}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: d}\n";
        let o = StaticObjects::from_yaml(y, "t").unwrap();
        assert!(o.guarded_pod("prod", "w").is_some());
        assert!(o.guarded_pod("default", "d").is_some());
        assert!(o.guarded_pod("prod", "d").is_none());
        let bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: [x]}\n";
        let e = StaticObjects::from_yaml(bad, "f.yaml")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("f.yaml") && e.contains("invalid Pod"), "{e}");
    }

    #[test]
    fn an_object_without_a_namespace_matches_every_namespace() {
        let y = "apiVersion: apps.statefulsingleton.com/v1\nkind: StatefulSingleton\nmetadata: {name: db}\nspec:\n  selector: {matchLabels: {app: db}}\n";
        let o = StaticObjects::from_yaml(y, "t").unwrap();
        assert_eq!(o.singletons("cap").len(), 1);
        assert_eq!(o.singletons("default").len(), 1);
    }

    #[test]
    fn malformed_singleton_is_a_clear_error() {
        let y = "kind: StatefulSingleton\napiVersion: apps.statefulsingleton.com/v1\nmetadata: {name: x}\nspec: {}\n";
        let e = StaticObjects::from_yaml(y, "f.yaml")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("f.yaml") && e.contains("selector"), "{e}");
    }
}
