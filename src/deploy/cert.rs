//! The certificate of a deploy, for a single host and a swarm alike: where it comes from
//! ([`CertSource`], decided once from the options and the stack, before anything changes)
//! and what the step after the HTTPS proof came to ([`CertStep`]).
//!
//! The decision is pure and written once, so the two modes cannot drift apart in the
//! order of its reasons. Carrying it out is each mode's: the user's pair goes in through
//! whichever `tls::install::Proxy` the mode has (a container reloaded, or a swarm service
//! rolled), and the CA step needs each mode's way of answering challenges.

use std::future::Future;
use std::path::Path;

use anyhow::{Context, Result};

use super::{Options, Progress};
use crate::config::model::Stack;
use crate::tls::files::StackPaths;
use crate::tls::settings::CertSettings;

/// Where a deploy's certificate comes from.
pub enum CertSource {
    /// nginx/ssl/ keeps what it holds (the self-signed bootstrap one when it held none).
    Keep(Kept),
    /// The user's --cert/--key, read and checked against DOMAIN.
    UserPair(OwnPair),
    /// A CA over ACME HTTP-01: a public DOMAIN, and ACME_EMAIL set.
    Acme(CertSettings),
}

/// Why no certificate is installed or asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// `--self-signed`.
    SelfSigned,
    /// DOMAIN is localhost or an IP address.
    LocalName,
    /// A public DOMAIN, but no ACME_EMAIL.
    NoEmail,
}

impl CertSource {
    /// Reads and checks the user's pair (bad files are refused before anything changes),
    /// then decides.
    pub fn of(loaded: &Stack, options: &Options) -> Result<CertSource> {
        let pair = own_certificate(options, loaded.config.domain.as_str())?;
        CertSource::decide(options.self_signed, pair, || loaded.certs(false))
    }

    /// The decision, in this order: `--self-signed`, the user's pair, a DOMAIN no CA
    /// certifies, then ACME_EMAIL. The CA settings are read only when they decide, so a
    /// bad ACME_EMAIL does not stop a deploy that asks no CA.
    fn decide(
        self_signed: bool,
        pair: Option<OwnPair>,
        certs: impl FnOnce() -> Result<CertSettings>,
    ) -> Result<CertSource> {
        if self_signed {
            return Ok(CertSource::Keep(Kept::SelfSigned));
        }
        if let Some(pair) = pair {
            return Ok(CertSource::UserPair(pair));
        }
        let settings = certs()?;
        Ok(if !settings.wants_acme() {
            CertSource::Keep(Kept::LocalName)
        } else if settings.email.is_none() {
            CertSource::Keep(Kept::NoEmail)
        } else {
            CertSource::Acme(settings)
        })
    }
}

impl Kept {
    /// The step this source ends with. Without ACME_EMAIL, a note says how to get a
    /// certificate from a CA.
    pub fn step(self, paths: &StackPaths, domain: &str, progress: &dyn Progress) -> CertStep {
        let why = match self {
            Kept::SelfSigned => "--self-signed",
            Kept::LocalName => "no CA issues for localhost or IP addresses",
            Kept::NoEmail => {
                progress.note(&format!(
                    "note: {domain} keeps the certificate in nginx/ssl/; set ACME_EMAIL in {} for one from a CA",
                    paths.env_file().display()
                ));
                "ACME_EMAIL is not set"
            }
        };
        CertStep::Kept(why)
    }
}

/// The user's --cert/--key, read and checked against DOMAIN.
pub struct OwnPair {
    chain: String,
    key: String,
}

