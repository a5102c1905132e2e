//! CA pins: how the in-pod agents trust the operator without carrying its CA certificate.
//!
//! The webhook used to inject the CA bundle's PEM (about 600 bytes per certificate) into
//! every agent container it adds; a pin is 71 bytes. A pin is `sha256:<64 hex digits>`,
//! the SHA-256 of a CA certificate's DER-encoded SubjectPublicKeyInfo: the same form as
//! kubeadm's `--discovery-token-ca-cert-hash`, so it can be checked with
//! `openssl x509 -pubkey -noout -in ca.crt | openssl pkey -pubin -outform der | sha256sum`.
//!
//! Invariants:
//! - the agent trusts exactly what the PEM bundle made it trust: a served certificate
//!   carrying a pinned key becomes the only trust anchor, and the whole chain is then checked
//!   by webpki (signatures, validity, the operator URL's host) as with a root store;
//! - a served chain without a certificate of a pinned key is refused, never trusted: with
//!   the error a root store gives a chain of an unknown issuer when the chain holds CA
//!   certificates, with [`AnchorNotServed`] (retried by the agent) when it is the leaf alone;
//! - the operator serves its CA certificates after its chain ([`chain_with_anchors`]), so
//!   the agent finds its anchor in every handshake, whatever the certificate file holds;
//!   only those of the bundle that issued the chain, unless none did;
//! - because the pin is of the key, a CA certificate re-issued with the same key (a renewal)
//!   keeps every running pod's pin valid.
use std::fmt::Write as _;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// What a pin list starts with.
pub const PREFIX: &str = "sha256:";

/// One pin: the SHA-256 of a SubjectPublicKeyInfo.
pub type Pin = [u8; 32];

/// The pin of a certificate's key; the error says why the certificate is unusable as a CA.
pub fn pin_of(cert: &CertificateDer<'_>) -> Result<Pin, String> {
    let mut store = RootCertStore::empty();
    store
        .add(cert.clone().into_owned())
        .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    let anchor = store
        .roots
        .first()
        .ok_or_else(|| "not a usable CA certificate".to_string())?;
    // webpki keeps the SubjectPublicKeyInfo's contents; the pin covers the whole SEQUENCE.
    let inner = anchor.subject_public_key_info.as_ref();
    let mut h = Sha256::new();
    h.update(der_header(0x30, inner.len()));
    h.update(inner);
    Ok(h.finalize().into())
}

/// A DER tag and length.
fn der_header(tag: u8, len: usize) -> Vec<u8> {
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out
}

