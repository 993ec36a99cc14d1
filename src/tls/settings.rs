//! The certificate settings of a stack: DOMAIN, ACME_EMAIL, ACME_DIRECTORY, ACME_CA_FILE,
//! HTTP_PORT and HTTPS_PORT, from the stack's settings as `config::model` loads them (the
//! environment over `.env.production`; the keys are declared in `config::stack::STACK_KEYS`
//! and `config::SERVE_KEYS`), validated here.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::config::RawSettings;

pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSettings {
    /// Lower-case host name the certificate is for (`localhost` when unset).
    pub domain: String,
    pub email: Option<String>,
    /// The ACME directory URL.
    pub directory: String,
    /// PEM roots trusted for the ACME server's HTTPS and for chain checks (private CAs
    /// such as step-ca or pebble); relative paths are under the stack directory.
    pub ca_file: Option<PathBuf>,
    /// Host ports nginx publishes; the CA reaches HTTP-01 on the first.
    pub http_port: u16,
    pub https_port: u16,
}

impl CertSettings {
    /// The stack's settings ([`crate::config::model::settings`]: the environment over
    /// `DIR/.env.production`), validated. `staging` picks Let's Encrypt staging.
    pub fn load(dir: &Path, staging: bool) -> Result<Self> {
        Self::from_raw(&crate::config::model::settings(dir)?, dir, staging)
    }

    pub fn from_raw(raw: &RawSettings, dir: &Path, staging: bool) -> Result<Self> {
        let value = |key: &str| raw.get(key).map(str::trim).filter(|v| !v.is_empty());
        // The stack's one rule for names (lower case, IDNA to punycode, bad punycode
        // refused), so cert, restore and status agree on DOMAIN.
        let domain = crate::config::domain::parse(value("DOMAIN").unwrap_or("localhost"))
            .map_err(|m| anyhow::anyhow!("DOMAIN: {m}"))?
            .to_string();
        let email = value("ACME_EMAIL").map(str::to_string);
        if let Some(email) = &email {
            let valid = email.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty() && is_hostname(host) && !email.contains(char::is_whitespace)
            });
            if !valid {
                bail!("ACME_EMAIL: {email:?} is not an email address\nthe CA sends expiry notices there; use e.g. admin@example.com");
            }
        }
        let directory = match (staging, value("ACME_DIRECTORY")) {
            (true, _) => LETS_ENCRYPT_STAGING.to_string(),
            (false, Some(url)) => {
                if !url.starts_with("https://") {
                    bail!("ACME_DIRECTORY: {url:?} is not an https:// URL\nuse the CA's directory URL, e.g. {LETS_ENCRYPT_PRODUCTION}");
                }
                url.to_string()
            }
            (false, None) => LETS_ENCRYPT_PRODUCTION.to_string(),
        };
        let ca_file = value("ACME_CA_FILE").map(|p| dir.join(p));
        let port = |key: &str, default: u16| -> Result<u16> {
            match value(key) {
                None => Ok(default),
                Some(v) => match v.parse::<u16>() {
                    Ok(p) if p > 0 => Ok(p),
                    _ => bail!("{key}: {v:?} is not a port; use a number from 1 to 65535"),
                },
            }
        };
        Ok(CertSettings {
            domain,
            email,
            directory,
            ca_file,
            http_port: port("HTTP_PORT", 80)?,
            https_port: port("HTTPS_PORT", 443)?,
        })
    }

    /// Where to find the CA and how to reach it.
    pub fn ca(&self) -> super::acme::CaSettings {
        super::acme::CaSettings {
            directory: self.directory.clone(),
            email: self.email.clone(),
            ca_file: self.ca_file.clone(),
        }
    }

    /// True when a public CA can issue for DOMAIN: not `localhost` and not an IP literal.
    /// Other names get the self-signed certificate.
    pub fn wants_acme(&self) -> bool {
        !is_local_name(&self.domain)
    }
}

/// `localhost`, `*.localhost` and IP literals: names no public CA validates.
pub fn is_local_name(domain: &str) -> bool {
    domain == "localhost"
        || domain.ends_with(".localhost")
        || domain.parse::<std::net::IpAddr>().is_ok()
}

/// A DNS host name: dot-separated labels of letters, digits and inner hyphens.
pub fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)], staging: bool) -> Result<CertSettings> {
        let mut raw = RawSettings::default();
        raw.overlay(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        CertSettings::from_raw(&raw, Path::new("/stack"), staging)
    }

    #[test]
    fn defaults_and_overrides() {
        let s = settings(&[], false).unwrap();
        assert_eq!(s.domain, "localhost");
        assert_eq!(s.directory, LETS_ENCRYPT_PRODUCTION);
        assert_eq!((s.http_port, s.https_port), (80, 443));
        assert!(!s.wants_acme());
        let s = settings(
            &[
                ("DOMAIN", "Fit.Example.com"),
                ("ACME_DIRECTORY", "https://127.0.0.1:14000/dir"),
                ("ACME_CA_FILE", "ca.pem"),
                ("HTTPS_PORT", "8443"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(s.domain, "fit.example.com");
        assert_eq!(s.ca_file, Some(PathBuf::from("/stack/ca.pem")));
        assert_eq!(s.https_port, 8443);
        assert!(s.wants_acme());
        let s = settings(&[("ACME_DIRECTORY", "https://x/dir")], true).unwrap();
        assert_eq!(s.directory, LETS_ENCRYPT_STAGING);
    }

    #[test]
    fn errors_name_the_key() {
        let err = |pairs: &[(&str, &str)]| settings(pairs, false).unwrap_err().to_string();
        assert!(err(&[("DOMAIN", "exa mple.com")]).starts_with("DOMAIN:"));
        assert!(err(&[("ACME_EMAIL", "nobody")]).starts_with("ACME_EMAIL:"));
        assert!(err(&[("ACME_DIRECTORY", "http://x/dir")]).starts_with("ACME_DIRECTORY:"));
        assert!(err(&[("HTTP_PORT", "0")]).starts_with("HTTP_PORT:"));
        assert!(is_local_name("127.0.0.1") && is_local_name("::1"));
    }
}
