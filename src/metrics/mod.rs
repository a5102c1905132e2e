//! Prometheus metrics, rendered as text on `GET /metrics`.
use std::sync::Mutex;

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};
use prometheus_client::registry::Registry;

pub mod actor;
pub mod claim;
pub mod hsd;
pub mod hsj;
pub mod probe;
pub mod singleton;

pub use actor::ActorMetrics;
pub use claim::ClaimMetrics;
pub use hsd::{HsdCounts, HsdMetrics};
pub use hsj::{HsjCounts, HsjMetrics};
pub use probe::ProbeMetrics;
pub use singleton::SingletonMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub namespace: String,
    pub name: String,
}

impl ObjectLabels {
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardLabels {
    pub decision: &'static str,
    pub requester_class: &'static str,
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub certificate: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: &'static str,
    pub op: &'static str,
}

pub(crate) fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0,
    ]
    .into_iter()
}

/// `N` per-object gauges, registered in order: one `(name, help)` each.
pub(crate) fn object_gauges<const N: usize>(
    registry: &mut Registry,
    specs: [(&str, &str); N],
) -> [Family<ObjectLabels, Gauge>; N] {
    specs.map(|(name, help)| {
        let g = Family::<ObjectLabels, Gauge>::default();
        registry.register(name, help, g.clone());
        g
    })
}

/// Every metric the operator exports: the ones every part shares here, each kind's in its
/// own concern (`hsd`, `hsj`, `actor`, `singleton`, `probe`), which registers itself.
/// Metric names never change: dashboards and alerts depend on them.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub admissions: Family<OutcomeLabels, Counter>,
    pub admission_duration: Histogram,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    /// From observing a busy-state change to the write that restores capacity (both pools).
    pub reaction_latency: Histogram,
    /// 1 once a watched resource's cache has listed, 0 while it waits (see `state::Caches`).
    pub cache_synced: Family<ResourceLabels, Gauge>,
    /// Busy-guard answers to pod DELETE and eviction reviews.
    pub busy_guard_decisions: Family<GuardLabels, Counter>,
    /// `notAfter` (seconds since 1970) of the served certificate (`certificate="serving"`)
    /// and of the self-signed CA (`certificate="ca"`).
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    pub hsd: HsdMetrics,
    pub hsj: HsjMetrics,
    pub actor: ActorMetrics,
    pub singleton: SingletonMetrics,
    pub probe: ProbeMetrics,
    pub claim: ClaimMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `name` registered as a family (or metric) built by `Default`.
fn registered<M: Default + Clone + prometheus_client::registry::Metric>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> M {
    let m = M::default();
    registry.register(name, help, m.clone());
    m
}

