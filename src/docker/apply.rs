//! Carries a container plan out on the engine: networks, containers and bind mounts as
//! the compose file says, every resource labelled with its project, service and config
//! hash, names derived from the project. The API is replaced blue/green: the new
//! container starts beside the old one, must become healthy, then nginx is switched to it
//! with `nginx -t` and a graceful reload, and only then is the old one drained and stopped.
//! A new container that fails is removed and the old one keeps serving.
//!
//! It follows the plan it is given and never decides what should exist.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, HostConfigLogConfig,
    NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::{absent_as_ok, health, Owner, LABEL_CONFIG_HASH, LABEL_CONFIG_PARTS, LABEL_SERVICE};
use crate::plan::containers::{
    network_name, Change, ContainerSpec, NetworkSpec, ObservedContainer, Plan, API_SERVICE,
    PROXY_SERVICE,
};

/// How long the old API keeps running after nginx switched away from it, so requests that
/// old nginx workers had accepted but not yet passed on still reach it (a window of
/// milliseconds); then it gets SIGTERM and finishes what it is serving (up to 10 s).
pub const DRAIN: Duration = Duration::from_millis(500);
/// Seconds a container gets to stop gracefully before it is killed.
pub const STOP_GRACE_SECS: i32 = 10;

/// Reports progress of long steps; the CLI shows a spinner or plain lines.
pub trait Steps {
    fn begin(&mut self, what: &str);
    fn end(&mut self);
}

/// Everything of one stack's containers the plan needs, read from the engine.
pub async fn observe(docker: &Docker, owner: &Owner) -> Result<Vec<ObservedContainer>> {
    let summaries = super::stack_containers(docker, owner).await?;
    observe_summaries(docker, summaries, false).await
}

/// [`observe`] for listed containers; `legacy` marks those of an earlier release that the
/// deploy adopts (replaces so that they carry the stack id).
pub async fn observe_summaries(
    docker: &Docker,
    summaries: Vec<bollard::models::ContainerSummary>,
    legacy: bool,
) -> Result<Vec<ObservedContainer>> {
    let mut observed = Vec::new();
    for summary in summaries {
        let name = super::summary_name(&summary);
        let labels = summary.labels.unwrap_or_default();
        let Some(inspect) = super::inspect_if_present(docker, &name).await? else {
            continue;
        };
        let state = inspect.state.unwrap_or_default();
        observed.push(ObservedContainer {
            name,
            service: labels.get(LABEL_SERVICE).cloned().unwrap_or_default(),
            config_hash: labels.get(LABEL_CONFIG_HASH).cloned().unwrap_or_default(),
            config_parts: labels.get(LABEL_CONFIG_PARTS).cloned().unwrap_or_default(),
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            health: super::health_status(&state),
            exit_code: state.exit_code.unwrap_or(0),
            legacy,
        });
    }
    observed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(observed)
}

/// Engine names of the stack's networks.
pub async fn observe_networks(docker: &Docker, owner: &Owner) -> Result<Vec<String>> {
    Ok(super::stack_networks(docker, owner)
        .await?
        .into_iter()
        .filter_map(|n| n.name)
        .collect())
}

/// The image ID a reference points at, or `None` when the engine lacks it.
pub async fn image_id(docker: &Docker, reference: &str) -> Result<Option<String>> {
    Ok(super::absent_as_none(docker.inspect_image(reference).await)
        .with_context(|| format!("failed to inspect image {reference}"))?
        .and_then(|i| i.id))
}

fn labels_for(owner: &Owner, spec: &ContainerSpec) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    labels.extend(super::owner_labels(owner));
    labels.insert(LABEL_SERVICE.into(), spec.service.clone());
    labels.insert(LABEL_CONFIG_HASH.into(), spec.config_hash());
    labels.insert(LABEL_CONFIG_PARTS.into(), spec.config_parts());
    labels
}

fn endpoint(spec: &ContainerSpec, name: &str) -> EndpointSettings {
    EndpointSettings {
        aliases: Some(vec![spec.service.clone(), name.to_string()]),
        ..Default::default()
    }
}

