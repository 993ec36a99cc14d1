//! `elior deploy --swarm` and the day-2 commands on a real single-node Docker Swarm
//! (issue 21), with the fixture nginx and PostgreSQL images (no registry is reachable).
//!
//! The swarm: when the engine is not in one, the test runs `swarm init --advertise-addr
//! 127.0.0.1` itself and leaves it at the end; a swarm that was already there is used and
//! left alone. The `elior.db=true` node label likewise: added and removed by the test only
//! when no node had it. Every service, secret, network and volume of the stack is removed
//! by its stack-id label in a Drop guard, after a failure too. The tests run one at a time
//! (nextest group `swarm`), so two never race on init and leave.
//!
//! Here the ingress routing mesh and service VIPs do not route; overlay networks,
//! `tasks.NAME` DNS and host-mode ports do, which is what elior uses.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use docker_harness::{new_build_of_elior, runtime, ClientLoop, TestStack};
use elior::probe::https::PinnedClient;

use crate::harness::docker as docker_harness;
use crate::harness::moto as moto_support;
use crate::harness::pg as pg_harness;
pub(crate) use crate::harness::stack::text;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_elior");

/// The swarm and the database node label, as the test found or made them.
pub(crate) struct SwarmGuard {
    created: bool,
    /// The node the test put `elior.db=true` on.
    labelled: Option<String>,
}

impl SwarmGuard {
    /// Joins a swarm (initialising one when the engine has none). Returns whether the
    /// engine was outside any swarm before.
    pub(crate) fn ensure() -> (SwarmGuard, bool) {
        runtime().block_on(async {
            let docker = elior::docker::connect().await.unwrap();
            let info = docker.info().await.unwrap();
            let state = info
                .swarm
                .and_then(|s| s.local_node_state)
                .map(|s| s.to_string())
                .unwrap_or_default();
            let inactive = state == "inactive" || state.is_empty();
            (
                SwarmGuard {
                    created: false,
                    labelled: None,
                },
                inactive,
            )
        })
    }

    pub(crate) fn init(&mut self) {
        runtime().block_on(async {
            let docker = elior::docker::connect().await.unwrap();
            docker
                .init_swarm(bollard::models::SwarmInitRequest {
                    listen_addr: Some("127.0.0.1:2377".into()),
                    advertise_addr: Some("127.0.0.1".into()),
                    ..Default::default()
                })
                .await
                .expect("docker swarm init --advertise-addr 127.0.0.1");
        });
        self.created = true;
    }

    /// Unless some node has `elior.db=true`: runs `before` (a deploy that must be refused),
    /// then puts the label on this node. Returns whether a node had it already.
    pub(crate) fn label_db_node(&mut self, before: impl FnOnce()) -> bool {
        let has_label = runtime().block_on(async {
            let docker = elior::docker::connect().await.unwrap();
            let nodes = docker
                .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
                .await
                .unwrap();
            nodes.iter().any(|n| {
                n.spec
                    .as_ref()
                    .and_then(|s| s.labels.as_ref())
                    .and_then(|l| l.get("elior.db"))
                    .map(String::as_str)
                    == Some("true")
            })
        });
        if has_label {
            return true;
        }
        before();
        runtime().block_on(async {
            let docker = elior::docker::connect().await.unwrap();
            let info = docker.info().await.unwrap();
            let id = info.swarm.and_then(|s| s.node_id).unwrap();
            set_node_label(&docker, &id, Some("true")).await;
            self.labelled = Some(id);
        });
        false
    }
}

async fn set_node_label(docker: &bollard::Docker, id: &str, value: Option<&str>) {
    let node = docker.inspect_node(id).await.unwrap();
    let mut spec = node.spec.unwrap();
    let mut labels = spec.labels.take().unwrap_or_default();
    match value {
        Some(v) => labels.insert("elior.db".into(), v.into()),
        None => labels.remove("elior.db"),
    };
    spec.labels = Some(labels);
    docker
        .update_node(
            id,
            spec,
            bollard::query_parameters::UpdateNodeOptions {
                version: node.version.unwrap().index.unwrap() as i64,
            },
        )
        .await
        .unwrap();
}

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        let (labelled, created) = (self.labelled.take(), self.created);
        runtime().block_on(async move {
            let Ok(docker) = elior::docker::connect().await else {
                return;
            };
            if let Some(id) = labelled {
                if !created {
                    set_node_label(&docker, &id, None).await;
                }
            }
            if created {
                let _ = docker
                    .leave_swarm(Some(bollard::query_parameters::LeaveSwarmOptions {
                        force: true,
                    }))
                    .await;
            }
        });
    }
}

/// A test stack on the swarm; dropping it removes its services, secrets, overlay network
/// and volumes (by stack id), then its containers, networks and images (TestStack).
pub(crate) struct SwarmStack {
    pub(crate) stack: TestStack,
}

