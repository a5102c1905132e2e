//! Keep a MutatingWebhookConfiguration's (and the busy guard's
//! ValidatingWebhookConfiguration's) `caBundle` equal to the CA we serve with.
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::Client;

use crate::Result;

/// A webhook configuration kind whose client configs carry a caBundle.
pub trait WebhookConfigKind:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig>;
}

impl WebhookConfigKind for MutatingWebhookConfiguration {
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig> {
        self.webhooks
            .iter_mut()
            .flatten()
            .map(|w| &mut w.client_config)
            .collect()
    }
}

impl WebhookConfigKind for ValidatingWebhookConfiguration {
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig> {
        self.webhooks
            .iter_mut()
            .flatten()
            .map(|w| &mut w.client_config)
            .collect()
    }
}

/// The configuration with every webhook's caBundle set to `ca_pem`, or None when it
/// already is (no write needed).
pub fn with_ca_bundle<K: WebhookConfigKind>(config: &K, ca_pem: &str) -> Option<K> {
    let want = ByteString(ca_pem.as_bytes().to_vec());
    let mut out = config.clone();
    let mut changed = false;
    for cc in out.client_configs() {
        if cc.ca_bundle.as_ref() != Some(&want) {
            cc.ca_bundle = Some(want.clone());
            changed = true;
        }
    }
    changed.then_some(out)
}

/// Make the named MutatingWebhookConfiguration trust `ca_pem` (see [`ensure_ca_bundle_of`]).
pub async fn ensure_ca_bundle(client: Client, name: &str, ca_pem: &str) -> Result<bool> {
    ensure_ca_bundle_of::<MutatingWebhookConfiguration>(client, name, ca_pem).await
}

/// Make the named configuration trust `ca_pem`. The write is a replace carrying the
/// resourceVersion we read, so a concurrent change makes it fail with 409; we then
/// re-read and retry. Returns whether a write happened.
pub async fn ensure_ca_bundle_of<K: WebhookConfigKind>(
    client: Client,
    name: &str,
    ca_pem: &str,
) -> Result<bool> {
    let api: Api<K> = Api::all(client);
    let mut attempt = 0;
    loop {
        let current = api.get(name).await?;
        let Some(updated) = with_ca_bundle(&current, ca_pem) else {
            return Ok(false);
        };
        match api
            .replace(
                name,
                &PostParams {
                    field_manager: Some(crate::MANAGER.into()),
                    ..Default::default()
                },
                &updated,
            )
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => {
                attempt += 1;
                tracing::debug!(attempt, "caBundle write conflicted; retrying");
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Re-assert the caBundle periodically (someone may re-apply the configuration).
pub async fn keep_ca_bundle(client: Client, name: String, ca_pem: String, every: Duration) {
    keep_ca_bundle_of::<MutatingWebhookConfiguration>(client, name, ca_pem, every).await
}

/// [`keep_ca_bundle`] for any webhook configuration kind; a configuration that does not
/// exist (e.g. the busy guard's, not applied) is logged at debug level only.
pub async fn keep_ca_bundle_of<K: WebhookConfigKind>(
    client: Client,
    name: String,
    ca_pem: String,
    every: Duration,
) {
    loop {
        match ensure_ca_bundle_of::<K>(client.clone(), &name, &ca_pem).await {
            Err(crate::Error::Kube(kube::Error::Api(s))) if s.code == 404 => {
                tracing::debug!(webhook_config = %name, kind = %K::kind(&()), "not found; caBundle not kept")
            }
            Ok(true) => tracing::info!(webhook_config = %name, "caBundle updated"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(webhook_config = %name, error = %e, "could not update caBundle")
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, WebhookClientConfig};

    fn mwc(ca: Option<&str>) -> MutatingWebhookConfiguration {
        MutatingWebhookConfiguration {
            webhooks: Some(vec![MutatingWebhook {
                name: "a.example".into(),
                client_config: WebhookClientConfig {
                    ca_bundle: ca.map(|c| ByteString(c.as_bytes().to_vec())),
                    ..Default::default()
                },
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn sets_missing_or_stale_bundle_and_leaves_current_alone() {
        let out = with_ca_bundle(&mwc(None), "CA").unwrap();
        assert_eq!(
            out.webhooks.unwrap()[0].client_config.ca_bundle,
            Some(ByteString(b"CA".to_vec()))
        );
        assert!(with_ca_bundle(&mwc(Some("OLD")), "CA").is_some());
        assert!(with_ca_bundle(&mwc(Some("CA")), "CA").is_none());
    }
}
