//! `elior down`: stops and removes the stack's containers and networks, keeping its data.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::config::model::Stack;
use crate::docker;

/// Stop and remove the stack's containers and networks.
///
/// Only resources labelled with this stack's project are touched. The stack directory is
/// kept as it is: data/ (the database), uploads/, nginx/ssl/ (certificates) and
/// .env.production stay, and `elior deploy` brings the stack back with them.
///
/// Example:
///     elior down --dir /srv/elior
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct DownArgs {
    /// Swarm mode: also remove the stack's secrets and its database volume
    #[arg(long)]
    purge: bool,
}

impl DownArgs {
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let dir = ctx.dir();
        let stack = Stack::load(dir)?;
        let _lock = crate::lock::DeployLock::acquire(dir, "elior down")?;
        if super::swarm::is_swarm(&stack) {
            return super::swarm::down(&stack, self.purge, ctx.json);
        }
        if self.purge {
            anyhow::bail!(
                "--purge removes a swarm stack's secrets and volume; this stack runs on one host, and its data stays in {}",
                dir.display()
            );
        }
        let Some(owner) = stack.owner() else {
            // No id: nothing on the engine is this directory's (issue 14: `down` of a
            // never-deployed `ka-test` removed the running `ka.test`).
            outln!("{}", stack.no_id_hint());
            return Ok(ExitCode::SUCCESS);
        };
        let project = owner.project.clone();
        let runtime = docker::runtime()?;
        let (containers, networks) = runtime.block_on(async {
            let docker = docker::connect().await?;
            docker::apply::remove_stack(&docker, &owner).await
        })?;
        for c in &containers {
            outln!("removed container {c}");
        }
        for n in &networks {
            outln!("removed network {n}");
        }
        if containers.is_empty() && networks.is_empty() {
            outln!("{project} has no containers or networks; nothing to remove");
        }
        outln!(
            "kept in {}: data/ (database), uploads/, nginx/ssl/ (certificates), .env.production",
            dir.display()
        );
        let _ = crate::lock::audit(
            dir,
            "down",
            serde_json::json!({ "containers": containers, "networks": networks }),
        );
        Ok(ExitCode::SUCCESS)
    }
}
