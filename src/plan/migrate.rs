//! `elior migrate-to-swarm` as data (issue 21, item 5): from what the stack directory,
//! its migration journal and the engine report, the refusals that come before anything
//! is stopped, and the steps still to do, in order.
//!
//! Pure: no I/O. `deploy::migrate` gathers the facts and carries the steps out; the
//! journal (`DIR/.elior/migration.json`) is what makes a re-run after a kill resume where
//! the killed run stopped instead of starting over or copying twice.
//!
//! The order is what keeps users' data whole:
//! 1. back up the single-host stack (SQLite and uploads), as `elior backup` does;
//! 2. stop the single-host containers (kept, not removed): no write lands in SQLite after
//!    the copy, and its nginx frees ports 80/443 for the swarm's;
//! 3. copy SQLite into DATABASE_URL's PostgreSQL (`db copy`'s one verified transaction);
//! 4. copy the uploads into the bucket (the store's own put, same keys);
//! 5. deploy the swarm stack and prove HTTPS /health through its nginx;
//! 6. record MODE=swarm: from then on every command acts on the swarm stack.
//!
//! A failure in 3–5 removes the swarm services and starts the single-host containers
//! again (the journal first forgets the copies: the single host serves new writes, so a
//! later run copies again).

use serde::{Deserialize, Serialize};

use super::swarm::SwarmState;

/// Where the journal of a migration is kept, under the stack directory.
pub const JOURNAL_FILE: &str = ".elior/migration.json";

/// What earlier runs finished, written after each step (atomically).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The id of the backup taken before anything was stopped.
    pub backup: Option<String>,
    /// A copy into the target began when the target was empty: rows found there later
    /// are this migration's own, and a new copy may replace them.
    pub copy_started: bool,
    pub database_copied: bool,
    pub uploads_copied: bool,
}

/// What the migration starts from.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// MODE=swarm is recorded already: the migration (or a swarm deploy) is done.
    pub swarm_mode: bool,
    /// DATABASE_URL names PostgreSQL (the copy's target).
    pub postgres_target: bool,
    /// UPLOADS_URL names a bucket.
    pub uploads_on_s3: bool,
    pub swarm: SwarmState,
    /// The single-host stack's containers (the swarm's task containers left out), with
    /// whether each runs.
    pub single_host: Vec<(String, bool)>,
    /// Rows in the target's tables (0: empty, or no schema yet).
    pub target_rows: i64,
    /// Whether the backup the journal names is still in BACKUP_DIR.
    pub backup_present: bool,
    pub journal: Journal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Backup,
    StopSingleHost,
    CopyDatabase,
    CopyUploads,
    DeploySwarm,
    RecordSwarmMode,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Backup,
        Step::StopSingleHost,
        Step::CopyDatabase,
        Step::CopyUploads,
        Step::DeploySwarm,
        Step::RecordSwarmMode,
    ];

    /// The fault point after the step (crash tests).
    pub fn fault_point(self) -> &'static str {
        match self {
            Step::Backup => "migrate:backup",
            Step::StopSingleHost => "migrate:stop-single-host",
            Step::CopyDatabase => "migrate:copy-database",
            Step::CopyUploads => "migrate:copy-uploads",
            Step::DeploySwarm => "migrate:deploy-swarm",
            Step::RecordSwarmMode => "migrate:record-swarm-mode",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Step::Backup => "back up the single-host stack (SQLite database and uploads)",
            Step::StopSingleHost => {
                "stop the single-host containers (kept until `elior down --purge`)"
            }
            Step::CopyDatabase => {
                "copy the SQLite database into DATABASE_URL's PostgreSQL (one verified transaction)"
            }
            Step::CopyUploads => "copy the uploads into UPLOADS_URL's bucket",
            Step::DeploySwarm => "deploy the swarm stack and prove HTTPS /health through its nginx",
            Step::RecordSwarmMode => "record MODE=swarm in .env.production",
        }
    }
}

/// One step of the plan: to do, or done by an earlier run (and why it counts as done).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    pub step: Step,
    pub done: Option<String>,
}

/// Refuses a migration that cannot finish, before anything is stopped; `dir` names the
/// stack directory in the fixes.
pub fn check(facts: &Facts, dir: &str) -> Result<(), String> {
    if facts.swarm_mode {
        return Ok(());
    }
    if facts.single_host.is_empty() {
        return Err(format!("no single-host stack of {dir} is on this engine: there is nothing to migrate\ndeploy it on the swarm directly with `elior deploy DOMAIN --swarm --dir {dir}`"));
    }
    if !facts.postgres_target {
        return Err(format!("DATABASE_URL in {dir}/.env.production is not a PostgreSQL URL: the swarm's API tasks share one PostgreSQL, which the SQLite database is copied into\nset DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DATABASE (an empty database this host and every swarm node reach), then run migrate-to-swarm again"));
    }
    if !facts.uploads_on_s3 {
        return Err(format!("UPLOADS_URL in {dir}/.env.production is not set: the swarm's API tasks share their uploads through an S3 bucket, which the uploads are copied into\nset UPLOADS_URL=s3://BUCKET/PREFIX with S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, then run migrate-to-swarm again"));
    }
    super::swarm::check(
        &super::swarm::Observed {
            swarm: facts.swarm.clone(),
            ..Default::default()
        },
        false,
    )?;
    if facts.target_rows > 0 && !facts.journal.copy_started {
        return Err(format!("DATABASE_URL's database already holds {} rows that this migration did not copy\npoint DATABASE_URL at an empty database (or empty this one), then run migrate-to-swarm again", facts.target_rows));
    }
    Ok(())
}

