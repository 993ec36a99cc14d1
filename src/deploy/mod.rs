//! The deploy of a stack (deploy, update and rollback): from the [`Stack`] as loaded and
//! the engine as observed, the rollout as plain values (`plan::containers::Plan`: create,
//! replace or keep each container, reload nginx, remove leftovers, each with its reason),
//! then carried out by `docker::apply`, proven over HTTPS, and followed by the
//! certificate step.
//!
//! `cli::deploy` only wires this up (arguments, lock, audit log, printing); `--dry-run`
//! prints the [`Report::DryRun`] plan. Progress goes to a [`Progress`] the caller gives;
//! results come back as values ([`Outcome`]) and are printed by the caller.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bollard::Docker;
use futures_util::StreamExt;

use crate::config::identity::Owner;
use crate::config::model::Stack;
use crate::docker::{self, apply, compose, image};
use crate::plan::containers::{self, Observed, Plan, API_SERVICE, PROXY_SERVICE};
use crate::plan::render::{self, paths, Templates, Upstream};
use crate::probe::https::PinnedClient;

pub mod cert;
pub mod migrate;
pub mod swarm;

pub use cert::{CertSource, CertStep};

/// How a deploy runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Compute and return the plan; change nothing.
    pub dry_run: bool,
    /// How long a new container gets to become healthy.
    pub health_timeout: Duration,
    /// Never ask a CA.
    pub self_signed: bool,
    /// The user's certificate chain and key, to serve instead of a CA's.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Where the API image comes from.
pub enum ImageSource {
    /// Built from the running binary.
    Build,
    /// An image the engine already has (rollback).
    Existing(String),
}

/// Reports progress of the steps (a spinner or plain lines, the caller's choice).
pub trait Progress: apply::Steps + Sync {
    /// A line of progress or a warning, for stderr.
    fn note(&self, line: &str);
}

/// What a deploy did.
pub enum Report {
    /// `--dry-run`: the plan, nothing changed.
    DryRun(Plan),
    Done(Outcome),
}

/// What a deploy finished with, for the summary and the audit log.
pub struct Outcome {
    pub project: String,
    pub api_image: String,
    pub api_container: String,
    /// Nothing needed to change.
    pub up_to_date: bool,
    /// `https://DOMAIN[:PORT]`.
    pub url: String,
    /// `http://DOMAIN[:PORT]`, which redirects to `url`.
    pub http_url: String,
    /// The status and body of `/health` through nginx, when the deploy changed something.
    pub proof: Option<(u16, String)>,
    pub certificate: CertStep,
}

/// Who the deploy acts as: the stack's id, given to the directory now when it has none
/// (a directory of an earlier release: [`run`] then adopts its containers). A dry run
/// writes nothing and plans as a fresh id would.
pub fn owner(stack: &mut Stack, dry_run: bool, progress: &dyn Progress) -> Result<Owner> {
    if let Some(owner) = stack.owner() {
        return Ok(owner);
    }
    if dry_run {
        return Ok(Owner::new(
            crate::config::identity::StackId::random(),
            stack.dir.clone(),
            &stack.config.domain,
        ));
    }
    let (owner, _) = stack.ensure_owner()?;
    progress.note(&format!(
        "gave {} the stack id {} ({})",
        stack.dir.display(),
        owner.id,
        crate::config::identity::STACK_FILE
    ));
    Ok(owner)
}

