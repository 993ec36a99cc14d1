//! A consistent copy of the live SQLite database, taken while the API keeps writing.
//!
//! The copy uses SQLite's online backup API in a single step (`step(-1)`): one read
//! snapshot, so in WAL mode writers carry on. It must never copy in small page steps (any
//! write from another connection restarts a stepped backup at page 1, so under steady
//! writes it never finishes) and never copy the file (a live WAL database copied with `cp`
//! is corrupt or missing committed rows). The copy is checked (`quick_check`, or
//! `integrity_check` on request) and hashed before it counts. Each blocking phase runs
//! against a deadline; when it passes, the caller gets an error and removes the temporary
//! file (the stuck thread dies with the process).
//!
//! This module only reads the source database and writes the file it is given.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::manifest;

/// How much of a database file SQLite may map into memory while reading it.
const MMAP_SIZE: i64 = 4 << 30;

/// Which check the copy must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Quick,
    Full,
}

impl Check {
    pub fn pragma(self) -> &'static str {
        match self {
            Check::Quick => "quick_check",
            Check::Full => "integrity_check",
        }
    }
}

/// What the snapshot produced.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub size: u64,
    pub sha256: String,
    pub schema_version: Option<i64>,
    pub copy_duration: Duration,
}

/// Copies `source` into `dest` (a new file) and checks and hashes the copy, all before
/// `deadline`. `dest` is left in place for the caller to commit or remove.
pub fn take(source: &Path, dest: &Path, check: Check, deadline: Instant) -> Result<Snapshot> {
    if !source.is_file() {
        bail!(
            "database {} does not exist\ncheck DATABASE_URL in the env file, or start the stack once so it creates the database",
            source.display()
        );
    }
    drop(manifest::create_private(dest)?);
    let started = Instant::now();
    let (src, dst) = (source.to_path_buf(), dest.to_path_buf());
    with_deadline(deadline, "copying the database", move || {
        timed("online backup", || copy(&src, &dst))
    })?;
    let copy_duration = started.elapsed();

    // Check, hash and flush to disk at once: each reads the whole copy (from the page
    // cache), and together they keep both cores and the disk busy.
    let dst = dest.to_path_buf();
    let (checked, hashed, synced) =
        with_deadline(deadline, "checking the database copy", move || {
            std::thread::scope(|s| {
                let hash = s.spawn(|| timed("sha256", || manifest::sha256_file(&dst)));
                let sync = s.spawn(|| {
                    timed("fsync", || {
                        std::fs::File::open(&dst)
                            .and_then(|f| f.sync_all())
                            .with_context(|| format!("failed to flush {}", dst.display()))
                    })
                });
                let checked = timed(check.pragma(), || check_copy(&dst, check));
                Ok((checked, joined(hash.join()), joined(sync.join())))
            })
        })?;
    let schema_version = checked?;
    let (size, sha256) = hashed?;
    synced?;
    Ok(Snapshot {
        size,
        sha256,
        schema_version,
        copy_duration,
    })
}

/// Runs `work` and logs how long it took, at debug level (RUST_LOG=elior=debug).
fn timed<T>(what: &str, work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = work();
    tracing::debug!(
        duration_ms = started.elapsed().as_millis() as u64,
        "snapshot: {what} done"
    );
    result
}

fn joined<T>(result: std::thread::Result<Result<T>>) -> Result<T> {
    result.unwrap_or_else(|_| Err(anyhow!("backup thread panicked")))
}

/// Runs `work` on its own thread and waits for it until `deadline`.
fn with_deadline<T: Send + 'static>(
    deadline: Instant,
    what: &str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("backup: {what}"))
        .spawn(move || {
            let _ = tx.send(work());
        })
        .context("failed to start a backup thread")?;
    let budget = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(budget) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => bail!(
            "backup timed out while {what}\nraise the limit with --timeout, or look for a process holding the database locked"
        ),
        Err(mpsc::RecvTimeoutError::Disconnected) => bail!("backup thread for {what} panicked"),
    }
}

fn copy(source: &Path, dest: &Path) -> Result<()> {
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("failed to open database {}", source.display()))?;
    src.busy_timeout(Duration::from_secs(5))?;
    // Read the main file through mmap: a 1 GiB copy is otherwise 250,000 read calls.
    src.pragma_update(None, "mmap_size", MMAP_SIZE)?;
    let mut dst = Connection::open(dest)
        .with_context(|| format!("failed to open backup file {}", dest.display()))?;
    // The copy is fsynced as a whole once complete; no journal is needed for a file nobody
    // else can see yet.
    dst.pragma_update(None, "journal_mode", "OFF")?;
    dst.pragma_update(None, "synchronous", "OFF")?;
    {
        let backup = Backup::new(&src, &mut dst).context("failed to start the online backup")?;
        loop {
            // -1: every page in one step, under one read transaction.
            match backup
                .step(-1)
                .with_context(|| format!("online backup of {} failed", source.display()))?
            {
                StepResult::Done => break,
                // Another connection held a lock we needed; nothing was copied yet.
                StepResult::Busy | StepResult::Locked | StepResult::More => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    drop(dst);
    mark_rollback_journal(dest)
}

/// The copied header says WAL (file format versions 2/2 at offsets 18-19) when the source
/// is in WAL mode. A backup file should stand alone, so mark it as a rollback-journal
/// database (1/1), as `PRAGMA journal_mode=DELETE` would, but without that pragma's
/// -wal/-shm files, journal and extra fsyncs of the whole file.
fn mark_rollback_journal(dest: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dest)
        .with_context(|| format!("failed to open backup file {}", dest.display()))?;
    let mut header = [0u8; 20];
    file.read_exact_at(&mut header, 0)
        .with_context(|| format!("backup file {} has no SQLite header", dest.display()))?;
    if &header[..16] != b"SQLite format 3\0" {
        bail!("backup file {} is not a SQLite database", dest.display());
    }
    if header[18] == 2 || header[19] == 2 {
        file.write_all_at(&[1, 1], 18)
            .with_context(|| format!("failed to write {}", dest.display()))?;
    }
    Ok(())
}

/// Runs the check on the copy and returns its schema version (None for a database that
/// elior never migrated).
pub fn check_copy(path: &Path, check: Check) -> Result<Option<i64>> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("failed to open backup copy {}", path.display()))?;
    conn.pragma_update(None, "mmap_size", MMAP_SIZE)?;
    let sql = format!("PRAGMA {}", check.pragma());
    let mut stmt = conn.prepare(&sql)?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .with_context(|| format!("{} of {} failed", check.pragma(), path.display()))?;
    if lines != ["ok"] {
        bail!(
            "{} of {} found problems: {}",
            check.pragma(),
            path.display(),
            lines.into_iter().take(5).collect::<Vec<_>>().join("; ")
        );
    }
    let has_migrations: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
        [],
        |r| r.get(0),
    )?;
    if !has_migrations {
        return Ok(None);
    }
    Ok(Some(crate::db::migrations::current_version(&conn)?))
}

/// The `-wal`, `-shm` and `-journal` files SQLite keeps beside a database.
pub fn sidecar_files(db: &Path) -> Vec<PathBuf> {
    ["-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        })
        .collect()
}
