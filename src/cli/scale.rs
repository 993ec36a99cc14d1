//! `elior scale api=N`: the number of API tasks of a swarm stack (issue 21).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;

use crate::config::model::Stack;
use crate::config::stack::parse_replicas;
use crate::docker;
use crate::plan::swarm::Names;

/// Set the number of API tasks of a swarm stack and wait until that many run healthy.
///
/// The engine starts or stops tasks; nginx follows them through Docker's DNS. A later
/// `elior deploy` or `update` returns to API_REPLICAS in .env.production: change that
/// too to keep the new count. --json prints the tasks afterwards, as `status --json`.
///
/// Examples:
///     elior scale api=5 --dir /srv/elior
///     elior scale api=2 --dir /srv/elior --json
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ScaleArgs {
    /// SERVICE=N; only the api service scales (nginx runs one task per node, postgres one)
    #[arg(value_name = "api=N")]
    target: String,
    /// Seconds the new tasks get to become healthy
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    timeout: u64,
}

/// Parses `api=N`.
pub fn parse_target(text: &str) -> Result<u32> {
    let (service, count) = text
        .split_once('=')
        .ok_or_else(|| anyhow!("{text:?} is not SERVICE=N; use api=3"))?;
    if service != "api" {
        bail!("{service:?} does not scale: only api does (nginx runs one task per node, postgres one)\nuse api=N");
    }
    parse_replicas(count).map_err(|m| anyhow!("api={count}: {m}"))
}

impl ScaleArgs {
    /// With --json: the tasks afterwards, as `status --json` prints them.
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let replicas = parse_target(&self.target)?;
        let stack = Stack::load(ctx.dir())?;
        if !super::swarm::is_swarm(&stack) {
            return Err(crate::deploy::swarm::not_swarm(&stack.dir));
        }
        let owner = crate::deploy::swarm::require_owner(&stack)?;
        let _lock = crate::lock::DeployLock::acquire(&stack.dir, "elior scale")?;
        let api = Names(&owner.project).service("api");
        let progress = super::deploy::Progress::new(ctx);
        let options = crate::deploy::Options {
            health_timeout: Duration::from_secs(self.timeout),
            ..Default::default()
        };
        docker::runtime()?.block_on(async {
            let docker = docker::connect().await?;
            docker::swarm::scale(&docker, &api, replicas).await?;
            crate::deploy::swarm::converge(
                &docker,
                &owner,
                std::slice::from_ref(&api),
                &options,
                &progress,
            )
            .await
        })?;
        let _ = crate::lock::audit(
            &stack.dir,
            "scale",
            serde_json::json!({ "service": "api", "replicas": replicas }),
        );
        if ctx.json {
            return super::swarm::status(&stack, true);
        }
        outln!("{api}: {replicas} tasks running");
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_api_scales_within_bounds() {
        assert_eq!(parse_target("api=5").unwrap(), 5);
        assert_eq!(
            parse_target("nginx=2").unwrap_err().to_string(),
            "\"nginx\" does not scale: only api does (nginx runs one task per node, postgres one)\nuse api=N"
        );
        assert!(parse_target("api=0")
            .unwrap_err()
            .to_string()
            .contains("from 1 to 64"));
        assert!(parse_target("api")
            .unwrap_err()
            .to_string()
            .contains("api=3"));
    }
}