/// The engine's create body for a spec.
pub fn create_body(owner: &Owner, spec: &ContainerSpec, name: &str) -> ContainerCreateBody {
    let project = owner.project.as_str();
    let mut exposed = HashMap::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for port in &spec.ports {
        let key = format!("{}/tcp", port.container_port);
        exposed.insert(key.clone(), HashMap::new());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .as_mut()
            .unwrap()
            .push(PortBinding {
                host_ip: Some(port.host_ip.clone()).filter(|s| !s.is_empty()),
                host_port: Some(port.host_port.to_string()),
            });
    }
    let restart = spec.restart.as_deref().map(|r| RestartPolicy {
        name: Some(match r {
            "always" => RestartPolicyNameEnum::ALWAYS,
            "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
            "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
            _ => RestartPolicyNameEnum::NO,
        }),
        maximum_retry_count: None,
    });
    // API 1.41 accepts one network at create; the others are connected before start.
    let first_network = spec
        .networks
        .first()
        .map(|n| HashMap::from([(network_name(project, n), endpoint(spec, name))]));
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user: spec.user.clone(),
        labels: Some(labels_for(owner, spec)),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck: spec.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: h.interval_ns,
            timeout: h.timeout_ns,
            retries: Some(h.retries),
            start_period: h.start_period_ns,
            start_interval: None,
        }),
        host_config: Some(HostConfig {
            binds: Some(spec.binds.clone()),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            restart_policy: restart,
            readonly_rootfs: Some(spec.read_only),
            security_opt: (!spec.security_opt.is_empty()).then(|| spec.security_opt.clone()),
            cap_drop: (!spec.cap_drop.is_empty()).then(|| spec.cap_drop.clone()),
            log_config: spec.log_driver.as_ref().map(|d| HostConfigLogConfig {
                typ: Some(d.clone()),
                config: Some(spec.log_options.clone().into_iter().collect()),
            }),
            network_mode: spec.networks.first().map(|n| network_name(project, n)),
            sysctls: (!spec.sysctls.is_empty()).then(|| spec.sysctls.clone().into_iter().collect()),
            ..Default::default()
        }),
        networking_config: first_network.map(|endpoints| NetworkingConfig {
            endpoints_config: Some(endpoints),
        }),
        ..Default::default()
    }
}

/// Creates a network of the stack.
pub async fn create_network(docker: &Docker, owner: &Owner, spec: &NetworkSpec) -> Result<()> {
    let name = network_name(&owner.project, &spec.name);
    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    labels.extend(super::owner_labels(owner));
    docker
        .create_network(NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            internal: Some(spec.internal),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .with_context(|| format!("failed to create network {name}"))?;
    Ok(())
}

/// Creates (not starts) a container, connected to all its networks.
pub async fn create_container(
    docker: &Docker,
    owner: &Owner,
    spec: &ContainerSpec,
    name: &str,
) -> Result<()> {
    let project = owner.project.as_str();
    for bind in &spec.binds {
        let host = PathBuf::from(bind.split(':').next().unwrap_or_default());
        if !host.exists() {
            std::fs::create_dir_all(&host).with_context(|| {
                format!(
                    "failed to create {} for a bind mount of {name}",
                    host.display()
                )
            })?;
        }
    }
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.to_string()),
                ..Default::default()
            }),
            create_body(owner, spec, name),
        )
        .await
        .with_context(|| format!("failed to create container {name} from {}", spec.image))?;
    for network in spec.networks.iter().skip(1) {
        let net = network_name(project, network);
        docker
            .connect_network(
                &net,
                NetworkConnectRequest {
                    container: Some(name.to_string()),
                    endpoint_config: Some(endpoint(spec, name)),
                },
            )
            .await
            .with_context(|| format!("failed to connect {name} to network {net}"))?;
    }
    Ok(())
}

pub async fn start(docker: &Docker, name: &str) -> Result<()> {
    docker
        .start_container(
            name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .with_context(|| format!("failed to start container {name}"))
}

/// Stops a container (SIGTERM, or the image's stop signal, then SIGKILL after the
/// grace) and keeps it; one already stopped or gone is fine.
pub async fn stop(docker: &Docker, name: &str) -> Result<()> {
    absent_as_ok(
        docker
            .stop_container(
                name,
                Some(StopContainerOptions {
                    t: Some(STOP_GRACE_SECS),
                    signal: None,
                }),
            )
            .await,
    )
    .or_else(|e| match e {
        // 304: already stopped.
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        } => Ok(()),
        e => Err(e),
    })
    .with_context(|| format!("failed to stop container {name}"))
}

