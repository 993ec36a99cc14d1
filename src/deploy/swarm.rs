//! The deploy of a stack onto Docker Swarm (`MODE=swarm` or `deploy --swarm`, issue 21):
//! gathers the inputs of `plan::swarm` (images by id, secrets, the database choice, the
//! API's environment), refuses an engine that cannot run the stack, plans, and unless it
//! is a dry run has `docker::swarm` carry the plan out, waits for the engine's health-gated
//! roll to converge (reporting each task), proves HTTPS /health through nginx, and prunes
//! secret versions no rollback needs.
//!
//! The database: an external `DATABASE_URL=postgres[ql]://…`, or a `postgres` service
//! that elior runs, with a password generated once into `DIR/.elior/swarm-db-password`
//! (0600). An `elior serve` that cannot use PostgreSQL yet (before issue 16's backend)
//! gets no DATABASE_URL and keeps SQLite on a tmpfs in each task: /health works, but the
//! replicas do not share state; deploy says so.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use super::{CertSource, CertStep, ImageSource, Options, Progress};
use crate::config::identity::Owner;
use crate::config::model::Stack;
use crate::config::{RawSettings, ServeConfig, SERVE_KEYS};
use crate::docker::{self, apply, image};
use crate::plan::render::{self, Templates, Upstream};
use crate::plan::swarm::{self as plan, Image, Inputs, SecretValues, SwarmPlan};
use crate::tls::acme::Http01;
use crate::tls::files::StackPaths;
use crate::tls::issue::{IssueOptions, Outcome};
use crate::tls::settings::CertSettings;

/// Where the password of the postgres service elior runs is kept (mode 0600).
pub const DB_PASSWORD_FILE: &str = ".elior/swarm-db-password";

/// What a swarm deploy did.
pub enum SwarmReport {
    DryRun(SwarmPlan),
    Done(SwarmOutcome),
}

pub struct SwarmOutcome {
    pub project: String,
    pub api_image: String,
    pub replicas: u32,
    pub up_to_date: bool,
    pub url: String,
    /// `/health` through nginx, when something changed.
    pub proof: Option<(u16, String)>,
    /// `external`, `postgres service` or `sqlite in each task`.
    pub database: String,
    pub tasks: Vec<docker::swarm::TaskInfo>,
    /// The ACME step (issue 21): nginx answers challenges statelessly on every node.
    pub certificate: CertStep,
}

struct Notes<'a>(&'a dyn Progress);
impl docker::swarm::Notes for Notes<'_> {
    fn note(&self, line: &str) {
        self.0.note(line)
    }
}

/// Whether this build's `elior serve` accepts a PostgreSQL DATABASE_URL (issue 16):
/// asked of serve's own settings validation, so it turns true with the backend.
pub fn api_speaks_postgres() -> bool {
    let mut raw = RawSettings::default();
    raw.overlay([
        (
            "DATABASE_URL".to_string(),
            "postgresql://elior:probe@postgres:5432/elior".to_string(),
        ),
        ("JWT_SECRET".to_string(), "p".repeat(48)),
    ]);
    ServeConfig::from_raw(&raw, None).is_ok()
}

/// The database of a swarm stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// DATABASE_URL names a PostgreSQL server.
    External(String),
    /// elior runs the postgres service.
    Service,
}

pub fn database_of(raw: &RawSettings) -> Database {
    match raw.get("DATABASE_URL").map(str::trim) {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Database::External(url.to_string())
        }
        _ => Database::Service,
    }
}

