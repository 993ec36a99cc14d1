//! `elior logs`: the stack's container logs, streamed from the engine.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use futures_util::StreamExt;

use crate::config::model::Stack;
use crate::docker;

/// Print the logs of the stack's containers (all, or one service's).
///
/// Examples:
///     elior logs --dir /srv/elior api --tail 100
///     elior logs nginx -f --since 10m
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct LogsArgs {
    /// Only this service (api or nginx)
    service: Option<String>,
    /// Keep streaming new lines
    #[arg(short, long)]
    follow: bool,
    /// Lines from the end of each log [default: all]
    #[arg(long, value_name = "N")]
    tail: Option<u64>,
    /// Only lines newer than this: 30s, 10m, 2h, or a Unix time
    #[arg(long, value_name = "T")]
    since: Option<String>,
}

impl LogsArgs {
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let stack = Stack::load(ctx.dir())?;
        if super::swarm::is_swarm(&stack) {
            return super::swarm::logs(&stack, self.service.as_deref(), self.tail);
        }
        let config = &stack.config;
        let owner = stack
            .owner()
            .ok_or_else(|| anyhow::anyhow!("{}", stack.no_id_hint()))?;
        let project = owner.project.clone();
        let since = match &self.since {
            None => 0,
            Some(text) => parse_since(text, chrono::Utc::now().timestamp())?,
        };
        let runtime = docker::runtime()?;
        runtime.block_on(async {
            let docker = docker::connect().await?;
            let mut containers: Vec<(String, String)> = docker::stack_containers(&docker, &owner)
                .await?
                .into_iter()
                .map(|s| {
                    let service = s
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(docker::LABEL_SERVICE))
                        .cloned()
                        .unwrap_or_default();
                    (service, docker::summary_name(&s))
                })
                .filter(|(service, _)| self.service.as_ref().is_none_or(|want| want == service))
                .collect();
            containers.sort();
            if containers.is_empty() {
                match &self.service {
                    Some(s) => bail!("{project} has no {s} container\nservices are api and nginx; run `{}` to see what runs", ctx.command("status")),
                    None => bail!("{project} has no containers\nrun `{}` first", ctx.command(&format!("deploy {}", config.domain.as_str()))),
                }
            }
            let prefix = containers.len() > 1;
            let mut streams = futures_util::stream::SelectAll::new();
            for (service, name) in containers {
                let options = bollard::query_parameters::LogsOptions {
                    follow: self.follow,
                    stdout: true,
                    stderr: true,
                    since: since as i32,
                    tail: self.tail.map_or("all".to_string(), |n| n.to_string()),
                    ..Default::default()
                };
                let label = if prefix { format!("{service} | ") } else { String::new() };
                streams.push(Box::pin(docker.logs(&name, Some(options)).map(move |item| (label.clone(), name.clone(), item))));
            }
            let stdout = std::io::stdout();
            while let Some((label, name, item)) = streams.next().await {
                let chunk = item.with_context(|| format!("failed to read the logs of {name}"))?;
                let text = chunk.to_string();
                let mut out = stdout.lock();
                for line in text.lines() {
                    // A closed pipe (`| head`) ends the command quietly.
                    if writeln!(out, "{label}{line}").is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(())
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

/// `30s`, `10m`, `2h`, `1d` before `now`, or a Unix time.
fn parse_since(text: &str, now: i64) -> Result<i64> {
    if let Ok(unix) = text.parse::<i64>() {
        return Ok(unix);
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => 0,
    };
    match number.parse::<i64>() {
        Ok(n) if scale > 0 && n >= 0 => Ok(now - n * scale),
        _ => bail!("--since {text:?} is not a duration (30s, 10m, 2h, 1d) or a Unix time"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_durations_and_unix_times() {
        assert_eq!(parse_since("10m", 1000).unwrap(), 400);
        assert_eq!(parse_since("1700000000", 0).unwrap(), 1_700_000_000);
        assert!(parse_since("soon", 0).is_err());
    }
}
