//! The TLS edge: a rustls server whose certificate lives behind an `ArcSwap`, so a
//! rotation (file reload) needs no re-bind, and new connections see the new certificate.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

pub mod agent_ca;
pub mod ca_secret;
pub mod cabundle;
pub mod conn;
pub mod pin;

pub use conn::{serve, serve_plain, ConnLimits};

/// Parse a PEM certificate chain (leaf first, then intermediates) and private key.
pub fn certified_key_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Tls(format!("certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Tls("certificate PEM holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::Tls(format!("private key PEM: {e}")))?;
    let provider = ring::default_provider();
    let ck = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| Error::Tls(format!("certificate and key: {e}")))?;
    Ok(ck)
}

/// Serves whatever certificate is current; swapping it affects new handshakes only.
/// Every chain it serves ends with the CA certificates the agents pin ([`pin`]) that the
/// chain does not already hold, whichever certificate is swapped in.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
    anchors: ArcSwap<Vec<CertificateDer<'static>>>,
}

impl CertResolver {
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(CertResolver {
            current: ArcSwap::from_pointee(key),
            anchors: ArcSwap::from_pointee(vec![]),
        })
    }
    pub fn swap(&self, key: CertifiedKey) {
        self.current.store(Arc::new(self.with_anchors(key)));
    }
    /// Serve `anchors` (the agents' pinned CAs) after every chain from now on.
    pub fn serve_anchors(&self, anchors: Vec<CertificateDer<'static>>) {
        self.anchors.store(Arc::new(anchors));
        let key = CertifiedKey::clone(&self.current());
        self.swap(key);
    }
    fn with_anchors(&self, mut key: CertifiedKey) -> CertifiedKey {
        key.cert = pin::chain_with_anchors(key.cert, &self.anchors.load());
        key
    }
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// rustls server config: TLS 1.2 and 1.3 only, ALPN h2 and http/1.1.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>> {
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Watches a cert/key file pair by content, so a kubelet Secret update (an atomic
/// symlink swap of the `..data` directory) is seen even though the file paths never change.
pub struct FileReloader {
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<CertResolver>,
    last: [u8; 32],
}

fn digest(a: &[u8], b: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((a.len() as u64).to_le_bytes());
    h.update(a);
    h.update(b);
    h.finalize().into()
}

impl FileReloader {
    /// Load the pair once; fails when the files are missing or do not parse.
    pub fn load(cert: &Path, key: &Path) -> Result<(Self, Arc<CertResolver>)> {
        let c = std::fs::read(cert).map_err(|e| Error::io(cert, e))?;
        let k = std::fs::read(key).map_err(|e| Error::io(key, e))?;
        let resolver = CertResolver::new(certified_key_from_pem(&c, &k).map_err(|e| {
            Error::Tls(format!(
                "--tls-cert-file {} with --tls-key-file {}: {e}",
                cert.display(),
                key.display()
            ))
        })?);
        Ok((
            FileReloader {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                resolver: resolver.clone(),
                last: digest(&c, &k),
            },
            resolver,
        ))
    }

    /// Re-read the files; swap the certificate when they changed and parse.
    /// Returns Ok(true) on a swap. A half-written or bad pair keeps the old certificate.
    pub fn reload_once(&mut self) -> Result<bool> {
        let c = std::fs::read(&self.cert).map_err(|e| Error::io(&self.cert, e))?;
        let k = std::fs::read(&self.key).map_err(|e| Error::io(&self.key, e))?;
        let d = digest(&c, &k);
        if d == self.last {
            return Ok(false);
        }
        let ck = certified_key_from_pem(&c, &k)?;
        self.resolver.swap(ck);
        self.last = d;
        Ok(true)
    }

    /// Poll forever at `every`.
    pub async fn run(mut self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.reload_once() {
                Ok(true) => {
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "certificate reload failed; keeping the current certificate")
                }
            }
        }
    }
}
