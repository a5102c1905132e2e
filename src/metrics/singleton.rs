//! StatefulSingleton metrics: handover gaps and transition timeouts.
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use prometheus_client::registry::Registry;

use super::latency_buckets;

pub struct SingletonMetrics {
    pub handover_gap: Histogram,
    pub timeouts: Counter,
}

impl SingletonMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let handover_gap = Histogram::new(latency_buckets());
        registry.register(
            "singleton_handover_gap_seconds",
            "From first seeing the old instance gone to the successor released",
            handover_gap.clone(),
        );
        let timeouts = Counter::default();
        registry.register(
            "singleton_transition_timeouts",
            "Handovers that exceeded maxTransitionTime",
            timeouts.clone(),
        );
        SingletonMetrics {
            handover_gap,
            timeouts,
        }
    }
}
