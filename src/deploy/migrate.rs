//! `elior migrate-to-swarm` carried out (issue 21, item 5): gathers the facts of
//! `plan::migrate`, refuses before anything is stopped, then runs the steps still to do,
//! writing the journal after each, and puts the single-host stack back when a step after
//! its stop fails. The steps reuse the commands' own code: `backup::create` for the
//! backup, `db::copy::copy_file` (`elior db copy`) for the database, the upload
//! [`Store`] for the files and `deploy::swarm::run` for the swarm stack.
//!
//! The source is the single-host stack as it ran: its SQLite file and upload folder
//! (where BackupSettings finds them with DATABASE_URL and UPLOADS_URL unset), while the
//! env file's DATABASE_URL and UPLOADS_URL already name the swarm's database and bucket.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use super::{ImageSource, Options, Progress};
use crate::backup::{self, BackupSettings, CreateOptions, Reporter};
use crate::config::identity::Owner;
use crate::config::model::Stack;
use crate::config::stack::Mode;
use crate::db::pg::PgUrl;
use crate::docker;
use crate::files::settings::UploadsSettings;
use crate::files::store::Store;
use crate::files::{Kind, Prepared, Size};
use crate::plan::migrate::{self as plan, Facts, Journal, Planned, Step};

/// The swarm task containers carry this label; the single-host stack's do not.
const TASK_LABEL: &str = "com.docker.swarm.task.id";

/// The migration of one stack directory, with what its steps need.
pub struct Migration<'a> {
    stack: &'a Stack,
    owner: Owner,
    /// The single-host stack's backup settings: its SQLite file and upload folder.
    source: BackupSettings,
    target: Option<PgUrl>,
    bucket: Option<Store>,
    pub facts: Facts,
}

/// What a finished migration did, for the summary.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub backup: Option<String>,
    pub rows: Option<usize>,
    pub uploads: Option<usize>,
    pub stopped: Vec<String>,
    pub url: String,
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join(plan::JOURNAL_FILE)
}

fn read_journal(dir: &Path) -> Result<Journal> {
    let path = journal_path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a migration journal\nmove it away to start the migration over",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Journal::default()),
        Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
}

fn write_journal(dir: &Path, journal: &Journal) -> Result<()> {
    crate::lock::ensure_state_dir(dir)?;
    crate::fsutil::write_atomic(
        &journal_path(dir),
        serde_json::to_string_pretty(journal)?.as_bytes(),
        0o600,
    )
}

/// The single-host stack's containers (swarm tasks left out): (name, running, role).
async fn single_host(
    docker: &bollard::Docker,
    owner: &Owner,
) -> Result<Vec<(String, bool, String)>> {
    Ok(docker::stack_containers(docker, owner)
        .await?
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .is_none_or(|l| !l.contains_key(TASK_LABEL))
        })
        .map(|c| {
            let role = c
                .labels
                .as_ref()
                .and_then(|l| l.get(docker::LABEL_SERVICE).cloned())
                .unwrap_or_default();
            let running = c.state.as_ref().map(|s| s.to_string()).as_deref() == Some("running");
            (docker::summary_name(&c), running, role)
        })
        .collect())
}

