//! The real wrapper script, run by /bin/sh: it holds the app back until the signal file
//! appears and the agent wakes it through the FIFO, then the app receives exactly its
//! original argv and the release's epoch.
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube_standby::agent;
use kube_standby::api::singleton::WRAPPER_SCRIPT;

/// What the agent does on a release: the epoch file, then the signal file (both atomic),
/// then it wakes the wrapper through the FIFO (kept waking while the guard lives).
fn release(signal: &std::path::Path, epoch: Option<u64>) -> agent::Waker {
    if let Some(e) = epoch {
        agent::write_atomic(&agent::epoch_file_for(signal), format!("{e}\n").as_bytes()).unwrap();
    }
    agent::write_signal(signal).unwrap();
    agent::Waker::start(agent::wake_fifo_for(signal))
}

fn script(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("entrypoint-wrapper.sh");
    std::fs::write(&p, WRAPPER_SCRIPT).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn nasty() -> Vec<String> {
    [
        "a b",
        "",
        "  leading and trailing  ",
        "'single'",
        "\"double\"",
        "comma,separated,values",
        "$HOME",
        "${PATH}",
        "$(whoami)",
        "`id`",
        "line1\nline2",
        "back\\slash\\n",
        "*",
        "?",
        "--",
        "-e",
        "-n",
        "tab\there",
        "ünïcödé ✓",
        "{\"json\": [1, 2]}",
        ";",
        "&&",
        "|",
        "> /tmp/x",
        "%s%d",
        "\\0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn waits_for_the_signal_then_execs_with_the_exact_argv() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = script(dir.path());
    let signal = dir.path().join("start-signal");
    // The "app": printf prints each argument followed by NUL; the format is not re-parsed.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg(&wrapper)
        .arg("--")
        .arg("printf")
        .arg("%s\\0")
        .args(nasty());
    let mut child = cmd
        .env("STATEFULSINGLETON_SIGNAL_FILE", &signal)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the app started before the release"
    );

    // Atomic signal write and wake-up, as the agent does it.
    let _waker = release(&signal, None);

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the app never started after the signal"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let mut out = vec![];
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let mut got: Vec<String> = out
        .split(|b| *b == 0)
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    assert_eq!(got.pop().as_deref(), Some(""), "trailing NUL");
    assert_eq!(got, nasty());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("waiting for release") && err.contains("released, starting printf"),
        "{err}"
    );
}

#[test]
fn the_app_is_exec_ed_not_a_child_of_the_shell() {
    // After exec the process keeps the wrapper's PID: the app is PID-1-compatible and gets signals directly.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = script(dir.path());
    let signal = dir.path().join("start-signal");
    std::fs::write(&signal, b"").unwrap();
    let out = Command::new("/bin/sh")
        .arg(&wrapper)
        .args(["--", "/bin/sh", "-c", "echo $$"])
        .env("STATEFULSINGLETON_SIGNAL_FILE", &signal)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    // `sh wrapper` is one process; `exec sh -c 'echo $$'` reuses it, so $$ is that PID.
    let printed: u32 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(printed > 1);
    let child = Command::new("/bin/sh")
        .arg(&wrapper)
        .args(["--", "/bin/sh", "-c", "echo $$"])
        .env("STATEFULSINGLETON_SIGNAL_FILE", &signal)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        pid.to_string()
    );
}

#[test]
fn no_command_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = script(dir.path());
    let out = Command::new("/bin/sh")
        .arg(&wrapper)
        .arg("--")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no command"));
}

fn send(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> (std::process::ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("still running {limit:?} after the signal");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The wrapper is PID 1 of the app container while it waits: SIGTERM (SIGINT) before the
/// release ends it at once through its trap, exit 143 (130) — an exit, not a death by the
/// signal — and the app never starts.
#[test]
fn a_signal_before_the_release_ends_the_wrapper_at_once_through_its_trap() {
    use std::os::unix::process::ExitStatusExt;
    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        let dir = tempfile::tempdir().unwrap();
        let wrapper = script(dir.path());
        let marker = dir.path().join("app-ran");
        let mut child = Command::new("/bin/sh")
            .arg(&wrapper)
            .args(["--", "/bin/sh", "-c", "touch \"$0\"; sleep 30"])
            .arg(&marker)
            .env(
                "STATEFULSINGLETON_SIGNAL_FILE",
                dir.path().join("start-signal"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(child.try_wait().unwrap().is_none());
        send(child.id(), signal);
        let (status, took) = wait_exit(&mut child, Duration::from_secs(5));
        assert_eq!(
            status.signal(),
            None,
            "{signal}: killed by the signal, the trap did not run"
        );
        assert_eq!(status.code(), Some(code), "{signal}");
        assert!(took < Duration::from_millis(500), "{signal} took {took:?}");
        assert!(!marker.exists(), "the app started after {signal}");
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            err.contains(&format!("SIG{signal} before release")),
            "{err}"
        );
    }
}

/// After the release the wrapper has exec'ed the app: SIGTERM reaches the app itself
/// (its own trap runs), not a shell that would swallow it.
#[test]
fn after_the_release_sigterm_reaches_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = script(dir.path());
    let signal = dir.path().join("start-signal");
    let mut child = Command::new("/bin/sh")
        .arg(&wrapper)
        .args([
            "--",
            "/bin/sh",
            "-c",
            "trap 'echo STOPPED; exit 0' TERM; echo STARTED; while :; do sleep 0.05; done",
        ])
        .env("STATEFULSINGLETON_SIGNAL_FILE", &signal)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let _waker = release(&signal, None);
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 8];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"STARTED\n");
    send(child.id(), "TERM");
    let (status, took) = wait_exit(&mut child, Duration::from_secs(5));
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "STOPPED\n", "the app's own trap ran");
    assert_eq!(
        status.code(),
        Some(0),
        "the app's exit code, not the wrapper's 143"
    );
    assert!(took < Duration::from_millis(500), "{took:?}");
}

