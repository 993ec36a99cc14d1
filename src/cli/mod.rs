//! The command line: one file per subcommand, each an `Args` struct with `run`.
//! Nothing imports this module.
//!
//! Exit codes, for scripts: 0 success; 1 a check failed (healthcheck, drift, doctor);
//! 2 a usage or runtime error. Errors print once, as `elior: <error>` (with `--json`, as
//! `{"error": ..., "hint": ...}` on stdout).
//!
//! The options every command takes (`--dir`, `--json`, `-q`, `-v`) are global: parsed
//! once here, anywhere on the line, into a [`Context`] that each `run` receives. A
//! subcommand never declares them again (issue 20).

#[macro_use]
mod output;

mod admin;
mod backup;
mod cert;
mod completions;
mod config;
mod db;
mod deploy;
mod doctor;
mod down;
mod healthcheck;
mod init;
mod logs;
mod migrate;
mod probe;
mod provision;
mod render;
mod restore;
mod rollback;
mod scale;
mod schedule;
mod serve;
mod status;
mod swarm;
mod table;
mod update;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgAction, Args, Parser, Subcommand};

pub const EXIT_CHECK_FAILED: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("ELIOR_GIT_REVISION"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "elior",
    version = LONG_VERSION,
    about = "Deploy and run the Elior Fitness stack on one Docker host",
    long_about = "elior is one binary that is both the Elior Fitness API server (`elior serve`) \
                  and the tool that deploys and maintains that server behind nginx with HTTPS \
                  and backups on a single Docker host.",
    after_help = "Exit codes: 0 success, 1 a check failed, 2 usage or runtime error.\n\
                  Run `elior <command> --help` for the details of a command.\n\n\
                  Examples:\n  \
                  elior --dir /srv/elior status\n  \
                  ELIOR_DIR=/srv/elior elior backup list --json"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: GlobalArgs,
}

/// The options of every command, accepted anywhere on the line.
#[derive(Args, Debug)]
#[group(skip)]
struct GlobalArgs {
    /// The stack directory, which holds .env.production [default: .]
    /// (provision and `schedule install` take several)
    // The id is "dir", as a subcommand's own `dir: PathBuf` field would be: clap then
    // skips the global for that subcommand and hands it the value typed at any level, so
    // a subcommand written before this (a parallel branch) keeps working unchanged.
    #[arg(id = "dir", long = "dir", global = true, env = "ELIOR_DIR", value_name = "DIR",
          action = ArgAction::Append, value_hint = clap::ValueHint::DirPath)]
    dirs: Vec<PathBuf>,
    /// Print results as JSON on stdout; errors too, as {"error": ..., "hint": ...}
    #[arg(long, global = true)]
    json: bool,
    /// Print only results and errors: no progress, notes or warnings
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Log more: -v info, -vv debug (RUST_LOG, when set, wins)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
}

/// What every command gets from the global options, resolved once.
#[derive(Debug, Clone)]
pub struct Context {
    dirs: Vec<PathBuf>,
    /// `--json`: results (and errors) as JSON on stdout.
    pub json: bool,
    /// `-q`: no progress, notes or warnings on stderr.
    pub quiet: bool,
    /// `-v` count.
    pub verbose: u8,
}

impl Context {
    fn new(global: GlobalArgs) -> Context {
        Context {
            dirs: global.dirs,
            json: global.json,
            quiet: global.quiet,
            verbose: global.verbose,
        }
    }

    /// The stack directory: `--dir`, else `ELIOR_DIR`, else the current directory.
    pub fn dir(&self) -> &Path {
        self.dirs.first().map_or(Path::new("."), PathBuf::as_path)
    }

    /// The stack directory when one was named (`--dir` or `ELIOR_DIR`).
    pub fn given_dir(&self) -> Option<&Path> {
        self.dirs.first().map(PathBuf::as_path)
    }

    /// The same context for other stack directories (a command run on another's behalf).
    pub fn with_dirs(&self, dirs: Vec<PathBuf>) -> Context {
        Context {
            dirs,
            ..self.clone()
        }
    }

    /// Every `--dir` given, for the commands that take several.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Whether to draw progress on stderr: a terminal, and not `-q`.
    pub fn progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }

    /// `elior ARGS` as the user can run it from here: with `--dir` when a directory was
    /// named, so a hint that prints a command is runnable as typed.
    pub fn command(&self, args: &str) -> String {
        crate::config::hint::command(self.given_dir(), args)
    }

    /// The log filter: `-q` errors only, `-v` info, `-vv` debug, else `default`.
    fn log_filter<'a>(&self, default: &'a str) -> &'a str {
        match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => default,
            (false, 1) => "info",
            (false, _) => "debug",
        }
    }
}

