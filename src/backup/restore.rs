//! Restoring a backup over a stack, so that it either fully happens or leaves the stack as
//! it was.
//!
//! Order (issues 6 and 17): verify the backup (a bad one is refused before anything is
//! touched); take the deploy lock; write the restore journal ([`super::journal`]); stage
//! the restored database and uploads beside their targets (a copy and an extraction into
//! temporary names, fsynced, done while the API still serves, so an unsafe archive is
//! refused before anything else happens); take a safety backup of the current state; stop
//! the API if it runs; record every rename of the swap in the journal, then do them
//! (moving the current files, and any `-wal`/`-shm`, aside); mark the journal committed;
//! start the API and wait until it is healthy; remove what was moved aside. A failure is
//! undone through the journal (a committed swap whose API stays unhealthy is first marked
//! uncommitted again), as the next command would undo it after a crash, and the API is
//! started again. A symlinked uploads/ keeps its link:
//! the folder it points at is swapped.
//!
//! The API container is driven through [`ApiControl`], so the deploy code can plug in its
//! engine client; [`NoStackRunning`] is the bare-directory case. This module never talks
//! to Docker itself.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::archive::{self, ExtractStats};
use super::fault;
use super::journal::{Journal, Phase, Rename};
use super::manifest::{self, PartName};
use super::postgres;
use super::snapshot;
use super::stack_files;
use super::{repo, BackupSettings, Check, CreateOptions, Reporter};
use crate::lock::{self, DeployLock};
use crate::plan::render::API_UID;

/// How a restore stops and starts the stack's API.
pub trait ApiControl {
    /// Whether the API is running now (and so must be stopped and started again).
    fn is_running(&mut self) -> Result<bool>;
    fn stop(&mut self) -> Result<()>;
    /// Starts the API and waits until it reports healthy.
    fn start(&mut self) -> Result<()>;
}

/// A stack directory with no API running: files are restored in place.
pub struct NoStackRunning;

impl ApiControl for NoStackRunning {
    fn is_running(&mut self) -> Result<bool> {
        Ok(false)
    }
    fn stop(&mut self) -> Result<()> {
        Ok(())
    }
    fn start(&mut self) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub created_at: String,
    pub safety_backup: Option<String>,
    pub database: Option<PathBuf>,
    /// The PostgreSQL database (`host:port/name`) a dump was restored into.
    pub postgres: Option<String>,
    pub schema_version: Option<i64>,
    pub uploads: Option<PathBuf>,
    pub upload_stats: Option<ExtractStats>,
    /// The certificate and ACME account put back (where the stack had none) or kept.
    pub stack_files: Vec<stack_files::PutBack>,
    /// What became of the backup's env file, which the restore command puts back first
    /// ([`stack_files::put_back_env`]).
    pub env_file: Option<stack_files::EnvPutBack>,
    pub api_restarted: bool,
    /// Swarm mode with uploads on S3: the objects the backup lists, checked against the
    /// bucket (a restore cannot bring back a deleted one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploads_bucket: Option<super::bucket_uploads::UploadsCheck>,
}

/// What a restore puts back: an archive backup (its manifest) or a repository snapshot
/// (opened, its content decrypted when encrypted).
// One per restore: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Source {
    Archive(manifest::Manifest),
    Repository(RepoSource),
}

struct RepoSource {
    repo: repo::Repo,
    snapshot: repo::Snapshot,
    content: repo::Content,
    keyring: Option<repo::crypto::Keyring>,
    /// Held while staging reads the repository, so no prune sweeps under it; released
    /// before the safety backup, which takes it again.
    lock: Option<crate::lock::DeployLock>,
}

impl Source {
    /// The kind of the database file: `None` for a SQLite copy, or [`postgres::KIND`].
    fn database_kind(&self) -> Option<&str> {
        match self {
            Source::Archive(m) => m.database_kind.as_deref(),
            Source::Repository(r) => r.content.database.as_ref()?.kind.as_deref(),
        }
    }

    fn id(&self) -> &str {
        match self {
            Source::Archive(m) => &m.id,
            Source::Repository(r) => &r.snapshot.id,
        }
    }

    fn created_at(&self) -> &str {
        match self {
            Source::Archive(m) => &m.created_at,
            Source::Repository(r) => &r.snapshot.created_at,
        }
    }

    fn schema_version(&self) -> Option<i64> {
        match self {
            Source::Archive(m) => m.schema_version,
            Source::Repository(r) => r.content.schema_version,
        }
    }

    fn has_database(&self) -> bool {
        match self {
            Source::Archive(m) => m.file(PartName::Database).is_some(),
            Source::Repository(r) => r.content.database.is_some(),
        }
    }

