//! HotStandbyJob reconciler: a warm pool of single-use Jobs. observe (Job and pod caches,
//! busy probes) → pure plan → apply (replace broken units, delete idle surplus, create),
//! inside the shared shell (sync gate, status that clears fields, Events, metrics).
//!
//! Invariants:
//! - nothing runs before the Job and pod caches have listed (the shell's gate);
//! - the unit index ([`units`]) hears of each Job and pod watch event after the cache applied
//!   it and before the controller does, so a reconcile reads its units from the index (only
//!   units changed since its last reconcile are rebuilt), never by a pass over the caches;
//! - in http and exec mode the pods due a probe come from the index's due order
//!   ([`units::Units::due_pods`]): a walk of the pods due, never of every live pod;
//! - a Job we created or deleted is counted as such until the cache shows it (expectations),
//!   so a reconcile on a lagging cache never creates or deletes twice;
//! - a unit once seen busy is remembered as such (by Job UID) for as long as the Job
//!   exists, so its later failure is the workload's, not the template's (no backoff, no
//!   replacement of a unit that did work);
//! - the failure memory (consecutive failures, last failure time) lives in status, so an
//!   operator restart does not reset the backoff.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::shell::{self, Gate, Shell};
use crate::api::claim::PoolKind;
use crate::api::hsj::{HotStandbyJob, HotStandbyJobStatus, JobBusyMode};
use crate::metrics::{HsjCounts, ObjectLabels};
use crate::probe::exec::{ExecProber, KubeExec};
use crate::probe::http::HttpProber;
use crate::probe::{self, ProbeCache};
use crate::Result;

pub mod apply;
pub mod build;
pub mod observe;
pub mod plan;
pub mod report;
pub mod status;
pub mod units;
pub mod views;

use build::NAME_LABEL;
use plan::{Failures, Observed};

pub const CONTROLLER: &str = "hsj";
/// How long a create or delete is expected to show in the cache at most.
const EXPECT_FOR: Duration = Duration::from_secs(30);
/// Exec probes in flight at once, across all HSJs.
const EXEC_IN_FLIGHT: usize = 16;

/// Caches the reconciler reads instead of calling the API.
#[derive(Clone)]
pub struct Stores {
    pub jobs: Store<Job>,
    pub pods: Store<Pod>,
}

