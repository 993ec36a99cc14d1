//! `elior schedule`: run a stack's periodic jobs in the foreground, or install the
//! systemd service that does.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, FromArgMatches, Subcommand};

use crate::backup::BackupSettings;
use crate::provision::Target;
use crate::schedule::{self, state, unit, Job, Stop, SystemClock};

/// Run the stack's scheduled jobs in the foreground until SIGTERM or Ctrl-C.
///
/// Jobs and their cron expressions come from DIR/.env.production:
///     BACKUP_SCHEDULE      backup, then prune (default "0 2 * * *", 02:00 daily)
///     CERT_RENEW_SCHEDULE  `elior cert renew --jitter 1800` (renews only when due)
/// Expressions follow crontab(5): 5 fields MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK
/// (weekdays 0-7 or Sun-Sat; when both day fields are restricted, either one matching
/// runs the job), names such as @daily or @hourly, or 6 fields with seconds first.
/// Times are read in SCHEDULE_TIMEZONE (an IANA name such as Europe/Paris; default the
/// host's zone); a run in an hour that DST skips happens once, after the jump. Each
/// run's start, result and duration are logged, a failing job does not stop the
/// scheduler, and the last success of each job is kept in DIR/.elior/state.json.
/// The prune also runs after a backup that found BACKUP_DIR full (it makes room for the
/// next run) or whose offsite copy failed, never after any other failed backup.
/// On SIGTERM or Ctrl-C a running job is allowed to finish (the prune after a backup is
/// skipped); a second signal aborts it, killing the child and removing the backup's
/// partial files. Each outcome is logged.
///
/// Examples:
///     elior schedule --dir /srv/elior               run in the foreground
///     elior schedule --dir /srv/elior --next 5      print the next 5 runs of each job
///     elior schedule install --dir /srv/elior       install and start a systemd service
///     elior schedule install --dir /srv/a --dir /srv/b   one service per stack
///     elior schedule install --print                print that service's unit
///     elior schedule uninstall --dir /srv/elior     stop and remove it
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    command: Option<ScheduleCommand>,
    /// Print the next N runs of each job (with their time zone) and exit
    #[arg(long, value_name = "N")]
    next: Option<usize>,
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Install, enable and start a hardened systemd service per stack directory (--dir,
    /// repeatable): `elior-schedule-<DIR>.service`, run as the `elior` user from
    /// /usr/local/bin/elior, restarted when its unit or the binary changed. The same
    /// units, user and binary as `elior provision --only user,units`, by the same code.
    #[command(after_help = "Examples:\n  \
        elior schedule install --dir /srv/elior\n  \
        elior schedule install --dir /srv/a --dir /srv/b --dry-run\n  \
        elior schedule install --root /mnt/image --dir /srv/elior   # into a prefix")]
    Install(InstallArgs),
    /// Stop, disable and remove the services of these stack directories (--dir); other
    /// stacks' services stay
    #[command(after_help = "Example:\n  elior schedule uninstall --dir /srv/elior")]
    Uninstall(InstallArgs),
}

#[derive(Args)]
struct InstallArgs {
    /// Print the units instead of installing them (for hosts without systemd)
    #[arg(long, conflicts_with = "dry_run")]
    print: bool,
    /// Show the plan and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Prefix for every file path (as `elior provision --root`): units are written and
    /// enabled there, not started
    #[arg(long, default_value = "/", value_name = "DIR")]
    root: PathBuf,
}

impl ScheduleArgs {
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        if ctx.dirs().len() > 1 && self.command.is_none() {
            bail!(
                "--dir given {} times; `elior schedule` runs the jobs of one stack\nrun one scheduler per directory, or `{}` for one service each",
                ctx.dirs().len(),
                ctx.command("schedule install")
            );
        }
        let dir = std::path::absolute(ctx.dir())
            .with_context(|| format!("failed to resolve {}", ctx.dir().display()))?;
        match (self.command, self.next) {
            (Some(_), Some(_)) => bail!(
                "--next lists the runs of `elior schedule`; it takes no subcommand\nrun `{}`",
                ctx.command("schedule --next 5")
            ),
            (Some(ScheduleCommand::Install(args)), None) => install(ctx, &args),
            (Some(ScheduleCommand::Uninstall(args)), None) => uninstall(ctx, &args),
            (None, Some(n)) => print_next(&dir, n, ctx.json),
            (None, None) => run_scheduler(&dir),
        }
    }
}