fn own_certificate(options: &Options, domain: &str) -> Result<Option<OwnPair>> {
    let (Some(cert), Some(key)) = (&options.cert, &options.key) else {
        return Ok(None);
    };
    let read = |path: &Path| -> Result<String> {
        String::from_utf8(crate::tls::files::read(path)?)
            .with_context(|| format!("{} is not PEM text", path.display()))
    };
    let pair = OwnPair {
        chain: read(cert)?,
        key: read(key)?,
    };
    crate::tls::inspect::validate_pair(pair.chain.as_bytes(), pair.key.as_bytes(), domain)
        .with_context(|| {
            format!(
                "--cert {} / --key {} cannot serve {domain}; nothing was changed",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Some(pair))
}

impl OwnPair {
    /// Serves the pair through the nginx `proxy` gives (asked for only when nginx/ssl/
    /// does not hold the pair already), and checks that it is served.
    pub async fn serve<P, F>(
        &self,
        paths: &StackPaths,
        domain: &str,
        proxy: impl FnOnce() -> F,
    ) -> Result<CertStep>
    where
        P: crate::tls::install::Proxy + Sync,
        F: Future<Output = Result<P>>,
    {
        if crate::tls::files::read(&paths.cert()).ok().as_deref() == Some(self.chain.as_bytes()) {
            return Ok(CertStep::Kept("your --cert is already served"));
        }
        let proxy = proxy().await?;
        let info =
            crate::tls::install::install_and_verify(&proxy, paths, &self.chain, &self.key, domain)
                .await?;
        Ok(CertStep::Installed {
            from: "your certificate".to_string(),
            serial: info.serial,
            not_after: crate::tls::inspect::rfc3339(info.not_after),
        })
    }
}

/// What the certificate step after the containers ended with.
pub enum CertStep {
    /// The certificate in nginx/ssl/ stays (self-signed or not, and no CA asked).
    Kept(&'static str),
    /// A CA certificate is in place and not due.
    NotDue,
    /// A new certificate is served: `from` is "your certificate" or the names the CA
    /// certified.
    Installed {
        from: String,
        serial: String,
        not_after: String,
    },
    /// The CA step failed; `served` (the previous certificate) keeps serving.
    Failed { error: String, served: &'static str },
}

impl CertStep {
    /// One phrase for the audit log.
    pub fn describe(&self) -> String {
        match self {
            CertStep::Kept(why) => format!("kept ({why})"),
            CertStep::NotDue => "not due".to_string(),
            CertStep::Installed { serial, .. } => format!("installed serial {serial}"),
            CertStep::Failed { error, .. } => format!("failed: {error}"),
        }
    }

    /// What the CA step of either mode came to; a failure keeps what nginx/ssl/ serves.
    pub(crate) fn from_ca(
        paths: &StackPaths,
        issued: Result<crate::tls::issue::Outcome>,
    ) -> CertStep {
        match issued {
            Ok(crate::tls::issue::Outcome::NotDue { .. }) => CertStep::NotDue,
            Ok(crate::tls::issue::Outcome::Issued { names, info, .. }) => CertStep::Installed {
                from: format!("certificate for {} from the CA", names.join(", ")),
                serial: info.serial,
                not_after: crate::tls::inspect::rfc3339(info.not_after),
            },
            Err(err) => CertStep::failed(paths, &err),
        }
    }

    /// The CA step failed with `err`; what is in nginx/ssl/ keeps serving.
    fn failed(paths: &StackPaths, err: &anyhow::Error) -> CertStep {
        let served = crate::tls::issue::current(paths)
            .ok()
            .flatten()
            .map(|(_, info)| {
                if info.self_signed {
                    "the self-signed bootstrap certificate"
                } else {
                    "the previous certificate"
                }
            })
            .unwrap_or("the previous certificate");
        CertStep::Failed {
            error: format!("{err:#}"),
            served,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawSettings;

    fn settings(pairs: &[(&str, &str)]) -> impl FnOnce() -> Result<CertSettings> {
        let mut raw = RawSettings::default();
        raw.overlay(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        move || CertSettings::from_raw(&raw, Path::new("/srv/elior"), false)
    }

    fn pair() -> Option<OwnPair> {
        Some(OwnPair {
            chain: "CHAIN".into(),
            key: "KEY".into(),
        })
    }

    /// What the decision came to, in a word a test can compare.
    fn decided(
        self_signed: bool,
        pair: Option<OwnPair>,
        certs: impl FnOnce() -> Result<CertSettings>,
    ) -> String {
        match CertSource::decide(self_signed, pair, certs) {
            Ok(CertSource::Keep(kept)) => format!("{kept:?}"),
            Ok(CertSource::UserPair(pair)) => format!("UserPair({})", pair.chain),
            Ok(CertSource::Acme(s)) => format!("Acme({}, {})", s.domain, s.email.unwrap()),
            Err(err) => format!("error: {err}"),
        }
    }

    const PUBLIC: (&str, &str) = ("DOMAIN", "fit.example.com");
    const EMAIL: (&str, &str) = ("ACME_EMAIL", "ops@example.com");

    #[test]
    fn each_reason_decides_where_the_certificate_comes_from() {
        assert_eq!(
            decided(true, None, settings(&[PUBLIC, EMAIL])),
            "SelfSigned"
        );
        assert_eq!(
            decided(false, pair(), settings(&[PUBLIC, EMAIL])),
            "UserPair(CHAIN)"
        );
        for local in ["localhost", "app.localhost", "127.0.0.1", "203.0.113.7"] {
            assert_eq!(
                decided(false, None, settings(&[("DOMAIN", local), EMAIL])),
                "LocalName",
                "{local}"
            );
        }
        assert_eq!(decided(false, None, settings(&[PUBLIC])), "NoEmail");
        assert_eq!(
            decided(false, None, settings(&[PUBLIC, EMAIL])),
            "Acme(fit.example.com, ops@example.com)"
        );
    }

    #[test]
    fn the_reasons_are_taken_in_order() {
        // --self-signed before the user's pair (clap refuses both, a caller might not).
        assert_eq!(
            decided(true, pair(), settings(&[PUBLIC, EMAIL])),
            "SelfSigned"
        );
        // The user's pair serves even a DOMAIN no CA would certify.
        assert_eq!(
            decided(false, pair(), settings(&[("DOMAIN", "localhost"), EMAIL])),
            "UserPair(CHAIN)"
        );
        // A local DOMAIN asks no CA, with ACME_EMAIL or without.
        assert_eq!(
            decided(false, None, settings(&[("DOMAIN", "localhost")])),
            "LocalName"
        );
        // The CA settings are read only when they decide: a bad ACME_EMAIL stops neither
        // --self-signed nor the user's pair, and is named when it would be used.
        let bad = [PUBLIC, ("ACME_EMAIL", "not an email")];
        assert_eq!(decided(true, None, settings(&bad)), "SelfSigned");
        assert_eq!(decided(false, pair(), settings(&bad)), "UserPair(CHAIN)");
        assert!(
            decided(false, None, settings(&bad)).starts_with("error: ACME_EMAIL: \"not an email\""),
            "{}",
            decided(false, None, settings(&bad))
        );
    }
}
