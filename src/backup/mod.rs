//! Backups of a stack: a consistent, checked copy of the SQLite database and a tar.gz of
//! the uploads, described by a manifest written last, or (`BACKUP_FORMAT=repository`) a
//! snapshot in the deduplicated, optionally encrypted repository ([`repo`]); listing,
//! verifying and pruning both kinds; and restoring one (see [`restore`]).
//!
//! This module does the file work. Which backups to delete is decided by the pure
//! [`crate::plan::retention`]; which container to stop during a restore comes from the
//! caller. Everything is written under a temporary name, fsynced, then renamed; a failed
//! backup leaves nothing behind.

pub mod archive;
pub mod bucket_uploads;
pub mod export;
pub mod fault;
pub mod journal;
pub mod manifest;
pub mod names;
pub mod offsite;
pub mod owner;
pub mod postgres;
pub mod repo;
pub mod restore;
pub mod settings;
pub mod snapshot;
pub mod stack_files;

use std::collections::BTreeMap;
use std::fs;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{NaiveDateTime, Timelike};

use crate::plan::retention::{self, Candidate, Decision, Policy};
use manifest::{FileRecord, Manifest, PartName};
use names::Part;
pub use settings::{BackupSettings, Format};
pub use snapshot::Check;

/// The default time limit of one backup.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub check: Check,
    pub time_limit: Duration,
    /// `manual`, `scheduled` or `pre-restore`; recorded in the manifest.
    pub reason: &'static str,
    /// Whether a missing database is an error (true) or simply left out (a pre-restore
    /// safety backup of a stack whose data is gone).
    pub require_database: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            check: Check::Quick,
            time_limit: DEFAULT_TIME_LIMIT,
            reason: "manual",
            require_database: true,
        }
    }
}

/// Creates the backup folder (mode 0700) if needed and proves it is writable.
pub fn ensure_backup_dir(dir: &Path) -> Result<()> {
    let hint = "set BACKUP_DIR in the stack's .env.production to a writable folder, or fix its owner and mode";
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("failed to create backup folder {}\n{hint}", dir.display()))?;
        // DirBuilder's mode is masked by the umask; set it exactly.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("failed to set the mode of {}", dir.display()))?;
    } else if let Ok(meta) = fs::metadata(dir) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                "backup folder is readable by other users; backups hold password hashes and personal data (chmod 700 it)"
            );
        }
    }
    let probe = dir.join(format!(".elior-write-test-{}", std::process::id()));
    manifest::create_private(&probe)
        .with_context(|| format!("backup folder {} is not writable\n{hint}", dir.display()))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Removes the files of a backup that did not finish.
struct Cleanup(Vec<PathBuf>);

impl Cleanup {
    fn disarm(mut self) {
        self.0.clear();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

/// Claims a fresh backup id: the current local second, moved on until no file uses it
/// (two backups in one second, e.g. a restore's safety backup right after a backup). The
/// claim is the manifest's temporary file, created with O_EXCL, so two processes starting
/// in the same second never share an id.
fn claim_id(dir: &Path) -> Result<(String, PathBuf)> {
    loop {
        let now = chrono::Local::now().naive_local();
        let id = names::format_id(now);
        let used = Part::ALL
            .iter()
            .any(|part| dir.join(part.file_name(&id)).exists())
            || repo::snapshot_path(&repo::root(dir), &id).exists();
        let claim = manifest::temp_path(&dir.join(Part::Manifest.file_name(&id)));
        if !used {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&claim)
            {
                Ok(mut file) => {
                    // The claim is also the backup's lock: it says which process writes
                    // this id, so prune can tell a running backup from a killed one.
                    let holder = crate::lock::Holder {
                        pid: std::process::id(),
                        host: crate::lock::hostname(),
                        command: "elior backup".into(),
                        since: chrono::Local::now()
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                    };
                    file.write_all(&serde_json::to_vec(&holder).expect("holder serialises"))
                        .and_then(|()| file.sync_all())
                        .with_context(|| format!("failed to write {}", claim.display()))?;
                    return Ok((id, claim));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("failed to create {}", claim.display()))
                }
            }
        }
        let into_second = Duration::from_nanos(u64::from(now.nanosecond() % 1_000_000_000));
        std::thread::sleep(
            Duration::from_secs(1).saturating_sub(into_second) + Duration::from_millis(5),
        );
    }
}

/// Stderr progress for long work: phase lines always, a live line only on a terminal.
pub struct Reporter {
    live: bool,
    quiet: bool,
    last: Instant,
}

impl Reporter {
    pub fn new(quiet: bool) -> Self {
        Reporter {
            live: !quiet && std::io::stderr().is_terminal(),
            quiet,
            last: Instant::now(),
        }
    }

    pub fn phase(&mut self, message: &str) {
        if !self.quiet {
            if self.live {
                eprint!("\r\x1b[2K");
            }
            eprintln!("{message}");
        }
    }

    /// A live progress line (replaced in place), on a terminal only, at most 5 a second.
    pub fn live(&mut self, text: &str) {
        if self.live && self.last.elapsed() >= Duration::from_millis(200) {
            self.last = Instant::now();
            eprint!("\r\x1b[2K{text}");
            let _ = std::io::stderr().flush();
        }
    }

