//! `elior backup`: take, list, verify and prune backups of a stack.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::backup::{self, BackupSettings, Check, CreateOptions, Reporter};
use crate::plan::retention;

/// Back up the stack's database and uploads into BACKUP_DIR.
///
/// The database is copied with SQLite's online backup API in one step, so the API keeps
/// writing meanwhile, and the copy must pass `PRAGMA quick_check` (with --full-check,
/// `integrity_check`). The uploads folder becomes a tar.gz that GNU tar reads. A manifest
/// with each file's size and sha256 is written last: a backup is complete only once its
/// manifest exists. Files are mode 0600 in a 0700 folder.
///
/// When DATABASE_URL is postgresql://..., the database part is `pg_dump -Fc` instead
/// (Debian's postgresql-client; the password goes in PGPASSWORD, never on its command
/// line), checked with `pg_restore --list`. Archives only, not the repository yet.
///
/// With BACKUP_FORMAT=repository, backups go into a deduplicated repository instead
/// (BACKUP_DIR/repository): only pages and files not stored yet are written, and every
/// snapshot still restores on its own. With BACKUP_RECIPIENTS=age1..., the repository is
/// encrypted to those age recipients; restoring needs `--identity FILE`.
///
/// With BACKUP_OFFSITE=s3://BUCKET/PREFIX (and S3_ENDPOINT, S3_REGION,
/// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY as for uploads), each backup is verified and
/// then copied to the bucket: only what it lacks, the snapshot last. If that copy fails,
/// the backup stays here and the command exits 3.
///
/// Settings come from DIR/.env.production: DATABASE_URL, UPLOAD_DIR, BACKUP_DIR
/// (default DIR/backups; `elior init` writes it), BACKUP_RETENTION_DAYS (default 30),
/// BACKUP_FORMAT (archive or repository), BACKUP_RECIPIENTS and BACKUP_OFFSITE.
///
/// Exit codes: 0 ok; 1 a check failed; 2 error, no backup taken; 3 the backup was taken
/// and kept here, but its offsite copy failed; 4 BACKUP_DIR ran out of space, no backup
/// taken (`elior schedule` then runs the prune, which makes room for the next run).
///
/// Examples:
///     elior backup --dir /srv/elior            take a backup now
///     elior backup list                        show backups with age, size and status
///     elior backup list --offsite              the backups in BACKUP_OFFSITE's bucket
///     elior backup verify --all                re-check every backup's checksums
///     elior backup push                        finish a killed offsite copy
///     elior backup prune --dry-run             show what retention would delete
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct BackupArgs {
    #[command(subcommand)]
    command: Option<BackupCommand>,
    /// Run a full integrity_check on the copy instead of quick_check (slower)
    #[arg(long)]
    full_check: bool,
    /// Fail the backup if it takes longer than this many seconds [default: 1800]
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Record the backup as taken by `elior schedule`
    #[arg(long, hide = true)]
    scheduled: bool,
}

/// Exit code: the backup was taken and is kept here, but its offsite copy failed.
pub const EXIT_OFFSITE_FAILED: u8 = 3;
/// Exit code: BACKUP_DIR ran out of space; no backup was taken.
pub const EXIT_BACKUP_DIR_FULL: u8 = 4;

#[derive(Subcommand)]
enum BackupCommand {
    /// List the backups with their size, age and status
    List(ListArgs),
    /// Copy to BACKUP_OFFSITE what it lacks of the verified backups (resumes a killed copy)
    Push,
    /// Re-check backups deeply: manifest, checksums, quick_check, uploads read back
    Verify(VerifyArgs),
    /// Delete backups that retention no longer keeps
    Prune(PruneArgs),
    /// Write one backup as a single plain tar.zst (or tar.gz)
    Export(ExportArgs),
}