/// Start the wrapper with `app` (run by /bin/sh -c) and the signal file in `dir`.
fn spawn_wrapper(
    dir: &std::path::Path,
    app: &str,
    path: Option<&str>,
) -> (std::process::Child, std::path::PathBuf) {
    let wrapper = dir.join("entrypoint-wrapper.sh");
    if !wrapper.exists() {
        script(dir);
    }
    let signal = dir.join("start-signal");
    let mut cmd = Command::new("/bin/sh");
    cmd.arg(&wrapper)
        .args(["--", "/bin/sh", "-c", app])
        .env("STATEFULSINGLETON_SIGNAL_FILE", &signal)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    (cmd.spawn().unwrap(), signal)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn output(child: std::process::Child) -> (std::process::ExitStatus, String, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_app_sees_the_epoch_the_agent_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let (child, signal) = spawn_wrapper(
        dir.path(),
        "echo \"epoch=${STATEFULSINGLETON_EPOCH-unset}\"",
        None,
    );
    std::thread::sleep(Duration::from_millis(150));
    let _waker = release(&signal, Some(42));
    let (status, out, err) = output(child);
    assert!(status.success(), "{err}");
    assert_eq!(out, "epoch=42\n");
    assert!(err.contains("(epoch 42)"), "{err}");
    // No epoch file (a pod released by an operator that gave none): nothing exported.
    let dir = tempfile::tempdir().unwrap();
    let (child, signal) = spawn_wrapper(
        dir.path(),
        "echo \"epoch=${STATEFULSINGLETON_EPOCH-unset}\"",
        None,
    );
    let _waker = release(&signal, None);
    assert_eq!(output(child).1, "epoch=unset\n");
    // A file that is not a number is not exported either.
    let dir = tempfile::tempdir().unwrap();
    let (child, signal) = spawn_wrapper(
        dir.path(),
        "echo \"epoch=${STATEFULSINGLETON_EPOCH-unset}\"",
        None,
    );
    std::fs::write(agent::epoch_file_for(&signal), "1; rm -rf /\n").unwrap();
    let _waker = release(&signal, None);
    assert_eq!(output(child).1, "epoch=unset\n");
}

/// The wait path has no poll: `sleep` on PATH is replaced by one that records each call,
/// and it is never called while the wrapper waits (mkfifo is there); the app starts within
/// a few milliseconds of the wake-up every time (the old loop slept 100 ms between looks).
#[test]
fn the_wait_wakes_at_once_and_never_polls() {
    let bin = tempfile::tempdir().unwrap();
    let calls = bin.path().join("sleep-calls");
    let fake = bin.path().join("sleep");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexec /bin/sleep \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    let mut took = vec![];
    for _ in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        let started = dir.path().join("started");
        let (mut child, signal) = spawn_wrapper(
            dir.path(),
            &format!("echo > '{}'", started.display()),
            Some(&path),
        );
        // Waiting on the FIFO, not looking at the file.
        wait_until("the wrapper made its FIFO", Duration::from_secs(5), || {
            agent::wake_fifo_for(&signal).exists()
        });
        std::thread::sleep(Duration::from_millis(120));
        assert!(
            child.try_wait().unwrap().is_none(),
            "started before the release"
        );
        let t0 = Instant::now();
        let _waker = release(&signal, Some(1));
        wait_until("the app started", Duration::from_secs(5), || {
            started.exists()
        });
        took.push(t0.elapsed());
        assert!(child.wait().unwrap().success());
    }
    assert!(
        !calls.exists(),
        "the wait path called sleep: {:?}",
        std::fs::read_to_string(&calls)
    );
    took.sort();
    // The median and worst of 8: a 100 ms poll would put the median near 50 ms.
    assert!(took[4] < Duration::from_millis(25), "{took:?}");
    assert!(took[7] < Duration::from_millis(60), "{took:?}");
}

