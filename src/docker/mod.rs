//! The Docker Engine, through bollard: connecting (with API version negotiation), the
//! labels that mark what elior owns, and reading a 404 as "absent" rather than failure.
//!
//! Submodules carry out plans: `image` builds the API image, `compose` reads the rendered
//! compose file into container specs, `apply` creates networks and containers, `health`
//! waits for a container to become healthy, `proxy` drives the stack's nginx container
//! for certificate installs, `control` stops and starts the API for a restore, `ports`
//! checks that the ports a deploy publishes are free on IPv4 and IPv6. Nothing
//! here decides *what* should exist (that is `plan`), and nothing here prints to stdout.

pub mod apply;
pub mod compose;
pub mod control;
pub mod health;
pub mod image;
pub mod ports;
pub mod proxy;
pub mod stacks;
pub mod swarm;
pub mod swarm_api;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions};
use bollard::Docker;

pub use crate::config::identity::Owner;
pub use bollard;

/// The stack's project name (`elior-<domain>-<id8>`), for people and `docker ps`.
/// Ownership is decided by [`LABEL_STACK_ID`] and [`LABEL_STACK_DIR`], never by this.
pub const LABEL_PROJECT: &str = "elior.project";
/// The stack id of `DIR/.elior/stack.json`: what every command filters by (issue 14).
pub const LABEL_STACK_ID: &str = "elior.stack-id";
/// The stack directory (absolute) the object was deployed from, so a refusal can name it.
pub const LABEL_STACK_DIR: &str = "elior.stack-dir";
/// The compose service a container runs (`api`, `nginx`).
pub const LABEL_SERVICE: &str = "elior.service";
/// A hash of everything a container was created from; equal hash, same container.
pub const LABEL_CONFIG_HASH: &str = "elior.config-hash";
/// Per-aspect hashes (`image=…,env=…`), so a plan can say *what* changed.
pub const LABEL_CONFIG_PARTS: &str = "elior.config-parts";

/// The engine socket when DOCKER_HOST is unset or empty, as the docker CLI does.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// How long connecting and agreeing on an API version may take: an engine that does not
/// answer by then is unreachable, and the command says so instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Seconds bollard waits on one request (its default); long calls stream.
const REQUEST_TIMEOUT: u64 = 120;

/// Where the Docker Engine is, read from `DOCKER_HOST`, `DOCKER_TLS_VERIFY` and
/// `DOCKER_CERT_PATH` the way the docker CLI reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///path` (the default).
    Unix(PathBuf),
    /// `tcp://host:port`, in plain HTTP, or in TLS with the client certificate and CA in
    /// `tls` (`key.pem`, `cert.pem`, `ca.pem`) when DOCKER_TLS_VERIFY is set.
    Tcp { addr: String, tls: Option<PathBuf> },
}

/// The environment `connect` reads, as values (so the parsing is testable).
#[derive(Debug, Default, Clone)]
pub struct EngineEnv {
    pub docker_host: Option<String>,
    pub tls_verify: Option<String>,
    pub tls: Option<String>,
    pub cert_path: Option<String>,
    pub home: Option<String>,
}

impl EngineEnv {
    pub fn from_process() -> EngineEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        EngineEnv {
            docker_host: var("DOCKER_HOST"),
            tls_verify: var("DOCKER_TLS_VERIFY"),
            tls: var("DOCKER_TLS"),
            cert_path: var("DOCKER_CERT_PATH"),
            home: var("HOME"),
        }
    }

    /// The DOCKER_HOST value in effect, for messages.
    pub fn host_label(&self) -> String {
        match &self.docker_host {
            Some(host) => format!("{host} (DOCKER_HOST)"),
            None => format!("{DEFAULT_DOCKER_HOST} (the default: DOCKER_HOST is not set)"),
        }
    }
}

