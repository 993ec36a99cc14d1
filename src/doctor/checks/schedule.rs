//! The scheduler: installed as a unit and running for this stack, and each job (backup,
//! certificate renewal) succeeded at its last due time, in SCHEDULE_TIMEZONE's zone.

use std::path::Path;

use serde::Serialize;

use super::{Check, CheckInfo, Group};
use crate::doctor::facts::Stack;
use crate::doctor::sources::{one_line, Sources};
use crate::doctor::{human_age, procfs, Finding};

/// How late a scheduled job may be before its missing success counts.
pub const SCHEDULE_GRACE_SECS: i64 = 3600;

pub struct Schedule;

#[derive(Debug, Clone, Default, Serialize)]
pub struct JobFacts {
    pub name: String,
    pub schedule: String,
    pub last_success_at: Option<String>,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ScheduleFacts {
    pub unit_path: String,
    pub unit_installed: bool,
    /// PIDs of `elior schedule` processes for this stack.
    pub running_pids: Vec<u32>,
    pub state_error: Option<String>,
    /// SCHEDULE_TIMEZONE as set (None: the host's zone), the zone the jobs run in.
    pub timezone: Option<String>,
    pub jobs: Vec<JobFacts>,
}

impl Check for Schedule {
    const INFO: CheckInfo = CheckInfo {
        name: "schedule",
        group: Group::Operations,
        about: "the scheduler is installed and running; each job succeeded recently",
    };
    type Facts = ScheduleFacts;

    async fn gather(sources: &Sources) -> ScheduleFacts {
        let unit_path =
            Path::new("/etc/systemd/system").join(crate::schedule::unit::name(&sources.dir));
        let mut f = ScheduleFacts {
            unit_installed: unit_path.exists(),
            unit_path: unit_path.display().to_string(),
            running_pids: scheduler_pids(&sources.dir),
            ..Default::default()
        };
        let state = match crate::schedule::state::read(&sources.dir) {
            Ok(s) => s,
            Err(e) => {
                f.state_error = Some(one_line(&e));
                Default::default()
            }
        };
        let backup_schedule = sources
            .config
            .as_ref()
            .map(|c| c.backup_schedule.as_str().to_string())
            .unwrap_or_else(|| crate::config::stack::DEFAULT_BACKUP_SCHEDULE.to_string());
        // The jobs `elior schedule` runs: backups always, renewal when it has a schedule.
        let renew_schedule = sources.setting("CERT_RENEW_SCHEDULE").map(String::from);
        let jobs = [
            ("backup", Some(backup_schedule)),
            ("cert-renew", renew_schedule),
        ];
        f.timezone = sources
            .setting(crate::config::cron::TIMEZONE_KEY)
            .map(String::from);
        for (name, schedule) in jobs {
            let Some(schedule) = schedule else { continue };
            let job = state.jobs.get(name).cloned().unwrap_or_default();
            f.jobs.push(JobFacts {
                name: name.into(),
                schedule,
                last_success_at: job.last_success_at,
                last_result: job.last_result,
                last_error: job.last_error,
            });
        }
        f
    }