    fn has_uploads(&self) -> bool {
        match self {
            Source::Archive(m) => m.file(PartName::Uploads).is_some(),
            Source::Repository(r) => r.content.uploads.is_some(),
        }
    }

    /// Bytes of the database file or dump it holds.
    fn database_size(&self) -> Option<u64> {
        match self {
            Source::Archive(m) => m.file(PartName::Database).map(|f| f.size),
            Source::Repository(r) => r.content.database.as_ref().map(|d| d.size),
        }
    }

    /// (bytes, files) of the uploads, as recorded: what extraction may unpack.
    fn recorded_uploads(&self) -> Option<(u64, u64)> {
        match self {
            Source::Archive(m) => m.upload_bytes.zip(m.upload_files),
            Source::Repository(r) => r.content.uploads.as_ref().map(|u| (u.bytes, u.files)),
        }
    }

    fn release(&mut self) {
        if let Source::Repository(r) = self {
            r.lock = None;
        }
    }
}

/// Finds backup `id` and checks it before anything is touched: an archive backup is
/// verified (checksums, quick_check); a snapshot is checked and opened (which needs the
/// identity when it is encrypted), under the repository lock.
fn open_source(settings: &BackupSettings, id: &str, identity: Option<&Path>) -> Result<Source> {
    let dir = &settings.backup_dir;
    let sets = super::scan(dir)?;
    let set = super::find(&sets, id)?;
    super::require_complete(set)?;
    if !set.is_repository() {
        let (verification, manifest) = super::verify(dir, set, Some(Check::Quick));
        return match manifest.filter(|_| verification.ok) {
            Some(m) => Ok(Source::Archive(m)),
            None => bail!(
                "backup {} failed verification; nothing was changed\n{}",
                set.id,
                verification.problems.join("\n")
            ),
        };
    }
    let root = repo::root(dir);
    let refused = |e: anyhow::Error| {
        anyhow!(
            "backup {} cannot be restored; nothing was changed\n{e:#}",
            set.id
        )
    };
    let mut keyring = identity.map(repo::crypto::Keyring::from_file).transpose()?;
    let lock = repo::lock(&root, &format!("elior restore {}", set.id))?;
    let repository = repo::Repo::open(&root)?;
    let snapshot = repo::Snapshot::read(&repo::snapshot_path(&root, &set.id)).map_err(refused)?;
    let problems = snapshot.problems();
    if !problems.is_empty() {
        return Err(refused(anyhow!(problems.join("\n"))));
    }
    let content = snapshot
        .open(&repository, keyring.as_mut())
        .map_err(refused)?;
    // Every chunk it uses must be there; each is checked as it is read while staging.
    let found = repo::read::Checker::new(&repository, None).check(&snapshot, false, None);
    if !found.problems.is_empty() {
        return Err(refused(anyhow!(found.problems.join("\n"))));
    }
    Ok(Source::Repository(RepoSource {
        repo: repository,
        snapshot,
        content,
        keyring,
        lock: Some(lock),
    }))
}

/// Restores backup `id` (or `latest`) over the stack in `settings`. `identity` (an age
/// identity file) opens an encrypted snapshot.
pub fn restore(
    settings: &BackupSettings,
    id: &str,
    identity: Option<&Path>,
    api: &mut dyn ApiControl,
    reporter: &mut Reporter,
) -> Result<RestoreReport> {
    super::owner::adopt(settings)?;
    reporter.phase(&format!("verifying backup {id}"));
    let mut source = open_source(settings, id, identity)?;
    let backup_id = source.id().to_string();

    let _lock = DeployLock::acquire(&settings.stack_dir, &format!("elior restore {backup_id}"))?;
    let outcome = restore_locked(settings, &mut source, api, reporter);
    let record = match &outcome {
        Ok(report) => serde_json::json!({
            "backup": backup_id,
            "result": "ok",
            "safety_backup": report.safety_backup,
        }),
        Err(e) => serde_json::json!({
            "backup": backup_id,
            "result": "failed",
            "error": format!("{e:#}"),
        }),
    };
    if let Err(e) = lock::audit(&settings.stack_dir, "restore", record) {
        tracing::warn!("{e:#}");
    }
    outcome
}

