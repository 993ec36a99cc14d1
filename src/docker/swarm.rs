//! A stack on Docker Swarm, through bollard's Swarm API (issue 21): observing the swarm
//! (is this a manager, which nodes carry which labels, what the stack already runs),
//! carrying out a `plan::swarm::SwarmPlan` (overlay network, secrets, services), waiting
//! for the engine's rolling update to converge while reporting each task, and the day-2
//! operations (tasks with their node and health, scale, rollback, logs, removal).
//!
//! Every object is found by the stack's `elior.stack-id` label, never by name alone. It
//! decides nothing (that is `plan::swarm`) and prints nothing to stdout.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use bollard::models::{
    LocalNodeState, NetworkCreateRequest, SecretSpec, Service, ServiceUpdateStatusStateEnum,
};
use bollard::query_parameters::{
    InspectServiceOptions, ListNodesOptions, ListSecretsOptions, ListServicesOptions,
    ListTasksOptions, UpdateServiceOptions,
};
use bollard::Docker;
use serde::Serialize;

use super::{absent_as_none, absent_as_ok, label_filter, owner_labels, Owner, LABEL_STACK_ID};
use crate::plan::swarm::{
    Change, ForeignPort, NodeFacts, Observed, ServiceFacts, SwarmPlan, SwarmState,
    LABEL_CONFIG_PARTS, LABEL_IMAGE, LABEL_SECRET, LABEL_SERVICE,
};

fn stack_filter(owner: &Owner) -> HashMap<String, Vec<String>> {
    label_filter(&[(LABEL_STACK_ID, owner.id.as_str())])
}

/// The swarm state of this engine, its hostname and (on a manager) the nodes.
pub async fn observe_swarm(docker: &Docker) -> Result<Observed> {
    let info = docker
        .info()
        .await
        .context("failed to ask the Docker Engine for its swarm state")?;
    let swarm = info.swarm.unwrap_or_default();
    let state = match swarm.local_node_state {
        Some(LocalNodeState::ACTIVE) if swarm.control_available == Some(true) => {
            SwarmState::Manager
        }
        Some(LocalNodeState::ACTIVE) => SwarmState::Worker,
        None | Some(LocalNodeState::INACTIVE) | Some(LocalNodeState::EMPTY) => SwarmState::Inactive,
        Some(other) => SwarmState::Other(other.to_string()),
    };
    let mut observed = Observed {
        swarm: state,
        hostname: info.name.unwrap_or_default(),
        ..Default::default()
    };
    if observed.swarm == SwarmState::Manager {
        let nodes = docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .context("failed to list the swarm's nodes")?;
        observed.nodes = nodes
            .into_iter()
            .map(|n| NodeFacts {
                hostname: n.description.and_then(|d| d.hostname).unwrap_or_default(),
                labels: n
                    .spec
                    .and_then(|s| s.labels)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                ready: n
                    .status
                    .and_then(|s| s.state)
                    .is_some_and(|s| s.to_string() == "ready"),
            })
            .collect();
    }
    Ok(observed)
}

/// The stack's services, secrets and network, added to [`observe_swarm`]'s facts.
pub async fn observe(docker: &Docker, owner: &Owner) -> Result<Observed> {
    let mut observed = observe_swarm(docker).await?;
    if observed.swarm != SwarmState::Manager {
        return Ok(observed);
    }
    let own = services(docker, owner).await?;
    let own_ids: Vec<&str> = own.iter().filter_map(|s| s.id.as_deref()).collect();
    observed.foreign_ports = docker
        .list_services(None::<ListServicesOptions>)
        .await
        .context("failed to list swarm services")?
        .iter()
        .filter(|s| !s.id.as_deref().is_some_and(|id| own_ids.contains(&id)))
        .filter_map(|s| s.spec.as_ref())
        .flat_map(|spec| {
            let service = spec.name.clone().unwrap_or_default();
            let stack_dir = spec
                .labels
                .as_ref()
                .and_then(|l| l.get(super::LABEL_STACK_DIR).cloned());
            published_ports(spec)
                .into_iter()
                .map(move |port| ForeignPort {
                    port,
                    service: service.clone(),
                    stack_dir: stack_dir.clone(),
                })
        })
        .collect();
    observed.services = own
        .into_iter()
        .filter_map(|s| {
            let spec = s.spec?;
            let published = published_ports(&spec);
            let labels = spec.labels.unwrap_or_default();
            Some(ServiceFacts {
                name: spec.name?,
                parts: labels.get(LABEL_CONFIG_PARTS).cloned().unwrap_or_default(),
                replicas: spec
                    .mode
                    .and_then(|m| m.replicated)
                    .and_then(|r| r.replicas)
                    .map(|n| n as u32),
                published,
            })
        })
        .collect();
    observed.secrets = secrets(docker, owner)
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    observed.networks = docker
        .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
            filters: Some(stack_filter(owner)),
        }))
        .await
        .context("failed to list networks")?
        .into_iter()
        .filter_map(|n| n.name)
        .collect();
    Ok(observed)
}

