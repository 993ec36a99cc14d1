//! Backups of a stack: a consistent, checked copy of the SQLite database and a tar.gz of
//! the uploads, described by a manifest written last; listing, verifying and pruning
//! them; and restoring one (see [`restore`]).
//!
//! This module does the file work. Which backups to delete is decided by the pure
//! [`crate::plan::retention`]; which container to stop during a restore comes from the
//! caller. Everything is written under a temporary name, fsynced, then renamed; a failed
//! backup leaves nothing behind.

pub mod archive;
pub mod fault;
pub mod journal;
pub mod manifest;
pub mod names;
pub mod restore;
pub mod settings;
pub mod snapshot;

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
pub use settings::BackupSettings;
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
            .any(|part| dir.join(part.file_name(&id)).exists());
        let claim = manifest::temp_path(&dir.join(Part::Manifest.file_name(&id)));
        if !used {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&claim)
            {
                Ok(_) => return Ok((id, claim)),
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

/// Takes a backup of the stack: database snapshot, uploads archive, then the manifest.
pub fn create(
    settings: &BackupSettings,
    options: &CreateOptions,
    reporter: &mut Reporter,
) -> Result<Manifest> {
    let started = Instant::now();
    let deadline = started + options.time_limit;
    let dir = &settings.backup_dir;
    ensure_backup_dir(dir)?;
    let (id, claim) = claim_id(dir)?;
    let mut cleanup = Cleanup(vec![claim.clone()]);
    let mut files = Vec::new();
    let mut schema_version = None;
    let mut database_check = None;

    let db_present = settings.database_path.is_file();
    if db_present || options.require_database {
        let final_path = dir.join(Part::Database.file_name(&id));
        let temp = manifest::temp_path(&final_path);
        cleanup.0.extend([temp.clone(), final_path.clone()]);
        reporter.phase(&format!(
            "backing up database {}",
            settings.database_path.display()
        ));
        let snap = snapshot::take(&settings.database_path, &temp, options.check, deadline)?;
        manifest::commit(&temp, &final_path)?;
        reporter.phase(&format!(
            "  database: {} copied in {:.1}s, {} ok",
            human_bytes(snap.size),
            snap.copy_duration.as_secs_f64(),
            options.check.pragma()
        ));
        schema_version = snap.schema_version;
        database_check = Some(options.check.pragma().to_string());
        files.push(FileRecord {
            part: PartName::Database,
            name: Part::Database.file_name(&id),
            size: snap.size,
            sha256: snap.sha256,
        });
    } else {
        reporter.phase(&format!(
            "no database at {}; leaving it out",
            settings.database_path.display()
        ));
    }

    let mut upload_files = None;
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
        manifest::commit(&temp, &final_path)?;
        reporter.phase(&format!(
            "  uploads: {} files, {} -> {} in {:.1}s",
            stats.files,
            human_bytes(stats.content_bytes),
            human_bytes(stats.size),
            archive_started.elapsed().as_secs_f64()
        ));
        upload_files = Some(stats.files);
        files.push(FileRecord {
            part: PartName::Uploads,
            name: Part::Uploads.file_name(&id),
            size: stats.size,
            sha256: stats.sha256,
        });
    } else {
        reporter.phase(&format!(
            "no uploads folder at {}; leaving it out",
            settings.uploads_dir.display()
        ));
    }

    let manifest = Manifest {
        format: manifest::FORMAT_VERSION,
        id: id.clone(),
        created_at: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        elior_version: crate::VERSION.to_string(),
        schema_version,
        reason: options.reason.to_string(),
        database_check,
        upload_files,
        duration_ms: started.elapsed().as_millis() as u64,
        files,
    };
    manifest::write(dir, &manifest)?;
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
}

impl BackupSet {
    pub fn has_manifest(&self) -> bool {
        self.parts.contains_key(&Part::Manifest)
    }

    pub fn manifest_path(&self, dir: &Path) -> PathBuf {
        dir.join(Part::Manifest.file_name(&self.id))
    }

    pub fn total_size(&self) -> u64 {
        self.parts.values().sum()
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
        let Some((part, id)) = name.to_str().and_then(names::parse_file_name) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let taken_at = names::parse_id(&id).expect("parse_file_name checked the id");
        sets.entry(id.clone())
            .or_insert_with(|| BackupSet {
                id,
                taken_at,
                parts: BTreeMap::new(),
            })
            .parts
            .insert(part, meta.len());
    }
    Ok(sets.into_values().collect())
}

/// The result of checking one backup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub id: String,
    pub ok: bool,
    pub problems: Vec<String>,
}

