//! The other stacks on the engine, as a deploy must see them before it creates anything:
//! containers of an earlier release deployed from this very directory (adopted: the
//! deploy replaces them with labelled ones), and containers of *other* stacks that hold
//! a port or a name this stack wants (refused, naming that stack's directory).
//!
//! Only reads the engine; the deploy decides what to do with the answer.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;

use super::{
    label_filter, owns, proxy::mounts_from, summary_name, Owner, LABEL_PROJECT, LABEL_SERVICE,
    LABEL_STACK_DIR, LABEL_STACK_ID,
};
use crate::config::identity::legacy_project_name;

/// Every elior container on the engine (any stack, running or not).
async fn elior_containers(docker: &Docker) -> Result<Vec<ContainerSummary>> {
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![LABEL_SERVICE.to_string()],
            )])),
            ..Default::default()
        }))
        .await
        .context("failed to list the containers on the engine")
}

/// Containers an earlier release (project `elior-<domain>`, no stack id) deployed from
/// `dir`: they mount files from it. Another directory's containers under the same legacy
/// project name (the `ka.test` / `ka-test` collision) do not mount from `dir`.
pub async fn legacy_containers(
    docker: &Docker,
    domain: &str,
    dir: &Path,
) -> Result<Vec<ContainerSummary>> {
    let project = legacy_project_name(domain);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(label_filter(&[(LABEL_PROJECT, &project)])),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("failed to list the containers of {project}"))?;
    Ok(list
        .into_iter()
        .filter(|c| {
            let labels = c.labels.as_ref();
            labels.is_none_or(|l| !l.contains_key(LABEL_STACK_ID)) && mounts_from(c, dir)
        })
        .collect())
}

/// Removes the networks of an earlier release's project that no container uses any more,
/// after its containers were adopted; a network still in use (another directory's stack
/// under the same legacy name) is refused by the engine and kept.
pub async fn remove_unused_legacy_networks(docker: &Docker, domain: &str) -> Vec<String> {
    let project = legacy_project_name(domain);
    let Ok(networks) = docker
        .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
            filters: Some(label_filter(&[(LABEL_PROJECT, &project)])),
        }))
        .await
    else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for network in networks {
        let labels = network.labels.clone().unwrap_or_default();
        if labels.contains_key(LABEL_STACK_ID) {
            continue;
        }
        let Some(name) = network.name else { continue };
        if docker.remove_network(&name).await.is_ok() {
            removed.push(name);
        }
    }
    removed
}

/// A container of another stack that is in this stack's way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub container: String,
    /// The directory it was deployed from (its label, or what it mounts for an earlier
    /// release's container), when known.
    pub dir: Option<String>,
    pub what: String,
}

/// Refuses a deploy whose host ports, or container names, are held by another stack:
/// another stack id, or this id deployed from another directory (a copied
/// `.elior/stack.json`). Nothing is created before this passes.
pub async fn refuse_conflicts(
    docker: &Docker,
    owner: &Owner,
    ports: &[u16],
    names: &[String],
) -> Result<()> {
    let holders = find_holders(&elior_containers(docker).await?, owner, ports, names);
    let Some(holder) = holders.first() else {
        return Ok(());
    };
    let dir = holder
        .dir
        .clone()
        .unwrap_or_else(|| "an unknown directory".to_string());
    let copy = holders.iter().any(|h| h.what.starts_with("this stack id"));
    if copy {
        bail!(
            "{} has the stack id {} of the stack deployed from {dir} ({}): it is a copy of that directory; nothing was changed\nremove {} in this copy and deploy again to give it its own identity, or run elior in {dir}",
            owner.dir.display(),
            owner.id.short(),
            holder.container,
            owner.dir.join(crate::config::identity::STACK_FILE).display(),
        );
    }
    bail!(
        "{} of this stack is held by {} of another stack, deployed from {dir}; nothing was changed\nthat stack keeps running: stop it with `elior down --dir {dir}`, or give this one other ports (HTTP_PORT/HTTPS_PORT in {}/.env.production, then `elior render`)",
        holder.what,
        holder.container,
        owner.dir.display()
    );
}

