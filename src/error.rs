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
            Error::Kube(_) => "kube",
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

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

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
