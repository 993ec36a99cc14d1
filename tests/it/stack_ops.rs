//! Day-2 operations on a deployed stack, against the real Docker Engine (fixture nginx
//! image, API image built from this binary) and, for certificates, Debian's pebble: the
//! CA certificate that `elior deploy` obtains through the stack's nginx container, a
//! forced renewal through that container under load, and a restore while the stack runs.
//! One stack per test with its own project, ports and API image repository; a guard
//! removes them by label and name even when the test fails.

use crate::harness::cert as cert_harness;
use crate::harness::docker as docker_harness;
use crate::harness::stack as stack_harness;

use std::process::{Command, Output};
use std::time::Duration;

use cert_harness::{free_port, Pebble};
use docker_harness::{runtime, ClientLoop};
use stack_harness::{succeeded, text};

const BIN: &str = env!("CARGO_BIN_EXE_elior");

type Stack = docker_harness::TestStack;

/// A stack directory made by `elior init`, with its own ports, project, API image
/// repository and backup folder, all removed on drop.
fn init_stack(name: &str) -> Stack {
    let stack = Stack::new(name);
    stack.init();
    let backups = stack.tmp.path().join("backups");
    stack.set_env(&[("BACKUP_DIR", backups.to_str().unwrap())]);
    stack
}

impl Stack {
    /// `elior ARGS --dir DIR`, with the test name pinned to 127.0.0.1.
    fn elior(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .env("ELIOR_RESOLVE", format!("{}:127.0.0.1", self.domain))
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    fn deploy(&self) -> Output {
        self.elior(&["deploy", &self.domain])
    }

    /// `curl` against the stack's API through nginx: (status, body).
    fn curl(&self, method: &str, path: &str, json: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sk", "-X", method, "-H", "content-type: application/json"])
            .args(["--data", json, "-w", "\n%{http_code}", "--resolve"])
            .arg(format!("{}:{}:127.0.0.1", self.domain, self.https_port))
            .arg(format!("https://{}:{}{path}", self.domain, self.https_port))
            .output()
            .expect("curl runs");
        let all = text(&out.stdout);
        let (body, status) = all.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), body.to_string())
    }
}

fn served_chain(stack: &Stack) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    runtime()
        .block_on(elior::tls::served::served_chain(
            stack.addr(),
            &stack.domain,
            Duration::from_secs(5),
        ))
        .expect("nginx serves a certificate")
}