/// Creations and deletions not yet seen in the cache.
#[derive(Default)]
pub struct Expectations {
    /// HSJ key → names of Jobs we created.
    created: Mutex<HashMap<String, Vec<(String, Instant)>>>,
    /// UIDs of Jobs we deleted.
    deleted: Mutex<HashMap<String, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Expectations {
    pub fn created(&self, key: &str, names: &[String]) {
        let now = Instant::now();
        let mut m = lock(&self.created);
        let e = m.entry(key.to_string()).or_default();
        e.extend(names.iter().map(|n| (n.clone(), now)));
    }

    pub fn deleted(&self, uid: &str) {
        lock(&self.deleted).insert(uid.to_string(), Instant::now());
    }

    /// Created Jobs the cache does not show yet (`seen`: the names it shows). Names seen
    /// or older than [`EXPECT_FOR`] are forgotten.
    pub fn in_flight(&self, key: &str, seen: &HashSet<&str>) -> i32 {
        self.in_flight_where(key, |n| seen.contains(n))
    }

    /// [`Expectations::in_flight`], asking `seen` about each name created (a few lookups
    /// instead of a set of every Job's name).
    pub fn in_flight_where(&self, key: &str, seen: impl Fn(&str) -> bool) -> i32 {
        let mut m = lock(&self.created);
        let Some(e) = m.get_mut(key) else { return 0 };
        e.retain(|(n, at)| !seen(n.as_str()) && at.elapsed() < EXPECT_FOR);
        let n = e.len() as i32;
        if e.is_empty() {
            m.remove(key);
        }
        n
    }

    /// Is this Job one we deleted (and the cache may still show)?
    pub fn is_deleted(&self, uid: &str) -> bool {
        let mut m = lock(&self.deleted);
        m.retain(|_, at| at.elapsed() < EXPECT_FOR);
        m.contains_key(uid)
    }

    /// UIDs of the Jobs we deleted (the cache may still show them), expired ones forgotten.
    pub fn deleting(&self) -> HashSet<String> {
        let mut m = lock(&self.deleted);
        m.retain(|_, at| at.elapsed() < EXPECT_FOR);
        m.keys().cloned().collect()
    }

    pub fn forget(&self, key: &str) {
        lock(&self.created).remove(key);
    }
}

/// Everything a reconcile needs.
pub struct Ctx {
    pub shell: Shell,
    pub stores: Stores,
    pub probes: ProbeCache,
    pub http: HttpProber,
    pub exec: ExecProber,
    pub expect: Expectations,
    /// UIDs of Jobs one of whose pods was seen busy.
    pub ever_busy: Mutex<HashSet<String>>,
    /// Each HSJ's Jobs, pods and unit views, fed by the watches and the probe cache.
    pub units: units::Units,
}

crate::controller::deref_to_shell!(Ctx);

impl Ctx {
    /// The gate opens once the Job and pod stores have listed and `leading` says we lead.
    pub fn new(deps: &super::Deps, stores: Stores, exec: ExecProber) -> Self {
        let s = stores.clone();
        let units = units::Units::new(&stores.jobs, &stores.pods, &deps.probes);
        let ready = async move {
            Gate::stores_ready(vec![s.jobs]).await && Gate::stores_ready(vec![s.pods]).await
        };
        Ctx {
            shell: Shell::gated(deps, ready),
            stores,
            probes: deps.probes.clone(),
            http: HttpProber::new(64),
            exec,
            expect: Expectations::default(),
            ever_busy: Mutex::default(),
            units,
        }
    }
}

shell::reconciler!(HotStandbyJob, HotStandbyJobStatus);

async fn write_status(ctx: &Ctx, hsj: &HotStandbyJob, st: &HotStandbyJobStatus) -> Result<bool> {
    ctx.shell.write_own_status(hsj, st).await
}

/// A spec we cannot act on: a condition and (when it is news) one Warning; nothing created.
async fn invalid(ctx: &Ctx, hsj: &HotStandbyJob, reason: &str, message: &str) -> Result<Action> {
    let st = status::invalid(hsj, reason, message, &Time((ctx.clock)()));
    ctx.shell.refuse(hsj, &st, reason, message).await
}

/// Probe what is due (http/exec mode): the live units' running pods whose last probe is
/// older than the period or who were never probed, as the unit index finds them (a walk of
/// the pods due, not of every pod). Returns the API server's refusal of `pods/exec`, if any.
pub async fn probe_due(
    ctx: &Ctx,
    hsj: &HotStandbyJob,
    me: units::HsjRef<'_>,
    deleting: &HashSet<String>,
) -> Option<String> {
    let probe = &hsj.spec.busy_probe;
    let period = match (probe.mode, &probe.exec) {
        (JobBusyMode::Http, _) => probe::period_of(&probe.http),
        (JobBusyMode::Exec, Some(cfg)) => probe::exec::period_of(cfg),
        _ => return None,
    };
    let due = ctx.units.due_pods(me, deleting, period, Instant::now());
    if due.is_empty() {
        return None;
    }
    let due: Vec<&Pod> = due.iter().map(Arc::as_ref).collect();
    match (probe.mode, &probe.exec) {
        (JobBusyMode::Http, _) => {
            probe::probe_pods(&ctx.http, &ctx.probes, &ctx.metrics, &probe.http, &due).await;
            None
        }
        (JobBusyMode::Exec, Some(cfg)) => {
            probe::exec::probe_pods(&ctx.exec, &ctx.probes, &ctx.metrics, cfg, &due).await
        }
        _ => None,
    }
}

fn failures_of(hsj: &HotStandbyJob) -> Failures {
    let st = hsj.status.as_ref();
    Failures {
        consecutive: st.and_then(|s| s.consecutive_failures).unwrap_or(0),
        last_at: st.and_then(|s| s.last_failure_time.as_ref()).map(|t| t.0),
        last_reason: st
            .and_then(|s| plan_reason(&s.conditions))
            .filter(|_| st.and_then(|s| s.consecutive_failures).unwrap_or(0) > 0),
    }
}

fn plan_reason(
    conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<String> {
    crate::api::condition(conds, status::UNITS_FAILING)
        .filter(|c| c.status == "True")
        .map(|c| c.message.clone())
}

async fn reconcile_inner(hsj: &HotStandbyJob, ctx: &Ctx, started: Instant) -> Result<Action> {
    let ns = super::namespace_of(hsj, "HotStandbyJob")?;
    let name = hsj.name_any();
    let now = (ctx.clock)();
    if hsj.metadata.deletion_timestamp.is_some() {
        forget(ctx, &ns, &name);
        return Ok(Action::await_change());
    }
    let job = match valid_job(hsj) {
        Ok(job) => job,
        Err(errors) => return invalid(ctx, hsj, "InvalidSpec", &errors).await,
    };
    if status::rejected(hsj) {
        return Ok(Action::requeue(ctx.resync));
    }
    // Observe (the unit index, and the probes that are due).
    let uid = hsj.uid().unwrap_or_default();
    let me = units::HsjRef {
        namespace: &ns,
        name: &name,
        uid: &uid,
    };
    let deleting = ctx.expect.deleting();
    let forbidden = match units::probed(&hsj.spec.busy_probe) {
        true => probe_due(ctx, hsj, me, &deleting).await,
        false => None,
    };
    let key = debug_key(&ns, &name);
    let seen = observe(ctx, hsj, me, deleting);
    let units = seen.units();
    let observed = seen.observed(hsj, now);
    // Plan, apply, then the shell's part: events, status, gauges, debug state.
    let plan = plan::plan(&observed);
    let victim_pods = ctx
        .units
        .pods_of_units(me, plan.victims.iter().map(|v| v.uid));
    let by_job: HashMap<&str, Vec<&Pod>> = victim_pods
        .iter()
        .map(|(uid, ps)| (uid.as_str(), ps.iter().map(Arc::as_ref).collect()))
        .collect();
    let applied = apply::run(ctx, hsj, &plan, &by_job, &job).await?;
    ctx.expect.created(&key, &applied.created);
    if let Some(msg) = &applied.rejected {
        let msg = format!("the API server rejected the Job: {msg}");
        return invalid(ctx, hsj, "TemplateRejected", &msg).await;
    }
    let was = hsj.status.as_ref().map(|s| &s.held_pods);
    let pool_pods = held_pool_pods(ctx, &ns, &name);
    let (held, held_notes) =
        super::held::observe(&ctx.held, &ns, pool_pods.iter().map(String::as_str), was);
    let mut notes = report::notes(&plan, &applied, forbidden.as_deref(), hsj.status.as_ref());
    notes.extend(held_notes);
    ctx.publish_notes(&hsj.object_ref(&()), "Reconcile", &notes)
        .await;
    count_writes(ctx, &applied, started);
    let mut st = status_after(hsj, &plan, &applied, units, forbidden.as_deref(), now);
    st.held_pods = held;
    (st.claimed_count, st.pending_claims, st.exhausted_claims) =
        super::claim::counts_of(&ctx.claims, &ns, PoolKind::HotStandbyJob, &name);
    write_status(ctx, hsj, &st).await?;
    gauges(ctx, &ns, &name, &plan);
    let head = crate::state::json_text(&DebugHead {
        mode: hsj.spec.busy_probe.mode,
        plan: &plan,
        created: &applied.created,
        deleted: &applied.deleted,
        replaced: &applied.replaced,
        at: now.to_string(),
    });
    // A copy of the views (shared strings), rendered only when /debug/state is read.
    ctx.debug.set_with_list(key, head, "units", units.to_vec());
    Ok(Action::requeue(next_wake(
        ctx,
        hsj,
        &plan,
        observed.in_flight,
    )))
}

/// The unit Job the spec asks for, or every reason it cannot be acted on.
fn valid_job(hsj: &HotStandbyJob) -> std::result::Result<Job, String> {
    let mut errors = plan::validate(&hsj.spec);
    match build::unit_job(hsj) {
        Ok(job) if errors.is_empty() => return Ok(job),
        Ok(_) => {}
        Err(e) => errors.push(e),
    }
    Err(errors.join("; "))
}

/// The held pods of the namespace that carry this HSJ's name label (the pool's pods the
/// busy guard holds: looked up one by one, not by a pass over every pod of the pool).
fn held_pool_pods(ctx: &Ctx, ns: &str, name: &str) -> Vec<String> {
    ctx.held
        .in_namespace(ns)
        .into_iter()
        .filter(|p| {
            ctx.stores
                .pods
                .get(&ObjectRef::new(p).within(ns))
                .is_some_and(|pod| pod.labels().get(NAME_LABEL).map(String::as_str) == Some(name))
        })
        .collect()
}

/// What `/debug/state` shows of one HSJ after a reconcile besides its units, serialized
/// straight from the reconcile's values; the units are kept as they are and rendered only
/// when the endpoint is read (serializing 10,000 of them cost more than the reconcile).
#[derive(serde::Serialize)]
pub struct DebugHead<'a> {
    pub mode: JobBusyMode,
    pub plan: &'a plan::Plan<'a>,
    pub created: &'a [String],
    pub deleted: &'a [String],
    pub replaced: &'a [String],
    pub at: String,
}

/// What a reconcile observed of one HSJ (after the due probes): its units' views from the
/// unit index (taken for this reconcile, put back when dropped), and its Jobs in flight.
pub struct Observation {
    refreshed: units::Refreshed,
    in_flight: i32,
}

impl Observation {
    /// The HSJ's units.
    pub fn units(&self) -> &[plan::UnitView] {
        self.refreshed.units()
    }