    fn archive_progress(&mut self, p: archive::Progress) {
        if self.live && self.last.elapsed() >= Duration::from_millis(200) {
            self.last = Instant::now();
            eprint!(
                "\r\x1b[2K  uploads: {} files, {}",
                p.files,
                human_bytes(p.bytes)
            );
            let _ = std::io::stderr().flush();
        }
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What a backup made: an archive backup's manifest, or a repository snapshot.
#[derive(Debug, Clone)]
pub enum Created {
    Archive(Manifest),
    Repository {
        snapshot: Box<repo::Snapshot>,
        stats: repo::write::RunStats,
    },
}

impl Created {
    pub fn id(&self) -> &str {
        match self {
            Created::Archive(m) => &m.id,
            Created::Repository { snapshot, .. } => &snapshot.id,
        }
    }
}

/// Says that a part of the stack is not there, so the backup goes on without it.
fn left_out(reporter: &mut Reporter, what: &str, path: &Path) {
    reporter.phase(&format!("no {what} at {}; leaving it out", path.display()));
}

/// Takes a backup of the stack in the form BACKUP_FORMAT names.
pub fn create(
    settings: &BackupSettings,
    options: &CreateOptions,
    reporter: &mut Reporter,
) -> Result<Created> {
    ensure_backup_dir(&settings.backup_dir)?;
    let created = owner::claim(settings).and_then(|()| {
        // What killed backups left behind goes first, so they never pile up (issue 17).
        for abandoned in remove_abandoned(&settings.backup_dir, false)? {
            reporter.phase(&abandoned.describe(false));
        }
        match settings.format {
            Format::Archive => create_archive(settings, options, reporter).map(Created::Archive),
            Format::Repository => create_snapshot(settings, options, reporter),
        }
    });
    created.map_err(|e| explain_full_disk(e, &settings.backup_dir))
}

/// A backup that found BACKUP_DIR full: nothing of it was kept. `elior backup` exits 4
/// with it, so the scheduler can tell it from other failures: retention can make room.
// The hint goes on its own line, after the cause: the CLI prints it so, and `--json`
// gives it as "hint".
#[derive(Debug, thiserror::Error)]
#[error(
    "BACKUP_DIR {dir} ran out of space{free}: {cause}\nThis backup was not taken and what it \
     had written is removed; earlier backups are untouched. Make room there (`elior backup \
     prune` deletes the backups past BACKUP_RETENTION_DAYS) or set BACKUP_DIR in \
     .env.production to a larger disk, then back up again."
)]
pub struct BackupDirFull {
    dir: String,
    /// ` (X of Y free now ...)`, or empty when the disk could not be measured.
    free: String,
    cause: String,
}

/// Says a backup that ran out of space in terms of BACKUP_DIR, with what is free there
/// and the fix: SQLite's bare "database or disk is full" reads as if the live database
/// were full, and ENOSPC alone does not say which disk or what to do.
fn explain_full_disk(error: anyhow::Error, backup_dir: &Path) -> anyhow::Error {
    if !crate::db::is_out_of_space(&error) {
        return error;
    }
    let free = crate::fsutil::disk_space(backup_dir)
        .map(|disk| {
            format!(
                " ({} of {} free now that its files are removed)",
                human_bytes(disk.free_bytes),
                human_bytes(disk.total_bytes)
            )
        })
        .unwrap_or_default();
    BackupDirFull {
        dir: backup_dir.display().to_string(),
        free,
        cause: format!("{error:#}"),
    }
    .into()
}

/// Takes a backup into the repository: database pages and upload pieces not stored yet,
/// then the snapshot, written last (see [`repo::write`]).
fn create_snapshot(
    settings: &BackupSettings,
    options: &CreateOptions,
    reporter: &mut Reporter,
) -> Result<Created> {
    let started = Instant::now();
    let deadline = started + options.time_limit;
    let dir = &settings.backup_dir;
    let root = repo::root(dir);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&root)
        .with_context(|| format!("failed to create {}", root.display()))?;
    let waited = Instant::now();
    let mut told = false;
    let _lock = repo::lock_waiting(&root, "elior backup", deadline, &mut |holder| {
        if !told {
            told = true;
            reporter.phase(&format!(
                "waiting for the backup repository: `{}` (pid {}) holds it since {}; this backup fails if it is still held after --timeout",
                holder.command, holder.pid, holder.since
            ));
        }
        reporter.live(&format!(
            "  waiting for `{}`: {}s",
            holder.command,
            waited.elapsed().as_secs()
        ));
    })?;
    repo::Repo::init(&root, &settings.recipients)?;
    let (count, bytes) = repo::Repo::clear_tmp(&root)?;
    if count > 0 {
        reporter.phase(&format!(
            "removed {count} temporary files of a killed run ({}) from the repository",
            human_bytes(bytes)
        ));
    }
    let taken = take_snapshot(settings, options, reporter, &root, started, deadline);
    if taken.is_err() {
        // This run's unfinished packs: left in tmp/, they would keep a full disk full
        // until the next backup. Packs already moved into place stay: the next run
        // reuses their blobs, and prune sweeps them if none does.
        let _ = repo::Repo::clear_tmp(&root);
    }
    taken
}

