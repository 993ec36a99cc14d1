//! `elior restore` of a swarm stack (issue 21, item 4) on a real single-node Docker Swarm,
//! with the swarm tests' harness (tests/it/swarm.rs): the postgres service's database put
//! back with pg_restore in its task while the API is scaled to 0; a garbled backup and a
//! dump pg_restore fails on half-way leave the stack serving as it was; a restore killed
//! while the API is at 0 tasks is recovered by the next command.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::pg as pg_harness;
use crate::swarm::{text, SwarmGuard, SwarmStack, BIN};

fn registration(name: &str) -> serde_json::Value {
    serde_json::json!({"username": name, "email": format!("{name}@example.com"), "password": "correct-horse-battery", "full_name": format!("{name} test")})
}

/// The status of a login through nginx (429s asked again).
fn login_status(s: &SwarmStack, username: &str) -> u16 {
    s.call_auth(
        "POST",
        "/api/auth/login",
        None,
        serde_json::json!({"username": username, "password": "correct-horse-battery"}),
    )
    .0
}

/// Registers `name` as a client through nginx; returns its id.
fn register(s: &SwarmStack, name: &str) -> i64 {
    let (status, body) = s.call_auth("POST", "/api/auth/register", None, registration(name));
    assert_eq!(status, 201, "register {name}: {body}");
    body["id"].as_i64().unwrap()
}

/// Takes a backup; returns its id and the path of its database dump.
fn backup(s: &SwarmStack) -> (String, PathBuf) {
    let manifest: serde_json::Value = serde_json::from_str(&s.ok(&["backup", "--json"])).unwrap();
    let id = manifest["id"].as_str().unwrap().to_string();
    let dump = s
        .stack
        .dir
        .join("backups")
        .join(manifest["files"][0]["name"].as_str().unwrap());
    (id, dump)
}

/// The api tasks running healthy, and /health through nginx.
fn serving(s: &SwarmStack, replicas: usize, what: &str) {
    let api = s.running_api();
    assert_eq!(api.len(), replicas, "{what}: {api:#?}");
    assert!(
        api.iter().all(|t| t["health"] == "healthy"),
        "{what}: {api:#?}"
    );
    assert_eq!(s.get("/health").status, 200, "{what}");
}

