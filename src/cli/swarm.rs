//! The swarm-mode side of the stack commands (issue 21): `deploy`/`update` and `rollback`
//! when MODE=swarm (or --swarm), and the swarm views of `status`, `logs` and `down`. The
//! commands' own files call in here after loading the stack, so their flags and `--json`
//! stay one definition for both modes.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::deploy::{DeployOptions, ImageSource, Progress};
use crate::config::model::Stack;
use crate::config::stack::Mode;
use crate::deploy::swarm::{self as deploy_swarm, SwarmReport};
use crate::docker;

/// Whether the stack in DIR runs on a swarm (MODE=swarm).
pub fn is_swarm(stack: &Stack) -> bool {
    stack.config.mode == Mode::Swarm
}

/// The API a restore stops and starts when the stack in `dir` runs on a swarm (issue
/// 21): its api service, scaled to 0 and back to its count. `None` for a single-host
/// stack (or a directory that holds none).
pub fn restore_api(
    dir: &Path,
    health_timeout: Duration,
    quiet: bool,
) -> Result<Option<Box<dyn crate::backup::restore::ApiControl>>> {
    let Ok(stack) = Stack::load(dir) else {
        return Ok(None);
    };
    if !is_swarm(&stack) {
        return Ok(None);
    }
    let owner = deploy_swarm::require_owner(&stack)?;
    let api = docker::swarm_api::SwarmApi::connect(&owner, health_timeout, quiet)?;
    Ok(Some(Box::new(api)))
}

/// `deploy`/`update` (and `rollback --to`) in swarm mode.
pub fn deploy(
    ctx: &super::Context,
    options: &DeployOptions,
    mut stack: Stack,
    command: &str,
    action: &str,
    source: ImageSource,
) -> Result<ExitCode> {
    let dir = stack.dir.clone();
    let lock = if options.dry_run {
        None
    } else {
        Some(crate::lock::DeployLock::acquire(&dir, command)?)
    };
    if !options.dry_run && stack.config.mode != Mode::Swarm {
        deploy_swarm::record_swarm_mode(&dir)?;
    }
    let mut progress = Progress::new(ctx);
    let owner = crate::deploy::owner(&mut stack, options.dry_run, &progress)?;
    let started = Instant::now();
    let result = docker::runtime()?.block_on(deploy_swarm::run(
        &stack,
        &owner,
        &options.deploy_options(),
        source,
        &mut progress,
    ));
    finish(ctx, result, &dir, command, action, started, lock)
}

fn finish(
    ctx: &super::Context,
    result: Result<SwarmReport>,
    dir: &Path,
    command: &str,
    action: &str,
    started: Instant,
    lock: Option<crate::lock::DeployLock>,
) -> Result<ExitCode> {
    match result {
        Ok(SwarmReport::DryRun(plan)) => {
            Ok(super::deploy::print_dry_run(&plan.render(), plan.is_noop()))
        }
        Ok(SwarmReport::Done(outcome)) => {
            let api_tasks = outcome
                .tasks
                .iter()
                .filter(|t| t.service == "api" && t.state == "running")
                .count();
            match &outcome.proof {
                None => outln!(
                    "up to date: {} runs {} ({api_tasks} API tasks) at {}",
                    outcome.project,
                    outcome.api_image,
                    outcome.url
                ),
                Some((status, body)) => {
                    outln!(
                        "deployed {} on the swarm: {}, {api_tasks} of {} API tasks running behind nginx",
                        outcome.project, outcome.api_image, outcome.replicas
                    );
                    outln!("  database: {}", outcome.database);
                    outln!("  {}/health -> {status} {body}", outcome.url);
                }
            }
            super::deploy::print_certificate(&outcome.certificate, ctx);
            let _ = crate::lock::audit(
                dir,
                action,
                serde_json::json!({
                    "command": command,
                    "mode": "swarm",
                    "result": if outcome.up_to_date { "up to date" } else { "ok" },
                    "api_image": outcome.api_image,
                    "replicas": outcome.replicas,
                    "seconds": started.elapsed().as_secs_f64(),
                    "certificate": outcome.certificate.describe(),
                }),
            );
            drop(lock);
            // As on a single host: the stack serves, but a failed CA step is a failed check.
            Ok(match outcome.certificate {
                crate::deploy::CertStep::Failed { .. } => ExitCode::from(super::EXIT_CHECK_FAILED),
                _ => ExitCode::SUCCESS,
            })
        }
        Err(err) => {
            let _ = crate::lock::audit(
                dir,
                action,
                serde_json::json!({ "command": command, "mode": "swarm", "result": "failed", "error": format!("{err:#}") }),
            );
            Err(err)
        }
    }
}

