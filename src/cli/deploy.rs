//! `elior deploy DOMAIN`: takes a directory to a running, healthy, HTTPS-served stack on
//! this host's Docker Engine and proves it; again with nothing changed, it does nothing.
//! Also the shared path of `update` and `rollback` ([`deploy_stack`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, FromArgMatches};

use crate::config::model::Stack;
pub use crate::deploy::ImageSource;
use crate::deploy::{CertStep, Outcome, Report};
use crate::docker::{apply, compose};
use crate::plan::render::{self, Templates, Upstream};

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
/// Swarm mode (MODE=swarm in .env.production, or --swarm): the same stack as services
/// on the Docker Swarm this engine manages, through the engine's Swarm API: API_REPLICAS
/// API tasks (default 2) behind nginx (one task per node, ports published in host mode),
/// rolled by the engine one task at a time, start-first and health-gated, with automatic
/// rollback. The database is DATABASE_URL when it names PostgreSQL, else a postgres
/// service (POSTGRES_IMAGE) on the node labelled elior.db=true. JWT_SECRET, the database
/// password, nginx.conf and the TLS pair are swarm secrets. `elior update`, `rollback`,
/// `scale`, `status`, `logs` and `down` follow the mode. ACME works there too: every
/// nginx task answers HTTP-01 from its config (the account key's thumbprint), and a new
/// certificate rolls nginx as a new secret version, one node at a time.
///
/// Exit status: 0 deployed, 1 deployed but the CA certificate was not obtained, 2 error.
///
/// Examples:
///     elior deploy fit.example.com --dir /srv/elior
///     elior deploy fit.example.com --dir /srv/elior --dry-run   # print the plan only
///     elior deploy fit.example.com --cert fullchain.pem --key privkey.pem
///     elior deploy 203.0.113.7 --self-signed
///     elior deploy fit.example.com --dir /srv/elior --swarm   # API_REPLICAS tasks on a swarm
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
    /// Deploy onto the Docker Swarm this engine manages, as MODE=swarm in .env.production
    /// does: API_REPLICAS API tasks, nginx, PostgreSQL (see `elior deploy --help`)
    #[arg(long)]
    pub swarm: bool,
}

impl DeployOptions {
    /// The deploy module's options.
    pub fn deploy_options(&self) -> crate::deploy::Options {
        crate::deploy::Options {
            dry_run: self.dry_run,
            health_timeout: Duration::from_secs(self.timeout),
            self_signed: self.self_signed,
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

impl DeployArgs {
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let dir = ctx.dir();
        if !stack_exists(dir) {
            if self.options.dry_run {
                outln!(
                    "{} has no stack: deploy would run `elior init {}` and `elior render`, then create every network and container",
                    dir.display(),
                    self.domain
                );
                return Ok(ExitCode::SUCCESS);
            }
            run_subcommand::<super::init::InitArgs>(ctx, &["init", &self.domain])?;
        }
        let wanted = crate::config::domain::parse(&self.domain)
            .map_err(|m| anyhow!("DOMAIN argument {m}"))?;
        deploy_stack(
            ctx,
            &self.options,
            Some(&wanted),
            &format!("elior deploy {wanted}"),
            "deploy",
            ImageSource::Build,
        )
    }
}

fn stack_exists(dir: &Path) -> bool {
    dir.join(crate::config::stack::ENV_FILE).exists()
}

/// Runs another subcommand of this binary in-process (init, render), as the user would.
fn run_subcommand<A: Args + FromArgMatches + Runnable>(
    ctx: &super::Context,
    argv: &[&str],
) -> Result<()> {
    let command = A::augment_args(clap::Command::new("elior"));
    let matches = command
        .try_get_matches_from(argv)
        .map_err(|e| anyhow!("{e}"))?;
    let args = A::from_arg_matches(&matches).map_err(|e| anyhow!("{e}"))?;
    if args.run_it(ctx)? != ExitCode::SUCCESS {
        bail!("`elior {}` failed", argv.join(" "));
    }
    Ok(())
}

/// The subcommands deploy runs on the user's behalf.
trait Runnable {
    fn run_it(self, ctx: &super::Context) -> Result<ExitCode>;
}
impl Runnable for super::init::InitArgs {
    fn run_it(self, ctx: &super::Context) -> Result<ExitCode> {
        self.run(ctx)
    }
}

/// Progress of the steps on stderr: a spinner with the elapsed time on a terminal, plain
/// lines otherwise (CI logs, pipes), nothing with -q.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: String,
    started: Instant,
    tty: bool,
    quiet: bool,
}

impl Progress {
    pub fn new(ctx: &super::Context) -> Progress {
        Progress {
            bar: None,
            what: String::new(),
            started: Instant::now(),
            tty: ctx.progress(),
            quiet: ctx.quiet,
        }
    }
}

impl crate::deploy::Progress for Progress {
    fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.quiet => {}
            None => eprintln!("{line}"),
        }
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
        } else if !self.quiet {
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
            Some(bar) => {
                // The spinner's template adds `({elapsed})`: the finished line says the
                // time once, as the plain lines do (issue 20: it said it twice).
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                bar.finish_with_message(format!("done: {line}"));
            }
            None if self.quiet => {}
            None => eprintln!("done: {line}"),
        }
    }
}