/// The part of [`create_snapshot`] that runs under the repository lock.
fn take_snapshot(
    settings: &BackupSettings,
    options: &CreateOptions,
    reporter: &mut Reporter,
    root: &Path,
    started: Instant,
    deadline: Instant,
) -> Result<Created> {
    let dir = &settings.backup_dir;
    let (id, claim) = claim_id(dir)?;
    let cleanup = Cleanup(vec![claim.clone()]);
    fault::point("backup:claimed");
    let mut repository = repo::Repo::open(root)?;
    let mut session = repo::write::Session::start(&mut repository)?;

    let mut schema_version = None;
    let mut database_check = None;
    let mut database = None;
    if let Some(url) = &settings.postgres {
        reporter.phase(&format!("dumping PostgreSQL database {}", url.target()));
        let part = repo::write::postgres_dump(&mut session, url, deadline)?;
        fault::point("backup:database-written");
        database_check = Some("pg_restore --list".to_string());
        reporter.phase(&format!(
            "  database: {} dumped in {:.1}s (pg_dump -Fc), readable by pg_restore, stored in {:.2}s",
            human_bytes(part.size),
            session.stats.database_snapshot_ms as f64 / 1000.0,
            session.stats.database_store_ms as f64 / 1000.0
        ));
        database = Some(part);
    } else if settings.database_path.is_file() || options.require_database {
        reporter.phase(&format!(
            "backing up database {}",
            settings.database_path.display()
        ));
        let (part, version) = repo::write::database(
            &mut session,
            &settings.database_path,
            options.check,
            deadline,
        )?;
        fault::point("backup:database-written");
        schema_version = version;
        database_check = Some(options.check.pragma().to_string());
        reporter.phase(&format!(
            "  database: {}, copied and {} ok in {:.2}s, stored in {:.2}s",
            human_bytes(part.size),
            options.check.pragma(),
            session.stats.database_snapshot_ms as f64 / 1000.0,
            session.stats.database_store_ms as f64 / 1000.0
        ));
        database = Some(part);
    } else {
        left_out(reporter, "database", &settings.database_path);
    }
    let mut uploads = None;
    let mut cache = None;
    if settings.uploads_dir.is_dir() {
        reporter.phase(&format!(
            "storing uploads {}",
            settings.uploads_dir.display()
        ));
        let (part, files_cache) =
            repo::write::uploads(&mut session, &settings.uploads_dir, deadline)?;
        fault::point("backup:uploads-written");
        reporter.phase(&format!(
            "  uploads: {} files, {} ({} unchanged, not read) in {:.2}s",
            part.files,
            human_bytes(part.bytes),
            session.stats.cached_files,
            session.stats.uploads_ms as f64 / 1000.0
        ));
        uploads = Some(part);
        cache = Some(files_cache);
    } else {
        left_out(reporter, "uploads folder", &settings.uploads_dir);
    }
    let stack_files = repo::write::stack_files(&mut session, &settings.stack_dir)?;
    if let Some(part) = &stack_files {
        let names: Vec<&str> = part.files.iter().map(|f| f.path.as_str()).collect();
        reporter.phase(&format!("  stack files: {}", names.join(", ")));
    }
    session.finish_packs()?;
    fault::point("backup:packs-written");
    let content = repo::Content {
        schema_version,
        database_check,
        database,
        uploads,
        stack_files,
    };
    let sealed = session.seal(&id, &content);
    let stats = session.stats.clone();
    drop(session);
    let mut snapshot = repo::Snapshot {
        format: 1,
        id: id.clone(),
        created_at: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        elior_version: crate::VERSION.to_string(),
        reason: options.reason.to_string(),
        duration_ms: started.elapsed().as_millis() as u64,
        added_bytes: stats.added_bytes,
        roots: content.roots(),
        content: sealed.is_none().then_some(content),
        sealed,
        checksum: None,
    };
    snapshot.seal_checksum();
    let mut text = serde_json::to_string_pretty(&snapshot).expect("snapshot serialises");
    text.push('\n');
    manifest::write_atomic(&repository.snapshot_path(&id), text.as_bytes())?;
    fault::point("backup:manifest-written");
    if let Some(cache) = cache {
        cache.write(root);
    }
    reporter.phase(&format!(
        "  added {} in {} new chunks",
        human_bytes(stats.added_bytes),
        stats.new_blobs
    ));
    cleanup.disarm();
    let _ = fs::remove_file(&claim);
    Ok(Created::Repository {
        snapshot: Box::new(snapshot),
        stats,
    })
}

