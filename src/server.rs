//! Assembling the webhook server from command-line options (shared by `webhook` and `run`).
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig as RustlsConfig;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::state::{DebugState, Readiness};
use crate::tls::{self, CertResolver, FileReloader};
use crate::webhook::{self, ObjectSource, WebhookState};
use crate::{certs, Error, Result};

/// Where the serving certificate comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsMode {
    SelfSigned {
        sans: Vec<String>,
        /// Issue from this CA (kept in a Secret) instead of making a new one.
        ca: Option<crate::tls::ca_secret::CaPair>,
        /// Validity of the CA made here and of the serving certificate (renewed in memory
        /// once a third of it is left, see [`Tls::spawn_upkeep`]).
        validity: certs::Validity,
    },
    Files {
        cert: PathBuf,
        key: PathBuf,
        reload_every: Duration,
    },
}

/// What the webhook server needs, as plain data (the CLI builds it; the server never sees
/// clap types).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub bind: std::net::SocketAddr,
    /// Plain-HTTP address of /metrics, /debug/state, /healthz, /readyz.
    pub metrics_bind: std::net::SocketAddr,
    pub tls: TlsMode,
    /// CA bundle (PEM file) injected into pods' agents; defaults to the self-signed CA.
    pub ca_file: Option<PathBuf>,
    /// The same as PEM text (`--ca-pem`, `$KUBE_STANDBY_AGENT_CA`; the chart's `tls.caBundle`).
    pub ca_pem: Option<String>,
    pub agent_image: String,
    pub operator_url: String,
    /// Connection limits of both listeners (the operations port has its own, smaller cap).
    pub conn_limits: tls::ConnLimits,
    /// Limits of `/mutate/pods`.
    pub admission_limits: webhook::AdmissionLimits,
    /// Busy guard settings (`/validate/pods`).
    pub busy_guard: webhook::guard::GuardSettings,
    /// Where the guard tells this process's controllers what it holds.
    pub held: crate::state::HeldPods,
}

/// A ready TLS setup.
pub struct Tls {
    pub config: Arc<RustlsConfig>,
    pub resolver: Arc<CertResolver>,
    /// The CA that signed the serving certificate, when we know it.
    pub ca_pem: Option<String>,
    reloader: Option<(FileReloader, Duration)>,
    renewer: Option<Renewer>,
}

/// What re-issues the self-signed serving certificate.
#[derive(Clone)]
struct Renewer {
    ca_pem: String,
    ca_key_pem: String,
    sans: Vec<String>,
    valid_for: Duration,
}

