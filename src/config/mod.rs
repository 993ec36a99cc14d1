//! Settings for `elior serve`: read from the process environment and, optionally, an env
//! file, then validated into a typed [`ServeConfig`].
//!
//! Pure apart from reading the env file: no directories are created and nothing is opened
//! here. Every error names the key, where its value came from, and how to fix it.

pub mod cron;
pub mod domain;
pub mod envfile;
pub mod hint;
pub mod identity;
pub mod model;
pub mod net;
pub mod stack;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub use net::IpNet;

/// The keys `elior serve` reads, with their defaults. Other keys in a stack's env file
/// (backups, ports, images) belong to other commands and are ignored here.
pub const SERVE_KEYS: &[&str] = &[
    "ENVIRONMENT",
    "DOMAIN",
    "CORS_ORIGINS",
    "JWT_SECRET",
    "JWT_ALGORITHM",
    "ACCESS_TOKEN_EXPIRE_MINUTES",
    "DATABASE_URL",
    "UPLOAD_DIR",
    "MAX_FILE_SIZE",
    "MAX_PROFILE_PHOTO_SIZE",
    "MAX_DOCUMENT_SIZE",
    "LOG_LEVEL",
    "BIND_ADDRESS",
    "TRUSTED_PROXIES",
    // Uploads on S3 (issue 16), validated by crate::files::settings.
    "UPLOADS_URL",
    "S3_ENDPOINT",
    "S3_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "WS_TIMEOUT_SECONDS",
    "MAX_CONNECTIONS",
    // Requests handled at once; the rest wait their turn in arrival order (issue 19).
    "MAX_CONCURRENT_REQUESTS",
    // SQLite's one writer (issue 19): writes that may wait for it before a 503.
    "DB_WRITE_QUEUE",
    // PostgreSQL (issue 16): how long serve retries an unreachable database at start.
    "DATABASE_CONNECT_RETRY_SECONDS",
];

pub const DEFAULT_DATABASE_URL: &str = "sqlite:///./data/elior_fitness.db";
pub const DEFAULT_BIND: &str = "0.0.0.0:8000";
pub const MIN_SECRET_LEN: usize = 32;

/// Development origins of the usual frontend dev servers (CRA, Vite, webpack).
pub const DEV_CORS_ORIGINS: &[&str] = &[
    "http://localhost:3000",
    "http://127.0.0.1:3000",
    "http://localhost:5173",
    "http://127.0.0.1:5173",
    "http://localhost:8080",
    "http://127.0.0.1:8080",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Production => "production",
        }
    }
}