/// Takes an archive backup: database snapshot, uploads archive, then the manifest.
fn create_archive(
    settings: &BackupSettings,
    options: &CreateOptions,
    reporter: &mut Reporter,
) -> Result<Manifest> {
    let started = Instant::now();
    let deadline = started + options.time_limit;
    let dir = &settings.backup_dir;
    let (id, claim) = claim_id(dir)?;
    fault::point("backup:claimed");
    let mut cleanup = Cleanup(vec![claim.clone()]);
    let mut files = Vec::new();
    let mut schema_version = None;
    let mut database_check = None;
    let mut database_kind = None;

    let db_present = settings.database_path.is_file();
    if let Some(source) = settings.postgres_database() {
        let final_path = dir.join(Part::Database.file_name(&id));
        let temp = manifest::temp_path(&final_path);
        cleanup.0.extend([temp.clone(), final_path.clone()]);
        reporter.phase(&format!("dumping PostgreSQL database {source}"));
        let dump_started = Instant::now();
        let dump = postgres::dump_from(&source, &temp, deadline)?;
        fault::point("backup:database-copied");
        postgres::check_dump(&temp)?;
        manifest::commit(&temp, &final_path)?;
        fault::point("backup:database-written");
        reporter.phase(&format!(
            "  database: {} dumped in {:.1}s (pg_dump -Fc), readable by pg_restore",
            human_bytes(dump.size),
            dump_started.elapsed().as_secs_f64()
        ));
        database_check = Some("pg_restore --list".to_string());
        database_kind = Some(postgres::KIND.to_string());
        files.push(FileRecord::new(
            PartName::Database,
            &id,
            dump.size,
            dump.sha256,
        ));
    } else if db_present || options.require_database {
        let final_path = dir.join(Part::Database.file_name(&id));
        let temp = manifest::temp_path(&final_path);
        cleanup.0.extend([temp.clone(), final_path.clone()]);
        reporter.phase(&format!(
            "backing up database {}",
            settings.database_path.display()
        ));
        let snap = snapshot::take(&settings.database_path, &temp, options.check, deadline)?;
        fault::point("backup:database-copied");
        manifest::commit(&temp, &final_path)?;
        fault::point("backup:database-written");
        reporter.phase(&format!(
            "  database: {} copied in {:.1}s, {} ok",
            human_bytes(snap.size),
            snap.copy_duration.as_secs_f64(),
            options.check.pragma()
        ));
        schema_version = snap.schema_version;
        database_check = Some(options.check.pragma().to_string());
        files.push(FileRecord::new(
            PartName::Database,
            &id,
            snap.size,
            snap.sha256,
        ));
    } else {
        left_out(reporter, "database", &settings.database_path);
    }

    let mut upload_files = None;
    let mut upload_bytes = None;
    if settings.uploads_dir.is_dir() {
        let final_path = dir.join(Part::Uploads.file_name(&id));
        let temp = manifest::temp_path(&final_path);
        cleanup.0.extend([temp.clone(), final_path.clone()]);
        reporter.phase(&format!(
            "archiving uploads {}",
            settings.uploads_dir.display()
        ));
        let out = manifest::create_private(&temp)?;
        let archive_started = Instant::now();
        let stats = archive::create(&settings.uploads_dir, out, deadline, &mut |p| {
            reporter.archive_progress(p)
        })?;
        fault::point("backup:uploads-archived");
        manifest::commit(&temp, &final_path)?;
        fault::point("backup:uploads-written");
        reporter.phase(&format!(
            "  uploads: {} files, {} -> {} in {:.1}s",
            stats.files,
            human_bytes(stats.content_bytes),
            human_bytes(stats.size),
            archive_started.elapsed().as_secs_f64()
        ));
        upload_files = Some(stats.files);
        upload_bytes = Some(stats.content_bytes);
        files.push(FileRecord::new(
            PartName::Uploads,
            &id,
            stats.size,
            stats.sha256,
        ));
    } else if settings.uploads_bucket.is_none() {
        left_out(reporter, "uploads folder", &settings.uploads_dir);
    }
    let mut upload_objects = None;
    if let Some(bucket) = &settings.uploads_bucket {
        reporter.phase(&format!("listing the uploads in {}", bucket.url()));
        let objects: Vec<manifest::UploadObject> = offsite::Bucket::new(bucket)?
            .list()?
            .into_iter()
            // The store's own start-check object is not an upload.
            .filter(|(key, _)| key != crate::files::store::CHECK_OBJECT)
            .map(|(key, remote)| manifest::UploadObject {
                key,
                size: remote.size,
                etag: remote.etag,
            })
            .collect();
        reporter.phase(&format!(
            "  uploads: {} objects, {} (listed; the bucket keeps them)",
            objects.len(),
            human_bytes(objects.iter().map(|o| o.size).sum())
        ));
        upload_files = Some(objects.len() as u64);
        upload_bytes = Some(objects.iter().map(|o| o.size).sum());
        upload_objects = Some(objects);
    }

    // Archives are never encrypted: the env file goes without its secrets.
    let carried = stack_files::read(&settings.stack_dir, false)?;
    if !carried.is_empty() {
        let final_path = dir.join(Part::Stack.file_name(&id));
        cleanup.0.push(final_path.clone());
        let tar = stack_files::to_tar(&carried)?;
        manifest::write_atomic(&final_path, &tar)?;
        let names: Vec<&str> = carried.iter().map(|(path, _)| *path).collect();
        reporter.phase(&format!("  stack files: {}", names.join(", ")));
        files.push(FileRecord::new(
            PartName::Stack,
            &id,
            tar.len() as u64,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&tar)),
        ));
    }

    let mut manifest = Manifest {
        format: manifest::FORMAT_VERSION,
        id: id.clone(),
        created_at: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        elior_version: crate::VERSION.to_string(),
        schema_version,
        reason: options.reason.to_string(),
        database_check,
        database_kind,
        upload_files,
        upload_bytes,
        upload_objects,
        duration_ms: started.elapsed().as_millis() as u64,
        files,
        checksum: None,
    };
    manifest.seal();
    manifest::write(dir, &manifest)?;
    fault::point("backup:manifest-written");
    cleanup.disarm();
    // The id's claim has done its job once the manifest exists; left behind, it would sit
    // in BACKUP_DIR forever (retention never deletes files it does not recognise).
    let _ = fs::remove_file(&claim);
    Ok(manifest)
}

/// Finishes or undoes a restore of the stack in `stack_dir` that was interrupted (killed,
/// power cut), so the stack is entirely the old state or entirely the restored one before
/// a command touches it. Every command that touches a stack calls this once at its start;
/// a directory with no env file (or settings that name no SQLite database) has nothing to
/// recover.
pub fn recover_interrupted_restore(stack_dir: &Path) -> Result<()> {
    // A swarm restore killed while the API was at 0 tasks (issue 21).
    crate::docker::swarm_api::recover(stack_dir)?;
    if !stack_dir.join(settings::ENV_FILE).is_file() {
        return Ok(());
    }
    let Ok(settings) = BackupSettings::load(stack_dir) else {
        return Ok(());
    };
    recover_interrupted_restore_at(&settings.database_path)
}