fn restore_locked(
    settings: &BackupSettings,
    source: &mut Source,
    api: &mut dyn ApiControl,
    reporter: &mut Reporter,
) -> Result<RestoreReport> {
    let dir = &settings.backup_dir;
    let has_db = source.has_database();
    // The backup's database must be of the stack's backend: a dump is no SQLite file, and
    // a SQLite copy is no dump (issue 17, item 9). Refused before anything is touched.
    let pg_dump = match (has_db, source.database_kind(), settings.postgres_database()) {
        (false, _, _) => None,
        (true, Some(postgres::KIND), Some(target)) => Some((
            target,
            match &*source {
                Source::Archive(m) => {
                    dir.join(&m.file(PartName::Database).expect("has a database").name)
                }
                // Rebuilt from its chunks while staging, for pg_restore to read.
                Source::Repository(_) => dir.join(format!(".restore-{}.pgdump", std::process::id())),
            },
        )),
        (true, None, None) => None,
        (true, Some(postgres::KIND), None) => bail!(
            "backup {} holds a PostgreSQL dump, but this stack's DATABASE_URL is SQLite; nothing was changed\nset DATABASE_URL to the PostgreSQL database to restore into (a swarm stack's backup goes back into a swarm stack, MODE=swarm, or that database), or restore the dump by hand with `pg_restore`; `elior db copy` and `elior migrate-to-swarm` move data from SQLite to PostgreSQL only",
            source.id()
        ),
        (true, None, Some(postgres::Source::Url(url))) => bail!(
            "backup {} holds a SQLite database, but this stack's DATABASE_URL is PostgreSQL ({}); nothing was changed\nto move it there: restore it into a SQLite stack, then `elior db copy --to DATABASE_URL`",
            source.id(),
            url.target()
        ),
        (true, None, Some(service)) => bail!(
            "backup {} holds a SQLite database, but this stack runs on a swarm with its database {service}; nothing was changed\nto move a single-host stack's data onto the swarm, restore it into that single-host stack and run `elior migrate-to-swarm` there (or `elior db copy --to DATABASE_URL`)",
            source.id()
        ),
        (true, Some(other), _) => bail!(
            "backup {} holds a database of kind {other:?}, which this elior cannot restore; nothing was changed\nuse a newer elior",
            source.id()
        ),
    };
    let uploads_bucket = check_bucket_uploads(settings, &*source, reporter);
    let stack_is_pg = settings.postgres_database().is_some();
    let was_running = api.is_running()?;
    if !was_running && !stack_is_pg {
        // Fail before doing anything when a server we do not control has the file open.
        refuse_if_open(&settings.database_path)?;
    }
    let database = &settings.database_path;
    // A symlinked uploads/ (to a bigger disk) keeps its link: the folder it points at is
    // what is restored, beside itself.
    let uploads = uploads_target(&settings.uploads_dir)?;
    // The database swapped as files through the journal: SQLite only. A dump goes in
    // with one pg_restore transaction, after the API is stopped.
    let has_file_db = has_db && pg_dump.is_none();
    let has_uploads = source.has_uploads();

    let mut journal = Journal::new(source.id(), &settings.stack_dir, database);
    if has_file_db {
        journal.staged.push(beside(database, "restore"));
    }
    if has_uploads {
        journal.staged.push(beside(&uploads, "restore"));
    }
    // A dump rebuilt from the repository: staged last, so a restore killed before
    // pg_restore read it leaves no copy behind.
    let rebuilt_dump = match (&*source, &pg_dump) {
        (Source::Repository(_), Some((_, path))) => Some(path.clone()),
        _ => None,
    };
    journal.staged.extend(rebuilt_dump.clone());
    // On a new host, the folders the API container mounts do not exist yet: created
    // here, they are the API's, as `elior init` makes them, or it could not open them.
    let api_owner = api_owned_layout(settings).then_some((API_UID, API_UID, 0o755));
    // A replaced uploads folder keeps its owner and mode.
    let uploads_owner = fs::metadata(&uploads)
        .ok()
        .map(|m| (m.uid(), m.gid(), m.mode()))
        .or(api_owner);
    for path in [database.as_path(), uploads.as_path()] {
        let parent = path.parent().unwrap_or(Path::new("."));
        let fresh = !parent.exists();
        fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
        if let (true, Some(owner)) = (fresh && path == database.as_path(), api_owner) {
            give(parent, owner)?;
        }
    }
    let database_size = source.database_size().unwrap_or(0);
    let mut staged_sizes = Vec::new();
    if has_file_db {
        staged_sizes.push((database.parent().unwrap_or(Path::new(".")), database_size));
    }
    if let (true, Some((bytes, files))) = (has_uploads, source.recorded_uploads()) {
        // Each file takes at least one 4 KiB block.
        let uploads_parent = uploads.parent().unwrap_or(Path::new("."));
        staged_sizes.push((uploads_parent, bytes + files * 4096));
    }
    if let Some(dump) = &rebuilt_dump {
        staged_sizes.push((dump.parent().unwrap_or(dir), database_size));
    }
    // The safety backup copies the live database into BACKUP_DIR. (Its uploads archive is
    // left to that backup's own failure: compressed, its size is not known here, and a
    // guess could refuse a restore that fits.)
    if let Some(live) = fs::metadata(database).ok().filter(|_| !stack_is_pg) {
        staged_sizes.push((dir.as_path(), live.len()));
    }
    check_room(&staged_sizes)?;
    // Written before the first staged byte, so a restore killed while staging leaves no
    // copy behind that blocks or fills the disk for the next one.
    journal.write()?;
    fault::point("restore:journal");

    let mut safety_backup = None;
    let mut upload_stats = None;
    let mut files_to_put_back = Vec::new();
    let mut stopped = false;
    let mut pg_restored = false;
    let outcome = (|| -> Result<()> {
        if has_file_db {
            reporter.phase("staging the database");
            let temp = &journal.staged[0];
            match &mut *source {
                Source::Archive(m) => {
                    let db = m.file(PartName::Database).expect("has a database");
                    stage_database(&dir.join(&db.name), database, temp)?
                }
                Source::Repository(r) => stage_snapshot_database(r, database, temp)?,
            }
        }
        if has_uploads {
            reporter.phase("extracting the uploads");
            let temp = &journal.staged[usize::from(has_file_db)];
            let recorded = source.recorded_uploads();
            upload_stats = Some(match &mut *source {
                Source::Archive(m) => {
                    let record = m.file(PartName::Uploads).expect("has uploads");
                    stage_uploads(temp, recorded, |dest, limits| {
                        archive::extract(&dir.join(&record.name), dest, limits)
                    })?
                }
                Source::Repository(r) => stage_uploads(temp, recorded, |dest, limits| {
                    extract_snapshot_uploads(r, dest, limits.clone())
                })?,
            });
            if let Some(owner) = uploads_owner {
                give(temp, owner)?;
            }
        }
        if let (Source::Repository(r), Some(temp)) = (&mut *source, &rebuilt_dump) {
            reporter.phase("rebuilding the database dump");
            rebuild_database(r, temp)?;
        }
        match &mut *source {
            Source::Repository(r) => {
                if let Some(part) = &r.content.stack_files {
                    files_to_put_back =
                        repo::read::stack_files(&r.repo, part, &r.snapshot.id, r.keyring.as_mut())
                            .with_context(|| {
                                format!("backup {} cannot be restored", r.snapshot.id)
                            })?;
                }
            }
            Source::Archive(m) => {
                if let Some(record) = m.file(PartName::Stack) {
                    files_to_put_back = stack_files::from_tar(&dir.join(&record.name))?;
                }
            }
        }
        source.release();
        fault::point("restore:staged");

        let has_state = stack_is_pg || database.is_file() || uploads.is_dir();
        if has_state {
            reporter.phase("taking a safety backup of the current state");
            let options = CreateOptions {
                reason: "pre-restore",
                require_database: false,
                ..CreateOptions::default()
            };
            let safety = super::create(settings, &options, reporter).context(
                "the safety backup of the current state failed, so nothing was restored or changed",
            )?;
            reporter.phase(&format!("  safety backup {}", safety.id()));
            safety_backup = Some(safety.id().to_string());
        }
        fault::point("restore:safety-backup");

        if was_running {
            reporter.phase("stopping the API");
            api.stop()
                .context("failed to stop the API; nothing was changed")?;
            stopped = true;
        }
        if let Some((target, dump)) = &pg_dump {
            reporter.phase(&format!(
                "restoring PostgreSQL database {target} (pg_restore, one transaction)"
            ));
            super::postgres::restore_to(target, dump)?;
            pg_restored = true;
            fault::point("restore:pg-restored");
            if let Some(temp) = &rebuilt_dump {
                fs::remove_file(temp)
                    .with_context(|| format!("failed to remove {}", temp.display()))?;
            }
        } else {
            refuse_if_open(database)?;
        }
        plan_swap(&mut journal, database, &uploads, has_file_db, has_uploads);
        journal.phase = Phase::Swapping;
        journal.write()?;
        fault::point("restore:swapping");
        for (i, rename) in journal.renames.iter().enumerate() {
            fs::rename(&rename.from, &rename.to).with_context(|| {
                let hint = if rename.to == uploads || rename.from == uploads {
                    "\nif uploads/ is a mount point, restore into it by hand"
                } else {
                    ""
                };
                format!(
                    "failed to rename {} to {}{hint}",
                    rename.from.display(),
                    rename.to.display()
                )
            })?;
            fault::point(&format!("restore:rename-{}", i + 1));
        }
        for dir in [database.as_path(), uploads.as_path()] {
            manifest::sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
        }
        // Committed before the API starts: the API (in its container) must find the
        // restored database in place and a journal that asks nothing more of it.
        journal.phase = Phase::Committed;
        journal.write()?;
        fault::point("restore:committed");
        if was_running {
            reporter.phase("starting the API and waiting until it is healthy");
            api.start()?;
        }
        Ok(())
    })();

    if let Err(error) = outcome {
        let swapped = journal.phase != Phase::Staging;
        // Undo through the journal, exactly as the next command would after a crash. A
        // swap committed but whose API did not come up healthy is undone too: the journal
        // goes back to swapping first, so a crash meanwhile also ends in the old state.
        let rollback = (|| {
            if journal.phase == Phase::Committed {
                journal.phase = Phase::Swapping;
                journal.write()?;
            }
            journal.settle()
        })();
        let restart = if stopped { api.start().err() } else { None };
        let mut message = format!("{error:#}");
        match rollback {
            Ok(_) if swapped && pg_restored => {
                message.push_str("\nthe files the restore swapped were put back")
            }
            Ok(_) if swapped => message.push_str("\nthe pre-restore state was put back"),
            Ok(_) => {}
            Err(e) => message.push_str(&format!(
                "\nputting the pre-restore state back also failed: {e:#}\nrestore the safety backup {} by hand",
                safety_backup.as_deref().unwrap_or("(none)")
            )),
        }
        if pg_restored {
            // Its transaction committed: the journal cannot take it back.
            message.push_str(&format!(
                "\nthe PostgreSQL database is backup {} (its pg_restore committed); `elior restore {}` puts the state before it back",
                source.id(),
                safety_backup.as_deref().unwrap_or("(none)")
            ));
        }
        if let Some(e) = restart {
            message.push_str(&format!("\nand the API did not start again: {e:#}"));
        }
        return Err(anyhow!(message));
    }

    journal.settle()?;
    // After the swap, outside the journal: these files are only written where the stack
    // has none (a new host), so there is no old state to go back to.
    let stack_files = stack_files::put_back(&settings.stack_dir, &files_to_put_back)?;

    Ok(RestoreReport {
        backup: source.id().to_string(),
        created_at: source.created_at().to_string(),
        safety_backup,
        database: has_file_db.then(|| settings.database_path.clone()),
        postgres: pg_dump.as_ref().map(|(target, _)| target.to_string()),
        schema_version: source.schema_version(),
        uploads: has_uploads.then(|| settings.uploads_dir.clone()),
        upload_stats,
        stack_files,
        env_file: None,
        api_restarted: was_running,
        uploads_bucket,
    })
}

