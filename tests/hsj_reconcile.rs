//! The HSJ reconciler against a mocked API server (kube-rs ApiServerVerifier style): each
//! scenario lists the requests one reconcile must make, in order, with their bodies
//! checked, and then that it makes no other.
use kube_standby::controller::Deps;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[path = "support/verifier.rs"]
mod verifier;

use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher};
use kube_standby::api::hsj::HotStandbyJob;
use kube_standby::controller::hsj::{self, Ctx, Stores};
use kube_standby::probe::exec::{ExecCall, ExecError, ExecProber, ExecRunner};
use serde_json::{json, Value};

use verifier::{expect, Expect};

const NOW: i64 = 1_800_000_000;
const JOBS: &str = "/apis/batch/v1/namespaces/ns/jobs";

fn ts(s: i64) -> String {
    Timestamp::from_second(NOW + s).unwrap().to_string()
}

fn hsj(extra: Value) -> HotStandbyJob {
    let mut v = json!({
        "apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob",
        "metadata": {"name": "pool", "namespace": "ns", "uid": "hsj-uid", "generation": 1, "resourceVersion": "10"},
        "spec": {"idleTarget": 1, "minReplicas": 0, "maxReplicas": 10, "scaleDownDelaySeconds": 30,
                 "jobTemplate": {"image": "worker:1", "command": ["run"]}}
    });
    json_patch::merge(&mut v, &extra);
    serde_json::from_value(v).unwrap()
}

/// A Job of the pool: `finished` is "Complete", "Failed" or "".
fn job(name: &str, age: i64, finished: &str) -> Value {
    let conds = match finished {
        "" => json!([]),
        f => json!([{"type": f, "status": "True", "lastTransitionTime": ts(-1)}]),
    };
    json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("{name}-uid"), "resourceVersion": format!("{name}-rv"),
                     "creationTimestamp": ts(-age), "labels": {"hsj.paia.tech/name": "pool"},
                     "ownerReferences": [{"apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob", "name": "pool", "uid": "hsj-uid", "controller": true}]},
        "status": {"conditions": conds}})
}

/// The running pod of Job `job`, busy or idle by annotation.
fn pod(job: &str, busy: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{job}-p"), "namespace": "ns", "uid": format!("{job}-p-uid"),
                     "labels": {"hsj.paia.tech/name": "pool"},
                     "annotations": {"paia.tech/busy": if busy { "true" } else { "false" }},
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": format!("{job}-uid"), "controller": true}]},
        "spec": {"containers": [{"name": "main", "image": "worker:1"}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1",
                   "conditions": [{"type": "Ready", "status": "True"}]}})
}

/// A pod that cannot start: its image does not pull.
fn pulling_pod(job: &str) -> Value {
    let mut p = pod(job, false);
    p["status"] = json!({"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "main", "image": "nope", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope\""}}}]});
    p
}

fn store<K>(items: &[Value]) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
{
    let (s, mut w) = reflector::store::<K>();
    w.apply_watcher_event(&watcher::Event::Init);
    for i in items {
        w.apply_watcher_event(&watcher::Event::InitApply(
            serde_json::from_value(i.clone()).unwrap(),
        ));
    }
    w.apply_watcher_event(&watcher::Event::InitDone);
    s
}

/// Answers every exec with `answer`, counting the calls.
struct FakeExec {
    answer: Result<Option<Status>, ExecError>,
    calls: AtomicUsize,
}

impl ExecRunner for FakeExec {
    fn run(&self, _call: ExecCall) -> BoxFuture<'_, Result<Option<Status>, ExecError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let a = self.answer.clone();
        Box::pin(async move { a })
    }
}

fn fake_exec(answer: Result<Option<Status>, ExecError>) -> Arc<FakeExec> {
    Arc::new(FakeExec {
        answer,
        calls: AtomicUsize::new(0),
    })
}

