//! The HSJ unit index (issue 22): every HSJ's Jobs and their pods, fed by the Job and pod
//! watch events and by the probe cache's change notices, and each HSJ's unit views kept up
//! to date from it, so a reconcile rebuilds only the units that changed since the last one
//! (as linkerd's policy controller indexes its watch events) instead of grouping and
//! reading every cached Job and pod again.
//!
//! Invariants:
//! - once an event has been fed (before the controller hears of it, see
//!   [`Units::on_job_event`]) the index holds what the committed caches hold: Jobs by
//!   (namespace, UID of their controlling owner), pods by (namespace, HSJ name label) and
//!   then by the UID of their controlling Job, each unit's pods in name order. A (re)list
//!   is read from the committed cache at its end, never half-listed;
//! - a unit is marked changed whenever its Job or one of its pods is added, changed, moved
//!   or gone, and whenever a probe answer of one of its pods changes what
//!   [`ProbeCache::view`] says (the cache tells its listeners, after its lock is released);
//! - after [`Units::refresh`], an HSJ's views are exactly those [`observe::unit_view`] builds
//!   from scratch from the index for every Job it controls that we are not deleting (in any
//!   order), with the same ever-busy memory (property-tested against that rebuild below);
//! - views are rebuilt only for units marked changed, units whose hidden mark (deleted by us,
//!   the cache may still show them) changed, or all of an HSJ's units when its UID, busy mode
//!   or annotation key changed; the view list is updated in place (a swap-remove for a gone
//!   unit), never copied, so a reconcile reads it as a slice;
//! - each pod group keeps its running pods that have a UID in the order their busy probes
//!   fall due ([`Feed::due`]): a pod is filed under when the probe cache last said it was
//!   probed, or first (due whatever the period) when never probed or not yet checked
//!   against the cache since it appeared. The cache tells the index of every change of a
//!   probe time with a change number ([`ProbeCache::on_probed`]); a pod keeps the highest
//!   numbered time it was told or read, so notices told out of order never roll it back.
//!   [`Units::due_pods`] walks a group's order only up to the first pod not yet due, keeps
//!   the live ones (as [`Units::live_pods`]) and asks the cache, under one lock, about those
//!   alone: its answer is exactly the live running pods the cache says are due
//!   (property-tested against asking the cache about every live running pod below), at a
//!   cost that grows with the pods due, not with the pods of the HSJ. Every pod walked is
//!   checked, live or not. A walked pod whose Job is finished or unknown to the index is
//!   parked: taken out of the order until that Job's next event (or its own) files it
//!   again, so it is walked past once, not on every call. Running pods that are due but
//!   not live for another reason (of a Job we delete, another HSJ's: never probed, so due
//!   for good once due) are walked past on each call, until they stop running or go;
//! - no lock is held while another is taken: views are built after the index's lock is let
//!   go (from shared Job and pod handles), and the probe cache calls back without its lock.
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use super::build::NAME_LABEL;
use super::observe;
use super::plan::UnitView;
use crate::api::hsj::{JobBusyMode, JobBusyProbe};
use crate::probe::{self, ProbeCache};

/// (namespace, UID of the controlling owner) of a Job group; (namespace, HSJ name) of a
/// pod group.
type GroupKey = (String, String);

/// One HSJ's Jobs (by the HSJ's UID) and the units changed since its last refresh.
#[derive(Default)]
struct JobGroup {
    jobs: HashMap<String, Arc<Job>>,
    dirty: HashSet<String>,
}

/// What the watch events told: Jobs and pods where they belong.
#[derive(Default)]
struct Feed {
    jobs: HashMap<GroupKey, JobGroup>,
    /// Job UID → its group.
    job_at: HashMap<String, GroupKey>,
    /// (namespace, HSJ name) → controlling Job UID ("" for none) → pods in name order.
    pods: HashMap<GroupKey, HashMap<String, Vec<Arc<Pod>>>>,
    /// Pod UID → (its pod group, its Job's UID).
    pod_at: HashMap<String, (GroupKey, String)>,
    /// Pod UID → what the index knows of its last probe (the pods of `pod_at`).
    probed: HashMap<String, Probed>,
    /// (namespace, HSJ name) → its running pods with a UID, by [`Probed::key`] (the order
    /// their probes fall due), then UID; but the parked ones.
    due: HashMap<GroupKey, BTreeSet<(Option<Instant>, String)>>,
    /// Job UID → running pods taken out of the due order because that Job is finished or
    /// unknown ([`Feed::park`]): filed again at the Job's next event. May name pods filed
    /// again since (by their own event); those are skipped.
    parked: HashMap<String, Vec<String>>,
    /// Appearances of pods so far (each gets the next number).
    born: u64,
}

/// A pod's last probe as the index knows it.
#[derive(Clone, Copy, Debug)]
struct Probed {
    /// When the probe cache last said the pod was probed (None: never, or forgotten).
    at: Option<Instant>,
    /// The number of the cache's change `at` reflects (0: none yet).
    seq: u64,
    /// `at` was read from the cache since the pod appeared (before, notices may have been
    /// missed, so the pod is asked about on every call).
    checked: bool,
    /// Which appearance of the pod this is (a pod gone and back starts unchecked).
    born: u64,
    /// Its key in its group's due order (None: not filed, not running or no UID).
    filed: Option<Option<Instant>>,
}

impl Probed {
    /// Where the pod is filed: when last probed once checked; first (None) otherwise.
    fn key(&self) -> Option<Instant> {
        self.at.filter(|_| self.checked)
    }
}

fn job_group(job: &Job) -> Option<GroupKey> {
    let owner = job
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    Some((job.metadata.namespace.clone()?, owner.uid.clone()))
}

fn pod_place(pod: &Pod) -> Option<(GroupKey, String)> {
    let m = &pod.metadata;
    let name = m.labels.as_ref()?.get(NAME_LABEL)?;
    let job = observe::owner_job(pod).unwrap_or_default();
    Some(((m.namespace.clone()?, name.clone()), job.to_string()))
}

fn name_of(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or_default()
}

impl Feed {
    /// Take pod `uid`'s probe knowledge out of the index (and its group's due order).
    fn unfile(&mut self, uid: &str) -> Option<Probed> {
        let p = self.probed.remove(uid)?;
        if let (Some(key), Some((group, _))) = (p.filed, self.pod_at.get(uid)) {
            if let Some(order) = self.due.get_mut(group) {
                order.remove(&(key, uid.to_string()));
                if order.is_empty() {
                    self.due.remove(group);
                }
            }
        }
        Some(p)
    }

    /// Put pod `uid`'s probe knowledge back (it must be in `pod_at`), filed in its group's
    /// due order when `runs` (running, with a UID).
    fn file(&mut self, uid: &str, mut p: Probed, runs: bool) {
        p.filed = None;
        if let Some((group, _)) = self.pod_at.get(uid).filter(|_| runs) {
            let key = p.key();
            self.due
                .entry(group.clone())
                .or_default()
                .insert((key, uid.to_string()));
            p.filed = Some(key);
        }
        self.probed.insert(uid.to_string(), p);
    }