#[derive(Subcommand)]
enum Command {
    Serve(serve::ServeArgs),
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Manage the API's administrator accounts
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Obtain, renew and inspect the HTTPS certificate (ACME HTTP-01)
    #[command(subcommand)]
    Cert(cert::CertCommand),
    Init(init::InitArgs),
    Render(render::RenderArgs),
    /// Inspect a stack's settings
    #[command(subcommand)]
    Config(config::ConfigCommand),
    Backup(backup::BackupArgs),
    Restore(restore::RestoreArgs),
    Schedule(schedule::ScheduleArgs),
    Deploy(deploy::DeployArgs),
    Status(status::StatusArgs),
    Logs(logs::LogsArgs),
    Down(down::DownArgs),
    Doctor(doctor::DoctorArgs),
    /// Look at a running stack from outside: timing of /health, TLS grade
    #[command(subcommand)]
    Probe(probe::ProbeCommand),
    Provision(provision::ProvisionArgs),
    Update(update::UpdateArgs),
    Rollback(rollback::RollbackArgs),
    Scale(scale::ScaleArgs),
    MigrateToSwarm(migrate::MigrateArgs),
    Completions(completions::CompletionsArgs),
    Man(completions::ManArgs),
}

impl Cli {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        // clap keeps a global option's values from one level of the line only: with
        // `elior --dir A schedule install --dir B`, A would be dropped without a word.
        let typed = std::env::args_os()
            .skip(1)
            .take_while(|a| a != "--")
            .filter(|a| a == "--dir" || a.to_string_lossy().starts_with("--dir="))
            .count();
        if typed > self.global.dirs.len() {
            anyhow::bail!(
                "--dir given before and after the subcommand\nput every --dir together, e.g. `elior schedule install --dir /srv/a --dir /srv/b`"
            );
        }
        let ctx = Context::new(self.global);
        self.command.run(&ctx)
    }
}

impl Command {
    /// The commands that take several `--dir`.
    fn takes_several_dirs(&self) -> bool {
        matches!(self, Command::Provision(_) | Command::Schedule(_))
    }

    fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        if ctx.dirs().len() > 1 && !self.takes_several_dirs() {
            anyhow::bail!(
                "--dir given {} times; this command works on one stack directory\nname one --dir, or run it once per directory",
                ctx.dirs().len()
            );
        }
        // serve sets up its own logging from its settings (LOG_LEVEL, LOG_FORMAT).
        if !matches!(self, Command::Serve(_)) {
            let default = if matches!(self, Command::Schedule(_)) {
                "info"
            } else {
                "warn"
            };
            crate::logging::init(ctx.log_filter(default), crate::logging::Format::Human);
        }
        match self {
            Command::Serve(args) => args.run(),
            Command::Healthcheck(args) => args.run(),
            Command::Admin(cmd) => cmd.run(ctx),
            Command::Db(cmd) => cmd.run(ctx),
            Command::Cert(cmd) => cmd.run(ctx),
            Command::Init(args) => args.run(ctx),
            Command::Render(args) => args.run(ctx),
            Command::Config(cmd) => cmd.run(ctx),
            Command::Backup(args) => args.run(ctx),
            Command::Restore(args) => args.run(ctx),
            Command::Schedule(args) => args.run(ctx),
            Command::Deploy(args) => args.run(ctx),
            Command::Status(args) => args.run(ctx),
            Command::Logs(args) => args.run(ctx),
            Command::Down(args) => args.run(ctx),
            Command::Doctor(args) => args.run(ctx),
            Command::Probe(cmd) => cmd.run(ctx),
            Command::Provision(args) => args.run(ctx),
            Command::Update(args) => args.run(ctx),
            Command::Rollback(args) => args.run(ctx),
            Command::Scale(args) => args.run(ctx),
            Command::MigrateToSwarm(args) => args.run(ctx),
            Command::Completions(args) => args.run(),
            Command::Man(args) => args.run(),
        }
    }
}

