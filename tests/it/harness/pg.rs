//! A throwaway PostgreSQL cluster (issue 16): `initdb` into a temp dir (as the
//! `postgres` user when the tests run as root, since PostgreSQL refuses to run as root),
//! `pg_ctl start` on a free port with its socket in the same dir, password
//! authentication over TCP. [`Cluster`]'s `Drop` stops it (`pg_ctl stop -m immediate`)
//! and removes the dir, even when a test fails. Each test gets a fresh database
//! ([`Cluster::database`]).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const PG_PASSWORD: &str = "pg-test-secret-4711";

pub struct Cluster {
    dir: tempfile::TempDir,
    pub port: u16,
    as_postgres: bool,
    /// `listen_addresses`: loopback, plus an address containers reach when asked.
    listen: String,
}

fn bin(name: &str) -> PathBuf {
    let debian = Path::new("/usr/lib/postgresql/15/bin").join(name);
    if debian.exists() {
        debian
    } else {
        PathBuf::from(name)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_listening(None)
    }

    /// A cluster that also listens on `address` (a Docker bridge's gateway, say), with
    /// password authentication from any host: what containers connect to.
    pub fn start_listening(address: Option<&str>) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("elior-pg-")
            .tempdir()
            .unwrap();
        let as_postgres = is_root();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PG_PASSWORD).unwrap();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown the cluster dir to postgres");
        }
        let mut cluster = Cluster {
            dir,
            port: 0,
            as_postgres,
            listen: ["127.0.0.1"]
                .into_iter()
                .chain(address)
                .collect::<Vec<_>>()
                .join(","),
        };
        let out = cluster
            .command(&bin("initdb"))
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256", "-D"])
            .arg(&data)
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if address.is_some() {
            let hba = data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).unwrap();
            text.push_str("host all all 0.0.0.0/0 scram-sha-256\n");
            std::fs::write(&hba, text).unwrap();
        }
        // A port that was free a moment ago may be taken by then: try a few.
        for _ in 0..5 {
            let port = free_port();
            if cluster.pg_ctl_start(port) {
                cluster.port = port;
                return cluster;
            }
        }
        let log = std::fs::read_to_string(cluster.dir.path().join("log")).unwrap_or_default();
        panic!("pg_ctl start failed:\n{log}");
    }

    fn pg_ctl_start(&self, port: u16) -> bool {
        self.command(&bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "30", "start", "-o"])
            .arg(format!(
                "-k {} -p {port} -c listen_addresses={} -c fsync=off -c max_connections=200",
                self.dir.path().display(),
                self.listen
            ))
            .stdout(Stdio::null())
            .output()
            .unwrap()
            .status
            .success()
    }

    /// Stops the server (fast shutdown); [`Cluster::start_again`] brings it back.
    pub fn stop(&self) {
        let ok = self
            .command(&bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "pg_ctl stop");
    }

    /// Starts the stopped server again on the same port.
    pub fn start_again(&self) {
        assert!(self.pg_ctl_start(self.port), "pg_ctl start again");
    }

    fn command(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{}/{name}",
            self.port
        )
    }

    /// A fresh, empty database; its URL.
    pub fn database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "elior_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs SQL through psql on the socket; its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .command(&bin("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// An open psql session on the socket (a transaction held across a test step);
    /// killed when dropped.
    pub fn psql_session(&self, db: &str) -> Session {
        let mut child = self
            .command(&bin("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        Session { child, stdout }
    }

    /// Waits until `f` holds, for up to `within`.
    pub fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        f()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command(&bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A psql process reading SQL from its stdin.
pub struct Session {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Session {
    pub fn send(&mut self, sql: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
    }

    /// Reads psql's output until a line equal to `want` (psql exiting is a failure).
    pub fn wait_for_line(&mut self, want: &str) {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "psql ended before printing {want:?}");
            if line.trim() == want {
                return;
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
