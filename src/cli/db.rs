//! `elior db`: the API's database from the shell (issue 16): its schema version, its
//! migrations, and the copy of a SQLite database into PostgreSQL.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::config::ServeConfig;
use crate::db::pg::PgUrl;
use crate::db::{migrations, Db, Target};

/// Inspect and migrate the API's database, or copy a SQLite database into PostgreSQL
#[derive(Subcommand)]
pub enum DbCommand {
    Status(StatusArgs),
    Migrate(MigrateArgs),
    Copy(CopyArgs),
}

impl DbCommand {
    /// Warnings only (the global logging set-up): a connection retry says so on stderr.
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        match self {
            DbCommand::Status(a) => a.run(ctx),
            DbCommand::Migrate(a) => a.run(ctx),
            DbCommand::Copy(a) => a.run(ctx),
        }
    }
}

/// Where DATABASE_URL (from the environment or --env-file) points.
#[derive(Args)]
pub struct Source {
    /// Read settings (DATABASE_URL) from this env file
    #[arg(long, value_name = "PATH")]
    env_file: Option<PathBuf>,
}

impl Source {
    fn target(&self) -> Result<(Target, Duration)> {
        let raw = crate::config::model::read_settings(self.env_file.as_deref())?;
        let config = ServeConfig::from_raw(&raw, None).context("invalid configuration")?;
        let target = match config.postgres {
            Some(url) => Target::Postgres(url),
            None => Target::Sqlite(config.database_path),
        };
        Ok((target, config.database_connect_retry))
    }
}

/// Show the database's applied schema version and the migrations still pending
///
///
/// Exit codes: 0 up to date, 1 migrations are pending, 2 the database can't be read.
/// Example:
///     DATABASE_URL=postgresql://elior:PASSWORD@db:5432/elior elior db status --json
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct StatusArgs {
    #[command(flatten)]
    source: Source,
}

#[derive(serde::Serialize)]
struct Status {
    backend: crate::db::Backend,
    database: String,
    applied_version: i64,
    latest_version: i64,
    pending: Vec<PendingMigration>,
}

#[derive(serde::Serialize)]
struct PendingMigration {
    version: i64,
    name: &'static str,
}

fn status_of(db: &Db, target: &Target) -> Result<Status> {
    let backend = db.backend();
    let (applied, pending) =
        db.blocking(|c| Ok((migrations::applied_version(c)?, migrations::pending(c)?)))?;
    Ok(Status {
        backend,
        database: target.to_string(),
        applied_version: applied,
        latest_version: migrations::latest_for(backend),
        pending: pending
            .into_iter()
            .map(|m| PendingMigration {
                version: m.version,
                name: m.name,
            })
            .collect(),
    })
}

/// What `db migrate` (and its dry run) says when the schema is current.
fn print_nothing_to_apply(status: &Status) {
    outln!(
        "{} is at schema version {}: nothing to apply",
        status.database,
        status.applied_version
    );
}

fn print_pending(pending: &[PendingMigration]) {
    for m in pending {
        outln!("  {:>4}  {}", m.version, m.name);
    }
}

impl StatusArgs {
    fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let (target, retry) = self.source.target()?;
        let t = target.clone();
        let status = Db::session(&target, false, retry, move |db| status_of(db, &t))?;
        if ctx.json {
            outln!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            outln!("backend:  {}", status.backend.as_str());
            outln!("database: {}", status.database);
            let newer = if status.applied_version > status.latest_version {
                " (newer than this build: a later release migrated it)"
            } else {
                ""
            };
            outln!(
                "schema:   version {} of {}{newer}",
                status.applied_version,
                status.latest_version
            );
            if status.pending.is_empty() {
                outln!("pending:  none");
            } else {
                outln!("pending:  {} migration(s)", status.pending.len());
                print_pending(&status.pending);
            }
        }
        Ok(if status.pending.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }
}

/// Apply the pending schema migrations (elior serve also applies them at start)
///
///
/// PostgreSQL applies them all in one transaction, under an advisory lock (replicas
/// starting together apply each once); SQLite applies each in its own transaction.
/// --dry-run lists them and changes nothing.
/// Example:
///     DATABASE_URL=postgresql://elior:PASSWORD@db:5432/elior elior db migrate --dry-run
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct MigrateArgs {
    #[command(flatten)]
    source: Source,
    /// List the migrations that would be applied; change nothing
    #[arg(long)]
    dry_run: bool,
}

