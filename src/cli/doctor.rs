//! `elior doctor`: run the checks of `crate::doctor` against a stack directory and print
//! the findings, grouped, or the gathered report as JSON.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

use crate::doctor::{self, CHECKS};

/// Check a stack end to end and say what is wrong, with the command that fixes it.
///
/// Runs the troubleshooting runbook: the Docker Engine, the env file (present, valid,
/// mode 0600, a real JWT_SECRET), drift of the rendered files, who holds ports 80/443,
/// DNS, the certificate (expiry, renewal, SANs, key, chain, what nginx serves), the
/// containers (state, health, restarts, OOM kills, last log lines), /health through
/// nginx, the SQLite file (WAL, quick_check, free disk), backups, the scheduler, a stale
/// deploy lock and clock skew. Each finding is [✓] ok, [!] a warning or [✗] a failure;
/// [-] marks a check skipped because something it needs is already reported broken.
///
/// It only reads: nothing in the stack is changed. It works without an env file (that is
/// itself a finding). Name checks to run only those (see --list-checks).
///
/// Exit codes: 0 no failure (warnings allowed), 1 a failure was found, 2 usage error.
///
/// Examples:
///     elior doctor --dir /srv/elior
///     elior doctor certificate ports       # only these checks
///     elior doctor --json | jq '.checks[] | select(.name == "backups")'
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct DoctorArgs {
    /// List the checks and what each looks at, then exit
    #[arg(long)]
    list_checks: bool,
    /// Templates folder the stack is rendered with (as `elior render --templates`)
    #[arg(long, value_name = "DIR")]
    templates: Option<PathBuf>,
    /// Checks to run (default: all)
    #[arg(value_name = "CHECK")]
    checks: Vec<String>,
}

impl DoctorArgs {
    /// With --json: the gathered facts and findings.
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        if self.list_checks {
            let mut table = super::table::new(&["CHECK", "GROUP", "LOOKS AT"], &[]);
            for c in CHECKS {
                table.add_row(vec![c.name, c.group, c.about]);
            }
            out!("{}", super::table::render(&table));
            return Ok(ExitCode::SUCCESS);
        }
        let mut selected = Vec::new();
        for name in &self.checks {
            match doctor::check_info(name) {
                Some(c) => selected.push(c),
                None => bail!(
                    "doctor has no check named {name:?}\nchoose from: {}",
                    CHECKS.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
                ),
            }
        }
        if selected.is_empty() {
            selected = CHECKS.iter().collect();
        } else {
            // Print in the usual order, whatever order they were named in.
            selected.sort_by_key(|c| CHECKS.iter().position(|k| k.name == c.name));
            selected.dedup_by_key(|c| c.name);
        }
        let templates = super::render::load_templates(self.templates.as_deref())?;
        let report = doctor::gather::run(ctx.dir(), templates, &selected);
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
