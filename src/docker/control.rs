//! A deployed stack's API container as a restore sees it ([`ApiControl`]): stop it before
//! the files are swapped, start it again after and wait until Docker reports it healthy.
//! The containers are found by the deploy labels (project + service `api`).
//!
//! It stops and starts existing containers only; it never creates, replaces or removes
//! one (that is `apply`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use bollard::query_parameters::{StartContainerOptions, StopContainerOptions};
use bollard::Docker;

use super::apply::STOP_GRACE_SECS;
use super::{health, proxy};
use crate::backup::restore::ApiControl;
use crate::plan::containers::API_SERVICE;

/// The API containers of one deployed stack, driven from synchronous code.
pub struct StackApi {
    runtime: tokio::runtime::Runtime,
    docker: Docker,
    project: String,
    stack_dir: PathBuf,
    /// The containers this stopped, to start again.
    stopped: Vec<String>,
    health_timeout: Duration,
}

impl StackApi {
    /// The stack for `domain` deployed from `stack_dir`, when the engine is reachable and
    /// has containers of that project mounting files from `stack_dir`; `None` when this
    /// directory was never deployed here (a copy with the same DOMAIN is not the stack).
    pub fn connect(
        domain: &str,
        stack_dir: &Path,
        health_timeout: Duration,
    ) -> Result<Option<StackApi>> {
        let runtime = super::runtime()?;
        let project = super::project_name(domain);
        let docker = runtime.block_on(super::connect())?;
        let containers = runtime.block_on(super::project_containers(&docker, &project))?;
        let stack_dir = stack_dir
            .canonicalize()
            .with_context(|| format!("stack directory {} does not exist", stack_dir.display()))?;
        let mounts_this_dir = containers.iter().any(|c| proxy::mounts_from(c, &stack_dir));
        if !mounts_this_dir {
            return Ok(None);
        }
        Ok(Some(StackApi {
            runtime,
            docker,
            project,
            stack_dir,
            stopped: Vec::new(),
            health_timeout,
        }))
    }

    fn running(&self) -> Result<Vec<String>> {
        self.runtime.block_on(proxy::running_service(
            &self.docker,
            &self.project,
            API_SERVICE,
            &self.stack_dir,
        ))
    }
}

impl ApiControl for StackApi {
    fn is_running(&mut self) -> Result<bool> {
        Ok(!self.running()?.is_empty())
    }

    fn stop(&mut self) -> Result<()> {
        for name in self.running()? {
            self.runtime
                .block_on(self.docker.stop_container(
                    &name,
                    Some(StopContainerOptions {
                        t: Some(STOP_GRACE_SECS),
                        signal: None,
                    }),
                ))
                .with_context(|| format!("failed to stop container {name}"))?;
            self.stopped.push(name);
        }
        Ok(())
    }

    fn start(&mut self) -> Result<()> {
        for name in &self.stopped {
            self.runtime
                .block_on(
                    self.docker
                        .start_container(name, None::<StartContainerOptions>),
                )
                .with_context(|| format!("failed to start container {name}"))?;
        }
        for name in &self.stopped {
            self.runtime
                .block_on(health::wait_healthy(
                    &self.docker,
                    name,
                    self.health_timeout,
                ))
                .with_context(|| format!("the api container {name} did not come back healthy"))?;
        }
        Ok(())
    }
}
