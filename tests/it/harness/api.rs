//! Runs the real `elior serve` on a free port against a fresh SQLite file and upload
//! directory, and speaks HTTP to it. The process is killed when the [`Server`] drops,
//! even when a test fails.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const PASSWORD: &str = "correct-horse-battery";
/// The server's throttle: failed logins from one client before its address is locked,
/// and registrations from one client per hour.
pub const LOGIN_FAILURES_PER_ADDRESS: usize = 20;
pub const REGISTRATIONS_PER_ADDRESS: usize = 10;

/// Which database a server keeps its data in (issue 16: the suite runs on both).
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite,
    /// The URL of a fresh database (see `tests/pg_harness`).
    Postgres(String),
}

pub struct Server {
    /// DATABASE_URL when the server runs on PostgreSQL.
    pub database_url: Option<String>,
    child: Child,
    pub base: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    agent: ureq::Agent,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Server {
        Self::start_in(tempfile::tempdir().unwrap(), env)
    }

    /// A server on `db`.
    pub fn start_on(db: &Db) -> Server {
        Self::start_on_with(db, &[])
    }

    pub fn start_on_with(db: &Db, env: &[(&str, &str)]) -> Server {
        let url = match db {
            Db::Sqlite => None,
            Db::Postgres(url) => Some(url.clone()),
        };
        Self::start_full(tempfile::tempdir().unwrap(), url, env)
    }

    /// Stops this server (SIGTERM, waiting for the exit) and starts a new one on the same
    /// database, uploads and secret: a restart as an operator does it.
    pub fn restart(mut self, env: &[(&str, &str)]) -> Server {
        let status = self.terminate();
        assert!(status.success(), "server exit: {status:?}");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::start_full(dir, self.database_url.clone(), env)
    }

    /// Starts a server on the database and uploads in `dir` (fresh or left by another).
    pub fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Server {
        Self::start_full(dir, None, env)
    }

    /// Like [`Server::start_in`], on PostgreSQL when `database_url` is set.
    pub fn start_full(
        dir: tempfile::TempDir,
        database_url: Option<String>,
        env: &[(&str, &str)],
    ) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_elior"));
        cmd.args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "DATABASE_URL",
                format!("sqlite:///{}", dir.path().join("elior.db").display()),
            )
            .env("UPLOAD_DIR", dir.path().join("uploads"))
            .env("JWT_SECRET", "test-secret-0123456789abcdef0123456789")
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(url) = &database_url {
            cmd.env("DATABASE_URL", url);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("elior serve starts");
        let server = Server {
            database_url,
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
            dir,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if server
                .agent
                .get(&format!("{}/health", server.base))
                .call()
                .is_ok()
            {
                return server;
            }
            assert!(Instant::now() < deadline, "server did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn finish(result: Result<ureq::Response, ureq::Error>) -> Reply {
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("request failed: {e}"),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .map(|n| {
                let v = resp.header(&n).unwrap_or_default().to_string();
                (n, v)
            })
            .collect();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes).unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            headers,
            bytes,
        }
    }

    fn req(&self, method: &str, path: &str, token: Option<&str>) -> ureq::Request {
        let mut r = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.set("Authorization", &format!("Bearer {t}"));
        }
        r
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let r = self.req(method, path, token);
        Self::finish(match body {
            Some(b) => r.send_json(b),
            None => r.call(),
        })
    }

    pub fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None)
    }

    pub fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("POST", path, Some(token), Some(body))
    }

    /// A POST without a body, for action routes (assign, remove, mark read).
    pub fn action(&self, method: &str, path: &str, token: &str) -> Reply {
        self.call(method, path, Some(token), None)
    }

    /// [`Server::call`] with extra request headers (`X-Forwarded-For` from a trusted proxy).
    pub fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        let mut r = self.req(method, path, None);
        for (k, v) in headers {
            r = r.set(k, v);
        }
        Self::finish(match body {
            Some(b) => r.send_json(b),
            None => r.call(),
        })
    }

    /// The server's anonymous resident memory now (its heap), in KiB.
    pub fn heap_kib(&self) -> u64 {
        crate::harness::server::status_kib(self.child.id(), "RssAnon:")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }

    pub fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("PUT", path, Some(token), Some(body))
    }

    pub fn delete(&self, path: &str, token: &str) -> Reply {
        self.call("DELETE", path, Some(token), None)
    }

    /// A POST of an `application/x-www-form-urlencoded` form, without a token.
    pub fn form(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        Self::finish(self.req("POST", path, None).send_form(fields))
    }

    /// A multipart upload of one file field.
    pub fn upload(
        &self,
        path: &str,
        token: &str,
        field: &str,
        filename: &str,
        bytes: &[u8],
    ) -> Reply {
        let boundary = "elior-test-boundary-7f3a";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let r = self.req("POST", path, Some(token)).set(
            "Content-Type",
            &format!("multipart/form-data; boundary={boundary}"),
        );
        Self::finish(r.send_bytes(&body))
    }

    pub fn login(&self, username: &str) -> String {
        let r = self.call(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"username": username, "password": PASSWORD})),
        );
        assert_eq!(r.status, 200, "login {username}: {:?}", r.body);
        r.body["access_token"].as_str().unwrap().to_string()
    }
}

