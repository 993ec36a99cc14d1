//! The one model of a stack: its directory, its identity and its settings, loaded once
//! and handed to every command that acts on a stack (deploy, update, rollback, down,
//! status, logs, restore, cert, backup, schedule, doctor, render, config show).
//!
//! Settings have one precedence rule: **environment > `DIR/.env.production` > defaults**,
//! for every key elior knows (`SERVE_KEYS` and `STACK_KEYS`). [`settings`] is the one
//! place that reads a stack's env file; `serve --env-file` goes through [`read_settings`].
//!
//! Pure apart from reading the stack directory's files; it never talks to the engine.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::identity::{self, Owner, StackId};
use super::stack::{StackConfig, ENV_FILE};
use super::RawSettings;

/// An env file (when named; it must then exist) with the process environment overlaid,
/// then the secrets named by `KEY_FILE` variables ([`FILE_KEYS`]).
pub fn read_settings(env_file: Option<&Path>) -> Result<RawSettings> {
    let mut raw = match env_file {
        Some(path) => RawSettings::from_env_file(path)?,
        None => RawSettings::default(),
    };
    raw.overlay_process_env();
    overlay_secret_files(&mut raw, &|key| std::env::var(key).ok())?;
    Ok(raw)
}

/// Keys whose value may come from the file a `KEY_FILE` environment variable names, the
/// Docker secrets convention: in swarm mode the API reads its JWT secret and database URL
/// from /run/secrets/, so they never show in `docker service inspect` (issue 21).
pub const FILE_KEYS: &[&str] = &["JWT_SECRET", "DATABASE_URL", "AWS_SECRET_ACCESS_KEY"];

/// Reads each `KEY_FILE` that `env` sets into KEY (trailing line breaks dropped). KEY_FILE
/// is an environment variable, so it wins over the env file; set in the environment
/// beside KEY itself, it is an error: one of the two would be silently ignored.
pub fn overlay_secret_files(
    raw: &mut RawSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    for key in FILE_KEYS {
        let file_key = format!("{key}_FILE");
        let Some(path) = env(&file_key).filter(|p| !p.is_empty()) else {
            continue;
        };
        if env(key).is_some() {
            bail!("both {key} and {file_key} are set in the environment\nunset one of them");
        }
        let path = PathBuf::from(path);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{file_key}: failed to read {}\nis the secret mounted there?",
                path.display()
            )
        })?;
        let value = text.trim_end_matches(['\n', '\r']).to_string();
        raw.values.insert(
            key.to_string(),
            (value, super::Origin::File { path, line: 1 }),
        );
    }
    Ok(())
}

/// The raw settings of the stack in `dir`: `DIR/.env.production` when it exists, with the
/// process environment overlaid. Nothing is validated here.
pub fn settings(dir: &Path) -> Result<RawSettings> {
    let path = dir.join(ENV_FILE);
    read_settings(path.exists().then_some(path.as_path()))
}

/// A stack directory as loaded: where it is, who it is, what it runs with.
#[derive(Debug, Clone)]
pub struct Stack {
    /// The directory, absolute (canonical when it exists).
    pub dir: PathBuf,
    /// `None` for a directory that an earlier release made (no `.elior/stack.json` yet):
    /// it owns nothing on the engine until its next deploy adopts its containers.
    pub id: Option<StackId>,
    pub config: StackConfig,
    /// The effective raw values (environment over file), for the keys of other modules
    /// (certificates, backups) and the API container's environment.
    pub raw: RawSettings,
}

impl Stack {
    /// Loads `DIR`: its settings (validated) and its id.
    pub fn load(dir: &Path) -> Result<Stack> {
        let path = dir.join(ENV_FILE);
        if !path.exists() {
            bail!(
                "no env file at {}\nrun `{}` to create the stack directory",
                path.display(),
                super::hint::command(Some(dir), "init DOMAIN")
            );
        }
        let raw = settings(dir)?;
        let config = StackConfig::from_raw(&raw)
            .with_context(|| format!("invalid settings in {}", path.display()))?;
        Ok(Stack {
            dir: absolute_dir(dir)?,
            id: identity::read(dir)?,
            config,
            raw,
        })
    }

