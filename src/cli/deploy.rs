//! `elior deploy DOMAIN`: takes a directory to a running, healthy, HTTPS-served stack on
//! this host's Docker Engine and proves it; again with nothing changed, it does nothing.
//! Also the shared path of `update` and `rollback` ([`deploy_stack`]).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bollard::Docker;
use clap::{Args, FromArgMatches};
use futures_util::StreamExt;

use crate::config::identity::Owner;
use crate::config::model::Stack;
use crate::docker::{self, apply, compose, image};
use crate::plan::containers::{self, Observed, API_SERVICE, PROXY_SERVICE};
use crate::plan::render::{self, paths, Templates, Upstream};
use crate::probe::https::PinnedClient;

/// Deploy the stack to this host's Docker Engine, health-gated, and prove it over HTTPS.
///
/// On a directory without a stack it runs `elior init DOMAIN` and `elior render` first.
/// Then: builds the API image from this very binary (FROM scratch, tagged by content
/// hash; skipped when it exists), makes a self-signed bootstrap certificate when
/// nginx/ssl/ has none, creates networks and containers exactly as
/// docker-compose.prod.yml says, waits until the API is healthy, starts or reloads nginx,
/// and GETs https://DOMAIN/health through it with the certificate pinned.
///
/// Run again with nothing changed, it does nothing and says "up to date". With a changed
/// binary or config, the new API container starts beside the old one, nginx switches to
/// it with `nginx -t` and a graceful reload once it is healthy, and the old one is drained
/// and stopped: no request fails. A new version that does not become healthy is removed
/// with its logs printed, the old one keeps serving, and deploy exits non-zero.
///
/// Certificates: nginx always starts with the certificate in nginx/ssl/ (a self-signed
/// bootstrap one when there is none). Then, for a DOMAIN that is not localhost or an IP
/// and with ACME_EMAIL set, deploy obtains a CA certificate over ACME HTTP-01 (as
/// `elior cert issue`; nothing is asked of the CA while the current one is not due),
/// reloads nginx and checks that it is served. --cert/--key serve your own files instead
/// (checked first: PEM parses, key matches, names cover DOMAIN), --self-signed skips the
/// CA. When the CA step fails, the stack stays up serving the previous certificate and
/// deploy exits 1 (2 is any other failure), so a script can tell the two apart.
///
/// Exit status: 0 deployed, 1 deployed but the CA certificate was not obtained, 2 error.
///
/// Examples:
///     elior deploy fit.example.com --dir /srv/elior
///     elior deploy fit.example.com --dir /srv/elior --dry-run   # print the plan only
///     elior deploy fit.example.com --cert fullchain.pem --key privkey.pem
///     elior deploy 203.0.113.7 --self-signed
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct DeployArgs {
    /// The server's public name, such as fit.example.com
    domain: String,
    #[command(flatten)]
    options: DeployOptions,
}

