//! The HTTPS proof of a deploy: `GET https://DOMAIN/PATH` sent to a local address (the
//! stack's HTTPS port) with DOMAIN as SNI and Host, the served certificate pinned to the
//! one on disk (the bootstrap certificate is self-signed, so no CA could vouch for it; a
//! pin proves nginx serves exactly the file elior installed). Returns status, headers and
//! body so callers can check the security headers too.
//!
//! Requests go through elior's one HTTP client ([`crate::http`]), one per connection. It
//! never sends credentials of its own.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::http::{ClientBuilder, Trust};

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
    trust: Trust,
}

impl PinnedClient {
    /// Pins the first certificate (the leaf) of the PEM file at `cert_path`.
    pub fn from_pem_file(cert_path: &Path) -> Result<PinnedClient> {
        Ok(PinnedClient {
            trust: Trust::pinned_pem_file(cert_path)?,
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
        self.send(addr, domain, "GET", path, &[], None, timeout)
            .await
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
        let url = format!("https://{domain}:{}{path}", addr.port());
        let what = || format!("{method} https://{domain}{path} at {addr}");
        let method = hyper::Method::from_bytes(method.as_bytes())
            .with_context(|| format!("{method:?} is not an HTTP method"))?;
        let client = ClientBuilder::new(self.trust.clone())
            .connect_to(addr.ip())
            .connect_timeout(timeout)
            .response_timeout(timeout)
            .fresh_connections()
            .build()?;
        let body = bytes::Bytes::copy_from_slice(body.unwrap_or_default());
        let reply = client
            .send(method, &url, headers, body)
            .await
            .with_context(what)?;
        Ok(Response {
            status: reply.status.as_u16(),
            headers: reply.header_pairs(),
            body: reply.text(),
        })
    }
}