impl Renewer {
    /// Renew once less than a third of the validity is left (a 1-year certificate: about
    /// 4 months before it expires).
    fn due(&self, not_after: i64, now: i64) -> bool {
        let left = not_after.saturating_sub(now);
        i128::from(left) * 3 < i128::from(self.valid_for.as_secs())
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Tls {
    pub fn new(mode: &TlsMode) -> Result<Self> {
        match mode {
            TlsMode::SelfSigned { sans, ca, validity } => {
                let b = match ca {
                    Some(ca) => certs::issue_for(&ca.cert_pem, &ca.key_pem, sans, validity.cert)?,
                    None => certs::generate_for(sans, *validity)?,
                };
                let resolver = CertResolver::new(tls::certified_key_from_pem(
                    b.cert_pem.as_bytes(),
                    b.key_pem.as_bytes(),
                )?);
                Ok(Tls {
                    config: tls::server_config(resolver.clone())?,
                    resolver,
                    ca_pem: Some(b.ca_pem.clone()),
                    reloader: None,
                    renewer: Some(Renewer {
                        ca_pem: b.ca_pem,
                        ca_key_pem: b.ca_key_pem,
                        sans: sans.clone(),
                        valid_for: validity.cert,
                    }),
                })
            }
            TlsMode::Files {
                cert,
                key,
                reload_every,
            } => {
                let (reloader, resolver) = FileReloader::load(cert, key)?;
                Ok(Tls {
                    config: tls::server_config(resolver.clone())?,
                    resolver,
                    ca_pem: None,
                    reloader: Some((reloader, *reload_every)),
                    renewer: None,
                })
            }
        }
    }

    /// Serve the certificates of `ca_pem` (the CA bundle of pods' agents) after every chain
    /// from now on, and return their pins: what the webhook injects as `KUBE_STANDBY_CA`
    /// (see [`tls::pin`]), so an agent finds its pinned CA in every handshake.
    pub fn pin_agent_ca(&self, ca_pem: &str) -> Result<String> {
        let what = |e: String| Error::Config(format!("the CA injected into pods' agents: {e}"));
        let pins = tls::pin::pins_of_bundle(ca_pem).map_err(what)?;
        self.resolver
            .serve_anchors(tls::agent_ca::pem_certs(ca_pem).map_err(what)?);
        Ok(pins)
    }

    /// Start the file reloader (file mode only).
    pub fn spawn_reloader(&mut self) {
        if let Some((r, every)) = self.reloader.take() {
            tokio::spawn(r.run(every));
        }
    }

    /// Keep `kube_standby_certificate_expiry_timestamp_seconds` current and, for a
    /// self-signed certificate, renew it in memory (same CA, new key) once less than a
    /// third of its validity is left, without a restart: new connections get the new one.
    /// Checks every `every` (a minute in production).
    pub fn spawn_upkeep(&self, metrics: Arc<Metrics>, every: Duration) {
        let resolver = self.resolver.clone();
        let renewer = self.renewer.clone();
        let ca_expiry = self
            .ca_pem
            .as_deref()
            .and_then(|ca| certs::pem_not_after_unix(ca).ok());
        tokio::spawn(async move {
            loop {
                cert_upkeep_once(&resolver, renewer.as_ref(), ca_expiry, &metrics);
                tokio::time::sleep(every).await;
            }
        });
    }
}

/// One check of [`Tls::spawn_upkeep`].
fn cert_upkeep_once(
    resolver: &CertResolver,
    renewer: Option<&Renewer>,
    ca_expiry: Option<i64>,
    metrics: &Metrics,
) {
    use crate::metrics::CertificateLabels;
    if let Some(t) = ca_expiry {
        metrics
            .certificate_expiry
            .get_or_create(&CertificateLabels { certificate: "ca" })
            .set(t);
    }
    let current = resolver.current();
    let Some(leaf) = current.cert.first() else {
        return;
    };
    let not_after = match certs::not_after_unix(leaf) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the served certificate's expiry");
            return;
        }
    };
    let mut expiry = not_after;
    if let Some(r) = renewer.filter(|r| r.due(not_after, unix_now())) {
        let renewed =
            certs::issue_for(&r.ca_pem, &r.ca_key_pem, &r.sans, r.valid_for).and_then(|b| {
                let key = tls::certified_key_from_pem(b.cert_pem.as_bytes(), b.key_pem.as_bytes())?;
                Ok((key, certs::pem_not_after_unix(&b.cert_pem)?))
            });
        match renewed {
            Ok((key, t)) => {
                resolver.swap(key);
                expiry = t;
                tracing::info!(
                    old_not_after = not_after,
                    new_not_after = t,
                    "renewed the self-signed serving certificate"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "renewing the self-signed serving certificate failed; retrying")
            }
        }
    }
    metrics
        .certificate_expiry
        .get_or_create(&CertificateLabels {
            certificate: "serving",
        })
        .set(expiry);
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// The CA bundle injected into pods' agents, checked against the served chain (see
/// [`tls::agent_ca`]): a configuration whose agents could never trust us is refused here.
pub fn agent_ca(cfg: &ServerConfig, tls: &Tls) -> Result<String> {
    let chain = tls.resolver.current().cert.clone();
    let ca_file = cfg.ca_file.as_ref().map(|p| p.display().to_string());
    let cert_file = match &cfg.tls {
        TlsMode::Files { cert, .. } => Some(cert.display().to_string()),
        TlsMode::SelfSigned { .. } => None,
    };
    let given = match (&cfg.ca_file, &tls.ca_pem) {
        (Some(p), _) => Some((
            std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?,
            tls::agent_ca::Source::CaFile(ca_file.as_deref().unwrap_or_default()),
        )),
        (None, _) if cfg.ca_pem.is_some() => Some((
            cfg.ca_pem.clone().unwrap_or_default(),
            tls::agent_ca::Source::CaPem,
        )),
        (None, Some(ca)) => Some((ca.clone(), tls::agent_ca::Source::SelfSigned)),
        (None, None) => None,
    };
    tls::agent_ca::choose(given, cert_file.as_deref(), &chain, &cfg.operator_url)
}

/// The token-authenticated services of the TLS port (`run` mode only; all None in
/// `webhook` mode, where they answer 503).
#[derive(Default, Clone)]
pub struct Services {
    pub release: Option<Arc<crate::webhook::release::ReleaseService>>,
    pub assignment: Option<Arc<crate::webhook::assignment::AssignmentService>>,
    pub claims: Option<Arc<crate::webhook::claims::ClaimsService>>,
}

/// Everything `webhook` and `run` share: TLS, state, the router, the listeners.
pub struct Prepared {
    pub tls: Tls,
    pub state: WebhookState,
    pub listener: TcpListener,
    pub ops_listener: TcpListener,
    pub conn_limits: tls::ConnLimits,
}

pub async fn prepare(
    cfg: &ServerConfig,
    objects: Arc<dyn ObjectSource>,
    services: Services,
    readiness: Readiness,
    metrics: Arc<Metrics>,
    debug: DebugState,
) -> Result<Prepared> {
    let mut tls = Tls::new(&cfg.tls)?;
    // Anchors first: a reload or renewal racing with them could serve a chain without them.
    let agent_ca_pins = tls.pin_agent_ca(&agent_ca(cfg, &tls)?)?;
    tls.spawn_reloader();
    tls.spawn_upkeep(metrics.clone(), Duration::from_secs(60));
    readiness.set_certs_loaded();
    let state = WebhookState {
        objects,
        injection: Arc::new(webhook::Injection {
            agent_image: cfg.agent_image.clone(),
            operator_url: cfg.operator_url.clone(),
            agent_ca: agent_ca_pins,
        }),
        metrics,
        readiness,
        debug,
        release: services.release,
        assignment: services.assignment,
        claims: services.claims,
        gate: webhook::AdmissionGate::new(cfg.admission_limits.clone()),
        guard: webhook::GuardState::sharing(cfg.busy_guard.clone(), cfg.held.clone()),
    };
    let listener = TcpListener::bind(cfg.bind)
        .await
        .map_err(|e| Error::io(cfg.bind.to_string(), e))?;
    let ops_listener = TcpListener::bind(cfg.metrics_bind)
        .await
        .map_err(|e| Error::io(cfg.metrics_bind.to_string(), e))?;
    Ok(Prepared {
        tls,
        state,
        listener,
        ops_listener,
        conn_limits: cfg.conn_limits.clone(),
    })
}

impl Prepared {
    /// Serve the webhook (TLS) and the operations port (plain HTTP) until `shutdown`.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        use futures::FutureExt;
        let addr = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(addr = %addr(&self.listener), "webhook listening (TLS)");
        tracing::info!(addr = %addr(&self.ops_listener), "metrics, debug state and probes listening (plain HTTP)");
        let shutdown = shutdown.shared();
        let ops = tls::serve_plain(
            self.ops_listener,
            webhook::ops_router(self.state.clone()),
            self.conn_limits.for_ops(),
            shutdown.clone(),
        );
        let webhook = tls::serve(
            self.listener,
            self.tls.config.clone(),
            webhook::router(self.state),
            self.conn_limits,
            shutdown,
        );
        tokio::join!(webhook, ops);
    }
}

