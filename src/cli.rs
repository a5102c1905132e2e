//! Command line: `run`, `webhook`, `crds`, `certs`, `webhook-config`.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;
use crate::webhook::StaticObjects;
use crate::{certs, server, webhook_config, Error, Result};

/// `run --help`'s quick start (README "Against a cluster"). `--san <your-ip>` matters: the
/// API server checks the serving certificate for that address, and with `failurePolicy:
/// Ignore` a failed check admits pods ungated without an error anywhere.
const RUN_QUICK_START: &str = "Quick start against a cluster (from your machine; <your-ip> must be reachable by the API server):\n  \
kube-standby crds | kubectl apply -f -\n  \
kube-standby certs --dir certs --san <your-ip>\n  \
kube-standby webhook-config --url https://<your-ip>:8443/mutate/pods --ca-file certs/ca.crt | kubectl apply -f -\n  \
kube-standby run --tls-cert-file certs/tls.crt --tls-key-file certs/tls.key";

#[derive(Parser, Debug)]
#[command(
    name = "kube-standby",
    version,
    about = "Warm pools (HotStandbyDeployment/Job), stateful singletons and async actors for Kubernetes",
    long_about = "One binary: an admission webhook (axum + rustls) and the reconcilers.\n\n\
Try it with no cluster:\n  kube-standby webhook --objects examples/statefulsingleton-demo.yaml\n  \
curl -sk https://127.0.0.1:8443/mutate/pods -H 'content-type: application/json' -d @examples/admission/pod-create-from-replicaset.json\n\n\
Against a cluster:\n  kube-standby crds | kubectl apply -f -\n  kube-standby certs --dir certs --san <your-ip>\n  \
kube-standby webhook-config --url https://<your-ip>:8443/mutate/pods --ca-file certs/ca.crt | kubectl apply -f -\n  \
kube-standby run --tls-cert-file certs/tls.crt --tls-key-file certs/tls.key\n\n\
The CA injected into pods' agents is --ca-file, else the self-signed CA, else the last certificate of \
--tls-cert-file (certs writes tls.crt as leaf + CA); a leaf-only certificate file without --ca-file, or a CA \
that does not verify the served certificate for the --operator-url host, is refused at start."
)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        global = true,
        env = "KUBE_STANDBY_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Webhook server and every reconciler, against the cluster from KUBECONFIG or in-cluster config.
    #[command(after_help = RUN_QUICK_START)]
    Run(RunArgs),
    /// The webhook server alone; needs no cluster.
    Webhook(WebhookArgs),
    /// Print every CRD as YAML (generated from the Rust types).
    Crds,
    /// Write a CA and a serving certificate/key into a directory.
    Certs(CertsArgs),
    /// Print the MutatingWebhookConfiguration and the busy guard's
    /// ValidatingWebhookConfiguration for a URL or a Service.
    WebhookConfig(WebhookConfigArgs),
    /// The in-pod agent of a StatefulSingleton pod (injected by the webhook).
    Agent(AgentArgs),
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Init-gate mode: exit 0 once this pod is released.
    #[arg(
        long,
        conflicts_with_all = ["signal_file", "assignment_file"],
        required_unless_present_any = ["signal_file", "assignment_file"]
    )]
    pub once: bool,
    /// Sidecar mode: write this file (atomically) once released, then stay up.
    #[arg(long, conflicts_with = "assignment_file")]
    pub signal_file: Option<PathBuf>,
    /// Init-gate mode: write the release's epoch to this file (atomically) before exiting
    /// (the webhook sets `/var/run/signal/epoch`, in a volume the app containers mount).
    /// Ignored in sidecar mode, which writes it next to the signal file.
    #[arg(long, env = "KUBE_STANDBY_EPOCH_FILE")]
    pub epoch_file: Option<PathBuf>,
    /// Claim agent mode: keep this pod's claim assignment (`GET /v1/assignment`) in this
    /// file, written atomically when the pod is claimed and whenever it changes.
    #[arg(long)]
    pub assignment_file: Option<PathBuf>,
    /// With --assignment-file: exit 0 once the first assignment is written (a Job pod,
    /// which completes only when every container has ended).
    #[arg(long, requires = "assignment_file")]
    pub exit_when_assigned: bool,
    /// The operator's URL.
    #[arg(long, env = "KUBE_STANDBY_OPERATOR_URL")]
    pub operator_url: String,
    /// What to trust for the operator: the pins of its CA keys (`sha256:<hex>[,...]`, the
    /// SHA-256 of each CA's SubjectPublicKeyInfo, as the webhook injects them), or a PEM
    /// CA bundle the operator's certificate chains to.
    #[arg(long, env = "KUBE_STANDBY_CA", hide_env_values = true)]
    pub ca: String,
    /// Projected service-account token (audience kube-standby).
    #[arg(long, env = "KUBE_STANDBY_TOKEN_FILE", default_value = crate::api::singleton::TOKEN_FILE)]
    pub token_file: PathBuf,
    /// This pod's UID (downward API), checked against the token.
    #[arg(long, env = "POD_UID")]
    pub pod_uid: Option<String>,
    /// Long-poll length in seconds (at most 30).
    #[arg(long, default_value = "30")]
    pub poll_seconds: u64,
    /// Exit with status 1 after this many seconds without any answer from the operator
    /// (the kubelet restarts the agent and the singleton shows `AgentUnreachable`); 0 retries
    /// forever (the webhook sets 0 for pods with `restartPolicy: Never`).
    #[arg(
        long,
        env = "KUBE_STANDBY_GIVE_UP_SECONDS",
        default_value_t = crate::agent::DEFAULT_GIVE_UP_SECONDS
    )]
    pub give_up_seconds: u64,
}

