//! `elior backup export ID`: one backup as one plain tar.zst (or tar.gz, by the output's
//! name) that any tar unpacks, for people who want a single file to carry elsewhere:
//! `elior-backup-ID/backup.json` (the manifest, or for a repository snapshot a summary
//! of it), `elior-backup-ID/database.db` (`database.pgdump`, for `pg_restore`, when the
//! stack is on PostgreSQL) and `elior-backup-ID/uploads/...`. An encrypted
//! snapshot needs its identity, and is exported in the clear: keep the file safe.
//!
//! The backup is verified deeply first, and the export is written under a temporary name,
//! fsynced and renamed, so a half-written export never looks like a whole one. This
//! module reads backups and writes the export file; it never changes the backup folder.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use tar::EntryType;

use super::manifest::{self, PartName};
use super::BackupSet;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    pub backup: String,
    pub path: PathBuf,
    pub size: u64,
    pub upload_files: u64,
}

/// The compressed stream the export is written through: zstd, or gzip for an output
/// named `.gz` or `.tgz`.
enum Sink {
    Gz(flate2::write::GzEncoder<BufWriter<File>>),
    Zst(zstd::Encoder<'static, BufWriter<File>>),
}

impl Sink {
    fn new(output: &Path, file: File) -> Result<Sink> {
        let buffered = BufWriter::with_capacity(1 << 20, file);
        let name = output.to_string_lossy();
        Ok(if name.ends_with(".gz") || name.ends_with(".tgz") {
            Sink::Gz(flate2::write::GzEncoder::new(
                buffered,
                flate2::Compression::default(),
            ))
        } else {
            Sink::Zst(zstd::Encoder::new(buffered, 3).context("failed to start zstd")?)
        })
    }

    fn finish(self) -> io::Result<File> {
        let buffered = match self {
            Sink::Gz(gz) => gz.finish()?,
            Sink::Zst(zst) => zst.finish()?,
        };
        buffered.into_inner().map_err(|e| e.into_error())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Gz(w) => w.write(buf),
            Sink::Zst(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Gz(w) => w.flush(),
            Sink::Zst(w) => w.flush(),
        }
    }
}

/// Writes `output` through a temporary file, fsynced and renamed; nothing is left behind
/// when `fill` fails.
fn write_export(
    output: &Path,
    id: &str,
    fill: impl FnOnce(&mut tar::Builder<Sink>) -> Result<u64>,
) -> Result<(u64, u64)> {
    if fs::symlink_metadata(output).is_ok() {
        bail!(
            "{} already exists; refusing to overwrite it\npick another file with --output, or remove it",
            output.display()
        );
    }
    let temp = manifest::temp_path(output);
    let file = manifest::create_private(&temp)?;
    let written = (|| -> Result<u64> {
        let mut out = tar::Builder::new(Sink::new(output, file)?);
        out.mode(tar::HeaderMode::Complete);
        let upload_files = fill(&mut out)?;
        let sink = out.into_inner().context("failed to finish the export")?;
        let file = sink.finish().context("failed to write the export")?;
        file.sync_all().context("failed to flush the export")?;
        Ok(upload_files)
    })();
    let upload_files = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = fs::remove_file(&temp);
            return Err(e.context(format!(
                "exporting backup {id} to {} failed",
                output.display()
            )));
        }
    };
    if let Err(e) = manifest::commit(&temp, output) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    let size = fs::metadata(output).map(|m| m.len()).unwrap_or_default();
    Ok((size, upload_files))
}

/// Appends a file of `bytes` at `name`.
fn append_bytes<W: Write>(out: &mut tar::Builder<W>, name: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
    out.append_data(&mut header, name, bytes)
}