/// `name` registered as a latency histogram.
fn latency(registry: &mut Registry, name: &str, help: &str) -> Histogram {
    let h = Histogram::new(latency_buckets());
    registry.register(name, help, h.clone());
    h
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("kube_standby");
        let admissions = registered(&mut r, "admissions", "Admission requests by outcome");
        let admission_duration = latency(
            &mut r,
            "admission_duration_seconds",
            "Admission handling latency",
        );
        let cache_synced = registered(
            &mut r,
            "cache_synced",
            "1 once the cache of a watched resource has listed, 0 while it waits",
        );
        let busy_guard_decisions = registered(
            &mut r,
            "busy_guard_decisions",
            "Busy-guard answers to pod DELETE and eviction reviews",
        );
        let certificate_expiry = registered(
            &mut r,
            "certificate_expiry_timestamp_seconds",
            "Expiry (notAfter, seconds since 1970) of the served certificate and of the self-signed CA",
        );
        let reconciles = registered(&mut r, "reconciles", "Reconcile runs");
        let reconcile_errors = registered(&mut r, "reconcile_errors", "Reconcile errors");
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(latency_buckets())
            });
        r.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            reconcile_duration.clone(),
        );
        let hsd = HsdMetrics::register(&mut r);
        let probe = ProbeMetrics::register(&mut r);
        let reaction_latency = latency(
            &mut r,
            "hsd_reaction_seconds",
            "From observing a busy-state change to the replicas write",
        );
        let singleton = SingletonMetrics::register(&mut r);
        let hsj = HsjMetrics::register(&mut r);
        let actor = ActorMetrics::register(&mut r);
        let claim = ClaimMetrics::register(&mut r);
        Metrics {
            registry: Mutex::new(r),
            admissions,
            admission_duration,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            reaction_latency,
            cache_synced,
            busy_guard_decisions,
            certificate_expiry,
            hsd,
            hsj,
            actor,
            singleton,
            probe,
            claim,
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = match self.registry.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }

    pub fn admission(&self, outcome: &'static str, seconds: f64) {
        self.admissions
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.admission_duration.observe(seconds);
    }

    pub fn reconciled(&self, controller: &'static str, seconds: f64) {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        self.reconcile_duration
            .get_or_create(&ControllerLabels { controller })
            .observe(seconds);
    }

    pub fn reconcile_failed(&self, controller: &'static str, error: &crate::Error) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller,
                error: error.metric_label(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_contains_recorded_values() {
        let m = Metrics::new();
        m.admission("patched", 0.001);
        m.admission("patched", 0.002);
        m.reconciled("hsd", 0.01);
        m.reconcile_failed("hsd", &crate::Error::Config("x".into()));
        let text = m.render();
        assert!(
            text.contains(r#"kube_standby_admissions_total{outcome="patched"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("kube_standby_admission_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kube_standby_reconcile_errors_total{controller="hsd",error="config"} 1"#
            ),
            "{text}"
        );
    }
}

#[cfg(test)]
mod names {
    use super::*;

    fn labels() -> ObjectLabels {
        ObjectLabels {
            namespace: "ns".into(),
            name: "a".into(),
        }
    }

    /// The exported names are a public interface: splitting the registration per concern
    /// must not rename, add or lose one.
    #[test]
    fn every_metric_name_is_unchanged() {
        let m = Metrics::new();
        // A family renders only once it has a series: give each one.
        m.admission("patched", 0.001);
        m.reconciled("hsd", 0.01);
        m.reconcile_failed("hsd", &crate::Error::Config("x".into()));
        m.cache_synced
            .get_or_create(&ResourceLabels {
                resource: "pods".into(),
            })
            .set(1);
        m.busy_guard_decisions
            .get_or_create(&GuardLabels {
                decision: "allow",
                requester_class: "other",
                operation: "delete",
            })
            .inc();
        m.certificate_expiry
            .get_or_create(&CertificateLabels { certificate: "ca" })
            .set(1);
        m.hsd.set(
            &labels(),
            &HsdCounts {
                busy: 1,
                idle: 1,
                unknown: 0,
                desired: 2,
            },
        );
        m.hsd.scaled("up");
        m.hsj.set(
            &labels(),
            &HsjCounts {
                busy: 1,
                idle: 1,
                unknown: 0,
                desired: 2,
                active: 2,
                consecutive_failures: 0,
            },
        );
        m.hsj.wrote("up", 1);
        m.hsj.reaction.observe(0.01);
        m.actor.set(&labels(), true, true);
        m.actor.wrote("Deployment", "apply");
        m.probe.observe(0.001, "idle");
        m.singleton.epoch.get_or_create(&labels()).set(1);
        m.claim.outcome("bound");
        let text = m.render();
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        names.sort();
        let mut want = vec![
            "kube_standby_actor_scaling_ready",
            "kube_standby_actor_workload_ready",
            "kube_standby_actor_writes",
            "kube_standby_admission_duration_seconds",
            "kube_standby_admissions",
            "kube_standby_busy_guard_decisions",
            "kube_standby_busy_probe_duration_seconds",
            "kube_standby_busy_probes",
            "kube_standby_cache_synced",
            "kube_standby_certificate_expiry_timestamp_seconds",
            "kube_standby_claim_bind_seconds",
            "kube_standby_claim_wait_seconds",
            "kube_standby_claims",
            "kube_standby_hsd_busy_pods",
            "kube_standby_hsd_desired_replicas",
            "kube_standby_hsd_idle_pods",
            "kube_standby_hsd_reaction_seconds",
            "kube_standby_hsd_scale_decisions",
            "kube_standby_hsd_unknown_pods",
            "kube_standby_hsj_active_jobs",
            "kube_standby_hsj_busy_jobs",
            "kube_standby_hsj_consecutive_failures",
            "kube_standby_hsj_desired_jobs",
            "kube_standby_hsj_idle_jobs",
            "kube_standby_hsj_job_writes",
            "kube_standby_hsj_reaction_seconds",
            "kube_standby_hsj_unknown_jobs",
            "kube_standby_reconcile_duration_seconds",
            "kube_standby_reconcile_errors",
            "kube_standby_reconciles",
            "kube_standby_singleton_epoch",
            "kube_standby_singleton_handover_detection_seconds",
            "kube_standby_singleton_handover_gap_seconds",
            "kube_standby_singleton_handover_release_seconds",
            "kube_standby_singleton_transition_timeouts",
        ];
        want.sort();
        assert_eq!(names, want);
    }

    #[test]
    fn each_kind_forgets_only_its_own_object() {
        let m = Metrics::new();
        let a = labels();
        let b = ObjectLabels {
            namespace: "ns".into(),
            name: "b".into(),
        };
        for l in [&a, &b] {
            m.hsd.set(
                l,
                &HsdCounts {
                    busy: 3,
                    idle: 1,
                    unknown: 0,
                    desired: 4,
                },
            );
            m.hsj.set(
                l,
                &HsjCounts {
                    busy: 2,
                    idle: 1,
                    unknown: 0,
                    desired: 3,
                    active: 3,
                    consecutive_failures: 0,
                },
            );
            m.actor.set(l, true, false);
        }
        m.hsd.forget(&a);
        m.hsj.forget(&a);
        m.actor.forget(&a);
        let text = m.render();
        assert!(!text.contains(r#"name="a""#), "{text}");
        for line in [
            r#"kube_standby_hsd_desired_replicas{namespace="ns",name="b"} 4"#,
            r#"kube_standby_hsj_busy_jobs{namespace="ns",name="b"} 2"#,
            r#"kube_standby_actor_workload_ready{namespace="ns",name="b"} 1"#,
            r#"kube_standby_actor_scaling_ready{namespace="ns",name="b"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn writes_of_zero_jobs_are_not_counted() {
        let m = Metrics::new();
        m.hsj.wrote("up", 0);
        m.hsj.wrote("down", 2);
        let text = m.render();
        assert!(!text.contains(r#"direction="up""#), "{text}");
        assert!(
            text.contains(r#"kube_standby_hsj_job_writes_total{direction="down"} 2"#),
            "{text}"
        );
    }
}

#[cfg(test)]
mod singleton_failover_tests {
    use super::*;

    #[test]
    fn epoch_gauge_and_gap_parts_are_exported_and_the_gauge_forgotten() {
        let m = Metrics::new();
        let labels = ObjectLabels::new("ns", "db");
        m.singleton.epoch.get_or_create(&labels).set(3);
        m.singleton.detection.observe(0.002);
        m.singleton.release.observe(0.01);
        let text = m.render();
        for want in [
            r#"kube_standby_singleton_epoch{namespace="ns",name="db"} 3"#,
            "kube_standby_singleton_handover_detection_seconds_count 1",
            "kube_standby_singleton_handover_release_seconds_count 1",
            "kube_standby_singleton_handover_gap_seconds_count 0",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        m.singleton.epoch.remove(&labels);
        assert!(!m.render().contains("kube_standby_singleton_epoch{"));
    }
}
