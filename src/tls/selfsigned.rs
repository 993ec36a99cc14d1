//! The bootstrap certificate: a self-signed ECDSA P-256 certificate for DOMAIN, made
//! with rcgen, so nginx can start on 443 before a CA has issued anything (and for
//! `localhost` and IP literals, which no public CA validates).
//!
//! Generation is pure; [`write`] stores the pair atomically with the key at 0600.

use anyhow::{Context, Result};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

use super::files::{write_atomic, StackPaths, PUBLIC_MODE, SECRET_MODE};

/// A certificate and its private key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    // The key is a secret; never print it through Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Issued { key: [redacted], .. }")
    }
}

/// Makes a self-signed certificate whose SAN is `domain` (a DNS name or an IP literal),
/// valid from an hour ago (clock skew) for `days` days.
pub fn generate(domain: &str, days: i64) -> Result<Issued> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .context("failed to prepare the self-signed certificate")?;
    let san = match domain.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(
            domain
                .to_string()
                .try_into()
                .with_context(|| format!("{domain:?} is not a DNS name"))?,
        ),
    };
    params.subject_alt_names = vec![san];
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, domain);
    name.push(DnType::OrganizationName, "elior self-signed");
    params.distinguished_name = name;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    let key = KeyPair::generate().context("failed to generate an ECDSA P-256 key")?;
    let cert = params
        .self_signed(&key)
        .context("failed to sign the self-signed certificate")?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes the pair to `nginx/ssl/`, each file atomically. Used before nginx first
/// starts; replacing a served certificate goes through `install` instead.
pub fn write(paths: &StackPaths, issued: &Issued) -> Result<()> {
    write_atomic(&paths.key(), issued.key_pem.as_bytes(), SECRET_MODE)?;
    write_atomic(&paths.cert(), issued.cert_pem.as_bytes(), PUBLIC_MODE)
}
