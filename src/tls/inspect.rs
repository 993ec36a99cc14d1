//! Reading certificate material: PEM chains and keys, the facts `elior cert status`
//! shows (subject, SANs, issuer, validity, key type), whether a key belongs to a
//! certificate, and whether a chain verifies against trusted roots.
//!
//! Pure functions over bytes (plus loading the system's root store); no network, and
//! nothing here writes files.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::RootCertStore;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The facts of one certificate that a person or a renewal plan needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertInfo {
    pub subject: String,
    /// DNS names and IP addresses the certificate is valid for.
    pub sans: Vec<String>,
    pub issuer: String,
    /// Upper-case hex of the serial number's DER bytes, as `openssl x509 -serial` prints.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Issuer equals subject: the bootstrap certificate, not one from a CA.
    pub self_signed: bool,
    /// `ECDSA P-256`, `RSA`, `Ed25519`...
    pub key_type: String,
    pub key_bits: usize,
}

impl CertInfo {
    /// True when a SAN equals `name` or a wildcard SAN covers it.
    pub fn covers(&self, name: &str) -> bool {
        self.sans.iter().any(|san| {
            san.eq_ignore_ascii_case(name)
                || san.strip_prefix("*.").is_some_and(|base| {
                    name.split_once('.')
                        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(base))
                })
        })
    }
}

/// Parses a PEM file of certificates (a full chain: leaf first). `what` names the file.
pub fn parse_chain(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{what} is not valid PEM: {e}"))?;
    if chain.is_empty() {
        bail!(
            "{what} holds no certificate\nexpected -----BEGIN CERTIFICATE----- blocks, leaf first"
        );
    }
    for (index, der) in chain.iter().enumerate() {
        X509Certificate::from_der(der)
            .map_err(|e| anyhow!("{what}: certificate {} does not parse: {e}", index + 1))?;
    }
    Ok(chain)
}

/// Parses a PEM private key (PKCS#8, SEC1 or PKCS#1). `what` names the file.
pub fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        anyhow!("{what} holds no usable private key: {e}\nexpected a PEM PRIVATE KEY block")
    })
}

/// Describes one DER certificate.
pub fn describe(der: &CertificateDer<'_>) -> Result<CertInfo> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| anyhow!("certificate does not parse: {e}"))?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(dns) => sans.push(dns.to_string()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let spki = cert.public_key();
    let key_bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
    let key_type = match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.1" => "RSA".to_string(),
        "1.3.101.112" => "Ed25519".to_string(),
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "ECDSA P-256".to_string(),
                Some("1.3.132.0.34") => "ECDSA P-384".to_string(),
                Some("1.3.132.0.35") => "ECDSA P-521".to_string(),
                _ => "ECDSA".to_string(),
            }
        }
        other => other.to_string(),
    };
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        sans,
        issuer: cert.issuer().to_string(),
        serial: hex::encode_upper(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        key_type,
        key_bits,
    })
}

/// True when `key` is the private half of the leaf's public key.
pub fn key_matches(leaf: &CertificateDer<'_>, key: &PrivateKeyDer<'_>) -> Result<bool> {
    let signing_key = rustls::crypto::ring::sign::any_supported_type(key)
        .map_err(|e| anyhow!("private key is not usable: {e}"))?;
    let Some(key_spki) = signing_key.public_key() else {
        bail!("cannot derive the public key of this private key type");
    };
    let (_, cert) =
        X509Certificate::from_der(leaf).map_err(|e| anyhow!("certificate does not parse: {e}"))?;
    Ok(key_spki.as_ref() == cert.public_key().raw)
}

/// The operating system's trusted roots (Debian: /etc/ssl/certs).
pub fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots
}

/// The roots in a PEM bundle such as ACME_CA_FILE (every certificate in it is trusted).
pub fn load_roots(path: &Path) -> Result<RootCertStore> {
    let what = path.display().to_string();
    let pem = std::fs::read(path).with_context(|| format!("failed to read CA file {what}"))?;
    let mut roots = RootCertStore::empty();
    for der in parse_chain(&pem, &what)? {
        roots
            .add(der)
            .map_err(|e| anyhow!("{what}: a certificate is not a usable root: {e}"))?;
    }
    Ok(roots)
}