impl Drop for SwarmStack {
    fn drop(&mut self) {
        let Ok(Some(owner)) = elior::config::model::owner_of(&self.stack.dir, &self.stack.domain)
        else {
            return;
        };
        runtime().block_on(async move {
            let Ok(docker) = elior::docker::connect().await else {
                return;
            };
            let _ =
                elior::docker::swarm::remove(&docker, &owner, true, Duration::from_secs(60)).await;
        });
    }
}

impl SwarmStack {
    pub(crate) fn new(name: &str, replicas: u32) -> SwarmStack {
        let stack = TestStack::new(name);
        stack.init();
        stack.set_env(&[
            ("API_REPLICAS", &replicas.to_string()),
            ("POSTGRES_IMAGE", &fixture_postgres_image()),
        ]);
        SwarmStack { stack }
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.run_with(BIN, args)
    }

    fn run_with(&self, bin: &str, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--dir", self.stack.dir.to_str().unwrap()]);
        // The stack's name resolves to this host (the certificate checks ask; issue 21).
        Command::new(bin)
            .args(&all)
            .env("ELIOR_RESOLVE", format!("{}:127.0.0.1", self.stack.domain))
            .output()
            .unwrap()
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        self.ok_with(BIN, args)
    }

    fn ok_with(&self, bin: &str, args: &[&str]) -> String {
        let out = self.run_with(bin, args);
        assert!(
            out.status.success(),
            "elior {args:?} failed ({}):\n{}\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn client(&self) -> PinnedClient {
        PinnedClient::from_pem_file(&self.stack.dir.join("nginx/ssl/cert.pem")).unwrap()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.stack.https_port))
    }

    pub(crate) fn get(&self, path: &str) -> elior::probe::https::Response {
        runtime()
            .block_on(self.client().get(
                self.addr(),
                &self.stack.domain,
                path,
                Duration::from_secs(10),
            ))
            .unwrap_or_else(|e| panic!("GET {path} through nginx: {e:#}"))
    }

    /// `METHOD path` through nginx with a JSON body and optional bearer token.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        request_id: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let body = body.map(|b| b.to_string());
        let r = self.send(
            method,
            path,
            token,
            request_id,
            "application/json",
            body.as_deref().map(str::as_bytes),
        );
        (
            r.status,
            serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// `METHOD path` through nginx with any body.
    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        request_id: &str,
        content_type: &str,
        body: Option<&[u8]>,
    ) -> elior::probe::https::Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("X-Request-ID", request_id), ("Content-Type", content_type)];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        runtime()
            .block_on(self.client().send(
                self.addr(),
                &self.stack.domain,
                method,
                path,
                &headers,
                body,
                Duration::from_secs(10),
            ))
            .unwrap_or_else(|e| panic!("{method} {path} through nginx: {e:#}"))
    }

    /// [`SwarmStack::call`] on /api/auth/, which nginx rate-limits: a 429 is asked again
    /// until it passes (within 30 s).
    pub(crate) fn call_auth(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = self.call(method, path, token, "auth", Some(body.clone()));
            if reply.0 != 429 || Instant::now() >= deadline {
                return reply;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn login(&self, username: &str) -> String {
        let (status, body) = self.call_auth(
            "POST",
            "/api/auth/login",
            None,
            serde_json::json!({"username": username, "password": "correct-horse-battery"}),
        );
        assert_eq!(status, 200, "login {username}: {body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Logs in `rounds` times through nginx, 4 per second (nginx allows 5 on /api/auth/),
    /// each with its own request id, and reads /api/auth/me with each token.
    fn login_rounds(&self, tag: &str, rounds: usize) {
        let pace = Duration::from_millis(260);
        for i in 0..rounds {
            let id = format!("{tag}-{i}");
            let (status, body) = self.call(
                "POST",
                "/api/auth/login",
                None,
                &id,
                Some(serde_json::json!({"username": "swarm_user", "password": "correct-horse-battery"})),
            );
            assert_eq!(status, 200, "login {id}: {body}");
            let token = body["access_token"].as_str().unwrap().to_string();
            std::thread::sleep(pace);
            let (status, me) = self.call(
                "GET",
                "/api/auth/me",
                Some(&token),
                &format!("{id}-me"),
                None,
            );
            assert_eq!(status, 200, "me {id}: {me}");
            assert_eq!(me["username"], "swarm_user");
            std::thread::sleep(pace);
        }
    }

    pub(crate) fn tasks(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["status", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap_or_else(|e| {
                panic!(
                    "status --json: {e}: {}{}",
                    text(&out.stdout),
                    text(&out.stderr)
                )
            })
            .as_array()
            .unwrap()
            .clone()
    }

    /// The api tasks the engine runs and wants running.
    pub(crate) fn running_api(&self) -> Vec<serde_json::Value> {
        self.tasks()
            .into_iter()
            .filter(|t| {
                t["service"] == "api" && t["state"] == "running" && t["desired"] == "running"
            })
            .collect()
    }

    pub(crate) fn owner(&self) -> elior::docker::Owner {
        self.stack.owner()
    }

    /// Services, secrets and volumes of the stack on the engine, by its id.
    fn engine_objects(&self) -> (usize, usize, usize) {
        let owner = self.owner();
        runtime().block_on(async move {
            let docker = elior::docker::connect().await.unwrap();
            (
                elior::docker::swarm::services(&docker, &owner)
                    .await
                    .unwrap()
                    .len(),
                elior::docker::swarm::secrets(&docker, &owner)
                    .await
                    .unwrap()
                    .len(),
                elior::docker::swarm::volumes(&docker, &owner)
                    .await
                    .unwrap()
                    .len(),
            )
        })
    }
}

fn fixture_postgres_image() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-fixture-images");
    let out = Command::new(script).arg("--postgres").output().unwrap();
    assert!(
        out.status.success(),
        "building the postgres fixture image failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// Requests `path` through nginx in a loop, one new TLS connection each; `expect` is the
/// status that counts as success.
fn request_loop(
    stack: &SwarmStack,
    path: &'static str,
    expect: u16,
    pause: Duration,
) -> ClientLoop {
    let (client, addr, domain) = (stack.client(), stack.addr(), stack.stack.domain.clone());
    ClientLoop::start_every(pause, move || {
        let (client, domain) = (client.clone(), domain.clone());
        async move {
            match client
                .get(addr, &domain, path, Duration::from_secs(10))
                .await
            {
                Ok(r) if r.status == expect => Ok(()),
                Ok(r) => Err(format!("{path}: status {}: {}", r.status, r.body.trim())),
                Err(e) => Err(format!("{path}: {e:#}")),
            }
        }
    })
}

/// Deploy with 3 replicas on an empty single-node swarm, then update under load, scale,
/// roll back and take it down: the "done when", in one walk so the slow parts
/// (image builds, health gates) are paid once.
#[test]
fn swarm_lifecycle_deploy_update_under_load_scale_rollback_down() {
    let (mut swarm, inactive) = SwarmGuard::ensure();
    let s = SwarmStack::new("swarm-life", 3);

    // A manager that is not a swarm is refused with the command that fixes it.
    if inactive {
        let out = s.run(&["deploy", &s.stack.domain, "--swarm"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr)
                .contains("not part of a swarm\nrun `docker swarm init --advertise-addr"),
            "{}",
            text(&out.stderr)
        );
        swarm.init();
    }
    // No node labelled for the database: refused, naming the label command.
    if swarm.label_db_node(|| {
        let out = s.run(&["deploy", &s.stack.domain, "--swarm"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("run `docker node update --label-add elior.db=true "),
            "{}",
            text(&out.stderr)
        );
    }) {
        eprintln!("a node already has elior.db=true: the missing-label refusal is not exercised");
    }
    // A port nginx would publish, held by another process (this test): refused before
    // anything is created, naming the holder, instead of nginx tasks failing on every
    // node until the deploy times out.
    {
        let _held = std::net::TcpListener::bind(("0.0.0.0", s.stack.https_port)).unwrap();
        let out = s.run(&["deploy", &s.stack.domain, "--swarm"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        let expected = format!(
            "port {} that {}-nginx publishes is held on 0.0.0.0:{} (IPv4) by pid {}",
            s.stack.https_port,
            s.stack.project(),
            s.stack.https_port,
            std::process::id()
        );
        assert!(err.contains(&expected), "{err}");
        assert_eq!(s.engine_objects(), (0, 0, 0), "{err}");
    }
    let out = s.ok(&["deploy", &s.stack.domain, "--swarm"]);
    assert!(out.contains("3 of 3 API tasks running"), "{out}");

    // A second stack on the same ports is refused before anything of it is created,
    // naming the service that publishes them; the first goes on serving.
    let rival = SwarmStack::new("swarm-rival", 1);
    rival.stack.set_env(&[
        ("HTTP_PORT", &s.stack.http_port.to_string()),
        ("HTTPS_PORT", &s.stack.https_port.to_string()),
    ]);
    let refused = rival.run(&["deploy", &rival.stack.domain, "--swarm"]);
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "is already published by the swarm service {}-nginx (the stack in {}); nothing was changed",
            s.stack.project(),
            s.stack.dir.display()
        )),
        "{err}"
    );
    assert_eq!(rival.engine_objects(), (0, 0, 0), "{err}");
    drop(rival);

    // HTTPS /health through nginx, 3 healthy API tasks, a healthy postgres service.
    let health = s.get("/health");
    assert_eq!(health.status, 200, "{}", health.body);
    assert!(health.header("strict-transport-security").is_some());
    let tasks = s.tasks();
    let api: Vec<_> = tasks.iter().filter(|t| t["service"] == "api").collect();
    assert_eq!(api.len(), 3, "{tasks:#?}");
    assert!(
        api.iter()
            .all(|t| t["state"] == "running" && t["health"] == "healthy"),
        "{tasks:#?}"
    );
    assert!(
        tasks.iter().any(|t| t["service"] == "postgres"
            && t["state"] == "running"
            && t["health"] == "healthy"),
        "{tasks:#?}"
    );
    assert!(
        tasks
            .iter()
            .any(|t| t["service"] == "nginx" && t["state"] == "running"),
        "{tasks:#?}"
    );
    let first_image = api[0]["image"].as_str().unwrap().to_string();
    // MODE=swarm was recorded, so the day-2 commands find the swarm stack.
    let env = std::fs::read_to_string(s.stack.env_path()).unwrap();
    assert!(env.lines().any(|l| l == "MODE=swarm"), "{env}");
    // One database for every replica: a user registered through one task logs in through
    // any other (nginx spreads these logins over the 3 tasks; after the update below,
    // through tasks that did not exist when the user registered).
    assert!(out.contains("database: the postgres service"), "{out}");
    let (status, body) = s.call(
        "POST",
        "/api/auth/register",
        None,
        "swarm-register",
        Some(serde_json::json!({"username": "swarm_user", "email": "swarm@example.com", "password": "correct-horse-battery", "full_name": "Swarm User"})),
    );
    assert_eq!(status, 201, "{body}");
    s.login_rounds("swarm-login", 6);
    let registered_on: Vec<String> = s
        .running_api()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();

    // doctor judges the swarm: a manager, the label, every task running and healthy.
    let doctor = s.run(&["doctor", "swarm", "containers", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {}", text(&doctor.stderr)));
    assert_eq!(doctor.status.code(), Some(0), "{report:#}");
    let findings = report["checks"][1]["findings"].to_string();
    for role in ["api: 3 of 3", "nginx: 1 of 1", "postgres: 1 of 1"] {
        assert!(findings.contains(role), "{report:#}");
    }
    // A backup dumps the postgres service (pg_dump -Fc in its task, streamed here), in
    // the archive format of a single host's PostgreSQL backup; verify reads it back
    // with pg_restore --list. The registered user is in it.
    let manifest: serde_json::Value = serde_json::from_str(&s.ok(&["backup", "--json"])).unwrap();
    assert_eq!(
        manifest["database_kind"], "postgresql-custom-dump",
        "{manifest:#}"
    );
    let dump = s
        .stack
        .dir
        .join("backups")
        .join(manifest["files"][0]["name"].as_str().unwrap());
    let bytes = std::fs::read(&dump).unwrap();
    assert!(bytes.starts_with(b"PGDMP"), "not a pg_dump -Fc file");
    assert_eq!(
        bytes.len() as u64,
        manifest["files"][0]["size"].as_u64().unwrap()
    );
    let sql = Command::new(elior::backup::postgres::tool("pg_restore").unwrap())
        .args(["--data-only", "--file", "-"])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(sql.status.success(), "{}", text(&sql.stderr));
    assert!(
        text(&sql.stdout).contains("swarm_user"),
        "the dump lacks the registered user"
    );
    s.ok(&["backup", "verify"]);
    // Again with nothing changed: nothing to do.
    let again = s.ok(&["deploy", &s.stack.domain]);
    assert!(again.starts_with("up to date:"), "{again}");

    // A new image under steady load: the engine rolls the tasks start-first, nginx follows
    // them through DNS, and no request fails. Five loops on /health, one on
    // /api/auth/me at the rate nginx's auth limit allows (5/s), anonymous: 401.
    let next = new_build_of_elior(s.stack.tmp.path());
    // --dry-run prints the plan: the API rolls because its image changed; nothing else.
    let dry = s.ok_with(&next, &["update", "--dry-run"]);
    assert!(
        dry.contains("-api: rolling update (image changed;"),
        "{dry}"
    );
    assert!(dry.contains("-nginx: keep"), "{dry}");
    assert!(dry.ends_with("dry run: nothing was changed\n"), "{dry}");
    assert_eq!(s.running_api().len(), 3);
    let loops: Vec<ClientLoop> = (0..5)
        .map(|_| request_loop(&s, "/health", 200, Duration::from_millis(1)))
        .chain([request_loop(
            &s,
            "/api/auth/me",
            401,
            Duration::from_millis(250),
        )])
        .collect();
    let started = Instant::now();
    let update = s.ok_with(&next, &["update"]);
    let elapsed = started.elapsed();
    let (mut ok, mut failures) = (0, Vec::new());
    for l in loops {
        let (n, f) = l.finish();
        ok += n;
        failures.extend(f);
    }
    eprintln!(
        "update of 3 replicas: {:.1}s, {ok} requests ({:.0}/s) and {} failures",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64(),
        failures.len()
    );
    assert!(update.contains("3 of 3 API tasks running"), "{update}");
    assert!(
        failures.is_empty(),
        "{} requests failed during the update: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(ok > 100, "the load loop made only {ok} requests");
    let updated: Vec<_> = s.running_api();
    assert_eq!(updated.len(), 3, "{updated:#?}");
    let new_image = updated[0]["image"].as_str().unwrap().to_string();
    assert_ne!(new_image, first_image, "a new binary is a new image");
    assert!(
        updated.iter().all(|t| t["image"] == new_image.as_str()),
        "{updated:#?}"
    );
    // Every task was replaced, and the user registered before still logs in: the
    // replicas share the database (SQLite in each task would have lost it).
    assert!(
        updated
            .iter()
            .all(|t| !registered_on.iter().any(|id| t["id"] == id.as_str())),
        "{updated:#?}"
    );
    s.login_rounds("after-update", 3);

    // A version whose tasks never start (an image without elior in it): the engine rolls
    // the update back by itself, the running tasks keep serving without a failed request,
    // and the command fails naming the rollback.
    let loops: Vec<ClientLoop> = (0..2)
        .map(|_| request_loop(&s, "/health", 200, Duration::from_millis(5)))
        .collect();
    let broken = docker_harness::fixture_nginx_image();
    let out = s.run(&["rollback", "--to", &broken, "--timeout", "60"]);
    let failures: Vec<String> = loops.into_iter().flat_map(|l| l.finish().1).collect();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("failed and the engine rolled it back"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        failures.is_empty(),
        "requests failed during the rolled-back update: {failures:?}"
    );
    let after: Vec<_> = s.running_api();
    assert_eq!(after.len(), 3, "{after:#?}");
    assert!(
        after
            .iter()
            .all(|t| t["image"] == new_image.as_str() && t["health"] == "healthy"),
        "{after:#?}"
    );

    // Scale to 5, then 2: status --json shows 5, then 2 running tasks.
    let out = s.ok(&["scale", "api=5", "--json"]);
    assert!(out.contains("\"api.5\""), "{out}");
    assert_eq!(s.running_api().len(), 5);
    s.ok(&["scale", "api=2"]);
    assert_eq!(s.running_api().len(), 2);
    let out = s.run(&["scale", "nginx=3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("only api does"),
        "{}",
        text(&out.stderr)
    );

    // logs: every task's lines, prefixed by its task.
    let logs = s.ok(&["logs", "api", "--tail", "5"]);
    assert!(logs.lines().any(|l| l.starts_with("api.1.")), "{logs}");
    assert!(logs.lines().any(|l| l.starts_with("api.2.")), "{logs}");

    // Rollback: back to the image before the running one, by the same rolling update.
    s.ok_with(&next, &["rollback"]);
    let rolled: Vec<_> = s.running_api();
    assert_eq!(rolled.len(), 3, "{rolled:#?}");
    assert!(
        rolled.iter().all(|t| t["image"] == first_image.as_str()),
        "rollback did not restore {first_image}: {rolled:#?}"
    );
    assert_eq!(s.get("/health").status, 200);

    // down: no services; the database volume and the secrets stay. --purge removes them.
    s.ok(&["down"]);
    let (services, secrets, volumes) = s.engine_objects();
    assert_eq!(services, 0);
    assert!(secrets >= 5, "secrets were removed by down: {secrets}");
    assert_eq!(volumes, 1, "the database volume must survive down");
    let out = s.ok(&["down", "--purge", "--json"]);
    let removed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(removed["volumes"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(s.engine_objects(), (0, 0, 0));
}

/// The host's address on the bridge that swarm tasks use to leave their overlay
/// (docker_gwbridge's gateway): where the test's PostgreSQL and S3 listen for them. The
/// engine makes the bridge once the node joins a swarm, not always before init returns.
fn host_address_for_tasks() -> String {
    runtime().block_on(async {
        let docker = elior::docker::connect().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let gateway = docker
                .inspect_network(
                    "docker_gwbridge",
                    None::<bollard::query_parameters::InspectNetworkOptions>,
                )
                .await
                .ok()
                .and_then(|n| n.ipam)
                .and_then(|i| i.config)
                .and_then(|c| c.into_iter().find_map(|c| c.gateway));
            match gateway {
                Some(gateway) => return gateway,
                None if Instant::now() >= deadline => {
                    panic!("docker_gwbridge has no gateway 30s after the swarm started")
                }
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
}

/// The containers of the single-host stack (not swarm tasks): (name, state).
fn single_host_containers(owner: &elior::docker::Owner) -> Vec<(String, String)> {
    let owner = owner.clone();
    runtime().block_on(async move {
        let docker = elior::docker::connect().await.unwrap();
        elior::docker::stack_containers(&docker, &owner)
            .await
            .unwrap()
            .into_iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .is_none_or(|l| !l.contains_key("com.docker.swarm.task.id"))
            })
            .map(|c| {
                (
                    elior::docker::summary_name(&c),
                    c.state.map(|s| s.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    })
}

const PDF: &[u8] = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n\
3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] >> endobj\n\
xref\n0 4\n0000000000 65535 f \n0000000009 00000 n \n0000000058 00000 n \n0000000115 00000 n \n\
trailer << /Size 4 /Root 1 0 R >>\nstartxref\n182\n%%EOF\n";

/// A populated single-host stack (an admin, a trainer, a client, an exercise, a plan, an
/// upload) moves onto the swarm: refused first, naming each fix, while it keeps serving;
/// killed mid-way and resumed; then everything is there, a token issued before still
/// works, and the old containers are stopped, not removed, until `down --purge`.
#[test]
fn migrate_to_swarm_keeps_users_workouts_and_uploads() {
    let (mut swarm, inactive) = SwarmGuard::ensure();
    let s = SwarmStack::new("swarm-move", 2);
    s.ok(&["deploy", &s.stack.domain]);
    let serving = |what: &str| {
        assert_eq!(
            s.get("/health").status,
            200,
            "{what}: the single host stopped serving"
        );
        let containers = single_host_containers(&s.owner());
        assert!(
            containers.len() == 2 && containers.iter().all(|(_, state)| state == "running"),
            "{what}: {containers:?}"
        );
    };
    serving("after the single-host deploy");

    // Populate it through nginx.
    let registration = |name: &str| serde_json::json!({"username": name, "email": format!("{name}@example.com"), "password": "correct-horse-battery", "full_name": format!("{name} test")});
    let (status, body) = s.call_auth(
        "POST",
        "/api/auth/setup/admin",
        None,
        registration("move_admin"),
    );
    assert_eq!(status, 201, "{body}");
    let admin = body["access_token"].as_str().unwrap().to_string();
    let (status, body) = s.call_auth(
        "POST",
        "/api/auth/register/trainer",
        Some(&admin),
        registration("move_trainer"),
    );
    assert_eq!(status, 201, "{body}");
    let trainer = s.login("move_trainer");
    let (status, body) = s.call_auth(
        "POST",
        "/api/auth/register/client",
        Some(&trainer),
        registration("move_client"),
    );
    assert_eq!(status, 201, "{body}");
    let client_id = body["id"].as_i64().unwrap();
    let client = s.login("move_client");
    let (status, body) = s.call(
        "POST",
        "/api/workouts/exercises",
        Some(&trainer),
        "exercise",
        Some(serde_json::json!({"name": "Squat", "muscle_group": "legs", "equipment_needed": "barbell"})),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = s.call(
        "POST",
        "/api/workouts/plans",
        Some(&trainer),
        "plan",
        Some(serde_json::json!({"client_id": client_id, "name": "Strength", "start_date": "2026-01-05", "end_date": "2026-03-01"})),
    );
    assert_eq!(status, 201, "{body}");
    let boundary = "elior-move-boundary";
    let mut upload = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"plan.pdf\"\r\nContent-Type: application/pdf\r\n\r\n").into_bytes();
    upload.extend_from_slice(PDF);
    upload.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = s.send(
        "POST",
        "/api/files/upload/documents",
        Some(&client),
        "upload",
        &format!("multipart/form-data; boundary={boundary}"),
        Some(&upload),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let upload: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let upload_url = upload["url"].as_str().unwrap().to_string();

    // Refused, naming the fix, and nothing stopped: no bucket, no PostgreSQL, no swarm.
    let refused = |what: &str, expect: &str| {
        let out = s.run(&["migrate-to-swarm"]);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out.stdout));
        assert!(
            text(&out.stderr).contains(expect),
            "{what}: {}",
            text(&out.stderr)
        );
        serving(what);
    };
    s.stack
        .set_env(&[("DATABASE_URL", "postgresql://elior:pw@127.0.0.1:9/elior")]);
    refused(
        "no UPLOADS_URL",
        "\nset UPLOADS_URL=s3://BUCKET/PREFIX with S3_ENDPOINT",
    );
    let placeholder_s3 = [
        ("UPLOADS_URL", "s3://elior-move/gym"),
        ("S3_ENDPOINT", "http://127.0.0.1:9"),
        ("S3_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDMOVE"),
        ("AWS_SECRET_ACCESS_KEY", "move-secret-key"),
    ];
    s.stack.set_env(&placeholder_s3);
    s.stack
        .set_env(&[("DATABASE_URL", "sqlite:////app/data/elior_fitness.db")]);
    refused(
        "DATABASE_URL on SQLite",
        "\nset DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DATABASE",
    );
    s.stack
        .set_env(&[("DATABASE_URL", "postgresql://elior:pw@127.0.0.1:9/elior")]);
    if inactive {
        refused(
            "no swarm",
            "not part of a swarm\nrun `docker swarm init --advertise-addr",
        );
        swarm.init();
    }
    // The database must be reachable, and checked before anything stops.
    refused(
        "an unreachable database",
        "cannot be reached from this host; nothing was stopped",
    );

    // The swarm's database and bucket, where this host and the tasks reach them.
    let gateway = host_address_for_tasks();
    let pg = pg_harness::Cluster::start_listening(Some(&gateway));
    let database_url = pg.database().replace("127.0.0.1", &gateway);
    let moto = moto_support::Moto::start_on(&gateway, moto_support::free_port(), &[]);
    moto.create_bucket("elior-move");
    s.stack.set_env(&[
        ("DATABASE_URL", &database_url),
        ("S3_ENDPOINT", &moto.endpoint()),
    ]);

    // --dry-run prints the steps and changes nothing.
    let dry = s.ok(&["migrate-to-swarm", "--dry-run"]);
    assert!(
        dry.starts_with("1. back up the single-host stack (SQLite database and uploads): to do\n"),
        "{dry}"
    );
    assert!(
        dry.contains(
            "5. deploy the swarm stack and prove HTTPS /health through its nginx: to do\n"
        ),
        "{dry}"
    );
    assert!(dry.ends_with("dry run: nothing was changed\n"), "{dry}");
    serving("after --dry-run");

    // With the database at 127.0.0.1: this host copies into it, but no swarm task
    // reaches it, so the swarm stack never gets healthy. The single host is put back,
    // serving, and says so; what it takes meanwhile is copied by the next run.
    let loopback_url = database_url.replace(&gateway, "127.0.0.1");
    s.stack.set_env(&[("DATABASE_URL", &loopback_url)]);
    let out = s.run(&["migrate-to-swarm", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("the single-host stack serves again"),
        "{}",
        text(&out.stderr)
    );
    serving("after a failed switch");
    assert_eq!(
        s.engine_objects().0,
        0,
        "the swarm services were not removed"
    );
    let env = std::fs::read_to_string(s.stack.env_path()).unwrap();
    assert!(!env.lines().any(|l| l == "MODE=swarm"), "{env}");
    let (status, body) = s.call_auth(
        "POST",
        "/api/auth/register/client",
        Some(&trainer),
        registration("late_client"),
    );
    assert_eq!(status, 201, "{body}");
    s.stack.set_env(&[("DATABASE_URL", &database_url)]);

    // A second migrate-to-swarm while one runs (held right after its backup) is refused,
    // naming the one that holds the stack; the held one is then killed there.
    let marker = s.stack.tmp.path().join("migrate-paused");
    let mut held = Command::new(BIN)
        .args(["migrate-to-swarm", "--dir", s.stack.dir.to_str().unwrap()])
        .env("ELIOR_FAULT", "migrate:backup:pause")
        .env("ELIOR_FAULT_MARKER", &marker)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the first run never reached its backup"
        );
        assert!(
            held.try_wait().unwrap().is_none(),
            "the first run ended early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = s.run(&["migrate-to-swarm"]);
    assert_eq!(second.status.code(), Some(2), "{}", text(&second.stdout));
    assert!(
        text(&second.stderr).contains("is locked by `elior migrate-to-swarm`"),
        "{}",
        text(&second.stderr)
    );
    held.kill().unwrap();
    held.wait().unwrap();
    serving("a run killed after its backup");

    // Killed right after the database copy (the single host is stopped by then): a
    // re-run resumes from there and finishes.
    let mut killed = Command::new(BIN);
    killed
        .args(["migrate-to-swarm", "--dir", s.stack.dir.to_str().unwrap()])
        .env("ELIOR_FAULT", "migrate:copy-database");
    let out = killed.output().unwrap();
    assert_eq!(
        out.status.code(),
        None,
        "the fault point kills it: {}",
        text(&out.stderr)
    );
    let stopped = single_host_containers(&s.owner());
    assert!(
        stopped.iter().all(|(_, state)| state == "exited"),
        "{stopped:?}"
    );
    let out = s.ok(&["migrate-to-swarm"]);
    assert!(out.contains("migrated "), "{out}");
    let env = std::fs::read_to_string(s.stack.env_path()).unwrap();
    assert!(env.lines().any(|l| l == "MODE=swarm"), "{env}");

    // Through the swarm's nginx now: every user, the workout, the upload; the token made
    // before the move still works (same JWT secret, same users).
    assert_eq!(s.get("/health").status, 200);
    let tasks = s.tasks();
    assert!(
        tasks
            .iter()
            .filter(|t| t["service"] == "api" && t["state"] == "running")
            .count()
            == 2,
        "{tasks:#?}"
    );
    let (status, me) = s.call("GET", "/api/auth/me", Some(&client), "me-before", None);
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["username"], "move_client");
    for user in ["move_admin", "move_trainer", "move_client", "late_client"] {
        s.login(user);
    }
    let (status, plans) = s.call("GET", "/api/workouts/plans", Some(&client), "plans", None);
    assert_eq!(status, 200, "{plans}");
    assert!(plans.to_string().contains("\"Strength\""), "{plans}");
    let (status, exercises) = s.call(
        "GET",
        "/api/workouts/exercises",
        Some(&client),
        "exercises",
        None,
    );
    assert_eq!(status, 200, "{exercises}");
    assert!(exercises.to_string().contains("\"Squat\""), "{exercises}");
    let r = s.send(
        "GET",
        &upload_url,
        Some(&client),
        "download",
        "application/json",
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body.as_bytes(),
        PDF,
        "the upload comes back byte for byte"
    );
    assert!(
        moto.keys("elior-move")
            .iter()
            .any(|k| k.starts_with("gym/documents/")),
        "{:?}",
        moto.keys("elior-move")
    );

    // A backup of the swarm stack: pg_dump of DATABASE_URL, and the bucket's objects
    // listed in the manifest (key, size, etag), not copied.
    let manifest: serde_json::Value = serde_json::from_str(&s.ok(&["backup", "--json"])).unwrap();
    assert_eq!(
        manifest["database_kind"], "postgresql-custom-dump",
        "{manifest:#}"
    );
    let objects = manifest["upload_objects"].as_array().unwrap();
    let document = objects
        .iter()
        .find(|o| o["key"].as_str().unwrap().starts_with("documents/"))
        .unwrap_or_else(|| panic!("{manifest:#}"));
    assert_eq!(
        document["size"].as_u64(),
        Some(PDF.len() as u64),
        "{manifest:#}"
    );
    assert!(
        document["etag"].as_str().is_some_and(|e| !e.is_empty()),
        "{manifest:#}"
    );
    assert_eq!(
        manifest["upload_files"].as_u64(),
        Some(objects.len() as u64)
    );
    s.ok(&["backup", "verify"]);

    // A restore of that backup into the external DATABASE_URL (pg_restore from this host,
    // the API at 0 tasks meanwhile) after its upload was deleted from the bucket: a backup
    // only lists the bucket, so the restore names the object it cannot bring back.
    let gone = moto
        .keys("elior-move")
        .into_iter()
        .find(|k| k.starts_with("gym/documents/"))
        .unwrap();
    let keys = [
        ("S3_ENDPOINT", moto.endpoint()),
        ("S3_REGION", "us-east-1".to_string()),
        ("AWS_ACCESS_KEY_ID", "AKIDMOVE".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "move-secret-key".to_string()),
    ];
    let lookup = |key: &str| {
        keys.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| (v.clone(), "test".to_string()))
    };
    let settings = elior::files::settings::S3Settings::parse(
        "UPLOADS_URL",
        "s3://elior-move/gym",
        "test",
        "keeps the uploads",
        "",
        &lookup,
    )
    .unwrap();
    let bucket = elior::files::store::client(&settings, "UPLOADS_URL", 0).unwrap();
    runtime()
        .block_on(object_store::ObjectStoreExt::delete(
            &bucket,
            &object_store::path::Path::from(gone.as_str()),
        ))
        .unwrap();
    assert!(!moto.keys("elior-move").contains(&gone));
    let restored = s.ok(&["restore", manifest["id"].as_str().unwrap(), "--yes"]);
    assert!(
        restored.contains(&format!(
            "database  postgresql {}",
            database_url.split('@').nth(1).unwrap()
        )),
        "{restored}"
    );
    assert!(
        restored.contains("uploads this backup lists are no longer in s3://elior-move/gym, and a restore cannot bring them back")
            && restored.contains(gone.strip_prefix("gym/").unwrap()),
        "{restored}"
    );
    s.login("move_client");

    // The old containers are stopped, not removed; a re-run has nothing left to do.
    let old = single_host_containers(&s.owner());
    assert!(
        old.len() == 2 && old.iter().all(|(_, state)| state == "exited"),
        "{old:?}"
    );
    let again = s.ok(&["migrate-to-swarm"]);
    assert!(again.contains("nothing to migrate"), "{again}");
    let down = s.ok(&["down"]);
    assert!(down.contains("kept the stopped container"), "{down}");
    assert_eq!(single_host_containers(&s.owner()).len(), 2);
    let purged = s.ok(&["down", "--purge"]);
    assert!(
        purged.contains("(the single-host stack before migrate-to-swarm)"),
        "{purged}"
    );
    assert!(single_host_containers(&s.owner()).is_empty());
}
