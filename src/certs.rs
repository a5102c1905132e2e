//! Certificate generation with rcgen: a CA and a serving certificate signed by it.
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::{Error, Result};

/// Common name of the CA we make (also used to re-issue from a stored CA).
const CA_NAME: &str = "kube-standby CA";

/// Default SANs of the serving certificate.
pub fn default_sans() -> Vec<String> {
    vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "kube-standby.kube-standby.svc".into(),
        "kube-standby.kube-standby.svc.cluster.local".into(),
    ]
}

/// PEM material: a CA and a serving certificate/key. `cert_pem` holds the leaf first,
/// then any intermediates.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub ca_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

fn ca_params(common_name: &str) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn leaf_params(sans: &[String]) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(sans.to_vec())?;
    p.distinguished_name.push(
        DnType::CommonName,
        sans.first()
            .cloned()
            .unwrap_or_else(|| "kube-standby".into()),
    );
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(p)
}

/// A fresh CA and a serving certificate for `sans` (DNS names or IP addresses).
pub fn generate(sans: &[String]) -> Result<Bundle> {
    if sans.is_empty() {
        return Err(Error::Config(
            "at least one DNS name or IP is needed for the certificate".into(),
        ));
    }
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params(CA_NAME)?, ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params(sans)?.signed_by(&leaf_key, &ca)?;
    Ok(Bundle {
        ca_pem: ca.pem(),
        ca_key_pem,
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// A new serving certificate for `sans`, signed by an existing CA (as kept in the CA Secret).
/// The CA's certificate is not parsed: the issuer is rebuilt from the same parameters and
/// key, so the leaf chains to the stored `ca_pem` exactly as to a freshly made one.
pub fn issue(ca_pem: &str, ca_key_pem: &str, sans: &[String]) -> Result<Bundle> {
    if sans.is_empty() {
        return Err(Error::Config(
            "at least one DNS name or IP is needed for the certificate".into(),
        ));
    }
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = rcgen::Issuer::new(ca_params(CA_NAME)?, ca_key);
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params(sans)?.signed_by(&leaf_key, &issuer)?;
    Ok(Bundle {
        ca_pem: ca_pem.to_string(),
        ca_key_pem: ca_key_pem.to_string(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// Like [`generate`], but the serving certificate is signed by an intermediate CA, and
/// `cert_pem` carries leaf + intermediate (as cert-manager writes `tls.crt`).
pub fn generate_with_intermediate(sans: &[String]) -> Result<Bundle> {
    let root_key = KeyPair::generate()?;
    let ca_key_pem = root_key.serialize_pem();
    let root = CertifiedIssuer::self_signed(ca_params("kube-standby root CA")?, root_key)?;
    let mid_key = KeyPair::generate()?;
    let mid =
        CertifiedIssuer::signed_by(ca_params("kube-standby intermediate CA")?, mid_key, &root)?;
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params(sans)?.signed_by(&leaf_key, &mid)?;
    Ok(Bundle {
        ca_pem: root.pem(),
        ca_key_pem,
        cert_pem: format!("{}{}", leaf.pem(), mid.pem()),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// Write `ca.crt`, `ca.key`, `tls.crt`, `tls.key` into `dir` (keys are mode 0600).
/// `tls.crt` is the full chain, leaf first and the CA last, so a server started with only
/// `--tls-cert-file/--tls-key-file` knows the CA its agents must trust.
pub fn write_dir(dir: &Path, b: &Bundle) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let chain = full_chain(b);
    for (name, content, secret) in [
        ("ca.crt", &b.ca_pem, false),
        ("ca.key", &b.ca_key_pem, true),
        ("tls.crt", &chain, false),
        ("tls.key", &b.key_pem, true),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, content).map_err(|e| Error::io(&path, e))?;
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io(&path, e))?;
        }
        #[cfg(not(unix))]
        let _ = secret;
    }
    Ok(())
}

/// The served chain with the CA appended (leaf, intermediates, CA), unless it is there.
pub fn full_chain(b: &Bundle) -> String {
    if b.cert_pem.contains(b.ca_pem.trim()) {
        return b.cert_pem.clone();
    }
    let mut chain = b.cert_pem.clone();
    if !chain.ends_with('\n') {
        chain.push('\n');
    }
    chain.push_str(&b.ca_pem);
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_pem_material() {
        let b = generate(&default_sans()).unwrap();
        assert!(b.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(b.key_pem.contains("PRIVATE KEY"));
        assert_ne!(b.ca_pem, b.cert_pem);
        let chained = generate_with_intermediate(&["localhost".into()]).unwrap();
        assert_eq!(chained.cert_pem.matches("BEGIN CERTIFICATE").count(), 2);
    }

    /// A leaf issued later from the stored CA verifies against that CA, as the agents of
    /// pods admitted before a restart hold it.
    #[test]
    fn a_leaf_issued_from_a_stored_ca_chains_to_it() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let first = generate(&default_sans()).unwrap();
        let again = issue(&first.ca_pem, &first.ca_key_pem, &["localhost".into()]).unwrap();
        assert_eq!(again.ca_pem, first.ca_pem);
        assert_ne!(again.cert_pem, first.cert_pem);
        let der = |pem: &str| -> CertificateDer<'static> {
            rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap()
        };
        let verify = |ca: &str, leaf: &str| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(der(ca)).unwrap();
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            v.verify_server_cert(
                &der(leaf),
                &[],
                &ServerName::try_from("localhost").unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_ok()
        };
        assert!(verify(&first.ca_pem, &again.cert_pem));
        let other = generate(&default_sans()).unwrap();
        assert!(
            !verify(&other.ca_pem, &again.cert_pem),
            "the check can fail"
        );
        assert!(issue(&first.ca_pem, "not a key", &["x".into()]).is_err());
    }

    #[test]
    fn empty_sans_is_an_error() {
        assert!(generate(&[]).is_err());
    }

    #[test]
    fn writes_four_files_with_private_keys_locked() {
        let d = tempfile::tempdir().unwrap();
        write_dir(d.path(), &generate(&default_sans()).unwrap()).unwrap();
        for f in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
            assert!(d.path().join(f).exists(), "{f}");
        }
        let chain = std::fs::read_to_string(d.path().join("tls.crt")).unwrap();
        let ca = std::fs::read_to_string(d.path().join("ca.crt")).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(chain.ends_with(&ca), "tls.crt ends in the CA");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.path().join("tls.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