/// TLS options shared by `run` and `webhook`.
#[derive(Args, Debug, Clone)]
pub struct TlsArgs {
    /// Address to listen on (`HOST:PORT`; `:PORT` means every address, as Go operators write it).
    #[arg(long, default_value = "0.0.0.0:8443", env = "KUBE_STANDBY_BIND", value_parser = parse_bind)]
    pub bind: SocketAddr,
    /// Plain-HTTP address for /metrics, /debug/state, /healthz and /readyz (keep it inside
    /// the cluster; the chart binds 0.0.0.0:9090 behind a NetworkPolicy-able port).
    #[arg(
        long,
        default_value = "127.0.0.1:9090",
        env = "KUBE_STANDBY_METRICS_BIND",
        value_parser = parse_bind
    )]
    pub metrics_bind: SocketAddr,
    /// Generate a CA and serving certificate in memory at start-up.
    #[arg(long, conflicts_with_all = ["tls_cert_file", "tls_key_file"])]
    pub tls_self_signed: bool,
    /// Serving certificate chain (PEM, leaf first). Reloaded when it changes.
    #[arg(long, requires = "tls_key_file", env = "KUBE_STANDBY_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of the serving certificate.
    #[arg(long, requires = "tls_cert_file", env = "KUBE_STANDBY_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// CA bundle (PEM file) pods' agents trust: its certificates that issued the chain are served
    /// after it and all their pins injected (KUBE_STANDBY_CA=sha256:...). Default: the self-signed CA, or with --tls-cert-file the last certificate of that chain when it
    /// holds more than the leaf (`kube-standby certs` writes tls.crt as leaf + CA);
    /// a leaf-only file needs --ca-file. Checked at start against the served certificate.
    #[arg(long, env = "KUBE_STANDBY_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The same CA bundle as PEM text (the chart passes `tls.caBundle` this way).
    #[arg(
        long,
        env = "KUBE_STANDBY_AGENT_CA",
        hide_env_values = true,
        conflicts_with = "ca_file"
    )]
    pub ca_pem: Option<String>,
    /// Extra subject alternative names for the self-signed certificate (repeatable; DNS
    /// names or IPs).
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,
    /// Days the self-signed serving certificate is valid; it is renewed in memory, without
    /// a restart, once a third of this is left.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub tls_cert_validity_days: u32,
    /// Days the in-memory self-signed CA is valid (a CA kept in --ca-secret keeps its own).
    #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub tls_ca_validity_days: u32,
    /// How often (seconds) certificate files are checked for changes.
    #[arg(long, default_value = "10")]
    pub tls_reload_seconds: u64,
    /// Image of the in-pod agent (status sidecar / init gate).
    #[arg(long, env = "KUBE_STANDBY_AGENT_IMAGE", default_value = concat!("ghcr.io/paia-tech/kube-standby:", env!("CARGO_PKG_VERSION")))]
    pub agent_image: String,
    /// URL the in-pod agent uses to reach the operator.
    #[arg(
        long,
        env = "KUBE_STANDBY_OPERATOR_URL",
        default_value = "https://kube-standby.kube-standby.svc:443"
    )]
    pub operator_url: String,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub guard: GuardArgs,
}