/// The uploads a backup lists (a swarm stack's, on S3) checked against the bucket before
/// anything is touched. Missing objects do not stop the restore, which cannot bring them
/// back: they are named, here and in the report.
fn check_bucket_uploads(
    settings: &BackupSettings,
    source: &Source,
    reporter: &mut Reporter,
) -> Option<super::bucket_uploads::UploadsCheck> {
    let (Source::Archive(m), Some(bucket)) = (source, &settings.uploads_bucket) else {
        return None;
    };
    let listed = m.upload_objects.as_ref()?;
    reporter.phase(&format!(
        "checking that the {} uploads the backup lists are in {}",
        listed.len(),
        bucket.url()
    ));
    match super::bucket_uploads::check(bucket, listed) {
        Ok(check) => {
            for problem in check.problems() {
                eprintln!("warning: {problem}");
            }
            Some(check)
        }
        Err(e) => {
            eprintln!(
                "warning: could not list {} to check the backup's uploads: {e:#}",
                bucket.url()
            );
            None
        }
    }
}

/// The folder restored uploads go into: `uploads` itself, or where it points when it is a
/// symlink (even a dangling one, whose target is then created).
/// Refuses, before anything is written, a restore whose copies cannot fit: the database
/// and the uploads are staged in full beside the live ones before the swap, and the
/// safety backup copies the live database into BACKUP_DIR, so each disk needs what is
/// written on it free (a full disk used to fail part-way with a bare ENOSPC).
fn check_room(staged: &[(&Path, u64)]) -> Result<()> {
    let mut per_disk: Vec<(u64, &Path, u64)> = Vec::new();
    for &(folder, bytes) in staged {
        let Ok(meta) = fs::metadata(folder) else {
            continue;
        };
        match per_disk.iter_mut().find(|(dev, ..)| *dev == meta.dev()) {
            Some((_, _, need)) => *need += bytes,
            None => per_disk.push((meta.dev(), folder, bytes)),
        }
    }
    for (_, folder, need) in per_disk {
        let Some(disk) = crate::fsutil::disk_space(folder) else {
            continue;
        };
        if disk.free_bytes < need {
            bail!(
                "the disk of {} has {} free, but this restore writes {} there before it swaps anything (the backup's copy beside the live data, and the safety backup of the live database); nothing was changed\nmake room on that disk (or move the stack's data to a larger one), then restore again",
                folder.display(),
                super::human_bytes(disk.free_bytes),
                super::human_bytes(need)
            );
        }
    }
    Ok(())
}

