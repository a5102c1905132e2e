//! Keep a MutatingWebhookConfiguration's (and the busy guard's
//! ValidatingWebhookConfiguration's) `caBundle` trusting the CA we serve with.
//!
//! A CA rotation must not break admission while replicas with the old CA still serve: the
//! bundle is our CA first, then up to [`KEEP_PREVIOUS`] other CAs it already held that have
//! not expired (as Kubewarden keeps old and new CA during a rotation). Expired or
//! unreadable entries are dropped.
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

/// How many other, still valid CAs a bundle keeps after ours.
pub const KEEP_PREVIOUS: usize = 2;

/// The PEM certificate blocks of a bundle, each with its trailing newline.
fn pem_blocks(bundle: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = vec![];
    let mut rest = bundle;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let stop = start + end + END.len();
        out.push(format!("{}\n", &rest[start..stop]));
        rest = &rest[stop..];
    }
    out
}

/// The bundle to publish: `ca_pem` first, then the still valid other CAs of `current`.
pub fn merged_bundle(current: Option<&[u8]>, ca_pem: &str, now_unix: i64) -> String {
    let ours = pem_blocks(ca_pem);
    let mut out = if ours.is_empty() {
        ca_pem.to_string()
    } else {
        ours.concat()
    };
    let previous = current
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(pem_blocks)
        .unwrap_or_default();
    let valid = |pem: &String| crate::certs::pem_not_after_unix(pem).is_ok_and(|t| t > now_unix);
    for old in previous
        .into_iter()
        .filter(|p| !ours.contains(p) && valid(p))
        .take(KEEP_PREVIOUS)
    {
        out.push_str(&old);
    }
    out
}

/// The configuration with every webhook's caBundle trusting `ca_pem` (see
/// [`merged_bundle`]), or None when it already does (no write needed).
pub fn with_ca_bundle<K: WebhookConfigKind>(config: &K, ca_pem: &str) -> Option<K> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let mut out = config.clone();
    let mut changed = false;
    for cc in out.client_configs() {
        let current = cc.ca_bundle.as_ref().map(|b| b.0.as_slice());
        let want = ByteString(merged_bundle(current, ca_pem, now).into_bytes());
        if cc.ca_bundle.as_ref() != Some(&want) {
            cc.ca_bundle = Some(want);
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

    fn expired_ca() -> String {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().pem()
    }

    /// During a CA rotation the old CA stays trusted next to the new one (ours first);
    /// expired CAs and entries beyond KEEP_PREVIOUS are dropped; a repeat is a no-op.
    #[test]
    fn a_rotation_keeps_the_previous_valid_cas() {
        let ca = |_| crate::certs::generate(&["x".into()]).unwrap().ca_pem;
        let (old, new) = (ca(0), ca(1));
        let expired = expired_ca();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let current = format!("{old}{expired}");
        let got = merged_bundle(Some(current.as_bytes()), &new, now);
        assert_eq!(got, format!("{new}{old}"));
        // Applied to the configuration: one write, then none.
        let updated = with_ca_bundle(&mwc(Some(&current)), &new).unwrap();
        assert!(with_ca_bundle(&updated, &new).is_none());
        // Ours is never listed twice; at most KEEP_PREVIOUS others.
        let many: Vec<String> = (2..6).map(ca).collect();
        let current = format!("{new}{}", many.concat());
        let got = merged_bundle(Some(current.as_bytes()), &new, now);
        assert_eq!(got.matches("BEGIN CERTIFICATE").count(), 1 + KEEP_PREVIOUS);
        assert!(got.starts_with(&new) && got.matches(new.as_str()).count() == 1);
        // Once the old CA has expired it goes.
        let later = crate::certs::pem_not_after_unix(&old).unwrap() + 1;
        let got = merged_bundle(Some(old.as_bytes()), &new, later);
        assert_eq!(got, new);
    }
}
