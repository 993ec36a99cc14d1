//! `elior serve` on PostgreSQL beyond the shared API suite (issue 16): `elior db status`,
//! `migrate` and `copy` run as a user runs them, two replicas on one database (a
//! notification made through one reaches a WebSocket on the other), and the errors a
//! wrong URL, an unreachable server or a wrong password give. Each test runs its own
//! throwaway cluster (tests/pg_harness), removed even when the test fails.

use crate::harness::api as api_harness;
use crate::harness::pg as pg_harness;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::stack::exited;
use api_harness::{Cast, Server};
use pg_harness::{Cluster, PG_PASSWORD};
use serde_json::{json, Value};

fn elior(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_elior"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn db_status_and_migrate_on_postgresql_and_sqlite() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let env = [("DATABASE_URL", url.as_str())];

    // A fresh database: version 0, one migration pending (exit 1), nothing changed by
    // a dry run.
    let status = elior(&["db", "status", "--json"], &env);
    let status_said = exited(&status, 1);
    let body: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(body["backend"], "postgresql");
    assert_eq!(body["applied_version"], 0);
    assert_eq!(body["pending"][0]["name"], "schema");
    // Every migration is pending: the count and the target version come from the
    // status, so a new migration doesn't break the assertions below.
    let latest = body["latest_version"].as_i64().unwrap();
    assert_eq!(body["pending"].as_array().unwrap().len() as i64, latest);
    assert!(!status_said.contains(PG_PASSWORD), "{status_said}");
    let dry = elior(&["db", "migrate", "--dry-run"], &env);
    let dry_said = exited(&dry, 0);
    assert!(
        dry_said.contains(&format!("would apply {latest} migration")),
        "{dry_said}"
    );
    let url_name = url.rsplit('/').next().unwrap();
    assert_eq!(
        cluster.psql(
            url_name,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );

    let migrate = elior(&["db", "migrate"], &env);
    let migrate_said = exited(&migrate, 0);
    assert!(
        migrate_said.contains(&format!("from schema version 0 to {latest}")),
        "{migrate_said}"
    );
    let status = elior(&["db", "status"], &env);
    let status_said = exited(&status, 0);
    assert!(
        status_said.contains(&format!("version {latest} of {latest}")),
        "{status_said}"
    );
    let again = elior(&["db", "migrate"], &env);
    let again_said = exited(&again, 0);
    assert!(again_said.contains("nothing to apply"), "{again_said}");

    // SQLite: a missing file is an error for status (exit 2), created by migrate.
    let dir = tempfile::tempdir().unwrap();
    let file = format!("sqlite:///{}", dir.path().join("e.db").display());
    let env = [("DATABASE_URL", file.as_str())];
    let missing = elior(&["db", "status"], &env);
    let missing_said = exited(&missing, 2);
    assert!(missing_said.contains("no database file"), "{missing_said}");
    let migrate = elior(&["db", "migrate"], &env);
    exited(&migrate, 0);
    let status = elior(&["db", "status", "--json"], &env);
    exited(&status, 0);
    let body: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(body["backend"], "sqlite");
    assert_eq!(body["applied_version"], body["latest_version"]);
}

/// A database filled through the API on SQLite, copied, then served from PostgreSQL:
/// the same answers, the same logins (even the tokens issued before), and new rows get
/// ids never handed out before, deleted ones included.
#[test]
fn copy_a_populated_sqlite_database_and_serve_it_from_postgresql() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let mut s = Server::start();
    let cast = Cast::new(&s);
    let t = &cast.trainer.token;
    let plan = s.post(
        "/api/workouts/plans",
        t,
        json!({"client_id": cast.client.id, "name": "Base", "start_date": "2026-01-01"}),
    );
    assert_eq!(plan.status, 201, "{:?}", plan.body);
    for (date, kg) in [("2026-01-01", 82.0), ("2026-01-08", 81.25)] {
        let r = s.post(
            "/api/progress/weight",
            &cast.client.token,
            json!({"date": date, "weight": kg}),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let note = json!({"recipient_id": cast.client.id, "title": "Hi", "message": "Keep going"});
    assert_eq!(s.post("/api/notifications", t, note).status, 201);
    // The newest user goes: its id must never come back.
    let gone = s.post(
        "/api/auth/register/client",
        t,
        json!({"username": "gone", "email": "gone@example.com", "password": api_harness::PASSWORD, "full_name": "Gone"}),
    );
    assert_eq!(gone.status, 201, "{:?}", gone.body);
    let gone_id = gone.body["id"].as_i64().unwrap();
    assert_eq!(
        s.delete(&format!("/api/users/{gone_id}"), &cast.admin.token)
            .status,
        200
    );
    let reads = [
        ("/api/users", cast.admin.token.as_str()),
        ("/api/workouts/plans", t),
        ("/api/progress/weight", cast.client.token.as_str()),
        ("/api/notifications", cast.client.token.as_str()),
    ];
    let before: Vec<Value> = reads
        .iter()
        .map(|(path, token)| {
            let r = s.get(path, token);
            assert_eq!(r.status, 200, "{path}: {:?}", r.body);
            r.body
        })
        .collect();
    assert!(s.terminate().success());
    let db_file = s.dir.path().join("elior.db");
    let from = format!("sqlite:{}", db_file.display());

    let copy = elior(&["db", "copy", "--from", &from, "--to", &url], &[]);
    let out = exited(&copy, 0);
    assert!(out.contains("copied and verified"), "{out}");
    assert!(out.contains("users"), "{out}");
    assert!(!out.contains(PG_PASSWORD), "{out}");

    // Copying again into the now non-empty target is refused, and changes nothing.
    let db_name = url.rsplit('/').next().unwrap();
    let users = cluster.psql(db_name, "SELECT count(*) FROM users");
    let again = elior(&["db", "copy", "--from", &from, "--to", &url], &[]);
    let again_said = exited(&again, 2);
    assert!(again_said.contains("not empty"), "{again_said}");
    assert!(again_said.contains("--force"), "{again_said}");
    assert_eq!(cluster.psql(db_name, "SELECT count(*) FROM users"), users);
    let forced = elior(
        &[
            "db", "copy", "--from", &from, "--to", &url, "--force", "--json",
        ],
        &[],
    );
    exited(&forced, 0);
    let report: Value = serde_json::from_slice(&forced.stdout).unwrap();
    assert_eq!(report[0]["table"], "users");
    assert_eq!(report[0]["rows"].as_u64().unwrap().to_string(), users);

    // Served from PostgreSQL: the same answers, to the tokens issued on SQLite.
    let pg = Server::start_full(tempfile::tempdir().unwrap(), Some(url.clone()), &[]);
    for ((path, token), want) in reads.iter().zip(&before) {
        let r = pg.get(path, token);
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        assert_eq!(&r.body, want, "{path} differs after the copy");
    }
    let token = pg.login("client_a");
    assert_eq!(pg.get("/api/auth/me", &token).body["id"], cast.client.id);
    let fresh = pg.post(
        "/api/auth/register/client",
        t,
        json!({"username": "fresh", "email": "fresh@example.com", "password": api_harness::PASSWORD, "full_name": "Fresh"}),
    );
    assert_eq!(fresh.status, 201, "{:?}", fresh.body);
    assert!(
        fresh.body["id"].as_i64().unwrap() > gone_id,
        "id {} reused",
        gone_id
    );
    // A duplicate is the same 409 as on SQLite.
    let dup = pg.post(
        "/api/auth/register/client",
        t,
        json!({"username": "FRESH", "email": "other@example.com", "password": api_harness::PASSWORD, "full_name": "Fresh"}),
    );
    assert_eq!(dup.status, 409, "{:?}", dup.body);
    let health = pg.get("/health", "");
    assert_eq!(health.body["database"]["kind"], "postgresql");
    assert!(!String::from_utf8_lossy(&health.bytes).contains("127.0.0.1"));
}

#[test]
fn copy_refuses_what_is_not_an_elior_database_and_names_a_wrong_password() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let dir = tempfile::tempdir().unwrap();

    let text_file = dir.path().join("notes.txt");
    std::fs::write(
        &text_file,
        "not a database at all, just some text\n".repeat(200),
    )
    .unwrap();
    let other = dir.path().join("other.db");
    Command::new("sqlite3")
        .arg(&other)
        .arg("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .status()
        .unwrap();
    for (path, says) in [
        (&text_file, "is not an elior database"),
        (&other, "no schema_migrations table"),
        (&dir.path().join("missing.db"), "no SQLite database at"),
    ] {
        let from = format!("sqlite:{}", path.display());
        let out = elior(&["db", "copy", "--from", &from, "--to", &url], &[]);
        let out_said = exited(&out, 2);
        assert!(out_said.contains(says), "{out_said}");
    }

    // A real source, a wrong password: one clear error naming the server and the fix.
    let s = Server::start();
    Cast::new(&s);
    let from = format!("sqlite:{}", s.dir.path().join("elior.db").display());
    let wrong = url.replace(PG_PASSWORD, "not-the-password");
    let out = elior(&["db", "copy", "--from", &from, "--to", &wrong], &[]);
    let msg = exited(&out, 2);
    assert!(
        msg.contains(&format!("127.0.0.1:{}", cluster.port)),
        "{msg}"
    );
    assert!(msg.contains("fix the user or password"), "{msg}");
    assert!(!msg.contains("not-the-password"), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");
    // Not a PostgreSQL URL at all.
    let out = elior(
        &[
            "db",
            "copy",
            "--from",
            &from,
            "--to",
            "mysql://u:secret@h/db",
        ],
        &[],
    );
    let out_said = exited(&out, 2);
    assert!(out_said.contains("postgresql://USER"), "{out_said}");
    assert!(!out_said.contains("secret"), "{out_said}");
}

#[test]
fn serve_names_an_unreachable_database_retries_and_never_shows_its_password() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgresql://elior:hunter2secret@127.0.0.1:{port}/elior");
    let started = Instant::now();
    let out = elior(
        &["serve", "--bind", "127.0.0.1:0"],
        &[
            ("DATABASE_URL", &url),
            ("DATABASE_CONNECT_RETRY_SECONDS", "2"),
            ("JWT_SECRET", "test-secret-0123456789abcdef0123456789"),
        ],
    );
    let msg = exited(&out, 2);
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("check that PostgreSQL is running"), "{msg}");
    assert!(!msg.contains("hunter2secret"), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");
    // It retried (with backoff) before giving up, within its bound.
    assert!(msg.contains("retry_in_ms"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(20));

    // A database that comes up late (a rolling start): serve retries until it is there.
    let cluster = Cluster::start();
    let url = cluster.database();
    cluster.stop();
    let server = std::thread::spawn(move || {
        Server::start_full(
            tempfile::tempdir().unwrap(),
            Some(url),
            &[("DATABASE_CONNECT_RETRY_SECONDS", "30")],
        )
    });
    cluster.start_again();
    let server = server
        .join()
        .expect("serve came up once the database was back");
    let health = server.get("/health", "");
    assert_eq!(health.status, 200, "{:?}", health.body);
    assert_eq!(health.body["database"]["kind"], "postgresql");
}

mod ws {
    use std::net::TcpStream;
    use std::time::Duration;

    use serde_json::Value;
    use tungstenite::stream::MaybeTlsStream;
    use tungstenite::{Message, WebSocket};

    pub type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

    pub fn open(port: u16, path: &str) -> Socket {
        let (socket, _) = tungstenite::connect(format!("ws://127.0.0.1:{port}{path}"))
            .expect("websocket handshake");
        socket
    }

    /// The next text message as JSON within `within`, skipping pings.
    pub fn next_json_within(socket: &mut Socket, within: Duration) -> Value {
        if let MaybeTlsStream::Plain(s) = socket.get_mut() {
            s.set_read_timeout(Some(within)).unwrap();
        }
        loop {
            match socket.read() {
                Ok(Message::Text(t)) => return serde_json::from_str(&t).unwrap(),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(other) => panic!("expected a text message, got {other:?}"),
                Err(e) => panic!("no message within {within:?}: {e}"),
            }
        }
    }

    /// The close frame's code and reason within `within`, skipping messages before it.
    pub fn close_within(socket: &mut Socket, within: Duration) -> (u16, String) {
        if let MaybeTlsStream::Plain(s) = socket.get_mut() {
            s.set_read_timeout(Some(within)).unwrap();
        }
        loop {
            match socket.read() {
                Ok(Message::Close(Some(f))) => return (f.code.into(), f.reason.to_string()),
                Ok(Message::Close(None)) => return (1005, String::new()),
                Ok(_) => continue,
                Err(e) => panic!("no close frame within {within:?}: {e}"),
            }
        }
    }
}

#[test]
fn a_notification_made_through_one_replica_reaches_a_websocket_on_the_other() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let one = Server::start_full(tempfile::tempdir().unwrap(), Some(url.clone()), &[]);
    let two = Server::start_full(tempfile::tempdir().unwrap(), Some(url.clone()), &[]);
    let cast = Cast::new(&two);
    let path = format!("/api/ws/ws/{}?token={}", cast.client.id, cast.client.token);
    let mut socket = ws::open(one.port, &path);
    let welcome = ws::next_json_within(&mut socket, Duration::from_secs(10));
    assert_eq!(welcome["type"], "connection_established");

    let send = |s: &Server, title: &str| {
        let note = json!({"recipient_id": cast.client.id, "title": title, "message": "m"});
        let r = s.post("/api/notifications", &cast.trainer.token, note);
        assert_eq!(r.status, 201, "{:?}", r.body);
    };
    // Through replica two: pushed by one's listener within 1 s.
    send(&two, "through two");
    let pushed = ws::next_json_within(&mut socket, Duration::from_secs(1));
    assert_eq!(pushed["data"]["title"], "through two");
    // Through replica one itself: delivered once (its own announcement is skipped), so
    // the next message is the next notification, not a duplicate.
    send(&one, "through one");
    assert_eq!(
        ws::next_json_within(&mut socket, Duration::from_secs(1))["data"]["title"],
        "through one"
    );
    send(&two, "through two again");
    assert_eq!(
        ws::next_json_within(&mut socket, Duration::from_secs(1))["data"]["title"],
        "through two again"
    );

    // The listener survives losing its connection: terminate every listening backend,
    // then a notification still arrives once it has reconnected.
    let db_name = url.rsplit('/').next().unwrap();
    cluster.psql(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db_name}' AND application_name = 'elior-listen'"
        ),
    );
    let reconnected = Cluster::wait_for(Duration::from_secs(15), || {
        cluster.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db_name}' AND application_name = 'elior-listen'"),
        ) == "2"
    });
    assert!(reconnected, "the listeners did not reconnect");
    send(&two, "after the reconnect");
    assert_eq!(
        ws::next_json_within(&mut socket, Duration::from_secs(1))["data"]["title"],
        "after the reconnect"
    );

    // Logging out everywhere through replica two closes the socket held by replica one.
    let r = two.call(
        "POST",
        "/api/auth/logout-all",
        Some(&cast.client.token),
        None,
    );
    assert_eq!(r.status, 204, "{:?}", r.body);
    let (_, reason) = ws::close_within(&mut socket, Duration::from_secs(1));
    assert_eq!(reason, "Session ended");
}

/// Failed logins spread over two replicas count against one limit: the lock is kept in
/// the database, not per process.
#[test]
fn two_replicas_enforce_one_login_lock() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let one = Server::start_full(tempfile::tempdir().unwrap(), Some(url.clone()), &[]);
    let two = Server::start_full(tempfile::tempdir().unwrap(), Some(url), &[]);
    Cast::new(&one);
    let login = |s: &Server, password: &str| {
        s.call(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"username": "client_a", "password": password})),
        )
    };
    // Five failures, alternating: three on one, two on two (each under the limit).
    for attempt in 0..5 {
        let s = if attempt % 2 == 0 { &one } else { &two };
        let r = login(s, "wrong-password-here");
        assert_eq!(r.status, 401, "attempt {attempt}: {:?}", r.body);
    }
    for s in [&one, &two] {
        let r = login(s, api_harness::PASSWORD);
        assert_eq!(r.status, 429, "{:?}", r.body);
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=300).contains(&wait), "Retry-After {wait}");
    }
    // Another account is not locked.
    let r = one.call(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"username": "client_b", "password": api_harness::PASSWORD})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
}
