//! Certificate generation with rcgen: a CA and a serving certificate signed by it.
//! The CA is valid 10 years and serving certificates 1 year by default ([`Validity`]);
//! every subject alternative name must be a DNS name or an IP address ([`check_san`]).
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// How long what we issue is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// The CA (default 10 years).
    pub ca: Duration,
    /// Serving certificates (default 1 year); renewed in memory once a third of this is left.
    pub cert: Duration,
}

/// One day.
pub const DAY: Duration = Duration::from_secs(24 * 3600);

impl Default for Validity {
    fn default() -> Self {
        Validity {
            ca: DAY * 3650,
            cert: DAY * 365,
        }
    }
}

impl Validity {
    /// From whole days, as the `--*-validity-days` flags give them.
    pub fn days(ca_days: u32, cert_days: u32) -> Result<Self> {
        if ca_days == 0 || cert_days == 0 {
            return Err(Error::Config(
                "certificate validity must be at least 1 day".into(),
            ));
        }
        if cert_days > ca_days {
            return Err(Error::Config(format!(
                "the serving certificate ({cert_days} days) cannot outlive its CA ({ca_days} days)"
            )));
        }
        Ok(Validity {
            ca: DAY * ca_days,
            cert: DAY * cert_days,
        })
    }
}

/// Certificates start 5 minutes in the past, so a client whose clock is a little behind
/// accepts a fresh one.
const BACKDATE: Duration = Duration::from_secs(300);

fn set_validity(p: &mut CertificateParams, valid_for: Duration) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| Error::Config(format!("the system clock is before 1970: {e}")))?;
    let at = |d: Duration| -> Result<time::OffsetDateTime> {
        let secs = i64::try_from(d.as_secs())
            .map_err(|_| Error::Config(format!("certificate validity too long: {d:?}")))?;
        time::OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|e| Error::Config(format!("certificate validity out of range: {e}")))
    };
    p.not_before = at(now.saturating_sub(BACKDATE))?;
    p.not_after = at(now + valid_for)?;
    Ok(())
}

