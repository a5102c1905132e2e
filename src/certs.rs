//! Certificate generation with rcgen: a CA and a serving certificate signed by it.
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::{Error, Result};

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
    let ca = CertifiedIssuer::self_signed(ca_params("kube-standby CA")?, ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params(sans)?.signed_by(&leaf_key, &ca)?;
    Ok(Bundle {
        ca_pem: ca.pem(),
        ca_key_pem,
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
pub fn write_dir(dir: &Path, b: &Bundle) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, content, secret) in [
        ("ca.crt", &b.ca_pem, false),
        ("ca.key", &b.ca_key_pem, true),
        ("tls.crt", &b.cert_pem, false),
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