    /// The certificate settings (ACME directory, CA file, ports) from the same values.
    pub fn certs(&self, staging: bool) -> Result<crate::tls::settings::CertSettings> {
        crate::tls::settings::CertSettings::from_raw(&self.raw, &self.dir, staging)
    }

    /// The engine objects this stack owns, when it has an id.
    pub fn owner(&self) -> Option<Owner> {
        self.id
            .clone()
            .map(|id| Owner::new(id, self.dir.clone(), &self.config.domain))
    }

    /// The owner, giving the directory an id first when it has none (deploy).
    pub fn ensure_owner(&mut self) -> Result<(Owner, bool)> {
        let (id, created) = identity::ensure(&self.dir)?;
        self.id = Some(id);
        Ok((self.owner().expect("the id was just set"), created))
    }

    /// What a command that needs a deployed stack says when this one has no id.
    pub fn no_id_hint(&self) -> String {
        format!(
            "{} has no stack id ({} is missing): it was made by an earlier elior release and owns nothing yet\nrun `{}` once to adopt its containers",
            self.dir.display(),
            identity::STACK_FILE,
            super::hint::command(Some(&self.dir), &format!("deploy {}", self.config.domain))
        )
    }
}

/// The directory as an absolute path, canonical when it exists (so the `elior.stack-dir`
/// label of one directory is one string, whatever the spelling of `--dir`).
pub fn absolute_dir(dir: &Path) -> Result<PathBuf> {
    match dir.canonicalize() {
        Ok(dir) => Ok(dir),
        Err(_) => std::path::absolute(dir)
            .with_context(|| format!("bad stack directory {}", dir.display())),
    }
}

/// The owner of the stack in `dir` from its id file and a domain alone, for commands that
/// must work without fully valid settings (doctor, restore, cert). `None` without an id
/// or with a domain that does not parse.
pub fn owner_of(dir: &Path, domain: &str) -> Result<Option<Owner>> {
    let Some(id) = identity::read(dir)? else {
        return Ok(None);
    };
    let Ok(domain) = super::domain::parse(domain) else {
        return Ok(None);
    };
    Ok(Some(Owner::new(id, absolute_dir(dir)?, &domain)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_variables_read_secrets_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("jwt");
        std::fs::write(&secret, "s3cret-from-a-file\n").unwrap();
        let path = secret.to_string_lossy().into_owned();
        let mut raw = RawSettings::default();
        raw.overlay([("JWT_SECRET".to_string(), "from-the-file".to_string())]);
        let env = |k: &str| (k == "JWT_SECRET_FILE").then(|| path.clone());
        overlay_secret_files(&mut raw, &env).unwrap();
        assert_eq!(raw.get("JWT_SECRET"), Some("s3cret-from-a-file"));

        let both = |k: &str| match k {
            "JWT_SECRET_FILE" => Some(path.clone()),
            "JWT_SECRET" => Some("x".to_string()),
            _ => None,
        };
        let err = overlay_secret_files(&mut RawSettings::default(), &both).unwrap_err();
        assert_eq!(
            err.to_string(),
            "both JWT_SECRET and JWT_SECRET_FILE are set in the environment\nunset one of them"
        );
        let missing = |k: &str| (k == "DATABASE_URL_FILE").then(|| "/nonexistent/x".to_string());
        let err = format!(
            "{:#}",
            overlay_secret_files(&mut RawSettings::default(), &missing).unwrap_err()
        );
        assert!(
            err.starts_with("DATABASE_URL_FILE: failed to read /nonexistent/x"),
            "{err}"
        );
    }
}