/// The password of the stack's postgres service, made once (unless `dry_run`).
fn db_password(dir: &Path, dry_run: bool) -> Result<String> {
    let path = dir.join(DB_PASSWORD_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
    if dry_run {
        return Ok("(made at deploy)".to_string());
    }
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let password = hex::encode(bytes);
    crate::fsutil::write_atomic(&path, format!("{password}\n").as_bytes(), 0o600)?;
    Ok(password)
}

/// The API's environment in swarm mode: the serve settings of the stack, without the
/// secrets (files under /run/secrets instead), listening on the API port.
fn api_env(stack: &Stack, with_database_url: bool) -> Vec<String> {
    let config = &stack.config;
    let mut env: Vec<String> = SERVE_KEYS
        .iter()
        .filter(|k| {
            ![
                "JWT_SECRET",
                "AWS_SECRET_ACCESS_KEY",
                "BIND_ADDRESS",
                "TRUSTED_PROXIES",
            ]
            .contains(k)
        })
        .filter(|k| !(with_database_url && **k == "DATABASE_URL"))
        .filter_map(|k| {
            stack
                .raw
                .get(k)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| format!("{k}={v}"))
        })
        .collect();
    env.push(format!("BIND_ADDRESS=0.0.0.0:{}", config.serve.bind.port()));
    env.push(format!(
        "TRUSTED_PROXIES={}",
        config.trusted_proxies.join(",")
    ));
    env.sort();
    env
}

async fn image_of(docker: &bollard::Docker, reference: &str) -> Result<Image> {
    let id = apply::image_id(docker, reference)
        .await?
        .ok_or_else(|| anyhow!("image {reference} is not on this host"))?;
    Ok(Image {
        id,
        reference: reference.to_string(),
    })
}

/// What the plan is made from, besides the observed swarm: the stack's settings, the
/// images (the API's given), the secrets' contents and nginx.conf (answering ACME
/// challenges with `acme_thumbprint` when given). Also names the database for the report.
async fn gather_inputs(
    docker: &bollard::Docker,
    loaded: &Stack,
    owner: &Owner,
    api_image: Image,
    acme_thumbprint: Option<&str>,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<(Inputs, &'static str)> {
    let dir = loaded.dir.as_path();
    let config = &loaded.config;
    let project = owner.project.as_str();
    let database = database_of(&loaded.raw);
    let speaks_pg = api_speaks_postgres();
    let image_or_planned = |reference: &str| {
        let docker = docker.clone();
        let reference = reference.to_string();
        async move {
            Ok::<_, anyhow::Error>(Image {
                id: apply::image_id(&docker, &reference)
                    .await?
                    .unwrap_or_else(|| "(pulled at deploy)".to_string()),
                reference,
            })
        }
    };
    let proxy_image = image_or_planned(config.proxy_image.as_str()).await?;
    let postgres_image = match database {
        Database::Service => Some(image_or_planned(config.postgres_image.as_str()).await?),
        Database::External(_) => None,
    };

    // Secrets.
    let names = plan::Names(project);
    let (database_url, db_password, database_label) = match (&database, speaks_pg) {
        (Database::External(url), _) => (Some(url.clone()), None, "external PostgreSQL"),
        (Database::Service, true) => {
            let password = db_password(dir, dry_run)?;
            let url = format!(
                "postgresql://{}:{password}@{}:5432/{}",
                plan::POSTGRES_USER,
                names.service("postgres"),
                plan::POSTGRES_DB
            );
            (Some(url), Some(password), "the postgres service")
        }
        (Database::Service, false) => {
            progress.note("note: this elior's API cannot use PostgreSQL yet (issue 16): each API task keeps SQLite on its own tmpfs, so replicas do not share state; the postgres service runs for when it can");
            (
                None,
                Some(db_password(dir, dry_run)?),
                "SQLite in each task",
            )
        }
    };
    let tls = StackPaths::new(dir);
    let read = |path: &Path| -> Result<String> {
        if dry_run && !path.exists() {
            return Ok("(made at deploy)".to_string());
        }
        std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))
    };
    let upstream = Upstream::new(&plan::api_upstream_host(project), config.serve.bind.port())
        .map_err(|e| anyhow!(e))?;
    let nginx_conf =
        render::render_swarm_proxy(config, &Templates::embedded(), &upstream, acme_thumbprint)?;
    let mut scratch = vec![render::api_data_dir(config)?];
    if config.serve.uploads == crate::files::settings::UploadsSettings::Local {
        progress.note("note: uploads are in UPLOAD_DIR on a tmpfs of each API task; set UPLOADS_URL=s3://… so every replica shares them and they outlive a task");
        scratch.push(config.serve.upload_dir.to_string_lossy().into_owned());
    }
    let inputs = Inputs {
        project: project.to_string(),
        labels: docker::owner_labels(owner).into_iter().collect(),
        api_image,
        proxy_image,
        postgres_image,
        replicas: config.api_replicas,
        api_port: config.serve.bind.port(),
        http_port: config.http_port,
        https_port: config.https_port,
        api_env: api_env(loaded, database_url.is_some()),
        api_scratch_dirs: scratch,
        secrets: SecretValues {
            jwt_secret: config.serve.jwt_secret.expose().to_string(),
            database_url,
            db_password,
            s3_secret_key: match &config.serve.uploads {
                crate::files::settings::UploadsSettings::S3(s3) => {
                    Some(s3.secret_access_key.expose().to_string())
                }
                crate::files::settings::UploadsSettings::Local => None,
            },
            nginx_conf,
            tls_cert: read(&tls.cert())?,
            tls_key: read(&tls.key())?,
        },
    };
    Ok((inputs, database_label))
}

