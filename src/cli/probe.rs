//! `elior probe health|ssl`: look at a running stack from outside, as a client does.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::probe::{ssl, timing};

#[derive(Subcommand)]
pub enum ProbeCommand {
    Health(HealthArgs),
    Ssl(SslArgs),
}

impl ProbeCommand {
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let runtime = crate::docker::runtime()?;
        match self {
            ProbeCommand::Health(args) => runtime.block_on(args.run(ctx.json)),
            ProbeCommand::Ssl(args) => runtime.block_on(args.run(ctx.json)),
        }
    }
}

/// GET a URL and show where the time goes: DNS, connect, TLS, first byte, total.
///
/// Prints the status, headers of note and the parsed /health body. With -n N it repeats
/// the request N times (a new connection each) and prints min, median and p99 of each
/// phase. Exits 1 when an answer is not 200 or a request fails or times out.
///
/// Examples:
///     elior probe health https://fit.example.com/health
///     elior probe health https://fit.example.com:8443/health \
///         --resolve fit.example.com:127.0.0.1 --ca ca.pem
///     elior probe health https://fit.example.com/health -n 20 --json
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct HealthArgs {
    /// http:// or https:// URL
    url: String,
    /// Connect to IP for HOST instead of resolving it, like curl --resolve (HOST:IP)
    #[arg(long, value_name = "HOST:IP")]
    resolve: Option<String>,
    /// Accept any certificate (the timing is still measured)
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
    /// Also trust the CA certificates in FILE (PEM)
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Number of requests
    #[arg(short = 'n', long = "count", default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    count: u32,
    /// Seconds each request may take
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    timeout: u64,
}

/// Reads one phase's duration from a run's timings.
type Phase = fn(&timing::Timings) -> Option<f64>;

/// min, median and p99 of one phase, in ms.
#[derive(Serialize)]
struct Stat {
    min: f64,
    median: f64,
    p99: f64,
}

