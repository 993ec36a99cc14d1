//! `elior admin`: account administration from the server's shell.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::auth::password;
use crate::config::model::Stack;
use crate::config::ServeConfig;
use crate::db::users::{self, NewUser, Role};
use crate::db::Db;
use crate::plan::containers::API_SERVICE;
use crate::server::routes::auth::{validate_registration, Registration};

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create an admin account (works whether or not other admins exist)
    Create(CreateArgs),
}

/// Create an admin account in the database named by DATABASE_URL, or in a deployed
/// stack's database with --dir.
///
/// With --dir DIR and the stack's API container running, the account is created inside
/// that container (through the engine's exec API, as the API's own user, next to the
/// running server: SQLite's locking keeps both safe). With the API stopped, it is created
/// in DIR/data/ directly, and the files stay the API's (uid 10001).
///
/// The password is read from standard input so it stays out of shell history and `ps`
/// (it is passed to the container on the exec's standard input, never in its argv):
///     printf '%s\n' "$PASSWORD" | elior admin create --email me@example.com --password-stdin
///     printf '%s\n' "$PASSWORD" | elior admin create --dir /srv/elior --email me@example.com --password-stdin
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
    /// Read settings (DATABASE_URL) from this env file (not with --dir)
    #[arg(long, value_name = "PATH")]
    env_file: Option<PathBuf>,
}

impl AdminCommand {
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        match self {
            AdminCommand::Create(args) => args.run(ctx),
        }
    }
}

impl CreateArgs {
    fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        if self.env_file.is_some() && ctx.given_dir().is_some() {
            bail!("--env-file and --dir (or ELIOR_DIR) name two databases\npass one of them");
        }
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

        let database_path = match ctx.given_dir() {
            Some(dir) => {
                let stack = Stack::load(dir)?;
                if let Some(container) = running_api(&stack)? {
                    return create_in_container(&container, &registration);
                }
                eprintln!(
                    "the API of {} is not running: creating the admin in its data folder",
                    stack.dir.display()
                );
                stack.config.host_database_path(&stack.dir)
            }
            None => {
                let raw = crate::config::model::read_settings(self.env_file.as_deref())?;
                let config = ServeConfig::from_raw(&raw, None).context("invalid configuration")?;
                // DATABASE_URL=postgresql://… (issue 16): the admin goes there.
                if let Some(url) = config.postgres {
                    let target = crate::db::Target::Postgres(url.clone());
                    let hash = password::hash(&registration.password);
                    let user =
                        Db::session(&target, true, config.database_connect_retry, move |db| {
                            insert_admin(db, &registration, &hash)
                        })?;
                    outln!(
                        "created admin {} (id {}) in {}",
                        user.username,
                        user.id,
                        url.target()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                config.database_path
            }
        };
        let created_here = !database_path.exists();
        let db = Db::open_with_pool_size(&database_path, 1)?;
        let hash = password::hash(&registration.password);
        let user = insert_admin(&db, &registration, &hash)?;
        drop(db);
        if ctx.given_dir().is_some() {
            // A stack's database belongs to the API's user; the files this run created
            // (the database, its -wal and -shm) must stay writable for it.
            give_to_api_user(&database_path, created_here);
        }
        outln!(
            "created admin {} (id {}) in {}",
            user.username,
            user.id,
            database_path.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}

fn insert_admin(db: &Db, registration: &Registration, hash: &str) -> Result<users::User> {
    db.blocking(|c| {
        users::insert(
            c,
            &NewUser {
                username: &registration.username,
                email: &registration.email,
                full_name: &registration.full_name,
                password_hash: hash,
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
    })
}

/// The running API container of a deployed stack, if any.
fn running_api(stack: &Stack) -> Result<Option<String>> {
    let Some(owner) = stack.owner() else {
        return Ok(None);
    };
    let runtime = crate::docker::runtime()?;
    runtime.block_on(async {
        let Ok(docker) = crate::docker::connect().await else {
            return Ok(None);
        };
        Ok(
            crate::docker::proxy::running_service(&docker, &owner, API_SERVICE)
                .await?
                .into_iter()
                .next(),
        )
    })
}

/// Runs `elior admin create` inside the API container, the password on its stdin.
fn create_in_container(container: &str, r: &Registration) -> Result<ExitCode> {
    let cmd = [
        "/usr/local/bin/elior",
        "admin",
        "create",
        "--email",
        &r.email,
        "--username",
        &r.username,
        "--full-name",
        &r.full_name,
        "--password-stdin",
    ];
    let input = format!("{}\n", r.password);
    let runtime = crate::docker::runtime()?;
    let (code, output) = runtime.block_on(async {
        let docker = crate::docker::connect().await?;
        crate::docker::apply::exec_with_input(&docker, container, &cmd, Some(input.as_bytes()))
            .await
    })?;
    if code != 0 {
        bail!(
            "{}",
            output
                .trim()
                .trim_start_matches("elior: ")
                .replace("\nelior: ", "\n")
        );
    }
    outln!("{} (in container {container})", output.trim());
    Ok(ExitCode::SUCCESS)
}

/// Gives the database files to the API's uid: the database when this run created it,
/// and its `-wal` / `-shm` companions whenever they exist.
fn give_to_api_user(database: &Path, created_here: bool) {
    let uid = crate::plan::render::API_UID;
    let mut files = vec![];
    if created_here {
        files.push(database.to_path_buf());
    }
    for suffix in ["-wal", "-shm"] {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    for file in files.iter().filter(|f| f.exists()) {
        if let Err(e) = std::os::unix::fs::chown(file, Some(uid), Some(uid)) {
            eprintln!(
                "warning: could not give {} to uid {uid} (the API's user): {e}\nrun `chown {uid}:{uid} {}` before the API starts",
                file.display(),
                file.display()
            );
        }
    }
}