/// A logged-in account.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: i64,
    pub token: String,
}

/// The cast of the role matrix: an admin, two trainers, and one client of each.
pub struct Cast {
    pub admin: Account,
    pub trainer: Account,
    pub other_trainer: Account,
    pub client: Account,
    pub other_client: Account,
}

fn registration(name: &str) -> Value {
    json!({
        "username": name,
        "email": format!("{name}@example.com"),
        "password": PASSWORD,
        "full_name": format!("{name} test"),
    })
}

impl Cast {
    pub fn new(s: &Server) -> Cast {
        let r = s.call(
            "POST",
            "/api/auth/setup/admin",
            None,
            Some(registration("admin")),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
        let admin = Account {
            id: r.body["user"]["id"].as_i64().unwrap(),
            token: r.body["access_token"].as_str().unwrap().into(),
        };
        let trainer = make(s, &admin.token, "/api/auth/register/trainer", "trainer_a");
        let other_trainer = make(s, &admin.token, "/api/auth/register/trainer", "trainer_b");
        let client = make(s, &trainer.token, "/api/auth/register/client", "client_a");
        let other_client = make(
            s,
            &other_trainer.token,
            "/api/auth/register/client",
            "client_b",
        );
        Cast {
            admin,
            trainer,
            other_trainer,
            client,
            other_client,
        }
    }

    /// (label, token) for each role of the matrix, in a fixed order.
    pub fn roles(&self) -> [(&'static str, &str); 5] {
        [
            ("admin", &self.admin.token),
            ("owning trainer", &self.trainer.token),
            ("other trainer", &self.other_trainer.token),
            ("owning client", &self.client.token),
            ("other client", &self.other_client.token),
        ]
    }
}

fn make(s: &Server, token: &str, path: &str, name: &str) -> Account {
    let r = s.post(path, token, registration(name));
    assert_eq!(r.status, 201, "{path} {name}: {:?}", r.body);
    Account {
        id: r.body["id"].as_i64().unwrap(),
        token: s.login(name),
    }
}

/// Asserts the statuses each role of the matrix gets for one request.
pub fn matrix(
    s: &Server,
    cast: &Cast,
    what: &str,
    expected: [u16; 5],
    mut request: impl FnMut(&str) -> Reply,
) {
    let got: Vec<u16> = cast
        .roles()
        .iter()
        .map(|(_, t)| request(t).status)
        .collect();
    let labels: Vec<&str> = cast.roles().iter().map(|(l, _)| *l).collect();
    assert_eq!(
        got, expected,
        "{what}: statuses for {labels:?} (server {})",
        s.base
    );
}
