//! Prometheus metrics, rendered as text on `GET /metrics`.
use std::sync::Mutex;

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};
use prometheus_client::registry::Registry;

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

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0,
    ]
    .into_iter()
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub admissions: Family<OutcomeLabels, Counter>,
    pub admission_duration: Histogram,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub hsd_busy: Family<ObjectLabels, Gauge>,
    pub hsd_idle: Family<ObjectLabels, Gauge>,
    pub hsd_unknown: Family<ObjectLabels, Gauge>,
    pub hsd_desired: Family<ObjectLabels, Gauge>,
    pub hsd_scale_decisions: Family<DecisionLabels, Counter>,
    pub probe_outcomes: Family<OutcomeLabels, Counter>,
    pub probe_duration: Histogram,
    pub reaction_latency: Histogram,
    pub singleton_handover_gap: Histogram,
    pub singleton_timeouts: Counter,
    /// Epoch gauge and the handover gap's two parts (see [`SingletonFailover`]).
    pub singleton_failover: SingletonFailover,
    pub hsj_busy: Family<ObjectLabels, Gauge>,
    pub hsj_idle: Family<ObjectLabels, Gauge>,
    pub hsj_unknown: Family<ObjectLabels, Gauge>,
    pub hsj_desired: Family<ObjectLabels, Gauge>,
    pub hsj_active: Family<ObjectLabels, Gauge>,
    pub hsj_consecutive_failures: Family<ObjectLabels, Gauge>,
    pub hsj_job_writes: Family<DecisionLabels, Counter>,
    pub actor_workload_ready: Family<ObjectLabels, Gauge>,
    pub actor_scaling_ready: Family<ObjectLabels, Gauge>,
    pub actor_writes: Family<WriteLabels, Counter>,
    /// 1 once a watched resource's cache has listed, 0 while it waits (see `state::Caches`).
    pub cache_synced: Family<ResourceLabels, Gauge>,
    /// Busy-guard answers to pod DELETE and eviction reviews.
    pub busy_guard_decisions: Family<GuardLabels, Counter>,
    /// `notAfter` (seconds since 1970) of the served certificate (`certificate="serving"`)
    /// and of the self-signed CA (`certificate="ca"`).
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Remove the per-object gauges of an HSD that is gone.
    pub fn forget_hsd(&self, labels: &ObjectLabels) {
        for f in [
            &self.hsd_busy,
            &self.hsd_idle,
            &self.hsd_unknown,
            &self.hsd_desired,
        ] {
            f.remove(labels);
        }
    }

    /// Remove the per-object gauges of an HSJ that is gone.
    pub fn forget_hsj(&self, labels: &ObjectLabels) {
        for f in [
            &self.hsj_busy,
            &self.hsj_idle,
            &self.hsj_unknown,
            &self.hsj_desired,
            &self.hsj_active,
            &self.hsj_consecutive_failures,
        ] {
            f.remove(labels);
        }
    }

    /// Remove the per-object gauges of an AsyncActor that is gone.
    pub fn forget_actor(&self, labels: &ObjectLabels) {
        self.actor_workload_ready.remove(labels);
        self.actor_scaling_ready.remove(labels);
    }

    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kube_standby");
        let admissions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission requests by outcome",
            admissions.clone(),
        );
        let admission_duration = Histogram::new(latency_buckets());
        registry.register(
            "admission_duration_seconds",
            "Admission handling latency",
            admission_duration.clone(),
        );
        let cache_synced = Family::<ResourceLabels, Gauge>::default();
        registry.register(
            "cache_synced",
            "1 once the cache of a watched resource has listed, 0 while it waits",
            cache_synced.clone(),
        );
        let busy_guard_decisions = Family::<GuardLabels, Counter>::default();
        registry.register(
            "busy_guard_decisions",
            "Busy-guard answers to pod DELETE and eviction reviews",
            busy_guard_decisions.clone(),
        );
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "Expiry (notAfter, seconds since 1970) of the served certificate and of the self-signed CA",
            certificate_expiry.clone(),
        );
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register("reconciles", "Reconcile runs", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile errors",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(latency_buckets())
            });
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            reconcile_duration.clone(),
        );
        let hsd_busy = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "hsd_busy_pods",
            "Busy pods per HotStandbyDeployment",
            hsd_busy.clone(),
        );
        let hsd_idle = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "hsd_idle_pods",
            "Idle pods per HotStandbyDeployment",
            hsd_idle.clone(),
        );
        let hsd_unknown = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "hsd_unknown_pods",
            "Pods of unknown busy state per HotStandbyDeployment",
            hsd_unknown.clone(),
        );
        let hsd_desired = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "hsd_desired_replicas",
            "Desired replicas per HotStandbyDeployment",
            hsd_desired.clone(),
        );
        let hsd_scale_decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "hsd_scale_decisions",
            "Scale decisions by direction",
            hsd_scale_decisions.clone(),
        );
        let probe_outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "busy_probes",
            "Busy probe outcomes (busy, idle, error)",
            probe_outcomes.clone(),
        );
        let probe_duration = Histogram::new(latency_buckets());
        registry.register(
            "busy_probe_duration_seconds",
            "Busy probe latency",
            probe_duration.clone(),
        );
        let reaction_latency = Histogram::new(latency_buckets());
        registry.register(
            "hsd_reaction_seconds",
            "From observing a busy-state change to the replicas write",
            reaction_latency.clone(),
        );
        let singleton_handover_gap = Histogram::new(latency_buckets());
        registry.register(
            "singleton_handover_gap_seconds",
            "From first seeing the old instance gone to the successor released",
            singleton_handover_gap.clone(),
        );
        let singleton_timeouts = Counter::default();
        registry.register(
            "singleton_transition_timeouts",
            "Handovers that exceeded maxTransitionTime",
            singleton_timeouts.clone(),
        );
        let singleton_failover = SingletonFailover::register(&mut registry);
        let hsj_gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Family::<ObjectLabels, Gauge>::default();
            registry.register(name, help, g.clone());
            g
        };
        let hsj_busy = hsj_gauge(
            &mut registry,
            "hsj_busy_jobs",
            "HotStandbyJob units whose pod is busy",
        );
        let hsj_idle = hsj_gauge(
            &mut registry,
            "hsj_idle_jobs",
            "HotStandbyJob units whose pods are idle",
        );
        let hsj_unknown = hsj_gauge(
            &mut registry,
            "hsj_unknown_jobs",
            "HotStandbyJob units whose busy state is unknown",
        );
        let hsj_desired = hsj_gauge(
            &mut registry,
            "hsj_desired_jobs",
            "HotStandbyJob desired active units",
        );
        let hsj_active = hsj_gauge(
            &mut registry,
            "hsj_active_jobs",
            "HotStandbyJob active (unfinished) units",
        );
        let hsj_consecutive_failures = hsj_gauge(
            &mut registry,
            "hsj_consecutive_failures",
            "HotStandbyJob units failing before ever being busy (creation backs off)",
        );
        let hsj_job_writes = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "hsj_job_writes",
            "Jobs created (up), deleted as idle surplus (down) or replaced after failing (replace)",
            hsj_job_writes.clone(),
        );
        let actor_workload_ready = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "actor_workload_ready",
            "1 when an AsyncActor's workload exists and its pods are ready",
            actor_workload_ready.clone(),
        );
        let actor_scaling_ready = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "actor_scaling_ready",
            "1 when an AsyncActor's scaling is as asked (KEDA objects in place, or scaling disabled)",
            actor_scaling_ready.clone(),
        );
        let actor_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "actor_writes",
            "Writes made for AsyncActors, by kind and operation",
            actor_writes.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            admissions,
            admission_duration,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            hsd_busy,
            hsd_idle,
            hsd_unknown,
            hsd_desired,
            hsd_scale_decisions,
            probe_outcomes,
            probe_duration,
            reaction_latency,
            singleton_handover_gap,
            singleton_timeouts,
            singleton_failover,
            hsj_busy,
            hsj_idle,
            hsj_unknown,
            hsj_desired,
            hsj_active,
            hsj_consecutive_failures,
            hsj_job_writes,
            actor_workload_ready,
            actor_scaling_ready,
            actor_writes,
            cache_synced,
            busy_guard_decisions,
            certificate_expiry,
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