    /// Change pod `uid`'s probe knowledge (if the index holds the pod), refiling it.
    fn update(&mut self, uid: &str, change: impl FnOnce(&mut Probed)) {
        let Some(p) = self.probed.get_mut(uid) else {
            return;
        };
        let was = p.key();
        change(p);
        if p.key() == was || p.filed.is_none() {
            return;
        }
        if let Some(p) = self.unfile(uid) {
            self.file(uid, p, true);
        }
    }

    /// The cache's change `seq`: pod `uid` was last probed `at` (None: forgotten).
    fn told(&mut self, uid: &str, at: Option<Instant>, seq: u64) {
        self.update(uid, |p| {
            if seq > p.seq {
                (p.at, p.seq) = (at, seq);
            }
        });
    }

    /// The cache answered, as of its change `seq`, that pod `uid` (its appearance `born`)
    /// was last probed `at`.
    fn checked(&mut self, uid: &str, born: u64, at: Option<Instant>, seq: u64) {
        self.update(uid, |p| {
            if p.born != born {
                return;
            }
            if seq > p.seq {
                (p.at, p.seq) = (at, seq);
            }
            p.checked = true;
        });
    }

    /// Is Job `uid` unknown to the index, or finished? Then none of its pods is live for
    /// any HSJ until the Job's next event (a Job's event files its parked pods again).
    fn job_ended_or_unknown(&self, uid: &str) -> bool {
        let Some(group) = self.job_at.get(uid) else {
            return true;
        };
        self.jobs
            .get(group)
            .and_then(|g| g.jobs.get(uid))
            .is_none_or(|j| observe::finished(j).is_some())
    }

    /// Take pod `uid` (its appearance `born`, of Job `job`) out of its group's due order
    /// while that Job is finished or unknown, so due-probe scans stop walking past it; its
    /// Job's next event files it again. Checked here, under the lock, not by the caller.
    fn park(&mut self, uid: &str, born: u64, job: &str) {
        let here = self.pod_at.get(uid).is_some_and(|(_, j)| j == job)
            && self
                .probed
                .get(uid)
                .is_some_and(|p| p.born == born && p.filed.is_some());
        if !here || !self.job_ended_or_unknown(job) {
            return;
        }
        if let Some(p) = self.unfile(uid) {
            self.file(uid, p, false);
            self.parked
                .entry(job.to_string())
                .or_default()
                .push(uid.to_string());
        }
    }

    /// Pod `uid` as the index holds it.
    fn pod(&self, uid: &str) -> Option<&Arc<Pod>> {
        let (group, job) = self.pod_at.get(uid)?;
        self.pods
            .get(group)?
            .get(job)?
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(uid))
    }

    /// File again the pods parked under Job `job_uid` that still run and are not filed.
    fn unpark(&mut self, job_uid: &str) {
        for uid in self.parked.remove(job_uid).unwrap_or_default() {
            let unfiled = self.probed.get(&uid).is_some_and(|p| p.filed.is_none());
            let runs = self
                .pod(&uid)
                .is_some_and(|p| probe::is_running(p.as_ref()));
            if unfiled && runs {
                if let Some(p) = self.unfile(&uid) {
                    self.file(&uid, p, true);
                }
            }
        }
    }

    /// What a due-probe scan of `hsj` at `now` under `period` walks: the UIDs at the start
    /// of its pod group's due order that may be due, with the HSJ's Job group. None (nothing
    /// to walk) when either is missing.
    fn due_walk<'a>(
        &'a self,
        hsj: HsjRef<'_>,
        period: Duration,
        now: Instant,
    ) -> Option<(impl Iterator<Item = &'a String> + 'a, &'a JobGroup)> {
        let order = self
            .due
            .get(&(hsj.namespace.to_string(), hsj.name.to_string()))?;
        let jobs = self
            .jobs
            .get(&(hsj.namespace.to_string(), hsj.uid.to_string()))?;
        // A time key at or before `cutoff` is due (None: no time is, but for a zero period).
        let cutoff = now.checked_sub(period);
        let walk = order
            .iter()
            .take_while(move |(key, _)| {
                key.is_none_or(|t| period.is_zero() || cutoff.is_some_and(|c| t <= c))
            })
            .map(|(_, uid)| uid);
        Some((walk, jobs))
    }

    fn mark(&mut self, job_uid: &str) {
        if let Some(g) = self.job_at.get(job_uid) {
            if let Some(group) = self.jobs.get_mut(g) {
                group.dirty.insert(job_uid.to_string());
            }
        }
    }

    /// Job `uid` is now `job` (None: gone).
    fn note_job(&mut self, uid: &str, job: Option<Arc<Job>>) {
        let place = job.as_deref().and_then(job_group);
        if let Some(old) = self.job_at.get(uid).cloned() {
            if Some(&old) != place.as_ref() {
                self.job_at.remove(uid);
                if let Some(group) = self.jobs.get_mut(&old) {
                    group.jobs.remove(uid);
                    group.dirty.insert(uid.to_string());
                }
            }
        }
        if let (Some(place), Some(job)) = (place, job) {
            let group = self.jobs.entry(place.clone()).or_default();
            group.jobs.insert(uid.to_string(), job);
            group.dirty.insert(uid.to_string());
            self.job_at.insert(uid.to_string(), place);
        }
        self.unpark(uid);
    }

    /// Pod `uid` is now `pod` (None: gone).
    fn note_pod(&mut self, uid: &str, pod: Option<Arc<Pod>>) {
        let kept = self.unfile(uid);
        if let Some((group, job)) = self.pod_at.remove(uid) {
            if let Some(list) = self.parked.get_mut(&job) {
                list.retain(|u| u != uid);
                if list.is_empty() {
                    self.parked.remove(&job);
                }
            }
            if let Some(units) = self.pods.get_mut(&group) {
                if let Some(list) = units.get_mut(&job) {
                    list.retain(|p| p.metadata.uid.as_deref() != Some(uid));
                    if list.is_empty() {
                        units.remove(&job);
                    }
                }
                if units.is_empty() {
                    self.pods.remove(&group);
                }
            }
            self.mark(&job);
        }
        let Some(pod) = pod else { return };
        let Some((group, job)) = pod_place(&pod) else {
            return;
        };
        let list = self
            .pods
            .entry(group.clone())
            .or_default()
            .entry(job.clone())
            .or_default();
        let at = list.partition_point(|p| name_of(p) < name_of(&pod));
        let runs = !uid.is_empty() && probe::is_running(pod.as_ref());
        list.insert(at, pod);
        self.mark(&job);
        self.pod_at.insert(uid.to_string(), (group, job));
        let p = kept.unwrap_or_else(|| {
            self.born += 1;
            Probed {
                at: None,
                seq: 0,
                checked: false,
                born: self.born,
                filed: None,
            }
        });
        self.file(uid, p, runs);
    }

    fn pods_of(&self, ns: &str, name: &str, job: &str) -> Vec<Arc<Pod>> {
        // A lookup by borrowed parts would need a second map; the key is two short strings.
        let key = (ns.to_string(), name.to_string());
        self.pods
            .get(&key)
            .and_then(|u| u.get(job))
            .cloned()
            .unwrap_or_default()
    }
}

