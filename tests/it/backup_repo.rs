//! The deduplicated backup repository (`BACKUP_FORMAT=repository`) and its encryption to
//! age recipients (issue 17, items 4 and 5), run as the real binary on real files.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use elior::backup::repo::Snapshot;
use rusqlite::Connection;

use crate::harness::backup as backup_support;
use crate::harness::tmpfs::TmpfsMount;
use backup_support::{
    age_snapshot, count_rows as rows, killed_by_sigkill, sha256, stderr, stdout, tree,
};

const ELIOR: &str = env!("CARGO_BIN_EXE_elior");
/// In every database row and in one upload: it must never appear in an encrypted
/// repository.
const MARKER: &str = "ZEBRA-MARKER-7c1f";
const UPLOAD_TEXT: &str = "known upload: deadlift 3x5 at 140kg, then rows ";
const UPLOAD_NAME: &str = "secret-progress-note.txt";

struct Stack {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    backups: PathBuf,
    identity: PathBuf,
}

impl Stack {
    /// A stack backing up into the repository; `encrypted` adds a recipient whose
    /// identity file is kept beside the stack (never in it).
    fn new(encrypted: bool) -> Stack {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("stack");
        let backups = tmp.path().join("backups");
        fs::create_dir_all(dir.join("data")).unwrap();
        fs::create_dir_all(dir.join("uploads")).unwrap();
        let identity = tmp.path().join("identity.txt");
        let mut env = format!(
            "DATABASE_URL=sqlite:////app/data/elior_fitness.db\nUPLOAD_DIR=/app/uploads\nBACKUP_DIR={}\nBACKUP_FORMAT=repository\n",
            backups.display()
        );
        if encrypted {
            let key = age::x25519::Identity::generate();
            use age::secrecy::ExposeSecret;
            fs::write(&identity, format!("{}\n", key.to_string().expose_secret())).unwrap();
            env.push_str(&format!("BACKUP_RECIPIENTS={}\n", key.to_public()));
        }
        fs::write(dir.join(".env.production"), env).unwrap();
        Stack {
            _tmp: tmp,
            dir,
            backups,
            identity,
        }
    }

    fn repo(&self) -> PathBuf {
        self.backups.join("repository")
    }

    fn db_path(&self) -> PathBuf {
        self.dir.join("data/elior_fitness.db")
    }

    fn uploads(&self) -> PathBuf {
        self.dir.join("uploads")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(ELIOR);
        command
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        command
    }

