//! `elior backup` and `elior restore` of a stack whose DATABASE_URL is PostgreSQL (issue
//! 17, item 9): `pg_dump -Fc` into the backup, `pg_restore` in one transaction back, run
//! as the real binary against a throwaway cluster (tests/pg_harness, removed even when a
//! test fails) and the real `elior serve`.

use crate::harness::api as api_harness;
use crate::harness::moto as moto_support;
use crate::harness::pg as pg_harness;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness::stack::exited;
use api_harness::{Cast, Server, PASSWORD};
use moto_support::Moto;
use pg_harness::{Cluster, PG_PASSWORD};
use serde_json::{json, Value};

const ELIOR: &str = env!("CARGO_BIN_EXE_elior");

/// Makes `dir` a stack whose database is `url`, with its backups in `dir/backups`.
fn stack_env(dir: &Path, url: &str) {
    fs::write(
        dir.join(".env.production"),
        format!(
            "DATABASE_URL={url}\nUPLOAD_DIR=uploads\nBACKUP_DIR={}\n",
            dir.join("backups").display()
        ),
    )
    .unwrap();
}

fn elior(dir: &Path, args: &[&str]) -> Output {
    Command::new(ELIOR)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("NO_COLOR", "1")
        .env_remove("DATABASE_URL")
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The manifests in `dir/backups`.
fn manifests(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(dir.join("backups"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("backup_") && n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn login_status(s: &Server, username: &str) -> u16 {
    s.call(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"username": username, "password": PASSWORD})),
    )
    .status
}

fn without_last_login(mut users: Value) -> Value {
    for user in users.as_array_mut().expect("a list of users") {
        user.as_object_mut().unwrap().remove("last_login");
    }
    users
}

/// A stopped server's stack served again on the same database.
fn serve_again(mut s: Server, url: &str) -> Server {
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    drop(s);
    Server::start_full(dir, Some(url.to_string()), &[])
}

fn register(s: &Server, token: &str, name: &str) -> i64 {
    let r = s.post(
        "/api/auth/register/client",
        token,
        json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD, "full_name": name}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_i64().unwrap()
}

/// Data made through the API, backed up, changed and deleted, restored: the old data is
/// back exactly (the deleted user logs in again; the one made after the backup is gone).
#[test]
fn postgresql_stack_backup_then_changes_then_restore_brings_back_exactly_the_old_data() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let mut s = Server::start_full(tempfile::tempdir().unwrap(), Some(url.clone()), &[]);
    let dir = s.dir.path().to_path_buf();
    stack_env(&dir, &url);
    let cast = Cast::new(&s);
    let before_id = register(&s, &cast.trainer.token, "before_backup");
    let users_before = without_last_login(s.get("/api/users", &cast.admin.token).body);

    let backup = elior(&dir, &["backup", "--json"]);
    let backup_said = exited(&backup, 0);
    assert!(!backup_said.contains(PG_PASSWORD), "{backup_said}");
    let listed = manifests(&dir);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let manifest: Value =
        serde_json::from_slice(&fs::read(dir.join("backups").join(&listed[0])).unwrap()).unwrap();
    assert_eq!(manifest["database_kind"], "postgresql-custom-dump");
    let verify = elior(&dir, &["backup", "verify", "--all"]);
    exited(&verify, 0);
    // Exported, the dump is named for what it is.
    let export = dir.join("export.tar.gz");
    let out = elior(
        &dir,
        &[
            "backup",
            "export",
            "latest",
            "--output",
            export.to_str().unwrap(),
        ],
    );
    exited(&out, 0);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        fs::File::open(&export).unwrap(),
    ));
    let entries: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        entries.iter().any(|e| e.ends_with("/database.pgdump")),
        "{entries:?}"
    );
    fs::remove_file(&export).unwrap();

    // Changes after the backup: a new user, a deleted one.
    register(&s, &cast.trainer.token, "after_backup");
    assert_eq!(
        s.delete(&format!("/api/users/{before_id}"), &cast.admin.token)
            .status,
        200
    );
    assert_eq!(login_status(&s, "before_backup"), 401);
    assert!(s.terminate().success());

    let restore = elior(&dir, &["restore", "latest", "--yes"]);
    let restore_said = exited(&restore, 0);
    assert!(
        restore_said.contains("pg_restore, one transaction"),
        "{restore_said}"
    );
    assert!(!restore_said.contains(PG_PASSWORD), "{restore_said}");

    let s = serve_again(s, &url);
    assert_eq!(login_status(&s, "before_backup"), 200);
    assert_eq!(login_status(&s, "after_backup"), 401);
    // The token issued before the backup still works, and sees the same users (logging
    // in again only moves last_login).
    let users = s.get("/api/users", &cast.admin.token);
    assert_eq!(users.status, 200, "{:?}", users.body);
    assert_eq!(without_last_login(users.body), users_before);
    // The safety backup of the state before the restore is a second, complete backup.
    assert_eq!(manifests(&dir).len(), 2);
}