impl Endpoint {
    /// Reads the endpoint from `env`. A scheme elior cannot speak (`ssh://`, `npipe://`,
    /// `fd://`, a typo) is an error naming DOCKER_HOST: falling back to the local socket
    /// would act on another engine than the one the user chose (issue 14).
    pub fn from_env(env: &EngineEnv) -> Result<Endpoint> {
        let Some(host) = env.docker_host.as_deref() else {
            return Ok(Endpoint::Unix(PathBuf::from("/var/run/docker.sock")));
        };
        let refuse = |why: &str| {
            anyhow!(
                "DOCKER_HOST={host:?} {why}\nelior speaks to the Docker Engine over unix:///PATH or tcp://HOST:PORT (with DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH for TLS); for an engine reached over ssh, forward its socket (ssh -L /tmp/docker.sock:/var/run/docker.sock HOST) and set DOCKER_HOST=unix:///tmp/docker.sock"
            )
        };
        let (scheme, rest) = host
            .split_once("://")
            .ok_or_else(|| refuse("has no scheme"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "unix" => {
                if !rest.starts_with('/') {
                    return Err(refuse("must name an absolute socket path: unix:///PATH"));
                }
                Ok(Endpoint::Unix(PathBuf::from(rest)))
            }
            "tcp" => {
                let addr = rest.trim_end_matches('/');
                let (name, port) = addr
                    .rsplit_once(':')
                    .ok_or_else(|| refuse("must name a port: tcp://HOST:PORT"))?;
                if name.is_empty() || port.parse::<u16>().is_err() || addr.contains('/') {
                    return Err(refuse("is not tcp://HOST:PORT"));
                }
                let tls = if env.tls_verify.is_some() {
                    let dir = match (&env.cert_path, &env.home) {
                        (Some(dir), _) => PathBuf::from(dir),
                        (None, Some(home)) => Path::new(home).join(".docker"),
                        (None, None) => {
                            bail!("DOCKER_TLS_VERIFY is set but neither DOCKER_CERT_PATH nor HOME is\nset DOCKER_CERT_PATH to the folder holding ca.pem, cert.pem and key.pem")
                        }
                    };
                    for file in ["ca.pem", "cert.pem", "key.pem"] {
                        if !dir.join(file).is_file() {
                            bail!(
                                "DOCKER_TLS_VERIFY is set but {} is missing\nput the engine's CA and your client certificate and key in DOCKER_CERT_PATH ({}) as ca.pem, cert.pem and key.pem",
                                dir.join(file).display(),
                                dir.display()
                            );
                        }
                    }
                    Some(dir)
                } else if env.tls.is_some() {
                    bail!("DOCKER_TLS is set without DOCKER_TLS_VERIFY: elior does not talk TLS to an engine it cannot verify\nset DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem)");
                } else {
                    None
                };
                Ok(Endpoint::Tcp {
                    addr: format!("tcp://{addr}"),
                    tls,
                })
            }
            "ssh" => Err(refuse("uses ssh://, which elior does not support")),
            other => Err(refuse(&format!(
                "uses the scheme {other}://, which elior does not support"
            ))),
        }
    }
}

/// Connects to the engine DOCKER_HOST names (the local socket when it is unset) and
/// agrees on an API version both sides speak (engines seen here speak 1.41 and refuse
/// newer clients). This is the one place elior connects to Docker. An unsupported
/// DOCKER_HOST fails before any connection; an unreachable engine fails within
/// [`CONNECT_TIMEOUT`], and both messages name DOCKER_HOST.
pub async fn connect() -> Result<Docker> {
    let env = EngineEnv::from_process();
    let endpoint = Endpoint::from_env(&env)?;
    let at = env.host_label();
    // `{:#}` prints the causes too: hyper's "client error (Connect)" alone hides the
    // "connection refused" under it.
    let unreachable = |e: anyhow::Error| {
        anyhow!(
            "cannot reach the Docker Engine at {at}: {e:#}\nis dockerd running there, and is its socket or port reachable by you? DOCKER_HOST chooses the engine"
        )
    };
    if let Endpoint::Unix(path) = &endpoint {
        socket_access(path)?;
    }
    let version = bollard::API_DEFAULT_VERSION;
    let docker = match &endpoint {
        Endpoint::Unix(path) => {
            Docker::connect_with_unix(&path.to_string_lossy(), REQUEST_TIMEOUT, version)
        }
        Endpoint::Tcp { addr, tls: None } => {
            Docker::connect_with_http(addr, REQUEST_TIMEOUT, version)
        }
        Endpoint::Tcp {
            addr,
            tls: Some(dir),
        } => Docker::connect_with_ssl(
            addr,
            &dir.join("key.pem"),
            &dir.join("cert.pem"),
            &dir.join("ca.pem"),
            REQUEST_TIMEOUT,
            version,
        ),
    }
    .map_err(|e| unreachable(e.into()))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(unreachable(e.into())),
        Err(_) => Err(unreachable(anyhow!(
            "no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// A socket this user may not open fails here, naming the way in (issue 20), instead of
/// as hyper's "client error (Connect)" on the first request. `access(2)` asks the kernel
/// with the real uid, so no error text is matched.
fn socket_access(path: &std::path::Path) -> Result<()> {
    use rustix::fs::{access, Access};
    match access(path, Access::READ_OK | Access::WRITE_OK) {
        Err(rustix::io::Errno::ACCESS) | Err(rustix::io::Errno::PERM) => {}
        // Missing or fine: connecting says the rest.
        _ => return Ok(()),
    }
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok();
    let mode = meta.as_ref().map_or(0, |m| m.mode() & 0o777);
    let group = meta
        .as_ref()
        .and_then(|m| group_name(m.gid()))
        .unwrap_or_else(|| "docker".to_string());
    bail!(
        "permission denied on the Docker socket {} (group {group}, mode {mode:o})\nadd your user to the {group} group (`sudo usermod -aG {group} $USER`, then log in again), or run elior with sudo",
        path.display()
    )
}

/// The name of group `gid` in /etc/group.
fn group_name(gid: u32) -> Option<String> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == gid).then(|| name.to_string())
    })
}

/// True when the engine answered 404: the thing does not exist.
pub fn is_not_found(err: &DockerError) -> bool {
    matches!(
        err,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Turns a 404 into `Ok(None)`: absence is state, not failure.
pub fn absent_as_none<T>(result: Result<T, DockerError>) -> Result<Option<T>, DockerError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(err) if is_not_found(&err) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Turns a 404 into success, for removals of things that may already be gone.
pub fn absent_as_ok(result: Result<(), DockerError>) -> Result<(), DockerError> {
    absent_as_none(result).map(|_| ())
}

/// A label filter for list calls: `label=KEY=VALUE` for each pair.
pub fn label_filter(pairs: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        pairs.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    )])
}

