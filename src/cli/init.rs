//! `elior init`: creates a stack directory (the env file and the folders the stack mounts),
//! or completes an existing one without touching what is there.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use crate::config::stack::{self, StackConfig};
use crate::config::{domain, envfile, RawSettings};
use crate::plan::render::{self, paths, Templates, API_UID};

/// Create a stack directory for DOMAIN, or add missing keys to an existing one.
///
/// Writes .env.production (mode 0600, with a fresh JWT_SECRET) and the folders data/,
/// uploads/, backups/, frontend/, nginx/ssl/ and nginx/acme/.
///
/// An existing .env.production is never overwritten: run again, init only appends the keys
/// it lacks and says which. DOMAIN is checked first (a hostname, localhost, or an IP
/// literal for self-signed use; Unicode names become punycode) and nothing is written if
/// it or --email is invalid.
///
/// Examples:
///     elior init example.com --dir /srv/elior --email ops@example.com
///     elior init localhost --dir ./stack     # self-signed, for trying it out
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct InitArgs {
    /// The server's public name, such as example.com
    domain: String,
    /// Email for the Let's Encrypt account (expiry notices)
    #[arg(long)]
    email: Option<String>,
}

impl InitArgs {
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let dir = ctx.dir();
        let domain = domain::parse(&self.domain).map_err(|m| {
            anyhow::anyhow!("DOMAIN argument {m}\nexample: elior init example.com --dir /srv/elior")
        })?;
        let email = self
            .email
            .as_deref()
            .map(stack::parse_email)
            .transpose()
            .map_err(|m| anyhow::anyhow!("--email {m}"))?;
        let secret = crate::config::stack::new_jwt_secret();
        let values = stack::init_values(&domain, email.as_deref(), &secret);
        let fresh = render::render_env(&Templates::embedded(), &values)?;
        // What init writes must pass the same validation render applies.
        let mut raw = RawSettings::default();
        raw.overlay(
            envfile::parse(&fresh)
                .context("the env template renders an invalid file")?
                .into_iter()
                .map(|e| (e.key, e.value)),
        );
        StackConfig::from_raw(&raw).context("the env template renders invalid settings")?;

        fs::create_dir_all(dir)
            .with_context(|| format!("failed to create stack directory {}", dir.display()))?;
        let env_path = stack::env_file_path(dir);
        match fs::read_to_string(&env_path) {
            Ok(existing) => complete_env_file(&env_path, &existing, &fresh, domain.as_str())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                super::render::write_atomic(&env_path, fresh.as_bytes(), 0o600)?;
                outln!("wrote {} (mode 0600)", env_path.display());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("failed to read {}", env_path.display()))
            }
        }
        for sub in paths::STACK_DIRS {
            let path = dir.join(sub);
            if path.is_dir() {
                continue;
            }
            fs::create_dir_all(&path)
                .with_context(|| format!("failed to create {}", path.display()))?;
            // Backups hold the database and every upload: owner only (README, issue 20).
            if *sub == "backups" {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("failed to make {} mode 0700", path.display()))?;
            }
            outln!("created {}/", path.display());
            // The API runs as an unprivileged uid and must write its database and uploads.
            if matches!(*sub, "data" | "uploads") {
                if let Err(e) = std::os::unix::fs::chown(&path, Some(API_UID), Some(API_UID)) {
                    eprintln!(
                        "warning: could not give {} to uid {API_UID} (the API's user): {e}\nrun `chown {API_UID}:{API_UID} {}` as root before deploying",
                        path.display(),
                        path.display()
                    );
                }
            }
        }
        let (id, created) = crate::config::identity::ensure(dir)?;
        if created {
            outln!(
                "wrote {} (mode 0600): stack id {id}",
                crate::config::identity::stack_file(dir).display()
            );
        }
        if !ctx.quiet {
            eprintln!(
                "next: review {} and run `{}`",
                env_path.display(),
                ctx.command("render")
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Appends the keys `fresh` has and `existing` lacks; never changes an existing line.
fn complete_env_file(
    path: &std::path::Path,
    existing: &str,
    fresh: &str,
    domain: &str,
) -> Result<()> {
    let have = stack::existing_keys(existing, path)?;
    let fresh_entries =
        envfile::parse(fresh).context("the env template renders an invalid file")?;
    let missing: Vec<&envfile::Entry> = fresh_entries
        .iter()
        .filter(|e| !have.contains(&e.key))
        .collect();
    if let Some(old) = envfile::parse(existing)
        .ok()
        .and_then(|entries| entries.into_iter().rev().find(|e| e.key == "DOMAIN"))
    {
        if old.value != domain {
            eprintln!(
                "warning: keeping DOMAIN={} from {}; edit the file to change it",
                old.value,
                path.display()
            );
        }
    }
    if missing.is_empty() {
        outln!("{} has every key; nothing to add", path.display());
        return Ok(());
    }
    let mut text = existing.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "\n# Added by elior init {}: keys that were missing.\n",
        crate::VERSION
    ));
    for entry in &missing {
        text.push_str(&format!("{}={}\n", entry.key, envfile::quote(&entry.value)));
    }
    super::render::write_atomic(path, text.as_bytes(), 0o600)?;
    let keys: Vec<&str> = missing.iter().map(|e| e.key.as_str()).collect();
    outln!("added to {}: {}", path.display(), keys.join(", "));
    Ok(())
}
