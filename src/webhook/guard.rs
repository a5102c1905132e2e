//! The busy guard: may this pod be removed now? A pure decision over the pod's metadata, who
//! asks, how (DELETE or eviction), the operator's cached probe result and how long the pod
//! has been held. The router (`mod.rs`) feeds it from AdmissionReviews; [`Holds`] remembers
//! when each hold started so an eviction is never held past `--busy-guard-max-hold`.
//!
//! Rules:
//! - a pod without the label `kube-standby.dev/busy-guard: "true"` is not guarded: allowed;
//! - an idle pod is always allowed;
//! - busy is, for a pod of an http/exec pool (annotation `kube-standby.dev/busy-source:
//!   probe`, or any pod the operator has a probe result for), the operator's latest probe
//!   result, where unknown or stale counts as busy; otherwise the annotation `paia.tech/busy`
//!   (or the key named by `kube-standby.dev/busy-annotation`) equal to "true" in any case;
//! - DELETE of a busy pod is denied to the guarded requesters (the ReplicaSet controller,
//!   the controller manager, the operator itself) and allowed to everyone else (a human,
//!   the garbage collector, the namespace controller, a force delete);
//! - eviction of a busy pod is denied with 429, like a PodDisruptionBudget would, whoever
//!   asks, until `max_hold` has passed since the hold started; then it is allowed with a
//!   warning, so a drain or node upgrade is never blocked for ever;
//! - the hold start is the earliest of this replica's memory ([`Holds`]) and the pod's
//!   annotation `kube-standby.dev/held-since` (RFC 3339, written once per hold by the replica
//!   that first denied an eviction), so neither the chart's second replica nor a restart
//!   lengthens a hold; an annotation older than the max hold plus the forget window
//!   ([`forget_after`]) is ignored, as a hold nobody asked about is forgotten in memory.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::api::probe::{
    default_annotation_key, BUSY_ANNOTATION_KEY_ANNOTATION, BUSY_GUARD_LABEL,
    BUSY_SOURCE_ANNOTATION,
};
use crate::api::tags::Tags;
use crate::probe::BusyState;

/// The ReplicaSet controller's identity when the controller manager runs with
/// `--use-service-account-credentials`.
pub const REPLICASET_CONTROLLER: &str = "system:serviceaccount:kube-system:replicaset-controller";
/// The controller manager's identity without service-account credentials.
pub const CONTROLLER_MANAGER: &str = "system:kube-controller-manager";
/// In `--busy-guard-requesters`: the operator's own identity (its service account).
pub const SELF: &str = "self";
/// Default `--busy-guard-max-hold`.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_secs(3600);
/// Default `--busy-guard-probe-budget`: how long a review waits for the guard's own probe
/// of an http/exec pod whose cached result is missing or older than its period (well
/// below the webhook's `timeoutSeconds`, 2).
pub const DEFAULT_PROBE_BUDGET: Duration = Duration::from_millis(500);
/// Annotation recording when a pod's eviction hold started (RFC 3339).
pub const HELD_SINCE_ANNOTATION: &str = "kube-standby.dev/held-since";
/// HTTP code of a refused eviction (what a PodDisruptionBudget answers).
pub const EVICTION_CODE: u16 = 429;
/// HTTP code of a refused DELETE.
pub const DELETE_CODE: u16 = 403;

/// The default guarded requesters, `self` included (resolved by the CLI).
pub fn default_requesters() -> Vec<String> {
    vec![
        REPLICASET_CONTROLLER.to_string(),
        CONTROLLER_MANAGER.to_string(),
        SELF.to_string(),
    ]
}

/// What is being asked of the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuardOp {
    /// `DELETE pods/<name>`.
    Delete,
    /// `CREATE pods/<name>/eviction`.
    Evict,
}

impl GuardOp {
    pub fn label(self) -> &'static str {
        match self {
            GuardOp::Delete => "delete",
            GuardOp::Evict => "eviction",
        }
    }
}

/// Who asks.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub username: &'a str,
    pub groups: &'a [String],
}

/// The operator's latest probe result for a pod (http/exec pools).
pub use crate::probe::ProbeView;

