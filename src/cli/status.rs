//! `elior status`: what the engine runs for a stack, one line per container.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::config::model::Stack;
use crate::docker;

/// Show the stack's containers and whether each is running and healthy.
///
/// For each: service, container, image, state, health, uptime, restart count and
/// published ports.
///
/// In swarm mode (MODE=swarm): every task of every service, its node and its health.
///
/// Exits 1 when a container is not running or not healthy, so scripts can use it as a
/// check. --json prints the same facts as a JSON array.
///
/// Examples:
///     elior status --dir /srv/elior
///     elior status --json | jq '.[] | select(.health != "healthy")'
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct StatusArgs {}

#[derive(Debug, Serialize)]
struct ContainerStatus {
    service: String,
    container: String,
    image: String,
    state: String,
    health: String,
    started_at: String,
    uptime_seconds: Option<i64>,
    restart_count: i64,
    ports: Vec<String>,
}

impl StatusArgs {
    /// With --json: a JSON array instead of a table.
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let stack = Stack::load(ctx.dir())?;
        if super::swarm::is_swarm(&stack) && stack.owner().is_some() {
            return super::swarm::status(&stack, ctx.json);
        }
        let config = &stack.config;
        let Some(owner) = stack.owner() else {
            if ctx.json {
                outln!("[]");
            } else {
                outln!("{}", stack.no_id_hint());
            }
            return Ok(ExitCode::from(super::EXIT_CHECK_FAILED));
        };
        let project = owner.project.clone();
        let runtime = docker::runtime()?;
        let statuses = runtime.block_on(collect(&owner))?;
        if ctx.json {
            outln!("{}", serde_json::to_string_pretty(&statuses)?);
        } else if statuses.is_empty() {
            outln!(
                "{project}: no containers (run `{}`)",
                ctx.command(&format!("deploy {}", config.domain.as_str()))
            );
        } else {
            out!("{}", render_table(&statuses));
        }
        let all_fine = !statuses.is_empty()
            && statuses
                .iter()
                .all(|s| s.state == "running" && (s.health.is_empty() || s.health == "healthy"));
        Ok(if all_fine {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(super::EXIT_CHECK_FAILED)
        })
    }
}

/// One line per container, columns aligned however long a name is (issue 20).
fn render_table(statuses: &[ContainerStatus]) -> String {
    let mut table = super::table::new(
        &[
            "SERVICE",
            "CONTAINER",
            "IMAGE",
            "STATE",
            "HEALTH",
            "UPTIME",
            "RESTARTS",
            "PORTS",
        ],
        &["UPTIME", "RESTARTS"],
    );
    for s in statuses {
        table.add_row(vec![
            s.service.clone(),
            s.container.clone(),
            s.image.clone(),
            s.state.clone(),
            if s.health.is_empty() {
                "-".into()
            } else {
                s.health.clone()
            },
            s.uptime_seconds
                .map(human_duration)
                .unwrap_or_else(|| "-".into()),
            s.restart_count.to_string(),
            s.ports.join(", "),
        ]);
    }
    super::table::render(&table)
}

async fn collect(owner: &docker::Owner) -> Result<Vec<ContainerStatus>> {
    let docker = docker::connect().await?;
    let mut statuses = Vec::new();
    for summary in docker::stack_containers(&docker, owner).await? {
        let name = docker::summary_name(&summary);
        let Some(inspect) = docker::inspect_if_present(&docker, &name).await? else {
            continue;
        };
        let state = inspect.state.clone().unwrap_or_default();
        let started_at = state.started_at.clone().unwrap_or_default();
        let running = state.running.unwrap_or(false);
        let mut health = docker::health_status(&state);
        if running
            && health == "starting"
            && docker::health::gate_passes(&docker, &name, &inspect).await
        {
            health = "healthy".to_string();
        }
        let uptime_seconds = chrono::DateTime::parse_from_rfc3339(&started_at)
            .ok()
            .filter(|_| running)
            .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds());
        let mut ports: Vec<String> = summary
            .ports
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                p.public_port.map(|public| {
                    format!("{}:{public}->{}", p.ip.unwrap_or_default(), p.private_port)
                })
            })
            .collect();
        ports.sort();
        ports.dedup();
        statuses.push(ContainerStatus {
            service: summary
                .labels
                .as_ref()
                .and_then(|l| l.get(docker::LABEL_SERVICE))
                .cloned()
                .unwrap_or_default(),
            container: name,
            image: inspect.config.and_then(|c| c.image).unwrap_or_default(),
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            health,
            started_at,
            uptime_seconds,
            restart_count: inspect.restart_count.unwrap_or(0),
            ports,
        });
    }
    statuses.sort_by(|a, b| (&a.service, &a.container).cmp(&(&b.service, &b.container)));
    Ok(statuses)
}

fn human_duration(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(service: &str, container: &str, image: &str) -> ContainerStatus {
        ContainerStatus {
            service: service.into(),
            container: container.into(),
            image: image.into(),
            state: "running".into(),
            health: "healthy".into(),
            started_at: String::new(),
            uptime_seconds: Some(4000),
            restart_count: 0,
            ports: vec!["0.0.0.0:443->443/tcp".into()],
        }
    }

    // Issue 20: a name past the old fixed width (32) pushed every later column right.
    #[test]
    fn the_table_stays_aligned_with_long_names() {
        let text = render_table(&[
            status(
                "api",
                "elior-a-very-long-domain-example-com-1234abcd-api-0123abcd",
                "elior-fitness-api:0123456789abcdef0123",
            ),
            status("nginx", "elior-x-nginx", "nginx:stable"),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for column in ["IMAGE", "STATE", "HEALTH", "PORTS"] {
            let at = lines[0].find(column).unwrap();
            for line in &lines[1..] {
                assert!(
                    line[..at].ends_with(' ') && !line[at..].starts_with(' '),
                    "{column} is not aligned:\n{text}"
                );
            }
        }
    }
}