/// Deploys `loaded` onto the swarm this engine manages.
pub async fn run(
    loaded: &Stack,
    owner: &Owner,
    options: &Options,
    source: ImageSource,
    progress: &mut dyn Progress,
) -> Result<SwarmReport> {
    let dir = loaded.dir.as_path();
    let config = &loaded.config;
    // Where the certificate comes from, decided before anything changes (bad certificate
    // files are refused here); a CA's settings are needed before the apply.
    let cert_source = CertSource::of(loaded, options)?;
    let docker = docker::connect().await?;
    let project = owner.project.as_str();

    let database = database_of(&loaded.raw);
    let observed = docker::swarm::observe(&docker, owner).await?;
    plan::check(&observed, database == Database::Service).map_err(|m| anyhow!(m))?;

    // Images, by id: a task never asks a registry for a tag.
    let api_image = match source {
        ImageSource::Existing(reference) => {
            image_of(&docker, &reference).await.with_context(|| {
                format!(
                    "elior keeps the last {} API builds; `docker images` lists them",
                    super::KEEP_API_IMAGES
                )
            })?
        }
        ImageSource::Build => {
            let binary =
                std::env::current_exe().context("failed to find the running elior binary")?;
            if options.dry_run {
                let reference = image::planned_reference(config.api_image.as_str(), &binary)?;
                Image {
                    id: apply::image_id(&docker, &reference)
                        .await?
                        .unwrap_or_else(|| "(built at deploy)".to_string()),
                    reference,
                }
            } else {
                progress.begin("building the API image from this binary");
                let built =
                    image::ensure_api_image(&docker, config.api_image.as_str(), &binary).await?;
                progress.end();
                image_of(&docker, &built.reference).await?
            }
        }
    };
    if !options.dry_run {
        super::ensure_image(
            &docker,
            config.proxy_image.as_str(),
            "PROXY_IMAGE",
            "proxy",
            progress,
        )
        .await?;
        if database == Database::Service {
            super::ensure_image(
                &docker,
                config.postgres_image.as_str(),
                "POSTGRES_IMAGE",
                "postgres",
                progress,
            )
            .await?;
        }
        super::ensure_bootstrap_certificate(dir, config.domain.as_str(), progress)?;
    }

    // The account's thumbprint goes into nginx.conf, so the first nginx tasks already
    // answer challenges; without a CA to register with, the stack comes up all the same.
    let thumbprint = match &cert_source {
        CertSource::Acme(settings) if !options.dry_run => Some(
            crate::tls::acme::account_thumbprint(&StackPaths::new(dir).account(), &settings.ca())
                .await,
        ),
        // A dry run asks no CA: the thumbprint of a stored account, or none.
        CertSource::Acme(settings) => {
            crate::tls::acme::stored_thumbprint(&StackPaths::new(dir).account(), &settings.ca())
                .ok()
                .flatten()
                .map(Ok)
        }
        CertSource::Keep(_) | CertSource::UserPair(_) => None,
    };
    let nginx_thumbprint = thumbprint.as_ref().and_then(|t| t.as_ref().ok());
    let (inputs, database_label) = gather_inputs(
        &docker,
        loaded,
        owner,
        api_image,
        nginx_thumbprint.map(String::as_str),
        options.dry_run,
        progress,
    )
    .await?;
    let plan = plan::plan(&inputs, &observed);
    // nginx runs on every node, this one included: a port it does not publish yet must
    // be free here and on the swarm, or its tasks would fail until the deploy timed out.
    let claims = plan::ports_to_claim(&plan, &observed);
    plan::check_ports(&claims, &observed).map_err(|m| anyhow!(m))?;
    for (port, service) in &claims {
        docker::ports::check_free("", *port, service)?;
    }
    if options.dry_run {
        return Ok(SwarmReport::DryRun(plan));
    }
    let url = format!(
        "https://{}{}",
        config.domain.url_host(),
        super::port_suffix(config.https_port)
    );
    let up_to_date = plan.is_noop();
    if !up_to_date {
        for line in plan.render().lines().filter(|l| !l.ends_with(": keep")) {
            progress.note(&format!("plan: {line}"));
        }
        docker::swarm::apply(&docker, owner, &plan).await?;
    }
    let all: Vec<String> = plan.services.iter().map(|s| s.def.name.clone()).collect();
    progress.begin("waiting for every task to run its current version, healthy");
    let waited = converge(&docker, owner, &all, options, progress).await;
    progress.end();
    waited?;
    let mut proof = None;
    if !up_to_date {
        progress.begin(&format!("proving {url}/health through nginx"));
        let response = super::prove(dir, config.domain.as_str(), config.https_port).await?;
        progress.end();
        proof = Some((response.status, response.body.trim().to_string()));
        match docker::swarm::prune_secrets(&docker, owner).await {
            Ok(removed) if !removed.is_empty() => progress.note(&format!(
                "removed old secret versions: {}",
                removed.join(", ")
            )),
            Ok(_) => {}
            Err(e) => progress.note(&format!("warning: {e:#}")),
        }
    }

    let paths = StackPaths::new(dir);
    let api_image = inputs.api_image.reference.clone();
    let rollout = |thumbprint| NginxRollout {
        docker: &docker,
        owner,
        inputs,
        thumbprint,
        https_port: config.https_port,
        timeout: options.health_timeout,
        progress: &*progress,
    };
    let certificate = match cert_source {
        CertSource::Keep(kept) => kept.step(&paths, config.domain.as_str(), &*progress),
        CertSource::UserPair(pair) => {
            let rollout = rollout(None);
            let step = pair
                .serve(&paths, config.domain.as_str(), move || async move {
                    Ok::<_, anyhow::Error>(rollout)
                })
                .await?;
            if let CertStep::Installed { .. } = step {
                remove_replaced_cert_secrets(&docker, owner, &*progress).await;
            }
            step
        }
        CertSource::Acme(settings) => {
            let issued = match thumbprint {
                Some(Ok(thumbprint)) => {
                    let rollout = rollout(Some(thumbprint));
                    certificate(&rollout, &settings, IssueOptions::default()).await
                }
                Some(Err(err)) => Err(err),
                // Computed above for every CA source; kept total rather than unwrapped.
                None => Err(anyhow!("no ACME account thumbprint was computed")),
            };
            CertStep::from_ca(&paths, issued)
        }
    };
    Ok(SwarmReport::Done(SwarmOutcome {
        project: project.to_string(),
        api_image,
        replicas: config.api_replicas,
        up_to_date,
        url,
        proof,
        database: database_label.to_string(),
        tasks: docker::swarm::tasks(&docker, owner).await?,
        certificate,
    }))
}

