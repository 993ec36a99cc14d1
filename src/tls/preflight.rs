//! Checks made before spending a request at the CA (whose failures count against rate
//! limits): the name resolves, and our own nginx serves the ACME webroot for it on the
//! HTTP port. A random probe file is placed in the webroot and fetched by name.
//!
//! "Resolves to this host" is proven by the probe coming back, not by comparing
//! addresses: behind 1:1 NAT the public address is not on any interface here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use rand::Rng;

use crate::http::{ClientBuilder, Trust, Unreachable};

use super::acme::Http01;
use super::files::{write_atomic, PUBLIC_MODE};
use super::resolve;

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The probe file is 32 bytes; an error page may be larger, never this large.
const PROBE_BODY_LIMIT: usize = 64 * 1024;

/// Resolves `name` and fetches a fresh probe through `http://name:port`: a file placed in
/// the webroot, or (stateless answers) a random token that must come back as
/// `TOKEN.THUMBPRINT`. Returns the address that answered.
pub async fn check_name(name: &str, port: u16, http01: &Http01) -> Result<SocketAddr> {
    let addrs = resolve::lookup(name, port).map_err(|e| {
        anyhow!(
            "{e:#}\npoint its DNS A/AAAA record at this host (tests and split DNS: {}={name}:IP)",
            resolve::RESOLVE_VAR
        )
    })?;
    let token: String = rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    let (file_name, expected, written) = match http01 {
        Http01::Webroot(challenge_dir) => {
            let file_name = format!("elior-probe-{token}");
            let path = challenge_dir.join(&file_name);
            write_atomic(&path, token.as_bytes(), PUBLIC_MODE)?;
            (file_name, token.clone(), Some(path))
        }
        Http01::Stateless { thumbprint } => (token.clone(), format!("{token}.{thumbprint}"), None),
    };
    let url_path = format!("/{}/{file_name}", super::files::CHALLENGE_DIR);
    let mut failures = Vec::new();
    let mut answered = None;
    for addr in &addrs {
        match get(*addr, name, &url_path).await {
            Ok((200, body)) if body.trim() == expected => {
                answered = Some(*addr);
                break;
            }
            Ok((status, _)) if written.is_some() => {
                failures.push(format!("{addr} answered {status} without the probe file"))
            }
            Ok((status, body)) => failures.push(format!(
                "{addr} answered {status} {:?}, not the ACME account's thumbprint",
                body.trim().chars().take(120).collect::<String>()
            )),
            Err(err) => failures.push(format!("{err:#}")),
        }
    }
    if let Some(path) = written {
        let _ = std::fs::remove_file(path);
    }
    match answered {
        Some(addr) => Ok(addr),
        None => bail!(
            "http://{name}:{port}{url_path} did not serve the probe file: {}\nthe CA could not validate either: start the stack's nginx (elior deploy), open port {port}, and check that DOMAIN points at this host",
            failures.join("; ")
        ),
    }
}

/// A plain http GET to `addr` with `Host: name`; returns status and body.
async fn get(addr: SocketAddr, name: &str, path: &str) -> Result<(u16, String)> {
    // Plain http only: no certificate is ever trusted.
    let nothing = Trust::Roots(Arc::new(rustls::RootCertStore::empty()));
    let client = ClientBuilder::new(nothing)
        .connect_to(addr.ip())
        .connect_timeout(PROBE_TIMEOUT)
        .response_timeout(PROBE_TIMEOUT)
        .body_limit(PROBE_BODY_LIMIT)
        .fresh_connections()
        .build()?;
    let reply = client
        .get(&format!("http://{name}:{}{path}", addr.port()))
        .await
        .map_err(|e| match e {
            crate::http::Error::Unreachable(Unreachable::Connect(why)) => {
                anyhow!("cannot connect to {addr}: {why}")
            }
            other => anyhow!("{addr}: {other}"),
        })?;
    Ok((reply.status.as_u16(), reply.text()))
}
