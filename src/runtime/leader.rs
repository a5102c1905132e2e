//! Leader election with a `coordination.k8s.io/v1` Lease (served since Kubernetes 1.14).
//!
//! Written here rather than taken from a crate: the maintained `kube-leader-election` pins
//! kube 4 (we are on kube 5), and the rule that keeps StatefulSingleton safe across a leader
//! change is small enough to own and property-test:
//!
//! - a candidate takes the Lease only when it is absent, released (no holder), or when the
//!   record it last saw has not changed for a whole `lease_duration` measured on the
//!   candidate's own monotonic clock from the moment it *saw* that record (client-go's rule;
//!   no comparison of wall clocks across machines);
//! - the leader believes it leads only until `renew_deadline` after it *sent* its last
//!   successful renewal, and `renew_deadline < lease_duration`; so it stops (gate closed,
//!   process exits) strictly before any other replica may take over, even if the API server
//!   accepted a renewal whose answer never arrived;
//! - every write carries the resourceVersion it was based on, so two candidates racing for
//!   an expired Lease cannot both win.
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;

use crate::{Error, Result};

/// Timing and identity of one elector.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        LeaseConfig {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.renew_deadline >= self.lease_duration {
            return Err(Error::Config(
                "leader election: the renew deadline must be shorter than the lease duration"
                    .into(),
            ));
        }
        if self.retry_period >= self.renew_deadline || self.retry_period.is_zero() {
            return Err(Error::Config(
                "leader election: the retry period must be positive and shorter than the renew deadline".into(),
            ));
        }
        if self.identity.is_empty() {
            return Err(Error::Config("leader election: empty identity".into()));
        }
        Ok(())
    }
}

/// What a candidate saw of the Lease: who holds it and the record's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub holder: Option<String>,
    /// Changes whenever the holder renews (renewTime) or the Lease is rewritten.
    pub version: String,
}

/// The next write to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease exists: create it holding it.
    Create,
    /// Take a released or expired Lease (a new transition).
    TakeOver,
    /// We hold it: renew.
    Renew,
    /// Someone else holds a live Lease.
    Follow,
}

/// The pure state of one elector. Times are the caller's monotonic clock.
#[derive(Clone, Debug)]
pub struct Elector {
    cfg: LeaseConfig,
    /// The record last seen and when it was first seen in that form.
    seen: Option<(Record, Instant)>,
    /// When the last successful acquisition or renewal request was *sent*.
    renewed_sent: Option<Instant>,
}

impl Elector {
    pub fn new(cfg: LeaseConfig) -> Self {
        Elector {
            cfg,
            seen: None,
            renewed_sent: None,
        }
    }

    /// Decide the next step from the Lease as read at `now` (None: it does not exist).
    pub fn observe(&mut self, lease: Option<Record>, now: Instant) -> Step {
        let Some(rec) = lease else {
            self.seen = None;
            return Step::Create;
        };
        let first_seen = match &self.seen {
            Some((old, at)) if *old == rec => *at,
            _ => now,
        };
        self.seen = Some((rec.clone(), first_seen));
        match rec.holder.as_deref() {
            Some(h) if h == self.cfg.identity => Step::Renew,
            None | Some("") => Step::TakeOver,
            Some(_) if now.saturating_duration_since(first_seen) >= self.cfg.lease_duration => {
                Step::TakeOver
            }
            Some(_) => Step::Follow,
        }
    }

    /// A write (create, take-over or renewal) sent at `sent` succeeded.
    pub fn succeeded(&mut self, sent: Instant) {
        self.renewed_sent = Some(self.renewed_sent.map_or(sent, |r| r.max(sent)));
    }

    /// Someone else holds the Lease (a write failed on a conflict, or we saw another holder).
    pub fn lost(&mut self) {
        self.renewed_sent = None;
    }

    /// Do we lead at `now`? Only until the renew deadline after the last successful write.
    pub fn leading(&self, now: Instant) -> bool {
        self.renewed_sent
            .is_some_and(|s| now.saturating_duration_since(s) < self.cfg.renew_deadline)
    }

