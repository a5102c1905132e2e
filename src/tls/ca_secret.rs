//! The self-signed CA kept in a Secret of the operator's namespace, so it survives restarts
//! and is shared by every replica: pods admitted earlier carry this CA, and their agents must
//! still reach the operator after it restarts.
//!
//! Invariants: the Secret is created once (a replica that loses the create race reads the
//! winner's); an existing Secret is never overwritten; a Secret without a usable CA is an
//! error that names it, never silently replaced (that would strand every waiting agent).
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::Client;

use crate::{certs, Error, Result};

pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";

/// A CA certificate and its key, PEM.
#[derive(Clone, Debug, PartialEq)]
pub struct CaPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Read the CA out of a Secret's data.
pub fn from_secret(s: &Secret) -> Result<CaPair> {
    let name = s.metadata.name.clone().unwrap_or_default();
    let field = |k: &str| -> Result<String> {
        let bytes = s
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .ok_or_else(|| Error::Config(format!("CA Secret {name} has no {k}")))?;
        String::from_utf8(bytes.0.clone())
            .map_err(|_| Error::Config(format!("CA Secret {name}: {k} is not UTF-8 PEM")))
    };
    let pair = CaPair {
        cert_pem: field(CA_CERT_KEY)?,
        key_pem: field(CA_KEY_KEY)?,
    };
    if !pair.cert_pem.contains("BEGIN CERTIFICATE") || !pair.key_pem.contains("PRIVATE KEY") {
        return Err(Error::Config(format!(
            "CA Secret {name} does not hold a PEM certificate and key"
        )));
    }
    Ok(pair)
}

/// The Secret that holds `pair`.
pub fn to_secret(namespace: &str, name: &str, pair: &CaPair) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                crate::MANAGER.to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                CA_CERT_KEY.into(),
                ByteString(pair.cert_pem.clone().into_bytes()),
            ),
            (
                CA_KEY_KEY.into(),
                ByteString(pair.key_pem.clone().into_bytes()),
            ),
        ])),
        ..Default::default()
    }
}

/// The CA of Secret `namespace/name`, creating it (and the Secret) the first time.
pub async fn load_or_create(client: Client, namespace: &str, name: &str) -> Result<CaPair> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    if let Some(s) = api.get_opt(name).await? {
        return from_secret(&s);
    }
    let fresh = certs::generate(&["kube-standby".to_string()])?;
    let pair = CaPair {
        cert_pem: fresh.ca_pem,
        key_pem: fresh.ca_key_pem,
    };
    match api
        .create(&PostParams::default(), &to_secret(namespace, name, &pair))
        .await
    {
        Ok(_) => {
            tracing::info!(namespace, name, "created the CA Secret");
            Ok(pair)
        }
        // Another replica created it first: use theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => from_secret(&api.get(name).await?),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_broken_secrets() {
        let b = certs::generate(&["x".into()]).unwrap();
        let pair = CaPair {
            cert_pem: b.ca_pem,
            key_pem: b.ca_key_pem,
        };
        let s = to_secret("ns", "ca", &pair);
        assert_eq!(from_secret(&s).unwrap(), pair);
        let mut missing = s.clone();
        missing.data.as_mut().unwrap().remove(CA_KEY_KEY);
        let e = from_secret(&missing).unwrap_err().to_string();
        assert!(e.contains("ca.key"), "{e}");
        let mut junk = s;
        junk.data
            .as_mut()
            .unwrap()
            .insert(CA_CERT_KEY.into(), ByteString(b"junk".to_vec()));
        assert!(from_secret(&junk).is_err());
    }
}
