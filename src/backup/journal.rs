//! The restore journal: SQLite's rollback journal, applied to a restore's file swap.
//!
//! Before a restore changes anything it writes `.elior-restore-journal.json` beside the
//! database (the one folder that both the host and the API container see). The journal
//! names the restored copies being staged, then every rename of the swap in order, then
//! says when the swap is committed. A restore killed at any point leaves a journal that
//! the next elior command reads through [`recover`]: before the commit mark every rename
//! done is undone (the stack is entirely the old state, database and uploads together);
//! after it the copies moved aside are removed (entirely the new state). A process that
//! cannot replay the journal (the API container, which sees other paths) may use the
//! stack only while the journal is staging or committed, never while it is swapping.
//! Renames are atomic, and each one is judged done or not from the files alone, so
//! recovery is itself safe to kill and run again.
//!
//! This module owns the journal file and the rules above; which files a restore swaps is
//! decided by [`super::restore`].

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::manifest::sync_dir;

/// The journal's name, in the database's folder.
pub const FILE_NAME: &str = ".elior-restore-journal.json";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Restored copies are being written beside their targets; the live files are as
    /// they were.
    Staging,
    /// Renames are under way; until the commit mark, recovery undoes them.
    Swapping,
    /// Every rename is done and durable; recovery only removes what was moved aside.
    Committed,
}

/// One rename of the swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rename {
    pub from: PathBuf,
    pub to: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub format: u32,
    /// The backup being restored.
    pub backup: String,
    /// The restoring process, to tell a running restore from an interrupted one.
    pub pid: u32,
    pub host: String,
    pub stack_dir: PathBuf,
    /// The database as the restoring process saw it; a process that sees it elsewhere (the
    /// API container) cannot replay this journal and must refuse to open the database.
    pub database: PathBuf,
    pub phase: Phase,
    /// Restored copies (files or folders) beside their targets.
    pub staged: Vec<PathBuf>,
    /// The swap, in order.
    pub renames: Vec<Rename>,
    /// The live files once moved aside; removed after the commit.
    pub aside: Vec<PathBuf>,
    /// Files SQLite may create beside the restored database (`-wal`, `-shm`): they belong
    /// to the restored file and are removed before it is moved back out.
    pub sidecars: Vec<PathBuf>,
}

/// Where the journal of the stack whose database is `database` lives.
pub fn path_for(database: &Path) -> PathBuf {
    database.with_file_name(FILE_NAME)
}

/// Whether anything (even a dangling symlink) is at `path`.
fn present(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

fn remove_any(path: &Path) -> Result<()> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .with_context(|| format!("failed to remove {}", path.display()))
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

impl Journal {
    pub fn new(backup: &str, stack_dir: &Path, database: &Path) -> Journal {
        Journal {
            format: FORMAT,
            backup: backup.to_string(),
            pid: std::process::id(),
            host: crate::lock::hostname(),
            stack_dir: stack_dir.to_path_buf(),
            database: database.to_path_buf(),
            phase: Phase::Staging,
            staged: Vec::new(),
            renames: Vec::new(),
            aside: Vec::new(),
            sidecars: Vec::new(),
        }
    }

    pub fn path(&self) -> PathBuf {
        path_for(&self.database)
    }

    /// Writes the journal atomically (temp, fsync, rename, fsync of the folder). It holds
    /// paths only, and the API container's user must be able to read it: mode 0644.
    pub fn write(&self) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self).expect("journal serialises");
        text.push('\n');
        crate::fsutil::write_atomic(&self.path(), text.as_bytes(), 0o644)
    }

    fn remove(&self) -> Result<()> {
        let path = self.path();
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("failed to remove {}", path.display()))
            }
            _ => {}
        }
        sync_dir(parent(&path))
    }

    /// Finishes (committed) or undoes (otherwise) the restore, then removes the journal.
    /// Returns whether the restore ended up applied.
    pub fn settle(&self) -> Result<bool> {
        let applied = match self.phase {
            Phase::Committed => {
                for path in &self.aside {
                    remove_any(path)?;
                }
                true
            }
            Phase::Staging | Phase::Swapping => {
                self.roll_back()?;
                for path in &self.staged {
                    remove_any(path)?;
                }
                false
            }
        };
        let mut dirs: Vec<&Path> = self
            .staged
            .iter()
            .chain(&self.aside)
            .map(|p| parent(p))
            .collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            if dir.is_dir() {
                sync_dir(dir)?;
            }
        }
        self.remove()?;
        Ok(applied)
    }

    /// Undoes the renames done so far, newest first. A rename is done when its source is
    /// gone and its destination exists; renames are atomic, so there is no third case.
    fn roll_back(&self) -> Result<()> {
        // Once the restored database is in place, a -wal or -shm beside it is its own (the
        // API may have run on it) and must not be replayed into the original.
        let database_swapped = self
            .renames
            .iter()
            .any(|r| r.to == self.database && !present(&r.from) && present(&r.to));
        if database_swapped {
            for sidecar in &self.sidecars {
                remove_any(sidecar)?;
            }
        }
        for rename in self.renames.iter().rev() {
            match (present(&rename.from), present(&rename.to)) {
                (false, true) => fs::rename(&rename.to, &rename.from).with_context(|| {
                    format!(
                        "failed to move {} back to {}",
                        rename.to.display(),
                        rename.from.display()
                    )
                })?,
                (true, _) => {} // not done yet
                (false, false) => bail!(
                    "neither {} nor {} exists, so the state before the restore cannot be put back\nrestore the safety backup by hand (`elior backup list` shows it as pre-restore), then remove {}",
                    rename.from.display(),
                    rename.to.display(),
                    self.path().display()
                ),
            }
        }
        Ok(())
    }
}