/// [`recover_interrupted_restore`] for a process that knows only its database path
/// (`elior serve`). When the restore cannot be finished or undone from here (the API
/// container sees other paths than the host did), this fails: the caller must not open,
/// and so create, a database that a restore journal says is being replaced.
pub fn recover_interrupted_restore_at(database: &Path) -> Result<()> {
    let database = std::path::absolute(database)
        .with_context(|| format!("failed to resolve {}", database.display()))?;
    let recovered = journal::recover(&database, &restore::refuse_if_open).with_context(|| {
        format!(
            "refusing to use {}: a restore journal says it is being replaced",
            database.display()
        )
    })?;
    match recovered {
        journal::Recovery::Nothing => {}
        journal::Recovery::Undone { backup } => eprintln!(
            "elior: a restore of backup {backup} was interrupted; it was undone, and the stack is as it was before it"
        ),
        journal::Recovery::Finished { backup } => eprintln!(
            "elior: a restore of backup {backup} was interrupted after its swap; it was finished"
        ),
    }
    Ok(())
}

/// The elior backups found in a folder, grouped by id.
#[derive(Debug, Clone)]
pub struct BackupSet {
    pub id: String,
    pub taken_at: NaiveDateTime,
    /// Size of each part present on disk.
    pub parts: BTreeMap<Part, u64>,
    /// Hidden temporary files of this id (`.NAME.tmp`, the id's claim among them), with
    /// their sizes.
    pub temp_files: Vec<(String, u64)>,
    /// The backup process that holds this id, while it runs.
    pub running: Option<crate::lock::Holder>,
    /// The size of its snapshot file, for a backup in the repository.
    pub snapshot: Option<u64>,
}

impl BackupSet {
    /// Whether the backup is complete: an archive backup's manifest, or a repository
    /// snapshot, exists.
    pub fn has_manifest(&self) -> bool {
        self.parts.contains_key(&Part::Manifest) || self.snapshot.is_some()
    }

    pub fn is_repository(&self) -> bool {
        self.snapshot.is_some()
    }

    pub fn manifest_path(&self, dir: &Path) -> PathBuf {
        dir.join(Part::Manifest.file_name(&self.id))
    }

    pub fn total_size(&self) -> u64 {
        self.parts.values().sum::<u64>()
            + self.temp_files.iter().map(|(_, n)| n).sum::<u64>()
            + self.snapshot.unwrap_or(0)
    }

    /// Whether a backup process is still writing it.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }
}

/// The part and id of an elior temporary file: `.NAME.tmp` (a file being written, or an
/// id's claim) or `.NAME.tmp-PID` (an atomic write's temporary file).
fn parse_temp_name(name: &str) -> Option<(Part, String)> {
    let inner = name.strip_prefix('.')?;
    let (base, rest) = inner.rsplit_once(".tmp")?;
    let pid_suffix = rest.is_empty()
        || rest
            .strip_prefix('-')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !pid_suffix {
        return None;
    }
    names::parse_file_name(base)
}

/// How long a claim that names no process (being written, or from another host) is taken
/// to belong to a running backup.
const UNREADABLE_CLAIM_GRACE: Duration = Duration::from_secs(60);
const OTHER_HOST_CLAIM_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// The process holding backup `id`, from its claim file: running if it is alive on this
/// host; a claim from another host (a shared folder) counts for a day; an unreadable one
/// (just created) for a minute.
fn claim_holder(dir: &Path, id: &str) -> Option<crate::lock::Holder> {
    let path = manifest::temp_path(&dir.join(Part::Manifest.file_name(id)));
    let meta = fs::symlink_metadata(&path).ok()?;
    let age = meta
        .modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default();
    let text = fs::read_to_string(&path).unwrap_or_default();
    match serde_json::from_str::<crate::lock::Holder>(&text) {
        Ok(holder) if holder.host == crate::lock::hostname() => {
            let alive = holder.pid != std::process::id()
                && Path::new("/proc").join(holder.pid.to_string()).exists();
            alive.then_some(holder)
        }
        Ok(holder) => (age < OTHER_HOST_CLAIM_GRACE).then_some(holder),
        Err(_) => (age < UNREADABLE_CLAIM_GRACE).then(|| crate::lock::Holder {
            pid: 0,
            host: "unknown".into(),
            command: "elior backup (starting)".into(),
            since: String::new(),
        }),
    }
}

/// Lists the backups in `dir`, oldest first. Files with other names are ignored.
pub fn scan(dir: &Path) -> Result<Vec<BackupSet>> {
    let entries = fs::read_dir(dir).with_context(|| {
        format!(
            "failed to list backup folder {}\ncheck BACKUP_DIR in the stack's .env.production",
            dir.display()
        )
    })?;
    let mut sets: BTreeMap<String, BackupSet> = BTreeMap::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to list {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let (temp, (part, id)) = match names::parse_file_name(name) {
            Some(found) => (false, found),
            None => match parse_temp_name(name) {
                Some(found) => (true, found),
                None => continue,
            },
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let taken_at = names::parse_id(&id).expect("parse_file_name checked the id");
        let set = sets.entry(id.clone()).or_insert_with(|| BackupSet {
            id,
            taken_at,
            parts: BTreeMap::new(),
            temp_files: Vec::new(),
            running: None,
            snapshot: None,
        });
        if temp {
            set.temp_files.push((name.to_string(), meta.len()));
        } else {
            set.parts.insert(part, meta.len());
        }
    }
    for (id, size) in repo::snapshot_files(&repo::root(dir))? {
        let taken_at = names::parse_id(&id).expect("snapshot_files checked the id");
        sets.entry(id.clone())
            .or_insert_with(|| BackupSet {
                id,
                taken_at,
                parts: BTreeMap::new(),
                temp_files: Vec::new(),
                running: None,
                snapshot: None,
            })
            .snapshot = Some(size);
    }
    let mut sets: Vec<BackupSet> = sets.into_values().collect();
    for set in &mut sets {
        set.temp_files.sort();
        set.running = claim_holder(dir, &set.id);
    }
    Ok(sets)
}

/// What a killed backup left behind, removed (or, in a dry run, to be removed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Abandoned {
    pub id: String,
    /// Whether the backup itself was incomplete (no manifest), rather than only leaving
    /// temporary files beside a complete one.
    pub incomplete: bool,
    pub files: Vec<String>,
    pub bytes: u64,
}

