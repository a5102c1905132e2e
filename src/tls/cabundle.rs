//! Keep a MutatingWebhookConfiguration's `caBundle` equal to the CA we serve with.
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::Client;

use crate::Result;

/// The configuration with every webhook's caBundle set to `ca_pem`, or None when it
/// already is (no write needed).
pub fn with_ca_bundle(
    mwc: &MutatingWebhookConfiguration,
    ca_pem: &str,
) -> Option<MutatingWebhookConfiguration> {
    let want = ByteString(ca_pem.as_bytes().to_vec());
    let mut out = mwc.clone();
    let mut changed = false;
    for wh in out.webhooks.iter_mut().flatten() {
        if wh.client_config.ca_bundle.as_ref() != Some(&want) {
            wh.client_config.ca_bundle = Some(want.clone());
            changed = true;
        }
    }
    changed.then_some(out)
}

/// Make the named configuration trust `ca_pem`. The write is a replace carrying the
/// resourceVersion we read, so a concurrent change makes it fail with 409; we then
/// re-read and retry. Returns whether a write happened.
pub async fn ensure_ca_bundle(client: Client, name: &str, ca_pem: &str) -> Result<bool> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
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
    loop {
        match ensure_ca_bundle(client.clone(), &name, &ca_pem).await {
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
