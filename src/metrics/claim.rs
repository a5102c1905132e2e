//! HotStandbyClaim metrics: outcomes, the operator's binding time and callers' wait.
//!
//! Invariant: no per-claim series (claims are many and short-lived): only outcome labels.
use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use prometheus_client::registry::Registry;

use super::OutcomeLabels;

pub struct ClaimMetrics {
    /// Claims by outcome: bound, exhausted, pool_not_found, invalid, pod_lost, released,
    /// conflict (a pod write lost a race; the claim tried the next pod).
    pub claims: Family<OutcomeLabels, Counter>,
    /// From the pass that chose the pod to the claim's status written Bound.
    pub bind: Histogram,
    /// From when the operator first saw the claim to Bound.
    pub wait: Histogram,
}

impl ClaimMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let claims = Family::<OutcomeLabels, Counter>::default();
        registry.register("claims", "HotStandbyClaims by outcome", claims.clone());
        let bind = Histogram::new(super::latency_buckets());
        registry.register(
            "claim_bind_seconds",
            "From choosing a pod to the claim written Bound",
            bind.clone(),
        );
        let wait = Histogram::new(super::latency_buckets());
        registry.register(
            "claim_wait_seconds",
            "From the claim seen by the operator to Bound",
            wait.clone(),
        );
        ClaimMetrics { claims, bind, wait }
    }

    pub fn outcome(&self, outcome: &'static str) {
        self.claims.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}
