//! The MutatingWebhookConfiguration that registers `/mutate/pods`.
use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::ByteString;

use crate::{Error, Result};

pub const DEFAULT_NAME: &str = "kube-standby";
pub const WEBHOOK_NAME: &str = "pods.kube-standby.paia.tech";
pub const PATH: &str = "/mutate/pods";

/// Where the API server reaches the webhook.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A URL, e.g. `https://127.0.0.1:8443/mutate/pods` for local development.
    Url(String),
    /// A Service `namespace/name` (port 443, path `/mutate/pods`).
    Service { namespace: String, name: String },
}

impl Target {
    /// Parse `--service NAMESPACE/NAME`.
    pub fn service(s: &str) -> Result<Self> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Target::Service {
                    namespace: ns.into(),
                    name: name.into(),
                })
            }
            _ => Err(Error::Config(format!(
                "--service wants NAMESPACE/NAME, got {s:?}"
            ))),
        }
    }

    pub fn url(u: &str) -> Result<Self> {
        if !u.starts_with("https://") {
            return Err(Error::Config(format!(
                "--url must be https:// (the API server only calls webhooks over TLS), got {u:?}"
            )));
        }
        Ok(Target::Url(u.into()))
    }
}

/// Build the configuration. `operator_namespace` is excluded from interception, as is
/// kube-system, so the operator can never block its own pods.
pub fn build(
    name: &str,
    target: &Target,
    ca_pem: &str,
    operator_namespace: &str,
) -> MutatingWebhookConfiguration {
    let client_config = match target {
        Target::Url(u) => WebhookClientConfig {
            url: Some(u.clone()),
            ..Default::default()
        },
        Target::Service { namespace, name } => WebhookClientConfig {
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(PATH.into()),
                port: Some(443),
            }),
            ..Default::default()
        },
    };
    let mut excluded = vec!["kube-system".to_string()];
    if operator_namespace != "kube-system" {
        excluded.push(operator_namespace.to_string());
    }
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "kube-standby".to_string(),
            )])),
            ..Default::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: WEBHOOK_NAME.into(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            timeout_seconds: Some(5),
            reinvocation_policy: Some("IfNeeded".into()),
            // Pods admitted while the operator is down are detected and handled by the
            // StatefulSingleton controller, so an outage must not block every pod.
            failure_policy: Some("Ignore".into()),
            match_policy: Some("Equivalent".into()),
            client_config: WebhookClientConfig {
                ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
                ..client_config
            },
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["".into()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".into(),
                    operator: "NotIn".into(),
                    values: Some(excluded),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }]),
    }
}

pub fn to_yaml(mwc: &MutatingWebhookConfiguration) -> Result<String> {
    Ok(serde_yaml::to_string(mwc)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_target_parsing() {
        assert_eq!(
            Target::service("ops/kube-standby").unwrap(),
            Target::Service {
                namespace: "ops".into(),
                name: "kube-standby".into()
            }
        );
        for bad in ["nonamespace", "/x", "x/", "a/b/c"] {
            assert!(Target::service(bad).is_err(), "{bad}");
        }
        assert!(Target::url("http://x").is_err());
    }

    #[test]
    fn registration_fields() {
        let m = build(
            "kube-standby",
            &Target::Url("https://127.0.0.1:8443/mutate/pods".into()),
            "CA",
            "ops",
        );
        let wh = &m.webhooks.as_ref().unwrap()[0];
        assert_eq!(wh.admission_review_versions, vec!["v1"]);
        assert_eq!(wh.side_effects, "None");
        assert_eq!(wh.timeout_seconds, Some(5));
        assert_eq!(wh.reinvocation_policy.as_deref(), Some("IfNeeded"));
        let rule = &wh.rules.as_ref().unwrap()[0];
        assert_eq!(
            rule.operations.as_ref().unwrap(),
            &vec!["CREATE".to_string()]
        );
        assert_eq!(rule.resources.as_ref().unwrap(), &vec!["pods".to_string()]);
        let sel = &wh
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(sel.operator, "NotIn");
        assert_eq!(
            sel.values.as_ref().unwrap(),
            &vec!["kube-system".to_string(), "ops".to_string()]
        );
        let y = to_yaml(&m).unwrap();
        // caBundle is base64 on the wire.
        assert!(y.contains("caBundle: Q0E="), "{y}");
    }
}