/// Options shared by deploy, update and rollback.
#[derive(Args, Clone)]
pub struct DeployOptions {
    /// The stack directory
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub dir: PathBuf,
    /// Print the plan (create, replace or keep, with the reason) and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds a new container gets to become healthy
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub timeout: u64,
    /// Do not ask a CA: keep the certificate in nginx/ssl/ (a self-signed one is made
    /// when there is none)
    #[arg(long, conflicts_with = "cert")]
    pub self_signed: bool,
    /// Serve this certificate chain (PEM) instead of asking a CA; needs --key
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl DeployArgs {
    pub fn run(self) -> Result<ExitCode> {
        crate::logging::init("warn", crate::logging::Format::Human);
        let dir = &self.options.dir;
        if !stack_exists(dir) {
            if self.options.dry_run {
                println!(
                    "{} has no stack: deploy would run `elior init {}` and `elior render`, then create every network and container",
                    dir.display(),
                    self.domain
                );
                return Ok(ExitCode::SUCCESS);
            }
            run_subcommand::<super::init::InitArgs>(&[
                "init",
                &self.domain,
                "--dir",
                &dir.to_string_lossy(),
            ])?;
        }
        let wanted = crate::config::domain::parse(&self.domain)
            .map_err(|m| anyhow!("DOMAIN argument {m}"))?;
        deploy_stack(
            &self.options,
            Some(&wanted),
            &format!("elior deploy {wanted}"),
            "deploy",
            ImageSource::Build,
        )
    }
}

/// Where the API image comes from.
pub enum ImageSource {
    /// Built from the running binary.
    Build,
    /// An image the engine already has (rollback).
    Existing(String),
}

fn stack_exists(dir: &Path) -> bool {
    dir.join(crate::config::stack::ENV_FILE).exists()
}

/// Runs another subcommand of this binary in-process (init, render), as the user would.
fn run_subcommand<A: Args + FromArgMatches + Runnable>(argv: &[&str]) -> Result<()> {
    let command = A::augment_args(clap::Command::new("elior"));
    let matches = command
        .try_get_matches_from(argv)
        .map_err(|e| anyhow!("{e}"))?;
    let args = A::from_arg_matches(&matches).map_err(|e| anyhow!("{e}"))?;
    if args.run_it()? != ExitCode::SUCCESS {
        bail!("`elior {}` failed", argv.join(" "));
    }
    Ok(())
}

/// The subcommands deploy runs on the user's behalf.
trait Runnable {
    fn run_it(self) -> Result<ExitCode>;
}
impl Runnable for super::init::InitArgs {
    fn run_it(self) -> Result<ExitCode> {
        self.run()
    }
}

/// Progress of the steps on stderr: a spinner with the elapsed time on a terminal, plain
/// lines otherwise (CI logs, pipes).
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: String,
    started: Instant,
    tty: bool,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            bar: None,
            what: String::new(),
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub fn note(&self, line: &str) {
        eprintln!("{line}");
    }
}

impl apply::Steps for Progress {
    fn begin(&mut self, what: &str) {
        self.what = what.to_string();
        self.started = Instant::now();
        if self.tty {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.set_message(what.to_string());
            bar.enable_steady_tick(Duration::from_millis(100));
            self.bar = Some(bar);
        } else {
            eprintln!("{what} ...");
        }
    }

    fn end(&mut self) {
        let line = format!(
            "{} ({:.1}s)",
            self.what,
            self.started.elapsed().as_secs_f64()
        );
        match self.bar.take() {
            Some(bar) => bar.finish_with_message(line),
            None => eprintln!("done: {line}"),
        }
    }
}

/// What a deploy finished with, for the summary and the audit log.
struct Outcome {
    api_image: String,
    api_container: String,
    up_to_date: bool,
    certificate: CertStep,
}

