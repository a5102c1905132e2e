//! `/validate/pods`: the busy guard at the HTTP edge. Pod DELETE reviews carry the pod as
//! `oldObject`; `pods/eviction` CREATE reviews carry only the Eviction, so the pod is looked
//! up in the [`ObjectSource`] (a cache: no API call). Anything else, and an unknown pod, is
//! allowed: the guard only ever holds back a removal it can judge.
//!
//! I/O happens here, before and after the pure [`guard::decide`], never inside it:
//! - before: for an http/exec pod whose cached probe result is missing, failing or older
//!   than its period, the guard probes it itself within `--busy-guard-probe-budget`
//!   ([`super::reprobe`]); an annotation-mode pod costs no I/O;
//! - after: the first denied eviction of a hold writes the pod's `held-since` annotation
//!   from a spawned task ([`super::held_since`]), off the answer path.
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::{AdmissionResponse, Operation};
use kube::core::Status;

use super::guard::{
    self, GuardInput, GuardOp, GuardSettings, HeldPod, Holds, ProbeView, Requester, Verdict,
};
use super::held_since::HeldSince;
use super::objects::ObjectSource;
use super::reprobe::Reprober;

/// What the guard may do besides deciding (`run` mode; none in `webhook` mode and tests):
/// probe a pod itself, and write the hold start on the pod.
#[derive(Debug, Clone, Default)]
pub struct GuardIo {
    pub reprober: Option<Arc<Reprober>>,
    pub held_since: Option<HeldSince>,
}

/// The guard's settings and the holds in progress, shared by every request.
#[derive(Debug, Default)]
pub struct GuardState {
    pub settings: GuardSettings,
    pub holds: Holds,
    /// The held pods as the controllers read them (status, Events).
    pub held: crate::state::HeldPods,
    pub io: GuardIo,
}

impl GuardState {
    pub fn new(settings: GuardSettings) -> Arc<Self> {
        Self::sharing(settings, Default::default())
    }

    /// A guard that tells the controllers of this process what it holds through `held`.
    pub fn sharing(settings: GuardSettings, held: crate::state::HeldPods) -> Arc<Self> {
        Self::with_io(settings, held, GuardIo::default())
    }

    /// [`sharing`](Self::sharing), probing pods and writing hold starts through `io`.
    pub fn with_io(
        settings: GuardSettings,
        held: crate::state::HeldPods,
        io: GuardIo,
    ) -> Arc<Self> {
        Arc::new(GuardState {
            settings,
            holds: Holds::default(),
            held,
            io,
        })
    }

    /// The pods held now, for `/debug/state`.
    pub fn held(&self) -> Vec<HeldPod> {
        self.holds.snapshot(Instant::now())
    }
}

/// What the guard judged, for logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub verdict: Verdict,
    /// What the guard's own probe did first (`probed`, `over_budget`, ...), if it ran.
    pub probe: Option<&'static str>,
    pub op: GuardOp,
    pub requester_class: &'static str,
    /// `namespace/name` of the pod.
    pub pod: String,
}

/// The guard's answer to one review: the response, and what was judged (None: not a
/// removal the guard looks at, or a pod it does not know).
pub struct GuardAnswer {
    pub response: AdmissionResponse,
    pub judged: Option<Judged>,
}

/// The request fields the guard reads, whatever the object type.
pub struct Removal<'a> {
    pub op: GuardOp,
    pub namespace: &'a str,
    pub name: &'a str,
    pub username: &'a str,
    pub groups: &'a [String],
    pub dry_run: bool,
}

/// Judge one removal of the pod whose metadata is `pod` (None: not known here).
pub fn judge(
    base: AdmissionResponse,
    removal: &Removal<'_>,
    pod: Option<&ObjectMeta>,
    objects: &dyn ObjectSource,
    guard: &GuardState,
    now: Instant,
) -> GuardAnswer {
    judge_with(base, removal, pod, None, objects, guard, now)
}

