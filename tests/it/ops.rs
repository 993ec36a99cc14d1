//! What keeps a deployed stack reachable and honest (issue 14): nginx's restart policy
//! still holds after elior reloads it, DOCKER_HOST is obeyed or refused, never ignored,
//! and the port preflight sees both address families. Against the real Docker Engine
//! (fixture nginx image, API image built from this binary) and Debian's pebble; every
//! stack is removed by a guard even when a test fails.

use crate::harness::cert as cert_harness;
use crate::harness::docker as docker_harness;
use crate::harness::stack as stack_harness;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cert_harness::Pebble;
use docker_harness::runtime;
use stack_harness::text;

const BIN: &str = env!("CARGO_BIN_EXE_elior");

type Stack = docker_harness::TestStack;

fn init_stack(name: &str) -> Stack {
    let stack = Stack::new(name);
    stack.init();
    stack
}

/// `elior ARGS --dir DIR`, with the test's name pinned to 127.0.0.1.
fn elior(stack: &Stack, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--dir")
        .arg(&stack.dir)
        .env("ELIOR_RESOLVE", format!("{}:127.0.0.1", stack.domain))
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The stack's nginx container, as `elior status --json` names it.
fn nginx_container(stack: &Stack) -> String {
    let out = elior(stack, &["status", "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {}", text(&out.stderr)));
    all.as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == "nginx")
        .unwrap_or_else(|| panic!("no nginx container: {all}"))["container"]
        .as_str()
        .unwrap()
        .to_string()
}

/// (running, host PID of the main process) of `container`.
fn main_pid(container: &str) -> (bool, i64) {
    runtime().block_on(async {
        let docker = elior::docker::connect().await.unwrap();
        let state = elior::docker::inspect_if_present(&docker, container)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{container} is gone"))
            .state
            .unwrap_or_default();
        (state.running.unwrap_or(false), state.pid.unwrap_or(0))
    })
}

