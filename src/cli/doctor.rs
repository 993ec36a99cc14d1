//! `elior doctor`: run the checks of `crate::doctor` against a stack directory and print
//! the findings, grouped, or the gathered report as JSON.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

use crate::doctor::checks::{self, AnyCheck, CheckInfo};

/// Check a stack end to end and say what is wrong, with the command that fixes it.
///
/// Runs the troubleshooting runbook: the Docker Engine, the env file (present, valid,
/// mode 0600, a real JWT_SECRET), drift of the rendered files, who holds ports 80/443,
/// DNS, the certificate (expiry, renewal, SANs, key, chain, what nginx serves), the
/// containers (state, health, restarts, OOM kills, last log lines), swarm tasks, /health
/// through nginx, the SQLite file (WAL, quick_check, free disk), backups (local and
/// offsite), the scheduler, a stale deploy lock and clock skew. Each finding is [✓] ok,
/// [!] a warning or [✗] a failure; [-] marks a check skipped because something it needs
/// is already reported broken.
///
/// It only reads: nothing in the stack is changed. It works without an env file (that is
/// itself a finding). Name checks (`--check NAME`, or as arguments) to run only those;
/// --list-checks lists them.
///
/// Exit codes: 0 no failure (warnings allowed), 1 a failure was found, 2 usage error
/// (such as an unknown check name).
#[derive(Args)]
#[command(
    verbatim_doc_comment,
    after_help = "Examples:\n  \
    elior doctor --dir /srv/elior\n  \
    elior doctor --dir /srv/elior --check certificate --check ports\n  \
    elior doctor --dir /srv/elior certificate ports                  # the same\n  \
    elior doctor --list-checks\n  \
    elior doctor --list-checks --json | jq -r '.[].name'\n  \
    elior doctor --dir /srv/elior --json | jq '.checks[] | select(.name == \"backups\")'"
)]
pub struct DoctorArgs {
    /// List the checks (name, group, what each looks at), then exit; --json as JSON
    #[arg(long, conflicts_with_all = ["only", "checks"])]
    list_checks: bool,
    /// Run only this check (repeatable; see --list-checks)
    #[arg(long = "check", value_name = "NAME")]
    only: Vec<String>,
    /// Templates folder the stack is rendered with (as `elior render --templates`)
    #[arg(long, value_name = "DIR")]
    templates: Option<PathBuf>,
    /// Checks to run, as --check names them (default: all)
    #[arg(value_name = "CHECK")]
    checks: Vec<String>,
}

impl DoctorArgs {
    /// With --json: the gathered facts and findings.
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        if self.list_checks {
            let infos: Vec<CheckInfo> = checks::ALL.iter().map(|c| c.info()).collect();
            if ctx.json {
                outln!("{}", serde_json::to_string_pretty(&infos)?);
            } else {
                let mut table = super::table::new(&["CHECK", "GROUP", "LOOKS AT"], &[]);
                for c in &infos {
                    table.add_row(vec![c.name, c.group.as_str(), c.about]);
                }
                out!("{}", super::table::render(&table));
            }
            return Ok(ExitCode::SUCCESS);
        }
        let selected = select(self.only.iter().chain(&self.checks))?;
        let templates = super::render::load_templates(self.templates.as_deref())?;
        let report = checks::run(ctx.dir(), templates, &selected)?;
        if ctx.json {
            outln!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            out!("{}", report.render(color));
        }
        Ok(if report.failed() {
            ExitCode::from(super::EXIT_CHECK_FAILED)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// The named checks in the registry's order, each once; all of them when none is named.
fn select<'a>(names: impl Iterator<Item = &'a String>) -> Result<Vec<&'static dyn AnyCheck>> {
    let mut wanted = Vec::new();
    for name in names {
        if checks::find(name).is_none() {
            bail!(
                "doctor has no check named {name:?}\nchoose from: {}",
                checks::ALL
                    .iter()
                    .map(|c| c.info().name)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        wanted.push(name.as_str());
    }
    Ok(checks::ALL
        .iter()
        .copied()
        .filter(|c| wanted.is_empty() || wanted.contains(&c.info().name))
        .collect())
}
