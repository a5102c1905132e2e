//! The pool-scaling spec shared by HotStandbyDeployment and HotStandbyJob: `idleTarget`,
//! `minReplicas`, `maxReplicas`, `scaleDownDelaySeconds`, their defaults, their one
//! [`PoolScaling::validate`] and the one desired-count rule ([`PoolScaling::desired`]).
//!
//! Why the two specs keep their own four fields instead of a `#[serde(flatten)]`ed struct:
//! each CRD documents these fields in its own words ("pods" and "the child Deployment" for
//! HSD, "Jobs" for HSJ), and a flattened struct carries one doc comment per field, so the
//! generated CRDs (and `charts/kube-standby/crds/crds.yaml`) would change. Instead each spec
//! implements [`Pooled`], and everything that reasons about the pool goes through it.

/// The pool-scaling fields of a spec, by value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolScaling {
    /// Idle units to keep on top of the busy ones.
    pub idle_target: i32,
    /// Lower bound of the unit count.
    pub min_replicas: i32,
    /// Upper bound of the unit count.
    pub max_replicas: i32,
    /// How long (seconds) desired must stay lower before a scale-down.
    pub scale_down_delay_seconds: i32,
}

/// A spec with a pool-scaling part (HotStandbyDeployment, HotStandbyJob).
pub trait Pooled {
    fn pool(&self) -> PoolScaling;
}

/// `impl Pooled` for a spec with the four fields `idle_target`, `min_replicas`,
/// `max_replicas` and `scale_down_delay_seconds`.
macro_rules! pooled {
    ($spec:ty) => {
        impl $crate::api::pool::Pooled for $spec {
            fn pool(&self) -> $crate::api::pool::PoolScaling {
                $crate::api::pool::PoolScaling {
                    idle_target: self.idle_target,
                    min_replicas: self.min_replicas,
                    max_replicas: self.max_replicas,
                    scale_down_delay_seconds: self.scale_down_delay_seconds,
                }
            }
        }
    };
}
pub(crate) use pooled;

impl PoolScaling {
    /// Problems with the scaling fields, each with a clear message (the schema refuses
    /// most of them too, but objects stored before the bounds existed still reach us).
    pub fn validate(&self) -> Vec<String> {
        let mut errors = vec![];
        let mut at_least = |field: &str, v: i32, min: i32| {
            if v < min {
                errors.push(format!("{field} must be >= {min}, got {v}"));
            }
        };
        at_least("idleTarget", self.idle_target, 0);
        at_least("minReplicas", self.min_replicas, 0);
        at_least("maxReplicas", self.max_replicas, 1);
        if self.min_replicas > self.max_replicas {
            errors.push(format!(
                "minReplicas ({}) is greater than maxReplicas ({})",
                self.min_replicas, self.max_replicas
            ));
        }
        if self.scale_down_delay_seconds < 0 {
            errors.push(format!(
                "scaleDownDelaySeconds must be >= 0, got {}",
                self.scale_down_delay_seconds
            ));
        }
        errors
    }

    /// desired = clamp(busy + idleTarget, minReplicas, maxReplicas), saturating; negative
    /// bounds count as 0 and a maximum below the minimum as the minimum.
    pub fn desired(&self, busy: i32) -> i32 {
        let lo = self.min_replicas.max(0);
        busy.saturating_add(self.idle_target.max(0))
            .clamp(lo, self.max_replicas.max(lo))
    }
}

/// Serde default of `maxReplicas`.
pub(crate) fn default_max_replicas() -> i32 {
    1000
}

/// Serde default of `scaleDownDelaySeconds`.
pub(crate) fn default_scale_down_delay() -> i32 {
    30
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(idle_target: i32, min: i32, max: i32, delay: i32) -> PoolScaling {
        PoolScaling {
            idle_target,
            min_replicas: min,
            max_replicas: max,
            scale_down_delay_seconds: delay,
        }
    }

    #[test]
    fn validate_names_each_problem_in_field_order() {
        assert!(pool(1, 0, 2, 30).validate().is_empty());
        assert_eq!(
            pool(-1, -2, 0, -3).validate(),
            [
                "idleTarget must be >= 0, got -1",
                "minReplicas must be >= 0, got -2",
                "maxReplicas must be >= 1, got 0",
                "scaleDownDelaySeconds must be >= 0, got -3",
            ]
        );
        assert_eq!(
            pool(0, 5, 2, 0).validate(),
            ["minReplicas (5) is greater than maxReplicas (2)"]
        );
    }

    #[test]
    fn desired_is_clamped_and_saturating() {
        assert_eq!(pool(2, 0, 10, 0).desired(3), 5);
        assert_eq!(pool(2, 0, 4, 0).desired(3), 4);
        assert_eq!(pool(0, 3, 10, 0).desired(1), 3);
        assert_eq!(pool(1, 5, 2, 0).desired(0), 5);
        assert_eq!(pool(-4, -1, 10, 0).desired(2), 2);
        assert_eq!(pool(i32::MAX, 0, i32::MAX, 0).desired(i32::MAX), i32::MAX);
    }
}
