//! Gathers the facts of each check from the world: the stack directory's files, the
//! Docker Engine, /proc, DNS, the stack's nginx over HTTP and HTTPS, the SQLite file and
//! the backup folder. Each check runs on its own: an error or a panic while gathering
//! becomes that check's failed finding, and the next check runs.
//!
//! It reads and never changes the stack, apart from one empty probe file created and
//! removed in the backup folder to prove it is writable.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Result};
use bollard::Docker;
use serde::Serialize;

use super::facts::*;
use super::{judge, CheckInfo, CheckReport, Finding, Report};
use crate::config::stack::StackConfig;
use crate::config::{envfile, RawSettings};
use crate::plan::render::{self, Templates, Upstream};
use crate::tls::inspect;

const NET_TIMEOUT: Duration = Duration::from_secs(8);
/// Log lines shown under a failed container.
const LOG_LINES: usize = 20;

/// Runs the selected checks against the stack in `dir`.
pub fn run(dir: &Path, templates: Templates, checks: &[&CheckInfo]) -> Report {
    let mut g = Gatherer::new(dir, templates);
    let reports = checks
        .iter()
        .map(|info| {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| g.check(info.name)));
            let (facts, findings) = match outcome {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => (
                    serde_json::Value::Null,
                    vec![crashed(info.name, &format!("{e:#}"))],
                ),
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into());
                    (serde_json::Value::Null, vec![crashed(info.name, &message)])
                }
            };
            CheckReport {
                name: info.name,
                group: info.group,
                facts,
                findings,
            }
        })
        .collect();
    Report::new(dir.display().to_string(), reports)
}

fn crashed(name: &str, message: &str) -> Finding {
    Finding::failure(
        format!("the {name} check crashed: {message}"),
        format!(
            "run `elior doctor {name}` again; if it keeps failing, report it with this message"
        ),
    )
}

type Outcome = Result<(serde_json::Value, Vec<Finding>)>;

fn done<T: Serialize>(facts: &T, findings: Vec<Finding>) -> Outcome {
    Ok((serde_json::to_value(facts)?, findings))
}

struct Gatherer {
    dir: PathBuf,
    templates: Templates,
    raw: Option<RawSettings>,
    config: Option<StackConfig>,
    env: EnvFacts,
    ctx: Context,
    runtime: tokio::runtime::Runtime,
    docker: Option<std::result::Result<Docker, String>>,
    nginx: Option<NginxFacts>,
    /// The stack's owner filter, when the directory has an id and a domain.
    owner: Option<crate::docker::Owner>,
}

impl Gatherer {
    fn new(dir: &Path, templates: Templates) -> Gatherer {
        let (env, raw, config) = env_facts(dir);
        let domain = config
            .as_ref()
            .map(|c| c.domain.as_str().to_string())
            .or_else(|| {
                raw.as_ref()
                    .and_then(|r| r.get("DOMAIN"))
                    .map(|d| d.trim().to_string())
            })
            .filter(|d| !d.is_empty());
        let owner = domain
            .as_deref()
            .and_then(|d| crate::config::model::owner_of(dir, d).ok().flatten());
        let ctx = Context {
            dir: dir.display().to_string(),
            project: owner.as_ref().map(|o| o.project.clone()),
            domain,
            production: env.production,
            now: inspect::unix_now(),
            config_error: env
                .validation_error
                .clone()
                .or_else(|| env.parse_error.clone())
                .or_else(|| (!env.exists).then(|| "no env file".to_string())),
        };
        Gatherer {
            dir: dir.to_path_buf(),
            templates,
            raw,
            config,
            env,
            ctx,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds"),
            docker: None,
            nginx: None,
            owner,
        }
    }

