//! The backup folder is writable and private, and its disk has room for the next backup;
//! the newest complete backup verifies, is under 26 h old and plausibly sized; and, with
//! BACKUP_OFFSITE, the newest backup in the bucket is under 26 h old too.

use std::os::unix::fs::PermissionsExt;

use serde::Serialize;

use super::{Check, CheckInfo, Group};
use crate::backup::human_bytes;
use crate::doctor::facts::Stack;
use crate::doctor::sources::{one_line, Sources};
use crate::doctor::{human_age, Finding};
use crate::files::settings::S3Settings;

/// A backup older than this fails: a daily job missed a run.
pub const BACKUP_MAX_AGE_SECS: i64 = 26 * 3600;

pub struct Backups;

#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupFacts {
    pub dir: String,
    pub exists: bool,
    /// Permission bits of the folder.
    pub mode: Option<u32>,
    pub writable_error: Option<String>,
    pub error: Option<String>,
    pub complete_backups: usize,
    pub latest_id: Option<String>,
    /// Unix seconds (local time of the id, read as this host's zone).
    pub latest_taken_at: Option<i64>,
    pub latest_problems: Vec<String>,
    pub latest_database_bytes: Option<u64>,
    pub live_database_bytes: Option<u64>,
    /// Free space on the backup folder's disk.
    pub free_bytes: Option<u64>,
    /// About what the next backup writes: the latest archive backup's size, or in a
    /// repository the live database (copied whole into tmp/ before it is cut).
    pub next_backup_bytes: Option<u64>,
    /// BACKUP_OFFSITE's bucket, when set (issue 17).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsite: Option<OffsiteFacts>,
}

/// What the offsite bucket holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OffsiteFacts {
    pub url: String,
    pub error: Option<String>,
    pub complete_backups: usize,
    pub latest_id: Option<String>,
    /// Unix seconds (local time of the id, read as this host's zone).
    pub latest_taken_at: Option<i64>,
}

impl Check for Backups {
    const INFO: CheckInfo = CheckInfo {
        name: "backups",
        group: Group::Operations,
        about: "the backup folder is writable; the last verified backup is recent and plausible",
    };
    type Facts = BackupFacts;

    async fn gather(sources: &Sources) -> BackupFacts {
        let raw = sources.raw.clone().unwrap_or_default();
        let (dir, offsite) =
            match crate::backup::settings::BackupSettings::from_raw(&sources.dir, &raw)
                .and_then(|s| crate::backup::owner::check(&s).map(|()| s))
            {
                Ok(s) => (s.backup_dir, s.offsite),
                Err(e) => {
                    return BackupFacts {
                        error: Some(format!("{e:#}")),
                        exists: true,
                        ..Default::default()
                    }
                }
            };
        let offsite = match offsite {
            Some(bucket) => Some(offsite_facts(bucket).await),
            None => None,
        };
        let mut f = BackupFacts {
            dir: dir.display().to_string(),
            exists: dir.is_dir(),
            live_database_bytes: std::fs::metadata(sources.database_path())
                .ok()
                .map(|m| m.len()),
            offsite,
            ..Default::default()
        };
        if !f.exists {
            return f;
        }
        f.mode = std::fs::metadata(&dir)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777);
        let probe = dir.join(format!(".elior-doctor-{}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
        {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
            }
            Err(e) => f.writable_error = Some(e.to_string()),
        }
        let sets = match crate::backup::scan(&dir) {
            Ok(s) => s,
            Err(e) => {
                f.error = Some(one_line(&e));
                return f;
            }
        };
        f.complete_backups = sets.iter().filter(|s| s.has_manifest()).count();
        f.free_bytes = crate::fsutil::disk_space(&dir).map(|d| d.free_bytes);
        if let Some(latest) = sets.iter().rev().find(|s| s.has_manifest()) {
            f.next_backup_bytes = if latest.is_repository() {
                f.live_database_bytes
            } else {
                Some(latest.total_size())
            };
            let (verification, _) = crate::backup::verify(&dir, latest, None);
            f.latest_problems = verification.problems;
            f.latest_id = Some(latest.id.clone());
            f.latest_taken_at = latest
                .taken_at
                .and_local_timezone(chrono::Local)
                .earliest()
                .map(|t| t.timestamp());
            f.latest_database_bytes = latest
                .parts
                .get(&crate::backup::names::Part::Database)
                .copied();
        }
        f
    }

