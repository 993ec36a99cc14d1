//! Small filesystem helpers shared by every module that writes files: one atomic write,
//! so no config, key, manifest or upload is ever seen half-written.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a
/// partial one: a temp file in the same directory, fsync, rename, fsync of the directory.
/// Creates missing parent directories. On any failure the temp file is removed and
/// `path` is untouched (this is what keeps a full disk from corrupting a key).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given to open() is filtered by the umask; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if let Err(err) = result {
        let _ = fs::remove_file(&tmp);
        return Err(err).with_context(|| format!("failed to write {}", path.display()));
    }
    Ok(())
}

/// Space on the filesystem holding a path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Disk {
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// Space on the filesystem holding `path` (for doctor's checks, and for the errors of
/// backups, restores and the server that ran out of it).
pub fn disk_space(path: &Path) -> Option<Disk> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(Disk {
        total_bytes: s.f_blocks * s.f_frsize,
        free_bytes: s.f_bavail * s.f_frsize,
    })
}

/// Whether an error anywhere in `error`'s chain is a write that failed for want of space
/// (ENOSPC or a disk quota): a full disk, which an operator must free, not a bug.
pub fn is_out_of_space(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_space_is_found_under_any_context_and_only_for_a_full_disk() {
        let full = anyhow::Error::new(std::io::Error::from_raw_os_error(28))
            .context("failed to write /srv/uploads/a.png");
        assert!(is_out_of_space(&full.context("upload failed")));
        let quota = anyhow::Error::new(std::io::Error::from_raw_os_error(122));
        assert!(is_out_of_space(&quota));
        let denied = anyhow::Error::new(std::io::Error::from_raw_os_error(13)).context("x");
        assert!(!is_out_of_space(&denied));
        assert!(!is_out_of_space(&anyhow::anyhow!(
            "no space left on device"
        )));
    }

    #[test]
    fn write_atomic_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/key.pem");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }
}