/// Write one backup as a single plain tar.zst that any tar unpacks (a tar.gz when the
/// output ends in .gz): elior-backup-ID/backup.json (the manifest), database.db
/// (database.pgdump on PostgreSQL) and uploads/. The backup is verified first; an
/// existing file is never overwritten. An encrypted backup needs --identity, and its
/// export is not encrypted.
///
/// Example:
///     elior backup export latest --output /mnt/usb/elior.tar.zst
#[derive(Args)]
#[command(verbatim_doc_comment)]
struct ExportArgs {
    /// The backup id (like 20261129_020000) or `latest`
    #[arg(default_value = "latest")]
    id: String,
    /// Where to write it [default: elior-backup-ID.tar.zst in the current folder]
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// An age identity file that opens an encrypted backup
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
}

#[derive(Args)]
struct ListArgs {
    /// List the backups in BACKUP_OFFSITE's bucket instead
    #[arg(long)]
    offsite: bool,
}

/// Re-check a backup: its manifest's own checksum first, then its files against the
/// manifest, its database copy with `PRAGMA quick_check`, and every entry of its uploads
/// archive read back. Exits 1 when a backup fails. `--all` skips backups still running.
#[derive(Args)]
struct VerifyArgs {
    /// The backup id (like 20261129_020000) or `latest`
    #[arg(default_value = "latest", conflicts_with = "all")]
    id: String,
    /// Verify every backup
    #[arg(long)]
    all: bool,
    /// Verify every backup in BACKUP_OFFSITE's bucket: each object is downloaded into
    /// BACKUP_DIR/.offsite-verify (needs that much free disk) and checked in full
    #[arg(long, conflicts_with = "id")]
    offsite: bool,
    /// An age identity file: encrypted snapshots are then decrypted and checked in full
    /// (without it, the host checks that their chunks are present and intact)
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
}

/// Delete backups older than BACKUP_RETENTION_DAYS (age from the name, not the mtime).
///
/// Every complete backup is verified deeply first (manifest checksum, file hashes,
/// quick_check, uploads read back). Only verified backups are deleted; a backup that
/// fails verification is kept for you to inspect, and the newest verified backup always
/// stays. The --keep-* options keep, in addition, the newest verified backup of each of
/// the last N days, weeks or months (as restic's). Foreign files stay; incomplete
/// backups and temporary files that no running backup holds (killed runs) are removed.
///
/// With BACKUP_OFFSITE, the backups deleted here are then deleted from the bucket too,
/// and the packs no backup there uses; never while the newest verified backup is not
/// offsite, and packs only when every backup offsite is also here (exit 3 if that fails).
///
/// Example:
///     elior backup prune --keep-weekly 8 --keep-monthly 12 --dry-run
#[derive(Args)]
#[command(verbatim_doc_comment)]
struct PruneArgs {
    /// Only show what would be deleted
    #[arg(long)]
    dry_run: bool,
    /// Also keep the newest backup of each of the last N days
    #[arg(long, default_value_t = 0, value_name = "N")]
    keep_daily: u32,
    /// Also keep the newest backup of each of the last N weeks
    #[arg(long, default_value_t = 0, value_name = "N")]
    keep_weekly: u32,
    /// Also keep the newest backup of each of the last N months
    #[arg(long, default_value_t = 0, value_name = "N")]
    keep_monthly: u32,
}