    /// The planner's input.
    pub fn observed<'a>(
        &'a self,
        hsj: &'a HotStandbyJob,
        now: k8s_openapi::jiff::Timestamp,
    ) -> Observed<'a> {
        Observed {
            spec: &hsj.spec,
            units: self.units(),
            in_flight: self.in_flight,
            pending_since: hsj
                .status
                .as_ref()
                .and_then(|s| s.scale_down_pending_since.as_ref())
                .map(|t| t.0),
            failures: failures_of(hsj),
            now,
        }
    }
}

/// Observe `hsj` (`me`) from the unit index: the views of its units, rebuilt only for those
/// changed since its last reconcile, remembering which Jobs were ever busy; `deleting`: the
/// Jobs we deleted that the cache may still show (not units any more).
pub fn observe(
    ctx: &Ctx,
    hsj: &HotStandbyJob,
    me: units::HsjRef<'_>,
    deleting: HashSet<String>,
) -> Observation {
    let refreshed = {
        let mut ever = lock(&ctx.ever_busy);
        let probe = &hsj.spec.busy_probe;
        ctx.units
            .refresh(me, probe, &ctx.probes, &deleting, &mut ever)
    };
    // A created Job is seen once the cache shows it controlled by the HSJ (and not deleted).
    let seen = |job: &str| {
        let at = ObjectRef::new(job).within(me.namespace);
        ctx.stores.jobs.get(&at).is_some_and(|j| {
            let controlled = j
                .owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == me.uid);
            controlled && !deleting.contains(j.metadata.uid.as_deref().unwrap_or_default())
        })
    };
    let key = debug_key(me.namespace, me.name);
    Observation {
        in_flight: ctx.expect.in_flight_where(&key, seen),
        refreshed,
    }
}

