//! One HTTP(S) GET with its timing broken down the way `curl -w` does: DNS, TCP connect,
//! TLS handshake, time to first byte and total. Used by `elior probe health`, by
//! `elior probe ssl` for the headers of a page, and by `doctor` for the redirect check.
//!
//! Sent through elior's one HTTP client ([`crate::http`]), one request per connection, so
//! each run measures a cold connection (what a new visitor sees). Trust is the caller's choice: the system's
//! roots plus any `--ca`, or none at all with `--insecure`. It never sends credentials.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hyper::Method;
use serde::Serialize;

use crate::http::{ClientBuilder, Unreachable};

/// An `http(s)://host[:port]/path` URL, split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            bail!("{url:?} is not an http:// or https:// URL");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = split_host_port(authority, if https { 443 } else { 80 })
            .with_context(|| format!("{url:?} has a bad host or port"))?;
        Ok(Url {
            https,
            host,
            port,
            path: path.to_string(),
        })
    }

    /// The Host header: the port only when it is not the scheme's default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    pub fn display(&self) -> String {
        format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            self.authority(),
            self.path
        )
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`.
pub fn split_host_port(authority: &str, default_port: u16) -> Result<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').context("unclosed [")?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => bail!("unexpected {after:?} after ]"),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (authority, None),
        }
    };
    if host.is_empty() {
        bail!("no host");
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .context("bad port")?,
        None => default_port,
    };
    Ok((host.to_string(), port))
}

/// Whom to believe about the server's certificate: the system's roots plus any `--ca`, or
/// none at all with `--insecure`.
pub use crate::http::Trust;

/// How long each phase took, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    pub dns_ms: f64,
    pub connect_ms: f64,
    /// `None` for plain HTTP.
    pub tls_ms: Option<f64>,
    /// From the request being sent to the first byte of the answer.
    pub ttfb_ms: f64,
    pub total_ms: f64,
}

/// An answer, header names in lower case.
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    pub url: String,
    pub remote: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub tls_version: Option<String>,
    pub cipher: Option<String>,
    pub timings: Timings,
}

impl Exchange {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// GETs `url`, connecting to `connect` instead of resolving the host when given.
pub async fn fetch(
    url: &Url,
    connect: Option<IpAddr>,
    trust: &Trust,
    timeout: Duration,
) -> Result<Exchange> {
    tokio::time::timeout(timeout, fetch_unbounded(url, connect, trust))
        .await
        .map_err(|_| anyhow!("{} did not answer within {timeout:?}", url.display()))?
}

async fn fetch_unbounded(url: &Url, connect: Option<IpAddr>, trust: &Trust) -> Result<Exchange> {
    let start = Instant::now();
    let addrs: Vec<IpAddr> = match connect {
        Some(ip) => vec![ip],
        None => match url.host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((url.host.as_str(), url.port))
                .await
                .with_context(|| format!("{} does not resolve", url.host))?
                .map(|a| a.ip())
                .collect(),
        },
    };
    let dns = start.elapsed();
    let mut last_err = anyhow!("{} resolves to no address", url.host);
    for ip in addrs {
        let client = ClientBuilder::new(trust.clone())
            .connect_to(ip)
            .fresh_connections()
            .build()?;
        let target = url.display();
        let request = client.send(Method::GET, &target, &[("accept", "*/*")], Bytes::new());
        let reply = match request.await {
            Ok(reply) => reply,
            // Another address of the name may answer; a TLS failure is the server's answer.
            Err(crate::http::Error::Unreachable(Unreachable::Connect(why))) => {
                last_err = anyhow!("cannot connect to {ip}: {why}");
                continue;
            }
            Err(e) => {
                return Err(anyhow!(e).context(format!("GET {} ({ip}) failed", url.display())))
            }
        };
        let total = start.elapsed();
        let connection = reply
            .connection
            .as_ref()
            .context("the answer came without its connection")?;
        let tls = connection.tls.as_ref();
        return Ok(Exchange {
            url: url.display(),
            remote: connection
                .remote
                .unwrap_or(SocketAddr::new(ip, url.port))
                .to_string(),
            status: reply.status.as_u16(),
            headers: reply.header_pairs(),
            body: reply.text(),
            tls_version: tls.and_then(|t| t.version.clone()),
            cipher: tls.and_then(|t| t.cipher.clone()),
            timings: Timings {
                dns_ms: ms(dns),
                connect_ms: ms(connection.tcp),
                tls_ms: tls.map(|t| ms(t.handshake)),
                ttfb_ms: ms(reply.head_at - connection.ready_at),
                total_ms: ms(total),
            },
        });
    }
    Err(last_err)
}

/// min, median and p99 of a sample (nearest-rank), or `None` when empty.
pub fn summary(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| {
        let r = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[r - 1]
    };
    Some((sorted[0], rank(0.5), rank(0.99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_with_ports_and_ipv6() {
        let u = Url::parse("https://fit.example.com:8443/health").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "fit.example.com", 8443, "/health")
        );
        assert_eq!(u.authority(), "fit.example.com:8443");
        let u = Url::parse("http://[::1]/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority()),
            ("::1", 80, "[::1]".to_string())
        );
        assert_eq!(Url::parse("https://x").unwrap().path, "/");
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("https://x:0/").is_err());
    }

    #[test]
    fn summarises_min_median_p99() {
        assert_eq!(summary(&[]), None);
        assert_eq!(summary(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(summary(&hundred), Some((1.0, 50.0, 99.0)));
    }
}
