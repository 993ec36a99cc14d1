//! The stack's settings: a stack directory's `.env.production`, validated into a typed
//! [`StackConfig`] that `render`, `config show` and (later) `deploy` and `backup` use.
//!
//! The keys `elior serve` reads are validated by [`ServeConfig::from_raw`], so serve's rules
//! live in one place; this module adds the keys only the stack uses (ports, images, email,
//! backups, schedules, HSTS preload) and the rules that hold when the API runs inside the
//! stack's container (a real secret, absolute paths inside the container). Pure apart from
//! reading the env file: it creates nothing and never looks at the network or Docker.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::domain::{self, Domain};
use super::{envfile, invalid, Origin, RawSettings, ServeConfig, SERVE_KEYS};

/// The env file inside a stack directory.
pub const ENV_FILE: &str = ".env.production";

/// Keys that only the stack uses (serve ignores them).
pub const STACK_KEYS: &[&str] = &[
    "ACME_EMAIL",
    "BACKUP_DIR",
    "BACKUP_FORMAT",
    // Offsite copies (issue 17), with the S3_* and AWS_* keys of crate::files::settings.
    "BACKUP_OFFSITE",
    "BACKUP_RECIPIENTS",
    "BACKUP_RETENTION_DAYS",
    "BACKUP_SCHEDULE",
    "CERT_RENEW_SCHEDULE",
    "SCHEDULE_TIMEZONE",
    "HTTP_PORT",
    "HTTPS_PORT",
    "API_IMAGE",
    "PROXY_IMAGE",
    "HSTS_PRELOAD",
    // Read by `elior cert` and deploy's certificate step (tls::settings).
    "ACME_DIRECTORY",
    "ACME_CA_FILE",
    // Docker Swarm mode (issue 21), read by deploy and the day-2 commands.
    "MODE",
    "API_REPLICAS",
    "POSTGRES_IMAGE",
];

/// Keys whose values `config show` never prints.
pub const SECRET_KEYS: &[&str] = &["JWT_SECRET", "AWS_SECRET_ACCESS_KEY"];

pub const DEFAULT_API_IMAGE: &str = "elior-fitness-api:latest";
/// The production proxy image; tests stand in Debian's nginx packed into a local image.
pub const DEFAULT_PROXY_IMAGE: &str = "nginx:stable-alpine";
/// The database service of a swarm stack without an external DATABASE_URL (issue 21).
pub const DEFAULT_POSTGRES_IMAGE: &str = "postgres:17";
pub const DEFAULT_API_REPLICAS: u32 = 2;
/// The most API replicas `API_REPLICAS` and `elior scale` accept.
pub const MAX_API_REPLICAS: u32 = 64;
pub const DEFAULT_BACKUP_DIR: &str = "./backups";
pub const DEFAULT_BACKUP_RETENTION_DAYS: u32 = 30;
pub const DEFAULT_BACKUP_SCHEDULE: &str = "0 2 * * *";
pub const DEFAULT_CERT_RENEW_SCHEDULE: &str = "0 12 * * *";
/// Where the API finds its database and uploads inside its container; the compose file
/// bind-mounts the stack's `./data` and `./uploads` there.
pub const CONTAINER_DATABASE_URL: &str = "sqlite:////app/data/elior_fitness.db";
pub const CONTAINER_UPLOAD_DIR: &str = "/app/uploads";

/// Cron expressions as crontab(5) reads them (5 fields, or 6 with seconds first, or
/// `@daily`-style names); see [`super::cron`].
pub use super::cron::CronExpr;

/// A Docker image reference: `[registry[:port]/]path[:tag][@sha256:digest]`, as the
/// distribution spec's grammar allows (lower-case path components).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ImageRef(String);

impl ImageRef {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ImageRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let fail = || {
            format!(
                "{s:?} is not an image reference; use NAME[:TAG] such as nginx:stable-alpine or registry.example.com/team/api:1.2"
            )
        };
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            let hex = d.strip_prefix("sha256:").ok_or_else(fail)?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(fail());
            }
        }
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].find(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return Err(fail());
            }
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
            let registry = parts.remove(0);
            let (host, port) = match registry.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (registry, None),
            };
            if domain::parse(host).is_err()
                || port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0))
            {
                return Err(fail());
            }
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.split(['.', '_', '-']).all(|w| {
                    !w.is_empty()
                        && w.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
        };
        // `__` is also a legal separator; the split above sees it as an empty word.
        if parts.is_empty() || !parts.iter().all(|c| component_ok(&c.replace("__", "_"))) {
            return Err(fail());
        }
        Ok(ImageRef(s.to_string()))
    }
}