/// Every container (running or not) that `owner` owns: the one owner filter every
/// command lists through. The engine filters by the `elior.stack-id` label; a container
/// with this id but another `elior.stack-dir` belongs to a copy of the directory (a
/// copied `.elior/stack.json`), not to this stack, and is left out.
pub async fn stack_containers(
    docker: &Docker,
    owner: &Owner,
) -> Result<Vec<bollard::models::ContainerSummary>> {
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(label_filter(&[(LABEL_STACK_ID, owner.id.as_str())])),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("failed to list the containers of stack {}", owner.project))?;
    Ok(list
        .into_iter()
        .filter(|c| owns(owner, c.labels.as_ref()))
        .collect())
}

/// Every network `owner` owns (see [`stack_containers`]).
pub async fn stack_networks(
    docker: &Docker,
    owner: &Owner,
) -> Result<Vec<bollard::models::Network>> {
    let list = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(label_filter(&[(LABEL_STACK_ID, owner.id.as_str())])),
        }))
        .await
        .with_context(|| format!("failed to list the networks of stack {}", owner.project))?;
    Ok(list
        .into_iter()
        .filter(|n| owns(owner, n.labels.as_ref()))
        .collect())
}

/// Whether labels mark an object of `owner`: its id and its directory.
pub fn owns(owner: &Owner, labels: Option<&HashMap<String, String>>) -> bool {
    labels.is_some_and(|l| {
        l.get(LABEL_STACK_ID).map(String::as_str) == Some(owner.id.as_str())
            && l.get(LABEL_STACK_DIR) == Some(&owner.dir_label())
    })
}

