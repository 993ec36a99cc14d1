//! The stack's own files a backup carries besides the database and uploads, so that a new
//! host restored from it serves as the old one did (issue 17, item 7): the settings
//! (`.env.production`), the certificate and key nginx serves and the ACME account. Without
//! them, disaster recovery came back with a new self-signed certificate (or, with ACME, a
//! new account and an issuance that counts against the CA's rate limits), and needed the
//! old env file brought by hand.
//!
//! Only the paths of [`KNOWN`] are ever read or written, with the modes set here, whatever
//! a backup says: a backup cannot name a path or a mode. A restore puts a group back only
//! where the stack has none of its files, so a certificate renewed since the backup (or
//! one half of a pair) is never replaced by an older one.
//!
//! The env file holds JWT_SECRET (whoever has it signs tokens for any user of the live
//! API) and the S3 keys (whoever has them deletes the backups). A backup encrypted to
//! `BACKUP_RECIPIENTS` carries it whole. An unencrypted one, readable by anyone who reads
//! the bucket, carries it with those values withheld ([`withhold_secrets`]): reading the
//! backups must not give control of the server or of the backups. The restore then fills
//! them from its own environment (the keys it reached the bucket with) or, for
//! JWT_SECRET, with a new secret ([`put_back_env`]). The env file is put back before
//! anything else, by the restore command, because it says where the database, the uploads
//! and the backups go; an existing one is never replaced.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::envfile;
use crate::tls::files::{PUBLIC_MODE, SECRET_MODE};

/// The stack's settings file, as [`KNOWN`] names it.
pub const ENV_FILE: &str = super::settings::ENV_FILE;
/// The group of the env file, which the restore command puts back itself ([`put_back_env`]).
const SETTINGS: &str = "settings";

/// One file a snapshot may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// Relative to the stack directory; the name a snapshot records.
    pub path: &'static str,
    pub mode: u32,
    /// Files of one group go back together or not at all (a certificate and its key).
    pub group: &'static str,
}