    fn check(&mut self, name: &str) -> Outcome {
        let ctx = self.ctx.clone();
        match name {
            "docker" => {
                let f = self.docker_facts();
                done(&f, judge::docker(&f))
            }
            "env" => done(&self.env, judge::env(&ctx, &self.env)),
            "drift" => {
                let f = self.drift_facts();
                done(&f, judge::drift(&ctx, &f))
            }
            "ports" => {
                let f = self.port_facts();
                done(&f, judge::ports(&ctx, &f))
            }
            "dns" => {
                let f = self.config.as_ref().map(dns_facts);
                done(&f, judge::dns(&ctx, f.as_ref()))
            }
            "certificate" => {
                let f = self.cert_facts();
                done(&f, judge::certificate(&ctx, f.as_ref()))
            }
            "containers" if self.is_swarm() => done(
                &(),
                vec![Finding::skipped(
                    "swarm mode: the stack runs tasks, not containers (see the swarm check)",
                )],
            ),
            "swarm" => {
                let f = self.swarm_facts();
                done(&f, judge::swarm(&ctx, f.as_ref()))
            }
            "containers" => {
                let f = self.container_facts();
                done(&f, judge::containers(&ctx, f.as_ref()))
            }
            "nginx" => {
                let f = self.nginx_facts().cloned();
                done(&f, judge::nginx(&ctx, f.as_ref()))
            }
            "database" => {
                let f = self.database_facts();
                done(&f, judge::database(&ctx, &f))
            }
            "backups" => {
                let f = self.backup_facts();
                done(&f, judge::backups(&ctx, &f))
            }
            "schedule" => {
                let f = self.schedule_facts();
                done(&f, judge::schedule(&ctx, &f))
            }
            "lock" => {
                let f = lock_facts(&self.dir);
                done(&f, judge::lock(&ctx, &f))
            }
            "clock" => {
                let f = self.nginx_facts().map(|n| ClockFacts {
                    source: n.https_url.clone(),
                    server_date: n.server_date,
                    local_now: inspect::unix_now(),
                    error: n.https_error.clone(),
                });
                done(&f, judge::clock(f.as_ref()))
            }
            other => Err(anyhow!("doctor has no check named {other}")),
        }
    }

    fn docker(&mut self) -> std::result::Result<Docker, String> {
        if self.docker.is_none() {
            let connected = self.runtime.block_on(async {
                tokio::time::timeout(NET_TIMEOUT, crate::docker::connect()).await
            });
            self.docker = Some(match connected {
                Ok(Ok(d)) => Ok(d),
                Ok(Err(e)) => Err(e.to_string().lines().next().unwrap_or_default().to_string()),
                Err(_) => Err("the engine did not answer within 8s".into()),
            });
        }
        self.docker.clone().expect("set above")
    }

    fn docker_facts(&mut self) -> DockerFacts {
        let docker = match self.docker() {
            Ok(d) => d,
            Err(e) => {
                return DockerFacts {
                    error: Some(e),
                    ..Default::default()
                }
            }
        };
        self.runtime.block_on(async {
            let mut f = DockerFacts::default();
            match docker.version().await {
                Ok(v) => {
                    f.version = v.version;
                    f.api_version = v.api_version;
                }
                Err(e) => f.error = Some(e.to_string()),
            }
            if let Ok(info) = docker.info().await {
                f.disk = info
                    .docker_root_dir
                    .as_deref()
                    .and_then(|p| disk(Path::new(p)));
                f.root_dir = info.docker_root_dir;
            }
            f
        })
    }

    fn drift_facts(&self) -> DriftFacts {
        let Some(config) = &self.config else {
            return DriftFacts {
                error: Some("the settings are not valid".into()),
                ..Default::default()
            };
        };
        match render::render_stack(config, &self.templates, &Upstream::service(config)) {
            Err(e) => DriftFacts {
                error: Some(format!("{e:#}")),
                ..Default::default()
            },
            Ok(files) => DriftFacts {
                files: files
                    .iter()
                    .map(|file| {
                        let state = match std::fs::read_to_string(self.dir.join(file.path)) {
                            Ok(text) if text == file.contents => "same",
                            Ok(_) => "differs",
                            Err(_) => "missing",
                        };
                        (file.path.to_string(), state.to_string())
                    })
                    .collect(),
                error: None,
            },
        }
    }

