//! The binary's subcommands, run as a user would.
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kube-standby"))
}

#[test]
fn crds_prints_what_the_chart_holds() {
    let out = bin().arg("crds").output().unwrap();
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(common::repo().join("charts/kube-standby/crds/crds.yaml")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

#[test]
fn certs_then_webhook_config_for_url_and_service() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["certs", "--dir"])
        .arg(dir.path())
        .args(["--san", "localhost", "--san", "10.0.0.1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    for (flag, value, committed) in [
        (
            "--url",
            "https://127.0.0.1:8443/mutate/pods",
            "webhook-config/local-url.yaml",
        ),
        (
            "--service",
            "kube-standby/kube-standby",
            "webhook-config/service.yaml",
        ),
    ] {
        let out = bin()
            .args(["webhook-config", flag, value, "--ca-file"])
            .arg(dir.path().join("ca.crt"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Two documents: the mutating configuration, then the busy guard's validating one.
        let (mut fresh, mut fresh_guard) = both(&String::from_utf8(out.stdout).unwrap());
        let wh = &mut fresh.webhooks.as_mut().unwrap()[0];
        assert_eq!(
            wh.client_config.ca_bundle.as_ref().unwrap().0,
            ca.as_bytes()
        );
        let gwh = &mut fresh_guard.webhooks.as_mut().unwrap()[0];
        assert_eq!(
            gwh.client_config.ca_bundle.as_ref().unwrap().0,
            ca.as_bytes(),
            "the guard trusts the same CA"
        );
        assert_eq!(gwh.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(gwh.timeout_seconds, Some(2));
        // The committed example is the same apart from its CA.
        let (example, example_guard) =
            both(&std::fs::read_to_string(common::repo().join(committed)).unwrap());
        wh.client_config.ca_bundle = example.webhooks.as_ref().unwrap()[0]
            .client_config
            .ca_bundle
            .clone();
        gwh.client_config.ca_bundle = example_guard.webhooks.as_ref().unwrap()[0]
            .client_config
            .ca_bundle
            .clone();
        assert_eq!(
            fresh, example,
            "{committed} drifted from `kube-standby webhook-config {flag} ...`"
        );
        assert_eq!(
            fresh_guard, example_guard,
            "{committed} (guard) drifted from `kube-standby webhook-config {flag} ...`"
        );
    }
}

fn both(
    text: &str,
) -> (
    MutatingWebhookConfiguration,
    k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
) {
    use serde::Deserialize;
    let mut docs = serde_yaml::Deserializer::from_str(text);
    let m = MutatingWebhookConfiguration::deserialize(docs.next().expect("first document"))
        .expect("a MutatingWebhookConfiguration");
    let v =
        k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration::deserialize(
            docs.next().expect("second document"),
        )
        .expect("a ValidatingWebhookConfiguration");
    assert!(docs.next().is_none(), "two documents only");
    (m, v)
}

#[test]
fn the_guard_url_and_timeout_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(
        &ca,
        std::fs::read(common::repo().join("tests/data/test-ca.crt")).unwrap(),
    )
    .unwrap();
    let run = |args: &[&str]| {
        bin()
            .arg("webhook-config")
            .args(args)
            .arg("--ca-file")
            .arg(&ca)
            .output()
            .unwrap()
    };
    let out = run(&["--url", "https://10.0.0.1:8443/hook"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--guard-url"));
    let out = run(&[
        "--url",
        "https://10.0.0.1:8443/hook",
        "--guard-url",
        "https://10.0.0.1:8443/guard",
        "--guard-timeout-seconds",
        "5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, v) = both(&String::from_utf8(out.stdout).unwrap());
    let wh = &v.webhooks.unwrap()[0];
    assert_eq!(
        wh.client_config.url.as_deref(),
        Some("https://10.0.0.1:8443/guard")
    );
    assert_eq!(wh.timeout_seconds, Some(5));
    let out = run(&["--service", "a/b", "--guard-timeout-seconds", "31"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1-30"));
}

#[test]
fn busy_guard_flags_are_parsed_and_checked() {
    use clap::Parser;
    use kube_standby::cli::{Cli, Command};
    let cli = Cli::try_parse_from([
        "kube-standby",
        "webhook",
        "--busy-guard-requesters",
        "system:serviceaccount:kube-system:replicaset-controller, self ,alice",
        "--busy-guard-max-hold",
        "120",
    ])
    .unwrap();
    let Command::Webhook(a) = cli.command else {
        panic!("webhook")
    };
    let s = a
        .tls
        .guard
        .settings(Some("system:serviceaccount:ops:ks"))
        .unwrap();
    assert_eq!(
        s.requesters,
        vec![
            "system:serviceaccount:kube-system:replicaset-controller",
            "system:serviceaccount:ops:ks",
            "alice"
        ]
    );
    assert_eq!(s.max_hold, std::time::Duration::from_secs(120));
    // Without an in-cluster token `self` is left out.
    assert_eq!(a.tls.guard.settings(None).unwrap().requesters.len(), 2);
    // Defaults.
    let cli = Cli::try_parse_from(["kube-standby", "webhook"]).unwrap();
    let Command::Webhook(a) = cli.command else {
        panic!("webhook")
    };
    let s = a.tls.guard.settings(None).unwrap();
    assert_eq!(
        s.requesters,
        vec![
            "system:serviceaccount:kube-system:replicaset-controller",
            "system:kube-controller-manager"
        ]
    );
    assert_eq!(s.max_hold, std::time::Duration::from_secs(3600));
    // A bad entry and a bad number are clear errors.
    let cli =
        Cli::try_parse_from(["kube-standby", "run", "--busy-guard-requesters", "a b"]).unwrap();
    let Command::Run(a) = cli.command else {
        panic!("run")
    };
    let e = a.tls.guard.settings(None).unwrap_err().to_string();
    assert!(e.contains("--busy-guard-requesters"), "{e}");
    let e = Cli::try_parse_from(["kube-standby", "run", "--busy-guard-max-hold=-1"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("busy-guard-max-hold"), "{e}");
}

#[test]
fn the_busy_guard_probe_budget_flag() {
    use clap::Parser;
    use kube_standby::cli::{parse_budget, Cli, Command};
    use std::time::Duration;
    let cli = Cli::try_parse_from(["kube-standby", "run"]).unwrap();
    let Command::Run(a) = cli.command else {
        panic!("run")
    };
    assert_eq!(
        a.tls.guard.settings(None).unwrap().probe_budget,
        Duration::from_millis(500)
    );
    let cli =
        Cli::try_parse_from(["kube-standby", "webhook", "--busy-guard-probe-budget=1s"]).unwrap();
    let Command::Webhook(a) = cli.command else {
        panic!("webhook")
    };
    assert_eq!(
        a.tls.guard.settings(None).unwrap().probe_budget,
        Duration::from_secs(1)
    );
    let e = Cli::try_parse_from(["kube-standby", "run", "--busy-guard-probe-budget=30s"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("busy-guard-probe-budget") && e.contains("over 10s"),
        "{e}"
    );
    assert_eq!(parse_budget("250"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_budget("0ms"), Ok(Duration::ZERO));
    assert!(parse_budget("fast").unwrap_err().contains("500ms"));
    assert!(parse_budget("-1ms").is_err());
}

#[test]
fn the_service_account_token_names_the_operator() {
    use base64::Engine;
    let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let token = format!(
        "{}.{}.sig",
        enc(r#"{"alg":"RS256"}"#),
        enc(r#"{"sub":"system:serviceaccount:kube-standby:kube-standby"}"#)
    );
    assert_eq!(
        kube_standby::cli::token_subject(&token).as_deref(),
        Some("system:serviceaccount:kube-standby:kube-standby")
    );
    for bad in [
        "",
        "x",
        "a.!!!.c",
        &format!("a.{}.c", enc("{}")),
        &format!("a.{}.c", enc("[1]")),
    ] {
        assert_eq!(kube_standby::cli::token_subject(bad), None, "{bad}");
    }
}

#[test]
fn bad_arguments_give_clear_errors() {
    // `run` still needs an explicit certificate choice (before any cluster is contacted).
    let out = bin()
        .args(["run"])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("choose a certificate"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: apps.statefulsingleton.com/v1\nkind: StatefulSingleton\nmetadata: {name: x}\nspec: {}\n").unwrap();
    let out = bin()
        .args([
            "webhook",
            "--tls-self-signed",
            "--bind",
            "127.0.0.1:0",
            "--objects",
        ])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("selector"),
        "{err}"
    );

    let out = bin()
        .args([
            "webhook-config",
            "--service",
            "nope",
            "--ca-file",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn webhook_mode_serves_the_readme_curl_with_no_cluster() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = bin()
        .args([
            "webhook",
            "--tls-self-signed",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--metrics-bind",
            "127.0.0.1:0",
            "--objects",
        ])
        .arg(common::repo().join("examples/statefulsingleton-demo.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The CA lives only in the process's memory, so this smoke test skips verification
    // (verification is covered in tests/tls.rs).
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let mut resp = None;
    for _ in 0..100 {
        match client
            .post(format!("https://127.0.0.1:{port}/mutate/pods"))
            .header("content-type", "application/json")
            .body(common::fixture("pod-create-from-replicaset.json"))
            .send()
            .await
        {
            Ok(r) => {
                resp = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let resp = resp.expect("webhook never answered");
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["response"]["allowed"], true);
    assert_eq!(v["response"]["uid"], "f3e5fa6e-914d-448d-b385-2bfc5a3ce799");
}

#[test]
fn logs_go_to_stderr_so_stdout_stays_machine_readable() {
    // `webhook` logs the objects it loaded, then fails on a certificate file that is not there.
    for format in ["text", "json"] {
        let out = bin()
            .args([
                "--log-format",
                format,
                "webhook",
                "--tls-cert-file",
                "/nonexistent/tls.crt",
            ])
            .args([
                "--tls-key-file",
                "/nonexistent/tls.key",
                "--metrics-bind",
                "127.0.0.1:0",
            ])
            .arg("--objects")
            .arg(common::repo().join("examples/statefulsingleton-demo.yaml"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            out.stdout.is_empty(),
            "{format}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("loaded objects"),
            "{format}"
        );
    }
}

#[test]
fn certs_adds_sans_to_the_defaults_and_never_overwrites_a_ca_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        bin()
            .args(["certs", "--dir"])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--san", "10.1.2.3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    for name in [
        "localhost",
        "127.0.0.1",
        "kube-standby.kube-standby.svc",
        "10.1.2.3",
    ] {
        assert!(said.contains(name), "{name} missing: {said}");
    }
    let ca = std::fs::read(dir.path().join("ca.key")).unwrap();
    let again = run(&[]);
    assert!(!again.status.success(), "overwrote an existing CA");
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        std::fs::read(dir.path().join("ca.key")).unwrap(),
        ca,
        "the CA was touched"
    );
    let forced = run(&["--force"]);
    assert!(forced.status.success());
    assert_ne!(std::fs::read(dir.path().join("ca.key")).unwrap(), ca);
}

#[test]
fn the_help_example_matches_the_example_pod() {
    let out = bin().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--objects examples/statefulsingleton-demo.yaml"),
        "{help}"
    );
    // That file's singletons match the pod the help example sends.
    let objects = kube_standby::webhook::StaticObjects::from_files(&[
        common::repo().join("examples/statefulsingleton-demo.yaml")
    ])
    .unwrap();
    let body =
        std::fs::read(common::repo().join("examples/admission/pod-create-from-replicaset.json"))
            .unwrap();
    let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let labels: std::collections::BTreeMap<String, String> =
        serde_json::from_value(review["request"]["object"]["metadata"]["labels"].clone()).unwrap();
    let ns = review["request"]["namespace"].as_str().unwrap();
    use kube_standby::webhook::ObjectSource;
    let all = objects.singletons(ns);
    assert!(
        kube_standby::api::singleton::owning_singleton(&all, &labels).is_some(),
        "no singleton in the help example's file matches its pod"
    );
}

/// `webhook` needs no certificate flags (self-signed, and it says so); when its port is
/// taken it exits non-zero at once, naming the address, instead of leaving a caller waiting.
#[test]
fn webhook_defaults_to_self_signed_and_exits_when_its_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let started = std::time::Instant::now();
    let out = bin()
        .args(["webhook", "--bind", &addr, "--metrics-bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
    assert!(
        err.contains("self-signed"),
        "says it uses a self-signed certificate: {err}"
    );
    drop(taken);
}

/// Limit flags that cannot work are refused at start, naming the flag; `--help` lists them.
#[test]
fn limit_flags_are_checked_and_documented() {
    for (flags, needle) in [
        (
            vec![
                "--max-body-bytes",
                "8388608",
                "--max-buffered-body-bytes",
                "1048576",
            ],
            "--max-buffered-body-bytes",
        ),
        (
            vec!["--idle-timeout-seconds", "0"],
            "--idle-timeout-seconds",
        ),
        (vec!["--max-connections", "0"], "--max-connections"),
        (
            vec!["--max-concurrent-admissions", "0"],
            "--max-concurrent-admissions",
        ),
    ] {
        let out = bin()
            .args([
                "webhook",
                "--bind",
                "127.0.0.1:0",
                "--metrics-bind",
                "127.0.0.1:0",
            ])
            .args(&flags)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flags:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{flags:?}: {err}");
    }
    let help = bin().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--max-connections",
        "--tls-handshake-timeout-seconds",
        "--header-read-timeout-seconds",
        "--idle-timeout-seconds",
        "--max-http2-streams",
        "--max-body-bytes",
        "--body-read-timeout-seconds",
        "--max-concurrent-admissions",
        "--max-buffered-body-bytes",
    ] {
        assert!(help.contains(flag), "{flag} missing from run --help");
    }
}

#[test]
fn certs_refuses_a_san_that_is_no_dns_name_or_ip() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["certs", "--dir"])
        .arg(dir.path())
        .args(["--san", "bad name!"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted a bad SAN");
    assert!(
        stderr.contains("--san") && stderr.contains("\"bad name!\"") && stderr.contains("DNS name"),
        "{stderr}"
    );
    assert!(!dir.path().join("tls.crt").exists(), "wrote files anyway");
    // The same for the self-signed mode of the server.
    let out = bin()
        .args(["webhook", "--tls-self-signed", "--tls-san", "under_score"])
        .args(["--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--tls-san") && stderr.contains("under_score"),
        "{stderr}"
    );
}

#[test]
fn certs_validity_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["certs", "--dir"])
        .arg(dir.path())
        .args(["--ca-validity-days", "30", "--cert-validity-days", "7"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    let ca = kube_standby::certs::pem_not_after_unix(&read("ca.crt")).unwrap() - now;
    let leaf = kube_standby::certs::pem_not_after_unix(&read("tls.crt")).unwrap() - now;
    assert!((30 * 86400 - 60..=30 * 86400 + 60).contains(&ca), "{ca}");
    assert!((7 * 86400 - 60..=7 * 86400 + 60).contains(&leaf), "{leaf}");
    // A leaf outliving its CA is refused.
    let out = bin()
        .args(["certs", "--force", "--dir"])
        .arg(dir.path())
        .args(["--ca-validity-days", "30", "--cert-validity-days", "31"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("outlive"));
}

#[test]
fn bind_accepts_the_go_style_port_only_form() {
    // `:PORT` parses (the server then fails later, on the missing certificate file).
    let out = bin()
        .args(["webhook", "--bind", ":0", "--metrics-bind", "127.0.0.1:0"])
        .args([
            "--tls-cert-file",
            "/nonexistent/tls.crt",
            "--tls-key-file",
            "/nonexistent/tls.key",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("--bind"), "{stderr}");
    assert!(stderr.contains("/nonexistent/tls.crt"), "{stderr}");
    let out = bin()
        .args(["webhook", "--bind", "nonsense"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("HOST:PORT") && stderr.contains(":PORT"),
        "{stderr}"
    );
}

#[test]
fn webhook_config_without_a_target_names_both_flags() {
    let out = bin().args(["webhook-config"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--url") && stderr.contains("--service"),
        "{stderr}"
    );
}

#[test]
fn a_certificate_and_key_that_do_not_match_name_both_files() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for d in [&a, &b] {
        let out = bin()
            .args(["certs", "--dir"])
            .arg(d.path())
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let (cert, key) = (a.path().join("tls.crt"), b.path().join("tls.key"));
    let out = bin()
        .args([
            "webhook",
            "--bind",
            "127.0.0.1:0",
            "--metrics-bind",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&cert.display().to_string()) && stderr.contains(&key.display().to_string()),
        "{stderr}"
    );
}

/// `--objects` files that hold no StatefulSingleton (here: only a HotStandbyDeployment)
/// are worth a warning: no pod would ever be gated.
#[test]
fn objects_without_a_singleton_warn() {
    use std::io::{BufRead, BufReader};
    let mut child = bin()
        .args(["webhook", "--tls-self-signed", "--bind", "127.0.0.1:0"])
        .args(["--metrics-bind", "127.0.0.1:0", "--objects"])
        .arg(common::repo().join("examples/hsd-annotation.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = vec![];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let done = line.contains("listening");
                seen.push(line);
                if done && seen.iter().any(|l| l.contains("no StatefulSingleton")) {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter()
            .any(|l| l.contains("WARN") && l.contains("no StatefulSingleton")),
        "{seen:#?}"
    );
}