/// Status, counting the active units after this reconcile's writes.
fn status_after(
    hsj: &HotStandbyJob,
    plan: &plan::Plan<'_>,
    applied: &apply::Applied,
    units: &[plan::UnitView],
    forbidden: Option<&str>,
    now: k8s_openapi::jiff::Timestamp,
) -> HotStandbyJobStatus {
    let ready = units
        .iter()
        .filter(|u| u.finished.is_none() && u.core.ready)
        .count() as i32;
    let written = applied.created.len() as i32 - applied.deleted.len() as i32;
    let after = plan::Plan {
        active: plan.active.saturating_add(written),
        ..plan.clone()
    };
    status::build(hsj, &after, ready, forbidden, &Time(now))
}

/// Metrics of the Job writes.
fn count_writes(ctx: &Ctx, applied: &apply::Applied, started: Instant) {
    let m = &ctx.metrics.hsj;
    m.wrote("replace", applied.replaced.len());
    m.wrote("down", applied.deleted.len());
    m.wrote("up", applied.created.len());
    if !applied.created.is_empty() {
        m.reaction.observe(started.elapsed().as_secs_f64());
    }
}

fn next_wake(ctx: &Ctx, hsj: &HotStandbyJob, plan: &plan::Plan<'_>, in_flight: i32) -> Duration {
    let key = format!("{}/{}", hsj.namespace().unwrap_or_default(), hsj.name_any());
    let mut next = shell::spread(ctx.resync, &key);
    if let Some(d) = plan.requeue_after {
        next = next.min(d + Duration::from_millis(50));
    }
    if in_flight > 0 || plan.create > 0 {
        next = next.min(Duration::from_secs(2));
    }
    let probe = &hsj.spec.busy_probe;
    let period = match (probe.mode, &probe.exec) {
        (JobBusyMode::Http, _) => Some(probe.http.period_seconds),
        (JobBusyMode::Exec, Some(e)) => Some(e.period_seconds),
        _ => None,
    };
    if let Some(p) = period {
        next = next.min(Duration::from_secs(p.max(1) as u64));
    }
    next
}