/// `elior cert issue|renew` of a swarm stack: the account (registered now if there is
/// none: before anything changes, so an unreachable CA leaves the stack untouched), an
/// nginx.conf that carries its thumbprint (nginx rolls once if the running one does not),
/// then [`certificate`]. The API runs on as it is: only nginx is planned.
pub async fn renew_certificate(
    loaded: &Stack,
    owner: &Owner,
    settings: &CertSettings,
    issue: IssueOptions,
    health_timeout: Duration,
    progress: &dyn Progress,
) -> Result<Outcome> {
    crate::tls::issue::require_public(settings, &StackPaths::new(&loaded.dir))?;
    let docker = docker::connect().await?;
    // The manager check alone: the nginx roll observes the stack's services itself.
    let swarm = docker::swarm::observe_swarm(&docker).await?;
    plan::check(&swarm, false).map_err(|m| anyhow!(m))?;
    let api_image = docker::swarm::running_image(&docker, owner, "api")
        .await?
        .ok_or_else(|| {
            anyhow!(
                "the stack in {} is not deployed on this swarm\nrun `{}` first",
                loaded.dir.display(),
                crate::config::hint::command(
                    Some(&loaded.dir),
                    &format!("deploy {}", settings.domain)
                )
            )
        })?;
    let paths = StackPaths::new(&loaded.dir);
    let thumbprint = crate::tls::acme::account_thumbprint(&paths.account(), &settings.ca()).await?;
    let (inputs, _) = gather_inputs(
        &docker,
        loaded,
        owner,
        Image {
            id: api_image.0,
            reference: api_image.1,
        },
        Some(&thumbprint),
        false,
        progress,
    )
    .await?;
    let rollout = NginxRollout {
        docker: &docker,
        owner,
        inputs,
        thumbprint: Some(thumbprint),
        https_port: settings.https_port,
        timeout: health_timeout,
        progress,
    };
    certificate(&rollout, settings, issue).await
}