/// Where a stack runs: containers on this host's engine, or services on a Docker Swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Single,
    Swarm,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "single" => Ok(Mode::Single),
            "swarm" => Ok(Mode::Swarm),
            _ => Err(format!(
                "{s:?} is not a mode; use single (containers on this host) or swarm (services on a Docker Swarm)"
            )),
        }
    }
}

/// `API_REPLICAS`: 1 to [`MAX_API_REPLICAS`].
pub fn parse_replicas(v: &str) -> Result<u32, String> {
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_API_REPLICAS).contains(n))
        .ok_or_else(|| {
            format!("{v:?} is not a replica count; use a number from 1 to {MAX_API_REPLICAS}")
        })
}

/// Validated settings of a stack directory.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// What the API will run with (the same rules `elior serve` applies).
    pub serve: ServeConfig,
    pub domain: Domain,
    pub acme_email: Option<String>,
    /// Backups folder on the host, relative to the stack directory or absolute.
    pub backup_dir: String,
    pub backup_retention_days: u32,
    pub backup_schedule: CronExpr,
    pub cert_renew_schedule: CronExpr,
    /// The zone both schedules run in (`SCHEDULE_TIMEZONE`, default the host's).
    pub schedule_timezone: jiff::tz::TimeZone,
    pub http_port: u16,
    pub https_port: u16,
    pub api_image: ImageRef,
    pub proxy_image: ImageRef,
    /// Adds `preload` to HSTS; only on explicit request, since preloading is hard to undo.
    pub hsts_preload: bool,
    /// `MODE`: single (the default) or swarm; `deploy --swarm` overrides it.
    pub mode: Mode,
    /// `API_REPLICAS`: API tasks in swarm mode.
    pub api_replicas: u32,
    /// `POSTGRES_IMAGE`: the database service of a swarm stack.
    pub postgres_image: ImageRef,
    /// `TRUSTED_PROXIES` as the API container gets it: the file's value, or the private
    /// ranges (see [`default_trusted_proxies`]).
    pub trusted_proxies: Vec<String>,
    /// Warnings that do not stop anything, such as unknown keys.
    pub warnings: Vec<String>,
    /// Each setting's effective value and where it came from, for `config show`.
    pub settings: Vec<Setting>,
}

/// Private ranges the API believes forwarding headers from when the file names none. The
/// API sits on an `internal: true` network that only nginx shares, so any peer there is
/// our proxy.
pub fn default_trusted_proxies() -> Vec<String> {
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]
        .map(String::from)
        .to_vec()
}

/// One effective setting, for `config show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub key: &'static str,
    /// The effective value; secrets are already replaced by `[redacted]`.
    pub value: String,
    /// `file line N` or `default`.
    pub source: String,
}

impl StackConfig {
    /// The API's database file as seen from the host. The env file names it as the API
    /// container sees it; the compose file bind-mounts `DIR/data` on its folder.
    pub fn host_database_path(&self, dir: &Path) -> PathBuf {
        let file = self
            .serve
            .database_path
            .file_name()
            .unwrap_or_else(|| std::ffi::OsStr::new("elior_fitness.db"));
        dir.join("data").join(file)
    }

    /// The uploads folder as seen from the host (bind-mounted on `UPLOAD_DIR`).
    pub fn host_uploads_dir(&self, dir: &Path) -> PathBuf {
        dir.join("uploads")
    }