    /// How long a write started at `now` may take before leadership would lapse.
    pub fn time_left(&self, now: Instant) -> Option<Duration> {
        self.renewed_sent
            .map(|s| (s + self.cfg.renew_deadline).saturating_duration_since(now))
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }
}

fn record_of(lease: &Lease) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity,
        version: lease.metadata.resource_version.clone().unwrap_or_default(),
    }
}

fn lease_body(cfg: &LeaseConfig, base: Option<&Lease>, step: Step) -> Lease {
    let now = MicroTime(Timestamp::now());
    let old = base.and_then(|l| l.spec.clone()).unwrap_or_default();
    let transitions = old.lease_transitions.unwrap_or(0);
    let spec = LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.lease_duration.as_secs().max(1) as i32),
        acquire_time: match step {
            Step::Renew => old.acquire_time.or(Some(now.clone())),
            _ => Some(now.clone()),
        },
        renew_time: Some(now),
        lease_transitions: Some(match step {
            Step::TakeOver => transitions + 1,
            _ => transitions,
        }),
        ..Default::default()
    };
    Lease {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            namespace: Some(cfg.namespace.clone()),
            resource_version: base.and_then(|l| l.metadata.resource_version.clone()),
            ..base.map(|l| l.metadata.clone()).unwrap_or_default()
        },
        spec: Some(spec),
    }
}

/// One round: read, decide, write. Returns whether we lead afterwards.
async fn round(api: &Api<Lease>, el: &mut Elector) -> Result<bool> {
    let now = Instant::now();
    let current = api.get_opt(&el.config().name).await?;
    let step = el.observe(current.as_ref().map(record_of), now);
    if step == Step::Follow {
        el.lost();
        return Ok(false);
    }
    let body = lease_body(el.config(), current.as_ref(), step);
    let sent = Instant::now();
    let res = match step {
        Step::Create => api.create(&PostParams::default(), &body).await,
        _ => {
            api.replace(&el.config().name, &PostParams::default(), &body)
                .await
        }
    };
    match res {
        Ok(_) => el.succeeded(sent),
        Err(kube::Error::Api(s)) if s.code == 409 => el.lost(),
        Err(e) => return Err(e.into()),
    }
    Ok(el.leading(Instant::now()))
}

