//! The database part of a backup when DATABASE_URL is PostgreSQL (issue 17, item 9):
//! `pg_dump -Fc` into a backup file (an archive's, or one the repository cuts into chunks),
//! `pg_restore --list` to check one, and
//! `pg_restore --clean --if-exists --single-transaction --no-owner` to put one back, all
//! or nothing.
//!
//! This module runs Debian's PostgreSQL client programs and nothing else; which backup
//! file to write or read is the caller's. The password goes to the child through
//! `PGPASSWORD` in its environment: never on a command line (where `ps` shows it), never
//! in a message.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::manifest::{self, HashingWriter};
use crate::db::pg::PgUrl;

/// The `database_kind` a manifest records for a `pg_dump -Fc` file. A manifest without
/// one holds a SQLite database copy.
pub const KIND: &str = "postgresql-custom-dump";

/// Finds a PostgreSQL client program: on PATH, else the newest under
/// /usr/lib/postgresql/*/bin (Debian installs them there, with only wrappers on PATH).
pub fn tool(name: &str) -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(found) = on_path
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
    {
        return Ok(found);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin").join(name);
            bin.is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "{name} is not installed: not on PATH, nor under /usr/lib/postgresql/*/bin; backups of a PostgreSQL database need it\ninstall Debian's PostgreSQL client (`apt-get install postgresql-client`), of a version at least the server's"
        ),
    }
}

/// A client program pointed at `url`'s server, database and user, with the password in
/// its environment only.
fn command(program: &Path, url: &PgUrl) -> Command {
    let config = url.config();
    let mut cmd = Command::new(program);
    // Never prompt: a missing or wrong password is an error, not a hang.
    cmd.arg("--no-password");
    match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => {
            cmd.arg("--host").arg(h);
        }
        Some(tokio_postgres::config::Host::Unix(p)) => {
            cmd.arg("--host").arg(p);
        }
        None => {}
    }
    if let Some(port) = config.get_ports().first() {
        cmd.arg("--port").arg(port.to_string());
    }
    if let Some(user) = config.get_user() {
        cmd.arg("--username").arg(user);
    }
    cmd.env_remove("PGPASSWORD");
    if let Some(password) = config.get_password() {
        cmd.env("PGPASSWORD", String::from_utf8_lossy(password).as_ref());
    }
    cmd.env("PGCONNECT_TIMEOUT", "10");
    cmd
}

fn database(url: &PgUrl) -> String {
    url.config().get_dbname().unwrap_or_default().to_string()
}

/// The last lines a client program wrote to stderr, for a message.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// What a dump wrote: its size and hex sha256.
pub struct Dump {
    pub size: u64,
    pub sha256: String,
}

/// The stack's PostgreSQL database: where a dump comes from, and where a restore goes.
pub enum Source<'a> {
    /// A server this host reaches: Debian's pg_dump here.
    Url(&'a PgUrl),
    /// The postgres service of a swarm stack (issue 21): pg_dump in its task on this
    /// node, through the engine's exec, its output streamed here.
    SwarmService(&'a str),
}

impl std::fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Url(url) => f.write_str(&url.target()),
            Source::SwarmService(service) => write!(f, "in the swarm service {service}"),
        }
    }
}

/// [`dump`] from either source, into the same file format.
pub fn dump_from(source: &Source, temp: &Path, deadline: Instant) -> Result<Dump> {
    match source {
        Source::Url(url) => dump(url, temp, deadline),
        Source::SwarmService(service) => dump_in_service(service, temp, deadline),
    }
}

/// A shell script that runs `program_and_options` (a PostgreSQL client) in the postgres
/// task against the stack's database, as its user. The password comes from the task's
/// own secret file, read by the shell's builtin `read` (no coreutils needed): never on a
/// command line or in the exec's environment.
fn in_service(program_and_options: &str) -> String {
    format!(
        "read -r PGPASSWORD < /run/secrets/{}; export PGPASSWORD; exec {program_and_options} --no-password --username {} --dbname {}",
        crate::plan::swarm::POSTGRES_PASSWORD_SECRET,
        crate::plan::swarm::POSTGRES_USER,
        crate::plan::swarm::POSTGRES_DB
    )
}

