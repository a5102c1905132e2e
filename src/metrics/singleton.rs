//! StatefulSingleton metrics: handover gaps (whole, and split into detection and release),
//! transition timeouts, and the fencing epoch of each singleton (forgotten when it goes).
use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};
use prometheus_client::registry::Registry;

use super::{latency_buckets, ObjectLabels};

pub struct SingletonMetrics {
    /// The whole gap: detection + release.
    pub handover_gap: Histogram,
    pub timeouts: Counter,
    /// status.epoch of each singleton's last release.
    pub epoch: Family<ObjectLabels, Gauge>,
    /// The watch event showing the old pod gone → the reconcile that saw it.
    pub detection: Histogram,
    /// That reconcile → the successor's release written.
    pub release: Histogram,
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
        SingletonMetrics {
            handover_gap,
            timeouts,
            epoch,
            detection,
            release,
        }
    }
}