/// A secret string whose `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Validated settings of `elior serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub environment: Environment,
    pub domain: String,
    pub cors_origins: Vec<String>,
    pub jwt_secret: Secret,
    /// True when no secret was configured and a random one was made for this process
    /// (development only): tokens stop working at restart.
    pub jwt_secret_is_ephemeral: bool,
    pub access_token_ttl: Duration,
    /// The SQLite file (the default; unused when `postgres` is set).
    pub database_path: PathBuf,
    /// `DATABASE_URL=postgresql://…` (issue 16): the API keeps its data there instead.
    pub postgres: Option<crate::db::pg::PgUrl>,
    /// How long `serve` retries an unreachable PostgreSQL at start
    /// (DATABASE_CONNECT_RETRY_SECONDS, default 30).
    pub database_connect_retry: Duration,
    pub upload_dir: PathBuf,
    /// UPLOAD_DIR (the default) or a bucket (UPLOADS_URL); see [`crate::files::settings`].
    pub uploads: crate::files::settings::UploadsSettings,
    /// Largest image upload (meal and progress photos, other images), in bytes.
    pub max_file_size: u64,
    /// Largest profile photo, in bytes; uploads never exceed `max_file_size` either.
    pub max_profile_photo_size: u64,
    /// Largest document upload, in bytes.
    pub max_document_size: u64,
    /// A `tracing` filter directive such as `info` or `elior=debug`.
    pub log_filter: String,
    pub bind: SocketAddr,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` are believed (the reverse proxy).
    pub trusted_proxies: Vec<IpNet>,
    /// A WebSocket that sends nothing (not even a pong) for this long is closed.
    pub ws_timeout: Duration,
    /// Connections open at once (HTTP and WebSocket); `None`: the server's default.
    pub max_connections: Option<usize>,
    /// SQLite: writes queued for the writer before new ones get 503 (`DB_WRITE_QUEUE`).
    pub db_write_queue: usize,
    /// Requests handled at once (`MAX_CONCURRENT_REQUESTS`); `None`: no limit.
    pub max_concurrent_requests: Option<usize>,
}

/// Where a raw value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Environment,
    File { path: PathBuf, line: usize },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Environment => f.write_str("environment"),
            Origin::File { path, line } => write!(f, "{} line {line}", path.display()),
        }
    }
}

/// Raw key/value pairs with their origins; later sources override earlier ones.
#[derive(Debug, Clone, Default)]
pub struct RawSettings {
    values: BTreeMap<String, (String, Origin)>,
}

impl RawSettings {
    /// Reads an env file. The file must exist: a path the user named that is missing is an
    /// error, not an empty configuration.
    pub fn from_env_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read env file {}", path.display()))?;
        let entries = envfile::parse(&text)
            .with_context(|| format!("env file {} is malformed", path.display()))?;
        let mut raw = RawSettings::default();
        for entry in entries {
            raw.values.insert(
                entry.key,
                (
                    entry.value,
                    Origin::File {
                        path: path.to_path_buf(),
                        line: entry.line,
                    },
                ),
            );
        }
        Ok(raw)
    }

    /// Overlays the process environment for every key elior knows ([`SERVE_KEYS`] and
    /// [`stack::STACK_KEYS`]): a variable set in the environment wins over the file, as
    /// with docker-compose's `env_file`. The one precedence rule: environment, then the
    /// env file, then the defaults.
    pub fn overlay_process_env(&mut self) {
        self.overlay(
            SERVE_KEYS
                .iter()
                .chain(stack::STACK_KEYS)
                .filter_map(|key| {
                    std::env::var(key)
                        .ok()
                        .map(|value| (key.to_string(), value))
                }),
        );
    }

    pub fn overlay(&mut self, pairs: impl IntoIterator<Item = (String, String)>) {
        for (key, value) in pairs {
            self.values.insert(key, (value, Origin::Environment));
        }
    }

    /// Every key and its effective value, in key order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .map(|(k, (v, _))| (k.as_str(), v.as_str()))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str())
    }

    fn get_with_origin(&self, key: &str) -> Option<(&str, &Origin)> {
        self.values.get(key).map(|(v, o)| (v.as_str(), o))
    }

    /// A non-empty value, or `None` when absent or blank (blank means "use the default").
    pub fn non_empty(&self, key: &str) -> Option<(&str, &Origin)> {
        self.get_with_origin(key)
            .map(|(v, o)| (v.trim(), o))
            .filter(|(v, _)| !v.is_empty())
    }
}

fn invalid(key: &str, origin: &Origin, message: impl fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{key} ({origin}): {message}")
}

/// Placeholders that example env files and tutorials ship with, among them every
/// JWT_SECRET of the original's examples (`your-new-secure-jwt-secret-here-32-chars-minimum`,
/// `your-super-secure-secret-key-here-minimum-32-characters`, `your-secret-key-here`;
/// issue 14). Matched after lower-casing, with `_` and spaces read as `-`. A secret that
/// contains one of these was never changed.
const PLACEHOLDER_MARKERS: &[&str] = &[
    "change-me",
    "changeme",
    "change-this",
    "your-",
    "yoursecret",
    "replace-me",
    "placeholder",
    "-here",
    "minimum-32",
    "32-chars",
    "32-characters",
];

pub fn is_placeholder_secret(secret: &str) -> bool {
    let normal: String = secret
        .chars()
        .map(|c| match c {
            '_' | ' ' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    PLACEHOLDER_MARKERS.iter().any(|m| normal.contains(m))
}

impl ServeConfig {
    /// Validates raw settings. `bind_override` is `--bind`, which beats `BIND_ADDRESS`.
    pub fn from_raw(raw: &RawSettings, bind_override: Option<SocketAddr>) -> Result<Self> {
        let environment = match raw.non_empty("ENVIRONMENT") {
            None => Environment::Development,
            Some((v, o)) => match v.to_ascii_lowercase().as_str() {
                "development" | "dev" => Environment::Development,
                "production" | "prod" => Environment::Production,
                _ => bail!(invalid(
                    "ENVIRONMENT",
                    o,
                    format!("{v:?} is not an environment; use development or production")
                )),
            },
        };
        let production = environment == Environment::Production;

        let domain = match raw.non_empty("DOMAIN") {
            None => "localhost".to_string(),
            Some((v, o)) => domain::parse(v)
                .map_err(|m| invalid("DOMAIN", o, m))?
                .to_string(),
        };

        let cors_origins = match raw.non_empty("CORS_ORIGINS") {
            None if production => vec![format!("https://{domain}")],
            None => DEV_CORS_ORIGINS.iter().map(|s| s.to_string()).collect(),
            Some((v, o)) => {
                parse_origins(v, production).map_err(|m| invalid("CORS_ORIGINS", o, m))?
            }
        };

        let (jwt_secret, jwt_secret_is_ephemeral) = match raw.non_empty("JWT_SECRET") {
            Some((v, o)) => {
                if is_placeholder_secret(v) {
                    bail!(invalid(
                        "JWT_SECRET",
                        o,
                        "is the example placeholder; generate one with `openssl rand -hex 32` or let `elior init` write it"
                    ));
                }
                if production && v.chars().count() < MIN_SECRET_LEN {
                    bail!(invalid(
                        "JWT_SECRET",
                        o,
                        format!(
                            "is {} characters; production needs at least {MIN_SECRET_LEN} (try `openssl rand -hex 32`)",
                            v.chars().count()
                        )
                    ));
                }
                (Secret::new(v), false)
            }
            None if production => bail!(
                "JWT_SECRET is not set; production needs a secret of at least {MIN_SECRET_LEN} characters\n\
                 set it in the env file (`elior init` writes one) or generate one with `openssl rand -hex 32`"
            ),
            None => {
                use rand::RngCore;
                let mut bytes = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                (Secret::new(hex::encode(bytes)), true)
            }
        };

        if let Some((v, o)) = raw.non_empty("JWT_ALGORITHM") {
            if v != "HS256" {
                bail!(invalid(
                    "JWT_ALGORITHM",
                    o,
                    format!("{v:?} is not supported; use HS256")
                ));
            }
        }

        let access_token_ttl = match raw.non_empty("ACCESS_TOKEN_EXPIRE_MINUTES") {
            None => Duration::from_secs(30 * 60),
            Some((v, o)) => match v.parse::<u64>() {
                Ok(m) if (1..=60 * 24 * 30).contains(&m) => Duration::from_secs(m * 60),
                _ => bail!(invalid(
                    "ACCESS_TOKEN_EXPIRE_MINUTES",
                    o,
                    format!("{v:?} is not a number of minutes between 1 and 43200")
                )),
            },
        };

        let default_path = || sqlite_path(DEFAULT_DATABASE_URL).expect("default url is valid");
        let (database_path, postgres) = match raw.non_empty("DATABASE_URL") {
            None => (default_path(), None),
            Some((v, o)) => match crate::db::pg::PgUrl::parse(v) {
                Some(url) => (
                    default_path(),
                    Some(url.map_err(|m| invalid("DATABASE_URL", o, m))?),
                ),
                None => (
                    sqlite_path(v).map_err(|m| invalid("DATABASE_URL", o, m))?,
                    None,
                ),
            },
        };
        let database_connect_retry = match raw.non_empty("DATABASE_CONNECT_RETRY_SECONDS") {
            None => Duration::from_secs(30),
            Some((v, o)) => match v.parse::<u64>() {
                Ok(s) if s <= 600 => Duration::from_secs(s),
                _ => bail!(invalid(
                    "DATABASE_CONNECT_RETRY_SECONDS",
                    o,
                    format!("{v:?} is not a number of seconds between 0 and 600")
                )),
            },
        };

        let upload_dir = match raw.non_empty("UPLOAD_DIR") {
            None => PathBuf::from("./uploads"),
            Some((v, _)) => PathBuf::from(v),
        };

        let uploads = crate::files::settings::UploadsSettings::from_lookup(&|key| {
            raw.non_empty(key)
                .map(|(v, o)| (v.to_string(), o.to_string()))
        })?;

        let max_file_size = size_setting(raw, "MAX_FILE_SIZE", 10 * 1024 * 1024)?;
        let max_profile_photo_size = size_setting(raw, "MAX_PROFILE_PHOTO_SIZE", 5 * 1024 * 1024)?;
        let max_document_size = size_setting(raw, "MAX_DOCUMENT_SIZE", 25 * 1024 * 1024)?;

        let log_filter = match raw.non_empty("LOG_LEVEL") {
            None => "info".to_string(),
            Some((v, o)) => log_filter(v).ok_or_else(|| {
                invalid(
                    "LOG_LEVEL",
                    o,
                    format!("{v:?} is not a log level; use error, warn, info, debug or trace"),
                )
            })?,
        };

        let bind = match (bind_override, raw.non_empty("BIND_ADDRESS")) {
            (Some(addr), _) => addr,
            (None, None) => DEFAULT_BIND.parse().expect("default bind is valid"),
            (None, Some((v, o))) => v.parse().map_err(|_| {
                invalid(
                    "BIND_ADDRESS",
                    o,
                    format!("{v:?} is not an address; use IP:PORT such as 0.0.0.0:8000"),
                )
            })?,
        };

        let trusted_proxies = match raw.non_empty("TRUSTED_PROXIES") {
            None => Vec::new(),
            Some((v, o)) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpNet>()
                        .map_err(|m| invalid("TRUSTED_PROXIES", o, m))
                })
                .collect::<Result<_>>()?,
        };

        let ws_timeout = match raw.non_empty("WS_TIMEOUT_SECONDS") {
            None => Duration::from_secs(30),
            Some((v, o)) => match v.parse::<u64>() {
                Ok(s) if (1..=3600).contains(&s) => Duration::from_secs(s),
                _ => bail!(invalid(
                    "WS_TIMEOUT_SECONDS",
                    o,
                    format!("{v:?} is not a number of seconds between 1 and 3600")
                )),
            },
        };

        let max_connections = match raw.non_empty("MAX_CONNECTIONS") {
            None => None,
            Some((v, o)) => match v.parse::<usize>() {
                Ok(n) if (1..=1_000_000).contains(&n) => Some(n),
                _ => bail!(invalid(
                    "MAX_CONNECTIONS",
                    o,
                    format!("{v:?} is not a number of connections between 1 and 1000000")
                )),
            },
        };

        let db_write_queue = match raw.non_empty("DB_WRITE_QUEUE") {
            None => crate::db::writer::DEFAULT_QUEUE,
            Some((v, o)) => match v.parse::<usize>() {
                Ok(n) if (1..=1_000_000).contains(&n) => n,
                _ => bail!(invalid(
                    "DB_WRITE_QUEUE",
                    o,
                    format!("{v:?} is not a number of queued writes between 1 and 1000000")
                )),
            },
        };

        let max_concurrent_requests = match raw.non_empty("MAX_CONCURRENT_REQUESTS") {
            None => Some(crate::server::admission::DEFAULT_MAX_CONCURRENT_REQUESTS),
            Some((v, o)) => match v.parse::<usize>() {
                Ok(0) => None,
                Ok(n) if n <= 1_000_000 => Some(n),
                _ => bail!(invalid(
                    "MAX_CONCURRENT_REQUESTS",
                    o,
                    format!(
                        "{v:?} is not a number of requests between 1 and 1000000 (or 0: no limit)"
                    )
                )),
            },
        };

        Ok(ServeConfig {
            environment,
            domain,
            cors_origins,
            jwt_secret,
            jwt_secret_is_ephemeral,
            access_token_ttl,
            database_path,
            postgres,
            database_connect_retry,
            upload_dir,
            uploads,
            max_file_size,
            max_profile_photo_size,
            max_document_size,
            log_filter,
            bind,
            trusted_proxies,
            ws_timeout,
            max_connections,
            db_write_queue,
            max_concurrent_requests,
        })
    }

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }

    /// The largest body any upload route accepts, whatever its kind.
    pub fn largest_upload(&self) -> u64 {
        self.max_file_size
            .max(self.max_profile_photo_size)
            .max(self.max_document_size)
    }
}

/// A size in bytes under `key`: a positive integer, else `default` when unset.
fn size_setting(raw: &RawSettings, key: &str, default: u64) -> Result<u64> {
    match raw.non_empty(key) {
        None => Ok(default),
        Some((v, o)) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!(invalid(
                key,
                o,
                format!("{v:?} is not a size in bytes; use a positive integer such as 10485760")
            )),
        },
    }
}

fn parse_origins(value: &str, production: bool) -> Result<Vec<String>, String> {
    let mut origins = Vec::new();
    for origin in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let origin = origin.trim_end_matches('/');
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://").filter(|_| !production));
        let Some(host) = rest else {
            return Err(if production {
                format!(
                    "{origin:?} is not an https origin; production allows only https://HOST[:PORT]"
                )
            } else {
                format!("{origin:?} is not an origin; use http(s)://HOST[:PORT]")
            });
        };
        if host.is_empty() || host.contains(['/', '?', '#', ' ', '*']) {
            return Err(format!(
                "{origin:?} is not an origin; use scheme://HOST[:PORT] with no path or wildcard"
            ));
        }
        origins.push(origin.to_string());
    }
    if origins.is_empty() {
        return Err(
            "lists no origins; use a comma-separated list such as https://example.com".into(),
        );
    }
    Ok(origins)
}

/// Converts `sqlite:///relative/path` (three slashes) and `sqlite:////absolute/path` (four),
/// as SQLAlchemy spells them, into a file path.
pub fn sqlite_path(url: &str) -> Result<PathBuf, String> {
    let Some(rest) = url.strip_prefix("sqlite:///") else {
        return Err(format!(
            "{:?} is not a SQLite or PostgreSQL URL; use sqlite:///./data/elior_fitness.db (embedded, the default) or postgresql://USER:PASSWORD@HOST:5432/DATABASE",
            crate::db::pg::redact(url)
        ));
    };
    if rest.is_empty() || rest.contains(":memory:") {
        return Err(format!(
            "{url:?} names no database file; use sqlite:///./data/elior_fitness.db"
        ));
    }
    Ok(PathBuf::from(rest))
}

