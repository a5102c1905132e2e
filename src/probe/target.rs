//! Where the busy guard finds a pod's busy probe so it can probe the pod itself: each kind
//! registers a resolver on the shared [`ProbeCache`](super::ProbeCache) that maps a pod
//! (namespace, name) to its pool's http/exec probe and the pod as the kind's cache holds it.
//!
//! Invariants:
//! - a resolver is a lookup in the kind's own caches: no I/O, no await;
//! - a resolver answers only for pods of a pool whose busy source is an http or exec probe
//!   (an annotation-mode pool answers None), so the guard never does I/O for an
//!   annotation-mode pod;
//! - [`target`] is pure: a pod that is not running (or has no IP, for http) cannot be busy,
//!   as the controllers' own view says ([`super::pod_busy`]).
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::exec::{call_for, ExecCall};
use crate::api::probe::{ExecProbe, HttpProbe};

/// A pool's busy probe, as the guard runs it.
#[derive(Debug, Clone, PartialEq)]
pub enum PoolProbe {
    Http(HttpProbe),
    Exec(ExecProbe),
}

impl PoolProbe {
    /// How often the pool probes each pod (the controllers' clamping): a cached result older
    /// than this is probed again by the guard.
    pub fn period(&self) -> Duration {
        let secs = match self {
            PoolProbe::Http(h) => h.period_seconds.max(1),
            PoolProbe::Exec(e) => e.period_seconds.clamp(1, 3600),
        };
        Duration::from_secs(secs as u64)
    }
}

/// A pod's probe as a kind's resolver found it.
#[derive(Debug, Clone)]
pub struct Found {
    pub probe: PoolProbe,
    /// The pod as the kind's cache holds it (phase, IP, container names).
    pub pod: Arc<Pod>,
}

/// Maps (namespace, pod name) to the pod's probe; see the module invariants.
pub type Resolver = Arc<dyn Fn(&str, &str) -> Option<Found> + Send + Sync>;

/// What to run to learn whether a pod is busy now.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Http {
        ip: IpAddr,
        cfg: HttpProbe,
    },
    /// `call` is None when the pod has no container to run the command in (a probe error).
    Exec {
        call: Option<ExecCall>,
        cfg: ExecProbe,
    },
    /// Not running yet (or no IP for http): its app cannot be busy.
    NotRunning,
}

/// The probe to run for `pod` under `probe`. Pure.
pub fn target(pod: &Pod, probe: &PoolProbe) -> Target {
    if !super::is_running(pod) {
        return Target::NotRunning;
    }
    match probe {
        PoolProbe::Http(cfg) => match super::pod_ip(pod) {
            Some(ip) => Target::Http {
                ip,
                cfg: cfg.clone(),
            },
            None => Target::NotRunning,
        },
        PoolProbe::Exec(cfg) => Target::Exec {
            call: call_for(pod, cfg),
            cfg: cfg.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(phase: Option<&str>, ip: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{"name": "main"}]},
            "status": {"phase": phase, "podIP": ip}
        }))
        .unwrap()
    }

    #[test]
    fn targets_follow_the_pod_and_the_mode() {
        let http = PoolProbe::Http(HttpProbe::default());
        let exec_cfg: ExecProbe = serde_json::from_value(json!({"command": ["true"]})).unwrap();
        let exec = PoolProbe::Exec(exec_cfg.clone());
        assert_eq!(
            target(&pod(Some("Pending"), None), &http),
            Target::NotRunning
        );
        assert_eq!(
            target(&pod(Some("Running"), None), &http),
            Target::NotRunning
        );
        assert!(matches!(
            target(&pod(Some("Running"), Some("10.0.0.7")), &http),
            Target::Http { ip, .. } if ip.to_string() == "10.0.0.7"
        ));
        assert_eq!(
            target(&pod(Some("Pending"), None), &exec),
            Target::NotRunning
        );
        match target(&pod(Some("Running"), None), &exec) {
            Target::Exec { call: Some(c), cfg } => {
                assert_eq!((c.container.as_str(), c.pod.as_str()), ("main", "p"));
                assert_eq!(cfg, exec_cfg);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(http.period(), Duration::from_secs(10));
        assert_eq!(exec.period(), Duration::from_secs(5));
    }
}