    /// Validates raw settings: the env file with the environment overlaid (see
    /// [`crate::config::model`] for the one place that reads them).
    pub fn from_raw(raw: &RawSettings) -> Result<StackConfig> {
        if raw.non_empty("DOMAIN").is_none() {
            bail!("DOMAIN is not set; add DOMAIN=example.com (the server's public name)");
        }
        if raw.non_empty("JWT_SECRET").is_none() {
            bail!(
                "JWT_SECRET is not set; the API would make a new one at every restart and log everyone out\n\
                 add one with `openssl rand -hex 32`, or run `elior init` to fill in missing keys"
            );
        }
        let serve = ServeConfig::from_raw(raw, None)?;
        let domain = domain::parse(&serve.domain).map_err(anyhow::Error::msg)?;

        let in_container = |key: &str, path: &Path, example: &str| -> Result<()> {
            let text = path.to_string_lossy();
            // The folder is a bind mount: over a system folder it would hide the binary
            // or the libraries it needs.
            let system = [
                "/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/proc", "/sys", "/dev",
            ]
            .iter()
            .any(|sys| path.starts_with(sys));
            let safe = path.is_absolute()
                && path.parent().is_some_and(|p| p != Path::new("/"))
                && !system
                && safe_path(&text)
                && !text.contains("/../");
            if !safe {
                let origin = raw.get_with_origin(key).map(|(_, o)| o.clone());
                let at = origin.map_or_else(String::new, |o| format!(" ({o})"));
                bail!(
                    "{key}{at}: {text:?} must be an absolute path inside the API container, below a folder that is not / or a system folder, with letters, digits, '.', '_', '-' and '/'; use {example}"
                );
            }
            Ok(())
        };
        if serve.postgres.is_none() {
            in_container("DATABASE_URL", &serve.database_path, CONTAINER_DATABASE_URL)?;
        }
        in_container("UPLOAD_DIR", &serve.upload_dir, CONTAINER_UPLOAD_DIR)?;

        let acme_email = match raw.non_empty("ACME_EMAIL") {
            None => None,
            Some((v, o)) => Some(parse_email(v).map_err(|m| invalid("ACME_EMAIL", o, m))?),
        };
        let backup_dir = match raw.non_empty("BACKUP_DIR") {
            None => DEFAULT_BACKUP_DIR.to_string(),
            Some((v, o)) => {
                if !safe_path(v) {
                    bail!(invalid(
                        "BACKUP_DIR",
                        o,
                        format!("{v:?} is not a plain path; use letters, digits, '.', '_', '-' and '/', such as ./backups")
                    ));
                }
                v.to_string()
            }
        };
        let backup_retention_days = parsed(
            raw,
            "BACKUP_RETENTION_DAYS",
            DEFAULT_BACKUP_RETENTION_DAYS,
            |v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|d| (1..=3650).contains(d))
                    .ok_or_else(|| format!("{v:?} is not a number of days between 1 and 3650"))
            },
        )?;
        let backup_schedule = parsed(
            raw,
            "BACKUP_SCHEDULE",
            DEFAULT_BACKUP_SCHEDULE.parse().expect("valid"),
            CronExpr::from_str,
        )?;
        let cert_renew_schedule = parsed(
            raw,
            "CERT_RENEW_SCHEDULE",
            DEFAULT_CERT_RENEW_SCHEDULE.parse().expect("valid"),
            CronExpr::from_str,
        )?;
        let schedule_timezone = match raw.non_empty(super::cron::TIMEZONE_KEY) {
            None => jiff::tz::TimeZone::system(),
            Some((v, o)) => super::cron::timezone(Some(v))
                .map_err(|m| invalid(super::cron::TIMEZONE_KEY, o, m))?,
        };
        let http_port = parsed(raw, "HTTP_PORT", 80, parse_port)?;
        let https_port = parsed(raw, "HTTPS_PORT", 443, parse_port)?;
        if http_port == https_port {
            bail!("HTTP_PORT and HTTPS_PORT are both {http_port}; give them different ports");
        }
        let api_image = parsed(
            raw,
            "API_IMAGE",
            ImageRef(DEFAULT_API_IMAGE.into()),
            ImageRef::from_str,
        )?;
        let proxy_image = parsed(
            raw,
            "PROXY_IMAGE",
            ImageRef(DEFAULT_PROXY_IMAGE.into()),
            ImageRef::from_str,
        )?;
        let hsts_preload = parsed(raw, "HSTS_PRELOAD", false, |v| {
            match v.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => Ok(true),
                "false" | "no" | "0" | "off" => Ok(false),
                _ => Err(format!("{v:?} is not a boolean; use true or false")),
            }
        })?;
        let mode = parsed(raw, "MODE", Mode::Single, Mode::from_str)?;
        let api_replicas = parsed(raw, "API_REPLICAS", DEFAULT_API_REPLICAS, parse_replicas)?;
        let postgres_image = parsed(
            raw,
            "POSTGRES_IMAGE",
            ImageRef(DEFAULT_POSTGRES_IMAGE.into()),
            ImageRef::from_str,
        )?;
        // Already validated by serve as addresses or CIDRs; keep the spelling the user chose.
        let trusted_proxies = match raw.non_empty("TRUSTED_PROXIES") {
            Some((v, _)) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            None => default_trusted_proxies(),
        };

        let warnings = unknown_key_warnings(raw);
        let mut config = StackConfig {
            serve,
            domain,
            acme_email,
            backup_dir,
            backup_retention_days,
            backup_schedule,
            cert_renew_schedule,
            schedule_timezone,
            http_port,
            https_port,
            api_image,
            proxy_image,
            hsts_preload,
            mode,
            api_replicas,
            postgres_image,
            trusted_proxies,
            warnings,
            settings: Vec::new(),
        };
        config.settings = effective_settings(&config, raw);
        Ok(config)
    }
}