/// Maps Python-style and tracing-style level names to a tracing filter.
fn log_filter(value: &str) -> Option<String> {
    let level = match value.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "critical" => "error",
        _ => return None,
    };
    Some(level.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<ServeConfig> {
        let mut raw = RawSettings::default();
        raw.overlay(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        ServeConfig::from_raw(&raw, None)
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        format!("{:#}", config(pairs).unwrap_err())
    }

    #[test]
    fn development_defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.environment, Environment::Development);
        assert!(c.jwt_secret_is_ephemeral);
        assert_eq!(c.jwt_secret.expose().len(), 64);
        assert_eq!(c.database_path, PathBuf::from("./data/elior_fitness.db"));
        assert_eq!(c.bind.to_string(), "0.0.0.0:8000");
        assert_eq!(c.access_token_ttl, Duration::from_secs(1800));
        assert_eq!(c.cors_origins.len(), DEV_CORS_ORIGINS.len());
    }

    #[test]
    fn production_refuses_weak_secrets() {
        let prod = ("ENVIRONMENT", "production");
        assert!(err(&[prod]).contains("JWT_SECRET is not set"));
        assert!(err(&[prod, ("JWT_SECRET", "short")]).contains("at least 32"));
        assert!(err(&[
            prod,
            (
                "JWT_SECRET",
                "your-secret-key-change-this-in-production-please"
            )
        ])
        .contains("placeholder"));
        let ok = config(&[prod, ("JWT_SECRET", &"a".repeat(32))]).unwrap();
        assert!(!ok.jwt_secret_is_ephemeral);
    }

    #[test]
    fn errors_name_key_and_fix() {
        assert!(err(&[("ENVIRONMENT", "staging")]).starts_with("ENVIRONMENT (environment)"));
        assert!(err(&[("MAX_FILE_SIZE", "10MB")]).contains("positive integer"));
        for key in ["MAX_PROFILE_PHOTO_SIZE", "MAX_DOCUMENT_SIZE"] {
            for bad in ["5MB", "0", "-1"] {
                let e = err(&[(key, bad)]);
                assert!(e.starts_with(key) && e.contains("positive integer"), "{e}");
            }
        }
        let c = config(&[("MAX_DOCUMENT_SIZE", "31457280")]).unwrap();
        assert_eq!(
            (
                c.max_profile_photo_size,
                c.max_document_size,
                c.largest_upload()
            ),
            (5 * 1024 * 1024, 31457280, 31457280)
        );
        assert!(err(&[("DATABASE_URL", "mysql://u:pw@x/db")]).contains("sqlite:///"));
        assert!(!err(&[("DATABASE_URL", "mysql://u:pw@x/db")]).contains("pw"));
        assert!(err(&[("DATABASE_URL", "postgresql://x")]).contains("postgresql://USER"));
        assert!(err(&[("LOG_LEVEL", "loud")]).contains("LOG_LEVEL"));
        assert!(err(&[("BIND_ADDRESS", "8000")]).contains("IP:PORT"));
        assert!(err(&[("TRUSTED_PROXIES", "10.0.0.0/40")]).contains("TRUSTED_PROXIES"));
        assert!(err(&[("JWT_ALGORITHM", "RS256")]).contains("HS256"));
        for bad in ["-1", "lots", "2000000"] {
            let e = err(&[("MAX_CONCURRENT_REQUESTS", bad)]);
            assert!(
                e.starts_with("MAX_CONCURRENT_REQUESTS") && e.contains("0: no limit"),
                "{e}"
            );
        }
    }

    #[test]
    fn concurrent_requests_default_to_a_limit_and_zero_lifts_it() {
        let limit = |pairs: &[(&str, &str)]| config(pairs).unwrap().max_concurrent_requests;
        assert_eq!(
            limit(&[]),
            Some(crate::server::admission::DEFAULT_MAX_CONCURRENT_REQUESTS)
        );
        assert_eq!(limit(&[("MAX_CONCURRENT_REQUESTS", "8")]), Some(8));
        assert_eq!(limit(&[("MAX_CONCURRENT_REQUESTS", "0")]), None);
    }

    #[test]
    fn production_cors_must_be_https() {
        let prod = [
            ("ENVIRONMENT", "production"),
            ("JWT_SECRET", "b".repeat(40).leak() as &str),
        ];
        let mut pairs = prod.to_vec();
        pairs.push(("CORS_ORIGINS", "http://example.com"));
        assert!(err(&pairs).contains("https"));
        pairs.pop();
        pairs.push((
            "CORS_ORIGINS",
            "https://example.com/, https://www.example.com",
        ));
        assert_eq!(
            config(&pairs).unwrap().cors_origins,
            vec!["https://example.com", "https://www.example.com"]
        );
    }

    #[test]
    fn sqlite_urls() {
        assert_eq!(
            sqlite_path("sqlite:////var/db.sqlite").unwrap(),
            PathBuf::from("/var/db.sqlite")
        );
        assert!(sqlite_path("sqlite:///:memory:").is_err());
    }

    #[test]
    fn secret_debug_is_redacted() {
        let c = config(&[("JWT_SECRET", "super-sensitive-value-xyz")]).unwrap();
        assert!(!format!("{c:?}").contains("super-sensitive"));
    }
}
