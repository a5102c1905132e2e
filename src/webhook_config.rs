//! The MutatingWebhookConfiguration that registers `/mutate/pods`, and the
//! ValidatingWebhookConfiguration that registers the busy guard's `/validate/pods`.
use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::ByteString;

use crate::{Error, Result};

pub const DEFAULT_NAME: &str = "kube-standby";
pub const WEBHOOK_NAME: &str = "pods.kube-standby.paia.tech";
pub const PATH: &str = "/mutate/pods";
/// The busy guard's webhook.
pub const GUARD_WEBHOOK_NAME: &str = "busy-guard.kube-standby.paia.tech";
pub const GUARD_PATH: &str = "/validate/pods";
/// Default `timeoutSeconds` of the busy guard: short, and failing open.
pub const DEFAULT_GUARD_TIMEOUT_SECONDS: i32 = 2;

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

impl Target {
    /// The busy guard's target: the same Service on `/validate/pods`; for a URL ending in
    /// `/mutate/pods`, the same URL ending in `/validate/pods`.
    pub fn guard(&self) -> Result<Target> {
        match self {
            Target::Service { .. } => Ok(self.clone()),
            Target::Url(u) => match u.strip_suffix(PATH) {
                Some(base) => Ok(Target::Url(format!("{base}{GUARD_PATH}"))),
                None => Err(Error::Config(format!(
                    "--url {u:?} does not end with {PATH}: give the busy guard's URL with --guard-url"
                ))),
            },
        }
    }
}

/// The busy guard's registration: pod DELETE and `pods/eviction` CREATE of pods carrying
/// the guard label only (objectSelector), failing open (`Ignore`) after `timeout_seconds`.
pub fn build_guard(
    name: &str,
    target: &Target,
    ca_pem: &str,
    operator_namespace: &str,
    timeout_seconds: i32,
) -> Result<ValidatingWebhookConfiguration> {
    if !(1..=30).contains(&timeout_seconds) {
        return Err(Error::Config(format!(
            "--guard-timeout-seconds must be within 1-30 (the API server's limit), got {timeout_seconds}"
        )));
    }
    let m = build(name, target, ca_pem, operator_namespace);
    let client_config = match target {
        Target::Url(u) => WebhookClientConfig {
            url: Some(u.clone()),
            ..Default::default()
        },
        Target::Service { namespace, name } => WebhookClientConfig {
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(GUARD_PATH.into()),
                port: Some(443),
            }),
            ..Default::default()
        },
    };
    let namespace_selector = m
        .webhooks
        .as_ref()
        .and_then(|w| w.first())
        .and_then(|w| w.namespace_selector.clone());
    let rule = |ops: &str, resource: &str| RuleWithOperations {
        api_groups: Some(vec!["".into()]),
        api_versions: Some(vec!["v1".into()]),
        operations: Some(vec![ops.into()]),
        resources: Some(vec![resource.into()]),
        scope: Some("Namespaced".into()),
    };
    Ok(ValidatingWebhookConfiguration {
        metadata: m.metadata,
        webhooks: Some(vec![ValidatingWebhook {
            name: GUARD_WEBHOOK_NAME.into(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            timeout_seconds: Some(timeout_seconds),
            // An operator outage must never block deletes in the cluster: the controllers'
            // own protections stay as the second line.
            failure_policy: Some("Ignore".into()),
            match_policy: Some("Equivalent".into()),
            client_config: WebhookClientConfig {
                ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
                ..client_config
            },
            rules: Some(vec![
                rule("DELETE", "pods"),
                rule("CREATE", "pods/eviction"),
            ]),
            namespace_selector,
            object_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    crate::api::probe::BUSY_GUARD_LABEL.to_string(),
                    "true".to_string(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }]),
    })
}

/// Both configurations as one multi-document YAML stream (mutating first).
pub fn to_yaml_all(
    mwc: &MutatingWebhookConfiguration,
    vwc: &ValidatingWebhookConfiguration,
) -> Result<String> {
    Ok(format!(
        "{}---\n{}",
        serde_yaml::to_string(mwc)?,
        serde_yaml::to_string(vwc)?
    ))
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

    #[test]
    fn guard_registration_fields() {
        let url = Target::Url("https://127.0.0.1:8443/mutate/pods".into());
        let g = url.guard().unwrap();
        assert_eq!(
            g,
            Target::Url("https://127.0.0.1:8443/validate/pods".into())
        );
        assert!(Target::Url("https://x/other".into()).guard().is_err());
        let svc = Target::service("ops/kube-standby").unwrap();
        let v = build_guard("kube-standby", &svc.guard().unwrap(), "CA", "ops", 2).unwrap();
        let wh = &v.webhooks.as_ref().unwrap()[0];
        assert_eq!(wh.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(wh.timeout_seconds, Some(2));
        assert_eq!(wh.side_effects, "None");
        assert_eq!(wh.admission_review_versions, vec!["v1"]);
        let svc_ref = wh.client_config.service.as_ref().unwrap();
        assert_eq!(svc_ref.path.as_deref(), Some("/validate/pods"));
        let rules = wh.rules.as_ref().unwrap();
        let got: Vec<(String, String)> = rules
            .iter()
            .map(|r| {
                (
                    r.operations.as_ref().unwrap()[0].clone(),
                    r.resources.as_ref().unwrap()[0].clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("DELETE".to_string(), "pods".to_string()),
                ("CREATE".to_string(), "pods/eviction".to_string())
            ]
        );
        assert_eq!(
            wh.object_selector.as_ref().unwrap().match_labels,
            Some(BTreeMap::from([(
                "kube-standby.dev/busy-guard".to_string(),
                "true".to_string()
            )]))
        );
        let sel = &wh
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            sel.values.as_ref().unwrap(),
            &vec!["kube-system".to_string(), "ops".to_string()]
        );
        for bad in [0, 31, -1] {
            assert!(build_guard("k", &svc, "CA", "ops", bad).is_err(), "{bad}");
        }
    }
}
