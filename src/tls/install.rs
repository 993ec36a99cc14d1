//! Putting a new certificate in service without a gap: write it next to the current
//! one, let nginx test it, reload gracefully, and confirm that the served serial is the
//! new one. On any failure the previous files are put back (and nginx reloaded if it
//! had been), so the old certificate keeps serving.
//!
//! The nginx being driven is behind the small [`Proxy`] trait: [`HostNginx`] drives a
//! host process (used by the tests); `elior deploy` adds the stack's container. This
//! module does not decide *whether* to replace a certificate (see `plan::certs`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::acme::Http01;
use super::files::{self, write_atomic, StackPaths, PUBLIC_MODE, SECRET_MODE};
use super::inspect::{self, CertInfo};
use super::served;

/// The TLS front end serving `nginx/ssl/`.
pub trait Proxy {
    /// Checks the configuration and the certificate files it loads (`nginx -t`).
    fn test_config(&self) -> impl Future<Output = Result<()>> + Send;
    /// Reloads gracefully: in-flight connections finish on the old workers.
    fn reload(&self) -> impl Future<Output = Result<()>> + Send;
    /// Where to connect to see the served certificate.
    fn https_address(&self) -> SocketAddr;
    /// How this nginx answers ACME HTTP-01 challenges: token files in the stack's
    /// webroot, unless it answers them from its config (swarm mode).
    fn http01(&self, paths: &StackPaths) -> Http01 {
        Http01::Webroot(paths.challenge_dir())
    }
    /// The progress line while a new certificate goes in.
    fn installing(&self) -> &'static str {
        "installing it and reloading nginx"
    }
}

/// How long to wait for the reloaded workers to serve the new certificate.
const SERVE_DEADLINE: Duration = Duration::from_secs(15);

/// Installs `chain_pem`/`key_pem` as `nginx/ssl/{cert,key}.pem` through `proxy`, and
/// returns the facts of the certificate now served for `server_name`.
pub async fn install_and_verify<P: Proxy + Sync>(
    proxy: &P,
    paths: &StackPaths,
    chain_pem: &str,
    key_pem: &str,
    server_name: &str,
) -> Result<CertInfo> {
    // Refuse bad material before touching anything.
    let info = inspect::validate_pair(chain_pem.as_bytes(), key_pem.as_bytes(), server_name)
        .context("the new certificate was not installed")?;

    let cert_path = paths.cert();
    let key_path = paths.key();
    let staged_cert = sibling(&cert_path, "new");
    let staged_key = sibling(&key_path, "new");
    let remove_staged = || {
        let _ = remove_staged(&staged_cert, &staged_key);
    };
    let staged = write_atomic(&staged_key, key_pem.as_bytes(), SECRET_MODE)
        .and_then(|()| write_atomic(&staged_cert, chain_pem.as_bytes(), PUBLIC_MODE))
        .and_then(|()| Backup::take(&cert_path, &key_path));
    let backup = match staged {
        Ok(backup) => backup,
        Err(err) => {
            remove_staged();
            return Err(
                err.context("the new certificate was not installed; the previous one is untouched")
            );
        }
    };

    let promoted = std::fs::rename(&staged_key, &key_path)
        .inspect(|()| crate::backup::fault::point("cert:key-promoted"))
        .and_then(|()| std::fs::rename(&staged_cert, &cert_path))
        .with_context(|| {
            format!(
                "failed to move the new files into {}",
                paths.ssl_dir().display()
            )
        });
    if let Err(err) = promoted {
        remove_staged();
        return Err(roll_back(
            &backup,
            proxy,
            false,
            err,
            "the new certificate was not installed",
        )
        .await);
    }
    if let Err(err) = proxy.test_config().await {
        return Err(roll_back(
            &backup,
            proxy,
            false,
            err,
            "nginx rejected the new certificate",
        )
        .await);
    }
    if let Err(err) = proxy.reload().await {
        return Err(roll_back(&backup, proxy, true, err, "nginx did not reload").await);
    }
    if let Err(err) = wait_until_served(proxy.https_address(), server_name, &info.serial).await {
        return Err(roll_back(
            &backup,
            proxy,
            true,
            err,
            "the new certificate is not being served",
        )
        .await);
    }
    Ok(info)
}