/// The host ports a service's spec publishes (host mode or through the routing mesh).
fn published_ports(spec: &bollard::models::ServiceSpec) -> Vec<u16> {
    spec.endpoint_spec
        .iter()
        .flat_map(|e| e.ports.iter().flatten())
        .filter_map(|p| p.published_port.and_then(|n| u16::try_from(n).ok()))
        .collect()
}

/// The stack's services (by its id label, and its directory: a copied stack.json is
/// another stack).
pub async fn services(docker: &Docker, owner: &Owner) -> Result<Vec<Service>> {
    let list = docker
        .list_services(Some(ListServicesOptions {
            filters: Some(stack_filter(owner)),
            ..Default::default()
        }))
        .await
        .context("failed to list swarm services")?;
    Ok(list
        .into_iter()
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|sp| sp.labels.as_ref())
                .and_then(|l| l.get(super::LABEL_STACK_DIR))
                .is_none_or(|d| *d == owner.dir_label())
        })
        .collect())
}

/// The stack's secrets: (name, id).
pub async fn secrets(docker: &Docker, owner: &Owner) -> Result<Vec<(String, String)>> {
    let list = docker
        .list_secrets(Some(ListSecretsOptions {
            filters: Some(stack_filter(owner)),
        }))
        .await
        .context("failed to list swarm secrets")?;
    Ok(list
        .into_iter()
        .filter_map(|s| Some((s.spec?.name?, s.id?)))
        .collect())
}

/// Reports progress (the CLI's spinner or plain lines). Sync, so a wait on the engine can
/// run inside a `Send` future (the certificate roll, issue 21).
pub trait Notes: Sync {
    fn note(&self, line: &str);
}

