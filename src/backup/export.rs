//! `elior backup export ID`: one backup as one plain tar.gz that any tar unpacks, for
//! people who want a single file to carry elsewhere: `elior-backup-ID/backup.json` (the
//! manifest), `elior-backup-ID/database.db` and `elior-backup-ID/uploads/...`.
//!
//! The backup is verified deeply first, and the export is written under a temporary name,
//! fsynced and renamed, so a half-written export never looks like a whole one. This
//! module reads backups and writes the export file; it never changes the backup folder.

use std::fs::{self, File};
use std::io::{self, BufWriter};
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

/// Writes backup `set` of folder `dir` to the new file `output`.
pub fn export(dir: &Path, set: &BackupSet, output: &Path) -> Result<ExportReport> {
    super::require_complete(set)?;
    let (verification, manifest) = super::verify_deep(dir, set);
    let manifest = match manifest.filter(|_| verification.ok) {
        Some(m) => m,
        None => bail!(
            "backup {} failed verification, so it was not exported\n{}",
            set.id,
            verification.problems.join("\n")
        ),
    };
    if fs::symlink_metadata(output).is_ok() {
        bail!(
            "{} already exists; refusing to overwrite it\npick another file with --output, or remove it",
            output.display()
        );
    }
    let temp = manifest::temp_path(output);
    let file = manifest::create_private(&temp)?;
    let written = (|| -> Result<u64> {
        let top = PathBuf::from(format!("elior-backup-{}", manifest.id));
        let gz = flate2::write::GzEncoder::new(
            BufWriter::with_capacity(1 << 20, file),
            flate2::Compression::default(),
        );
        let mut out = tar::Builder::new(gz);
        out.mode(tar::HeaderMode::Complete);
        let mut upload_files = 0;
        out.append_path_with_name(set.manifest_path(dir), top.join("backup.json"))
            .context("failed to add the manifest")?;
        if let Some(db) = manifest.file(PartName::Database) {
            out.append_path_with_name(dir.join(&db.name), top.join("database.db"))
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
        let gz = out.into_inner().context("failed to finish the export")?;
        let buffered = gz.finish().context("failed to finish the export")?;
        let file = buffered
            .into_inner()
            .map_err(|e| e.into_error())
            .context("failed to write the export")?;
        file.sync_all().context("failed to flush the export")?;
        Ok(upload_files)
    })();
    let upload_files = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = fs::remove_file(&temp);
            return Err(e.context(format!(
                "exporting backup {} to {} failed",
                set.id,
                output.display()
            )));
        }
    };
    if let Err(e) = manifest::commit(&temp, output) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    let size = fs::metadata(output).map(|m| m.len()).unwrap_or_default();
    Ok(ExportReport {
        backup: manifest.id,
        path: output.to_path_buf(),
        size,
        upload_files,
    })
}