fn gauges(ctx: &Ctx, ns: &str, name: &str, plan: &plan::Plan<'_>) {
    let labels = ObjectLabels::new(ns, name);
    let counts = HsjCounts {
        busy: plan.busy as i64,
        idle: plan.idle as i64,
        unknown: plan.unknown as i64,
        desired: plan.desired as i64,
        active: plan.active as i64,
        consecutive_failures: plan.failures.consecutive as i64,
    };
    ctx.metrics.hsj.set(&labels, &counts);
}

/// Run the controller until shutdown (tests and embedding; `kube-standby run` supervises the
/// parts of [`start`] one by one).
pub async fn run(deps: super::Deps, namespace: Option<String>) {
    start(&deps, namespace).run().await
}

/// The controller and its pruning loops as named tasks, with the API's exec prober.
pub fn start(deps: &super::Deps, namespace: Option<String>) -> super::Started {
    let exec = ExecProber::new(
        Arc::new(KubeExec {
            client: deps.client.clone(),
        }),
        EXEC_IN_FLIGHT,
    );
    start_with(deps, exec, namespace)
}

/// [`start`] with a given exec prober (tests use a fake runner). Nothing is reconciled
/// before the caches have listed, nor while `deps.leading` is false.
pub fn start_with(
    deps: &super::Deps,
    exec: ExecProber,
    namespace: Option<String>,
) -> super::Started {
    use super::watch::{in_scope, in_scope_events, strip_managed};
    use futures::StreamExt;
    let ns = namespace.as_deref();
    let labelled = watcher::Config::default().labels(NAME_LABEL).page_size(100);
    let (jobs, job_w) = reflector::store::<Job>();
    let (pods, pod_w) = reflector::store::<Pod>();
    let (hsjs, hsj_w) = reflector::store::<HotStandbyJob>();
    let job_events = in_scope_events(deps, ns, labelled.clone(), job_w, strip_job);
    let pod_events = in_scope_events(deps, ns, labelled, pod_w, observe::strip_pod);
    let all = watcher::Config::default();
    let hsj_stream = in_scope(deps, ns, all, hsj_w, strip_managed);
    let stores = Stores {
        jobs: jobs.clone(),
        pods: pods.clone(),
    };
    let ctx = Arc::new(Ctx::new(deps, stores, exec));
    // The unit index hears of each event after the cache applied it and before the
    // controller does (so a reconcile it triggers reads it).
    let (index, cache) = (ctx.units.clone(), jobs.clone());
    let job_stream = job_events.filter_map(move |r| {
        let ev = r.map(|ev| index.on_job_event(&cache, ev)).transpose();
        std::future::ready(ev)
    });
    let (index, cache) = (ctx.units.clone(), pods.clone());
    let pod_stream = pod_events.filter_map(move |r| {
        let ev = r.map(|ev| index.on_pod_event(&cache, ev)).transpose();
        std::future::ready(ev)
    });
    deps.probes
        .register_target(probe_target(pods.clone(), hsjs.clone()));
    let held = super::held::trigger(&deps.held, ctx.stores.pods.clone(), |p| {
        super::labelled_owner(NAME_LABEL, p)
    });
    let results = Controller::for_stream(hsj_stream, hsjs)
        .with_config(super::controller_config())
        .reconcile_on(held)
        .reconcile_on(super::claim::count_trigger(
            &deps.claims,
            PoolKind::HotStandbyJob,
        ))
        .owns_stream(job_stream)
        .watches_stream(pod_stream, |p| super::labelled_owner(NAME_LABEL, &p))
        .run(reconcile, error_policy, ctx.clone());
    let controller = shell::follow(results, "hsj", ctx.clone(), |c, ns, name| async move {
        forget(&c, &ns, &name);
    });
    let probes = ctx.probes.clone();
    let forget_probes = async move { probes.forget_gone(pods, Duration::from_secs(60)).await };
    let label = super::scope_label(ns);
    super::Started {
        tasks: vec![
            (format!("hsj-{label}"), Box::pin(controller)),
            (format!("hsj-{label}-probes"), Box::pin(forget_probes)),
            (
                format!("hsj-{label}-jobs"),
                Box::pin(forget_gone_jobs(ctx.clone(), jobs)),
            ),
        ],
    }
}

