//! The webhook over real TLS on 127.0.0.1:0 with a verifying client: the `certs` output,
//! rotation seen by a new connection, kubelet-style symlink swaps, chains with an
//! intermediate, HTTP/1.1 and h2.
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use kube_standby::certs;
use kube_standby::tls::{self, CertResolver, FileReloader};
use kube_standby::webhook::router;
use tokio::net::TcpListener;

async fn start(
    resolver: std::sync::Arc<CertResolver>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(common::state_with(common::demo_objects()));
    let cfg = tls::server_config(resolver).unwrap();
    tokio::spawn(tls::serve(
        listener,
        cfg,
        app,
        tls::ConnLimits::default(),
        async move {
            let _ = rx.await;
        },
    ));
    (addr, tx)
}

async fn healthz(ca: &str, addr: SocketAddr) -> Result<reqwest::Response, reqwest::Error> {
    common::client(ca, addr)
        .get(format!("https://localhost:{}/healthz", addr.port()))
        .send()
        .await
}

#[tokio::test]
async fn serves_with_the_certs_command_output_and_a_verifying_client() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = certs::generate(&certs::default_sans()).unwrap();
    certs::write_dir(dir.path(), &bundle).unwrap();
    let (_r, resolver) =
        FileReloader::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap();
    let (addr, _stop) = start(resolver).await;

    let resp = healthz(&bundle.ca_pem, addr).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");

    // An admission request over TLS gets a review back.
    let resp = common::client(&bundle.ca_pem, addr)
        .post(format!("https://localhost:{}/mutate/pods", addr.port()))
        .header("content-type", "application/json")
        .body(common::fixture("pod-create-from-replicaset.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["response"]["uid"], "f3e5fa6e-914d-448d-b385-2bfc5a3ce799");

    // A client that trusts another CA refuses the server.
    let other = certs::generate(&certs::default_sans()).unwrap();
    let err = healthz(&other.ca_pem, addr).await.unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");

    // 127.0.0.1 is in the certificate too.
    let c = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(bundle.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    assert_eq!(
        c.get(format!("https://127.0.0.1:{}/healthz", addr.port()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn h2_and_http1_are_both_served() {
    let b = certs::generate(&certs::default_sans()).unwrap();
    let resolver = CertResolver::new(
        tls::certified_key_from_pem(b.cert_pem.as_bytes(), b.key_pem.as_bytes()).unwrap(),
    );
    let (addr, _stop) = start(resolver).await;
    let h2 = healthz(&b.ca_pem, addr).await.unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    let h1 = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(b.ca_pem.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap()
        .get(format!("https://localhost:{}/healthz", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    // TLS 1.2 only clients are still served.
    let t12 = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .add_root_certificate(reqwest::Certificate::from_pem(b.ca_pem.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    assert_eq!(
        t12.get(format!("https://localhost:{}/healthz", addr.port()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn rotation_is_seen_by_a_new_connection_without_rebinding() {
    let dir = tempfile::tempdir().unwrap();
    let first = certs::generate(&certs::default_sans()).unwrap();
    certs::write_dir(dir.path(), &first).unwrap();
    let (mut reloader, resolver) =
        FileReloader::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap();
    let (addr, _stop) = start(resolver).await;
    assert_eq!(healthz(&first.ca_pem, addr).await.unwrap().status(), 200);
    assert!(!reloader.reload_once().unwrap(), "nothing changed yet");

    let second = certs::generate(&certs::default_sans()).unwrap();
    certs::write_dir(dir.path(), &second).unwrap();
    assert!(reloader.reload_once().unwrap());
    assert_eq!(healthz(&second.ca_pem, addr).await.unwrap().status(), 200);
    assert!(
        healthz(&first.ca_pem, addr).await.is_err(),
        "old CA must no longer verify"
    );

    // A broken pair keeps the current certificate.
    std::fs::write(dir.path().join("tls.crt"), "garbage").unwrap();
    assert!(reloader.reload_once().is_err());
    assert_eq!(healthz(&second.ca_pem, addr).await.unwrap().status(), 200);
}

/// Lay out a directory the way kubelet mounts a Secret:
/// tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/ (the real files).
fn kubelet_write(dir: &Path, generation: u32, b: &certs::Bundle) {
    let real = dir.join(format!("..gen_{generation}"));
    certs::write_dir(&real, b).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..gen_{generation}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap(); // atomic swap, like kubelet
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        let link = dir.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), &link).unwrap();
        }
    }
}

#[tokio::test]
async fn kubelet_symlink_swap_is_picked_up_by_the_polling_reloader() {
    let dir = tempfile::tempdir().unwrap();
    let first = certs::generate(&certs::default_sans()).unwrap();
    kubelet_write(dir.path(), 1, &first);
    let (reloader, resolver) =
        FileReloader::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap();
    tokio::spawn(reloader.run(Duration::from_millis(50)));
    let (addr, _stop) = start(resolver).await;
    assert_eq!(healthz(&first.ca_pem, addr).await.unwrap().status(), 200);

    let second = certs::generate(&certs::default_sans()).unwrap();
    kubelet_write(dir.path(), 2, &second);
    std::fs::remove_dir_all(dir.path().join("..gen_1")).unwrap(); // kubelet removes the old generation
    let mut ok = false;
    for _ in 0..100 {
        if healthz(&second.ca_pem, addr).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the swapped certificate was never served");
    assert!(healthz(&first.ca_pem, addr).await.is_err());
}

#[tokio::test]
async fn a_chain_with_an_intermediate_loads_and_verifies() {
    let b = certs::generate_with_intermediate(&certs::default_sans()).unwrap();
    let ck = tls::certified_key_from_pem(b.cert_pem.as_bytes(), b.key_pem.as_bytes()).unwrap();
    assert_eq!(ck.cert.len(), 2, "leaf + intermediate are both sent");
    let (addr, _stop) = start(CertResolver::new(ck)).await;
    assert_eq!(healthz(&b.ca_pem, addr).await.unwrap().status(), 200);
}

#[tokio::test]
async fn bad_pem_is_a_clear_error() {
    let b = certs::generate(&certs::default_sans()).unwrap();
    let e = tls::certified_key_from_pem(b"", b.key_pem.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no certificate"), "{e}");
    let e = tls::certified_key_from_pem(b.cert_pem.as_bytes(), b"nope")
        .unwrap_err()
        .to_string();
    assert!(e.contains("private key"), "{e}");
    let other = certs::generate(&certs::default_sans()).unwrap();
    let e = tls::certified_key_from_pem(b.cert_pem.as_bytes(), other.key_pem.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("certificate and key"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    assert!(FileReloader::load(
        &dir.path().join("missing.crt"),
        &dir.path().join("missing.key")
    )
    .is_err());
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_does_not_block_others() {
    let b = certs::generate(&certs::default_sans()).unwrap();
    let resolver = CertResolver::new(
        tls::certified_key_from_pem(b.cert_pem.as_bytes(), b.key_pem.as_bytes()).unwrap(),
    );
    let (addr, _stop) = start(resolver).await;
    let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut junk = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut junk, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(healthz(&b.ca_pem, addr).await.unwrap().status(), 200);
}