/// The pure part of [`refuse_conflicts`]: which of `containers` hold what `owner` needs.
pub fn find_holders(
    containers: &[ContainerSummary],
    owner: &Owner,
    ports: &[u16],
    names: &[String],
) -> Vec<Holder> {
    let mut holders = Vec::new();
    for c in containers {
        let labels = c.labels.as_ref();
        if owns(owner, labels) {
            continue;
        }
        let label = |key: &str| labels.and_then(|l| l.get(key)).cloned();
        let container = summary_name(c);
        let same_id = label(LABEL_STACK_ID).as_deref() == Some(owner.id.as_str());
        // An earlier release's container deployed from this directory is adopted, not
        // in the way.
        if label(LABEL_STACK_ID).is_none() && mounts_from(c, &owner.dir) {
            continue;
        }
        let dir = label(LABEL_STACK_DIR).or_else(|| legacy_dir(c));
        if same_id {
            holders.push(Holder {
                container,
                dir,
                what: "this stack id".to_string(),
            });
            continue;
        }
        let running = c.state.as_ref().is_some_and(|s| s.to_string() == "running");
        let held: Vec<u16> = c
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.public_port)
            .filter(|p| ports.contains(p))
            .collect();
        if let (true, Some(port)) = (running, held.first()) {
            holders.push(Holder {
                container,
                dir,
                what: format!("port {port}"),
            });
        } else if names.contains(&container) {
            holders.push(Holder {
                what: format!("the container name {container}"),
                container,
                dir,
            });
        }
    }
    holders
}

/// The stack directory of an earlier release's container: the parent of its `data`,
/// `uploads` or `nginx` bind mount.
fn legacy_dir(c: &ContainerSummary) -> Option<String> {
    c.mounts.iter().flatten().find_map(|m| {
        let source = Path::new(m.source.as_deref()?);
        let leaf = source.file_name()?.to_str()?;
        ["data", "uploads", "nginx"]
            .contains(&leaf)
            .then(|| source.parent().map(|p| p.display().to_string()))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::domain;
    use crate::config::identity::StackId;
    use bollard::models::{ContainerSummaryStateEnum, MountPoint, Port};

    fn owner(id: &str, dir: &str) -> Owner {
        Owner::new(
            StackId::try_from(id.repeat(32 / id.len())).unwrap(),
            dir.into(),
            &domain::parse("ka.test").unwrap(),
        )
    }

    fn container(
        name: &str,
        labels: &[(&str, &str)],
        port: Option<u16>,
        mount: &str,
    ) -> ContainerSummary {
        ContainerSummary {
            names: Some(vec![format!("/{name}")]),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            state: Some(ContainerSummaryStateEnum::RUNNING),
            ports: Some(
                port.map(|p| Port {
                    public_port: Some(p),
                    private_port: 443,
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ),
            mounts: Some(vec![MountPoint {
                source: Some(mount.to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn other_stacks_holding_a_port_or_sharing_the_id_are_in_the_way() {
        let me = owner("aa", "/srv/a");
        let other = [
            (LABEL_SERVICE, "nginx"),
            (LABEL_STACK_ID, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
            (LABEL_STACK_DIR, "/srv/b"),
        ];
        let mine = [
            (LABEL_SERVICE, "nginx"),
            (LABEL_STACK_ID, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            (LABEL_STACK_DIR, "/srv/a"),
        ];
        let copy = [
            (LABEL_SERVICE, "api"),
            (LABEL_STACK_ID, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            (LABEL_STACK_DIR, "/srv/copy"),
        ];
        let legacy_here = [(LABEL_SERVICE, "nginx"), (LABEL_PROJECT, "elior-ka-test")];
        let containers = [
            container("b-nginx", &other, Some(8443), "/srv/b/nginx"),
            container("mine-nginx", &mine, Some(8443), "/srv/a/nginx"),
            container("old-nginx", &legacy_here, Some(8443), "/srv/a/nginx"),
            container("old-elsewhere", &legacy_here, Some(9443), "/srv/c/nginx"),
        ];
        let holders = find_holders(&containers, &me, &[8080, 8443], &[]);
        assert_eq!(
            holders,
            vec![Holder {
                container: "b-nginx".into(),
                dir: Some("/srv/b".into()),
                what: "port 8443".into()
            }]
        );
        let holders = find_holders(&containers, &me, &[9443], &[]);
        assert_eq!(holders[0].dir.as_deref(), Some("/srv/c"));
        let holders = find_holders(
            &[container("c-api", &copy, None, "/srv/copy/data")],
            &me,
            &[],
            &[],
        );
        assert_eq!(holders[0].what, "this stack id");
        let holders = find_holders(
            &[container("x-nginx", &other, None, "/srv/b/nginx")],
            &me,
            &[],
            &["x-nginx".to_string()],
        );
        assert_eq!(holders[0].what, "the container name x-nginx");
    }
}