/// The busy guard's way to an HSJ pod's http or exec probe: the pod in our pod cache, its
/// HSJ by the name label (annotation-mode HSJs, and exec without settings, answer None).
fn probe_target(pods: Store<Pod>, hsjs: Store<HotStandbyJob>) -> crate::probe::target::Resolver {
    use crate::probe::target::{Found, PoolProbe};
    Arc::new(move |ns: &str, name: &str| {
        let pod = pods.get(&ObjectRef::new(name).within(ns))?;
        let hsj = hsjs.get(&super::labelled_owner(NAME_LABEL, pod.as_ref())?)?;
        let p = &hsj.spec.busy_probe;
        let probe = match (p.mode, &p.exec) {
            (JobBusyMode::Http, _) => PoolProbe::Http(p.http.clone()),
            (JobBusyMode::Exec, Some(cfg)) => PoolProbe::Exec(cfg.clone()),
            _ => return None,
        };
        Some(Found { probe, pod })
    })
}

/// A cached Job keeps its metadata and status: the reconciler never reads its spec.
fn strip_job(j: &mut Job) {
    j.managed_fields_mut().clear();
    j.spec = None;
}

/// Every minute, forget the busy memories of gone Jobs.
async fn forget_gone_jobs(ctx: Arc<Ctx>, jobs: Store<Job>) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let live: HashSet<String> = jobs.state().iter().filter_map(|j| j.uid()).collect();
        lock(&ctx.ever_busy).retain(|uid| live.contains(uid));
    }
}