/// Reads the journal at `path`; None when there is none.
pub fn read(path: &Path) -> Result<Option<Journal>> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).with_context(|| {
            format!(
                "restore journal {} is unreadable\nif no restore is running, restore a backup with `elior restore`, then remove that file",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// What [`recover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// No journal, or a restore still staging (the live files are untouched).
    Nothing,
    /// An interrupted restore was undone: the stack is as before it.
    Undone { backup: String },
    /// An interrupted restore was finished: the stack is the restored backup.
    Finished { backup: String },
}

/// Finishes or undoes an interrupted restore of the stack whose database is `database`.
/// `refuse_if_open` is asked before files are moved under a process that has the
/// database open. Fails, leaving the journal in place, when the restore is still
/// swapping, when the journal was written by a process that saw other paths, or when the
/// files no longer allow either end state.
pub fn recover(database: &Path, refuse_if_open: &dyn Fn(&Path) -> Result<()>) -> Result<Recovery> {
    let path = path_for(database);
    let Some(journal) = read(&path)? else {
        return Ok(Recovery::Nothing);
    };
    let alive = journal.host == crate::lock::hostname()
        && journal.pid != std::process::id()
        && pid_alive(journal.pid);
    let elsewhere = journal.host != crate::lock::hostname() || journal.database != database;
    if alive || elsewhere {
        if journal.phase != Phase::Swapping {
            // While a restore stages its copies the live files are untouched; once it is
            // committed the restored files are in place (the API container starts on
            // them), and only the copies moved aside remain for the host to remove.
            return Ok(Recovery::Nothing);
        }
        if alive {
            bail!(
                "a restore of backup {} (pid {}) is swapping files in {} right now\nwait for it to finish, then run this again",
                journal.backup,
                journal.pid,
                journal.stack_dir.display()
            );
        }
    }
    if journal.database != database || journal.host != crate::lock::hostname() {
        bail!(
            "a restore of backup {} into {} was interrupted (journal {}), and it can only be finished or undone where its paths are visible\nrun `elior backup list --dir {}` on host {} to recover it",
            journal.backup,
            journal.stack_dir.display(),
            path.display(),
            journal.stack_dir.display(),
            journal.host
        );
    }
    let _lock = crate::lock::DeployLock::acquire(
        &journal.stack_dir,
        "elior (recovering an interrupted restore)",
    )?;
    // Another process may have recovered it while we waited for the lock.
    let Some(journal) = read(&path)? else {
        return Ok(Recovery::Nothing);
    };
    if journal.phase == Phase::Swapping {
        refuse_if_open(&journal.database)?;
    }
    let backup = journal.backup.clone();
    let applied = journal.settle().with_context(|| {
        format!(
            "failed to recover the interrupted restore of backup {} (journal {})",
            journal.backup,
            path.display()
        )
    })?;
    Ok(if applied {
        Recovery::Finished { backup }
    } else {
        Recovery::Undone { backup }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a swap of `db` and `uploads` in `dir` and returns the journal.
    fn swap(dir: &Path) -> Journal {
        let db = dir.join("data/app.db");
        fs::create_dir_all(dir.join("data")).unwrap();
        fs::write(&db, "old db").unwrap();
        fs::write(dir.join("data/.app.db.restore"), "new db").unwrap();
        fs::create_dir_all(dir.join("uploads")).unwrap();
        fs::write(dir.join("uploads/a"), "old a").unwrap();
        fs::create_dir_all(dir.join(".uploads.restore")).unwrap();
        fs::write(dir.join(".uploads.restore/a"), "new a").unwrap();
        let mut j = Journal::new("20261129_020000", dir, &db);
        j.staged = vec![
            dir.join("data/.app.db.restore"),
            dir.join(".uploads.restore"),
        ];
        j.phase = Phase::Swapping;
        let r = |from: &str, to: &str| Rename {
            from: dir.join(from),
            to: dir.join(to),
        };
        j.renames = vec![
            r("data/app.db", "data/.app.db.aside"),
            r("data/.app.db.restore", "data/app.db"),
            r("uploads", ".uploads.aside"),
            r(".uploads.restore", "uploads"),
        ];
        j.aside = vec![dir.join("data/.app.db.aside"), dir.join(".uploads.aside")];
        j.sidecars = vec![dir.join("data/app.db-wal")];
        j
    }

    fn state(dir: &Path) -> (String, String) {
        (
            fs::read_to_string(dir.join("data/app.db")).unwrap(),
            fs::read_to_string(dir.join("uploads/a")).unwrap(),
        )
    }

    #[test]
    fn every_prefix_of_the_swap_rolls_back_to_the_old_state_and_commits_forward() {
        for done in 0..=4 {
            for committed in [false, true] {
                if committed && done < 4 {
                    continue;
                }
                let tmp = tempfile::tempdir().unwrap();
                let mut j = swap(tmp.path());
                for r in &j.renames[..done] {
                    fs::rename(&r.from, &r.to).unwrap();
                }
                if done >= 2 {
                    // The API ran on the restored database and left a -wal.
                    fs::write(tmp.path().join("data/app.db-wal"), "new wal").unwrap();
                }
                if committed {
                    j.phase = Phase::Committed;
                }
                j.write().unwrap();
                let got = recover(&j.database, &|_| Ok(())).unwrap();
                let expected = if committed {
                    ("new db".to_string(), "new a".to_string())
                } else {
                    ("old db".to_string(), "old a".to_string())
                };
                assert_eq!(
                    state(tmp.path()),
                    expected,
                    "done {done} committed {committed}"
                );
                assert_eq!(
                    matches!(got, Recovery::Finished { .. }),
                    committed,
                    "{got:?}"
                );
                let mut left: Vec<String> = fs::read_dir(tmp.path().join("data"))
                    .unwrap()
                    .chain(fs::read_dir(tmp.path()).unwrap())
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n != ".elior")
                    .collect();
                left.sort();
                let mut expected_left = vec!["app.db", "data", "uploads"];
                if committed {
                    expected_left.push("app.db-wal");
                }
                expected_left.sort();
                assert_eq!(left, expected_left, "done {done}");
                // Run twice: nothing left to do.
                assert_eq!(
                    recover(&j.database, &|_| Ok(())).unwrap(),
                    Recovery::Nothing
                );
            }
        }
    }

    #[test]
    fn a_journal_seen_from_other_paths_is_refused_not_guessed() {
        let tmp = tempfile::tempdir().unwrap();
        let j = swap(tmp.path());
        j.write().unwrap();
        let moved = tmp.path().join("elsewhere/app.db");
        fs::create_dir_all(moved.parent().unwrap()).unwrap();
        fs::copy(j.path(), path_for(&moved)).unwrap();
        let err = format!("{:#}", recover(&moved, &|_| Ok(())).unwrap_err());
        assert!(err.contains("was interrupted"), "{err}");
        assert!(path_for(&moved).exists());

        // Staging or committed, the files the other view sees are whole: it may go on
        // (the API container starting on a restored database), and the journal stays for
        // the host to settle.
        for phase in [Phase::Staging, Phase::Committed] {
            let mut other = j.clone();
            other.phase = phase;
            let text = serde_json::to_string(&other).unwrap();
            fs::write(path_for(&moved), text).unwrap();
            assert_eq!(recover(&moved, &|_| Ok(())).unwrap(), Recovery::Nothing);
            assert!(path_for(&moved).exists());
        }
    }
}