/// `sha256:<hex>` of one pin.
pub fn format_pin(pin: &Pin) -> String {
    let mut s = String::with_capacity(PREFIX.len() + 64);
    s.push_str(PREFIX);
    for b in pin {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The pin list (comma-separated) of a PEM CA bundle: what `KUBE_STANDBY_CA` carries.
pub fn pins_of_bundle(pem: &str) -> Result<String, String> {
    let certs = super::agent_ca::pem_certs(pem)?;
    let pins = certs
        .iter()
        .map(|c| pin_of(c).map(|p| format_pin(&p)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(pins.join(","))
}

/// Is this a pin list rather than a PEM bundle?
pub fn is_pin_list(s: &str) -> bool {
    s.trim_start().starts_with(PREFIX)
}

/// The entries of a pin list: comma-separated, trimmed, empty ones skipped.
fn entries(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// 64 hex digits: a SHA-256 written out.
fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Does `s` parse with [`parse_pins`]? Checked without building the pins (the webhook asks
/// on every injection).
pub fn is_valid_pin_list(s: &str) -> bool {
    let mut any = false;
    for entry in entries(s) {
        if !entry.strip_prefix(PREFIX).is_some_and(is_sha256_hex) {
            return false;
        }
        any = true;
    }
    any
}

/// Parse `sha256:<hex>[,sha256:<hex>...]`; the error names the bad entry.
pub fn parse_pins(s: &str) -> Result<Vec<Pin>, String> {
    let mut pins = vec![];
    for entry in entries(s) {
        let hex = entry
            .strip_prefix(PREFIX)
            .ok_or_else(|| format!("CA pin {entry:?} does not start with {PREFIX}"))?;
        if !is_sha256_hex(hex) {
            return Err(format!(
                "CA pin {entry:?}: want {PREFIX} and 64 hex digits (a SHA-256)"
            ));
        }
        let mut pin = [0u8; 32];
        for (i, out) in pin.iter_mut().enumerate() {
            *out = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|e| format!("CA pin {entry:?}: {e}"))?;
        }
        pins.push(pin);
    }
    if pins.is_empty() {
        return Err("the CA pin list is empty".into());
    }
    Ok(pins)
}

/// The served chain: `chain` (leaf first) followed by each of the `anchors` that issued it
/// ([`issuing_anchors`]) and that it does not hold, so that an agent holding pins finds the
/// certificate of its pinned key in the handshake.
pub fn chain_with_anchors(
    mut chain: Vec<CertificateDer<'static>>,
    anchors: &[CertificateDer<'static>],
) -> Vec<CertificateDer<'static>> {
    for a in issuing_anchors(&chain, anchors) {
        if !chain.iter().any(|c| c.as_ref() == a.as_ref()) {
            chain.push(a.clone());
        }
    }
    chain
}

/// Of `anchors`, the ones that issued `chain` (leaf first): a path from the leaf through the
/// chain's other certificates ends at them, signatures and validity checked (not the name:
/// the agents check that). Only those can be the anchor an agent finds, so a large
/// `--ca-file` bundle is not sent in every handshake. When none does (a certificate expired
/// or from another CA), all of them: the agents then refuse the chain, as they would have.
pub fn issuing_anchors<'a>(
    chain: &[CertificateDer<'static>],
    anchors: &'a [CertificateDer<'static>],
) -> Vec<&'a CertificateDer<'static>> {
    let Some((leaf, rest)) = chain.split_first() else {
        return anchors.iter().collect();
    };
    let Ok(leaf) = rustls::server::ParsedCertificate::try_from(leaf) else {
        return anchors.iter().collect();
    };
    let algs = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    let now = UnixTime::now();
    let issued: Vec<_> = anchors
        .iter()
        .filter(|a| {
            let mut roots = RootCertStore::empty();
            roots.add((*a).clone()).is_ok()
                && rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &leaf, &roots, rest, now, algs,
                )
                .is_ok()
        })
        .collect();
    if issued.is_empty() {
        anchors.iter().collect()
    } else {
        issued
    }
}

/// The server sent its leaf certificate alone, so no served certificate can carry a pinned
/// key. Every operator with pins serves its CA after the chain, so this is an operator of an
/// earlier version (during a rolling upgrade, or a rollback): the agent retries it as it
/// retries an unreachable operator, instead of failing the pod as untrusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnchorNotServed;

impl std::fmt::Display for AnchorNotServed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the operator served its certificate without its CA, so the pinned CA key cannot be checked \
             (an operator older than this agent, during an upgrade?)",
        )
    }
}

impl std::error::Error for AnchorNotServed {}

/// Is this TLS error [`AnchorNotServed`]?
pub fn is_anchor_not_served(e: &rustls::Error) -> bool {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => {
            o.0.downcast_ref::<AnchorNotServed>().is_some()
        }
        _ => false,
    }
}

