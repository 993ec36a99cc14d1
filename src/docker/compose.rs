//! Reads the rendered `docker-compose.prod.yml` into container and network specs. The
//! file stays the single source of truth for what runs; elior understands the subset of
//! compose it renders and refuses anything else by name (serde's `deny_unknown_fields`),
//! rather than silently ignoring a key the user expected to work.
//!
//! Pure apart from reading the compose file and the env files it names. It does not talk
//! to Docker and does not decide what to create (that is `plan::containers`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::plan::containers::{ContainerSpec, HealthSpec, NetworkSpec, PortSpec};

/// The compose file's name inside a stack directory.
pub const COMPOSE_FILE: &str = "docker-compose.prod.yml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComposeFile {
    #[serde(default)]
    version: Option<String>,
    services: BTreeMap<String, Service>,
    #[serde(default)]
    networks: BTreeMap<String, Option<Network>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Service {
    image: String,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    env_file: Vec<String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    security_opt: Vec<String>,
    #[serde(default)]
    cap_drop: Vec<String>,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    networks: Vec<String>,
    #[serde(default)]
    healthcheck: Option<Healthcheck>,
    #[serde(default)]
    restart: Option<String>,
    #[serde(default)]
    logging: Option<Logging>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    depends_on: BTreeMap<String, DependsOn>,
    #[serde(default)]
    sysctls: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Healthcheck {
    test: Vec<String>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retries: Option<i64>,
    #[serde(default)]
    start_period: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Logging {
    driver: String,
    #[serde(default)]
    options: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DependsOn {
    condition: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Network {
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// What a compose file asks for, resolved against its stack directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub services: Vec<ContainerSpec>,
    pub networks: Vec<NetworkSpec>,
}

/// Reads `DIR/docker-compose.prod.yml`. Its `env_file: [".env.production"]` is the
/// stack's settings as loaded once (`raw`: the environment over the file), never a
/// second read of the file.
pub fn load(dir: &Path, raw: &crate::config::RawSettings) -> Result<Stack> {
    let path = dir.join(COMPOSE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "failed to read {}\nrun `{}` to write it",
            path.display(),
            crate::config::hint::command(Some(dir), "render")
        )
    })?;
    parse(&text, dir, &|name| {
        if name.trim_start_matches("./") != crate::config::stack::ENV_FILE {
            bail!(
                "env_file {name:?}: elior deploys a stack's settings from {}; move these keys there",
                crate::config::stack::ENV_FILE
            );
        }
        Ok(raw
            .pairs()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    })
    .with_context(|| format!("{} is not a compose file elior can deploy", path.display()))
}

type EnvFileReader<'a> = dyn Fn(&str) -> Result<Vec<(String, String)>> + 'a;

/// Parses compose text; `read_env_file` returns the pairs of an `env_file` entry.
pub fn parse(text: &str, dir: &Path, read_env_file: &EnvFileReader) -> Result<Stack> {
    let file: ComposeFile = serde_yaml::from_str(text).map_err(|e| {
        anyhow!(
            "{e}\nelior deploys the subset of compose that `elior render` writes; remove the key or run `{}` again",
            crate::config::hint::command(Some(dir), "render")
        )
    })?;
    if let Some(v) = &file.version {
        if !v.starts_with('3') && !v.starts_with('2') {
            bail!("version {v:?} is not a compose file version elior knows (2.x or 3.x)");
        }
    }
    let mut networks = Vec::new();
    for (name, network) in &file.networks {
        let network = network.as_ref();
        networks.push(NetworkSpec {
            name: name.clone(),
            internal: network.is_some_and(|n| n.internal),
            labels: network.map(|n| n.labels.clone()).unwrap_or_default(),
        });
    }
    let mut services = Vec::new();
    for (name, service) in file.services {
        services.push(
            resolve_service(&name, service, dir, &file.networks, read_env_file)
                .with_context(|| format!("service {name}"))?,
        );
    }
    Ok(Stack { services, networks })
}

fn resolve_service(
    name: &str,
    service: Service,
    dir: &Path,
    networks: &BTreeMap<String, Option<Network>>,
    read_env_file: &EnvFileReader,
) -> Result<ContainerSpec> {
    // docker-compose semantics: env_file first, then `environment` wins.
    let mut env = BTreeMap::new();
    for file in &service.env_file {
        env.extend(read_env_file(file)?);
    }
    env.extend(service.environment);
    for network in &service.networks {
        if !networks.contains_key(network) {
            bail!("network {network:?} is not declared under the top-level networks:");
        }
    }
    let binds = service
        .volumes
        .iter()
        .map(|v| bind_mount(v, dir))
        .collect::<Result<Vec<_>>>()?;
    let ports = service
        .ports
        .iter()
        .map(|p| parse_port(p))
        .collect::<Result<Vec<_>>>()?;
    let healthcheck = match service.healthcheck {
        None => None,
        Some(h) => Some(HealthSpec {
            test: h.test,
            interval_ns: opt_duration(h.interval.as_deref(), "healthcheck.interval")?,
            timeout_ns: opt_duration(h.timeout.as_deref(), "healthcheck.timeout")?,
            retries: h.retries.unwrap_or(3),
            start_period_ns: opt_duration(h.start_period.as_deref(), "healthcheck.start_period")?,
        }),
    };
    if let Some(restart) = &service.restart {
        if !["no", "always", "unless-stopped", "on-failure"].contains(&restart.as_str()) {
            bail!("restart: {restart:?} is not one of no, always, unless-stopped, on-failure");
        }
    }
    let mut depends_on_healthy = Vec::new();
    for (dep, cond) in service.depends_on {
        match cond.condition.as_str() {
            "service_healthy" => depends_on_healthy.push(dep),
            "service_started" => {}
            other => bail!(
                "depends_on.{dep}.condition {other:?} is not service_healthy or service_started"
            ),
        }
    }
    Ok(ContainerSpec {
        service: name.to_string(),
        image: service.image,
        image_id: String::new(),
        command: service.command.unwrap_or_default(),
        env,
        user: service.user,
        read_only: service.read_only,
        security_opt: service.security_opt,
        cap_drop: service.cap_drop,
        binds,
        ports,
        networks: service.networks,
        healthcheck,
        restart: service.restart,
        log_driver: service.logging.as_ref().map(|l| l.driver.clone()),
        log_options: service.logging.map(|l| l.options).unwrap_or_default(),
        labels: service.labels,
        sysctls: service.sysctls,
        depends_on_healthy,
    })
}

/// `./host:/container[:ro]` to an absolute `HOST:CONTAINER[:ro]` bind; named volumes are
/// refused (the stack keeps its data in folders next to the compose file).
fn bind_mount(volume: &str, dir: &Path) -> Result<String> {
    let parts: Vec<&str> = volume.split(':').collect();
    let (host, container, mode) = match parts.as_slice() {
        [h, c] => (*h, *c, None),
        [h, c, m] => (*h, *c, Some(*m)),
        _ => bail!("volume {volume:?} is not HOST:CONTAINER[:ro]"),
    };
    if !(host.starts_with("./") || host.starts_with('/') || host == ".") {
        bail!("volume {volume:?} is a named volume; elior supports bind mounts of folders (./data:/app/data)");
    }
    if !container.starts_with('/') {
        bail!("volume {volume:?}: the container path must be absolute");
    }
    if let Some(m) = mode {
        if m != "ro" && m != "rw" {
            bail!("volume {volume:?}: mode {m:?} is not ro or rw");
        }
    }
    let host: PathBuf = if host.starts_with('/') {
        PathBuf::from(host)
    } else {
        dir.join(host.trim_start_matches("./"))
    };
    let mut bind = format!("{}:{container}", host.display());
    if let Some(m) = mode {
        bind.push(':');
        bind.push_str(m);
    }
    Ok(bind)
}

/// `HOST:CONTAINER` or `IP:HOST:CONTAINER`, TCP only.
fn parse_port(port: &str) -> Result<PortSpec> {
    let bad = || anyhow!("port {port:?} is not [IP:]HOST_PORT:CONTAINER_PORT");
    let (rest, container) = port.rsplit_once(':').ok_or_else(bad)?;
    let (host_ip, host) = match rest.rsplit_once(':') {
        Some((ip, host)) => (ip.to_string(), host),
        None => (String::new(), rest),
    };
    Ok(PortSpec {
        host_ip,
        host_port: host.parse().map_err(|_| bad())?,
        container_port: container.parse().map_err(|_| bad())?,
    })
}

fn opt_duration(value: Option<&str>, key: &str) -> Result<Option<i64>> {
    value
        .map(|v| {
            parse_duration_ns(v).ok_or_else(|| {
                anyhow!("{key}: {v:?} is not a duration such as 10s, 500ms or 1m30s")
            })
        })
        .transpose()
}

/// Compose durations (`1m30s`, `10s`, `500ms`) in nanoseconds.
pub fn parse_duration_ns(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let number: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale: i64 = match &rest[..unit_len] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" => 1_000,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(scale)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Result<Vec<(String, String)>> {
        Ok(vec![
            ("A".into(), "from-file".into()),
            ("B".into(), "file".into()),
        ])
    }

    const COMPOSE: &str = r#"
services:
  api:
    image: "api:1"
    command: ["/usr/local/bin/elior", "serve"]
    env_file: [".env.production"]
    environment:
      A: "from-compose"
    user: "10001:10001"
    read_only: true
    volumes: ["./data:/app/data"]
    networks: ["internal"]
    healthcheck:
      test: ["CMD", "/usr/local/bin/elior", "healthcheck"]
      interval: 10s
      timeout: 5s
      retries: 3
      start_period: 1m30s
  nginx:
    image: "nginx:x"
    ports: ["18080:80", "127.0.0.1:18443:443"]
    volumes: ["./nginx:/etc/nginx/elior:ro"]
    networks: ["edge", "internal"]
    sysctls:
      net.ipv4.tcp_tw_reuse: "1"
    depends_on:
      api:
        condition: service_healthy
networks:
  internal:
    internal: true
  edge:
"#;

    #[test]
    fn reads_the_rendered_subset() {
        let stack = parse(COMPOSE, Path::new("/srv/stack"), &no_env).unwrap();
        let api = &stack.services[0];
        assert_eq!(api.service, "api");
        assert_eq!(api.env["A"], "from-compose");
        assert_eq!(api.env["B"], "file");
        assert_eq!(api.binds, ["/srv/stack/data:/app/data"]);
        let health = api.healthcheck.as_ref().unwrap();
        assert_eq!(health.start_period_ns, Some(90_000_000_000));
        let nginx = &stack.services[1];
        assert_eq!(nginx.binds, ["/srv/stack/nginx:/etc/nginx/elior:ro"]);
        assert_eq!(
            nginx.ports[1],
            PortSpec {
                host_ip: "127.0.0.1".into(),
                host_port: 18443,
                container_port: 443
            }
        );
        assert_eq!(nginx.depends_on_healthy, ["api"]);
        assert_eq!(nginx.sysctls["net.ipv4.tcp_tw_reuse"], "1");
        assert_eq!(stack.networks.len(), 2);
        assert!(stack
            .networks
            .iter()
            .any(|n| n.name == "internal" && n.internal));
    }

    /// Regression guard: a key added to the compose template that deploy cannot carry
    /// out must fail here, not on a user's server.
    #[test]
    fn reads_the_compose_file_elior_render_writes() {
        let text = include_str!("../plan/testdata/docker-compose.prod.yml");
        let stack = parse(text, Path::new("/srv/stack"), &no_env).unwrap();
        let services: Vec<&str> = stack.services.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(services, ["api", "nginx"]);
        assert!(stack.services[0].healthcheck.is_some());
    }

    #[test]
    fn refuses_keys_outside_the_subset_by_name() {
        let text = COMPOSE.replace("    read_only: true\n", "    build: .\n");
        let err = format!("{:#}", parse(&text, Path::new("/s"), &no_env).unwrap_err());
        assert!(err.contains("unknown field `build`"), "{err}");
        let text = COMPOSE.replace("./data:/app/data", "dbdata:/app/data");
        let err = format!("{:#}", parse(&text, Path::new("/s"), &no_env).unwrap_err());
        assert!(err.contains("named volume"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("10s"), Some(10_000_000_000));
        assert_eq!(parse_duration_ns("500ms"), Some(500_000_000));
        assert_eq!(parse_duration_ns("ten"), None);
        assert_eq!(parse_duration_ns(""), None);
    }
}
