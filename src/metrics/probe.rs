//! Busy-probe metrics (http and exec modes), shared by every kind that probes, and the
//! reaction latency of the two warm pools.
use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use prometheus_client::registry::Registry;

use super::{latency_buckets, OutcomeLabels};

pub struct ProbeMetrics {
    pub outcomes: Family<OutcomeLabels, Counter>,
    pub duration: Histogram,
}

impl ProbeMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "busy_probes",
            "Busy probe outcomes (busy, idle, error)",
            outcomes.clone(),
        );
        let duration = Histogram::new(latency_buckets());
        registry.register(
            "busy_probe_duration_seconds",
            "Busy probe latency",
            duration.clone(),
        );
        ProbeMetrics { outcomes, duration }
    }

    pub fn observe(&self, seconds: f64, outcome: &'static str) {
        self.duration.observe(seconds);
        self.outcomes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}