/// Makes sure the running nginx answers ACME challenges (the config in `rollout.inputs`
/// carries the account's thumbprint; nginx rolls once if the running one does not), then
/// obtains a certificate when due and rolls nginx to it as a new secret version. Once the
/// new certificate is served, the replaced certificate and key secrets are removed.
async fn certificate(
    rollout: &NginxRollout<'_>,
    settings: &CertSettings,
    issue: IssueOptions,
) -> Result<Outcome> {
    let paths = StackPaths::new(&rollout.owner.dir);
    rollout
        .roll()
        .await
        .context("nginx did not take the config that answers ACME challenges")?;
    let note = |line: &str| rollout.progress.note(line);
    let outcome = crate::tls::issue::issue_if_due(rollout, &paths, settings, issue, &note).await?;
    if let Outcome::Issued { .. } = outcome {
        remove_replaced_cert_secrets(rollout.docker, rollout.owner, rollout.progress).await;
    }
    Ok(outcome)
}

/// Once a new certificate is served, the secrets of the one it replaced go: no rollback
/// of nginx should bring a replaced certificate back. A failure here only warns.
async fn remove_replaced_cert_secrets(
    docker: &bollard::Docker,
    owner: &Owner,
    progress: &dyn Progress,
) {
    match docker::swarm::remove_unused_secrets(docker, owner, &["cert", "key"]).await {
        Ok(removed) if !removed.is_empty() => progress.note(&format!(
            "removed the replaced certificate's secrets: {}",
            removed.join(", ")
        )),
        Ok(_) => {}
        Err(e) => progress.note(&format!("warning: {e:#}")),
    }
}

/// The swarm's nginx as `tls::install` drives it: "reload" is a rolling update of the
/// nginx service to the certificate now in nginx/ssl/ (a new secret version; one node at
/// a time, see `plan::swarm`), and challenges are answered statelessly by every task.
struct NginxRollout<'a> {
    docker: &'a bollard::Docker,
    owner: &'a Owner,
    /// The stack as deployed; the certificate pair is read again at each roll.
    inputs: Inputs,
    /// The ACME account's key thumbprint, which `inputs`' nginx.conf answers with; none
    /// when the user's own pair is rolled in (that nginx.conf answers no challenge).
    thumbprint: Option<String>,
    https_port: u16,
    timeout: Duration,
    progress: &'a dyn Progress,
}

impl NginxRollout<'_> {
    /// Plans nginx alone with the pair in nginx/ssl/ and, when that changes the running
    /// service, rolls it and waits until every node's task runs the new version.
    async fn roll(&self) -> Result<()> {
        let paths = StackPaths::new(&self.owner.dir);
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("failed to read {}", path.display()))
        };
        let mut inputs = self.inputs.clone();
        inputs.secrets.tls_cert = read(&paths.cert())?;
        inputs.secrets.tls_key = read(&paths.key())?;
        let observed = docker::swarm::observe(self.docker, self.owner).await?;
        let plan = plan::plan(&inputs, &observed).nginx_only();
        if plan.is_noop() {
            return Ok(());
        }
        for line in plan.render().lines().filter(|l| !l.ends_with(": keep")) {
            self.progress.note(&format!("plan: {line}"));
        }
        docker::swarm::apply(self.docker, self.owner, &plan).await?;
        let nginx: Vec<String> = plan.services.iter().map(|s| s.def.name.clone()).collect();
        let nodes = observed.nodes.len().max(1) as u32;
        // Per node: stop, start, the engine's monitor period and the pause before the next.
        let per_node = Duration::from_secs(20 + plan::NGINX_UPDATE_DELAY_SECONDS as u64);
        docker::swarm::converge(
            self.docker,
            self.owner,
            &nginx,
            self.timeout + per_node * nodes,
            &Notes(self.progress),
        )
        .await
    }
}