/// `status` in swarm mode: every task, its node, its health. Exit 1 when a task that
/// should run does not run healthy, or a service has fewer tasks than it wants.
pub fn status(stack: &Stack, json: bool) -> Result<ExitCode> {
    let owner = deploy_swarm::require_owner(stack)?;
    // A restore holding the API at 0 tasks, or killed there: said before the tasks.
    let restoring = docker::swarm_api::interrupted(&stack.dir);
    if let Some(restore) = &restoring {
        eprintln!("note: {restore}");
    }
    let (rows, wanted) = docker::runtime()?.block_on(async {
        let docker = docker::connect().await?;
        let tasks = docker::swarm::tasks(&docker, &owner).await?;
        let services = docker::swarm::services(&docker, &owner).await?;
        let wanted: Vec<(String, i64)> = services
            .into_iter()
            .filter_map(|s| s.spec)
            .map(|spec| {
                (
                    docker::swarm::spec::role(&spec),
                    docker::swarm::spec::wanted(&spec),
                )
            })
            .filter(|(role, _)| !role.is_empty())
            .collect();
        anyhow::Ok((tasks, wanted))
    })?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        outln!(
            "{}: no services on the swarm (run `elior deploy {} --swarm`)",
            owner.project,
            stack.config.domain.as_str()
        );
    } else {
        let mut table = super::table::new(
            &[
                "SERVICE", "TASK", "ID", "NODE", "IMAGE", "STATE", "HEALTH", "ERROR",
            ],
            &[],
        );
        for r in &rows {
            let state = if r.desired == "running" {
                r.state.clone()
            } else {
                format!("{}->{}", r.state, r.desired)
            };
            let health = if r.health.is_empty() { "-" } else { &r.health };
            table.add_row(vec![
                r.service.as_str(),
                &r.task,
                &r.id,
                &r.node,
                &r.image,
                &state,
                health,
                &r.error,
            ]);
        }
        out!("{}", super::table::render(&table));
    }
    let unhealthy = rows.iter().any(|r| r.desired == "running" && !r.is_ready());
    let short = wanted.iter().any(|(role, replicas)| {
        let running = rows
            .iter()
            .filter(|r| &r.service == role && r.state == "running" && r.desired == "running")
            .count() as i64;
        running < *replicas
    });
    Ok(
        if unhealthy || short || wanted.is_empty() || restoring.is_some() {
            ExitCode::from(super::EXIT_CHECK_FAILED)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// `logs` in swarm mode: the last `tail` lines (all by default) of every task on this node (of `service`
/// when given), each prefixed by its task name.
pub fn logs(stack: &Stack, service: Option<&str>, tail: Option<u64>) -> Result<ExitCode> {
    use futures_util::StreamExt;
    let owner = deploy_swarm::require_owner(stack)?;
    docker::runtime()?.block_on(async {
        let docker = docker::connect().await?;
        let tasks = docker::swarm::tasks(&docker, &owner).await?;
        for t in tasks
            .iter()
            .filter(|t| service.is_none_or(|s| s == t.service))
        {
            let Some(id) = &t.container_id else {
                outln!("{} | (task on node {}, not this one)", t.task, t.node);
                continue;
            };
            let mut stream = docker.logs(
                id,
                Some(bollard::query_parameters::LogsOptions {
                    stdout: true,
                    stderr: true,
                    tail: tail.map_or("all".to_string(), |n| n.to_string()),
                    ..Default::default()
                }),
            );
            while let Some(item) = stream.next().await {
                let Ok(output) = item else { break };
                let text = output.to_string();
                for line in text.lines() {
                    outln!("{}.{} | {line}", t.task, &t.id[..t.id.len().min(6)]);
                }
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `down` in swarm mode: removes the services and the network; the database volume, the
/// secrets and the stopped containers of the single-host stack a migration left (issue
/// 21) stay unless `purge`.
pub fn down(stack: &Stack, purge: bool, json: bool) -> Result<ExitCode> {
    let owner = deploy_swarm::require_owner(stack)?;
    let (removed, kept) = docker::runtime()?.block_on(async {
        let docker = docker::connect().await?;
        let mut removed =
            docker::swarm::remove(&docker, &owner, purge, Duration::from_secs(120)).await?;
        // The task containers are gone by now: what is left is the single-host stack's.
        let left: Vec<String> = docker::stack_containers(&docker, &owner)
            .await?
            .iter()
            .map(docker::summary_name)
            .collect();
        if !purge {
            return anyhow::Ok((removed, left));
        }
        let (containers, networks) = docker::apply::remove_stack(&docker, &owner).await?;
        removed.containers = containers;
        removed.networks.extend(networks);
        anyhow::Ok((removed, Vec::new()))
    })?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&removed)?);
    } else {
        for s in &removed.services {
            outln!("removed service {s}");
        }
        for c in &removed.containers {
            outln!("removed container {c} (the single-host stack before migrate-to-swarm)");
        }
        for c in &kept {
            outln!("kept the stopped container {c} (the single-host stack before migrate-to-swarm; `elior down --purge` removes it)");
        }
        for n in &removed.networks {
            outln!("removed network {n}");
        }
        for s in &removed.secrets {
            outln!("removed secret {s}");
        }
        for v in &removed.volumes {
            outln!("removed volume {v}");
        }
        if !purge {
            outln!("kept the database volume and the secrets (`elior down --purge` removes them)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