fn uploads_target(uploads: &Path) -> Result<PathBuf> {
    let is_link = fs::symlink_metadata(uploads).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return Ok(uploads.to_path_buf());
    }
    if let Ok(real) = fs::canonicalize(uploads) {
        return Ok(real);
    }
    let link = fs::read_link(uploads)
        .with_context(|| format!("failed to read symlink {}", uploads.display()))?;
    let target = uploads.parent().unwrap_or(Path::new(".")).join(link);
    if fs::symlink_metadata(&target).is_ok() {
        bail!(
            "uploads folder {} is a symlink that does not resolve to a folder\npoint it at a folder, or replace it with one, then restore again",
            uploads.display()
        );
    }
    Ok(std::path::absolute(&target).unwrap_or(target))
}

/// Fills in the journal's swap: the live database, its sidecars and the uploads folder
/// are moved aside, then the staged copies are moved in.
fn plan_swap(journal: &mut Journal, database: &Path, uploads: &Path, db: bool, up: bool) {
    let mut staged = journal.staged.clone().into_iter();
    let aside = |journal: &mut Journal, path: &Path| {
        if fs::symlink_metadata(path).is_ok() {
            let to = beside(path, "pre-restore");
            journal.renames.push(Rename {
                from: path.to_path_buf(),
                to: to.clone(),
            });
            journal.aside.push(to);
        }
    };
    if db {
        // A stale -wal beside the restored file would be replayed into it: move the live
        // database and all its sidecar files aside together.
        aside(journal, database);
        for sidecar in snapshot::sidecar_files(database) {
            aside(journal, &sidecar);
            journal.sidecars.push(sidecar);
        }
        let from = staged.next().expect("the database is staged");
        journal.renames.push(Rename {
            from,
            to: database.to_path_buf(),
        });
    }
    if up {
        aside(journal, uploads);
        let from = staged.next().expect("the uploads are staged");
        journal.renames.push(Rename {
            from,
            to: uploads.to_path_buf(),
        });
    }
}

