//! The container healthcheck's GET: plain http (the API behind nginx), blocking, bounded
//! by one timeout, through elior's one HTTP client ([`crate::http`]). It runs in a `FROM
//! scratch` image with no curl, shell or CA roots.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::http::{ClientBuilder, Trust};

/// An `http://host[:port]/path` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            anyhow!("{url:?} is not an http:// URL (the healthcheck speaks plain HTTP only)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse()
                    .with_context(|| format!("{url:?} has a bad port {p:?}"))?;
                (h, port)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            bail!("{url:?} has no host");
        }
        Ok(HttpUrl {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// Sends a GET and returns the status code. Fails on connect errors, a malformed answer
/// or when `timeout` passes. Blocking: the healthcheck is a whole process of its own.
pub fn get_status(url: &HttpUrl, timeout: Duration) -> Result<u16> {
    let runtime = crate::docker::runtime()?;
    runtime.block_on(async {
        // Plain http only (parse refuses https): no certificate is ever trusted.
        let nothing = Trust::Roots(std::sync::Arc::new(rustls::RootCertStore::empty()));
        let client = ClientBuilder::new(nothing)
            .connect_timeout(timeout)
            .response_timeout(timeout)
            .fresh_connections()
            .build()?;
        let reply = client.get(&url.to_string()).await?;
        Ok(reply.status.as_u16())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = HttpUrl::parse("http://127.0.0.1:8000/health").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8000, "/health")
        );
        let u = HttpUrl::parse("http://api").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("api", 80, "/"));
        let u = HttpUrl::parse("http://[::1]:9/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert!(HttpUrl::parse("https://x").is_err());
        assert!(HttpUrl::parse("http://x:port/").is_err());
    }
}