/// Makes a SQLite backup in a bare directory of its own and copies it into `backups`;
/// returns its id.
fn sqlite_backup_into(backups: &Path) -> String {
    let bare = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(bare.path().join("data")).unwrap();
    std::fs::write(bare.path().join(".env.production"), "BACKUP_DIR=backups\n").unwrap();
    let made = Command::new("sqlite3")
        .arg(bare.path().join("data/elior_fitness.db"))
        .arg("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let out = Command::new(BIN)
        .args(["backup", "--json", "--dir", bare.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for entry in std::fs::read_dir(bare.path().join("backups")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), backups.join(entry.file_name())).unwrap();
    }
    manifest["id"].as_str().unwrap().to_string()
}

/// `dump` with a GRANT to a role that only the test's own server has: restored
/// elsewhere, it fails at its access privileges, which pg_restore puts back after the
/// tables and their rows.
fn dump_failing_at_its_grants(dump: &Path) -> Vec<u8> {
    let pg = pg_harness::Cluster::start();
    let url = pg.database();
    let name = url.rsplit('/').next().unwrap().to_string();
    let tool = |name: &str| elior::backup::postgres::tool(name).unwrap();
    let out = Command::new(tool("pg_restore"))
        .args(["--no-owner", "--exit-on-error", "--dbname", &url])
        .arg(dump)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    pg.psql(
        &name,
        "CREATE ROLE ghost_reader; GRANT SELECT ON ALL TABLES IN SCHEMA public TO ghost_reader",
    );
    let out = Command::new(tool("pg_dump"))
        .args(["--format=custom", "--dbname", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    out.stdout
}

/// Register, back up, delete and add users, restore: the deleted user is back and the
/// later one gone. Then the refusals (a SQLite backup, a garbled backup), a dump that
/// pg_restore fails on half-way (the database as it was, the API back), and a restore
/// SIGKILLed while the API is at 0 tasks (status says so; the next deploy brings the
/// tasks back). One walk: each swarm deploy and health gate is paid once.
#[test]
fn swarm_restore_puts_the_database_back_refuses_bad_backups_and_recovers_a_kill() {
    let (mut swarm, inactive) = SwarmGuard::ensure();
    if inactive {
        swarm.init();
    }
    swarm.label_db_node(|| {});
    let s = SwarmStack::new("swarm-restore", 2);
    s.ok(&["deploy", &s.stack.domain, "--swarm"]);

    // A SQLite backup does not go into the swarm's PostgreSQL: refused, naming the way.
    // (Copied in first, so every later backup claims another id.)
    let sqlite = sqlite_backup_into(&s.stack.dir.join("backups"));
    let out = s.run(&["restore", &sqlite, "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("holds a SQLite database, but this stack runs on a swarm")
            && err.contains("`elior migrate-to-swarm`"),
        "{err}"
    );

    let (status, body) = s.call_auth(
        "POST",
        "/api/auth/setup/admin",
        None,
        registration("restore_admin"),
    );
    assert_eq!(status, 201, "{body}");
    let admin = body["access_token"].as_str().unwrap().to_string();
    let kept = register(&s, "kept_user");
    let (backed_up, dump) = backup(&s);

    // After the backup: kept_user deleted, later_user added.
    let (status, body) = s.call(
        "DELETE",
        &format!("/api/users/{kept}"),
        Some(&admin),
        "delete-kept",
        None,
    );
    assert_eq!(status, 200, "{body}");
    register(&s, "later_user");
    assert_eq!(login_status(&s, "kept_user"), 401);

    // The restore: verified, safety dump, API to 0, pg_restore in the postgres task, API
    // back to its 2 tasks; each step on stderr.
    let out = s.run(&["restore", &backed_up, "--yes"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let steps = [
        "verifying backup",
        "taking a safety backup of the current state",
        "stopping the API",
        "to 0 and waiting until they are gone",
        "restoring PostgreSQL database in the swarm service",
        "back to 2 tasks and waiting until they run healthy",
    ];
    let mut at = 0;
    for step in steps {
        let found = stderr[at..]
            .find(step)
            .unwrap_or_else(|| panic!("step {step:?} missing or out of order:\n{stderr}"));
        at += found;
    }
    assert!(
        stdout.contains("(pg_restore, one transaction)")
            && stdout.contains("the state before the restore is backup"),
        "{stdout}"
    );
    serving(&s, 2, "after the restore");
    assert_eq!(
        login_status(&s, "kept_user"),
        200,
        "the deleted user is back"
    );
    assert_eq!(
        login_status(&s, "later_user"),
        401,
        "the later user is gone"
    );

    // A garbled backup is refused before anything is touched: same tasks, same data.
    let tasks_before: Vec<serde_json::Value> = s.running_api();
    let mut bytes = std::fs::read(&dump).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&dump, &bytes).unwrap();
    let out = s.run(&["restore", &backed_up, "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("failed verification; nothing was changed"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s.running_api(), tasks_before, "the API tasks were touched");
    serving(&s, 2, "after the garbled backup");
    bytes[middle] ^= 0xff;
    std::fs::write(&dump, &bytes).unwrap();

    // A dump that pg_restore fails on half-way, after every table was dropped and
    // filled again (its GRANT to a role the swarm's server lacks comes last), its manifest
    // resealed so it verifies: in its one transaction nothing changed, and the API is back.
    let (cut, cut_dump) = backup(&s);
    std::fs::write(&cut_dump, dump_failing_at_its_grants(&cut_dump)).unwrap();
    let backups = s.stack.dir.join("backups");
    let manifest_path = backups.join(elior::backup::names::Part::Manifest.file_name(&cut));
    let mut manifest = elior::backup::manifest::Manifest::read(&manifest_path).unwrap();
    let (size, sha256) = elior::backup::manifest::sha256_file(&cut_dump).unwrap();
    let record = manifest
        .files
        .iter_mut()
        .find(|f| f.part == elior::backup::manifest::PartName::Database)
        .unwrap();
    (record.size, record.sha256) = (size, sha256);
    manifest.seal();
    elior::backup::manifest::write(&backups, &manifest).unwrap();
    register(&s, "not_in_the_cut_backup");
    let out = s.run(&["restore", &cut, "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains(
            "failed (exit code 1); it ran as one transaction, so the database was not changed"
        ),
        "{}",
        text(&out.stderr)
    );
    serving(&s, 2, "after pg_restore failed");
    assert_eq!(
        login_status(&s, "not_in_the_cut_backup"),
        200,
        "the database changed"
    );

    // Killed (SIGKILL) right after the API reached 0 tasks: status says what happened,
    // and the next deploy scales the API back; the database was not touched.
    let mut killed = Command::new(BIN);
    killed
        .args(["restore", &backed_up, "--yes", "--dir"])
        .arg(&s.stack.dir)
        .env("ELIOR_FAULT", "swarm-restore:quiesced");
    let out = killed.output().unwrap();
    assert_eq!(out.status.code(), None, "not killed: {}", text(&out.stderr));
    assert!(s.running_api().is_empty(), "{:#?}", s.running_api());
    let status = s.run(&["status"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status.stdout));
    assert!(
        text(&status.stderr).contains(&format!("`elior restore {backed_up}` (pid ")),
        "{}",
        text(&status.stderr)
    );
    assert!(
        text(&status.stderr).contains("was interrupted after it scaled"),
        "{}",
        text(&status.stderr)
    );
    let out = s.run(&["deploy", &s.stack.domain]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("was interrupted after it scaled the API to 0 tasks;"),
        "{}",
        text(&out.stderr)
    );
    serving(&s, 2, "after the next deploy");
    assert_eq!(login_status(&s, "not_in_the_cut_backup"), 200);
    let status = s.run(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    assert!(!text(&status.stderr).contains("interrupted"));
}