impl BackupArgs {
    /// With --json: the manifest of the new backup, or the list, verification, prune
    /// report or export report.
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let json = ctx.json;
        // Not `args_conflicts_with_subcommands`: it refuses the global options too
        // (`elior backup --dir X list`).
        if self.command.is_some() && (self.full_check || self.timeout.is_some() || self.scheduled) {
            bail!("--full-check and --timeout apply to taking a backup (`elior backup`), not to its subcommands\nput them without a subcommand");
        }
        let settings = BackupSettings::load(ctx.dir())?;
        backup::owner::check(&settings)?;
        backup::recover_interrupted_restore(ctx.dir())?;
        match self.command {
            None => {
                let options = CreateOptions {
                    check: if self.full_check {
                        Check::Full
                    } else {
                        Check::Quick
                    },
                    time_limit: self
                        .timeout
                        .map_or(backup::DEFAULT_TIME_LIMIT, Duration::from_secs),
                    reason: if self.scheduled {
                        "scheduled"
                    } else {
                        "manual"
                    },
                    require_database: true,
                };
                let mut reporter = Reporter::new(ctx.quiet);
                let created = backup::create(&settings, &options, &mut reporter)?;
                let offsite = settings
                    .offsite
                    .as_ref()
                    .map(|_| backup::offsite::push(&settings, &mut reporter));
                print_created(&settings, &created, offsite.as_ref(), json)?;
                match offsite {
                    Some(Err(e)) => {
                        eprintln!(
                            "elior: {e:#}\nbackup {} is kept in {}, but it is not offsite; `{}` copies it once the bucket is reachable",
                            created.id(),
                            settings.backup_dir.display(),
                            ctx.command("backup push")
                        );
                        Ok(ExitCode::from(EXIT_OFFSITE_FAILED))
                    }
                    _ => Ok(ExitCode::SUCCESS),
                }
            }
            Some(BackupCommand::Push) => push(&settings, json),
            Some(BackupCommand::List(args)) if args.offsite => list_offsite(&settings, json),
            Some(BackupCommand::List(_)) => list(&settings, json, ctx),
            Some(BackupCommand::Verify(args)) => verify(&settings, &args, json),
            Some(BackupCommand::Prune(args)) => prune(&settings, &args, json),
            Some(BackupCommand::Export(args)) => export(&settings, &args, json),
        }
    }
}