/// Creates the network and secrets the plan lacks, then creates or updates its services
/// in order. Returns the services that changed.
pub async fn apply(docker: &Docker, owner: &Owner, plan: &SwarmPlan) -> Result<Vec<String>> {
    let labels: HashMap<String, String> = owner_labels(owner).into_iter().collect();
    if plan.create_network {
        docker
            .create_network(NetworkCreateRequest {
                name: plan.network.clone(),
                driver: Some("overlay".into()),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .with_context(|| format!("failed to create the overlay network {}", plan.network))?;
    }
    for secret in plan.secrets.iter().filter(|s| s.create) {
        let mut secret_labels = labels.clone();
        secret_labels.insert(LABEL_SECRET.into(), secret.kind.into());
        docker
            .create_secret(SecretSpec {
                name: Some(secret.name.clone()),
                labels: Some(secret_labels),
                data: Some(base64::engine::general_purpose::STANDARD.encode(&secret.data)),
                ..Default::default()
            })
            .await
            .with_context(|| format!("failed to create the swarm secret {}", secret.name))?;
    }
    // A service names each secret by id as well as by name.
    let ids: HashMap<String, String> = secrets(docker, owner).await?.into_iter().collect();
    let spec_of = |def: &crate::plan::swarm::ServiceDef| -> Result<bollard::models::ServiceSpec> {
        let mut spec = def.spec();
        let refs = spec
            .task_template
            .as_mut()
            .and_then(|t| t.container_spec.as_mut())
            .and_then(|c| c.secrets.as_mut());
        for secret in refs.into_iter().flatten() {
            let name = secret.secret_name.clone().unwrap_or_default();
            let id = ids
                .get(&name)
                .ok_or_else(|| anyhow!("the swarm secret {name} is missing"))?;
            secret.secret_id = Some(id.clone());
        }
        Ok(spec)
    };
    let mut changed = Vec::new();
    for service in &plan.services {
        let name = &service.def.name;
        match &service.change {
            Change::Keep => continue,
            Change::Create => {
                docker
                    .create_service(spec_of(&service.def)?, None)
                    .await
                    .with_context(|| format!("failed to create the service {name}"))?;
            }
            Change::Update { .. } => update_spec(docker, name, spec_of(&service.def)?).await?,
        }
        changed.push(name.clone());
    }
    Ok(changed)
}

/// Updates a service to `spec`, at the version the engine has now.
async fn update_spec(
    docker: &Docker,
    name: &str,
    spec: bollard::models::ServiceSpec,
) -> Result<()> {
    let current = docker
        .inspect_service(name, None::<InspectServiceOptions>)
        .await
        .with_context(|| format!("failed to inspect the service {name}"))?;
    let version = current
        .version
        .and_then(|v| v.index)
        .ok_or_else(|| anyhow!("the service {name} has no version"))?;
    docker
        .update_service(
            name,
            spec,
            UpdateServiceOptions {
                version: version as i32,
                ..Default::default()
            },
            None,
        )
        .await
        .with_context(|| format!("failed to update the service {name}"))?;
    Ok(())
}

/// The current spec of a service, for commands that change one field of it (scale).
///
/// Read back through bollard, a spec loses its health check (bollard names the field
/// `HealthCheck`, the engine answers `Healthcheck`) and gains empty `Resources` and
/// `DNSConfig`; sent back like that, the engine would see a new task spec and replace
/// every task. So the health check is restored (from the service's role) and the empty
/// parts dropped.
pub async fn current_spec(docker: &Docker, name: &str) -> Result<bollard::models::ServiceSpec> {
    let mut spec = absent_as_none(
        docker
            .inspect_service(name, None::<InspectServiceOptions>)
            .await,
    )
    .with_context(|| format!("failed to inspect the service {name}"))?
    .and_then(|s| s.spec)
    .ok_or_else(|| anyhow!("the stack runs no service {name}"))?;
    let role = spec
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SERVICE))
        .cloned()
        .unwrap_or_default();
    if let Some(task) = spec.task_template.as_mut() {
        if task.resources == Some(Default::default()) {
            task.resources = None;
        }
        if let Some(container) = task.container_spec.as_mut() {
            if container.health_check.is_none() {
                container.health_check = crate::plan::swarm::health_of_role(&role);
            }
            if container.dns_config == Some(Default::default()) {
                container.dns_config = None;
            }
        }
    }
    Ok(spec)
}

/// Sets the replica count of a replicated service; the engine starts or stops tasks.
pub async fn scale(docker: &Docker, name: &str, replicas: u32) -> Result<()> {
    let mut spec = current_spec(docker, name).await?;
    let mode = spec
        .mode
        .as_mut()
        .and_then(|m| m.replicated.as_mut())
        .ok_or_else(|| anyhow!("the service {name} is not replicated"))?;
    mode.replicas = Some(i64::from(replicas));
    update_spec(docker, name, spec).await
}

/// One task of a stack service, for `status`, progress and logs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TaskInfo {
    /// `api`, `nginx` or `postgres`.
    pub service: String,
    /// `api.2` (replicated) or `nginx.<node>` (global).
    pub task: String,
    pub id: String,
    pub node: String,
    pub image: String,
    /// The engine's task state: running, starting, shutdown, failed...
    pub state: String,
    pub desired: String,
    /// healthy, unhealthy, starting, or "" (no health check, or not on this node).
    pub health: String,
    pub error: String,
    #[serde(skip)]
    pub container_id: Option<String>,
}

impl TaskInfo {
    /// Wanted running, running, and healthy (or without a health check to say otherwise).
    pub fn is_ready(&self) -> bool {
        self.state == "running"
            && self.desired == "running"
            && (self.health.is_empty() || self.health == "healthy")
    }
}

/// What elior reads off a service's spec, in one place for deploy, status and doctor.
pub mod spec {
    use bollard::models::ServiceSpec;

    /// The service's role label (`api`, `nginx`, `postgres`), or "".
    pub fn role(spec: &ServiceSpec) -> String {
        label(spec, super::LABEL_SERVICE)
    }

    /// One of elior's labels on the service, or "".
    pub fn label(spec: &ServiceSpec, key: &str) -> String {
        spec.labels
            .as_ref()
            .and_then(|l| l.get(key))
            .cloned()
            .unwrap_or_default()
    }

    /// The image its tasks run (an id, since tasks never ask a registry).
    pub fn image(spec: &ServiceSpec) -> String {
        spec.task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    }