/// The busy guard (`/validate/pods`): who may not delete a busy pod, how long an
/// eviction is held.
#[derive(Args, Debug, Clone)]
pub struct GuardArgs {
    /// Usernames or groups whose DELETE of a busy guarded pod is denied (comma list);
    /// `self` is the operator's own service account (read from its in-cluster token).
    /// Everyone else (humans, the garbage collector, the namespace controller) may delete.
    #[arg(
        long,
        env = "KUBE_STANDBY_BUSY_GUARD_REQUESTERS",
        value_delimiter = ',',
        default_value = "system:serviceaccount:kube-system:replicaset-controller,system:kube-controller-manager,self"
    )]
    pub busy_guard_requesters: Vec<String>,
    /// Seconds an eviction of a busy guarded pod is held (429) before it is let through
    /// with a warning, so a drain is never blocked for ever; 0: evictions are never held.
    #[arg(long, env = "KUBE_STANDBY_BUSY_GUARD_MAX_HOLD", default_value_t = crate::webhook::guard::DEFAULT_MAX_HOLD.as_secs())]
    pub busy_guard_max_hold: u64,
    /// How long a review waits for the guard's own probe of an http/exec pod whose cached
    /// result is missing, failing or older than its period (`500ms`, `1s`; a bare number is
    /// milliseconds, at most 10s). Past it the pod counts as busy. Keep it well below the
    /// webhook's timeoutSeconds: a review that times out is let through (failurePolicy
    /// Ignore).
    #[arg(long, env = "KUBE_STANDBY_BUSY_GUARD_PROBE_BUDGET", default_value = "500ms", value_parser = parse_budget)]
    pub busy_guard_probe_budget: Duration,
}

