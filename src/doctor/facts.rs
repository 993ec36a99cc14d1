//! Facts more than one check uses: the stack every judge phrases its fixes for, and a
//! process listening on a port (`procfs` finds them; `docker::ports` names them too). Each check's own facts live
//! beside its gather and judge in `checks/<name>.rs`. Plain data, serialisable for
//! `--json`, with no verdicts in it.
//!
//! Secrets never appear here: the JWT secret is described by its length and whether it
//! is a placeholder, never by its value.

use serde::Serialize;

/// What every judge may need to phrase a fix: the stack directory and its domain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stack {
    pub dir: String,
    pub domain: Option<String>,
    /// The stack's project name (`elior-<domain>-<id8>`), when it has an id.
    pub project: Option<String>,
    pub production: bool,
    /// MODE=swarm: the stack runs swarm tasks, not containers.
    pub swarm: bool,
    /// Unix seconds at gathering time.
    pub now: i64,
    /// Why the settings could not be loaded, when they could not.
    pub config_error: Option<String>,
}

impl Stack {
    pub fn env_path(&self) -> String {
        format!("{}/.env.production", self.dir)
    }

    /// The project name for a command line, or a placeholder the user replaces.
    pub fn project_arg(&self) -> String {
        self.project.clone().unwrap_or_else(|| "PROJECT".into())
    }

    /// The domain for a command line, or a placeholder the user replaces.
    pub fn domain_arg(&self) -> String {
        self.domain.clone().unwrap_or_else(|| "DOMAIN".into())
    }
}

/// A process listening on a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub pid: u32,
    pub command: String,
    /// The `comm` name, e.g. `apache2` or `docker-proxy`.
    pub name: String,
}
