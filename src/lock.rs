//! The deploy lock of a stack directory, and its audit log.
//!
//! Commands that change a running stack (restore now; deploy later) take the lock at
//! `DIR/.elior/deploy.lock` so two of them never interleave. The lock is a file created
//! with `O_EXCL` that records who holds it (pid, host, command, time), so a refusal can say
//! who to wait for. A lock whose pid is gone on this host is stale and is taken over, and
//! so is a lock file that is still empty (or garbled) seconds after it was made: what a
//! process killed between creating and writing it, or a full disk, leaves. The lock is
//! released when the guard drops. This module only manages that file and appends
//! to `DIR/.elior/audit.log`; it knows nothing about what the holder does.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The folder under a stack directory where elior keeps its own state.
pub const STATE_DIR: &str = ".elior";
const LOCK_FILE: &str = "deploy.lock";
const AUDIT_LOG: &str = "audit.log";
/// A holder writes the lock file right after creating it; one still without a holder
/// after this long never will be.
const UNWRITTEN_LOCK_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// Who holds a lock; written into the lock file as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub command: String,
    pub since: String,
}

/// A held deploy lock; dropping it removes the lock file.
#[derive(Debug)]
pub struct DeployLock {
    path: PathBuf,
    holder: Holder,
}

impl DeployLock {
    /// Takes the lock of stack directory `dir` for `command` (e.g. `elior restore latest`).
    /// Fails with the current holder's details when another live process holds it.
    pub fn acquire(dir: &Path, command: &str) -> Result<DeployLock> {
        let state_dir = ensure_state_dir(dir)?;
        let path = state_dir.join(LOCK_FILE);
        let holder = Holder {
            pid: std::process::id(),
            host: hostname(),
            command: command.to_string(),
            since: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        };
        let body = serde_json::to_string(&holder).expect("holder serialises") + "\n";
        // Two attempts: the second follows the removal of a stale lock.
        for _ in 0..2 {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut file) => {
                    let written = file
                        .write_all(body.as_bytes())
                        .and_then(|_| file.sync_all());
                    if let Err(e) = written {
                        // An empty lock left behind (a full disk) would lock the stack
                        // until someone removed it.
                        let _ = fs::remove_file(&path);
                        return Err(e).with_context(|| {
                            format!(
                                "failed to write lock file {}; nothing was started",
                                path.display()
                            )
                        });
                    }
                    return Ok(DeployLock { path, holder });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let current = read_holder(&path);
                    match current {
                        Some(other) if is_stale(&other) => {
                            tracing::warn!(
                                pid = other.pid,
                                command = %other.command,
                                "taking over a stale deploy lock: its process is gone"
                            );
                            // A small race remains if two processes break the same stale
                            // lock at once; both then retry O_EXCL and only one wins.
                            let _ = fs::remove_file(&path);
                        }
                        None if is_unwritten(&path) => {
                            tracing::warn!(
                                lock = %path.display(),
                                "taking over a deploy lock that holds no holder: its writer was killed, or the disk was full, as it made it"
                            );
                            let _ = fs::remove_file(&path);
                        }
                        Some(other) => bail!(
                            "stack {} is locked by `{}` (pid {} on {}, since {})\n\
                             wait for it to finish; if that process is gone, remove {}",
                            dir.display(),
                            other.command,
                            other.pid,
                            other.host,
                            other.since,
                            path.display()
                        ),
                        None => bail!(
                            "stack {} is locked, and the lock file {} is unreadable\n\
                             if no elior command is running on this stack, remove that file",
                            dir.display(),
                            path.display()
                        ),
                    }
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "failed to create lock file {}\ncheck that {} is writable",
                            path.display(),
                            state_dir.display()
                        )
                    })
                }
            }
        }
        bail!(
            "failed to take the deploy lock {}: another process took it first\ntry again",
            path.display()
        )
    }

    pub fn holder(&self) -> &Holder {
        &self.holder
    }
}

