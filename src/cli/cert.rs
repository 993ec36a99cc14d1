//! `elior cert issue|renew|status`: obtain, renew and inspect the stack's certificate.
//! Wires `tls` (effects) and `plan::certs` (the renewal rule) together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use rand::Rng;
use serde::Serialize;

use crate::docker::proxy::StackNginx;
use crate::plan::certs;
use crate::tls::files::StackPaths;
use crate::tls::inspect::{self, rfc3339, unix_now};
use crate::tls::install::{HostNginx, Proxy};
use crate::tls::issue::{self, IssueOptions, Outcome};
use crate::tls::served;
use crate::tls::settings::CertSettings;

use super::EXIT_CHECK_FAILED;

#[derive(Subcommand)]
pub enum CertCommand {
    Issue(IssueArgs),
    Renew(RenewArgs),
    Status(StatusArgs),
}

impl CertCommand {
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let runtime = crate::docker::runtime()?;
        match self {
            CertCommand::Issue(args) => runtime.block_on(obtain(&args.common, ctx, false, 0)),
            CertCommand::Renew(args) => {
                runtime.block_on(obtain(&args.common, ctx, true, args.jitter))
            }
            CertCommand::Status(args) => runtime.block_on(args.run(ctx)),
        }
    }
}

#[derive(Args)]
struct StackArgs {
    /// Where nginx serves HTTPS, to compare the served certificate
    /// [default: 127.0.0.1:HTTPS_PORT]
    #[arg(long, value_name = "IP:PORT")]
    connect: Option<SocketAddr>,
}

#[derive(Args)]
struct ObtainArgs {
    #[command(flatten)]
    stack: StackArgs,
    /// Use Let's Encrypt's staging directory (untrusted certificates, generous limits)
    #[arg(long)]
    staging: bool,
    /// Replace the certificate even when it is not due
    #[arg(long)]
    force: bool,
    /// Reload a host nginx started as `nginx -p DIR -c FILE` (DIR = the file's folder)
    /// instead of the deployed stack's nginx container
    #[arg(long, value_name = "FILE", env = "ELIOR_NGINX_CONF")]
    nginx_conf: Option<PathBuf>,
}

/// Obtain a certificate for DOMAIN (and www.DOMAIN when it resolves) over ACME HTTP-01.
///
/// Before contacting the CA, checks that DOMAIN resolves and that a probe file placed in
/// nginx/acme/ comes back over http://DOMAIN:HTTP_PORT. The new certificate is written
/// next to the current one, nginx tests and reloads it, and the served serial is
/// compared; on any failure the previous certificate is put back and stays served.
/// Does nothing when a CA certificate is in place and not due (see `renew`).
///
/// The nginx tested and reloaded is the deployed stack's container (found by its deploy
/// labels; `nginx -t` and SIGHUP through the Docker Engine), or a host nginx given with
/// --nginx-conf.
///
/// Swarm mode (MODE=swarm): every nginx task, on any node, answers HTTP-01 from its
/// config as TOKEN.THUMBPRINT (the ACME account key's public thumbprint), so no challenge
/// file has to reach a node. The account is loaded or registered first (an unreachable CA
/// changes nothing), nginx rolls once if its config lacks the thumbprint, and the new
/// certificate, once written to nginx/ssl/, rolls nginx as a new swarm secret version:
/// one node at a time, each node's task stopped before its successor starts (host-mode
/// ports). The new serial must then be served on 127.0.0.1:HTTPS_PORT, else the previous
/// pair is put back and rolled out again. The replaced certificate's secrets are removed.
///
/// Settings (DIR/.env.production; the environment wins): DOMAIN, ACME_EMAIL,
/// ACME_DIRECTORY (default Let's Encrypt), ACME_CA_FILE (PEM roots of a private CA),
/// HTTP_PORT, HTTPS_PORT. ELIOR_RESOLVE=name:ip pins names like curl --resolve.
///
/// Examples:
///     elior cert issue --dir /srv/elior
///     elior cert issue --dir /srv/elior --nginx-conf /srv/elior/nginx/host.conf
///     elior cert issue --staging --force
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct IssueArgs {
    #[command(flatten)]
    common: ObtainArgs,
}