/// Run the elector: `leading` follows what the rules above allow. Returns an error when a
/// lease we held is lost (the caller ends the process so no state of the old term survives).
pub async fn run(client: Client, cfg: LeaseConfig, leading: watch::Sender<bool>) -> Result<()> {
    cfg.validate()?;
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut el = Elector::new(cfg.clone());
    let mut led = false;
    loop {
        let budget = el.time_left(Instant::now()).unwrap_or(cfg.retry_period);
        let outcome =
            tokio::time::timeout(budget.max(Duration::from_millis(1)), round(&api, &mut el)).await;
        if let Ok(Err(e)) = &outcome {
            tracing::warn!(error = %e, "leader election: lease round failed");
        }
        let now_leading = el.leading(Instant::now());
        leading.send_if_modified(|l| std::mem::replace(l, now_leading) != now_leading);
        if now_leading && !led {
            tracing::info!(identity = %cfg.identity, lease = %cfg.name, "leader election: leading");
        }
        if led && !now_leading {
            return Err(Error::Config(format!(
                "leader election: lease {}/{} lost; exiting so a fresh process can compete again",
                cfg.namespace, cfg.name
            )));
        }
        led = now_leading;
        let pause = match el.time_left(Instant::now()) {
            Some(left) if now_leading => cfg.retry_period.min(left),
            _ => cfg.retry_period,
        };
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(id: &str) -> LeaseConfig {
        LeaseConfig::new("ns".into(), "lease".into(), id.into())
    }

    fn rec(holder: Option<&str>, v: &str) -> Option<Record> {
        Some(Record {
            holder: holder.map(str::to_string),
            version: v.into(),
        })
    }

    #[test]
    fn absent_released_and_expired_leases_are_taken_live_ones_followed() {
        let t0 = Instant::now();
        let mut e = Elector::new(cfg("me"));
        assert_eq!(e.observe(None, t0), Step::Create);
        assert_eq!(e.observe(rec(None, "1"), t0), Step::TakeOver);
        assert_eq!(e.observe(rec(Some("other"), "2"), t0), Step::Follow);
        // Unchanged for less than the lease duration: still theirs.
        let almost = t0 + Duration::from_secs(14);
        assert_eq!(e.observe(rec(Some("other"), "2"), almost), Step::Follow);
        // A renewal (new version) restarts the wait from when we saw it.
        assert_eq!(e.observe(rec(Some("other"), "3"), almost), Step::Follow);
        let t15 = t0 + Duration::from_secs(15);
        assert_eq!(e.observe(rec(Some("other"), "3"), t15), Step::Follow);
        let expired = almost + Duration::from_secs(15);
        assert_eq!(e.observe(rec(Some("other"), "3"), expired), Step::TakeOver);
        assert_eq!(e.observe(rec(Some("me"), "4"), expired), Step::Renew);
    }

    #[test]
    fn leadership_lapses_at_the_renew_deadline_after_the_last_sent_renewal() {
        let t0 = Instant::now();
        let mut e = Elector::new(cfg("me"));
        assert!(!e.leading(t0));
        e.succeeded(t0);
        assert!(e.leading(t0 + Duration::from_millis(9_999)));
        assert!(!e.leading(t0 + Duration::from_secs(10)));
        e.succeeded(t0 + Duration::from_secs(2));
        assert!(e.leading(t0 + Duration::from_secs(11)));
        e.lost();
        assert!(!e.leading(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn bad_timings_are_refused() {
        let mut c = cfg("me");
        assert!(c.validate().is_ok());
        c.renew_deadline = c.lease_duration;
        assert!(c.validate().is_err());
        let mut c = cfg("me");
        c.retry_period = c.renew_deadline;
        assert!(c.validate().is_err());
        assert!(cfg("").validate().is_err());
    }

    /// A simulated API server holding one Lease, and two electors whose reads and writes
    /// interleave in random order with random delays and lost answers. At no instant do both
    /// believe they lead.
    #[derive(Clone, Debug)]
    enum Ev {
        Read { who: usize },
        Write { who: usize, answer_lost: bool },
        Wait { ms: u64 },
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            (0usize..2).prop_map(|who| Ev::Read { who }),
            (0usize..2, any::<bool>())
                .prop_map(|(who, answer_lost)| Ev::Write { who, answer_lost }),
            (1u64..6_000).prop_map(|ms| Ev::Wait { ms }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn never_two_leaders(events in prop::collection::vec(ev(), 1..120)) {
            let start = Instant::now();
            let mut now = start;
            let mut lease: Option<(String, u64)> = None; // (holder, version)
            let mut els = [Elector::new(cfg("a")), Elector::new(cfg("b"))];
            // What each elector read and decided, waiting to be written.
            let mut pending: [Option<(Step, Option<u64>)>; 2] = [None, None];
            let ids = ["a", "b"];
            let mut max_step = Duration::ZERO;
            for e in events {
                match e {
                    Ev::Wait { ms } => {
                        // Check the instants inside the wait too: leadership only lapses with time,
                        // so checking both ends of every interval is enough.
                        now += Duration::from_millis(ms);
                        max_step = max_step.max(Duration::from_millis(ms));
                    }
                    Ev::Read { who } => {
                        let seen = lease.as_ref().map(|(h, v)| Record { holder: Some(h.clone()), version: v.to_string() });
                        let step = els[who].observe(seen, now);
                        if step == Step::Follow {
                            els[who].lost();
                            pending[who] = None;
                        } else {
                            pending[who] = Some((step, lease.as_ref().map(|(_, v)| *v)));
                        }
                    }
                    Ev::Write { who, answer_lost } => {
                        let Some((_, based_on)) = pending[who].take() else { continue };
                        let current = lease.as_ref().map(|(_, v)| *v);
                        if current == based_on {
                            lease = Some((ids[who].to_string(), current.unwrap_or(0) + 1));
                            if !answer_lost {
                                els[who].succeeded(now);
                            }
                        } else {
                            els[who].lost();
                        }
                    }
                }
                let leaders = els.iter().filter(|e| e.leading(now)).count();
                prop_assert!(leaders <= 1, "two leaders at {:?}", now - start);
            }
        }
    }
}
