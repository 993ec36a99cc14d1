//! A deployed stack's API container as a restore sees it ([`ApiControl`]): stop it before
//! the files are swapped, start it again after and wait until Docker reports it healthy.
//! The containers are found by the owner filter (the stack id labels) and service `api`.
//!
//! It stops and starts existing containers only; it never creates, replaces or removes
//! one (that is `apply`).

use std::time::Duration;

use anyhow::{Context, Result};
use bollard::query_parameters::{StartContainerOptions, StopContainerOptions};
use bollard::Docker;

use super::apply::STOP_GRACE_SECS;
use super::{health, proxy, Owner};
use crate::backup::restore::ApiControl;
use crate::plan::containers::API_SERVICE;

/// The API containers of one deployed stack, driven from synchronous code.
pub struct StackApi {
    runtime: tokio::runtime::Runtime,
    docker: Docker,
    owner: Owner,
    /// The containers this stopped, to start again.
    stopped: Vec<String>,
    health_timeout: Duration,
}

impl StackApi {
    /// The stack `owner` when the engine is reachable and has containers of it; `None`
    /// when this directory was never deployed here (a copy with the same DOMAIN, or the
    /// same id, is not the stack).
    pub fn connect(owner: &Owner, health_timeout: Duration) -> Result<Option<StackApi>> {
        let runtime = super::runtime()?;
        let docker = runtime.block_on(super::connect())?;
        let containers = runtime.block_on(super::stack_containers(&docker, owner))?;
        if containers.is_empty() {
            return Ok(None);
        }
        Ok(Some(StackApi {
            runtime,
            docker,
            owner: owner.clone(),
            stopped: Vec::new(),
            health_timeout,
        }))
    }

    fn running(&self) -> Result<Vec<String>> {
        self.runtime.block_on(proxy::running_service(
            &self.docker,
            &self.owner,
            API_SERVICE,
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