/// Renew the certificate when it is due, else say "not due" and exit 0.
///
/// Due when a third or less of its lifetime is left (30 of 90 days, 15 of 45), earlier
/// when the CA's renewal window (ARI, RFC 9773) has opened, and at once when the
/// self-signed bootstrap certificate is in place or the names changed. Safe to run
/// twice a day from a schedule; pass --jitter there so hosts don't renew in lockstep.
///
/// Example (cron):  17 3,15 * * *  elior cert renew --dir /srv/elior --jitter 3600
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct RenewArgs {
    #[command(flatten)]
    common: ObtainArgs,
    /// Wait a random 0..SECS seconds first (for schedules)
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    jitter: u64,
}

/// Show the certificate in nginx/ssl/ and whether it is healthy.
///
/// Prints subject, names, issuer, validity, days left, when renewal is due, key type,
/// whether the key matches, whether the chain verifies (system roots, or ACME_CA_FILE)
/// and whether nginx serves this certificate on HTTPS_PORT.
/// Exit status: 0 healthy, 1 expired, key mismatch or not served, 2 error.
///
/// Examples:
///     elior cert status --dir /srv/elior
///     elior cert status --json --connect 127.0.0.1:8443
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct StatusArgs {
    #[command(flatten)]
    stack: StackArgs,
}

/// What `issue`/`renew` did, for --json.
#[derive(Serialize)]
struct ObtainReport {
    action: &'static str,
    reason: Option<certs::Reason>,
    names: Vec<String>,
    serial: String,
    not_after: String,
    renewal_due_at: Option<String>,
}

fn https_address(stack: &StackArgs, settings: &CertSettings) -> SocketAddr {
    stack
        .connect
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], settings.https_port)))
}