    /// The ports from the settings, or from the raw file, or the defaults.
    fn ports(&self) -> (u16, u16) {
        if let Some(c) = &self.config {
            return (c.http_port, c.https_port);
        }
        let raw = |key: &str, default: u16| {
            self.raw
                .as_ref()
                .and_then(|r| r.get(key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        (raw("HTTP_PORT", 80), raw("HTTPS_PORT", 443))
    }

    fn is_swarm(&self) -> bool {
        self.config
            .as_ref()
            .is_some_and(|c| c.mode == crate::config::stack::Mode::Swarm)
    }

    /// `None` for a single-host stack.
    fn swarm_facts(&mut self) -> Option<SwarmFacts> {
        if !self.is_swarm() {
            return None;
        }
        let owner = self.owner.clone();
        let needs_db_node = self.raw.as_ref().is_none_or(|r| {
            crate::deploy::swarm::database_of(r) == crate::deploy::swarm::Database::Service
        });
        let mut f = SwarmFacts {
            needs_db_node,
            ..Default::default()
        };
        let docker = match self.docker() {
            Ok(d) => d,
            Err(e) => {
                f.error = Some(e);
                return Some(f);
            }
        };
        self.runtime.block_on(async {
            use crate::plan::swarm::{SwarmState, DB_NODE_LABEL};
            let observed = match crate::docker::swarm::observe_swarm(&docker).await {
                Ok(o) => o,
                Err(e) => {
                    f.error = Some(format!("{e:#}"));
                    return;
                }
            };
            f.hostname = observed.hostname.clone();
            f.state = match &observed.swarm {
                SwarmState::Manager => "manager".into(),
                SwarmState::Worker => "worker".into(),
                SwarmState::Inactive => "inactive".into(),
                SwarmState::Other(s) => s.clone(),
            };
            f.db_node_labelled = observed
                .nodes
                .iter()
                .any(|n| n.labels.get(DB_NODE_LABEL).map(String::as_str) == Some("true"));
            let (Some(owner), SwarmState::Manager) = (owner, observed.swarm) else {
                return;
            };
            let (services, tasks) = match (
                crate::docker::swarm::services(&docker, &owner).await,
                crate::docker::swarm::tasks(&docker, &owner).await,
            ) {
                (Ok(s), Ok(t)) => (s, t),
                (Err(e), _) | (_, Err(e)) => {
                    f.error = Some(format!("{e:#}"));
                    return;
                }
            };
            for service in services {
                let Some(spec) = service.spec else { continue };
                let role = crate::docker::swarm::spec::role(&spec);
                let wanted = crate::docker::swarm::spec::wanted(&spec);
                let mine: Vec<_> = tasks.iter().filter(|t| t.service == role).collect();
                f.services.push(SwarmServiceFacts {
                    name: spec.name.unwrap_or_default(),
                    wanted,
                    ready: mine.iter().filter(|t| t.is_ready()).count(),
                    problems: mine
                        .iter()
                        .filter(|t| {
                            t.desired == "running"
                                && (!t.error.is_empty()
                                    || !(t.health.is_empty() || t.health == "healthy"))
                        })
                        .map(|t| {
                            let why = if t.error.is_empty() {
                                &t.health
                            } else {
                                &t.error
                            };
                            format!("{} on {}: {why}", t.task, t.node)
                        })
                        .collect(),
                    role,
                });
            }
        });
        Some(f)
    }

    fn project(&self) -> Option<String> {
        self.owner.as_ref().map(|o| o.project.clone())
    }

    /// Public ports of the stack's running nginx container.
    fn nginx_published_ports(&mut self) -> Vec<u16> {
        let (Some(owner), Ok(docker)) = (self.owner.clone(), self.docker()) else {
            return Vec::new();
        };
        let containers = self
            .runtime
            .block_on(crate::docker::stack_containers(&docker, &owner))
            .unwrap_or_default();
        containers
            .iter()
            .filter(|c| service_of(c) == crate::plan::containers::PROXY_SERVICE)
            .flat_map(|c| c.ports.clone().unwrap_or_default())
            .filter_map(|p| p.public_port)
            .collect()
    }

    fn port_facts(&mut self) -> Vec<PortFacts> {
        let (http, https) = self.ports();
        let published = self.nginx_published_ports();
        [("HTTP_PORT", http), ("HTTPS_PORT", https)]
            .into_iter()
            .map(|(key, port)| {
                let (holders, error) = match super::procfs::listeners(port) {
                    Ok(h) => (h, None),
                    Err(e) => (Vec::new(), Some(e.to_string())),
                };
                PortFacts {
                    key,
                    port,
                    holders: holders
                        .into_iter()
                        .filter(|h| h.pid != std::process::id())
                        .collect(),
                    published_by_our_nginx: published.contains(&port),
                    error,
                }
            })
            .collect()
    }

    fn cert_facts(&mut self) -> Option<CertFacts> {
        let config = self.config.as_ref()?;
        let domain = config.domain.as_str().to_string();
        let https_port = config.https_port;
        let paths = crate::tls::files::StackPaths::new(&self.dir);
        let (cert_path, key_path) = (paths.cert(), paths.key());
        let mut f = CertFacts {
            cert_path: cert_path.display().to_string(),
            key_path: key_path.display().to_string(),
            cert_present: cert_path.exists(),
            key_present: key_path.exists(),
            ..Default::default()
        };
        if !f.cert_present || !f.key_present {
            return Some(f);
        }
        let chain = std::fs::read(&cert_path)
            .map_err(anyhow::Error::from)
            .and_then(|pem| inspect::parse_chain(&pem, &f.cert_path));
        let chain = match chain {
            Ok(c) => c,
            Err(e) => {
                f.cert_error = Some(format!("{e:#}"));
                return Some(f);
            }
        };
        f.chain_len = chain.len();
        let info = match inspect::describe(&chain[0]) {
            Ok(i) => i,
            Err(e) => {
                f.cert_error = Some(format!("{e:#}"));
                return Some(f);
            }
        };
        match std::fs::read(&key_path)
            .map_err(anyhow::Error::from)
            .and_then(|pem| inspect::parse_key(&pem, &f.key_path))
            .and_then(|key| inspect::key_matches(&chain[0], &key))
        {
            Ok(m) => f.key_matches = Some(m),
            Err(e) => f.key_error = Some(format!("{e:#}")),
        }
        // ACME_CA_FILE as `elior cert` reads it (the environment wins over the file),
        // trusted beside the system roots; a file that cannot be used is a finding, not
        // a silent fall back to the system roots alone.
        let mut roots = inspect::system_roots();
        match crate::tls::settings::CertSettings::load(&self.dir, false) {
            Ok(settings) => {
                if let Some(path) = settings.ca_file {
                    f.ca_file = Some(path.display().to_string());
                    match inspect::load_roots(&path) {
                        Ok(extra) => roots.roots.extend(extra.roots),
                        Err(e) => f.ca_file_error = Some(format!("{e:#}")),
                    }
                }
            }
            Err(e) => f.ca_file_error = Some(one_line(&e)),
        }
        f.chain_error = Some(
            inspect::verify_chain(&chain, roots, &domain)
                .err()
                .map(|e| format!("{e:#}")),
        );
        let current = crate::tls::issue::facts(&info, std::slice::from_ref(&domain));
        f.renewal = Some(crate::plan::certs::renewal(
            Some(&current),
            self.ctx.now,
            None,
            0.0,
            false,
        ));
        let addr = SocketAddr::from(([127, 0, 0, 1], https_port));
        match self
            .runtime
            .block_on(crate::tls::served::served_chain(addr, &domain, NET_TIMEOUT))
        {
            Ok(served) => match served.first().map(inspect::describe) {
                Some(Ok(s)) => f.served_serial = Some(s.serial),
                Some(Err(e)) => f.served_error = Some(format!("{e:#}")),
                None => f.served_error = Some("no certificate served".into()),
            },
            Err(e) => f.served_error = Some(format!("{e:#}")),
        }
        f.info = Some(info);
        Some(f)
    }

    fn container_facts(&mut self) -> Option<ContainersFacts> {
        let project = self.project()?;
        let owner = self.owner.clone()?;
        self.config.as_ref()?;
        let mut f = ContainersFacts {
            project: project.clone(),
            expected: vec![
                crate::plan::containers::API_SERVICE.to_string(),
                crate::plan::containers::PROXY_SERVICE.to_string(),
            ],
            ..Default::default()
        };
        let docker = match self.docker() {
            Ok(d) => d,
            Err(e) => {
                f.error = Some(e);
                return Some(f);
            }
        };
        let file_secret = self
            .raw
            .as_ref()
            .and_then(|r| r.get("JWT_SECRET"))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        self.runtime.block_on(async {
            let list = match crate::docker::stack_containers(&docker, &owner).await {
                Ok(l) => l,
                Err(e) => {
                    f.error = Some(format!("{e:#}"));
                    return;
                }
            };
            for summary in list {
                let name = crate::docker::summary_name(&summary);
                let Ok(inspect) = docker
                    .inspect_container(
                        &name,
                        None::<bollard::query_parameters::InspectContainerOptions>,
                    )
                    .await
                else {
                    continue;
                };
                let state = inspect.state.clone().unwrap_or_default();
                let mut c = ContainerFacts {
                    service: service_of(&summary),
                    state: state
                        .status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    health: state
                        .health
                        .as_ref()
                        .and_then(|h| h.status)
                        .map(|s| s.to_string())
                        .filter(|s| !s.is_empty() && s != "none"),
                    restart_count: inspect.restart_count.unwrap_or(0),
                    exit_code: state.exit_code,
                    oom_killed: state.oom_killed.unwrap_or(false),
                    last_logs: Vec::new(),
                    jwt_secret_matches_env_file: None,
                    name,
                };
                if c.service == crate::plan::containers::API_SERVICE {
                    // Compared here and only the verdict kept: facts never hold a secret.
                    let running = inspect
                        .config
                        .as_ref()
                        .and_then(|config| config.env.as_ref())
                        .and_then(|env| {
                            env.iter()
                                .find_map(|pair| pair.strip_prefix("JWT_SECRET="))
                                .map(str::trim)
                        });
                    c.jwt_secret_matches_env_file = match (&file_secret, running) {
                        (Some(file), Some(running)) => Some(file == running),
                        _ => None,
                    };
                }
                if c.state != "running" || c.health.as_deref() == Some("unhealthy") {
                    let logs = crate::docker::health::last_logs(&docker, &c.name, LOG_LINES)
                        .await
                        .unwrap_or_else(|e| format!("(could not read its logs: {e:#})"));
                    c.last_logs = logs.lines().map(|l| l.trim_end().to_string()).collect();
                }
                f.containers.push(c);
            }
        });
        Some(f)
    }

    fn nginx_facts(&mut self) -> Option<&NginxFacts> {
        if self.nginx.is_none() {
            let config = self.config.as_ref()?;
            let domain = config.domain.as_str().to_string();
            let (http_port, https_port) = (config.http_port, config.https_port);
            let cert = crate::tls::files::StackPaths::new(&self.dir).cert();
            let local = IpAddr::from([127, 0, 0, 1]);
            let https_url = format!("https://{domain}:{https_port}/health");
            let http = crate::probe::timing::Url {
                https: false,
                host: domain.clone(),
                port: http_port,
                path: "/".into(),
            };
            let mut f = NginxFacts {
                https_url: https_url.clone(),
                http_url: http.display(),
                ..Default::default()
            };
            self.runtime.block_on(async {
                let answer = match crate::probe::https::PinnedClient::from_pem_file(&cert) {
                    Ok(client) => {
                        client
                            .get(
                                SocketAddr::new(local, https_port),
                                &domain,
                                "/health",
                                NET_TIMEOUT,
                            )
                            .await
                    }
                    Err(e) => Err(e),
                };
                match answer {
                    Ok(r) => {
                        f.https_status = Some(r.status);
                        f.server_date = r.header("date").and_then(parse_http_date);
                        f.database_status = serde_json::from_str::<serde_json::Value>(&r.body)
                            .ok()
                            .and_then(|v| v["database"]["status"].as_str().map(String::from));
                    }
                    Err(e) => f.https_error = Some(one_line(&e)),
                }
                let trust = crate::probe::timing::Trust::Insecure;
                match crate::probe::timing::fetch(&http, Some(local), &trust, NET_TIMEOUT).await {
                    Ok(r) => {
                        f.http_status = Some(r.status);
                        f.http_location = r.header("location").map(String::from);
                        if f.server_date.is_none() {
                            f.server_date = r.header("date").and_then(parse_http_date);
                        }
                    }
                    Err(e) => f.http_error = Some(one_line(&e)),
                }
            });
            self.nginx = Some(f);
        }
        self.nginx.as_ref()
    }

    fn database_path(&self) -> PathBuf {
        match &self.config {
            Some(c) => c.host_database_path(&self.dir),
            // The default file name, where the compose file mounts the data folder.
            None => self.dir.join("data").join("elior_fitness.db"),
        }
    }

    fn database_facts(&self) -> DatabaseFacts {
        let path = self.database_path();
        let mut f = DatabaseFacts {
            path: path.display().to_string(),
            exists: path.is_file(),
            ..Default::default()
        };
        f.disk = path.parent().and_then(disk);
        if !f.exists {
            return f;
        }
        f.size_bytes = std::fs::metadata(&path).ok().map(|m| m.len());
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        );
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                f.open_error = Some(e.to_string());
                return f;
            }
        };
        let _ = conn.busy_timeout(Duration::from_secs(5));
        match conn.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0)) {
            Ok(mode) => f.journal_mode = Some(mode.to_ascii_lowercase()),
            Err(e) => {
                f.quick_check = Some(e.to_string());
                return f;
            }
        }
        let check = conn.prepare("PRAGMA quick_check").and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        });
        f.quick_check = Some(match check {
            Ok(lines) => lines.join("; "),
            Err(e) => e.to_string(),
        });
        f
    }

    fn backup_facts(&self) -> BackupFacts {
        let raw = self.raw.clone().unwrap_or_default();
        let (dir, offsite) =
            match crate::backup::settings::BackupSettings::from_raw(&self.dir, &raw) {
                Ok(s) => (s.backup_dir, s.offsite),
                Err(e) => {
                    return BackupFacts {
                        error: Some(format!("{e:#}")),
                        exists: true,
                        ..Default::default()
                    }
                }
            };
        let mut f = BackupFacts {
            dir: dir.display().to_string(),
            exists: dir.is_dir(),
            live_database_bytes: std::fs::metadata(self.database_path())
                .ok()
                .map(|m| m.len()),
            offsite: offsite.as_ref().map(offsite_facts),
            ..Default::default()
        };
        if !f.exists {
            return f;
        }
        f.mode = std::fs::metadata(&dir)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777);
        let probe = dir.join(format!(".elior-doctor-{}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
        {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
            }
            Err(e) => f.writable_error = Some(e.to_string()),
        }
        let sets = match crate::backup::scan(&dir) {
            Ok(s) => s,
            Err(e) => {
                f.error = Some(one_line(&e));
                return f;
            }
        };
        f.complete_backups = sets.iter().filter(|s| s.has_manifest()).count();
        if let Some(latest) = sets.iter().rev().find(|s| s.has_manifest()) {
            let (verification, _) = crate::backup::verify(&dir, latest, None);
            f.latest_problems = verification.problems;
            f.latest_id = Some(latest.id.clone());
            f.latest_taken_at = latest
                .taken_at
                .and_local_timezone(chrono::Local)
                .earliest()
                .map(|t| t.timestamp());
            f.latest_database_bytes = latest
                .parts
                .get(&crate::backup::names::Part::Database)
                .copied();
        }
        f
    }

    fn schedule_facts(&self) -> ScheduleFacts {
        let unit_path =
            Path::new("/etc/systemd/system").join(crate::schedule::unit::name(&self.dir));
        let mut f = ScheduleFacts {
            unit_installed: unit_path.exists(),
            unit_path: unit_path.display().to_string(),
            running_pids: scheduler_pids(&self.dir),
            ..Default::default()
        };
        let state = match crate::schedule::state::read(&self.dir) {
            Ok(s) => s,
            Err(e) => {
                f.state_error = Some(one_line(&e));
                Default::default()
            }
        };
        let backup_schedule = self
            .config
            .as_ref()
            .map(|c| c.backup_schedule.as_str().to_string())
            .unwrap_or_else(|| crate::config::stack::DEFAULT_BACKUP_SCHEDULE.to_string());
        // The jobs `elior schedule` runs: backups always, renewal when it has a schedule.
        let renew_schedule = self
            .raw
            .as_ref()
            .and_then(|r| r.get("CERT_RENEW_SCHEDULE"))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from);
        let jobs = [
            ("backup", Some(backup_schedule)),
            ("cert-renew", renew_schedule),
        ];
        f.timezone = self
            .raw
            .as_ref()
            .and_then(|r| r.get(crate::config::cron::TIMEZONE_KEY))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from);
        for (name, schedule) in jobs {
            let Some(schedule) = schedule else { continue };
            let job = state.jobs.get(name).cloned().unwrap_or_default();
            f.jobs.push(JobFacts {
                name: name.into(),
                schedule,
                last_success_at: job.last_success_at,
                last_result: job.last_result,
                last_error: job.last_error,
            });
        }
        f
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn service_of(summary: &bollard::models::ContainerSummary) -> String {
    summary
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::docker::LABEL_SERVICE))
        .cloned()
        .unwrap_or_default()
}