/// Verifies a server against pinned CA keys (see the module header).
#[derive(Debug)]
pub struct PinnedVerifier {
    pins: Vec<Pin>,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    pub fn new(pins: Vec<Pin>, provider: Arc<CryptoProvider>) -> Self {
        PinnedVerifier { pins, provider }
    }

    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut roots = RootCertStore::empty();
        for c in std::iter::once(end_entity).chain(intermediates) {
            if pin_of(c).is_ok_and(|p| self.pins.contains(&p)) {
                // pin_of has just parsed it as an anchor.
                let _ = roots.add(c.clone().into_owned());
            }
        }
        if roots.is_empty() {
            if intermediates.is_empty() {
                // The leaf alone: an operator that does not serve its CA (a version older
                // than pins, still answering during a rolling upgrade). Not a verdict on
                // the pins: see [`AnchorNotServed`].
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Other(rustls::OtherError(Arc::new(AnchorNotServed))),
                ));
            }
            // A chain with CA certificates, none of a pinned key: no trusted issuer, as a
            // root store would say (and the agent treats it as permanent, as then).
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;
    use crate::tls::agent_ca::pem_certs;

    const EC_CA: &str = include_str!("../../tests/data/test-ca.crt");
    const RSA_CA: &str = include_str!("../../tests/data/test-ca-rsa.crt");

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn one(pem: &str) -> CertificateDer<'static> {
        pem_certs(pem).unwrap().remove(0)
    }

    /// Verify `chain` (leaf first) for `host` as an agent holding `pins` would.
    fn check(pins: &str, chain: &[CertificateDer<'static>], host: &str) -> Result<(), String> {
        verify(pins, chain, host).map_err(|e| e.to_string())
    }

    fn verify(
        pins: &str,
        chain: &[CertificateDer<'static>],
        host: &str,
    ) -> Result<(), rustls::Error> {
        let v = PinnedVerifier::new(parse_pins(pins).unwrap(), provider());
        let name = ServerName::try_from(host.to_string()).unwrap();
        v.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn only_a_leaf_served_alone_is_told_apart_as_an_anchor_not_served() {
        let ours = certs::generate(&certs::default_sans()).unwrap();
        let theirs = certs::generate(&certs::default_sans()).unwrap();
        let pins = pins_of_bundle(&ours.ca_pem).unwrap();
        let leaf_only = pem_certs(&ours.cert_pem).unwrap();
        assert!(is_anchor_not_served(
            &verify(&pins, &leaf_only, "localhost").unwrap_err()
        ));
        // A chain that serves a CA, but another one: a verdict, not an old operator.
        let their_chain =
            chain_with_anchors(pem_certs(&theirs.cert_pem).unwrap(), &[one(&theirs.ca_pem)]);
        let e = verify(&pins, &their_chain, "localhost").unwrap_err();
        assert!(!is_anchor_not_served(&e), "{e}");
        assert!(!is_anchor_not_served(&rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer
        )));
    }

    #[test]
    fn pins_are_the_sha256_of_the_subject_public_key_info_as_openssl_computes_it() {
        // `openssl x509 -pubkey -noout -in F | openssl pkey -pubin -outform der | sha256sum`
        assert_eq!(
            pins_of_bundle(EC_CA).unwrap(),
            "sha256:2274da3b25bbb443f014272551a91e138ad516ae0c420ae2563cbf92ede03665"
        );
        // An RSA key's SubjectPublicKeyInfo (294 bytes) takes a long-form DER length.
        assert_eq!(
            pins_of_bundle(RSA_CA).unwrap(),
            "sha256:79a51a2aa56ee667b6300942519096043dd382b05079e9f27a128a438185175f"
        );
        let both = format!("{EC_CA}{RSA_CA}");
        assert_eq!(
            pins_of_bundle(&both).unwrap(),
            "sha256:2274da3b25bbb443f014272551a91e138ad516ae0c420ae2563cbf92ede03665,\
             sha256:79a51a2aa56ee667b6300942519096043dd382b05079e9f27a128a438185175f"
        );
        assert!(pins_of_bundle("")
            .unwrap_err()
            .contains("no PEM certificate"));
    }

    #[test]
    fn der_lengths_take_the_short_and_long_forms() {
        assert_eq!(der_header(0x30, 0x59), vec![0x30, 0x59]);
        assert_eq!(der_header(0x30, 0x7f), vec![0x30, 0x7f]);
        assert_eq!(der_header(0x30, 0x80), vec![0x30, 0x81, 0x80]);
        assert_eq!(der_header(0x30, 0x122), vec![0x30, 0x82, 0x01, 0x22]);
    }

    #[test]
    fn pin_lists_parse_and_bad_ones_are_named() {
        let list = pins_of_bundle(&format!("{EC_CA}{RSA_CA}")).unwrap();
        let pins = parse_pins(&list).unwrap();
        assert_eq!(pins.len(), 2);
        assert_eq!(format_pin(&pins[0]) + "," + &format_pin(&pins[1]), list);
        assert!(is_pin_list(&list) && is_pin_list(" sha256:00"));
        assert!(!is_pin_list(EC_CA));
        let good = format_pin(&pins[0]);
        for (bad, says) in [
            ("", "empty"),
            (" , ", "empty"),
            ("md5:00", "does not start with sha256:"),
            ("sha256:abc", "64 hex digits"),
            (&format!("{good}0"), "64 hex digits"),
            (&format!("{PREFIX}{}", "g".repeat(64)), "64 hex digits"),
            (&format!("{good},sha1:00"), "\"sha1:00\""),
        ] {
            let err = parse_pins(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
            assert!(!is_valid_pin_list(bad), "{bad:?}");
        }
        assert!(is_valid_pin_list(&list) && is_valid_pin_list(&format!(" {good} ,")));
        // Multi-byte UTF-8 never panics the parser.
        assert!(parse_pins(&format!("sha256:{}", "é".repeat(32))).is_err());
    }

    proptest::proptest! {
        #[test]
        fn the_cheap_check_agrees_with_the_parser(parts in proptest::collection::vec(
            proptest::sample::select(vec![
                "sha256:", "sha256:00", "md5:", ",", " ", "", "é", "0123456789abcdef",
                "0123456789ABCDEF", "g",
                "sha256:0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef",
            ]),
            0..12,
        )) {
            let s = parts.concat();
            proptest::prop_assert_eq!(is_valid_pin_list(&s), parse_pins(&s).is_ok(), "{:?}", s);
        }
    }

    #[test]
    fn a_chain_serving_the_pinned_ca_verifies_for_the_operator_host_only() {
        let b = certs::generate(&certs::default_sans()).unwrap();
        let pins = pins_of_bundle(&b.ca_pem).unwrap();
        let leaf_only = pem_certs(&b.cert_pem).unwrap();
        let served = chain_with_anchors(leaf_only.clone(), &pem_certs(&b.ca_pem).unwrap());
        assert_eq!(served.len(), 2);
        check(&pins, &served, "kube-standby.kube-standby.svc").unwrap();
        check(&pins, &served, "127.0.0.1").unwrap();
        let err = check(&pins, &served, "elsewhere.example").unwrap_err();
        assert!(err.contains("not valid for name"), "{err}");
        // Without the CA in the handshake there is no anchor: refused, never trusted (and
        // said to be an operator that does not serve its CA).
        let err = check(&pins, &leaf_only, "localhost").unwrap_err();
        assert!(err.contains("AnchorNotServed"), "{err}");
        assert!(AnchorNotServed.to_string().contains("without its CA"));
        // A chain that already holds the CA is served as it is.
        assert_eq!(
            chain_with_anchors(served.clone(), &[one(&b.ca_pem)]),
            served
        );
    }

    #[test]
    fn an_other_ca_or_a_forged_chain_carrying_our_public_ca_is_refused() {
        let ours = certs::generate(&certs::default_sans()).unwrap();
        let theirs = certs::generate(&certs::default_sans()).unwrap();
        let pins = pins_of_bundle(&ours.ca_pem).unwrap();
        // Their own chain: no certificate of our key.
        let their_chain =
            chain_with_anchors(pem_certs(&theirs.cert_pem).unwrap(), &[one(&theirs.ca_pem)]);
        let err = check(&pins, &their_chain, "localhost").unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
        // Our CA certificate is public: appending it to their leaf must not help them.
        let forged = chain_with_anchors(pem_certs(&theirs.cert_pem).unwrap(), &[one(&ours.ca_pem)]);
        let err = check(&pins, &forged, "localhost").unwrap_err();
        assert!(
            err.contains("UnknownIssuer") || err.contains("BadSignature"),
            "{err}"
        );
        // Their CA pinned instead trusts their chain: the pin is what decides.
        check(
            &pins_of_bundle(&theirs.ca_pem).unwrap(),
            &their_chain,
            "localhost",
        )
        .unwrap();
    }

    #[test]
    fn only_the_bundle_certificates_that_issued_the_chain_are_served() {
        let others = [
            certs::generate(&certs::default_sans()).unwrap(),
            certs::generate(&certs::default_sans()).unwrap(),
        ];
        let ours = certs::generate(&certs::default_sans()).unwrap();
        // A rotation bundle: another CA, ours, a third.
        let bundle = format!("{}{}{}", others[0].ca_pem, ours.ca_pem, others[1].ca_pem);
        let anchors = pem_certs(&bundle).unwrap();
        assert_eq!(anchors.len(), 3);
        let leaf_only = pem_certs(&ours.cert_pem).unwrap();
        assert_eq!(issuing_anchors(&leaf_only, &anchors), vec![&anchors[1]]);
        let served = chain_with_anchors(leaf_only.clone(), &anchors);
        assert_eq!(served, vec![leaf_only[0].clone(), one(&ours.ca_pem)]);
        // The agents pin the whole bundle and find theirs.
        check(&pins_of_bundle(&bundle).unwrap(), &served, "localhost").unwrap();
        // A chain none of them issued: all are served, and the agents refuse it as before.
        let theirs = certs::generate(&certs::default_sans()).unwrap();
        let foreign = pem_certs(&theirs.cert_pem).unwrap();
        let served = chain_with_anchors(foreign.clone(), &anchors);
        assert_eq!(served.len(), 4);
        assert!(check(&pins_of_bundle(&bundle).unwrap(), &served, "localhost").is_err());
        // A CA whose valid leaf selects it, and whose expired leaf selects nothing, so all
        // are served.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = certs::ca_params("expiry CA", certs::Validity::default().ca).unwrap();
        let ca_der = ca.self_signed(&ca_key).unwrap().der().clone();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf = |expired: bool| {
            let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            if expired {
                p.not_before = rcgen::date_time_ymd(2020, 1, 1);
                p.not_after = rcgen::date_time_ymd(2020, 2, 1);
            }
            let k = rcgen::KeyPair::generate().unwrap();
            vec![p.signed_by(&k, &issuer).unwrap().der().clone()]
        };
        let with_it = [anchors.clone(), vec![ca_der.clone()]].concat();
        assert_eq!(issuing_anchors(&leaf(false), &with_it), vec![&ca_der]);
        assert_eq!(issuing_anchors(&leaf(true), &with_it).len(), 4);
        // No chain at all, or bytes that are not a certificate: all of them.
        assert_eq!(issuing_anchors(&[], &anchors).len(), 3);
        let junk = vec![CertificateDer::from(vec![1u8, 2, 3])];
        assert_eq!(issuing_anchors(&junk, &anchors).len(), 3);
    }

    #[test]
    fn an_intermediate_chain_verifies_with_the_root_or_the_intermediate_pinned() {
        let b = certs::generate_with_intermediate(&["localhost".into()]).unwrap();
        let leaf_and_mid = pem_certs(&b.cert_pem).unwrap();
        assert_eq!(leaf_and_mid.len(), 2);
        let served = chain_with_anchors(leaf_and_mid.clone(), &pem_certs(&b.ca_pem).unwrap());
        // The root issued the chain through the intermediate: it is served.
        assert_eq!(served.len(), 3);
        check(&pins_of_bundle(&b.ca_pem).unwrap(), &served, "localhost").unwrap();
        let mid_pin = format_pin(&pin_of(&leaf_and_mid[1]).unwrap());
        check(&mid_pin, &leaf_and_mid, "localhost").unwrap();
    }

    #[test]
    fn a_pin_of_a_ca_renewed_with_the_same_key_still_verifies() {
        // The CA Secret keeps the key; a renewed CA certificate has a new serial and dates.
        let first = certs::generate(&certs::default_sans()).unwrap();
        let key = rcgen::KeyPair::from_pem(&first.ca_key_pem).unwrap();
        let p = certs::ca_params("kube-standby CA", certs::Validity::default().ca).unwrap();
        let renewed = p.self_signed(&key).unwrap().pem();
        assert_ne!(one(&renewed), one(&first.ca_pem));
        let issued = certs::issue(&renewed, &first.ca_key_pem, &certs::default_sans()).unwrap();
        let served = chain_with_anchors(pem_certs(&issued.cert_pem).unwrap(), &[one(&renewed)]);
        assert_eq!(served.len(), 2);
        // A bundle still holding the first certificate of the same key: it issued the
        // chain too (an anchor is its subject and key), so it is the one served.
        let old = chain_with_anchors(
            pem_certs(&issued.cert_pem).unwrap(),
            &[
                one(&certs::generate(&certs::default_sans()).unwrap().ca_pem),
                one(&first.ca_pem),
            ],
        );
        assert_eq!(old[1..], [one(&first.ca_pem)]);
        check(
            &pins_of_bundle(&first.ca_pem).unwrap(),
            &served,
            "localhost",
        )
        .unwrap();
    }
}
