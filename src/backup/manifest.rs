//! The manifest of a backup (`backup_ID.json`): when it was taken, by which elior, at
//! which schema version, and the size and sha256 of each file. It is written last, so a
//! backup is complete exactly when its manifest exists. Also the sha256 and atomic-write
//! helpers the backup files share.
//!
//! This module reads and writes manifests and hashes files; it does not decide what a
//! backup contains.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::names::Part;

/// 2: the manifest carries its own checksum (issue 17). Format 1 manifests, which have
/// none, stay readable.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub created_at: String,
    pub elior_version: String,
    /// The database's schema version (highest applied migration), when it was backed up.
    pub schema_version: Option<i64>,
    /// Why it was taken: `manual`, `scheduled` or `pre-restore`.
    pub reason: String,
    /// The check the database copy passed: `quick_check` or `integrity_check`.
    pub database_check: Option<String>,
    /// What the database file is: absent for a SQLite copy, `postgresql-custom-dump` for
    /// a `pg_dump -Fc` file (see [`super::postgres::KIND`]). Absent fields keep the
    /// checksums of older manifests valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_kind: Option<String>,
    /// How many regular files the uploads archive holds.
    pub upload_files: Option<u64>,
    /// The bytes of file content in the uploads archive (bounds what a restore unpacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_bytes: Option<u64>,
    /// Swarm mode (issue 21): the objects of the uploads bucket when the backup was
    /// taken, by key under UPLOADS_URL's prefix. A listing, not copies: the bucket keeps
    /// the bytes (its versioning or replication protects them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_objects: Option<Vec<UploadObject>>,
    pub duration_ms: u64,
    pub files: Vec<FileRecord>,
    /// The sha256 of this manifest's JSON without this field (see [`Manifest::seal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// One object of the uploads bucket, as its listing gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadObject {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub part: PartName,
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

impl FileRecord {
    /// The record of part `part` of backup `id`, under the part's file name.
    pub fn new(part: PartName, id: &str, size: u64, sha256: String) -> FileRecord {
        FileRecord {
            part,
            name: part.part().file_name(id),
            size,
            sha256,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartName {
    Database,
    Uploads,
    Stack,
}

impl PartName {
    pub fn part(self) -> Part {
        match self {
            PartName::Database => Part::Database,
            PartName::Uploads => Part::Uploads,
            PartName::Stack => Part::Stack,
        }
    }
}

impl Manifest {
    pub fn file(&self, part: PartName) -> Option<&FileRecord> {
        self.files.iter().find(|f| f.part == part)
    }

    /// The sha256 of the compact JSON of every field but `checksum`, in declaration order.
    fn compute_checksum(&self) -> String {
        let body = Manifest {
            checksum: None,
            ..self.clone()
        };
        let json = serde_json::to_vec(&body).expect("manifest serialises");
        hex::encode(Sha256::digest(&json))
    }

    /// Sets the manifest's own checksum; call last, after every other field is set.
    pub fn seal(&mut self) {
        self.checksum = Some(self.compute_checksum());
    }

    /// What is wrong with the manifest itself, checked before any file it lists: its own
    /// checksum (from format 2 on) and a file list that is not empty.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.checksum {
            Some(sum) if *sum != self.compute_checksum() => problems.push(format!(
                "manifest of backup {} does not match its own checksum: it was changed or damaged",
                self.id
            )),
            None if self.format >= 2 => problems.push(format!(
                "manifest of backup {} (format {}) has no checksum",
                self.id, self.format
            )),
            _ => {}
        }
        // The stack's own files alone restore no data.
        if self.files.iter().all(|f| f.part == PartName::Stack) {
            problems.push(format!(
                "manifest of backup {} lists no files, so it restores nothing",
                self.id
            ));
        }
        problems
    }

    pub fn read(path: &Path) -> Result<Manifest> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("failed to read manifest {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("manifest {} is not an elior manifest", path.display()))
    }
}

/// A writer that hashes what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Returns the inner writer, the byte count and the hex sha256.
    pub fn finish(self) -> (W, u64, String) {
        (
            self.inner,
            self.written,
            hex::encode(self.hasher.finalize()),
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The size and hex sha256 of a file, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut file =
        File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("failed to read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// The hidden temporary name a file is written under before it is renamed into place.
pub fn temp_path(final_path: &Path) -> PathBuf {
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    final_path.with_file_name(format!(".{name}.tmp"))
}

/// Creates a new file with mode 0600 for writing, replacing a leftover temporary file.
pub fn create_private(path: &Path) -> Result<File> {
    let _ = fs::remove_file(path);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to create {}", path.display()))
}

/// Fsyncs `temp`, renames it to `final_path`, and fsyncs the directory so the rename
/// survives a crash.
pub fn commit(temp: &Path, final_path: &Path) -> Result<()> {
    File::open(temp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("failed to flush {}", temp.display()))?;
    fs::rename(temp, final_path).with_context(|| {
        format!(
            "failed to rename {} to {}",
            temp.display(),
            final_path.display()
        )
    })?;
    sync_dir(final_path.parent().unwrap_or(Path::new(".")))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("failed to flush directory {}", dir.display()))
}

/// Writes `bytes` to `path` atomically with mode 0600 (backups hold personal data).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsutil::write_atomic(path, bytes, 0o600)
}

/// Writes the manifest into `dir` as `backup_ID.json`, atomically.
pub fn write(dir: &Path, manifest: &Manifest) -> Result<PathBuf> {
    let path = dir.join(Part::Manifest.file_name(&manifest.id));
    let mut text = serde_json::to_string_pretty(manifest).expect("manifest serialises");
    text.push('\n');
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// Re-checks each file the manifest lists against its size and sha256. Returns one line
/// per problem; empty means the files are intact.
pub fn check_files(dir: &Path, manifest: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    for record in &manifest.files {
        let expected_name = record.part.part().file_name(&manifest.id);
        if record.name != expected_name {
            problems.push(format!(
                "manifest names {} but a backup with id {} must use {}",
                record.name, manifest.id, expected_name
            ));
            continue;
        }
        let path = dir.join(&record.name);
        match sha256_file(&path) {
            Err(e) => problems.push(format!("{e:#}")),
            Ok((size, _)) if size != record.size => problems.push(format!(
                "{} is {size} bytes; the manifest says {}",
                record.name, record.size
            )),
            Ok((_, sha)) if sha != record.sha256 => problems.push(format!(
                "{} has sha256 {sha}; the manifest says {}",
                record.name, record.sha256
            )),
            Ok(_) => {}
        }
    }
    problems
}
