//! HTTP_PORT and HTTPS_PORT: free, or held by the stack's own nginx; otherwise who holds
//! them (PID and command, from /proc) and how to free them.

use serde::Serialize;

use super::{Check, CheckInfo, Group};
use crate::doctor::facts::{Listener, Stack};
use crate::doctor::sources::Sources;
use crate::doctor::{procfs, Finding};

pub struct Ports;

#[derive(Debug, Clone, Default, Serialize)]
pub struct PortFacts {
    pub key: &'static str,
    pub port: u16,
    pub holders: Vec<Listener>,
    /// The stack's nginx container publishes this port.
    pub published_by_our_nginx: bool,
    pub error: Option<String>,
}

impl Check for Ports {
    const INFO: CheckInfo = CheckInfo {
        name: "ports",
        group: Group::Host,
        about: "HTTP_PORT and HTTPS_PORT are free or held by the stack's nginx",
    };
    type Facts = Vec<PortFacts>;

    async fn gather(sources: &Sources) -> Vec<PortFacts> {
        let (http, https) = sources.ports();
        let published = nginx_published_ports(sources).await;
        [("HTTP_PORT", http), ("HTTPS_PORT", https)]
            .into_iter()
            .map(|(key, port)| {
                let (holders, error) = match procfs::listeners(port) {
                    Ok(h) => (h, None),
                    Err(e) => (Vec::new(), Some(e.to_string())),
                };
                PortFacts {
                    key,
                    port,
                    // Doctor itself is no holder (its own sockets are short-lived).
                    holders: holders
                        .into_iter()
                        .filter(|h| h.pid != std::process::id())
                        .collect(),
                    published_by_our_nginx: published.contains(&port),
                    error,
                }
            })
            .collect()
    }

    fn judge(stack: &Stack, ports: &Vec<PortFacts>) -> Vec<Finding> {
        ports.iter().map(|p| judge_port(stack, p)).collect()
    }
}

/// Public ports of the stack's running nginx container.
async fn nginx_published_ports(sources: &Sources) -> Vec<u16> {
    let (Some(owner), Ok(docker)) = (&sources.owner, sources.docker().await) else {
        return Vec::new();
    };
    let containers = crate::docker::stack_containers(&docker, owner)
        .await
        .unwrap_or_default();
    containers
        .iter()
        .filter(|c| super::containers::service_of(c) == crate::plan::containers::PROXY_SERVICE)
        .flat_map(|c| c.ports.clone().unwrap_or_default())
        .filter_map(|p| p.public_port)
        .collect()
}

fn judge_port(stack: &Stack, p: &PortFacts) -> Finding {
    if let Some(e) = &p.error {
        return Finding::warning(
            format!("{} {}: could not read the listeners: {e}", p.key, p.port),
            "run doctor as root to see every process's sockets",
        );
    }
    let others: Vec<&Listener> = p
        .holders
        .iter()
        .filter(|h| !(p.published_by_our_nginx && h.name == "docker-proxy"))
        .collect();
    if let Some(first) = others.first() {
        let who = others
            .iter()
            .map(|h| format!("{} (pid {}: {})", h.name, h.pid, h.command))
            .collect::<Vec<_>>()
            .join(", ");
        let fix = match first.name.as_str() {
            "apache2" | "nginx" | "httpd" | "caddy" | "lighttpd" | "haproxy" => format!(
                "systemctl stop {0} && systemctl disable {0}  (or set {1} to another port in {2})",
                first.name,
                p.key,
                stack.env_path()
            ),
            "docker-proxy" => format!(
                "another container publishes port {}: find it with `docker ps --filter publish={}` and stop it, or set {} to another port",
                p.port, p.port, p.key
            ),
            _ => format!(
                "stop that process (`kill {}`), or set {} to another port in {}",
                first.pid,
                p.key,
                stack.env_path()
            ),
        };
        return Finding::failure(format!("port {} ({}) is held by {who}", p.port, p.key), fix);
    }
    if p.published_by_our_nginx {
        Finding::ok(format!(
            "port {} ({}) is served by the stack's nginx",
            p.port, p.key
        ))
    } else {
        Finding::ok(format!("port {} ({}) is free", p.port, p.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::test_stack;
    use crate::doctor::Status;

    #[test]
    fn a_port_held_by_another_process_names_it_and_its_fix() {
        let held = PortFacts {
            key: "HTTP_PORT",
            port: 80,
            holders: vec![Listener {
                pid: 812,
                command: "/usr/sbin/apache2 -k start".into(),
                name: "apache2".into(),
            }],
            ..Default::default()
        };
        let f = &Ports::judge(&test_stack(), &vec![held])[0];
        assert_eq!(f.status, Status::Failure);
        assert_eq!(
            f.finding,
            "port 80 (HTTP_PORT) is held by apache2 (pid 812: /usr/sbin/apache2 -k start)"
        );
        assert!(f
            .fix
            .as_deref()
            .unwrap()
            .starts_with("systemctl stop apache2"));
        let ours = PortFacts {
            key: "HTTPS_PORT",
            port: 443,
            holders: vec![Listener {
                pid: 9,
                command: "docker-proxy".into(),
                name: "docker-proxy".into(),
            }],
            published_by_our_nginx: true,
            error: None,
        };
        let found = Ports::judge(&test_stack(), &vec![ours]);
        assert_eq!(found[0].status, Status::Ok);
        assert_eq!(
            found[0].finding,
            "port 443 (HTTPS_PORT) is served by the stack's nginx"
        );
    }
}
