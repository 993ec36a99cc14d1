//! The certificate and key in nginx/ssl: present, parse, not expired nor due for
//! renewal, cover DOMAIN, belong together, chain to the system roots (plus
//! ACME_CA_FILE), and are what nginx serves.

use std::net::SocketAddr;

use serde::Serialize;

use super::{Check, CheckInfo, Group};
use crate::doctor::facts::Stack;
use crate::doctor::sources::{one_line, Sources, NET_TIMEOUT};
use crate::doctor::{human_age, Finding, NEEDS_SETTINGS};
use crate::plan::certs::Renewal;
use crate::tls::inspect::{self, CertInfo};

pub struct Certificate;

#[derive(Debug, Clone, Default, Serialize)]
pub struct CertFacts {
    pub cert_path: String,
    pub key_path: String,
    pub cert_present: bool,
    pub key_present: bool,
    pub cert_error: Option<String>,
    pub key_error: Option<String>,
    pub info: Option<CertInfo>,
    pub chain_len: usize,
    pub key_matches: Option<bool>,
    /// `Some(None)` verified; `Some(Some(e))` did not verify; `None` not tried.
    pub chain_error: Option<Option<String>>,
    /// ACME_CA_FILE (environment, then the env file), whose roots the chain check
    /// trusts beside the system's: a stack on a private CA verifies against it.
    pub ca_file: Option<String>,
    /// Why ACME_CA_FILE could not be read as PEM roots.
    pub ca_file_error: Option<String>,
    pub renewal: Option<Renewal>,
    pub served_serial: Option<String>,
    pub served_error: Option<String>,
}

impl Check for Certificate {
    const INFO: CheckInfo = CheckInfo {
        name: "certificate",
        group: Group::Configuration,
        about: "the certificate and key: present, valid, not due, matching, trusted, served",
    };
    /// `None` without valid settings.
    type Facts = Option<CertFacts>;

    async fn gather(sources: &Sources) -> Option<CertFacts> {
        let config = sources.config.as_ref()?;
        let domain = config.domain.as_str().to_string();
        let https_port = config.https_port;
        let paths = crate::tls::files::StackPaths::new(&sources.dir);
        let (cert_path, key_path) = (paths.cert(), paths.key());
        let mut f = CertFacts {
            cert_path: cert_path.display().to_string(),
            key_path: key_path.display().to_string(),
            cert_present: cert_path.exists(),
            key_present: key_path.exists(),
            ..Default::default()
        };
        if !f.cert_present || !f.key_present {
            return Some(f);
        }
        let chain = std::fs::read(&cert_path)
            .map_err(anyhow::Error::from)
            .and_then(|pem| inspect::parse_chain(&pem, &f.cert_path));
        let chain = match chain {
            Ok(c) => c,
            Err(e) => {
                f.cert_error = Some(format!("{e:#}"));
                return Some(f);
            }
        };
        f.chain_len = chain.len();
        let info = match inspect::describe(&chain[0]) {
            Ok(i) => i,
            Err(e) => {
                f.cert_error = Some(format!("{e:#}"));
                return Some(f);
            }
        };
        match std::fs::read(&key_path)
            .map_err(anyhow::Error::from)
            .and_then(|pem| inspect::parse_key(&pem, &f.key_path))
            .and_then(|key| inspect::key_matches(&chain[0], &key))
        {
            Ok(m) => f.key_matches = Some(m),
            Err(e) => f.key_error = Some(format!("{e:#}")),
        }
        // ACME_CA_FILE as `elior cert` reads it (the environment wins over the file),
        // trusted beside the system roots; a file that cannot be used is a finding, not
        // a silent fall back to the system roots alone.
        let mut roots = inspect::system_roots();
        match crate::tls::settings::CertSettings::load(&sources.dir, false) {
            Ok(settings) => {
                if let Some(path) = settings.ca_file {
                    f.ca_file = Some(path.display().to_string());
                    match inspect::load_roots(&path) {
                        Ok(extra) => roots.roots.extend(extra.roots),
                        Err(e) => f.ca_file_error = Some(format!("{e:#}")),
                    }
                }
            }
            Err(e) => f.ca_file_error = Some(one_line(&e)),
        }
        f.chain_error = Some(
            inspect::verify_chain(&chain, roots, &domain)
                .err()
                .map(|e| format!("{e:#}")),
        );
        let current = crate::tls::issue::facts(&info, std::slice::from_ref(&domain));
        f.renewal = Some(crate::plan::certs::renewal(
            Some(&current),
            sources.stack.now,
            None,
            0.0,
            false,
        ));
        let addr = SocketAddr::from(([127, 0, 0, 1], https_port));
        match crate::tls::served::served_chain(addr, &domain, NET_TIMEOUT).await {
            Ok(served) => match served.first().map(inspect::describe) {
                Some(Ok(s)) => f.served_serial = Some(s.serial),
                Some(Err(e)) => f.served_error = Some(format!("{e:#}")),
                None => f.served_error = Some("no certificate served".into()),
            },
            Err(e) => f.served_error = Some(format!("{e:#}")),
        }
        f.info = Some(info);
        Some(f)
    }