async fn scenario_with(
    h: HotStandbyJob,
    jobs: &[Value],
    pods: &[Value],
    exec: Arc<FakeExec>,
    expected: Vec<Expect>,
) -> Action {
    let (client, handle) = verifier::mock_client();
    let stores = Stores {
        jobs: store::<Job>(jobs),
        pods: store::<Pod>(pods),
    };
    let mut ctx = Ctx::new(&Deps::standalone(client), stores, ExecProber::new(exec, 4));
    ctx.clock = Arc::new(|| Timestamp::from_second(NOW).unwrap());
    let task = tokio::spawn(hsj::reconcile(Arc::new(h), Arc::new(ctx)));
    verifier::verify(handle, expected, task)
        .await
        .expect("reconcile ok")
}

async fn scenario(h: HotStandbyJob, jobs: &[Value], pods: &[Value], e: Vec<Expect>) -> Action {
    scenario_with(h, jobs, pods, fake_exec(Ok(None)), e).await
}

fn event(reason: &'static str, note_has: &'static str) -> Expect {
    verifier::event("ns", reason, note_has)
}

/// A Job create whose body is checked; the API server names it `name`.
fn create(name: &'static str) -> Expect {
    expect(
        "POST",
        JOBS,
        move |b, q| {
            assert!(q.contains("fieldManager=kube-standby"), "{q}");
            assert_eq!(b["metadata"]["generateName"], "pool-");
            assert_eq!(b["metadata"]["labels"]["hsj.paia.tech/name"], "pool");
            let owner = &b["metadata"]["ownerReferences"][0];
            assert_eq!(
                (&owner["uid"], &owner["controller"]),
                (&json!("hsj-uid"), &json!(true))
            );
            assert_eq!(b["spec"]["completions"], 1);
            assert_eq!(b["spec"]["ttlSecondsAfterFinished"], 300);
            let tpl = &b["spec"]["template"];
            assert_eq!(tpl["metadata"]["labels"]["hsj.paia.tech/name"], "pool");
            assert_eq!(tpl["spec"]["restartPolicy"], "Never");
            assert_eq!(tpl["spec"]["containers"][0]["image"], "worker:1");
        },
        201,
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "ns"}}),
    )
}

/// A Job delete with the UID + resourceVersion preconditions and background propagation.
fn delete(name: &'static str) -> Expect {
    expect(
        "DELETE",
        format!("{JOBS}/{name}"),
        move |b, _| {
            assert_eq!(b["preconditions"]["uid"], format!("{name}-uid"));
            assert_eq!(b["preconditions"]["resourceVersion"], format!("{name}-rv"));
            assert_eq!(b["propagationPolicy"], "Background");
        },
        200,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Success"}),
    )
}

/// The fresh look at a victim's pod before its Job is deleted.
fn get_pod(job: &'static str, busy: bool) -> Expect {
    expect(
        "GET",
        format!("/api/v1/namespaces/ns/pods/{job}-p"),
        |_, _| {},
        200,
        pod(job, busy),
    )
}

fn status(check: impl Fn(&Value) + Send + 'static) -> Expect {
    expect(
        "PATCH",
        "/apis/apps.paia.tech/v1alpha1/namespaces/ns/hotstandbyjobs/pool/status",
        move |b, q| {
            assert!(q.contains("fieldManager=kube-standby"), "{q}");
            check(&b["status"])
        },
        200,
        json!({"apiVersion": "apps.paia.tech/v1alpha1", "kind": "HotStandbyJob",
               "metadata": {"name": "pool", "namespace": "ns"},
               "spec": {"idleTarget": 1, "jobTemplate": {"image": "x"}}}),
    )
}

fn cond<'a>(st: &'a Value, t: &str) -> &'a Value {
    st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == t)
        .unwrap_or_else(|| panic!("no {t} condition in {st}"))
}

fn counts(st: &Value) -> [i64; 4] {
    ["busyCount", "idleCount", "desiredReplicas", "replicas"].map(|k| st[k].as_i64().unwrap_or(-1))
}

