//! `elior probe ssl`: what a server's TLS and HTTP setup looks like from outside, and
//! its grade. Gathers: the negotiated protocol and cipher, the chain (subject, issuer,
//! SANs, days left, key), name match and trust; which protocol versions are accepted
//! (TLS 1.2/1.3 with rustls, TLS 1.0/1.1 with a hand-made ClientHello from `hello`);
//! whether RSA key exchange or CBC suites are accepted; HSTS, the HTTP to HTTPS redirect
//! and the security headers of `/`, `/api/` and `/health`. Grading is `grade`'s.
//!
//! Handshakes here accept any certificate (trust is judged separately, against the
//! system roots plus `--ca`); nothing secret is ever sent.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::CertificateDer;
use serde::Serialize;

use super::grade::{self, Grade, Observed};
use super::hello::{self, Answer};
use super::timing::{self, Trust, Url};
use crate::tls::inspect::{self, CertInfo};
use crate::tls::served;

/// Headers every page of the stack should carry.
pub const SECURITY_HEADERS: &[&str] = &[
    "strict-transport-security",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "content-security-policy",
    "permissions-policy",
];
pub const PAGES: &[&str] = &["/", "/api/", "/health"];

pub struct Options {
    pub host: String,
    pub port: u16,
    /// Connect here instead of resolving `host`.
    pub connect: Option<IpAddr>,
    pub http_port: u16,
    /// Extra trusted roots (a PEM file).
    pub ca: Option<PathBuf>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChainCert {
    #[serde(flatten)]
    pub info: CertInfo,
    pub days_left: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Protocols {
    pub tls1_0: Answer,
    pub tls1_1: Answer,
    pub tls1_2: bool,
    pub tls1_3: bool,
    /// TLS 1.2 with only RSA key exchange (no forward secrecy) offered.
    pub rsa_key_exchange: Answer,
    /// TLS 1.2 with only CBC suites offered.
    pub cbc_suites: Answer,
}

#[derive(Debug, Clone, Serialize)]
pub struct PageHeaders {
    pub path: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub present: Vec<String>,
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Redirect {
    pub url: String,
    pub status: Option<u16>,
    pub location: Option<String>,
    pub error: Option<String>,
    pub to_https: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SslReport {
    pub host: String,
    pub port: u16,
    pub address: String,
    pub protocol: Option<String>,
    pub cipher: Option<String>,
    pub handshake_error: Option<String>,
    pub chain: Vec<ChainCert>,
    pub name_matches: bool,
    pub trusted: bool,
    pub trust_error: Option<String>,
    pub protocols: Protocols,
    pub forward_secrecy: bool,
    pub aead: bool,
    pub hsts: Option<String>,
    pub redirect: Redirect,
    pub pages: Vec<PageHeaders>,
    pub grade: Grade,
}

struct Handshake {
    version: String,
    cipher: String,
    chain: Vec<CertificateDer<'static>>,
}

async fn handshake(
    addr: SocketAddr,
    host: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    timeout: Duration,
) -> Result<Handshake> {
    let config = served::observing_config(versions, served::ObserveOnly::any())?;
    let tls = served::connect_with(config, addr, host, timeout).await?;
    let (_, session) = tls.get_ref();
    Ok(Handshake {
        version: session
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        cipher: session
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default(),
        chain: session
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| c.clone().into_owned())
            .collect(),
    })
}

/// A name `info` covers, to verify the chain's trust apart from the name.
fn covered_name(info: &CertInfo) -> Option<String> {
    info.sans.first().map(|san| match san.strip_prefix("*.") {
        Some(base) => format!("probe.{base}"),
        None => san.clone(),
    })
}

pub async fn probe(o: &Options) -> Result<SslReport> {
    let ip = match o.connect {
        Some(ip) => ip,
        None => crate::tls::resolve::lookup(&o.host, o.port)?
            .first()
            .map(|a| a.ip())
            .with_context(|| format!("{} resolves to no address", o.host))?,
    };
    let addr = SocketAddr::new(ip, o.port);
    let t = o.timeout;
    let both = handshake(addr, &o.host, rustls::ALL_VERSIONS, t).await;
    let only12 = handshake(addr, &o.host, &[&rustls::version::TLS12], t).await;
    let only13 = handshake(addr, &o.host, &[&rustls::version::TLS13], t).await;
    let offer = |version, suites| hello::offer(addr, &o.host, version, suites, t);
    let protocols = Protocols {
        tls1_0: offer(hello::TLS1_0, hello::LEGACY_SUITES).await?,
        tls1_1: offer(hello::TLS1_1, hello::LEGACY_SUITES).await?,
        tls1_2: only12.is_ok(),
        tls1_3: only13.is_ok(),
        rsa_key_exchange: offer(hello::TLS1_2, hello::RSA_KX_SUITES).await?,
        cbc_suites: offer(hello::TLS1_2, hello::CBC_SUITES).await?,
    };

    let now = inspect::unix_now();
    let (mut protocol, mut cipher, mut handshake_error) = (None, None, None);
    let mut chain_der = Vec::new();
    match &both {
        Ok(h) => {
            protocol = Some(h.version.clone());
            cipher = Some(h.cipher.clone());
            chain_der = h.chain.clone();
        }
        Err(e) => handshake_error = Some(format!("{e:#}")),
    }
    let chain: Vec<ChainCert> = chain_der
        .iter()
        .filter_map(|der| inspect::describe(der).ok())
        .map(|info| ChainCert {
            days_left: (info.not_after - now).div_euclid(86_400),
            info,
        })
        .collect();
    let leaf = chain.first().map(|c| &c.info);
    let name_matches = leaf.is_some_and(|l| l.covers(&o.host));
    let roots = crate::http::system_roots_plus(o.ca.as_deref())?;
    let trust_name = if name_matches {
        Some(o.host.clone())
    } else {
        leaf.and_then(covered_name)
    };
    let trust_result = match (&trust_name, chain_der.is_empty()) {
        (Some(name), false) => inspect::verify_chain(&chain_der, roots, name),
        _ => Err(anyhow!("no certificate to verify")),
    };
    let expired = leaf.is_some_and(|l| l.not_after <= now);

    // Over TLS 1.3 every suite is AEAD with forward secrecy; rustls offers TLS 1.2 only
    // with ECDHE and AEAD suites, so a completed handshake proves both are available.
    let fs_and_aead = both.is_ok();

    let insecure = Trust::Insecure;
    let mut pages = Vec::new();
    let mut hsts = None;
    for path in PAGES {
        let url = Url {
            https: true,
            host: o.host.clone(),
            port: o.port,
            path: path.to_string(),
        };
        match timing::fetch(&url, Some(ip), &insecure, t).await {
            Ok(answer) => {
                if *path == "/" {
                    hsts = answer.header("strict-transport-security").map(String::from);
                }
                let (present, missing): (Vec<&str>, Vec<&str>) = SECURITY_HEADERS
                    .iter()
                    .partition(|h| answer.header(h).is_some());
                pages.push(PageHeaders {
                    path: path.to_string(),
                    status: Some(answer.status),
                    error: None,
                    present: present.into_iter().map(String::from).collect(),
                    missing: missing.into_iter().map(String::from).collect(),
                });
            }
            Err(e) => pages.push(PageHeaders {
                path: path.to_string(),
                status: None,
                error: Some(format!("{e:#}")),
                present: Vec::new(),
                missing: Vec::new(),
            }),
        }
    }
    let http = Url {
        https: false,
        host: o.host.clone(),
        port: o.http_port,
        path: "/".into(),
    };
    let redirect = match timing::fetch(&http, Some(ip), &insecure, t).await {
        Ok(a) => {
            let location = a.header("location").map(String::from);
            Redirect {
                url: http.display(),
                to_https: (300..400).contains(&a.status)
                    && location
                        .as_deref()
                        .is_some_and(|l| l.starts_with("https://")),
                status: Some(a.status),
                location,
                error: None,
            }
        }
        Err(e) => Redirect {
            url: http.display(),
            status: None,
            location: None,
            error: Some(format!("{e:#}")),
            to_https: false,
        },
    };

    let observed = Observed {
        handshake_ok: both.is_ok(),
        trusted: trust_result.is_ok(),
        expired,
        name_matches,
        tls1_0: protocols.tls1_0.accepted(),
        tls1_1: protocols.tls1_1.accepted(),
        tls1_2: protocols.tls1_2,
        tls1_3: protocols.tls1_3,
        forward_secrecy: fs_and_aead,
        aead: fs_and_aead,
        key_type: leaf.map(|l| l.key_type.clone()).unwrap_or_default(),
        key_bits: leaf.map_or(0, |l| l.key_bits),
        hsts_max_age: hsts.as_deref().and_then(grade::hsts_max_age),
    };
    Ok(SslReport {
        host: o.host.clone(),
        port: o.port,
        address: addr.to_string(),
        protocol,
        cipher,
        handshake_error,
        name_matches,
        trusted: trust_result.is_ok(),
        trust_error: trust_result.err().map(|e| format!("{e:#}")),
        forward_secrecy: fs_and_aead,
        aead: fs_and_aead,
        protocols,
        hsts,
        redirect,
        pages,
        grade: grade::grade(&observed),
        chain,
    })
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl SslReport {
    /// The report as a person reads it.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}:{} ({})  grade {}{}\n\nCertificate\n",
            self.host,
            self.port,
            self.address,
            self.grade.grade,
            if self.grade.grade != self.grade.if_trusted {
                format!(" ({} if trusted)", self.grade.if_trusted)
            } else {
                String::new()
            }
        );
        match (&self.protocol, &self.handshake_error) {
            (Some(p), _) => out.push_str(&format!(
                "  negotiated       {p}, {}\n",
                self.cipher.as_deref().unwrap_or("?")
            )),
            (None, Some(e)) => out.push_str(&format!("  handshake failed {e}\n")),
            _ => {}
        }
        for (i, c) in self.chain.iter().enumerate() {
            out.push_str(&format!(
                "  [{i}] {}\n      issuer {}\n      SANs {}\n      {} days left, {} ({} bits)\n",
                c.info.subject,
                c.info.issuer,
                if c.info.sans.is_empty() {
                    "-".into()
                } else {
                    c.info.sans.join(", ")
                },
                c.days_left,
                c.info.key_type,
                c.info.key_bits
            ));
        }
        out.push_str(&format!("  name matches     {}\n", yes(self.name_matches)));
        out.push_str(&format!(
            "  trusted          {}{}\n",
            yes(self.trusted),
            self.trust_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
        let p = &self.protocols;
        out.push_str("\nProtocols\n");
        out.push_str(&format!("  TLS 1.0          {}\n", p.tls1_0.describe()));
        out.push_str(&format!("  TLS 1.1          {}\n", p.tls1_1.describe()));
        out.push_str(&format!(
            "  TLS 1.2          {}\n",
            if p.tls1_2 { "offered" } else { "not offered" }
        ));
        out.push_str(&format!(
            "  TLS 1.3          {}\n",
            if p.tls1_3 { "offered" } else { "not offered" }
        ));
        out.push_str(&format!(
            "  forward secrecy  {}\n",
            yes(self.forward_secrecy)
        ));
        out.push_str(&format!("  AEAD ciphers     {}\n", yes(self.aead)));
        out.push_str(&format!(
            "  RSA key exchange {}\n",
            p.rsa_key_exchange.describe()
        ));
        out.push_str(&format!("  CBC suites       {}\n", p.cbc_suites.describe()));
        out.push_str("\nHTTP\n");
        out.push_str(&format!(
            "  HSTS             {}\n",
            self.hsts.as_deref().unwrap_or("missing")
        ));
        let r = &self.redirect;
        out.push_str(&format!(
            "  {}  {}\n",
            r.url,
            match (r.status, &r.error) {
                (Some(s), _) => format!(
                    "{s}{}",
                    r.location
                        .as_deref()
                        .map(|l| format!(" -> {l}"))
                        .unwrap_or_default()
                ),
                (None, e) => format!("no answer: {}", e.as_deref().unwrap_or("")),
            }
        ));
        for page in &self.pages {
            match page.status {
                Some(s) => out.push_str(&format!(
                    "  {:<16} {s}, security headers: {}\n",
                    page.path,
                    if page.missing.is_empty() {
                        "all present".to_string()
                    } else {
                        format!("missing {}", page.missing.join(", "))
                    }
                )),
                None => out.push_str(&format!(
                    "  {:<16} no answer: {}\n",
                    page.path,
                    page.error.as_deref().unwrap_or("")
                )),
            }
        }
        out.push_str(&format!("\nGrade {}\n", self.grade.grade));
        if self.grade.deductions.is_empty() {
            out.push_str("  no deductions\n");
        }
        for d in &self.grade.deductions {
            out.push_str(&format!(
                "  - {} (caps at {})\n    fix: {}\n",
                d.reason, d.cap, d.fix
            ));
        }
        out
    }
}
