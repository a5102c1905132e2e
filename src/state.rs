//! Shared runtime state: readiness flags and what each reconciler believes (`/debug/state`).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Readiness: certificates loaded, (in `run` mode) caches synced, and no part stopped.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    certs: Arc<AtomicBool>,
    caches: Arc<AtomicBool>,
    broken: Arc<Mutex<Option<String>>>,
}

impl Readiness {
    /// Readiness for `webhook` mode, where no caches need to sync.
    pub fn without_caches() -> Self {
        let r = Self::default();
        r.caches.store(true, Ordering::SeqCst);
        r
    }
    pub fn set_certs_loaded(&self) {
        self.certs.store(true, Ordering::SeqCst)
    }
    pub fn set_caches_synced(&self) {
        self.caches.store(true, Ordering::SeqCst)
    }
    /// A part of the process stopped (the process is about to exit).
    pub fn set_broken(&self, reason: String) {
        match self.broken.lock() {
            Ok(mut b) => *b = Some(reason),
            Err(p) => *p.into_inner() = Some(reason),
        }
    }
    /// Reasons the process is not ready yet; empty when ready.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        let mut r = vec![];
        if !self.certs.load(Ordering::SeqCst) {
            r.push("certificates not loaded".to_string());
        }
        if !self.caches.load(Ordering::SeqCst) {
            r.push("caches not synced".to_string());
        }
        let broken = match self.broken.lock() {
            Ok(b) => b.clone(),
            Err(p) => p.into_inner().clone(),
        };
        r.extend(broken);
        r
    }
}

/// What each reconciler currently believes, keyed by "<controller>/<namespace>/<name>".
#[derive(Clone, Debug, Default)]
pub struct DebugState {
    inner: Arc<RwLock<BTreeMap<String, serde_json::Value>>>,
}

impl DebugState {
    pub fn set(&self, key: String, value: serde_json::Value) {
        match self.inner.write() {
            Ok(mut m) => {
                m.insert(key, value);
            }
            Err(p) => {
                p.into_inner().insert(key, value);
            }
        }
    }
    pub fn remove(&self, key: &str) {
        match self.inner.write() {
            Ok(mut m) => {
                m.remove(key);
            }
            Err(p) => {
                p.into_inner().remove(key);
            }
        }
    }
    pub fn snapshot(&self) -> serde_json::Value {
        let m = match self.inner.read() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        };
        serde_json::to_value(m).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_both_flags() {
        let r = Readiness::default();
        assert_eq!(r.not_ready_reasons().len(), 2);
        r.set_certs_loaded();
        assert_eq!(r.not_ready_reasons(), vec!["caches not synced"]);
        r.set_caches_synced();
        assert!(r.not_ready_reasons().is_empty());
        assert!(Readiness::without_caches().not_ready_reasons() == vec!["certificates not loaded"]);
        r.set_broken("task hsd stopped".into());
        assert_eq!(r.not_ready_reasons(), vec!["task hsd stopped"]);
    }

    #[test]
    fn debug_state_round_trip() {
        let d = DebugState::default();
        d.set("hsd/ns/a".into(), serde_json::json!({"busy": 1}));
        assert_eq!(d.snapshot()["hsd/ns/a"]["busy"], 1);
        d.remove("hsd/ns/a");
        assert_eq!(d.snapshot(), serde_json::json!({}));
    }
}