/// Parses the command line, runs it and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A usage error under --json is JSON too; help and --version print as usual.
        Err(e) if e.use_stderr() && std::env::args_os().any(|a| a == "--json") => {
            let text = e.render().to_string();
            let (error, hint) = text.split_once('\n').unwrap_or((&text, ""));
            print_json_error(error.trim_start_matches("error: "), hint.trim());
            return ExitCode::from(EXIT_ERROR);
        }
        Err(e) => e.exit(),
    };
    let json = cli.global.json;
    let result = cli.run();
    output::flush();
    // Results that did not reach stdout (other than a reader that left) are a failure.
    let result = match (result, output::failure()) {
        (Ok(_), Some(e)) => Err(anyhow::Error::new(e).context("failed to write to stdout")),
        (result, _) => result,
    };
    let err = match result {
        Ok(code) => return code,
        Err(err) => err,
    };
    if json {
        let text = format!("{err:#}");
        let (error, hint) = text.split_once('\n').unwrap_or((&text, ""));
        print_json_error(error, hint.trim());
    } else {
        eprintln!("elior: {err:#}");
    }
    ExitCode::from(exit_code_of(&err))
}

/// The exit code of a failed command: EXIT_ERROR, unless the error is one that scripts
/// (and `elior schedule`) must tell apart.
fn exit_code_of(err: &anyhow::Error) -> u8 {
    if err.is::<crate::backup::BackupDirFull>() {
        backup::EXIT_BACKUP_DIR_FULL
    } else {
        EXIT_ERROR
    }
}

/// An error as a `--json` caller reads it: `{"error": ..., "hint": ...}` on stdout (the
/// hint is null when the message has none), so `elior ... --json | jq` always gets JSON.
fn print_json_error(error: &str, hint: &str) {
    let doc = serde_json::json!({
        "error": error,
        "hint": if hint.is_empty() { None } else { Some(hint) },
    });
    outln!("{doc}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, CommandFactory};

    /// A subcommand that still declares its own `--dir` and `--json` (as one written on a
    /// branch before the global options) parses, and gets the values typed anywhere.
    #[test]
    fn a_subcommand_with_its_own_dir_and_json_still_gets_the_global_values() {
        let command = Cli::command().subcommand(
            clap::Command::new("legacy")
                .arg(
                    Arg::new("dir")
                        .long("dir")
                        .default_value(".")
                        .value_parser(clap::value_parser!(PathBuf)),
                )
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue)),
        );
        command.clone().debug_assert();
        for argv in [
            &["elior", "--dir", "/srv/x", "--json", "legacy"][..],
            &["elior", "legacy", "--dir", "/srv/x", "--json"][..],
            &["elior", "--json", "legacy", "--dir", "/srv/x"][..],
        ] {
            let matches = command.clone().try_get_matches_from(argv).unwrap();
            let (_, sub) = matches.subcommand().unwrap();
            assert_eq!(
                sub.get_one::<PathBuf>("dir").map(PathBuf::as_path),
                Some(Path::new("/srv/x")),
                "{argv:?}"
            );
            assert!(sub.get_flag("json"), "{argv:?}");
        }
        let matches = command.try_get_matches_from(["elior", "legacy"]).unwrap();
        let (_, sub) = matches.subcommand().unwrap();
        assert_eq!(
            sub.get_one::<PathBuf>("dir").map(PathBuf::as_path),
            Some(Path::new("."))
        );
    }

    /// Help written as wrapped lines (verbatim doc comments) is printed as written, except
    /// that clap breaks a line longer than its 100 columns, leaving a stub line mid-sentence;
    /// and a summary of several lines breaks the command list of `elior --help`. (A
    /// paragraph written as one line is wrapped by clap as a whole, which is fine.)
    #[test]
    fn wrapped_help_fits_in_100_columns_and_every_summary_is_one_line() {
        fn check(command: &clap::Command, path: &str, bad: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if let Some(about) = command.get_about() {
                if about.to_string().contains('\n') {
                    bad.push(format!("{path}: the summary has several lines"));
                }
            }
            let long = command.get_long_about().map(|t| t.to_string());
            for paragraph in long.iter().flat_map(|t| t.split("\n\n")) {
                let lines: Vec<&str> = paragraph.lines().collect();
                for line in lines.iter().filter(|_| lines.len() > 1) {
                    if line.chars().count() > 100 {
                        bad.push(format!("{path}: {} columns: {line}", line.chars().count()));
                    }
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &path, bad);
            }
        }
        let mut bad = Vec::new();
        check(&Cli::command(), "", &mut bad);
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }
}