    fn elior(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn backup(&self) -> String {
        let out = self.elior(&["backup", "--json"]);
        assert!(out.status.success(), "backup failed: {}", stderr(&out));
        let snapshot: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        snapshot["id"].as_str().unwrap().to_string()
    }

    fn seed(&self, rows: usize) {
        let conn = Connection::open(self.db_path()).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL);")
            .unwrap();
        for i in 0..rows {
            conn.execute(
                "INSERT INTO items (body) VALUES (?1)",
                [format!("{MARKER} row {i} {}", "x".repeat(100))],
            )
            .unwrap();
        }
        let up = self.uploads();
        fs::create_dir_all(up.join("progress/2026")).unwrap();
        fs::write(up.join(UPLOAD_NAME), UPLOAD_TEXT.repeat(2000)).unwrap();
        let photo: Vec<u8> = [0xFF, 0xD8, 0xFF, 0xE0]
            .into_iter()
            .chain((0..1_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8))
            .collect();
        fs::write(up.join("progress/2026/front.jpg"), photo).unwrap();
        fs::write(up.join("private.txt"), "only for the owner").unwrap();
        fs::set_permissions(up.join("private.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        symlink("progress/2026/front.jpg", up.join("latest.jpg")).unwrap();
        let old = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        for path in ["progress/2026/front.jpg", "progress/2026", UPLOAD_NAME] {
            fs::File::open(up.join(path))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Incompressible bytes.
fn random_bytes(n: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut bytes = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(n as u64).fill_bytes(&mut bytes);
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn packs(stack: &Stack) -> Vec<PathBuf> {
    files_under(&stack.repo().join("packs"))
}

fn verify_all(stack: &Stack) -> Output {
    stack.elior(&["backup", "verify", "--all"])
}

/// The sha256 of the database a snapshot holds, from an export with the identity.
fn exported(stack: &Stack, id: &str, identity: Option<&Path>) -> (Output, PathBuf) {
    let output = stack.dir.join(format!("export-{id}.tar.zst"));
    let mut args = vec!["backup", "export", id, "--output", output.to_str().unwrap()];
    if let Some(identity) = identity {
        args.extend(["--identity", identity.to_str().unwrap()]);
    }
    (stack.elior(&args), output)
}

/// Unpacks a tar.zst with GNU tar, as a person would.
fn unpack_zst(archive: &Path, into: &Path) {
    fs::create_dir_all(into).unwrap();
    let tar = Command::new("tar")
        .args(["--zstd", "-xpf"])
        .arg(archive)
        .arg("-C")
        .arg(into)
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", stderr(&tar));
}

// Issue 17, item 5: the host keeps no secret that decrypts its backups; a grep of the
// repository for a known row and a known upload finds nothing.
#[test]
fn encrypted_repository_holds_no_plaintext_and_restores_byte_equal_only_with_the_identity() {
    let stack = Stack::new(true);
    stack.seed(3000);
    let before = tree(&stack.uploads());
    let id = stack.backup();

    for file in files_under(&stack.backups) {
        let bytes = fs::read(&file).unwrap();
        for needle in [MARKER, UPLOAD_TEXT, UPLOAD_NAME, "progress/2026"] {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "{} holds {needle:?} in the clear",
                file.display()
            );
        }
    }
    // Nothing on the host opens it: the config holds recipients and a naming key only.
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(stack.repo().join("config.json")).unwrap()).unwrap();
    assert!(config["encryption"]["recipients"][0]
        .as_str()
        .unwrap()
        .starts_with("age1"));

    // The host checks what it can without the identity, and says so.
    let out = verify_all(&stack);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("contents not decrypted"),
        "{}",
        stdout(&out)
    );
    let identity = stack.identity.to_str().unwrap();
    let out = stack.elior(&["backup", "verify", &id, "--identity", identity]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(!stdout(&out).contains("not decrypted"), "{}", stdout(&out));

    // The live data moves on.
    Connection::open(stack.db_path())
        .unwrap()
        .execute("DELETE FROM items WHERE id > 10", [])
        .unwrap();
    fs::write(stack.uploads().join(UPLOAD_NAME), "overwritten").unwrap();
    let live = tree(&stack.uploads());

    let out = stack.elior(&["restore", &id, "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is encrypted to age recipients"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--identity"), "{}", stderr(&out));
    assert_eq!(rows(&stack.db_path()), 10, "nothing changed");
    assert_eq!(tree(&stack.uploads()), live);

    let out = stack.elior(&["restore", &id, "--yes", "--identity", identity]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rows(&stack.db_path()), 3000);
    assert_eq!(tree(&stack.uploads()), before);
    // Byte-equal to the copy that was backed up: its sha256 is in the snapshot.
    let (out, export) = exported(&stack, &id, Some(&stack.identity));
    assert!(out.status.success(), "{}", stderr(&out));
    let unpacked = stack.dir.join("unpacked");
    unpack_zst(&export, &unpacked);
    let top = unpacked.join(format!("elior-backup-{id}"));
    let summary: serde_json::Value =
        serde_json::from_slice(&fs::read(top.join("backup.json")).unwrap()).unwrap();
    let restored = fs::read(stack.db_path()).unwrap();
    assert_eq!(
        summary["database"]["sha256"].as_str().unwrap(),
        sha256(&restored)
    );
    assert_eq!(fs::read(top.join("database.db")).unwrap(), restored);
    assert_eq!(tree(&top.join("uploads")), before);

    // Export without the identity is refused as restore is.
    let (out, _) = exported(&stack, &id, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--identity"), "{}", stderr(&out));
}

// Unchanged data is stored once: a second backup of the same stack adds only what changed
// (one database page written, one upload changed), and every snapshot restores on its own.
#[test]
fn unchanged_pages_and_files_are_stored_once_and_each_snapshot_restores_alone() {
    let stack = Stack::new(false);
    stack.seed(5000);
    let first = stack.backup();
    let size_after_first: u64 = packs(&stack)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    let unchanged = stack.elior(&["backup", "--json"]);
    let snap: serde_json::Value = serde_json::from_slice(&unchanged.stdout).unwrap();
    assert!(
        snap["added_bytes"].as_u64().unwrap() < 64 << 10,
        "an unchanged backup added {}",
        snap["added_bytes"]
    );
    assert!(
        stderr(&unchanged).contains("3 unchanged, not read"),
        "{}",
        stderr(&unchanged)
    );
    // Unencrypted, the cache names uploads in the clear (what the encrypted test greps
    // for must be there to find).
    let cache = fs::read(stack.repo().join("files-cache.json")).unwrap();
    assert!(contains(&cache, UPLOAD_NAME.as_bytes()));

    Connection::open(stack.db_path())
        .unwrap()
        .execute("UPDATE items SET body = 'changed' WHERE id = 42", [])
        .unwrap();
    fs::write(stack.uploads().join("private.txt"), "changed").unwrap();
    let third = stack.backup();
    let total: u64 = packs(&stack)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        total < size_after_first + (200 << 10),
        "a one-row, one-file change grew the repository from {size_after_first} to {total}"
    );

    let out = stack.elior(&["restore", &first, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(stack.uploads().join("private.txt")).unwrap(),
        "only for the owner"
    );
    let body: String = Connection::open(stack.db_path())
        .unwrap()
        .query_row("SELECT body FROM items WHERE id = 42", [], |r| r.get(0))
        .unwrap();
    assert!(body.starts_with(MARKER));
    let out = stack.elior(&["restore", &third, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(stack.uploads().join("private.txt")).unwrap(),
        "changed"
    );
    let out = verify_all(&stack);
    assert!(out.status.success(), "{}", stdout(&out));
}

fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x5A], at).unwrap();
}

/// Makes the pack at `path` (whose byte `at` was changed) consistent again, as a forger
/// would: the changed chunk's CRC fixed in the header; returns the header's new sha256,
/// the name such a pack must have.
fn forge_pack(path: &Path, at: u64) -> String {
    const ENTRY: usize = 45;
    let mut bytes = fs::read(path).unwrap();
    let (size, entries) = elior::backup::repo::pack::read_header(path).unwrap();
    let header_len =
        u32::from_le_bytes(bytes[bytes.len() - 12..][..4].try_into().unwrap()) as usize;
    let header_start = size as usize - 12 - header_len;
    let (i, entry) = entries
        .iter()
        .enumerate()
        .find(|(_, e)| e.offset <= at && at < e.offset + u64::from(e.stored_len))
        .unwrap();
    let stored = &bytes[entry.offset as usize..][..entry.stored_len as usize];
    let crc = crc32fast::hash(stored).to_le_bytes();
    bytes[header_start + i * ENTRY + 41..][..4].copy_from_slice(&crc);
    fs::write(path, &bytes).unwrap();
    sha256(&bytes[header_start..])
}

/// The largest pack (the one holding the first backup's data).
fn biggest_pack(stack: &Stack) -> PathBuf {
    packs(stack)
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
}

fn assert_refused(
    stack: &Stack,
    out: &Output,
    what: &str,
    before: &BTreeMap<String, (u32, i64, String)>,
) {
    assert_eq!(out.status.code(), Some(2), "{}", stderr(out));
    assert!(
        stderr(out).contains(what),
        "{what:?} not in: {}",
        stderr(out)
    );
    assert!(
        stderr(out).contains("nothing was changed") || stderr(out).contains("cannot be restored"),
        "{}",
        stderr(out)
    );
    assert_eq!(&tree(&stack.uploads()), before, "nothing changed");
}

// A changed byte in a pack, a chunk forged under its own pack's new name, and an edited
// snapshot: verify names each, and restore refuses each before touching the stack.
#[test]
fn corrupted_or_crafted_chunks_and_snapshots_are_caught_by_verify_and_refused_by_restore() {
    for encrypted in [false, true] {
        let stack = Stack::new(encrypted);
        stack.seed(2000);
        let id = stack.backup();
        fs::write(stack.uploads().join("private.txt"), "live").unwrap();
        let live = tree(&stack.uploads());
        let identity = stack.identity.to_str().unwrap().to_string();
        let restore = |stack: &Stack| {
            let mut args = vec!["restore", id.as_str(), "--yes"];
            if encrypted {
                args.extend(["--identity", identity.as_str()]);
            }
            stack.elior(&args)
        };

        // 1. A damaged byte inside a blob: the pack no longer matches its name.
        let pack = biggest_pack(&stack);
        let name = pack.file_name().unwrap().to_string_lossy().into_owned();
        let original = fs::read(&pack).unwrap();
        flip_byte(&pack, 1000);
        let out = verify_all(&stack);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        assert!(
            stdout(&out).contains(&format!("pack {name} does not match its name")),
            "{}",
            stdout(&out)
        );
        let out = restore(&stack);
        assert_refused(&stack, &out, "is damaged or was tampered with", &live);
        assert!(
            stderr(&out).contains(&format!("in pack {name}")),
            "{}",
            stderr(&out)
        );

        // 2. Crafted: the same change with the chunk's CRC fixed in the header and the
        // pack renamed to its header's new sha256, so only the chunk's own name (and,
        // encrypted, its tag) can tell.
        let crafted_name = forge_pack(&pack, 1000);
        let crafted = pack
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join(&crafted_name[..2])
            .join(&crafted_name);
        fs::create_dir_all(crafted.parent().unwrap()).unwrap();
        fs::rename(&pack, &crafted).unwrap();
        let out = if encrypted {
            stack.elior(&["backup", "verify", "--all", "--identity", &identity])
        } else {
            verify_all(&stack)
        };
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        assert!(
            stdout(&out).contains(&format!(
                "(in pack {crafted_name}) is damaged or was tampered with"
            )),
            "{}",
            stdout(&out)
        );
        let out = restore(&stack);
        assert_refused(
            &stack,
            &out,
            &format!("(in pack {crafted_name}) is damaged or was tampered with"),
            &live,
        );
        fs::remove_file(&crafted).unwrap();
        fs::write(&pack, &original).unwrap();
        assert!(verify_all(&stack).status.success());

        // 3. An edited snapshot (its checksum no longer matches), then one re-sealed with
        // a root taken away (its roots no longer match its content).
        let path = stack.repo().join(format!("snapshots/{id}.json"));
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("\"manual\"", "\"scheduled\"")).unwrap();
        let out = verify_all(&stack);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stdout(&out).contains(&format!("snapshot {id} does not match its own checksum")),
            "{}",
            stdout(&out)
        );
        assert_refused(
            &stack,
            &restore(&stack),
            &format!("snapshot {id} does not match its own checksum"),
            &live,
        );
        let mut snap: Snapshot = serde_json::from_str(&text).unwrap();
        snap.roots.pop();
        snap.seal_checksum();
        fs::write(&path, serde_json::to_string(&snap).unwrap()).unwrap();
        assert_refused(
            &stack,
            &restore(&stack),
            "its roots do not match its content",
            &live,
        );
        fs::write(&path, &text).unwrap();
        let out = restore(&stack);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

fn repo_bytes(stack: &Stack) -> u64 {
    files_under(&stack.repo())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

// Issue 17, item 4: prune removes unused chunks safely even when killed part-way. It is
// killed after each of its steps; every time, `verify --all` passes, and a prune run to the
// end then frees what the old snapshots alone used.
#[test]
fn prune_killed_part_way_then_run_again_leaves_verify_all_passing() {
    let stack = Stack::new(false);
    stack.seed(2000);
    // A big upload only the old snapshots hold, so their pack is mostly unused once
    // they go, and is repacked.
    fs::write(
        stack.uploads().join("old-video.bin"),
        random_bytes(3_000_000),
    )
    .unwrap();
    let first = stack.backup();
    let second = stack.backup();
    fs::remove_file(stack.uploads().join("old-video.bin")).unwrap();
    let kept = stack.backup();
    let first = age_snapshot(&stack.repo(), &first, 60);
    age_snapshot(&stack.repo(), &second, 59);
    let before = repo_bytes(&stack);

    for point in [
        "prune:snapshots-deleted",
        "prune:repacked",
        "prune:deleted-one",
    ] {
        let out = stack
            .command(&["backup", "prune"])
            .env("ELIOR_FAULT", point)
            .output()
            .unwrap();
        assert!(killed_by_sigkill(&out), "{point}: {}", stderr(&out));
        let out = verify_all(&stack);
        assert!(
            out.status.success(),
            "after a kill at {point}: {}",
            stdout(&out)
        );
    }
    let out = stack.elior(&["backup", "prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = verify_all(&stack);
    assert!(out.status.success(), "{}", stdout(&out));
    let ids: Vec<String> = elior::backup::repo::snapshot_files(&stack.repo())
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        ids,
        std::slice::from_ref(&kept),
        "{first} and its copy are gone"
    );
    let after = repo_bytes(&stack);
    assert!(
        after + 2_500_000 < before,
        "prune freed too little: {before} -> {after}"
    );
    assert!(files_under(&stack.repo().join("tmp")).is_empty());
    let out = stack.elior(&["restore", &kept, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rows(&stack.db_path()), 2000);
}

// A backup killed after its packs were written but before its snapshot leaves chunks
// no snapshot names; one killed mid-pack leaves a temporary file. Prune removes both.
#[test]
fn killed_repository_backups_leave_nothing_after_prune() {
    let stack = Stack::new(false);
    stack.seed(1000);
    stack.backup();
    let clean = repo_bytes(&stack);
    fs::write(stack.uploads().join("new.bin"), random_bytes(3 << 20)).unwrap();
    for point in [
        "backup:pack-written",
        "backup:packs-written",
        "backup:uploads-written",
    ] {
        let out = stack
            .command(&["backup"])
            .env("ELIOR_FAULT", point)
            .output()
            .unwrap();
        assert!(killed_by_sigkill(&out), "{point}: {}", stderr(&out));
    }
    let list = stack.elior(&["backup", "list"]);
    assert!(
        stderr(&list).contains("incomplete or temporary backups"),
        "{}",
        stderr(&list)
    );
    let out = stack.elior(&["backup", "prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = verify_all(&stack);
    assert!(out.status.success(), "{}", stdout(&out));
    let after = repo_bytes(&stack);
    assert!(
        after <= clean + clean / 20,
        "killed runs left {} bytes ({clean} -> {after})",
        after - clean
    );
    assert!(files_under(&stack.repo().join("tmp")).is_empty());
    let leftovers: Vec<_> = fs::read_dir(&stack.backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A repository backup that fills BACKUP_DIR's disk fails naming BACKUP_DIR, and takes
/// its unfinished pack out of tmp/ (it used to stay there, keeping the disk full, until
/// the next run). The earlier snapshot verifies, and once there is room the next backup
/// completes.
#[test]
fn a_full_backup_disk_leaves_no_unfinished_pack_and_the_repository_verifies() {
    let stack = Stack::new(false);
    let disk = TmpfsMount::new(&stack.backups, "8m");
    stack.seed(1000);
    stack.backup();
    let snapshots = || files_under(&stack.repo().join("snapshots"));
    let before = snapshots();

    fs::write(stack.uploads().join("video.mp4"), random_bytes(8 << 20)).unwrap();
    let out = stack.elior(&["backup"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let named = format!("BACKUP_DIR {} ran out of space", stack.backups.display());
    assert!(stderr(&out).contains(&named), "{}", stderr(&out));
    assert!(files_under(&stack.repo().join("tmp")).is_empty());
    assert_eq!(snapshots(), before);
    let out = verify_all(&stack);
    assert!(out.status.success(), "{}", stdout(&out));

    disk.resize("32m");
    stack.backup();
    assert_eq!(snapshots().len(), before.len() + 1);
    let out = verify_all(&stack);
    assert!(out.status.success(), "{}", stdout(&out));
}

// Each run of an encrypted repository wraps a fresh key into keys/KEY.age; killed runs
// used to leave theirs forever. Prune removes the keys no chunk and no snapshot uses, and
// the snapshots still open, verify and restore with the identity.
#[test]
fn prune_removes_the_wrapped_keys_of_killed_runs() {
    let stack = Stack::new(true);
    stack.seed(500);
    let id = stack.backup();
    let keys = |stack: &Stack| files_under(&stack.repo().join("keys")).len();
    assert_eq!(keys(&stack), 1);
    fs::write(stack.uploads().join("new.bin"), random_bytes(2 << 20)).unwrap();
    for point in ["backup:database-written", "backup:packs-written"] {
        let out = stack
            .command(&["backup"])
            .env("ELIOR_FAULT", point)
            .output()
            .unwrap();
        assert!(killed_by_sigkill(&out), "{point}: {}", stderr(&out));
    }
    assert_eq!(keys(&stack), 3, "each killed run left its key");
    let out = stack.elior(&["backup", "prune", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["repository"]["keys_removed"], 2, "{report:#}");
    assert_eq!(keys(&stack), 1);
    let identity = stack.identity.to_str().unwrap();
    let out = stack.elior(&["backup", "verify", "--all", "--identity", identity]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    fs::remove_file(stack.uploads().join("new.bin")).unwrap();
    let before = tree(&stack.uploads());
    let out = stack.elior(&["restore", &id, "--yes", "--identity", identity]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rows(&stack.db_path()), 500);
    assert_eq!(tree(&stack.uploads()), before);
    // A second run adds a key that its new chunks use: it stays.
    stack.backup();
    let out = stack.elior(&["backup", "prune", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["repository"]["keys_removed"], 0, "{report:#}");
    let out = stack.elior(&["backup", "verify", "--all", "--identity", identity]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

// Two backups at once: the second is refused while the first holds the repository, and
// the first completes untouched.
#[test]
fn a_second_backup_is_refused_while_one_runs_and_the_first_completes() {
    let stack = Stack::new(false);
    stack.seed(500);
    let marker = stack.dir.join("paused");
    let mut first = stack
        .command(&["backup"])
        .env("ELIOR_FAULT", "backup:database-written:pause")
        .env("ELIOR_FAULT_MARKER", &marker)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the first backup never paused");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = stack.elior(&["backup"]);
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    assert!(stderr(&second).contains("is in use"), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("locked by `elior backup`"),
        "{}",
        stderr(&second)
    );
    let prune = stack.elior(&["backup", "prune"]);
    assert_eq!(
        prune.status.code(),
        Some(2),
        "prune must not sweep under a running backup"
    );
    fs::remove_file(&marker).unwrap();
    let status = first.wait().unwrap();
    let mut err = String::new();
    first
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    let out = verify_all(&stack);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(
        elior::backup::repo::snapshot_files(&stack.repo())
            .unwrap()
            .len(),
        1
    );
}

// A backup started while `verify --all` holds the repository used to be refused; it now
// waits (saying for whom), and runs once the check is done.
#[test]
fn a_backup_waits_for_a_running_verify_and_then_completes() {
    let stack = Stack::new(false);
    stack.seed(500);
    stack.backup();
    let marker = stack.dir.join("verify-paused");
    let mut verify = stack
        .command(&["backup", "verify", "--all"])
        .env("ELIOR_FAULT", "verify:locked:pause")
        .env("ELIOR_FAULT_MARKER", &marker)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "verify never paused");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = stack.dir.join("backup.err");
    let mut backup = stack
        .command(&["backup"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if text.contains("waiting for the backup repository: `elior backup verify`") {
            break;
        }
        assert!(
            backup.try_wait().unwrap().is_none(),
            "the backup ended instead of waiting: {text}"
        );
        assert!(Instant::now() < deadline, "the backup never waited: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        elior::backup::repo::snapshot_files(&stack.repo())
            .unwrap()
            .len(),
        1,
        "nothing written while verify holds the repository"
    );
    fs::remove_file(&marker).unwrap();
    assert!(verify.wait().unwrap().success());
    let status = backup.wait().unwrap();
    assert!(status.success(), "{}", fs::read_to_string(&log).unwrap());
    assert_eq!(
        elior::backup::repo::snapshot_files(&stack.repo())
            .unwrap()
            .len(),
        2
    );
}

// Switching to the repository keeps the tar.gz backups: they are listed, verified and
// restored beside the snapshots.
#[test]
fn archive_backups_stay_restorable_after_switching_to_the_repository() {
    let stack = Stack::new(false);
    stack.seed(700);
    let env = fs::read_to_string(stack.dir.join(".env.production")).unwrap();
    fs::write(
        stack.dir.join(".env.production"),
        env.replace("BACKUP_FORMAT=repository", "BACKUP_FORMAT=archive"),
    )
    .unwrap();
    let archive = stack.backup();
    assert!(stack
        .backups
        .join(format!("uploads_backup_{archive}.tar.gz"))
        .exists());
    fs::write(stack.dir.join(".env.production"), env).unwrap();
    Connection::open(stack.db_path())
        .unwrap()
        .execute("DELETE FROM items WHERE id > 5", [])
        .unwrap();
    let snapshot = stack.backup();
    let list = stdout(&stack.elior(&["backup", "list"]));
    assert!(
        list.contains(&snapshot) && list.contains(&archive),
        "{list}"
    );
    assert!(list.contains("complete (repository)"), "{list}");
    assert!(verify_all(&stack).status.success());
    let out = stack.elior(&["restore", &archive, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rows(&stack.db_path()), 700);
    let out = stack.elior(&["restore", &snapshot, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rows(&stack.db_path()), 5);
}

// `elior backup export` of a snapshot is one plain tar.zst that GNU tar unpacks.
#[test]
fn export_of_a_snapshot_is_a_plain_tar_zst_that_gnu_tar_unpacks() {
    let stack = Stack::new(false);
    stack.seed(300);
    let files = tree(&stack.uploads());
    let id = stack.backup();
    let (out, export) = exported(&stack, &id, None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("3 upload files"), "{}", stdout(&out));
    let mut magic = [0u8; 4];
    fs::File::open(&export)
        .unwrap()
        .read_exact(&mut magic)
        .unwrap();
    assert_eq!(magic, [0x28, 0xB5, 0x2F, 0xFD], "zstd");
    let unpacked = stack.dir.join("unpacked");
    unpack_zst(&export, &unpacked);
    let top = unpacked.join(format!("elior-backup-{id}"));
    assert_eq!(rows(&top.join("database.db")), 300);
    assert_eq!(tree(&top.join("uploads")), files);
}
