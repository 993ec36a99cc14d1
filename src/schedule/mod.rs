//! `elior schedule`: a foreground scheduler that runs a stack's periodic jobs on cron
//! expressions from its env file, and records each job's last run and last success in
//! `DIR/.elior/state.json` so `doctor` can tell when a job silently stopped.
//!
//! The loop is written against a [`Clock`] so tests can drive time; the jobs are closures
//! the caller supplies (the CLI runs each as a child `elior` process, so a crashing or
//! hanging job never takes the scheduler with it). This module does not know what a job
//! does, and it never runs two jobs at once.

pub mod state;
pub mod unit;

use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::{DateTime, Local};
use jiff::tz::TimeZone;

use crate::config::cron::CronExpr;

/// One scheduled job.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    /// The expression as the user wrote it, for messages.
    pub expression: String,
    cron: CronExpr,
    /// The zone the expression's wall times are read in.
    timezone: TimeZone,
}

impl Job {
    /// A job on a crontab(5) expression (see [`crate::config::cron`]), in the host's
    /// time zone. `key` names the setting in errors.
    pub fn new(name: &str, key: &str, expression: &str) -> Result<Job> {
        Job::in_zone(name, key, expression, TimeZone::system())
    }

    /// The same, with its wall times read in `timezone` (`SCHEDULE_TIMEZONE`).
    pub fn in_zone(name: &str, key: &str, expression: &str, timezone: TimeZone) -> Result<Job> {
        let cron = CronExpr::from_str(expression).map_err(|m| anyhow::anyhow!("{key}: {m}"))?;
        Ok(Job {
            name: name.to_string(),
            expression: expression.to_string(),
            cron,
            timezone,
        })
    }

    /// The first run time strictly after `after`.
    pub fn next_after(&self, after: &DateTime<Local>) -> Option<DateTime<Local>> {
        let from = jiff::Timestamp::new(after.timestamp(), after.timestamp_subsec_nanos() as i32)
            .ok()?
            .to_zoned(self.timezone.clone());
        let next = self.cron.next_after(&from)?;
        let at = DateTime::from_timestamp(
            next.timestamp().as_second(),
            next.subsec_nanosecond() as u32,
        )?;
        Some(at.with_timezone(&Local))
    }

    /// The next `n` runs after `after`, in the job's zone (`elior schedule --next N`).
    pub fn upcoming(&self, after: &DateTime<Local>, n: usize) -> Vec<jiff::Zoned> {
        let Ok(start) = jiff::Timestamp::new(after.timestamp(), 0) else {
            return Vec::new();
        };
        let mut at = start.to_zoned(self.timezone.clone());
        let mut runs = Vec::new();
        while runs.len() < n {
            match self.cron.next_after(&at) {
                Some(next) => {
                    runs.push(next.clone());
                    at = next;
                }
                None => break,
            }
        }
        runs
    }
}

/// The job due next after `after`, and when.
pub fn next_due(jobs: &[Job], after: DateTime<Local>) -> Option<(usize, DateTime<Local>)> {
    jobs.iter()
        .enumerate()
        .filter_map(|(i, job)| job.next_after(&after).map(|at| (i, at)))
        .min_by_key(|(_, at)| *at)
}

/// Requests to stop, shared between the signal handler and the loop: the first lets a
/// running job finish, the second aborts it.
#[derive(Clone, Default)]
pub struct Stop(Arc<(Mutex<u32>, Condvar)>);

impl Stop {
    /// Counts one more request (a signal) and wakes every waiter.
    pub fn request(&self) {
        let (count, wake) = &*self.0;
        *count.lock().expect("stop flag") += 1;
        wake.notify_all();
    }

    pub fn requested(&self) -> bool {
        *self.0 .0.lock().expect("stop flag") >= 1
    }

    /// Whether a second request asked to abort the running job.
    pub fn aborted(&self) -> bool {
        *self.0 .0.lock().expect("stop flag") >= 2
    }

    /// Sleeps for `duration` or until a stop is requested; true when stopped.
    pub fn wait(&self, duration: Duration) -> bool {
        let (count, wake) = &*self.0;
        let guard = count.lock().expect("stop flag");
        let (guard, _) = wake
            .wait_timeout_while(guard, duration, |n| *n == 0)
            .expect("stop flag");
        *guard >= 1
    }

    /// Sleeps for `duration` or until an abort is requested; true when aborted.
    pub fn wait_abort(&self, duration: Duration) -> bool {
        let (count, wake) = &*self.0;
        let guard = count.lock().expect("stop flag");
        let (guard, _) = wake
            .wait_timeout_while(guard, duration, |n| *n < 2)
            .expect("stop flag");
        *guard >= 2
    }
}

/// Time as the scheduler sees it.
pub trait Clock {
    fn now(&self) -> DateTime<Local>;
    /// Waits until `at`; false when a stop was requested first.
    fn sleep_until(&self, at: DateTime<Local>, stop: &Stop) -> bool;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Local> {
        Local::now()
    }

    fn sleep_until(&self, at: DateTime<Local>, stop: &Stop) -> bool {
        loop {
            let left = (at - Local::now()).to_std().unwrap_or_default();
            if left.is_zero() {
                return !stop.requested();
            }
            // Wake at least once a minute so a changed wall clock (NTP, suspend) is noticed.
            if stop.wait(left.min(Duration::from_secs(60))) {
                return false;
            }
        }
    }
}