/// Verifies `chain` (leaf first) for `name` against `roots` at the current time, the
/// way a browser would: signatures, validity, and that the name is covered.
pub fn verify_chain(
    chain: &[CertificateDer<'static>],
    roots: RootCertStore,
    name: &str,
) -> Result<()> {
    let (leaf, intermediates) = chain.split_first().context("empty certificate chain")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| anyhow!("no trusted roots to verify against: {e}"))?;
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|e| anyhow!("{name:?}: {e}"))?;
    verifier
        .verify_server_cert(leaf, intermediates, &server_name, &[], UnixTime::now())
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Checks a certificate/key pair before it is used: both PEM parse, the key belongs to
/// the leaf, and the leaf covers `domain`. For `--cert/--key` files and new ACME pairs.
pub fn validate_pair(chain_pem: &[u8], key_pem: &[u8], domain: &str) -> Result<CertInfo> {
    let chain = parse_chain(chain_pem, "the certificate")?;
    let key = parse_key(key_pem, "the key")?;
    if !key_matches(&chain[0], &key)? {
        bail!("the key does not belong to the certificate\npass the key that was generated with this certificate");
    }
    let info = describe(&chain[0])?;
    if !info.covers(domain) {
        bail!(
            "the certificate is for {} and does not cover DOMAIN {domain}\nuse a certificate whose SANs include {domain}",
            info.sans.join(", ")
        );
    }
    Ok(info)
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An RFC 3339 UTC rendering of Unix seconds, for output.
pub fn rfc3339(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| seconds.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_a_self_signed_cert_and_matches_its_key() {
        let issued = crate::tls::selfsigned::generate("elior.test", 30).unwrap();
        let chain = parse_chain(issued.cert_pem.as_bytes(), "cert.pem").unwrap();
        let info = describe(&chain[0]).unwrap();
        assert_eq!(info.sans, vec!["elior.test".to_string()]);
        assert!(info.self_signed);
        assert_eq!(
            (info.key_type.as_str(), info.key_bits),
            ("ECDSA P-256", 256)
        );
        assert!(info.covers("elior.test") && !info.covers("www.elior.test"));
        let key = parse_key(issued.key_pem.as_bytes(), "key.pem").unwrap();
        assert!(key_matches(&chain[0], &key).unwrap());
        let other = crate::tls::selfsigned::generate("elior.test", 30).unwrap();
        let other_key = parse_key(other.key_pem.as_bytes(), "key.pem").unwrap();
        assert!(!key_matches(&chain[0], &other_key).unwrap());
        let pair =
            |key: &str| validate_pair(issued.cert_pem.as_bytes(), key.as_bytes(), "elior.test");
        assert!(pair(&issued.key_pem).is_ok());
        assert!(pair(&other.key_pem)
            .unwrap_err()
            .to_string()
            .starts_with("the key does not belong"));
        let wrong_name = validate_pair(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            "x.test",
        );
        assert!(wrong_name
            .unwrap_err()
            .to_string()
            .contains("does not cover DOMAIN x.test"));
    }

    #[test]
    fn corrupt_pem_is_named() {
        let err = parse_chain(b"garbage", "nginx/ssl/cert.pem").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("nginx/ssl/cert.pem holds no certificate"));
        assert!(parse_key(b"", "key.pem").is_err());
    }

    #[test]
    fn wildcards_cover_one_label() {
        let info = CertInfo {
            subject: String::new(),
            sans: vec!["*.example.com".into()],
            issuer: String::new(),
            serial: String::new(),
            not_before: 0,
            not_after: 0,
            self_signed: false,
            key_type: String::new(),
            key_bits: 0,
        };
        assert!(info.covers("www.example.com"));
        assert!(!info.covers("example.com") && !info.covers("a.b.example.com"));
    }
}