/// A wrong password: a clear error naming host:port, exit non-zero, no backup recorded.
#[test]
fn a_wrong_password_fails_naming_the_server_and_records_no_backup() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let dir = tempfile::tempdir().unwrap();
    let wrong = url.replace(PG_PASSWORD, "not-the-password");
    stack_env(dir.path(), &wrong);
    let out = elior(dir.path(), &["backup"]);
    let out_said = exited(&out, 2);
    let target = format!("127.0.0.1:{}", cluster.port);
    assert!(out_said.contains(&target), "{out_said}");
    assert!(
        out_said.contains("password authentication failed"),
        "{out_said}"
    );
    assert!(!out_said.contains("not-the-password"), "{out_said}");
    assert!(manifests(dir.path()).is_empty());
    let left: Vec<_> = fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "a failed backup left {left:?}");
}

/// pg_dump killed mid-way (it waits on a lock another session holds): no complete
/// backup is recorded and elior exits non-zero.
#[test]
fn pg_dump_killed_mid_way_records_no_backup() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let db = url.rsplit('/').next().unwrap().to_string();
    cluster.psql(
        &db,
        "CREATE TABLE held (n int); INSERT INTO held VALUES (1)",
    );
    let dir = tempfile::tempdir().unwrap();
    stack_env(dir.path(), &url);
    // A session that holds the table: pg_dump blocks on it until it is killed.
    let mut holder = cluster.psql_session(&db);
    holder.send("BEGIN; LOCK TABLE held IN ACCESS EXCLUSIVE MODE; SELECT 'locked';");
    holder.wait_for_line("locked");
    let backup = Command::new(ELIOR)
        .args(["backup", "--dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pg_dump = None;
    assert!(
        Cluster::wait_for(Duration::from_secs(30), || {
            pg_dump = child_named(backup.id(), "pg_dump");
            pg_dump.is_some()
        }),
        "pg_dump never started"
    );
    let pid = pg_dump.unwrap();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(PG_PASSWORD),
        "the password is on pg_dump's command line"
    );
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let out = backup.wait_with_output().unwrap();
    drop(holder);
    let out_said = exited(&out, 2);
    assert!(out_said.contains("pg_dump"), "{out_said}");
    assert!(manifests(dir.path()).is_empty());
    let list = elior(dir.path(), &["backup", "list"]);
    let list_said = exited(&list, 0);
    assert!(!list_said.contains("ok"), "{list_said}");
}

/// The pid of a child of `parent` whose program is `name`.
fn child_named(parent: u32, name: &str) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(e.path().join("stat")).ok()?;
        let (comm, rest) = stat.rsplit_once(')')?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && comm.ends_with(&format!("({name}"))).then_some(pid)
    })
}

/// A pg_restore that fails half-way (a view outside the backup depends on a table it
/// must drop) leaves the database exactly as it was: one transaction.
#[test]
fn a_restore_failing_half_way_leaves_the_database_as_it_was() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let db = url.rsplit('/').next().unwrap().to_string();
    let mut s = Server::start_full(tempfile::tempdir().unwrap(), Some(url.clone()), &[]);
    let dir = s.dir.path().to_path_buf();
    stack_env(&dir, &url);
    let cast = Cast::new(&s);
    let backup = elior(&dir, &["backup"]);
    exited(&backup, 0);
    register(&s, &cast.trainer.token, "after_backup");
    assert!(s.terminate().success());
    cluster.psql(&db, "CREATE VIEW pins_users AS SELECT id FROM users");
    let before = cluster.psql(
        &db,
        "SELECT string_agg(username, ',' ORDER BY id) FROM users",
    );

    let restore = elior(&dir, &["restore", "latest", "--yes"]);
    let restore_said = exited(&restore, 2);
    assert!(restore_said.contains("left as it was"), "{restore_said}");
    assert_eq!(
        cluster.psql(
            &db,
            "SELECT string_agg(username, ',' ORDER BY id) FROM users"
        ),
        before
    );
    assert!(before.contains("after_backup"), "{before}");
    let s = serve_again(s, &url);
    assert_eq!(login_status(&s, "after_backup"), 200);
}

