//! Real services for the certificate tests: Debian's pebble (ACME) with
//! pebble-challtestsrv as its DNS, and a host nginx serving a stack directory's webroot
//! and certificate. Every process runs on free ports of its own and is stopped by a
//! Drop guard, even when a test fails.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

pub const DOMAIN: &str = "elior.test";

/// A TCP port nobody listens on now (and whose UDP twin is free too, for DNS).
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not listen on {port}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tempdir nginx workers (unprivileged) can traverse.
pub fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Pebble and its DNS server. The ACME endpoint's TLS certificate comes from a CA made
/// here (Debian ships none); pebble's issuing root is new at every start.
pub struct Pebble {
    pebble: Child,
    dns: Child,
    pub dir: tempfile::TempDir,
    pub directory_url: String,
    /// The CA of pebble's own HTTPS endpoint, followed by pebble's issuing root.
    pub ca_bundle: PathBuf,
    /// Pebble's issuing root alone.
    pub issuing_root: CertificateDer<'static>,
    /// pebble-challtestsrv's management port (its DNS answers).
    dns_management: u16,
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` of whatever the names resolve to.
    pub fn start(http_port: u16) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, server_cert, server_key) = tls_for_localhost();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        std::fs::write(dir.path().join("cert.pem"), server_cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), server_key).unwrap();
        let (acme, management, dns, dns_management, tls) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": http_port,
                "tlsPort": tls,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();

        let dns_log = dir.path().join("challtestsrv.log");
        let dns_child = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .stdout(std::fs::File::create(&dns_log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv runs (apt install pebble)");
        let pebble_log = dir.path().join("pebble.log");
        let log_file = std::fs::File::create(&pebble_log).unwrap();
        let pebble_child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Every order validates its challenges: by default pebble reuses half of the
            // valid authorizations at random, so a renewal might ask no challenge at all.
            .env("PEBBLE_AUTHZREUSE", "0")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("pebble runs (apt install pebble)");
        let mut this = Pebble {
            pebble: pebble_child,
            dns: dns_child,
            directory_url: format!("https://127.0.0.1:{acme}/dir"),
            ca_bundle: dir.path().join("bundle.pem"),
            issuing_root: CertificateDer::from(Vec::new()),
            dir,
            dns_management,
        };
        wait_for_port(dns_management, "pebble-challtestsrv", &dns_log);
        wait_for_port(acme, "pebble", &pebble_log);
        wait_for_port(management, "pebble management", &pebble_log);
        let root_pem = https_get(
            SocketAddr::from(([127, 0, 0, 1], management)),
            "/roots/0",
            &ca_pem,
        );
        this.issuing_root = CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap();
        std::fs::write(&this.ca_bundle, format!("{ca_pem}{root_pem}")).unwrap();
        this
    }
}

impl Pebble {
    /// From now on pebble's DNS answers no address for any name, so the CA refuses every
    /// HTTP-01 challenge, while elior's own checks (ELIOR_RESOLVE) still reach nginx.
    pub fn resolve_nothing(&self) {
        let client = elior::http::ClientBuilder::new(elior::http::Trust::Insecure)
            .build::<http_body_util::Full<bytes::Bytes>>()
            .unwrap();
        let url = format!("http://127.0.0.1:{}/set-default-ipv4", self.dns_management);
        let reply = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(client.post_json(&url, &serde_json::json!({ "ip": "" })))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(reply.status, 200, "{url}: {}", reply.text());
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.dns] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A CA and a server certificate for `localhost` / 127.0.0.1 signed by it (PEM).
fn tls_for_localhost() -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "elior test pebble TLS CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// GET over HTTPS trusting `ca_pem`; returns the body.
fn https_get(addr: SocketAddr, path: &str, ca_pem: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // pebble's certificate names localhost; reach it at `addr` whatever its address.
        let client = elior::http::ClientBuilder::new(elior::http::Trust::Roots(Arc::new(roots)))
            .connect_to(addr.ip())
            .fresh_connections()
            .build()
            .unwrap();
        let url = format!("https://localhost:{}{path}", addr.port());
        let reply = client
            .get(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        reply.text()
    })
}

/// A stack directory: `.env.production`, `nginx/ssl/` and `nginx/acme/`.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub https_port: u16,
}

impl Stack {
    pub fn new(env: &[(&str, &str)]) -> Stack {
        let dir = open_tempdir();
        let (http_port, https_port) = (free_port(), free_port());
        let mut text = format!("DOMAIN={DOMAIN}\nHTTP_PORT={http_port}\nHTTPS_PORT={https_port}\n");
        for (key, value) in env {
            text.push_str(&format!("{key}={value}\n"));
        }
        std::fs::write(dir.path().join(".env.production"), text).unwrap();
        std::fs::create_dir_all(dir.path().join("nginx/acme/.well-known/acme-challenge")).unwrap();
        Stack {
            dir,
            http_port,
            https_port,
        }
    }

    /// Adds settings to `.env.production`.
    pub fn append_env(&self, env: &[(&str, &str)]) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path().join(".env.production"))
            .unwrap();
        for (key, value) in env {
            writeln!(file, "{key}={value}").unwrap();
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cert_pem(&self) -> Vec<u8> {
        std::fs::read(self.path().join("nginx/ssl/cert.pem")).unwrap()
    }

    /// Puts the self-signed bootstrap certificate in place, as deploy does first.
    pub fn bootstrap(&self) {
        let issued = elior::tls::selfsigned::generate(DOMAIN, 30).unwrap();
        elior::tls::selfsigned::write(&elior::tls::files::StackPaths::new(self.path()), &issued)
            .unwrap();
    }

    /// Runs `elior ARGS --dir STACK` with `ELIOR_RESOLVE` pinning the test names.
    pub fn elior(&self, args: &[&str]) -> Output {
        self.elior_with(args, &[])
    }

    /// The same, with more environment (`ELIOR_FAULT` for a crash test).
    pub fn elior_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_elior"))
            .args(args)
            .arg("--dir")
            .arg(self.path())
            .env(
                "ELIOR_RESOLVE",
                format!("{DOMAIN}:127.0.0.1,www.{DOMAIN}:127.0.0.1"),
            )
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    pub fn https_address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.https_port))
    }
}

/// A host nginx (Debian's) serving a stack: the ACME webroot on HTTP_PORT and
/// `nginx/ssl/` on HTTPS_PORT, like the stack's container does on 80 and 443.
pub struct Nginx {
    child: Option<Child>,
    pub conf: PathBuf,
    prefix: tempfile::TempDir,
}

impl Nginx {
    pub fn start(stack: &Stack) -> Nginx {
        let prefix = tempfile::tempdir().unwrap();
        let p = prefix.path().display();
        let s = stack.path().display();
        let conf = format!(
            "daemon off;
master_process on;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {p}/body;
    server {{
        listen 127.0.0.1:{http};
        location ^~ /.well-known/acme-challenge/ {{ root {s}/nginx/acme; default_type text/plain; }}
        location / {{ return 404; }}
    }}
    server {{
        listen 127.0.0.1:{https} ssl;
        ssl_certificate {s}/nginx/ssl/cert.pem;
        ssl_certificate_key {s}/nginx/ssl/key.pem;
        location / {{ return 200 \"ok\\n\"; }}
    }}
}}
",
            http = stack.http_port,
            https = stack.https_port,
        );
        let conf_path = prefix.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let error_log = prefix.path().join("error.log");
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(&error_log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx runs (apt install nginx-light)");
        wait_for_port(stack.http_port, "nginx", &error_log);
        wait_for_port(stack.https_port, "nginx", &error_log);
        Nginx {
            child: Some(child),
            conf: conf_path,
            prefix,
        }
    }

    /// Stops nginx (master and workers) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM to the master: it stops its workers. (`nginx -s stop` would
            // re-read the config, which a test may have broken on purpose.)
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