/// Checks a backup: its manifest exists and matches its name, every file has the size and
/// sha256 the manifest records, and (unless `check` is None) the database copy passes
/// the SQLite check.
pub fn verify(
    dir: &Path,
    set: &BackupSet,
    check: Option<Check>,
) -> (Verification, Option<Manifest>) {
    let mut problems = Vec::new();
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
    } else {
        problems.push("incomplete: no manifest (still running, or failed)".to_string());
        None
    };
    if let Some(m) = &manifest {
        problems.extend(manifest::check_files(dir, m));
        if let (true, Some(check), Some(db)) =
            (problems.is_empty(), check, m.file(PartName::Database))
        {
            if let Err(e) = snapshot::check_copy(&dir.join(&db.name), check) {
                problems.push(format!("{e:#}"));
            }
        }
    }
    let verification = Verification {
        id: set.id.clone(),
        ok: problems.is_empty(),
        problems,
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
    pub decisions: Vec<Decision>,
    /// Ids retention chose but that failed their checksums: left for a person to look at.
    pub damaged: Vec<Verification>,
    /// Ids without a manifest: incomplete or in progress, never touched.
    pub incomplete: Vec<String>,
    pub deleted: Vec<String>,
    /// Temporary files of backups that were killed mid-way, older than a day: removed.
    pub stale_temp_files: Vec<String>,
    pub dry_run: bool,
}

/// How old a temporary backup file must be before prune treats it as left by a killed
/// backup (every backup has a time limit far below this).
const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Hidden `.NAME.tmp` files of elior backups older than [`STALE_TEMP_AGE`].
fn stale_temp_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut stale = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("failed to list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("failed to list {}", dir.display()))?;
        let name = entry.file_name();
        let ours = name
            .to_str()
            .and_then(|n| n.strip_prefix('.')?.strip_suffix(".tmp"))
            .and_then(names::parse_file_name)
            .is_some();
        let old = entry
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        if ours && old {
            stale.push(entry.path());
        }
    }
    Ok(stale)
}

/// Applies retention to the backup folder. Only complete backups whose files match their
/// manifest are deleted; the newest verified backup always stays.
pub fn prune(
    settings: &BackupSettings,
    policy: &Policy,
    now: NaiveDateTime,
    dry_run: bool,
) -> Result<PruneReport> {
    let dir = &settings.backup_dir;
    let sets = scan(dir)?;
    let complete: Vec<&BackupSet> = sets.iter().filter(|s| s.has_manifest()).collect();
    let incomplete = sets
        .iter()
        .filter(|s| !s.has_manifest())
        .map(|s| s.id.clone())
        .collect();
    // The newest backup whose checksums hold; checksums suffice, as the database copy
    // passed its SQLite check before its manifest was written.
    let newest_verified = complete
        .iter()
        .rev()
        .find(|s| verify(dir, s, None).0.ok)
        .map(|s| s.id.clone());
    let candidates: Vec<Candidate> = complete
        .iter()
        .map(|s| Candidate {
            id: s.id.clone(),
            taken_at: s.taken_at,
        })
        .collect();
    let decisions = retention::plan(&candidates, newest_verified.as_deref(), policy, now);
    let mut damaged = Vec::new();
    let mut deleted = Vec::new();
    for decision in decisions.iter().filter(|d| d.deletes()) {
        let set = complete
            .iter()
            .find(|s| s.id == decision.id)
            .expect("decisions come from the candidates");
        let (verification, manifest) = verify(dir, set, None);
        let Some(manifest) = manifest.filter(|_| verification.ok) else {
            damaged.push(verification);
            continue;
        };
        if dry_run {
            continue;
        }
        // The manifest goes first: once it is gone the backup is incomplete, never
        // mistaken for a whole one, even if we stop halfway.
        let mut paths = vec![set.manifest_path(dir)];
        paths.extend(manifest.files.iter().map(|f| dir.join(&f.name)));
        for path in paths {
            fs::remove_file(&path)
                .with_context(|| format!("failed to delete {}", path.display()))?;
        }
        deleted.push(set.id.clone());
    }
    let mut stale_temp = Vec::new();
    for path in stale_temp_files(dir)? {
        if !dry_run {
            fs::remove_file(&path)
                .with_context(|| format!("failed to delete {}", path.display()))?;
        }
        stale_temp.push(
            path.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        );
    }
    if !dry_run && !deleted.is_empty() {
        manifest::sync_dir(dir)?;
    }
    Ok(PruneReport {
        decisions,
        damaged,
        incomplete,
        deleted,
        stale_temp_files: stale_temp,
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