    fn judge(stack: &Stack, f: &ScheduleFacts) -> Vec<Finding> {
        let mut out = Vec::new();
        let install = format!("elior schedule install --dir {}", stack.dir);
        if f.running_pids.is_empty() {
            if f.unit_installed {
                out.push(Finding::failure(
                    format!(
                        "{} is installed but no `elior schedule` runs for this stack",
                        f.unit_path
                    ),
                    format!(
                        "systemctl restart {0}; journalctl -u {0}",
                        crate::schedule::unit::name(std::path::Path::new(&stack.dir))
                    ),
                ));
            } else {
                out.push(Finding::warning(
                    "no scheduler runs for this stack: backups and renewals only happen by hand",
                    install.clone(),
                ));
            }
        } else {
            out.push(Finding::ok(format!(
                "`elior schedule` runs (pid {})",
                f.running_pids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(e) = &f.state_error {
            out.push(Finding::warning(
                format!("the schedule state is unreadable: {e}"),
                "it is rewritten after the next job; remove it if it stays broken",
            ));
        }
        let now =
            chrono::DateTime::from_timestamp(stack.now, 0).map(|t| t.with_timezone(&chrono::Local));
        // The zone the scheduler reads the expressions in, so "due" means the same here.
        let zone = crate::config::cron::timezone(f.timezone.as_deref())
            .unwrap_or_else(|_| jiff::tz::TimeZone::system());
        for job in &f.jobs {
            let Ok(parsed) =
                crate::schedule::Job::in_zone(&job.name, &job.name, &job.schedule, zone.clone())
            else {
                continue;
            };
            let last = job
                .last_success_at
                .as_deref()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&chrono::Local));
            let Some(now) = now else { continue };
            match last {
                Some(last) => {
                    let missed = parsed.next_after(&last).is_some_and(|next| {
                        next.timestamp() + SCHEDULE_GRACE_SECS < now.timestamp()
                    });
                    if missed {
                        out.push(Finding::failure(
                            format!(
                                "job {}: last success {} ago, and it was due since ({}{})",
                                job.name,
                                human_age(now.timestamp() - last.timestamp()),
                                job.schedule,
                                job.last_error
                                    .as_deref()
                                    .map(|e| format!("; last error: {e}"))
                                    .unwrap_or_default()
                            ),
                            format!(
                                "run it now (`elior {} --dir {}`) and see the scheduler's log",
                                job_command(&job.name),
                                stack.dir
                            ),
                        ));
                    } else {
                        out.push(Finding::ok(format!(
                            "job {}: last success {} ago",
                            job.name,
                            human_age(now.timestamp() - last.timestamp())
                        )));
                    }
                }
                None if job.last_result.is_some() => out.push(Finding::failure(
                    format!(
                        "job {} ran but never succeeded{}",
                        job.name,
                        job.last_error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ),
                    format!(
                        "run it by hand to see why: elior {} --dir {}",
                        job_command(&job.name),
                        stack.dir
                    ),
                )),
                None => {}
            }
        }
        out
    }
}

/// The command a scheduled job runs.
fn job_command(job: &str) -> &'static str {
    match job {
        "cert-renew" => "cert renew",
        _ => "backup",
    }
}

/// PIDs of `elior schedule` processes whose stack directory is `dir`.
fn scheduler_pids(dir: &Path) -> Vec<u32> {
    let want = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut pids = Vec::new();
    for pid in procfs::pids().unwrap_or_default() {
        let args = procfs::cmdline(pid);
        let is_elior = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .is_some_and(|n| n.to_string_lossy().starts_with("elior"));
        if !is_elior || args.get(1).map(String::as_str) != Some("schedule") {
            continue;
        }
        if args.iter().any(|a| a == "install") {
            continue;
        }
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        let stack = args
            .iter()
            .position(|a| a == "--dir")
            .and_then(|i| args.get(i + 1))
            .map(|d| cwd.join(d))
            .or_else(|| {
                args.iter()
                    .find_map(|a| a.strip_prefix("--dir="))
                    .map(|d| cwd.join(d))
            })
            .unwrap_or(cwd);
        if std::fs::canonicalize(&stack).is_ok_and(|s| s == want) {
            pids.push(pid);
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::{statuses, test_stack, TEST_NOW};
    use crate::doctor::Status;

    const DAY: i64 = 86_400;

    #[test]
    fn a_job_that_missed_its_run_fails() {
        let f = ScheduleFacts {
            running_pids: vec![77],
            jobs: vec![JobFacts {
                name: "backup".into(),
                schedule: "0 2 * * *".into(),
                last_success_at: chrono::DateTime::from_timestamp(TEST_NOW - 3 * DAY, 0)
                    .map(|t| t.to_rfc3339()),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            statuses(&Schedule::judge(&test_stack(), &f)),
            vec![Status::Ok, Status::Failure]
        );
        let recent = ScheduleFacts {
            jobs: vec![JobFacts {
                last_success_at: chrono::DateTime::from_timestamp(TEST_NOW - 600, 0)
                    .map(|t| t.to_rfc3339()),
                ..f.jobs[0].clone()
            }],
            ..f
        };
        assert_eq!(
            statuses(&Schedule::judge(&test_stack(), &recent)),
            vec![Status::Ok, Status::Ok]
        );
    }
}
