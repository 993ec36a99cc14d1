//! Helpers shared by the backup test binaries (`tests/backup.rs`, `tests/backup_repo.rs`,
//! `tests/backup_offsite.rs`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

use rusqlite::Connection;
use sha2::{Digest, Sha256};

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn count_rows(path: &Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap()
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Relative path -> (mode, mtime, content sha256 or link target) of every entry under
/// `root`.
pub fn tree(root: &Path) -> BTreeMap<String, (u32, i64, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, i64, String)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let mtime = meta.mtime();
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap().display().to_string();
                out.insert(rel, (0, 0, format!("-> {target}")));
            } else if meta.is_dir() {
                out.insert(rel, (mode, mtime, "dir".into()));
                walk(root, &path, out);
            } else {
                out.insert(rel, (mode, mtime, sha256(&fs::read(&path).unwrap())));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

pub fn killed_by_sigkill(out: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal() == Some(9)
}

/// Rewrites snapshot `id` of the (plain) repository at `repo` as one taken `days` ago,
/// with a valid checksum; returns the new id.
pub fn age_snapshot(repo: &Path, id: &str, days: i64) -> String {
    let old = (chrono::Local::now() - chrono::Duration::days(days))
        .format("%Y%m%d_%H%M%S")
        .to_string();
    let dir = repo.join("snapshots");
    let mut snap: elior::backup::repo::Snapshot =
        serde_json::from_slice(&fs::read(dir.join(format!("{id}.json"))).unwrap()).unwrap();
    snap.id = old.clone();
    snap.seal_checksum();
    fs::write(
        dir.join(format!("{old}.json")),
        serde_json::to_vec(&snap).unwrap(),
    )
    .unwrap();
    fs::remove_file(dir.join(format!("{id}.json"))).unwrap();
    old
}
