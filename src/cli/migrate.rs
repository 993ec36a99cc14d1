//! `elior migrate-to-swarm`: moves a running single-host stack onto the swarm this
//! engine manages (issue 21, item 5). The steps are `plan::migrate`'s; `deploy::migrate`
//! carries them out.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;

use super::deploy::Progress;
use crate::config::model::Stack;
use crate::deploy::migrate::Migration;
use crate::deploy::swarm::require_owner;

/// Move a running single-host stack onto Docker Swarm, keeping every user, workout and upload
///
/// Set DATABASE_URL=postgresql://… (an empty database) and UPLOADS_URL=s3://… (with
/// S3_ENDPOINT and the AWS_* keys) in .env.production first: they name where the swarm
/// keeps its data. Then, in order, each step done once even across re-runs:
///   1. back up the single-host stack (as `elior backup`);
///   2. stop its containers (kept, not removed);
///   3. copy its SQLite database into DATABASE_URL (as `elior db copy`, verified);
///   4. copy its uploads into the bucket;
///   5. deploy the swarm stack (as `elior deploy --swarm`) and prove HTTPS /health
///      through the swarm's nginx;
///   6. record MODE=swarm.
///
/// If step 3, 4 or 5 fails, the swarm services are removed and the single-host
/// containers start again. If elior is killed, run the command again: it resumes. The
/// stopped single-host containers stay until `elior down --purge`.
///
/// Nothing is stopped when the engine is not a swarm manager, DATABASE_URL or UPLOADS_URL
/// is missing, or the database or the bucket cannot be reached.
///
/// Example:
///     elior migrate-to-swarm --dir /srv/elior --dry-run
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct MigrateArgs {
    /// Print the steps (to do, or done by an earlier run) and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Seconds the swarm's tasks get to become healthy
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    timeout: u64,
}

impl MigrateArgs {
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let dir = ctx.dir();
        let stack = Stack::load(dir)?;
        let _lock = if self.dry_run {
            None
        } else {
            Some(crate::lock::DeployLock::acquire(
                dir,
                "elior migrate-to-swarm",
            )?)
        };
        let owner = require_owner(&stack)?;
        let mut migration = Migration::observe(&stack, owner)?;
        migration.check()?;
        let steps = migration.plan();
        if steps.is_empty() {
            outln!(
                "{} runs on the swarm already (MODE=swarm): nothing to migrate",
                stack.dir.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if self.dry_run {
            if ctx.json {
                outln!("{}", serde_json::to_string_pretty(&steps)?);
            } else {
                out!("{}", crate::plan::migrate::render(&steps));
                outln!("dry run: nothing was changed");
            }
            return Ok(ExitCode::SUCCESS);
        }
        let mut progress = Progress::new(ctx);
        let options = crate::deploy::Options {
            dry_run: false,
            health_timeout: Duration::from_secs(self.timeout),
            self_signed: false,
            cert: None,
            key: None,
        };
        let started = Instant::now();
        let result = migration.run(&options, ctx.quiet, &mut progress);
        let _ = crate::lock::audit(
            dir,
            "migrate-to-swarm",
            match &result {
                Ok(summary) => {
                    serde_json::json!({ "result": "ok", "summary": summary, "seconds": started.elapsed().as_secs_f64() })
                }
                Err(e) => serde_json::json!({ "result": "failed", "error": format!("{e:#}") }),
            },
        );
        let summary = result?;
        if ctx.json {
            outln!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            outln!(
                "migrated {} to the swarm in {:.0}s: {} serves from its swarm stack",
                stack.dir.display(),
                started.elapsed().as_secs_f64(),
                summary.url
            );
            if let Some(id) = &summary.backup {
                outln!("  backup before the migration: {id}");
            }
            outln!("  the single-host containers are stopped and kept; `elior down --purge` removes them");
        }
        Ok(ExitCode::SUCCESS)
    }
}
