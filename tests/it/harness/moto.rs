//! A real `moto_server` (PyPI's `moto[server]`, which scripts/test installs) for the S3
//! tests (`tests/uploads_s3.rs`, `tests/backup_offsite.rs`): started on a free loopback
//! port per test, killed when the test ends, even when it fails.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `moto_server` on a free loopback port, killed (with its process group) on drop. A
/// watchdog shell kills it too if this test process dies without unwinding (a timeout's
/// SIGKILL), so no server outlives its test.
pub struct Moto {
    child: Child,
    pub port: u16,
    /// The address it listens on.
    pub host: String,
}

impl Moto {
    pub fn start() -> Moto {
        Self::start_with(free_port(), &[])
    }

    /// `env` is moto's own (INITIAL_NO_AUTH_ACTION_COUNT turns credential checks on).
    pub fn start_with(port: u16, env: &[(&str, &str)]) -> Moto {
        Self::start_on("127.0.0.1", port, env)
    }

    /// A server listening on `host` (a Docker bridge's gateway, so containers reach it).
    pub fn start_on(host: &str, port: u16, env: &[(&str, &str)]) -> Moto {
        let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let watchdog = r#"
            "$0" -H "$3" -p "$1" >/dev/null 2>&1 &
            moto=$!
            trap 'kill -9 $moto 2>/dev/null' EXIT
            while kill -0 "$2" 2>/dev/null && kill -0 "$moto" 2>/dev/null; do sleep 0.5; done
        "#;
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(watchdog)
            .arg(&program)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .arg(host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("bash starts");
        let mut moto = Moto {
            child,
            port,
            host: host.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if moto.http("GET", "/", None).is_ok() {
                return moto;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!(
                    "{program} exited ({status}); install it with `pip install 'moto[server]'` (scripts/test does)"
                );
            }
            assert!(
                Instant::now() < deadline,
                "{program} did not answer on port {port} within 60s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    pub fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, String), String> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let request = agent.request(method, &format!("{}{path}", self.endpoint()));
        let result = match body {
            Some(b) => request.send_bytes(b),
            None => request.call(),
        };
        match result {
            Ok(r) => Ok((r.status(), r.into_string().unwrap_or_default())),
            Err(ureq::Error::Status(code, r)) => Ok((code, r.into_string().unwrap_or_default())),
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.http("PUT", &format!("/{bucket}"), None).unwrap();
        assert_eq!(status, 200, "create bucket {bucket}: {body}");
    }

    pub fn put_object(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let (status, body) = self
            .http("PUT", &format!("/{bucket}/{key}"), Some(bytes))
            .unwrap();
        assert_eq!(status, 200, "put {key}: {body}");
    }

    /// Every key in the bucket.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let (status, body) = self
            .http("GET", &format!("/{bucket}?list-type=2"), None)
            .unwrap();
        assert_eq!(status, 200, "list {bucket}: {body}");
        let mut keys: Vec<String> = body
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect();
        keys.sort();
        keys
    }

    /// Kills the server and its watchdog now.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