/// The steps, each to do or done. Empty when MODE=swarm is recorded: nothing is left.
pub fn plan(facts: &Facts) -> Vec<Planned> {
    if facts.swarm_mode {
        return Vec::new();
    }
    let j = &facts.journal;
    let running: Vec<&str> = facts
        .single_host
        .iter()
        .filter(|(_, running)| *running)
        .map(|(name, _)| name.as_str())
        .collect();
    Step::ALL
        .into_iter()
        .map(|step| {
            let done = match step {
                Step::Backup => match &j.backup {
                    Some(id) if facts.backup_present => Some(format!("backup {id}")),
                    _ => None,
                },
                Step::StopSingleHost => running
                    .is_empty()
                    .then(|| "no single-host container runs".to_string()),
                Step::CopyDatabase => j
                    .database_copied
                    .then(|| "copied and verified by an earlier run".to_string()),
                Step::CopyUploads => j
                    .uploads_copied
                    .then(|| "copied by an earlier run".to_string()),
                // Both are idempotent and cheap when nothing changed: always run.
                Step::DeploySwarm | Step::RecordSwarmMode => None,
            };
            Planned { step, done }
        })
        .collect()
}

/// What a failed switch leaves in the journal: the single host serves (and takes
/// writes) again, so the copies and the backup are stale; the copy into the target may
/// replace this migration's rows.
pub fn after_rollback(journal: &Journal) -> Journal {
    Journal {
        backup: None,
        copy_started: journal.copy_started,
        database_copied: false,
        uploads_copied: false,
    }
}

/// One line per step, for `--dry-run` and the progress.
pub fn render(steps: &[Planned]) -> String {
    let mut out = String::new();
    for (i, p) in steps.iter().enumerate() {
        let state = match &p.done {
            Some(why) => format!("done ({why})"),
            None => "to do".to_string(),
        };
        out.push_str(&format!("{}. {}: {state}\n", i + 1, p.step.describe()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Facts {
        Facts {
            swarm_mode: false,
            postgres_target: true,
            uploads_on_s3: true,
            swarm: SwarmState::Manager,
            single_host: vec![("p-api".into(), true), ("p-nginx".into(), true)],
            target_rows: 0,
            backup_present: false,
            journal: Journal::default(),
        }
    }

    #[test]
    fn a_first_run_does_every_step_in_order() {
        let steps = plan(&ready());
        assert_eq!(
            steps.iter().map(|p| p.step).collect::<Vec<_>>(),
            Step::ALL.to_vec()
        );
        assert!(steps.iter().all(|p| p.done.is_none()));
        assert_eq!(
            render(&steps),
            "1. back up the single-host stack (SQLite database and uploads): to do\n\
             2. stop the single-host containers (kept until `elior down --purge`): to do\n\
             3. copy the SQLite database into DATABASE_URL's PostgreSQL (one verified transaction): to do\n\
             4. copy the uploads into UPLOADS_URL's bucket: to do\n\
             5. deploy the swarm stack and prove HTTPS /health through its nginx: to do\n\
             6. record MODE=swarm in .env.production: to do\n"
        );
    }

    #[test]
    fn a_rerun_after_a_kill_resumes_after_the_last_finished_step() {
        let mut facts = ready();
        facts.single_host = vec![("p-api".into(), false), ("p-nginx".into(), false)];
        facts.backup_present = true;
        facts.target_rows = 12;
        facts.journal = Journal {
            backup: Some("20261206-0530".into()),
            copy_started: true,
            database_copied: true,
            uploads_copied: false,
        };
        assert_eq!(check(&facts, "/srv/e"), Ok(()));
        let todo: Vec<Step> = plan(&facts)
            .into_iter()
            .filter(|p| p.done.is_none())
            .map(|p| p.step)
            .collect();
        assert_eq!(
            todo,
            [Step::CopyUploads, Step::DeploySwarm, Step::RecordSwarmMode]
        );
        // The backup the journal names was deleted meanwhile: taken again.
        facts.backup_present = false;
        assert!(plan(&facts)[0].done.is_none());
    }

    #[test]
    fn a_rollback_forgets_the_copies_but_may_replace_its_own_rows() {
        let mut facts = ready();
        facts.journal = after_rollback(&Journal {
            backup: Some("b".into()),
            copy_started: true,
            database_copied: true,
            uploads_copied: true,
        });
        facts.target_rows = 40;
        assert_eq!(check(&facts, "/srv/e"), Ok(()));
        assert!(plan(&facts).iter().all(|p| p.done.is_none()));
    }

    #[test]
    fn refusals_come_before_any_change_and_name_the_fix() {
        let refused = |f: &dyn Fn(&mut Facts)| {
            let mut facts = ready();
            f(&mut facts);
            check(&facts, "/srv/e").unwrap_err()
        };
        assert!(refused(&|f| f.postgres_target = false)
            .contains("\nset DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DATABASE"));
        assert!(
            refused(&|f| f.uploads_on_s3 = false).contains("\nset UPLOADS_URL=s3://BUCKET/PREFIX")
        );
        assert!(refused(&|f| f.swarm = SwarmState::Inactive)
            .contains("run `docker swarm init --advertise-addr"));
        assert!(refused(&|f| f.single_host.clear()).contains("nothing to migrate"));
        assert!(refused(&|f| f.target_rows = 3)
            .starts_with("DATABASE_URL's database already holds 3 rows"));
        // Done already: nothing to refuse, nothing to do.
        let mut facts = ready();
        facts.swarm_mode = true;
        facts.postgres_target = false;
        assert_eq!(check(&facts, "/srv/e"), Ok(()));
        assert!(plan(&facts).is_empty());
    }
}
