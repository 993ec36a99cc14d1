//! Restoring a backup over a stack, so that it either fully happens or leaves the stack as
//! it was.
//!
//! Order (issue 6): verify the backup (a bad one is refused before anything is touched);
//! take the deploy lock; stage the restored database and uploads beside their targets (a
//! copy and an extraction into temporary names, done while the API still serves, so an
//! unsafe archive is refused before anything else happens); take a safety backup of the
//! current state; stop the API if it runs; swap the staged files
//! in with renames, moving the current ones (and any `-wal`/`-shm`) aside; start the API
//! and wait until it is healthy. If anything fails after the stop, every rename is undone
//! and the API is started again.
//!
//! The API container is driven through [`ApiControl`], so the deploy code can plug in its
//! engine client; [`NoStackRunning`] is the bare-directory case. This module never talks
//! to Docker itself.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::archive::{self, ExtractStats};
use super::manifest::{self, PartName};
use super::snapshot;
use super::{BackupSettings, Check, CreateOptions, Reporter};
use crate::lock::{self, DeployLock};

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
    pub schema_version: Option<i64>,
    pub uploads: Option<PathBuf>,
    pub upload_stats: Option<ExtractStats>,
    pub api_restarted: bool,
}

/// Restores backup `id` (or `latest`) over the stack in `settings`.
pub fn restore(
    settings: &BackupSettings,
    id: &str,
    api: &mut dyn ApiControl,
    reporter: &mut Reporter,
) -> Result<RestoreReport> {
    let dir = &settings.backup_dir;
    let sets = super::scan(dir)?;
    let set = super::find(&sets, id)?;
    super::require_complete(set)?;

    reporter.phase(&format!("verifying backup {}", set.id));
    let (verification, manifest) = super::verify(dir, set, Some(Check::Quick));
    let manifest = match manifest.filter(|_| verification.ok) {
        Some(m) => m,
        None => bail!(
            "backup {} failed verification; nothing was changed\n{}",
            set.id,
            verification.problems.join("\n")
        ),
    };

    let _lock = DeployLock::acquire(&settings.stack_dir, &format!("elior restore {}", set.id))?;
    let outcome = restore_locked(settings, &manifest, api, reporter);
    let record = match &outcome {
        Ok(report) => serde_json::json!({
            "backup": manifest.id,
            "result": "ok",
            "safety_backup": report.safety_backup,
        }),
        Err(e) => serde_json::json!({
            "backup": manifest.id,
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
    manifest: &manifest::Manifest,
    api: &mut dyn ApiControl,
    reporter: &mut Reporter,
) -> Result<RestoreReport> {
    let dir = &settings.backup_dir;
    let was_running = api.is_running()?;
    if !was_running {
        // Fail before doing anything when a server we do not control has the file open.
        refuse_if_open(&settings.database_path)?;
    }
    let mut staged = Staged::default();
    if let Some(db) = manifest.file(PartName::Database) {
        reporter.phase("staging the database");
        staged.database = Some(stage_database(
            &dir.join(&db.name),
            &settings.database_path,
        )?);
    }
    let mut upload_stats = None;
    if let Some(uploads) = manifest.file(PartName::Uploads) {
        reporter.phase("extracting the uploads");
        let (temp, stats) =
            stage_uploads(&dir.join(&uploads.name), &settings.uploads_dir, &mut staged)?;
        staged.uploads = Some(temp);
        upload_stats = Some(stats);
    }

    let has_state = settings.database_path.is_file() || settings.uploads_dir.is_dir();
    let safety_backup = if has_state {
        reporter.phase("taking a safety backup of the current state");
        let options = CreateOptions {
            reason: "pre-restore",
            require_database: false,
            ..CreateOptions::default()
        };
        let safety = super::create(settings, &options, reporter).context(
            "the safety backup of the current state failed, so nothing was restored or changed",
        )?;
        reporter.phase(&format!("  safety backup {}", safety.id));
        Some(safety.id)
    } else {
        None
    };

    if was_running {
        reporter.phase("stopping the API");
        api.stop()
            .context("failed to stop the API; nothing was changed")?;
    }
    let mut undo = Undo::default();
    let result = refuse_if_open(&settings.database_path)
        .and_then(|()| swap_in(settings, &staged, &mut undo))
        .and_then(|()| {
            if was_running {
                reporter.phase("starting the API and waiting until it is healthy");
                api.start()
            } else {
                Ok(())
            }
        });
    if let Err(error) = result {
        let rollback = undo.roll_back();
        let restart = if was_running { api.start().err() } else { None };
        let mut message = format!("{error:#}");
        match rollback {
            Ok(()) => message.push_str("\nthe pre-restore state was put back"),
            Err(e) => message.push_str(&format!(
                "\nputting the pre-restore state back also failed: {e:#}\nrestore the safety backup {} by hand",
                safety_backup.as_deref().unwrap_or("(none)")
            )),
        }
        if let Some(e) = restart {
            message.push_str(&format!("\nand the API did not start again: {e:#}"));
        }
        return Err(anyhow!(message));
    }
    // Swapped in: nothing staged is left to remove.
    staged.database = None;
    staged.uploads = None;
    undo.discard_aside();

    Ok(RestoreReport {
        backup: manifest.id.clone(),
        created_at: manifest.created_at.clone(),
        safety_backup,
        database: manifest
            .file(PartName::Database)
            .map(|_| settings.database_path.clone()),
        schema_version: manifest.schema_version,
        uploads: manifest
            .file(PartName::Uploads)
            .map(|_| settings.uploads_dir.clone()),
        upload_stats,
        api_restarted: was_running,
    })
}

/// Refuses to swap a database file that another process has open: a server writing to it
/// would carry on writing to the file moved aside, and its writes would be lost.
fn refuse_if_open(db: &Path) -> Result<()> {
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

/// Restored files waiting under temporary names beside their targets; removed on drop
/// unless they were swapped in.
#[derive(Default)]
struct Staged {
    database: Option<PathBuf>,
    uploads: Option<PathBuf>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(db) = self.database.take() {
            let _ = fs::remove_file(db);
        }
        if let Some(uploads) = self.uploads.take() {
            let _ = fs::remove_dir_all(uploads);
        }
    }
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

fn stage_database(backup: &Path, target: &Path) -> Result<PathBuf> {
    let parent = target.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("failed to create {}", parent.display()))?;
    let temp = beside(target, "restore");
    let _ = fs::remove_file(&temp);
    fs::copy(backup, &temp)
        .with_context(|| format!("failed to copy {} to {}", backup.display(), temp.display()))?;
    let staged = (|| {
        if let Some((uid, gid, mode)) = owner_and_mode(target, parent, 0o600) {
            fs::set_permissions(&temp, fs::Permissions::from_mode(mode))?;
            // Only root may give a file away; otherwise it stays ours, which is fine.
            let _ = std::os::unix::fs::chown(&temp, Some(uid), Some(gid));
        }
        fs::File::open(&temp)?.sync_all()
    })();
    if let Err(e) = staged {
        let _ = fs::remove_file(&temp);
        return Err(e).with_context(|| format!("failed to prepare {}", temp.display()));
    }
    Ok(temp)
}

fn stage_uploads(
    archive_path: &Path,
    target: &Path,
    staged: &mut Staged,
) -> Result<(PathBuf, ExtractStats)> {
    let parent = target.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("failed to create {}", parent.display()))?;
    let temp = beside(target, "restore");
    if temp.exists() {
        fs::remove_dir_all(&temp).with_context(|| format!("failed to clear {}", temp.display()))?;
    }
    fs::create_dir(&temp).with_context(|| format!("failed to create {}", temp.display()))?;
    // Registered at once, so a refused archive's partial tree is removed.
    staged.uploads = Some(temp.clone());
    let stats = archive::extract(archive_path, &temp)?;
    staged.uploads = None;
    Ok((temp, stats))
}

/// Renames done so far, to undo in reverse, and the current files moved aside.
#[derive(Default)]
struct Undo {
    renames: Vec<(PathBuf, PathBuf)>,
    aside: Vec<PathBuf>,
    clear_on_rollback: Vec<PathBuf>,
}

impl Undo {
    fn rename(&mut self, from: &Path, to: &Path) -> Result<()> {
        fs::rename(from, to)
            .with_context(|| format!("failed to rename {} to {}", from.display(), to.display()))?;
        self.renames.push((from.to_path_buf(), to.to_path_buf()));
        Ok(())
    }

    fn move_aside(&mut self, path: &Path) -> Result<()> {
        if fs::symlink_metadata(path).is_err() {
            return Ok(());
        }
        let aside = beside(path, "pre-restore");
        self.rename(path, &aside)?;
        self.aside.push(aside);
        Ok(())
    }

    fn roll_back(&mut self) -> Result<()> {
        let mut first_error = None;
        // Files the API made beside the restored database before the failure (a new
        // -wal, say) must not end up beside the original one.
        for path in self.clear_on_rollback.drain(..) {
            let _ = fs::remove_file(path);
        }
        while let Some((from, to)) = self.renames.pop() {
            if let Err(e) = fs::rename(&to, &from) {
                first_error.get_or_insert(anyhow!(
                    "failed to move {} back to {}: {e}",
                    to.display(),
                    from.display()
                ));
            }
        }
        self.aside.clear();
        first_error.map_or(Ok(()), Err)
    }

    fn discard_aside(&mut self) {
        for path in self.aside.drain(..) {
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), "failed to remove the pre-restore copy: {e}");
            }
        }
    }
}

fn swap_in(settings: &BackupSettings, staged: &Staged, undo: &mut Undo) -> Result<()> {
    if let Some(temp) = &staged.database {
        let target = &settings.database_path;
        // A stale -wal beside the restored file would be replayed into it: move the live
        // database and all its sidecar files aside together.
        undo.move_aside(target)?;
        for sidecar in snapshot::sidecar_files(target) {
            undo.move_aside(&sidecar)?;
            undo.clear_on_rollback.push(sidecar);
        }
        undo.rename(temp, target)?;
        manifest::sync_dir(target.parent().unwrap_or(Path::new(".")))?;
    }
    if let Some(temp) = &staged.uploads {
        let target = &settings.uploads_dir;
        undo.move_aside(target)?;
        undo.rename(temp, target)
            .context("if uploads/ is a mount point, restore into it by hand")?;
        manifest::sync_dir(target.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
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
        let err = restore(&settings, "latest", &mut api, &mut Reporter::new(true)).unwrap_err();
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