/// A unit to rebuild: its Job UID, its Job (None: no view any more) and its pods.
type Todo = (String, Option<Arc<Job>>, Vec<Arc<Pod>>);

/// An HSJ's views and what they were built for.
struct Views {
    /// (HSJ UID, busy mode, annotation key).
    built_for: (String, JobBusyMode, String),
    views: Vec<UnitView>,
    /// Job UID → its view's place in `views`.
    at: HashMap<Arc<str>, usize>,
    /// Jobs of the HSJ we deleted (the cache may still show them): no view.
    hidden: HashSet<String>,
}

impl Views {
    fn new(built_for: (String, JobBusyMode, String)) -> Self {
        Views {
            built_for,
            views: vec![],
            at: HashMap::new(),
            hidden: HashSet::new(),
        }
    }

    fn put(&mut self, view: UnitView) {
        match self.at.get(&view.core.uid) {
            Some(&i) => self.views[i] = view,
            None => {
                self.at.insert(view.core.uid.clone(), self.views.len());
                self.views.push(view);
            }
        }
    }

    fn remove(&mut self, uid: &str) {
        let Some(i) = self.at.remove(uid) else { return };
        self.views.swap_remove(i);
        if let Some(moved) = self.views.get(i) {
            self.at.insert(moved.core.uid.clone(), i);
        }
    }
}

/// The index, shared by the watches that feed it, the probe cache that tells it of changed
/// answers, and the reconciles that read it.
#[derive(Clone)]
pub struct Units {
    feed: Arc<Mutex<Feed>>,
    views: Arc<Mutex<HashMap<String, Views>>>,
    /// The cache whose notices the index listens to (and asks about due pods).
    probes: ProbeCache,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// One HSJ as the index knows it.
#[derive(Clone, Copy, Debug)]
pub struct HsjRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

impl HsjRef<'_> {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl Units {
    /// An index of what `jobs` and `pods` hold now, told of changed answers by `probes`.
    pub fn new(jobs: &Store<Job>, pods: &Store<Pod>, probes: &ProbeCache) -> Self {
        let u = Units {
            feed: Arc::default(),
            views: Arc::default(),
            probes: probes.clone(),
        };
        u.relist_jobs(jobs);
        u.relist_pods(pods);
        let feed: Weak<Mutex<Feed>> = Arc::downgrade(&u.feed);
        probes.on_probed(Arc::new(move |pod_uid: &str, at, seq| {
            let Some(feed) = feed.upgrade() else {
                return false;
            };
            lock(&feed).told(pod_uid, at, seq);
            true
        }));
        let feed: Weak<Mutex<Feed>> = Arc::downgrade(&u.feed);
        probes.on_change(Arc::new(move |pod_uid: &str| {
            let Some(feed) = feed.upgrade() else {
                return false;
            };
            let mut f = lock(&feed);
            if let Some((_, job)) = f.pod_at.get(pod_uid).cloned() {
                f.mark(&job);
            }
            true
        }));
        u
    }