/// One stack walks the certificate lifecycle, so the deploy is paid once.
#[test]
fn deploy_obtains_a_ca_certificate_and_renewal_reloads_the_container_without_a_failed_request() {
    let stack = init_stack("acme");
    // Pebble validates HTTP-01 on the port the stack's nginx publishes.
    let pebble = Pebble::start(stack.http_port);

    // A CA that cannot be reached: the stack still comes up, serving the bootstrap
    // certificate, and deploy says so and exits 1 (not 0, not 2).
    let dead_ca = format!("https://127.0.0.1:{}/dir", free_port());
    stack.set_env(&[
        ("ACME_EMAIL", "ops@example.com"),
        ("ACME_DIRECTORY", &dead_ca),
        ("ACME_CA_FILE", pebble.ca_bundle.to_str().unwrap()),
    ]);
    let out = stack.deploy();
    assert_eq!(out.status.code(), Some(1), "deploy: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("keeps serving the self-signed bootstrap certificate"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        elior::tls::inspect::describe(&served_chain(&stack)[0])
            .unwrap()
            .self_signed
    );
    let health = runtime().block_on(elior::tls::served::https_get_status(
        stack.addr(),
        &stack.domain,
        "/health",
        Duration::from_secs(10),
    ));
    assert_eq!(health.unwrap(), 200);

    // With the CA reachable, deploying again replaces the bootstrap certificate.
    stack.set_env(&[("ACME_DIRECTORY", &pebble.directory_url)]);
    let said = succeeded(&stack.deploy());
    assert!(said.contains("from the CA"), "{said}");
    let chain = served_chain(&stack);
    let leaf = elior::tls::inspect::describe(&chain[0]).unwrap();
    assert!(!leaf.self_signed, "still the bootstrap certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pebble.issuing_root.clone()).unwrap();
    elior::tls::inspect::verify_chain(&chain, roots, &stack.domain)
        .expect("the served chain verifies against pebble's root");

    // Renewal goes through the running nginx container (no --nginx-conf) while clients
    // keep connecting: the serial changes and no request fails.
    let (addr, domain) = (stack.addr(), stack.domain.clone());
    let clients = ClientLoop::start(move || {
        let domain = domain.clone();
        async move {
            let timeout = Duration::from_secs(10);
            match elior::tls::served::https_get_status(addr, &domain, "/health", timeout).await {
                Ok(200) => Ok(()),
                Ok(status) => Err(format!("status {status}")),
                Err(e) => Err(format!("{e:#}")),
            }
        }
    });
    clients.wait_for(5);
    let renew = stack.elior(&["cert", "renew", "--force", "--json"]);
    clients.wait_for(5);
    let (ok, failures) = clients.finish();
    assert!(renew.status.success(), "renew: {}", text(&renew.stderr));
    assert!(
        text(&renew.stderr).contains(&format!("{}-nginx", stack.project())),
        "renew did not use the stack's nginx container: {}",
        text(&renew.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&renew.stdout).unwrap();
    assert_eq!(report["action"], "issued");
    assert_ne!(report["serial"], serde_json::json!(leaf.serial));
    let served = elior::tls::inspect::describe(&served_chain(&stack)[0]).unwrap();
    assert_eq!(serde_json::json!(served.serial), report["serial"]);
    assert!(
        ok > 0 && failures.is_empty(),
        "{ok} ok, failures: {failures:?}"
    );

    // Deploying again asks nothing of the CA: the certificate is not due.
    let again = stack.deploy();
    assert!(again.status.success(), "redeploy: {}", text(&again.stderr));
    let still = elior::tls::inspect::describe(&served_chain(&stack)[0]).unwrap();
    assert_eq!(still.serial, served.serial);
}

/// Registers `name` through nginx; panics unless the API answers 201.
fn register(stack: &Stack, name: &str) {
    let body = serde_json::json!({
        "username": name,
        "email": format!("{name}@example.com"),
        "password": "Correct-Horse-9-Battery",
        "full_name": name,
    });
    let (status, answer) = stack.curl("POST", "/api/auth/register", &body.to_string());
    assert_eq!(status, 201, "register {name}: {answer}");
}

/// The status of logging in as `name`, retried while nginx answers 502 (it may still
/// be resolving the restarted API container).
fn login_status(stack: &Stack, name: &str) -> u16 {
    let body = serde_json::json!({ "username": name, "password": "Correct-Horse-9-Battery" });
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = stack.curl("POST", "/api/auth/login", &body.to_string());
        if !matches!(status, 0 | 502 | 503 | 504) || std::time::Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One stack serves the user's certificate, then is restored while it runs.
#[test]
fn own_certificate_then_restore_with_the_stack_running_restarts_the_api_on_the_restored_data() {
    let stack = init_stack("restore");
    // The stack serves the user's own certificate: a pair whose key does not match is
    // refused before anything changes, a good one is installed.
    let own = rcgen::generate_simple_self_signed(vec![stack.domain.clone()]).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let files = stack.tmp.path();
    let (cert, key, wrong_key) = (
        files.join("own.pem"),
        files.join("own.key"),
        files.join("other.key"),
    );
    std::fs::write(&cert, own.cert.pem()).unwrap();
    std::fs::write(&key, own.signing_key.serialize_pem()).unwrap();
    std::fs::write(&wrong_key, other.serialize_pem()).unwrap();
    let (cert, key, wrong_key) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        wrong_key.to_str().unwrap(),
    );
    let refused = stack.elior(&["deploy", &stack.domain, "--cert", cert, "--key", wrong_key]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("nothing was changed"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!stack.dir.join("nginx/ssl/cert.pem").exists());

    let out = stack.elior(&["deploy", &stack.domain, "--cert", cert, "--key", key]);
    assert!(out.status.success(), "deploy: {}", text(&out.stderr));
    let served = elior::tls::inspect::describe(&served_chain(&stack)[0]).unwrap();
    let mine = elior::tls::inspect::describe(own.cert.der()).unwrap();
    assert_eq!(served.serial, mine.serial);
    let key_mode = std::fs::metadata(stack.dir.join("nginx/ssl/key.pem"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
        0o600
    );

    register(&stack, "kept");
    let backup = stack.elior(&["backup", "--json"]);
    assert!(backup.status.success(), "backup: {}", text(&backup.stderr));
    register(&stack, "later");
    assert_eq!(login_status(&stack, "later"), 200);

    let restore = stack.elior(&["restore", "latest", "--yes", "--json"]);
    assert!(
        restore.status.success(),
        "restore: {}\n{}",
        text(&restore.stdout),
        text(&restore.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&restore.stdout).unwrap();
    assert_eq!(report["api_restarted"], true, "{report}");
    assert!(
        text(&restore.stderr).contains("stopping the API"),
        "{}",
        text(&restore.stderr)
    );

    // The API runs again, healthy, on the restored database: the account made before
    // the backup logs in, the one made after it is gone.
    let api = docker_harness::api_once_docker_checked(|| {
        let status = stack.elior(&["status", "--json"]);
        let containers: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        containers
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["service"] == "api")
            .expect("an api container")
            .clone()
    });
    assert_eq!(api["state"], "running", "{api}");
    assert_eq!(api["health"], "healthy", "{api}");
    assert_eq!(login_status(&stack, "kept"), 200);
    assert_eq!(login_status(&stack, "later"), 401);
}