/// Stops (see [`stop`]) and removes a container; one that is already gone is fine.
pub async fn stop_and_remove(docker: &Docker, name: &str) -> Result<()> {
    stop(docker, name).await?;
    absent_as_ok(
        docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await,
    )
    .with_context(|| format!("failed to remove container {name}"))
}

/// Runs `cmd` in a running container; returns its exit code and combined output.
pub async fn exec(docker: &Docker, container: &str, cmd: &[&str]) -> Result<(i64, String)> {
    exec_with_input(docker, container, cmd, None).await
}

/// [`exec`], with `input` written to the command's standard input (then closed): how a
/// secret reaches a command without appearing in its argv.
pub async fn exec_with_input(
    docker: &Docker,
    container: &str,
    cmd: &[&str],
    input: Option<&[u8]>,
) -> Result<(i64, String)> {
    let created = docker
        .create_exec(
            container,
            bollard::models::ExecConfig {
                attach_stdin: Some(input.is_some()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("failed to run {cmd:?} in {container}"))?;
    let mut output = String::new();
    if let bollard::exec::StartExecResults::Attached {
        output: mut stream,
        input: mut stdin,
    } = docker
        .start_exec(&created.id, None)
        .await
        .with_context(|| format!("failed to run {cmd:?} in {container}"))?
    {
        if let Some(bytes) = input {
            use tokio::io::AsyncWriteExt;
            stdin
                .write_all(bytes)
                .await
                .with_context(|| format!("failed to write to {cmd:?} in {container}"))?;
            let _ = stdin.shutdown().await;
        }
        while let Some(chunk) = stream.next().await {
            output.push_str(
                &chunk
                    .with_context(|| format!("failed to read {cmd:?} output in {container}"))?
                    .to_string(),
            );
        }
    }
    let inspect = docker
        .inspect_exec(&created.id)
        .await
        .with_context(|| format!("failed to read the exit code of {cmd:?} in {container}"))?;
    Ok((inspect.exit_code.unwrap_or(-1), output))
}

/// What the proxy runs from: where its config is on the host and inside the container,
/// and how to render it for a given upstream host.
pub struct ProxyConfig<'a> {
    pub host_path: PathBuf,
    pub container_path: String,
    /// nginx.conf with the API upstream at this host: the service name `api` (the steady
    /// state, what `elior render` writes) or one container's name (during a swap).
    pub render: &'a dyn Fn(&str) -> Result<String>,
}

/// Checks the proxy's configuration and reloads it gracefully, in one `nginx -s reload`
/// (see [`super::proxy::reload`], the one reload that keeps the restart policy armed).
pub async fn test_and_reload_proxy(
    docker: &Docker,
    container: &str,
    config_path: &str,
) -> Result<()> {
    super::proxy::reload(docker, container, config_path).await
}

/// Points the running proxy's upstream at `upstream_host` with a checked, graceful
/// reload. Nothing happens when the file already says so. If `nginx -t` refuses the new
/// file, the previous one is put back and nginx keeps running on it.
async fn switch_proxy(
    docker: &Docker,
    nginx: &str,
    proxy: &ProxyConfig<'_>,
    upstream_host: &str,
) -> Result<bool> {
    let contents = (proxy.render)(upstream_host)?;
    let previous = std::fs::read_to_string(&proxy.host_path).ok();
    if previous.as_deref() == Some(contents.as_str()) {
        return Ok(false);
    }
    crate::tls::files::write_atomic(&proxy.host_path, contents.as_bytes(), 0o644)?;
    if let Err(err) = test_and_reload_proxy(docker, nginx, &proxy.container_path).await {
        if let Some(previous) = previous {
            crate::tls::files::write_atomic(&proxy.host_path, previous.as_bytes(), 0o644)?;
        }
        return Err(err.context(format!("{nginx} keeps its previous configuration")));
    }
    Ok(true)
}

/// What a plan is carried out against: the stack's desired resources.
pub struct Target<'a> {
    pub owner: &'a Owner,
    pub networks: &'a [NetworkSpec],
    /// The services, in any order.
    pub specs: &'a [ContainerSpec],
    pub proxy: &'a ProxyConfig<'a>,
    /// How long a new container gets to become healthy.
    pub health_timeout: Duration,
}

