//! What the tests that deploy a stack on the real Docker Engine share: removing a test
//! stack (every container and network labelled with its directory, and its API image
//! repository) in a Drop guard, and a bounded client loop that counts failed requests during a reload.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A stack directory (not created yet) with its own domain, ports and API image
/// repository; dropping it removes what was deployed from the directory, and the images.
pub struct TestStack {
    /// Holds `dir`; room beside it for test files.
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub domain: String,
    pub api_repo: String,
    pub http_port: u16,
    pub https_port: u16,
}

impl TestStack {
    /// The stack's HTTPS port on loopback.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.https_port))
    }

    /// A stack of `domain` (another test stack's, or a spelling of it), in its own
    /// directory with its own ports and API image repository.
    pub fn with_domain(name: &str, domain: &str) -> TestStack {
        let mut stack = TestStack::new(name);
        stack.domain = domain.to_string();
        stack
    }

    pub fn new(name: &str) -> TestStack {
        let tmp = tempfile::tempdir().unwrap();
        let unique = format!(
            "{name}-{}-{}",
            std::process::id(),
            tmp.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "")
        );
        let domain = format!("{unique}.elior.test");
        TestStack {
            dir: tmp.path().join("stack"),
            api_repo: format!("elior-test-{unique}-api"),
            http_port: free_port(),
            https_port: free_port(),
            domain,
            tmp,
        }
    }

    /// `elior init`, then the test's ports and images in the env file.
    pub fn init(&self) {
        let out = Command::new(env!("CARGO_BIN_EXE_elior"))
            .args(["init", &self.domain, "--dir", self.dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.set_env(&[
            ("HTTP_PORT", &self.http_port.to_string()),
            ("HTTPS_PORT", &self.https_port.to_string()),
            ("API_IMAGE", &format!("{}:latest", self.api_repo)),
            ("PROXY_IMAGE", &fixture_nginx_image()),
        ]);
    }

    pub fn env_path(&self) -> PathBuf {
        self.dir.join(".env.production")
    }

    /// The stack's owner (id, directory, project), once `init` gave it an id.
    pub fn owner(&self) -> elior::docker::Owner {
        elior::config::model::owner_of(&self.dir, &self.domain)
            .unwrap()
            .expect("the stack has an id")
    }

    /// `elior-<domain>-<id8>`.
    pub fn project(&self) -> String {
        self.owner().project
    }

    /// Replaces or appends `KEY=VALUE` lines.
    pub fn set_env(&self, pairs: &[(&str, &str)]) {
        let mut text = std::fs::read_to_string(self.env_path()).unwrap();
        for (key, value) in pairs {
            let prefix = format!("{key}=");
            text = text
                .lines()
                .filter(|l| !l.starts_with(&prefix))
                .map(|l| format!("{l}\n"))
                .collect();
            text.push_str(&format!("{key}={value}\n"));
        }
        std::fs::write(self.env_path(), text).unwrap();
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        remove_stack(&self.dir, &self.api_repo);
    }
}

/// A copy of the elior binary with `dir`'s path appended: the same program, a content
/// hash of its own (one for each directory), so deploying it is an update to a new API
/// image.
pub fn new_build_of_elior(dir: &std::path::Path) -> String {
    let path = dir.join("elior-next");
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_elior")).unwrap();
    bytes.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()));
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}

/// A port nothing listens on now, on any address (nginx publishes on 0.0.0.0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The fixture nginx image, built once per machine by the script (it locks and caches).
pub fn fixture_nginx_image() -> String {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-fixture-images");
    let out = Command::new(script)
        .output()
        .expect("run scripts/build-fixture-images");
    assert!(
        out.status.success(),
        "building the nginx fixture image failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The api container's `status --json` entry (from `api_status`) once Docker's own health
/// check has run. Deploy and restore gate on that same check run through exec, so Docker
/// may still say `starting` for up to one healthcheck interval (10 s) after they return.
pub fn api_once_docker_checked(api_status: impl Fn() -> serde_json::Value) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let api = api_status();
        if api["health"] != "starting" || std::time::Instant::now() > deadline {
            return api;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Removes every container and network deployed from `dir` (by its `elior.stack-dir`
/// label, whatever its id) and every image of `api_repo`; errors are ignored (it runs in
/// Drop, after a failure too).
pub fn remove_stack(dir: &std::path::Path, api_repo: &str) {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let label = format!("{}={}", elior::docker::LABEL_STACK_DIR, dir.display());
    let repo = api_repo.to_string();
    runtime().block_on(async move {
        let Ok(docker) = elior::docker::connect().await else {
            return;
        };
        let filters = || Some([("label".to_string(), vec![label.clone()])].into());
        let containers = docker
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: filters(),
                ..Default::default()
            }))
            .await
            .unwrap_or_default();
        for c in containers {
            if let Some(id) = c.id {
                let _ = elior::docker::apply::stop_and_remove(&docker, &id).await;
            }
        }
        let networks = docker
            .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
                filters: filters(),
            }))
            .await
            .unwrap_or_default();
        for n in networks.into_iter().filter_map(|n| n.name) {
            let _ = docker.remove_network(&n).await;
        }
        let images = docker
            .list_images(Some(bollard::query_parameters::ListImagesOptions {
                filters: Some([("reference".to_string(), vec![repo])].into()),
                ..Default::default()
            }))
            .await
            .unwrap_or_default();
        for tag in images.into_iter().flat_map(|i| i.repo_tags) {
            let options = bollard::query_parameters::RemoveImageOptions {
                force: true,
                noprune: false,
            };
            let _ = docker.remove_image(&tag, Some(options), None).await;
        }
    });
}

/// Runs `request` (one new connection each) every 10 ms until stopped, at most 60,000
/// times (about 10 minutes); counts the successes and keeps every failure.
pub struct ClientLoop {
    stop: Arc<AtomicBool>,
    /// Requests answered so far (successes and failures), for [`ClientLoop::wait_for`].
    answered: Arc<AtomicUsize>,
    handle: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl ClientLoop {
    pub fn start<F, Fut>(request: F) -> ClientLoop
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>>,
    {
        Self::start_every(Duration::from_millis(10), request)
    }

    /// As [`ClientLoop::start`], pausing `pause` between requests.
    pub fn start_every<F, Fut>(pause: Duration, request: F) -> ClientLoop
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>>,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        let handle = std::thread::spawn(move || {
            runtime().block_on(async move {
                let (mut ok, mut failures) = (0, Vec::new());
                for _ in 0..60_000 {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    match request().await {
                        Ok(()) => ok += 1,
                        Err(e) => failures.push(e),
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(pause).await;
                }
                (ok, failures)
            })
        });
        ClientLoop {
            stop,
            answered,
            handle,
        }
    }

    /// Requests answered so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    /// Waits (30 s at most) until `more` further requests were answered: the loop is
    /// then known to have run across whatever happened before the call (issue 20: no
    /// fixed sleep and a count that hopes).
    pub fn wait_for(&self, more: usize) {
        let target = self.answered() + more;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.answered() < target {
            assert!(
                std::time::Instant::now() < deadline,
                "the client loop answered {} of {target} requests in 30 s",
                self.answered()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}