    fn feed(&self) -> MutexGuard<'_, Feed> {
        lock(&self.feed)
    }

    /// Note one Job watch event (after `jobs` applied it); the Job it concerns, if any.
    pub fn on_job_event(&self, jobs: &Store<Job>, ev: watcher::Event<Job>) -> Option<Job> {
        self.on_event(jobs, ev, Feed::note_job, || self.relist_jobs(jobs))
    }

    /// Note one pod watch event (after `pods` applied it); the pod it concerns, if any.
    pub fn on_pod_event(&self, pods: &Store<Pod>, ev: watcher::Event<Pod>) -> Option<Pod> {
        self.on_event(pods, ev, Feed::note_pod, || self.relist_pods(pods))
    }

    /// One watch event of either kind: an applied object is noted as the cache holds it
    /// (shared, not copied), a deleted one forgotten by UID, the end of a relist reread.
    fn on_event<K>(
        &self,
        store: &Store<K>,
        ev: watcher::Event<K>,
        note: fn(&mut Feed, &str, Option<Arc<K>>),
        relist: impl FnOnce(),
    ) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + 'static,
    {
        match ev {
            watcher::Event::Apply(o) => {
                let uid = o.meta().uid.clone().unwrap_or_default();
                let kept = store.get(&ObjectRef::from_obj(&o));
                note(
                    &mut self.feed(),
                    &uid,
                    Some(kept.unwrap_or_else(|| Arc::new(o.clone()))),
                );
                Some(o)
            }
            watcher::Event::Delete(o) => {
                note(
                    &mut self.feed(),
                    o.meta().uid.as_deref().unwrap_or_default(),
                    None,
                );
                Some(o)
            }
            watcher::Event::InitApply(o) => Some(o),
            watcher::Event::Init => None,
            watcher::Event::InitDone => {
                relist();
                None
            }
        }
    }

    /// A (re)list ended: the Jobs are what `jobs` holds (only changed ones are marked).
    pub fn relist_jobs(&self, jobs: &Store<Job>) {
        let now: HashMap<String, Arc<Job>> = jobs
            .state()
            .into_iter()
            .filter_map(|j| Some((j.metadata.uid.clone()?, j)))
            .collect();
        let mut f = self.feed();
        let gone: Vec<String> = f
            .job_at
            .keys()
            .filter(|u| !now.contains_key(*u))
            .cloned()
            .collect();
        for uid in gone {
            f.note_job(&uid, None);
        }
        for (uid, job) in now {
            let same = f
                .job_at
                .get(&uid)
                .and_then(|g| f.jobs.get(g)?.jobs.get(&uid))
                .is_some_and(|old| Arc::ptr_eq(old, &job) || **old == *job);
            if !same {
                f.note_job(&uid, Some(job));
            }
        }
    }

    /// A (re)list ended: the pods are what `pods` holds.
    pub fn relist_pods(&self, pods: &Store<Pod>) {
        let now: HashMap<String, Arc<Pod>> = pods
            .state()
            .into_iter()
            .filter_map(|p| Some((p.metadata.uid.clone()?, p)))
            .collect();
        let mut f = self.feed();
        let gone: Vec<String> = f
            .pod_at
            .keys()
            .filter(|u| !now.contains_key(*u))
            .cloned()
            .collect();
        for uid in gone {
            f.note_pod(&uid, None);
        }
        for (uid, pod) in now {
            let same = f.pod_at.get(&uid).is_some_and(|(group, job)| {
                let list = f.pods.get(group).and_then(|u| u.get(job));
                let old = list.and_then(|l| l.iter().find(|p| p.metadata.uid == pod.metadata.uid));
                old.is_some_and(|o| Arc::ptr_eq(o, &pod) || **o == *pod)
                    && pod_place(&pod).as_ref() == Some(&(group.clone(), job.clone()))
            });
            if !same {
                f.note_pod(&uid, Some(pod));
            }
        }
    }

    /// Bring `hsj`'s views up to date and take them for one reconcile (kube never runs two
    /// reconciles of one HSJ at once); they are put back when the result is dropped.
    /// `deleting`: UIDs of Jobs we deleted that the cache may still show; `ever`: UIDs of
    /// Jobs ever seen busy (a unit busy now is added).
    pub fn refresh(
        &self,
        hsj: HsjRef<'_>,
        probe: &JobBusyProbe,
        probes: &ProbeCache,
        deleting: &HashSet<String>,
        ever: &mut HashSet<String>,
    ) -> Refreshed {
        let key = hsj.key();
        let built_for = (
            hsj.uid.to_string(),
            probe.mode,
            probe.annotation_key.clone(),
        );
        let mut views = lock(&self.views)
            .remove(&key)
            .filter(|v| v.built_for == built_for)
            .unwrap_or_else(|| Views::new(built_for));
        // Under the index's lock: what changed, and its Job and pods (shared handles).
        let todo: Vec<Todo> = {
            let mut f = self.feed();
            let group_key = (hsj.namespace.to_string(), hsj.uid.to_string());
            let fresh = views.views.is_empty();
            let mut changed: HashSet<String> = HashSet::new();
            let mut hidden: HashSet<String> = HashSet::new();
            let mut empty = false;
            if let Some(g) = f.jobs.get_mut(&group_key) {
                hidden.extend(deleting.iter().filter(|u| g.jobs.contains_key(*u)).cloned());
                if fresh {
                    g.dirty.clear();
                    changed.extend(g.jobs.keys().cloned());
                } else {
                    changed.extend(g.dirty.drain());
                }
                empty = g.jobs.is_empty();
            }
            if empty {
                f.jobs.remove(&group_key);
            }
            changed.extend(views.hidden.symmetric_difference(&hidden).cloned());
            views.hidden = hidden;
            let group = f.jobs.get(&group_key);
            changed
                .into_iter()
                .map(|uid| {
                    let job = group
                        .and_then(|g| g.jobs.get(&uid))
                        .filter(|_| !views.hidden.contains(&uid))
                        .cloned();
                    let pods = match job {
                        Some(_) => f.pods_of(hsj.namespace, hsj.name, &uid),
                        None => vec![],
                    };
                    (uid, job, pods)
                })
                .collect()
        };
        for (uid, job, pods) in todo {
            match job {
                None => views.remove(&uid),
                Some(job) => {
                    let was = ever.contains(&uid);
                    let refs: Vec<&Pod> = pods.iter().map(Arc::as_ref).collect();
                    let view = observe::unit_view(&job, &refs, probe, probes, was);
                    if view.ever_busy && !was {
                        ever.insert(uid);
                    }
                    views.put(view);
                }
            }
        }
        Refreshed {
            views: Some(views),
            home: self.views.clone(),
            key,
        }
    }

    /// The pods of the units `jobs` (Job UIDs) of `hsj`, in name order.
    pub fn pods_of_units<'a>(
        &self,
        hsj: HsjRef<'_>,
        jobs: impl IntoIterator<Item = &'a str>,
    ) -> HashMap<String, Vec<Arc<Pod>>> {
        let f = self.feed();
        let Some(units) = f
            .pods
            .get(&(hsj.namespace.to_string(), hsj.name.to_string()))
        else {
            return HashMap::new();
        };
        jobs.into_iter()
            .filter_map(|j| Some((j.to_string(), units.get(j)?.clone())))
            .collect()
    }

    /// The pods of `hsj`'s units still running (Job not finished, not being deleted by us):
    /// those a probe is due for.
    pub fn live_pods(&self, hsj: HsjRef<'_>, deleting: &HashSet<String>) -> Vec<Arc<Pod>> {
        let f = self.feed();
        let group = f
            .jobs
            .get(&(hsj.namespace.to_string(), hsj.uid.to_string()));
        let units = f
            .pods
            .get(&(hsj.namespace.to_string(), hsj.name.to_string()));
        let (Some(group), Some(units)) = (group, units) else {
            return vec![];
        };
        group
            .jobs
            .iter()
            .filter(|(uid, j)| !deleting.contains(*uid) && observe::finished(j).is_none())
            .filter_map(|(uid, _)| units.get(uid))
            .flatten()
            .cloned()
            .collect()
    }

    /// The pods of [`live_pods`](Self::live_pods) that are running, have a UID and whose busy
    /// probe is due at `now` under `period` as the probe cache says now (never probed, or
    /// last probed `period` or longer ago): the pods the index files as maybe due, the live
    /// ones, asked about under one lock of the cache (see the module's invariants).
    pub fn due_pods(
        &self,
        hsj: HsjRef<'_>,
        deleting: &HashSet<String>,
        period: Duration,
        now: Instant,
    ) -> Vec<Arc<Pod>> {
        // The pods filed as maybe due, each with its appearance and, when live, the pod;
        // and those to park (their Job finished or unknown).
        let mut park: Vec<(String, u64, String)> = vec![];
        let maybe: Vec<(String, u64, Option<Arc<Pod>>)> = {
            let f = self.feed();
            let Some((walk, jobs)) = f.due_walk(hsj, period, now) else {
                return vec![];
            };
            walk.filter_map(|uid| {
                let (_, job) = f.pod_at.get(uid)?;
                let live = !deleting.contains(job)
                    && jobs
                        .jobs
                        .get(job)
                        .is_some_and(|j| observe::finished(j).is_none());
                let pod = live.then(|| f.pod(uid).cloned()).flatten();
                let born = f.probed.get(uid)?.born;
                if f.job_ended_or_unknown(job) {
                    park.push((uid.clone(), born, job.clone()));
                }
                Some((uid.clone(), born, pod))
            })
            .collect()
        };
        if maybe.is_empty() {
            return vec![];
        }
        // Every pod walked is checked (a pod not live now is filed by its time after), the
        // live ones due are the answer.
        let (last, seq) = self
            .probes
            .probed_at(maybe.iter().map(|(uid, _, _)| uid.as_str()));
        {
            let mut f = self.feed();
            for ((uid, born, _), at) in maybe.iter().zip(&last) {
                f.checked(uid, *born, *at, seq);
            }
            for (uid, born, job) in &park {
                f.park(uid, *born, job);
            }
        }
        maybe
            .into_iter()
            .zip(last)
            .filter(|(_, at)| probe::due_at(*at, period, now))
            .filter_map(|((_, _, pod), _)| pod)
            .collect()
    }

    /// How many pods a due-probe scan at `now` under `period` would walk past because their
    /// Job is finished or unknown (parking keeps this at 0 right after a scan).
    #[cfg(test)]
    fn walked_for_nothing(&self, hsj: HsjRef<'_>, period: Duration, now: Instant) -> usize {
        let f = self.feed();
        let Some((walk, _)) = f.due_walk(hsj, period, now) else {
            return 0;
        };
        walk.filter(|uid| {
            f.pod_at
                .get(*uid)
                .is_some_and(|(_, job)| f.job_ended_or_unknown(job))
        })
        .count()
    }

    /// Drop an HSJ's views (it is gone).
    pub fn forget(&self, namespace: &str, name: &str) {
        lock(&self.views).remove(&format!("{namespace}/{name}"));
    }
}