fn parse_http_date(value: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|t| t.timestamp())
}

/// Space on the filesystem holding `path`.
pub fn disk(path: &Path) -> Option<Disk> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(Disk {
        total_bytes: s.f_blocks * s.f_frsize,
        free_bytes: s.f_bavail * s.f_frsize,
    })
}

/// Reads and validates the env file, describing it without keeping the secret.
fn env_facts(dir: &Path) -> (EnvFacts, Option<RawSettings>, Option<StackConfig>) {
    let path = crate::config::stack::env_file_path(dir);
    let mut f = EnvFacts {
        path: path.display().to_string(),
        exists: path.exists(),
        ..Default::default()
    };
    if !f.exists {
        return (f, None, None);
    }
    f.mode = std::fs::metadata(&path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777);
    // The settings every command gets (environment over file), through the one loader.
    let raw = match crate::config::model::settings(dir) {
        Ok(r) => r,
        Err(e) => {
            let io = e
                .chain()
                .any(|c| c.downcast_ref::<std::io::Error>().is_some());
            if io {
                f.read_error = Some(format!("{e:#}"));
            } else {
                // The syntax error itself ("line 3: ..."), as `envfile` words it.
                f.parse_error = Some(
                    e.chain()
                        .find_map(|c| c.downcast_ref::<envfile::SyntaxError>())
                        .map_or_else(|| format!("{e:#}"), |s| s.to_string()),
                );
            }
            return (f, None, None);
        }
    };
    f.production = raw.get("ENVIRONMENT").is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "production" | "prod"
        )
    });
    if let Some(secret) = raw
        .get("JWT_SECRET")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        f.jwt_secret_bytes = Some(secret.len());
        f.jwt_secret_placeholder = crate::config::is_placeholder_secret(secret);
    }
    f.cors_origins = raw
        .get("CORS_ORIGINS")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let config = match StackConfig::from_raw(&raw) {
        Ok(c) => {
            f.warnings = c.warnings.clone();
            Some(c)
        }
        Err(e) => {
            f.validation_error = Some(format!("{e:#}"));
            None
        }
    };
    (f, Some(raw), config)
}

