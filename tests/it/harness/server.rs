//! Shared helpers for integration tests: start the real `elior serve` on a free port in a
//! temp dir, one request through elior's HTTP client, and a reader of raw answers for the
//! tests that send partial requests by hand.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_elior");
pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// A running `elior serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts a development server with a known secret plus `env`.
    pub fn start(env: &[(&str, &str)]) -> Server {
        let mut all = vec![("JWT_SECRET", SECRET)];
        all.extend_from_slice(env);
        Self::try_start(&all).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `elior serve` with exactly `env` (the rest of the environment is cleared).
    pub fn try_start(env: &[(&str, &str)]) -> Result<Server, String> {
        let dir = tempfile::tempdir().unwrap();
        Self::try_start_in(dir, env)
    }

    pub fn try_start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Result<Server, String> {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--bind")
            .arg("127.0.0.1:0")
            .current_dir(dir.path())
            .env_clear()
            .env("LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn elior serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => Ok(Server {
                child,
                addr: addr.parse().unwrap(),
                dir,
                log,
            }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                std::thread::sleep(Duration::from_millis(100));
                Err(format!(
                    "server did not start ({status}):\n{}",
                    log.lock().unwrap().join("\n")
                ))
            }
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, &[], None)
    }

    pub fn get_auth(&self, path: &str, token: &str) -> Resp {
        request(
            self.addr,
            "GET",
            path,
            &[("Authorization", &format!("Bearer {token}"))],
            None,
        )
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Resp {
        request(
            self.addr,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(body.to_string().as_bytes()),
        )
    }

    pub fn post_json_auth(&self, path: &str, token: &str, body: &serde_json::Value) -> Resp {
        let auth = format!("Bearer {token}");
        request(
            self.addr,
            "POST",
            path,
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &auth),
            ],
            Some(body.to_string().as_bytes()),
        )
    }

    /// Registers a client and logs in; returns the access token.
    pub fn register_and_login(&self, username: &str, password: &str) -> String {
        let r = self.post_json(
            "/api/auth/register",
            &serde_json::json!({
                "username": username,
                "email": format!("{username}@example.com"),
                "password": password,
                "full_name": "Test Person",
            }),
        );
        assert_eq!(r.status, 201, "register: {}", r.body);
        let r = self.post_json(
            "/api/auth/login",
            &serde_json::json!({ "username": username, "password": password }),
        );
        assert_eq!(r.status, 200, "login: {}", r.body);
        r.json()["access_token"].as_str().unwrap().to_string()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (5 s at most) until the log satisfies `done`, instead of sleeping and
    /// hoping; returns the log either way, so the caller's assertion shows it.
    pub fn wait_for_log(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.log_text();
            if done(&text) || Instant::now() >= deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        wait_with_deadline(&mut self.child, Duration::from_secs(20))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// glibc tuned as the API image tunes it ([`elior::docker::image::MALLOC_ENV`]: a
/// password hash's 9 MiB block is mapped on its own and unmapped when freed), for tests
/// that measure the server's memory.
pub fn image_malloc_env() -> Vec<(&'static str, &'static str)> {
    elior::docker::image::MALLOC_ENV
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .collect()
}

/// What follows `key` on its line of `/proc/PID/FILE` (`status`, `limits`...), trimmed.
pub fn proc_field(pid: u32, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}"));
    line[key.len()..].trim().to_string()
}

/// A `kB` figure of `/proc/PID/status` (`VmRSS:`, `RssAnon:`...), in KiB.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let value = proc_field(pid, "status", key);
    value
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{key} {value} in /proc/{pid}/status"))
}

pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{name} {pid}");
}

pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn has_header_prefix(&self, prefix: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.to_ascii_lowercase().starts_with(prefix))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request on a fresh connection, sent through elior's own HTTP client.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    try_request(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{e}"))
}

/// [`request`], with a failed exchange as an error (a server that answers before it is
/// asked, at its connection limit, breaks hyper's exchange).
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Resp, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Plain http to the test server: no certificate is ever trusted.
        let nothing = elior::http::Trust::Roots(Arc::new(rustls::RootCertStore::empty()));
        let client = elior::http::ClientBuilder::new(nothing)
            .response_timeout(Duration::from_secs(30))
            .body_limit(64 << 20)
            .fresh_connections()
            .build()
            .unwrap();
        let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        let body = bytes::Bytes::copy_from_slice(body.unwrap_or_default());
        let url = format!("http://{addr}{path}");
        let reply = client
            .send(method.clone(), &url, headers, body)
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        Ok(Resp {
            status: reply.status.as_u16(),
            headers: reply.header_pairs(),
            body: reply.text(),
        })
    })
}

/// Reads one answer from a raw connection to its end, for the tests that write requests
/// by hand on purpose (partial or stalled requests: hyper would never send those).
pub fn read_response(stream: &mut TcpStream) -> Resp {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}
