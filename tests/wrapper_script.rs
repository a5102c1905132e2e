//! The real wrapper script, run by /bin/sh: it holds the app back until the signal file
//! appears, then the app receives exactly its original argv.
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube_standby::api::singleton::WRAPPER_SCRIPT;

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

    // Atomic signal write, as the agent does it.
    std::fs::write(dir.path().join(".start-signal.tmp"), b"released").unwrap();
    std::fs::rename(dir.path().join(".start-signal.tmp"), &signal).unwrap();

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
    std::fs::write(&signal, b"released\n").unwrap();
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