/// Refuses to swap a database file that another process has open: a server writing to it
/// would carry on writing to the file moved aside, and its writes would be lost.
pub(crate) fn refuse_if_open(db: &Path) -> Result<()> {
    let holders = processes_holding(db);
    if holders.is_empty() {
        return Ok(());
    }
    let who: Vec<String> = holders
        .iter()
        .map(|pid| {
            let name = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{pid} ({})", name.trim())
        })
        .collect();
    bail!(
        "database {} is open by process {}; restoring under a running server would lose its writes\nstop the API first (elior down, or stop that process), then restore again; nothing was changed",
        db.display(),
        who.join(", ")
    )
}

/// Processes other than this one with `path` open, matched by device and inode so a
/// container's view of the same file counts too. Empty where /proc cannot be read.
fn processes_holding(path: &Path) -> Vec<u32> {
    let Ok(target) = fs::metadata(path) else {
        return Vec::new();
    };
    let me = std::process::id();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    fs::metadata(fd.path())
                        .is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino())
                })
            })
        })
        .collect()
}

/// A sibling of `target` with a hidden, process-unique name.
fn beside(target: &Path, label: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{label}-{}", std::process::id()))
}

/// The owner and mode the restored file should get: those of the file it replaces, or
/// else the folder's owner with mode 0600.
fn owner_and_mode(existing: &Path, parent: &Path, default_mode: u32) -> Option<(u32, u32, u32)> {
    if let Ok(meta) = fs::metadata(existing) {
        return Some((meta.uid(), meta.gid(), meta.mode() & 0o7777));
    }
    fs::metadata(parent)
        .ok()
        .map(|m| (m.uid(), m.gid(), default_mode))
}

/// Whether the stack runs its API in a container, which mounts `DIR/data` (where the
/// database is) and `DIR/uploads` and runs as [`API_UID`].
fn api_owned_layout(settings: &BackupSettings) -> bool {
    let stack = std::path::absolute(&settings.stack_dir).unwrap_or_default();
    settings.database_path.parent() == Some(stack.join(super::settings::DATA_DIR).as_path())
}

/// Gives `path` an owner and mode. Only root may give a file away; otherwise it stays
/// ours, as a non-root restore of a bare directory expects.
fn give(path: &Path, (uid, gid, mode): (u32, u32, u32)) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
        .with_context(|| format!("failed to set the mode of {}", path.display()))?;
    let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    Ok(())
}