impl Drop for DeployLock {
    fn drop(&mut self) {
        // Only remove the file if it is still ours.
        if read_holder(&self.path).as_ref() == Some(&self.holder) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Who holds the lock of `dir` now, if a live process does (for a caller that waits).
pub fn current_holder(dir: &Path) -> Option<Holder> {
    read_holder(&dir.join(STATE_DIR).join(LOCK_FILE)).filter(|h| !is_stale(h))
}

fn read_holder(path: &Path) -> Option<Holder> {
    let text = fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// A lock file that can be read but names no holder, made longer ago than a holder takes to
/// write one. (One that cannot be read at all is left to a person.)
fn is_unwritten(path: &Path) -> bool {
    let old = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| at.elapsed().ok())
        .is_some_and(|age| age > UNWRITTEN_LOCK_AGE);
    old && fs::read(path).is_ok()
}

/// A lock is stale when it was taken on this host by a process that no longer exists.
/// A lock from another host (a shared filesystem) is never judged stale.
fn is_stale(holder: &Holder) -> bool {
    holder.host == hostname() && !pid_alive(holder.pid)
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Creates `DIR/.elior` (mode 0700) if needed and returns its path.
pub fn ensure_state_dir(dir: &Path) -> Result<PathBuf> {
    let state_dir = dir.join(STATE_DIR);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&state_dir)
        .with_context(|| {
            format!(
                "failed to create {}\ncheck that the stack directory {} exists and is writable",
                state_dir.display(),
                dir.display()
            )
        })?;
    Ok(state_dir)
}

/// Appends one JSON line to `DIR/.elior/audit.log`: what was done, by whom, and how it
/// ended. `fields` is merged into the record.
pub fn audit(dir: &Path, action: &str, fields: serde_json::Value) -> Result<()> {
    let state_dir = ensure_state_dir(dir)?;
    let path = state_dir.join(AUDIT_LOG);
    let mut record = serde_json::json!({
        "time": chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        "action": action,
        "pid": std::process::id(),
        "host": hostname(),
    });
    if let (Some(map), serde_json::Value::Object(extra)) = (record.as_object_mut(), fields) {
        map.extend(extra);
    }
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("failed to open audit log {}", path.display()))?;
    // One write of the whole line, and on failure (a full disk) the log cut back to where
    // it was: `writeln!` wrote a line in pieces, and a full disk or a kill between them
    // left half a record that the next line ran on from, spoiling both. Appends happen
    // under the stack's deploy lock, so no other writer's line can follow ours meanwhile.
    let line = format!("{record}\n");
    let before = file.metadata().map(|m| m.len());
    let appended = file
        .write_all(line.as_bytes())
        .and_then(|()| file.sync_data());
    if appended.is_err() {
        if let Ok(len) = before {
            let _ = file.set_len(len);
        }
    }
    appended.with_context(|| format!("failed to append to audit log {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_details_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DeployLock::acquire(dir.path(), "elior restore latest").unwrap();
        let err = format!(
            "{:#}",
            DeployLock::acquire(dir.path(), "elior deploy").unwrap_err()
        );
        assert!(err.contains("locked by `elior restore latest`"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(lock);
        DeployLock::acquire(dir.path(), "elior deploy").unwrap();
    }

    /// A process killed between creating the lock file and writing it (or a full disk)
    /// leaves it empty: once older than a writer could take, it is taken over; a fresh one
    /// may be a writer at work and is refused.
    #[test]
    fn an_empty_lock_file_is_taken_over_only_once_it_is_old() {
        let dir = tempfile::tempdir().unwrap();
        let state = ensure_state_dir(dir.path()).unwrap();
        let empty = fs::File::create(state.join(LOCK_FILE)).unwrap();
        let err = format!(
            "{:#}",
            DeployLock::acquire(dir.path(), "elior deploy").unwrap_err()
        );
        assert!(err.contains("the lock file"), "{err}");
        let minute_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        empty.set_modified(minute_ago).unwrap();
        let lock = DeployLock::acquire(dir.path(), "elior deploy").unwrap();
        assert_eq!(lock.holder().pid, std::process::id());
        assert_eq!(
            read_holder(&state.join(LOCK_FILE)).as_ref(),
            Some(lock.holder())
        );
    }

    #[test]
    fn lock_of_a_dead_pid_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let state = ensure_state_dir(dir.path()).unwrap();
        let dead = Holder {
            // Above the kernel's pid_max limit, so never a live process.
            pid: 4_194_400,
            host: hostname(),
            command: "elior deploy".into(),
            since: "2026-01-01T00:00:00+00:00".into(),
        };
        fs::write(state.join(LOCK_FILE), serde_json::to_string(&dead).unwrap()).unwrap();
        let lock = DeployLock::acquire(dir.path(), "elior restore").unwrap();
        assert_eq!(lock.holder().pid, std::process::id());
    }
}