/// Parses an optional key, or returns the default when it is absent or blank.
fn parsed<T>(
    raw: &RawSettings,
    key: &str,
    default: T,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T> {
    match raw.non_empty(key) {
        None => Ok(default),
        Some((v, o)) => parse(v).map_err(|m| invalid(key, o, m)),
    }
}

fn parse_port(v: &str) -> Result<u16, String> {
    v.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{v:?} is not a port; use a number from 1 to 65535"))
}

/// Paths that are safe to write into YAML and nginx.conf as they are.
fn safe_path(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
}

/// A deliberately plain check: one `@`, a local part without spaces or quotes, and a
/// domain that passes the hostname rules. ACME servers do their own, stricter check.
pub fn parse_email(v: &str) -> Result<String, String> {
    let fail = || format!("{v:?} is not an email address; use NAME@example.com");
    let (local, host) = v.split_once('@').ok_or_else(fail)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b));
    let host = domain::parse(host).map_err(|_| fail())?;
    if !local_ok || !host.is_public() {
        return Err(fail());
    }
    Ok(format!("{local}@{host}"))
}

fn unknown_key_warnings(raw: &RawSettings) -> Vec<String> {
    let known = || SERVE_KEYS.iter().chain(STACK_KEYS);
    raw.values
        .iter()
        .filter(|(key, _)| !known().any(|k| k == key))
        .map(|(key, (_, origin))| {
            let closest = known()
                .map(|k| (strsim::jaro_winkler(key, k), *k))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .filter(|(score, _)| *score >= 0.8);
            match closest {
                Some((_, k)) => format!("unknown key {key} ({origin}); did you mean {k}?"),
                None => format!("unknown key {key} ({origin}) is ignored"),
            }
        })
        .collect()
}