/// [`judge`], with the probe result the guard got itself (`fresh`, which wins over the
/// cache) and what that probe did (for logs).
pub fn judge_with(
    base: AdmissionResponse,
    removal: &Removal<'_>,
    pod: Option<&ObjectMeta>,
    fresh: Option<(ProbeView, &'static str)>,
    objects: &dyn ObjectSource,
    guard: &GuardState,
    now: Instant,
) -> GuardAnswer {
    let Some(pod) = pod else {
        return GuardAnswer {
            response: base,
            judged: None,
        };
    };
    let uid = pod.uid.as_deref().unwrap_or_default();
    let key = if uid.is_empty() {
        format!("{}/{}", removal.namespace, removal.name)
    } else {
        uid.to_string()
    };
    let probe_label = fresh.as_ref().map(|(_, l)| *l);
    let probe: Option<ProbeView> = match fresh {
        Some((v, _)) => Some(v),
        None if uid.is_empty() => None,
        None => objects.probe(uid),
    };
    let requester = Requester {
        username: removal.username,
        groups: removal.groups,
    };
    let wall_now = jiff::Timestamp::now();
    let annotated = guard::annotated_hold_start(pod, now, wall_now, guard.settings.max_hold);
    let input = GuardInput {
        pod,
        requester,
        op: removal.op,
        probe: probe.as_ref(),
        hold_started: guard::hold_start(guard.holds.started(&key), annotated),
        now,
    };
    let verdict = guard::decide(&input, &guard.settings);
    if !removal.dry_run && guard::is_guarded(pod) {
        guard.holds.record(
            &key,
            (removal.namespace, removal.name),
            removal.op,
            &verdict,
            now,
            guard.settings.max_hold,
        );
        let held = !verdict.allowed();
        guard.held.set(removal.namespace, removal.name, held, now);
        if held && removal.op == GuardOp::Evict && annotated.is_none() {
            mark_held_since(guard, &key, removal, pod, now, wall_now);
        }
    }
    let response = match &verdict {
        Verdict::Allow { warning, .. } => {
            let mut r = base;
            r.warnings = warning.clone().map(|w| vec![w]);
            r
        }
        Verdict::Deny { message, code } => {
            let reason = if *code == guard::EVICTION_CODE {
                "TooManyRequests"
            } else {
                "Forbidden"
            };
            let mut r = base.deny(message);
            r.result = Status::failure(message, reason).with_code(*code);
            r
        }
    };
    GuardAnswer {
        response,
        judged: Some(Judged {
            requester_class: guard::requester_class(&guard.settings, &requester),
            op: removal.op,
            pod: format!("{}/{}", removal.namespace, removal.name),
            probe: probe_label,
            verdict,
        }),
    }
}

/// Write the pod's `held-since` from a spawned task, once per hold (the first denied
/// eviction); a failed write lets the next denial try again.
fn mark_held_since(
    guard: &GuardState,
    key: &str,
    removal: &Removal<'_>,
    pod: &ObjectMeta,
    now: Instant,
    wall_now: jiff::Timestamp,
) {
    let Some(writer) = guard.io.held_since.clone() else {
        return;
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let Some(started) = guard.holds.claim_annotation(key) else {
        return;
    };
    let value = guard::held_since_value(started, now, wall_now);
    let (ns, name, key) = (
        removal.namespace.to_string(),
        removal.name.to_string(),
        key.to_string(),
    );
    let (uid, rv) = (pod.uid.clone(), pod.resource_version.clone());
    let holds = guard.holds.clone();
    rt.spawn(async move {
        if let Err(e) = writer
            .mark(&ns, &name, uid.as_deref(), rv.as_deref(), &value)
            .await
        {
            tracing::info!(namespace = %ns, pod = %name, error = %e, "could not record the hold start on the pod; the next denial tries again");
            holds.unclaim_annotation(&key);
        }
    });
}

/// One removal the guard judges, as read from a review.
pub struct Asked<'a> {
    pub base: AdmissionResponse,
    pub removal: Removal<'a>,
    /// The pod's metadata: the review's own (DELETE) or the cache's (eviction).
    pub pod: Option<Cow<'a, ObjectMeta>>,
    /// The review's typed pod, when it carries one (DELETE): the freshest copy to probe.
    pub full: Option<&'a Pod>,
}

/// The removal a review asks for, or the untouched answer when it is not one the guard
/// looks at.
pub fn asked<'a>(
    req: &'a super::Parsed,
    objects: &dyn ObjectSource,
) -> Result<Asked<'a>, Box<AdmissionResponse>> {
    use super::Parsed;
    static EMPTY: Vec<String> = Vec::new();
    match req {
        Parsed::Pod(r) => {
            let base = AdmissionResponse::from(r.as_ref());
            if r.operation != Operation::Delete || r.sub_resource.is_some() {
                return Err(Box::new(base));
            }
            let removal = Removal {
                op: GuardOp::Delete,
                namespace: r.namespace.as_deref().unwrap_or_default(),
                name: &r.name,
                username: r.user_info.username.as_deref().unwrap_or_default(),
                groups: r.user_info.groups.as_ref().unwrap_or(&EMPTY),
                dry_run: r.dry_run,
            };
            Ok(Asked {
                base,
                removal,
                pod: r.old_object.as_ref().map(|p| Cow::Borrowed(&p.metadata)),
                full: r.old_object.as_deref(),
            })
        }
        Parsed::Other(r) => {
            let base = AdmissionResponse::from(r.as_ref());
            let pods = r.resource.group.is_empty() && r.resource.resource == "pods";
            let op = match (&r.operation, r.sub_resource.as_deref()) {
                (Operation::Delete, None) if pods => GuardOp::Delete,
                (Operation::Create, Some("eviction")) if pods => GuardOp::Evict,
                _ => return Err(Box::new(base)),
            };
            let namespace = r.namespace.as_deref().unwrap_or_default();
            // An eviction names its pod in `request.name` (and in the Eviction's metadata).
            let name = if r.name.is_empty() {
                r.object
                    .as_ref()
                    .and_then(|o| o.metadata.name.as_deref())
                    .unwrap_or_default()
            } else {
                r.name.as_str()
            };
            let removal = Removal {
                op,
                namespace,
                name,
                username: r.user_info.username.as_deref().unwrap_or_default(),
                groups: r.user_info.groups.as_ref().unwrap_or(&EMPTY),
                dry_run: r.dry_run,
            };
            let pod = match op {
                GuardOp::Delete => r.old_object.as_ref().map(|p| Cow::Borrowed(&p.metadata)),
                GuardOp::Evict => objects.guarded_pod(namespace, name).map(Cow::Owned),
            };
            Ok(Asked {
                base,
                removal,
                pod,
                full: None,
            })
        }
    }
}