fn print_created(
    settings: &BackupSettings,
    created: &backup::Created,
    offsite: Option<&Result<backup::offsite::PushReport>>,
    json: bool,
) -> Result<()> {
    if json {
        let mut value = match created {
            backup::Created::Archive(manifest) => serde_json::to_value(manifest)?,
            backup::Created::Repository { snapshot, .. } => serde_json::to_value(snapshot)?,
        };
        if let (Some(offsite), Some(object)) = (offsite, value.as_object_mut()) {
            object.insert(
                "offsite".into(),
                match offsite {
                    Ok(report) => serde_json::to_value(report)?,
                    Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
                },
            );
        }
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match created {
        backup::Created::Archive(manifest) => {
            outln!(
                "backup {} complete in {}",
                manifest.id,
                settings.backup_dir.display()
            );
            for file in &manifest.files {
                outln!("  {}  {}", file.name, backup::human_bytes(file.size));
            }
        }
        backup::Created::Repository { snapshot, stats } => outln!(
            "backup {} complete in {}: database {}, {} uploads ({}); {} added",
            snapshot.id,
            backup::repo::root(&settings.backup_dir).display(),
            backup::human_bytes(stats.database_bytes),
            stats.upload_files,
            backup::human_bytes(stats.upload_bytes),
            backup::human_bytes(stats.added_bytes)
        ),
    }
    if let Some(Ok(report)) = offsite {
        print_push(report);
    }
    Ok(())
}

fn print_push(report: &backup::offsite::PushReport) {
    outln!(
        "offsite {}: {} objects uploaded ({}), {} already there, {} read back and equal; {} backups offsite",
        report.url,
        report.uploaded,
        backup::human_bytes(report.uploaded_bytes),
        report.present,
        report.sampled,
        report.offsite_backups
    );
}

fn push(settings: &BackupSettings, json: bool) -> Result<ExitCode> {
    let mut reporter = Reporter::new(false);
    match backup::offsite::push(settings, &mut reporter) {
        Ok(report) => {
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_push(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "elior: {e:#}\nthe local backups in {} are kept",
                settings.backup_dir.display()
            );
            Ok(ExitCode::from(EXIT_OFFSITE_FAILED))
        }
    }
}

fn list_offsite(settings: &BackupSettings, json: bool) -> Result<ExitCode> {
    let offsite = settings.offsite.as_ref().context(
        "BACKUP_OFFSITE is not set\nset it to s3://BUCKET/PREFIX in the stack's .env.production",
    )?;
    let (backups, total, stack) = backup::offsite::list(offsite)?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "url": offsite.url(),
                "stack_id": stack.map(|s| s.to_string()),
                "bytes": total,
                "backups": backups.iter().rev().collect::<Vec<_>>(),
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if backups.is_empty() {
        eprintln!("no backups in {}", offsite.url());
        return Ok(ExitCode::SUCCESS);
    }
    let now = chrono::Local::now().naive_local();
    let mut table = super::table::new(&["ID", "AGE", "SIZE", "STATUS"], &["AGE", "SIZE"]);
    for b in backups.iter().rev() {
        let age = backup::names::parse_id(&b.id)
            .map(|t| now.signed_duration_since(t).num_days())
            .unwrap_or_default();
        let status = match (b.complete, b.format) {
            (false, _) => {
                "incomplete (its upload was interrupted; `elior backup push` finishes it)"
            }
            (true, "repository") => "complete (repository)",
            (true, _) => "complete",
        };
        table.add_row(vec![
            b.id.clone(),
            format!("{age}d"),
            backup::human_bytes(b.size),
            status.to_string(),
        ]);
    }
    out!("{}", super::table::render(&table));
    outln!("{}: {} in all", offsite.url(), backup::human_bytes(total));
    Ok(ExitCode::SUCCESS)
}

fn list(settings: &BackupSettings, json: bool, ctx: &super::Context) -> Result<ExitCode> {
    let sets = backup::scan(&settings.backup_dir)?;
    let now = chrono::Local::now().naive_local();
    let status = |s: &backup::BackupSet| match (&s.running, s.has_manifest()) {
        (Some(_), false) => "running",
        (None, false) => "incomplete",
        (_, true) if s.is_repository() => "complete (repository)",
        (_, true) => "complete",
    };
    let rows: Vec<serde_json::Value> = sets
        .iter()
        .rev()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "age_days": now.signed_duration_since(s.taken_at).num_days(),
                "size": s.total_size(),
                "status": status(s),
                "parts": s.parts.keys().collect::<Vec<_>>(),
                "temp_files": s.temp_files.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "running_pid": s.running.as_ref().map(|h| h.pid),
                "format": if s.is_repository() { "repository" } else { "archive" },
            })
        })
        .collect();
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        eprintln!("no backups in {}", settings.backup_dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = super::table::new(&["ID", "AGE", "SIZE", "STATUS"], &["AGE", "SIZE"]);
    for set in sets.iter().rev() {
        table.add_row(vec![
            set.id.clone(),
            format!("{}d", now.signed_duration_since(set.taken_at).num_days()),
            backup::human_bytes(set.total_size()),
            status(set).to_string(),
        ]);
    }
    out!("{}", super::table::render(&table));
    let root = backup::repo::root(&settings.backup_dir);
    if sets.iter().any(|s| s.is_repository()) {
        let (bytes, packs) = backup::repo::disk_usage(&root);
        outln!(
            "repository {}: {} in {packs} packs, shared by {} snapshots (a snapshot's SIZE is its own file)",
            root.display(),
            backup::human_bytes(bytes),
            sets.iter().filter(|s| s.is_repository()).count()
        );
    }
    // Left by killed backups: counted, so they never sit unnoticed (issue 17).
    let leftovers: Vec<&backup::BackupSet> = sets
        .iter()
        .filter(|s| !s.is_running() && (!s.has_manifest() || !s.temp_files.is_empty()))
        .collect();
    if !leftovers.is_empty() {
        let bytes: u64 = leftovers.iter().map(|s| s.total_size()).sum();
        eprintln!(
            "{} incomplete or temporary backups left by killed runs ({}); `{}` removes them",
            leftovers.len(),
            backup::human_bytes(bytes),
            ctx.command("backup prune")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(settings: &BackupSettings, args: &VerifyArgs, json: bool) -> Result<ExitCode> {
    if args.offsite {
        let mut reporter = Reporter::new(false);
        let results = backup::offsite::verify(settings, args.identity.as_deref(), &mut reporter)?;
        return report_verifications(&results, json);
    }
    let dir = &settings.backup_dir;
    let sets = backup::scan(dir)?;
    let chosen: Vec<&backup::BackupSet> = if args.all {
        sets.iter().rev().collect()
    } else {
        vec![backup::find(&sets, &args.id)?]
    };
    let chosen: Vec<&backup::BackupSet> = chosen
        .into_iter()
        .filter(|set| !(args.all && set.is_running() && !set.has_manifest()))
        .collect();
    let _lock = backup::lock_repository(dir, "elior backup verify")?;
    backup::fault::point("verify:locked");
    let results: Vec<backup::Verification> = backup::verify_sets(
        dir,
        &chosen,
        Some(Check::Quick),
        true,
        args.identity.as_deref(),
    )
    .into_iter()
    .map(|(v, _)| v)
    .collect();
    report_verifications(&results, json)
}

fn report_verifications(results: &[backup::Verification], json: bool) -> Result<ExitCode> {
    if json {
        outln!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for v in results {
            if v.ok {
                outln!("ok      {}", v.id);
                for note in &v.notes {
                    outln!("        {note}");
                }
            } else {
                outln!("FAILED  {}", v.id);
                for problem in &v.problems {
                    outln!("        {}", problem.replace('\n', "\n        "));
                }
            }
        }
    }
    Ok(if results.iter().all(|v| v.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_CHECK_FAILED)
    })
}

fn prune(settings: &BackupSettings, args: &PruneArgs, json: bool) -> Result<ExitCode> {
    let policy = backup::policy(
        settings,
        args.keep_daily,
        args.keep_weekly,
        args.keep_monthly,
    );
    let now = chrono::Local::now().naive_local();
    let report =
        backup::prune(settings, &policy, now, args.dry_run).context("pruning backups failed")?;
    let remote = settings
        .offsite
        .as_ref()
        .map(|_| backup::offsite::prune(settings, &report, args.dry_run));
    let code = match &remote {
        Some(Err(e)) => {
            eprintln!(
                "elior: {e:#}\nthe local prune is done; nothing offsite was pruned past this point"
            );
            ExitCode::from(EXIT_OFFSITE_FAILED)
        }
        _ => ExitCode::SUCCESS,
    };
    let remote = remote.and_then(Result::ok);
    if json {
        let mut value = serde_json::to_value(&report)?;
        if let (Some(remote), Some(object)) = (&remote, value.as_object_mut()) {
            object.insert("offsite".into(), serde_json::to_value(remote)?);
        }
        outln!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        out!(
            "{}",
            retention::render(&report.decisions, &policy, args.dry_run)
        );
        for abandoned in &report.abandoned {
            eprintln!("elior: {}", abandoned.describe(args.dry_run));
        }
        for id in &report.running {
            eprintln!("elior: backup {id} is still being written by a running backup; left alone");
        }
        if let Some(sweep) = &report.repository {
            let verb = if args.dry_run { "would free" } else { "freed" };
            eprintln!(
                "elior: repository: {verb} {} ({} unused packs deleted, {} repacked into {})",
                backup::human_bytes(sweep.bytes_freed),
                sweep.packs_deleted,
                sweep.packs_repacked,
                sweep.packs_written
            );
        }
        if let Some(remote) = &remote {
            let verb = if args.dry_run {
                "would delete"
            } else {
                "deleted"
            };
            eprintln!(
                "elior: offsite {}: {verb} {} backups ({}) and {} unused packs ({})",
                remote.url,
                remote.deleted.len(),
                remote.deleted.join(", "),
                remote.packs_deleted,
                backup::human_bytes(remote.bytes_freed)
            );
            for note in &remote.notes {
                eprintln!("elior: offsite: {note}");
            }
        }
    }
    Ok(code)
}

fn export(settings: &BackupSettings, args: &ExportArgs, json: bool) -> Result<ExitCode> {
    let sets = backup::scan(&settings.backup_dir)?;
    let set = backup::find(&sets, &args.id)?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("elior-backup-{}.tar.zst", set.id)));
    let report =
        backup::export::export(&settings.backup_dir, set, &output, args.identity.as_deref())?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!(
            "exported backup {} to {} ({}, {} upload files)",
            report.backup,
            report.path.display(),
            backup::human_bytes(report.size),
            report.upload_files
        );
    }
    Ok(ExitCode::SUCCESS)
}