    fn judge(stack: &Stack, f: &Option<CertFacts>) -> Vec<Finding> {
        let f = f.as_ref();
        let Some(f) = f else {
            return vec![Finding::skipped(NEEDS_SETTINGS)];
        };
        let domain = stack.domain_arg();
        let renew = format!("elior cert renew --force --dir {}", stack.dir);
        if !f.cert_present || !f.key_present {
            let missing = if !f.cert_present {
                &f.cert_path
            } else {
                &f.key_path
            };
            return vec![Finding::failure(
            format!("{missing} is missing"),
            format!("elior cert issue --dir {}  (or `elior deploy {domain}` makes a bootstrap certificate)", stack.dir),
        )];
        }
        if let Some(e) = &f.cert_error {
            return vec![Finding::failure(
                format!("the certificate does not parse: {e}"),
                renew,
            )];
        }
        let Some(info) = &f.info else {
            return vec![Finding::failure("the certificate could not be read", renew)];
        };
        let mut out = Vec::new();
        let left = info.not_after - stack.now;
        if left <= 0 {
            out.push(Finding::failure(
                format!(
                    "the certificate expired {} ago ({})",
                    human_age(-left),
                    crate::tls::inspect::rfc3339(info.not_after)
                ),
                renew.clone(),
            ));
        } else if let Some(r) = f.renewal.filter(|r| r.due && !info.self_signed) {
            let why = r.reason.map(|r| r.describe()).unwrap_or("renewal is due");
            out.push(Finding::warning(
                format!("renewal is due: {why} ({} left)", human_age(left)),
                format!("elior cert renew --dir {}", stack.dir),
            ));
        }
        if let Some(d) = &stack.domain {
            if !info.covers(d) {
                out.push(Finding::failure(
                    format!(
                        "the certificate is for {} and does not cover DOMAIN {d}",
                        info.sans.join(", ")
                    ),
                    renew.clone(),
                ));
            }
        }
        if let Some(e) = &f.key_error {
            out.push(Finding::failure(
                format!("the key {} is not usable: {e}", f.key_path),
                renew.clone(),
            ));
        } else if f.key_matches == Some(false) {
            out.push(Finding::failure(
                format!(
                    "{} is not the key of {}: nginx will refuse to start",
                    f.key_path, f.cert_path
                ),
                format!(
                "restore the key that belongs to this certificate, or issue a new pair: {renew}"
            ),
            ));
        }
        if info.self_signed {
            if stack.production {
                out.push(Finding::warning(
                    "the certificate is the self-signed bootstrap: browsers will warn",
                    format!(
                        "elior cert issue --dir {}  (needs DNS pointing here and port 80 open)",
                        stack.dir
                    ),
                ));
            }
        } else if let Some(Some(e)) = &f.chain_error {
            if left > 0 {
                let trusted = match &f.ca_file {
                    Some(ca) => format!("the system roots and ACME_CA_FILE {ca}"),
                    None => "the system roots".to_string(),
                };
                let private_ca = match &f.ca_file {
                Some(ca) => format!(
                    "; for a private CA, {ca} must hold the root that issued it (for pebble, its /roots/0)"
                ),
                None => "; for a private CA (step-ca, pebble), set ACME_CA_FILE to its root PEM".to_string(),
            };
                out.push(Finding::failure(
                format!("the chain does not verify against {trusted}: {e}"),
                format!(
                    "install the full chain (leaf first, then intermediates) in {}, or {renew}{private_ca}",
                    f.cert_path
                ),
            ));
            }
        }
        if let Some(e) = &f.ca_file_error {
            out.push(Finding::failure(
            format!("ACME_CA_FILE cannot be used for the chain check: {e}"),
            format!(
                "point ACME_CA_FILE (in {} or the environment) at a PEM file with your private CA's root certificate(s)",
                stack.env_path()
            ),
        ));
        }
        match (&f.served_serial, &f.served_error) {
            (Some(served), _) if *served != info.serial => out.push(Finding::failure(
                format!(
                    "nginx serves a different certificate (serial {served}) than {} (serial {})",
                    f.cert_path, info.serial
                ),
                format!(
                    "reload nginx: docker exec {}-nginx nginx -c {}/nginx.conf -s reload",
                    stack.project_arg(),
                    crate::plan::render::paths::NGINX_MOUNT
                ),
            )),
            (None, Some(e)) => out.push(Finding::warning(
                format!("could not read the served certificate: {e}"),
                "see the containers and nginx checks",
            )),
            _ => {}
        }
        if out.is_empty()
            || out
                .iter()
                .all(|f| f.status == crate::doctor::Status::Warning)
        {
            out.insert(
                0,
                Finding::ok(format!(
                    "{} for {} by {}, {} left{}",
                    info.key_type,
                    info.sans.join(", "),
                    if info.self_signed {
                        "itself"
                    } else {
                        info.issuer.as_str()
                    },
                    human_age(left),
                    if f.served_serial.is_some() {
                        "; served by nginx"
                    } else {
                        ""
                    }
                )),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::{statuses, test_stack, TEST_NOW};
    use crate::doctor::Status;

    fn judge(stack: &Stack, f: Option<&CertFacts>) -> Vec<Finding> {
        Certificate::judge(stack, &f.cloned())
    }

    const DAY: i64 = 86_400;

    fn cert_info(not_before: i64, not_after: i64, self_signed: bool) -> CertInfo {
        CertInfo {
            subject: "CN=fit.example.com".into(),
            sans: vec!["fit.example.com".into()],
            issuer: "CN=Test CA".into(),
            serial: "01".into(),
            not_before,
            not_after,
            self_signed,
            key_type: "ECDSA P-256".into(),
            key_bits: 256,
        }
    }

    fn cert_facts(info: CertInfo) -> CertFacts {
        let current = crate::plan::certs::Current {
            not_before: info.not_before,
            not_after: info.not_after,
            self_signed: info.self_signed,
            covers_names: true,
        };
        CertFacts {
            cert_path: "/srv/elior/nginx/ssl/cert.pem".into(),
            key_path: "/srv/elior/nginx/ssl/key.pem".into(),
            cert_present: true,
            key_present: true,
            chain_len: 1,
            key_matches: Some(true),
            chain_error: Some(None),
            renewal: Some(crate::plan::certs::renewal(
                Some(&current),
                TEST_NOW,
                None,
                0.0,
                false,
            )),
            served_serial: Some(info.serial.clone()),
            info: Some(info),
            ..Default::default()
        }
    }

    #[test]
    fn certificate_rules() {
        let fresh = cert_facts(cert_info(TEST_NOW - DAY, TEST_NOW + 89 * DAY, false));
        assert_eq!(
            statuses(&judge(&test_stack(), Some(&fresh))),
            vec![Status::Ok]
        );
        let expired = cert_facts(cert_info(TEST_NOW - 91 * DAY, TEST_NOW - DAY, false));
        let found = judge(&test_stack(), Some(&expired));
        assert_eq!(found[0].status, Status::Failure);
        assert!(found[0]
            .finding
            .starts_with("the certificate expired 1d 0h ago"));
        assert_eq!(
            found[0].fix.as_deref(),
            Some("elior cert renew --force --dir /srv/elior")
        );
        let due = cert_facts(cert_info(TEST_NOW - 70 * DAY, TEST_NOW + 20 * DAY, false));
        assert_eq!(
            statuses(&judge(&test_stack(), Some(&due))),
            vec![Status::Ok, Status::Warning]
        );
        let wrong_key = CertFacts {
            key_matches: Some(false),
            ..fresh.clone()
        };
        let found = judge(&test_stack(), Some(&wrong_key));
        assert!(found[0].finding.contains("is not the key of"));
        let bootstrap = cert_facts(cert_info(TEST_NOW - DAY, TEST_NOW + 89 * DAY, true));
        let found = judge(&test_stack(), Some(&bootstrap));
        assert_eq!(statuses(&found), vec![Status::Ok, Status::Warning]);
        let stale_served = CertFacts {
            served_serial: Some("02".into()),
            ..fresh
        };
        assert!(judge(&test_stack(), Some(&stale_served))[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("nginx -c /etc/nginx/elior/nginx.conf -s reload"));
    }

    #[test]
    fn the_chain_check_names_acme_ca_file() {
        let info = cert_info(TEST_NOW - DAY, TEST_NOW + 89 * DAY, false);
        let unknown_issuer = CertFacts {
            chain_error: Some(Some("invalid peer certificate: UnknownIssuer".into())),
            ..cert_facts(info.clone())
        };
        let found = judge(&test_stack(), Some(&unknown_issuer));
        assert_eq!(
            found[0].finding,
            "the chain does not verify against the system roots: invalid peer certificate: UnknownIssuer"
        );
        assert!(found[0]
            .fix
            .as_deref()
            .unwrap()
            .ends_with("set ACME_CA_FILE to its root PEM"));
        let with_ca = CertFacts {
            ca_file: Some("/srv/elior/ca.pem".into()),
            ..unknown_issuer.clone()
        };
        assert!(judge(&test_stack(), Some(&with_ca))[0]
            .finding
            .contains("and ACME_CA_FILE /srv/elior/ca.pem"));
        let unreadable = CertFacts {
            ca_file: Some("/srv/elior/missing.pem".into()),
            ca_file_error: Some("failed to read CA file /srv/elior/missing.pem".into()),
            ..cert_facts(info)
        };
        let found = judge(&test_stack(), Some(&unreadable));
        assert_eq!(statuses(&found), vec![Status::Failure]);
        assert!(found[0].finding.starts_with("ACME_CA_FILE cannot be used"));
    }
}