impl Abandoned {
    pub fn describe(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would remove" } else { "removed" };
        let what = if self.incomplete {
            "incomplete backup"
        } else {
            "temporary files of backup"
        };
        format!(
            "{verb} {what} {} ({} files, {}): no running backup holds it",
            self.id,
            self.files.len(),
            human_bytes(self.bytes)
        )
    }
}

/// Removes the files of backups that no running backup holds and that never completed,
/// and the temporary files left beside complete ones (issue 17: killed backups leaked
/// disk forever). A backup still running (its claim names a live process) is left alone.
pub fn remove_abandoned(dir: &Path, dry_run: bool) -> Result<Vec<Abandoned>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    for set in scan(dir)? {
        if set.is_running() || (set.has_manifest() && set.temp_files.is_empty()) {
            continue;
        }
        let mut files: Vec<(String, u64)> = set.temp_files.clone();
        if !set.has_manifest() {
            files.extend(
                set.parts
                    .iter()
                    .map(|(part, size)| (part.file_name(&set.id), *size)),
            );
        }
        if !dry_run {
            // The claim last: until it goes, the id stays taken.
            files.sort_by_key(|(name, _)| name.starts_with(".backup_"));
            for (name, _) in &files {
                match fs::remove_file(dir.join(name)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| {
                            format!("failed to delete {}", dir.join(name).display())
                        })
                    }
                    _ => {}
                }
            }
        }
        removed.push(Abandoned {
            id: set.id.clone(),
            incomplete: !set.has_manifest(),
            bytes: files.iter().map(|(_, n)| n).sum(),
            files: files.into_iter().map(|(n, _)| n).collect(),
        });
    }
    if !dry_run && !removed.is_empty() {
        manifest::sync_dir(dir)?;
    }
    Ok(removed)
}

/// The result of checking one backup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub id: String,
    pub ok: bool,
    pub problems: Vec<String>,
    /// What could not be checked (an encrypted snapshot without its identity).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// How far in the future a backup's id may lie (clock changes, DST) before the backup
/// is refused as misdated: a backup from the future must never take the protection of the
/// newest verified one (issue 17).
const FUTURE_TOLERANCE: chrono::Duration = chrono::Duration::hours(2);

/// Checks a backup: it is not dated in the future, its manifest exists, matches its name
/// and its own checksum and lists files, every file has the size and sha256 the manifest
/// records, and (unless `check` is None) the database copy passes the SQLite check. A
/// repository snapshot: its checksum, and every chunk it uses present.
pub fn verify(
    dir: &Path,
    set: &BackupSet,
    check: Option<Check>,
) -> (Verification, Option<Manifest>) {
    verify_sets(dir, &[set], check, false, None)
        .pop()
        .expect("one result per set")
}

/// [`verify`] with quick_check, and every entry of the uploads archive read back and
/// counted against the manifest: what "verified" means for retention and `verify`.
pub fn verify_deep(dir: &Path, set: &BackupSet) -> (Verification, Option<Manifest>) {
    verify_sets(dir, &[set], Some(Check::Quick), true, None)
        .pop()
        .expect("one result per set")
}

/// Checks several backups, sharing the repository's work between its snapshots (each
/// pack checked and each chunk read once). `identity` opens encrypted snapshots; without
/// it they are checked as far as the host can (chunks present, packs intact). A caller
/// that may run beside a prune holds the repository lock ([`lock_repository`]).
pub fn verify_sets(
    dir: &Path,
    sets: &[&BackupSet],
    check: Option<Check>,
    deep: bool,
    identity: Option<&Path>,
) -> Vec<(Verification, Option<Manifest>)> {
    verify_sets_with(dir, sets, &|_| check, deep, identity)
}

/// [`verify_sets`] with the database check chosen per backup.
fn verify_sets_with(
    dir: &Path,
    sets: &[&BackupSet],
    check: &dyn Fn(&BackupSet) -> Option<Check>,
    deep: bool,
    identity: Option<&Path>,
) -> Vec<(Verification, Option<Manifest>)> {
    let root = repo::root(dir);
    let opened = sets.iter().any(|s| s.is_repository()).then(
        || -> Result<(repo::Repo, Option<repo::crypto::Keyring>)> {
            let keyring = identity.map(repo::crypto::Keyring::from_file).transpose()?;
            Ok((repo::Repo::open(&root)?, keyring))
        },
    );
    let (repository, keyring, open_error) = match opened {
        None => (None, None, None),
        Some(Ok((r, k))) => (Some(r), k, None),
        Some(Err(e)) => (None, None, Some(format!("{e:#}"))),
    };
    let mut checker = repository
        .as_ref()
        .map(|r| repo::read::Checker::new(r, keyring));
    sets.iter()
        .map(|set| {
            let repo_check = if set.is_repository() {
                Some(match (&mut checker, &open_error) {
                    (Some(c), _) => Ok(c),
                    (None, e) => Err(e.clone().unwrap_or_default()),
                })
            } else {
                None
            };
            verify_with(dir, set, check(set), deep, repo_check)
        })
        .collect()
}

