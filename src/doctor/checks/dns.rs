//! DOMAIN resolves, to an address of this host, and not into a CDN's range (where
//! HTTP-01 challenges and client addresses go through the CDN).

use std::net::IpAddr;

use serde::Serialize;

use super::{Check, CheckInfo, Group};
use crate::config::stack::StackConfig;
use crate::doctor::facts::Stack;
use crate::doctor::sources::{one_line, Sources};
use crate::doctor::{Finding, NEEDS_SETTINGS};

pub struct Dns;

#[derive(Debug, Clone, Default, Serialize)]
pub struct DnsFacts {
    pub domain: String,
    /// The domain is an IP address or a local name: there is nothing to resolve publicly.
    pub not_public: bool,
    pub addresses: Vec<String>,
    pub error: Option<String>,
    pub local_addresses: Vec<String>,
    /// (address, CDN name) for each address inside a known CDN range.
    pub cdn: Vec<(String, String)>,
}

impl Check for Dns {
    const INFO: CheckInfo = CheckInfo {
        name: "dns",
        group: Group::Host,
        about: "DOMAIN resolves, to an address of this host, and not into a CDN range",
    };
    /// `None` without valid settings.
    type Facts = Option<DnsFacts>;

    async fn gather(sources: &Sources) -> Option<DnsFacts> {
        sources.config.as_ref().map(resolve)
    }

    fn judge(stack: &Stack, f: &Option<DnsFacts>) -> Vec<Finding> {
        let Some(f) = f else {
            return vec![Finding::skipped(NEEDS_SETTINGS)];
        };
        if f.not_public {
            return vec![Finding::ok(format!(
                "{} is an address or a local name; nothing to resolve",
                f.domain
            ))];
        }
        if let Some(e) = &f.error {
            return vec![Finding::failure(
                format!("{} does not resolve: {e}", f.domain),
                format!(
                    "add an A (and AAAA) record for {} pointing at this host's public address at your DNS provider",
                    f.domain
                ),
            )];
        }
        let mut out = Vec::new();
        let list = f.addresses.join(", ");
        if let Some((addr, cdn)) = f.cdn.first() {
            out.push(Finding::warning(
                format!("{} resolves to {addr}, inside {cdn}'s range: HTTP-01 challenges and client addresses go through the CDN", f.domain),
                format!("make the record DNS-only (grey cloud) while issuing certificates, and list {cdn}'s ranges in TRUSTED_PROXIES of {}", stack.env_path()),
            ));
        }
        let local = f.addresses.iter().any(|a| f.local_addresses.contains(a));
        if !local && f.cdn.is_empty() {
            out.push(Finding::warning(
                format!(
                    "{} resolves to {list}, which is not an address of this host",
                    f.domain
                ),
                format!(
                    "point the A/AAAA record of {} at this host (ignore this if a NAT or load balancer forwards that address here)",
                    f.domain
                ),
            ));
        }
        if out.is_empty() {
            out.push(Finding::ok(format!(
                "{} resolves to {list} (this host)",
                f.domain
            )));
        }
        out
    }
}

fn resolve(config: &StackConfig) -> DnsFacts {
    let domain = config.domain.as_str().to_string();
    let mut f = DnsFacts {
        domain: domain.clone(),
        not_public: !config.domain.is_public(),
        ..Default::default()
    };
    if f.not_public {
        return f;
    }
    let addrs = match crate::tls::resolve::lookup(&domain, 443) {
        Ok(a) => a,
        Err(e) => {
            f.error = Some(one_line(&e));
            return f;
        }
    };
    let mut ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
    ips.dedup();
    let local = local_addresses();
    f.addresses = ips.iter().map(IpAddr::to_string).collect();
    f.local_addresses = local
        .iter()
        .chain(ips.iter().filter(|ip| ip.is_loopback()))
        .map(IpAddr::to_string)
        .collect();
    f.cdn = ips
        .iter()
        .filter_map(|ip| cdn_of(*ip).map(|c| (ip.to_string(), c.to_string())))
        .collect();
    f
}