/// An agent that died between the signal file and the wake-up: the wrapper keeps waiting
/// (no poll) until the restarted agent, finding the signal, wakes it.
#[test]
fn a_restarted_agent_wakes_a_wrapper_that_missed_the_wake_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, signal) = spawn_wrapper(dir.path(), "echo started", None);
    wait_until("FIFO", Duration::from_secs(5), || {
        agent::wake_fifo_for(&signal).exists()
    });
    agent::write_signal(&signal).unwrap(); // and then the agent died
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "no wake-up, no poll");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cfg = agent::AgentConfig {
        operator_url: "https://127.0.0.1:1".into(),
        ca: String::new(),
        token_file: dir.path().join("no-token"),
        pod_uid: None,
        poll_seconds: 1,
        max_backoff: Duration::from_millis(100),
        give_up_after: None,
    };
    let restarted = rt.spawn(agent::run(cfg, agent::Mode::Signal(signal.clone())));
    let (status, out, _) = output(child);
    assert!(status.success());
    assert_eq!(out, "started\n");
    restarted.abort();
}

/// A wake-up with no signal file (anything opening the FIFO) starts nothing: the wrapper
/// waits again; the real release then starts the app once.
#[test]
fn a_wake_up_without_the_signal_waits_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, signal) = spawn_wrapper(dir.path(), "echo started", None);
    let fifo = agent::wake_fifo_for(&signal);
    wait_until("FIFO", Duration::from_secs(5), || fifo.exists());
    for _ in 0..3 {
        let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        std::io::Write::write_all(&mut w, b"x\n").unwrap();
        drop(w);
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            child.try_wait().unwrap().is_none(),
            "started without the signal"
        );
    }
    let _waker = release(&signal, Some(3));
    let (status, out, _) = output(child);
    assert!(status.success());
    assert_eq!(out, "started\n", "started once");
}

/// Two app containers share the signal volume: one release wakes both; the FIFO the
/// wrapper makes is writable by the agent's user (mode 0666 whatever the umask).
#[test]
fn one_release_wakes_every_wrapper_and_the_fifo_is_writable_by_all() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let (a, signal) = spawn_wrapper(dir.path(), "echo a", None);
    let (b, _) = spawn_wrapper(dir.path(), "echo b", None);
    let fifo = agent::wake_fifo_for(&signal);
    // `mkfifo -m 666` makes the FIFO under the umask and then sets its mode: wait for both
    // (checking the mode the instant the FIFO appears raced the second step).
    let mode = || std::fs::metadata(&fifo).map(|m| m.mode() & 0o777).ok();
    wait_until("FIFO with mode 0666", Duration::from_secs(5), || {
        mode() == Some(0o666)
    });
    assert_eq!(mode(), Some(0o666));
    std::thread::sleep(Duration::from_millis(150));
    let _waker = release(&signal, Some(9));
    assert_eq!(output(a).1, "a\n");
    assert_eq!(output(b).1, "b\n");
}

/// Where the wrapper cannot make the FIFO (the webhook mounts the signal volume read-only
/// in app containers; here: no `mkfifo` on PATH), the agent's FIFO, made when the agent
/// starts, is what it blocks on: made first, the wrapper never polls; made later, the
/// wrapper looks only until it exists, then the release still starts the app at once.
#[test]
fn without_mkfifo_the_agents_fifo_is_used() {
    let bin = tempfile::tempdir().unwrap();
    let calls = bin.path().join("sleep-calls");
    let fake = bin.path().join("sleep");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexec /bin/sleep \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = bin.path().display().to_string(); // sleep only: no mkfifo
                                                 // The agent came first.
    let dir = tempfile::tempdir().unwrap();
    let signal = dir.path().join("start-signal");
    agent::ensure_fifo(&agent::wake_fifo_for(&signal)).unwrap();
    let (mut child, _) = spawn_wrapper(dir.path(), "echo started", Some(&path));
    std::thread::sleep(Duration::from_millis(250));
    assert!(child.try_wait().unwrap().is_none());
    let t0 = Instant::now();
    let _waker = release(&signal, Some(2));
    let (status, out, err) = output(child);
    assert!(status.success(), "{err}");
    assert_eq!(out, "started\n");
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert!(!calls.exists(), "polled although the FIFO existed");
    // The wrapper came first: it looks until the agent has made the FIFO, then blocks.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, signal) = spawn_wrapper(dir.path(), "echo started", Some(&path));
    let fifo = agent::wake_fifo_for(&signal);
    std::thread::sleep(Duration::from_millis(250));
    assert!(!fifo.exists(), "the wrapper made the FIFO without mkfifo");
    assert!(calls.exists(), "it looks while there is no FIFO");
    agent::ensure_fifo(&fifo).unwrap();
    std::thread::sleep(Duration::from_millis(250));
    assert!(child.try_wait().unwrap().is_none());
    let _waker = release(&signal, None);
    assert_eq!(output(child).1, "started\n");
}
