//! The whole of "make sure a CA certificate is in service": read the current
//! certificate, decide with `plan::certs` (and the CA's ARI window), check reachability,
//! order over HTTP-01, and install through a [`Proxy`] with a verified reload.
//!
//! Shared by `elior cert issue|renew` and `elior deploy`. Progress goes to the caller's
//! callback; nothing here prints or exits.

use anyhow::{bail, Context, Result};
use rand::Rng;
use rustls::pki_types::CertificateDer;

use super::acme;
use super::files::{self, StackPaths};
use super::inspect::{self, unix_now, CertInfo};
use super::install::{self, Proxy};
use super::settings::CertSettings;
use super::{preflight, resolve};
use crate::plan::certs::{self, Reason, Renewal};

/// What to do and how much to ask the CA.
#[derive(Debug, Clone, Copy, Default)]
pub struct IssueOptions {
    /// Replace the certificate even when it is not due.
    pub force: bool,
    /// Ask the CA's renewal window (ARI) when the lifetime rule alone would wait.
    pub ask_ari: bool,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    NotDue {
        names: Vec<String>,
        current: CertInfo,
        renewal: Renewal,
    },
    Issued {
        names: Vec<String>,
        reason: Reason,
        /// The certificate now served.
        info: CertInfo,
        /// When the new certificate will be due.
        renewal: Renewal,
    },
}

/// The certificate in `nginx/ssl/cert.pem`, if any, parsed.
pub fn current(paths: &StackPaths) -> Result<Option<(Vec<CertificateDer<'static>>, CertInfo)>> {
    let path = paths.cert();
    if !path.exists() {
        return Ok(None);
    }
    let chain = inspect::parse_chain(&files::read(&path)?, &path.display().to_string())?;
    let info = inspect::describe(&chain[0])?;
    Ok(Some((chain, info)))
}

/// The facts the renewal plan needs about `info`, for a stack serving `names`.
pub fn facts(info: &CertInfo, names: &[String]) -> certs::Current {
    certs::Current {
        not_before: info.not_before,
        not_after: info.not_after,
        self_signed: info.self_signed,
        covers_names: names.iter().all(|n| info.covers(n)),
    }
}

/// Refuses a DOMAIN no CA issues for (localhost, an IP address), naming the fix; swarm
/// mode asks before it rolls anything.
pub fn require_public(settings: &CertSettings, paths: &StackPaths) -> Result<()> {
    if !settings.wants_acme() {
        bail!(
            "DOMAIN {} is not a public name; no CA issues for localhost or IP addresses\nset DOMAIN in {} to the site's name, or keep the self-signed certificate",
            settings.domain,
            paths.env_file().display()
        );
    }
    Ok(())
}

/// Obtains and installs a CA certificate for DOMAIN (plus www.DOMAIN when it resolves
/// and is reachable) when one is due, or `options.force`.
pub async fn issue_if_due<P: Proxy + Sync>(
    proxy: &P,
    paths: &StackPaths,
    settings: &CertSettings,
    options: IssueOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Outcome> {
    require_public(settings, paths)?;
    // Every caller holds the deploy lock: no install of another process is under way.
    install::finish_interrupted_install(proxy, paths, &settings.domain, progress).await?;
    let ca = settings.ca();
    let www = format!("www.{}", settings.domain);
    let mut names = vec![settings.domain.clone()];
    if resolve::lookup(&www, settings.http_port).is_ok() {
        names.push(www);
    }

    let current = if options.force {
        current(paths).ok().flatten()
    } else {
        current(paths)
            .context("the current certificate is unreadable\nrun with --force to replace it")?
    };
    let now = unix_now();
    let current_facts = current.as_ref().map(|(_, info)| facts(info, &names));
    let mut decision = certs::renewal(current_facts.as_ref(), now, None, 0.0, options.force);
    let mut account = None;
    let mut ca_knows_current = false;
    // Only a certificate from this CA has a renewal window there, and ARI can only bring
    // renewal forward, so ask only when the lifetime rule would wait.
    if !decision.due && options.ask_ari && paths.account().exists() {
        if let Some((chain, _)) = &current {
            let acct = acme::account(&paths.account(), &ca).await?;
            match acme::renewal_window(&acct, &chain[0]).await {
                Ok(window) => {
                    ca_knows_current = window.is_some();
                    let jitter = rand::thread_rng().gen_range(0.0..1.0);
                    decision = certs::renewal(current_facts.as_ref(), now, window, jitter, false);
                }
                Err(err) => progress(&format!("note: {err:#}; using the lifetime rule alone")),
            }
            account = Some(acct);
        }
    }
    let Some(reason) = decision.reason.filter(|_| decision.due) else {
        let (_, info) = current.context("no certificate, yet not due")?;
        return Ok(Outcome::NotDue {
            names,
            current: info,
            renewal: decision,
        });
    };
    progress(&format!("{}: {}", settings.domain, reason.describe()));

    let http01 = proxy.http01(paths);
    progress(&format!(
        "checking that the CA can reach http://{}:{}/{}/",
        settings.domain,
        settings.http_port,
        files::CHALLENGE_DIR
    ));
    preflight::check_name(&names[0], settings.http_port, &http01).await?;
    if names.len() > 1 {
        if let Err(err) = preflight::check_name(&names[1], settings.http_port, &http01).await {
            progress(&format!(
                "note: leaving {} out of the certificate: {err:#}",
                names[1]
            ));
            names.truncate(1);
        }
    }

    let account = match account {
        Some(account) => account,
        None => acme::account(&paths.account(), &ca).await?,
    };
    if !ca_knows_current {
        if let Some((chain, info)) = &current {
            ca_knows_current = !info.self_signed
                && matches!(acme::renewal_window(&account, &chain[0]).await, Ok(Some(_)));
        }
    }
    // Tell the CA which certificate this replaces (ARI), when it issued that one.
    let replaces = match &current {
        Some((chain, _)) if ca_knows_current => acme::certificate_id(&chain[0]).ok(),
        _ => None,
    };
    progress(&format!(
        "ordering a certificate for {} from {}",
        names.join(", "),
        ca.directory
    ));
    let issued = acme::obtain(&account, &ca, &names, &http01, replaces).await?;
    progress(proxy.installing());
    let info = install::install_and_verify(
        proxy,
        paths,
        &issued.cert_pem,
        &issued.key_pem,
        &settings.domain,
    )
    .await?;
    let renewal = certs::renewal(Some(&facts(&info, &names)), now, None, 0.0, false);
    Ok(Outcome::Issued {
        names,
        reason,
        info,
        renewal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // deploy may run the flow on a multi-threaded runtime; keep the future Send.
    #[allow(dead_code)]
    fn issue_if_due_is_send(
        proxy: &install::HostNginx,
        paths: &StackPaths,
        settings: &CertSettings,
    ) {
        fn assert_send<T: Send>(_: T) {}
        assert_send(issue_if_due(
            proxy,
            paths,
            settings,
            IssueOptions::default(),
            &|_| {},
        ));
    }
}
