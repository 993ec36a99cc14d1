//! The deployed stack's nginx container as a [`Proxy`]: `nginx -t` and a graceful reload
//! through the engine, and the served address 127.0.0.1:HTTPS_PORT. Found by the owner
//! filter (the stack id labels) and service `nginx`, so `elior cert issue|renew` and `elior deploy`
//! drive the same container.
//!
//! [`reload`] is the one way elior reloads a stack's nginx (deploy's upstream switch and
//! certificate installs both call it). It runs `nginx -s reload` through the exec API,
//! never the kill endpoint: on Engine 20.10 any `docker kill`, SIGHUP included, marks the
//! container as stopped by hand, and its `unless-stopped` restart policy no longer brings
//! nginx back after a crash (issue 14).
//!
//! `nginx -s reload` tests the configuration itself: the signaller parses all of it,
//! certificates and keys included, and exits 1 without signalling the master when that
//! fails (checked on nginx 1.22 with an unknown directive, a missing or garbage
//! certificate and a key of another certificate). So [`reload`] is one exec; a separate
//! `nginx -t` before it would cost one more exec per reload, twice per update
//! (examples/reload_bench.rs: about 1.8x the old `-t` + SIGHUP, against about 0.8x for
//! one exec). [`test_config`] stays for callers that test before they commit to a change
//! (the certificate installer).
//!
//! It only tests and reloads; deciding what certificate to install is `tls::issue`'s job.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Result};
use bollard::models::ContainerSummary;
use bollard::Docker;

use super::{apply, summary_name, Owner, LABEL_SERVICE};
use crate::plan::containers::PROXY_SERVICE;
use crate::plan::render::paths;
use crate::tls::install::Proxy;

/// A running nginx container of a deployed stack.
#[derive(Clone)]
pub struct StackNginx {
    docker: Docker,
    pub container: String,
    https: SocketAddr,
}

impl StackNginx {
    pub fn new(docker: Docker, container: String, https_port: u16) -> StackNginx {
        StackNginx {
            docker,
            container,
            https: SocketAddr::from(([127, 0, 0, 1], https_port)),
        }
    }

    /// The running nginx of the stack `owner`, or `None` when it is not deployed (or
    /// its nginx is stopped).
    pub async fn find(docker: &Docker, owner: &Owner, https_port: u16) -> Result<Option<Self>> {
        let running = running_service(docker, owner, PROXY_SERVICE).await?;
        Ok(running
            .into_iter()
            .next()
            .map(|name| StackNginx::new(docker.clone(), name, https_port)))
    }

    fn config_path() -> String {
        format!("{}/nginx.conf", paths::NGINX_MOUNT)
    }
}

/// Names of the running containers of `service` that `owner` owns, sorted.
pub async fn running_service(docker: &Docker, owner: &Owner, service: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = super::stack_containers(docker, owner)
        .await?
        .iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SERVICE))
                .map(String::as_str)
                == Some(service)
                && c.state.as_ref().is_some_and(|s| s.to_string() == "running")
        })
        .map(summary_name)
        .collect();
    names.sort();
    Ok(names)
}

/// Whether a container bind-mounts something under `dir` (canonical).
pub fn mounts_from(container: &ContainerSummary, dir: &Path) -> bool {
    container.mounts.iter().flatten().any(|m| {
        m.source
            .as_deref()
            .is_some_and(|source| Path::new(source).starts_with(dir))
    })
}

/// Checks `config_path` in the nginx `container` with `nginx -t` (through exec).
pub async fn test_config(docker: &Docker, container: &str, config_path: &str) -> Result<()> {
    let (code, output) =
        apply::exec(docker, container, &["nginx", "-t", "-q", "-c", config_path]).await?;
    if code != 0 {
        bail!(
            "nginx -t rejected the configuration in {container}:\n{}",
            output.trim_end()
        );
    }
    Ok(())
}

/// Reloads the nginx `container` gracefully with `nginx -s reload` through the exec API
/// (the master re-reads its files; old workers finish their requests). A configuration
/// that does not parse, or a certificate that does not load, fails here and is not
/// signalled: nginx keeps serving the old one. The container's restart policy is left
/// armed (see the module doc).
pub async fn reload(docker: &Docker, container: &str, config_path: &str) -> Result<()> {
    let (code, output) = apply::exec(
        docker,
        container,
        &["nginx", "-s", "reload", "-c", config_path],
    )
    .await?;
    if code != 0 {
        bail!(
            "nginx -s reload refused the configuration in {container} (exit {code}), nginx keeps the previous one:\n{}",
            output.trim_end()
        );
    }
    Ok(())
}

impl Proxy for StackNginx {
    async fn test_config(&self) -> Result<()> {
        test_config(&self.docker, &self.container, &Self::config_path()).await
    }

    async fn reload(&self) -> Result<()> {
        reload(&self.docker, &self.container, &Self::config_path()).await
    }

    fn https_address(&self) -> SocketAddr {
        self.https
    }
}
