//! One HTTP(S) GET with its timing broken down the way `curl -w` does: DNS, TCP connect,
//! TLS handshake, time to first byte and total. Used by `elior probe health`, by
//! `elior probe ssl` for the headers of a page, and by `doctor` for the redirect check.
//!
//! HTTP/1.1 with `Connection: close`, one request per connection, so each run measures a
//! cold connection (what a new visitor sees). Trust is the caller's choice: the system's
//! roots plus any `--ca`, or none at all with `--insecure`. It never sends credentials.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

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

/// Whom to believe about the server's certificate.
#[derive(Clone)]
pub enum Trust {
    /// These roots (the system's, plus any `--ca`).
    Roots(Arc<RootCertStore>),
    /// Any certificate (`--insecure`): for reading a page, never for sending secrets.
    Insecure,
}

impl Trust {
    /// The system's roots plus every certificate in `ca` (a PEM file).
    pub fn system_plus(ca: Option<&std::path::Path>) -> Result<Trust> {
        let mut roots = crate::tls::inspect::system_roots();
        if let Some(path) = ca {
            for der in crate::tls::inspect::load_roots(path)?.roots {
                roots.roots.push(der);
            }
        }
        Ok(Trust::Roots(Arc::new(roots)))
    }

    fn connector(&self) -> Result<TlsConnector> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS setup failed")?;
        let mut config = match self {
            Trust::Roots(roots) => builder
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(crate::tls::served::ObserveOnly::any())
                .with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

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

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

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
    let addrs: Vec<SocketAddr> = match connect {
        Some(ip) => vec![SocketAddr::new(ip, url.port)],
        None => match url.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, url.port)],
            Err(_) => tokio::net::lookup_host((url.host.as_str(), url.port))
                .await
                .with_context(|| format!("{} does not resolve", url.host))?
                .collect(),
        },
    };
    let dns = start.elapsed();
    let mut last_err = anyhow!("{} resolves to no address", url.host);
    let mut tcp = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                tcp = Some((s, *addr));
                break;
            }
            Err(e) => last_err = anyhow!(e).context(format!("cannot connect to {addr}")),
        }
    }
    let (tcp, remote) = tcp.ok_or(last_err)?;
    let connected = start.elapsed();
    let (mut stream, tls_version, cipher): (Box<dyn Stream>, _, _) = if url.https {
        let name = ServerName::try_from(url.host.clone())
            .map_err(|e| anyhow!("{:?} is not a server name: {e}", url.host))?;
        let tls = trust
            .connector()?
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {} ({remote}) failed", url.host))?;
        let (_, session) = tls.get_ref();
        let version = session.protocol_version().map(|v| format!("{v:?}"));
        let cipher = session
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()));
        (Box::new(tls), version, cipher)
    } else {
        (Box::new(tcp), None, None)
    };
    let handshaken = start.elapsed();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: elior-probe/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority(),
        crate::VERSION
    );
    stream
        .write_all(request.as_bytes())
        .await
        .context("failed to send the request")?;
    let sent = start.elapsed();
    let mut answer = Vec::with_capacity(4096);
    let mut buf = [0u8; 8192];
    let n = stream
        .read(&mut buf)
        .await
        .context("failed to read the answer")?;
    let first_byte = start.elapsed();
    answer.extend_from_slice(&buf[..n]);
    if n > 0 {
        // nginx may close without a TLS close_notify; what arrived still counts.
        let _ = stream.read_to_end(&mut answer).await;
    }
    let total = start.elapsed();
    let (status, headers, body) = parse_response(&answer)
        .with_context(|| format!("{} sent no valid HTTP answer", url.display()))?;
    Ok(Exchange {
        url: url.display(),
        remote: remote.to_string(),
        status,
        headers,
        body,
        tls_version,
        cipher,
        timings: Timings {
            dns_ms: ms(dns),
            connect_ms: ms(connected - dns),
            tls_ms: url.https.then(|| ms(handshaken - connected)),
            ttfb_ms: ms(first_byte - sent),
            total_ms: ms(total),
        },
    })
}

/// Status, headers (lower-case names) and body of an answer.
pub type Parsed = (u16, Vec<(String, String)>, String);

/// Splits an HTTP/1.x answer into status, headers (lower-case names) and body, decoding
/// a chunked body.
pub fn parse_response(raw: &[u8]) -> Result<Parsed> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let raw_body = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            break;
        };
        let start = line_end + 2;
        if size == 0 || start + size > raw.len() {
            break;
        }
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    out
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
    fn parses_answers_and_chunked_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        let (status, headers, body) = parse_response(raw).unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            headers[0],
            ("content-type".to_string(), "application/json".to_string())
        );
        assert_eq!(body, "{\"a\":1}");
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn summarises_min_median_p99() {
        assert_eq!(summary(&[]), None);
        assert_eq!(summary(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(summary(&hundred), Some((1.0, 50.0, 99.0)));
    }
}
