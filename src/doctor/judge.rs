//! Turns gathered facts into findings: ok, warning or failure, a one-line finding and
//! the command that fixes it. Pure: no I/O and no clock (the time is in the facts), so
//! each rule below has a unit test.

use super::facts::*;
use super::Finding;
use crate::backup::human_bytes;

/// Free disk below either bound warns (issue 7).
pub const LOW_DISK_FRACTION: f64 = 0.10;
pub const LOW_DISK_BYTES: u64 = 1 << 30;
/// Free disk below this fraction fails: SQLite and uploads start failing with ENOSPC,
/// and the API answers 500 to writes (issue 14).
pub const FULL_DISK_FRACTION: f64 = 0.05;
/// A backup older than this fails: a daily job missed a run.
pub const BACKUP_MAX_AGE_SECS: i64 = 26 * 3600;
/// How late a scheduled job may be before its missing success counts.
pub const SCHEDULE_GRACE_SECS: i64 = 3600;
/// Clock skew that warns, and that fails (tokens are checked against the clock).
pub const SKEW_WARN_SECS: i64 = 5;
pub const SKEW_FAIL_SECS: i64 = 120;

const NEEDS_SETTINGS: &str = "needs valid settings (see the env check)";

fn env_path(ctx: &Context) -> String {
    format!("{}/.env.production", ctx.dir)
}

fn project_arg(ctx: &Context) -> String {
    ctx.project.clone().unwrap_or_else(|| "PROJECT".into())
}

fn domain_arg(ctx: &Context) -> String {
    ctx.domain.clone().unwrap_or_else(|| "DOMAIN".into())
}

/// `3d 4h`, `5h 2m`, `40s`: an age for a person.
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn disk_finding(what: &str, path: &str, disk: &Disk, fix: &str) -> Finding {
    let free = disk.free_bytes;
    let used_pct = if disk.total_bytes == 0 {
        0.0
    } else {
        100.0 * (disk.total_bytes - free.min(disk.total_bytes)) as f64 / disk.total_bytes as f64
    };
    let line = format!(
        "{what} {path}: {} free of {} ({used_pct:.0}% used)",
        human_bytes(free),
        human_bytes(disk.total_bytes)
    );
    if free == 0 || (free as f64) < disk.total_bytes as f64 * FULL_DISK_FRACTION {
        let full = if free == 0 { "full" } else { "nearly full" };
        Finding::failure(format!("{full} disk: {line}"), fix)
    } else if (free as f64) < disk.total_bytes as f64 * LOW_DISK_FRACTION || free < LOW_DISK_BYTES {
        Finding::warning(format!("low disk: {line}"), fix)
    } else {
        Finding::ok(line)
    }
}

pub fn docker(f: &DockerFacts) -> Vec<Finding> {
    if let Some(e) = &f.error {
        return vec![Finding::failure(
            format!("the Docker Engine is not reachable: {e}"),
            "start it with `systemctl start docker`, and check that /var/run/docker.sock (or DOCKER_HOST) is readable",
        )];
    }
    let mut out = vec![Finding::ok(format!(
        "engine {} (API {}) reachable",
        f.version.as_deref().unwrap_or("?"),
        f.api_version.as_deref().unwrap_or("?")
    ))];
    if let (Some(root), Some(disk)) = (&f.root_dir, &f.disk) {
        out.push(disk_finding(
            "docker root",
            root,
            disk,
            "see what uses it with `docker system df`; `docker image prune` removes only dangling images (never start with `docker system prune`: it also removes stopped containers)",
        ));
    }
    out
}

