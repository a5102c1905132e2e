//! One start path: every kind's `start` hands the runtime named tasks, background loops
//! included, and the supervisor names whichever of them dies on `/readyz` and in the error
//! that ends the process. A loop's death is simulated by ending its real future early.
#[path = "support/verifier.rs"]
mod verifier;

use std::time::Duration;

use futures::FutureExt;
use kube_standby::controller::{actor, hsd, hsj, Deps, Started};
use kube_standby::runtime::{supervise, Task};
use kube_standby::state::Readiness;

/// The kind's real tasks, with `victim` ended once `kill` fires; returns the reason the
/// supervisor gave and what `/readyz` says.
async fn kill(started: Started, victim: &str) -> (String, Vec<String>) {
    let names: Vec<String> = started.tasks.iter().map(|(n, _)| n.clone()).collect();
    assert!(
        names.iter().any(|n| n == victim),
        "{victim} not among {names:?}"
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut rx = Some(rx);
    let tasks = started
        .tasks
        .into_iter()
        .map(|(name, fut)| {
            if name == victim {
                let rx = rx.take().expect("one victim");
                let fut = async move {
                    tokio::select! {
                        _ = fut => {},
                        _ = rx => {},
                    }
                };
                Task::forever(name, fut.boxed())
            } else {
                Task::forever(name, fut)
            }
        })
        .collect();
    let readiness = Readiness::default();
    let sup = supervise(tasks, futures::future::pending(), &readiness);
    tokio::pin!(sup);
    // Every task runs (its watches wait on the mocked API server, which never answers).
    assert!(tokio::time::timeout(Duration::from_millis(200), &mut sup)
        .await
        .is_err());
    let _ = tx.send(());
    let err = tokio::time::timeout(Duration::from_secs(5), sup)
        .await
        .expect("the supervisor ended")
        .expect_err("a dead loop is an error");
    (err.to_string(), readiness.not_ready_reasons())
}

fn deps() -> Deps {
    let (client, _handle) = verifier::mock_client();
    // The handle is dropped: requests fail, the watches retry with backoff, nothing ends.
    Deps::standalone(client)
}

#[tokio::test]
async fn a_dead_background_loop_of_each_kind_is_named() {
    for (started, victim) in [
        (hsd::start(&deps(), None), "hsd-all-probes"),
        (
            hsj::start(&deps(), Some("team-a".into())),
            "hsj-team-a-probes",
        ),
        (hsj::start(&deps(), None), "hsj-all-jobs"),
    ] {
        let (err, reasons) = kill(started, victim).await;
        let want = format!("task {victim} stopped");
        assert!(err.contains(&want), "{err}");
        assert!(reasons.contains(&want), "{reasons:?}");
    }
    let d = deps();
    let source = actor::runtime_source(&Default::default()).expect("no runtime file");
    let started = actor::start_all(&d, &Default::default(), source, &[None])
        .await
        .expect("actor start");
    let (err, reasons) = kill(started, "actor-all-probes").await;
    assert!(err.contains("task actor-all-probes stopped"), "{err}");
    assert!(reasons.contains(&"task actor-all-probes stopped".to_string()));
}

#[tokio::test]
async fn each_kind_names_its_controller_and_loops_per_scope() {
    let names = |s: Started| s.tasks.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(
        names(hsd::start(&deps(), Some("a".into()))),
        ["hsd-a", "hsd-a-probes"]
    );
    assert_eq!(
        names(hsj::start(&deps(), None)),
        ["hsj-all", "hsj-all-probes", "hsj-all-jobs"]
    );
}
