//! What `gather` observed, one struct per check: plain data, serialisable for `--json`,
//! with no verdicts in it (those are `judge`'s). An observation that could not be made is
//! an `error` string, so the judge can say what went wrong.
//!
//! Secrets never appear here: the JWT secret is described by its length and whether it
//! is a placeholder, never by its value.

use serde::Serialize;

use crate::lock::Holder;
use crate::plan::certs::Renewal;
use crate::tls::inspect::CertInfo;

/// What every judge may need to phrase a fix: the stack directory and its domain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Context {
    pub dir: String,
    pub domain: Option<String>,
    /// The stack's project name (`elior-<domain>-<id8>`), when it has an id.
    pub project: Option<String>,
    pub production: bool,
    /// Unix seconds at gathering time.
    pub now: i64,
    /// Why the settings could not be loaded, when they could not.
    pub config_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DockerFacts {
    pub error: Option<String>,
    pub version: Option<String>,
    pub api_version: Option<String>,
    pub root_dir: Option<String>,
    pub disk: Option<Disk>,
}

/// Space on the filesystem holding a path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Disk {
    pub total_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EnvFacts {
    pub path: String,
    pub exists: bool,
    /// Permission bits, such as 0o600.
    pub mode: Option<u32>,
    pub read_error: Option<String>,
    pub parse_error: Option<String>,
    pub validation_error: Option<String>,
    pub production: bool,
    /// Length of JWT_SECRET in bytes (the HMAC key length), never its value.
    pub jwt_secret_bytes: Option<usize>,
    pub jwt_secret_placeholder: bool,
    pub cors_origins: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DriftFacts {
    /// (file, "same" | "differs" | "missing")
    pub files: Vec<(String, String)>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PortFacts {
    pub key: &'static str,
    pub port: u16,
    pub holders: Vec<Listener>,
    /// The stack's nginx container publishes this port.
    pub published_by_our_nginx: bool,
    pub error: Option<String>,
}

/// A process listening on a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub pid: u32,
    pub command: String,
    /// The `comm` name, e.g. `apache2` or `docker-proxy`.
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DnsFacts {
    pub domain: String,
    /// The domain is an IP address or a local name: there is nothing to resolve publicly.
    pub not_public: bool,
    pub addresses: Vec<String>,
    pub error: Option<String>,
    pub local_addresses: Vec<String>,
    /// (address, CDN name) for each address inside a known CDN range.
    pub cdn: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CertFacts {
    pub cert_path: String,
    pub key_path: String,
    pub cert_present: bool,
    pub key_present: bool,
    pub cert_error: Option<String>,
    pub key_error: Option<String>,
    pub info: Option<CertInfo>,
    pub chain_len: usize,
    pub key_matches: Option<bool>,
    /// `Some(None)` verified; `Some(Some(e))` did not verify; `None` not tried.
    pub chain_error: Option<Option<String>>,
    /// ACME_CA_FILE (environment, then the env file), whose roots the chain check
    /// trusts beside the system's: a stack on a private CA verifies against it.
    pub ca_file: Option<String>,
    /// Why ACME_CA_FILE could not be read as PEM roots.
    pub ca_file_error: Option<String>,
    pub renewal: Option<Renewal>,
    pub served_serial: Option<String>,
    pub served_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ContainerFacts {
    pub service: String,
    pub name: String,
    pub state: String,
    pub health: Option<String>,
    pub restart_count: i64,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub last_logs: Vec<String>,
    /// For the API: whether the container runs with the env file's JWT_SECRET (compared
    /// in `gather`, never recorded); `None` when either side has none.
    pub jwt_secret_matches_env_file: Option<bool>,
}

/// A swarm-mode stack (issue 21): the engine's swarm role, the database node label and
/// each service's tasks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SwarmFacts {
    /// manager, worker, inactive, or the engine's own word.
    pub state: String,
    pub hostname: String,
    /// elior runs the postgres service (no external DATABASE_URL).
    pub needs_db_node: bool,
    pub db_node_labelled: bool,
    pub services: Vec<SwarmServiceFacts>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SwarmServiceFacts {
    /// api, nginx, postgres.
    pub role: String,
    pub name: String,
    /// Replicas wanted; 1 for a global service on a single node.
    pub wanted: i64,
    /// Tasks running the service's current spec and healthy (or without a check).
    pub ready: usize,
    /// `task on node: error` of tasks that failed or are not healthy.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ContainersFacts {
    pub project: String,
    pub error: Option<String>,
    pub expected: Vec<String>,
    pub containers: Vec<ContainerFacts>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NginxFacts {
    pub https_url: String,
    pub https_status: Option<u16>,
    pub https_error: Option<String>,
    pub database_status: Option<String>,
    pub http_url: String,
    pub http_status: Option<u16>,
    pub http_location: Option<String>,
    pub http_error: Option<String>,
    /// The `Date` header of the HTTPS answer, as Unix seconds.
    pub server_date: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DatabaseFacts {
    pub path: String,
    pub exists: bool,
    pub size_bytes: Option<u64>,
    pub open_error: Option<String>,
    pub journal_mode: Option<String>,
    /// `ok`, or the problems quick_check listed.
    pub quick_check: Option<String>,
    pub disk: Option<Disk>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupFacts {
    pub dir: String,
    pub exists: bool,
    /// Permission bits of the folder.
    pub mode: Option<u32>,
    pub writable_error: Option<String>,
    pub error: Option<String>,
    pub complete_backups: usize,
    pub latest_id: Option<String>,
    /// Unix seconds (local time of the id, read as this host's zone).
    pub latest_taken_at: Option<i64>,
    pub latest_problems: Vec<String>,
    pub latest_database_bytes: Option<u64>,
    pub live_database_bytes: Option<u64>,
    /// BACKUP_OFFSITE's bucket, when set (issue 17).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsite: Option<OffsiteFacts>,
}

/// What the offsite bucket holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OffsiteFacts {
    pub url: String,
    pub error: Option<String>,
    pub complete_backups: usize,
    pub latest_id: Option<String>,
    /// Unix seconds (local time of the id, read as this host's zone).
    pub latest_taken_at: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct JobFacts {
    pub name: String,
    pub schedule: String,
    pub last_success_at: Option<String>,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ScheduleFacts {
    pub unit_path: String,
    pub unit_installed: bool,
    /// PIDs of `elior schedule` processes for this stack.
    pub running_pids: Vec<u32>,
    pub state_error: Option<String>,
    /// SCHEDULE_TIMEZONE as set (None: the host's zone), the zone the jobs run in.
    pub timezone: Option<String>,
    pub jobs: Vec<JobFacts>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LockFacts {
    pub path: String,
    pub exists: bool,
    pub holder: Option<Holder>,
    pub unreadable: bool,
    /// Unix seconds the lock file was last written.
    pub modified_at: Option<i64>,
    pub this_host: String,
    pub pid_alive: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ClockFacts {
    pub source: String,
    pub server_date: Option<i64>,
    pub local_now: i64,
    pub error: Option<String>,
}
