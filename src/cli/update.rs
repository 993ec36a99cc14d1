//! `elior update`: deploy with the stack's own settings (the original runbook's "rebuild
//! and restart", without the downtime).

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::deploy::{deploy_stack, DeployOptions, ImageSource};

/// Redeploy the stack with what changed, swapping containers without downtime.
///
/// Uses the stack's own DOMAIN: rebuilds the API image from this binary if it changed,
/// applies changes to .env.production or docker-compose.prod.yml, and swaps containers
/// without downtime. Nothing changed: "up to date".
///
/// Example:
///     elior update --dir /srv/elior
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct UpdateArgs {
    #[command(flatten)]
    options: DeployOptions,
}

impl UpdateArgs {
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        deploy_stack(
            ctx,
            &self.options,
            None,
            "elior update",
            "update",
            ImageSource::Build,
        )
    }
}
