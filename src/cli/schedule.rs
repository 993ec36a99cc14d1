//! `elior schedule`: run a stack's periodic jobs in the foreground, or install the
//! systemd service that does.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::backup::{manifest, BackupSettings};
use crate::schedule::{self, state, unit, Job, Stop, SystemClock};

/// Run the stack's scheduled jobs in the foreground until SIGTERM or Ctrl-C.
///
/// Jobs and their cron expressions come from DIR/.env.production:
///     BACKUP_SCHEDULE      backup, then prune (default "0 2 * * *", 02:00 daily)
///     CERT_RENEW_SCHEDULE  `elior cert renew --jitter 1800` (renews only when due)
/// Expressions have 5 fields as in crontab (weekdays 0-7 or Sun-Sat), or 6 with seconds
/// first. Times are local. Each run's start, result and duration are logged,
/// a failing job does not stop the scheduler, and the last success of each job is kept
/// in DIR/.elior/state.json. On SIGTERM or Ctrl-C a running job is allowed to finish (the
/// prune after a backup is skipped); a second signal aborts it, killing the child and
/// removing the backup's partial files. Each outcome is logged.
///
/// Examples:
///     elior schedule --dir /srv/elior               run in the foreground
///     elior schedule install --dir /srv/elior       install and start a systemd service
///     elior schedule install --print                print that service's unit
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    command: Option<ScheduleCommand>,
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Write and enable a systemd service that runs `elior schedule` for this stack
    Install(InstallArgs),
}

#[derive(Args)]
struct InstallArgs {
    /// Print the unit instead of installing it (for hosts without systemd)
    #[arg(long)]
    print: bool,
}

const UNIT_DIR: &str = "/etc/systemd/system";

impl ScheduleArgs {
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let dir = std::path::absolute(ctx.dir())
            .with_context(|| format!("failed to resolve {}", ctx.dir().display()))?;
        match self.command {
            Some(ScheduleCommand::Install(args)) => install(&dir, args.print),
            None => run_scheduler(&dir),
        }
    }
}

/// Spread of certificate renewals across hosts (passed to `elior cert renew --jitter`).
const CERT_JITTER_SECS: &str = "1800";

fn jobs(dir: &Path) -> Result<Vec<Job>> {
    let settings = BackupSettings::load(dir)?;
    let raw = crate::config::model::settings(dir)?;
    let mut jobs = vec![Job::new("backup", "BACKUP_SCHEDULE", &settings.schedule)?];
    if let Some(expression) = raw
        .get("CERT_RENEW_SCHEDULE")
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        jobs.push(Job::new("cert-renew", "CERT_RENEW_SCHEDULE", expression)?);
    }
    Ok(jobs)
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
                run_child(&exe, &["backup", "--scheduled"], dir, &stop)?;
                if stop.requested() {
                    tracing::info!("skipping the prune after the backup: stop requested");
                    return Ok(());
                }
                run_child(&exe, &["backup", "prune"], dir, &stop)
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
        bail!("`elior {}` failed ({status})", args.join(" "));
    }
    Ok(())
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

fn install(dir: &Path, print: bool) -> Result<ExitCode> {
    // Validate first: a unit for a stack whose schedule is broken would only crash-loop.
    unit::check_dir(dir)?;
    jobs(dir)?;
    // The one unit generator (issue 18): the provisioned binary and user when they exist.
    let exe = if Path::new(unit::BINARY).exists() {
        PathBuf::from(unit::BINARY)
    } else {
        std::env::current_exe().context("failed to find the elior executable")?
    };
    let user = std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(&format!("{}:", unit::USER)))
        .then(|| unit::USER.to_string());
    let backups = BackupSettings::load(dir)?.backup_dir;
    let text = unit::render(&unit::Spec {
        exe,
        stack_dir: dir.to_path_buf(),
        user,
        extra_writable: vec![backups],
    });
    let unit_name = unit::name(dir);
    if print {
        out!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    if !Path::new("/run/systemd/system").is_dir() {
        bail!("systemd is not running on this host, so there is nothing to install the service into\nrun `elior schedule install --print` and set the unit up by hand, or run `elior schedule` under your own supervisor");
    }
    let path = Path::new(UNIT_DIR).join(&unit_name);
    manifest::write_atomic(&path, text.as_bytes())?;
    for args in [&["daemon-reload"][..], &["enable", "--now", &unit_name][..]] {
        let status = Command::new("systemctl")
            .args(args)
            .status()
            .context("failed to run systemctl")?;
        if !status.success() {
            bail!(
                "`systemctl {}` failed ({status})\nsee `journalctl -u {}`",
                args.join(" "),
                unit_name
            );
        }
    }
    outln!(
        "installed and started {} ({}); follow it with `journalctl -fu {}`",
        unit_name,
        path.display(),
        unit_name
    );
    Ok(ExitCode::SUCCESS)
}