/// Deploys `loaded` as `owner`: prepares the images, observes the engine, plans the
/// rollout, and (unless `options.dry_run`) carries it out, proves it and runs the
/// certificate step.
pub async fn run(
    loaded: &Stack,
    owner: &Owner,
    options: &Options,
    source: ImageSource,
    progress: &mut dyn Progress,
) -> Result<Report> {
    let dir = loaded.dir.as_path();
    let config = &loaded.config;
    // Where the certificate comes from, decided before anything changes (bad
    // certificate files are refused here).
    let cert_source = CertSource::of(loaded, options)?;
    let docker = docker::connect().await?;
    let project = owner.project.as_str();

    // The API image.
    let api_image = match source {
        ImageSource::Existing(reference) => {
            if apply::image_id(&docker, &reference).await?.is_none() {
                bail!("image {reference} is not on this host\n`docker images` lists what is; elior keeps the last {KEEP_API_IMAGES} API builds");
            }
            reference
        }
        ImageSource::Build => {
            let binary =
                std::env::current_exe().context("failed to find the running elior binary")?;
            if options.dry_run {
                image::planned_reference(config.api_image.as_str(), &binary)?
            } else {
                progress.begin("building the API image from this binary");
                let built =
                    image::ensure_api_image(&docker, config.api_image.as_str(), &binary).await?;
                progress.end();
                if !built.built {
                    progress.note(&format!(
                        "api image {} exists; not rebuilt",
                        built.reference
                    ));
                }
                built.reference
            }
        }
    };
    let proxy_image = config.proxy_image.as_str().to_string();
    if !options.dry_run {
        ensure_proxy_image(&docker, &proxy_image, progress).await?;
        ensure_bootstrap_certificate(dir, config.domain.as_str(), progress)?;
        prepare_data_dirs(dir, progress);
    }

    // Desired state, from the compose file.
    let mut stack = compose::load(dir, &loaded.raw)?;
    for spec in &mut stack.services {
        if ![API_SERVICE, PROXY_SERVICE].contains(&spec.service.as_str()) {
            bail!(
                "{}: service {} is not one elior deploys (it runs {API_SERVICE} and {PROXY_SERVICE})\nremove it from the compose file or run `elior render`",
                compose::COMPOSE_FILE,
                spec.service
            );
        }
        if spec.service == API_SERVICE {
            // The compose file names API_IMAGE; the container runs the content-hash tag,
            // so rollback can return to an exact earlier build.
            spec.image = api_image.clone();
        }
        spec.image_id = apply::image_id(&docker, &spec.image)
            .await?
            .unwrap_or_default();
    }
    let api_spec = stack
        .services
        .iter()
        .find(|s| s.service == API_SERVICE)
        .ok_or_else(|| anyhow!("{} has no {API_SERVICE} service", compose::COMPOSE_FILE))?;
    let api_container = api_spec.container_name(project);

    // nginx.conf as `elior render` writes it, with the upstream host swappable: deploy
    // points nginx at one container by name during a swap.
    let port = config.serve.bind.port();
    let templates = Templates::embedded();
    let render_proxy = |host: &str| -> Result<String> {
        let upstream = Upstream::new(host, port).map_err(|e| anyhow!(e))?;
        render::render_stack(config, &templates, &upstream)?
            .into_iter()
            .find(|f| f.path == paths::NGINX_CONF)
            .map(|f| f.contents)
            .ok_or_else(|| anyhow!("render produced no {}", paths::NGINX_CONF))
    };
    let proxy = apply::ProxyConfig {
        host_path: dir.join(paths::NGINX_CONF),
        container_path: format!("{}/nginx.conf", paths::NGINX_MOUNT),
        render: &render_proxy,
    };
    let steady_proxy_config = render_proxy(API_SERVICE)?;

    // Containers an earlier release deployed from this directory are adopted: replaced
    // by ones that carry the stack id (issue 14).
    let legacy = docker::stacks::legacy_containers(&docker, config.domain.as_str(), dir).await?;
    let mut containers = apply::observe(&docker, owner).await?;
    containers.extend(apply::observe_summaries(&docker, legacy, true).await?);
    let observed = Observed {
        containers,
        networks: apply::observe_networks(&docker, owner).await?,
        proxy_config_differs: std::fs::read_to_string(&proxy.host_path).ok().as_deref()
            != Some(steady_proxy_config.as_str()),
    };
    // The rollout, as data.
    let plan = containers::plan(project, &stack.networks, &stack.services, &observed);

    if options.dry_run {
        return Ok(Report::DryRun(plan));
    }
    let url = format!(
        "https://{}{}",
        config.domain.url_host(),
        port_suffix(config.https_port)
    );
    let http_url = format!(
        "http://{}{}",
        config.domain.url_host(),
        if config.http_port == 80 {
            String::new()
        } else {
            format!(":{}", config.http_port)
        }
    );
    let outcome = |proof, certificate| Outcome {
        project: project.to_string(),
        api_image: api_image.clone(),
        api_container: api_container.clone(),
        up_to_date: plan.is_noop(),
        url: url.clone(),
        http_url: http_url.clone(),
        proof,
        certificate,
    };
    if plan.is_noop() {
        let certificate = certificate_step(loaded, owner, &cert_source, &docker, progress).await?;
        return Ok(Report::Done(outcome(None, certificate)));
    }
    for line in plan.render().lines().filter(|l| !l.contains(": keep")) {
        progress.note(&format!("plan: {line}"));
    }
    let names: Vec<String> = plan.services.iter().map(|s| s.container.clone()).collect();
    docker::stacks::refuse_conflicts(
        &docker,
        owner,
        &[config.http_port, config.https_port],
        &names,
    )
    .await?;
    docker::ports::preflight_ports(&plan, &stack.services)?;
    let target = apply::Target {
        owner,
        networks: &stack.networks,
        specs: &stack.services,
        proxy: &proxy,
        health_timeout: options.health_timeout,
    };
    apply::execute(&docker, &target, &plan, &mut *progress).await?;
    if observed.containers.iter().any(|c| c.legacy) {
        for network in
            docker::stacks::remove_unused_legacy_networks(&docker, config.domain.as_str()).await
        {
            progress.note(&format!("removed network {network} of the adopted stack"));
        }
    }

    progress.begin(&format!("proving {url}/health through nginx"));
    let response = prove(dir, config.domain.as_str(), config.https_port).await?;
    progress.end();
    let proof = Some((response.status, response.body.trim().to_string()));
    if let Err(e) = prune_api_images(&docker, config.api_image.as_str(), &api_image).await {
        progress.note(&format!("warning: {e:#}"));
    }
    let certificate = certificate_step(loaded, owner, &cert_source, &docker, progress).await?;
    Ok(Report::Done(outcome(proof, certificate)))
}

