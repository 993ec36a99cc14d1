//! `elior completions SHELL` and `elior man`: shell completions and the man page, both
//! generated from the one clap definition in `cli/mod.rs`, so they never drift from `--help`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Print a shell completion script for elior
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    elior completions bash > /etc/bash_completion.d/elior\n  \
    elior completions zsh > \"${fpath[1]}/_elior\"\n  \
    elior completions fish > ~/.config/fish/completions/elior.fish")]
pub struct CompletionsArgs {
    /// The shell to write completions for
    #[arg(value_enum)]
    shell: Shell,
}

impl CompletionsArgs {
    pub fn run(self) -> Result<ExitCode> {
        let mut command = super::Cli::command();
        let mut out = Vec::new();
        clap_complete::generate(self.shell, &mut command, "elior", &mut out);
        write_stdout(&out)
    }
}

/// Print elior's man page (roff) on stdout
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    elior man | man -l -\n  \
    elior man > /usr/local/share/man/man1/elior.1")]
pub struct ManArgs {}

impl ManArgs {
    pub fn run(self) -> Result<ExitCode> {
        let mut out = Vec::new();
        clap_mangen::Man::new(super::Cli::command())
            .render(&mut out)
            .context("failed to render the man page")?;
        write_stdout(&out)
    }
}

fn write_stdout(bytes: &[u8]) -> Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // The reader took what it wanted (`| head`): nothing is left undone.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("failed to write to stdout"),
    }
}
