//! AsyncActor metrics: per-object readiness and the writes made for actors.
//!
//! Invariant: every per-object series is removed by `forget` when its actor goes.
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use prometheus_client::registry::Registry;

use super::{object_gauges, ObjectLabels, WriteLabels};

pub struct ActorMetrics {
    pub workload_ready: Family<ObjectLabels, Gauge>,
    pub scaling_ready: Family<ObjectLabels, Gauge>,
    pub writes: Family<WriteLabels, Counter>,
}

impl ActorMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let [workload_ready, scaling_ready] = object_gauges(
            registry,
            [
                (
                    "actor_workload_ready",
                    "1 when an AsyncActor's workload exists and its pods are ready",
                ),
                (
                    "actor_scaling_ready",
                    "1 when an AsyncActor's scaling is as asked (KEDA objects in place, or scaling disabled)",
                ),
            ],
        );
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "actor_writes",
            "Writes made for AsyncActors, by kind and operation",
            writes.clone(),
        );
        ActorMetrics {
            workload_ready,
            scaling_ready,
            writes,
        }
    }

    pub fn set(&self, labels: &ObjectLabels, workload_ready: bool, scaling_ready: bool) {
        self.workload_ready
            .get_or_create(labels)
            .set(workload_ready as i64);
        self.scaling_ready
            .get_or_create(labels)
            .set(scaling_ready as i64);
    }

    pub fn wrote(&self, kind: &'static str, op: &'static str) {
        self.writes.get_or_create(&WriteLabels { kind, op }).inc();
    }

    /// Remove the per-object gauges of an AsyncActor that is gone.
    pub fn forget(&self, labels: &ObjectLabels) {
        self.workload_ready.remove(labels);
        self.scaling_ready.remove(labels);
    }
}
