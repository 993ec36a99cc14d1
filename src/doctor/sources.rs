//! What the checks share while gathering, loaded once per run: the stack directory, its
//! settings (raw and validated) with the env file's facts, the stack's identity on the
//! engine, one Docker client, and one answer from the stack's nginx (the nginx and clock
//! checks both read it). Each check's gather takes what it needs from here and looks at
//! the rest of the world itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use tokio::sync::OnceCell;

use super::checks::env::EnvFacts;
use super::checks::nginx::NginxFacts;
use super::facts::Stack;
use crate::config::stack::{Mode, StackConfig};
use crate::config::RawSettings;
use crate::docker::Owner;
use crate::plan::render::Templates;

/// How long one network look (the engine, a socket, nginx) may take.
pub const NET_TIMEOUT: Duration = Duration::from_secs(8);

pub struct Sources {
    pub dir: PathBuf,
    pub templates: Templates,
    /// The settings every command gets (environment over file), when they parse.
    pub raw: Option<RawSettings>,
    /// The validated settings, when they are valid.
    pub config: Option<StackConfig>,
    pub env: EnvFacts,
    pub stack: Stack,
    /// The stack's owner filter, when the directory has an id and a domain.
    pub owner: Option<Owner>,
    docker: OnceCell<Result<Docker, String>>,
    nginx: OnceCell<Option<NginxFacts>>,
}

impl Sources {
    pub fn load(dir: &Path, templates: Templates) -> Sources {
        let (env, raw, config) = super::checks::env::load(dir);
        let domain = config
            .as_ref()
            .map(|c| c.domain.as_str().to_string())
            .or_else(|| setting(raw.as_ref(), "DOMAIN").map(String::from));
        let owner = domain
            .as_deref()
            .and_then(|d| crate::config::model::owner_of(dir, d).ok().flatten());
        let stack = Stack {
            dir: dir.display().to_string(),
            project: owner.as_ref().map(|o| o.project.clone()),
            domain,
            production: env.production,
            swarm: config.as_ref().is_some_and(|c| c.mode == Mode::Swarm),
            now: crate::tls::inspect::unix_now(),
            config_error: env
                .validation_error
                .clone()
                .or_else(|| env.parse_error.clone())
                .or_else(|| (!env.exists).then(|| "no env file".to_string())),
        };
        Sources {
            dir: dir.to_path_buf(),
            templates,
            raw,
            config,
            env,
            stack,
            owner,
            docker: OnceCell::new(),
            nginx: OnceCell::new(),
        }
    }

    /// A raw setting, trimmed, when it is set and not empty.
    pub fn setting(&self, key: &str) -> Option<&str> {
        setting(self.raw.as_ref(), key)
    }

    /// The one Docker client of the run, or why there is none (its first line).
    pub async fn docker(&self) -> Result<Docker, String> {
        self.docker
            .get_or_init(|| async {
                match tokio::time::timeout(NET_TIMEOUT, crate::docker::connect()).await {
                    Ok(Ok(d)) => Ok(d),
                    Ok(Err(e)) => Err(e.to_string().lines().next().unwrap_or_default().to_string()),
                    Err(_) => Err("the engine did not answer within 8s".into()),
                }
            })
            .await
            .clone()
    }

    /// What the stack's nginx answered over HTTPS and HTTP; `None` without valid settings.
    pub async fn nginx(&self) -> Option<&NginxFacts> {
        self.nginx
            .get_or_init(|| super::checks::nginx::ask(self))
            .await
            .as_ref()
    }

    /// HTTP_PORT and HTTPS_PORT from the settings, or from the raw file, or the defaults.
    pub fn ports(&self) -> (u16, u16) {
        if let Some(c) = &self.config {
            return (c.http_port, c.https_port);
        }
        let raw = |key: &str, default: u16| {
            self.setting(key)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        (raw("HTTP_PORT", 80), raw("HTTPS_PORT", 443))
    }

    pub fn database_path(&self) -> PathBuf {
        match &self.config {
            Some(c) => c.host_database_path(&self.dir),
            // The default file name, where the compose file mounts the data folder.
            None => self.dir.join("data").join("elior_fitness.db"),
        }
    }
}

fn setting<'a>(raw: Option<&'a RawSettings>, key: &str) -> Option<&'a str> {
    raw.and_then(|r| r.get(key))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The first line of an error with its causes: one line of a finding.
pub fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}