/// Copies the backup's database to `temp` beside `target`, with the owner and mode of the
/// file it replaces, fsynced.
fn stage_database(backup: &Path, target: &Path, temp: &Path) -> Result<()> {
    let _ = fs::remove_file(temp);
    fs::copy(backup, temp)
        .with_context(|| format!("failed to copy {} to {}", backup.display(), temp.display()))?;
    finish_staged_database(target, temp)
}

/// Rebuilds a snapshot's database at `temp` beside `target` (see [`rebuild_database`]),
/// with the owner and mode of the file it replaces.
fn stage_snapshot_database(source: &mut RepoSource, target: &Path, temp: &Path) -> Result<()> {
    rebuild_database(source, temp)?;
    finish_staged_database(target, temp)
}

/// Rebuilds a snapshot's database file at `temp` from its chunks (each checked against
/// its name, the whole against the sha256 recorded) and checks it before it can be used:
/// quick_check for a SQLite database, `pg_restore --list` for a dump.
fn rebuild_database(source: &mut RepoSource, temp: &Path) -> Result<()> {
    let db = source.content.database.as_ref().expect("has a database");
    let out = manifest::create_private(temp)?;
    repo::read::write_database(
        &source.repo,
        db,
        &source.snapshot.id,
        source.keyring.as_mut(),
        out,
    )
    .and_then(|()| match db.kind {
        None => snapshot::check_copy(temp, Check::Quick).map(|_| ()),
        Some(_) => postgres::check_dump(temp),
    })
    .with_context(|| format!("backup {} cannot be restored", source.snapshot.id))
}

/// Gives the staged database the owner and mode of the file it replaces, and fsyncs it
/// and its folder.
fn finish_staged_database(target: &Path, temp: &Path) -> Result<()> {
    let parent = target.parent().unwrap_or(Path::new("."));
    let staged = (|| {
        if let Some((uid, gid, mode)) = owner_and_mode(target, parent, 0o600) {
            fs::set_permissions(temp, fs::Permissions::from_mode(mode & 0o777))?;
            // Only root may give a file away; otherwise it stays ours, which is fine.
            let _ = std::os::unix::fs::chown(temp, Some(uid), Some(gid));
        }
        fs::File::open(temp)?.sync_all()
    })();
    staged.with_context(|| format!("failed to prepare {}", temp.display()))?;
    manifest::sync_dir(parent)
}

/// What extracting the uploads may unpack: no more than the backup recorded (`recorded`:
/// bytes and files, plus tar's headers and padding), and never more than the free space
/// where it is unpacked.
fn extract_limits(temp: &Path, recorded: Option<(u64, u64)>) -> archive::Limits {
    let free = rustix::fs::statvfs(temp)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(u64::MAX);
    let mut limits = archive::Limits {
        max_bytes: free,
        max_bytes_source: format!("the free space where {} is unpacked", temp.display()),
        max_ratio: archive::MAX_RATIO,
    };
    if let Some((bytes, files)) = recorded {
        // Each entry costs a header and up to a block of padding; long names a few more
        // blocks. Folders and links are not counted in the manifest: 64 MiB of slack.
        let recorded = bytes
            .saturating_add(files.saturating_mul(4 * 512))
            .saturating_add(64 << 20);
        if recorded < limits.max_bytes {
            limits.max_bytes = recorded;
            limits.max_bytes_source = format!(
                "the {} in {files} files its manifest records, plus tar headers",
                super::human_bytes(bytes)
            );
        }
    }
    limits
}

/// Extracts the uploads into the new folder `temp` with `extract`, and fsyncs every file
/// and folder of it (and `temp`'s parent) before it can be swapped in.
fn stage_uploads(
    temp: &Path,
    recorded: Option<(u64, u64)>,
    extract: impl FnOnce(&Path, &archive::Limits) -> Result<ExtractStats>,
) -> Result<ExtractStats> {
    if fs::symlink_metadata(temp).is_ok() {
        fs::remove_dir_all(temp).with_context(|| format!("failed to clear {}", temp.display()))?;
    }
    fs::create_dir(temp).with_context(|| format!("failed to create {}", temp.display()))?;
    let stats = extract(temp, &extract_limits(temp, recorded))?;
    archive::sync_tree(temp)?;
    manifest::sync_dir(temp.parent().unwrap_or(Path::new(".")))?;
    Ok(stats)
}