/// The deploy of an existing stack directory: plan, apply, prove. `command` is recorded
/// in the lock and `action` in the audit log.
pub fn deploy_stack(
    ctx: &super::Context,
    options: &DeployOptions,
    domain: Option<&crate::config::domain::Domain>,
    command: &str,
    action: &str,
    source: ImageSource,
) -> Result<ExitCode> {
    let dir = ctx
        .dir()
        .canonicalize()
        .with_context(|| format!("stack directory {} does not exist", ctx.dir().display()))?;
    if !options.dry_run {
        crate::backup::recover_interrupted_restore(&dir)?;
    }
    // The stack, loaded once: every later step takes its settings from it.
    let mut stack = Stack::load(&dir)?;
    super::config::print_warnings(&stack.config);
    if let Some(wanted) = domain.filter(|d| **d != stack.config.domain) {
        bail!(
            "{} holds the stack of {}, not {wanted}\nrun `{}`, or change DOMAIN in {} and run `{}`",
            dir.display(),
            stack.config.domain,
            ctx.command(&format!("deploy {}", stack.config.domain)),
            dir.join(crate::config::stack::ENV_FILE).display(),
            ctx.command("render")
        );
    }
    if options.swarm || stack.config.mode == crate::config::stack::Mode::Swarm {
        return super::swarm::deploy(ctx, options, stack, command, action, source);
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
    let mut progress = Progress::new(ctx);
    let owner = crate::deploy::owner(&mut stack, options.dry_run, &progress)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let started = Instant::now();
    let result = runtime.block_on(crate::deploy::run(
        &stack,
        &owner,
        &options.deploy_options(),
        source,
        &mut progress,
    ));
    match result {
        Ok(Report::DryRun(plan)) => Ok(print_dry_run(&plan.render(), plan.is_noop())),
        Ok(Report::Done(outcome)) => {
            print_outcome(&outcome, ctx);
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
                CertStep::Failed { .. } => ExitCode::from(super::EXIT_CHECK_FAILED),
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

/// The summary of a deploy on stdout (and a failed CA step's explanation on stderr).
fn print_outcome(outcome: &Outcome, ctx: &super::Context) {
    let Outcome {
        project,
        api_image,
        url,
        ..
    } = outcome;
    match &outcome.proof {
        None => outln!("up to date: {project} runs {api_image} at {url}"),
        Some((status, body)) => {
            outln!("deployed {project}: {api_image} healthy behind nginx");
            outln!("  {url}/health -> {status} {body}");
            outln!("  {url}/");
            outln!("  {} redirects to HTTPS", outcome.http_url);
        }
    }
    print_certificate(&outcome.certificate, ctx);
}

/// A dry run's plan and its last line, for a single host and a swarm alike.
pub(super) fn print_dry_run(plan: &str, up_to_date: bool) -> ExitCode {
    out!("{plan}");
    outln!(
        "{}",
        if up_to_date {
            "up to date: nothing would change"
        } else {
            "dry run: nothing was changed"
        }
    );
    ExitCode::SUCCESS
}

/// The certificate step's line on stdout (and a failed CA step's explanation on stderr),
/// for a single host and a swarm alike.
pub(super) fn print_certificate(step: &CertStep, ctx: &super::Context) {
    match step {
        CertStep::Installed {
            from,
            serial,
            not_after,
        } => outln!("  serving {from}: serial {serial}, valid until {not_after}"),
        CertStep::Failed { error, served } => {
            eprintln!(
                "elior: the stack is deployed, but no certificate was obtained from the CA: {error}\nnginx keeps serving {served}; fix the cause, then run `{}` (or deploy again)",
                ctx.command("cert issue")
            );
            outln!("  certificate: NOT obtained from the CA; serving {served}");
        }
        CertStep::Kept(_) | CertStep::NotDue => {}
    }
}