#[tokio::test]
async fn an_empty_pool_is_filled_with_owned_labelled_jobs() {
    let h = hsj(json!({"spec": {"idleTarget": 2}}));
    scenario(
        h,
        &[],
        &[],
        vec![
            create("pool-a"),
            create("pool-b"),
            event(
                "ScaledUp",
                "busy=0 idle=0 desired=2 active=0: created Jobs pool-a, pool-b",
            ),
            status(|st| {
                assert_eq!(counts(st), [0, 0, 2, 2]);
                assert_eq!(st["observedGeneration"], 1);
                assert_eq!(cond(st, "Ready")["reason"], "UnitsStarting");
                assert_eq!(cond(st, "InvalidSpec")["status"], "False");
            }),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_unit_turning_busy_gets_an_idle_one_at_once() {
    let h = hsj(json!({}));
    scenario(
        h,
        &[job("pool-a", 60, "")],
        &[pod("pool-a", true)],
        vec![
            create("pool-b"),
            event(
                "ScaledUp",
                "busy=1 idle=0 desired=2 active=1: created Jobs pool-b",
            ),
            status(|st| assert_eq!(counts(st), [1, 0, 2, 2])),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_finished_unit_no_longer_counts_and_is_left_to_its_ttl() {
    let h = hsj(json!({"spec": {"idleTarget": 2}}));
    scenario(
        h,
        &[job("pool-a", 60, "Complete"), job("pool-b", 40, "")],
        &[pod("pool-b", false)],
        vec![
            // No delete of pool-a: finished Jobs go by their TTL.
            create("pool-c"),
            event(
                "ScaledUp",
                "busy=0 idle=1 desired=2 active=1: created Jobs pool-c",
            ),
            status(|st| {
                assert_eq!(counts(st), [0, 1, 2, 2]);
                assert_eq!(
                    (&st["completedCount"], &st["failedCount"]),
                    (&json!(1), &json!(0))
                );
            }),
        ],
    )
    .await;
}

#[tokio::test]
async fn surplus_waits_for_the_delay_and_says_so() {
    let h = hsj(json!({}));
    scenario(
        h,
        &[
            job("pool-a", 60, ""),
            job("pool-b", 50, ""),
            job("pool-c", 40, ""),
        ],
        &[
            pod("pool-a", false),
            pod("pool-b", false),
            pod("pool-c", false),
        ],
        vec![
            event(
                "ScaleDownPending",
                "busy=0 idle=3 desired=1 active=3: deleting idle Jobs at",
            ),
            status(|st| {
                assert_eq!(st["scaleDownPendingSince"], ts(0));
                assert_eq!(counts(st), [0, 3, 1, 3]);
            }),
        ],
    )
    .await;
}

#[tokio::test]
async fn after_the_delay_only_idle_units_go_youngest_first_and_the_mark_is_cleared() {
    // a busy (oldest), b and c idle; idleTarget 1 -> desired 2 of 3: c (youngest) goes.
    let h = hsj(json!({"status": {"scaleDownPendingSince": ts(-31)}}));
    scenario(
        h,
        &[
            job("pool-a", 60, ""),
            job("pool-b", 50, ""),
            job("pool-c", 40, ""),
        ],
        &[
            pod("pool-a", true),
            pod("pool-b", false),
            pod("pool-c", false),
        ],
        vec![
            get_pod("pool-c", false),
            delete("pool-c"),
            event(
                "ScaledDown",
                "busy=1 idle=2 desired=2 active=3: deleted idle Jobs pool-c",
            ),
            status(|st| {
                assert_eq!(counts(st), [1, 2, 2, 2]);
                assert!(st.get("scaleDownPendingSince").is_none(), "{st}");
            }),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_victim_found_busy_on_a_fresh_look_is_kept() {
    let h = hsj(json!({"status": {"scaleDownPendingSince": ts(-31)}}));
    scenario(
        h,
        &[job("pool-a", 60, ""), job("pool-b", 50, "")],
        &[pod("pool-a", false), pod("pool-b", false)],
        vec![
            // The cache says idle; the API says pool-b's pod just turned busy: no delete.
            get_pod("pool-b", true),
            status(|st| assert_eq!(st["replicas"], 2)),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_failing_image_is_replaced_once_then_backs_off_with_a_wake_up() {
    // First failure: the broken unit is replaced by exactly one Job.
    let h = hsj(json!({}));
    scenario(
        h,
        &[job("pool-a", 30, "")],
        &[pulling_pod("pool-a")],
        vec![
            delete("pool-a"),
            create("pool-b"),
            event("UnitsReplaced", "ImagePullBackOff"),
            event("ScaledUp", "created Jobs pool-b"),
            status(|st| {
                assert_eq!(st["consecutiveFailures"], 1);
                assert_eq!(st["lastFailureTime"], ts(0));
                let c = cond(st, "UnitsFailing");
                assert_eq!(
                    (&c["status"], &c["reason"]),
                    (&json!("True"), &json!("UnitsFailing"))
                );
                assert!(
                    c["message"].as_str().unwrap().contains("ImagePullBackOff"),
                    "{c}"
                );
            }),
        ],
    )
    .await;

    // Its replacement fails too, 4 s later: nothing is written until the 10 s backoff
    // ends, and the reconciler asks to be woken then.
    let h = hsj(json!({"status": {"consecutiveFailures": 1, "lastFailureTime": ts(-4)}}));
    let action = scenario(
        h,
        &[job("pool-b", 4, "")],
        &[pulling_pod("pool-b")],
        vec![status(|st| {
            assert_eq!(st["consecutiveFailures"], 1);
            assert!(cond(st, "UnitsFailing")["message"]
                .as_str()
                .unwrap()
                .contains("next Job not before"));
        })],
    )
    .await;
    assert_eq!(action, Action::requeue(Duration::from_millis(6050)));

    // After the backoff: replaced again, the next backoff doubles.
    let h = hsj(json!({"status": {"consecutiveFailures": 1, "lastFailureTime": ts(-10)}}));
    scenario(
        h,
        &[job("pool-b", 10, "")],
        &[pulling_pod("pool-b")],
        vec![
            delete("pool-b"),
            create("pool-c"),
            event("UnitsReplaced", "2 failure(s) in a row"),
            event("ScaledUp", "created Jobs pool-c"),
            status(|st| assert_eq!(st["consecutiveFailures"], 2)),
        ],
    )
    .await;
}

fn exec_hsj() -> HotStandbyJob {
    hsj(json!({"spec": {"busyProbe": {"mode": "exec", "exec": {"command": ["cat", "/tmp/busy"]}}}}))
}

#[tokio::test]
async fn exec_forbidden_is_a_condition_and_one_warning_and_nothing_is_deleted() {
    let forbidden = Err(ExecError::Forbidden(
        "pods \"pool-a-p\" is forbidden: cannot create resource \"pods/exec\"".into(),
    ));
    let exec = fake_exec(forbidden.clone());
    let h = hsj(
        json!({"spec": {"busyProbe": {"mode": "exec", "exec": {"command": ["cat", "/tmp/busy"]}}},
                       "status": {"scaleDownPendingSince": ts(-31)}}),
    );
    scenario_with(
        h,
        &[job("pool-a", 60, ""), job("pool-b", 50, "")],
        &[pod("pool-a", false), pod("pool-b", false)],
        exec.clone(),
        vec![
            event(
                "ProbeForbidden",
                "grant pods/exec (Helm: hsj.execProbe=true)",
            ),
            status(|st| {
                let c = cond(st, "ProbeDegraded");
                assert_eq!(
                    (&c["status"], &c["reason"]),
                    (&json!("True"), &json!("ProbeForbidden"))
                );
                // Unknown units are not surplus to delete.
                assert_eq!(st["unknownCount"], 2, "{st}");
            }),
        ],
    )
    .await;
    assert_eq!(
        exec.calls.load(Ordering::SeqCst),
        2,
        "each running pod probed once"
    );

    // Already reported: no second Warning.
    let mut h = exec_hsj();
    h.status = Some(
        serde_json::from_value(
            json!({"conditions": [{"type": "ProbeDegraded", "status": "True",
            "reason": "ProbeForbidden", "message": "x", "lastTransitionTime": ts(-60)}]}),
        )
        .unwrap(),
    );
    scenario_with(
        h,
        &[job("pool-a", 60, "")],
        &[pod("pool-a", false)],
        fake_exec(forbidden),
        vec![status(|st| {
            assert_eq!(cond(st, "ProbeDegraded")["reason"], "ProbeForbidden")
        })],
    )
    .await;
}

#[tokio::test]
async fn exec_answers_decide_busy_and_idle() {
    // Exit 0 with successIsBusy (the default): busy, so a new idle Job is created.
    let ok = Ok(Some(
        serde_json::from_value(json!({"status": "Success"})).unwrap(),
    ));
    scenario_with(
        exec_hsj(),
        &[job("pool-a", 60, "")],
        &[pod("pool-a", false)],
        fake_exec(ok),
        vec![
            create("pool-b"),
            event("ScaledUp", "busy=1 idle=0 desired=2"),
            status(|st| assert_eq!(counts(st), [1, 0, 2, 2])),
        ],
    )
    .await;
}

#[tokio::test]
async fn bad_input_is_one_condition_and_one_warning_and_nothing_is_created() {
    for (extra, says) in [
        (
            json!({"spec": {"minReplicas": 5, "maxReplicas": 2}}),
            "minReplicas (5) is greater than maxReplicas (2)",
        ),
        (
            json!({"spec": {"jobTemplate": {"image": null}}}),
            "the shorthand needs `image`",
        ),
        (
            json!({"spec": {"busyProbe": {"mode": "exec"}}}),
            "busyProbe.exec.command is missing",
        ),
        (
            json!({"spec": {"jobTemplate": {"image": null, "template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}}}}),
            "restartPolicy",
        ),
    ] {
        let says: &'static str = Box::leak(says.to_string().into_boxed_str());
        scenario(
            hsj(extra),
            &[],
            &[],
            vec![
                status(move |st| {
                    let c = cond(st, "InvalidSpec");
                    assert_eq!(c["status"], "True");
                    assert!(c["message"].as_str().unwrap().contains(says), "{c}");
                }),
                event("InvalidSpec", says),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn a_job_the_api_server_rejects_is_remembered_for_its_generation() {
    let h = hsj(json!({}));
    scenario(
        h,
        &[],
        &[],
        vec![
            expect(
                "POST",
                JOBS,
                |_, _| {},
                422,
                json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 422,
                       "reason": "Invalid", "message": "Job.batch \"\" is invalid: spec.template.spec.containers[0].image: Required value"}),
            ),
            status(|st| {
                assert_eq!(st["rejectedGeneration"], 1);
                assert_eq!(cond(st, "InvalidSpec")["reason"], "TemplateRejected");
            }),
            event("TemplateRejected", "containers[0].image: Required value"),
        ],
    )
    .await;
    // The same generation is not tried again on the next event.
    let h = hsj(json!({"status": {"rejectedGeneration": 1}}));
    scenario(h, &[], &[], vec![]).await;
}

/// Filling a pool records the HSJ's own reaction, not the HSD's.
#[tokio::test]
async fn job_creates_are_timed_in_the_hsj_reaction_histogram() {
    let h = hsj(json!({"spec": {"idleTarget": 1}}));
    let (client, handle) = verifier::mock_client();
    let metrics = Arc::new(kube_standby::metrics::Metrics::new());
    let deps = Deps {
        metrics: metrics.clone(),
        ..Deps::standalone(client)
    };
    let stores = Stores {
        jobs: store::<Job>(&[]),
        pods: store::<Pod>(&[]),
    };
    let mut ctx = Ctx::new(&deps, stores, ExecProber::new(fake_exec(Ok(None)), 4));
    ctx.clock = Arc::new(|| Timestamp::from_second(NOW).unwrap());
    let task = tokio::spawn(hsj::reconcile(Arc::new(h), Arc::new(ctx)));
    let expected = vec![
        create("pool-a"),
        event("ScaledUp", "created Jobs pool-a"),
        status(|_| {}),
    ];
    verifier::verify(handle, expected, task)
        .await
        .expect("reconcile ok");
    let text = metrics.render();
    let count = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    assert_eq!(
        count("kube_standby_hsj_reaction_seconds_count"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        count("kube_standby_hsd_reaction_seconds_count"),
        Some(0.0),
        "{text}"
    );
}