/// Feeds a snapshot's uploads, as a tar stream, through the archive's extraction and its
/// checks. The stream is made on this thread and unpacked on another.
fn extract_snapshot_uploads(
    source: &mut RepoSource,
    dest: &Path,
    mut limits: archive::Limits,
) -> Result<ExtractStats> {
    // Deduplicated data may legitimately expand far past its stored size; the recorded
    // size still bounds it.
    limits.max_ratio = u64::MAX;
    let up = source.content.uploads.as_ref().expect("has uploads");
    let label = format!("snapshot {}", source.snapshot.id);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
    std::thread::scope(|s| {
        let label = &label;
        let limits = &limits;
        let unpacker = s.spawn(move || {
            let reader = ChannelReader {
                rx,
                current: std::io::Cursor::new(Vec::new()),
            };
            let counted = std::rc::Rc::new(std::cell::Cell::new(0));
            archive::extract_stream(reader, label, counted, dest, limits)
        });
        let produced = (|| -> Result<()> {
            let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(
                1 << 20,
                ChannelWriter(tx),
            ));
            repo::read::write_uploads_tar(
                &source.repo,
                up,
                &source.snapshot.id,
                source.keyring.as_mut(),
                Path::new(""),
                &mut builder,
            )?;
            let mut buffered = builder.into_inner().context(UNPACK_STOPPED)?;
            std::io::Write::flush(&mut buffered).context(UNPACK_STOPPED)?;
            Ok(())
        })();
        let unpacked = unpacker
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the extraction thread panicked")));
        match (produced, unpacked) {
            // The unpacker refused an entry: that is the reason, not the pipe it closed.
            (Err(e), Err(refusal)) if format!("{e:#}").contains(UNPACK_STOPPED) => Err(refusal),
            (Err(e), _) => {
                Err(e.context(format!("backup {} cannot be restored", source.snapshot.id)))
            }
            (Ok(()), unpacked) => unpacked,
        }
    })
}

const UNPACK_STOPPED: &str = "the extraction stopped";

struct ChannelWriter(std::sync::mpsc::SyncSender<Vec<u8>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(buf.to_vec())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, UNPACK_STOPPED))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    current: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.rx.recv() {
                Ok(next) => self.current = std::io::Cursor::new(next),
                Err(_) => return Ok(0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// Stands in for deploy's engine client: the API "runs" until stopped, and its first
    /// start after the swap fails its health check.
    #[derive(Default)]
    struct ApiFailingFirstStart {
        running: bool,
        calls: Vec<&'static str>,
    }

    impl ApiControl for ApiFailingFirstStart {
        fn is_running(&mut self) -> Result<bool> {
            Ok(self.running)
        }
        fn stop(&mut self) -> Result<()> {
            self.calls.push("stop");
            self.running = false;
            Ok(())
        }
        fn start(&mut self) -> Result<()> {
            self.calls.push("start");
            if self.calls.iter().filter(|c| **c == "start").count() == 1 {
                bail!("the API did not become healthy within 60s");
            }
            self.running = true;
            Ok(())
        }
    }

    fn rows(db: &Path) -> i64 {
        Connection::open(db)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_failed_start_puts_the_pre_restore_state_back_and_starts_the_api_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir_all(dir.join("data")).unwrap();
        fs::create_dir_all(dir.join("uploads")).unwrap();
        fs::write(
            dir.join(".env.production"),
            format!("BACKUP_DIR={}\n", dir.join("backups").display()),
        )
        .unwrap();
        let settings = BackupSettings::load(dir).unwrap();
        let conn = Connection::open(&settings.database_path).unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);")
            .unwrap();
        fs::write(settings.uploads_dir.join("a.txt"), "backed up").unwrap();
        super::super::create(
            &settings,
            &CreateOptions::default(),
            &mut Reporter::new(true),
        )
        .unwrap();
        conn.execute("INSERT INTO t VALUES (3)", []).unwrap();
        drop(conn);
        fs::write(settings.uploads_dir.join("a.txt"), "live").unwrap();

        let mut api = ApiFailingFirstStart {
            running: true,
            calls: Vec::new(),
        };
        let err = restore(
            &settings,
            "latest",
            None,
            &mut api,
            &mut Reporter::new(true),
        )
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(err.starts_with("the API did not become healthy"), "{err}");
        assert!(err.contains("the pre-restore state was put back"), "{err}");
        assert_eq!(api.calls, ["stop", "start", "start"]);
        assert!(api.running);
        assert_eq!(rows(&settings.database_path), 3);
        assert_eq!(
            fs::read_to_string(settings.uploads_dir.join("a.txt")).unwrap(),
            "live"
        );
        for folder in [dir, &dir.join("data")] {
            let leftovers: Vec<_> = fs::read_dir(folder)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("restore"))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
        }
        let audit = fs::read_to_string(dir.join(".elior/audit.log")).unwrap();
        assert!(audit.contains("\"result\":\"failed\""), "{audit}");
    }
}