    fn judge(stack: &Stack, f: &BackupFacts) -> Vec<Finding> {
        let take = format!("elior backup --dir {}", stack.dir);
        if !f.exists {
            return vec![Finding::failure(
                format!("the backup folder {} does not exist", f.dir),
                format!(
                    "{take}  (creates it), or set BACKUP_DIR in {}",
                    stack.env_path()
                ),
            )];
        }
        let mut out = Vec::new();
        if let Some(e) = &f.writable_error {
            out.push(Finding::failure(
                format!("the backup folder {} is not writable: {e}", f.dir),
                format!("chown root:root {0} && chmod 700 {0}", f.dir),
            ));
        }
        if let Some(mode) = f.mode.filter(|m| m & 0o077 != 0) {
            out.push(Finding::warning(
            format!(
                "the backup folder {} is mode {mode:04o}: other users can read the backups (password hashes, personal data)",
                f.dir
            ),
            format!("chmod 700 {}", f.dir),
        ));
        }
        if let Some(e) = &f.error {
            // An error that names its own fix (on its second line) is shown with it.
            let (problem, fix) = match e.split_once('\n') {
                Some((problem, fix)) => (problem, fix.to_string()),
                None => (e.as_str(), take),
            };
            out.push(Finding::failure(
                format!("cannot list backups: {problem}"),
                fix,
            ));
            return out;
        }
        let (Some(id), Some(taken_at)) = (&f.latest_id, f.latest_taken_at) else {
            out.push(Finding::failure(
                format!("there is no complete backup in {}", f.dir),
                format!(
                    "{take}, and keep taking them: elior schedule install --dir {}",
                    stack.dir
                ),
            ));
            return out;
        };
        let age = stack.now - taken_at;
        if !f.latest_problems.is_empty() {
            out.push(
                Finding::failure(
                    format!("the latest backup {id} does not verify"),
                    take.clone(),
                )
                .with_details(f.latest_problems.clone()),
            );
        } else if age > BACKUP_MAX_AGE_SECS {
            out.push(Finding::failure(
            format!(
                "the last verified backup {id} is {} old (more than 26h: the daily backup is not running)",
                human_age(age)
            ),
            format!("{take}, then see the schedule check (`elior schedule install --dir {}`)", stack.dir),
        ));
        } else {
            out.push(Finding::ok(format!(
                "the last backup {id} is {} old and verifies ({} complete)",
                human_age(age),
                f.complete_backups
            )));
        }
        if let (Some(copy), Some(live)) = (f.latest_database_bytes, f.live_database_bytes) {
            // A consistent copy can be smaller than a live file with free pages, but not tiny.
            if copy == 0 || (live > 64 * 1024 && copy < live / 10) {
                out.push(Finding::warning(
                    format!(
                        "the latest backup's database is {} against a live database of {}",
                        human_bytes(copy),
                        human_bytes(live)
                    ),
                    format!("take a new one and compare: {take}"),
                ));
            }
        }
        if let (Some(free), Some(need)) = (f.free_bytes, f.next_backup_bytes) {
            if free < need {
                out.push(Finding::failure(
                    format!(
                        "the next backup will not fit in {}: {} free there, and it needs about {} (as the latest did)",
                        f.dir,
                        human_bytes(free),
                        human_bytes(need)
                    ),
                    format!(
                        "elior backup prune --dir {} (deletes the backups past BACKUP_RETENTION_DAYS), or set BACKUP_DIR in {} to a larger disk",
                        stack.dir,
                        stack.env_path()
                    ),
                ));
            }
        }
        if let Some(offsite) = &f.offsite {
            out.push(offsite_backups(stack, offsite));
        }
        out
    }
}