impl MigrateArgs {
    fn run(self, _ctx: &super::Context) -> Result<ExitCode> {
        let (target, retry) = self.source.target()?;
        if self.dry_run {
            // A SQLite file that does not exist yet would get every migration.
            let status = match &target {
                Target::Sqlite(p) if !p.exists() => Status {
                    backend: crate::db::Backend::Sqlite,
                    database: target.to_string(),
                    applied_version: 0,
                    latest_version: migrations::latest_version(),
                    pending: migrations::MIGRATIONS
                        .iter()
                        .map(|m| PendingMigration {
                            version: m.version,
                            name: m.name,
                        })
                        .collect(),
                },
                _ => {
                    let t = target.clone();
                    Db::session(&target, false, retry, move |db| status_of(db, &t))?
                }
            };
            if status.pending.is_empty() {
                print_nothing_to_apply(&status);
            } else {
                outln!(
                    "would apply {} migration(s) to {} (now at version {}):",
                    status.pending.len(),
                    status.database,
                    status.applied_version
                );
                print_pending(&status.pending);
            }
            return Ok(ExitCode::SUCCESS);
        }
        let t = target.clone();
        let before = Db::session(&target, false, retry, move |db| {
            Ok(db.blocking(|c| migrations::applied_version(c))?)
        })
        .or_else(|e| match &t {
            // A new SQLite file: migrate creates it.
            Target::Sqlite(p) if !p.exists() => Ok(0),
            _ => Err(e),
        })?;
        let t = target.clone();
        let status = Db::session(&target, true, retry, move |db| status_of(db, &t))?;
        if status.applied_version == before {
            print_nothing_to_apply(&status);
        } else {
            outln!(
                "migrated {} from schema version {before} to {}",
                status.database,
                status.applied_version
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Copy a SQLite database into PostgreSQL (moving a single-host stack to N replicas)
///
///
/// Every table is copied, identity sequences are set past the copied ids (deleted ids
/// included, so none is ever reused), and each table's row count and checksum are
/// compared with the source afterwards. The copy is ATOMIC: it runs in one PostgreSQL
/// transaction, so a failure or a mismatch leaves the target exactly as it was (re-run
/// it after fixing the cause). The target's schema is migrated first. A target that
/// already holds rows is refused unless --force, which replaces them. The source is read
/// in one read transaction, so a running server can stay up (writes made after the copy
/// starts are not in it: stop the API for the final copy).
///
/// Exit codes: 0 copied and verified, 2 nothing was copied (the error says why).
/// Example:
///     elior db copy --from sqlite:/srv/elior/data/elior_fitness.db \
///         --to postgresql://elior:PASSWORD@db.internal:5432/elior
///     DATABASE_URL=postgresql://elior:PASSWORD@db.internal:5432/elior \
///         elior db copy --from sqlite:/srv/elior/data/elior_fitness.db
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct CopyArgs {
    /// The SQLite database: sqlite:PATH (or sqlite:///PATH as in DATABASE_URL)
    #[arg(long, value_name = "sqlite:PATH")]
    from: String,
    /// The PostgreSQL database: postgresql://USER:PASSWORD@HOST:PORT/DATABASE; taken
    /// from DATABASE_URL when not given (keeps the password out of `ps`)
    #[arg(long, value_name = "URL", env = "DATABASE_URL", hide_env_values = true)]
    to: String,
    /// Replace the rows of a target that is not empty
    #[arg(long)]
    force: bool,
}

fn sqlite_source(from: &str) -> Result<PathBuf> {
    let path = if from.starts_with("sqlite:///") {
        crate::config::sqlite_path(from).map_err(|m| anyhow::anyhow!("--from: {m}"))?
    } else if let Some(rest) = from.strip_prefix("sqlite:") {
        PathBuf::from(rest)
    } else {
        bail!(
            "--from {:?}: not a SQLite source; use sqlite:PATH, e.g. sqlite:/srv/elior/data/elior_fitness.db",
            crate::db::pg::redact(from)
        );
    };
    if path.as_os_str().is_empty() {
        bail!("--from names no file; use sqlite:PATH");
    }
    Ok(path)
}

impl CopyArgs {
    fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let path = sqlite_source(&self.from)?;
        let url = match PgUrl::parse(&self.to) {
            Some(Ok(url)) => url,
            Some(Err(m)) => bail!("--to: {m}"),
            None => bail!(
                "--to {:?}: not a PostgreSQL URL; use postgresql://USER:PASSWORD@HOST:5432/DATABASE",
                crate::db::pg::redact(&self.to)
            ),
        };
        let report = crate::db::copy::copy_file(&path, &url, self.force)?;
        if ctx.json {
            outln!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            for t in &report {
                outln!("{:<22} {:>8} rows  sha256 {}", t.table, t.rows, t.checksum);
            }
            let rows: usize = report.iter().map(|t| t.rows).sum();
            outln!(
                "copied and verified {rows} rows in {} tables into {}",
                report.len(),
                url.target()
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