fn effective_settings(c: &StackConfig, raw: &RawSettings) -> Vec<Setting> {
    let s = &c.serve;
    let values: Vec<(&'static str, String)> = vec![
        ("ENVIRONMENT", s.environment.as_str().into()),
        ("DOMAIN", c.domain.to_string()),
        ("CORS_ORIGINS", s.cors_origins.join(",")),
        ("JWT_SECRET", "[redacted]".into()),
        ("JWT_ALGORITHM", "HS256".into()),
        (
            "ACCESS_TOKEN_EXPIRE_MINUTES",
            (s.access_token_ttl.as_secs() / 60).to_string(),
        ),
        (
            "DATABASE_URL",
            // Display redacts the password.
            match &s.postgres {
                Some(url) => url.to_string(),
                None => format!("sqlite:///{}", s.database_path.display()),
            },
        ),
        ("UPLOAD_DIR", s.upload_dir.display().to_string()),
        ("MAX_FILE_SIZE", s.max_file_size.to_string()),
        (
            "MAX_PROFILE_PHOTO_SIZE",
            s.max_profile_photo_size.to_string(),
        ),
        ("MAX_DOCUMENT_SIZE", s.max_document_size.to_string()),
        ("LOG_LEVEL", s.log_filter.clone()),
        ("BIND_ADDRESS", s.bind.to_string()),
        ("TRUSTED_PROXIES", c.trusted_proxies.join(",")),
        ("ACME_EMAIL", c.acme_email.clone().unwrap_or_default()),
        ("BACKUP_DIR", c.backup_dir.clone()),
        ("BACKUP_RETENTION_DAYS", c.backup_retention_days.to_string()),
        ("BACKUP_SCHEDULE", c.backup_schedule.as_str().into()),
        ("CERT_RENEW_SCHEDULE", c.cert_renew_schedule.as_str().into()),
        (
            "SCHEDULE_TIMEZONE",
            super::cron::zone_name(&c.schedule_timezone),
        ),
        ("HTTP_PORT", c.http_port.to_string()),
        ("HTTPS_PORT", c.https_port.to_string()),
        ("API_IMAGE", c.api_image.to_string()),
        ("PROXY_IMAGE", c.proxy_image.to_string()),
        ("HSTS_PRELOAD", c.hsts_preload.to_string()),
    ];
    // Keys other modules validate (S3 uploads, backup repository, connection limits,
    // ACME): shown as set, so `config show` lists every key that takes effect.
    let listed: Vec<&str> = values.iter().map(|(key, _)| *key).collect();
    let others: Vec<(&'static str, String)> = SERVE_KEYS
        .iter()
        .chain(STACK_KEYS)
        .filter(|key| !listed.contains(key))
        .filter_map(|key| {
            raw.non_empty(key)
                .map(|(value, _)| (*key, value.to_string()))
        })
        .collect();
    values
        .into_iter()
        .chain(others)
        .map(|(key, value)| {
            let value = if SECRET_KEYS.contains(&key) {
                "[redacted]".to_string()
            } else {
                value
            };
            let source = match raw.non_empty(key) {
                Some((_, Origin::File { line, .. })) => format!("file line {line}"),
                Some((_, Origin::Environment)) => "environment".to_string(),
                None => "default".to_string(),
            };
            Setting { key, value, source }
        })
        .collect()
}

/// A new JWT_SECRET: 32 bytes from the OS CSPRNG, in hex (`elior init`, and a restore
/// whose backup withheld the old one).
pub fn new_jwt_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The keys and values `elior init` writes, in file order, for a new stack. Render this
/// with [`envfile::quote`]; the template in `templates/env.production` adds the comments.
pub fn init_values(
    domain: &Domain,
    email: Option<&str>,
    jwt_secret: &str,
) -> Vec<(&'static str, String)> {
    let host = domain.url_host();
    let cors = if domain.is_public() {
        format!("https://{host},https://www.{host}")
    } else {
        format!("https://{host}")
    };
    vec![
        ("ENVIRONMENT", "production".into()),
        ("DOMAIN", domain.to_string()),
        ("CORS_ORIGINS", cors),
        ("JWT_SECRET", jwt_secret.into()),
        ("JWT_ALGORITHM", "HS256".into()),
        ("ACCESS_TOKEN_EXPIRE_MINUTES", "30".into()),
        ("DATABASE_URL", CONTAINER_DATABASE_URL.into()),
        ("MAX_FILE_SIZE", (10 * 1024 * 1024).to_string()),
        ("UPLOAD_DIR", CONTAINER_UPLOAD_DIR.into()),
        ("ACME_EMAIL", email.unwrap_or_default().into()),
        ("BACKUP_DIR", DEFAULT_BACKUP_DIR.into()),
        (
            "BACKUP_RETENTION_DAYS",
            DEFAULT_BACKUP_RETENTION_DAYS.to_string(),
        ),
        ("BACKUP_SCHEDULE", DEFAULT_BACKUP_SCHEDULE.into()),
        ("CERT_RENEW_SCHEDULE", DEFAULT_CERT_RENEW_SCHEDULE.into()),
        ("HTTP_PORT", "80".into()),
        ("HTTPS_PORT", "443".into()),
        ("API_IMAGE", DEFAULT_API_IMAGE.into()),
        ("PROXY_IMAGE", DEFAULT_PROXY_IMAGE.into()),
    ]
}

/// Parses env-file text of a stack for `init`'s "add missing keys" pass.
pub fn existing_keys(text: &str, path: &Path) -> Result<Vec<String>> {
    let entries = envfile::parse(text)
        .with_context(|| format!("env file {} is malformed", path.display()))?;
    Ok(entries.into_iter().map(|e| e.key).collect())
}

/// The stack directory's env file path.
pub fn env_file_path(dir: &Path) -> PathBuf {
    dir.join(ENV_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn raw(pairs: &[(&str, &str)]) -> RawSettings {
        let mut text = format!("ENVIRONMENT=production\nDOMAIN=example.com\nJWT_SECRET={SECRET}\nDATABASE_URL={CONTAINER_DATABASE_URL}\nUPLOAD_DIR={CONTAINER_UPLOAD_DIR}\n");
        for (k, v) in pairs {
            text.push_str(&format!("{k}={}\n", envfile::quote(v)));
        }
        let mut raw = RawSettings::default();
        // A key given in `pairs` replaces the base line (a real file refuses duplicates).
        let text: String = text
            .lines()
            .enumerate()
            .filter(|(i, l)| *i >= 5 || !pairs.iter().any(|(k, _)| l.starts_with(&format!("{k}="))))
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        for e in envfile::parse(&text).unwrap() {
            raw.values.insert(
                e.key,
                (
                    e.value,
                    Origin::File {
                        path: ".env.production".into(),
                        line: e.line,
                    },
                ),
            );
        }
        raw
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        format!("{:#}", StackConfig::from_raw(&raw(pairs)).unwrap_err())
    }

    #[test]
    fn defaults_and_effective_settings() {
        let c = StackConfig::from_raw(&raw(&[])).unwrap();
        assert_eq!((c.http_port, c.https_port), (80, 443));
        assert_eq!(c.api_image.as_str(), DEFAULT_API_IMAGE);
        assert_eq!(c.backup_schedule.as_str(), "0 2 * * *");
        assert!(!c.hsts_preload);
        assert!(c.warnings.is_empty());
        let secret = c.settings.iter().find(|s| s.key == "JWT_SECRET").unwrap();
        assert_eq!(
            (secret.value.as_str(), secret.source.as_str()),
            ("[redacted]", "file line 3")
        );
        let port = c.settings.iter().find(|s| s.key == "HTTP_PORT").unwrap();
        assert_eq!(port.source, "default");
        assert!(!format!("{c:?}").contains(SECRET));
    }

    #[test]
    fn config_show_redacts_the_postgresql_password() {
        let c = StackConfig::from_raw(&raw(&[(
            "DATABASE_URL",
            "postgresql://elior:pg-pass-42@db.internal:5432/elior",
        )]))
        .unwrap();
        let url = c.settings.iter().find(|s| s.key == "DATABASE_URL").unwrap();
        assert_eq!(url.value, "postgresql://elior:***@db.internal:5432/elior");
        assert!(!format!("{c:?}").contains("pg-pass-42"));
    }

    #[test]
    fn config_show_lists_other_modules_keys_and_redacts_the_s3_secret() {
        let c = StackConfig::from_raw(&raw(&[
            ("UPLOADS_URL", "s3://gym-bucket/uploads"),
            ("AWS_ACCESS_KEY_ID", "AKIDGYM"),
            ("AWS_SECRET_ACCESS_KEY", "s3-secret-value"),
            ("BACKUP_FORMAT", "repository"),
        ]))
        .unwrap();
        let shown = |key: &str| {
            let s = c.settings.iter().find(|s| s.key == key).unwrap();
            (s.value.clone(), s.source.clone())
        };
        assert_eq!(
            shown("UPLOADS_URL"),
            ("s3://gym-bucket/uploads".into(), "file line 6".into())
        );
        assert_eq!(shown("AWS_SECRET_ACCESS_KEY").0, "[redacted]");
        assert_eq!(shown("BACKUP_FORMAT").0, "repository");
        assert!(!c
            .settings
            .iter()
            .any(|s| s.value.contains("s3-secret-value")));
        // A key set nowhere is not listed twice, nor invented.
        assert!(!c.settings.iter().any(|s| s.key == "S3_ENDPOINT"));
    }

    #[test]
    fn each_key_is_checked_for_its_type() {
        for (pairs, needle) in [
            (
                vec![("HTTP_PORT", "80a")],
                "HTTP_PORT (.env.production line 6): \"80a\" is not a port",
            ),
            (vec![("HTTPS_PORT", "70000")], "HTTPS_PORT"),
            (vec![("HTTPS_PORT", "80")], "different ports"),
            (vec![("MAX_FILE_SIZE", "10MB")], "MAX_FILE_SIZE"),
            (
                vec![("MAX_PROFILE_PHOTO_SIZE", "5MB")],
                "MAX_PROFILE_PHOTO_SIZE (.env.production line 6)",
            ),
            (
                vec![("MAX_DOCUMENT_SIZE", "0")],
                "MAX_DOCUMENT_SIZE (.env.production line 6)",
            ),
            (vec![("BACKUP_SCHEDULE", "0 2 * *")], "has 4 fields"),
            (
                vec![("CERT_RENEW_SCHEDULE", "0 25 * * *")],
                "the hour field \"25\"",
            ),
            (
                vec![("SCHEDULE_TIMEZONE", "Mars/Olympus")],
                "SCHEDULE_TIMEZONE",
            ),
            (vec![("BACKUP_RETENTION_DAYS", "0")], "between 1 and 3650"),
            (vec![("ACME_EMAIL", "not-an-email")], "ACME_EMAIL"),
            (vec![("ACME_EMAIL", "a b@example.com")], "ACME_EMAIL"),
            (vec![("CORS_ORIGINS", "http://example.com")], "https"),
            (vec![("API_IMAGE", "Elior:latest")], "API_IMAGE"),
            (vec![("PROXY_IMAGE", "nginx:stable alpine")], "PROXY_IMAGE"),
            (vec![("PROXY_IMAGE", "nginx;rm")], "PROXY_IMAGE"),
            (vec![("HSTS_PRELOAD", "maybe")], "boolean"),
            (
                vec![("JWT_SECRET", "change-me-change-me-change-me-change-me")],
                "placeholder",
            ),
            (vec![("DOMAIN", "example.com;")], "DOMAIN"),
            (
                vec![("DATABASE_URL", "sqlite:///./data/x.db")],
                "inside the API container",
            ),
            (vec![("UPLOAD_DIR", "/app/up loads")], "UPLOAD_DIR"),
            (vec![("UPLOAD_DIR", "/usr/local/bin")], "system folder"),
            (vec![("DATABASE_URL", "sqlite:////x.db")], "DATABASE_URL"),
            (vec![("BACKUP_DIR", "./back ups")], "BACKUP_DIR"),
        ] {
            let e = err(&pairs);
            assert!(e.contains(needle), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn unknown_keys_warn_with_a_suggestion() {
        let c = StackConfig::from_raw(&raw(&[("HTTPS_PROT", "443"), ("ZZZ", "1")])).unwrap();
        assert_eq!(
            c.warnings,
            vec![
                "unknown key HTTPS_PROT (.env.production line 6); did you mean HTTPS_PORT?",
                "unknown key ZZZ (.env.production line 7) is ignored",
            ]
        );
    }

    #[test]
    fn image_references() {
        for ok in [
            "nginx",
            "nginx:stable-alpine",
            "elior-fitness-api:latest",
            "registry.example.com:5000/team/api:1.2.3",
            "localhost/elior_api__x:dev",
            "elior-fixture/nginx:debian",
            &format!("nginx@sha256:{}", "a".repeat(64)),
        ] {
            assert!(ok.parse::<ImageRef>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx:-x",
            "a//b",
            "nginx@sha256:12",
            "-x",
            "x y",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_accepts_the_standard_five_fields() {
        let c: CronExpr = "30  4 * * Mon-Fri".parse().unwrap();
        assert_eq!(c.as_str(), "30 4 * * Mon-Fri");
        // The 6-field form has seconds first, as `elior schedule --help` says.
        assert!("0 0 2 * * *".parse::<CronExpr>().is_ok());
        assert!("0 0 2 * * * 2027".parse::<CronExpr>().is_err());
    }
}
