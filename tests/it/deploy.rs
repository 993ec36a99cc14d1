//! `elior deploy` and its day-2 commands against the real Docker Engine, with Debian's
//! nginx packed into a local image standing in for the production proxy image (no
//! registry is reachable). One stack per test with a unique project, high ports and its
//! own API image repository; a guard removes every container, network and image the test
//! made, by label and name, even when the test fails.
//!
//! The lifecycle test walks one stack through everything a user does, so the slow parts
//! (image builds, health gates) are paid once.

use std::process::{Command, Output};
use std::time::Duration;

use docker_harness::{new_build_of_elior, runtime, ClientLoop};
use elior::probe::https::PinnedClient;

use crate::harness::docker as docker_harness;
use crate::harness::stack::{succeeded, text};

const BIN: &str = env!("CARGO_BIN_EXE_elior");

type Stack = docker_harness::TestStack;

impl Stack {
    fn run(&self, args: &[&str]) -> Output {
        self.run_with(BIN, args)
    }

    fn run_with(&self, bin: &str, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--dir", self.dir.to_str().unwrap()]);
        Command::new(bin).args(&all).output().unwrap()
    }

    fn client(&self) -> PinnedClient {
        PinnedClient::from_pem_file(&self.dir.join("nginx/ssl/cert.pem")).unwrap()
    }

    fn get_health(&self) -> elior::probe::https::Response {
        runtime()
            .block_on(self.client().get(
                self.addr(),
                &self.domain,
                "/health",
                Duration::from_secs(10),
            ))
            .expect("GET /health through nginx")
    }

    fn status(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["status", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}: {}", text(&out.stdout)))
            .as_array()
            .unwrap()
            .clone()
    }

    fn api_container(&self) -> serde_json::Value {
        self.status()
            .into_iter()
            .find(|s| s["service"] == "api")
            .expect("an api container")
    }
}

fn elior(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Requests /health through nginx with the certificate pinned, one connection each,
/// until stopped.
fn health_loop(stack: &Stack) -> ClientLoop {
    let (client, addr, domain) = (stack.client(), stack.addr(), stack.domain.clone());
    ClientLoop::start(move || {
        let (client, domain) = (client.clone(), domain.clone());
        async move {
            match client
                .get(addr, &domain, "/health", Duration::from_secs(10))
                .await
            {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("status {}: {}", r.status, r.body.trim())),
                Err(e) => Err(format!("{e:#}")),
            }
        }
    })
}

/// `elior update` with the binary `bin` while a client keeps asking for /health through
/// nginx: requests flow before it starts and go on after it ends (on the new container),
/// and it must succeed without a failed request.
fn update_without_a_failed_request(stack: &Stack, bin: &str, what: &str) {
    let clients = health_loop(stack);
    clients.wait_for(5);
    let out = stack.run_with(bin, &["update"]);
    clients.wait_for(5);
    let (ok, failures) = clients.finish();
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during {what}: {failures:?}\n{}",
        failures.len(),
        ok + failures.len(),
        text(&out.stderr)
    );
}

