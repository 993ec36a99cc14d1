//! Name resolution for the certificate checks, with a `curl --resolve`-style override.
//!
//! `ELIOR_RESOLVE=name:ip[,name:ip]` pins names to addresses so tests (and users behind
//! split DNS) can check a domain without touching /etc/hosts or the system resolver.
//! Owns only lookups; it does not connect anywhere.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use anyhow::{bail, Context, Result};

pub const RESOLVE_VAR: &str = "ELIOR_RESOLVE";

/// Parses an `ELIOR_RESOLVE` value into (name, address) pairs. Names are compared
/// case-insensitively; IPv6 addresses may be bracketed (`name:[::1]`).
pub fn parse_overrides(value: &str) -> Result<Vec<(String, IpAddr)>> {
    let mut pairs = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((name, ip)) = item.split_once(':') else {
            bail!("{RESOLVE_VAR}: {item:?} is not name:ip\nwrite it like curl --resolve, e.g. {RESOLVE_VAR}=example.com:127.0.0.1");
        };
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = ip
            .parse()
            .with_context(|| format!("{RESOLVE_VAR}: {ip:?} in {item:?} is not an IP address"))?;
        pairs.push((name.to_ascii_lowercase(), ip));
    }
    Ok(pairs)
}

/// The addresses `name` resolves to, for a connection to `port`: the override when
/// `ELIOR_RESOLVE` names it, the system resolver otherwise.
pub fn lookup(name: &str, port: u16) -> Result<Vec<SocketAddr>> {
    if let Ok(value) = std::env::var(RESOLVE_VAR) {
        let pinned: Vec<SocketAddr> = parse_overrides(&value)?
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, ip)| SocketAddr::new(ip, port))
            .collect();
        if !pinned.is_empty() {
            return Ok(pinned);
        }
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = (name, port)
        .to_socket_addrs()
        .with_context(|| format!("{name} does not resolve"))?
        .collect();
    if addrs.is_empty() {
        bail!("{name} resolves to no address");
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_overrides_like_curl() {
        let pairs = parse_overrides("Elior.test:127.0.0.1, www.elior.test:[::1]").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("elior.test".to_string(), "127.0.0.1".parse().unwrap()),
                ("www.elior.test".to_string(), "::1".parse().unwrap()),
            ]
        );
        assert!(parse_overrides("elior.test").is_err());
        assert!(parse_overrides("elior.test:nope").is_err());
    }
}