/// Writes repository snapshot `set` to `output`: checked in full first (with the
/// identity when it is encrypted), then the database rebuilt and the uploads streamed.
fn export_snapshot(
    dir: &Path,
    set: &BackupSet,
    output: &Path,
    identity: Option<&Path>,
) -> Result<ExportReport> {
    let root = super::repo::root(dir);
    let _lock = super::repo::lock(&root, &format!("elior backup export {}", set.id))?;
    let repo = super::repo::Repo::open(&root)?;
    let keyring = identity
        .map(super::repo::crypto::Keyring::from_file)
        .transpose()?;
    let snapshot = super::repo::Snapshot::read(&super::repo::snapshot_path(&root, &set.id))?;
    let mut checker = super::repo::read::Checker::new(&repo, keyring);
    let found = checker.check(&snapshot, true, None);
    if !found.problems.is_empty() {
        bail!(
            "backup {} failed verification, so it was not exported\n{}",
            set.id,
            found.problems.join("\n")
        );
    }
    let mut keyring = checker.keyring.take();
    let content = snapshot.open(&repo, keyring.as_mut())?;
    let (size, upload_files) = write_export(output, &set.id, |out| {
        let top = PathBuf::from(format!("elior-backup-{}", set.id));
        let summary = serde_json::json!({
            "id": snapshot.id,
            "created_at": snapshot.created_at,
            "elior_version": snapshot.elior_version,
            "reason": snapshot.reason,
            "schema_version": content.schema_version,
            "database": content.database.as_ref().map(|d| serde_json::json!({"size": d.size, "sha256": d.sha256})),
            "uploads": content.uploads.as_ref().map(|u| serde_json::json!({"files": u.files, "bytes": u.bytes})),
        });
        let mut text = serde_json::to_vec_pretty(&summary).expect("summary serialises");
        text.push(b'\n');
        append_bytes(out, &top.join("backup.json"), &text).context("failed to add the summary")?;
        if let Some(db) = &content.database {
            let tmp = root
                .join(super::repo::TMP_DIR)
                .join(format!("export-{}.db", std::process::id()));
            let rebuilt = (|| -> Result<()> {
                let file = manifest::create_private(&tmp)?;
                super::repo::read::write_database(&repo, db, &set.id, keyring.as_mut(), file)?;
                out.append_path_with_name(&tmp, top.join(database_entry(db.kind.as_deref())))
                    .context("failed to add the database")
            })();
            let _ = fs::remove_file(&tmp);
            rebuilt?;
        }
        let mut files = 0;
        if let Some(up) = &content.uploads {
            files = super::repo::read::write_uploads_tar(
                &repo,
                up,
                &set.id,
                keyring.as_mut(),
                &top,
                out,
            )?
            .0;
        }
        Ok(files)
    })?;
    Ok(ExportReport {
        backup: set.id.clone(),
        path: output.to_path_buf(),
        size,
        upload_files,
    })
}

/// Writes backup `set` of folder `dir` to the new file `output`; `identity` opens an
/// encrypted snapshot.
pub fn export(
    dir: &Path,
    set: &BackupSet,
    output: &Path,
    identity: Option<&Path>,
) -> Result<ExportReport> {
    super::require_complete(set)?;
    if set.is_repository() {
        return export_snapshot(dir, set, output, identity);
    }
    let (verification, manifest) = super::verify_deep(dir, set);
    let manifest = match manifest.filter(|_| verification.ok) {
        Some(m) => m,
        None => bail!(
            "backup {} failed verification, so it was not exported\n{}",
            set.id,
            verification.problems.join("\n")
        ),
    };
    let (size, upload_files) = write_export(output, &set.id, |out| {
        let top = PathBuf::from(format!("elior-backup-{}", manifest.id));
        let mut upload_files = 0;
        out.append_path_with_name(set.manifest_path(dir), top.join("backup.json"))
            .context("failed to add the manifest")?;
        if let Some(db) = manifest.file(PartName::Database) {
            let entry = database_entry(manifest.database_kind.as_deref());
            out.append_path_with_name(dir.join(&db.name), top.join(entry))
                .with_context(|| format!("failed to add {}", db.name))?;
        }
        if let Some(uploads) = manifest.file(PartName::Uploads) {
            let path = dir.join(&uploads.name);
            let source =
                File::open(&path).with_context(|| format!("failed to open {}", path.display()))?;
            let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(
                io::BufReader::with_capacity(1 << 20, source),
            ));
            let damaged = || format!("archive {} is damaged", path.display());
            for entry in archive.entries().with_context(damaged)? {
                let mut entry = entry.with_context(damaged)?;
                let name = entry.path().with_context(damaged)?.into_owned();
                if super::archive::relative_in_root(&name).is_none() {
                    bail!(
                        "archive {} holds {name:?}, outside uploads/",
                        path.display()
                    );
                }
                let mut header = entry.header().clone();
                let at = top.join(&name);
                match header.entry_type() {
                    EntryType::Symlink => {
                        let target = entry
                            .link_name()
                            .with_context(damaged)?
                            .ok_or_else(|| anyhow!("{name:?} is a symlink with no target"))?
                            .into_owned();
                        out.append_link(&mut header, &at, &target)
                    }
                    EntryType::Regular | EntryType::Continuous => {
                        upload_files += 1;
                        out.append_data(&mut header, &at, &mut entry)
                    }
                    EntryType::Directory => out.append_data(&mut header, &at, io::empty()),
                    _ => bail!("archive {} holds {name:?}, a special file", path.display()),
                }
                .with_context(|| format!("failed to add {}", name.display()))?;
            }
        }
        Ok(upload_files)
    })?;
    Ok(ExportReport {
        backup: manifest.id,
        path: output.to_path_buf(),
        size,
        upload_files,
    })
}

/// The database's name in an export: a pg_dump file is named for what it is, so nobody
/// opens it with sqlite3.
fn database_entry(kind: Option<&str>) -> &'static str {
    match kind {
        Some(super::postgres::KIND) => "database.pgdump",
        _ => "database.db",
    }
}
