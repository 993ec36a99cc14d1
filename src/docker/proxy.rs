//! The deployed stack's nginx container as a [`Proxy`]: `nginx -t` and a graceful reload
//! (SIGHUP to the master) through the engine, and the served address
//! 127.0.0.1:HTTPS_PORT. Found by the deploy labels (project + service `nginx`), so
//! `elior cert issue|renew` and `elior deploy` drive the same container.
//!
//! It only tests and reloads; deciding what certificate to install is `tls::issue`'s job.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;

use super::{apply, label_filter, summary_name, LABEL_PROJECT, LABEL_SERVICE};
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

    /// The running nginx of the stack for `domain` deployed from `stack_dir`, or `None`
    /// when it is not deployed (or its nginx is stopped).
    pub async fn find(
        docker: &Docker,
        domain: &str,
        stack_dir: &Path,
        https_port: u16,
    ) -> Result<Option<Self>> {
        let project = super::project_name(domain);
        let running = running_service(docker, &project, PROXY_SERVICE, stack_dir).await?;
        Ok(running
            .into_iter()
            .next()
            .map(|name| StackNginx::new(docker.clone(), name, https_port)))
    }

    fn config_path() -> String {
        format!("{}/nginx.conf", paths::NGINX_MOUNT)
    }
}

/// Names of the running containers of `service` in `project` that were deployed from
/// `stack_dir` (they mount files from it), sorted. Another directory with the same
/// DOMAIN is not the deployed stack.
pub async fn running_service(
    docker: &Docker,
    project: &str,
    service: &str,
    stack_dir: &Path,
) -> Result<Vec<String>> {
    let stack_dir = stack_dir
        .canonicalize()
        .with_context(|| format!("stack directory {} does not exist", stack_dir.display()))?;
    let mut names: Vec<String> = docker
        .list_containers(Some(ListContainersOptions {
            all: false,
            filters: Some(label_filter(&[
                (LABEL_PROJECT, project),
                (LABEL_SERVICE, service),
            ])),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("failed to list the {service} containers of stack {project}"))?
        .iter()
        .filter(|c| mounts_from(c, &stack_dir))
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

impl Proxy for StackNginx {
    async fn test_config(&self) -> Result<()> {
        let (code, output) = apply::exec(
            &self.docker,
            &self.container,
            &["nginx", "-t", "-q", "-c", &Self::config_path()],
        )
        .await?;
        if code != 0 {
            bail!(
                "nginx -t failed in {}:\n{}",
                self.container,
                output.trim_end()
            );
        }
        Ok(())
    }

    async fn reload(&self) -> Result<()> {
        self.docker
            .kill_container(
                &self.container,
                Some(bollard::query_parameters::KillContainerOptions {
                    signal: "HUP".into(),
                }),
            )
            .await
            .with_context(|| format!("failed to send SIGHUP to {}", self.container))
    }

    fn https_address(&self) -> SocketAddr {
        self.https
    }
}