#[derive(Serialize)]
struct HealthReport {
    url: String,
    runs: usize,
    failures: Vec<String>,
    statuses: Vec<u16>,
    last: Option<timing::Exchange>,
    /// The parsed body of the last answer, when it is JSON.
    body: Option<serde_json::Value>,
    stats: Vec<(&'static str, Stat)>,
}

const NOTABLE_HEADERS: &[&str] = &[
    "server",
    "content-type",
    "date",
    "cache-control",
    "strict-transport-security",
    "x-request-id",
];

impl HealthArgs {
    async fn run(self, json: bool) -> Result<ExitCode> {
        let url = timing::Url::parse(&self.url)?;
        let connect = match &self.resolve {
            None => None,
            Some(pair) => {
                let (host, ip) = pair.rsplit_once(':').with_context(|| {
                    format!("--resolve {pair:?} is not HOST:IP\nwrite it like --resolve fit.example.com:127.0.0.1")
                })?;
                let ip: IpAddr = ip
                    .trim_matches(['[', ']'])
                    .parse()
                    .with_context(|| format!("--resolve {pair:?}: {ip:?} is not an IP address"))?;
                if !host.eq_ignore_ascii_case(&url.host) {
                    bail!(
                        "--resolve names {host}, but the URL's host is {}\nuse --resolve {}:{ip}",
                        url.host,
                        url.host
                    );
                }
                Some(ip)
            }
        };
        let trust = if self.insecure {
            timing::Trust::Insecure
        } else {
            timing::Trust::system_plus(self.ca.as_deref())?
        };
        let timeout = Duration::from_secs(self.timeout);
        let mut exchanges = Vec::new();
        let mut failures = Vec::new();
        for _ in 0..self.count {
            match timing::fetch(&url, connect, &trust, timeout).await {
                Ok(e) => exchanges.push(e),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        let phase = |f: Phase| {
            let values: Vec<f64> = exchanges.iter().filter_map(|e| f(&e.timings)).collect();
            timing::summary(&values).map(|(min, median, p99)| Stat { min, median, p99 })
        };
        let mut stats = Vec::new();
        let phases: [(&str, Phase); 5] = [
            ("dns", |t| Some(t.dns_ms)),
            ("connect", |t| Some(t.connect_ms)),
            ("tls", |t| t.tls_ms),
            ("ttfb", |t| Some(t.ttfb_ms)),
            ("total", |t| Some(t.total_ms)),
        ];
        for (name, f) in phases {
            if let Some(s) = phase(f) {
                stats.push((name, s));
            }
        }
        let last = exchanges.last().cloned();
        let report = HealthReport {
            url: url.display(),
            runs: self.count as usize,
            statuses: exchanges.iter().map(|e| e.status).collect(),
            body: last
                .as_ref()
                .and_then(|e| serde_json::from_str(&e.body).ok()),
            failures,
            last,
            stats,
        };
        let failed = !report.failures.is_empty() || report.statuses.iter().any(|s| *s != 200);
        if json {
            outln!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            out!("{}", render_health(&report));
        }
        Ok(if failed {
            ExitCode::from(super::EXIT_CHECK_FAILED)
        } else {
            ExitCode::SUCCESS
        })
    }
}

fn render_health(r: &HealthReport) -> String {
    let mut out = String::new();
    if let Some(e) = &r.last {
        out.push_str(&format!("{} -> {} ({})\n", r.url, e.status, e.remote));
        if let (Some(v), Some(c)) = (&e.tls_version, &e.cipher) {
            out.push_str(&format!("  tls      {v}, {c}\n"));
        }
        for name in NOTABLE_HEADERS {
            if let Some(v) = e.header(name) {
                out.push_str(&format!("  {name}: {v}\n"));
            }
        }
        if let Some(body) = &r.body {
            let db = &body["database"]["status"];
            // /health is public and minimal (issue 15): it no longer names the version.
            out.push_str(&format!(
                "  body     status {}, database {}\n",
                body["status"].as_str().unwrap_or("?"),
                db.as_str().unwrap_or("?")
            ));
        }
        if r.runs == 1 {
            let t = &e.timings;
            out.push_str(&format!(
                "  timing   dns {:.1} ms, connect {:.1} ms, tls {}, ttfb {:.1} ms, total {:.1} ms\n",
                t.dns_ms,
                t.connect_ms,
                t.tls_ms.map(|v| format!("{v:.1} ms")).unwrap_or_else(|| "-".into()),
                t.ttfb_ms,
                t.total_ms
            ));
        }
    }
    if r.runs > 1 && !r.stats.is_empty() {
        out.push_str(&format!(
            "  {} requests: {:<8} {:>9} {:>9} {:>9}\n",
            r.runs, "phase", "min ms", "median", "p99"
        ));
        for (name, s) in &r.stats {
            out.push_str(&format!(
                "  {:>w$}  {:<8} {:>9.1} {:>9.1} {:>9.1}\n",
                "",
                name,
                s.min,
                s.median,
                s.p99,
                w = format!("{} requests:", r.runs).len()
            ));
        }
        let not_ok = r.statuses.iter().filter(|s| **s != 200).count();
        if not_ok > 0 {
            out.push_str(&format!("  {not_ok} answer(s) were not 200\n"));
        }
    }
    for f in &r.failures {
        out.push_str(&format!("  failed: {f}\n"));
    }
    out
}

/// Grade a server's TLS setup the way SSL Labs does, on what one client can observe.
///
/// Shows the negotiated protocol and cipher, the chain (subject, issuer, SANs, days left,
/// key), whether the name matches and the chain is trusted (system roots plus --ca);
/// whether TLS 1.0 and 1.1 are refused (tested with hand-made ClientHellos), whether TLS
/// 1.2 and 1.3 are offered, forward secrecy and AEAD; HSTS, the HTTP to HTTPS redirect
/// and the security headers of /, /api/ and /health. Then a grade (A+ to F, T untrusted,
/// M name mismatch) with each deduction and the nginx directive that fixes it.
///
/// Exits 0 for A or A+, 1 for anything lower.
///
/// Examples:
///     elior probe ssl fit.example.com
///     elior probe ssl fit.example.com:8443 --connect 127.0.0.1 --http-port 8080 --ca ca.pem
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct SslArgs {
    /// HOST or HOST:PORT (port 443 by default)
    target: String,
    /// Connect to this IP instead of resolving HOST
    #[arg(long, value_name = "IP")]
    connect: Option<IpAddr>,
    /// The port of plain HTTP, for the redirect check
    #[arg(long, default_value_t = 80, value_name = "PORT")]
    http_port: u16,
    /// Also trust the CA certificates in FILE (PEM)
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Seconds each connection may take
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    timeout: u64,
}

impl SslArgs {
    async fn run(self, json: bool) -> Result<ExitCode> {
        let (host, port) = timing::split_host_port(&self.target, 443)
            .with_context(|| format!("{:?} is not HOST or HOST:PORT", self.target))?;
        let report = ssl::probe(&ssl::Options {
            host,
            port,
            connect: self.connect,
            http_port: self.http_port,
            ca: self.ca,
            timeout: Duration::from_secs(self.timeout),
        })
        .await?;
        if json {
            outln!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            out!("{}", report.render());
        }
        Ok(if report.grade.is_good() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(super::EXIT_CHECK_FAILED)
        })
    }
}