/// The certificate step after nginx serves the bootstrap (or current) certificate:
/// `source` carried out through this host's nginx container. A CA failure is reported
/// (the stack keeps serving what it served), not returned as an error.
async fn certificate_step(
    loaded: &Stack,
    owner: &Owner,
    source: &CertSource,
    docker: &Docker,
    progress: &dyn Progress,
) -> Result<CertStep> {
    let config = &loaded.config;
    let paths = crate::tls::files::StackPaths::new(&loaded.dir);
    let domain = config.domain.as_str();
    let nginx = || async {
        docker::proxy::StackNginx::find(docker, owner, config.https_port)
            .await?
            .ok_or_else(|| anyhow!("the nginx container of {domain} is not running"))
    };
    match source {
        CertSource::Keep(kept) => Ok(kept.step(&paths, domain, progress)),
        CertSource::UserPair(pair) => pair.serve(&paths, domain, nginx).await,
        CertSource::Acme(settings) => {
            let nginx = nginx().await?;
            let note = |line: &str| progress.note(line);
            let options = crate::tls::issue::IssueOptions {
                force: false,
                ask_ari: false,
            };
            let issued =
                crate::tls::issue::issue_if_due(&nginx, &paths, settings, options, &note).await;
            Ok(CertStep::from_ca(&paths, issued))
        }
    }
}

fn port_suffix(https_port: u16) -> String {
    if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    }
}

/// GET https://DOMAIN/health at 127.0.0.1:HTTPS_PORT with the certificate on disk pinned;
/// retried for a few seconds while nginx comes up. Fails unless the answer is 200 with
/// the security headers.
pub async fn prove(
    dir: &Path,
    domain: &str,
    https_port: u16,
) -> Result<crate::probe::https::Response> {
    let client = PinnedClient::from_pem_file(&dir.join(paths::CERT_FILE))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], https_port));
    let deadline = Instant::now() + Duration::from_secs(15);
    let response = loop {
        match client
            .get(addr, domain, "/health", Duration::from_secs(5))
            .await
        {
            Ok(r) if r.status == 200 => break r,
            Ok(r) if Instant::now() >= deadline => bail!(
                "https://{domain}/health at {addr} answered {} instead of 200: {}",
                r.status,
                r.body.trim()
            ),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!(
                    "the stack runs but does not answer over HTTPS\nrun `{}` to see why",
                    crate::config::hint::command(Some(dir), "logs nginx")
                )))
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    for header in [
        "strict-transport-security",
        "x-content-type-options",
        "x-frame-options",
    ] {
        if response.header(header).is_none() {
            bail!(
                "https://{domain}/health answered without the {header} header\nis nginx/nginx.conf the one `{}` writes?",
                crate::config::hint::command(Some(dir), "render")
            );
        }
    }
    Ok(response)
}

/// The proxy image must be on the engine; if not, it is pulled (with progress).
async fn ensure_proxy_image(
    docker: &Docker,
    reference: &str,
    progress: &mut dyn Progress,
) -> Result<()> {
    ensure_image(docker, reference, "PROXY_IMAGE", "proxy", progress).await
}