/// Finishes what an install killed part-way left in `nginx/ssl/`, through `proxy`
/// (call it holding the deploy lock, before the pair is read or replaced). The new key is
/// moved into place before the new certificate, so a process killed between the two
/// renames leaves the new key beside the old certificate: a pair nginx refuses at its next
/// start or reload. The staged certificate is still there and belongs to that key, so it
/// is moved in, and nginx tests, reloads and serves it. Staged files of an install killed
/// before its first rename are removed: the installed pair is whole.
pub async fn finish_interrupted_install<P: Proxy + Sync>(
    proxy: &P,
    paths: &StackPaths,
    server_name: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<()> {
    let (cert_path, key_path) = (paths.cert(), paths.key());
    let (staged_cert, staged_key) = (sibling(&cert_path, "new"), sibling(&key_path, "new"));
    if !staged_cert.exists() && !staged_key.exists() {
        return Ok(());
    }
    let belongs = |chain_pem: &[u8]| -> Result<Option<String>> {
        let chain = inspect::parse_chain(chain_pem, "the staged certificate")?;
        let key = inspect::parse_key(&files::read(&key_path)?, "key.pem")?;
        let info = inspect::describe(&chain[0])?;
        Ok(inspect::key_matches(&chain[0], &key)?.then_some(info.serial))
    };
    let serial = match staged_key.exists() {
        true => None,
        false => files::read(&staged_cert)
            .and_then(|pem| belongs(&pem))
            .unwrap_or(None),
    };
    let Some(serial) = serial else {
        remove_staged(&staged_cert, &staged_key)?;
        progress("removed the staged files of a certificate install that was interrupted; the installed pair is unchanged");
        return Ok(());
    };
    std::fs::rename(&staged_cert, &cert_path).with_context(|| {
        format!(
            "failed to move {} to {}",
            staged_cert.display(),
            cert_path.display()
        )
    })?;
    progress(&format!(
        "finishing a certificate install that was interrupted: {} now belongs to the key beside it; {}",
        cert_path.display(),
        proxy.installing()
    ));
    proxy
        .test_config()
        .await
        .context("nginx rejected the finished install")?;
    proxy.reload().await.context("nginx did not reload")?;
    wait_until_served(proxy.https_address(), server_name, &serial).await
}

/// Removes the staged pair (either file may be missing).
fn remove_staged(staged_cert: &Path, staged_key: &Path) -> Result<()> {
    for staged in [staged_cert, staged_key] {
        match std::fs::remove_file(staged) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("failed to remove {}", staged.display()))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Puts the previous files back (and reloads nginx when it may have loaded the new
/// ones), and says so in the error.
async fn roll_back<P: Proxy>(
    backup: &Backup,
    proxy: &P,
    reload: bool,
    err: anyhow::Error,
    what: &str,
) -> anyhow::Error {
    if let Err(restore_err) = backup.restore() {
        return err.context(format!(
            "{what}, and putting the previous certificate back failed too: {restore_err:#}\nrestore nginx/ssl/ by hand, then run elior cert status"
        ));
    }
    if reload {
        if let Err(reload_err) = proxy.reload().await {
            return err.context(format!(
                "{what}; the previous certificate was put back, but nginx did not reload it: {reload_err:#}"
            ));
        }
    }
    err.context(format!(
        "{what}; the previous certificate was put back and stays served"
    ))
}

/// How many fresh connections in a row must present the new serial. After a graceful
/// reload, old nginx workers may still accept a connection or two with the old
/// certificate before they stop listening; one match proves only that a new worker runs.
const CONSECUTIVE_MATCHES: u32 = 3;

/// Polls the served certificate until [`CONSECUTIVE_MATCHES`] connections in a row show
/// `serial`, or the deadline passes.
pub async fn wait_until_served(addr: SocketAddr, server_name: &str, serial: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + SERVE_DEADLINE;
    let mut matches = 0;
    loop {
        let seen = match served::served_chain(addr, server_name, Duration::from_secs(3)).await {
            Ok(chain) => inspect::describe(&chain[0]).map(|i| i.serial),
            Err(err) => Err(err),
        };
        match seen {
            Ok(seen) if seen == serial => {
                matches += 1;
                if matches >= CONSECUTIVE_MATCHES {
                    return Ok(());
                }
                continue;
            }
            outcome if tokio::time::Instant::now() >= deadline => {
                return Err(match outcome {
                    Ok(seen) => anyhow!("{addr} still serves serial {seen}, not {serial}"),
                    Err(err) => err,
                });
            }
            _ => {
                matches = 0;
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    }
}

/// `cert.pem` -> `cert.pem.<suffix>` in the same directory.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// Copies of the files being replaced, to put back on failure.
struct Backup {
    saved: Vec<(PathBuf, Option<Vec<u8>>, u32)>,
}

impl Backup {
    fn take(cert: &Path, key: &Path) -> Result<Self> {
        let mut saved = Vec::new();
        for (path, mode) in [(cert, PUBLIC_MODE), (key, SECRET_MODE)] {
            let previous = if path.exists() {
                Some(files::read(path)?)
            } else {
                None
            };
            saved.push((path.to_path_buf(), previous, mode));
        }
        Ok(Backup { saved })
    }

    fn restore(&self) -> Result<()> {
        for (path, previous, mode) in &self.saved {
            match previous {
                Some(bytes) => write_atomic(path, bytes, *mode)
                    .context("failed to put the previous certificate back")?,
                None => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        Ok(())
    }
}

/// A host nginx process started as `nginx -p PREFIX -c CONF` (Debian's package).
/// The tests use it; it also suits a stack run outside Docker.
#[derive(Debug, Clone)]
pub struct HostNginx {
    pub binary: PathBuf,
    pub conf: PathBuf,
    pub prefix: PathBuf,
    pub https: SocketAddr,
}

impl HostNginx {
    /// nginx at /usr/sbin/nginx with `conf`, prefix = the directory of `conf`.
    pub fn new(conf: &Path, https: SocketAddr) -> Self {
        let prefix = conf.parent().unwrap_or(Path::new("/")).to_path_buf();
        HostNginx {
            binary: PathBuf::from("/usr/sbin/nginx"),
            conf: conf.to_path_buf(),
            prefix,
            https,
        }
    }

    async fn run(&self, extra: &[&str]) -> Result<()> {
        let error_log = self.prefix.join("error.log");
        let output = tokio::process::Command::new(&self.binary)
            .arg("-p")
            .arg(&self.prefix)
            .arg("-c")
            .arg(&self.conf)
            .arg("-e")
            .arg(&error_log)
            .args(extra)
            .output()
            .await
            .with_context(|| format!("failed to run {}", self.binary.display()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!(
                "{} {} failed: {}",
                self.binary.display(),
                extra.join(" "),
                stderr.trim()
            );
        }
        Ok(())
    }
}

impl Proxy for HostNginx {
    async fn test_config(&self) -> Result<()> {
        self.run(&["-t", "-q"]).await
    }

    async fn reload(&self) -> Result<()> {
        self.run(&["-s", "reload"]).await
    }

    fn https_address(&self) -> SocketAddr {
        self.https
    }
}
