//! `elior backup`, `elior restore` and `elior schedule`, run as the real binary against
//! real SQLite files and real archives in a temporary stack directory.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use elior::backup::manifest::Manifest;
use rusqlite::Connection;

use crate::harness::backup as backup_support;
use crate::harness::tmpfs::TmpfsMount;
use backup_support::{count_rows, killed_by_sigkill, sha256, stderr, stdout, tree};

const ELIOR: &str = env!("CARGO_BIN_EXE_elior");

/// A stack directory with its own backup folder, removed when the test ends.
struct Stack {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    backups: PathBuf,
}

impl Stack {
    fn new() -> Stack {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("stack");
        let backups = tmp.path().join("backups");
        fs::create_dir_all(dir.join("data")).unwrap();
        fs::create_dir_all(dir.join("uploads")).unwrap();
        fs::write(
            dir.join(".env.production"),
            format!(
                // As `elior init` writes them: paths inside the API container.
                "DATABASE_URL=sqlite:////app/data/elior_fitness.db\nUPLOAD_DIR=/app/uploads\nBACKUP_DIR={}\nBACKUP_RETENTION_DAYS=30\n",
                backups.display()
            ),
        )
        .unwrap();
        Stack {
            _tmp: tmp,
            dir,
            backups,
        }
    }

    fn db_path(&self) -> PathBuf {
        self.dir.join("data/elior_fitness.db")
    }

    fn uploads(&self) -> PathBuf {
        self.dir.join("uploads")
    }