/// A SQLite backup into a PostgreSQL stack is refused, naming `elior db copy`, and a dump
/// into a SQLite stack too; neither changes anything.
#[test]
fn a_backup_of_the_other_backend_is_refused_both_ways() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("data")).unwrap();
    fs::write(
        dir.path().join(".env.production"),
        format!(
            "DATABASE_URL=sqlite:///./data/elior.db\nBACKUP_DIR={}\n",
            dir.path().join("backups").display()
        ),
    )
    .unwrap();
    let migrate = Command::new(ELIOR)
        .args(["db", "migrate"])
        .env(
            "DATABASE_URL",
            format!("sqlite:///{}", dir.path().join("data/elior.db").display()),
        )
        .output()
        .unwrap();
    exited(&migrate, 0);
    let backup = elior(dir.path(), &["backup"]);
    exited(&backup, 0);
    stack_env(dir.path(), &url);
    let restore = elior(dir.path(), &["restore", "latest", "--yes"]);
    let restore_said = exited(&restore, 2);
    assert!(
        restore_said.contains("holds a SQLite database"),
        "{restore_said}"
    );
    assert!(restore_said.contains("elior db copy"), "{restore_said}");
    assert_eq!(manifests(dir.path()).len(), 1, "no safety backup was taken");

    // And the other way: a dump into a SQLite stack.
    stack_env(dir.path(), &url);
    fs::remove_dir_all(dir.path().join("backups")).unwrap();
    let backup = elior(dir.path(), &["backup"]);
    exited(&backup, 0);
    fs::write(
        dir.path().join(".env.production"),
        format!(
            "DATABASE_URL=sqlite:///./data/elior.db\nBACKUP_DIR={}\n",
            dir.path().join("backups").display()
        ),
    )
    .unwrap();
    let sqlite_before = fs::read(dir.path().join("data/elior.db")).unwrap();
    let restore = elior(dir.path(), &["restore", "latest", "--yes"]);
    let restore_said = exited(&restore, 2);
    assert!(
        restore_said.contains("holds a PostgreSQL dump, but this stack's DATABASE_URL is SQLite"),
        "{restore_said}"
    );
    assert_eq!(
        fs::read(dir.path().join("data/elior.db")).unwrap(),
        sqlite_before
    );
}

/// pg_dump still running at `--timeout` (blocked on a lock) is stopped: exit 2, no backup.
#[test]
fn pg_dump_past_the_time_limit_is_stopped_and_records_no_backup() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let db = url.rsplit('/').next().unwrap().to_string();
    cluster.psql(&db, "CREATE TABLE held (n int)");
    let dir = tempfile::tempdir().unwrap();
    stack_env(dir.path(), &url);
    let mut holder = cluster.psql_session(&db);
    holder.send("BEGIN; LOCK TABLE held IN ACCESS EXCLUSIVE MODE; SELECT 'locked';");
    holder.wait_for_line("locked");
    let out = elior(dir.path(), &["backup", "--timeout", "2"]);
    let out_said = exited(&out, 2);
    assert!(out_said.contains("time limit"), "{out_said}");
    assert!(manifests(dir.path()).is_empty());
    // The killed pg_dump's connection goes; the lock holder is the only one left.
    drop(holder);
    assert!(Cluster::wait_for(Duration::from_secs(10), || {
        cluster.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'"),
        ) == "0"
    }));
}

/// A dump that fills BACKUP_DIR's disk fails at once, naming BACKUP_DIR (exit 4), and
/// leaves nothing. It used to hang: elior stopped reading pg_dump's output at the full
/// disk but kept the pipe open, so pg_dump blocked on it and elior waited for pg_dump
/// for good, past the time limit.
#[test]
fn a_dump_that_fills_backup_dir_fails_naming_it_instead_of_hanging() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let db = url.rsplit('/').next().unwrap().to_string();
    // About 4 MiB that no compressor shrinks, against a 1 MiB disk.
    cluster.psql(
        &db,
        "CREATE TABLE photos AS SELECT decode(string_agg(md5(random()::text), ''), 'hex') AS b
         FROM generate_series(1, 65536) GROUP BY (generate_series % 16)",
    );
    let dir = tempfile::tempdir().unwrap();
    stack_env(dir.path(), &url);
    let backups = dir.path().join("backups");
    let _disk = crate::harness::tmpfs::TmpfsMount::new(&backups, "1m");
    let mut backup = Command::new(ELIOR)
        .args(["backup", "--dir"])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let finished = Cluster::wait_for(Duration::from_secs(60), || {
        backup.try_wait().unwrap().is_some()
    });
    if !finished {
        let _ = backup.kill();
    }
    let out = backup.wait_with_output().unwrap();
    assert!(finished, "elior backup hung on a full BACKUP_DIR");
    let said = exited(&out, 4);
    let named = format!("BACKUP_DIR {} ran out of space", backups.display());
    assert!(said.contains(&named), "{said}");
    assert!(manifests(dir.path()).is_empty());
    let left: Vec<_> = fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "a failed backup left {left:?}");
}