/// Takes the repository lock when there is a repository, so a check never races a prune
/// or a backup's cleanup.
pub fn lock_repository(dir: &Path, command: &str) -> Result<Option<crate::lock::DeployLock>> {
    let root = repo::root(dir);
    if !repo::Repo::exists(&root) {
        return Ok(None);
    }
    repo::lock(&root, command).map(Some)
}

fn verify_with(
    dir: &Path,
    set: &BackupSet,
    check: Option<Check>,
    read_back: bool,
    repo_check: Option<std::result::Result<&mut repo::read::Checker<'_>, String>>,
) -> (Verification, Option<Manifest>) {
    let mut problems = Vec::new();
    let now = chrono::Local::now().naive_local();
    if set.taken_at > now + FUTURE_TOLERANCE {
        problems.push(format!(
            "backup {} is dated in the future (now is {}); check the clock of the host that took it",
            set.id,
            now.format("%Y-%m-%d %H:%M")
        ));
    }
    if let Some(repo_check) = repo_check {
        let mut notes = Vec::new();
        match repo_check {
            Err(e) => problems.push(e),
            Ok(checker) => {
                let path = repo::snapshot_path(&checker.repo.root, &set.id);
                match repo::Snapshot::read(&path) {
                    Err(e) => problems.push(format!("{e:#}")),
                    Ok(snap) if snap.id != set.id => problems.push(format!(
                        "snapshot file {} is for backup {}",
                        path.display(),
                        snap.id
                    )),
                    Ok(snap) => {
                        let found = checker.check(&snap, read_back, check);
                        problems.extend(found.problems);
                        notes = found.notes;
                    }
                }
            }
        }
        let verification = Verification {
            id: set.id.clone(),
            ok: problems.is_empty(),
            problems,
            notes,
        };
        return (verification, None);
    }
    let manifest = if set.has_manifest() {
        match Manifest::read(&set.manifest_path(dir)) {
            Ok(m) if m.id == set.id => Some(m),
            Ok(m) => {
                problems.push(format!("manifest is for backup {}, not {}", m.id, set.id));
                None
            }
            Err(e) => {
                problems.push(format!("{e:#}"));
                None
            }
        }
    } else if set.is_running() {
        problems.push("incomplete: a backup is still writing it".to_string());
        None
    } else {
        problems.push("incomplete: no manifest (the backup was killed or failed; `elior backup prune` removes it)".to_string());
        None
    };
    if let Some(m) = &manifest {
        // The manifest first: files are only judged against a manifest that is intact.
        let own = m.problems();
        let manifest_ok = own.is_empty();
        problems.extend(own);
        if manifest_ok {
            problems.extend(manifest::check_files(dir, m));
        }
        if let (true, Some(check), Some(db)) =
            (problems.is_empty(), check, m.file(PartName::Database))
        {
            let checked = match m.database_kind.as_deref() {
                None => snapshot::check_copy(&dir.join(&db.name), check).map(drop),
                Some(postgres::KIND) => postgres::check_dump(&dir.join(&db.name)),
                Some(other) => Err(anyhow::anyhow!(
                    "{} holds a database of kind {other:?}, which this elior cannot read; use a newer elior",
                    db.name
                )),
            };
            if let Err(e) = checked {
                problems.push(format!("{e:#}"));
            }
        }
        if let (true, true, Some(uploads)) =
            (problems.is_empty(), read_back, m.file(PartName::Uploads))
        {
            match archive::read_back(&dir.join(&uploads.name)) {
                Err(e) => problems.push(format!("{e:#}")),
                Ok(found) => {
                    if m.upload_files.is_some_and(|n| n != found.files) {
                        problems.push(format!(
                            "{} holds {} files; the manifest says {}",
                            uploads.name,
                            found.files,
                            m.upload_files.unwrap_or_default()
                        ));
                    }
                    if m.upload_bytes.is_some_and(|n| n != found.bytes) {
                        problems.push(format!(
                            "{} holds {} bytes of files; the manifest says {}",
                            uploads.name,
                            found.bytes,
                            m.upload_bytes.unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    if let Some(stack) = manifest.as_ref().and_then(|m| m.file(PartName::Stack)) {
        if problems.is_empty() && read_back {
            if let Err(e) = stack_files::from_tar(&dir.join(&stack.name)) {
                problems.push(format!("{e:#}"));
            }
        }
    }
    let verification = Verification {
        id: set.id.clone(),
        ok: problems.is_empty(),
        problems,
        notes: Vec::new(),
    };
    (verification, manifest)
}

/// Finds a backup by id, or the newest complete one for `latest`.
pub fn find<'a>(sets: &'a [BackupSet], id: &str) -> Result<&'a BackupSet> {
    if id == "latest" {
        return sets
            .iter()
            .rev()
            .find(|s| s.has_manifest())
            .context("there are no complete backups yet\ntake one with `elior backup`");
    }
    let id = id
        .strip_prefix("backup_")
        .unwrap_or(id)
        .trim_end_matches(".json");
    sets.iter().find(|s| s.id == id).with_context(|| {
        format!("no backup with id {id:?}\nlist them with `elior backup list`; ids look like 20261129_020000")
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PruneReport {
    /// One per complete backup, newest first, with why it is kept or deleted.
    pub decisions: Vec<Decision>,
    pub deleted: Vec<String>,
    /// What killed backups left behind (incomplete backups, temporary files): removed.
    pub abandoned: Vec<Abandoned>,
    /// Ids a running backup is still writing: left alone.
    pub running: Vec<String>,
    /// What the repository's sweep removed (or would), when there is a repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<repo::prune::SweepReport>,
    pub dry_run: bool,
}

/// Deletes a file of an expired backup. One already gone was deleted by another prune
/// that weighed the same backups at the same time (the scheduler's and one run by hand):
/// the backup is gone either way, which is what both wanted.
fn remove_expired(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("failed to delete {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Applies retention to the backup folder. Every complete backup is verified deeply
/// first ([`verify_deep`]); only verified backups that no rule keeps are deleted, and the
/// newest verified backup always stays. Abandoned files of killed backups are removed.
pub fn prune(
    settings: &BackupSettings,
    policy: &Policy,
    now: NaiveDateTime,
    dry_run: bool,
) -> Result<PruneReport> {
    let dir = &settings.backup_dir;
    owner::check(settings)?;
    // Held to the end: no backup adds to the repository while its snapshots are weighed
    // and its unused chunks swept.
    let repo_lock = lock_repository(dir, "elior backup prune")?;
    let abandoned = remove_abandoned(dir, dry_run)?;
    let sets = scan(dir)?;
    let running = sets
        .iter()
        .filter(|s| s.is_running() && !s.has_manifest())
        .map(|s| s.id.clone())
        .collect();
    let complete: Vec<&BackupSet> = sets.iter().filter(|s| s.has_manifest()).collect();
    // Every chunk of every snapshot is read and checked against its name, so each
    // snapshot's database is, page for page, the copy that passed quick_check when it
    // was taken. Rebuilding and checking it again costs a full copy per snapshot (about
    // 4 s a GiB): that is done for the newest snapshot, the one retention protects, and
    // for any snapshot `elior backup verify` is asked about.
    let newest_snapshot = complete
        .iter()
        .rev()
        .find(|s| s.is_repository())
        .map(|s| s.id.clone());
    let rebuild =
        |set: &BackupSet| !set.is_repository() || Some(&set.id) == newest_snapshot.as_ref();
    let checked: Vec<(&BackupSet, Verification, Option<Manifest>)> = complete
        .iter()
        .copied()
        .zip(verify_sets_with(
            dir,
            &complete,
            &|set| rebuild(set).then_some(Check::Quick),
            true,
            None,
        ))
        .map(|(set, (verification, manifest))| (set, verification, manifest))
        .collect();
    let candidates: Vec<Candidate> = checked
        .iter()
        .map(|(set, verification, _)| Candidate {
            id: set.id.clone(),
            taken_at: set.taken_at,
            problem: (!verification.ok).then(|| verification.problems.join("; ")),
        })
        .collect();
    let decisions = retention::plan(&candidates, policy, now);
    fault::point("prune:decided");
    let mut deleted = Vec::new();
    for decision in decisions.iter().filter(|d| d.deletes()) {
        let (set, _, manifest) = checked
            .iter()
            .find(|(s, _, _)| s.id == decision.id)
            .expect("decisions come from the candidates");
        if dry_run {
            continue;
        }
        if set.is_repository() {
            // The snapshot file is the whole backup; its chunks go in the sweep below,
            // if no other snapshot uses them.
            let path = repo::snapshot_path(&repo::root(dir), &set.id);
            remove_expired(&path)?;
            deleted.push(set.id.clone());
            continue;
        }
        let manifest = manifest
            .as_ref()
            .expect("only verified backups are deleted, and they have a manifest");
        // The manifest goes first: once it is gone the backup is incomplete, never
        // mistaken for a whole one, even if we stop halfway (the next prune removes the
        // rest, as no backup holds it).
        let mut paths = vec![set.manifest_path(dir)];
        paths.extend(manifest.files.iter().map(|f| dir.join(&f.name)));
        for path in paths {
            remove_expired(&path)?;
        }
        deleted.push(set.id.clone());
    }
    if !dry_run && !deleted.is_empty() {
        manifest::sync_dir(dir)?;
        let snapshots = repo::root(dir).join(repo::SNAPSHOTS_DIR);
        if snapshots.is_dir() {
            manifest::sync_dir(&snapshots)?;
        }
    }
    fault::point("prune:snapshots-deleted");
    let repository = match repo_lock {
        Some(_) => Some(repo::prune::sweep(&repo::root(dir), dry_run)?),
        None => None,
    };
    drop(repo_lock);
    Ok(PruneReport {
        decisions,
        deleted,
        abandoned,
        running,
        repository,
        dry_run,
    })
}

/// The retention policy of a stack, with optional extra keeps from the command line.
pub fn policy(settings: &BackupSettings, daily: u32, weekly: u32, monthly: u32) -> Policy {
    Policy {
        keep_within_days: settings.retention_days,
        keep_daily: daily,
        keep_weekly: weekly,
        keep_monthly: monthly,
    }
}

/// Refuses an id that names no complete backup, with the reason.
pub fn require_complete(set: &BackupSet) -> Result<()> {
    if !set.has_manifest() {
        bail!(
            "backup {} is incomplete (it has no manifest)\nit may still be running or have failed; pick another with `elior backup list`",
            set.id
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `elior restore` wraps its safety backup's error in context; the CLI's exit code 4
    /// (and the scheduler's prune) must still see a full BACKUP_DIR through it.
    #[test]
    fn a_full_backup_dir_is_seen_through_context() {
        let full: anyhow::Error = BackupDirFull {
            dir: "/srv/elior/backups".into(),
            free: String::new(),
            cause: "No space left on device (os error 28)".into(),
        }
        .into();
        let wrapped = Err::<(), _>(full)
            .context("the safety backup of the current state failed")
            .unwrap_err();
        assert!(wrapped.is::<BackupDirFull>());
        assert!(!anyhow::anyhow!("BACKUP_DIR ran out of space").is::<BackupDirFull>());
    }
}