/// An HSJ's views, taken for one reconcile; put back for the next when dropped.
pub struct Refreshed {
    views: Option<Views>,
    home: Arc<Mutex<HashMap<String, Views>>>,
    key: String,
}

impl Refreshed {
    /// The views of the HSJ's units (in no particular order).
    pub fn units(&self) -> &[UnitView] {
        self.views.as_ref().map_or(&[], |v| v.views.as_slice())
    }
}

impl Drop for Refreshed {
    fn drop(&mut self) {
        if let Some(v) = self.views.take() {
            lock(&self.home).insert(std::mem::take(&mut self.key), v);
        }
    }
}

/// The views a rebuild from scratch gives (the index's oracle, and what a reconcile saw
/// before the index): every Job of `jobs` controlled by `hsj` and not in `deleting`, with
/// its labelled pods in name order.
pub fn rebuild(
    hsj: HsjRef<'_>,
    jobs: &[Arc<Job>],
    pods: &[Arc<Pod>],
    probe: &JobBusyProbe,
    probes: &ProbeCache,
    deleting: &HashSet<String>,
    ever: &mut HashSet<String>,
) -> Vec<UnitView> {
    let mut mine: Vec<&Pod> = pods
        .iter()
        .map(Arc::as_ref)
        .filter(|p| p.metadata.namespace.as_deref() == Some(hsj.namespace))
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(NAME_LABEL))
                .map(String::as_str)
                == Some(hsj.name)
        })
        .collect();
    mine.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    let by_job = observe::pods_by_job(mine);
    jobs.iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(hsj.namespace))
        .filter(|j| job_group(j).is_some_and(|(_, o)| o == hsj.uid))
        .filter(|j| !deleting.contains(j.metadata.uid.as_deref().unwrap_or_default()))
        .map(|j| {
            let uid = j.metadata.uid.clone().unwrap_or_default();
            let ps = by_job
                .get(uid.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let was = ever.contains(&uid);
            let v = observe::unit_view(j, ps, probe, probes, was);
            if v.ever_busy && !was {
                ever.insert(uid);
            }
            v
        })
        .collect()
}