/// Known CDN ranges (published by the providers); a DOMAIN inside one is proxied.
const CDN_RANGES: &[(&str, &[&str])] = &[
    (
        "Cloudflare",
        &[
            "173.245.48.0/20",
            "103.21.244.0/22",
            "103.22.200.0/22",
            "103.31.4.0/22",
            "141.101.64.0/18",
            "108.162.192.0/18",
            "190.93.240.0/20",
            "188.114.96.0/20",
            "197.234.240.0/22",
            "198.41.128.0/17",
            "162.158.0.0/15",
            "104.16.0.0/13",
            "104.24.0.0/14",
            "172.64.0.0/13",
            "131.0.72.0/22",
            "2400:cb00::/32",
            "2606:4700::/32",
            "2803:f800::/32",
            "2405:b500::/32",
            "2405:8100::/32",
            "2a06:98c0::/29",
            "2c0f:f248::/32",
        ],
    ),
    (
        "Fastly",
        &["151.101.0.0/16", "199.232.0.0/16", "2a04:4e40::/32"],
    ),
    (
        "CloudFront",
        &[
            "13.32.0.0/15",
            "13.224.0.0/14",
            "18.64.0.0/14",
            "54.230.0.0/16",
            "54.239.128.0/18",
            "99.84.0.0/16",
            "205.251.192.0/19",
        ],
    ),
];

pub fn cdn_of(ip: IpAddr) -> Option<&'static str> {
    CDN_RANGES.iter().find_map(|(name, ranges)| {
        ranges
            .iter()
            .filter_map(|r| r.parse::<crate::config::IpNet>().ok())
            .any(|net| net.contains(ip))
            .then_some(*name)
    })
}

/// This host's addresses: IPv4 from the LOCAL routes in /proc/net/fib_trie, IPv6 from
/// /proc/net/if_inet6.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut last: Option<&str> = None;
        for line in trie.lines() {
            let t = line.trim();
            if let Some(addr) = t.strip_prefix("|-- ") {
                last = Some(addr);
            } else if t.starts_with("/32 host LOCAL") {
                if let Some(ip) = last.and_then(|a| a.parse::<IpAddr>().ok()) {
                    if !out.contains(&ip) {
                        out.push(ip);
                    }
                }
            }
        }
    }
    if let Ok(v6) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in v6.lines() {
            let Some(hex) = line.split_whitespace().next() else {
                continue;
            };
            if let Ok(bits) = u128::from_str_radix(hex, 16) {
                out.push(IpAddr::from(std::net::Ipv6Addr::from(bits)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::{statuses, test_stack};
    use crate::doctor::Status;

    #[test]
    fn dns_rules() {
        let base = DnsFacts {
            domain: "fit.example.com".into(),
            addresses: vec!["203.0.113.5".into()],
            local_addresses: vec!["203.0.113.5".into()],
            ..Default::default()
        };
        let judge = |f: &DnsFacts| Dns::judge(&test_stack(), &Some(f.clone()));
        assert_eq!(statuses(&judge(&base)), vec![Status::Ok]);
        let elsewhere = DnsFacts {
            local_addresses: vec![],
            ..base.clone()
        };
        assert_eq!(statuses(&judge(&elsewhere)), vec![Status::Warning]);
        let cdn = DnsFacts {
            cdn: vec![("104.16.1.1".into(), "Cloudflare".into())],
            ..elsewhere.clone()
        };
        assert!(judge(&cdn)[0].finding.contains("Cloudflare"));
        let none = DnsFacts {
            error: Some("no such host".into()),
            ..base
        };
        assert_eq!(statuses(&judge(&none)), vec![Status::Failure]);
        assert_eq!(
            statuses(&Dns::judge(&test_stack(), &None)),
            vec![Status::Skipped]
        );
    }

    #[test]
    fn knows_cdn_ranges() {
        assert_eq!(cdn_of("104.16.1.1".parse().unwrap()), Some("Cloudflare"));
        assert_eq!(cdn_of("151.101.1.1".parse().unwrap()), Some("Fastly"));
        assert_eq!(cdn_of("203.0.113.5".parse().unwrap()), None);
    }

    #[test]
    fn loopback_is_a_local_address() {
        assert!(local_addresses().contains(&"127.0.0.1".parse().unwrap()));
    }
}
