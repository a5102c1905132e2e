//! The writes of one pass, in the order the plan gives: pod claims (each guarded by the
//! pod's resourceVersion) and then each claim's status; releases; Events.
//!
//! Invariants:
//! - a claim is written Bound only after its pod carries it: a crash in between leaves a
//!   pod that names the claim, which the next pass turns into Bound (never a second pod);
//! - a pod write that loses a race (409) binds nothing; the pod is skipped until the cache
//!   shows a newer version of it, and the pool is passed again;
//! - a release deletes only the pod (or Job) it observed (UID precondition).
use std::time::Instant;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use serde_json::json;

use super::bind::{Action, PodFacts, Release, Verdict, World};
use super::Ctx;
use crate::api::claim::{
    reason, BoundPod, ClaimPhase, HotStandbyClaim, HotStandbyClaimStatus, BOUND_CONDITION,
    CLAIM_ANNOTATION, CLAIM_RELEASE_ANNOTATION, CLAIM_UID_ANNOTATION,
};
use crate::api::set_condition;
use crate::controller::shell::Note;
use crate::Result;

/// What a pass did, for the scheduler.
#[derive(Debug, Default)]
pub struct Done {
    /// A pod write lost a race, or a pod vanished: pass the pool again.
    pub again: bool,
    /// Bindings written: (claim UID, pod UID).
    pub bound: Vec<(String, String)>,
    /// Pods whose write lost a race: (pod UID, the resourceVersion that lost).
    pub lost: Vec<(String, String)>,
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The merge patch that claims a pod; the resourceVersion makes it fail if the pod
/// changed since we read it.
pub fn claim_patch(
    pod: &PodFacts,
    namespace: &str,
    claim: &str,
    claim_uid: &str,
    release: &str,
    busy_key: &str,
) -> serde_json::Value {
    json!({"metadata": {
        "resourceVersion": pod.resource_version,
        "annotations": {
            busy_key: "true",
            CLAIM_ANNOTATION: format!("{namespace}/{claim}"),
            CLAIM_UID_ANNOTATION: claim_uid,
            CLAIM_RELEASE_ANNOTATION: release,
        }
    }})
}

/// The merge patch that gives a pod back to its pool: idle, no claim.
pub fn unclaim_patch(busy_key: &str) -> serde_json::Value {
    json!({"metadata": {"annotations": {
        busy_key: "false",
        CLAIM_ANNOTATION: null,
        CLAIM_UID_ANNOTATION: null,
        CLAIM_RELEASE_ANNOTATION: null,
    }}})
}

/// The status a verdict writes, from the status we start from.
pub fn status_of(
    verdict: &Verdict,
    start: &HotStandbyClaimStatus,
    pod: Option<&PodFacts>,
    now: Timestamp,
    waited_ms: Option<i64>,
    generation: Option<i64>,
) -> HotStandbyClaimStatus {
    let mut st = start.clone();
    let t = Time(now);
    let (phase, ok, why, message) = match verdict {
        Verdict::Waiting { reason, message } => {
            (ClaimPhase::Pending, false, *reason, message.clone())
        }
        Verdict::Bound { .. } => {
            let name = pod.map(|p| p.name.clone()).unwrap_or_default();
            (
                ClaimPhase::Bound,
                true,
                reason::BOUND,
                format!("bound to pod {name}"),
            )
        }
        Verdict::Released { reason, message } => {
            (ClaimPhase::Released, false, *reason, message.clone())
        }
        Verdict::Failed { reason, message } => {
            (ClaimPhase::Failed, false, *reason, message.clone())
        }
    };
    st.phase = phase;
    match phase {
        ClaimPhase::Bound => {
            if let Some(p) = pod {
                st.pod = Some(BoundPod {
                    name: p.name.clone(),
                    uid: p.uid.clone(),
                    ip: p.ip.clone(),
                    node: p.node.clone(),
                });
            }
            st.bound_at = Some(t.clone());
            st.waited_ms = waited_ms;
        }
        ClaimPhase::Released | ClaimPhase::Failed => st.finished_at = Some(t.clone()),
        ClaimPhase::Pending => {}
    }
    set_condition(
        &mut st.conditions,
        BOUND_CONDITION,
        ok,
        why,
        message,
        generation,
        &t,
    );
    st
}

/// A Warning Event for a claim that failed or waits for a reason the caller should see.
pub fn note_of(verdict: &Verdict) -> Option<Note> {
    match verdict {
        Verdict::Failed { reason, message } => Some(Note::warning(reason, message.clone())),
        Verdict::Waiting { reason, message }
            if *reason == reason::POOL_NOT_FOUND || *reason == reason::INVALID_SPEC =>
        {
            Some(Note::warning(reason, message.clone()))
        }
        _ => None,
    }
}

fn outcome_of(verdict: &Verdict) -> Option<&'static str> {
    match verdict {
        Verdict::Bound { .. } => Some("bound"),
        Verdict::Released { .. } => Some("released"),
        Verdict::Failed { reason, .. } => Some(match *reason {
            reason::POOL_EXHAUSTED => "exhausted",
            reason::POOL_NOT_FOUND => "pool_not_found",
            reason::POD_LOST => "pod_lost",
            _ => "invalid",
        }),
        Verdict::Waiting { .. } => None,
    }
}