/// The newest complete backup in the offsite bucket (issue 17). Listed on a blocking
/// thread: the S3 client drives a runtime of its own, which cannot run inside doctor's.
async fn offsite_facts(offsite: S3Settings) -> OffsiteFacts {
    tokio::task::spawn_blocking(move || list_offsite(&offsite))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn list_offsite(offsite: &S3Settings) -> OffsiteFacts {
    let mut f = OffsiteFacts {
        url: offsite.url(),
        ..Default::default()
    };
    match crate::backup::offsite::list(offsite) {
        Err(e) => f.error = Some(one_line(&e)),
        Ok((backups, _, _)) => {
            let complete: Vec<_> = backups.iter().filter(|b| b.complete).collect();
            f.complete_backups = complete.len();
            if let Some(latest) = complete.last() {
                f.latest_id = Some(latest.id.clone());
                f.latest_taken_at = crate::backup::names::parse_id(&latest.id)
                    .and_then(|t| t.and_local_timezone(chrono::Local).earliest())
                    .map(|t| t.timestamp());
            }
        }
    }
    f
}

/// The age of the newest backup in BACKUP_OFFSITE's bucket (issue 17).
fn offsite_backups(stack: &Stack, f: &OffsiteFacts) -> Finding {
    let push = format!("elior backup push --dir {}", stack.dir);
    if let Some(e) = &f.error {
        return Finding::failure(
            format!("cannot read the offsite backups in {}: {e}", f.url),
            format!(
                "fix BACKUP_OFFSITE and the S3_* / AWS_* keys in {}, then {push}",
                stack.env_path()
            ),
        );
    }
    let (Some(id), Some(taken_at)) = (&f.latest_id, f.latest_taken_at) else {
        return Finding::failure(
            format!(
                "there is no complete backup offsite in {}: a lost host loses them all",
                f.url
            ),
            push,
        );
    };
    let age = stack.now - taken_at;
    if age > BACKUP_MAX_AGE_SECS {
        Finding::failure(
            format!(
                "the newest offsite backup {id} in {} is {} old (more than 26h: copies are failing)",
                f.url,
                human_age(age)
            ),
            format!("{push}  (it says why a copy fails)"),
        )
    } else {
        Finding::ok(format!(
            "the newest offsite backup {id} in {} is {} old ({} there)",
            f.url,
            human_age(age),
            f.complete_backups
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::{statuses, test_stack, TEST_NOW};
    use crate::doctor::Status;

    const DAY: i64 = 86_400;

    #[test]
    fn backups_older_than_26_hours_fail() {
        let f = BackupFacts {
            dir: "/srv/elior/backups".into(),
            exists: true,
            complete_backups: 1,
            latest_id: Some("20261126_020000".into()),
            latest_taken_at: Some(TEST_NOW - 3 * DAY),
            ..Default::default()
        };
        let found = Backups::judge(&test_stack(), &f);
        assert_eq!(statuses(&found), vec![Status::Failure]);
        assert!(found[0].finding.contains("is 3d 0h old"));
        let fresh = BackupFacts {
            latest_taken_at: Some(TEST_NOW - 3600),
            ..f.clone()
        };
        assert_eq!(
            statuses(&Backups::judge(&test_stack(), &fresh)),
            vec![Status::Ok]
        );
        let open = BackupFacts {
            mode: Some(0o755),
            ..fresh.clone()
        };
        let found = Backups::judge(&test_stack(), &open);
        assert_eq!(statuses(&found), vec![Status::Warning, Status::Ok]);
        assert_eq!(
            found[0].fix.as_deref(),
            Some("chmod 700 /srv/elior/backups")
        );
        let tiny = BackupFacts {
            latest_database_bytes: Some(4096),
            live_database_bytes: Some(50 << 20),
            ..fresh
        };
        assert_eq!(
            statuses(&Backups::judge(&test_stack(), &tiny)),
            vec![Status::Ok, Status::Warning]
        );
    }

    #[test]
    fn a_backup_disk_without_room_for_the_next_backup_fails() {
        let f = BackupFacts {
            dir: "/srv/elior/backups".into(),
            exists: true,
            complete_backups: 2,
            latest_id: Some("20261126_020000".into()),
            latest_taken_at: Some(TEST_NOW - 3600),
            free_bytes: Some(40 << 20),
            next_backup_bytes: Some(50 << 20),
            ..Default::default()
        };
        let found = Backups::judge(&test_stack(), &f);
        assert_eq!(statuses(&found), vec![Status::Ok, Status::Failure]);
        assert!(
            found[1].finding.contains("40.0 MiB free there")
                && found[1].finding.contains("about 50.0 MiB"),
            "{}",
            found[1].finding
        );
        assert!(found[1]
            .fix
            .as_deref()
            .unwrap()
            .contains("elior backup prune"));
        let roomy = BackupFacts {
            free_bytes: Some(60 << 20),
            ..f
        };
        assert_eq!(
            statuses(&Backups::judge(&test_stack(), &roomy)),
            vec![Status::Ok]
        );
    }

    #[test]
    fn the_newest_offsite_backup_older_than_26_hours_fails() {
        let offsite = OffsiteFacts {
            url: "s3://gym-backups/prod".into(),
            complete_backups: 3,
            latest_id: Some("20261126_020000".into()),
            latest_taken_at: Some(TEST_NOW - 2 * DAY),
            ..Default::default()
        };
        let f = BackupFacts {
            dir: "/srv/elior/backups".into(),
            exists: true,
            complete_backups: 1,
            latest_id: Some("20261128_020000".into()),
            latest_taken_at: Some(TEST_NOW - 3600),
            offsite: Some(offsite.clone()),
            ..Default::default()
        };
        let found = Backups::judge(&test_stack(), &f);
        assert_eq!(statuses(&found), vec![Status::Ok, Status::Failure]);
        assert_eq!(
            found[1].finding,
            "the newest offsite backup 20261126_020000 in s3://gym-backups/prod is 2d 0h old (more than 26h: copies are failing)"
        );
        assert!(found[1]
            .fix
            .as_deref()
            .unwrap()
            .starts_with("elior backup push --dir /srv/elior"));
        let fresh = BackupFacts {
            offsite: Some(OffsiteFacts {
                latest_taken_at: Some(TEST_NOW - 3600),
                ..offsite.clone()
            }),
            ..f.clone()
        };
        assert_eq!(
            statuses(&Backups::judge(&test_stack(), &fresh)),
            vec![Status::Ok, Status::Ok]
        );
        let unreachable = BackupFacts {
            offsite: Some(OffsiteFacts {
                error: Some("BACKUP_OFFSITE: bucket \"gym-backups\" does not exist".into()),
                ..offsite
            }),
            ..f
        };
        let found = Backups::judge(&test_stack(), &unreachable);
        assert_eq!(found[1].status, Status::Failure);
        assert!(found[1]
            .finding
            .starts_with("cannot read the offsite backups in s3://gym-backups/prod"));
    }
}