    /// Replicas wanted; 1 for a global service (one node here).
    pub fn wanted(spec: &ServiceSpec) -> i64 {
        spec.mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .and_then(|r| r.replicas)
            .unwrap_or(1)
    }
}

/// Every task of the stack's services that the engine wants running or that is still
/// running, with its node and (for tasks on this node) its container's health.
pub async fn tasks(docker: &Docker, owner: &Owner) -> Result<Vec<TaskInfo>> {
    let services = services(docker, owner).await?;
    let nodes: HashMap<String, String> = docker
        .list_nodes(None::<ListNodesOptions>)
        .await
        .context("failed to list the swarm's nodes")?
        .into_iter()
        .filter_map(|n| Some((n.id?, n.description?.hostname?)))
        .collect();
    let mut out = Vec::new();
    for service in services {
        let Some(spec) = service.spec else { continue };
        let name = spec.name.clone().unwrap_or_default();
        let role = Some(spec::role(&spec))
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| name.clone());
        let image_label = spec::label(&spec, LABEL_IMAGE);
        let service_image = spec::image(&spec);
        let list = docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(HashMap::from([("service".to_string(), vec![name.clone()])])),
            }))
            .await
            .with_context(|| format!("failed to list the tasks of {name}"))?;
        for t in list {
            let desired = t.desired_state.map(|s| s.to_string()).unwrap_or_default();
            let status = t.status.clone().unwrap_or_default();
            let state = status.state.map(|s| s.to_string()).unwrap_or_default();
            if desired != "running" && state != "running" {
                continue;
            }
            let node_id = t.node_id.clone().unwrap_or_default();
            let container_id = status.container_status.and_then(|c| c.container_id);
            let health = match &container_id {
                Some(id) => container_health(docker, id).await,
                None => String::new(),
            };
            let task_image = t
                .spec
                .as_ref()
                .and_then(|s| s.container_spec.as_ref())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            let short_id: String = t.id.clone().unwrap_or_default().chars().take(12).collect();
            out.push(TaskInfo {
                task: match t.slot {
                    Some(slot) => format!("{role}.{slot}"),
                    None => format!("{role}.{}", nodes.get(&node_id).unwrap_or(&node_id)),
                },
                service: role.clone(),
                id: short_id,
                node: nodes.get(&node_id).cloned().unwrap_or(node_id),
                image: if task_image == service_image && !image_label.is_empty() {
                    image_label.clone()
                } else {
                    task_image
                },
                state,
                desired,
                health,
                error: status.err.unwrap_or_default(),
                container_id,
            });
        }
    }
    out.sort_by(|a, b| {
        (a.service.as_str(), natural(&a.task), &a.id).cmp(&(
            b.service.as_str(),
            natural(&b.task),
            &b.id,
        ))
    });
    Ok(out)
}

/// `api.10` after `api.9`.
fn natural(task: &str) -> (usize, String) {
    (task.len(), task.to_string())
}