/// Exit codes 126 and 127: the shell or the program is not in the task's image.
fn refuse_missing_program(service: &str, program: &str, code: i64, unchanged: &str) -> Result<()> {
    if code == 126 || code == 127 {
        bail!(
            "{program} in the swarm service {service} could not start (exit code {code}): its image lacks /bin/sh or {program}\nuse an image with both as POSTGRES_IMAGE (the official postgres image has them); {unchanged}"
        );
    }
    Ok(())
}

/// `pg_dump -Fc` in the running task of `service` on this node, written to `temp` as
/// [`dump`] writes: 0600, hashed, fsynced. The task's own socket and user, so no
/// password leaves the swarm secret.
fn dump_in_service(service: &str, temp: &Path, deadline: Instant) -> Result<Dump> {
    let out = manifest::create_private(temp)?;
    let mut writer = HashingWriter::new(out);
    let script = in_service("pg_dump --format=custom");
    let cmd = ["/bin/sh", "-c", script.as_str()];
    let left = deadline.saturating_duration_since(Instant::now());
    let runtime = crate::docker::runtime()?;
    let result = runtime.block_on(async {
        let docker = crate::docker::connect().await?;
        tokio::time::timeout(
            left,
            crate::docker::swarm::exec_in_service(&docker, service, &cmd, &mut writer),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "pg_dump in the swarm service {service} did not finish within the time limit; nothing was recorded as a backup\nraise it with `elior backup --timeout`"
            )
        })?
    })?;
    let (code, errors) = result;
    refuse_missing_program(service, "pg_dump", code, "nothing was recorded as a backup")?;
    if code != 0 {
        bail!(
            "pg_dump in the swarm service {service} failed (exit code {code})\n{}\nrun `elior status` to check that its task runs healthy on this node; nothing was recorded as a backup",
            tail(errors.as_bytes())
        );
    }
    let (file, size, sha256) = writer.finish();
    file.sync_all()
        .with_context(|| format!("failed to fsync {}", temp.display()))?;
    if size == 0 {
        bail!("pg_dump in the swarm service {service} wrote nothing; nothing was recorded as a backup");
    }
    Ok(Dump { size, sha256 })
}

/// Dumps the database of `url` (`pg_dump -Fc`) into `temp`, created 0600, hashed as it is
/// written and fsynced. A failed or killed pg_dump, or one still running at `deadline`
/// (then killed), is an error; the caller removes `temp`.
pub fn dump(url: &PgUrl, temp: &Path, deadline: Instant) -> Result<Dump> {
    dump_with(url, temp, deadline, &[])
}

/// [`dump`] without pg_dump's own compression, for the repository: it compresses each
/// chunk itself, and a compressed dump changes from the first changed row to its end, so
/// nothing after it would deduplicate.
pub fn dump_uncompressed(url: &PgUrl, temp: &Path, deadline: Instant) -> Result<Dump> {
    dump_with(url, temp, deadline, &["--compress=0"])
}

