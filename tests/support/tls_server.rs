//! The webhook `Router` served over real TLS (the product's own connection loop,
//! `tls::serve`) with a generated bundle's serving certificate, for tests and benches.
#![allow(dead_code)]
use std::net::SocketAddr;

use kube_standby::certs::Bundle;
use kube_standby::tls;
use kube_standby::webhook::{router, WebhookState};

/// Serve `state` on `listener` until the process ends.
pub fn serve_on(
    listener: tokio::net::TcpListener,
    state: WebhookState,
    bundle: &Bundle,
) -> tokio::task::JoinHandle<()> {
    let key = tls::certified_key_from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes())
        .expect("serving key");
    let resolver = tls::CertResolver::new(key);
    // As `run` serves it: the agents' pinned CA after the chain.
    resolver.serve_anchors(tls::agent_ca::pem_certs(&bundle.ca_pem).expect("CA"));
    let config = tls::server_config(resolver).expect("tls config");
    tokio::spawn(tls::serve(
        listener,
        config,
        router(state),
        tls::ConnLimits::default(),
        std::future::pending(),
    ))
}

/// Serve `state` on a new port of 127.0.0.1; its address.
pub async fn serve(state: WebhookState, bundle: &Bundle) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    serve_on(listener, state, bundle);
    addr
}
