//! `elior restore`: put a backup back over a stack.

use std::fs;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::backup::restore::{self, ApiControl, NoStackRunning};
use crate::backup::stack_files::{self, EnvPutBack};
use crate::backup::{BackupSettings, Reporter};
use crate::docker::control::StackApi;
use crate::tls::settings::CertSettings;

/// Restore a backup's database and uploads over the stack.
///
/// The backup is verified first (checksums and quick_check); a bad one is refused and
/// nothing is touched. Then elior takes the deploy lock, takes a safety backup of the
/// current state, stops the API if it runs, swaps the restored files in atomically
/// (removing stale -wal/-shm files), and starts the API again and waits until it is
/// healthy. The API is the deployed stack's container when this directory's stack runs
/// on this host's Docker Engine; on a bare directory the files are restored in place.
/// If a step fails after the stop, the pre-restore state is put back.
///
/// On PostgreSQL (DATABASE_URL=postgresql://...), a backup's `pg_dump -Fc` file goes back
/// with `pg_restore --clean --if-exists --single-transaction --no-owner` after the API is
/// stopped: all or nothing, a failure leaves the database as it was. A SQLite backup
/// into a PostgreSQL stack (or a dump into a SQLite one) is refused; to move SQLite data
/// to PostgreSQL, use `elior db copy`.
///
/// Swarm mode (MODE=swarm): the dump goes back with the same pg_restore, run in the
/// postgres service's task (the dump streamed into it through the engine, the password
/// read from the swarm secret) or against an external DATABASE_URL. The API is stopped by
/// scaling its service to 0 and waiting until its tasks are gone, and scaled back to its
/// count after. A restore killed meanwhile is recorded in .elior/swarm-restore.json:
/// `elior status` says so, and the next deploy, update, rollback, backup or restore
/// scales the API back. Uploads on S3 are only listed in a backup: the restore checks
/// that the objects it lists are still in the bucket and names the missing ones; it
/// cannot bring a deleted object back. A SQLite backup is refused: move a single-host
/// stack onto the swarm with `elior migrate-to-swarm` (or `elior db copy`).
///
/// The backup's .env.production, certificate and ACME account come back where the stack
/// has none; an env file already in DIR is never replaced (a different one is kept, and
/// the backup's is written beside it as .env.production.backup-ID).
///
/// Disaster recovery: with --from s3://BUCKET/PREFIX, the backup is first downloaded from
/// the bucket (BACKUP_OFFSITE of the old host) into BACKUP_DIR, then verified and restored
/// as above. On a new host, DIR may be empty: give the bucket's S3_ENDPOINT, S3_REGION,
/// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment (or bring the old
/// .env.production), and --identity for an encrypted repository. An unencrypted backup
/// carries the env file without its secrets: the S3 keys come from the environment and
/// JWT_SECRET is new (users sign in again). A DIR without .elior/stack.json becomes the
/// stack the bucket names; then run `elior deploy`.
///
/// Asks for confirmation unless --yes is given (and refuses without it when not on a
/// terminal).
///
/// Examples:
///     elior restore --dir /srv/elior              the newest backup, after confirming
///     elior restore 20261129_020000 --yes         a given backup, no questions
///     elior restore latest --identity key.txt     an encrypted one (BACKUP_RECIPIENTS)
///     S3_ENDPOINT=https://s3.example.com S3_REGION=eu-west-1 AWS_ACCESS_KEY_ID=... \
///     AWS_SECRET_ACCESS_KEY=... elior restore --from s3://gym-backups/prod --dir /srv/elior --yes
///                                                 the newest offsite backup, on a new host
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct RestoreArgs {
    /// The backup id (like 20261129_020000) or `latest`
    #[arg(default_value = "latest")]
    id: String,
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    yes: bool,
    /// An age identity file (`age-keygen -o FILE`) that opens an encrypted backup
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Download the backup from this bucket first (s3://BUCKET/PREFIX, with the S3_* and
    /// AWS_* keys of the environment or of DIR/.env.production)
    #[arg(long, value_name = "S3_URL")]
    from: Option<String>,
}

impl RestoreArgs {
    /// With --json: what was restored.
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let env_file = ctx.dir().join(crate::backup::settings::ENV_FILE);
        let had_env_file = env_file.is_file();
        let settings = settings_for(ctx.dir(), self.from.as_deref())?;
        crate::backup::owner::check(&settings)?;
        crate::backup::recover_interrupted_restore(ctx.dir())?;
        if !self.yes {
            confirm(&self.id, &settings)?;
        }
        let mut reporter = Reporter::new(ctx.quiet);
        let id = match (&self.from, &settings.offsite) {
            (Some(_), Some(offsite)) => crate::backup::offsite::fetch_for_restore(
                &settings,
                offsite,
                &self.id,
                &mut reporter,
            )?,
            _ => self.id.clone(),
        };
        // The env file first: it says where the database, the uploads and the backups go.
        let (id, carried) =
            stack_files::of_backup(&settings.backup_dir, &id, self.identity.as_deref())?;
        let env = match carried.iter().find(|(path, _)| path == stack_files::ENV_FILE) {
            Some((_, bytes)) => Some(stack_files::put_back_env(
                ctx.dir(),
                &id,
                bytes,
                &|key| std::env::var(key).ok(),
            )?),
            None if had_env_file => None,
            None => bail!(
                "backup {id} does not carry {} (backups taken before elior carried it do not)\ncopy the old stack's .env.production into {} and run this again",
                crate::backup::settings::ENV_FILE,
                ctx.dir().display()
            ),
        };
        let settings = if had_env_file {
            settings
        } else {
            // The restored env file may put the backups elsewhere than the defaults this
            // command downloaded them to: they follow it.
            let restored = settings_for(ctx.dir(), self.from.as_deref())?;
            move_backups(&settings.backup_dir, &restored.backup_dir)?;
            restored
        };
        let mut api = api_control(&settings, ctx.quiet)?;
        let restored = restore::restore(
            &settings,
            &id,
            self.identity.as_deref(),
            api.as_mut(),
            &mut reporter,
        );
        // The env file came back before the full verification, so a refusal's "nothing
        // was changed" must not hide that one file was written.
        let mut report = restored.map_err(|e| match &env {
            Some(EnvPutBack::Written { path, .. }) => e.context(format!(
                "{} was written from the backup before this check",
                path.display()
            )),
            Some(EnvPutBack::KeptDifferent { backup_copy, .. }) => e.context(format!(
                "the backup's env file was written beside yours, as {}, before this check",
                backup_copy.display()
            )),
            _ => e,
        })?;
        report.env_file = env;
        if ctx.json {
            outln!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(ExitCode::SUCCESS);
        }
        outln!(
            "restored backup {} (taken {})",
            report.backup,
            report.created_at
        );
        if let Some(db) = &report.database {
            let version = report
                .schema_version
                .map_or("unknown".to_string(), |v| v.to_string());
            outln!("  database  {} (schema version {version})", db.display());
        }
        if let Some(target) = &report.postgres {
            outln!("  database  postgresql {target} (pg_restore, one transaction)");
        }
        if let (Some(uploads), Some(stats)) = (&report.uploads, &report.upload_stats) {
            outln!(
                "  uploads   {} ({} files, {})",
                uploads.display(),
                stats.files,
                crate::backup::human_bytes(stats.bytes)
            );
        }
        if let Some(check) = &report.uploads_bucket {
            match check.problems().as_slice() {
                [] => outln!(
                    "  uploads   all {} objects the backup lists are in {}",
                    check.listed,
                    check.bucket
                ),
                problems => {
                    for problem in problems {
                        outln!("  warning: {problem}");
                    }
                }
            }
        }
        if let Some(env) = &report.env_file {
            outln!("  {}", env.describe());
        }
        for put in &report.stack_files {
            match &put.kept {
                Some(why) => outln!("  {why}"),
                None => {
                    let paths: Vec<String> = put
                        .written
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect();
                    outln!("  {:<9} {}", put.group, paths.join(", "));
                }
            }
        }
        match &report.safety_backup {
            Some(id) => outln!(
                "  the state before the restore is backup {id}; undo with `{}`",
                ctx.command(&format!("restore {id}"))
            ),
            None => outln!("  there was no previous state to keep"),
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The backup settings of the stack in `dir`: its env file (when it has one) under the
/// process environment, with the bucket of `--from` as BACKUP_OFFSITE. A restore from a
/// bucket into a directory without an env file reads the bucket's coordinates and keys
/// from the environment.
fn settings_for(dir: &Path, from: Option<&str>) -> Result<BackupSettings> {
    let Some(url) = from else {
        return BackupSettings::load(dir);
    };
    // The one loader, with the bucket of --from as BACKUP_OFFSITE.
    let mut raw = crate::config::model::settings(dir)?;
    raw.overlay([("BACKUP_OFFSITE".to_string(), url.to_string())]);
    BackupSettings::from_raw(dir, &raw).with_context(|| {
        format!(
            "a restore from {url} needs the bucket's endpoint, region and keys: set S3_ENDPOINT, S3_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or copy the old stack's {} into {}",
            crate::backup::settings::ENV_FILE,
            dir.display()
        )
    })
}

/// Moves the backups downloaded into `from` to `to`, the BACKUP_DIR of the env file just
/// restored, when they differ (on one filesystem; otherwise says how to download there).
fn move_backups(from: &Path, to: &Path) -> Result<()> {
    if from == to {
        return Ok(());
    }
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    fs::rename(from, to).with_context(|| {
        format!(
            "the restored env file puts the backups in {}, but they were downloaded to {}, which cannot be moved there\nrun this again with BACKUP_DIR={} in the environment",
            to.display(),
            from.display(),
            to.display()
        )
    })
}

/// The deployed stack's API containers when this directory's stack is deployed on this
/// host's engine; a bare directory (or no engine) restores in place.
fn api_control(settings: &BackupSettings, quiet: bool) -> Result<Box<dyn ApiControl>> {
    if let Some(api) = super::swarm::restore_api(&settings.stack_dir, API_HEALTH_TIMEOUT, quiet)? {
        return Ok(api);
    }
    let domain = CertSettings::load(&settings.stack_dir, false)?.domain;
    let Some(owner) = crate::config::model::owner_of(&settings.stack_dir, &domain)? else {
        return Ok(Box::new(NoStackRunning));
    };
    match StackApi::connect(&owner, API_HEALTH_TIMEOUT) {
        Ok(Some(api)) => Ok(Box::new(api)),
        Ok(None) => Ok(Box::new(NoStackRunning)),
        Err(e) => {
            eprintln!("note: restoring without a stack: {e:#}");
            Ok(Box::new(NoStackRunning))
        }
    }
}

/// How long the restarted API gets to report healthy (as `elior deploy --timeout`).
const API_HEALTH_TIMEOUT: Duration = Duration::from_secs(120);

fn confirm(id: &str, settings: &BackupSettings) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("restore replaces the stack's data, so it needs confirmation\npass --yes to restore without asking");
    }
    eprint!(
        "restore backup {id} over the data of {}? the current state is backed up first [y/N] ",
        settings.stack_dir.display()
    );
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .context("failed to read the answer")?;
    if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        bail!("restore cancelled; nothing was changed");
    }
    Ok(())
}