/// An image the stack runs but does not build (`key` names the setting, such as
/// PROXY_IMAGE or POSTGRES_IMAGE): on the engine already, or pulled now (with progress).
pub(crate) async fn ensure_image(
    docker: &Docker,
    reference: &str,
    key: &str,
    what: &str,
    progress: &mut dyn Progress,
) -> Result<()> {
    if apply::image_id(docker, reference).await?.is_some() {
        return Ok(());
    }
    progress.begin(&format!("pulling {reference}"));
    let mut stream = docker.create_image(
        Some(bollard::query_parameters::CreateImageOptions {
            from_image: Some(reference.to_string()),
            ..Default::default()
        }),
        None,
        None,
    );
    while let Some(item) = stream.next().await {
        let failed = match item {
            Err(e) => Some(e.to_string()),
            Ok(info) => info.error_detail.and_then(|d| d.message),
        };
        if let Some(error) = failed {
            progress.end();
            bail!(
                "the {what} image {reference} is not on this host and cannot be pulled: {error}\nload it with `docker load -i FILE`, or set {key} in .env.production to an image this host has"
            );
        }
    }
    progress.end();
    Ok(())
}

/// Writes a self-signed certificate for the domain when nginx/ssl/ has none, so nginx can
/// start on 443 before a CA issued anything.
pub(crate) fn ensure_bootstrap_certificate(
    dir: &Path,
    domain: &str,
    progress: &dyn Progress,
) -> Result<()> {
    let tls_paths = crate::tls::files::StackPaths::new(dir);
    if tls_paths.cert().exists() && tls_paths.key().exists() {
        return Ok(());
    }
    let issued = crate::tls::selfsigned::generate(domain, 90)?;
    crate::tls::selfsigned::write(&tls_paths, &issued)?;
    progress.note(&format!(
        "wrote a self-signed bootstrap certificate for {domain} to {} (key mode 0600)",
        tls_paths.ssl_dir().display()
    ));
    Ok(())
}

/// The API runs as uid 10001 and writes data/ and uploads/.
fn prepare_data_dirs(dir: &Path, progress: &dyn Progress) {
    for sub in ["data", "uploads", "frontend"] {
        let path = dir.join(sub);
        let _ = std::fs::create_dir_all(&path);
        if sub == "frontend" {
            continue;
        }
        if let Err(e) =
            std::os::unix::fs::chown(&path, Some(render::API_UID), Some(render::API_UID))
        {
            progress.note(&format!(
                "warning: could not give {} to uid {} (the API's user): {e}",
                path.display(),
                render::API_UID
            ));
        }
    }
}

/// How many API images are kept for rollback, the running one included.
pub const KEEP_API_IMAGES: usize = 3;

/// Removes API images of this repository beyond the newest [`KEEP_API_IMAGES`], never the
/// one just deployed; images a container still uses are refused by the engine and kept.
async fn prune_api_images(docker: &Docker, api_image: &str, current: &str) -> Result<()> {
    let images = api_images(docker, api_image).await?;
    for old in images
        .iter()
        .filter(|i| i.reference != current)
        .skip(KEEP_API_IMAGES - 1)
    {
        let _ = docker
            .remove_image(
                &old.reference,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    }
    Ok(())
}

/// An API image on the engine.
pub struct ApiImageInfo {
    pub reference: String,
    pub created: i64,
}

/// The content-hash tags of API_IMAGE's repository, newest first.
pub async fn api_images(docker: &Docker, api_image: &str) -> Result<Vec<ApiImageInfo>> {
    let repo = image::repository(api_image);
    let list = docker
        .list_images(Some(bollard::query_parameters::ListImagesOptions {
            filters: Some(docker::label_filter(&[(image::LABEL_IMAGE_ROLE, "api")])),
            ..Default::default()
        }))
        .await
        .context("failed to list images")?;
    let mut found = Vec::new();
    for summary in list {
        for tag in &summary.repo_tags {
            if image::repository(tag) == repo
                && summary.labels.contains_key(image::LABEL_CONTENT_HASH)
                && !tag.ends_with(":latest")
            {
                found.push(ApiImageInfo {
                    reference: tag.clone(),
                    created: summary.created,
                });
            }
        }
    }
    found.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then(b.reference.cmp(&a.reference))
    });
    Ok(found)
}
