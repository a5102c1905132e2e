//! Victim choice shared by the warm pools (HotStandbyDeployment pods, HotStandbyJob units):
//! the planner's view of one counted pod or unit ([`PodView`]), which of them may be
//! deleted, in which order, and the preconditions a delete carries ([`Victim`]). Pure.
//!
//! Rules that hold for every input (property-tested in `hsd::plan` and `hsj::plan`):
//! - only an idle pod whose idleness is current is ever a victim (never busy, unknown or
//!   stale);
//! - victims are taken not running first, then not ready, then youngest, then by name.
use serde::Serialize;
use std::sync::Arc;

use crate::probe::BusyState;

/// One counted pod of the child Deployment (not terminating), or one HSJ unit (its Job's
/// name, UID and resourceVersion, its pods' aggregate state).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PodView {
    /// Shared strings: a view is cloned from the reconcilers' view caches, not rebuilt.
    pub name: Arc<str>,
    pub uid: Arc<str>,
    pub resource_version: Arc<str>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Containers started (phase Running).
    pub running: bool,
    pub ready: bool,
    pub state: BusyState,
    /// The state is a last-known value because the current probe fails.
    pub stale: bool,
    /// Why the state is what it is (for /debug/state).
    pub reason: Arc<str>,
    /// The pod-deletion-cost annotation it carries now.
    pub cost: Option<i32>,
    /// Taken out of its ReplicaSet during a rollout (owned by the HSD).
    pub detached: bool,
    /// Owned by the child's current ReplicaSet (false: an older revision).
    pub current: bool,
    /// The pod's own IP (for a fresh probe before it is deleted).
    pub ip: Option<std::net::IpAddr>,
}

impl PodView {
    /// Only an idle pod whose idleness is current may be deleted.
    pub fn deletable(&self) -> bool {
        self.state == BusyState::Idle && !self.stale
    }

    /// The deletion cost this pod should carry.
    pub fn wanted_cost(&self) -> i32 {
        crate::controller::cost::wanted_cost(self.state, self.stale)
    }

    pub fn victim(&self) -> Victim<'_> {
        Victim {
            name: &self.name,
            uid: &self.uid,
            resource_version: &self.resource_version,
            ip: self.ip,
        }
    }
}

/// A pod to delete, with the preconditions that make the delete fail if it changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Victim<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub resource_version: &'a str,
    /// The pod's own IP (for a fresh probe before it is deleted); not a precondition.
    #[serde(skip)]
    pub ip: Option<std::net::IpAddr>,
}

/// Victim order: not running first, then not ready, then youngest, then by name. The names
/// (behind pointers) are compared only on a tie in the fields before them.
pub fn victim_order(a: &PodView, b: &PodView) -> std::cmp::Ordering {
    a.running
        .cmp(&b.running)
        .then(a.ready.cmp(&b.ready))
        .then(b.created.cmp(&a.created))
        .then_with(|| a.name.cmp(&b.name))
}

/// Choose up to `n` deletable pods in victim order (partial selection, no copies).
pub fn choose_victims<'a>(
    pods: impl IntoIterator<Item = &'a PodView>,
    n: usize,
) -> Vec<Victim<'a>> {
    let mut candidates: Vec<&PodView> = pods.into_iter().filter(|p| p.deletable()).collect();
    let n = n.min(candidates.len());
    if n == 0 {
        return vec![];
    }
    if n < candidates.len() {
        candidates.select_nth_unstable_by(n - 1, |a, b| victim_order(a, b));
        candidates.truncate(n);
    }
    candidates.sort_unstable_by(|a, b| victim_order(a, b));
    candidates.into_iter().map(PodView::victim).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(i: usize, created: i64, running: bool, ready: bool, state: u8, stale: bool) -> PodView {
        PodView {
            name: format!("p{}", i % 7).into(),
            uid: format!("u{i}").into(),
            resource_version: "1".into(),
            created,
            running,
            ready,
            state: [BusyState::Idle, BusyState::Busy, BusyState::Unknown][usize::from(state % 3)],
            stale,
            reason: "".into(),
            cost: None,
            detached: false,
            current: true,
            ip: None,
        }
    }

    fn created() -> impl Strategy<Value = i64> {
        prop_oneof![
            0i64..4,
            1_800_000_000i64..1_800_000_004,
            Just(i64::MIN),
            Just(-1),
            Just(i64::MAX),
        ]
    }

    proptest! {
        /// The partial selection is exactly the first `n` deletable pods of a full sort by
        /// [`victim_order`] (ties in time, repeated names and extreme times included).
        #[test]
        fn the_choice_is_the_head_of_the_victim_order(
            pods in proptest::collection::vec(
                (created(), any::<bool>(), any::<bool>(), 0u8..3, proptest::bool::weighted(0.2)), 0..40),
            n in 0usize..45,
        ) {
            let views: Vec<PodView> = pods
                .iter()
                .enumerate()
                .map(|(i, (c, run, ready, st, stale))| view(i, *c, *run, *ready, *st, *stale))
                .collect();
            let mut want: Vec<&PodView> = views.iter().filter(|p| p.deletable()).collect();
            // Names repeat, so pods can be equal in the order: the reference is a full
            // (stable) sort, and each chosen pod must be equal in the order to its place in it.
            want.sort_by(|a, b| victim_order(a, b));
            want.truncate(n);
            let got = choose_victims(&views, n);
            prop_assert_eq!(got.len(), want.len());
            let find = |uid: &str| views.iter().find(|p| &*p.uid == uid).unwrap();
            for (g, w) in got.iter().zip(&want) {
                let g = find(g.uid);
                prop_assert!(g.deletable());
                prop_assert_eq!(victim_order(g, w), std::cmp::Ordering::Equal, "{:?} vs {:?}", g, w);
            }
        }
    }
}