#[test]
fn deploy_lifecycle_from_an_empty_directory_to_down() {
    let stack = Stack::new("life");
    let dir = stack.dir.to_str().unwrap().to_string();

    // --dry-run on an empty directory says what would happen and writes nothing.
    std::fs::create_dir_all(&stack.dir).unwrap();
    let out = elior(&["deploy", &stack.domain, "--dir", &dir, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("has no stack"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(std::fs::read_dir(&stack.dir).unwrap().count(), 0);

    // First deploy: render, image, certificate, containers, health gate, HTTPS proof.
    stack.init();
    let said = succeeded(&elior(&["deploy", &stack.domain, "--dir", &dir]));
    assert!(said.contains("deployed"), "{said}");
    let health = stack.get_health();
    assert_eq!(health.status, 200, "{}", health.body);
    assert!(
        health.body.contains("\"status\":\"healthy\""),
        "{}",
        health.body
    );
    for header in [
        "strict-transport-security",
        "x-content-type-options",
        "x-frame-options",
        "content-security-policy",
    ] {
        assert!(
            health.header(header).is_some(),
            "/health through nginx lacks {header}: {:?}",
            health.headers
        );
    }
    let key_mode = std::fs::metadata(stack.dir.join("nginx/ssl/key.pem"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
        0o600
    );

    // The API image: FROM scratch, numeric user, exec-form healthcheck, labelled.
    let api = stack.api_container();
    let first_image = api["image"].as_str().unwrap().to_string();
    assert!(first_image.starts_with(&stack.api_repo), "{first_image}");
    runtime().block_on(async {
        let docker = elior::docker::connect().await.unwrap();
        let image = docker.inspect_image(&first_image).await.unwrap();
        let config = image.config.unwrap();
        assert_eq!(config.user.as_deref(), Some("10001:10001"));
        assert_eq!(
            config.healthcheck.unwrap().test.unwrap(),
            ["CMD", "/usr/local/bin/elior", "healthcheck"]
        );
        let labels = config.labels.unwrap();
        assert_eq!(labels["org.opencontainers.image.version"], elior::VERSION);
        assert!(first_image.ends_with(&labels["elior.content-hash"]));
        assert_eq!(
            image.root_fs.unwrap().layers.unwrap().len(),
            1,
            "FROM scratch: one layer"
        );

        // status --json agrees with the engine.
        let api = docker_harness::api_once_docker_checked(|| stack.api_container());
        let name = api["container"].as_str().unwrap();
        let inspect = docker
            .inspect_container(
                name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .unwrap();
        let state = inspect.state.unwrap();
        assert_eq!(api["state"], state.status.unwrap().to_string());
        // status reports the health gate deploy passed: `healthy` even while Docker's
        // own first scheduled check has not run yet (issue 14: it said `starting`).
        let engine_health = state.health.unwrap().status.unwrap().to_string();
        assert!(
            ["healthy", "starting"].contains(&engine_health.as_str()),
            "{engine_health}"
        );
        assert_eq!(api["health"], "healthy");
    });
    let nginx = stack
        .status()
        .into_iter()
        .find(|s| s["service"] == "nginx")
        .unwrap();
    assert_eq!(nginx["state"], "running");
    assert!(
        nginx["ports"]
            .to_string()
            .contains(&stack.https_port.to_string()),
        "{nginx}"
    );

    // logs streams what the engine has for one service.
    let out = stack.run(&["logs", "api"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("listening on"),
        "{}",
        text(&out.stdout)
    );
    let out = stack.run(&["logs", "worker"]);
    assert!(!out.status.success(), "an unknown service is an error");

    // Second deploy: nothing changed, nothing done.
    let before = stack.status();
    let out = stack.run(&["update"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("up to date"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        stack
            .status()
            .iter()
            .map(|s| s["container"].clone())
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|s| s["container"].clone())
            .collect::<Vec<_>>()
    );

    // --dry-run after an env change prints the plan with its reason and changes nothing.
    stack.set_env(&[("LOG_LEVEL", "debug")]);
    let out = stack.run(&["update", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(
        plan.contains(&format!(
            "api: replace {}",
            api["container"].as_str().unwrap()
        )),
        "{plan}"
    );
    assert!(plan.contains("(environment changed)"), "{plan}");
    assert!(
        plan.contains("nginx: reload (switch to the new api container)"),
        "{plan}"
    );
    assert_eq!(stack.api_container()["container"], api["container"]);

    // A new binary and config: zero-downtime update while a client keeps asking.
    let next = new_build_of_elior(stack.tmp.path());
    update_without_a_failed_request(&stack, &next, "the update");
    let updated = stack.api_container();
    assert_ne!(updated["container"], api["container"]);
    assert_ne!(
        updated["image"], api["image"],
        "a new binary is a new image"
    );
    assert_eq!(stack.status().len(), 2, "the old api container is gone");
    // After a swap nginx.conf is back to what `elior render` writes (upstream `api`).
    let out = stack.run(&["render", "--check"]);
    assert!(
        out.status.success(),
        "render --check after deploy: {}",
        text(&out.stdout)
    );

    // A broken new version (serve cannot open its database) leaves the old one serving.
    stack.set_env(&[("DATABASE_URL", "sqlite:////nonexistent/elior.db")]);
    let out = stack.run(&["update", "--timeout", "60"]);
    assert!(
        !out.status.success(),
        "a broken version must fail the deploy"
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("log lines ---"), "{stderr}");
    assert!(stderr.contains("keeps serving"), "{stderr}");
    assert_eq!(stack.api_container()["container"], updated["container"]);
    assert_eq!(stack.get_health().status, 200);
    assert_eq!(stack.status().len(), 2, "the failed container was removed");
    stack.set_env(&[("DATABASE_URL", "sqlite:////app/data/elior_fitness.db")]);

    // Rollback returns to the first image, again without a failed request.
    let clients = health_loop(&stack);
    clients.wait_for(5);
    let out = stack.run(&["rollback"]);
    clients.wait_for(5);
    let (_, failures) = clients.finish();
    assert!(
        out.status.success(),
        "rollback failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        failures.is_empty(),
        "requests failed during the rollback: {failures:?}"
    );
    assert_eq!(stack.api_container()["image"], first_image.as_str());
    assert_eq!(stack.get_health().status, 200);

    // Every deploy is in the audit log, the failed one too.
    let audit = std::fs::read_to_string(stack.dir.join(".elior/audit.log")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"action\":\"rollback\"") && l.contains("\"result\":\"ok\"")),
        "{audit}"
    );
    assert!(
        audit.lines().any(|l| l.contains("\"result\":\"failed\"")),
        "{audit}"
    );

    // down removes containers and networks and keeps the data.
    let out = stack.run(&["down"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("kept"), "{}", text(&out.stdout));
    assert!(stack.status().is_empty());
    assert!(
        stack.dir.join("data/elior_fitness.db").exists(),
        "down must keep the database"
    );
    assert!(stack.dir.join("uploads").is_dir() && stack.dir.join("nginx/ssl/cert.pem").exists());
    runtime().block_on(async {
        let docker = elior::docker::connect().await.unwrap();
        assert!(elior::docker::stack_networks(&docker, &stack.owner())
            .await
            .unwrap()
            .is_empty());
    });
}

/// An update killed mid-swap (a second Ctrl-C, the OOM killer, a reboot of the shell's
/// host) leaves two API containers and nginx pinned to one of them by name. The next
/// update finishes the swap as an update does: nginx moves to the healthy new container
/// before the other is drained and removed, so no request fails, and nginx.conf ends as
/// `elior render` writes it.
#[test]
fn an_update_killed_mid_swap_is_finished_by_the_next_one_without_a_failed_request() {
    let stack = Stack::new("killed-swap");
    stack.init();
    succeeded(&stack.run(&["deploy", &stack.domain]));
    let first = stack.api_container()["container"].clone();

    for (round, point) in ["deploy:api-started", "deploy:nginx-switched"]
        .into_iter()
        .enumerate()
    {
        let build = stack.tmp.path().join(format!("build-{round}"));
        std::fs::create_dir_all(&build).unwrap();
        let next = new_build_of_elior(&build);
        let killed = Command::new(&next)
            .args(["update", "--dir", stack.dir.to_str().unwrap()])
            .env("ELIOR_FAULT", point)
            .output()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&killed.status),
            Some(9),
            "{point}: {}",
            text(&killed.stderr)
        );
        let apis = stack
            .status()
            .iter()
            .filter(|c| c["service"] == "api")
            .count();
        assert_eq!(apis, 2, "{point}: both API containers are left");

        update_without_a_failed_request(
            &stack,
            &next,
            &format!("the update after a kill at {point}"),
        );
        let status = stack.status();
        assert_eq!(status.len(), 2, "{point}: {status:?}");
        assert_ne!(stack.api_container()["container"], first, "{point}");
        let out = stack.run(&["render", "--check"]);
        assert!(out.status.success(), "{point}: {}", text(&out.stdout));
    }
}

#[test]
fn a_held_deploy_lock_refuses_a_concurrent_deploy() {
    // Regression guard: two deploys at once would fight over containers and nginx.conf.
    let stack = Stack::new("lock");
    stack.init();
    crate::harness::stack::hold_deploy_lock(&stack.dir, "elior restore latest");
    let out = elior(&[
        "deploy",
        &stack.domain,
        "--dir",
        stack.dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("elior restore latest"), "{stderr}");
    assert!(stack.status().is_empty(), "nothing was deployed");
}

#[test]
fn deploy_into_an_empty_directory_runs_init_and_render_first() {
    // No engine here (DOCKER_HOST names a missing socket): the stack files appear, then
    // deploy stops with an error that says what to check.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fresh");
    let out = Command::new(BIN)
        .args(["deploy", "fresh.elior.test", "--dir", dir.to_str().unwrap()])
        .env(
            "DOCKER_HOST",
            format!("unix://{}/missing.sock", tmp.path().display()),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot reach the Docker Engine"),
        "{stderr}"
    );
    for file in [
        ".env.production",
        "docker-compose.prod.yml",
        "nginx/nginx.conf",
    ] {
        assert!(dir.join(file).exists(), "{file} was not written: {stderr}");
    }
    assert!(
        !dir.join(".elior/deploy.lock").exists(),
        "the lock is released on failure"
    );
}