/// A dump whose manifest hashes match but which pg_restore cannot read (a backup written
/// wrong) fails `verify` and is refused by `restore`, which changes nothing.
#[test]
fn a_garbled_dump_with_matching_hashes_fails_verify_and_restore() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let db = url.rsplit('/').next().unwrap().to_string();
    cluster.psql(
        &db,
        "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)",
    );
    let dir = tempfile::tempdir().unwrap();
    stack_env(dir.path(), &url);
    let backup = elior(dir.path(), &["backup"]);
    exited(&backup, 0);
    let backups = dir.path().join("backups");
    let name = &manifests(dir.path())[0];
    let path = backups.join(name);
    let mut manifest = elior::backup::manifest::Manifest::read(&path).unwrap();
    let dump = backups.join(&manifest.files[0].name);
    let mut bytes = fs::read(&dump).unwrap();
    let len = bytes.len();
    bytes[len / 2..].fill(0x5a);
    fs::write(&dump, &bytes).unwrap();
    let (size, sha) = elior::backup::manifest::sha256_file(&dump).unwrap();
    manifest.files[0].size = size;
    manifest.files[0].sha256 = sha;
    manifest.seal();
    elior::backup::manifest::write(&backups, &manifest).unwrap();
    let verify = elior(dir.path(), &["backup", "verify", "--all"]);
    let verify_said = exited(&verify, 1);
    assert!(verify_said.contains("pg_restore --list"), "{verify_said}");
    cluster.psql(&db, "INSERT INTO kept VALUES (8)");
    let restore = elior(dir.path(), &["restore", "latest", "--yes"]);
    let restore_said = exited(&restore, 2);
    assert!(
        restore_said.contains("failed verification"),
        "{restore_said}"
    );
    assert_eq!(
        cluster.psql(&db, "SELECT string_agg(n::text, ',' ORDER BY n) FROM kept"),
        "7,8"
    );
}

/// Every file under `dir`, read whole, for a search of plaintext.
fn all_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut walk = vec![dir.to_path_buf()];
    while let Some(folder) = walk.pop() {
        for entry in fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk.push(path);
            } else {
                found.push((path.display().to_string(), fs::read(&path).unwrap()));
            }
        }
    }
    found
}

