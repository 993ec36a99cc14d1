//! `elior config show`: the stack's effective settings, with secrets redacted.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::config::envfile;
use crate::config::stack::StackConfig;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the effective settings of a stack (secrets redacted)
    Show(ShowArgs),
}

/// Print every setting the stack runs with: the value from .env.production or the
/// default, and where it came from. Secrets (JWT_SECRET) are shown as [redacted].
/// Fails with the first invalid setting, naming its line.
///
/// Examples:
///     elior config show --dir /srv/elior
///     elior config show --json | jq -r '.settings[] | select(.key=="DOMAIN") | .value'
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ShowArgs {}

impl ConfigCommand {
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        match self {
            ConfigCommand::Show(args) => args.run(ctx),
        }
    }
}

impl ShowArgs {
    /// With --json: {"settings": [{"key", "value", "source"}], "warnings": [...]}.
    fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let config = crate::config::model::Stack::load(ctx.dir())?.config;
        if ctx.json {
            let report = serde_json::json!({
                "settings": config.settings,
                "warnings": config.warnings,
            });
            outln!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(ExitCode::SUCCESS);
        }
        print_warnings(&config);
        let lines: Vec<(String, &str)> = config
            .settings
            .iter()
            .map(|s| {
                (
                    format!("{}={}", s.key, envfile::quote(&s.value)),
                    s.source.as_str(),
                )
            })
            .collect();
        let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (line, source) in lines {
            outln!("{line:width$}  # {source}");
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Prints the settings' warnings (unknown keys) to stderr.
pub fn print_warnings(config: &StackConfig) {
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
}