pub fn env(ctx: &Context, f: &EnvFacts) -> Vec<Finding> {
    let path = &f.path;
    if !f.exists {
        return vec![Finding::failure(
            format!("{path} does not exist"),
            format!("elior init {} --dir {}", domain_arg(ctx), ctx.dir),
        )];
    }
    if let Some(e) = &f.read_error {
        return vec![Finding::failure(
            format!("{path} cannot be read: {e}"),
            format!("check its owner and mode: ls -l {path}"),
        )];
    }
    if let Some(e) = &f.parse_error {
        return vec![Finding::failure(
            format!("{path} does not parse: {e}"),
            format!("fix that line in {path}; each line is KEY=VALUE or a # comment"),
        )];
    }
    let mut out = Vec::new();
    let secret_fix = format!(
        "sed -i \"s/^JWT_SECRET=.*/JWT_SECRET=$(openssl rand -hex 32)/\" {path}  (logs everyone out)"
    );
    let mut secret_reported = false;
    match f.jwt_secret_bytes {
        None => {}
        Some(_) if f.jwt_secret_placeholder => {
            secret_reported = true;
            out.push(Finding::failure(
                "JWT_SECRET is a placeholder from an example file",
                secret_fix.clone(),
            ));
        }
        Some(n) if n < crate::config::MIN_SECRET_LEN => {
            secret_reported = true;
            out.push(Finding::failure(
                format!(
                    "JWT_SECRET is {n} bytes; it needs at least {}",
                    crate::config::MIN_SECRET_LEN
                ),
                secret_fix.clone(),
            ));
        }
        Some(_) => {}
    }
    if f.production {
        let plain: Vec<&String> = f
            .cors_origins
            .iter()
            .filter(|o| !o.starts_with("https://"))
            .collect();
        if !plain.is_empty() {
            out.push(Finding::failure(
                format!(
                    "CORS_ORIGINS allows {} in production; only https origins are safe",
                    plain
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                format!("set CORS_ORIGINS=https://{} in {path}", domain_arg(ctx)),
            ));
        }
    }
    if let Some(e) = &f.validation_error {
        // Validation refuses what the findings above already name; say it once.
        let already_named = (secret_reported && e.starts_with("JWT_SECRET"))
            || (e.starts_with("CORS_ORIGINS") && !out.is_empty());
        if !already_named {
            out.push(Finding::failure(
                format!("invalid settings: {}", e.lines().next().unwrap_or(e)),
                e.lines().nth(1).map(str::to_string).unwrap_or_else(|| {
                    format!(
                        "correct the value in {path}, then run `elior render --dir {}`",
                        ctx.dir
                    )
                }),
            ));
        }
    }
    match f.mode {
        Some(mode) if mode & 0o077 != 0 => out.push(Finding::failure(
            format!("{path} is mode {mode:04o}: other users can read JWT_SECRET"),
            format!("chmod 600 {path}"),
        )),
        _ => {}
    }
    for w in &f.warnings {
        out.push(Finding::warning(
            w.lines().next().unwrap_or(w).to_string(),
            w.lines()
                .nth(1)
                .map(str::to_string)
                .unwrap_or_else(|| format!("edit {path}")),
        ));
    }
    if out.is_empty() {
        out.push(Finding::ok(format!(
            "{path} is valid ({}), mode 0600, JWT_SECRET {} bytes",
            if f.production {
                "production"
            } else {
                "development"
            },
            f.jwt_secret_bytes.unwrap_or(0)
        )));
    }
    out
}

pub fn drift(ctx: &Context, f: &DriftFacts) -> Vec<Finding> {
    if let Some(e) = &f.error {
        return vec![Finding::skipped(format!("{NEEDS_SETTINGS}: {e}"))];
    }
    let changed: Vec<String> = f
        .files
        .iter()
        .filter(|(_, state)| state != "same")
        .map(|(file, state)| format!("{file} ({state})"))
        .collect();
    if changed.is_empty() {
        vec![Finding::ok(format!(
            "{} match the templates",
            f.files
                .iter()
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>()
                .join(" and ")
        ))]
    } else {
        vec![Finding::failure(
            format!("rendered files differ from the templates: {}", changed.join(", ")),
            format!(
                "see the diff with `elior render --check --dir {0}`, then `elior render --dir {0}` (move hand edits into .env.production)",
                ctx.dir
            ),
        )]
    }
}

pub fn ports(ctx: &Context, ports: &[PortFacts]) -> Vec<Finding> {
    ports
        .iter()
        .map(|p| {
            if let Some(e) = &p.error {
                return Finding::warning(
                    format!("{} {}: could not read the listeners: {e}", p.key, p.port),
                    "run doctor as root to see every process's sockets",
                );
            }
            let others: Vec<&Listener> = p
                .holders
                .iter()
                .filter(|h| !(p.published_by_our_nginx && h.name == "docker-proxy"))
                .collect();
            if let Some(first) = others.first() {
                let who = others
                    .iter()
                    .map(|h| format!("{} (pid {}: {})", h.name, h.pid, h.command))
                    .collect::<Vec<_>>()
                    .join(", ");
                let fix = match first.name.as_str() {
                    "apache2" | "nginx" | "httpd" | "caddy" | "lighttpd" | "haproxy" => format!(
                        "systemctl stop {0} && systemctl disable {0}  (or set {1} to another port in {2})",
                        if first.name == "httpd" { "httpd" } else { first.name.as_str() },
                        p.key,
                        env_path(ctx)
                    ),
                    "docker-proxy" => format!(
                        "another container publishes port {}: find it with `docker ps --filter publish={}` and stop it, or set {} to another port",
                        p.port, p.port, p.key
                    ),
                    _ => format!(
                        "stop that process (`kill {}`), or set {} to another port in {}",
                        first.pid,
                        p.key,
                        env_path(ctx)
                    ),
                };
                return Finding::failure(
                    format!("port {} ({}) is held by {who}", p.port, p.key),
                    fix,
                );
            }
            if p.published_by_our_nginx {
                Finding::ok(format!("port {} ({}) is served by the stack's nginx", p.port, p.key))
            } else {
                Finding::ok(format!("port {} ({}) is free", p.port, p.key))
            }
        })
        .collect()
}

pub fn dns(ctx: &Context, f: Option<&DnsFacts>) -> Vec<Finding> {
    let Some(f) = f else {
        return vec![Finding::skipped(NEEDS_SETTINGS)];
    };
    if f.not_public {
        return vec![Finding::ok(format!(
            "{} is an address or a local name; nothing to resolve",
            f.domain
        ))];
    }
    if let Some(e) = &f.error {
        return vec![Finding::failure(
            format!("{} does not resolve: {e}", f.domain),
            format!(
                "add an A (and AAAA) record for {} pointing at this host's public address at your DNS provider",
                f.domain
            ),
        )];
    }
    let mut out = Vec::new();
    let list = f.addresses.join(", ");
    if !f.cdn.is_empty() {
        let (addr, cdn) = &f.cdn[0];
        out.push(Finding::warning(
            format!("{} resolves to {addr}, inside {cdn}'s range: HTTP-01 challenges and client addresses go through the CDN", f.domain),
            format!("make the record DNS-only (grey cloud) while issuing certificates, and list {cdn}'s ranges in TRUSTED_PROXIES of {}", env_path(ctx)),
        ));
    }
    let local: Vec<&String> = f
        .addresses
        .iter()
        .filter(|a| f.local_addresses.contains(a))
        .collect();
    if local.is_empty() && f.cdn.is_empty() {
        out.push(Finding::warning(
            format!(
                "{} resolves to {list}, which is not an address of this host",
                f.domain
            ),
            format!(
                "point the A/AAAA record of {} at this host (ignore this if a NAT or load balancer forwards that address here)",
                f.domain
            ),
        ));
    }
    if out.is_empty() {
        out.push(Finding::ok(format!(
            "{} resolves to {list} (this host)",
            f.domain
        )));
    }
    out
}

pub fn certificate(ctx: &Context, f: Option<&CertFacts>) -> Vec<Finding> {
    let Some(f) = f else {
        return vec![Finding::skipped(NEEDS_SETTINGS)];
    };
    let domain = domain_arg(ctx);
    let renew = format!("elior cert renew --force --dir {}", ctx.dir);
    if !f.cert_present || !f.key_present {
        let missing = if !f.cert_present {
            &f.cert_path
        } else {
            &f.key_path
        };
        return vec![Finding::failure(
            format!("{missing} is missing"),
            format!("elior cert issue --dir {}  (or `elior deploy {domain}` makes a bootstrap certificate)", ctx.dir),
        )];
    }
    if let Some(e) = &f.cert_error {
        return vec![Finding::failure(
            format!("the certificate does not parse: {e}"),
            renew,
        )];
    }
    let Some(info) = &f.info else {
        return vec![Finding::failure("the certificate could not be read", renew)];
    };
    let mut out = Vec::new();
    let left = info.not_after - ctx.now;
    if left <= 0 {
        out.push(Finding::failure(
            format!(
                "the certificate expired {} ago ({})",
                human_age(-left),
                crate::tls::inspect::rfc3339(info.not_after)
            ),
            renew.clone(),
        ));
    } else if let Some(r) = f.renewal.filter(|r| r.due && !info.self_signed) {
        let why = r.reason.map(|r| r.describe()).unwrap_or("renewal is due");
        out.push(Finding::warning(
            format!("renewal is due: {why} ({} left)", human_age(left)),
            format!("elior cert renew --dir {}", ctx.dir),
        ));
    }
    if let Some(d) = &ctx.domain {
        if !info.covers(d) {
            out.push(Finding::failure(
                format!(
                    "the certificate is for {} and does not cover DOMAIN {d}",
                    info.sans.join(", ")
                ),
                renew.clone(),
            ));
        }
    }
    if let Some(e) = &f.key_error {
        out.push(Finding::failure(
            format!("the key {} is not usable: {e}", f.key_path),
            renew.clone(),
        ));
    } else if f.key_matches == Some(false) {
        out.push(Finding::failure(
            format!(
                "{} is not the key of {}: nginx will refuse to start",
                f.key_path, f.cert_path
            ),
            format!(
                "restore the key that belongs to this certificate, or issue a new pair: {renew}"
            ),
        ));
    }
    if info.self_signed {
        if ctx.production {
            out.push(Finding::warning(
                "the certificate is the self-signed bootstrap: browsers will warn",
                format!(
                    "elior cert issue --dir {}  (needs DNS pointing here and port 80 open)",
                    ctx.dir
                ),
            ));
        }
    } else if let Some(Some(e)) = &f.chain_error {
        if left > 0 {
            let trusted = match &f.ca_file {
                Some(ca) => format!("the system roots and ACME_CA_FILE {ca}"),
                None => "the system roots".to_string(),
            };
            let private_ca = match &f.ca_file {
                Some(ca) => format!(
                    "; for a private CA, {ca} must hold the root that issued it (for pebble, its /roots/0)"
                ),
                None => "; for a private CA (step-ca, pebble), set ACME_CA_FILE to its root PEM".to_string(),
            };
            out.push(Finding::failure(
                format!("the chain does not verify against {trusted}: {e}"),
                format!(
                    "install the full chain (leaf first, then intermediates) in {}, or {renew}{private_ca}",
                    f.cert_path
                ),
            ));
        }
    }
    if let Some(e) = &f.ca_file_error {
        out.push(Finding::failure(
            format!("ACME_CA_FILE cannot be used for the chain check: {e}"),
            format!(
                "point ACME_CA_FILE (in {} or the environment) at a PEM file with your private CA's root certificate(s)",
                env_path(ctx)
            ),
        ));
    }
    match (&f.served_serial, &f.served_error) {
        (Some(served), _) if *served != info.serial => out.push(Finding::failure(
            format!(
                "nginx serves a different certificate (serial {served}) than {} (serial {})",
                f.cert_path, info.serial
            ),
            format!(
                "reload nginx: docker exec {}-nginx nginx -c {}/nginx.conf -s reload",
                project_arg(ctx),
                crate::plan::render::paths::NGINX_MOUNT
            ),
        )),
        (None, Some(e)) => out.push(Finding::warning(
            format!("could not read the served certificate: {e}"),
            "see the containers and nginx checks",
        )),
        _ => {}
    }
    if out.is_empty() || out.iter().all(|f| f.status == super::Status::Warning) {
        out.insert(
            0,
            Finding::ok(format!(
                "{} for {} by {}, {} left{}",
                info.key_type,
                info.sans.join(", "),
                if info.self_signed {
                    "itself"
                } else {
                    info.issuer.as_str()
                },
                human_age(left),
                if f.served_serial.is_some() {
                    "; served by nginx"
                } else {
                    ""
                }
            )),
        );
    }
    out
}

pub fn containers(ctx: &Context, f: Option<&ContainersFacts>) -> Vec<Finding> {
    let Some(f) = f else {
        if ctx.project.is_none() && ctx.config_error.is_none() {
            // Valid settings but no `.elior/stack.json`: an earlier release's directory,
            // which owns nothing on the engine until a deploy adopts it (issue 14).
            return vec![Finding::warning(
                format!(
                    "{}/.elior/stack.json is missing: this stack has no id, so no container is its own",
                    ctx.dir
                ),
                format!(
                    "elior deploy {} --dir {} (gives it an id and adopts its containers)",
                    domain_arg(ctx),
                    ctx.dir
                ),
            )];
        }
        return vec![Finding::skipped(NEEDS_SETTINGS)];
    };
    let deploy = format!("elior deploy {} --dir {}", domain_arg(ctx), ctx.dir);
    if let Some(e) = &f.error {
        return vec![Finding::failure(
            format!("cannot list the stack's containers: {e}"),
            "see the docker check",
        )];
    }
    let mut out = Vec::new();
    for service in &f.expected {
        let found: Vec<&ContainerFacts> = f
            .containers
            .iter()
            .filter(|c| &c.service == service)
            .collect();
        if found.is_empty() {
            out.push(Finding::failure(
                format!(
                    "{service}: no container (the stack {} is not deployed)",
                    f.project
                ),
                deploy.clone(),
            ));
            continue;
        }
        for c in found {
            let mut problems = Vec::new();
            if c.state != "running" {
                problems.push(format!(
                    "is {}{}",
                    c.state,
                    c.exit_code
                        .map(|code| format!(" (exit code {code})"))
                        .unwrap_or_default()
                ));
            }
            if c.oom_killed {
                problems.push("was killed for running out of memory".into());
            }
            if c.health.as_deref() == Some("unhealthy") {
                problems.push("is unhealthy".into());
            }
            if c.jwt_secret_matches_env_file == Some(false) {
                // Not a container fault: the running API and the file disagree, so the
                // next deploy logs everyone out, or a restore or rollback pairs tokens
                // with the wrong key. Say which way to settle it.
                out.push(Finding::failure(
                    format!(
                        "{service}: {} runs with a JWT_SECRET that differs from the one in {}",
                        c.name,
                        env_path(ctx)
                    ),
                    format!(
                        "if the file's secret is the one you want, `elior update --dir {0}` recreates the API with it (everyone must log in again); if the file was changed by mistake, put the previous JWT_SECRET back in {1}",
                        ctx.dir,
                        env_path(ctx)
                    ),
                ));
            }
            if !problems.is_empty() {
                out.push(
                    Finding::failure(
                        format!("{service}: {} {}", c.name, problems.join(", ")),
                        format!(
                            "read its logs with `elior logs {service} --dir {0}`, then `docker start {1}` or `{deploy}`",
                            ctx.dir, c.name
                        ),
                    )
                    .with_details(c.last_logs.clone()),
                );
            } else if c.restart_count > 0 {
                out.push(Finding::warning(
                    format!(
                        "{service}: {} running, but restarted {} time(s) (last exit code {})",
                        c.name,
                        c.restart_count,
                        c.exit_code.unwrap_or(0)
                    ),
                    format!("read why with `elior logs {service} --dir {}`", ctx.dir),
                ));
            } else {
                out.push(Finding::ok(format!(
                    "{service}: {} running{}",
                    c.name,
                    c.health
                        .as_deref()
                        .map(|h| format!(", {h}"))
                        .unwrap_or_default()
                )));
            }
        }
    }
    out
}

pub fn nginx(ctx: &Context, f: Option<&NginxFacts>) -> Vec<Finding> {
    let Some(f) = f else {
        return vec![Finding::skipped(NEEDS_SETTINGS)];
    };
    let mut out = Vec::new();
    match (f.https_status, &f.https_error) {
        (Some(200), _) if f.database_status.as_deref() == Some("connected") => out.push(
            Finding::ok(format!("{} answers 200, database connected", f.https_url)),
        ),
        (Some(status), _) => out.push(Finding::failure(
            format!(
                "{} answers {status}, database {}",
                f.https_url,
                f.database_status.as_deref().unwrap_or("unknown")
            ),
            format!(
                "see the containers and database checks; `elior logs api --dir {}`",
                ctx.dir
            ),
        )),
        (None, e) => out.push(Finding::failure(
            format!(
                "{} does not answer: {}",
                f.https_url,
                e.as_deref().unwrap_or("no answer")
            ),
            format!(
                "see the containers and ports checks; `elior logs nginx --dir {}`",
                ctx.dir
            ),
        )),
    }
    match (f.http_status, &f.http_location, &f.http_error) {
        (Some(301 | 302 | 307 | 308), Some(loc), _) if loc.starts_with("https://") => {
            out.push(Finding::ok(format!("{} redirects to {loc}", f.http_url)))
        }
        (Some(status), loc, _) => out.push(Finding::failure(
            format!(
                "{} answers {status}{} instead of redirecting to HTTPS",
                f.http_url,
                loc.as_ref().map(|l| format!(" to {l}")).unwrap_or_default()
            ),
            format!(
                "elior render --dir {0} && elior deploy {1} --dir {0}",
                ctx.dir,
                domain_arg(ctx)
            ),
        )),
        (None, _, e) => out.push(Finding::failure(
            format!(
                "{} does not answer: {}",
                f.http_url,
                e.as_deref().unwrap_or("no answer")
            ),
            "see the containers and ports checks",
        )),
    }
    out
}

pub fn database(ctx: &Context, f: &DatabaseFacts) -> Vec<Finding> {
    let restore = format!(
        "stop the API, then restore the last good backup: elior restore latest --dir {}",
        ctx.dir
    );
    if !f.exists {
        return vec![Finding::failure(
            format!("{} does not exist", f.path),
            format!(
                "elior deploy {} --dir {}  (the API creates it at start), or {restore}",
                domain_arg(ctx),
                ctx.dir
            ),
        )];
    }
    let mut out = Vec::new();
    let size = f.size_bytes.map(human_bytes).unwrap_or_else(|| "?".into());
    if let Some(e) = &f.open_error {
        out.push(Finding::failure(
            format!("{} ({size}) cannot be opened: {e}", f.path),
            restore.clone(),
        ));
    } else if let Some(check) = f.quick_check.as_deref().filter(|c| *c != "ok") {
        out.push(Finding::failure(
            format!("{} ({size}) is corrupt: quick_check says {check}", f.path),
            restore.clone(),
        ));
    } else {
        match f.journal_mode.as_deref() {
            Some("wal") => out.push(Finding::ok(format!(
                "{} ({size}) passes quick_check, journal mode WAL",
                f.path
            ))),
            mode => out.push(Finding::warning(
                format!(
                    "{} ({size}) passes quick_check, but its journal mode is {}, not WAL",
                    f.path,
                    mode.unwrap_or("unknown")
                ),
                format!(
                    "restart the API (it sets WAL at start): docker restart $(docker ps -q --filter label={}={} --filter label={}=api)",
                    crate::docker::LABEL_PROJECT,
                    project_arg(ctx),
                    crate::docker::LABEL_SERVICE
                ),
            )),
        }
    }
    if let Some(disk) = &f.disk {
        out.push(disk_finding(
            "database disk",
            &f.path,
            disk,
            &format!(
                "find what fills it with `du -xh --max-depth=2 {0} | sort -h | tail`, without deleting data/, uploads/ or the newest backups: move old backups elsewhere (`elior backup list --dir {0}`), or grow the filesystem",
                ctx.dir
            ),
        ));
    }
    out
}

pub fn backups(ctx: &Context, f: &BackupFacts) -> Vec<Finding> {
    let take = format!("elior backup --dir {}", ctx.dir);
    if !f.exists {
        return vec![Finding::failure(
            format!("the backup folder {} does not exist", f.dir),
            format!(
                "{take}  (creates it), or set BACKUP_DIR in {}",
                env_path(ctx)
            ),
        )];
    }
    let mut out = Vec::new();
    if let Some(e) = &f.writable_error {
        out.push(Finding::failure(
            format!("the backup folder {} is not writable: {e}", f.dir),
            format!("chown root:root {0} && chmod 700 {0}", f.dir),
        ));
    }
    if let Some(mode) = f.mode.filter(|m| m & 0o077 != 0) {
        out.push(Finding::warning(
            format!(
                "the backup folder {} is mode {mode:04o}: other users can read the backups (password hashes, personal data)",
                f.dir
            ),
            format!("chmod 700 {}", f.dir),
        ));
    }
    if let Some(e) = &f.error {
        out.push(Finding::failure(format!("cannot list backups: {e}"), take));
        return out;
    }
    let (Some(id), Some(taken_at)) = (&f.latest_id, f.latest_taken_at) else {
        out.push(Finding::failure(
            format!("there is no complete backup in {}", f.dir),
            format!(
                "{take}, and keep taking them: elior schedule install --dir {}",
                ctx.dir
            ),
        ));
        return out;
    };
    let age = ctx.now - taken_at;
    if !f.latest_problems.is_empty() {
        out.push(
            Finding::failure(
                format!("the latest backup {id} does not verify"),
                take.clone(),
            )
            .with_details(f.latest_problems.clone()),
        );
    } else if age > BACKUP_MAX_AGE_SECS {
        out.push(Finding::failure(
            format!(
                "the last verified backup {id} is {} old (more than 26h: the daily backup is not running)",
                human_age(age)
            ),
            format!("{take}, then see the schedule check (`elior schedule install --dir {}`)", ctx.dir),
        ));
    } else {
        out.push(Finding::ok(format!(
            "the last backup {id} is {} old and verifies ({} complete)",
            human_age(age),
            f.complete_backups
        )));
    }
    if let (Some(copy), Some(live)) = (f.latest_database_bytes, f.live_database_bytes) {
        // A consistent copy can be smaller than a live file with free pages, but not tiny.
        if copy == 0 || (live > 64 * 1024 && copy < live / 10) {
            out.push(Finding::warning(
                format!(
                    "the latest backup's database is {} against a live database of {}",
                    human_bytes(copy),
                    human_bytes(live)
                ),
                format!("take a new one and compare: {take}"),
            ));
        }
    }
    if let Some(offsite) = &f.offsite {
        out.push(offsite_backups(ctx, offsite));
    }
    out
}

/// The age of the newest backup in BACKUP_OFFSITE's bucket (issue 17).
fn offsite_backups(ctx: &Context, f: &super::facts::OffsiteFacts) -> Finding {
    let push = format!("elior backup push --dir {}", ctx.dir);
    if let Some(e) = &f.error {
        return Finding::failure(
            format!("cannot read the offsite backups in {}: {e}", f.url),
            format!(
                "fix BACKUP_OFFSITE and the S3_* / AWS_* keys in {}, then {push}",
                env_path(ctx)
            ),
        );
    }
    let (Some(id), Some(taken_at)) = (&f.latest_id, f.latest_taken_at) else {
        return Finding::failure(
            format!(
                "there is no complete backup offsite in {}: a lost host loses them all",
                f.url
            ),
            push,
        );
    };
    let age = ctx.now - taken_at;
    if age > BACKUP_MAX_AGE_SECS {
        Finding::failure(
            format!(
                "the newest offsite backup {id} in {} is {} old (more than 26h: copies are failing)",
                f.url,
                human_age(age)
            ),
            format!("{push}  (it says why a copy fails)"),
        )
    } else {
        Finding::ok(format!(
            "the newest offsite backup {id} in {} is {} old ({} there)",
            f.url,
            human_age(age),
            f.complete_backups
        ))
    }
}

pub fn schedule(ctx: &Context, f: &ScheduleFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    let install = format!("elior schedule install --dir {}", ctx.dir);
    if f.running_pids.is_empty() {
        if f.unit_installed {
            out.push(Finding::failure(
                format!(
                    "{} is installed but no `elior schedule` runs for this stack",
                    f.unit_path
                ),
                format!(
                    "systemctl restart {0}; journalctl -u {0}",
                    crate::schedule::unit::name(std::path::Path::new(&ctx.dir))
                ),
            ));
        } else {
            out.push(Finding::warning(
                "no scheduler runs for this stack: backups and renewals only happen by hand",
                install.clone(),
            ));
        }
    } else {
        out.push(Finding::ok(format!(
            "`elior schedule` runs (pid {})",
            f.running_pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if let Some(e) = &f.state_error {
        out.push(Finding::warning(
            format!("the schedule state is unreadable: {e}"),
            "it is rewritten after the next job; remove it if it stays broken",
        ));
    }
    let now = chrono::DateTime::from_timestamp(ctx.now, 0).map(|t| t.with_timezone(&chrono::Local));
    // The zone the scheduler reads the expressions in, so "due" means the same here.
    let zone = crate::config::cron::timezone(f.timezone.as_deref())
        .unwrap_or_else(|_| jiff::tz::TimeZone::system());
    for job in &f.jobs {
        let Ok(parsed) =
            crate::schedule::Job::in_zone(&job.name, &job.name, &job.schedule, zone.clone())
        else {
            continue;
        };
        let last = job
            .last_success_at
            .as_deref()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&chrono::Local));
        let Some(now) = now else { continue };
        match last {
            Some(last) => {
                let missed = parsed
                    .next_after(&last)
                    .is_some_and(|next| next.timestamp() + SCHEDULE_GRACE_SECS < now.timestamp());
                if missed {
                    out.push(Finding::failure(
                        format!(
                            "job {}: last success {} ago, and it was due since ({}{})",
                            job.name,
                            human_age(now.timestamp() - last.timestamp()),
                            job.schedule,
                            job.last_error
                                .as_deref()
                                .map(|e| format!("; last error: {e}"))
                                .unwrap_or_default()
                        ),
                        format!(
                            "run it now (`elior {} --dir {}`) and see the scheduler's log",
                            job_command(&job.name),
                            ctx.dir
                        ),
                    ));
                } else {
                    out.push(Finding::ok(format!(
                        "job {}: last success {} ago",
                        job.name,
                        human_age(now.timestamp() - last.timestamp())
                    )));
                }
            }
            None if job.last_result.is_some() => out.push(Finding::failure(
                format!(
                    "job {} ran but never succeeded{}",
                    job.name,
                    job.last_error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
                format!(
                    "run it by hand to see why: elior {} --dir {}",
                    job_command(&job.name),
                    ctx.dir
                ),
            )),
            None => {}
        }
    }
    out
}

/// The command a scheduled job runs.
fn job_command(job: &str) -> &'static str {
    match job {
        "cert-renew" => "cert renew",
        _ => "backup",
    }
}

pub fn lock(ctx: &Context, f: &LockFacts) -> Vec<Finding> {
    let release = format!("rm {}", f.path);
    if !f.exists {
        return vec![Finding::ok("no deploy lock is held")];
    }
    let age = f.modified_at.map(|m| human_age(ctx.now - m));
    let Some(h) = &f.holder else {
        return vec![Finding::warning(
            format!("the lock {} is unreadable", f.path),
            format!("if no elior command is running on this stack: {release}"),
        )];
    };
    let owner = format!(
        "`{}` (pid {} on {}, since {}{})",
        h.command,
        h.pid,
        h.host,
        h.since,
        age.map(|a| format!(", {a} ago")).unwrap_or_default()
    );
    if h.host == f.this_host && f.pid_alive == Some(false) {
        vec![Finding::failure(
            format!("stale deploy lock: held by {owner}, whose process is gone"),
            release,
        )]
    } else if h.host != f.this_host {
        vec![Finding::warning(
            format!("deploy lock held by {owner} from another host"),
            format!("if that host runs nothing on this stack: {release}"),
        )]
    } else {
        vec![Finding::ok(format!(
            "deploy lock held by the running {owner}"
        ))]
    }
}

pub fn clock(f: Option<&ClockFacts>) -> Vec<Finding> {
    let Some(f) = f else {
        return vec![Finding::skipped(NEEDS_SETTINGS)];
    };
    let Some(date) = f.server_date else {
        return vec![Finding::skipped(format!(
            "no Date from {}: {}",
            f.source,
            f.error.as_deref().unwrap_or("no answer")
        ))];
    };
    let skew = f.local_now - date;
    let line = format!(
        "this host's clock is {skew:+}s from the Date of {}",
        f.source
    );
    let fix = "enable time sync: timedatectl set-ntp true (or install chrony)";
    if skew.abs() >= SKEW_FAIL_SECS {
        vec![Finding::failure(line, fix)]
    } else if skew.abs() >= SKEW_WARN_SECS {
        vec![Finding::warning(line, fix)]
    } else {
        vec![Finding::ok(line)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;
    use crate::tls::inspect::CertInfo;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn ctx() -> Context {
        Context {
            dir: "/srv/elior".into(),
            domain: Some("fit.example.com".into()),
            project: Some("elior-fit-example-com-0123abcd".into()),
            production: true,
            now: NOW,
            config_error: None,
        }
    }

    fn statuses(findings: &[Finding]) -> Vec<Status> {
        findings.iter().map(|f| f.status).collect()
    }

    fn good_env() -> EnvFacts {
        EnvFacts {
            path: "/srv/elior/.env.production".into(),
            exists: true,
            mode: Some(0o600),
            production: true,
            jwt_secret_bytes: Some(64),
            cors_origins: vec!["https://fit.example.com".into()],
            ..Default::default()
        }
    }

    #[test]
    fn env_rules() {
        assert_eq!(statuses(&env(&ctx(), &good_env())), vec![Status::Ok]);
        let missing = env(
            &ctx(),
            &EnvFacts {
                exists: false,
                ..good_env()
            },
        );
        assert_eq!(
            missing[0].fix.as_deref(),
            Some("elior init fit.example.com --dir /srv/elior")
        );
        let open = env(
            &ctx(),
            &EnvFacts {
                mode: Some(0o644),
                ..good_env()
            },
        );
        assert_eq!(statuses(&open), vec![Status::Failure]);
        assert_eq!(
            open[0].fix.as_deref(),
            Some("chmod 600 /srv/elior/.env.production")
        );
        // The placeholder is named once, even though validation also refuses it.
        let placeholder = env(
            &ctx(),
            &EnvFacts {
                jwt_secret_placeholder: true,
                validation_error: Some("JWT_SECRET (x line 4): is the example placeholder".into()),
                ..good_env()
            },
        );
        assert_eq!(placeholder.len(), 1);
        assert!(placeholder[0].finding.contains("placeholder"));
        assert!(placeholder[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("openssl rand -hex 32"));
        let short = env(
            &ctx(),
            &EnvFacts {
                jwt_secret_bytes: Some(10),
                ..good_env()
            },
        );
        assert!(short[0].finding.contains("10 bytes"));
        let cors = env(
            &ctx(),
            &EnvFacts {
                cors_origins: vec!["http://fit.example.com".into()],
                validation_error: Some("CORS_ORIGINS (x line 3): not https".into()),
                ..good_env()
            },
        );
        assert_eq!(cors.len(), 1);
        assert!(cors[0].finding.contains("http://fit.example.com"));
        let broken = env(
            &ctx(),
            &EnvFacts {
                parse_error: Some("line 3: no '='".into()),
                ..good_env()
            },
        );
        assert!(broken[0].finding.contains("line 3"));
    }

    #[test]
    fn a_port_held_by_another_process_names_it_and_its_fix() {
        let held = PortFacts {
            key: "HTTP_PORT",
            port: 80,
            holders: vec![Listener {
                pid: 812,
                command: "/usr/sbin/apache2 -k start".into(),
                name: "apache2".into(),
            }],
            ..Default::default()
        };
        let f = &ports(&ctx(), &[held])[0];
        assert_eq!(f.status, Status::Failure);
        assert_eq!(
            f.finding,
            "port 80 (HTTP_PORT) is held by apache2 (pid 812: /usr/sbin/apache2 -k start)"
        );
        assert!(f
            .fix
            .as_deref()
            .unwrap()
            .starts_with("systemctl stop apache2"));
        let ours = PortFacts {
            key: "HTTPS_PORT",
            port: 443,
            holders: vec![Listener {
                pid: 9,
                command: "docker-proxy".into(),
                name: "docker-proxy".into(),
            }],
            published_by_our_nginx: true,
            error: None,
        };
        assert_eq!(statuses(&ports(&ctx(), &[ours])), vec![Status::Ok]);
    }

    #[test]
    fn dns_rules() {
        let base = DnsFacts {
            domain: "fit.example.com".into(),
            addresses: vec!["203.0.113.5".into()],
            local_addresses: vec!["203.0.113.5".into()],
            ..Default::default()
        };
        assert_eq!(statuses(&dns(&ctx(), Some(&base))), vec![Status::Ok]);
        let elsewhere = DnsFacts {
            local_addresses: vec![],
            ..base.clone()
        };
        assert_eq!(
            statuses(&dns(&ctx(), Some(&elsewhere))),
            vec![Status::Warning]
        );
        let cdn = DnsFacts {
            cdn: vec![("104.16.1.1".into(), "Cloudflare".into())],
            ..elsewhere.clone()
        };
        assert!(dns(&ctx(), Some(&cdn))[0].finding.contains("Cloudflare"));
        let none = DnsFacts {
            error: Some("no such host".into()),
            ..base
        };
        assert_eq!(statuses(&dns(&ctx(), Some(&none))), vec![Status::Failure]);
    }

    fn cert_info(not_before: i64, not_after: i64, self_signed: bool) -> CertInfo {
        CertInfo {
            subject: "CN=fit.example.com".into(),
            sans: vec!["fit.example.com".into()],
            issuer: "CN=Test CA".into(),
            serial: "01".into(),
            not_before,
            not_after,
            self_signed,
            key_type: "ECDSA P-256".into(),
            key_bits: 256,
        }
    }

    fn cert_facts(info: CertInfo) -> CertFacts {
        let current = crate::plan::certs::Current {
            not_before: info.not_before,
            not_after: info.not_after,
            self_signed: info.self_signed,
            covers_names: true,
        };
        CertFacts {
            cert_path: "/srv/elior/nginx/ssl/cert.pem".into(),
            key_path: "/srv/elior/nginx/ssl/key.pem".into(),
            cert_present: true,
            key_present: true,
            chain_len: 1,
            key_matches: Some(true),
            chain_error: Some(None),
            renewal: Some(crate::plan::certs::renewal(
                Some(&current),
                NOW,
                None,
                0.0,
                false,
            )),
            served_serial: Some(info.serial.clone()),
            info: Some(info),
            ..Default::default()
        }
    }

    #[test]
    fn certificate_rules() {
        let fresh = cert_facts(cert_info(NOW - DAY, NOW + 89 * DAY, false));
        assert_eq!(
            statuses(&certificate(&ctx(), Some(&fresh))),
            vec![Status::Ok]
        );
        let expired = cert_facts(cert_info(NOW - 91 * DAY, NOW - DAY, false));
        let found = certificate(&ctx(), Some(&expired));
        assert_eq!(found[0].status, Status::Failure);
        assert!(found[0]
            .finding
            .starts_with("the certificate expired 1d 0h ago"));
        assert_eq!(
            found[0].fix.as_deref(),
            Some("elior cert renew --force --dir /srv/elior")
        );
        let due = cert_facts(cert_info(NOW - 70 * DAY, NOW + 20 * DAY, false));
        assert_eq!(
            statuses(&certificate(&ctx(), Some(&due))),
            vec![Status::Ok, Status::Warning]
        );
        let wrong_key = CertFacts {
            key_matches: Some(false),
            ..fresh.clone()
        };
        let found = certificate(&ctx(), Some(&wrong_key));
        assert!(found[0].finding.contains("is not the key of"));
        let bootstrap = cert_facts(cert_info(NOW - DAY, NOW + 89 * DAY, true));
        let found = certificate(&ctx(), Some(&bootstrap));
        assert_eq!(statuses(&found), vec![Status::Ok, Status::Warning]);
        let stale_served = CertFacts {
            served_serial: Some("02".into()),
            ..fresh
        };
        assert!(certificate(&ctx(), Some(&stale_served))[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("nginx -c /etc/nginx/elior/nginx.conf -s reload"));
    }

    #[test]
    fn a_stopped_container_fails_with_its_logs() {
        let facts = ContainersFacts {
            project: "elior-fit".into(),
            expected: vec!["api".into(), "nginx".into()],
            containers: vec![ContainerFacts {
                service: "api".into(),
                name: "elior-fit-api".into(),
                state: "exited".into(),
                exit_code: Some(137),
                oom_killed: true,
                last_logs: vec!["out of memory".into()],
                ..Default::default()
            }],
            error: None,
        };
        let found = containers(&ctx(), Some(&facts));
        assert_eq!(statuses(&found), vec![Status::Failure, Status::Failure]);
        assert_eq!(
            found[0].finding,
            "api: elior-fit-api is exited (exit code 137), was killed for running out of memory"
        );
        assert_eq!(found[0].details, vec!["out of memory".to_string()]);
        assert!(found[1].finding.contains("not deployed"));
    }

    #[test]
    fn backups_older_than_26_hours_fail() {
        let f = BackupFacts {
            dir: "/srv/elior/backups".into(),
            exists: true,
            complete_backups: 1,
            latest_id: Some("20261126_020000".into()),
            latest_taken_at: Some(NOW - 3 * DAY),
            ..Default::default()
        };
        let found = backups(&ctx(), &f);
        assert_eq!(statuses(&found), vec![Status::Failure]);
        assert!(found[0].finding.contains("is 3d 0h old"));
        let fresh = BackupFacts {
            latest_taken_at: Some(NOW - 3600),
            ..f.clone()
        };
        assert_eq!(statuses(&backups(&ctx(), &fresh)), vec![Status::Ok]);
        let open = BackupFacts {
            mode: Some(0o755),
            ..fresh.clone()
        };
        let found = backups(&ctx(), &open);
        assert_eq!(statuses(&found), vec![Status::Warning, Status::Ok]);
        assert_eq!(
            found[0].fix.as_deref(),
            Some("chmod 700 /srv/elior/backups")
        );
        let tiny = BackupFacts {
            latest_database_bytes: Some(4096),
            live_database_bytes: Some(50 << 20),
            ..fresh
        };
        assert_eq!(
            statuses(&backups(&ctx(), &tiny)),
            vec![Status::Ok, Status::Warning]
        );
    }

    #[test]
    fn the_newest_offsite_backup_older_than_26_hours_fails() {
        let offsite = crate::doctor::facts::OffsiteFacts {
            url: "s3://gym-backups/prod".into(),
            complete_backups: 3,
            latest_id: Some("20261126_020000".into()),
            latest_taken_at: Some(NOW - 2 * DAY),
            ..Default::default()
        };
        let f = BackupFacts {
            dir: "/srv/elior/backups".into(),
            exists: true,
            complete_backups: 1,
            latest_id: Some("20261128_020000".into()),
            latest_taken_at: Some(NOW - 3600),
            offsite: Some(offsite.clone()),
            ..Default::default()
        };
        let found = backups(&ctx(), &f);
        assert_eq!(statuses(&found), vec![Status::Ok, Status::Failure]);
        assert_eq!(
            found[1].finding,
            "the newest offsite backup 20261126_020000 in s3://gym-backups/prod is 2d 0h old (more than 26h: copies are failing)"
        );
        assert!(found[1]
            .fix
            .as_deref()
            .unwrap()
            .starts_with("elior backup push --dir /srv/elior"));
        let fresh = BackupFacts {
            offsite: Some(crate::doctor::facts::OffsiteFacts {
                latest_taken_at: Some(NOW - 3600),
                ..offsite.clone()
            }),
            ..f.clone()
        };
        assert_eq!(
            statuses(&backups(&ctx(), &fresh)),
            vec![Status::Ok, Status::Ok]
        );
        let unreachable = BackupFacts {
            offsite: Some(crate::doctor::facts::OffsiteFacts {
                error: Some("BACKUP_OFFSITE: bucket \"gym-backups\" does not exist".into()),
                ..offsite
            }),
            ..f
        };
        let found = backups(&ctx(), &unreachable);
        assert_eq!(found[1].status, Status::Failure);
        assert!(found[1]
            .finding
            .starts_with("cannot read the offsite backups in s3://gym-backups/prod"));
    }

    #[test]
    fn stale_locks_fail_with_the_release_command() {
        let f = LockFacts {
            path: "/srv/elior/.elior/deploy.lock".into(),
            exists: true,
            holder: Some(crate::lock::Holder {
                pid: 4242,
                host: "web1".into(),
                command: "elior deploy".into(),
                since: "2026-11-29T10:00:00+00:00".into(),
            }),
            modified_at: Some(NOW - 7200),
            this_host: "web1".into(),
            pid_alive: Some(false),
            unreadable: false,
        };
        let found = lock(&ctx(), &f);
        assert_eq!(found[0].status, Status::Failure);
        assert!(found[0].finding.contains("pid 4242 on web1"));
        assert!(found[0].finding.contains("2h 0m ago"));
        assert_eq!(
            found[0].fix.as_deref(),
            Some("rm /srv/elior/.elior/deploy.lock")
        );
        let live = LockFacts {
            pid_alive: Some(true),
            ..f
        };
        assert_eq!(statuses(&lock(&ctx(), &live)), vec![Status::Ok]);
    }

    #[test]
    fn a_job_that_missed_its_run_fails() {
        let f = ScheduleFacts {
            running_pids: vec![77],
            jobs: vec![JobFacts {
                name: "backup".into(),
                schedule: "0 2 * * *".into(),
                last_success_at: chrono::DateTime::from_timestamp(NOW - 3 * DAY, 0)
                    .map(|t| t.to_rfc3339()),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            statuses(&schedule(&ctx(), &f)),
            vec![Status::Ok, Status::Failure]
        );
        let recent = ScheduleFacts {
            jobs: vec![JobFacts {
                last_success_at: chrono::DateTime::from_timestamp(NOW - 600, 0)
                    .map(|t| t.to_rfc3339()),
                ..f.jobs[0].clone()
            }],
            ..f
        };
        assert_eq!(
            statuses(&schedule(&ctx(), &recent)),
            vec![Status::Ok, Status::Ok]
        );
    }

    #[test]
    fn database_and_clock_rules() {
        let db = DatabaseFacts {
            path: "/srv/elior/data/elior_fitness.db".into(),
            exists: true,
            size_bytes: Some(8192),
            journal_mode: Some("wal".into()),
            quick_check: Some("ok".into()),
            disk: Some(Disk {
                total_bytes: 100 << 30,
                free_bytes: 5 << 30,
            }),
            ..Default::default()
        };
        assert_eq!(
            statuses(&database(&ctx(), &db)),
            vec![Status::Ok, Status::Warning]
        );
        let corrupt = DatabaseFacts {
            quick_check: Some("database disk image is malformed".into()),
            disk: None,
            ..db
        };
        let found = database(&ctx(), &corrupt);
        assert_eq!(statuses(&found), vec![Status::Failure]);
        assert!(found[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("elior restore latest"));
        let clock_facts = |skew| ClockFacts {
            source: "https://x/health".into(),
            server_date: Some(NOW - skew),
            local_now: NOW,
            error: None,
        };
        assert_eq!(statuses(&clock(Some(&clock_facts(1)))), vec![Status::Ok]);
        assert_eq!(
            statuses(&clock(Some(&clock_facts(30)))),
            vec![Status::Warning]
        );
        assert_eq!(
            statuses(&clock(Some(&clock_facts(-600)))),
            vec![Status::Failure]
        );
    }

    // Regression (issue 14): a full data disk was only a warning while the API answered
    // 500 to every write; the fix must never start by deleting data.
    #[test]
    fn a_full_or_nearly_full_data_disk_fails_with_a_fix_that_keeps_the_data() {
        let on = |total: u64, free: u64| DatabaseFacts {
            path: "/srv/elior/data/elior_fitness.db".into(),
            exists: true,
            size_bytes: Some(8192),
            journal_mode: Some("wal".into()),
            quick_check: Some("ok".into()),
            disk: Some(Disk {
                total_bytes: total,
                free_bytes: free,
            }),
            ..Default::default()
        };
        let gib = 1u64 << 30;
        for (total, free, status, starts) in [
            (100 * gib, 20 * gib, Status::Ok, "database disk"),
            (100 * gib, 8 * gib, Status::Warning, "low disk"),
            (100 * gib, 4 * gib, Status::Failure, "nearly full disk"),
            (1 << 20, 0, Status::Failure, "full disk"),
        ] {
            let found = database(&ctx(), &on(total, free));
            assert_eq!(found[1].status, status, "{found:?}");
            assert!(found[1].finding.starts_with(starts), "{found:?}");
            if status != Status::Ok {
                let fix = found[1].fix.as_deref().unwrap();
                assert!(fix.starts_with("find what fills it with `du -xh"), "{fix}");
                assert!(!fix.contains("prune"), "{fix}");
            }
        }
        let docker_root = DockerFacts {
            version: Some("20.10.24".into()),
            api_version: Some("1.41".into()),
            root_dir: Some("/var/lib/docker".into()),
            disk: Some(Disk {
                total_bytes: 100 * gib,
                free_bytes: 1 << 20,
            }),
            error: None,
        };
        let found = docker(&docker_root);
        assert_eq!(found[1].status, Status::Failure);
        assert!(found[1]
            .fix
            .as_deref()
            .unwrap()
            .starts_with("see what uses it with `docker system df`"));
    }

    // Regression (issue 14): a JWT_SECRET that differed from the running API's passed.
    #[test]
    fn an_api_running_with_another_jwt_secret_fails() {
        let api = |matches| ContainersFacts {
            project: "elior-fit".into(),
            expected: vec!["api".into()],
            containers: vec![ContainerFacts {
                service: "api".into(),
                name: "elior-fit-api".into(),
                state: "running".into(),
                health: Some("healthy".into()),
                jwt_secret_matches_env_file: matches,
                ..Default::default()
            }],
            error: None,
        };
        assert_eq!(
            statuses(&containers(&ctx(), Some(&api(Some(true))))),
            vec![Status::Ok]
        );
        assert_eq!(
            statuses(&containers(&ctx(), Some(&api(None)))),
            vec![Status::Ok]
        );
        let found = containers(&ctx(), Some(&api(Some(false))));
        let failure = found.iter().find(|f| f.status == Status::Failure).unwrap();
        assert_eq!(
            failure.finding,
            "api: elior-fit-api runs with a JWT_SECRET that differs from the one in /srv/elior/.env.production"
        );
        assert!(failure.fix.as_deref().unwrap().starts_with(
            "if the file's secret is the one you want, `elior update --dir /srv/elior`"
        ));
    }

    #[test]
    fn the_chain_check_names_acme_ca_file() {
        let info = cert_info(NOW - DAY, NOW + 89 * DAY, false);
        let unknown_issuer = CertFacts {
            chain_error: Some(Some("invalid peer certificate: UnknownIssuer".into())),
            ..cert_facts(info.clone())
        };
        let found = certificate(&ctx(), Some(&unknown_issuer));
        assert_eq!(
            found[0].finding,
            "the chain does not verify against the system roots: invalid peer certificate: UnknownIssuer"
        );
        assert!(found[0]
            .fix
            .as_deref()
            .unwrap()
            .ends_with("set ACME_CA_FILE to its root PEM"));
        let with_ca = CertFacts {
            ca_file: Some("/srv/elior/ca.pem".into()),
            ..unknown_issuer.clone()
        };
        assert!(certificate(&ctx(), Some(&with_ca))[0]
            .finding
            .contains("and ACME_CA_FILE /srv/elior/ca.pem"));
        let unreadable = CertFacts {
            ca_file: Some("/srv/elior/missing.pem".into()),
            ca_file_error: Some("failed to read CA file /srv/elior/missing.pem".into()),
            ..cert_facts(info)
        };
        let found = certificate(&ctx(), Some(&unreadable));
        assert_eq!(statuses(&found), vec![Status::Failure]);
        assert!(found[0].finding.starts_with("ACME_CA_FILE cannot be used"));
    }

    // Every JWT_SECRET of the original's example files is a placeholder (issue 14).
    #[test]
    fn the_originals_example_secrets_are_placeholders() {
        for example in [
            "your-new-secure-jwt-secret-here-32-chars-minimum",
            "your-super-secure-secret-key-here-minimum-32-characters",
            "your-secret-key-here",
            "your_secure_password_here",
            "CHANGE_ME_0123456789abcdef0123456789",
        ] {
            assert!(crate::config::is_placeholder_secret(example), "{example}");
        }
        for real in [
            "3f1c9a7e5b2d4c6a8e0f1b3d5c7a9e2f4b6d8c0a1e3f5b7d9c2a4e6f8b0d1c3a",
            "q8VZ0mB3xK7pL2nR5tW9yC4fH6jD1gS0aE8uI3oP7kM=",
        ] {
            assert!(!crate::config::is_placeholder_secret(real), "{real}");
        }
    }

    // Issue 14: a directory without a stack id owns no container; doctor says how to
    // adopt, instead of "needs valid settings".
    #[test]
    fn a_stack_without_an_id_is_told_to_deploy_once() {
        let mut c = ctx();
        c.project = None;
        let findings = containers(&c, None);
        assert_eq!(statuses(&findings), vec![Status::Warning]);
        assert!(findings[0].finding.contains(".elior/stack.json is missing"));
        assert_eq!(
            findings[0].fix.as_deref(),
            Some("elior deploy fit.example.com --dir /srv/elior (gives it an id and adopts its containers)")
        );
        c.config_error = Some("bad".into());
        assert_eq!(statuses(&containers(&c, None)), vec![Status::Skipped]);
    }
}

/// Swarm mode (issue 21): `None` is a single-host stack. Refusals reuse the deploy's own
/// wording (`plan::swarm::check`), so doctor and deploy name the same fix.
pub fn swarm(ctx: &Context, f: Option<&SwarmFacts>) -> Vec<Finding> {
    let Some(f) = f else {
        return vec![Finding::ok(
            "single-host stack (MODE=single): nothing runs on a swarm",
        )];
    };
    if let Some(e) = &f.error {
        return vec![Finding::failure(
            format!("cannot ask the engine about the swarm: {e}"),
            "run `elior doctor docker`",
        )];
    }
    use crate::plan::swarm::{self as plan, NodeFacts, Observed, SwarmState};
    let observed = Observed {
        swarm: match f.state.as_str() {
            "manager" => SwarmState::Manager,
            "worker" => SwarmState::Worker,
            "inactive" | "" => SwarmState::Inactive,
            other => SwarmState::Other(other.to_string()),
        },
        hostname: f.hostname.clone(),
        nodes: f
            .db_node_labelled
            .then(|| NodeFacts {
                hostname: String::new(),
                labels: [(plan::DB_NODE_LABEL.to_string(), "true".to_string())].into(),
                ready: true,
            })
            .into_iter()
            .collect(),
        ..Default::default()
    };
    if let Err(message) = plan::check(&observed, f.needs_db_node) {
        let (finding, fix) = message.split_once('\n').unwrap_or((&message, ""));
        return vec![Finding::failure(finding, fix)];
    }
    let mut out = vec![Finding::ok(format!(
        "{} is a swarm manager{}",
        if f.hostname.is_empty() {
            "this engine"
        } else {
            &f.hostname
        },
        if f.needs_db_node {
            ", and a node carries elior.db=true"
        } else {
            ""
        }
    ))];
    if f.services.is_empty() {
        let domain = ctx.domain.as_deref().unwrap_or("DOMAIN");
        out.push(Finding::failure(
            "the stack has no services on the swarm",
            format!("run `elior deploy {domain} --swarm --dir {}`", ctx.dir),
        ));
        return out;
    }
    for s in &f.services {
        let line = format!(
            "{}: {} of {} tasks running and healthy",
            s.role, s.ready, s.wanted
        );
        if s.ready as i64 >= s.wanted && s.problems.is_empty() {
            out.push(Finding::ok(line));
        } else {
            out.push(
                Finding::failure(
                    line,
                    format!(
                        "run `elior logs {} --dir {}` to see why; `elior update --dir {}` retries",
                        s.role, ctx.dir, ctx.dir
                    ),
                )
                .with_details(s.problems.clone()),
            );
        }
    }
    out
}

#[cfg(test)]
mod swarm_tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            dir: "/srv/elior".into(),
            domain: Some("fit.example.com".into()),
            project: Some("elior-fit-example-com-a1a1a1a1".into()),
            production: true,
            now: 0,
            config_error: None,
        }
    }

    #[test]
    fn swarm_findings_name_the_fix() {
        assert_eq!(swarm(&ctx(), None)[0].status, super::super::Status::Ok);
        let inactive = SwarmFacts {
            state: "inactive".into(),
            ..Default::default()
        };
        let f = &swarm(&ctx(), Some(&inactive))[0];
        assert_eq!(f.finding, "this Docker Engine is not part of a swarm");
        assert!(f
            .fix
            .as_deref()
            .unwrap()
            .starts_with("run `docker swarm init"));
        let unlabelled = SwarmFacts {
            state: "manager".into(),
            hostname: "node-1".into(),
            needs_db_node: true,
            ..Default::default()
        };
        let f = &swarm(&ctx(), Some(&unlabelled))[0];
        assert!(
            f.fix
                .as_deref()
                .unwrap()
                .contains("docker node update --label-add elior.db=true node-1"),
            "{f:?}"
        );
        let short = SwarmFacts {
            state: "manager".into(),
            services: vec![SwarmServiceFacts {
                role: "api".into(),
                name: "p-api".into(),
                wanted: 3,
                ready: 2,
                problems: vec!["api.3 on node-1: task: non-zero exit (1)".into()],
            }],
            ..Default::default()
        };
        let findings = swarm(&ctx(), Some(&short));
        assert_eq!(findings[1].finding, "api: 2 of 3 tasks running and healthy");
        assert_eq!(findings[1].status, super::super::Status::Failure);
        assert_eq!(
            findings[1].details,
            ["api.3 on node-1: task: non-zero exit (1)"]
        );
    }
}