async fn container_health(docker: &Docker, id: &str) -> String {
    match super::inspect_if_present(docker, id).await {
        Ok(Some(c)) => c
            .state
            .map(|s| super::health_status(&s))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Waits until each of `names` runs its current spec on every wanted task, reporting each
/// task's state changes; fails when the engine rolled an update back or the deadline
/// passes (with the failing tasks' errors).
pub async fn converge(
    docker: &Docker,
    owner: &Owner,
    names: &[String],
    timeout: Duration,
    notes: &dyn Notes,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let all = tasks(docker, owner).await?;
        for t in &all {
            let line = format!("{} on {}: {}", t.image, t.node, describe(t));
            if seen.get(&t.id) != Some(&line) {
                notes.note(&format!("  task {} {} {line}", t.task, t.id));
                seen.insert(t.id.clone(), line);
            }
        }
        let mut pending = Vec::new();
        for name in names {
            let service = docker
                .inspect_service(name, None::<InspectServiceOptions>)
                .await
                .with_context(|| format!("failed to inspect the service {name}"))?;
            match service.update_status.as_ref().and_then(|u| u.state) {
                Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED)
                | Some(ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED)
                | Some(ServiceUpdateStatusStateEnum::PAUSED) => {
                    let message = service
                        .update_status
                        .and_then(|u| u.message)
                        .unwrap_or_default();
                    let failed: Vec<String> = all
                        .iter()
                        .filter(|t| !t.error.is_empty())
                        .map(|t| format!("{} on {}: {}", t.task, t.node, t.error))
                        .collect();
                    bail!(
                        "the update of {name} failed and the engine rolled it back: {message}\n{}run `elior logs --dir {}` to see why the new tasks did not become healthy",
                        failed.iter().map(|l| format!("{l}\n")).collect::<String>(),
                        owner.dir.display()
                    );
                }
                Some(ServiceUpdateStatusStateEnum::UPDATING)
                | Some(ServiceUpdateStatusStateEnum::ROLLBACK_STARTED) => {
                    pending.push(format!("{name} is updating"));
                    continue;
                }
                _ => {}
            }
            let spec = service.spec.unwrap_or_default();
            let image = spec::image(&spec);
            let role = spec::role(&spec);
            let wanted = spec::wanted(&spec) as usize;
            let mine: Vec<&TaskInfo> = all.iter().filter(|t| t.service == role).collect();
            let ready = mine
                .iter()
                .filter(|t| t.is_ready() && task_runs(t, &image))
                .count();
            let extra = mine.iter().filter(|t| t.desired != "running").count();
            if ready < wanted || extra > 0 {
                pending.push(format!("{name}: {ready} of {wanted} tasks ready"));
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the swarm did not converge within {}s: {}\nrun `elior status --dir {}` and `elior logs --dir {}` to see why",
                timeout.as_secs(),
                pending.join("; "),
                owner.dir.display(),
                owner.dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether a task runs the service's current image (the task list shows the image label
/// for current tasks, the id for others).
fn task_runs(task: &TaskInfo, image_id: &str) -> bool {
    !task.image.starts_with("sha256:") || task.image == image_id
}

fn describe(t: &TaskInfo) -> String {
    let mut s = t.state.clone();
    if !t.health.is_empty() {
        s.push_str(&format!(" ({})", t.health));
    }
    if t.desired != "running" {
        s.push_str(&format!(", stopping ({})", t.desired));
    }
    if !t.error.is_empty() {
        s.push_str(&format!(": {}", t.error));
    }
    s
}

/// How many versions of each secret are kept: the one in use and the one before it, which
/// the engine's rollback (to the previous spec) needs.
pub const KEEP_SECRET_VERSIONS: usize = 2;

/// Removes old secret versions: per kind, all but the newest [`KEEP_SECRET_VERSIONS`],
/// never one a service uses now (the engine refuses that anyway).
pub async fn prune_secrets(docker: &Docker, owner: &Owner) -> Result<Vec<String>> {
    let mut used = std::collections::BTreeSet::new();
    for service in services(docker, owner).await? {
        for s in service
            .spec
            .and_then(|s| s.task_template)
            .and_then(|t| t.container_spec)
            .and_then(|c| c.secrets)
            .unwrap_or_default()
        {
            if let Some(name) = s.secret_name {
                used.insert(name);
            }
        }
    }
    let list = docker
        .list_secrets(Some(ListSecretsOptions {
            filters: Some(stack_filter(owner)),
        }))
        .await
        .context("failed to list swarm secrets")?;
    type Version = (Option<bollard::models::BollardDate>, String, String);
    let mut by_kind: BTreeMap<String, Vec<Version>> = BTreeMap::new();
    for s in list {
        let (Some(id), Some(spec)) = (s.id, s.spec) else {
            continue;
        };
        let kind = spec
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SECRET))
            .cloned()
            .unwrap_or_default();
        let created = s.created_at;
        by_kind
            .entry(kind)
            .or_default()
            .push((created, spec.name.unwrap_or_default(), id));
    }
    let mut removed = Vec::new();
    for versions in by_kind.values_mut() {
        versions.sort_by(|a, b| b.0.cmp(&a.0));
        for (_, name, id) in versions.iter().skip(KEEP_SECRET_VERSIONS) {
            if !used.contains(name) && absent_as_ok(docker.delete_secret(id).await).is_ok() {
                removed.push(name.clone());
            }
        }
    }
    Ok(removed)
}

/// The image a stack service runs now, by its role (`api`…): (id, reference), or `None`
/// when the stack runs no such service. For `elior cert`, which rolls nginx alone.
pub async fn running_image(
    docker: &Docker,
    owner: &Owner,
    role: &str,
) -> Result<Option<(String, String)>> {
    Ok(services(docker, owner)
        .await?
        .into_iter()
        .filter_map(|s| s.spec)
        .find(|s| spec::role(s) == role)
        .map(|s| (spec::image(&s), spec::label(&s, LABEL_IMAGE))))
}

/// Removes the stack's secrets of `kinds` that no service's current spec uses: the
/// certificate and key a renewal replaced (issue 21), once nginx serves the new pair.
/// Unlike [`prune_secrets`] it keeps no previous version: rolling back to a replaced
/// certificate is not wanted, and its private key should not linger in the raft log.
pub async fn remove_unused_secrets(
    docker: &Docker,
    owner: &Owner,
    kinds: &[&str],
) -> Result<Vec<String>> {
    let used: std::collections::BTreeSet<String> = services(docker, owner)
        .await?
        .into_iter()
        .filter_map(|s| s.spec?.task_template?.container_spec?.secrets)
        .flatten()
        .filter_map(|s| s.secret_name)
        .collect();
    let list = docker
        .list_secrets(Some(ListSecretsOptions {
            filters: Some(stack_filter(owner)),
        }))
        .await
        .context("failed to list swarm secrets")?;
    let mut removed = Vec::new();
    for secret in list {
        let (Some(id), Some(spec)) = (secret.id, secret.spec) else {
            continue;
        };
        let name = spec.name.unwrap_or_default();
        let kind = spec
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SECRET))
            .map(String::as_str)
            .unwrap_or_default();
        if kinds.contains(&kind) && !used.contains(&name) {
            absent_as_ok(docker.delete_secret(&id).await)
                .with_context(|| format!("failed to remove the secret {name}"))?;
            removed.push(name);
        }
    }
    Ok(removed)
}

