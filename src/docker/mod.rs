//! The Docker Engine, through bollard: connecting (with API version negotiation), the
//! labels that mark what elior owns, and reading a 404 as "absent" rather than failure.
//!
//! Submodules carry out plans: `image` builds the API image, `compose` reads the rendered
//! compose file into container specs, `apply` creates networks and containers, `health`
//! waits for a container to become healthy, `proxy` drives the stack's nginx container
//! for certificate installs, `control` stops and starts the API for a restore. Nothing
//! here decides *what* should exist (that is `plan`), and nothing here prints to stdout.

pub mod apply;
pub mod compose;
pub mod control;
pub mod health;
pub mod image;
pub mod proxy;

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions};
use bollard::Docker;

pub use bollard;

/// The stack a resource belongs to; two stacks on one host never share a value.
pub const LABEL_PROJECT: &str = "elior.project";
/// The compose service a container runs (`api`, `nginx`).
pub const LABEL_SERVICE: &str = "elior.service";
/// A hash of everything a container was created from; equal hash, same container.
pub const LABEL_CONFIG_HASH: &str = "elior.config-hash";
/// Per-aspect hashes (`image=…,env=…`), so a plan can say *what* changed.
pub const LABEL_CONFIG_PARTS: &str = "elior.config-parts";

/// Connects to the engine at DOCKER_HOST or /var/run/docker.sock and agrees on an API
/// version both sides speak (engines seen here speak 1.41 and refuse newer clients).
pub async fn connect() -> Result<Docker> {
    let unreachable = |e: DockerError| {
        anyhow!(
            "cannot reach the Docker Engine: {e}\nis dockerd running, and is /var/run/docker.sock (or DOCKER_HOST) readable by you?"
        )
    };
    Docker::connect_with_local_defaults()
        .map_err(unreachable)?
        .negotiate_version()
        .await
        .map_err(unreachable)
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

/// Every container (running or not) of `project`.
pub async fn project_containers(
    docker: &Docker,
    project: &str,
) -> Result<Vec<bollard::models::ContainerSummary>> {
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(label_filter(&[(LABEL_PROJECT, project)])),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("failed to list the containers of stack {project}"))
}

/// Every network of `project`.
pub async fn project_networks(
    docker: &Docker,
    project: &str,
) -> Result<Vec<bollard::models::Network>> {
    docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(label_filter(&[(LABEL_PROJECT, project)])),
        }))
        .await
        .with_context(|| format!("failed to list the networks of stack {project}"))
}

/// The project name of a stack: `elior-` and the domain with every character Docker
/// names do not allow (and the dots, for readability) as `-`. Container and network
/// names all start with it, so two stacks on one host never collide.
pub fn project_name(domain: &str) -> String {
    let mut name = String::from("elior-");
    for c in domain.chars() {
        name.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        });
    }
    name
}

/// The async runtime for one command's engine calls (a current-thread one: the calls
/// are sequential and the process is short-lived).
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

    #[test]
    fn project_names_are_docker_names() {
        assert_eq!(project_name("Fit.Example.com"), "elior-fit-example-com");
        assert_eq!(project_name("::1"), "elior---1");
    }
}