/// `--busy-guard-probe-budget`: `<n>ms`, `<n>s` or a bare number of milliseconds, 0-10s.
pub fn parse_budget(v: &str) -> std::result::Result<Duration, String> {
    let v = v.trim();
    let (digits, scale) = if let Some(d) = v.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = v.strip_suffix('s') {
        (d, 1000)
    } else {
        (v, 1)
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a duration like 500ms or 1s"))?;
    let ms = n.saturating_mul(scale);
    if ms > 10_000 {
        return Err(format!(
            "{v:?} is over 10s (the webhook times out long before)"
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// Where the operator's in-cluster service-account token lives.
pub const SA_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The username in a service-account token (its `sub` claim), e.g.
/// `system:serviceaccount:kube-standby:kube-standby`. Not verified: it is our own token.
pub fn token_subject(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("sub")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl GuardArgs {
    /// The guard settings, `self` replaced by `own` (dropped when unknown).
    pub fn settings(&self, own: Option<&str>) -> Result<crate::webhook::guard::GuardSettings> {
        let mut requesters = vec![];
        for r in self.busy_guard_requesters.iter().map(|r| r.trim()) {
            let r = if r == crate::webhook::guard::SELF {
                match own {
                    Some(o) => o,
                    None => {
                        tracing::info!("--busy-guard-requesters: `self` left out (no in-cluster service-account token)");
                        continue;
                    }
                }
            } else {
                r
            };
            if r.is_empty() {
                continue;
            }
            if r.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::Config(format!(
                    "--busy-guard-requesters: {r:?} is not a username or group (no spaces)"
                )));
            }
            if !requesters.iter().any(|x: &String| x == r) {
                requesters.push(r.to_string());
            }
        }
        Ok(crate::webhook::guard::GuardSettings {
            requesters,
            max_hold: Duration::from_secs(self.busy_guard_max_hold),
            probe_budget: self.busy_guard_probe_budget,
        })
    }
}

/// Limits that keep one misbehaving client from taking the process down.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Open connections on the webhook port; more are accepted and closed at once
    /// (the operations port has its own cap of 64).
    #[arg(long, env = "KUBE_STANDBY_MAX_CONNECTIONS", default_value_t = crate::tls::conn::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Seconds a TLS handshake may take.
    #[arg(long, env = "KUBE_STANDBY_TLS_HANDSHAKE_TIMEOUT_SECONDS", default_value_t = crate::tls::conn::DEFAULT_TLS_HANDSHAKE_TIMEOUT.as_secs())]
    pub tls_handshake_timeout_seconds: u64,
    /// Seconds an HTTP/1.1 request head may take to arrive (also between kept-alive requests).
    #[arg(long, env = "KUBE_STANDBY_HEADER_READ_TIMEOUT_SECONDS", default_value_t = crate::tls::conn::DEFAULT_HEADER_READ_TIMEOUT.as_secs())]
    pub header_read_timeout_seconds: u64,
    /// Seconds a connection may stay open with no request in progress.
    #[arg(long, env = "KUBE_STANDBY_IDLE_TIMEOUT_SECONDS", default_value_t = crate::tls::conn::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout_seconds: u64,
    /// Concurrent streams per HTTP/2 connection.
    #[arg(long, env = "KUBE_STANDBY_MAX_HTTP2_STREAMS", default_value_t = crate::tls::conn::DEFAULT_MAX_HTTP2_STREAMS)]
    pub max_http2_streams: u32,
    /// Largest AdmissionReview body (bytes); larger ones get 413 before they are read.
    #[arg(long, env = "KUBE_STANDBY_MAX_BODY_BYTES", default_value_t = crate::webhook::limits::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Seconds reading one admission body may take (408 after that).
    #[arg(long, env = "KUBE_STANDBY_BODY_READ_TIMEOUT_SECONDS", default_value_t = crate::webhook::limits::DEFAULT_BODY_READ_TIMEOUT.as_secs())]
    pub body_read_timeout_seconds: u64,
    /// Admission reviews in progress at once; more get 503 at once.
    #[arg(long, env = "KUBE_STANDBY_MAX_CONCURRENT_ADMISSIONS", default_value_t = crate::webhook::limits::DEFAULT_MAX_CONCURRENT)]
    pub max_concurrent_admissions: usize,
    /// Admission body bytes buffered at once across all requests; a body that would go
    /// over gets 503 at once.
    #[arg(long, env = "KUBE_STANDBY_MAX_BUFFERED_BODY_BYTES", default_value_t = crate::webhook::limits::DEFAULT_MAX_BUFFERED_BYTES)]
    pub max_buffered_body_bytes: usize,
}

impl LimitArgs {
    pub fn conn_limits(&self) -> Result<crate::tls::ConnLimits> {
        let l = crate::tls::ConnLimits {
            max_connections: self.max_connections,
            tls_handshake_timeout: Duration::from_secs(self.tls_handshake_timeout_seconds),
            header_read_timeout: Duration::from_secs(self.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            max_http2_streams: self.max_http2_streams,
        };
        l.validate().map_err(Error::Config)?;
        Ok(l)
    }

    pub fn admission_limits(&self) -> Result<crate::webhook::AdmissionLimits> {
        let l = crate::webhook::AdmissionLimits {
            max_body_bytes: self.max_body_bytes,
            body_read_timeout: Duration::from_secs(self.body_read_timeout_seconds),
            max_concurrent: self.max_concurrent_admissions,
            max_buffered_bytes: self.max_buffered_body_bytes,
        };
        l.validate().map_err(Error::Config)?;
        Ok(l)
    }
}

#[derive(Args, Debug)]
pub struct WebhookArgs {
    #[command(flatten)]
    pub tls: TlsArgs,
    /// YAML files with StatefulSingleton objects to match pods against (no cluster needed);
    /// an object without a namespace matches pods of every namespace.
    #[arg(long, num_args = 1..)]
    pub objects: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub tls: TlsArgs,
    /// In self-signed mode, keep this MutatingWebhookConfiguration's caBundle equal to our CA.
    #[arg(long, env = "KUBE_STANDBY_WEBHOOK_CONFIG_NAME")]
    pub webhook_config_name: Option<String>,
    /// In self-signed mode, keep the CA in this Secret of the operator's namespace (created
    /// once, shared by every replica, kept across restarts).
    #[arg(long, env = "KUBE_STANDBY_CA_SECRET")]
    pub ca_secret: Option<String>,
    /// Only one replica reconciles, holding a coordination.k8s.io/v1 Lease; every replica
    /// serves the webhook and /release.
    #[arg(long, env = "KUBE_STANDBY_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else kube-standby).
    #[arg(long)]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, default_value = "kube-standby")]
    pub leader_election_name: String,
    /// Kubeconfig file to use (kubectl's --kubeconfig; default: $KUBECONFIG, then
    /// ~/.kube/config, then the in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (kubectl's --context; default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Namespaces to watch and reconcile (repeatable; default: all). Unlike kubectl's
    /// --namespace this is not "the namespace to act in": it restricts every watch.
    #[arg(
        long = "namespace",
        env = "KUBE_STANDBY_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// Sidecar image injected into AsyncActors that name none in `spec.sidecar.image`.
    #[arg(long, env = "KUBE_STANDBY_ACTOR_SIDECAR_IMAGE", default_value = crate::controller::actor::DEFAULT_SIDECAR_IMAGE)]
    pub actor_sidecar_image: String,
    /// `asya_runtime.py` to publish as ConfigMap `asya-runtime` in every namespace with an
    /// AsyncActor (mounted at /opt/asya/asya_runtime.py); re-read every 10 s.
    #[arg(long, env = "KUBE_STANDBY_ACTOR_RUNTIME_FILE")]
    pub actor_runtime_file: Option<PathBuf>,
}

impl RunArgs {
    /// The cluster client: `--kubeconfig`/`--context` as kubectl reads them, else the
    /// usual inference ($KUBECONFIG, ~/.kube/config, in-cluster).
    pub async fn client(&self) -> Result<kube::Client> {
        use kube::config::{Config, KubeConfigOptions, Kubeconfig};
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let kc = Kubeconfig::read_from(path)
                    .map_err(|e| Error::Config(format!("--kubeconfig {}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| Error::Config(format!("--kubeconfig {}: {e}", path.display())))?
            }
            (None, Some(ctx)) => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| Error::Config(format!("--context {ctx}: {e}")))?,
            (None, None) => Config::infer()
                .await
                .map_err(|e| Error::Config(format!("no cluster configuration: {e}")))?,
        };
        kube::Client::try_from(config)
            .map_err(|e| Error::Config(format!("cannot build the cluster client: {e}")))
    }
}

/// `HOST:PORT`, or `:PORT` for every IPv4 address (`0.0.0.0:PORT`, as Go operators'
/// `--bind-address :8443`).
fn parse_bind(s: &str) -> std::result::Result<SocketAddr, String> {
    let full = match s.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => s.to_string(),
    };
    full.parse().map_err(|_| {
        format!("{s:?} is not an address: write HOST:PORT (e.g. 0.0.0.0:8443, [::]:8443) or :PORT")
    })
}

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Output directory.
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// Extra DNS names / IPs (repeatable), added to the defaults: localhost, 127.0.0.1,
    /// kube-standby.kube-standby.svc(.cluster.local).
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// Days the CA is valid.
    #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub ca_validity_days: u32,
    /// Days the serving certificate is valid.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub cert_validity_days: u32,
    /// Overwrite an existing CA (ca.key) in the directory.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct WebhookConfigArgs {
    /// Webhook URL, e.g. https://127.0.0.1:8443/mutate/pods (local development).
    #[arg(long, conflicts_with = "service")]
    pub url: Option<String>,
    /// Service NAMESPACE/NAME serving the webhook on port 443.
    #[arg(long)]
    pub service: Option<String>,
    /// CA certificate (PEM) that signed the serving certificate.
    #[arg(long, default_value = "certs/ca.crt")]
    pub ca_file: PathBuf,
    /// Name of the MutatingWebhookConfiguration.
    #[arg(long, default_value = webhook_config::DEFAULT_NAME)]
    pub name: String,
    /// The operator's namespace (excluded from interception, like kube-system).
    #[arg(long, default_value = "kube-standby")]
    pub operator_namespace: String,
    /// The busy guard's URL (default: --url with /mutate/pods replaced by /validate/pods).
    #[arg(long, requires = "url")]
    pub guard_url: Option<String>,
    /// `timeoutSeconds` of the busy guard's ValidatingWebhookConfiguration (1-30; it fails open).
    #[arg(long, default_value_t = webhook_config::DEFAULT_GUARD_TIMEOUT_SECONDS)]
    pub guard_timeout_seconds: i32,
}

impl TlsArgs {
    pub fn tls_mode(&self) -> Result<server::TlsMode> {
        match (
            &self.tls_cert_file,
            &self.tls_key_file,
            self.tls_self_signed,
        ) {
            (Some(c), Some(k), false) => Ok(server::TlsMode::Files {
                cert: c.clone(),
                key: k.clone(),
                reload_every: Duration::from_secs(self.tls_reload_seconds.max(1)),
            }),
            (None, None, true) => {
                let mut sans = certs::default_sans();
                for s in &self.tls_sans {
                    certs::check_san(s).map_err(|e| Error::Config(format!("--tls-san: {e}")))?;
                    if !sans.contains(s) {
                        sans.push(s.clone());
                    }
                }
                Ok(server::TlsMode::SelfSigned {
                    sans,
                    ca: None,
                    validity: certs::Validity::days(
                        self.tls_ca_validity_days,
                        self.tls_cert_validity_days,
                    )?,
                })
            }
            _ => Err(Error::Config(
                "choose a certificate: --tls-self-signed, or --tls-cert-file with --tls-key-file"
                    .into(),
            )),
        }
    }

    /// The plain server configuration.
    pub fn server_config(&self) -> Result<server::ServerConfig> {
        Ok(server::ServerConfig {
            bind: self.bind,
            metrics_bind: self.metrics_bind,
            tls: self.tls_mode()?,
            ca_file: self.ca_file.clone(),
            ca_pem: self.ca_pem.clone().filter(|p| !p.trim().is_empty()),
            agent_image: self.agent_image.clone(),
            operator_url: self.operator_url.clone(),
            conn_limits: self.limits.conn_limits()?,
            admission_limits: self.limits.admission_limits()?,
            busy_guard: self.guard.settings(
                std::fs::read_to_string(SA_TOKEN)
                    .ok()
                    .and_then(|t| token_subject(&t))
                    .as_deref(),
            )?,
            held: Default::default(),
        })
    }
}

impl RunArgs {
    /// The plain runtime configuration.
    pub fn run_config(&self) -> Result<crate::runtime::RunConfig> {
        let leader = self.leader_elect.then(|| {
            crate::runtime::leader::LeaseConfig::new(
                self.leader_election_namespace
                    .clone()
                    .unwrap_or_else(crate::runtime::own_namespace),
                self.leader_election_name.clone(),
                crate::runtime::identity(),
            )
        });
        if let Some(l) = &leader {
            l.validate()?;
        }
        Ok(crate::runtime::RunConfig {
            server: self.tls.server_config()?,
            webhook_config_name: self.webhook_config_name.clone(),
            ca_secret: self.ca_secret.clone(),
            ca_secret_namespace: crate::runtime::own_namespace(),
            leader,
            namespaces: self
                .namespaces
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
            actor: crate::controller::actor::Config {
                sidecar_image: self.actor_sidecar_image.clone(),
                runtime_file: self.actor_runtime_file.clone(),
            },
        })
    }
}

/// Entry point used by `main`: true when the command succeeded. A failure's reason is the
/// last line on stderr (`error: ...`), handed to the log writer behind every line logged
/// before, so a stalled stderr cannot hold the exit up (the writer is waited for at most
/// [`crate::telemetry::background::FLUSH_WAIT`]). Lines that tasks still running log after
/// that wait may be lost.
pub async fn main() -> bool {
    let cli = Cli::parse();
    let logs = crate::telemetry::init(cli.log_format);
    let res = execute(cli).await;
    if let Err(e) = &res {
        let line = format!("error: {e}\n");
        match &logs {
            // A full queue (a flood, or stderr stalled): wait for room once, then try again.
            Some(l) => {
                if !l.line(&line) {
                    l.wait(crate::telemetry::background::FLUSH_WAIT);
                    l.line(&line);
                }
            }
            None => eprint!("{line}"),
        }
    }
    drop(logs);
    res.is_ok()
}

pub async fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Crds => {
            print!("{}", crate::api::crds_yaml()?);
            Ok(())
        }
        Command::Certs(a) => {
            let ca_key = a.dir.join("ca.key");
            if ca_key.exists() && !a.force {
                return Err(Error::Config(format!(
                    "{} exists: a new CA would no longer match every caBundle and pod that trusts the old one; use --force to replace it",
                    ca_key.display()
                )));
            }
            let mut sans = certs::default_sans();
            for s in a.sans {
                certs::check_san(&s).map_err(|e| Error::Config(format!("--san: {e}")))?;
                if !sans.contains(&s) {
                    sans.push(s);
                }
            }
            let validity = certs::Validity::days(a.ca_validity_days, a.cert_validity_days)?;
            let bundle = certs::generate_for(&sans, validity)?;
            certs::write_dir(&a.dir, &bundle)?;
            eprintln!(
                "wrote ca.crt, ca.key, tls.crt, tls.key to {} for {} (CA valid {} days, serving certificate {} days)",
                a.dir.display(),
                sans.join(", "),
                a.ca_validity_days,
                a.cert_validity_days
            );
            Ok(())
        }
        Command::WebhookConfig(a) => {
            let target = match (&a.url, &a.service) {
                (Some(u), None) => webhook_config::Target::url(u)?,
                (None, Some(s)) => webhook_config::Target::service(s)?,
                _ => {
                    return Err(Error::Config(
                        "give exactly one of --url URL (e.g. https://<your-ip>:8443/mutate/pods) or --service NAMESPACE/NAME (in-cluster)".into(),
                    ))
                }
            };
            let ca = std::fs::read_to_string(&a.ca_file).map_err(|e| Error::io(&a.ca_file, e))?;
            if !ca.contains("BEGIN CERTIFICATE") {
                return Err(Error::Config(format!(
                    "{} holds no PEM certificate",
                    a.ca_file.display()
                )));
            }
            let guard_target = match &a.guard_url {
                Some(u) => webhook_config::Target::url(u)?,
                None => target.guard()?,
            };
            let mwc = webhook_config::build(&a.name, &target, &ca, &a.operator_namespace);
            let vwc = webhook_config::build_guard(
                &a.name,
                &guard_target,
                &ca,
                &a.operator_namespace,
                a.guard_timeout_seconds,
            )?;
            print!("{}", webhook_config::to_yaml_all(&mwc, &vwc)?);
            Ok(())
        }
        Command::Webhook(mut a) => {
            let objects = StaticObjects::from_files(&a.objects)?;
            if objects.singletons.is_empty() && !a.objects.is_empty() {
                tracing::warn!(
                    files = ?a.objects,
                    "--objects: no StatefulSingleton in these files (other kinds are ignored), so no pod will be gated"
                );
            } else {
                tracing::info!(singletons = objects.singletons.len(), "loaded objects");
            }
            if a.tls.tls_cert_file.is_none() && !a.tls.tls_self_signed {
                tracing::info!("no certificate given: using a self-signed one made in memory (clients need -k or the CA)");
                a.tls.tls_self_signed = true;
            }
            server::run_webhook(a.tls.server_config()?, Arc::new(objects)).await
        }
        Command::Run(a) => {
            let cfg = a.run_config()?;
            // Certificate files: refuse a CA the agents could not use before touching the cluster.
            if matches!(cfg.server.tls, server::TlsMode::Files { .. }) {
                server::agent_ca(&cfg.server, &server::Tls::new(&cfg.server.tls)?)?;
            }
            let client = a.client().await?;
            crate::runtime::run(cfg, client, server::shutdown_signal()).await
        }
        Command::Agent(a) => {
            // First of all: the agent is PID 1 of its container, where SIGTERM without a
            // handler is ignored.
            let stop = crate::agent::stop_signal()
                .map_err(|e| Error::Config(format!("installing signal handlers: {e}")))?;
            let cfg = crate::agent::AgentConfig {
                operator_url: a.operator_url,
                ca: a.ca,
                token_file: a.token_file,
                pod_uid: a.pod_uid.filter(|u| !u.is_empty()),
                poll_seconds: a.poll_seconds.clamp(1, 30),
                max_backoff: Duration::from_secs(10),
                give_up_after: (a.give_up_seconds > 0)
                    .then(|| Duration::from_secs(a.give_up_seconds)),
            };
            let mode = match (a.signal_file, a.assignment_file, a.epoch_file) {
                (Some(p), _, _) => crate::agent::Mode::Signal(p),
                (None, Some(file), _) => crate::agent::Mode::Assignment {
                    file,
                    once: a.exit_when_assigned,
                },
                (None, None, Some(e)) => crate::agent::Mode::OnceWithEpoch(e),
                (None, None, None) => crate::agent::Mode::Once,
            };
            match crate::agent::run_until(cfg, mode, stop).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    let e = Error::Agent(e.to_string());
                    crate::agent::write_termination_message(
                        std::path::Path::new(crate::agent::TERMINATION_LOG),
                        &format!("error: {e}"),
                    );
                    Err(e)
                }
            }
        }
    }
}