/// An HSJ is gone: drop its debug entry, status memory, expectations and gauges.
pub fn forget(ctx: &Ctx, ns: &str, name: &str) {
    ctx.debug.remove(&debug_key(ns, name));
    ctx.shell.forget(ns, name);
    ctx.expect.forget(&debug_key(ns, name));
    ctx.units.forget(ns, name);
    ctx.metrics.hsj.forget(&ObjectLabels::new(ns, name));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::target::PoolProbe;

    fn cached_pod(name: &str, label: (&str, &str)) -> Pod {
        crate::controller::fixtures::cached_pod(name, label)
    }
    use crate::controller::fixtures::store_of;

    fn hsj(name: &str, probe: serde_json::Value) -> HotStandbyJob {
        let spec: crate::api::hsj::HotStandbyJobSpec = serde_json::from_value(serde_json::json!({
            "idleTarget": 1, "busyProbe": probe,
            "jobTemplate": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}
        }))
        .unwrap();
        let mut h = HotStandbyJob::new(name, spec);
        h.metadata.namespace = Some("ns".into());
        h.metadata.uid = Some(format!("uid-{name}"));
        h
    }

    #[test]
    fn the_debug_entry_is_the_json_the_reconcile_published_before() {
        let h = hsj("exec", serde_json::json!({"mode": "annotation"}));
        let now = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let units = vec![];
        let o = Observed {
            spec: &h.spec,
            units: &units,
            in_flight: 0,
            pending_since: None,
            failures: Failures::default(),
            now,
        };
        let plan = plan::plan(&o);
        let (created, deleted, replaced) = (vec!["a".to_string()], vec!["b".into()], vec![]);
        let head = DebugHead {
            mode: h.spec.busy_probe.mode,
            plan: &plan,
            created: &created,
            deleted: &deleted,
            replaced: &replaced,
            at: now.to_string(),
        };
        let before = serde_json::json!({"mode": h.spec.busy_probe.mode, "plan": plan, "units": units,
            "created": created, "deleted": deleted, "replaced": replaced, "at": now.to_string()});
        let debug = crate::state::DebugState::default();
        debug.set_with_list(
            "hsj/ns/h".into(),
            crate::state::json_text(&head),
            "units",
            units.clone(),
        );
        assert_eq!(debug.snapshot()["hsj/ns/h"], before);
    }

    #[test]
    fn the_guard_finds_the_http_or_exec_probe_of_an_hsj_pod() {
        let pods = store_of(vec![
            cached_pod("e-1", (NAME_LABEL, "exec")),
            cached_pod("h-1", (NAME_LABEL, "http")),
            cached_pod("a-1", (NAME_LABEL, "ann")),
            cached_pod("x-1", (NAME_LABEL, "exec-unset")),
        ]);
        let hsjs = store_of(vec![
            hsj(
                "exec",
                serde_json::json!({"mode": "exec", "exec": {"command": ["true"], "periodSeconds": 3}}),
            ),
            hsj(
                "http",
                serde_json::json!({"mode": "http", "http": {"port": 9000}}),
            ),
            hsj("ann", serde_json::json!({"mode": "annotation"})),
            hsj("exec-unset", serde_json::json!({"mode": "exec"})),
        ]);
        let r = probe_target(pods, hsjs);
        let e = r("ns", "e-1").expect("exec pod");
        assert!(matches!(&e.probe, PoolProbe::Exec(c) if c.command == vec!["true".to_string()]));
        assert_eq!(e.probe.period(), Duration::from_secs(3));
        let h = r("ns", "h-1").expect("http pod");
        assert!(matches!(&h.probe, PoolProbe::Http(c) if c.port == 9000));
        assert!(r("ns", "a-1").is_none(), "annotation mode");
        assert!(r("ns", "x-1").is_none(), "exec without settings");
    }
}