impl<'a> Migration<'a> {
    /// Reads the directory, the journal, the engine and the target database; nothing is
    /// changed.
    pub fn observe(stack: &'a Stack, owner: Owner) -> Result<Migration<'a>> {
        let dir = stack.dir.as_path();
        let mut raw = stack.raw.clone();
        raw.overlay([
            ("DATABASE_URL".to_string(), String::new()),
            ("UPLOADS_URL".to_string(), String::new()),
        ]);
        let source = BackupSettings::from_raw(dir, &raw)?;
        let journal = read_journal(dir)?;
        let target = stack.config.serve.postgres.clone();
        let bucket = match &stack.config.serve.uploads {
            UploadsSettings::S3(_) => Some(Store::new(&stack.config.serve.uploads, Path::new(""))),
            UploadsSettings::Local => None,
        };
        let (swarm, containers) = docker::runtime()?.block_on(async {
            let docker = docker::connect().await?;
            let swarm = docker::swarm::observe_swarm(&docker).await?.swarm;
            anyhow::Ok((swarm, single_host(&docker, &owner).await?))
        })?;
        let backup_present = match &journal.backup {
            Some(id) => backup::scan(&source.backup_dir)?
                .iter()
                .any(|s| &s.id == id),
            None => false,
        };
        let facts = Facts {
            swarm_mode: stack.config.mode == Mode::Swarm,
            postgres_target: target.is_some(),
            uploads_on_s3: bucket.is_some(),
            swarm,
            single_host: containers.into_iter().map(|(n, r, _)| (n, r)).collect(),
            target_rows: 0,
            backup_present,
            journal,
        };
        Ok(Migration {
            stack,
            owner,
            source,
            target,
            bucket,
            facts,
        })
    }

    /// The checks that need the network: the target database (reached, and empty or this
    /// migration's) and the bucket (reached, writable). Then [`plan::check`].
    pub fn check(&mut self) -> Result<()> {
        let dir = self.stack.dir.display().to_string();
        plan::check(&self.facts, &dir).map_err(|m| anyhow!(m))?;
        if self.facts.swarm_mode {
            return Ok(());
        }
        let url = self
            .target
            .as_ref()
            .expect("checked: DATABASE_URL is PostgreSQL");
        self.facts.target_rows = crate::db::copy::rows_at(url).with_context(|| {
            format!(
                "DATABASE_URL ({}) cannot be reached from this host; nothing was stopped",
                url.target()
            )
        })?;
        let store = self
            .bucket
            .clone()
            .expect("checked: UPLOADS_URL is a bucket");
        docker::runtime()?
            .block_on(store.verify())
            .context("UPLOADS_URL's bucket cannot be used from this host; nothing was stopped")?;
        plan::check(&self.facts, &dir).map_err(|m| anyhow!(m))
    }

    pub fn plan(&self) -> Vec<Planned> {
        plan::plan(&self.facts)
    }

    /// Runs the steps still to do. A failure after the single host was stopped puts it
    /// back (and says so) before returning the error.
    pub fn run(
        &mut self,
        options: &Options,
        quiet: bool,
        progress: &mut dyn Progress,
    ) -> Result<Summary> {
        let dir = self.stack.dir.clone();
        let mut summary = Summary {
            url: format!(
                "https://{}{}",
                self.stack.config.domain.url_host(),
                super::port_suffix(self.stack.config.https_port)
            ),
            ..Default::default()
        };
        let mut stopped = false;
        for planned in self.plan() {
            let step = planned.step;
            if let Some(why) = &planned.done {
                progress.note(&format!("{}: done ({why})", step.describe()));
                if step == Step::StopSingleHost {
                    stopped = true;
                }
                continue;
            }
            progress.note(&format!("{} ...", step.describe()));
            let result = self.step(step, options, quiet, progress, &mut summary);
            if let Err(err) = result {
                if !stopped {
                    return Err(
                        err.context(format!("migrate-to-swarm failed at: {}", step.describe()))
                    );
                }
                return Err(self.put_back(err, step, progress));
            }
            if step == Step::StopSingleHost {
                stopped = true;
            }
            crate::backup::fault::point(step.fault_point());
        }
        // Done: the journal has nothing left to resume.
        let _ = std::fs::remove_file(journal_path(&dir));
        summary.backup = summary.backup.or(self.facts.journal.backup.clone());
        Ok(summary)
    }

    fn save(&mut self, change: impl FnOnce(&mut Journal)) -> Result<()> {
        change(&mut self.facts.journal);
        write_journal(&self.stack.dir, &self.facts.journal)
    }

    fn step(
        &mut self,
        step: Step,
        options: &Options,
        quiet: bool,
        progress: &mut dyn Progress,
        summary: &mut Summary,
    ) -> Result<()> {
        match step {
            Step::Backup => {
                let created = backup::create(
                    &self.source,
                    &CreateOptions {
                        reason: "pre-migration",
                        ..Default::default()
                    },
                    &mut Reporter::new(quiet),
                )?;
                let id = created.id().to_string();
                progress.note(&format!(
                    "  backup {id} in {}",
                    self.source.backup_dir.display()
                ));
                summary.backup = Some(id.clone());
                self.save(|j| j.backup = Some(id))
            }
            Step::StopSingleHost => {
                let owner = self.owner.clone();
                let stopped = docker::runtime()?.block_on(async {
                    let docker = docker::connect().await?;
                    let mut containers = single_host(&docker, &owner).await?;
                    // nginx first: no request reaches an API that is about to stop.
                    containers
                        .sort_by_key(|(_, _, role)| role != crate::plan::containers::PROXY_SERVICE);
                    let mut stopped = Vec::new();
                    for (name, running, _) in containers {
                        if running {
                            docker::apply::stop(&docker, &name).await?;
                            stopped.push(name);
                        }
                    }
                    anyhow::Ok(stopped)
                })?;
                progress.note(&format!("  stopped {}", stopped.join(", ")));
                summary.stopped = stopped;
                Ok(())
            }
            Step::CopyDatabase => {
                let url = self.target.clone().expect("checked");
                // Rows found now are this migration's own (the check refused others).
                let force = self.facts.journal.copy_started;
                self.save(|j| j.copy_started = true)?;
                let report = crate::db::copy::copy_file(&self.source.database_path, &url, force)?;
                let rows: usize = report.iter().map(|t| t.rows).sum();
                progress.note(&format!(
                    "  copied and verified {rows} rows in {} tables into {}",
                    report.len(),
                    url.target()
                ));
                summary.rows = Some(rows);
                self.save(|j| j.database_copied = true)
            }
            Step::CopyUploads => {
                let store = self.bucket.clone().expect("checked");
                let root = self.source.uploads_dir.clone();
                let copied = docker::runtime()?.block_on(copy_uploads(&root, &store))?;
                progress.note(&format!(
                    "  copied {copied} uploads into {}",
                    store.describe()
                ));
                summary.uploads = Some(copied);
                self.save(|j| j.uploads_copied = true)
            }
            Step::DeploySwarm => {
                let report = docker::runtime()?.block_on(super::swarm::run(
                    self.stack,
                    &self.owner,
                    options,
                    ImageSource::Build,
                    progress,
                ))?;
                match report {
                    super::swarm::SwarmReport::Done(outcome) => {
                        if let Some((status, body)) = outcome.proof {
                            progress.note(&format!("  {}/health -> {status} {body}", outcome.url));
                        }
                        Ok(())
                    }
                    super::swarm::SwarmReport::DryRun(_) => unreachable!("not a dry run"),
                }
            }
            Step::RecordSwarmMode => super::swarm::record_swarm_mode(&self.stack.dir),
        }
    }

    /// After a failed step: the swarm services go (the volumes and secrets stay), the
    /// journal forgets the copies, and the single-host containers start again.
    fn put_back(
        &mut self,
        err: anyhow::Error,
        step: Step,
        progress: &mut dyn Progress,
    ) -> anyhow::Error {
        progress.note(&format!(
            "{} failed: {err:#}\nputting the single-host stack back",
            step.describe()
        ));
        let owner = self.owner.clone();
        let journal = plan::after_rollback(&self.facts.journal);
        // Written before the single host takes writes again: a later run copies again.
        let saved = self.save(|j| *j = journal);
        let dir = self.stack.dir.clone();
        let domain = self.stack.config.domain.as_str().to_string();
        let https_port = self.stack.config.https_port;
        let restored = saved.and_then(|_| {
            docker::runtime()?.block_on(async {
                let docker = docker::connect().await?;
                docker::swarm::remove(&docker, &owner, false, Duration::from_secs(120)).await?;
                let mut containers = single_host(&docker, &owner).await?;
                // The API first: nginx resolves it when it starts.
                containers
                    .sort_by_key(|(_, _, role)| role == crate::plan::containers::PROXY_SERVICE);
                for (name, running, _) in containers {
                    if !running {
                        docker::apply::start(&docker, &name).await?;
                    }
                }
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    match super::prove(&dir, &domain, https_port).await {
                        Ok(_) => break anyhow::Ok(()),
                        Err(e) if Instant::now() >= deadline => break Err(e),
                        Err(_) => {}
                    }
                }
            })
        });
        match restored {
            Ok(()) => err.context(format!(
                "migrate-to-swarm failed at: {}\nthe single-host stack serves again (its containers were started, the swarm services removed); fix the cause and run migrate-to-swarm again",
                step.describe()
            )),
            Err(e) => err.context(format!(
                "migrate-to-swarm failed at: {}, and putting the single-host stack back failed too: {e:#}\nrun `elior migrate-to-swarm` again to finish, or `docker start` the stack's containers",
                step.describe()
            )),
        }
    }
}

/// Puts every upload of the folder `root` (originals and their derivatives, same names)
/// into `store`; an object already there is written again, so a re-run is harmless.
async fn copy_uploads(root: &Path, store: &Store) -> Result<usize> {
    let mut copied = 0;
    for kind in Kind::ALL {
        let folder = root.join(kind.as_str());
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("failed to list {}", folder.display()))
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| crate::files::is_stored_name(n))
            .collect();
        names.sort();
        for name in names {
            let mut files = Vec::new();
            for size in [Size::Original, Size::Thumbnail, Size::Medium] {
                let path = crate::files::path_of(root, kind, size, &name);
                match std::fs::read(&path) {
                    Ok(bytes) => files.push((size, bytes.into())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("failed to read {}", path.display()))
                    }
                }
            }
            store
                .put(
                    kind,
                    &Prepared {
                        name: name.clone(),
                        files,
                    },
                )
                .await
                .map_err(|e| {
                    anyhow!(
                        "failed to copy {}/{name} into the bucket: {e}",
                        kind.as_str()
                    )
                })?;
            copied += 1;
        }
    }
    Ok(copied)
}