/// What `down` removed.
#[derive(Debug, Default, Serialize)]
pub struct Removed {
    pub services: Vec<String>,
    /// Containers of the single-host stack a migration stopped (`down --purge`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub secrets: Vec<String>,
    pub volumes: Vec<String>,
}

/// Removes the stack's services and network; with `purge`, its secrets and volumes too
/// (after the tasks' containers are gone, which hold them).
pub async fn remove(
    docker: &Docker,
    owner: &Owner,
    purge: bool,
    timeout: Duration,
) -> Result<Removed> {
    let mut removed = Removed::default();
    for service in services(docker, owner).await? {
        let Some(name) = service.spec.and_then(|s| s.name) else {
            continue;
        };
        absent_as_ok(docker.delete_service(&name).await)
            .with_context(|| format!("failed to remove the service {name}"))?;
        removed.services.push(name);
    }
    // The tasks' containers go after their services; the network and volumes are in use
    // until then.
    let deadline = Instant::now() + timeout;
    loop {
        let left = super::stack_containers(docker, owner).await?;
        let tasks_left = left
            .iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key("com.docker.swarm.task.id"))
            })
            .count();
        if tasks_left == 0 {
            break;
        }
        if Instant::now() >= deadline {
            bail!("{tasks_left} task containers of the stack are still running after {}s\nrun `docker ps --filter label={LABEL_STACK_ID}={}`", timeout.as_secs(), owner.id);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for network in docker
        .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
            filters: Some(stack_filter(owner)),
        }))
        .await
        .context("failed to list networks")?
    {
        let Some(name) = network.name else { continue };
        if network.driver.as_deref() != Some("overlay") {
            continue;
        }
        // The engine may still be detaching the last task: retry until the deadline.
        loop {
            match absent_as_ok(docker.remove_network(&name).await) {
                Ok(()) => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| format!("failed to remove network {name}"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
        removed.networks.push(name);
    }
    if purge {
        for (name, id) in secrets(docker, owner).await? {
            absent_as_ok(docker.delete_secret(&id).await)
                .with_context(|| format!("failed to remove the secret {name}"))?;
            removed.secrets.push(name);
        }
        for name in volumes(docker, owner).await? {
            loop {
                match absent_as_ok(
                    docker
                        .remove_volume(
                            &name,
                            None::<bollard::query_parameters::RemoveVolumeOptions>,
                        )
                        .await,
                ) {
                    Ok(()) => break,
                    Err(e) if Instant::now() >= deadline => {
                        return Err(e).with_context(|| format!("failed to remove volume {name}"))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
                }
            }
            removed.volumes.push(name);
        }
    }
    Ok(removed)
}

/// The stack's named volumes (the database's), by label.
pub async fn volumes(docker: &Docker, owner: &Owner) -> Result<Vec<String>> {
    let list = docker
        .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
            filters: Some(stack_filter(owner)),
        }))
        .await
        .context("failed to list volumes")?;
    Ok(list
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect())
}

