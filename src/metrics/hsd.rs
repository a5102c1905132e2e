//! HotStandbyDeployment metrics: per-object pod counts and scale decisions.
//!
//! Invariant: every per-object series is removed by `forget` when its HSD goes, so the
//! exposition never grows with deleted objects.
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use prometheus_client::registry::Registry;

use super::{object_gauges, DecisionLabels, ObjectLabels};

pub struct HsdMetrics {
    pub busy: Family<ObjectLabels, Gauge>,
    pub idle: Family<ObjectLabels, Gauge>,
    pub unknown: Family<ObjectLabels, Gauge>,
    pub desired: Family<ObjectLabels, Gauge>,
    pub scale_decisions: Family<DecisionLabels, Counter>,
}

/// One reconcile's counts, as the gauges show them.
pub struct HsdCounts {
    pub busy: i64,
    pub idle: i64,
    pub unknown: i64,
    pub desired: i64,
}

impl HsdMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let [busy, idle, unknown, desired] = object_gauges(
            registry,
            [
                ("hsd_busy_pods", "Busy pods per HotStandbyDeployment"),
                ("hsd_idle_pods", "Idle pods per HotStandbyDeployment"),
                (
                    "hsd_unknown_pods",
                    "Pods of unknown busy state per HotStandbyDeployment",
                ),
                (
                    "hsd_desired_replicas",
                    "Desired replicas per HotStandbyDeployment",
                ),
            ],
        );
        let scale_decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "hsd_scale_decisions",
            "Scale decisions by direction",
            scale_decisions.clone(),
        );
        HsdMetrics {
            busy,
            idle,
            unknown,
            desired,
            scale_decisions,
        }
    }

    pub fn set(&self, labels: &ObjectLabels, c: &HsdCounts) {
        for (g, v) in [
            (&self.busy, c.busy),
            (&self.idle, c.idle),
            (&self.unknown, c.unknown),
            (&self.desired, c.desired),
        ] {
            g.get_or_create(labels).set(v);
        }
    }

    pub fn scaled(&self, direction: &'static str) {
        self.scale_decisions
            .get_or_create(&DecisionLabels { direction })
            .inc();
    }

    /// Remove the per-object gauges of an HSD that is gone.
    pub fn forget(&self, labels: &ObjectLabels) {
        for f in [&self.busy, &self.idle, &self.unknown, &self.desired] {
            f.remove(labels);
        }
    }
}