/// Judge one parsed review: a pod DELETE (the pod is `oldObject`) or a `pods/eviction`
/// CREATE (the pod comes from `objects`). Anything else is allowed untouched. No I/O: the
/// cached probe results only (see [`guard_review_probing`]).
pub fn guard_review(
    req: &super::Parsed,
    objects: &dyn ObjectSource,
    guard: &GuardState,
    now: Instant,
) -> GuardAnswer {
    match asked(req, objects) {
        Err(response) => GuardAnswer {
            response: *response,
            judged: None,
        },
        Ok(a) => judge(a.base, &a.removal, a.pod.as_deref(), objects, guard, now),
    }
}

/// [`guard_review`], probing an http/exec pod first when its cached result is not recent
/// enough (within the budget; see the module).
pub async fn guard_review_probing(
    req: &super::Parsed,
    objects: &dyn ObjectSource,
    guard: &GuardState,
) -> GuardAnswer {
    let a = match asked(req, objects) {
        Err(response) => {
            return GuardAnswer {
                response: *response,
                judged: None,
            }
        }
        Ok(a) => a,
    };
    let fresh = match (a.pod.as_deref(), &guard.io.reprober) {
        (Some(pod), Some(reprober)) if guard::is_guarded(pod) => {
            refresh(reprober, objects, &a, pod, guard.settings.probe_budget).await
        }
        _ => None,
    };
    judge_with(
        a.base,
        &a.removal,
        a.pod.as_deref(),
        fresh,
        objects,
        guard,
        Instant::now(),
    )
}

/// The guard's own probe of the pod, when its pool probes it and the cache is not recent.
async fn refresh(
    reprober: &Reprober,
    objects: &dyn ObjectSource,
    a: &Asked<'_>,
    pod: &ObjectMeta,
    budget: std::time::Duration,
) -> Option<(ProbeView, &'static str)> {
    let uid = pod.uid.as_deref().unwrap_or_default();
    let found = objects.probe_target(a.removal.namespace, a.removal.name)?;
    // The review's own pod when it has one; else the cache's, if it is the same pod.
    let target_pod = match a.full {
        Some(p) => p,
        None if found.pod.metadata.uid.as_deref() == Some(uid) => found.pod.as_ref(),
        None => return None,
    };
    let r = reprober.refresh(uid, &found, target_pod, budget).await;
    let label = r.label();
    r.view().map(|v| (v, label))
}
