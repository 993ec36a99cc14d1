//! A stack is its directory (issue 14): two directories with the same domain, or with
//! domains that differ only by case or by `.` against `-`, are two stacks, and `down`,
//! `deploy` and `update` from one never stop, move or re-point the other. Also liveness:
//! a killed container is not "up to date", and `status` is green right after a deploy;
//! and `admin create --dir` on a deployed stack.
//! Against the real Docker Engine, one guard per stack directory removing what was
//! deployed from it, even when the test fails.

use crate::harness::docker as docker_harness;

use std::process::{Command, Output};

use crate::harness::stack::text;
use docker_harness::TestStack;

const BIN: &str = env!("CARGO_BIN_EXE_elior");

/// `elior ARGS --dir DIR`.
fn run(stack: &TestStack, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--dir")
        .arg(&stack.dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn deploy(stack: &TestStack) -> Output {
    run(stack, &["deploy", &stack.domain])
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// What runs for a stack: (container, engine id, started at), from the engine itself
/// (`docker ps` by the stack's directory label), so the check does not trust elior.
fn running(stack: &TestStack) -> Vec<String> {
    let dir = stack.dir.canonicalize().unwrap();
    let out = Command::new("docker")
        .args([
            "ps",
            "--no-trunc",
            "--format",
            "{{.Names}} {{.ID}} {{.Status}}",
        ])
        .arg("--filter")
        .arg(format!("label=elior.stack-dir={}", dir.display()))
        .output()
        .unwrap();
    let mut lines: Vec<String> = text(&out.stdout)
        .lines()
        // "Up 3 seconds (healthy)": keep the name and id, not the changing uptime.
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    lines.sort();
    lines
}

/// GET /health through the stack's nginx: the status code curl saw.
fn health(stack: &TestStack) -> String {
    let out = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg("--resolve")
        .arg(format!("{}:{}:127.0.0.1", stack.domain, stack.https_port))
        .arg(format!(
            "https://{}:{}/health",
            stack.domain, stack.https_port
        ))
        .output()
        .unwrap();
    text(&out.stdout)
}

/// The same domain in two directories: the second cannot take the first's ports (the
/// refusal names the first's directory), gets its own containers on its own ports, and
/// its deploy, update and down leave the first running as it was.
#[test]
fn two_directories_with_one_domain_are_two_stacks() {
    let a = TestStack::new("same-a");
    a.init();
    assert_ok("deploy a", &deploy(&a));
    let a_before = running(&a);
    assert_eq!(a_before.len(), 2, "{a_before:?}");
    // Liveness, Done when #5: green right after a successful deploy.
    let status = run(&a, &["status"]);
    assert_ok("status right after deploy", &status);
    assert!(
        text(&status.stdout).contains("healthy"),
        "{}",
        text(&status.stdout)
    );

    let mut b = TestStack::with_domain("same-b", &a.domain);
    b.init();
    // A copy of a's settings would take a's ports: refused, naming a's directory.
    b.set_env(&[
        ("HTTP_PORT", &a.http_port.to_string()),
        ("HTTPS_PORT", &a.https_port.to_string()),
    ]);
    let refused = deploy(&b);
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    let a_dir = a.dir.canonicalize().unwrap();
    assert!(
        stderr.contains(&format!("deployed from {}", a_dir.display())),
        "{stderr}"
    );
    assert!(stderr.contains("elior down --dir"), "{stderr}");
    assert!(running(&b).is_empty(), "{:?}", running(&b));
    assert_eq!(running(&a), a_before, "a refused deploy must not touch a");

    // On its own ports, b is a stack of its own.
    b.http_port = docker_harness::free_port();
    b.https_port = docker_harness::free_port();
    b.set_env(&[
        ("HTTP_PORT", &b.http_port.to_string()),
        ("HTTPS_PORT", &b.https_port.to_string()),
    ]);
    assert_ok("render b", &run(&b, &["render"]));
    assert_ok("deploy b", &deploy(&b));
    assert_eq!(running(&a), a_before, "deploying b moved a");
    let b_running = running(&b);
    assert_eq!(b_running.len(), 2, "{b_running:?}");
    assert!(b_running.iter().all(|c| !a_before.contains(c)));
    assert_ne!(a.project(), b.project());
    assert_ok("update b", &run(&b, &["update"]));
    assert_eq!(running(&a), a_before, "updating b moved a");
    assert_ok("down b", &run(&b, &["down"]));
    assert!(running(&b).is_empty());
    assert_eq!(running(&a), a_before, "down in b stopped a");
    assert_eq!(health(&a), "200");
    assert_ok("status a", &run(&a, &["status"]));
}

/// `ka.test` and `ka-test` were one project (`elior-ka-test`) before stack ids, and
/// `KA.TEST` was `ka.test`: `down` in a never-deployed directory removed the running
/// stack of another (issue 14). Now each directory only touches its own.
#[test]
fn domains_differing_by_case_or_dot_against_dash_are_separate_stacks() {
    let dotted = TestStack::new("ka");
    dotted.init();
    assert_ok("deploy dotted", &deploy(&dotted));
    let before = running(&dotted);
    assert_eq!(before.len(), 2, "{before:?}");

    let dashed_domain = dotted.domain.replacen('.', "-", 1);
    let dashed = TestStack::with_domain("ka-dash", &dashed_domain);
    dashed.init();
    let upper = TestStack::with_domain("ka-upper", &dotted.domain.to_uppercase());
    upper.init();
    let env = std::fs::read_to_string(upper.env_path()).unwrap();
    assert!(
        env.contains(&format!("DOMAIN={}\n", dotted.domain)),
        "{env}"
    );

    for other in [&dashed, &upper] {
        let out = run(other, &["down"]);
        assert_ok("down in a never-deployed directory", &out);
        assert!(
            !text(&out.stdout).contains("removed"),
            "{}",
            text(&out.stdout)
        );
        assert_eq!(
            running(&dotted),
            before,
            "down in {} stopped another stack",
            other.domain
        );
        let status = run(other, &["status"]);
        assert!(!status.status.success());
        assert!(
            text(&status.stdout).contains("no containers"),
            "{}",
            text(&status.stdout)
        );
    }

    // The upper-case spelling with the dotted stack's ports: refused, not re-pointed.
    upper.set_env(&[
        ("HTTP_PORT", &dotted.http_port.to_string()),
        ("HTTPS_PORT", &dotted.https_port.to_string()),
    ]);
    let refused = run(&upper, &["deploy", &upper.domain]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains(&dotted.dir.canonicalize().unwrap().display().to_string()),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(running(&dotted), before);

    assert_ok("deploy dashed", &deploy(&dashed));
    assert_eq!(running(&dotted), before, "deploying ka-test moved ka.test");
    assert_ok("update dashed", &run(&dashed, &["update"]));
    assert_ok("down dashed", &run(&dashed, &["down"]));
    assert_eq!(running(&dotted), before, "down of ka-test stopped ka.test");
    assert_eq!(health(&dotted), "200");
}

/// Done when #4: `docker kill` of the API container, then `elior deploy` with the same
/// settings, brings it back, and the plan says why.
#[test]
fn a_killed_api_container_is_not_up_to_date_and_deploy_repairs_it() {
    let stack = TestStack::new("liveness");
    stack.init();
    assert_ok("deploy", &deploy(&stack));
    let api = running(&stack)
        .into_iter()
        .find(|c| c.contains("-api-"))
        .expect("an api container");
    let name = api.split_whitespace().next().unwrap().to_string();
    let out = Command::new("docker")
        .args(["kill", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!run(&stack, &["status"]).status.success());

    let dry = run(&stack, &["deploy", &stack.domain, "--dry-run"]);
    let plan = text(&dry.stdout);
    assert!(
        plan.contains(&format!(
            "api: replace {name} with {name} (container exited (137))"
        )),
        "{plan}"
    );
    assert!(!plan.contains("up to date"), "{plan}");

    let out = deploy(&stack);
    assert_ok("deploy after kill", &out);
    assert!(
        text(&out.stderr).contains("container exited (137)"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(health(&stack), "200");
    assert_ok("status after repair", &run(&stack, &["status"]));
    let again = deploy(&stack);
    assert!(
        text(&again.stdout).contains("up to date"),
        "{}",
        text(&again.stdout)
    );

    // Item 7: `admin create --dir` on the deployed stack runs in the API container, the
    // password on standard input; the new admin can log in through nginx.
    let out = admin_create(&stack, "boss");
    assert_ok("admin create --dir (running)", &out);
    assert!(
        text(&out.stdout).contains("in container"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(login(&stack, "boss"), "200");
    let again = admin_create(&stack, "boss");
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );

    // With the stack down, it writes the data folder, and the files stay the API's.
    assert_ok("down", &run(&stack, &["down"]));
    let out = admin_create(&stack, "deputy");
    assert_ok("admin create --dir (stopped)", &out);
    let db = stack.dir.join("data/elior_fitness.db");
    assert!(
        text(&out.stdout).contains("data/elior_fitness.db"),
        "{}",
        text(&out.stdout)
    );
    use std::os::unix::fs::MetadataExt;
    for file in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{file}", db.display()));
        if let Ok(meta) = std::fs::metadata(&path) {
            assert_eq!(meta.uid(), 10001, "{}", path.display());
        }
    }
}

/// `elior admin create --dir DIR --email NAME@example.com --password-stdin`.
fn admin_create(stack: &TestStack, name: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(["admin", "create", "--dir"])
        .arg(&stack.dir)
        .args([
            "--email",
            &format!("{name}@example.com"),
            "--password-stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Correct-Horse-9-Battery\n")
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The status of logging in as `name` through nginx.
fn login(stack: &TestStack, name: &str) -> String {
    let body = format!(r#"{{"username": "{name}", "password": "Correct-Horse-9-Battery"}}"#);
    let out = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args(["-H", "content-type: application/json", "--data", &body])
        .arg("--resolve")
        .arg(format!("{}:{}:127.0.0.1", stack.domain, stack.https_port))
        .arg(format!(
            "https://{}:{}/api/auth/login",
            stack.domain, stack.https_port
        ))
        .output()
        .unwrap();
    text(&out.stdout)
}

/// What an earlier release left on the engine, built by hand here: containers and
/// networks named `elior-<domain>-…` and labelled with that project only (no stack id,
/// no directory). Removed on drop by name, whatever the test did.
struct Legacy {
    containers: Vec<String>,
    networks: Vec<String>,
}

impl Drop for Legacy {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        for n in &self.networks {
            let _ = Command::new("docker").args(["network", "rm", n]).output();
        }
    }
}

fn docker_ok(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Item 2, adoption: a directory an earlier release deployed (no `.elior/stack.json`,
/// containers found by the old name) gets an id on its next deploy, which replaces the
/// old containers by labelled ones and keeps the data.
#[test]
fn a_stack_of_an_earlier_release_is_adopted_by_the_next_deploy_with_its_data() {
    let stack = TestStack::new("legacy");
    stack.init();
    assert_ok("deploy", &deploy(&stack));
    assert_ok("admin create", &admin_create(&stack, "keeper"));
    let api_image = text(
        &Command::new("docker")
            .args(["ps", "--format", "{{.Image}}", "--filter"])
            .arg(format!(
                "label=elior.stack-dir={}",
                stack.dir.canonicalize().unwrap().display()
            ))
            .args(["--filter", "label=elior.service=api"])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_string();
    assert!(!api_image.is_empty());
    assert_ok("down", &run(&stack, &["down"]));
    std::fs::remove_file(stack.dir.join(".elior/stack.json")).unwrap();

    // The earlier release's layout: elior-<domain>-{internal,edge}, -api-…, -nginx.
    let project = elior::config::identity::legacy_project_name(&stack.domain);
    let legacy = Legacy {
        containers: vec![format!("{project}-api-0ld"), format!("{project}-nginx")],
        networks: vec![format!("{project}-internal"), format!("{project}-edge")],
    };
    let label = format!("elior.project={project}");
    docker_ok(&[
        "network",
        "create",
        "--internal",
        "--label",
        &label,
        &legacy.networks[0],
    ]);
    docker_ok(&["network", "create", "--label", &label, &legacy.networks[1]]);
    let dir = stack.dir.canonicalize().unwrap();
    let mount = |sub: &str, target: &str| format!("{}:{target}", dir.join(sub).display());
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &legacy.containers[0],
        "--label",
        &label,
        "--label",
        "elior.service=api",
        "--network",
        &legacy.networks[0],
        "--network-alias",
        "api",
        "--user",
        "10001:10001",
        "--env-file",
        stack.env_path().to_str().unwrap(),
        "-e",
        "BIND_ADDRESS=0.0.0.0:8000",
        "-e",
        "TRUSTED_PROXIES=172.16.0.0/12",
        "-v",
        &mount("data", "/app/data"),
        "-v",
        &mount("uploads", "/app/uploads"),
        &api_image,
        "/usr/local/bin/elior",
        "serve",
    ]);
    docker_ok(&[
        "create",
        "--name",
        &legacy.containers[1],
        "--label",
        &label,
        "--label",
        "elior.service=nginx",
        "--network",
        &legacy.networks[1],
        "-p",
        &format!("{}:80", stack.http_port),
        "-p",
        &format!("{}:443", stack.https_port),
        "-v",
        &format!("{}:ro", mount("nginx", "/etc/nginx/elior")),
        "-v",
        &format!("{}:ro", mount("uploads", "/srv/elior/uploads")),
        "-v",
        &format!("{}:ro", mount("frontend", "/srv/elior/frontend")),
        &docker_harness::fixture_nginx_image(),
        "nginx",
        "-c",
        "/etc/nginx/elior/nginx.conf",
        "-g",
        "daemon off;",
    ]);
    docker_ok(&[
        "network",
        "connect",
        &legacy.networks[0],
        &legacy.containers[1],
    ]);
    docker_ok(&["start", &legacy.containers[1]]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while login(&stack, "keeper") != "200" {
        assert!(
            std::time::Instant::now() < deadline,
            "the legacy stack never served"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // Before adoption the directory owns nothing: status says so, down touches nothing.
    let status = run(&stack, &["status"]);
    assert!(
        text(&status.stdout).contains("no stack id"),
        "{}",
        text(&status.stdout)
    );
    assert_ok("down without an id", &run(&stack, &["down"]));
    assert_eq!(
        docker_ok(&["ps", "-q", "--filter", &format!("label={label}")])
            .lines()
            .count(),
        2,
        "down without an id removed the earlier release's containers"
    );

    let out = deploy(&stack);
    assert_ok("deploy (adoption)", &out);
    assert!(
        text(&out.stderr).contains("adopting the container of an earlier release"),
        "{}",
        text(&out.stderr)
    );
    assert!(stack.dir.join(".elior/stack.json").exists());
    assert_eq!(running(&stack).len(), 2, "{:?}", running(&stack));
    for name in &legacy.containers {
        let left = docker_ok(&["ps", "-aq", "--filter", &format!("name=^{name}$")]);
        assert!(left.trim().is_empty(), "{name} is still there");
    }
    let networks = docker_ok(&["network", "ls", "-q", "--filter", &format!("label={label}")]);
    let unlabelled = networks
        .lines()
        .filter(|id| {
            !docker_ok(&["network", "inspect", "-f", "{{json .Labels}}", id])
                .contains("elior.stack-id")
        })
        .count();
    assert_eq!(unlabelled, 0, "the earlier release's networks are left");
    assert_eq!(
        login(&stack, "keeper"),
        "200",
        "the adopted stack lost its data"
    );
    assert_ok("status after adoption", &run(&stack, &["status"]));
}