/// Spread of certificate renewals across hosts (passed to `elior cert renew --jitter`).
const CERT_JITTER_SECS: &str = "1800";

fn jobs(dir: &Path) -> Result<Vec<Job>> {
    let settings = BackupSettings::load(dir)?;
    let raw = crate::config::model::settings(dir)?;
    let key = crate::config::cron::TIMEZONE_KEY;
    let zone =
        crate::config::cron::timezone(raw.get(key)).map_err(|m| anyhow::anyhow!("{key}: {m}"))?;
    let mut jobs = vec![Job::in_zone(
        "backup",
        "BACKUP_SCHEDULE",
        &settings.schedule,
        zone.clone(),
    )?];
    if let Some(expression) = raw
        .get("CERT_RENEW_SCHEDULE")
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        jobs.push(Job::in_zone(
            "cert-renew",
            "CERT_RENEW_SCHEDULE",
            expression,
            zone,
        )?);
    }
    Ok(jobs)
}

/// `elior schedule --next N`: each job's next N runs, in its zone.
fn print_next(dir: &Path, n: usize, json: bool) -> Result<ExitCode> {
    let jobs = jobs(dir)?;
    let now = chrono::Local::now();
    if json {
        let doc: Vec<serde_json::Value> = jobs
            .iter()
            .map(|job| {
                serde_json::json!({
                    "job": job.name,
                    "schedule": job.expression,
                    "runs": job.upcoming(&now, n).iter().map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%:z[%Q]").to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    for job in &jobs {
        outln!("{} ({})", job.name, job.expression);
        for at in job.upcoming(&now, n) {
            outln!("  {}", at.strftime("%a %Y-%m-%d %H:%M:%S %Z (%Q)"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_scheduler(dir: &Path) -> Result<ExitCode> {
    crate::logging::init("info", crate::logging::Format::Human);
    let jobs = jobs(dir)?;
    crate::backup::recover_interrupted_restore(dir)?;
    let exe = std::env::current_exe().context("failed to find the elior executable")?;
    let stop = Stop::default();
    watch_signals(stop.clone())?;
    for job in &jobs {
        tracing::info!(job = %job.name, schedule = %job.expression, "scheduled");
    }
    schedule::run(
        &jobs,
        &SystemClock,
        &stop,
        &mut |job| match job.name.as_str() {
            "backup" => {
                let backup = run_child(&exe, &["backup", "--scheduled"], dir, &stop);
                if !prune_after(&backup) {
                    return backup;
                }
                if stop.requested() {
                    tracing::info!("skipping the prune after the backup: stop requested");
                    return backup;
                }
                run_child(&exe, &["backup", "prune"], dir, &stop)?;
                backup
            }
            "cert-renew" => run_child(
                &exe,
                &["cert", "renew", "--jitter", CERT_JITTER_SECS],
                dir,
                &stop,
            ),
            other => bail!("unknown job {other}"),
        },
        &mut |outcome| {
            if let Err(e) = state::record(dir, outcome) {
                tracing::error!("{e:#}");
            }
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Runs one step of a job as a child `elior`, so a crash or hang stays in the child (every
/// backup has its own time limit). The child has its own process group, so a Ctrl-C at
/// the terminal reaches only the scheduler, which lets the child finish; a second signal
/// aborts it: the child is killed and what it left half-written is removed.
fn run_child(exe: &Path, args: &[&str], dir: &Path, stop: &Stop) -> Result<()> {
    let mut child = Command::new(exe)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .process_group(0)
        .spawn()
        .with_context(|| format!("failed to run {}", exe.display()))?;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("failed to wait for `elior {}`", args.join(" ")))?
        {
            break status;
        }
        if stop.wait_abort(Duration::from_millis(100)) {
            let pid = child.id();
            let _ = child.kill();
            let _ = child.wait();
            let removed = BackupSettings::load(dir)
                .and_then(|s| crate::backup::remove_abandoned(&s.backup_dir, false));
            match removed {
                Ok(removed) => {
                    for abandoned in &removed {
                        tracing::warn!("{}", abandoned.describe(false));
                    }
                    tracing::warn!(
                        pid,
                        removed = removed.len(),
                        "aborted `elior {}`: killed it and removed its partial files",
                        args.join(" ")
                    );
                }
                Err(e) => tracing::error!(
                    pid,
                    "aborted `elior {}`, but removing its partial files failed: {e:#}; the next backup or prune removes them",
                    args.join(" ")
                ),
            }
            bail!("`elior {}` aborted by a second signal", args.join(" "));
        }
    };
    if !status.success() {
        return Err(ChildFailed {
            command: args.join(" "),
            status,
        }
        .into());
    }
    Ok(())
}

/// A job's child `elior` that exited unsuccessfully.
#[derive(Debug, thiserror::Error)]
#[error("`elior {command}` failed ({status})")]
struct ChildFailed {
    command: String,
    status: std::process::ExitStatus,
}

/// Whether retention runs after this scheduled backup: after a success; after a backup
/// kept here whose offsite copy failed (it was taken, and backups must not pile up while
/// the bucket is away); and after one that found BACKUP_DIR full, where the prune is what
/// makes room for the next run (skipping it left the disk full for good). Any other
/// failure leaves the backups as they are, for a person to look at.
fn prune_after(backup: &Result<()>) -> bool {
    let Err(e) = backup else {
        return true;
    };
    let code = e
        .downcast_ref::<ChildFailed>()
        .and_then(|failed| failed.status.code())
        .and_then(|code| u8::try_from(code).ok());
    code.is_some_and(|code| {
        [
            super::backup::EXIT_OFFSITE_FAILED,
            super::backup::EXIT_BACKUP_DIR_FULL,
        ]
        .contains(&code)
    })
}

/// Counts SIGTERM and SIGINT, from a small thread with its own runtime: the first lets
/// the running job finish, the second aborts it.
fn watch_signals(stop: Stop) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("failed to start the signal watcher")?;
    let (mut terminate, mut interrupt) = runtime
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })
        .context("failed to watch SIGTERM and SIGINT")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for count in 1.. {
                let name = runtime.block_on(async {
                    tokio::select! {
                        _ = terminate.recv() => "SIGTERM",
                        _ = interrupt.recv() => "SIGINT",
                    }
                });
                if count == 1 {
                    tracing::info!(
                        signal = name,
                        "stop requested; a running job finishes first (send SIGINT or SIGTERM again to abort it)"
                    );
                } else {
                    tracing::warn!(signal = name, "second stop request: aborting the running job");
                }
                stop.request();
            }
        })
        .context("failed to start the signal watcher")?;
    Ok(())
}

/// Where install and uninstall act (`--root`), and the stack directories as the host
/// sees them, each checked for a unit.
fn install_target(ctx: &super::Context, args: &InstallArgs) -> Result<(Target, Vec<PathBuf>)> {
    let target = Target::from_root(&args.root)?;
    let given = if ctx.dirs().is_empty() {
        vec![PathBuf::from(".")]
    } else {
        ctx.dirs().to_vec()
    };
    let dirs = unit_dirs(&target, given)?;
    Ok((target, dirs))
}

/// The stack directories a unit is written for, as the host sees them (`schedule install`
/// and `provision` alike): absolute, resolved against this host only when `target` is
/// it, named safely in a unit, and never stepping out of --root.
pub(super) fn unit_dirs(target: &Target, given: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for dir in given {
        let dir = if dir.is_absolute() {
            dir
        } else if target.live() {
            std::path::absolute(&dir)
                .with_context(|| format!("--dir {}: cannot resolve it", dir.display()))?
        } else {
            bail!(
                "--dir {}: must be absolute with --root (it names the path as the host sees it)\nexample: --dir /srv/elior",
                dir.display()
            );
        };
        unit::check_dir(&dir).context("--dir")?;
        // Under --root, `..` would step out of the prefix.
        if dir
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            bail!(
                "--dir {}: a path with `..` could leave --root\nname the directory without `..`",
                dir.display()
            );
        }
        dirs.push(dir);
    }
    Ok(dirs)
}

/// One unit per stack directory, through provision's user and units steps (issue 20: the
/// one renderer, the one way to install, enable and restart it).
fn install(ctx: &super::Context, args: &InstallArgs) -> Result<ExitCode> {
    let (target, dirs) = install_target(ctx, args)?;
    // Validate first: a unit for a stack whose schedule is broken would only crash-loop.
    for dir in &dirs {
        jobs(&target.at(dir))?;
    }
    if args.print {
        let stacks = crate::provision::observe::stacks(&target, &dirs)?;
        for (i, unit) in crate::provision::units::want(&stacks).iter().enumerate() {
            if i > 0 {
                outln!();
            }
            if dirs.len() > 1 {
                outln!("# {}", unit.name);
            }
            out!("{}", unit.text);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let root = target.root.to_string_lossy().into_owned();
    let mut argv = vec!["provision", "--only", "user,units", "--root", &root];
    if args.dry_run {
        argv.push("--dry-run");
    }
    let command = super::provision::ProvisionArgs::augment_args(clap::Command::new("elior"));
    let matches = command
        .try_get_matches_from(&argv)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let provision = super::provision::ProvisionArgs::from_arg_matches(&matches)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    provision.run(&ctx.with_dirs(dirs))
}

/// Stops, disables and removes the units of the named stack directories only.
fn uninstall(ctx: &super::Context, args: &InstallArgs) -> Result<ExitCode> {
    use crate::provision::{apply, observe, units};
    let (target, dirs) = install_target(ctx, args)?;
    let stacks = observe::stacks(&target, &dirs)?;
    let names: Vec<String> = dirs.iter().map(|d| unit::name(d)).collect();
    let mut have = observe::units(&target, &stacks)?;
    have.ours.retain(|u| names.contains(&u.name));
    let plan = units::plan_undo(&have);
    if plan.actions.is_empty() {
        outln!(
            "no elior schedule service for {}: nothing to remove",
            names.join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    for action in &plan.actions {
        outln!(
            "  {} {}",
            if args.dry_run { "would" } else { "+" },
            action.describe()
        );
    }
    if args.dry_run || args.print {
        return Ok(ExitCode::SUCCESS);
    }
    let _lock = apply::lock(&target)?;
    apply::step(&plan, &target)?;
    outln!("removed {}", names.join(", "));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prune_runs_after_a_backup_taken_or_one_that_found_backup_dir_full_only() {
        use std::os::unix::process::ExitStatusExt;
        let exited = |code: i32| -> Result<()> {
            Err(ChildFailed {
                command: "backup --scheduled".into(),
                status: std::process::ExitStatus::from_raw(code << 8),
            }
            .into())
        };
        assert!(prune_after(&Ok(())));
        assert!(prune_after(&exited(3)), "offsite copy failed");
        assert!(prune_after(&exited(4)), "BACKUP_DIR full");
        assert!(!prune_after(&exited(2)), "an error");
        assert!(!prune_after(&exited(1)), "a check failed");
        let killed = Err(ChildFailed {
            command: "backup --scheduled".into(),
            status: std::process::ExitStatus::from_raw(9),
        }
        .into());
        assert!(!prune_after(&killed), "killed by a signal");
        assert!(!prune_after(&Err(anyhow::anyhow!("failed to run elior"))));
    }

    /// The one check of `schedule install` and `provision` (they each had a copy).
    #[test]
    fn unit_dirs_under_a_root_are_absolute_safe_and_stay_inside_it() {
        let root = tempfile::tempdir().unwrap();
        let target = Target::from_root(root.path()).unwrap();
        let dirs = |given: &[&str]| {
            unit_dirs(&target, given.iter().map(PathBuf::from).collect())
                .map_err(|e| format!("{e:#}"))
        };
        assert_eq!(
            dirs(&["/srv/elior", "/srv/b"]).unwrap(),
            [PathBuf::from("/srv/elior"), PathBuf::from("/srv/b")]
        );
        let relative = dirs(&["/srv/elior", "srv/b"]).unwrap_err();
        assert!(
            relative.starts_with("--dir srv/b: must be absolute with --root"),
            "{relative}"
        );
        let parent = dirs(&["/srv/../etc"]).unwrap_err();
        assert!(
            parent.starts_with("--dir /srv/../etc: a path with `..` could leave --root"),
            "{parent}"
        );
        let control = dirs(&["/srv/a\nb"]).unwrap_err();
        assert!(
            control
                .starts_with("--dir: \"/srv/a\\nb\": a stack directory with a control character"),
            "{control}"
        );
        // On this host (no --root), a relative directory is resolved.
        let here = unit_dirs(&Target::this_host(), vec![PathBuf::from("stack")]).unwrap();
        assert_eq!(here, [std::env::current_dir().unwrap().join("stack")]);
    }
}