/// The guard's settings (`--busy-guard-requesters`, `--busy-guard-max-hold`).
#[derive(Debug, Clone, PartialEq)]
pub struct GuardSettings {
    /// Usernames or groups whose DELETE of a busy pod is denied (`self` already resolved).
    pub requesters: Vec<String>,
    /// Longest time an eviction is held.
    pub max_hold: Duration,
    /// Longest time a review waits for the guard's own probe of an http/exec pod.
    pub probe_budget: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            requesters: default_requesters()
                .into_iter()
                .filter(|r| r != SELF)
                .collect(),
            max_hold: DEFAULT_MAX_HOLD,
            probe_budget: DEFAULT_PROBE_BUDGET,
        }
    }
}

impl GuardSettings {
    /// Does `who` match an entry (its username, or one of its groups)?
    pub fn is_guarded_requester(&self, who: &Requester<'_>) -> bool {
        self.requesters
            .iter()
            .any(|g| g == who.username || who.groups.iter().any(|x| x == g))
    }
}

/// Everything one decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct GuardInput<'a> {
    pub pod: &'a ObjectMeta,
    pub requester: Requester<'a>,
    pub op: GuardOp,
    /// The operator's probe result for this pod, if it probes it.
    pub probe: Option<&'a ProbeView>,
    /// When this pod's hold started (first denial), if it is held.
    pub hold_started: Option<Instant>,
    pub now: Instant,
}

/// Why a removal was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedBecause {
    /// The pod does not carry the guard label.
    NotGuarded,
    /// The pod is idle.
    Idle,
    /// A DELETE by someone outside the guarded requesters.
    Requester,
    /// An eviction held for `max_hold` already.
    HoldExpired,
}

/// The guard's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allow {
        because: AllowedBecause,
        /// A warning returned to the client (the hold ran out on a busy pod).
        warning: Option<String>,
    },
    Deny {
        message: String,
        /// 429 for an eviction, 403 for a DELETE.
        code: u16,
    },
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }

    /// `decision` label of `kube_standby_busy_guard_decisions_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Allow {
                because: AllowedBecause::HoldExpired,
                ..
            } => "allowed_hold_expired",
            Verdict::Allow {
                because: AllowedBecause::Requester,
                ..
            } => "allowed_requester",
            Verdict::Allow { .. } => "allowed",
            Verdict::Deny { .. } => "denied",
        }
    }
}