fn dump_with(url: &PgUrl, temp: &Path, deadline: Instant, options: &[&str]) -> Result<Dump> {
    let program = tool("pg_dump")?;
    let out = manifest::create_private(temp)?;
    let mut child = command(&program, url)
        .args(options)
        .args(["--format=custom", "--dbname"])
        .arg(database(url))
        // Its own process group: a Ctrl-C at the terminal of `elior schedule`, which lets
        // a running backup finish (issue 17, item 8), must not kill pg_dump under it. If
        // elior dies, pg_dump ends at its next write to the closed pipe.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to run {}", program.display()))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    // stderr is drained beside stdout, so a chatty pg_dump never blocks on a full pipe.
    let errors = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    });
    // The time limit (`backup --timeout`): pg_dump past it is killed. It is signalled only
    // before it is reaped (below), so its pid cannot belong to another process by then.
    let pid = child.id();
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let left = deadline.saturating_duration_since(Instant::now());
        let expired = matches!(
            finished.recv_timeout(left),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        if expired {
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        expired
    });
    let mut writer = HashingWriter::new(out);
    let copied = io::copy(&mut stdout, &mut writer);
    // If the copy stopped early (a full disk), what pg_dump writes has nowhere to go: it
    // is stopped (not yet reaped, so the pid is still its own) and its pipe closed. With
    // the pipe left open it blocked on it, and the wait below waited for it for good.
    if copied.is_err() {
        let _ = child.kill();
    }
    drop(stdout);
    let _ = done.send(());
    let expired = watchdog.join().unwrap_or(false);
    let status = child
        .wait()
        .with_context(|| format!("failed to wait for {}", program.display()))?;
    let errors = errors.join().unwrap_or_default();
    if expired {
        bail!(
            "pg_dump of the PostgreSQL database {} did not finish within the time limit and was stopped; nothing was recorded as a backup\nraise it with `elior backup --timeout`",
            url.target()
        );
    }
    // A failed write is the cause; pg_dump's own failure then only follows from it.
    copied.with_context(|| format!("failed to write {}", temp.display()))?;
    if !status.success() {
        bail!(
            "pg_dump of the PostgreSQL database {} failed ({status})\n{}\ncheck that the server is up and that DATABASE_URL's user, password and database are right; nothing was recorded as a backup",
            url.target(),
            tail(&errors)
        );
    }
    let (file, size, sha256) = writer.finish();
    file.sync_all()
        .with_context(|| format!("failed to fsync {}", temp.display()))?;
    if size == 0 {
        bail!(
            "pg_dump of {} wrote nothing; nothing was recorded as a backup",
            url.target()
        );
    }
    Ok(Dump { size, sha256 })
}

/// Checks that `path` is a dump pg_restore can read (`pg_restore --list`).
pub fn check_dump(path: &Path) -> Result<()> {
    let program = tool("pg_restore")?;
    let out = Command::new(&program)
        .arg("--list")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} is not a readable PostgreSQL dump (`pg_restore --list` failed)\n{}",
            path.display(),
            tail(&out.stderr)
        );
    }
    Ok(())
}

/// [`restore`] into either kind of database.
pub fn restore_to(target: &Source, dump: &Path) -> Result<()> {
    match target {
        Source::Url(url) => restore(url, dump),
        Source::SwarmService(service) => restore_in_service(service, dump),
    }
}

/// The options that make a restore all or nothing, and leave ownership to the user
/// restoring (a dump may come from a server with other roles).
const RESTORE_OPTIONS: [&str; 5] = [
    "--clean",
    "--if-exists",
    "--single-transaction",
    "--exit-on-error",
    "--no-owner",
];

/// [`restore`] in the running postgres task of a swarm stack (issue 21): `pg_restore` in
/// the task, the dump streamed into its stdin through the engine's exec, with the task's
/// own socket, user and secret (as [`dump_in_service`]).
fn restore_in_service(service: &str, dump: &Path) -> Result<()> {
    let script = in_service(&format!("pg_restore {}", RESTORE_OPTIONS.join(" ")));
    let cmd = ["/bin/sh", "-c", script.as_str()];
    let runtime = crate::docker::runtime()?;
    let (code, errors) = runtime.block_on(async {
        let mut input = tokio::fs::File::open(dump)
            .await
            .with_context(|| format!("failed to open {}", dump.display()))?;
        let docker = crate::docker::connect().await?;
        crate::docker::swarm::exec_in_service_with_input(&docker, service, &cmd, &mut input).await
    })?;
    let unchanged = "the database was not changed";
    refuse_missing_program(service, "pg_restore", code, unchanged)?;
    if code != 0 {
        bail!(
            "pg_restore in the swarm service {service} failed (exit code {code}); it ran as one transaction, so {unchanged}\n{}",
            tail(errors.as_bytes())
        );
    }
    Ok(())
}

/// Restores `dump` into the database of `url` in one transaction: either every object is
/// replaced, or (on any error) the database is left exactly as it was.
pub fn restore(url: &PgUrl, dump: &Path) -> Result<()> {
    let program = tool("pg_restore")?;
    let out = command(&program, url)
        .args(RESTORE_OPTIONS)
        .arg("--dbname")
        .arg(database(url))
        .arg(dump)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "pg_restore into the PostgreSQL database {} failed ({}); it ran as one transaction, so the database was left as it was\n{}",
            url.target(),
            out.status,
            tail(&out.stderr)
        );
    }
    Ok(())
}
