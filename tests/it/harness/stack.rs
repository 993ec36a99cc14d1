//! Helpers for the doctor and probe tests: a stack directory made by the real `elior
//! init` and `render`, a test CA and certificates made with rcgen, the fixture nginx
//! image serving a stack's rendered config, and guards that remove every container the
//! test started (labelled `elior.test=1`), even when the test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub const BIN: &str = env!("CARGO_BIN_EXE_elior");

pub fn elior(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run elior")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Both streams of a command, for failure messages and for checks on what it said.
pub fn both_streams(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// Both streams of a command that must have exited with `code`; when it did not, the
/// failure shows them.
#[track_caller]
pub fn exited(out: &Output, code: i32) -> String {
    let said = both_streams(out);
    assert_eq!(out.status.code(), Some(code), "{said}");
    said
}

/// The stdout of a command that must have succeeded; when it did not, the failure shows
/// both streams.
#[track_caller]
pub fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A name no other test (or test run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Writes `dir`'s deploy lock as held by this (live) test process running `command`, as a
/// concurrent deploy or restore would hold it.
pub fn hold_deploy_lock(dir: &Path, command: &str) {
    std::fs::create_dir_all(dir.join(".elior")).unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let holder = serde_json::json!({
        "pid": std::process::id(),
        "host": hostname.trim(),
        "command": command,
        "since": "2026-01-01T00:00:00+00:00",
    });
    std::fs::write(dir.join(".elior/deploy.lock"), holder.to_string()).unwrap();
}

/// A stack directory (`elior init` + `elior render`) in a temp dir.
pub struct Stack {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub domain: String,
}

impl Stack {
    /// `init DOMAIN`, `extra` env lines appended, then `render`.
    pub fn new(domain: &str, extra: &[(&str, &str)]) -> Stack {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("stack");
        let out = elior(&["init", domain, "--dir", dir.to_str().unwrap()]);
        assert!(out.status.success(), "init: {}", text(&out.stderr));
        let stack = Stack {
            _tmp: tmp,
            dir,
            domain: domain.to_string(),
        };
        stack.set_env(extra);
        let out = elior(&["render", "--dir", stack.path()]);
        assert!(out.status.success(), "render: {}", text(&out.stderr));
        stack
    }

    pub fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    pub fn env_path(&self) -> PathBuf {
        self.dir.join(".env.production")
    }

    /// Replaces or adds `KEY=VALUE` lines, keeping the file's mode.
    pub fn set_env(&self, pairs: &[(&str, &str)]) {
        let mut text = std::fs::read_to_string(self.env_path()).unwrap();
        for (key, value) in pairs {
            let line = format!("{key}={value}");
            let prefix = format!("{key}=");
            if text.lines().any(|l| l.starts_with(&prefix)) {
                text = text
                    .lines()
                    .map(|l| {
                        if l.starts_with(&prefix) {
                            line.clone()
                        } else {
                            l.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
                    + "\n";
            } else {
                text.push_str(&line);
                text.push('\n');
            }
        }
        std::fs::write(self.env_path(), text).unwrap();
    }

    /// `elior doctor --dir DIR ARGS...` with `env` set.
    pub fn doctor(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(["doctor", "--dir", self.path()]).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env("NO_COLOR", "1").output().expect("run elior doctor")
    }

    pub fn write_pair(&self, cert_pem: &str, key_pem: &str) {
        let ssl = self.dir.join("nginx/ssl");
        std::fs::create_dir_all(&ssl).unwrap();
        std::fs::write(ssl.join("cert.pem"), cert_pem).unwrap();
        std::fs::write(ssl.join("key.pem"), key_pem).unwrap();
    }
}

/// A certificate authority for tests, and the leaf certificates it signs.
pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "elior test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `name` valid from `from_days` to `to_days` (relative to now): returns
    /// (certificate PEM, key PEM).
    pub fn leaf(&self, name: &str, from_days: i64, to_days: i64) -> (String, String) {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from_days);
        params.not_after = now + time::Duration::days(to_days);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("test-ca.pem");
        std::fs::write(&path, &self.cert_pem).unwrap();
        path
    }
}

/// The fixture nginx image, built once per machine by the script (it locks and caches).
pub fn nginx_image() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-fixture-images");
    let out = Command::new(script)
        .output()
        .expect("run scripts/build-fixture-images");
    assert!(
        out.status.success(),
        "building the nginx fixture failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

/// A fixture nginx serving a stack's rendered config on local ports; removed on drop.
pub struct Nginx {
    pub name: String,
    /// A user-defined network, so nginx's `resolver 127.0.0.11` (Docker's DNS) answers
    /// at once that no `api` exists (502) instead of timing out.
    network: String,
    pub http_port: u16,
    pub https_port: u16,
}

impl Nginx {
    pub fn start(stack: &Stack) -> Nginx {
        let image = nginx_image();
        let name = unique("elior-test-probe-nginx");
        let network = format!("{name}-net");
        let out = docker(&["network", "create", "--label", "elior.test=1", &network]);
        assert!(
            out.status.success(),
            "network create: {}",
            text(&out.stderr)
        );
        let mut nginx = Nginx {
            name: name.clone(),
            network: network.clone(),
            http_port: 0,
            https_port: 0,
        };
        let mut args: Vec<String> = ["run", "-d", "--label", "elior.test=1", "--name", &name]
            .map(String::from)
            .to_vec();
        args.extend(["--network".to_string(), network.clone()]);
        args.extend(["-p", "127.0.0.1::80", "-p", "127.0.0.1::443"].map(String::from));
        for (host, target) in [
            ("nginx", "/etc/nginx/elior:ro"),
            ("uploads", "/srv/elior/uploads:ro"),
            ("frontend", "/srv/elior/frontend:ro"),
        ] {
            args.push("-v".into());
            args.push(format!("{}:{target}", stack.dir.join(host).display()));
        }
        args.extend(
            [
                &image,
                "nginx",
                "-c",
                "/etc/nginx/elior/nginx.conf",
                "-g",
                "daemon off;",
            ]
            .map(String::from),
        );
        let out = Command::new("docker").args(&args).output().unwrap();
        assert!(out.status.success(), "docker run: {}", text(&out.stderr));
        let port = |p: &str| -> u16 {
            let out = docker(&["port", &nginx.name, p]);
            text(&out.stdout)
                .lines()
                .next()
                .and_then(|l| l.rsplit(':').next())
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("no port {p}: {}", text(&out.stderr)))
        };
        nginx.http_port = port("80/tcp");
        nginx.https_port = port("443/tcp");
        nginx
    }

    /// Tests the config and reloads it.
    pub fn reload(&self) {
        reload_nginx(&self.name);
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.name]);
        let _ = docker(&["network", "rm", &self.network]);
    }
}

/// Reloads the stack's nginx.conf in a running nginx container.
pub fn reload_nginx(container: &str) {
    let out = docker(&[
        "exec",
        container,
        "nginx",
        "-c",
        "/etc/nginx/elior/nginx.conf",
        "-s",
        "reload",
    ]);
    assert!(out.status.success(), "reload: {}", text(&out.stderr));
}

/// `elior probe ssl HOST:PORT --connect 127.0.0.1 --json` with the test CA trusted,
/// retried for up to 15 s until `want` holds (a reload hands new connections to the new
/// workers asynchronously). Returns the last output and its JSON.
pub fn probe_ssl_until(
    host: &str,
    https_port: u16,
    http_port: u16,
    ca: &Path,
    want: impl Fn(&serde_json::Value) -> bool,
) -> (Output, serde_json::Value) {
    let target = format!("{host}:{https_port}");
    let http_port = http_port.to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let out = elior(&[
            "probe",
            "ssl",
            &target,
            "--connect",
            "127.0.0.1",
            "--http-port",
            &http_port,
            "--ca",
            ca.to_str().unwrap(),
            "--json",
        ]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
        if want(&report) || std::time::Instant::now() > deadline {
            return (out, report);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