/// A PostgreSQL stack backed up into the encrypted repository (item 9 with items 4 to 6):
/// the `pg_dump -Fc` stream is cut into chunks that hold no plaintext; a second backup
/// after one changed row adds a fraction of the dump; a restore without the identity is
/// refused before anything changes, and with it the old data is back exactly; the bucket
/// holds the snapshot, which restores from there too.
#[test]
fn a_postgresql_stack_backs_up_into_the_encrypted_repository_and_offsite() {
    use age::secrecy::ExposeSecret;
    let cluster = Cluster::start();
    let url = cluster.database();
    let db_name = url.rsplit('/').next().unwrap().to_string();
    let moto = Moto::start();
    moto.create_bucket("elior-pg-test");
    let key = age::x25519::Identity::generate();
    let keys = tempfile::tempdir().unwrap();
    let identity = keys.path().join("identity.txt");
    fs::write(&identity, format!("{}\n", key.to_string().expose_secret())).unwrap();

    let mut s = Server::start_full(tempfile::tempdir().unwrap(), Some(url.clone()), &[]);
    let dir = s.dir.path().to_path_buf();
    let env = format!(
        "DATABASE_URL={url}\nUPLOAD_DIR=uploads\nBACKUP_DIR={}\nBACKUP_FORMAT=repository\nBACKUP_RECIPIENTS={}\nBACKUP_OFFSITE=s3://elior-pg-test/gym\nS3_ENDPOINT={}\nS3_REGION=us-east-1\nAWS_ACCESS_KEY_ID=AKIDELIORTEST\nAWS_SECRET_ACCESS_KEY=elior-test-secret-key\n",
        dir.join("backups").display(),
        key.to_public(),
        moto.endpoint()
    );
    fs::write(dir.join(".env.production"), &env).unwrap();
    let cast = Cast::new(&s);
    let before_id = register(&s, &cast.trainer.token, "before_backup");
    // A dump of a few MiB, so it spans many chunks; one row carries a marker.
    cluster.psql(
        &db_name,
        "CREATE TABLE bulk_notes (id serial PRIMARY KEY, body text NOT NULL);
         INSERT INTO bulk_notes (body)
           SELECT 'note ' || g || ' ' || md5(g::text) || repeat(' squats and deadlifts', 10)
           FROM generate_series(1, 20000) g;
         UPDATE bulk_notes SET body = 'pg-plaintext-marker-7f3a' WHERE id = 777;",
    );
    let users_before = without_last_login(s.get("/api/users", &cast.admin.token).body);

    let first = elior(&dir, &["backup", "--json"]);
    let first_said = exited(&first, 0);
    assert!(!first_said.contains(PG_PASSWORD), "{first_said}");
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(first["offsite"]["sent"], json!([id]), "{first:#}");
    for (path, bytes) in all_bytes(&dir.join("backups")) {
        for marker in [&b"pg-plaintext-marker-7f3a"[..], b"before_backup"] {
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker),
                "{path} holds {:?} in plaintext",
                String::from_utf8_lossy(marker)
            );
        }
    }
    let verify = Command::new(ELIOR)
        .args(["backup", "verify", "--all", "--identity"])
        .arg(&identity)
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    exited(&verify, 0);

    // One changed row: the next backup stores the chunks around it, not the dump again.
    cluster.psql(
        &db_name,
        "UPDATE bulk_notes SET body = 'changed' WHERE id = 12345",
    );
    let second = elior(&dir, &["backup", "--json"]);
    exited(&second, 0);
    let second: Value = serde_json::from_slice(&second.stdout).unwrap();
    let (first_added, second_added) = (
        first["added_bytes"].as_u64().unwrap(),
        second["added_bytes"].as_u64().unwrap(),
    );
    assert!(
        second_added * 4 < first_added,
        "a second backup after one changed row added {second_added} bytes, the first {first_added}"
    );

    // Changes after the backups, then a restore of the first.
    register(&s, &cast.trainer.token, "after_backup");
    assert_eq!(
        s.delete(&format!("/api/users/{before_id}"), &cast.admin.token)
            .status,
        200
    );
    assert!(s.terminate().success());
    let refused = elior(&dir, &["restore", &id, "--yes"]);
    let refused_said = exited(&refused, 2);
    assert!(refused_said.contains("--identity"), "{refused_said}");
    assert_eq!(
        cluster.psql(
            &db_name,
            "SELECT count(*) FROM users WHERE username = 'after_backup'"
        ),
        "1",
        "a refused restore changed the database"
    );
    let restore = Command::new(ELIOR)
        .args(["restore", &id, "--yes", "--identity"])
        .arg(&identity)
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    let restore_said = exited(&restore, 0);
    assert!(
        restore_said.contains("pg_restore, one transaction"),
        "{restore_said}"
    );
    let leftovers: Vec<String> = fs::read_dir(dir.join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pgdump"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new(), "the rebuilt dump is left");
    let s = serve_again(s, &url);
    assert_eq!(login_status(&s, "before_backup"), 200);
    assert_eq!(login_status(&s, "after_backup"), 401);
    let users = s.get("/api/users", &cast.admin.token);
    assert_eq!(without_last_login(users.body), users_before);
    assert_eq!(
        cluster.psql(&db_name, "SELECT body FROM bulk_notes WHERE id = 777"),
        "pg-plaintext-marker-7f3a"
    );

    // The bucket holds the snapshots; one restores from there into a new directory.
    let fresh = tempfile::tempdir().unwrap();
    fs::write(fresh.path().join(".env.production"), &env).unwrap();
    let from_bucket = Command::new(ELIOR)
        .args([
            "restore",
            &id,
            "--yes",
            "--from",
            "s3://elior-pg-test/gym",
            "--identity",
        ])
        .arg(&identity)
        .arg("--dir")
        .arg(fresh.path())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    let from_bucket_said = exited(&from_bucket, 0);
    assert!(
        from_bucket_said.contains(&format!("restored backup {id}")),
        "{from_bucket_said}"
    );
}