/// Carries out `plan`.
///
/// The API swap, when nginx keeps running: pin nginx to the current API container by
/// name (so nothing reaches the new one before it is healthy, although both answer to
/// `api`), start the new one and wait until it is healthy, switch nginx to it by name,
/// drain and stop the old one, then point nginx back at `api`, which only the new
/// container answers to now. Every switch is `nginx -t` plus a graceful reload.
pub async fn execute(
    docker: &Docker,
    target: &Target<'_>,
    plan: &Plan,
    steps: &mut dyn Steps,
) -> Result<()> {
    let Target {
        owner,
        networks,
        specs,
        proxy,
        health_timeout,
    } = *target;
    for step in plan.networks.iter().filter(|n| n.create) {
        let spec = networks
            .iter()
            .find(|n| network_name(&owner.project, &n.name) == step.network)
            .ok_or_else(|| anyhow!("network {} is not in the compose file", step.network))?;
        steps.begin(&format!("creating network {}", step.network));
        create_network(docker, owner, spec).await?;
        steps.end();
    }

    let nginx_step = plan.services.iter().find(|s| s.service == PROXY_SERVICE);
    // The running nginx that stays, if any: it is switched by reloads, never restarted.
    let kept_nginx = nginx_step
        .filter(|s| s.change == Change::Keep)
        .map(|s| s.container.clone());
    let spec_of = |service: &str| specs.iter().find(|s| s.service == service);
    let mut retired_api: Option<String> = None;
    // API containers an interrupted swap left beside the current one. They answer to
    // `api` too, so they go while nginx is pinned to the current container by name:
    // once nginx resolves `api` again, none is left to send a request to.
    let mut leftover_apis: Vec<String> = plan
        .remove
        .iter()
        .filter(|r| r.service == API_SERVICE)
        .map(|r| r.container.clone())
        .collect();
    for step in &plan.services {
        let spec = spec_of(&step.service)
            .ok_or_else(|| anyhow!("service {} has no spec", step.service))?;
        match (&step.change, step.service.as_str()) {
            (Change::Keep, _) => {}
            (change, API_SERVICE) => {
                let old = match change {
                    Change::Replace { old, .. } if old != &step.container => Some(old.clone()),
                    Change::Replace { old, .. } => {
                        // Same name (a stopped container of the same config): make room.
                        stop_and_remove(docker, old).await?;
                        None
                    }
                    _ => None,
                };
                let swap = kept_nginx.as_deref().zip(old.as_deref());
                if let Some((nginx, old)) = swap {
                    steps.begin(&format!("pinning nginx to {old}"));
                    switch_proxy(docker, nginx, proxy, old).await?;
                    steps.end();
                }
                steps.begin(&format!(
                    "starting {} and waiting until it is healthy",
                    step.container
                ));
                stop_and_remove(docker, &step.container).await?;
                create_container(docker, owner, spec, &step.container).await?;
                start(docker, &step.container).await?;
                crate::backup::fault::point("deploy:api-started");
                if let Err(err) =
                    health::wait_healthy(docker, &step.container, health_timeout).await
                {
                    steps.end();
                    let _ = stop_and_remove(docker, &step.container).await;
                    if let Some(nginx) = &kept_nginx {
                        let _ = switch_proxy(docker, nginx, proxy, API_SERVICE).await;
                    }
                    let kept = old
                        .as_deref()
                        .map(|o| format!("\nthe previous container {o} keeps serving"))
                        .unwrap_or_default();
                    return Err(err.context(format!(
                        "the new api container failed; it was removed{kept}"
                    )));
                }
                steps.end();
                if let Some((nginx, old)) = swap {
                    steps.begin(&format!("switching nginx to {}", step.container));
                    if let Err(err) = switch_proxy(docker, nginx, proxy, &step.container).await {
                        steps.end();
                        let _ = stop_and_remove(docker, &step.container).await;
                        let _ = switch_proxy(docker, nginx, proxy, API_SERVICE).await;
                        return Err(err.context(format!("{old} keeps serving")));
                    }
                    steps.end();
                    crate::backup::fault::point("deploy:nginx-switched");
                    let mut retiring = vec![old.to_string()];
                    retiring.append(&mut leftover_apis);
                    retire_apis(docker, &retiring, steps).await?;
                } else {
                    retired_api = old;
                }
            }
            (change, _) => {
                if let Change::Replace { old, .. } = change {
                    steps.begin(&format!("stopping {old}"));
                    stop_and_remove(docker, old).await?;
                    steps.end();
                }
                if step.service == PROXY_SERVICE {
                    let contents = (proxy.render)(API_SERVICE)?;
                    if std::fs::read_to_string(&proxy.host_path).ok().as_deref()
                        != Some(contents.as_str())
                    {
                        crate::tls::files::write_atomic(
                            &proxy.host_path,
                            contents.as_bytes(),
                            0o644,
                        )?;
                    }
                }
                steps.begin(&format!("starting {}", step.container));
                stop_and_remove(docker, &step.container).await?;
                create_container(docker, owner, spec, &step.container).await?;
                start(docker, &step.container).await?;
                // A proxy with a broken config exits at once; catch it here, with its logs.
                tokio::time::sleep(Duration::from_millis(300)).await;
                health::wait_healthy(docker, &step.container, health_timeout).await?;
                steps.end();
            }
        }
    }

    let kept_api = plan
        .services
        .iter()
        .find(|s| s.service == API_SERVICE && s.change == Change::Keep);
    if let (Some(nginx), Some(api), false) = (&kept_nginx, kept_api, leftover_apis.is_empty()) {
        // A swap that was interrupted after the current container started: it must pass
        // the health gate before nginx is pinned to it.
        steps.begin(&format!("waiting until {} is healthy", api.container));
        let healthy = health::wait_healthy(docker, &api.container, health_timeout).await;
        steps.end();
        healthy.with_context(|| {
            format!(
                "{} keeps serving; run `elior update` again to replace {}",
                leftover_apis.join(", "),
                api.container
            )
        })?;
        steps.begin(&format!("pinning nginx to {}", api.container));
        switch_proxy(docker, nginx, proxy, &api.container).await?;
        steps.end();
        retire_apis(docker, &std::mem::take(&mut leftover_apis), steps).await?;
    }
    if let Some(nginx) = &kept_nginx {
        // Back to the steady state (`api`), or a changed nginx.conf taking effect.
        let reason = plan.reload_proxy.as_deref().unwrap_or("nginx.conf changed");
        steps.begin(&format!("reloading nginx ({reason})"));
        switch_proxy(docker, nginx, proxy, API_SERVICE).await?;
        steps.end();
    }
    if let Some(old) = retired_api {
        steps.begin(&format!("stopping {old}"));
        stop_and_remove(docker, &old).await?;
        steps.end();
    }
    for removal in &plan.remove {
        if removal.service == API_SERVICE && !leftover_apis.contains(&removal.container) {
            continue; // retired while nginx was pinned
        }
        steps.begin(&format!(
            "removing {} ({})",
            removal.container, removal.reason
        ));
        stop_and_remove(docker, &removal.container).await?;
        steps.end();
    }
    Ok(())
}