// ---- StatefulSingleton failover metrics (issue 20): one self-contained block. ----

/// The fencing epoch of each StatefulSingleton, and the handover gap split in two:
/// detection (the watch event showing the old pod gone → the reconcile that saw it) and
/// release (that reconcile → the successor's release written).
/// `singleton_handover_gap_seconds` stays the whole gap (detection + release).
pub struct SingletonFailover {
    pub epoch: Family<ObjectLabels, Gauge>,
    pub detection: Histogram,
    pub release: Histogram,
}

impl SingletonFailover {
    fn register(registry: &mut Registry) -> Self {
        let epoch = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "singleton_epoch",
            "The fencing epoch of the StatefulSingleton's last release (status.epoch)",
            epoch.clone(),
        );
        let detection = Histogram::new(latency_buckets());
        registry.register(
            "singleton_handover_detection_seconds",
            "From the watch event showing the old instance gone to the reconcile that saw it",
            detection.clone(),
        );
        let release = Histogram::new(latency_buckets());
        registry.register(
            "singleton_handover_release_seconds",
            "From the reconcile that saw the old instance gone to the successor's release written",
            release.clone(),
        );
        SingletonFailover {
            epoch,
            detection,
            release,
        }
    }
}

#[cfg(test)]
mod singleton_failover_tests {
    use super::*;

    #[test]
    fn epoch_gauge_and_gap_parts_are_exported_and_the_gauge_forgotten() {
        let m = Metrics::new();
        let labels = ObjectLabels {
            namespace: "ns".into(),
            name: "db".into(),
        };
        m.singleton_failover.epoch.get_or_create(&labels).set(3);
        m.singleton_failover.detection.observe(0.002);
        m.singleton_failover.release.observe(0.01);
        let text = m.render();
        for want in [
            r#"kube_standby_singleton_epoch{namespace="ns",name="db"} 3"#,
            "kube_standby_singleton_handover_detection_seconds_count 1",
            "kube_standby_singleton_handover_release_seconds_count 1",
            "kube_standby_singleton_handover_gap_seconds_count 0",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        m.singleton_failover.epoch.remove(&labels);
        assert!(!m.render().contains("kube_standby_singleton_epoch{"));
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
