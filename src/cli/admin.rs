//! `elior admin`: account administration from the server's shell.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::auth::password;
use crate::config::{RawSettings, ServeConfig};
use crate::db::users::{self, NewUser, Role};
use crate::db::Db;
use crate::server::routes::auth::{validate_registration, Registration};

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create an admin account (works whether or not other admins exist)
    Create(CreateArgs),
}

/// Create an admin account in the database named by DATABASE_URL.
///
/// The password is read from standard input so it stays out of shell history and `ps`:
///     printf '%s\n' "$PASSWORD" | elior admin create --email me@example.com --password-stdin
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct CreateArgs {
    /// The admin's email; also accepted as the login name
    #[arg(long)]
    email: String,
    /// Login name [default: the part of the email before '@']
    #[arg(long)]
    username: Option<String>,
    /// Display name
    #[arg(long, default_value = "Administrator")]
    full_name: String,
    /// Read the password from the first line of standard input (required)
    #[arg(long, required = true)]
    password_stdin: bool,
    /// Read settings (DATABASE_URL) from this env file
    #[arg(long, value_name = "PATH")]
    env_file: Option<PathBuf>,
}

impl AdminCommand {
    pub fn run(self) -> Result<ExitCode> {
        match self {
            AdminCommand::Create(args) => args.run(),
        }
    }
}

impl CreateArgs {
    fn run(self) -> Result<ExitCode> {
        let mut raw = match &self.env_file {
            Some(path) => RawSettings::from_env_file(path)?,
            None => RawSettings::default(),
        };
        raw.overlay_process_env();
        let config = ServeConfig::from_raw(&raw, None).context("invalid configuration")?;

        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("failed to read the password from standard input")?;
        let password = line.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            bail!("no password on standard input\npipe it in: printf '%s\\n' \"$PASSWORD\" | elior admin create --email ... --password-stdin");
        }
        let username = self
            .username
            .unwrap_or_else(|| self.email.split('@').next().unwrap_or_default().to_string());
        let registration = Registration {
            username,
            email: self.email,
            password,
            full_name: self.full_name,
        };
        if let Err(crate::server::error::ApiError::Validation(errors)) =
            validate_registration(&registration)
        {
            let lines: Vec<String> = errors
                .iter()
                .map(|e| {
                    format!(
                        "--{}: {}",
                        e.loc.last().map_or("", |s| s.as_str()).replace('_', "-"),
                        e.msg
                    )
                })
                .collect();
            bail!("invalid admin account\n{}", lines.join("\n"));
        }

        let db = Db::open_with_pool_size(&config.database_path, 1)?;
        let hash = password::hash(&registration.password);
        let user = db
            .blocking(|c| {
                users::insert(
                    c,
                    &NewUser {
                        username: &registration.username,
                        email: &registration.email,
                        full_name: &registration.full_name,
                        password_hash: &hash,
                        role: Role::Admin,
                        trainer_id: None,
                    },
                )
            })
            .map_err(|e| match e.unique_violation() {
                Some(column) => anyhow::anyhow!(
                    "an account with that {} already exists",
                    column.trim_start_matches("users.")
                ),
                None => anyhow::Error::from(e),
            })?;
        println!(
            "created admin {} (id {}) in {}",
            user.username,
            user.id,
            config.database_path.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}