/// Is the pod opted into the guard?
pub fn is_guarded<T: Tags + ?Sized>(pod: &T) -> bool {
    pod.label(BUSY_GUARD_LABEL)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Does this pod's busy state come from the operator's probes?
pub fn uses_probe<T: Tags + ?Sized>(pod: &T) -> bool {
    pod.annotation(BUSY_SOURCE_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("probe"))
}

/// Is the pod busy, and why (for the message)? Unknown and stale probe results count as busy.
pub fn busy<T: Tags + ?Sized>(pod: &T, probe: Option<&ProbeView>) -> (bool, String) {
    if let Some(claim) = crate::api::claim::claimed_by(pod) {
        return (true, format!("claimed by {claim}"));
    }
    match probe {
        Some(p) => match (p.state, p.stale) {
            (BusyState::Idle, false) => (false, format!("probe: idle ({})", p.reason)),
            (BusyState::Idle, true) => (true, format!("probe result stale ({})", p.reason)),
            (BusyState::Busy, _) => (true, format!("probe: busy ({})", p.reason)),
            (BusyState::Unknown, _) => (true, format!("probe result unknown ({})", p.reason)),
        },
        None if uses_probe(pod) => (true, "not probed yet".into()),
        None => {
            let key = pod
                .annotation(BUSY_ANNOTATION_KEY_ANNOTATION)
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .unwrap_or_else(default_annotation_key);
            match pod.annotation(&key) {
                Some(v) if v.trim().eq_ignore_ascii_case("true") => (true, format!("{key}={v}")),
                Some(v) => (false, format!("{key}={v}")),
                None => (false, format!("{key} absent")),
            }
        }
    }
}

/// The decision. Pure: the same input always gives the same verdict.
pub fn decide(input: &GuardInput<'_>, settings: &GuardSettings) -> Verdict {
    if !is_guarded(input.pod) {
        return Verdict::Allow {
            because: AllowedBecause::NotGuarded,
            warning: None,
        };
    }
    let (is_busy, why) = busy(input.pod, input.probe);
    if !is_busy {
        return Verdict::Allow {
            because: AllowedBecause::Idle,
            warning: None,
        };
    }
    let name = input.pod.name.as_deref().unwrap_or("<unnamed>");
    match input.op {
        GuardOp::Delete if !settings.is_guarded_requester(&input.requester) => Verdict::Allow {
            because: AllowedBecause::Requester,
            warning: None,
        },
        GuardOp::Delete => Verdict::Deny {
            message: format!(
                "pod {name} is busy ({why}): kube-standby holds its deletion until it is idle"
            ),
            code: DELETE_CODE,
        },
        GuardOp::Evict => {
            let held = input
                .hold_started
                .map(|s| input.now.saturating_duration_since(s))
                .unwrap_or_default();
            if held >= settings.max_hold {
                Verdict::Allow {
                    because: AllowedBecause::HoldExpired,
                    warning: Some(format!(
                        "pod {name} is busy ({why}) but was held for {}s, the most --busy-guard-max-hold allows: evicted anyway",
                        held.as_secs()
                    )),
                }
            } else {
                let left = settings.max_hold.saturating_sub(held);
                Verdict::Deny {
                    message: format!(
                        "Cannot evict pod {name}: it is busy ({why}); kube-standby holds its eviction until it is idle (at most {}s more)",
                        left.as_secs()
                    ),
                    code: EVICTION_CODE,
                }
            }
        }
    }
}

/// How long a hold nobody asks about is remembered (in memory and in the annotation) past
/// its start plus the max hold.
pub fn forget_after(max_hold: Duration) -> Duration {
    max_hold.max(Duration::from_secs(600))
}

/// When the pod's hold started according to its `held-since` annotation, on this process's
/// clock (`now` is `wall_now` as an Instant). None when absent, malformed, or older than
/// the max hold plus [`forget_after`] (a hold from an earlier, abandoned drain). A time in
/// the future counts as now. Pure.
pub fn annotated_hold_start<T: Tags + ?Sized>(
    pod: &T,
    now: Instant,
    wall_now: jiff::Timestamp,
    max_hold: Duration,
) -> Option<Instant> {
    let text = pod.annotation(HELD_SINCE_ANNOTATION)?;
    let since: jiff::Timestamp = text.trim().parse().ok()?;
    let age = wall_now.duration_since(since);
    let age = Duration::try_from(age).unwrap_or(Duration::ZERO);
    if age > max_hold.saturating_add(forget_after(max_hold)) {
        return None;
    }
    Some(now.checked_sub(age).unwrap_or(now))
}

/// The hold start `decide` uses: the earliest of this replica's memory and the annotation.
pub fn hold_start(in_memory: Option<Instant>, annotated: Option<Instant>) -> Option<Instant> {
    match (in_memory, annotated) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The `held-since` value for a hold that started at `started` (`now` is `wall_now`).
pub fn held_since_value(started: Instant, now: Instant, wall_now: jiff::Timestamp) -> String {
    let ago = now.saturating_duration_since(started);
    let ago = jiff::SignedDuration::try_from(ago).unwrap_or(jiff::SignedDuration::ZERO);
    let at = wall_now.checked_sub(ago).unwrap_or(wall_now);
    // Whole seconds, like every other timestamp of the API.
    let at = jiff::Timestamp::from_second(at.as_second()).unwrap_or(at);
    at.to_string()
}

/// `requester_class` label of the metric.
pub fn requester_class(settings: &GuardSettings, who: &Requester<'_>) -> &'static str {
    if settings.is_guarded_requester(who) {
        "guarded"
    } else {
        "other"
    }
}

/// One held pod, as `/debug/state` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HeldPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub held_seconds: u64,
    pub denials: u64,
    pub last_operation: &'static str,
}

#[derive(Debug, Clone)]
struct Hold {
    namespace: String,
    name: String,
    started: Instant,
    last_seen: Instant,
    denials: u64,
    last_op: GuardOp,
    /// Its `held-since` annotation was written (or is being written) by this replica.
    annotated: bool,
}

/// Most holds remembered at once; the oldest are forgotten first beyond this.
pub const MAX_HOLDS: usize = 10_000;

/// When each held pod's hold started, by pod UID (or namespace/name when the UID is
/// unknown). A hold ends when the pod is allowed; a hold nobody asked about for longer
/// than the max hold is forgotten.
#[derive(Debug, Default, Clone)]
pub struct Holds {
    inner: std::sync::Arc<Mutex<HashMap<String, Hold>>>,
}

impl Holds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Hold>> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// When this pod's hold started.
    pub fn started(&self, key: &str) -> Option<Instant> {
        self.lock().get(key).map(|h| h.started)
    }

    /// Record a verdict: a denial starts (or continues) the hold, anything else ends it.
    /// Returns true when this denial started a new hold.
    pub fn record(
        &self,
        key: &str,
        (namespace, name): (&str, &str),
        op: GuardOp,
        verdict: &Verdict,
        now: Instant,
        max_hold: Duration,
    ) -> bool {
        let mut m = self.lock();
        if verdict.allowed() {
            m.remove(key);
            return false;
        }
        let forget_after = forget_after(max_hold);
        m.retain(|_, h| now.saturating_duration_since(h.last_seen) <= forget_after);
        let new = !m.contains_key(key);
        if new && m.len() >= MAX_HOLDS {
            if let Some(oldest) = m
                .iter()
                .min_by_key(|(_, h)| h.last_seen)
                .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        let h = m.entry(key.to_string()).or_insert_with(|| Hold {
            namespace: namespace.to_string(),
            name: name.to_string(),
            started: now,
            last_seen: now,
            denials: 0,
            last_op: op,
            annotated: false,
        });
        h.last_seen = now;
        h.denials += 1;
        h.last_op = op;
        new
    }

    /// The start of this pod's hold, the first time it is asked for (the caller writes
    /// the `held-since` annotation); None when there is no hold or it was claimed already.
    pub fn claim_annotation(&self, key: &str) -> Option<Instant> {
        let mut m = self.lock();
        let h = m.get_mut(key).filter(|h| !h.annotated)?;
        h.annotated = true;
        Some(h.started)
    }

    /// The annotation could not be written: the next denial tries again.
    pub fn unclaim_annotation(&self, key: &str) {
        if let Some(h) = self.lock().get_mut(key) {
            h.annotated = false;
        }
    }

    /// The held pods, longest held first.
    pub fn snapshot(&self, now: Instant) -> Vec<HeldPod> {
        let m = self.lock();
        let mut v: Vec<HeldPod> = m
            .iter()
            .map(|(k, h)| HeldPod {
                namespace: h.namespace.clone(),
                name: h.name.clone(),
                uid: k.clone(),
                held_seconds: now.saturating_duration_since(h.started).as_secs(),
                denials: h.denials,
                last_operation: h.last_op.label(),
            })
            .collect();
        v.sort_by(|a, b| {
            b.held_seconds
                .cmp(&a.held_seconds)
                .then_with(|| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)))
        });
        v
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn meta(guard: Option<&str>, annotations: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("web-7f9c-x2".into()),
            namespace: Some("prod".into()),
            labels: guard.map(|g| BTreeMap::from([(BUSY_GUARD_LABEL.to_string(), g.to_string())])),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    const RS: &str = REPLICASET_CONTROLLER;

    /// (what, pod, username, op, probe, held for, denial code or None when allowed)
    type Case<'a> = (
        &'a str,
        &'a ObjectMeta,
        &'a str,
        GuardOp,
        Option<&'a ProbeView>,
        Option<Duration>,
        Option<u16>,
    );

    fn run(
        pod: &ObjectMeta,
        user: &str,
        op: GuardOp,
        probe: Option<&ProbeView>,
        held: Option<Duration>,
    ) -> Verdict {
        let now = Instant::now() + Duration::from_secs(100_000);
        decide(
            &GuardInput {
                pod,
                requester: Requester {
                    username: user,
                    groups: &[],
                },
                op,
                probe,
                hold_started: held.map(|h| now - h),
                now,
            },
            &GuardSettings::default(),
        )
    }

    fn denied(v: &Verdict) -> Option<(String, u16)> {
        match v {
            Verdict::Deny { message, code } => Some((message.clone(), *code)),
            _ => None,
        }
    }

    #[test]
    fn table() {
        use AllowedBecause::*;
        use GuardOp::*;
        let busy = meta(Some("true"), &[("paia.tech/busy", "true")]);
        let busy_caps = meta(Some("TRUE"), &[("paia.tech/busy", " True ")]);
        let idle = meta(Some("true"), &[("paia.tech/busy", "false")]);
        let absent = meta(Some("true"), &[]);
        let unguarded_busy = meta(None, &[("paia.tech/busy", "true")]);
        let guard_false = meta(Some("false"), &[("paia.tech/busy", "true")]);
        let custom = meta(
            Some("true"),
            &[
                (BUSY_ANNOTATION_KEY_ANNOTATION, "example.com/working"),
                ("example.com/working", "true"),
            ],
        );
        let custom_default_set = meta(
            Some("true"),
            &[
                (BUSY_ANNOTATION_KEY_ANNOTATION, "example.com/working"),
                ("paia.tech/busy", "true"),
            ],
        );
        let probe_pod = meta(Some("true"), &[(BUSY_SOURCE_ANNOTATION, "probe")]);
        let p = |state, stale| ProbeView {
            state,
            stale,
            reason: "http".into(),
        };
        let (p_busy, p_idle, p_unknown, p_stale) = (
            p(BusyState::Busy, false),
            p(BusyState::Idle, false),
            p(BusyState::Unknown, false),
            p(BusyState::Idle, true),
        );
        let hour = Duration::from_secs(3600);
        let allow = |b| Verdict::Allow {
            because: b,
            warning: None,
        };
        let cases: Vec<Case<'_>> = vec![
            ("busy, RS delete", &busy, RS, Delete, None, None, Some(403)),
            (
                "busy any case",
                &busy_caps,
                RS,
                Delete,
                None,
                None,
                Some(403),
            ),
            (
                "busy, KCM delete",
                &busy,
                CONTROLLER_MANAGER,
                Delete,
                None,
                None,
                Some(403),
            ),
            (
                "busy, human delete",
                &busy,
                "admin",
                Delete,
                None,
                None,
                None,
            ),
            (
                "busy, GC delete",
                &busy,
                "system:serviceaccount:kube-system:generic-garbage-collector",
                Delete,
                None,
                None,
                None,
            ),
            (
                "busy, namespace controller",
                &busy,
                "system:serviceaccount:kube-system:namespace-controller",
                Delete,
                None,
                None,
                None,
            ),
            ("idle, RS delete", &idle, RS, Delete, None, None, None),
            (
                "no annotation, RS delete",
                &absent,
                RS,
                Delete,
                None,
                None,
                None,
            ),
            (
                "not guarded, RS delete",
                &unguarded_busy,
                RS,
                Delete,
                None,
                None,
                None,
            ),
            (
                "guard label false",
                &guard_false,
                RS,
                Delete,
                None,
                None,
                None,
            ),
            (
                "custom key busy",
                &custom,
                RS,
                Delete,
                None,
                None,
                Some(403),
            ),
            (
                "custom key: default key ignored",
                &custom_default_set,
                RS,
                Delete,
                None,
                None,
                None,
            ),
            (
                "busy, human eviction",
                &busy,
                "admin",
                Evict,
                None,
                None,
                Some(429),
            ),
            (
                "busy, eviction held 59m",
                &busy,
                "admin",
                Evict,
                None,
                Some(hour - Duration::from_secs(60)),
                Some(429),
            ),
            (
                "busy, eviction held 1h",
                &busy,
                "admin",
                Evict,
                None,
                Some(hour),
                None,
            ),
            ("idle eviction", &idle, "admin", Evict, None, None, None),
            (
                "probe busy",
                &probe_pod,
                RS,
                Delete,
                Some(&p_busy),
                None,
                Some(403),
            ),
            (
                "probe idle",
                &probe_pod,
                RS,
                Delete,
                Some(&p_idle),
                None,
                None,
            ),
            (
                "probe unknown is busy",
                &probe_pod,
                RS,
                Delete,
                Some(&p_unknown),
                None,
                Some(403),
            ),
            (
                "probe stale is busy",
                &probe_pod,
                RS,
                Delete,
                Some(&p_stale),
                None,
                Some(403),
            ),
            (
                "probe pod never probed is busy",
                &probe_pod,
                RS,
                Delete,
                None,
                None,
                Some(403),
            ),
            (
                "probe result wins over annotation",
                &busy,
                RS,
                Delete,
                Some(&p_idle),
                None,
                None,
            ),
        ];
        for (what, pod, user, op, probe, held, want) in cases {
            let v = run(pod, user, op, probe, held);
            assert_eq!(denied(&v).map(|d| d.1), want, "{what}: {v:?}");
        }
        assert_eq!(run(&idle, RS, Delete, None, None), allow(Idle));
        assert_eq!(
            run(&unguarded_busy, RS, Delete, None, None),
            allow(NotGuarded)
        );
        assert_eq!(run(&busy, "admin", Delete, None, None), allow(Requester));
        let expired = run(&busy, "admin", Evict, None, Some(hour));
        assert!(
            matches!(&expired, Verdict::Allow { because: HoldExpired, warning: Some(w) } if w.contains("web-7f9c-x2") && w.contains("3600s")),
            "{expired:?}"
        );
        assert_eq!(expired.label(), "allowed_hold_expired");
    }

    #[test]
    fn messages_name_the_pod_and_the_reason() {
        let busy = meta(Some("true"), &[("paia.tech/busy", "true")]);
        let (m, _) = denied(&run(&busy, RS, GuardOp::Delete, None, None)).unwrap();
        assert_eq!(
            m,
            "pod web-7f9c-x2 is busy (paia.tech/busy=true): kube-standby holds its deletion until it is idle"
        );
        let (m, code) = denied(&run(
            &busy,
            "admin",
            GuardOp::Evict,
            None,
            Some(Duration::from_secs(600)),
        ))
        .unwrap();
        assert_eq!(code, 429);
        assert!(
            m.contains("web-7f9c-x2") && m.contains("at most 3000s more"),
            "{m}"
        );
    }

    #[test]
    fn groups_match_too() {
        let s = GuardSettings {
            requesters: vec!["system:serviceaccounts:ops".into()],
            max_hold: DEFAULT_MAX_HOLD,
            probe_budget: DEFAULT_PROBE_BUDGET,
        };
        let groups = vec!["system:serviceaccounts:ops".to_string()];
        assert!(s.is_guarded_requester(&Requester {
            username: "x",
            groups: &groups
        }));
        assert!(!s.is_guarded_requester(&Requester {
            username: "x",
            groups: &[]
        }));
        assert_eq!(
            requester_class(
                &GuardSettings::default(),
                &Requester {
                    username: RS,
                    groups: &[]
                }
            ),
            "guarded"
        );
    }

    #[test]
    fn holds_start_on_denial_end_on_allow_and_are_forgotten() {
        let h = Holds::default();
        let t0 = Instant::now();
        let deny = Verdict::Deny {
            message: "m".into(),
            code: 429,
        };
        let allow = Verdict::Allow {
            because: AllowedBecause::Idle,
            warning: None,
        };
        let hold = DEFAULT_MAX_HOLD;
        assert!(h.record("u1", ("ns", "a"), GuardOp::Delete, &deny, t0, hold));
        let later = t0 + Duration::from_secs(5);
        assert!(!h.record("u1", ("ns", "a"), GuardOp::Evict, &deny, later, hold));
        assert_eq!(h.started("u1"), Some(t0), "the hold keeps its start");
        let snap = h.snapshot(later);
        assert_eq!(snap.len(), 1);
        assert_eq!(
            (
                snap[0].held_seconds,
                snap[0].denials,
                snap[0].last_operation
            ),
            (5, 2, "eviction")
        );
        h.record("u1", ("ns", "a"), GuardOp::Delete, &allow, later, hold);
        assert!(h.is_empty());
        // Not asked about for longer than the max hold: forgotten on the next record.
        h.record("u2", ("ns", "b"), GuardOp::Delete, &deny, t0, hold);
        h.record(
            "u3",
            ("ns", "c"),
            GuardOp::Delete,
            &deny,
            t0 + hold * 2,
            hold,
        );
        assert_eq!(h.started("u2"), None);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn an_annotated_hold_start_older_than_the_max_hold_lets_the_eviction_pass() {
        let now = Instant::now() + Duration::from_secs(100_000);
        let wall: jiff::Timestamp = "2026-12-02T14:00:00Z".parse().unwrap();
        let mut busy = meta(Some("true"), &[("paia.tech/busy", "true")]);
        let ann = busy.annotations.get_or_insert_with(Default::default);
        ann.insert(HELD_SINCE_ANNOTATION.into(), "2026-12-02T12:30:00Z".into());
        let settings = GuardSettings::default();
        let annotated = annotated_hold_start(&busy, now, wall, settings.max_hold);
        assert_eq!(annotated, Some(now - Duration::from_secs(5400)));
        // This replica's own hold began a minute ago: the earliest start counts.
        let mine = Some(now - Duration::from_secs(60));
        let started = hold_start(mine, annotated);
        assert_eq!(started, annotated);
        let v = decide(
            &GuardInput {
                pod: &busy,
                requester: Requester {
                    username: "admin",
                    groups: &[],
                },
                op: GuardOp::Evict,
                probe: None,
                hold_started: started,
                now,
            },
            &settings,
        );
        assert!(
            matches!(&v, Verdict::Allow { because: AllowedBecause::HoldExpired, warning: Some(w) } if w.contains("5400s")),
            "{v:?}"
        );
        // Without the annotation, this replica alone would still hold it.
        let v = decide(
            &GuardInput {
                pod: &busy,
                requester: Requester {
                    username: "admin",
                    groups: &[],
                },
                op: GuardOp::Evict,
                probe: None,
                hold_started: hold_start(mine, None),
                now,
            },
            &settings,
        );
        assert!(matches!(v, Verdict::Deny { code: 429, .. }), "{v:?}");
    }

    #[test]
    fn the_annotation_is_read_only_while_it_can_matter() {
        let now = Instant::now() + Duration::from_secs(100_000);
        let wall: jiff::Timestamp = "2026-12-02T14:00:00Z".parse().unwrap();
        let hour = DEFAULT_MAX_HOLD;
        let with = |v: &str| {
            let mut m = meta(Some("true"), &[]);
            m.annotations
                .get_or_insert_with(Default::default)
                .insert(HELD_SINCE_ANNOTATION.into(), v.into());
            m
        };
        // Max hold 1 h, forget window 1 h: a start 2 h ago still counts, 2 h 1 s does not.
        assert_eq!(
            annotated_hold_start(&with("2026-12-02T12:00:00Z"), now, wall, hour),
            Some(now - hour * 2)
        );
        assert_eq!(
            annotated_hold_start(&with("2026-12-02T11:59:59Z"), now, wall, hour),
            None
        );
        assert_eq!(
            annotated_hold_start(&with("yesterday"), now, wall, hour),
            None
        );
        assert_eq!(
            annotated_hold_start(&meta(Some("true"), &[]), now, wall, hour),
            None
        );
        // A clock ahead of ours: counts as now.
        assert_eq!(
            annotated_hold_start(&with("2026-12-02T14:05:00Z"), now, wall, hour),
            Some(now)
        );
        assert_eq!(hold_start(None, None), None);
        assert_eq!(hold_start(Some(now), None), Some(now));
        // The value written: the hold's start in whole seconds.
        let v = held_since_value(now - Duration::from_millis(90_500), now, wall);
        assert_eq!(v, "2026-12-02T13:58:29Z");
        assert_eq!(
            annotated_hold_start(&with(&v), now, wall, hour),
            Some(now - Duration::from_secs(91))
        );
    }

    #[test]
    fn the_hold_start_is_claimed_for_writing_once_per_hold() {
        let h = Holds::default();
        let t0 = Instant::now();
        let deny = Verdict::Deny {
            message: "m".into(),
            code: 429,
        };
        assert_eq!(h.claim_annotation("u"), None, "no hold");
        h.record(
            "u",
            ("ns", "a"),
            GuardOp::Evict,
            &deny,
            t0,
            DEFAULT_MAX_HOLD,
        );
        assert_eq!(h.claim_annotation("u"), Some(t0));
        assert_eq!(h.claim_annotation("u"), None, "once");
        h.unclaim_annotation("u");
        assert_eq!(
            h.claim_annotation("u"),
            Some(t0),
            "again after a failed write"
        );
        let allow = Verdict::Allow {
            because: AllowedBecause::Idle,
            warning: None,
        };
        h.record(
            "u",
            ("ns", "a"),
            GuardOp::Evict,
            &allow,
            t0,
            DEFAULT_MAX_HOLD,
        );
        let t1 = t0 + Duration::from_secs(1);
        h.record(
            "u",
            ("ns", "a"),
            GuardOp::Evict,
            &deny,
            t1,
            DEFAULT_MAX_HOLD,
        );
        assert_eq!(
            h.claim_annotation("u"),
            Some(t1),
            "a new hold is claimed anew"
        );
    }

    fn arb_meta() -> impl Strategy<Value = ObjectMeta> {
        (
            prop::option::of(prop_oneof![
                Just("true".to_string()),
                Just("TRUE".to_string()),
                Just("false".to_string()),
                ".{0,6}"
            ]),
            prop::option::of(prop_oneof![
                Just("true".to_string()),
                Just(" True".to_string()),
                Just("false".to_string()),
                ".{0,6}"
            ]),
            prop::option::of(prop_oneof![Just("probe".to_string()), ".{0,6}"]),
            prop::option::of(prop_oneof![
                Just("paia.tech/busy".to_string()),
                Just("x/busy".to_string()),
                Just(String::new())
            ]),
            prop::option::of(prop_oneof![Just("true".to_string()), ".{0,4}"]),
        )
            .prop_map(|(guard, busy, source, key, custom)| {
                let mut a = BTreeMap::new();
                if let Some(b) = busy {
                    a.insert("paia.tech/busy".to_string(), b);
                }
                if let Some(s) = source {
                    a.insert(BUSY_SOURCE_ANNOTATION.to_string(), s);
                }
                if let Some(k) = key {
                    a.insert(BUSY_ANNOTATION_KEY_ANNOTATION.to_string(), k);
                }
                if let Some(c) = custom {
                    a.insert("x/busy".to_string(), c);
                }
                ObjectMeta {
                    name: Some("p".into()),
                    labels: guard.map(|g| BTreeMap::from([(BUSY_GUARD_LABEL.to_string(), g)])),
                    annotations: Some(a),
                    ..Default::default()
                }
            })
    }

    fn arb_probe() -> impl Strategy<Value = Option<ProbeView>> {
        prop::option::of(
            (
                prop_oneof![
                    Just(BusyState::Busy),
                    Just(BusyState::Idle),
                    Just(BusyState::Unknown)
                ],
                any::<bool>(),
            )
                .prop_map(|(state, stale)| ProbeView {
                    state,
                    stale,
                    reason: "r".into(),
                }),
        )
    }

    fn arb_user() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(REPLICASET_CONTROLLER.to_string()),
            Just(CONTROLLER_MANAGER.to_string()),
            Just("admin".to_string()),
            Just("system:serviceaccount:kube-system:generic-garbage-collector".to_string()),
            "[a-z:]{0,20}",
        ]
    }

    proptest! {
        #[test]
        fn rules_hold(
            pod in arb_meta(),
            probe in arb_probe(),
            user in arb_user(),
            evict in any::<bool>(),
            held in prop::option::of(0u64..10_000),
            max_hold in 0u64..7200,
        ) {
            let settings = GuardSettings { max_hold: Duration::from_secs(max_hold), ..GuardSettings::default() };
            let now = Instant::now() + Duration::from_secs(20_000);
            let op = if evict { GuardOp::Evict } else { GuardOp::Delete };
            let requester = Requester { username: &user, groups: &[] };
            let input = GuardInput {
                pod: &pod,
                requester,
                op,
                probe: probe.as_ref(),
                hold_started: held.map(|h| now - Duration::from_secs(h)),
                now,
            };
            let v = decide(&input, &settings);
            let (is_busy, _) = busy(&pod, probe.as_ref());
            let guarded_pod = is_guarded(&pod);
            let guarded_requester = settings.is_guarded_requester(&requester);
            // An idle pod is always allowed, an unguarded pod too.
            if !is_busy || !guarded_pod {
                prop_assert!(v.allowed(), "{v:?}");
            }
            // A busy guarded pod is never deleted by a guarded requester.
            if is_busy && guarded_pod && guarded_requester && op == GuardOp::Delete {
                prop_assert!(!v.allowed(), "{v:?}");
            }
            // Every other requester may always delete.
            if !guarded_requester && op == GuardOp::Delete {
                prop_assert!(v.allowed(), "{v:?}");
            }
            // An eviction of a busy guarded pod: 429 within the max hold, allowed after.
            if is_busy && guarded_pod && op == GuardOp::Evict {
                let held_for = held.unwrap_or(0);
                if held_for < max_hold {
                    prop_assert!(matches!(v, Verdict::Deny { code: 429, .. }), "{v:?}");
                } else {
                    prop_assert!(matches!(v, Verdict::Allow { because: AllowedBecause::HoldExpired, .. }), "{v:?}");
                }
            }
            // Unknown and stale probe results count as busy.
            if let Some(p) = &probe {
                if p.state != BusyState::Idle || p.stale {
                    prop_assert!(is_busy);
                }
            }
        }
    }
}