/// The labels every object of `owner` carries.
pub fn owner_labels(owner: &Owner) -> [(String, String); 3] {
    [
        (LABEL_PROJECT.to_string(), owner.project.clone()),
        (LABEL_STACK_ID.to_string(), owner.id.to_string()),
        (LABEL_STACK_DIR.to_string(), owner.dir_label()),
    ]
}

/// The async runtime of one command (engine calls, probes, a CA): a current-thread one,
/// as the calls are sequential and the process is short-lived. Deploy alone wants two
/// workers, and `serve` its own.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

/// `inspect_container`, with a container that is gone as `None`.
pub async fn inspect_if_present(
    docker: &Docker,
    name: &str,
) -> Result<Option<bollard::models::ContainerInspectResponse>> {
    absent_as_none(
        docker
            .inspect_container(
                name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await,
    )
    .with_context(|| format!("failed to inspect container {name}"))
}

/// `healthy`, `unhealthy`, `starting`, or empty for a container without a healthcheck.
pub fn health_status(state: &bollard::models::ContainerState) -> String {
    state
        .health
        .as_ref()
        .and_then(|h| h.status)
        .map(|s| s.to_string())
        .filter(|s| s != "none" && !s.is_empty())
        .unwrap_or_default()
}

/// A container's name as the engine reports it in a listing, without the leading `/`.
pub fn summary_name(summary: &bollard::models::ContainerSummary) -> String {
    summary
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> EngineEnv {
        EngineEnv {
            docker_host: Some(value.into()),
            ..Default::default()
        }
    }

    #[test]
    fn docker_host_is_read_as_the_docker_cli_reads_it() {
        let unset = EngineEnv::default();
        assert_eq!(
            Endpoint::from_env(&unset).unwrap(),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            Endpoint::from_env(&host("unix:///run/user/1000/docker.sock")).unwrap(),
            Endpoint::Unix("/run/user/1000/docker.sock".into())
        );
        assert_eq!(
            Endpoint::from_env(&host("tcp://10.0.0.5:2375/")).unwrap(),
            Endpoint::Tcp {
                addr: "tcp://10.0.0.5:2375".into(),
                tls: None
            }
        );
        assert_eq!(
            Endpoint::from_env(&host("tcp://[::1]:2375")).unwrap(),
            Endpoint::Tcp {
                addr: "tcp://[::1]:2375".into(),
                tls: None
            }
        );
    }

    #[test]
    fn docker_tls_verify_takes_the_cert_path_and_checks_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = host("tcp://engine.example:2376");
        env.tls_verify = Some("1".into());
        env.cert_path = Some(dir.path().to_str().unwrap().into());
        let missing = Endpoint::from_env(&env).unwrap_err().to_string();
        assert!(missing.contains("ca.pem is missing"), "{missing}");
        assert!(missing.contains("DOCKER_CERT_PATH"), "{missing}");
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.path().join(file), "x").unwrap();
        }
        assert_eq!(
            Endpoint::from_env(&env).unwrap(),
            Endpoint::Tcp {
                addr: "tcp://engine.example:2376".into(),
                tls: Some(dir.path().to_path_buf())
            }
        );
        // TLS without verification is refused, not downgraded to plain HTTP.
        let mut unverified = host("tcp://engine.example:2376");
        unverified.tls = Some("1".into());
        let err = Endpoint::from_env(&unverified).unwrap_err().to_string();
        assert!(err.contains("DOCKER_TLS_VERIFY=1"), "{err}");
    }

    // Regression (issue 14): an unsupported DOCKER_HOST silently meant the local engine.
    #[test]
    fn unsupported_docker_hosts_are_refused_naming_docker_host() {
        for (value, why) in [
            ("ssh://admin@engine.example", "ssh://"),
            ("npipe:////./pipe/docker_engine", "npipe://"),
            ("garbage", "has no scheme"),
            ("unix://relative.sock", "absolute socket path"),
            ("tcp://engine.example", "must name a port"),
            ("tcp://:2375", "is not tcp://HOST:PORT"),
            ("tcp://engine.example:http", "is not tcp://HOST:PORT"),
        ] {
            let err = Endpoint::from_env(&host(value)).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("DOCKER_HOST={value:?}")) && err.contains(why),
                "{value}: {err}"
            );
        }
    }
}
