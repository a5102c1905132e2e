//! File-mode TLS (`--tls-cert-file/--tls-key-file`) without `--ca-file`, run as README's
//! "Against a cluster" says: the CA injected into pods' agents is never empty and always
//! verifies the certificate the server really serves; a certificate file holding only the
//! leaf is refused at start with a message naming `--ca-file`.
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use kube_standby::tls::pin::pins_of_bundle;
use rustls::pki_types::ServerName;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kube-standby"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn webhook(dir: &Path, port: u16, extra: &[&str]) -> Command {
    let mut c = bin();
    c.args(["webhook", "--tls-cert-file"])
        .arg(dir.join("tls.crt"))
        .arg("--tls-key-file")
        .arg(dir.join("tls.key"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--metrics-bind", "127.0.0.1:0"])
        .args(["--operator-url", &format!("https://localhost:{port}")])
        .args(extra)
        .arg("--objects")
        .arg(common::repo().join("examples/statefulsingleton-demo.yaml"));
    c
}

/// The `KUBE_STANDBY_CA` value of the injected agent, from a real admission answer.
fn injected_ca(review: &serde_json::Value) -> String {
    let patch = review["response"]["patch"].as_str().expect("a patch");
    let ops: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap(),
    )
    .unwrap();
    let mut found = vec![];
    for op in ops.as_array().unwrap() {
        let v = &op["value"];
        let containers: Vec<&serde_json::Value> = match v.as_array() {
            Some(a) => a.iter().collect(),
            None => vec![v],
        };
        for c in containers {
            for e in c["env"].as_array().into_iter().flatten() {
                if e["name"] == "KUBE_STANDBY_CA" {
                    found.push(e["value"].as_str().unwrap_or_default().to_string());
                }
            }
        }
    }
    assert_eq!(found.len(), 1, "one agent injected: {ops}");
    found.remove(0)
}

/// A TLS handshake trusting `ca` (pins or PEM) exactly as the agent's client does it.
async fn handshake(ca: &str, port: u16) -> Result<(), String> {
    served_chain(ca, port).await.map(|_| ())
}

/// The certificates the server sent in a handshake trusting `ca`, leaf first.
async fn served_chain(ca: &str, port: u16) -> Result<Vec<Vec<u8>>, String> {
    let connector = kube_standby::agent::tls_connector(ca).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.to_vec())
        .collect())
}

#[tokio::test]
async fn readme_certs_then_webhook_without_ca_file_injects_a_ca_that_verifies_the_served_chain() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["certs", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let _child = Killed(
        webhook(dir.path(), port, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let review: serde_json::Value = loop {
        match client
            .post(format!("https://localhost:{port}/mutate/pods"))
            .header("content-type", "application/json")
            .body(common::fixture("pod-create-from-replicaset.json"))
            .send()
            .await
        {
            Ok(r) => break r.json().await.unwrap(),
            Err(e) => {
                assert!(Instant::now() < deadline, "webhook never answered: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(review["response"]["allowed"], true, "{review}");
    let injected = injected_ca(&review);
    // The pins of the CA (its key's SHA-256), not the CA itself.
    assert_eq!(
        injected,
        pins_of_bundle(std::str::from_utf8(&ca).unwrap()).unwrap(),
        "the pins of ca.crt are injected"
    );
    handshake(&injected, port)
        .await
        .expect("the injected CA pins verify the served certificate");
    // And the check can fail: another CA does not, pinned or as PEM.
    let other = kube_standby::certs::generate(&["localhost".into()]).unwrap();
    assert!(handshake(&pins_of_bundle(&other.ca_pem).unwrap(), port)
        .await
        .is_err());
    assert!(handshake(&other.ca_pem, port).await.is_err());
}

#[test]
fn a_leaf_only_certificate_without_ca_file_is_refused_naming_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = kube_standby::certs::generate(&kube_standby::certs::default_sans()).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &b.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &b.key_pem).unwrap();
    std::fs::write(dir.path().join("ca.crt"), &b.ca_pem).unwrap();
    let out = webhook(dir.path(), free_port(), &[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--ca-file") && err.contains("holds only the serving certificate"),
        "{err}"
    );

    // `run` refuses the same way before it contacts any cluster.
    let out = bin()
        .args(["run", "--tls-cert-file"])
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key-file")
        .arg(dir.path().join("tls.key"))
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--ca-file"), "{err}");

    // A --ca-file that did not sign the certificate is refused too.
    let other = kube_standby::certs::generate(&["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("other.crt"), &other.ca_pem).unwrap();
    let other_ca = dir.path().join("other.crt").display().to_string();
    let out = webhook(dir.path(), free_port(), &["--ca-file", &other_ca])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("does not verify the served certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn a_leaf_only_certificate_with_the_right_ca_file_starts() {
    let dir = tempfile::tempdir().unwrap();
    let b = kube_standby::certs::generate(&kube_standby::certs::default_sans()).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &b.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &b.key_pem).unwrap();
    // A rotation bundle: ours between two other CAs.
    let other = || {
        kube_standby::certs::generate(&["localhost".into()])
            .unwrap()
            .ca_pem
    };
    let bundle = format!("{}{}{}", other(), b.ca_pem, other());
    std::fs::write(dir.path().join("ca.crt"), &bundle).unwrap();
    let port = free_port();
    let ca = dir.path().join("ca.crt").display().to_string();
    let mut child = Killed(
        webhook(dir.path(), port, &["--ca-file", &ca])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while handshake(&b.ca_pem, port).await.is_err() {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the server exited with a good --ca-file"
        );
        assert!(Instant::now() < deadline, "never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The file holds the leaf alone, yet an agent holding the pins finds the CA in the
    // handshake: the server serves it after the chain.
    handshake(&pins_of_bundle(&b.ca_pem).unwrap(), port)
        .await
        .expect("the pinned CA is served after a leaf-only chain");
    // Agents pin the whole bundle; the handshake carries the leaf and the one CA of the
    // bundle that issued it, not all three.
    let chain = served_chain(&pins_of_bundle(&bundle).unwrap(), port)
        .await
        .expect("the bundle's pins verify the served chain");
    let ours = kube_standby::tls::agent_ca::pem_certs(&b.ca_pem).unwrap();
    assert_eq!(chain.len(), 2, "leaf + the issuing CA only");
    assert_eq!(chain[1], ours[0].to_vec());
}