async fn obtain(
    args: &ObtainArgs,
    ctx: &super::Context,
    ask_ari: bool,
    jitter: u64,
) -> Result<ExitCode> {
    let settings = CertSettings::load(ctx.dir(), args.staging)?;
    let paths = StackPaths::new(ctx.dir());
    let options = IssueOptions {
        force: args.force,
        ask_ari,
    };
    let progress = |line: &str| {
        if !ctx.quiet {
            eprintln!("{line}")
        }
    };
    let swarm = match &args.nginx_conf {
        Some(_) => None,
        None => crate::config::model::Stack::load(ctx.dir())
            .ok()
            .filter(super::swarm::is_swarm),
    };
    if jitter > 0 {
        let wait = rand::thread_rng().gen_range(0..=jitter);
        eprintln!("waiting {wait} s (--jitter)");
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    // Single host: the pair in nginx/ssl/ is replaced under the deploy lock, as a deploy
    // replaces it, so a scheduled renewal and a deploy never interleave their files.
    let _lock = match &swarm {
        None => Some(crate::lock::DeployLock::acquire(ctx.dir(), "elior cert")?),
        Some(_) => None,
    };
    let (outcome, served_at) = match (&args.nginx_conf, swarm) {
        (Some(conf), _) => {
            let conf = std::path::absolute(conf)
                .with_context(|| format!("bad --nginx-conf path {}", conf.display()))?;
            let nginx = HostNginx::new(&conf, https_address(&args.stack, &settings));
            let outcome = issue::issue_if_due(&nginx, &paths, &settings, options, &progress);
            (outcome.await?, nginx.https_address())
        }
        // Swarm mode (issue 21): nginx answers challenges on every node from its config,
        // and a new certificate rolls nginx as a new secret version.
        (None, Some(stack)) => {
            let owner = crate::deploy::swarm::require_owner(&stack)?;
            let _lock = crate::lock::DeployLock::acquire(ctx.dir(), "cert")?;
            let steps = super::deploy::Progress::new(ctx);
            let outcome = crate::deploy::swarm::renew_certificate(
                &stack,
                &owner,
                &settings,
                options,
                SWARM_HEALTH_TIMEOUT,
                &steps,
            );
            let address = SocketAddr::from(([127, 0, 0, 1], settings.https_port));
            (outcome.await?, address)
        }
        (None, None) => {
            let nginx = stack_nginx(&settings, ctx).await?;
            if !ctx.quiet {
                eprintln!("using nginx container {}", nginx.container);
            }
            let outcome = issue::issue_if_due(&nginx, &paths, &settings, options, &progress);
            (outcome.await?, nginx.https_address())
        }
    };
    report(&outcome, served_at, ctx)
}

/// How long a new nginx task gets to run, in swarm mode.
const SWARM_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

/// The deployed stack's running nginx container, or an error saying what to do.
async fn stack_nginx(settings: &CertSettings, ctx: &super::Context) -> Result<StackNginx> {
    let dir = ctx.dir();
    let missing = |cause: String| {
        anyhow!(
            "no nginx to reload: the stack for {} is not deployed from this directory, or its nginx container is not running{cause}\nrun `{}` first, or pass --nginx-conf FILE (or ELIOR_NGINX_CONF) for a host nginx",
            settings.domain,
            ctx.command(&format!("deploy {}", settings.domain))
        )
    };
    let docker = crate::docker::connect()
        .await
        .map_err(|e| missing(format!(" ({e:#})")))?;
    let Some(owner) = crate::config::model::owner_of(dir, &settings.domain)? else {
        return Err(missing(String::new()));
    };
    StackNginx::find(&docker, &owner, settings.https_port)
        .await?
        .ok_or_else(|| missing(String::new()))
}

/// What `issue`/`renew` did: JSON, or one line.
fn report(outcome: &Outcome, served_at: SocketAddr, ctx: &super::Context) -> Result<ExitCode> {
    let report = match outcome {
        Outcome::NotDue {
            names,
            current,
            renewal,
        } => ObtainReport {
            action: "not_due",
            reason: None,
            names: names.clone(),
            serial: current.serial.clone(),
            not_after: rfc3339(current.not_after),
            renewal_due_at: renewal.due_at.map(rfc3339),
        },
        Outcome::Issued {
            names,
            reason,
            info,
            renewal,
        } => ObtainReport {
            action: "issued",
            reason: Some(*reason),
            names: names.clone(),
            serial: info.serial.clone(),
            not_after: rfc3339(info.not_after),
            renewal_due_at: renewal.due_at.map(rfc3339),
        },
    };
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else if let Outcome::Issued { .. } = outcome {
        outln!(
            "issued a certificate for {}: serial {}, valid until {}; nginx serves it on {}",
            report.names.join(", "),
            report.serial,
            report.not_after,
            served_at
        );
    } else {
        outln!(
            "not due: the certificate for {} is valid until {}; renewal is due from {}",
            report.names.join(", "),
            report.not_after,
            report.renewal_due_at.as_deref().unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The facts `cert status` prints, for --json.
#[derive(Serialize)]
struct StatusReport {
    certificate: PathBuf,
    domain: String,
    subject: String,
    sans: Vec<String>,
    issuer: String,
    serial: String,
    not_before: String,
    not_after: String,
    days_left: i64,
    expired: bool,
    self_signed: bool,
    renewal_due: bool,
    renewal_due_at: Option<String>,
    key_type: String,
    key_bits: usize,
    key_matches: bool,
    key_error: Option<String>,
    chain_verifies: bool,
    chain_roots: String,
    chain_error: Option<String>,
    served_address: SocketAddr,
    served: bool,
    served_serial: Option<String>,
    served_error: Option<String>,
    /// False when expired, mismatched or not served: the exit status is then 1.
    healthy: bool,
}

impl StatusArgs {
    async fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let paths = StackPaths::new(ctx.dir());
        let settings = CertSettings::load(ctx.dir(), false)?;
        let Some((chain, info)) = issue::current(&paths)? else {
            let error = format!("no certificate at {}", paths.cert().display());
            let hint = format!(
                "run `{}` or `{}`",
                ctx.command(&format!("deploy {}", settings.domain)),
                ctx.command("cert issue")
            );
            if ctx.json {
                outln!("{}", serde_json::json!({ "error": error, "hint": hint }));
            } else {
                eprintln!("{error}\n{hint}");
            }
            return Ok(ExitCode::from(EXIT_CHECK_FAILED));
        };
        let now = unix_now();

        let key_check = crate::tls::files::read(&paths.key()).and_then(|pem| {
            let key = inspect::parse_key(&pem, &paths.key().display().to_string())?;
            inspect::key_matches(&chain[0], &key)
        });
        let (key_matches, key_error) = match key_check {
            Ok(true) => (true, None),
            Ok(false) => (
                false,
                Some("the key does not belong to the certificate".to_string()),
            ),
            Err(err) => (false, Some(format!("{err:#}"))),
        };

        let (roots, chain_roots) = match &settings.ca_file {
            Some(file) => (inspect::load_roots(file), file.display().to_string()),
            None => (Ok(inspect::system_roots()), "system".to_string()),
        };
        let chain_check =
            roots.and_then(|roots| inspect::verify_chain(&chain, roots, &settings.domain));

        let served_address = https_address(&self.stack, &settings);
        let served = served::served_chain(served_address, &settings.domain, Duration::from_secs(5))
            .await
            .and_then(|served| inspect::describe(&served[0]));
        let (served_serial, served_error) = match served {
            Ok(s) => (Some(s.serial), None),
            Err(err) => (None, Some(format!("{err:#}"))),
        };
        let is_served = served_serial.as_deref() == Some(info.serial.as_str());

        let names = [settings.domain.clone()];
        let renewal = certs::renewal(Some(&issue::facts(&info, &names)), now, None, 0.0, false);
        let expired = now >= info.not_after;
        let report = StatusReport {
            certificate: paths.cert(),
            domain: settings.domain.clone(),
            subject: info.subject.clone(),
            sans: info.sans.clone(),
            issuer: info.issuer.clone(),
            serial: info.serial.clone(),
            not_before: rfc3339(info.not_before),
            not_after: rfc3339(info.not_after),
            days_left: (info.not_after - now).div_euclid(86_400),
            expired,
            self_signed: info.self_signed,
            renewal_due: renewal.due,
            renewal_due_at: renewal.due_at.map(rfc3339),
            key_type: info.key_type.clone(),
            key_bits: info.key_bits,
            key_matches,
            key_error,
            chain_verifies: chain_check.is_ok(),
            chain_roots,
            chain_error: chain_check.err().map(|e| format!("{e:#}")),
            served_address,
            served: is_served,
            served_serial,
            served_error,
            healthy: !expired && key_matches && is_served,
        };
        if ctx.json {
            outln!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_status(&report);
        }
        Ok(if report.healthy {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_CHECK_FAILED)
        })
    }
}

fn print_status(r: &StatusReport) {
    let yes_no = |ok: bool, yes: &str, no: &str| if ok { yes.to_string() } else { no.to_string() };
    outln!("certificate  {}", r.certificate.display());
    outln!("subject      {}", r.subject);
    outln!("names        {}", r.sans.join(", "));
    outln!(
        "issuer       {}{}",
        r.issuer,
        if r.self_signed { " (self-signed)" } else { "" }
    );
    outln!("serial       {}", r.serial);
    outln!(
        "valid        {} to {} ({})",
        r.not_before,
        r.not_after,
        if r.expired {
            format!("EXPIRED {} days ago", -r.days_left)
        } else {
            format!("{} days left", r.days_left)
        }
    );
    outln!(
        "renewal      {}",
        match (&r.renewal_due_at, r.renewal_due) {
            (_, true) => "due now".to_string(),
            (Some(at), false) => format!("due from {at}"),
            (None, false) => "not due".to_string(),
        }
    );
    outln!(
        "key          {} {} bits, {}",
        r.key_type,
        r.key_bits,
        match &r.key_error {
            None => "matches the certificate".to_string(),
            Some(err) => format!("MISMATCH: {err}"),
        }
    );
    outln!(
        "chain        {}",
        match &r.chain_error {
            None => format!("verifies against {} roots", r.chain_roots),
            Some(err) => format!("does not verify against {} roots: {err}", r.chain_roots),
        }
    );
    outln!(
        "served       {}",
        match (&r.served_serial, &r.served_error) {
            (Some(s), _) => yes_no(
                r.served,
                &format!("{} serves this certificate", r.served_address),
                &format!(
                    "{} serves another certificate (serial {s})",
                    r.served_address
                ),
            ),
            (None, Some(err)) => format!("NOT SERVED: {err}"),
            (None, None) => "unknown".to_string(),
        }
    );
}