/// Does a probe answer decide this HSJ's busy states (http and exec mode)?
pub fn probed(probe: &JobBusyProbe) -> bool {
    matches!(probe.mode, JobBusyMode::Http | JobBusyMode::Exec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::BusyState;
    use kube::runtime::reflector::{self, store::Writer};
    use proptest::prelude::*;
    use serde_json::json;

    /// HSJ `a` of namespace `ns`, UID `hA` (the owner of the tests' `A` Jobs).
    const HSJ_A: HsjRef<'static> = HsjRef {
        namespace: "ns",
        name: "a",
        uid: "hA",
    };

    fn probe(mode: u8) -> JobBusyProbe {
        let mode = ["annotation", "exec", "http"][mode as usize % 3];
        serde_json::from_value(json!({"mode": mode, "exec": {"command": ["cat", "/tmp/busy"]}}))
            .unwrap()
    }

    /// Job `j{i}` controlled by HSJ `h{owner}` (A or B), maybe finished.
    fn job(i: u8, owner: bool, finished: u8, rv: u32) -> Job {
        let conditions = match finished {
            1 => {
                json!([{"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}])
            }
            2 => {
                json!([{"type": "Failed", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}])
            }
            _ => json!([]),
        };
        serde_json::from_value(json!({
            "metadata": {"name": format!("j{i}"), "namespace": "ns", "uid": format!("j{i}"),
                         "resourceVersion": rv.to_string(), "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {NAME_LABEL: "a"},
                         "ownerReferences": [{"apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob",
                                              "name": "a", "uid": if owner { "hA" } else { "hB" }, "controller": true}]},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    /// Pod `p{k}` of Job `j{job}` (none: 5), labelled for HSJ `a` or `b`.
    #[derive(Clone, Debug)]
    struct PodSpec {
        k: u8,
        job: u8,
        label_a: bool,
        busy: bool,
        running: bool,
        terminating: bool,
        failing: bool,
    }

    fn pod_spec() -> impl Strategy<Value = PodSpec> {
        (
            0u8..6,
            0u8..6,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0u8..6,
            0u8..6,
        )
            .prop_map(|(k, job, label_a, busy, running, term, fail)| PodSpec {
                k,
                job,
                label_a: label_a || job.is_multiple_of(2),
                busy,
                running,
                terminating: term == 0,
                failing: fail == 0,
            })
    }

    fn pod(s: &PodSpec, rv: u32) -> Pod {
        let mut v = json!({
            "metadata": {"name": format!("p{}", s.k), "namespace": "ns", "uid": format!("p{}", s.k),
                         "resourceVersion": rv.to_string(),
                         "labels": {NAME_LABEL: if s.label_a { "a" } else { "b" }},
                         "annotations": {"paia.tech/busy": s.busy.to_string()}},
            "status": {"phase": if s.running { "Running" } else { "Pending" }, "podIP": "10.0.0.1",
                       "conditions": [{"type": "Ready", "status": if s.running { "True" } else { "False" }}]}
        });
        if s.job < 5 {
            v["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job",
                "name": format!("j{}", s.job), "uid": format!("j{}", s.job), "controller": true}]);
        }
        if s.terminating {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        if s.failing {
            v["status"]["containerStatuses"] = json!([{"name": "main",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "nope"}}}]);
        }
        serde_json::from_value(v).unwrap()
    }

    #[derive(Clone, Debug)]
    enum Op {
        Job(u8, bool, u8),
        DeleteJob(u8),
        Pod(PodSpec),
        DeletePod(u8),
        /// A probe answer for pod `p{k}`: 0 idle, 1 busy, 2 failing, 3 forgotten.
        Answer(u8, u8),
        /// A relist of Jobs (true) or pods, dropping the objects whose number is in the mask.
        Relist(bool, u8),
        /// A reconcile: HSJ A or B's UID, busy mode, Jobs we are deleting (mask).
        Refresh(bool, u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..5, any::<bool>(), 0u8..3).prop_map(|(i, o, f)| Op::Job(i, o || i < 3, f)),
            1 => (0u8..5).prop_map(Op::DeleteJob),
            4 => pod_spec().prop_map(Op::Pod),
            1 => (0u8..6).prop_map(Op::DeletePod),
            3 => (0u8..6, 0u8..4).prop_map(|(k, a)| Op::Answer(k, a)),
            1 => (any::<bool>(), any::<u8>()).prop_map(|(j, m)| Op::Relist(j, m)),
            3 => (0u8..8, 0u8..3, 0u8..32).prop_map(|(u, m, d)| Op::Refresh(u != 0, m, d)),
        ]
    }

    fn number(name: Option<&str>) -> u8 {
        name.and_then(|n| n[1..].parse().ok()).unwrap_or(0)
    }

    /// A kind whose watch events the unit index is told of.
    trait Fed: kube::Resource<DynamicType = ()> + Clone + 'static {
        fn note(u: &Units, s: &Store<Self>, ev: watcher::Event<Self>);
    }

    impl Fed for Job {
        fn note(u: &Units, s: &Store<Job>, ev: watcher::Event<Job>) {
            u.on_job_event(s, ev);
        }
    }

    impl Fed for Pod {
        fn note(u: &Units, s: &Store<Pod>, ev: watcher::Event<Pod>) {
            u.on_pod_event(s, ev);
        }
    }

    /// Apply `ev` to the cache and then feed it to the index, as the watch does.
    fn feed<K: Fed>(w: &mut Writer<K>, s: &Store<K>, u: &Units, ev: watcher::Event<K>) {
        w.apply_watcher_event(&ev);
        K::note(u, s, ev);
    }

    /// A relist that loses the objects of those `mask` numbers (deleted while the watch
    /// was down).
    fn relist<K: Fed>(w: &mut Writer<K>, s: &Store<K>, u: &Units, mask: u8) {
        feed(w, s, u, watcher::Event::Init);
        for o in s.state() {
            if mask & (1 << number(o.meta().name.as_deref())) == 0 {
                feed(w, s, u, watcher::Event::InitApply((*o).clone()));
            }
        }
        feed(w, s, u, watcher::Event::InitDone);
    }

    /// The object `name` deleted, if the cache holds it.
    fn delete<K: Fed>(w: &mut Writer<K>, s: &Store<K>, u: &Units, name: &str) {
        if let Some(o) = s.get(&ObjectRef::new(name).within("ns")) {
            feed(w, s, u, watcher::Event::Delete((*o).clone()));
        }
    }

    /// Job `j{i}` deleted, if the cache holds it.
    fn delete_job(w: &mut Writer<Job>, s: &Store<Job>, u: &Units, i: u8) {
        delete(w, s, u, &format!("j{i}"));
    }

    /// Pod `p{k}` deleted, if the cache holds it.
    fn delete_pod(w: &mut Writer<Pod>, s: &Store<Pod>, u: &Units, k: u8) {
        delete(w, s, u, &format!("p{k}"));
    }

    fn sorted(mut v: Vec<UnitView>) -> Vec<UnitView> {
        v.sort_by(|a, b| a.core.uid.cmp(&b.core.uid));
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Over any sequence of Job and pod events (adds, changes, moves between HSJs and
        /// Jobs, deletes, relists), probe answers and reconciles (the HSJ recreated, the
        /// busy mode changed, Jobs being deleted by us), the index's views equal a rebuild
        /// from scratch of the committed caches, and the ever-busy memories are the same.
        #[test]
        fn the_index_equals_a_rebuild_from_the_caches(ops in proptest::collection::vec(op(), 1..40)) {
            let (jobs, mut jw) = reflector::store::<Job>();
            let (pods, mut pw) = reflector::store::<Pod>();
            let probes = ProbeCache::default();
            let units = Units::new(&jobs, &pods, &probes);
            let (mut ever_index, mut ever_fresh) = (HashSet::new(), HashSet::new());
            let mut rv = 0u32;
            for op in ops {
                rv += 1;
                match op {
                    Op::Job(i, owner, fin) => {
                        feed(&mut jw, &jobs, &units, watcher::Event::Apply(job(i, owner, fin, rv)));
                    }
                    Op::DeleteJob(i) => {
                        delete_job(&mut jw, &jobs, &units, i);
                    }
                    Op::Pod(s) => {
                        feed(&mut pw, &pods, &units, watcher::Event::Apply(pod(&s, rv)));
                    }
                    Op::DeletePod(k) => {
                        delete_pod(&mut pw, &pods, &units, k);
                    }
                    Op::Answer(k, a) => {
                        let uid = format!("p{k}");
                        let now = std::time::Instant::now();
                        match a {
                            0 => { probes.record(&uid, Ok(BusyState::Idle), now); }
                            1 => { probes.record(&uid, Ok(BusyState::Busy), now); }
                            2 => { probes.record(&uid, Err(format!("timeout {rv}")), now); }
                            _ => probes.retain(&|u| u != uid),
                        }
                    }
                    Op::Relist(true, mask) => {
                        relist(&mut jw, &jobs, &units, mask);
                    }
                    Op::Relist(false, mask) => {
                        relist(&mut pw, &pods, &units, mask);
                    }
                    Op::Refresh(a, mode, del) => {
                        let me = HsjRef { namespace: "ns", name: "a", uid: if a { "hA" } else { "hB" } };
                        let p = probe(mode);
                        let deleting: HashSet<String> =
                            (0..5).filter(|i| del & (1 << i) != 0).map(|i| format!("j{i}")).collect();
                        let got = units.refresh(me, &p, &probes, &deleting, &mut ever_index);
                        let want = rebuild(me, &jobs.state(), &pods.state(), &p, &probes, &deleting, &mut ever_fresh);
                        prop_assert_eq!(sorted(got.units().to_vec()), sorted(want));
                        prop_assert_eq!(&ever_index, &ever_fresh);
                        // The pods a probe is due for, and the victims' pods, as a rebuild says.
                        let mut live: Vec<String> = units.live_pods(me, &deleting).iter()
                            .filter_map(|p| p.metadata.uid.clone()).collect();
                        live.sort();
                        let mut want_live: Vec<String> = pods.state().iter()
                            .filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get(NAME_LABEL)).map(String::as_str) == Some("a"))
                            .filter(|p| observe::owner_job(p).is_some_and(|j| {
                                !deleting.contains(j) && jobs.state().iter().any(|x| {
                                    x.metadata.uid.as_deref() == Some(j)
                                        && job_group(x).is_some_and(|(_, o)| o == me.uid)
                                        && observe::finished(x).is_none()
                                })
                            }))
                            .filter_map(|p| p.metadata.uid.clone())
                            .collect();
                        want_live.sort();
                        prop_assert_eq!(live, want_live);
                    }
                }
            }
        }
    }

    #[test]
    fn a_changed_probe_answer_rebuilds_only_its_unit() {
        let (jobs, mut jw) = reflector::store::<Job>();
        let (pods, mut pw) = reflector::store::<Pod>();
        let probes = ProbeCache::default();
        let units = Units::new(&jobs, &pods, &probes);
        let me = HSJ_A;
        for i in 0..3u8 {
            feed(
                &mut jw,
                &jobs,
                &units,
                watcher::Event::Apply(job(i, true, 0, 1)),
            );
            let s = PodSpec {
                k: i,
                job: i,
                label_a: true,
                busy: false,
                running: true,
                terminating: false,
                failing: false,
            };
            feed(&mut pw, &pods, &units, watcher::Event::Apply(pod(&s, 1)));
        }
        let p = probe(1);
        let mut ever = HashSet::new();
        let none = HashSet::new();
        let r = units.refresh(me, &p, &probes, &none, &mut ever);
        assert_eq!(r.units().len(), 3);
        assert!(r.units().iter().all(|u| u.core.state == BusyState::Unknown));
        drop(r);
        assert!(lock(&units.feed).jobs.values().all(|g| g.dirty.is_empty()));
        probes.record("p1", Ok(BusyState::Busy), std::time::Instant::now());
        let dirty: Vec<String> = lock(&units.feed)
            .jobs
            .values()
            .flat_map(|g| g.dirty.iter().cloned())
            .collect();
        assert_eq!(dirty, vec!["j1".to_string()]);
        let r = units.refresh(me, &p, &probes, &none, &mut ever);
        let busy: Vec<&str> = r
            .units()
            .iter()
            .filter(|u| u.core.state == BusyState::Busy)
            .map(|u| &*u.core.name)
            .collect();
        assert_eq!(busy, vec!["j1"]);
        assert!(ever.contains("j1"));
        drop(r);
        // A forgotten answer is a change too (the pod reads "not probed yet" again).
        probes.retain(&|uid| uid != "p1");
        let r = units.refresh(me, &p, &probes, &none, &mut ever);
        let p1 = r.units().iter().find(|u| &*u.core.name == "j1").unwrap();
        assert_eq!(p1.core.state, BusyState::Unknown);
    }

    #[derive(Clone, Debug)]
    enum DueOp {
        Job(u8, bool, u8),
        DeleteJob(u8),
        Pod(PodSpec),
        DeletePod(u8),
        /// Pod `p{k}` probed at this many seconds after the start (maybe after the clock):
        /// 0 idle, 1 busy, 2 failing.
        Probed(u8, u8, u8),
        /// Pod `p{k}`'s answer forgotten.
        Forget(u8),
        /// A relist of Jobs (true) or pods, dropping the objects whose number is in the mask.
        Relist(bool, u8),
        /// The clock moves on by this many seconds.
        Tick(u8),
        /// A reconcile's due-probe scan: HSJ A or B, the period in seconds, Jobs we delete
        /// (mask), and whether the pods found due are then probed (at the clock).
        Due(bool, u8, u8, bool),
    }

    fn due_op() -> impl Strategy<Value = DueOp> {
        prop_oneof![
            // Mostly unfinished Jobs of HSJ A, so that many pods are live.
            2 => (0u8..5, any::<bool>(), prop_oneof![3 => Just(0u8), 1 => 1u8..3])
                .prop_map(|(i, o, f)| DueOp::Job(i, o || i < 3, f)),
            1 => (0u8..5).prop_map(DueOp::DeleteJob),
            4 => pod_spec().prop_map(DueOp::Pod),
            1 => (0u8..6).prop_map(DueOp::DeletePod),
            // Probe times, the clock and periods in a few whole seconds: many exact edges.
            4 => (0u8..6, 0u8..20, 0u8..3).prop_map(|(k, s, a)| DueOp::Probed(k, s, a)),
            2 => (0u8..6).prop_map(DueOp::Forget),
            1 => (any::<bool>(), any::<u8>()).prop_map(|(j, m)| DueOp::Relist(j, m)),
            3 => (0u8..4).prop_map(DueOp::Tick),
            5 => (0u8..8, 0u8..6, prop_oneof![3 => Just(0u8), 1 => 0u8..32], any::<bool>())
                .prop_map(|(u, p, d, probe)| DueOp::Due(u != 0, p, d, probe)),
        ]
    }

    /// The old rule: every live pod of `me` (from the committed caches) that is running and
    /// has a UID, asked of the cache one by one.
    fn due_by_the_old_rule(
        me: HsjRef<'_>,
        jobs: &Store<Job>,
        pods: &Store<Pod>,
        probes: &ProbeCache,
        deleting: &HashSet<String>,
        period: Duration,
        now: Instant,
    ) -> Vec<String> {
        let jobs = jobs.state();
        let mut due: Vec<String> = pods
            .state()
            .iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == Some(me.namespace)
                    && p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(NAME_LABEL))
                        .map(String::as_str)
                        == Some(me.name)
            })
            .filter(|p| {
                observe::owner_job(p).is_some_and(|j| {
                    !deleting.contains(j)
                        && jobs.iter().any(|x| {
                            x.metadata.uid.as_deref() == Some(j)
                                && job_group(x).is_some_and(|(_, o)| o == me.uid)
                                && observe::finished(x).is_none()
                        })
                })
            })
            .filter(|p| probe::is_running(p.as_ref()))
            .filter_map(|p| p.metadata.uid.clone().filter(|u| !u.is_empty()))
            .filter(|uid| probes.due(uid, period, now))
            .collect();
        due.sort();
        due
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        /// Over any sequence of Job and pod events (pods added, gone, running or not, moved;
        /// relists), probe answers recorded at any time (before or after the clock) or
        /// forgotten, the clock moving on, and due-probe scans with any period (0 s too),
        /// HSJ and Jobs being deleted (the pods found due maybe probed then), the index's
        /// due pods are exactly those the old rule finds: each live running pod asked of
        /// the probe cache.
        #[test]
        fn due_pods_are_what_asking_the_cache_about_every_live_pod_finds(
            ops in proptest::collection::vec(due_op(), 1..60)
        ) {
            let (jobs, mut jw) = reflector::store::<Job>();
            let (pods, mut pw) = reflector::store::<Pod>();
            let probes = ProbeCache::default();
            let units = Units::new(&jobs, &pods, &probes);
            let t0 = Instant::now();
            let mut clock = 0u64;
            let mut rv = 0u32;
            for op in ops {
                rv += 1;
                let now = t0 + Duration::from_secs(clock);
                match op {
                    DueOp::Job(i, owner, fin) => {
                        feed(&mut jw, &jobs, &units, watcher::Event::Apply(job(i, owner, fin, rv)));
                    }
                    DueOp::DeleteJob(i) => {
                        delete_job(&mut jw, &jobs, &units, i);
                    }
                    DueOp::Pod(s) => {
                        feed(&mut pw, &pods, &units, watcher::Event::Apply(pod(&s, rv)));
                    }
                    DueOp::DeletePod(k) => {
                        delete_pod(&mut pw, &pods, &units, k);
                    }
                    DueOp::Probed(k, secs, a) => {
                        let at = t0 + Duration::from_secs(secs as u64);
                        let outcome = match a {
                            0 => Ok(BusyState::Idle),
                            1 => Ok(BusyState::Busy),
                            _ => Err(format!("timeout {rv}")),
                        };
                        probes.record_every(&format!("p{k}"), outcome, at, None);
                    }
                    DueOp::Forget(k) => {
                        let uid = format!("p{k}");
                        probes.retain(&|u| u != uid);
                    }
                    DueOp::Relist(true, mask) => {
                        relist(&mut jw, &jobs, &units, mask);
                    }
                    DueOp::Relist(false, mask) => {
                        relist(&mut pw, &pods, &units, mask);
                    }
                    DueOp::Tick(s) => clock += s as u64,
                    DueOp::Due(a, period, del, probe) => {
                        let me = HsjRef { namespace: "ns", name: "a", uid: if a { "hA" } else { "hB" } };
                        let period = Duration::from_secs(period as u64);
                        let deleting: HashSet<String> =
                            (0..5).filter(|i| del & (1 << i) != 0).map(|i| format!("j{i}")).collect();
                        let want = due_by_the_old_rule(me, &jobs, &pods, &probes, &deleting, period, now);
                        let found = units.due_pods(me, &deleting, period, now);
                        let mut got: Vec<String> =
                            found.iter().filter_map(|p| p.metadata.uid.clone()).collect();
                        got.sort();
                        prop_assert_eq!(&got, &want);
                        prop_assert_eq!(found.len(), got.len(), "every due pod has a UID");
                        // Pods of finished or unknown Jobs were parked, not left to be
                        // walked past again by the next scan.
                        prop_assert_eq!(units.walked_for_nothing(me, period, now), 0);
                        if probe {
                            for uid in &got {
                                probes.record_every(uid, Ok(BusyState::Idle), now, Some(period));
                            }
                        }
                    }
                }
            }
        }
    }

    /// One HSJ ("a") with one Job and its one running pod ("p0"), fed to a fresh index.
    struct OnePod {
        /// Kept alive with the index that reads it.
        _jobs: Store<Job>,
        pods: Store<Pod>,
        pw: Writer<Pod>,
        probes: ProbeCache,
        units: Units,
        s: PodSpec,
    }

    fn one_running_pod() -> OnePod {
        let (jobs, mut jw) = reflector::store::<Job>();
        let (pods, mut pw) = reflector::store::<Pod>();
        let probes = ProbeCache::default();
        let units = Units::new(&jobs, &pods, &probes);
        feed(
            &mut jw,
            &jobs,
            &units,
            watcher::Event::Apply(job(0, true, 0, 1)),
        );
        let s = PodSpec {
            k: 0,
            job: 0,
            label_a: true,
            busy: false,
            running: true,
            terminating: false,
            failing: false,
        };
        feed(&mut pw, &pods, &units, watcher::Event::Apply(pod(&s, 1)));
        OnePod {
            _jobs: jobs,
            pods,
            pw,
            probes,
            units,
            s,
        }
    }

    #[test]
    fn probe_times_told_out_of_order_keep_the_newest_change() {
        let OnePod {
            pods,
            mut pw,
            probes,
            units,
            s,
            ..
        } = one_running_pod();
        let me = HSJ_A;
        let (t0, period) = (Instant::now(), Duration::from_secs(10));
        let none = HashSet::new();
        assert_eq!(
            units.due_pods(me, &none, period, t0).len(),
            1,
            "never probed"
        );
        probes.record("p0", Ok(BusyState::Idle), t0);
        assert!(units.due_pods(me, &none, period, t0).is_empty());
        let at = |u: &Units| lock(&u.feed).probed.get("p0").map(|p| (p.at, p.seq));
        let (told, seq) = at(&units).unwrap();
        assert_eq!(told, Some(t0));
        // An older change told late is ignored; a newer one is kept.
        let later = t0 + period;
        lock(&units.feed).told("p0", Some(later), seq + 2);
        lock(&units.feed).told("p0", None, seq + 1);
        assert_eq!(at(&units), Some((Some(later), seq + 2)));
        // An answer read before that change does not roll it back either.
        lock(&units.feed).checked("p0", 1, None, seq + 1);
        assert_eq!(at(&units), Some((Some(later), seq + 2)));
        // The pod gone and back starts unchecked: asked about whatever it was told.
        feed(&mut pw, &pods, &units, watcher::Event::Delete(pod(&s, 2)));
        probes.record("p0", Ok(BusyState::Idle), t0); // told while it is gone: not heard
        feed(&mut pw, &pods, &units, watcher::Event::Apply(pod(&s, 3)));
        let p = lock(&units.feed).probed.get("p0").copied().unwrap();
        assert!(!p.checked && p.key().is_none() && p.born == 2, "{p:?}");
        // An answer read for its earlier appearance does not count as checking this one.
        lock(&units.feed).checked("p0", 1, Some(later), u64::MAX);
        let p = lock(&units.feed).probed.get("p0").copied().unwrap();
        assert!(!p.checked && p.key().is_none() && p.seq < u64::MAX, "{p:?}");
        // A stale notice told after it came back (of a change before the one it missed)
        // does not hide it: it stays first in the order until checked.
        lock(&units.feed).told("p0", Some(later + period * 100), seq);
        assert_eq!(units.due_pods(me, &none, period, t0 + period).len(), 1);
        let p = lock(&units.feed).probed.get("p0").copied().unwrap();
        assert!(
            p.checked && p.at == Some(t0),
            "checked against the cache: {p:?}"
        );
    }

    #[test]
    fn an_answer_forgotten_or_moved_back_makes_the_pod_due_at_once() {
        let OnePod {
            pods: _pods,
            pw: _pw,
            probes,
            units,
            ..
        } = one_running_pod();
        let me = HSJ_A;
        let (t0, period) = (Instant::now(), Duration::from_secs(10));
        let none = HashSet::new();
        let due = |now| units.due_pods(me, &none, period, now).len();
        probes.record("p0", Ok(BusyState::Idle), t0);
        assert_eq!(due(t0), 0, "probed just now");
        assert_eq!(due(t0 + period - Duration::from_nanos(1)), 0);
        assert_eq!(due(t0 + period), 1, "exactly one period after");
        probes.retain(&|_| false);
        assert_eq!(due(t0), 1, "forgotten: never probed");
        probes.record("p0", Ok(BusyState::Idle), t0 + period);
        assert_eq!(due(t0 + period), 0);
        probes.record("p0", Ok(BusyState::Busy), t0 - period);
        assert_eq!(due(t0), 1, "an answer recorded at an older time");
    }
}
