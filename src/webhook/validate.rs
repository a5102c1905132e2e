//! `/validate/pods`: the busy guard at the HTTP edge. Pod DELETE reviews carry the pod as
//! `oldObject`; `pods/eviction` CREATE reviews carry only the Eviction, so the pod is looked
//! up in the [`ObjectSource`] (a cache: no API call). Anything else, and an unknown pod, is
//! allowed: the guard only ever holds back a removal it can judge.
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::{AdmissionResponse, Operation};
use kube::core::Status;

use super::guard::{
    self, GuardInput, GuardOp, GuardSettings, HeldPod, Holds, ProbeView, Requester, Verdict,
};
use super::objects::ObjectSource;

/// The guard's settings and the holds in progress, shared by every request.
#[derive(Debug, Default)]
pub struct GuardState {
    pub settings: GuardSettings,
    pub holds: Holds,
    /// The held pods as the controllers read them (status, Events).
    pub held: crate::state::HeldPods,
}

impl GuardState {
    pub fn new(settings: GuardSettings) -> Arc<Self> {
        Self::sharing(settings, Default::default())
    }

    /// A guard that tells the controllers of this process what it holds through `held`.
    pub fn sharing(settings: GuardSettings, held: crate::state::HeldPods) -> Arc<Self> {
        Arc::new(GuardState {
            settings,
            holds: Holds::default(),
            held,
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
    let probe: Option<ProbeView> = if uid.is_empty() {
        None
    } else {
        objects.probe(uid)
    };
    let requester = Requester {
        username: removal.username,
        groups: removal.groups,
    };
    let input = GuardInput {
        pod,
        requester,
        op: removal.op,
        probe: probe.as_ref(),
        hold_started: guard.holds.started(&key),
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
            verdict,
        }),
    }
}

/// Judge one parsed review: a pod DELETE (the pod is `oldObject`) or a `pods/eviction`
/// CREATE (the pod comes from `objects`). Anything else is allowed untouched.
pub fn guard_review(
    req: &super::Parsed,
    objects: &dyn ObjectSource,
    guard: &GuardState,
    now: Instant,
) -> GuardAnswer {
    use super::Parsed;
    let empty: Vec<String> = vec![];
    match req {
        Parsed::Pod(r) => {
            let base = AdmissionResponse::from(r.as_ref());
            if r.operation != Operation::Delete || r.sub_resource.is_some() {
                return GuardAnswer {
                    response: base,
                    judged: None,
                };
            }
            let removal = Removal {
                op: GuardOp::Delete,
                namespace: r.namespace.as_deref().unwrap_or_default(),
                name: &r.name,
                username: r.user_info.username.as_deref().unwrap_or_default(),
                groups: r.user_info.groups.as_ref().unwrap_or(&empty),
                dry_run: r.dry_run,
            };
            let pod = r.old_object.as_ref().map(|p| &p.metadata);
            judge(base, &removal, pod, objects, guard, now)
        }
        Parsed::Other(r) => {
            let base = AdmissionResponse::from(r.as_ref());
            let pods = r.resource.group.is_empty() && r.resource.resource == "pods";
            let op = match (&r.operation, r.sub_resource.as_deref()) {
                (Operation::Delete, None) if pods => GuardOp::Delete,
                (Operation::Create, Some("eviction")) if pods => GuardOp::Evict,
                _ => {
                    return GuardAnswer {
                        response: base,
                        judged: None,
                    }
                }
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
                groups: r.user_info.groups.as_ref().unwrap_or(&empty),
                dry_run: r.dry_run,
            };
            match op {
                GuardOp::Delete => {
                    let pod = r.old_object.as_ref().map(|p| &p.metadata);
                    judge(base, &removal, pod, objects, guard, now)
                }
                GuardOp::Evict => {
                    let pod = objects.guarded_pod(namespace, name);
                    judge(base, &removal, pod.as_ref(), objects, guard, now)
                }
            }
        }
    }
}
