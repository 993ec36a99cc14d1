//! /health over HTTPS through the stack's nginx (pinned to the stack's own certificate)
//! says the database is connected, and plain HTTP redirects to HTTPS.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::{Check, CheckInfo, Group};
use crate::doctor::facts::Stack;
use crate::doctor::sources::{one_line, Sources, NET_TIMEOUT};
use crate::doctor::{Finding, NEEDS_SETTINGS};

pub struct Nginx;

#[derive(Debug, Clone, Default, Serialize)]
pub struct NginxFacts {
    pub https_url: String,
    pub https_status: Option<u16>,
    pub https_error: Option<String>,
    pub database_status: Option<String>,
    pub http_url: String,
    pub http_status: Option<u16>,
    pub http_location: Option<String>,
    pub http_error: Option<String>,
    /// The `Date` header of the HTTPS answer, as Unix seconds.
    pub server_date: Option<i64>,
}

impl Check for Nginx {
    const INFO: CheckInfo = CheckInfo {
        name: "nginx",
        group: Group::Stack,
        about: "/health over HTTPS through nginx says the database is connected; HTTP redirects",
    };
    /// `None` without valid settings.
    type Facts = Option<NginxFacts>;

    async fn gather(sources: &Sources) -> Option<NginxFacts> {
        sources.nginx().await.cloned()
    }

    fn judge(stack: &Stack, f: &Option<NginxFacts>) -> Vec<Finding> {
        let Some(f) = f else {
            return vec![Finding::skipped(NEEDS_SETTINGS)];
        };
        let mut out = Vec::new();
        match (f.https_status, &f.https_error) {
            (Some(200), _) if f.database_status.as_deref() == Some("connected") => out.push(
                Finding::ok(format!("{} answers 200, database connected", f.https_url)),
            ),
            (Some(status), _) => out.push(Finding::failure(
                format!(
                    "{} answers {status}, database {}",
                    f.https_url,
                    f.database_status.as_deref().unwrap_or("unknown")
                ),
                format!(
                    "see the containers and database checks; `elior logs api --dir {}`",
                    stack.dir
                ),
            )),
            (None, e) => out.push(Finding::failure(
                format!(
                    "{} does not answer: {}",
                    f.https_url,
                    e.as_deref().unwrap_or("no answer")
                ),
                format!(
                    "see the containers and ports checks; `elior logs nginx --dir {}`",
                    stack.dir
                ),
            )),
        }
        match (f.http_status, &f.http_location, &f.http_error) {
            (Some(301 | 302 | 307 | 308), Some(loc), _) if loc.starts_with("https://") => {
                out.push(Finding::ok(format!("{} redirects to {loc}", f.http_url)))
            }
            (Some(status), loc, _) => out.push(Finding::failure(
                format!(
                    "{} answers {status}{} instead of redirecting to HTTPS",
                    f.http_url,
                    loc.as_ref().map(|l| format!(" to {l}")).unwrap_or_default()
                ),
                format!(
                    "elior render --dir {0} && elior deploy {1} --dir {0}",
                    stack.dir,
                    stack.domain_arg()
                ),
            )),
            (None, _, e) => out.push(Finding::failure(
                format!(
                    "{} does not answer: {}",
                    f.http_url,
                    e.as_deref().unwrap_or("no answer")
                ),
                "see the containers and ports checks",
            )),
        }
        out
    }
}

/// Asks the stack's nginx on this host, over HTTPS (trusting only the stack's own
/// certificate) and plain HTTP. `None` without valid settings. Called once per run
/// through [`Sources::nginx`], which the clock check reads too.
pub(crate) async fn ask(sources: &Sources) -> Option<NginxFacts> {
    let config = sources.config.as_ref()?;
    let domain = config.domain.as_str().to_string();
    let (http_port, https_port) = (config.http_port, config.https_port);
    let cert = crate::tls::files::StackPaths::new(&sources.dir).cert();
    let local = IpAddr::from([127, 0, 0, 1]);
    let http = crate::probe::timing::Url {
        https: false,
        host: domain.clone(),
        port: http_port,
        path: "/".into(),
    };
    let mut f = NginxFacts {
        https_url: format!("https://{domain}:{https_port}/health"),
        http_url: http.display(),
        ..Default::default()
    };
    let answer = match crate::probe::https::PinnedClient::from_pem_file(&cert) {
        Ok(client) => {
            client
                .get(
                    SocketAddr::new(local, https_port),
                    &domain,
                    "/health",
                    NET_TIMEOUT,
                )
                .await
        }
        Err(e) => Err(e),
    };
    match answer {
        Ok(r) => {
            f.https_status = Some(r.status);
            f.server_date = r.header("date").and_then(parse_http_date);
            f.database_status = serde_json::from_str::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["database"]["status"].as_str().map(String::from));
        }
        Err(e) => f.https_error = Some(one_line(&e)),
    }
    let trust = crate::probe::timing::Trust::Insecure;
    match crate::probe::timing::fetch(&http, Some(local), &trust, NET_TIMEOUT).await {
        Ok(r) => {
            f.http_status = Some(r.status);
            f.http_location = r.header("location").map(String::from);
            if f.server_date.is_none() {
                f.server_date = r.header("date").and_then(parse_http_date);
            }
        }
        Err(e) => f.http_error = Some(one_line(&e)),
    }
    Some(f)
}

fn parse_http_date(value: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|t| t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::{statuses, test_stack};
    use crate::doctor::Status;

    #[test]
    fn parses_http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
    }

    #[test]
    fn a_healthy_stack_answers_200_and_redirects_to_https() {
        let good = NginxFacts {
            https_url: "https://fit.example.com:443/health".into(),
            https_status: Some(200),
            database_status: Some("connected".into()),
            http_url: "http://fit.example.com:80/".into(),
            http_status: Some(301),
            http_location: Some("https://fit.example.com/".into()),
            ..Default::default()
        };
        let found = Nginx::judge(&test_stack(), &Some(good.clone()));
        assert_eq!(statuses(&found), vec![Status::Ok, Status::Ok]);
        let down = NginxFacts {
            https_status: None,
            https_error: Some("connection refused".into()),
            http_status: Some(200),
            http_location: None,
            ..good
        };
        let found = Nginx::judge(&test_stack(), &Some(down));
        assert_eq!(
            found[0].finding,
            "https://fit.example.com:443/health does not answer: connection refused"
        );
        assert_eq!(
            found[1].finding,
            "http://fit.example.com:80/ answers 200 instead of redirecting to HTTPS"
        );
        assert_eq!(
            statuses(&Nginx::judge(&test_stack(), &None)),
            vec![Status::Skipped]
        );
    }
}