impl crate::tls::install::Proxy for NginxRollout<'_> {
    /// The pair was validated before it was written (`install::install_and_verify`); the
    /// engine's health of the new task, and its automatic rollback, gate the rest.
    async fn test_config(&self) -> Result<()> {
        Ok(())
    }

    async fn reload(&self) -> Result<()> {
        self.roll().await
    }

    fn https_address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.https_port))
    }

    fn http01(&self, _paths: &StackPaths) -> Http01 {
        // No thumbprint: nginx.conf answers no challenge, and the ACME client refuses an
        // empty one before the CA is asked ("run `elior deploy` again").
        Http01::Stateless {
            thumbprint: self.thumbprint.clone().unwrap_or_default(),
        }
    }

    fn installing(&self) -> &'static str {
        "installing it: nginx rolls to it as a new secret version, one node at a time"
    }
}

/// `deploy --swarm` (and `migrate-to-swarm`, once the swarm serves) writes MODE=swarm
/// into .env.production, so `status`, `logs`, `down` and `update` of the directory act on
/// the swarm stack too.
pub fn record_swarm_mode(dir: &Path) -> Result<()> {
    const NOTE: &str = "# Written by `elior deploy --swarm` (issue 21): single or swarm.";
    let path = dir.join(crate::config::stack::ENV_FILE);
    let mut text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("MODE=") && *l != NOTE)
        .collect();
    lines.push(NOTE);
    lines.push("MODE=swarm");
    text = lines.join("\n") + "\n";
    let mode = std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap_or(0o600);
    crate::fsutil::write_atomic(&path, text.as_bytes(), mode)
}

/// Waits for the roll, with a deadline that grows with the number of API tasks (each is
/// started, health-checked and monitored in turn).
pub async fn converge(
    docker: &bollard::Docker,
    owner: &Owner,
    services: &[String],
    options: &Options,
    progress: &dyn Progress,
) -> Result<()> {
    let tasks = docker::swarm::tasks(docker, owner).await?.len() as u32;
    let timeout = options.health_timeout + Duration::from_secs(20) * tasks.max(1);
    let started = Instant::now();
    docker::swarm::converge(docker, owner, services, timeout, &Notes(progress))
        .await
        .with_context(|| format!("after {:.0}s", started.elapsed().as_secs_f64()))
}

/// Refuses a swarm stack with no id yet (a directory of an earlier release).
pub fn require_owner(stack: &Stack) -> Result<Owner> {
    stack
        .owner()
        .ok_or_else(|| anyhow!("{}", stack.no_id_hint()))
}

/// `bail!` helper for commands that need swarm mode.
pub fn not_swarm(dir: &Path) -> anyhow::Error {
    anyhow!(
        "the stack in {} is not in swarm mode\nset MODE=swarm in .env.production (or deploy with --swarm)",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_database_url_is_external_anything_else_gets_the_service() {
        let raw = |url: &str| {
            let mut raw = RawSettings::default();
            raw.overlay([("DATABASE_URL".to_string(), url.to_string())]);
            raw
        };
        assert_eq!(
            database_of(&raw("postgresql://u:p@db.example:5432/fit")),
            Database::External("postgresql://u:p@db.example:5432/fit".into())
        );
        assert_eq!(
            database_of(&raw("postgres://u:p@db/fit")),
            Database::External("postgres://u:p@db/fit".into())
        );
        assert_eq!(
            database_of(&raw("sqlite:////app/data/elior_fitness.db")),
            Database::Service
        );
        assert_eq!(database_of(&RawSettings::default()), Database::Service);
    }
}
