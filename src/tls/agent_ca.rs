//! The CA bundle injected into the in-pod agents (`KUBE_STANDBY_CA`), chosen and checked
//! once at start so that a configuration whose agents could never trust the operator is
//! refused there, with a message naming the fix, instead of crash-looping every pod.
//!
//! Rule: `--ca-file` (or `--ca-pem`) when given; else the self-signed CA we made; else (certificate
//! files) the last certificate of the served chain when the chain holds more than the
//! leaf. Whatever is chosen must verify the served chain for the host of the operator URL
//! the agents use, exactly as the agent's TLS client will.
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{Error, Result};

/// Where the CA comes from (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// `--ca-file PATH`.
    CaFile(&'a str),
    /// `--ca-pem` / `$KUBE_STANDBY_AGENT_CA`.
    CaPem,
    /// The CA made in memory or kept in the CA Secret.
    SelfSigned,
    /// `--tls-cert-file PATH` without `--ca-file`.
    CertFile(&'a str),
}

/// PEM certificates of a bundle; an error names what is wrong.
pub fn pem_certs(pem: &str) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The host the agents connect to, as a TLS server name.
pub fn server_name(operator_url: &str) -> Result<ServerName<'static>> {
    let uri: hyper::Uri = operator_url
        .parse()
        .map_err(|e| Error::Config(format!("--operator-url {operator_url:?}: {e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(Error::Config(format!(
            "--operator-url {operator_url:?} must be an https:// URL (the agents use TLS)"
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| Error::Config(format!("--operator-url {operator_url:?} has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    ServerName::try_from(host.clone())
        .map_err(|e| Error::Config(format!("--operator-url host {host:?}: {e}")))
}

/// Does `ca_pem` verify the served `chain` (leaf first) for `name`? The error says why not.
pub fn verifies(
    ca_pem: &str,
    chain: &[CertificateDer<'static>],
    name: &ServerName<'static>,
) -> std::result::Result<(), String> {
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| "the served chain is empty".to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(ca_pem)? {
        roots.add(c).map_err(|e| format!("not a usable CA: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("not a usable CA: {e}"))?;
    verifier
        .verify_server_cert(leaf, intermediates, name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Choose the CA bundle for the agents and check it; `given` is the PEM of `--ca-file` or
/// of our self-signed CA, `None` in file mode without `--ca-file`.
pub fn choose(
    given: Option<(String, Source<'_>)>,
    cert_file: Option<&str>,
    chain: &[CertificateDer<'static>],
    operator_url: &str,
) -> Result<String> {
    let name = server_name(operator_url)?;
    let (pem, source) = match given {
        Some(g) => g,
        None => {
            let file = cert_file.unwrap_or("the certificate file");
            if chain.len() < 2 {
                return Err(Error::Config(format!(
                    "{file} holds only the serving certificate, so the CA that pods' agents must trust \
                     (KUBE_STANDBY_CA) is unknown: pass --ca-file with the CA that signed it \
                     (`kube-standby certs` writes ca.crt), or append that CA to {file}"
                )));
            }
            let last = chain.last().map(pem_of).unwrap_or_default();
            (last, Source::CertFile(file))
        }
    };
    let what = match source {
        Source::CaFile(p) => format!("--ca-file {p}"),
        Source::CaPem => "--ca-pem ($KUBE_STANDBY_AGENT_CA)".to_string(),
        Source::SelfSigned => "the self-signed CA".to_string(),
        Source::CertFile(p) => format!("the last certificate of {p} (no --ca-file given)"),
    };
    if let Err(why) = pem_certs(&pem) {
        return Err(Error::Config(format!(
            "{what} {why}; pods' agents could never trust the operator: pass --ca-file with the CA of the serving certificate"
        )));
    }
    verifies(&pem, chain, &name).map_err(|why| {
        Error::Config(format!(
            "{what} does not verify the served certificate for {name:?} (the host of --operator-url, as the agents will check it): {why}; \
             pass --ca-file with the CA that signed the serving certificate, or fix --operator-url",
            name = name.to_str()
        ))
    })?;
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;

    fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
        pem_certs(pem).unwrap()
    }

    const URL: &str = "https://localhost:8443";

    #[test]
    fn a_full_chain_gives_its_ca() {
        let b = certs::generate(&certs::default_sans()).unwrap();
        let full = chain(&certs::full_chain(&b));
        let ca = choose(None, Some("tls.crt"), &full, URL).unwrap();
        assert_eq!(pem_certs(&ca).unwrap(), pem_certs(&b.ca_pem).unwrap());
    }

    #[test]
    fn a_leaf_alone_is_refused_naming_ca_file() {
        let b = certs::generate(&certs::default_sans()).unwrap();
        let err = choose(None, Some("tls.crt"), &chain(&b.cert_pem), URL)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--ca-file") && err.contains("tls.crt"),
            "{err}"
        );
        // With the CA given it works.
        let ok = choose(
            Some((b.ca_pem.clone(), Source::CaFile("ca.crt"))),
            None,
            &chain(&b.cert_pem),
            URL,
        );
        assert_eq!(ok.unwrap(), b.ca_pem);
    }

    #[test]
    fn a_ca_that_does_not_verify_is_refused() {
        let b = certs::generate(&certs::default_sans()).unwrap();
        let other = certs::generate(&certs::default_sans()).unwrap();
        let err = choose(
            Some((other.ca_pem, Source::CaFile("other.crt"))),
            None,
            &chain(&b.cert_pem),
            URL,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("does not verify") && err.contains("other.crt"),
            "{err}"
        );
        let err = choose(
            Some((String::new(), Source::CaFile("empty.crt"))),
            None,
            &chain(&b.cert_pem),
            URL,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        // The host the agents use must be in the certificate.
        let err = choose(
            Some((b.ca_pem.clone(), Source::SelfSigned)),
            None,
            &chain(&b.cert_pem),
            "https://elsewhere.example:8443",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("elsewhere.example"), "{err}");
        assert!(choose(None, None, &chain(&b.cert_pem), "http://localhost").is_err());
    }

    #[test]
    fn an_intermediate_chain_verifies_with_its_root_or_its_end() {
        let b = certs::generate_with_intermediate(&["localhost".into()]).unwrap();
        let served = chain(&b.cert_pem);
        assert!(choose(
            Some((b.ca_pem.clone(), Source::CaFile("root.crt"))),
            None,
            &served,
            URL
        )
        .is_ok());
        // leaf + intermediate: the intermediate is the end of the chain and verifies it.
        assert!(choose(None, Some("tls.crt"), &served, URL).is_ok());
    }
}
