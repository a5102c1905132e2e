//! The library's error type. Every variant has a stable metric label.
use thiserror::Error;

#[derive(Error, Debug)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),

    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),

    #[error("YAML error: {0}")]
    Yaml(#[from] serde_yaml::Error),

    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("TLS error: {0}")]
    Tls(String),

    #[error("certificate generation failed: {0}")]
    CertGen(#[from] rcgen::Error),

    #[error("invalid {kind} {name}: {reason}")]
    InvalidObject {
        kind: &'static str,
        name: String,
        reason: String,
    },

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("{0}; exiting so the process is restarted")]
    TaskStopped(String),

    /// The in-pod agent's own error (one line, as the container status shows it).
    #[error("kube-standby agent: {0}")]
    Agent(String),
}

impl Error {
    /// A short, stable label for metrics (`error` label on reconcile errors).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(e) => api_error_class(e),
            Error::Json(_) => "json",
            Error::Yaml(_) => "yaml",
            Error::Io { .. } => "io",
            Error::Tls(_) => "tls",
            Error::CertGen(_) => "certgen",
            Error::InvalidObject { .. } => "invalid_object",
            Error::Config(_) => "config",
            Error::TaskStopped(_) => "task_stopped",
            Error::Agent(_) => "agent",
        }
    }

    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// A bounded class of an API error for metrics: what an operator can act on (a conflict
/// retries, a 403 needs RBAC, a transport error points at the network or the API server).
pub fn api_error_class(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) => match s.code {
            409 => "conflict",
            404 | 410 => "not_found",
            400 | 422 => "invalid",
            401 | 403 => "forbidden",
            429 | 500..=599 => "server",
            _ => "other",
        },
        kube::Error::HyperError(_)
        | kube::Error::Service(_)
        | kube::Error::ReadEvents(_)
        | kube::Error::HttpError(_)
        | kube::Error::RustlsTls(_)
        | kube::Error::UpgradeConnection(_) => "transport",
        kube::Error::Auth(_) => "forbidden",
        _ => "other",
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_labelled_by_a_bounded_class() {
        let api = |code: u16| {
            Error::Kube(kube::Error::Api(Box::new(
                kube::core::Status::failure("m", "r").with_code(code),
            )))
        };
        for (code, want) in [
            (409, "conflict"),
            (404, "not_found"),
            (410, "not_found"),
            (422, "invalid"),
            (400, "invalid"),
            (403, "forbidden"),
            (401, "forbidden"),
            (429, "server"),
            (503, "server"),
            (418, "other"),
        ] {
            assert_eq!(api(code).metric_label(), want, "{code}");
        }
        let transport = Error::Kube(kube::Error::ReadEvents(std::io::Error::other("reset")));
        assert_eq!(transport.metric_label(), "transport");
        let classes = [
            "conflict",
            "not_found",
            "invalid",
            "forbidden",
            "server",
            "transport",
            "other",
        ];
        // Never the old catch-all, never an unbounded value.
        for e in [api(409), api(599), transport] {
            assert!(classes.contains(&e.metric_label()));
        }
    }

    #[test]
    fn metric_labels_are_distinct() {
        let errs = [
            Error::Json(serde_json::from_str::<u8>("x").unwrap_err()),
            Error::Tls("x".into()),
            Error::Config("x".into()),
            Error::TaskStopped("x".into()),
            Error::io("/x", std::io::Error::other("x")),
            Error::InvalidObject {
                kind: "K",
                name: "n".into(),
                reason: "r".into(),
            },
        ];
        let labels: std::collections::BTreeSet<_> = errs.iter().map(|e| e.metric_label()).collect();
        assert_eq!(labels.len(), errs.len());
        assert!(errs[4].to_string().contains("/x"));
    }
}
