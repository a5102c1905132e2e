//! `KUBE_STANDBY_RUN_WRAPPER` (a profiler around `kube-standby run` in the benches) must not
//! leave the operator behind: the wrapper's child used to outlive the bench, retrying its
//! reconciles against a fake API server that was gone, at 60-70 % of a core each.
//!
//! Its own test binary: the variable is process-wide.
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use std::time::{Duration, Instant};

/// Is process `pid` still there (and not a zombie)?
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.to_string()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// The children of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[tokio::test]
async fn the_operator_under_a_wrapper_ends_with_the_run() {
    // A wrapper that runs the operator as its child (as heaptrack and valgrind do), not exec.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("wrap.sh");
    std::fs::write(&script, "#!/bin/sh\n\"$@\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::env::set_var("KUBE_STANDBY_RUN_WRAPPER", &script);
    let api = fake_apiserver::start().await;
    let run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
    assert!(run.wait_ready().await, "never ready:\n{}", run.stderr());
    let wrapper = run.child.id();
    let operator = children(wrapper);
    assert_eq!(
        operator.len(),
        1,
        "the wrapper runs the operator as its one child"
    );
    let operator = operator[0];
    assert!(alive(operator));
    drop(run);
    let t = Instant::now();
    while alive(operator) && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !alive(operator),
        "the operator (pid {operator}) outlived its run"
    );
}