/// Known CDN ranges (published by the providers); a DOMAIN inside one is proxied.
const CDN_RANGES: &[(&str, &[&str])] = &[
    (
        "Cloudflare",
        &[
            "173.245.48.0/20",
            "103.21.244.0/22",
            "103.22.200.0/22",
            "103.31.4.0/22",
            "141.101.64.0/18",
            "108.162.192.0/18",
            "190.93.240.0/20",
            "188.114.96.0/20",
            "197.234.240.0/22",
            "198.41.128.0/17",
            "162.158.0.0/15",
            "104.16.0.0/13",
            "104.24.0.0/14",
            "172.64.0.0/13",
            "131.0.72.0/22",
            "2400:cb00::/32",
            "2606:4700::/32",
            "2803:f800::/32",
            "2405:b500::/32",
            "2405:8100::/32",
            "2a06:98c0::/29",
            "2c0f:f248::/32",
        ],
    ),
    (
        "Fastly",
        &["151.101.0.0/16", "199.232.0.0/16", "2a04:4e40::/32"],
    ),
    (
        "CloudFront",
        &[
            "13.32.0.0/15",
            "13.224.0.0/14",
            "18.64.0.0/14",
            "54.230.0.0/16",
            "54.239.128.0/18",
            "99.84.0.0/16",
            "205.251.192.0/19",
        ],
    ),
];