/// A subject alternative name must be an IP address or a DNS name (RFC 1123 labels of
/// letters, digits and `-`, at most 63 characters each and 253 in all; a leading `*.` is
/// allowed). Anything else is refused with a message naming it.
pub fn check_san(san: &str) -> Result<()> {
    if san.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let bad = |why: &str| {
        Err(Error::Config(format!(
            "subject alternative name {san:?} is neither an IP address nor a DNS name: {why}"
        )))
    };
    let name = san.strip_prefix("*.").unwrap_or(san);
    if name.is_empty() {
        return bad("it is empty");
    }
    if san.len() > 253 {
        return bad("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return bad("empty label (two dots, or a dot at either end)");
        }
        if label.len() > 63 {
            return bad("a label is longer than 63 characters");
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return bad(&format!(
                "{c:?} is not allowed (letters, digits, '-' and '.' only)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label starts or ends with '-'");
        }
    }
    Ok(())
}

fn check_sans(sans: &[String]) -> Result<()> {
    if sans.is_empty() {
        return Err(Error::Config(
            "at least one DNS name or IP is needed for the certificate".into(),
        ));
    }
    sans.iter().try_for_each(|s| check_san(s))
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

/// The parameters of a CA certificate named `common_name`, valid for `valid_for` from now.
pub(crate) fn ca_params(common_name: &str, valid_for: Duration) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    set_validity(&mut p, valid_for)?;
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn leaf_params(sans: &[String], valid_for: Duration) -> Result<CertificateParams> {
    check_sans(sans)?;
    let mut p = CertificateParams::new(sans.to_vec())?;
    set_validity(&mut p, valid_for)?;
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

/// A fresh CA and a serving certificate for `sans` (DNS names or IP addresses), valid
/// for the default [`Validity`].
pub fn generate(sans: &[String]) -> Result<Bundle> {
    generate_for(sans, Validity::default())
}

/// [`generate`] with the given validity.
pub fn generate_for(sans: &[String], validity: Validity) -> Result<Bundle> {
    check_sans(sans)?;
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params(CA_NAME, validity.ca)?, ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params(sans, validity.cert)?.signed_by(&leaf_key, &ca)?;
    Ok(Bundle {
        ca_pem: ca.pem(),
        ca_key_pem,
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// A new serving certificate for `sans`, signed by an existing CA (as kept in the CA Secret).
/// The CA's certificate is not parsed: the issuer is rebuilt from the same name and key,
/// so the leaf chains to the stored `ca_pem` exactly as to a freshly made one.
pub fn issue(ca_pem: &str, ca_key_pem: &str, sans: &[String]) -> Result<Bundle> {
    issue_for(ca_pem, ca_key_pem, sans, Validity::default().cert)
}

/// [`issue`] with a serving certificate valid for `valid_for`.
pub fn issue_for(
    ca_pem: &str,
    ca_key_pem: &str,
    sans: &[String],
    valid_for: Duration,
) -> Result<Bundle> {
    check_sans(sans)?;
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    // Only the name and key of the issuer go into the leaf; its own dates do not.
    let issuer = rcgen::Issuer::new(ca_params(CA_NAME, valid_for)?, ca_key);
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params(sans, valid_for)?.signed_by(&leaf_key, &issuer)?;
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
    let v = Validity::default();
    let root = CertifiedIssuer::self_signed(ca_params("kube-standby root CA", v.ca)?, root_key)?;
    let mid_key = KeyPair::generate()?;
    let mid = CertifiedIssuer::signed_by(
        ca_params("kube-standby intermediate CA", v.ca)?,
        mid_key,
        &root,
    )?;
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params(sans, v.cert)?.signed_by(&leaf_key, &mid)?;
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

/// `notAfter` of a DER certificate, in seconds since 1970 (read with a minimal DER walk:
/// Certificate → TBSCertificate → [version], serial, signature, issuer, validity).
pub fn not_after_unix(der: &[u8]) -> Result<i64> {
    let bad = |what: &str| Error::Tls(format!("cannot read the certificate's expiry: {what}"));
    let (tag, cert, _) = der_tlv(der).ok_or_else(|| bad("not DER"))?;
    if tag != 0x30 {
        return Err(bad("not a SEQUENCE"));
    }
    let (tag, mut tbs, _) = der_tlv(cert).ok_or_else(|| bad("no TBSCertificate"))?;
    if tag != 0x30 {
        return Err(bad("TBSCertificate is not a SEQUENCE"));
    }
    let mut next = || -> Result<(u8, &[u8])> {
        let (tag, content, rest) = der_tlv(tbs).ok_or_else(|| bad("truncated TBSCertificate"))?;
        tbs = rest;
        Ok((tag, content))
    };
    let (mut tag, _) = next()?;
    if tag == 0xa0 {
        // [0] EXPLICIT version
        tag = next()?.0;
    }
    if tag != 0x02 {
        return Err(bad("no serial number"));
    }
    next()?; // signature AlgorithmIdentifier
    next()?; // issuer
    let (tag, validity) = next()?;
    if tag != 0x30 {
        return Err(bad("no validity"));
    }
    let (_, _, rest) = der_tlv(validity).ok_or_else(|| bad("no notBefore"))?;
    let (tag, time, _) = der_tlv(rest).ok_or_else(|| bad("no notAfter"))?;
    let text = std::str::from_utf8(time).map_err(|_| bad("notAfter is not text"))?;
    let digits = |s: &str| -> Result<i64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("notAfter is not a time"));
        }
        s.parse::<i64>().map_err(|_| bad("notAfter is not a time"))
    };
    let (year, rest) = match tag {
        // UTCTime YYMMDDHHMMSSZ: 50..99 are 19xx.
        0x17 if text.len() == 13 => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        // GeneralizedTime YYYYMMDDHHMMSSZ
        0x18 if text.len() == 15 => (digits(&text[..4])?, &text[4..]),
        _ => return Err(bad("notAfter is neither UTCTime nor GeneralizedTime")),
    };
    if !rest.ends_with('Z') {
        return Err(bad("notAfter is not in UTC"));
    }
    let f = |i: usize| digits(&rest[i..i + 2]);
    let (month, day, h, m, s) = (f(0)?, f(2)?, f(4)?, f(6)?, f(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return Err(bad("notAfter is not a valid date"));
    }
    Ok(days_from_civil(year, month, day) * 86400 + h * 3600 + m * 60 + s)
}

/// One DER tag-length-value: (tag, content, the bytes after it).
fn der_tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `notAfter` of the first certificate of a PEM text, in seconds since 1970.
pub fn pem_not_after_unix(pem: &str) -> Result<i64> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| Error::Tls(format!("not a PEM certificate: {e}")))?;
    not_after_unix(&der)
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

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn ca_is_valid_ten_years_and_serving_certificates_one() {
        let b = generate(&default_sans()).unwrap();
        let day = 86400;
        let ca = pem_not_after_unix(&b.ca_pem).unwrap() - now();
        let leaf = pem_not_after_unix(&b.cert_pem).unwrap() - now();
        assert!((3650 * day - 60..=3650 * day + 60).contains(&ca), "{ca}");
        assert!((365 * day - 60..=365 * day + 60).contains(&leaf), "{leaf}");
        let again = issue(&b.ca_pem, &b.ca_key_pem, &["x".into()]).unwrap();
        let leaf = pem_not_after_unix(&again.cert_pem).unwrap() - now();
        assert!((365 * day - 60..=365 * day + 60).contains(&leaf), "{leaf}");
        // Chosen validities.
        let b = generate_for(&["x".into()], Validity::days(30, 7).unwrap()).unwrap();
        let ca = pem_not_after_unix(&b.ca_pem).unwrap() - now();
        let leaf = pem_not_after_unix(&b.cert_pem).unwrap() - now();
        assert!((30 * day - 60..=30 * day + 60).contains(&ca), "{ca}");
        assert!((7 * day - 60..=7 * day + 60).contains(&leaf), "{leaf}");
        let short = issue_for(&b.ca_pem, &b.ca_key_pem, &["x".into()], DAY * 2).unwrap();
        let leaf = pem_not_after_unix(&short.cert_pem).unwrap() - now();
        assert!((2 * day - 60..=2 * day + 60).contains(&leaf), "{leaf}");
        assert!(Validity::days(0, 1).is_err());
        assert!(Validity::days(10, 11).is_err(), "a leaf outliving its CA");
    }

    #[test]
    fn not_after_reads_both_time_encodings() {
        // 2049 is a UTCTime, 2050 and later a GeneralizedTime (RFC 5280 4.1.2.5).
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        for days in [30u32, 365 * 40] {
            let b = generate_for(&["x".into()], Validity::days(days, days).unwrap()).unwrap();
            let got = pem_not_after_unix(&b.cert_pem).unwrap() - now();
            let want = i64::from(days) * 86400;
            assert!((want - 60..=want + 60).contains(&got), "{days}: {got}");
        }
        assert!(not_after_unix(b"\x30\x03\x02\x01").is_err());
        assert!(pem_not_after_unix("nope").is_err());
    }

    #[test]
    fn sans_must_be_dns_names_or_ips() {
        for ok in [
            "localhost",
            "127.0.0.1",
            "::1",
            "kube-standby.kube-standby.svc",
            "*.example.com",
            "A1.example-2.com",
        ] {
            check_san(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "bad name!",
            "",
            "a..b",
            ".a",
            "a.",
            "-a.b",
            "a-.b",
            "under_score",
            "*",
            "a.*.b",
            "10.0.0.1/24",
            "ünïcode",
        ] {
            let e = check_san(bad).expect_err(bad).to_string();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        assert!(check_san(&"a".repeat(64)).is_err());
        assert!(
            check_san(&vec!["a".repeat(63); 5].join(".")).is_err(),
            "over 253"
        );
        let e = generate(&["localhost".into(), "bad name!".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"bad name!\""), "{e}");
        let b = generate(&default_sans()).unwrap();
        assert!(issue(&b.ca_pem, &b.ca_key_pem, &["bad name!".into()]).is_err());
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