/// `kill -9` of nginx's master from the host, as a crash would; then nginx must run
/// again, as a new process, within 10 s (its `unless-stopped` policy restarts it).
fn crash_nginx_and_expect_a_restart(stack: &Stack, after: &str) {
    let container = nginx_container(stack);
    let (running, pid) = main_pid(&container);
    assert!(
        running && pid > 0,
        "{container} is not running after {after}"
    );
    let kill = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success(), "kill -9 {pid}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (running, now) = main_pid(&container);
        if running && now > 0 && now != pid {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {after}, {container} did not come back within 10 s of a kill -9 \
             of its master (pid {pid}): its restart policy was disarmed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And it serves again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], stack.https_port));
    loop {
        let status = runtime().block_on(elior::tls::served::https_get_status(
            addr,
            &stack.domain,
            "/health",
            Duration::from_secs(2),
        ));
        if matches!(status, Ok(200)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nginx restarted but /health answers {status:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// Regression (issue 14): reloads went through `docker kill -s HUP`, which Engine 20.10
// records as a manual stop, so an nginx crash after any update or renewal was final.
#[test]
fn nginx_comes_back_from_a_crash_after_update_and_after_cert_renew() {
    let stack = init_stack("restart");
    let pebble = Pebble::start(stack.http_port);
    stack.set_env(&[
        ("ACME_EMAIL", "ops@example.com"),
        ("ACME_DIRECTORY", &pebble.directory_url),
        ("ACME_CA_FILE", pebble.ca_bundle.to_str().unwrap()),
    ]);
    assert_ok("deploy", &elior(&stack, &["deploy", &stack.domain]));

    // A changed env replaces the API blue/green: nginx is switched to the new container
    // and back to the service name, two reloads.
    stack.set_env(&[("LOG_LEVEL", "debug")]);
    let update = elior(&stack, &["update"]);
    assert_ok("update", &update);
    assert!(
        text(&update.stdout).contains("replace") || text(&update.stderr).contains("replace"),
        "update did not replace the API (so did not reload nginx): {}\n{}",
        text(&update.stdout),
        text(&update.stderr)
    );
    crash_nginx_and_expect_a_restart(&stack, "update");

    let renew = elior(&stack, &["cert", "renew", "--force"]);
    assert_ok("cert renew", &renew);
    crash_nginx_and_expect_a_restart(&stack, "cert renew");

    // The one reload tests what it loads: a configuration nginx refuses is not signalled,
    // and nginx keeps serving the previous one.
    let conf = stack.dir.join("nginx/nginx.conf");
    let good = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{good}\nbogus_directive on;\n")).unwrap();
    let container = nginx_container(&stack);
    let in_container = format!("{}/nginx.conf", elior::plan::render::paths::NGINX_MOUNT);
    let refused = runtime().block_on(async {
        let docker = elior::docker::connect().await.unwrap();
        elior::docker::proxy::reload(&docker, &container, &in_container).await
    });
    std::fs::write(&conf, good).unwrap();
    let err = format!(
        "{:#}",
        refused.expect_err("a bad configuration was reloaded")
    );
    assert!(
        err.contains("refused the configuration") && err.contains("bogus_directive"),
        "{err}"
    );
    let health = runtime().block_on(elior::tls::served::https_get_status(
        std::net::SocketAddr::from(([127, 0, 0, 1], stack.https_port)),
        &stack.domain,
        "/health",
        Duration::from_secs(5),
    ));
    assert_eq!(health.unwrap(), 200);
}

/// `elior status --dir DIR` for a fresh (never deployed) stack with `DOCKER_HOST`, killed
/// if it has not finished within 10 s; the output and whether it finished in time.
fn status_with_docker_host(docker_host: &str) -> (Output, bool) {
    status_with_docker_host_and(docker_host, &[])
}

/// [`status_with_docker_host`] with more environment (DOCKER_TLS_VERIFY...).
fn status_with_docker_host_and(docker_host: &str, env: &[(&str, &str)]) -> (Output, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stack");
    let init = Command::new(BIN)
        .args(["init", "dockerhost.elior.test", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_ok("init", &init);
    let mut child = Command::new(BIN)
        .args(["status", "--dir"])
        .arg(&dir)
        .env("DOCKER_HOST", docker_host)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let in_time = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (child.wait_with_output().unwrap(), in_time)
}

// Regression (issue 14): DOCKER_HOST was ignored, so every command acted on the local
// engine whatever the user pointed it at.
#[test]
fn docker_host_unreachable_or_unsupported_fails_naming_docker_host() {
    for (value, says) in [
        (
            "tcp://127.0.0.1:1",
            "cannot reach the Docker Engine at tcp://127.0.0.1:1 (DOCKER_HOST)",
        ),
        (
            "unix:///nonexistent",
            "cannot reach the Docker Engine at unix:///nonexistent (DOCKER_HOST)",
        ),
        (
            "ssh://admin@127.0.0.1",
            "DOCKER_HOST=\"ssh://admin@127.0.0.1\" uses ssh://, which elior does not support",
        ),
        ("garbage", "DOCKER_HOST=\"garbage\" has no scheme"),
    ] {
        let (out, in_time) = status_with_docker_host(value);
        assert!(in_time, "{value}: status still running after 10 s");
        assert_eq!(out.status.code(), Some(2), "{value}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(says),
            "{value}: {}",
            text(&out.stderr)
        );
        // Never the local engine's answer instead.
        assert!(
            text(&out.stdout).is_empty(),
            "{value}: {}",
            text(&out.stdout)
        );
    }
}

/// A TCP port that forwards every connection to the local engine's unix socket, as a
/// remote engine on `tcp://` would answer; counts the connections it carried.
struct TcpToEngine {
    port: u16,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TcpToEngine {
    fn start() -> TcpToEngine {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        // The thread ends with the test process; it owns nothing to clean up.
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(engine) = std::os::unix::net::UnixStream::connect("/var/run/docker.sock")
                else {
                    continue;
                };
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (mut c_read, mut e_write) =
                    (client.try_clone().unwrap(), engine.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut e_write);
                    let _ = e_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut e_read, mut c_write) = (engine, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut e_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        TcpToEngine { port, connections }
    }
}

#[test]
fn docker_host_tcp_reaches_the_engine_it_names() {
    let engine = TcpToEngine::start();
    let (out, in_time) = status_with_docker_host(&format!("tcp://127.0.0.1:{}", engine.port));
    assert!(in_time, "status still running after 10 s");
    // A never-deployed stack: the engine answered, and has no containers of it (exit 1).
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("no containers"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        engine.connections.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "status did not go through DOCKER_HOST"
    );
}

/// A process of its own that listens on `[::]:port` with IPV6_V6ONLY (so IPv4 stays
/// free); killed on drop.
struct Ipv6OnlyHolder(std::process::Child);

impl Ipv6OnlyHolder {
    fn start(port: u16) -> Ipv6OnlyHolder {
        let script = format!(
            "import socket, sys, time\n\
             s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)\n\
             s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n\
             s.bind(('::', {port}))\n\
             s.listen()\n\
             print('listening', flush=True)\n\
             time.sleep(600)\n"
        );
        let mut child = Command::new("python3")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "listening", "the IPv6 holder did not start");
        Ipv6OnlyHolder(child)
    }
}

impl Drop for Ipv6OnlyHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// Regression (issue 14): a port held on IPv6 only passed the preflight (it bound IPv4
// alone), and the deploy then stopped half-built when Docker could not publish [::]:PORT.
#[test]
fn a_port_held_on_ipv6_only_is_refused_before_anything_is_created_naming_the_holder() {
    let stack = init_stack("v6held");
    let holder = Ipv6OnlyHolder::start(stack.https_port);
    // IPv4 is free: only a check of both families can see the holder.
    drop(std::net::TcpListener::bind(("0.0.0.0", stack.https_port)).expect("IPv4 is free"));

    let out = elior(&stack, &["deploy", &stack.domain]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let pid = holder.0.id();
    assert!(
        stderr.contains(&format!(
            "port {} that nginx publishes is held on [::]:{} (IPv6) by pid {pid} (",
            stack.https_port, stack.https_port
        )),
        "{stderr}"
    );
    assert!(stderr.contains("python3 -c import socket"), "{stderr}");
    assert!(stderr.contains(&format!("kill {pid}")), "{stderr}");

    // Nothing of the stack exists on the engine.
    let (containers, networks) = runtime().block_on(async {
        let docker = elior::docker::connect().await.unwrap();
        (
            elior::docker::stack_containers(&docker, &stack.owner())
                .await
                .unwrap(),
            elior::docker::stack_networks(&docker, &stack.owner())
                .await
                .unwrap(),
        )
    });
    assert!(containers.is_empty(), "{containers:?}");
    assert!(networks.is_empty(), "{networks:?}");
}

/// A network namespace joined to the host by a veth pair: a client with its own address
/// (198.51.100.x, TEST-NET-2), whose connections to a published port go through the
/// engine's DNAT with their source kept, unlike the host's own loopback, which Docker's
/// userland proxy relays from the bridge gateway. Removed on drop.
struct OtherClient {
    netns: String,
    host_veth: String,
    /// The host's end: the address the client connects to.
    host_ip: String,
    /// The client's own address.
    ip: String,
}

impl OtherClient {
    fn new() -> OtherClient {
        // A /30 of 198.51.100.0/24 that no interface of this host uses yet.
        let used = Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .expect("ip (iproute2)");
        let used = text(&used.stdout);
        let n = (0..64u32)
            .map(|i| (std::process::id() + i) % 64)
            .find(|n| !used.contains(&format!("inet 198.51.100.{}/", 4 * n + 1)))
            .expect("a free /30 in 198.51.100.0/24");
        let client = OtherClient {
            netns: format!("elior-test-{}", std::process::id()),
            host_veth: format!("elv{}a", std::process::id() % 100_000),
            host_ip: format!("198.51.100.{}", 4 * n + 1),
            ip: format!("198.51.100.{}", 4 * n + 2),
        };
        let peer = client.host_veth.replace('a', "b");
        let run = |args: &[&str]| {
            let out = Command::new("ip")
                .args(args)
                .output()
                .expect("ip (iproute2)");
            assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
        };
        run(&["netns", "add", &client.netns]);
        run(&[
            "link",
            "add",
            &client.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        run(&["link", "set", &peer, "netns", &client.netns]);
        let host_cidr = format!("{}/30", client.host_ip);
        run(&["addr", "add", &host_cidr, "dev", &client.host_veth]);
        run(&["link", "set", &client.host_veth, "up"]);
        let ns = client.netns.as_str();
        let cidr = format!("{}/30", client.ip);
        run(&["-n", ns, "addr", "add", &cidr, "dev", &peer]);
        run(&["-n", ns, "link", "set", &peer, "up"]);
        run(&["-n", ns, "link", "set", "lo", "up"]);
        run(&["-n", ns, "route", "add", "default", "via", &client.host_ip]);
        client
    }
}

impl Drop for OtherClient {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .output();
    }
}

/// `curl` to the stack through nginx: from the host (127.0.0.1 or [::1]) when `from`
/// is `None`, else from inside the other client's namespace. (status, body)
fn curl_stack(
    stack: &Stack,
    from: Option<&OtherClient>,
    host: &str,
    method: &str,
    path: &str,
    json: &str,
) -> (u16, String) {
    let mut cmd = match from {
        Some(client) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &client.netns, "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    let out = cmd
        .args(["-sk", "--max-time", "10", "-X", method])
        .args([
            "-H",
            "content-type: application/json",
            "-w",
            "\n%{http_code}",
        ])
        .args(if json.is_empty() {
            vec![]
        } else {
            vec!["--data", json]
        })
        .arg("--resolve")
        .arg(format!("{}:{}:{host}", stack.domain, stack.https_port))
        .arg(format!(
            "https://{}:{}{path}",
            stack.domain, stack.https_port
        ))
        .output()
        .expect("curl runs");
    let all = text(&out.stdout);
    let (body, status) = all.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// The API container's address on the stack's internal network, which the host reaches
/// over that network's bridge.
fn api_address(stack: &Stack) -> String {
    let out = elior(stack, &["status", "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let api = all
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == "api")
        .expect("an api container")["container"]
        .as_str()
        .unwrap()
        .to_string();
    runtime().block_on(async {
        let docker = elior::docker::connect().await.unwrap();
        let inspect = elior::docker::inspect_if_present(&docker, &api)
            .await
            .unwrap()
            .unwrap();
        inspect
            .network_settings
            .and_then(|n| n.networks)
            .into_iter()
            .flatten()
            .find_map(|(_, endpoint)| endpoint.ip_address.filter(|ip| !ip.is_empty()))
            .expect("the api container has an address")
    })
}

// Regression (issue 14): through Docker's port publishing, clients reached nginx from the
// bridge gateway, a private address, so /metrics was public and every client shared
// one login limit.
#[test]
fn metrics_are_404_through_nginx_and_clients_are_limited_by_their_own_address() {
    let stack = init_stack("realip");
    assert_ok("deploy", &elior(&stack, &["deploy", &stack.domain]));

    // /metrics: 404 through nginx on IPv4 and IPv6 alike, whoever asks.
    let (status, body) = curl_stack(&stack, None, "127.0.0.1", "GET", "/metrics", "");
    assert_eq!(status, 404, "{body}");
    // Docker publishes on [::] too wherever the host has IPv6.
    let host_has_ipv6 = std::fs::read_to_string("/proc/net/if_inet6")
        .is_ok_and(|t| t.contains("00000000000000000000000000000001"));
    if host_has_ipv6 {
        let (status, body) = curl_stack(&stack, None, "[::1]", "GET", "/metrics", "");
        assert_eq!(status, 404, "over IPv6: {body}");
    }
    // The host scrapes the API container directly, as the README says.
    let scrape = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg(format!("http://{}:8000/metrics", api_address(&stack)))
        .output()
        .unwrap();
    let scraped = text(&scrape.stdout);
    assert!(scraped.ends_with("\n200"), "{scraped}");
    assert!(scraped.contains("elior_http_requests_total"), "{scraped}");

    let user = serde_json::json!({
        "username": "alice",
        "email": "alice@example.com",
        "password": "Correct-Horse-9-Battery",
        "full_name": "Alice",
    });
    let (status, body) = curl_stack(
        &stack,
        None,
        "127.0.0.1",
        "POST",
        "/api/auth/register",
        &user.to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let good = serde_json::json!({"username": "alice", "password": "Correct-Horse-9-Battery"});

    let client = OtherClient::new();
    // The other client reaches the stack, and logs in.
    let (status, body) = curl_stack(
        &stack,
        Some(&client),
        &client.host_ip,
        "POST",
        "/api/auth/login",
        &good.to_string(),
    );
    assert_eq!(status, 200, "from {}: {body}", client.ip);

    // The host's clients spray wrong passwords at distinct accounts, under nginx's rate
    // (5 r/s), until the API locks their address (20 failures).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let wrong = serde_json::json!({"username": format!("nobody{attempts}"), "password": "wrong-password-1"});
        let (status, body) = curl_stack(
            &stack,
            None,
            "127.0.0.1",
            "POST",
            "/api/auth/login",
            &wrong.to_string(),
        );
        if status == 429 && body.contains("Too many failed attempts") {
            break;
        }
        assert!(
            matches!(status, 401 | 429),
            "attempt {attempts}: {status} {body}"
        );
        assert!(
            Instant::now() < deadline,
            "the API never locked the host's address"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The host's address is locked out, even with the right password...
    let (status, body) = curl_stack(
        &stack,
        None,
        "127.0.0.1",
        "POST",
        "/api/auth/login",
        &good.to_string(),
    );
    assert_eq!(status, 429, "{body}");
    // ...and the other client, with its own address, is not.
    let (status, body) = curl_stack(
        &stack,
        Some(&client),
        &client.host_ip,
        "POST",
        "/api/auth/login",
        &good.to_string(),
    );
    assert_eq!(status, 200, "from {}: {body}", client.ip);
    // And from that client too, /metrics is not served.
    let (status, _) = curl_stack(
        &stack,
        Some(&client),
        &client.host_ip,
        "GET",
        "/metrics",
        "",
    );
    assert_eq!(status, 404);
}

/// A TLS port that, like an engine run with `--tlsverify`, accepts only clients with a
/// certificate from `ca`, then forwards to the local engine's socket. Counts the
/// connections that passed the handshake.
struct TlsToEngine {
    port: u16,
    verified: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TlsToEngine {
    fn start(ca: &stack_harness::TestCa) -> TlsToEngine {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let pem_certs = |pem: &str| -> Vec<CertificateDer<'static>> {
            elior::tls::inspect::parse_chain(pem.as_bytes(), "test").unwrap()
        };
        let (cert, key) = ca.leaf("127.0.0.1", -1, 30);
        let key: PrivateKeyDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_slice(key.as_bytes()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pem_certs(&ca.cert_pem).remove(0)).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(pem_certs(&cert), key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let verified = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = verified.clone();
        // The thread ends with the test process; it owns nothing to clean up.
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, counted) = (acceptor.clone(), counted.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Ok(mut engine) =
                            tokio::net::UnixStream::connect("/var/run/docker.sock").await
                        else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut engine).await;
                    });
                }
            });
        });
        TlsToEngine { port, verified }
    }
}

#[test]
fn docker_host_tcp_with_tls_verify_uses_the_client_certificate_and_the_ca() {
    let ca = stack_harness::TestCa::new();
    let engine = TlsToEngine::start(&ca);
    let certs = tempfile::tempdir().unwrap();
    let (client_cert, client_key) = ca.leaf("elior-client", -1, 30);
    std::fs::write(certs.path().join("ca.pem"), &ca.cert_pem).unwrap();
    std::fs::write(certs.path().join("cert.pem"), client_cert).unwrap();
    std::fs::write(certs.path().join("key.pem"), client_key).unwrap();
    let tls_env = [
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", certs.path().to_str().unwrap()),
    ];
    let host = format!("tcp://127.0.0.1:{}", engine.port);

    let (out, in_time) = status_with_docker_host_and(&host, &tls_env);
    assert!(in_time, "status still running after 10 s");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("no containers"),
        "{}",
        text(&out.stdout)
    );
    assert!(engine.verified.load(std::sync::atomic::Ordering::SeqCst) > 0);

    // Without DOCKER_TLS_VERIFY, plain HTTP to a TLS port is an error naming
    // DOCKER_HOST, not a fall back to the local socket.
    let (out, in_time) = status_with_docker_host(&host);
    assert!(in_time, "status still running after 10 s");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "cannot reach the Docker Engine at {host} (DOCKER_HOST)"
        )),
        "{}",
        text(&out.stderr)
    );

    // A CA that did not sign the engine's certificate: refused, naming DOCKER_HOST.
    std::fs::write(
        certs.path().join("ca.pem"),
        stack_harness::TestCa::new().cert_pem,
    )
    .unwrap();
    let (out, _) = status_with_docker_host_and(&host, &tls_env);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("(DOCKER_HOST)"),
        "{}",
        text(&out.stderr)
    );
}
