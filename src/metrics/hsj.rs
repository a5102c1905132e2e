//! HotStandbyJob metrics: per-object unit counts and Job writes.
//!
//! Invariant: every per-object series is removed by `forget` when its HSJ goes.
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use prometheus_client::registry::Registry;

use super::{object_gauges, DecisionLabels, ObjectLabels};

pub struct HsjMetrics {
    pub busy: Family<ObjectLabels, Gauge>,
    pub idle: Family<ObjectLabels, Gauge>,
    pub unknown: Family<ObjectLabels, Gauge>,
    pub desired: Family<ObjectLabels, Gauge>,
    pub active: Family<ObjectLabels, Gauge>,
    pub consecutive_failures: Family<ObjectLabels, Gauge>,
    pub job_writes: Family<DecisionLabels, Counter>,
    /// From a reconcile's start to the answer of its last Job create (a pool that needed
    /// units); not the HSD's histogram, so each kind's reaction reads on its own.
    pub reaction: prometheus_client::metrics::histogram::Histogram,
}

/// One reconcile's counts, as the gauges show them.
pub struct HsjCounts {
    pub busy: i64,
    pub idle: i64,
    pub unknown: i64,
    pub desired: i64,
    pub active: i64,
    pub consecutive_failures: i64,
}

impl HsjMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let [busy, idle, unknown, desired, active, consecutive_failures] = object_gauges(
            registry,
            [
                ("hsj_busy_jobs", "HotStandbyJob units whose pod is busy"),
                ("hsj_idle_jobs", "HotStandbyJob units whose pods are idle"),
                (
                    "hsj_unknown_jobs",
                    "HotStandbyJob units whose busy state is unknown",
                ),
                ("hsj_desired_jobs", "HotStandbyJob desired active units"),
                ("hsj_active_jobs", "HotStandbyJob active (unfinished) units"),
                (
                    "hsj_consecutive_failures",
                    "HotStandbyJob units failing before ever being busy (creation backs off)",
                ),
            ],
        );
        let job_writes = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "hsj_job_writes",
            "Jobs created (up), deleted as idle surplus (down) or replaced after failing (replace)",
            job_writes.clone(),
        );
        let reaction = super::latency(
            registry,
            "hsj_reaction_seconds",
            "From a HotStandbyJob reconcile's start to its Job creates answered",
        );
        HsjMetrics {
            busy,
            idle,
            unknown,
            desired,
            active,
            consecutive_failures,
            job_writes,
            reaction,
        }
    }

    pub fn set(&self, labels: &ObjectLabels, c: &HsjCounts) {
        for (g, v) in [
            (&self.busy, c.busy),
            (&self.idle, c.idle),
            (&self.unknown, c.unknown),
            (&self.desired, c.desired),
            (&self.active, c.active),
            (&self.consecutive_failures, c.consecutive_failures),
        ] {
            g.get_or_create(labels).set(v);
        }
    }

    /// `n` Jobs written in `direction` (up, down, replace); nothing recorded for 0.
    pub fn wrote(&self, direction: &'static str, n: usize) {
        if n > 0 {
            self.job_writes
                .get_or_create(&DecisionLabels { direction })
                .inc_by(n as u64);
        }
    }

    /// Remove the per-object gauges of an HSJ that is gone.
    pub fn forget(&self, labels: &ObjectLabels) {
        for f in [
            &self.busy,
            &self.idle,
            &self.unknown,
            &self.desired,
            &self.active,
            &self.consecutive_failures,
        ] {
            f.remove(labels);
        }
    }
}
