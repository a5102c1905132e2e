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
        let mut fresh: MutatingWebhookConfiguration = serde_yaml::from_slice(&out.stdout).unwrap();
        let wh = &mut fresh.webhooks.as_mut().unwrap()[0];
        assert_eq!(
            wh.client_config.ca_bundle.as_ref().unwrap().0,
            ca.as_bytes()
        );
        // The committed example is the same apart from its CA.
        let example: MutatingWebhookConfiguration =
            serde_yaml::from_str(&std::fs::read_to_string(common::repo().join(committed)).unwrap())
                .unwrap();
        wh.client_config.ca_bundle = example.webhooks.as_ref().unwrap()[0]
            .client_config
            .ca_bundle
            .clone();
        assert_eq!(
            fresh, example,
            "{committed} drifted from `kube-standby webhook-config {flag} ...`"
        );
    }
}

#[test]
fn bad_arguments_give_clear_errors() {
    let out = bin().args(["webhook"]).output().unwrap();
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
    // `webhook` logs the objects it loaded, then fails for want of a certificate choice.
    for format in ["text", "json"] {
        let out = bin()
            .args(["--log-format", format, "webhook", "--objects"])
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