/// Run the plan's actions for one pool. `claims[i]` is the object behind `world.claims[i]`.
pub async fn run(
    ctx: &Ctx,
    world: &World,
    claims: &[HotStandbyClaim],
    actions: &[Action],
    busy_key: &str,
    started: Instant,
) -> Result<Done> {
    let ns = &world.namespace;
    let pods: Api<Pod> = Api::namespaced(ctx.shell.client.clone(), ns);
    let mut done = Done::default();
    // 1. Claim pods, all at once; each claim's status right after its pod.
    let binds = actions.iter().filter_map(|a| match a {
        Action::Bind { claim, pod } => Some((*claim, *pod)),
        _ => None,
    });
    let writes = binds.map(|(ci, pi)| {
        let pods = pods.clone();
        async move {
            let (c, p) = (&world.claims[ci], &world.pods[pi]);
            let patch = claim_patch(p, ns, &c.name, &c.uid, c.release.as_str(), busy_key);
            let r = pods
                .patch(&p.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            (ci, pi, r)
        }
    });
    let results = futures::future::join_all(writes).await;
    let mut statuses: Vec<(usize, Verdict)> = vec![];
    for (ci, pi, r) in results {
        match r {
            Ok(_) => {
                done.bound
                    .push((world.claims[ci].uid.clone(), world.pods[pi].uid.clone()));
                statuses.push((ci, Verdict::Bound { pod: pi }));
            }
            Err(e) if is_code(&e, 409) || is_code(&e, 404) => {
                ctx.shell.metrics.claim.outcome("conflict");
                let p = &world.pods[pi];
                done.lost.push((p.uid.clone(), p.resource_version.clone()));
                done.again = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    statuses.extend(actions.iter().filter_map(|a| match a {
        Action::Status { claim, verdict } => Some((*claim, verdict.clone())),
        _ => None,
    }));
    // 2. Statuses (bindings first: they are what callers wait for).
    let now = (ctx.shell.clock)();
    let writes = statuses.iter().map(|(ci, verdict)| async move {
        let obj = &claims[*ci];
        let facts = &world.claims[*ci];
        let start = ctx
            .shell
            .last_status(obj, obj.status.as_ref())
            .unwrap_or_default();
        let pod = match verdict {
            Verdict::Bound { pod } => world.pods.get(*pod),
            _ => None,
        };
        let waited = ctx.waited_ms(&facts.uid, facts.created, now);
        let st = status_of(verdict, &start, pod, now, waited, obj.metadata.generation);
        let api: Api<HotStandbyClaim> = Api::namespaced(ctx.shell.client.clone(), ns);
        let wrote = ctx
            .shell
            .write_status(&api, obj, &(), obj.status.as_ref(), &st)
            .await;
        (ci, verdict, wrote)
    });
    for (_, verdict, wrote) in futures::future::join_all(writes).await {
        if wrote? {
            if let Some(o) = outcome_of(verdict) {
                ctx.shell.metrics.claim.outcome(o);
            }
            if matches!(verdict, Verdict::Bound { .. }) {
                ctx.shell
                    .metrics
                    .claim
                    .bind
                    .observe(started.elapsed().as_secs_f64());
            }
        }
    }
    for (ci, verdict) in &statuses {
        if let Some(n) = note_of(verdict) {
            use kube::Resource;
            let r = claims[*ci].object_ref(&());
            ctx.shell.publish_notes(&r, "Claim", &[n]).await;
        }
    }
    // 3. Releases.
    for a in actions {
        if let Action::Release { pod, how } = a {
            release(ctx, &pods, ns, &world.pods[*pod], *how, busy_key).await?;
        }
    }
    Ok(done)
}

async fn release(
    ctx: &Ctx,
    pods: &Api<Pod>,
    ns: &str,
    pod: &PodFacts,
    how: Release,
    busy_key: &str,
) -> Result<()> {
    let gone_ok = |r: std::result::Result<(), kube::Error>| match r {
        Err(e) if is_code(&e, 404) || is_code(&e, 409) => Ok(()),
        other => other,
    };
    match how {
        Release::DeleteJob => {
            let Some((job, uid)) = &pod.job else {
                return Ok(());
            };
            let jobs: Api<Job> = Api::namespaced(ctx.shell.client.clone(), ns);
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            };
            gone_ok(jobs.delete(job, &dp).await.map(|_| ()))?;
        }
        Release::Recycle | Release::DeletePod => {
            let patch = unclaim_patch(busy_key);
            gone_ok(
                pods.patch(&pod.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ()),
            )?;
            if how == Release::DeletePod {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(pod.uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                gone_ok(pods.delete(&pod.name, &dp).await.map(|_| ()))?;
            }
        }
    }
    tracing::info!(pod = %pod.name, ?how, "released a claimed pod");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodFacts {
        PodFacts {
            name: "p".into(),
            uid: "pu".into(),
            resource_version: "42".into(),
            node: Some("n".into()),
            ip: Some("10.1.1.1".into()),
            created: 0,
            running: true,
            ready: true,
            terminating: false,
            busy: false,
            claim: None,
            release: Default::default(),
            finished: false,
            job: None,
        }
    }

    #[test]
    fn the_claim_write_is_guarded_by_the_resource_version_and_marks_busy() {
        let p = claim_patch(&pod(), "ns", "c", "cu", "Delete", "paia.tech/busy");
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        let a = &p["metadata"]["annotations"];
        assert_eq!(a["paia.tech/busy"], "true");
        assert_eq!(a[CLAIM_ANNOTATION], "ns/c");
        assert_eq!(a[CLAIM_UID_ANNOTATION], "cu");
        assert_eq!(a[CLAIM_RELEASE_ANNOTATION], "Delete");
        let u = unclaim_patch("paia.tech/busy");
        assert_eq!(u["metadata"]["annotations"]["paia.tech/busy"], "false");
        assert!(u["metadata"]["annotations"][CLAIM_ANNOTATION].is_null());
    }

    #[test]
    fn a_bound_status_names_the_pod_and_the_wait() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let st = status_of(
            &Verdict::Bound { pod: 0 },
            &HotStandbyClaimStatus::default(),
            Some(&pod()),
            now,
            Some(7),
            Some(1),
        );
        assert_eq!(st.phase, ClaimPhase::Bound);
        let p = st.pod.unwrap();
        assert_eq!((p.name.as_str(), p.ip.as_deref()), ("p", Some("10.1.1.1")));
        assert_eq!(st.waited_ms, Some(7));
        assert_eq!(st.conditions[0].status, "True");
        let failed = status_of(
            &Verdict::Failed {
                reason: reason::POOL_EXHAUSTED,
                message: "none".into(),
            },
            &HotStandbyClaimStatus::default(),
            None,
            now,
            None,
            None,
        );
        assert_eq!(failed.phase, ClaimPhase::Failed);
        assert_eq!(failed.conditions[0].reason, reason::POOL_EXHAUSTED);
        assert!(note_of(&Verdict::Failed {
            reason: reason::POD_LOST,
            message: "x".into()
        })
        .is_some_and(|n| n.warning));
    }
}
