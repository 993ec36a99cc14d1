//! A swarm stack's API as a restore sees it (issue 21): the [`ApiControl`] that quiesces
//! the API by scaling its service to 0 and waiting until its tasks are gone, then scales
//! it back to the count it had and waits until those tasks run healthy.
//!
//! Between the two the stack serves nothing, so the count to come back to is written
//! first, into `DIR/.elior/swarm-restore.json` with the restore's lock holder. A restore
//! killed meanwhile leaves that journal; the next command that recovers interrupted
//! restores (deploy, update, rollback, backup, restore, schedule: through
//! `backup::recover_interrupted_restore`) scales the API back through [`recover`]. The
//! database needs no undo: pg_restore runs as one transaction. [`interrupted`] says what
//! happened, for `status`.
//!
//! It changes the api service's replica count only; it never creates, updates or removes
//! a service.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use bollard::Docker;
use serde::{Deserialize, Serialize};

use super::swarm::{self, Notes};
use super::Owner;
use crate::backup::restore::ApiControl;
use crate::lock::{self, Holder};
use crate::plan::swarm::Names;

/// The journal's name, in the stack's state folder.
const JOURNAL: &str = "swarm-restore.json";

/// A swarm restore's record of the API it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quiesced {
    /// The api service.
    pub service: String,
    /// Its replica count before the restore scaled it to 0.
    pub replicas: u32,
    /// The restore's deploy lock: while that process still holds it, the restore runs.
    pub holder: Holder,
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join(lock::STATE_DIR).join(JOURNAL)
}