/// How one run of a job ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub job: String,
    pub started_at: DateTime<Local>,
    pub duration: Duration,
    pub result: Result<(), String>,
}

/// Runs the jobs at their times until a stop is requested. Each run's outcome goes to
/// `report`; a failing job is reported and the loop goes on.
pub fn run(
    jobs: &[Job],
    clock: &dyn Clock,
    stop: &Stop,
    run_job: &mut dyn FnMut(&Job) -> Result<()>,
    report: &mut dyn FnMut(&Outcome),
) -> Result<()> {
    if jobs.is_empty() {
        bail!("no jobs to schedule");
    }
    let mut after = clock.now();
    while !stop.requested() {
        let Some((index, at)) = next_due(jobs, after) else {
            bail!("no job is ever due again; check the cron expressions");
        };
        if !clock.sleep_until(at, stop) {
            break;
        }
        let job = &jobs[index];
        let started_at = clock.now();
        let started = Instant::now();
        tracing::info!(job = %job.name, "job started");
        let result = run_job(job).map_err(|e| format!("{e:#}"));
        let outcome = Outcome {
            job: job.name.clone(),
            started_at,
            duration: started.elapsed(),
            result,
        };
        match &outcome.result {
            Ok(()) => tracing::info!(
                job = %job.name,
                duration_ms = outcome.duration.as_millis() as u64,
                "job succeeded"
            ),
            Err(e) => tracing::error!(
                job = %job.name,
                duration_ms = outcome.duration.as_millis() as u64,
                error = %e,
                "job failed; will run again at its next time"
            ),
        }
        report(&outcome);
        // Runs missed while this one ran are skipped, as cron does.
        after = clock.now().max(at);
    }
    tracing::info!("scheduler stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::cell::{Cell, RefCell};

    struct FakeClock(Cell<DateTime<Local>>);

    impl Clock for FakeClock {
        fn now(&self) -> DateTime<Local> {
            self.0.get()
        }
        fn sleep_until(&self, at: DateTime<Local>, stop: &Stop) -> bool {
            self.0.set(at);
            !stop.requested()
        }
    }

    fn local(s: &str) -> DateTime<Local> {
        let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
        Local.from_local_datetime(&naive).single().unwrap()
    }

    #[test]
    fn runs_jobs_at_their_cron_times_and_survives_a_failure() {
        let jobs = vec![
            Job::new("backup", "BACKUP_SCHEDULE", "0 2 * * *").unwrap(),
            Job::new("tick", "TEST", "30 0 3 * * *").unwrap(),
        ];
        let clock = FakeClock(Cell::new(local("2026-11-28 23:00:00")));
        let stop = Stop::default();
        let ran = RefCell::new(Vec::new());
        let mut outcomes = Vec::new();
        run(
            &jobs,
            &clock,
            &stop,
            &mut |job| {
                ran.borrow_mut().push(format!(
                    "{} {}",
                    clock.now().format("%Y-%m-%d %H:%M:%S"),
                    job.name
                ));
                if ran.borrow().len() == 4 {
                    stop.request();
                }
                if job.name == "backup" && ran.borrow().len() == 1 {
                    bail!("disk full");
                }
                Ok(())
            },
            &mut |o| outcomes.push((o.job.clone(), o.result.clone())),
        )
        .unwrap();
        assert_eq!(
            ran.into_inner(),
            [
                "2026-11-29 02:00:00 backup",
                "2026-11-29 03:00:30 tick",
                "2026-11-30 02:00:00 backup",
                "2026-11-30 03:00:30 tick",
            ]
        );
        assert_eq!(
            outcomes[0],
            ("backup".to_string(), Err("disk full".to_string()))
        );
        assert_eq!(outcomes[2], ("backup".to_string(), Ok(())));
    }

    #[test]
    fn a_job_runs_at_its_wall_time_in_its_own_zone() {
        let tz = jiff::tz::TimeZone::get("Asia/Tokyo").unwrap();
        let job = Job::in_zone("backup", "BACKUP_SCHEDULE", "0 3 * * *", tz).unwrap();
        let from = DateTime::from_timestamp(1_796_083_200, 0).unwrap(); // 2026-12-01 00:00Z
        let next = job.next_after(&from.with_timezone(&Local)).unwrap();
        // 03:00 in Tokyo (UTC+9) is 18:00 UTC the day before: 2026-12-01 18:00Z.
        assert_eq!(next.timestamp(), 1_796_148_000);
        let upcoming = job.upcoming(&from.with_timezone(&Local), 2);
        assert_eq!(upcoming[0].timestamp().as_second(), 1_796_148_000);
        assert_eq!(upcoming[1].timestamp().as_second(), 1_796_148_000 + 86_400);
    }

    #[test]
    fn expressions_are_checked_with_the_key_named() {
        assert!(Job::new("b", "BACKUP_SCHEDULE", "*/5 * * * * *").is_ok());
        assert!(Job::new("b", "BACKUP_SCHEDULE", "0 3 * * Mon-Fri").is_ok());
        let err = |e: &str| format!("{:#}", Job::new("b", "BACKUP_SCHEDULE", e).unwrap_err());
        assert!(err("daily").starts_with("BACKUP_SCHEDULE: \"daily\" is not a cron expression"));
        assert!(Job::new("b", "BACKUP_SCHEDULE", "0 2 * * 1-5").is_ok());
        assert!(err("0 25 * * *").starts_with("BACKUP_SCHEDULE: \"0 25 * * *\": the hour field"));
    }
}
