//! The port preflight of a deploy: every host port a new container (or swarm service)
//! will publish must be free on both address families before anything is created, and when it is not, the
//! error names the process that holds it (PID and command, from /proc through
//! [`crate::doctor::procfs`], the same lookup `elior doctor ports` makes).
//!
//! Docker publishes a port bound to all addresses on `0.0.0.0` *and* `[::]`; a port held
//! on IPv6 only used to pass a check that bound IPv4 alone, and the deploy then stopped
//! half-built when the engine failed to publish it (issue 14). This only probes by
//! binding and releasing at once; it changes nothing.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use anyhow::{bail, Result};

use crate::doctor::facts::Listener;
use crate::doctor::procfs;
use crate::plan::containers::{Change, ContainerSpec, Plan};

/// The addresses a published `host_ip:port` occupies on the host: both wildcards for
/// an empty host IP (or an explicit wildcard), else that address alone.
pub fn addresses(host_ip: &str, port: u16) -> Result<Vec<SocketAddr>> {
    let wildcards = || {
        vec![
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
        ]
    };
    let ip = host_ip.trim_start_matches('[').trim_end_matches(']');
    if ip.is_empty() {
        return Ok(wildcards());
    }
    match ip.parse::<IpAddr>() {
        Ok(ip) => Ok(vec![SocketAddr::new(ip, port)]),
        Err(_) => bail!("{host_ip:?} is not an IP address to publish port {port} on"),
    }
}

/// Whether `addr` is held by another socket: binding it fails with "address in use".
/// Any other failure (no IPv6 on this host, an address this host does not have) is
/// not a holder and is left to the engine to report.
pub fn is_held(addr: SocketAddr) -> bool {
    matches!(TcpListener::bind(addr), Err(e) if e.kind() == ErrorKind::AddrInUse)
}

/// `[::]:8443 (IPv6)` / `0.0.0.0:8443 (IPv4)`.
fn describe_addr(addr: SocketAddr) -> String {
    let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    format!("{addr} ({family})")
}

/// `pid 123 (python3 -m http.server)`, or a hint when /proc shows no holder (a process
/// of another user or network namespace).
fn describe_holders(holders: &[Listener], port: u16) -> String {
    if holders.is_empty() {
        return format!(
            "a process this user cannot see (run `ss -ltnp 'sport = :{port}'` as root)"
        );
    }
    holders
        .iter()
        .map(|h| format!("pid {} ({})", h.pid, one_line_command(&h.command)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A command line on one line (an argument may hold newlines), at most 100 characters.
fn one_line_command(command: &str) -> String {
    let line = command.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// Ports nginx (or any service the plan creates) will publish must be free on IPv4
/// and IPv6, unless a container being kept or replaced already holds them.
pub fn preflight_ports(plan: &Plan, specs: &[ContainerSpec]) -> Result<()> {
    for step in &plan.services {
        if !matches!(step.change, Change::Create { .. }) {
            continue;
        }
        let Some(spec) = specs.iter().find(|s| s.service == step.service) else {
            continue;
        };
        for port in &spec.ports {
            check_free(&port.host_ip, port.host_port, &step.service)?;
        }
    }
    Ok(())
}

/// Fails, naming the process that holds it, when `host_ip:port` (both families for a
/// wildcard) is taken on this host: the port that `service` is about to publish.
pub fn check_free(host_ip: &str, port: u16, service: &str) -> Result<()> {
    for addr in addresses(host_ip, port)? {
        if !is_held(addr) {
            continue;
        }
        let holders: Vec<Listener> = procfs::listeners(port)
            .unwrap_or_default()
            .into_iter()
            .filter(|h| h.pid != std::process::id())
            .collect();
        let kill = holders
            .first()
            .map(|h| format!("stop it (kill {}), or ", h.pid))
            .unwrap_or_default();
        bail!(
            "port {port} that {service} publishes is held on {} by {}; nothing was created\n{kill}set HTTP_PORT/HTTPS_PORT in .env.production and run `elior render`",
            describe_addr(addr),
            describe_holders(&holders, port),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_publish_occupies_both_families() {
        assert_eq!(
            addresses("", 8443).unwrap(),
            vec![
                "0.0.0.0:8443".parse::<SocketAddr>().unwrap(),
                "[::]:8443".parse().unwrap()
            ]
        );
        assert_eq!(
            addresses("127.0.0.1", 80).unwrap(),
            vec!["127.0.0.1:80".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            addresses("[::1]", 80).unwrap(),
            vec!["[::1]:80".parse::<SocketAddr>().unwrap()]
        );
        assert!(addresses("example.com", 80)
            .unwrap_err()
            .to_string()
            .contains("not an IP address"));
    }

    #[test]
    fn a_listening_port_is_held_and_a_released_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(is_held(addr));
        drop(listener);
        assert!(!is_held(addr));
    }

    #[test]
    fn holders_are_named_by_pid_and_command() {
        let holder = Listener {
            pid: 42,
            command: "python3 -m http.server".into(),
            name: "python3".into(),
        };
        assert_eq!(
            describe_holders(&[holder], 80),
            "pid 42 (python3 -m http.server)"
        );
        assert!(describe_holders(&[], 80).contains("ss -ltnp 'sport = :80'"));
        let script = Listener {
            pid: 7,
            command: format!("python3 -c import os\n{}", "x".repeat(200)),
            name: "python3".into(),
        };
        let described = describe_holders(&[script], 80);
        assert!(
            described.starts_with("pid 7 (python3 -c import os xxx"),
            "{described}"
        );
        assert!(described.ends_with("…)"), "{described}");
        assert_eq!(described.chars().count(), "pid 7 (".len() + 100 + 2);
        assert_eq!(
            describe_addr("[::]:8443".parse().unwrap()),
            "[::]:8443 (IPv6)"
        );
    }
}