/// The journal of `dir`, if a restore left one.
pub fn read(dir: &Path) -> Result<Option<Quiesced>> {
    let path = journal_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).with_context(|| {
            format!(
                "{} is unreadable\nrun `elior scale api=N` to bring the API back, then remove that file",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
}

fn write(dir: &Path, quiesced: &Quiesced) -> Result<()> {
    lock::ensure_state_dir(dir)?;
    let text = serde_json::to_string_pretty(quiesced).expect("journal serialises") + "\n";
    crate::fsutil::write_atomic(&journal_path(dir), text.as_bytes(), 0o600)
}

fn remove(dir: &Path) -> Result<()> {
    let path = journal_path(dir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("failed to remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// What the next command does with a journal it finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The restore that wrote it still runs: leave it.
    Leave,
    /// The API is still at 0 tasks: back to this many.
    ScaleBack(u32),
    /// The API runs again (scaled by hand) or is gone (`elior down`): only the journal
    /// is left to remove.
    Forget,
}

/// Decides from the journal, whether its restore still holds the stack's lock, and the
/// api service's replica count now (`None`: no such service).
pub fn action(quiesced: &Quiesced, restore_runs: bool, replicas_now: Option<u32>) -> Action {
    match (restore_runs, replicas_now) {
        (true, _) => Action::Leave,
        (false, Some(0)) => Action::ScaleBack(quiesced.replicas),
        (false, _) => Action::Forget,
    }
}

fn restore_runs(dir: &Path, quiesced: &Quiesced) -> bool {
    lock::current_holder(dir).as_ref() == Some(&quiesced.holder)
}

/// Scales the API of a restore that was killed after it stopped the API back to its
/// replica count, under the stack's lock, and says so on stderr. Nothing to do (and no
/// engine asked) without a journal.
pub fn recover(dir: &Path) -> Result<()> {
    let Some(found) = read(dir)? else {
        return Ok(());
    };
    if restore_runs(dir, &found) {
        return Ok(());
    }
    let _lock = lock::DeployLock::acquire(dir, "elior (recovering an interrupted swarm restore)")?;
    // Another process may have recovered it while we took the lock.
    let Some(quiesced) = read(dir)? else {
        return Ok(());
    };
    let runtime = super::runtime()?;
    let service = quiesced.service.clone();
    let done = runtime.block_on(async {
        let docker = super::connect().await?;
        let now = swarm::replicas(&docker, &service).await?;
        let decided = action(&quiesced, false, now);
        if let Action::ScaleBack(n) = decided {
            swarm::scale(&docker, &service, n).await?;
        }
        anyhow::Ok(decided)
    });
    let done = done.with_context(|| {
        format!(
            "`{}` was interrupted after it scaled the API to 0 tasks, and scaling {service} back to {} failed\nrun `elior scale api={}`",
            quiesced.holder.command, quiesced.replicas, quiesced.replicas
        )
    })?;
    remove(dir)?;
    if let Action::ScaleBack(n) = done {
        eprintln!(
            "elior: `{}` (pid {}, since {}) was interrupted after it scaled the API to 0 tasks; {service} was scaled back to {n}\nits pg_restore runs as one transaction, so the database is entirely as before it or entirely the backup; `elior backup list` shows the pre-restore backup it took",
            quiesced.holder.command, quiesced.holder.pid, quiesced.holder.since
        );
    }
    Ok(())
}

/// For `status`: the restore that holds the API at 0 tasks, or was interrupted there.
pub fn interrupted(dir: &Path) -> Option<String> {
    let quiesced = read(dir).ok()??;
    let h = &quiesced.holder;
    Some(if restore_runs(dir, &quiesced) {
        format!(
            "`{}` (pid {}, since {}) holds {} at 0 tasks while it restores the database; it brings back {} tasks",
            h.command, h.pid, h.since, quiesced.service, quiesced.replicas
        )
    } else {
        format!(
            "`{}` (pid {}, since {}) was interrupted after it scaled {} to 0 tasks; `elior deploy` or `elior restore` scales it back to {}",
            h.command, h.pid, h.since, quiesced.service, quiesced.replicas
        )
    })
}

/// Progress lines on stderr (a restore's), unless quiet.
struct Lines {
    quiet: bool,
}

impl Notes for Lines {
    fn note(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }
}

/// The API service of one swarm stack, driven from a synchronous restore.
pub struct SwarmApi {
    runtime: tokio::runtime::Runtime,
    docker: Docker,
    owner: Owner,
    service: String,
    /// The replica count the API had, once [`ApiControl::stop`] scaled it to 0.
    stopped_at: Option<u32>,
    health_timeout: Duration,
    notes: Lines,
}

impl SwarmApi {
    /// The api service of the stack `owner` on the swarm this engine manages.
    pub fn connect(owner: &Owner, health_timeout: Duration, quiet: bool) -> Result<SwarmApi> {
        let runtime = super::runtime()?;
        let docker = runtime.block_on(super::connect())?;
        Ok(SwarmApi {
            runtime,
            docker,
            service: Names(&owner.project).service("api"),
            owner: owner.clone(),
            stopped_at: None,
            health_timeout,
            notes: Lines { quiet },
        })
    }

    fn replicas(&self) -> Result<u32> {
        Ok(self
            .runtime
            .block_on(swarm::replicas(&self.docker, &self.service))?
            .unwrap_or(0))
    }

    /// Scales to `n` and waits until `n` tasks of the current spec run healthy (0: until
    /// every task is gone), within a deadline that grows with the tasks started.
    fn scale_and_wait(&self, n: u32) -> Result<()> {
        let timeout = self.health_timeout + Duration::from_secs(20) * n.max(1);
        self.runtime.block_on(async {
            swarm::scale(&self.docker, &self.service, n).await?;
            swarm::converge(
                &self.docker,
                &self.owner,
                std::slice::from_ref(&self.service),
                timeout,
                &self.notes,
            )
            .await
        })
    }
}

impl ApiControl for SwarmApi {
    fn is_running(&mut self) -> Result<bool> {
        Ok(self.replicas()? > 0)
    }

    fn stop(&mut self) -> Result<()> {
        let replicas = self.replicas()?;
        if replicas == 0 {
            return Ok(());
        }
        let dir = &self.owner.dir;
        // The restore's own lock holder: the next command tells a running restore from a
        // killed one by it.
        let holder = lock::current_holder(dir).unwrap_or_else(|| Holder {
            pid: std::process::id(),
            host: lock::hostname(),
            command: "elior restore".to_string(),
            since: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        });
        let quiesced = Quiesced {
            service: self.service.clone(),
            replicas,
            holder,
        };
        // Written before the scale, so no kill leaves the API at 0 without it.
        write(dir, &quiesced)?;
        crate::backup::fault::point("swarm-restore:journal");
        self.notes.note(&format!(
            "  scaling {} from {replicas} tasks to 0 and waiting until they are gone",
            self.service
        ));
        if let Err(e) = self.scale_and_wait(0) {
            // Nothing was restored: the API comes back as it was.
            let back = self.scale_and_wait(replicas).and_then(|()| remove(dir));
            return Err(match back {
                Ok(()) => e,
                Err(b) => e.context(format!("and scaling it back to {replicas} failed: {b:#}")),
            });
        }
        self.stopped_at = Some(replicas);
        crate::backup::fault::point("swarm-restore:quiesced");
        Ok(())
    }

    fn start(&mut self) -> Result<()> {
        let Some(replicas) = self.stopped_at else {
            return Ok(());
        };
        self.notes.note(&format!(
            "  scaling {} back to {replicas} tasks and waiting until they run healthy",
            self.service
        ));
        let scaled = self
            .runtime
            .block_on(swarm::scale(&self.docker, &self.service, replicas));
        scaled.with_context(|| {
            format!(
                "failed to scale {} back to {replicas} tasks\nrun `elior scale api={replicas}`",
                self.service
            )
        })?;
        // The count is back: from here on the engine keeps it, with or without us.
        remove(&self.owner.dir)?;
        self.stopped_at = None;
        self.scale_and_wait(replicas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiesced() -> Quiesced {
        Quiesced {
            service: "elior-fit-1234abcd-api".into(),
            replicas: 3,
            holder: Holder {
                pid: 4242,
                host: "node-1".into(),
                command: "elior restore 20261206_210000".into(),
                since: "2026-12-06T21:00:00+00:00".into(),
            },
        }
    }

    #[test]
    fn a_killed_restore_is_scaled_back_only_while_the_api_is_still_at_zero() {
        let q = quiesced();
        assert_eq!(action(&q, true, Some(0)), Action::Leave);
        assert_eq!(action(&q, false, Some(0)), Action::ScaleBack(3));
        // Scaled by hand meanwhile: that count stays.
        assert_eq!(action(&q, false, Some(5)), Action::Forget);
        // `elior down` removed the service.
        assert_eq!(action(&q, false, None), Action::Forget);
    }

    #[test]
    fn the_journal_round_trips_and_a_dead_holder_reads_as_interrupted() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read(tmp.path()).unwrap(), None);
        assert_eq!(interrupted(tmp.path()), None);
        write(tmp.path(), &quiesced()).unwrap();
        assert_eq!(read(tmp.path()).unwrap(), Some(quiesced()));
        let said = interrupted(tmp.path()).unwrap();
        assert!(
            said.starts_with("`elior restore 20261206_210000` (pid 4242, since 2026-12-06T21:00:00+00:00) was interrupted after it scaled elior-fit-1234abcd-api to 0 tasks"),
            "{said}"
        );
        let mode = std::fs::metadata(journal_path(tmp.path())).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        remove(tmp.path()).unwrap();
        remove(tmp.path()).unwrap();
        assert_eq!(read(tmp.path()).unwrap(), None);
    }
}