pub fn cdn_of(ip: IpAddr) -> Option<&'static str> {
    CDN_RANGES.iter().find_map(|(name, ranges)| {
        ranges
            .iter()
            .filter_map(|r| r.parse::<crate::config::IpNet>().ok())
            .any(|net| net.contains(ip))
            .then_some(*name)
    })
}

fn dns_facts(config: &StackConfig) -> DnsFacts {
    let domain = config.domain.as_str().to_string();
    let mut f = DnsFacts {
        domain: domain.clone(),
        not_public: !config.domain.is_public(),
        ..Default::default()
    };
    if f.not_public {
        return f;
    }
    let addrs = match crate::tls::resolve::lookup(&domain, 443) {
        Ok(a) => a,
        Err(e) => {
            f.error = Some(one_line(&e));
            return f;
        }
    };
    let mut ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
    ips.dedup();
    let local = local_addresses();
    f.addresses = ips.iter().map(IpAddr::to_string).collect();
    f.local_addresses = local
        .iter()
        .chain(ips.iter().filter(|ip| ip.is_loopback()))
        .map(IpAddr::to_string)
        .collect();
    f.cdn = ips
        .iter()
        .filter_map(|ip| cdn_of(*ip).map(|c| (ip.to_string(), c.to_string())))
        .collect();
    f
}