/// The deploy of an existing stack directory: plan, apply, prove. `command` is recorded
/// in the lock and `action` in the audit log.
pub fn deploy_stack(
    options: &DeployOptions,
    domain: Option<&crate::config::domain::Domain>,
    command: &str,
    action: &str,
    source: ImageSource,
) -> Result<ExitCode> {
    let dir = options
        .dir
        .canonicalize()
        .with_context(|| format!("stack directory {} does not exist", options.dir.display()))?;
    if !options.dry_run {
        crate::backup::recover_interrupted_restore(&dir)?;
    }
    // The stack, loaded once: every later step takes its settings from it.
    let mut stack = Stack::load(&dir)?;
    super::config::print_warnings(&stack.config);
    if let Some(wanted) = domain.filter(|d| **d != stack.config.domain) {
        bail!(
            "{} holds the stack of {}, not {wanted}\nrun `elior deploy {}` there, or change DOMAIN in {} and run `elior render`",
            dir.display(),
            stack.config.domain,
            stack.config.domain,
            dir.join(crate::config::stack::ENV_FILE).display()
        );
    }
    if !dir.join(compose::COMPOSE_FILE).exists() && !options.dry_run {
        let config = &stack.config;
        let files =
            render::render_stack(config, &Templates::embedded(), &Upstream::service(config))?;
        super::render::write_files(&dir, &files)?;
    }
    let lock = if options.dry_run {
        None
    } else {
        Some(crate::lock::DeployLock::acquire(&dir, command)?)
    };
    // A directory without an id gets one now (an earlier release's stack: its
    // containers are adopted below). A dry run invents none and writes nothing.
    let owner = match (options.dry_run, stack.owner()) {
        (_, Some(owner)) => owner,
        (true, None) => Owner::new(
            crate::config::identity::StackId::random(),
            stack.dir.clone(),
            &stack.config.domain,
        ),
        (false, None) => {
            let (owner, _) = stack.ensure_owner()?;
            eprintln!(
                "gave {} the stack id {} ({})",
                dir.display(),
                owner.id,
                crate::config::identity::STACK_FILE
            );
            owner
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let started = Instant::now();
    let result = runtime.block_on(deploy_async(&dir, &stack, &owner, options, source));
    match result {
        Ok(None) => Ok(ExitCode::SUCCESS),
        Ok(Some(outcome)) => {
            let _ = crate::lock::audit(
                &dir,
                action,
                serde_json::json!({
                    "command": command,
                    "result": if outcome.up_to_date { "up to date" } else { "ok" },
                    "api_image": outcome.api_image,
                    "api_container": outcome.api_container,
                    "certificate": outcome.certificate.describe(),
                    "seconds": started.elapsed().as_secs_f64(),
                }),
            );
            drop(lock);
            Ok(match outcome.certificate {
                CertStep::Failed(_) => ExitCode::from(super::EXIT_CHECK_FAILED),
                _ => ExitCode::SUCCESS,
            })
        }
        Err(err) => {
            let _ = crate::lock::audit(
                &dir,
                action,
                serde_json::json!({ "command": command, "result": "failed", "error": format!("{err:#}") }),
            );
            Err(err)
        }
    }
}

/// `Ok(None)` for a dry run.
async fn deploy_async(
    dir: &Path,
    loaded: &Stack,
    owner: &Owner,
    options: &DeployOptions,
    source: ImageSource,
) -> Result<Option<Outcome>> {
    let config = &loaded.config;
    // Bad certificate files are refused before anything changes.
    let own_pair = own_certificate(options, config.domain.as_str())?;
    let mut progress = Progress::new();
    let steps: &mut dyn apply::Steps = &mut progress;
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
                steps.begin("building the API image from this binary");
                let built =
                    image::ensure_api_image(&docker, config.api_image.as_str(), &binary).await?;
                steps.end();
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
        ensure_proxy_image(&docker, &proxy_image, &mut progress).await?;
        ensure_bootstrap_certificate(dir, config.domain.as_str(), &progress)?;
        prepare_data_dirs(dir, &progress);
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
    let plan = containers::plan(project, &stack.networks, &stack.services, &observed);

    if options.dry_run {
        print!("{}", plan.render());
        println!(
            "{}",
            if plan.is_noop() {
                "up to date: nothing would change"
            } else {
                "dry run: nothing was changed"
            }
        );
        return Ok(None);
    }
    let url = format!(
        "https://{}{}",
        config.domain.as_str(),
        port_suffix(config.https_port)
    );
    if plan.is_noop() {
        println!("up to date: {project} runs {api_image} at {url}");
        let certificate = certificate_step(
            dir,
            loaded,
            owner,
            options,
            own_pair.as_ref(),
            &docker,
            &progress,
        )
        .await?;
        return Ok(Some(Outcome {
            api_image,
            api_container,
            up_to_date: true,
            certificate,
        }));
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
        health_timeout: Duration::from_secs(options.timeout),
    };
    apply::execute(&docker, &target, &plan, &mut progress).await?;
    if observed.containers.iter().any(|c| c.legacy) {
        for network in
            docker::stacks::remove_unused_legacy_networks(&docker, config.domain.as_str()).await
        {
            progress.note(&format!("removed network {network} of the adopted stack"));
        }
    }

    progress_begin(
        &mut progress,
        &format!("proving {url}/health through nginx"),
    );
    let response = prove(dir, config.domain.as_str(), config.https_port).await?;
    apply::Steps::end(&mut progress);
    println!("deployed {project}: {api_image} healthy behind nginx");
    println!(
        "  {url}/health -> {} {}",
        response.status,
        response.body.trim()
    );
    println!("  {url}/");
    println!(
        "  http://{}{} redirects to HTTPS",
        config.domain.as_str(),
        if config.http_port == 80 {
            String::new()
        } else {
            format!(":{}", config.http_port)
        }
    );
    if let Err(e) = prune_api_images(&docker, config.api_image.as_str(), &api_image).await {
        progress.note(&format!("warning: {e:#}"));
    }
    let certificate = certificate_step(
        dir,
        loaded,
        owner,
        options,
        own_pair.as_ref(),
        &docker,
        &progress,
    )
    .await?;
    Ok(Some(Outcome {
        api_image,
        api_container,
        up_to_date: false,
        certificate,
    }))
}

/// What the certificate step after the containers ended with.
enum CertStep {
    /// The certificate in nginx/ssl/ stays (self-signed or not, and no CA asked).
    Kept(&'static str),
    /// A CA certificate is in place and not due.
    NotDue,
    /// A new certificate (from the CA, or the user's files) is served.
    Installed(String),
    /// The CA step failed; the previous certificate keeps serving.
    Failed(String),
}

impl CertStep {
    fn describe(&self) -> String {
        match self {
            CertStep::Kept(why) => format!("kept ({why})"),
            CertStep::NotDue => "not due".to_string(),
            CertStep::Installed(serial) => format!("installed serial {serial}"),
            CertStep::Failed(err) => format!("failed: {err}"),
        }
    }
}

/// The user's --cert/--key, read and checked against DOMAIN.
struct OwnPair {
    chain: String,
    key: String,
}

fn own_certificate(options: &DeployOptions, domain: &str) -> Result<Option<OwnPair>> {
    let (Some(cert), Some(key)) = (&options.cert, &options.key) else {
        return Ok(None);
    };
    let read = |path: &Path| -> Result<String> {
        String::from_utf8(crate::tls::files::read(path)?)
            .with_context(|| format!("{} is not PEM text", path.display()))
    };
    let pair = OwnPair {
        chain: read(cert)?,
        key: read(key)?,
    };
    crate::tls::inspect::validate_pair(pair.chain.as_bytes(), pair.key.as_bytes(), domain)
        .with_context(|| {
            format!(
                "--cert {} / --key {} cannot serve {domain}; nothing was changed",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Some(pair))
}

/// After nginx serves the bootstrap (or current) certificate: install the user's pair,
/// or obtain a CA certificate when DOMAIN is public and ACME_EMAIL is set. A CA failure
/// is reported (the stack keeps serving what it served), not returned as an error.
async fn certificate_step(
    dir: &Path,
    loaded: &Stack,
    owner: &Owner,
    options: &DeployOptions,
    own_pair: Option<&OwnPair>,
    docker: &Docker,
    progress: &Progress,
) -> Result<CertStep> {
    let config = &loaded.config;
    let paths = crate::tls::files::StackPaths::new(dir);
    let domain = config.domain.as_str();
    let nginx = || async {
        docker::proxy::StackNginx::find(docker, owner, config.https_port)
            .await?
            .ok_or_else(|| anyhow!("the nginx container of {domain} is not running"))
    };
    if let Some(pair) = own_pair {
        if crate::tls::files::read(&paths.cert()).ok().as_deref() == Some(pair.chain.as_bytes()) {
            return Ok(CertStep::Kept("your --cert is already served"));
        }
        let nginx = nginx().await?;
        let info =
            crate::tls::install::install_and_verify(&nginx, &paths, &pair.chain, &pair.key, domain)
                .await?;
        println!(
            "  serving your certificate: serial {}, valid until {}",
            info.serial,
            crate::tls::inspect::rfc3339(info.not_after)
        );
        return Ok(CertStep::Installed(info.serial));
    }
    if options.self_signed {
        return Ok(CertStep::Kept("--self-signed"));
    }
    let settings = loaded.certs(false)?;
    if !settings.wants_acme() {
        return Ok(CertStep::Kept("no CA issues for localhost or IP addresses"));
    }
    if settings.email.is_none() {
        progress.note(&format!(
            "note: {domain} keeps the certificate in nginx/ssl/; set ACME_EMAIL in {} for one from a CA",
            paths.env_file().display()
        ));
        return Ok(CertStep::Kept("ACME_EMAIL is not set"));
    }
    let nginx = nginx().await?;
    let note = |line: &str| eprintln!("{line}");
    let options = crate::tls::issue::IssueOptions {
        force: false,
        ask_ari: false,
    };
    match crate::tls::issue::issue_if_due(&nginx, &paths, &settings, options, &note).await {
        Ok(crate::tls::issue::Outcome::NotDue { .. }) => Ok(CertStep::NotDue),
        Ok(crate::tls::issue::Outcome::Issued { names, info, .. }) => {
            println!(
                "  certificate for {} from the CA: serial {}, valid until {}",
                names.join(", "),
                info.serial,
                crate::tls::inspect::rfc3339(info.not_after)
            );
            Ok(CertStep::Installed(info.serial))
        }
        Err(err) => {
            let served = crate::tls::issue::current(&paths)
                .ok()
                .flatten()
                .map(|(_, info)| {
                    if info.self_signed {
                        "the self-signed bootstrap certificate"
                    } else {
                        "the previous certificate"
                    }
                })
                .unwrap_or("the previous certificate");
            eprintln!(
                "elior: the stack is deployed, but no certificate was obtained from the CA: {err:#}\nnginx keeps serving {served}; fix the cause, then run `elior cert issue --dir {}` (or deploy again)",
                dir.display()
            );
            println!("  certificate: NOT obtained from the CA; serving {served}");
            Ok(CertStep::Failed(format!("{err:#}")))
        }
    }
}

fn progress_begin(progress: &mut Progress, what: &str) {
    apply::Steps::begin(progress, what);
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
            Err(e) if Instant::now() >= deadline => return Err(e.context(
                "the stack runs but does not answer over HTTPS\nrun `elior logs nginx` to see why",
            )),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    for header in [
        "strict-transport-security",
        "x-content-type-options",
        "x-frame-options",
    ] {
        if response.header(header).is_none() {
            bail!("https://{domain}/health answered without the {header} header\nis nginx/nginx.conf the one `elior render` writes?");
        }
    }
    Ok(response)
}

/// The proxy image must be on the engine; if not, it is pulled (with progress).
async fn ensure_proxy_image(
    docker: &Docker,
    reference: &str,
    progress: &mut Progress,
) -> Result<()> {
    if apply::image_id(docker, reference).await?.is_some() {
        return Ok(());
    }
    apply::Steps::begin(progress, &format!("pulling {reference}"));
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
            apply::Steps::end(progress);
            bail!(
                "the proxy image {reference} is not on this host and cannot be pulled: {error}\nload it with `docker load -i FILE`, or set PROXY_IMAGE in .env.production to an image this host has"
            );
        }
    }
    apply::Steps::end(progress);
    Ok(())
}

/// Writes a self-signed certificate for the domain when nginx/ssl/ has none, so nginx can
/// start on 443 before a CA issued anything.
fn ensure_bootstrap_certificate(dir: &Path, domain: &str, progress: &Progress) -> Result<()> {
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
fn prepare_data_dirs(dir: &Path, progress: &Progress) {
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