/// The replica count of a replicated service; `None` when the stack runs no such
/// service (or it is global).
pub async fn replicas(docker: &Docker, name: &str) -> Result<Option<u32>> {
    let service = absent_as_none(
        docker
            .inspect_service(name, None::<InspectServiceOptions>)
            .await,
    )
    .with_context(|| format!("failed to inspect the service {name}"))?;
    Ok(service
        .and_then(|s| s.spec)
        .and_then(|s| s.mode)
        .and_then(|m| m.replicated)
        .and_then(|r| r.replicas)
        .map(|n| n.clamp(0, i64::from(u32::MAX)) as u32))
}

/// The running task container of `service` on this node.
async fn task_container(docker: &Docker, service: &str) -> Result<String> {
    let running = docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            filters: Some(super::label_filter(&[(
                "com.docker.swarm.service.name",
                service,
            )])),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("failed to list the tasks of {service}"))?;
    running
        .iter()
        .find_map(|c| c.id.clone())
        .ok_or_else(|| anyhow!("no task of the swarm service {service} runs on this node\nrun elior on the node that runs it (`elior status` names it), or wait until `elior status` shows it running"))
}

/// Runs `cmd` in the running task container of `service` on this node, its stdout
/// written to `sink` as it comes (a dump may be larger than memory); returns the exit
/// code and stderr.
pub async fn exec_in_service(
    docker: &Docker,
    service: &str,
    cmd: &[&str],
    sink: &mut (dyn std::io::Write + Send),
) -> Result<(i64, String)> {
    exec_attached(docker, service, cmd, None, sink).await
}

/// [`exec_in_service`] with `input` streamed into the command's stdin, which is closed
/// at its end (a restore of a dump larger than memory); its stdout goes with stderr into
/// the text returned.
pub async fn exec_in_service_with_input(
    docker: &Docker,
    service: &str,
    cmd: &[&str],
    input: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
) -> Result<(i64, String)> {
    let mut stdout = Vec::new();
    let (code, mut errors) = exec_attached(docker, service, cmd, Some(input), &mut stdout).await?;
    errors.insert_str(0, &String::from_utf8_lossy(&stdout));
    Ok((code, errors))
}

async fn exec_attached(
    docker: &Docker,
    service: &str,
    cmd: &[&str],
    input: Option<&mut (dyn tokio::io::AsyncRead + Unpin + Send)>,
    sink: &mut (dyn std::io::Write + Send),
) -> Result<(i64, String)> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let container = task_container(docker, service).await?;
    let created = docker
        .create_exec(
            &container,
            bollard::models::ExecConfig {
                attach_stdin: Some(input.is_some()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("failed to run {} in {service}", cmd[0]))?;
    let mut errors = String::new();
    let mut fed = Ok(());
    if let bollard::exec::StartExecResults::Attached {
        mut output,
        input: mut stdin,
    } = docker
        .start_exec(&created.id, None)
        .await
        .with_context(|| format!("failed to run {} in {service}", cmd[0]))?
    {
        // Fed and drained at once: a command that writes while it reads must not block
        // on a full pipe. Shutting the write half down is the stdin's end of file.
        let feed = async {
            if let Some(input) = input {
                tokio::io::copy(input, &mut stdin).await?;
                stdin.shutdown().await?;
            }
            std::io::Result::Ok(())
        };
        let drain = async {
            while let Some(chunk) = output.next().await {
                match chunk.with_context(|| {
                    format!("failed to read the output of {} in {service}", cmd[0])
                })? {
                    bollard::container::LogOutput::StdOut { message } => {
                        sink.write_all(&message)
                            .context("failed to write the output")?
                    }
                    other => errors.push_str(&other.to_string()),
                }
            }
            anyhow::Ok(())
        };
        let (feed, drained) = tokio::join!(feed, drain);
        drained?;
        fed = feed;
    }
    let inspect = docker
        .inspect_exec(&created.id)
        .await
        .with_context(|| format!("failed to read the exit code of {} in {service}", cmd[0]))?;
    let code = inspect.exit_code.unwrap_or(-1);
    // A command that stopped reading (it failed) closes its stdin: its exit code and
    // stderr say why, not the broken pipe.
    if code == 0 {
        fed.with_context(|| format!("failed to send the input of {} in {service}", cmd[0]))?;
    }
    Ok((code, errors))
}