/// Drains and removes API containers nginx no longer sends requests to. Requests old
/// nginx workers already accepted still reach them during the pause; then each gets
/// SIGTERM and finishes its own.
async fn retire_apis(docker: &Docker, retiring: &[String], steps: &mut dyn Steps) -> Result<()> {
    steps.begin(&format!("draining and stopping {}", retiring.join(", ")));
    tokio::time::sleep(DRAIN).await;
    for name in retiring {
        stop_and_remove(docker, name).await?;
    }
    steps.end();
    Ok(())
}

/// Stops and removes every container and network `owner` owns; returns their names.
pub async fn remove_stack(docker: &Docker, owner: &Owner) -> Result<(Vec<String>, Vec<String>)> {
    let mut containers = Vec::new();
    let mut summaries = super::stack_containers(docker, owner).await?;
    // The proxy first, so no request reaches an API that is going away.
    summaries.sort_by_key(|s| {
        s.labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SERVICE))
            .map(|s| s != PROXY_SERVICE)
    });
    for summary in summaries {
        let name = super::summary_name(&summary);
        stop_and_remove(docker, &name).await?;
        containers.push(name);
    }
    let mut networks = Vec::new();
    for network in super::stack_networks(docker, owner).await? {
        let Some(name) = network.name else { continue };
        absent_as_ok(docker.remove_network(&name).await)
            .with_context(|| format!("failed to remove network {name}"))?;
        networks.push(name);
    }
    Ok((containers, networks))
}
