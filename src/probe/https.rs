//! The HTTPS proof of a deploy: `GET https://DOMAIN/PATH` sent to a local address (the
//! stack's HTTPS port) with DOMAIN as SNI and Host, the served certificate pinned to the
//! one on disk (the bootstrap certificate is self-signed, so no CA could vouch for it; a
//! pin proves nginx serves exactly the file elior installed). Returns status, headers and
//! body so callers can check the security headers too.
//!
//! One request per connection (`Connection: close`). It never sends credentials.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// An answer, with header names in lower case.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A client that trusts exactly one certificate.
#[derive(Clone)]
pub struct PinnedClient {
    connector: TlsConnector,
}

impl PinnedClient {
    /// Pins the first certificate (the leaf) of the PEM file at `cert_path`.
    pub fn from_pem_file(cert_path: &Path) -> Result<PinnedClient> {
        let leaf = CertificateDer::pem_file_iter(cert_path)
            .with_context(|| format!("failed to read certificate {}", cert_path.display()))?
            .next()
            .ok_or_else(|| anyhow!("{} holds no certificate", cert_path.display()))?
            .with_context(|| format!("{} is not a PEM certificate", cert_path.display()))?;
        let config = crate::tls::served::observing_config(
            rustls::DEFAULT_VERSIONS,
            crate::tls::served::ObserveOnly::pinned(leaf),
        )?;
        Ok(PinnedClient {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// `GET path` at `addr` for `domain`, bounded by `timeout`.
    pub async fn get(
        &self,
        addr: SocketAddr,
        domain: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<Response> {
        let url = format!("https://{domain}{path} at {addr}");
        tokio::time::timeout(timeout, self.get_unbounded(addr, domain, path))
            .await
            .map_err(|_| anyhow!("{url} did not answer within {timeout:?}"))?
            .with_context(|| format!("GET {url} failed"))
    }

    /// `METHOD path` with extra headers and a body (tests drive the API through nginx with
    /// it), bounded by `timeout`.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        addr: SocketAddr,
        domain: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Response> {
        let url = format!("https://{domain}{path} at {addr}");
        tokio::time::timeout(
            timeout,
            self.send_unbounded(addr, domain, method, path, headers, body),
        )
        .await
        .map_err(|_| anyhow!("{url} did not answer within {timeout:?}"))?
        .with_context(|| format!("{method} {url} failed"))
    }

    async fn get_unbounded(&self, addr: SocketAddr, domain: &str, path: &str) -> Result<Response> {
        self.send_unbounded(addr, domain, "GET", path, &[], None)
            .await
    }

    async fn send_unbounded(
        &self,
        addr: SocketAddr,
        domain: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| anyhow!("{domain:?} is not a server name: {e}"))?;
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        let mut tls = self
            .connector
            .connect(name, tcp)
            .await
            .context("TLS handshake failed")?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {domain}\r\nUser-Agent: elior-deploy\r\nConnection: close\r\n"
        );
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        tls.write_all(&bytes).await?;
        let mut answer = Vec::new();
        // nginx may close without a TLS close_notify; what was read still counts.
        let read = tls.read_to_end(&mut answer).await;
        if answer.is_empty() {
            read.context("no answer")?;
            bail!("the connection closed without an answer");
        }
        parse_response(&answer)
    }
}

fn parse_response(raw: &[u8]) -> Result<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("not an HTTP answer: {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_headers_and_body() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nX-Frame-Options: DENY\r\nContent-Type: application/json\r\n\r\n{\"status\":\"ok\"}").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.body, "{\"status\":\"ok\"}");
        assert!(parse_response(b"garbage").is_err());
    }
}