    fn elior(&self, args: &[&str]) -> Output {
        Command::new(ELIOR)
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `elior backup --json` and returns the manifest.
    fn backup(&self) -> serde_json::Value {
        let out = self.elior(&["backup", "--json"]);
        assert!(out.status.success(), "backup failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A WAL-mode database with `rows` rows in table `items`.
    fn seed_database(&self, rows: usize) {
        let mut conn = Connection::open(self.db_path()).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
             CREATE INDEX items_body ON items(body);",
        )
        .unwrap();
        let tx = conn.transaction().unwrap();
        for i in 0..rows {
            tx.execute(
                "INSERT INTO items (body) VALUES (?1)",
                [format!("row {i} {}", "x".repeat(150))],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    /// `mib` more MiB of incompressible rows in table `blobs` (made if missing), folded
    /// into the database file: a database of a known size, whatever compresses it.
    fn add_blobs(&self, mib: usize) {
        let conn = Connection::open(self.db_path()).unwrap();
        conn.execute("CREATE TABLE IF NOT EXISTS blobs (b BLOB)", [])
            .unwrap();
        for _ in 0..mib {
            conn.execute("INSERT INTO blobs VALUES (?1)", [incompressible(1 << 20)])
                .unwrap();
        }
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }

    fn seed_uploads(&self) {
        let up = self.uploads();
        fs::create_dir_all(up.join("progress/2026")).unwrap();
        let mut photo = vec![0xFF, 0xD8, 0xFF, 0xE0];
        photo.extend((0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        fs::write(up.join("progress/2026/front.jpg"), &photo).unwrap();
        fs::write(up.join("notes.txt"), "squat 5x5\n".repeat(5000)).unwrap();
        fs::write(up.join("private.txt"), "only for the owner").unwrap();
        fs::set_permissions(up.join("private.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        symlink("progress/2026/front.jpg", up.join("latest.jpg")).unwrap();
        // Old mtimes, so a restore that stamps "now" is noticed.
        let old = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        for path in ["progress/2026/front.jpg", "progress/2026", "notes.txt"] {
            fs::File::open(up.join(path))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    }
}

fn backup_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn backup_taken_while_another_connection_inserts_is_consistent() {
    let stack = Stack::new();
    stack.seed_database(20_000);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), stack.db_path());
        std::thread::spawn(move || {
            let conn = Connection::open(path).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
            let mut inserted = 0u64;
            while !stop.load(Ordering::Relaxed) {
                conn.execute("INSERT INTO items (body) VALUES ('during backup')", [])
                    .unwrap();
                inserted += 1;
            }
            inserted
        })
    };
    // Let the writer get going so the backup starts mid-stream (bounded: a writer that
    // died must fail the test, not hang it).
    wait_for("the writer's first 100 rows", || {
        writer.is_finished() || count_rows(&stack.db_path()) >= 20_100
    });
    assert!(
        !writer.is_finished(),
        "the writer stopped before the backup"
    );
    let before = count_rows(&stack.db_path());
    let manifest = stack.backup();
    let after = count_rows(&stack.db_path());
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);

    let copy = stack
        .backups
        .join(manifest["files"][0]["name"].as_str().unwrap());
    let conn = Connection::open(&copy).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        mode, "delete",
        "a backup file must stand alone, without a -wal"
    );
    let copied = count_rows(&copy);
    assert!(
        before <= copied && copied <= after,
        "copy has {copied} rows; live had {before} before and {after} after"
    );
    let file_mode = fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(file_mode, 0o600);
    let dir_mode = fs::metadata(&stack.backups).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
}

#[test]
fn backup_then_delete_then_restore_brings_back_rows_and_files() {
    let stack = Stack::new();
    stack.seed_database(500);
    stack.seed_uploads();
    let rows = count_rows(&stack.db_path());
    let files = tree(&stack.uploads());
    let manifest = stack.backup();
    assert_eq!(manifest["upload_files"], 3);

    // GNU tar reads the archive and sees the same tree.
    let archive = stack
        .backups
        .join(manifest["files"][1]["name"].as_str().unwrap());
    let listing = Command::new("tar")
        .arg("tzf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(listing.status.success(), "{}", stderr(&listing));
    assert!(stdout(&listing).contains("uploads/progress/2026/front.jpg"));
    // The backup folder holds the four files and nothing else (no temporary or claim file).
    let id = manifest["id"].as_str().unwrap();
    assert_eq!(
        backup_files(&stack.backups),
        [
            format!("backup_{id}.json"),
            format!("db_backup_{id}.db"),
            format!("stack_backup_{id}.tar"),
            format!("uploads_backup_{id}.tar.gz"),
        ]
    );

    fs::remove_dir_all(stack.dir.join("data")).unwrap();
    fs::remove_dir_all(stack.uploads()).unwrap();

    let out = stack.elior(&["restore", "latest", "--yes"]);
    assert!(out.status.success(), "restore failed: {}", stderr(&out));
    assert!(stdout(&out).contains(&format!(
        "restored backup {}",
        manifest["id"].as_str().unwrap()
    )));
    assert_eq!(count_rows(&stack.db_path()), rows);
    assert_eq!(tree(&stack.uploads()), files);
    // Nothing staged or set aside is left behind.
    let leftovers: Vec<_> = backup_files(&stack.dir)
        .into_iter()
        .filter(|n| n.contains("restore"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let audit = fs::read_to_string(stack.dir.join(".elior/audit.log")).unwrap();
    assert!(audit.contains("\"action\":\"restore\"") && audit.contains("\"result\":\"ok\""));
}

#[test]
fn restore_replaces_live_data_and_keeps_a_safety_backup() {
    let stack = Stack::new();
    stack.seed_database(100);
    stack.seed_uploads();
    let files = tree(&stack.uploads());
    stack.backup();
    // Change the live state, leaving the change only in a -wal beside the database, as a
    // crashed server would: the safety backup must include it, and the restored file
    // must not have it replayed into it.
    let wal = PathBuf::from(format!("{}-wal", stack.db_path().display()));
    let conn = Connection::open(stack.db_path()).unwrap();
    conn.execute("DELETE FROM items WHERE id > 10", []).unwrap();
    let stale_wal = fs::read(&wal).unwrap();
    drop(conn);
    fs::write(&wal, stale_wal).unwrap();
    fs::write(stack.uploads().join("new.txt"), "added after the backup").unwrap();

    let out = stack.elior(&["restore", "--yes", "--json"]);
    assert!(out.status.success(), "restore failed: {}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !wal.exists(),
        "the stale -wal is still beside the restored database"
    );
    assert_eq!(count_rows(&stack.db_path()), 100);
    assert_eq!(tree(&stack.uploads()), files);

    // The safety backup holds the state from before the restore.
    let safety = report["safety_backup"].as_str().unwrap();
    let safety_db = stack.backups.join(format!("db_backup_{safety}.db"));
    assert_eq!(count_rows(&safety_db), 10);
}

/// Makes a copy of backup `from` under the id `to` (same files, renamed manifest), so a
/// test can have complete backups with any date in their names.
fn clone_backup(backups: &Path, from: &str, to: &str) {
    for name in [
        format!("db_backup_{from}.db"),
        format!("uploads_backup_{from}.tar.gz"),
        format!("stack_backup_{from}.tar"),
    ] {
        if backups.join(&name).exists() {
            fs::copy(backups.join(&name), backups.join(name.replace(from, to))).unwrap();
        }
    }
    edit_manifest(backups, from, to, |_| {});
}

/// Rewrites backup `from`'s manifest as backup `to`'s after `change`, with a valid
/// checksum: what a backup that was wrong when written looks like.
fn edit_manifest(backups: &Path, from: &str, to: &str, change: impl FnOnce(&mut Manifest)) {
    let mut manifest = Manifest::read(&backups.join(format!("backup_{from}.json"))).unwrap();
    manifest.id = to.to_string();
    for file in &mut manifest.files {
        file.name = file.name.replace(from, to);
    }
    change(&mut manifest);
    manifest.seal();
    elior::backup::manifest::write(backups, &manifest).unwrap();
}

/// Writes the claim of backup `id` as a backup running in process `pid` would.
fn hold(backups: &Path, id: &str, pid: u32) {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let holder = serde_json::json!({
        "pid": pid, "host": host.trim(), "command": "elior backup", "since": "now",
    });
    fs::write(
        backups.join(format!(".backup_{id}.json.tmp")),
        holder.to_string(),
    )
    .unwrap();
}

fn id_days_ago(days: i64) -> String {
    (chrono::Local::now() - chrono::Duration::days(days))
        .format("%Y%m%d_%H%M%S")
        .to_string()
}

fn remove_backup(backups: &Path, id: &str) {
    for name in backup_files(backups) {
        if name.contains(id) {
            fs::remove_file(backups.join(name)).unwrap();
        }
    }
}

#[test]
fn prune_deletes_only_complete_backups_past_retention_and_never_foreign_files() {
    let stack = Stack::new();
    stack.seed_database(10);
    stack.seed_uploads();
    let taken = stack.backup()["id"].as_str().unwrap().to_string();
    let ids: Vec<String> = [40, 31, 29, 1].map(id_days_ago).to_vec();
    for id in &ids {
        clone_backup(&stack.backups, &taken, id);
    }
    remove_backup(&stack.backups, &taken);
    fs::write(stack.backups.join("notes.txt"), "keep me").unwrap();
    fs::write(stack.backups.join("db_backup_2020.db"), "not ours").unwrap();
    // A backup with no manifest that no running backup holds was killed: removed.
    let incomplete = id_days_ago(60);
    fs::write(
        stack.backups.join(format!("db_backup_{incomplete}.db")),
        "half",
    )
    .unwrap();

    // Temporary files of a backup killed two days ago go; those of a running one stay.
    let stale = stack
        .backups
        .join(format!(".db_backup_{}.db.tmp", id_days_ago(2)));
    fs::write(&stale, "killed mid-copy").unwrap();
    fs::File::open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 86_400))
        .unwrap();
    let running_id = id_days_ago(0);
    let running = stack
        .backups
        .join(format!(".db_backup_{running_id}.db.tmp"));
    fs::write(&running, "being written").unwrap();
    hold(&stack.backups, &running_id, std::process::id());

    let dry = stack.elior(&["backup", "prune", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let plan = stdout(&dry);
    assert_eq!(plan.matches("would delete").count(), 2, "{plan}");
    assert!(
        plan.contains(&format!("would delete  {}", ids[0])),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("would delete  {}", ids[1])),
        "{plan}"
    );
    let before = backup_files(&stack.backups);

    let out = stack.elior(&["backup", "prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = backup_files(&stack.backups);
    let gone: Vec<&String> = before.iter().filter(|n| !after.contains(n)).collect();
    let mut expected = vec![
        stale.file_name().unwrap().to_string_lossy().into_owned(),
        format!("db_backup_{incomplete}.db"),
    ];
    for id in &ids[..2] {
        expected.push(format!("backup_{id}.json"));
        expected.push(format!("db_backup_{id}.db"));
        expected.push(format!("uploads_backup_{id}.tar.gz"));
        expected.push(format!("stack_backup_{id}.tar"));
    }
    expected.sort();
    let mut gone: Vec<String> = gone.into_iter().cloned().collect();
    gone.sort();
    assert_eq!(gone, expected);
    assert!(after.contains(&"notes.txt".to_string()));
    assert!(after.contains(&"db_backup_2020.db".to_string()));
    assert!(after.contains(&running.file_name().unwrap().to_string_lossy().into_owned()));
    assert!(
        stderr(&out).contains(&format!("removed incomplete backup {incomplete}")),
        "{}",
        stderr(&out)
    );
}

/// Two prunes at once (the scheduler's and one run by hand) weigh the same backups; the
/// one that deleted second found the files gone and failed, so a scheduled job reported
/// an error for a prune that had happened. Both succeed, and retention keeps the same.
#[test]
fn two_prunes_at_once_both_succeed_and_keep_what_retention_keeps() {
    let stack = Stack::new();
    stack.seed_database(10);
    let taken = stack.backup()["id"].as_str().unwrap().to_string();
    let ids: Vec<String> = [40, 31, 29, 1].map(id_days_ago).to_vec();
    for id in &ids {
        clone_backup(&stack.backups, &taken, id);
    }
    remove_backup(&stack.backups, &taken);
    let marker = stack.dir.join("decided");
    let log = stack.dir.join("first-prune.log");
    let mut first = KillOnDrop(
        Command::new(ELIOR)
            .args(["backup", "prune", "--dir"])
            .arg(&stack.dir)
            .env("ELIOR_FAULT", "prune:decided:pause")
            .env("ELIOR_FAULT_MARKER", &marker)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("the first prune to weigh the backups", || marker.exists());
    let second = stack.elior(&["backup", "prune"]);
    assert!(second.status.success(), "{}", stderr(&second));
    fs::remove_file(&marker).unwrap();
    let status = first.0.wait().unwrap();
    assert!(status.success(), "{}", fs::read_to_string(&log).unwrap());
    let manifests: Vec<String> = backup_files(&stack.backups)
        .into_iter()
        .filter(|n| n.starts_with("backup_"))
        .collect();
    assert_eq!(
        manifests,
        [&ids[2], &ids[3]].map(|id| format!("backup_{id}.json")),
        "only the backups of 29 and 1 days ago stay"
    );
    let verify = stack.elior(&["backup", "verify", "--all"]);
    assert!(verify.status.success(), "{}", stdout(&verify));
}

/// Two stacks pointed at one BACKUP_DIR (a shared /var/backups/elior): backup ids are
/// timestamps, so each took the other's backups for its own, and `restore latest` brought
/// the other stack's data in. The folder belongs to the stack that backed up into it
/// first; the other is refused by every backup command, naming both stacks and the fix,
/// and neither the folder nor its own database is touched. A directory without an id (a
/// disaster recovery from a copy of the folder) restores from it and takes its id.
#[test]
fn a_backup_dir_of_another_stack_is_refused_and_nothing_is_touched() {
    use elior::config::identity;
    let owner = Stack::new();
    owner.seed_database(10);
    let (owner_id, _) = identity::ensure(&owner.dir).unwrap();
    owner.backup();
    let before = backup_files(&owner.backups);
    assert!(before.contains(&"stack.json".to_string()), "{before:?}");

    let other = Stack::new();
    other.seed_database(20);
    let (other_id, _) = identity::ensure(&other.dir).unwrap();
    let env = other.dir.join(".env.production");
    let text = fs::read_to_string(&env).unwrap().replace(
        &other.backups.display().to_string(),
        &owner.backups.display().to_string(),
    );
    fs::write(&env, text).unwrap();
    for args in [
        &["backup"][..],
        &["backup", "list"],
        &["backup", "verify", "--all"],
        &["backup", "prune"],
        &["restore", "latest", "--yes"],
    ] {
        let out = other.elior(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "holds the backups of another stack ({owner_id}, in {})",
                owner.dir.display()
            )) && err.contains(&format!("not of this one ({other_id}"))
                && err.contains("give each stack a BACKUP_DIR of its own"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(backup_files(&owner.backups), before);
    assert_eq!(
        count_rows(&other.db_path()),
        20,
        "the other stack's data stays"
    );
    let doctor = other.elior(&["doctor", "--check", "backups"]);
    assert!(
        stdout(&doctor).contains("holds the backups of another stack"),
        "{}",
        stdout(&doctor)
    );

    // The owner's stack lost on its host: a new directory with its env file and a copy
    // of the folder restores the data and becomes that stack.
    let recovered = Stack::new();
    fs::copy(
        owner.dir.join(".env.production"),
        recovered.dir.join(".env.production"),
    )
    .unwrap();
    let out = recovered.elior(&["restore", "latest", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(count_rows(&recovered.db_path()), 10);
    assert_eq!(identity::read(&recovered.dir).unwrap(), Some(owner_id));
}

/// A BACKUP_DIR inside the uploads folder: each backup archived every backup before it,
/// and a restore, which replaces the uploads folder, put back the backups of the time
/// restored: every later one was lost, the restore's own safety backup too (its "undo
/// with" named a backup that no longer existed). Every command refuses it, naming both
/// folders and the default, and writes nothing.
#[test]
fn a_backup_dir_inside_the_uploads_folder_is_refused_before_anything_is_written() {
    let stack = Stack::new();
    stack.seed_database(10);
    stack.seed_uploads();
    let env = stack.dir.join(".env.production");
    let text = fs::read_to_string(&env)
        .unwrap()
        .replace(&stack.backups.display().to_string(), "uploads/backups");
    fs::write(&env, text).unwrap();
    let before = tree(&stack.uploads());
    for args in [&["backup"][..], &["backup", "list"], &["restore", "--yes"]] {
        let out = stack.elior(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "BACKUP_DIR: {}/uploads/backups is inside the uploads folder {}/uploads",
                stack.dir.display(),
                stack.dir.display()
            )) && err.contains(&format!(
                "such as {}/backups (the default)",
                stack.dir.display()
            )),
            "{args:?}: {err}"
        );
    }
    assert_eq!(tree(&stack.uploads()), before, "nothing was written");
    let doctor = stack.elior(&["doctor", "--check", "backups"]);
    assert!(
        stdout(&doctor).contains("is inside the uploads folder"),
        "{}",
        stdout(&doctor)
    );
}

#[test]
fn prune_keeps_the_only_backup_even_when_it_is_90_days_old() {
    let stack = Stack::new();
    stack.seed_database(10);
    let taken = stack.backup()["id"].as_str().unwrap().to_string();
    let old = id_days_ago(90);
    clone_backup(&stack.backups, &taken, &old);
    remove_backup(&stack.backups, &taken);

    let out = stack.elior(&["backup", "prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("newest verified backup"),
        "{}",
        stdout(&out)
    );
    assert!(stack.backups.join(format!("backup_{old}.json")).exists());
    assert!(stack.backups.join(format!("db_backup_{old}.db")).exists());
}

#[test]
fn restore_refuses_while_another_process_has_the_database_open() {
    let stack = Stack::new();
    stack.seed_database(20);
    stack.backup();
    // This test process plays the running server.
    let server = Connection::open(stack.db_path()).unwrap();
    server.execute("DELETE FROM items", []).unwrap();
    let out = stack.elior(&["restore", "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("is open by process {}", std::process::id())),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(count_rows(&stack.db_path()), 0);
    drop(server);
}

#[test]
fn flipped_byte_is_caught_by_verify_and_refused_by_restore() {
    let stack = Stack::new();
    stack.seed_database(200);
    stack.seed_uploads();
    let manifest = stack.backup();
    let id = manifest["id"].as_str().unwrap();
    // Live state differs from the backup, and must survive the refused restore.
    Connection::open(stack.db_path())
        .unwrap()
        .execute("DELETE FROM items WHERE id > 50", [])
        .unwrap();
    let live_db = fs::read(stack.db_path()).unwrap();
    let live_files = tree(&stack.uploads());

    let copy = stack.backups.join(format!("db_backup_{id}.db"));
    let mut bytes = fs::read(&copy).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&copy, &bytes).unwrap();

    let verify = stack.elior(&["backup", "verify", id]);
    assert_eq!(verify.status.code(), Some(1), "{}", stdout(&verify));
    assert!(stdout(&verify).contains(&format!("FAILED  {id}")));
    assert!(stdout(&verify).contains("sha256"), "{}", stdout(&verify));

    let restore = stack.elior(&["restore", id, "--yes"]);
    assert_eq!(restore.status.code(), Some(2));
    let err = stderr(&restore);
    assert!(
        err.contains("failed verification; nothing was changed"),
        "{err}"
    );
    assert_eq!(fs::read(stack.db_path()).unwrap(), live_db);
    assert_eq!(tree(&stack.uploads()), live_files);
    assert_eq!(count_rows(&stack.db_path()), 50);
}

/// A tar.gz with one harmless entry and one entry at `evil_path`, written byte by byte
/// because well-behaved tar writers refuse such paths.
fn evil_archive(evil_path: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut ok = tar::Header::new_gnu();
    ok.set_size(2);
    ok.set_mode(0o644);
    ok.set_entry_type(tar::EntryType::Regular);
    ok.set_uid(0);
    ok.set_gid(0);
    ok.set_mtime(1_700_000_000);
    builder
        .append_data(&mut ok, "uploads/ok.txt", &b"ok"[..])
        .unwrap();
    let mut evil = tar::Header::new_gnu();
    evil.set_size(4);
    evil.set_mode(0o644);
    evil.set_entry_type(tar::EntryType::Regular);
    evil.set_uid(0);
    evil.set_gid(0);
    evil.set_mtime(1_700_000_000);
    let name = &mut evil.as_gnu_mut().unwrap().name;
    name[..evil_path.len()].copy_from_slice(evil_path.as_bytes());
    evil.set_cksum();
    builder.append(&evil, &b"evil"[..]).unwrap();
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[test]
fn archive_with_dotdot_or_absolute_paths_is_refused_and_nothing_lands_outside() {
    let stack = Stack::new();
    stack.seed_database(10);
    stack.seed_uploads();
    let live_files = tree(&stack.uploads());
    let absolute_target = stack.dir.parent().unwrap().join("absolute-evil");
    let cases = [
        ("uploads/../evil".to_string(), stack.dir.join("evil")),
        (
            absolute_target.display().to_string(),
            absolute_target.clone(),
        ),
    ];
    for (i, (evil_path, must_not_exist)) in cases.iter().enumerate() {
        // A backup whose manifest truly matches the malicious archive: only extraction
        // can catch it.
        let id = id_days_ago(i as i64 + 1);
        let archive = evil_archive(evil_path);
        let name = format!("uploads_backup_{id}.tar.gz");
        fs::create_dir_all(&stack.backups).unwrap();
        fs::write(stack.backups.join(&name), &archive).unwrap();
        let manifest = serde_json::json!({
            "format": 1, "id": id, "created_at": "2026-01-01T00:00:00+00:00",
            "elior_version": "0.1.0", "schema_version": null, "reason": "manual",
            "database_check": null, "upload_files": 2, "duration_ms": 1,
            "files": [{"part": "uploads", "name": name, "size": archive.len(), "sha256": sha256(&archive)}],
        });
        fs::write(
            stack.backups.join(format!("backup_{id}.json")),
            manifest.to_string(),
        )
        .unwrap();

        let out = stack.elior(&["restore", &id, "--yes"]);
        assert_eq!(out.status.code(), Some(2), "{evil_path}: {}", stdout(&out));
        assert!(
            stderr(&out).contains("refusing to restore"),
            "{}",
            stderr(&out)
        );
        assert!(
            !must_not_exist.exists(),
            "{} was written",
            must_not_exist.display()
        );
        assert_eq!(tree(&stack.uploads()), live_files);
        let leftovers: Vec<_> = backup_files(&stack.dir)
            .into_iter()
            .filter(|n| n.contains("restore"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

#[test]
fn backup_past_its_time_limit_fails_and_leaves_no_partial_file() {
    let stack = Stack::new();
    stack.seed_database(20_000);
    stack.seed_uploads();
    let out = stack.elior(&["backup", "--timeout", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("backup timed out while"), "{err}");
    assert!(err.contains("--timeout"), "{err}");
    assert_eq!(backup_files(&stack.backups), Vec::<String>::new());
}

#[test]
fn unwritable_backup_dir_gives_a_clear_error() {
    let stack = Stack::new();
    stack.seed_database(10);
    // A path below a regular file can never be created, even by root.
    let blocker = stack.dir.join("not-a-folder");
    fs::write(&blocker, "").unwrap();
    let target = blocker.join("backups");
    fs::write(
        stack.dir.join(".env.production"),
        format!("BACKUP_DIR={}\n", target.display()),
    )
    .unwrap();
    let out = stack.elior(&["backup"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "elior: failed to create backup folder {}",
            target.display()
        )),
        "{err}"
    );
    assert!(err.contains("set BACKUP_DIR"), "{err}");
    assert!(!target.exists());
}

/// `n` bytes that no compressor shrinks.
fn incompressible(n: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(n);
    fs::File::open("/dev/urandom")
        .unwrap()
        .take(n as u64)
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

/// A backup that fills BACKUP_DIR's disk fails as a whole: exit 4, an error that names
/// BACKUP_DIR and the fix, none of its files left to keep the disk full, and the
/// earlier backup still verified. Once there is room the next backup just works.
#[test]
fn a_full_backup_disk_fails_naming_backup_dir_and_keeps_the_earlier_backup() {
    let stack = Stack::new();
    let disk = TmpfsMount::new(&stack.backups, "4m");
    stack.seed_database(500);
    stack.seed_uploads();
    let first = stack.backup();
    let kept = backup_files(&stack.backups);

    let assert_refused = |out: &Output, part: &str| {
        assert_eq!(out.status.code(), Some(4), "{}", stderr(out));
        let err = stderr(out);
        let named = format!(
            "elior: BACKUP_DIR {} ran out of space",
            stack.backups.display()
        );
        assert!(err.contains(&named), "{part}: {err}");
        assert!(err.contains("`elior backup prune`"), "{part}: {err}");
        assert!(err.contains("set BACKUP_DIR"), "{part}: {err}");
        assert_eq!(backup_files(&stack.backups), kept, "{part}: {err}");
        let verified = stack.elior(&["backup", "verify", "--all"]);
        assert!(verified.status.success(), "{part}: {}", stdout(&verified));
    };
    // An upload as big as the whole disk: the uploads archive hits ENOSPC.
    fs::write(stack.uploads().join("video.mp4"), incompressible(4 << 20)).unwrap();
    assert_refused(&stack.elior(&["backup"]), "uploads");
    // The same, as a script reads it: the error and the fix apart.
    let out = stack.elior(&["backup", "--json"]);
    assert_eq!(out.status.code(), Some(4));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["error"].as_str().unwrap().contains("ran out of space"),
        "{doc}"
    );
    assert!(
        doc["hint"].as_str().unwrap().contains("set BACKUP_DIR"),
        "{doc}"
    );

    // A database bigger than the disk: SQLite's copy fails with SQLITE_FULL.
    fs::remove_file(stack.uploads().join("video.mp4")).unwrap();
    stack.add_blobs(5);
    assert_refused(&stack.elior(&["backup"]), "database");

    disk.resize("32m");
    let second = stack.backup();
    assert_ne!(second["id"], first["id"]);
    let out = stack.elior(&["backup", "verify", "--all"]);
    assert!(out.status.success(), "{}", stdout(&out));
}

/// A restore whose staged copy cannot fit on the data disk is refused before it writes:
/// exit 2, the disk, what is free and what it needs named, the live database as it was
/// and no staged copy left. With room, the same restore goes through.
#[test]
fn a_restore_that_cannot_fit_on_the_data_disk_is_refused_before_it_writes() {
    let stack = Stack::new();
    stack.seed_database(100);
    stack.add_blobs(3);
    stack.backup();
    // The live database shrinks, then moves onto a 4 MiB disk it shares with a filler
    // that leaves less room than the backup's 3 MiB database.
    let conn = Connection::open(stack.db_path()).unwrap();
    conn.execute_batch("DROP TABLE blobs; PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")
        .unwrap();
    drop(conn);
    let live = fs::read(stack.db_path()).unwrap();
    let data = stack.db_path().parent().unwrap().to_path_buf();
    fs::remove_dir_all(&data).unwrap();
    let disk = TmpfsMount::new(&data, "4m");
    fs::write(stack.db_path(), &live).unwrap();
    fs::write(data.join("filler"), vec![0u8; 2 << 20]).unwrap();
    let before = backup_files(&data);

    let out = stack.elior(&["restore", "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("the disk of {} has", data.display())),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(err.contains("make room on that disk"), "{err}");
    assert_eq!(backup_files(&data), before);
    assert_eq!(fs::read(stack.db_path()).unwrap(), live);

    disk.resize("16m");
    let out = stack.elior(&["restore", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let conn = Connection::open(stack.db_path()).unwrap();
    let blobs: i64 = conn
        .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(blobs, 3);
}

/// Kills the scheduler if the test fails before it stops it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The safety backup of the live database must fit in BACKUP_DIR too: a restore whose
/// safety backup cannot is refused before it stages anything, naming BACKUP_DIR's disk.
#[test]
fn a_restore_whose_safety_backup_cannot_fit_is_refused_before_it_writes() {
    let stack = Stack::new();
    let _disk = TmpfsMount::new(&stack.backups, "6m");
    stack.seed_database(100);
    stack.add_blobs(2);
    stack.backup();
    // The live database grows past what is left of the backup disk.
    stack.add_blobs(3);
    let live = fs::read(stack.db_path()).unwrap();
    let kept = backup_files(&stack.backups);

    let out = stack.elior(&["restore", "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let named = format!("the disk of {} has", stack.backups.display());
    assert!(err.contains(&named), "{err}");
    assert!(err.contains("safety backup"), "{err}");
    assert_eq!(backup_files(&stack.backups), kept);
    assert_eq!(fs::read(stack.db_path()).unwrap(), live);
    assert!(
        !backup_files(&stack.dir.join("data"))
            .iter()
            .any(|n| n.contains("restore")),
        "a staged copy was left"
    );
}

/// `elior schedule` on the stack, its backup due every 2 seconds, its log piped.
fn scheduler_backing_up_every_2_seconds(stack: &Stack) -> KillOnDrop {
    let env = fs::read_to_string(stack.dir.join(".env.production")).unwrap();
    fs::write(
        stack.dir.join(".env.production"),
        format!("{env}BACKUP_SCHEDULE=\"*/2 * * * * *\"\n"),
    )
    .unwrap();
    let child = Command::new(ELIOR)
        .args(["schedule", "--dir"])
        .arg(&stack.dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

#[test]
fn schedule_runs_the_backup_at_its_cron_time_and_stops_on_sigterm() {
    let stack = Stack::new();
    stack.seed_database(10);
    let mut child = scheduler_backing_up_every_2_seconds(&stack);
    let state_path = stack.dir.join(".elior/state.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        let state: Option<serde_json::Value> = fs::read_to_string(&state_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if let Some(state) = state.filter(|s| s["jobs"]["backup"]["last_success_at"].is_string()) {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "no successful backup run recorded"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(state["jobs"]["backup"]["last_result"], "ok");
    assert!(backup_files(&stack.backups)
        .iter()
        .any(|n| n.starts_with("backup_") && n.ends_with(".json")));

    let kill = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "scheduler exited with {status}");
    let mut log = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("job succeeded"), "{log}");
    assert!(log.contains("scheduler stopped"), "{log}");
}

/// A scheduled backup that finds BACKUP_DIR full still runs the prune: the backups past
/// retention go, and the next run has room. (The prune used to be skipped after any
/// failed backup, so a full backup disk stayed full and every later backup failed.)
#[test]
fn schedule_prunes_after_a_backup_that_found_backup_dir_full_and_the_next_run_succeeds() {
    let stack = Stack::new();
    let _disk = TmpfsMount::new(&stack.backups, "4m");
    stack.seed_database(10);
    stack.add_blobs(1);
    let newest = stack.backup()["id"].as_str().unwrap().to_string();
    // Two copies past the 30 days of retention fill the disk: no fourth backup fits.
    let expired = [id_days_ago(40), id_days_ago(41)];
    for id in &expired {
        clone_backup(&stack.backups, &newest, id);
    }
    let mut child = scheduler_backing_up_every_2_seconds(&stack);
    let state_path = stack.dir.join(".elior/state.json");
    wait_for("a scheduled backup that succeeds", || {
        fs::read_to_string(&state_path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|s| s["jobs"]["backup"]["last_result"] == "ok")
    });
    signal(child.0.id(), "TERM");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "scheduler exited with {status}");
    let mut log = String::new();
    Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    // The first run found the disk full, the prune after it made room.
    assert!(log.contains("ran out of space"), "{log}");
    let files = backup_files(&stack.backups);
    for id in &expired {
        assert!(!files.iter().any(|n| n.contains(id.as_str())), "{files:?}");
    }
    let manifests = files.iter().filter(|n| n.ends_with(".json")).count();
    assert_eq!(manifests, 2, "the newest and the scheduled one: {files:?}");
}

#[test]
fn schedule_install_print_shows_a_unit_running_the_installed_binary_for_this_stack() {
    let stack = Stack::new();
    let out = stack.elior(&["schedule", "install", "--print"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let unit = stdout(&out);
    // The stable path (issue 20), never the build tree's binary.
    assert!(
        unit.contains(&format!(
            "ExecStart=/usr/local/bin/elior schedule --dir {}\n",
            stack.dir.display()
        )),
        "{unit}"
    );
    assert!(unit.contains("WantedBy=multi-user.target"));
}

#[test]
fn schedule_refuses_a_bad_cron_expression_naming_the_key() {
    let stack = Stack::new();
    let env = fs::read_to_string(stack.dir.join(".env.production")).unwrap();
    fs::write(
        stack.dir.join(".env.production"),
        format!("{env}BACKUP_SCHEDULE=nightly\n"),
    )
    .unwrap();
    let out = stack.elior(&["schedule"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("elior: BACKUP_SCHEDULE: \"nightly\" is not a cron expression"),
        "{}",
        stderr(&out)
    );
}

/// A stack whose backup holds 100 rows and the seeded uploads ("new"), while the live
/// state has 10 rows, the change only in a stale -wal, and one more upload ("old").
fn stack_with_old_and_new_state() -> (Stack, BTreeMap<String, (u32, i64, String)>, String) {
    let stack = Stack::new();
    stack.seed_database(100);
    stack.seed_uploads();
    let new_files = tree(&stack.uploads());
    let id = stack.backup()["id"].as_str().unwrap().to_string();
    let wal = PathBuf::from(format!("{}-wal", stack.db_path().display()));
    let conn = Connection::open(stack.db_path()).unwrap();
    conn.execute("DELETE FROM items WHERE id > 10", []).unwrap();
    let stale_wal = fs::read(&wal).unwrap();
    drop(conn);
    fs::write(&wal, stale_wal).unwrap();
    fs::write(stack.uploads().join("new.txt"), "added after the backup").unwrap();
    (stack, new_files, id)
}

/// Names in the stack directory and its data folder that a restore leaves while it runs.
fn restore_leftovers(stack: &Stack) -> Vec<String> {
    let mut names = backup_files(&stack.dir);
    names.extend(backup_files(&stack.dir.join("data")));
    names
        .into_iter()
        .filter(|n| n.contains("restore"))
        .collect()
}

// Issue 17: a restore killed between its renames left the database missing, or the new
// database with the old uploads, and nothing recovered it.
#[test]
fn restore_killed_at_each_journal_step_ends_entirely_old_or_entirely_new() {
    let mut points: Vec<String> = [
        "restore:journal",
        "restore:staged",
        "restore:safety-backup",
        "restore:swapping",
    ]
    .map(String::from)
    .to_vec();
    points.extend((1..=12).map(|n| format!("restore:rename-{n}")));
    points.push("restore:committed".into());
    let mut renames_seen = 0;
    for point in &points {
        let (stack, new_files, id) = stack_with_old_and_new_state();
        let old_files = tree(&stack.uploads());
        let out = Command::new(ELIOR)
            .args(["restore", &id, "--yes", "--dir"])
            .arg(&stack.dir)
            .env("ELIOR_FAULT", point)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if point.starts_with("restore:rename-") && out.status.success() {
            // Past the last rename: the fault point was never reached.
            continue;
        }
        assert!(
            killed_by_sigkill(&out),
            "{point}: {:?} {}",
            out.status,
            stderr(&out)
        );
        if point.starts_with("restore:rename-") {
            renames_seen += 1;
        }
        assert!(
            stack.dir.join("data/.elior-restore-journal.json").exists(),
            "{point}: no journal"
        );

        // The next command that touches the stack recovers it first.
        let next = stack.elior(&["backup", "list"]);
        assert!(next.status.success(), "{point}: {}", stderr(&next));
        let committed = point == "restore:committed";
        let (rows, files) = (count_rows(&stack.db_path()), tree(&stack.uploads()));
        if committed {
            assert!(
                stderr(&next).contains("it was finished"),
                "{}",
                stderr(&next)
            );
            assert_eq!((rows, &files), (100, &new_files), "{point}");
        } else {
            assert_eq!((rows, &files), (10, &old_files), "{point}: mixed or lost");
        }
        assert!(
            !stack.dir.join("data/.elior-restore-journal.json").exists(),
            "{point}"
        );
        assert_eq!(restore_leftovers(&stack), Vec::<String>::new(), "{point}");
        // And a restore then simply works.
        let again = stack.elior(&["restore", &id, "--yes"]);
        assert!(again.status.success(), "{point}: {}", stderr(&again));
        assert_eq!(count_rows(&stack.db_path()), 100);
        assert_eq!(tree(&stack.uploads()), new_files);
    }
    // The database (its stale -wal was checkpointed by the safety backup), the staged
    // database, the uploads, the staged uploads.
    assert_eq!(renames_seen, 4);
}

/// A stack whose env file names the database relative to the stack directory, as `elior
/// serve` run in that directory reads it.
fn serve_in(stack: &Stack) -> Child {
    Command::new(ELIOR)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--env-file",
            ".env.production",
        ])
        .current_dir(&stack.dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn relative_database_env(stack: &Stack) {
    fs::write(
        stack.dir.join(".env.production"),
        format!(
            "DATABASE_URL=sqlite:///./data/elior_fitness.db\nUPLOAD_DIR=./uploads\nBACKUP_DIR={}\n",
            stack.backups.display()
        ),
    )
    .unwrap();
}

#[test]
fn serve_finishes_an_interrupted_restore_and_refuses_to_create_a_database_it_cannot_recover() {
    let (stack, _, id) = stack_with_old_and_new_state();
    relative_database_env(&stack);
    let restore = |point: &str| {
        Command::new(ELIOR)
            .args(["restore", &id, "--yes", "--dir"])
            .arg(&stack.dir)
            .env("ELIOR_FAULT", point)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // Killed with the live database moved aside: serve puts it back, then serves it.
    assert!(killed_by_sigkill(&restore("restore:rename-1")));
    assert!(!stack.db_path().exists());
    let journal = stack.dir.join("data/.elior-restore-journal.json");
    let mut server = KillOnDrop(serve_in(&stack));
    let deadline = Instant::now() + Duration::from_secs(30);
    while journal.exists() {
        assert!(
            Instant::now() < deadline,
            "serve did not recover the restore"
        );
        if server.0.try_wait().unwrap().is_some() {
            let mut log = String::new();
            std::io::Read::read_to_string(server.0.stderr.as_mut().unwrap(), &mut log).unwrap();
            panic!("serve exited: {log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);
    assert_eq!(count_rows(&stack.db_path()), 10);

    // Killed the same way, but the copy set aside is then lost (a careless `rm`): serve
    // must refuse rather than create an empty database in its place.
    assert!(killed_by_sigkill(&restore("restore:rename-1")));
    for name in backup_files(&stack.dir.join("data")) {
        if name.contains("pre-restore") {
            fs::remove_file(stack.dir.join("data").join(name)).unwrap();
        }
    }
    let out = serve_in(&stack).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot be put back"),
        "{}",
        stderr(&out)
    );
    assert!(!stack.db_path().exists(), "serve created a fresh database");
    assert!(journal.exists());
}

fn folder_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Overwrites `len` bytes in the middle of a file.
fn garble(path: &Path, len: usize) {
    let mut bytes = fs::read(path).unwrap();
    let start = bytes.len() / 2;
    let end = (start + len).min(bytes.len());
    for (i, b) in bytes[start..end].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31) ^ 0x5A;
    }
    fs::write(path, bytes).unwrap();
}

/// Makes the manifest of backup `id` match its (changed) files again, as a backup that
/// was written wrong would.
fn rehash(backups: &Path, id: &str) {
    edit_manifest(backups, id, id, |m| {
        for file in &mut m.files {
            let (size, sha) =
                elior::backup::manifest::sha256_file(&backups.join(&file.name)).unwrap();
            file.size = size;
            file.sha256 = sha;
        }
    });
}

// Issue 17: each of these let retention delete the only restorable backup.
#[test]
fn retention_attacks_leave_the_deep_verified_backup() {
    type Damage = fn(&Path, &str);
    let attacks: [(&str, Damage); 5] = [
        ("garbled database, matching hashes", |b, id| {
            garble(&b.join(format!("db_backup_{id}.db")), 8192);
            rehash(b, id);
        }),
        ("truncated uploads, matching hashes", |b, id| {
            let path = b.join(format!("uploads_backup_{id}.tar.gz"));
            let bytes = fs::read(&path).unwrap();
            fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            rehash(b, id);
        }),
        ("empty file list", |b, id| {
            edit_manifest(b, id, id, |m| m.files.clear())
        }),
        ("manifest edited after it was sealed", |b, id| {
            let path = b.join(format!("backup_{id}.json"));
            let text = fs::read_to_string(&path).unwrap();
            fs::write(&path, text.replace("\"manual\"", "\"scheduled\"")).unwrap();
        }),
        ("dated in the future", |_, _| {}),
    ];
    for (attack, damage) in attacks {
        let stack = Stack::new();
        stack.seed_database(200);
        stack.seed_uploads();
        let taken = stack.backup()["id"].as_str().unwrap().to_string();
        let good = id_days_ago(40);
        let bad = if attack == "dated in the future" {
            "20991231_000000".to_string()
        } else {
            id_days_ago(35)
        };
        clone_backup(&stack.backups, &taken, &good);
        clone_backup(&stack.backups, &taken, &bad);
        remove_backup(&stack.backups, &taken);
        damage(&stack.backups, &bad);

        let dry = stack.elior(&["backup", "prune", "--dry-run"]);
        assert!(dry.status.success(), "{attack}: {}", stderr(&dry));
        let plan = stdout(&dry);
        let line = |id: &str| {
            plan.lines()
                .find(|l| l.contains(id))
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            line(&good).starts_with("keep") && line(&good).contains("(newest verified backup)"),
            "{attack}: {plan}"
        );
        assert!(
            line(&bad).starts_with("keep") && line(&bad).contains("failed verification"),
            "{attack}: {plan}"
        );
        let out = stack.elior(&["backup", "prune"]);
        assert!(out.status.success(), "{attack}: {}", stderr(&out));
        let verify = stack.elior(&["backup", "verify", &good]);
        assert!(verify.status.success(), "{attack}: {}", stdout(&verify));
        let verify = stack.elior(&["backup", "verify", &bad]);
        assert_eq!(
            verify.status.code(),
            Some(1),
            "{attack}: {}",
            stdout(&verify)
        );
    }
}

// Issue 17: a corrupt backup filled a --keep-daily slot, and the good one beyond it went.
#[test]
fn a_corrupt_backup_does_not_fill_a_keep_daily_slot() {
    let stack = Stack::new();
    stack.seed_database(50);
    let taken = stack.backup()["id"].as_str().unwrap().to_string();
    let [oldest, corrupt, newest] = [35, 34, 33].map(id_days_ago);
    for id in [&oldest, &corrupt, &newest] {
        clone_backup(&stack.backups, &taken, id);
    }
    remove_backup(&stack.backups, &taken);
    garble(&stack.backups.join(format!("db_backup_{corrupt}.db")), 16);
    let out = stack.elior(&["backup", "prune", "--keep-daily", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = stdout(&out);
    assert!(plan.contains(&format!("keep          {oldest}")), "{plan}");
    assert!(stack
        .backups
        .join(format!("db_backup_{oldest}.db"))
        .exists());
    assert!(stack
        .backups
        .join(format!("db_backup_{corrupt}.db"))
        .exists());
}

// Issue 17: 11 killed backups leaked 3.1 GB, and `verify --all` then failed forever.
#[test]
fn eleven_killed_backups_leave_no_trace_after_prune() {
    let stack = Stack::new();
    stack.seed_database(5_000);
    stack.seed_uploads();
    stack.backup();
    let clean = folder_bytes(&stack.backups);
    let points = [
        "backup:claimed",
        "backup:database-copied",
        "backup:database-written",
        "backup:uploads-archived",
        "backup:uploads-written",
    ];
    for i in 0..11 {
        let out = Command::new(ELIOR)
            .args(["backup", "--dir"])
            .arg(&stack.dir)
            .env("ELIOR_FAULT", points[i % points.len()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(killed_by_sigkill(&out), "{:?} {}", out.status, stderr(&out));
    }
    assert!(folder_bytes(&stack.backups) > clean);
    let list = stack.elior(&["backup", "list"]);
    assert!(
        stderr(&list).contains("left by killed runs"),
        "{}",
        stderr(&list)
    );
    let out = stack.elior(&["backup", "prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("removed incomplete backup"),
        "{}",
        stderr(&out)
    );
    let after = folder_bytes(&stack.backups);
    assert!(
        after.abs_diff(clean) * 20 <= clean,
        "{after} bytes after prune; a clean run leaves {clean}"
    );
    let verify = stack.elior(&["backup", "verify", "--all"]);
    assert!(verify.status.success(), "{}", stdout(&verify));
}

/// A gzip member of `data`.
fn gz_member(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// Plants backup `id` holding only the uploads archive `archive`, with a sealed manifest
/// that truly matches it: only extraction can catch what it holds.
fn plant_uploads_backup(stack: &Stack, id: &str, archive: &[u8], files: u64, bytes: u64) {
    fs::create_dir_all(&stack.backups).unwrap();
    let name = format!("uploads_backup_{id}.tar.gz");
    fs::write(stack.backups.join(&name), archive).unwrap();
    let manifest = serde_json::json!({
        "format": 2, "id": id, "created_at": "2026-01-01T00:00:00+00:00",
        "elior_version": "0.1.0", "schema_version": null, "reason": "manual",
        "database_check": null, "upload_files": files, "upload_bytes": bytes, "duration_ms": 1,
        "files": [{"part": "uploads", "name": name, "size": archive.len(), "sha256": sha256(archive)}],
    });
    let mut manifest: Manifest = serde_json::from_value(manifest).unwrap();
    manifest.seal();
    elior::backup::manifest::write(&stack.backups, &manifest).unwrap();
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// A tar.gz of the given entries: (path, type, link target or content).
fn archive_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, extra) in entries {
        match kind {
            tar::EntryType::Regular => {
                let mut h = header(*kind, extra.len() as u64, 0o644);
                builder.append_data(&mut h, path, extra.as_bytes()).unwrap();
            }
            tar::EntryType::Directory => {
                let mut h = header(*kind, 0, 0o755);
                builder.append_data(&mut h, path, &[][..]).unwrap();
            }
            _ => {
                let mut h = header(*kind, 0, 0o644);
                if !extra.is_empty() {
                    let link = &mut h.as_gnu_mut().unwrap().linkname;
                    link[..extra.len()].copy_from_slice(extra.as_bytes());
                }
                let name = &mut h.as_gnu_mut().unwrap().name;
                name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                builder.append(&h, &[][..]).unwrap();
            }
        }
    }
    gz_member(&builder.into_inner().unwrap())
}

/// 200 MiB of zeros in one entry, in about 200 KiB of gzip.
fn gzip_bomb() -> Vec<u8> {
    const SIZE: u64 = 200 << 20;
    let mut head = header(tar::EntryType::Regular, SIZE, 0o644);
    let mut header_bytes = tar::Builder::new(Vec::new());
    header_bytes
        .append_data(&mut head, "uploads/zeros.bin", std::io::empty())
        .unwrap();
    let header_bytes = header_bytes.into_inner().unwrap();
    // append_data wrote the header and, as the data was empty, nothing else but the end.
    let mut out = gz_member(&header_bytes[..512]);
    let mut zeros = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    zeros.write_all(&vec![0u8; 1 << 20]).unwrap();
    let zeros = zeros.finish().unwrap();
    for _ in 0..(SIZE >> 20) {
        out.extend_from_slice(&zeros);
    }
    out.extend_from_slice(&gz_member(&[0u8; 1024]));
    out
}

// Issue 17: a dangling symlink chain escaped uploads/, and a gzip bomb was accepted.
#[test]
fn hostile_archives_are_refused_naming_the_entry_and_nothing_outside_changes() {
    use tar::EntryType::{Char, Directory, Link, Regular, Symlink};
    let stack = Stack::new();
    stack.seed_database(10);
    stack.seed_uploads();
    let live_files = tree(&stack.uploads());
    let outside = stack.dir.parent().unwrap().to_path_buf();
    fs::create_dir_all(&stack.backups).unwrap();
    let outside_before = backup_files(&outside);
    let cases: Vec<(&str, Vec<u8>, &str, u64)> = vec![
        (
            "uploads/a/c",
            archive_of(&[
                ("uploads/", Directory, ""),
                ("uploads/a/", Directory, ""),
                ("uploads/a/b", Symlink, ".."),
                ("uploads/a/c", Symlink, "b/../escaped"),
            ]),
            "resolves outside uploads/",
            0,
        ),
        (
            "uploads/abs",
            archive_of(&[
                ("uploads/ok.txt", Regular, "ok"),
                ("uploads/abs", Symlink, "/etc"),
            ]),
            "points outside uploads/",
            1,
        ),
        (
            "uploads/h",
            archive_of(&[
                ("uploads/ok.txt", Regular, "ok"),
                ("uploads/h", Link, "/etc/passwd"),
            ]),
            "a hard link",
            1,
        ),
        (
            "uploads/tty",
            archive_of(&[("uploads/ok.txt", Regular, "ok"), ("uploads/tty", Char, "")]),
            "a device",
            1,
        ),
        ("uploads/zeros.bin", gzip_bomb(), "decompression bomb", 1),
    ];
    for (i, (entry, archive, why, files)) in cases.iter().enumerate() {
        let id = id_days_ago(i as i64 + 1);
        let bytes = if entry.ends_with("zeros.bin") {
            200 << 20
        } else {
            2
        };
        plant_uploads_backup(&stack, &id, archive, *files, bytes);
        let out = stack.elior(&["restore", &id, "--yes"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{entry}: {err}");
        assert!(err.contains(&format!("{entry:?}")), "{entry}: {err}");
        assert!(err.contains(why), "{entry}: {err}");
        assert!(
            err.contains("nothing was written outside"),
            "{entry}: {err}"
        );
        assert_eq!(tree(&stack.uploads()), live_files, "{entry}");
        assert_eq!(backup_files(&outside), outside_before, "{entry}");
        assert_eq!(restore_leftovers(&stack), Vec::<String>::new(), "{entry}");
    }
}

// Issue 17: setuid-root files came back setuid root.
#[test]
fn setuid_and_setgid_bits_are_stripped_with_a_warning() {
    let stack = Stack::new();
    stack.seed_database(10);
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Regular, 4, 0o6755);
    builder
        .append_data(&mut h, "uploads/tool", &b"#!/x"[..])
        .unwrap();
    let archive = gz_member(&builder.into_inner().unwrap());
    let id = id_days_ago(1);
    plant_uploads_backup(&stack, &id, &archive, 1, 4);
    let out = stack.elior(&["restore", &id, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stripped the setuid/setgid bits"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("uploads/tool"), "{}", stderr(&out));
    let mode = fs::metadata(stack.uploads().join("tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
}

// Issue 17: a symlinked uploads/ was replaced by a real folder.
#[test]
fn a_symlinked_uploads_folder_keeps_its_link_and_is_restored_through_it() {
    let stack = Stack::new();
    stack.seed_database(10);
    let real = stack.dir.parent().unwrap().join("big-disk/uploads");
    fs::create_dir_all(&real).unwrap();
    fs::remove_dir(stack.uploads()).unwrap();
    symlink("../big-disk/uploads", stack.uploads()).unwrap();
    stack.seed_uploads();
    let files = tree(&real);
    let id = stack.backup()["id"].as_str().unwrap().to_string();
    fs::write(real.join("notes.txt"), "changed").unwrap();
    fs::write(real.join("extra.txt"), "added").unwrap();

    let out = stack.elior(&["restore", &id, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_link(stack.uploads()).unwrap(),
        PathBuf::from("../big-disk/uploads")
    );
    assert_eq!(tree(&real), files);
    let leftovers: Vec<_> = backup_files(real.parent().unwrap())
        .into_iter()
        .filter(|n| n != "uploads")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A scheduler for `stack` running a backup every 2 s, whose backup stops at
/// `backup:uploads-archived` (its files half-written) until `marker` is removed. Its
/// stderr goes to a file the test polls.
fn paused_scheduler(stack: &Stack, marker: &Path, log: &Path) -> KillOnDrop {
    let env = fs::read_to_string(stack.dir.join(".env.production")).unwrap();
    fs::write(
        stack.dir.join(".env.production"),
        format!("{env}BACKUP_SCHEDULE=\"*/2 * * * * *\"\n"),
    )
    .unwrap();
    let child = Command::new(ELIOR)
        .args(["schedule", "--dir"])
        .arg(&stack.dir)
        .env("NO_COLOR", "1")
        .env("ELIOR_FAULT", "backup:uploads-archived:pause")
        .env("ELIOR_FAULT_MARKER", marker)
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

// Issue 17: Ctrl-C on `elior schedule` killed a backup in progress.
#[test]
fn schedule_lets_a_running_backup_finish_on_the_first_signal() {
    for first in ["TERM", "INT"] {
        let stack = Stack::new();
        stack.seed_database(100);
        stack.seed_uploads();
        let marker = stack.dir.join("paused");
        let log = stack.dir.join("schedule.log");
        let mut scheduler = paused_scheduler(&stack, &marker, &log);
        wait_for("the backup to reach its pause", || marker.exists());
        signal(scheduler.0.id(), first);
        wait_for("the stop to be logged", || {
            fs::read_to_string(&log)
                .unwrap()
                .contains("a running job finishes first")
        });
        // The backup is still mid-way; let it go on.
        assert!(scheduler.0.try_wait().unwrap().is_none());
        fs::remove_file(&marker).unwrap();
        let status = scheduler.0.wait().unwrap();
        assert!(status.success(), "{first}: {status}");
        let log = fs::read_to_string(&log).unwrap();
        assert!(log.contains("job succeeded"), "{first}: {log}");
        assert!(log.contains("scheduler stopped"), "{first}: {log}");
        let verify = stack.elior(&["backup", "verify", "--all"]);
        assert!(verify.status.success(), "{first}: {}", stdout(&verify));
        assert_eq!(
            stdout(&verify).matches("ok ").count(),
            1,
            "{}",
            stdout(&verify)
        );
    }
}

#[test]
fn schedule_aborts_a_running_backup_on_the_second_sigint_and_removes_its_files() {
    let stack = Stack::new();
    stack.seed_database(100);
    stack.seed_uploads();
    let marker = stack.dir.join("paused");
    let log = stack.dir.join("schedule.log");
    let mut scheduler = paused_scheduler(&stack, &marker, &log);
    wait_for("the backup to reach its pause", || marker.exists());
    assert!(!backup_files(&stack.backups).is_empty());
    signal(scheduler.0.id(), "INT");
    wait_for("the stop to be logged", || {
        fs::read_to_string(&log)
            .unwrap()
            .contains("a running job finishes first")
    });
    signal(scheduler.0.id(), "INT");
    let status = scheduler.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let log = fs::read_to_string(&log).unwrap();
    assert!(log.contains("aborting the running job"), "{log}");
    assert!(
        log.contains("killed it and removed its partial files"),
        "{log}"
    );
    assert!(log.contains("scheduler stopped"), "{log}");
    assert_eq!(backup_files(&stack.backups), Vec::<String>::new());
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(stack.dir.join(".elior/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["jobs"]["backup"]["last_result"], "failed");
}

#[test]
fn export_writes_one_plain_tar_gz_that_gnu_tar_unpacks_into_the_backup() {
    let stack = Stack::new();
    stack.seed_database(300);
    stack.seed_uploads();
    let files = tree(&stack.uploads());
    let id = stack.backup()["id"].as_str().unwrap().to_string();
    let output = stack.dir.join("export.tar.gz");
    let out = stack.elior(&[
        "backup",
        "export",
        &id,
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("3 upload files"), "{}", stdout(&out));
    assert_eq!(
        fs::metadata(&output).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let unpacked = stack.dir.join("unpacked");
    fs::create_dir(&unpacked).unwrap();
    let tar = Command::new("tar")
        .args(["-xzpf"])
        .arg(&output)
        .arg("-C")
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", stderr(&tar));
    let top = unpacked.join(format!("elior-backup-{id}"));
    assert_eq!(count_rows(&top.join("database.db")), 300);
    assert_eq!(tree(&top.join("uploads")), files);
    let manifest = Manifest::read(&top.join("backup.json")).unwrap();
    assert_eq!(manifest.id, id);

    // An existing file is never overwritten, and a damaged backup is not exported.
    let again = stack.elior(&[
        "backup",
        "export",
        &id,
        "--output",
        output.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    garble(&stack.backups.join(format!("db_backup_{id}.db")), 16);
    let other = stack.dir.join("other.tar.gz");
    let bad = stack.elior(&["backup", "export", &id, "--output", other.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("failed verification"),
        "{}",
        stderr(&bad)
    );
    assert!(!other.exists());
    assert!(!stack.dir.join(".other.tar.gz.tmp").exists());
}

/// A PostgreSQL stack is backed up with pg_dump (tests/backup_pg.rs); an unreachable
/// server fails naming it and leaves no backup, in either format.
#[test]
fn a_postgres_stack_with_an_unreachable_server_fails_naming_it() {
    let stack = Stack::new();
    let env = format!(
        "DATABASE_URL=postgresql://elior:hunter2@127.0.0.1:1/elior\nBACKUP_DIR={}\n",
        stack.backups.display()
    );
    fs::write(stack.dir.join(".env.production"), &env).unwrap();
    let out = stack.elior(&["backup"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("pg_dump of the PostgreSQL database 127.0.0.1:1/elior failed"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    assert_eq!(backup_files(&stack.backups), Vec::<String>::new());
    fs::write(
        stack.dir.join(".env.production"),
        format!("{env}BACKUP_FORMAT=repository\n"),
    )
    .unwrap();
    let out = stack.elior(&["backup"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("pg_dump of the PostgreSQL database 127.0.0.1:1/elior failed"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    // Into the repository too: no snapshot, and no dump left in its tmp/.
    let repository = stack.backups.join("repository");
    assert_eq!(
        backup_files(&repository.join("snapshots")),
        Vec::<String>::new()
    );
    assert_eq!(backup_files(&repository.join("tmp")), Vec::<String>::new());
}

/// Writes the stack files an archive backup carries besides data: a certificate pair and
/// an ACME account, as `elior cert` leaves them.
fn seed_stack_files(stack: &Stack) {
    fs::create_dir_all(stack.dir.join("nginx/ssl")).unwrap();
    fs::create_dir_all(stack.dir.join(".elior/acme")).unwrap();
    fs::write(
        stack.dir.join("nginx/ssl/cert.pem"),
        "CERTIFICATE of the old host",
    )
    .unwrap();
    fs::write(
        stack.dir.join("nginx/ssl/key.pem"),
        "PRIVATE KEY of the old host",
    )
    .unwrap();
    fs::write(
        stack.dir.join(".elior/acme/account.json"),
        "{\"account\": 1}",
    )
    .unwrap();
    for path in ["nginx/ssl/key.pem", ".elior/acme/account.json"] {
        fs::set_permissions(stack.dir.join(path), fs::Permissions::from_mode(0o640)).unwrap();
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Issue 17, item 7: archive backups carried no certificate, so a restore from them came
/// back with a new one. They carry the same stack files as repository snapshots, checked
/// by verify and put back with elior's modes where the stack has none.
#[test]
fn an_archive_backup_carries_the_certificate_account_and_env_file_and_restores_them() {
    let stack = Stack::new();
    stack.seed_database(10);
    stack.seed_uploads();
    seed_stack_files(&stack);
    let id = stack.backup()["id"].as_str().unwrap().to_string();
    let listed = Command::new("tar")
        .arg("tf")
        .arg(stack.backups.join(format!("stack_backup_{id}.tar")))
        .output()
        .unwrap();
    assert_eq!(
        stdout(&listed),
        ".env.production\nnginx/ssl/cert.pem\nnginx/ssl/key.pem\n.elior/acme/account.json\n"
    );
    let verified = stack.elior(&["backup", "verify", "--all"]);
    assert!(verified.status.success(), "{}", stdout(&verified));

    for path in [
        "nginx/ssl/cert.pem",
        "nginx/ssl/key.pem",
        ".elior/acme/account.json",
    ] {
        fs::remove_file(stack.dir.join(path)).unwrap();
    }
    let out = stack.elior(&["restore", &id, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("is the backup's; kept"), "{said}");
    assert!(
        said.contains(&format!(
            "certificate {}, {}",
            stack.dir.join("nginx/ssl/cert.pem").display(),
            stack.dir.join("nginx/ssl/key.pem").display()
        )),
        "{said}"
    );
    assert_eq!(
        fs::read_to_string(stack.dir.join("nginx/ssl/key.pem")).unwrap(),
        "PRIVATE KEY of the old host"
    );
    // Modes are elior's, not the archive's or the old files'.
    assert_eq!(mode_of(&stack.dir.join("nginx/ssl/cert.pem")), 0o644);
    assert_eq!(mode_of(&stack.dir.join("nginx/ssl/key.pem")), 0o600);
    assert_eq!(mode_of(&stack.dir.join(".elior/acme/account.json")), 0o600);
}

/// A stack part as a hostile archive would write it: raw entry names, no checks.
fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, data, link) in entries {
        let mut h = header(*kind, data.len() as u64, 0o4755);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..path.len()].copy_from_slice(path.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        builder.append(&h, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// The stack part of an archive backup is refused, naming the entry, before anything is
/// written: a path elior never backs up, a link, a file twice, a file too big.
#[test]
fn hostile_stack_files_in_an_archive_are_refused_before_anything_is_written() {
    use tar::EntryType::{Regular, Symlink};
    let stack = Stack::new();
    stack.seed_database(10);
    stack.seed_uploads();
    seed_stack_files(&stack);
    let id = stack.backup()["id"].as_str().unwrap().to_string();
    fs::remove_file(stack.dir.join("nginx/ssl/cert.pem")).unwrap();
    fs::remove_file(stack.dir.join("nginx/ssl/key.pem")).unwrap();
    let outside = stack.dir.parent().unwrap().to_path_buf();
    let outside_before = backup_files(&outside);
    let live = tree(&stack.dir);
    let big = vec![b'x'; 2 << 20];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "../../evil.txt",
            raw_tar(&[("../../evil.txt", Regular, b"owned", "")]),
            "is not a file elior backs up",
        ),
        (
            "nginx/ssl/key.pem",
            raw_tar(&[
                ("nginx/ssl/cert.pem", Regular, b"CERT", ""),
                ("nginx/ssl/key.pem", Symlink, b"", "/etc/shadow"),
            ]),
            "is not a regular file",
        ),
        (
            "nginx/ssl/cert.pem",
            raw_tar(&[
                ("nginx/ssl/cert.pem", Regular, b"CERT", ""),
                ("nginx/ssl/cert.pem", Regular, b"OTHER", ""),
            ]),
            "comes twice",
        ),
        (
            "nginx/ssl/cert.pem",
            raw_tar(&[("nginx/ssl/cert.pem", Regular, &big, "")]),
            "over the 1048576 a stack file may have",
        ),
    ];
    let part = stack.backups.join(format!("stack_backup_{id}.tar"));
    for (entry, hostile, why) in cases {
        fs::write(&part, &hostile).unwrap();
        edit_manifest(&stack.backups, &id, &id, |m| {
            let record = m
                .files
                .iter_mut()
                .find(|f| f.name.starts_with("stack_"))
                .unwrap();
            record.size = hostile.len() as u64;
            record.sha256 = sha256(&hostile);
        });
        let verified = stack.elior(&["backup", "verify", &id]);
        assert_eq!(
            verified.status.code(),
            Some(1),
            "{entry}: {}",
            stdout(&verified)
        );
        assert!(
            stdout(&verified).contains(why),
            "{entry}: {}",
            stdout(&verified)
        );
        let out = stack.elior(&["restore", &id, "--yes"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{entry}: {err}");
        assert!(err.contains(&format!("entry {entry:?} ")), "{entry}: {err}");
        assert!(err.contains(why), "{entry}: {err}");
        assert!(
            err.contains("refused, nothing was written"),
            "{entry}: {err}"
        );
        assert_eq!(tree(&stack.dir), live, "{entry}");
        assert_eq!(backup_files(&outside), outside_before, "{entry}");
    }
}
