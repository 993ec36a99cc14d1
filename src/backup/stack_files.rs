//! The stack's own files a repository snapshot carries besides the database and uploads,
//! so that a new host restored from it serves as the old one did (issue 17, item 7): the
//! certificate and key nginx serves and the ACME account. Without them, disaster recovery
//! came back with a new self-signed certificate (or, with ACME, a new account and an
//! issuance that counts against the CA's rate limits).
//!
//! `.env.production` is not among them: it holds the keys to the bucket, so a restore from
//! the bucket needs it before it can read anything.
//!
//! Only the paths of [`KNOWN`] are ever read or written, with the modes set here, whatever
//! a snapshot says: a snapshot cannot name a path or a mode. A restore puts a group back
//! only where the stack has none of its files, so a certificate renewed since the backup
//! (or one half of a pair) is never replaced by an older one.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::tls::files::{PUBLIC_MODE, SECRET_MODE};

/// One file a snapshot may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// Relative to the stack directory; the name a snapshot records.
    pub path: &'static str,
    pub mode: u32,
    /// Files of one group go back together or not at all (a certificate and its key).
    pub group: &'static str,
}

/// Every file a snapshot may carry.
pub const KNOWN: [Known; 3] = [
    Known {
        path: "nginx/ssl/cert.pem",
        mode: PUBLIC_MODE,
        group: "certificate",
    },
    Known {
        path: "nginx/ssl/key.pem",
        mode: SECRET_MODE,
        group: "certificate",
    },
    Known {
        path: ".elior/acme/account.json",
        mode: SECRET_MODE,
        group: "ACME account",
    },
];

/// One stack file in a snapshot: its path (one of [`KNOWN`]) and the data blob of its
/// bytes (encrypted like any upload in an encrypted repository).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackFile {
    pub path: String,
    pub size: u64,
    pub blob: String,
}

/// The stack files part of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackFilesPart {
    pub files: Vec<StackFile>,
    /// List blobs naming the files' blobs: prune and verify reach them from the roots.
    pub lists: Vec<String>,
}

/// The known file at `path`, if it is one.
pub fn known(path: &str) -> Option<Known> {
    KNOWN.into_iter().find(|k| k.path == path)
}

/// The known files the stack holds now: (path, bytes). A missing file is left out.
pub fn read(stack_dir: &Path) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let mut found = Vec::new();
    for file in KNOWN {
        let path = stack_dir.join(file.path);
        match fs::read(&path) {
            Ok(bytes) => found.push((file.path, bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
        }
    }
    Ok(found)
}

/// What a restore did with one group of stack files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PutBack {
    pub group: &'static str,
    /// The files written (absent here before).
    pub written: Vec<PathBuf>,
    /// Why nothing was written, when the stack already holds the group.
    pub kept: Option<String>,
}

/// Writes each group of `files` (path, bytes) whose files are all absent from `stack_dir`,
/// atomically and with the group's modes; a group the stack already holds is kept as it
/// is. Paths that are not [`KNOWN`] are refused before anything is written.
pub fn put_back(stack_dir: &Path, files: &[(String, Vec<u8>)]) -> Result<Vec<PutBack>> {
    let mut chosen: Vec<(Known, &[u8])> = Vec::new();
    for (path, bytes) in files {
        let known = known(path).with_context(|| {
            format!("the backup names a stack file {path:?} that elior never backs up; nothing was written")
        })?;
        chosen.push((known, bytes));
    }
    let mut groups: Vec<&'static str> = chosen.iter().map(|(k, _)| k.group).collect();
    groups.dedup();
    let mut report = Vec::new();
    for group in groups {
        let members: Vec<&(Known, &[u8])> =
            chosen.iter().filter(|(k, _)| k.group == group).collect();
        let present: Vec<&str> = KNOWN
            .iter()
            .filter(|k| k.group == group)
            .filter(|k| fs::symlink_metadata(stack_dir.join(k.path)).is_ok())
            .map(|k| k.path)
            .collect();
        if !present.is_empty() {
            report.push(PutBack {
                group,
                written: Vec::new(),
                kept: Some(format!(
                    "kept the {group} already here ({}); the backup's is not restored over it",
                    present.join(", ")
                )),
            });
            continue;
        }
        let mut written = Vec::new();
        for (known, bytes) in members {
            let path = stack_dir.join(known.path);
            crate::fsutil::write_atomic(&path, bytes, known.mode)?;
            written.push(path);
        }
        report.push(PutBack {
            group,
            written,
            kept: None,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_group_goes_back_only_where_none_of_it_is_and_with_its_modes() {
        let dir = tempfile::tempdir().unwrap();
        let stack = dir.path();
        fs::create_dir_all(stack.join(".elior/acme")).unwrap();
        fs::write(stack.join(".elior/acme/account.json"), "newer").unwrap();
        let files = vec![
            ("nginx/ssl/cert.pem".to_string(), b"CERT".to_vec()),
            ("nginx/ssl/key.pem".to_string(), b"KEY".to_vec()),
            (".elior/acme/account.json".to_string(), b"older".to_vec()),
        ];
        let report = put_back(stack, &files).unwrap();
        assert_eq!(fs::read(stack.join("nginx/ssl/key.pem")).unwrap(), b"KEY");
        assert_eq!(mode(&stack.join("nginx/ssl/key.pem")), 0o600);
        assert_eq!(mode(&stack.join("nginx/ssl/cert.pem")), 0o644);
        assert_eq!(
            fs::read(stack.join(".elior/acme/account.json")).unwrap(),
            b"newer"
        );
        assert_eq!(report[0].written.len(), 2);
        assert!(report[1].kept.as_ref().unwrap().contains("account.json"));

        // Half a pair here: the backup's pair is not mixed in.
        fs::remove_file(stack.join("nginx/ssl/cert.pem")).unwrap();
        let report = put_back(stack, &files).unwrap();
        assert!(!stack.join("nginx/ssl/cert.pem").exists());
        assert!(report[0].kept.as_ref().unwrap().contains("key.pem"));
    }

    #[test]
    fn the_known_files_are_where_the_tls_module_keeps_them() {
        let paths = crate::tls::files::StackPaths::new("/srv/stack");
        let known: Vec<PathBuf> = KNOWN.iter().map(|k| paths.dir.join(k.path)).collect();
        assert_eq!(known, [paths.cert(), paths.key(), paths.account()]);
    }

    #[test]
    fn a_path_elior_never_backs_up_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![
            ("nginx/ssl/cert.pem".to_string(), b"CERT".to_vec()),
            ("../outside".to_string(), b"x".to_vec()),
        ];
        let err = put_back(dir.path(), &files).unwrap_err();
        assert!(format!("{err:#}").contains("\"../outside\""), "{err:#}");
        assert!(!dir.path().join("nginx").exists());
        assert!(!dir.path().parent().unwrap().join("outside").exists());
    }
}
