//! The Docker Engine answers; its version and API, and the free space of its root.

use std::path::Path;

use serde::Serialize;

use super::{Check, CheckInfo, Group};
use crate::doctor::disk::{self, Disk};
use crate::doctor::facts::Stack;
use crate::doctor::sources::Sources;
use crate::doctor::Finding;

pub struct Docker;

#[derive(Debug, Clone, Default, Serialize)]
pub struct DockerFacts {
    pub error: Option<String>,
    pub version: Option<String>,
    pub api_version: Option<String>,
    pub root_dir: Option<String>,
    pub disk: Option<Disk>,
}

impl Check for Docker {
    const INFO: CheckInfo = CheckInfo {
        name: "docker",
        group: Group::Host,
        about: "the Docker Engine is reachable; its version, API and the disk use of its root",
    };
    type Facts = DockerFacts;

    async fn gather(sources: &Sources) -> DockerFacts {
        let docker = match sources.docker().await {
            Ok(d) => d,
            Err(e) => {
                return DockerFacts {
                    error: Some(e),
                    ..Default::default()
                }
            }
        };
        let mut f = DockerFacts::default();
        match docker.version().await {
            Ok(v) => {
                f.version = v.version;
                f.api_version = v.api_version;
            }
            Err(e) => f.error = Some(e.to_string()),
        }
        if let Ok(info) = docker.info().await {
            f.disk = info
                .docker_root_dir
                .as_deref()
                .and_then(|p| crate::fsutil::disk_space(Path::new(p)));
            f.root_dir = info.docker_root_dir;
        }
        f
    }

    fn judge(_: &Stack, f: &DockerFacts) -> Vec<Finding> {
        if let Some(e) = &f.error {
            return vec![Finding::failure(
                format!("the Docker Engine is not reachable: {e}"),
                "start it with `systemctl start docker`, and check that /var/run/docker.sock (or DOCKER_HOST) is readable",
            )];
        }
        let mut out = vec![Finding::ok(format!(
            "engine {} (API {}) reachable",
            f.version.as_deref().unwrap_or("?"),
            f.api_version.as_deref().unwrap_or("?")
        ))];
        if let (Some(root), Some(disk)) = (&f.root_dir, &f.disk) {
            out.push(disk::finding(
                "docker root",
                root,
                disk,
                "see what uses it with `docker system df`; `docker image prune` removes only dangling images (never start with `docker system prune`: it also removes stopped containers)",
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    // Regression (issue 14): the fix for a full Docker root must not start with a prune
    // that removes stopped containers.
    #[test]
    fn a_nearly_full_docker_root_fails_without_a_blanket_prune() {
        let gib = 1u64 << 30;
        let docker_root = DockerFacts {
            version: Some("20.10.24".into()),
            api_version: Some("1.41".into()),
            root_dir: Some("/var/lib/docker".into()),
            disk: Some(Disk {
                total_bytes: 100 * gib,
                free_bytes: 1 << 20,
            }),
            error: None,
        };
        let found = Docker::judge(&Stack::default(), &docker_root);
        assert_eq!(found[0].finding, "engine 20.10.24 (API 1.41) reachable");
        assert_eq!(found[1].status, Status::Failure);
        assert!(found[1]
            .fix
            .as_deref()
            .unwrap()
            .starts_with("see what uses it with `docker system df`"));
        let unreachable = DockerFacts {
            error: Some("connection refused".into()),
            ..Default::default()
        };
        let found = Docker::judge(&Stack::default(), &unreachable);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].finding,
            "the Docker Engine is not reachable: connection refused"
        );
    }
}