/// Every file a backup may carry.
pub const KNOWN: [Known; 4] = [
    Known {
        path: ENV_FILE,
        mode: SECRET_MODE,
        group: SETTINGS,
    },
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

/// Stack files as read from a backup: (path, bytes).
pub type Carried = Vec<(String, Vec<u8>)>;

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

/// The known files the stack holds now: (path, bytes). A missing file is left out. Unless
/// `encrypted` (the backup is encrypted to recipients), the env file's secrets are
/// withheld ([`withhold_secrets`]).
pub fn read(stack_dir: &Path, encrypted: bool) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let mut found = Vec::new();
    for file in KNOWN {
        let path = stack_dir.join(file.path);
        match fs::read(&path) {
            Ok(bytes) if file.path == ENV_FILE && !encrypted => {
                let text = String::from_utf8(bytes)
                    .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
                let withheld = withhold_secrets(&text)
                    .with_context(|| format!("env file {} is malformed", path.display()))?;
                found.push((file.path, withheld.into_bytes()))
            }
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
/// is. Paths that are not [`KNOWN`] are refused before anything is written. The env file
/// is left to [`put_back_env`], which the restore runs first.
pub fn put_back(stack_dir: &Path, files: &[(String, Vec<u8>)]) -> Result<Vec<PutBack>> {
    let mut chosen: Vec<(Known, &[u8])> = Vec::new();
    for (path, bytes) in files {
        let known = known(path).with_context(|| {
            format!("the backup names a stack file {path:?} that elior never backs up; nothing was written")
        })?;
        if known.group != SETTINGS {
            chosen.push((known, bytes));
        }
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

/// The line that stands in an unencrypted backup's env file for a withheld `KEY=VALUE`.
const WITHHELD: &str = "# elior backup: withheld (the backup is not encrypted): ";

/// Whether an env-file value is one an unencrypted backup withholds: the secrets `config
/// show` hides, and a DATABASE_URL that carries a password.
fn is_secret(key: &str, value: &str) -> bool {
    may_be_withheld(key) && (key != "DATABASE_URL" || crate::db::pg::redact(value) != value)
}

/// Whether an unencrypted backup may have withheld `key` (and so a restore may fill it).
fn may_be_withheld(key: &str) -> bool {
    crate::config::stack::SECRET_KEYS.contains(&key) || key == "DATABASE_URL"
}

/// The env file's text with each secret line replaced by a [`WITHHELD`] line naming its
/// key; every other line is kept as it is.
pub fn withhold_secrets(text: &str) -> Result<String> {
    let entries = envfile::parse(text)?;
    let secret_lines: Vec<(usize, &str)> = entries
        .iter()
        .filter(|e| is_secret(&e.key, &e.value))
        .map(|e| (e.line, e.key.as_str()))
        .collect();
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.lines().enumerate() {
        match secret_lines.iter().find(|(at, _)| *at == index + 1) {
            Some((_, key)) => out.push_str(&format!("{WITHHELD}{key}")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    Ok(out)
}

/// The env file a restore writes from the backup's: each withheld secret comes from
/// `env` (this command's environment, which reached the bucket with the same keys), or,
/// for JWT_SECRET, is a new one; notes say which. A withheld line whose key is not a
/// secret elior withholds stays a comment.
fn fill_withheld(text: &str, env: &dyn Fn(&str) -> Option<String>) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut notes = Vec::new();
    for line in text.lines() {
        let key = line
            .strip_prefix(WITHHELD)
            .map(str::trim)
            .filter(|k| may_be_withheld(k));
        match key {
            None => out.push_str(line),
            Some(key) => match env(key).filter(|v| !v.is_empty()) {
                Some(value) => {
                    out.push_str(&format!("{key}={}", envfile::quote(&value)));
                    notes.push(format!("{key}: from this command's environment"));
                }
                None if key == "JWT_SECRET" => {
                    let secret = crate::config::stack::new_jwt_secret();
                    out.push_str(&format!("{key}={secret}"));
                    notes.push(
                        "JWT_SECRET: a new one (an unencrypted backup does not carry the old one); sessions from before end, users sign in again"
                            .to_string(),
                    );
                }
                None => {
                    out.push_str(line);
                    notes.push(format!(
                        "{key}: not in the backup (it is not encrypted) nor in this command's environment; set it in the env file"
                    ));
                }
            },
        }
        out.push('\n');
    }
    (out, notes)
}

/// What a restore did with the backup's env file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum EnvPutBack {
    /// The stack had none: the backup's was written (mode 0600), withheld secrets filled.
    Written { path: PathBuf, notes: Vec<String> },
    /// The stack's is the backup's (its secrets aside, for an unencrypted backup).
    Same { path: PathBuf },
    /// The stack's differs and was kept; the backup's is beside it, for you to compare.
    KeptDifferent { path: PathBuf, backup_copy: PathBuf },
}

impl EnvPutBack {
    /// One line for the restore's report.
    pub fn describe(&self) -> String {
        match self {
            EnvPutBack::Written { path, notes } => {
                let mut line = format!("settings  {} (from the backup)", path.display());
                for note in notes {
                    line.push_str(&format!("\n            {note}"));
                }
                line
            }
            EnvPutBack::Same { path } => {
                format!("settings  {} is the backup's; kept", path.display())
            }
            EnvPutBack::KeptDifferent { path, backup_copy } => format!(
                "settings  kept {}, which differs from the backup's; the backup's is at {} (compare them with diff)",
                path.display(),
                backup_copy.display()
            ),
        }
    }
}

/// Puts backup `id`'s env file (`carried`, as [`read`] stored it) into `stack_dir`: written
/// (0600, atomically, withheld secrets filled from `env`) where the stack has none; where
/// it has one, it is never replaced: a different one is kept and the backup's is written
/// beside it as `.env.production.backup-ID`.
pub fn put_back_env(
    stack_dir: &Path,
    id: &str,
    carried: &[u8],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<EnvPutBack> {
    let path = stack_dir.join(ENV_FILE);
    let carried = std::str::from_utf8(carried)
        .ok()
        .filter(|text| envfile::parse(text).is_ok())
        .with_context(|| {
            format!("backup {id} carries an env file that is not a valid {ENV_FILE}; nothing was written")
        })?;
    let withheld = carried.lines().any(|l| l.starts_with(WITHHELD));
    match fs::read(&path) {
        Ok(current) => {
            let current = String::from_utf8_lossy(&current);
            let comparable = if withheld {
                withhold_secrets(&current).unwrap_or_else(|_| current.to_string())
            } else {
                current.to_string()
            };
            if comparable == carried {
                return Ok(EnvPutBack::Same { path });
            }
            let backup_copy = stack_dir.join(format!("{ENV_FILE}.backup-{id}"));
            crate::fsutil::write_atomic(&backup_copy, carried.as_bytes(), SECRET_MODE)?;
            Ok(EnvPutBack::KeptDifferent { path, backup_copy })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (text, notes) = fill_withheld(carried, env);
            crate::fsutil::write_atomic(&path, text.as_bytes(), SECRET_MODE)?;
            Ok(EnvPutBack::Written { path, notes })
        }
        Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
}

/// The most bytes one stack file may have in an archive backup: a hostile archive cannot
/// make a restore read more (an env file, a certificate chain and an account are a few KiB).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// An archive backup's stack part (`stack_backup_ID.tar`): one plain tar entry per file,
/// named by its [`KNOWN`] path. The mode recorded is 0600; a restore sets its own.
pub fn to_tar(files: &[(&'static str, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, bytes.as_slice())
            .with_context(|| format!("failed to archive {path}"))?;
    }
    builder
        .into_inner()
        .context("failed to finish the stack files archive")
}

/// Reads an archive backup's stack part, refusing (naming the entry) anything but
/// regular files at [`KNOWN`] paths, each once and no bigger than [`MAX_FILE_BYTES`],
/// before anything is written.
pub fn from_tar(archive: &Path) -> Result<Carried> {
    use std::io::Read;
    let name = archive.display();
    let file = fs::File::open(archive).with_context(|| format!("failed to open {name}"))?;
    let mut tar = tar::Archive::new(file);
    let mut files: Carried = Vec::new();
    for entry in tar
        .entries()
        .with_context(|| format!("failed to read {name}"))?
    {
        let entry = entry.with_context(|| format!("failed to read {name}"))?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |why: &str| {
            anyhow::anyhow!("{name}: entry {path:?} {why}; refused, nothing was written")
        };
        if known(&path).is_none() {
            return Err(refuse("is not a file elior backs up"));
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(refuse("is not a regular file"));
        }
        if files.iter().any(|(p, _)| *p == path) {
            return Err(refuse("comes twice"));
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > MAX_FILE_BYTES {
            return Err(refuse(&format!(
                "is {size} bytes, over the {MAX_FILE_BYTES} a stack file may have"
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        entry
            .take(MAX_FILE_BYTES)
            .read_to_end(&mut bytes)
            .with_context(|| format!("failed to read {path} from {name}"))?;
        files.push((path, bytes));
    }
    Ok(files)
}

/// The stack files backup `id` (or `latest`) in `backup_dir` carries, each checked (a
/// snapshot's chunks against their names, an archive's part against its manifest) without
/// verifying the rest of the backup, which the restore does next: `(id, files)`. An
/// encrypted snapshot needs `identity`.
pub fn of_backup(
    backup_dir: &Path,
    id: &str,
    identity: Option<&Path>,
) -> Result<(String, Carried)> {
    let sets = super::scan(backup_dir)?;
    let set = super::find(&sets, id)?;
    super::require_complete(set)?;
    let id = set.id.clone();
    let refused = |e: anyhow::Error| {
        anyhow::anyhow!("backup {id} cannot be restored; nothing was changed\n{e:#}")
    };
    if !set.is_repository() {
        let manifest = super::manifest::Manifest::read(&set.manifest_path(backup_dir))?;
        let mut problems = manifest.problems();
        let Some(record) = manifest.file(super::manifest::PartName::Stack) else {
            return match problems.is_empty() {
                true => Ok((id, Vec::new())),
                false => Err(refused(anyhow::anyhow!(problems.join("\n")))),
            };
        };
        // This part alone against the manifest; the restore verifies the rest next.
        let only = super::manifest::Manifest {
            files: vec![record.clone()],
            ..manifest.clone()
        };
        problems.extend(super::manifest::check_files(backup_dir, &only));
        if !problems.is_empty() {
            return Err(refused(anyhow::anyhow!(problems.join("\n"))));
        }
        let files = from_tar(&backup_dir.join(&record.name)).map_err(refused)?;
        return Ok((id, files));
    }
    let root = super::repo::root(backup_dir);
    let _lock = super::repo::lock(&root, &format!("elior restore {id}"))?;
    let repository = super::repo::Repo::open(&root)?;
    let snapshot =
        super::repo::Snapshot::read(&super::repo::snapshot_path(&root, &id)).map_err(refused)?;
    let problems = snapshot.problems();
    if !problems.is_empty() {
        return Err(refused(anyhow::anyhow!(problems.join("\n"))));
    }
    let mut keyring = identity
        .map(super::repo::crypto::Keyring::from_file)
        .transpose()?;
    let content = snapshot
        .open(&repository, keyring.as_mut())
        .map_err(refused)?;
    let files = match &content.stack_files {
        None => Vec::new(),
        Some(part) => super::repo::read::stack_files(&repository, part, &id, keyring.as_mut())
            .map_err(refused)?,
    };
    Ok((id, files))
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
        let known: Vec<PathBuf> = KNOWN
            .iter()
            .filter(|k| k.group != SETTINGS)
            .map(|k| paths.dir.join(k.path))
            .collect();
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

    const ENV: &str = "DOMAIN=gym.example.com\n# the API's signing key\nJWT_SECRET=old-jwt-0123456789abcdef0123456789\nexport AWS_SECRET_ACCESS_KEY='old/aws+secret'\nDATABASE_URL=postgresql://elior:pg-pass@db:5432/elior\nAWS_ACCESS_KEY_ID=AKID\n";

    /// Reading the backups must not give control of the server or the bucket (issue 17,
    /// item 7): an unencrypted backup's env file has no secret in it; an encrypted one
    /// carries it whole.
    #[test]
    fn an_unencrypted_backup_withholds_the_secrets_and_keeps_every_other_line() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(ENV_FILE), ENV).unwrap();
        let carried = read(dir.path(), false).unwrap();
        let (path, bytes) = &carried[0];
        assert_eq!(*path, ENV_FILE);
        let text = String::from_utf8(bytes.clone()).unwrap();
        for secret in ["old-jwt", "old/aws+secret", "pg-pass"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(
            text,
            format!("DOMAIN=gym.example.com\n# the API's signing key\n{WITHHELD}JWT_SECRET\n{WITHHELD}AWS_SECRET_ACCESS_KEY\n{WITHHELD}DATABASE_URL\nAWS_ACCESS_KEY_ID=AKID\n")
        );
        assert_eq!(read(dir.path(), true).unwrap()[0].1, ENV.as_bytes());
        // A SQLite DATABASE_URL holds no password: it is carried.
        assert_eq!(
            withhold_secrets("DATABASE_URL=sqlite:///./elior.db\n").unwrap(),
            "DATABASE_URL=sqlite:///./elior.db\n"
        );
    }

    #[test]
    fn a_restore_fills_withheld_secrets_from_its_environment_or_makes_a_new_jwt_secret() {
        let dir = tempfile::tempdir().unwrap();
        let carried = withhold_secrets(ENV).unwrap();
        let env = |key: &str| (key == "AWS_SECRET_ACCESS_KEY").then(|| "new aws".to_string());
        let put = put_back_env(dir.path(), "20261201_020000", carried.as_bytes(), &env).unwrap();
        let path = dir.path().join(ENV_FILE);
        let EnvPutBack::Written { notes, .. } = &put else {
            panic!("{put:?}")
        };
        assert_eq!(mode(&path), 0o600);
        let raw = crate::config::RawSettings::from_env_file(&path).unwrap();
        assert_eq!(raw.get("AWS_SECRET_ACCESS_KEY"), Some("new aws"));
        assert_eq!(raw.get("DOMAIN"), Some("gym.example.com"));
        let secret = raw.get("JWT_SECRET").unwrap();
        assert_eq!(secret.len(), 64);
        assert_ne!(secret, "old-jwt-0123456789abcdef0123456789");
        assert_eq!(raw.get("DATABASE_URL"), None);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(
            notes[2].starts_with("DATABASE_URL: not in the backup"),
            "{notes:?}"
        );

        // Restored again over it: the same file, secrets aside.
        let again = put_back_env(dir.path(), "20261201_020000", carried.as_bytes(), &env).unwrap();
        assert!(matches!(again, EnvPutBack::Same { .. }), "{again:?}");
    }

    #[test]
    fn an_env_file_already_there_is_never_replaced_and_the_backups_goes_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ENV_FILE);
        fs::write(&path, "DOMAIN=other.example.com\n").unwrap();
        let put = put_back_env(dir.path(), "20261201_020000", ENV.as_bytes(), &|_| None).unwrap();
        let copy = dir.path().join(".env.production.backup-20261201_020000");
        assert_eq!(
            put,
            EnvPutBack::KeptDifferent {
                path: path.clone(),
                backup_copy: copy.clone()
            }
        );
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "DOMAIN=other.example.com\n"
        );
        assert_eq!(fs::read_to_string(&copy).unwrap(), ENV);
        assert_eq!(mode(&copy), 0o600);
        // An encrypted backup's env file is compared whole.
        fs::write(&path, ENV).unwrap();
        let put = put_back_env(dir.path(), "20261201_020000", ENV.as_bytes(), &|_| None).unwrap();
        assert!(matches!(put, EnvPutBack::Same { .. }), "{put:?}");
        // Not an env file: refused, nothing written.
        fs::remove_file(&path).unwrap();
        let err = put_back_env(dir.path(), "x", b"NOT A LINE\n", &|_| None).unwrap_err();
        assert!(
            format!("{err:#}").contains("not a valid .env.production"),
            "{err:#}"
        );
        assert!(!path.exists());
    }
}