/// `kube-standby webhook`: the server alone, no cluster.
pub async fn run_webhook(cfg: ServerConfig, objects: Arc<dyn ObjectSource>) -> Result<()> {
    let prepared = prepare(
        &cfg,
        objects,
        Services::default(),
        Readiness::without_caches(),
        Arc::new(Metrics::new()),
        DebugState::default(),
    )
    .await?;
    prepared.serve(shutdown_signal()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_once_a_third_of_the_validity_is_left() {
        let r = Renewer {
            ca_pem: String::new(),
            ca_key_pem: String::new(),
            sans: vec![],
            valid_for: certs::DAY * 365,
        };
        let day = 86400;
        assert!(!r.due(1000 + 200 * day, 1000));
        assert!(!r.due(1000 + 122 * day, 1000));
        assert!(r.due(1000 + 121 * day, 1000));
        assert!(r.due(1000 - day, 1000), "expired");
    }

    /// The self-signed serving certificate is replaced in memory, the expiry metric follows,
    /// and the new certificate chains to the same CA (pods' agents keep trusting it).
    #[test]
    fn a_self_signed_certificate_is_renewed_before_it_expires() {
        let mode = TlsMode::SelfSigned {
            sans: vec!["localhost".into()],
            ca: None,
            validity: certs::Validity {
                ca: certs::DAY,
                cert: Duration::from_secs(2),
            },
        };
        let tls = Tls::new(&mode).unwrap();
        let metrics = Metrics::new();
        let ca_expiry = certs::pem_not_after_unix(tls.ca_pem.as_deref().unwrap()).unwrap();
        let first = tls.resolver.current();
        let first_expiry = certs::not_after_unix(&first.cert[0]).unwrap();
        cert_upkeep_once(
            &tls.resolver,
            tls.renewer.as_ref(),
            Some(ca_expiry),
            &metrics,
        );
        assert!(
            Arc::ptr_eq(&first, &tls.resolver.current()),
            "renewed too early"
        );
        let text = metrics.render();
        assert!(
            text.contains(&format!(
                "kube_standby_certificate_expiry_timestamp_seconds{{certificate=\"serving\"}} {first_expiry}"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "kube_standby_certificate_expiry_timestamp_seconds{{certificate=\"ca\"}} {ca_expiry}"
        )));
        std::thread::sleep(Duration::from_millis(2100));
        cert_upkeep_once(
            &tls.resolver,
            tls.renewer.as_ref(),
            Some(ca_expiry),
            &metrics,
        );
        let second = tls.resolver.current();
        assert_ne!(first.cert[0], second.cert[0], "not renewed");
        let second_expiry = certs::not_after_unix(&second.cert[0]).unwrap();
        assert!(second_expiry > first_expiry);
        assert!(metrics.render().contains(&format!(
            "kube_standby_certificate_expiry_timestamp_seconds{{certificate=\"serving\"}} {second_expiry}"
        )));
        // Same CA: the agents' check accepts the renewed certificate.
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tls::agent_ca::verifies(tls.ca_pem.as_deref().unwrap(), &second.cert, &name).unwrap();
    }
}