/// This host's addresses: IPv4 from the LOCAL routes in /proc/net/fib_trie, IPv6 from
/// /proc/net/if_inet6.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut last: Option<&str> = None;
        for line in trie.lines() {
            let t = line.trim();
            if let Some(addr) = t.strip_prefix("|-- ") {
                last = Some(addr);
            } else if t.starts_with("/32 host LOCAL") {
                if let Some(ip) = last.and_then(|a| a.parse::<IpAddr>().ok()) {
                    if !out.contains(&ip) {
                        out.push(ip);
                    }
                }
            }
        }
    }
    if let Ok(v6) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in v6.lines() {
            let Some(hex) = line.split_whitespace().next() else {
                continue;
            };
            if let Ok(bits) = u128::from_str_radix(hex, 16) {
                out.push(IpAddr::from(std::net::Ipv6Addr::from(bits)));
            }
        }
    }
    out
}

fn lock_facts(dir: &Path) -> LockFacts {
    let path = dir.join(crate::lock::STATE_DIR).join("deploy.lock");
    let mut f = LockFacts {
        path: path.display().to_string(),
        exists: path.exists(),
        this_host: crate::lock::hostname(),
        ..Default::default()
    };
    if !f.exists {
        return f;
    }
    f.modified_at = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    f.holder = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<crate::lock::Holder>(&t).ok());
    f.unreadable = f.holder.is_none();
    f.pid_alive = f
        .holder
        .as_ref()
        .map(|h| Path::new("/proc").join(h.pid.to_string()).exists());
    f
}

