//! The README's no-cluster one-liner, run as written (with this build's binary instead of
//! the release one, and a free port): it prints the admission answer when the port is
//! free, and stops with a non-zero status (instead of spinning) when the port is taken.
mod common;

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The README's demo command after `cargo build --release && `.
fn readme_demo() -> String {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let start = readme.find("## On a fresh machine").expect("section");
    let block = &readme[start..];
    let open = block.find("```bash\n").expect("bash block") + "```bash\n".len();
    let close = open + block[open..].find("```").expect("block end");
    let cmd = block[open..close].replace("\\\n", " ");
    let (build, demo) = cmd.split_once("&& ").expect("build && demo");
    assert_eq!(build.trim(), "cargo build --release");
    assert!(demo.contains("./target/release/kube-standby webhook --bind 127.0.0.1:8443"));
    assert!(
        !demo.contains("--tls"),
        "the demo should need no TLS flags: {demo}"
    );
    demo.trim().to_string()
}

fn run(demo: &str, port: u16) -> (Output, Duration) {
    let script = demo
        .replace(
            "./target/release/kube-standby",
            env!("CARGO_BIN_EXE_kube-standby"),
        )
        .replace("127.0.0.1:8443", &format!("127.0.0.1:{port}"));
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(common::repo())
        .env("KUBE_STANDBY_METRICS_BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the README demo still runs after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

#[test]
fn the_demo_prints_the_admission_answer() {
    let demo = readme_demo();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (out, _) = run(&demo, port);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value =
        serde_json::from_str(stdout.lines().next().unwrap_or_default()).expect("JSON answer");
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"]["patch"].is_string(), "{answer}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("self-signed"));
}

#[test]
fn the_demo_stops_when_the_port_is_taken() {
    let demo = readme_demo();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (out, _) = run(&demo, port);
    assert!(!out.status.success(), "the demo succeeded on a taken port");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")),
        "the error should name the address: {stderr}"
    );
    drop(taken);
}

/// The `bash` block under "## Against a cluster": each line's `cargo run -- ARGS` (before
/// any `|` or `#`), with `<your-ip>` standing for a documentation address.
fn against_a_cluster() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let start = readme.find("## Against a cluster").expect("section");
    let block = &readme[start..];
    let open = block.find("```bash\n").expect("bash block") + "```bash\n".len();
    let close = open + block[open..].find("```").expect("block end");
    block[open..close]
        .lines()
        .map(|l| {
            let l = l.split('#').next().unwrap_or_default();
            let l = l.split('|').next().unwrap_or_default().trim();
            let args = l
                .strip_prefix("cargo run -- ")
                .unwrap_or_else(|| panic!("not a `cargo run --` line: {l}"));
            args.split_whitespace()
                .map(|a| a.replace("<your-ip>", "192.0.2.10"))
                .collect()
        })
        .collect()
}

/// Every command of the cluster block runs as written up to the cluster: `crds` and
/// `webhook-config` print YAML for `kubectl apply`, `certs` writes the files the next lines
/// read (with the IP SAN the API server will check), and `run` accepts its flags and the
/// certificates, stopping only at the (here missing) cluster configuration.
#[test]
fn the_cluster_commands_run_up_to_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cmds = against_a_cluster();
    let names: Vec<&str> = cmds.iter().map(|c| c[0].as_str()).collect();
    assert_eq!(names, ["crds", "certs", "webhook-config", "run"]);
    for args in &cmds {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kube-standby"));
        cmd.args(args).current_dir(dir.path());
        if args[0] == "run" {
            cmd.args(["--kubeconfig", "/nonexistent/kubeconfig"]).args([
                "--bind",
                "127.0.0.1:0",
                "--metrics-bind",
                "127.0.0.1:0",
            ]);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match args[0].as_str() {
            "crds" | "webhook-config" => {
                assert!(out.status.success(), "{args:?}: {stderr}");
                assert!(stdout.contains("kind: "), "{args:?}: {stdout}");
            }
            "certs" => {
                assert!(out.status.success(), "{args:?}: {stderr}");
                assert!(stderr.contains("192.0.2.10"), "{stderr}");
            }
            _ => {
                assert!(!out.status.success());
                assert!(
                    stderr.contains("/nonexistent/kubeconfig"),
                    "run should stop only at the cluster: {stderr}"
                );
            }
        }
    }
    assert!(dir.path().join("certs/tls.crt").exists());
}

/// `run --help` ends with the same quick start as README (the `--san <your-ip>` included).
#[test]
fn run_help_quick_start_is_the_readme_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_kube-standby"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let start = readme.find("## Against a cluster").expect("section");
    let block = &readme[start..];
    let open = block.find("```bash\n").expect("bash block") + "```bash\n".len();
    let close = open + block[open..].find("```").expect("block end");
    for line in block[open..close].lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let want = line.replace("cargo run -- ", "kube-standby ");
        assert!(help.contains(&want), "run --help lacks {want:?}:\n{help}");
    }
    assert!(help.contains("--san <your-ip>"));
}
