//! IP networks (`10.0.0.0/8`, `::1/128`, a bare address) for trusted-proxy and
//! internal-network checks.

use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Treats `::ffff:10.0.0.1` as `10.0.0.1`, as a dual-stack listener reports IPv4 peers.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("{s:?} is not an IP address or CIDR network such as 172.16.0.0/12")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{s:?} has a prefix length over {max}")),
            },
        };
        Ok(IpNet {
            addr: canonical(addr),
            prefix,
        })
    }
}

/// Loopback, RFC 1918, unique-local (fc00::/7) and link-local addresses: the networks
/// `/metrics` may be scraped from.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn contains() {
        let net: IpNet = "172.16.0.0/12".parse().unwrap();
        assert!(net.contains(ip("172.20.1.2")));
        assert!(net.contains(ip("::ffff:172.20.1.2")));
        assert!(!net.contains(ip("172.32.0.1")));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        assert!("fd00::/8".parse::<IpNet>().unwrap().contains(ip("fd12::1")));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
    }

    #[test]
    fn internal() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.9",
            "172.17.0.2",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip(s)), "{s}");
        }
        for s in ["8.8.8.8", "203.0.113.5", "2001:db8::1"] {
            assert!(!is_internal(ip(s)), "{s}");
        }
    }
}
