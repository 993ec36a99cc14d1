//! The command line: one file per subcommand, each an `Args` struct with `run`.
//! Nothing imports this module.
//!
//! Exit codes, for scripts: 0 success; 1 a check failed (healthcheck, drift, doctor);
//! 2 a usage or runtime error. Errors print once, as `elior: <error>`.

mod admin;
mod backup;
mod cert;
mod completions;
mod config;
mod deploy;
mod doctor;
mod down;
mod healthcheck;
mod init;
mod logs;
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
mod update;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
                  Run `elior <command> --help` for the details of a command."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Serve(serve::ServeArgs),
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Manage the API's administrator accounts
    #[command(subcommand)]
    Admin(admin::AdminCommand),
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
    Completions(completions::CompletionsArgs),
    Man(completions::ManArgs),
}

impl Cli {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Serve(args) => args.run(),
            Command::Healthcheck(args) => args.run(),
            Command::Admin(cmd) => {
                crate::logging::init("warn", crate::logging::Format::Human);
                cmd.run()
            }
            Command::Cert(cmd) => {
                crate::logging::init("warn", crate::logging::Format::Human);
                cmd.run()
            }
            Command::Init(args) => args.run(),
            Command::Render(args) => args.run(),
            Command::Config(cmd) => cmd.run(),
            Command::Backup(args) => args.run(),
            Command::Restore(args) => args.run(),
            Command::Schedule(args) => args.run(),
            Command::Deploy(args) => args.run(),
            Command::Status(args) => args.run(),
            Command::Logs(args) => args.run(),
            Command::Down(args) => args.run(),
            Command::Doctor(args) => args.run(),
            Command::Probe(cmd) => cmd.run(),
            Command::Provision(args) => args.run(),
            Command::Update(args) => args.run(),
            Command::Rollback(args) => args.run(),
            Command::Scale(args) => args.run(),
            Command::Completions(args) => args.run(),
            Command::Man(args) => args.run(),
        }
    }
}

/// Parses the command line, runs it and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    exit_quietly_on_broken_pipe();
    match Cli::parse().run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("elior: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `elior status | head -1` must not end in a panic message: when stdout's reader goes
/// away, `println!` panics with EPIPE (Rust ignores SIGPIPE), and we exit 0 instead, as
/// the reader asked for no more.
fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
