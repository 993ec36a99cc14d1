//! A minimal blocking HTTP/1.1 GET over plain TCP, bounded by one overall deadline.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

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

/// Sends a GET and returns the status code. Fails on connect errors, a malformed answer
/// or when `timeout` passes.
pub fn get_status(url: &HttpUrl, timeout: Duration) -> Result<u16> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", url.host))?
        .collect();
    let mut last_err = None;
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining()) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = Some(anyhow!(e).context(format!("cannot connect to {addr}"))),
        }
    }
    let mut stream = stream.ok_or_else(|| {
        last_err.unwrap_or_else(|| anyhow!("{} resolves to no address", url.host))
    })?;
    stream.set_write_timeout(Some(remaining()))?;
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: elior-healthcheck\r\nConnection: close\r\n\r\n",
        url.path, url.port
    )
    .context("failed to send the request")?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        stream.set_read_timeout(Some(remaining()))?;
        let n = stream.read(&mut buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                anyhow!("no answer within {timeout:?}")
            }
            _ => anyhow!(e).context("failed to read the answer"),
        })?;
        if n == 0 {
            bail!("connection closed before a status line");
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 8192 {
            bail!("status line too long");
        }
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| {
            anyhow!(
                "not an HTTP answer: {:?}",
                line.lines().next().unwrap_or("")
            )
        })?;
    Ok(status)
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