/// PIDs of `elior schedule` processes whose stack directory is `dir`.
fn scheduler_pids(dir: &Path) -> Vec<u32> {
    let want = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut pids = Vec::new();
    for pid in super::procfs::pids().unwrap_or_default() {
        let args = super::procfs::cmdline(pid);
        let is_elior = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .is_some_and(|n| n.to_string_lossy().starts_with("elior"));
        if !is_elior || args.get(1).map(String::as_str) != Some("schedule") {
            continue;
        }
        if args.iter().any(|a| a == "install") {
            continue;
        }
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        let stack = args
            .iter()
            .position(|a| a == "--dir")
            .and_then(|i| args.get(i + 1))
            .map(|d| cwd.join(d))
            .or_else(|| {
                args.iter()
                    .find_map(|a| a.strip_prefix("--dir="))
                    .map(|d| cwd.join(d))
            })
            .unwrap_or(cwd);
        if std::fs::canonicalize(&stack).is_ok_and(|s| s == want) {
            pids.push(pid);
        }
    }
    pids
}

/// The newest complete backup in the offsite bucket (issue 17).
fn offsite_facts(offsite: &crate::files::settings::S3Settings) -> super::facts::OffsiteFacts {
    let mut f = super::facts::OffsiteFacts {
        url: offsite.url(),
        ..Default::default()
    };
    match crate::backup::offsite::list(offsite) {
        Err(e) => f.error = Some(one_line(&e)),
        Ok((backups, _, _)) => {
            let complete: Vec<_> = backups.iter().filter(|b| b.complete).collect();
            f.complete_backups = complete.len();
            if let Some(latest) = complete.last() {
                f.latest_id = Some(latest.id.clone());
                f.latest_taken_at = crate::backup::names::parse_id(&latest.id)
                    .and_then(|t| t.and_local_timezone(chrono::Local).earliest())
                    .map(|t| t.timestamp());
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_that_fails_to_gather_is_a_finding_and_the_run_goes_on() {
        let dir = std::env::temp_dir().join(format!("elior-doctor-unit-{}", std::process::id()));
        let bogus = CheckInfo {
            name: "bogus",
            group: "Host",
            about: "",
        };
        let lock = super::super::check_info("lock").unwrap();
        let report = run(&dir, Templates::embedded(), &[&bogus, lock]);
        assert_eq!(report.checks.len(), 2);
        let crashed = &report.checks[0].findings[0];
        assert_eq!(crashed.status, super::super::Status::Failure);
        assert!(crashed.finding.starts_with("the bogus check crashed"));
        assert_eq!(report.checks[1].status(), super::super::Status::Ok);
    }

    #[test]
    fn knows_cdn_ranges() {
        assert_eq!(cdn_of("104.16.1.1".parse().unwrap()), Some("Cloudflare"));
        assert_eq!(cdn_of("151.101.1.1".parse().unwrap()), Some("Fastly"));
        assert_eq!(cdn_of("203.0.113.5".parse().unwrap()), None);
    }

    #[test]
    fn loopback_is_a_local_address() {
        assert!(local_addresses().contains(&"127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn parses_http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
    }
}
