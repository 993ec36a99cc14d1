//! Where a stack keeps its certificate material, and how files there are written.
//!
//! Owns the layout under a stack directory (`nginx/ssl/`, `nginx/acme/`,
//! `.elior/acme/`) and atomic, mode-setting writes. It decides nothing about what the
//! files should contain.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Mode of private keys and the ACME account: readable by the owner (root) only.
pub const SECRET_MODE: u32 = 0o600;
/// Mode of public material and challenge files: nginx workers run unprivileged and
/// must be able to read them.
pub const PUBLIC_MODE: u32 = 0o644;

/// The path below the webroot where HTTP-01 tokens live: nginx serves
/// `location ^~ /.well-known/acme-challenge/ { root <webroot>; }` (certbot's webroot layout).
pub const CHALLENGE_DIR: &str = ".well-known/acme-challenge";

/// The certificate files of one stack directory.
#[derive(Debug, Clone)]
pub struct StackPaths {
    pub dir: PathBuf,
}

impl StackPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StackPaths { dir: dir.into() }
    }
    pub fn env_file(&self) -> PathBuf {
        self.dir.join(".env.production")
    }
    pub fn ssl_dir(&self) -> PathBuf {
        self.dir.join("nginx/ssl")
    }
    /// The full chain nginx serves: leaf first, then intermediates.
    pub fn cert(&self) -> PathBuf {
        self.ssl_dir().join("cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.ssl_dir().join("key.pem")
    }
    /// The ACME webroot nginx serves on port 80.
    pub fn webroot(&self) -> PathBuf {
        self.dir.join("nginx/acme")
    }
    pub fn challenge_dir(&self) -> PathBuf {
        self.webroot().join(CHALLENGE_DIR)
    }
    pub fn account(&self) -> PathBuf {
        self.dir.join(".elior/acme/account.json")
    }
}

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

/// Reads a file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("failed to read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/key.pem");
        write_atomic(&path, b"one", SECRET_MODE).unwrap();
        write_atomic(&path, b"two", SECRET_MODE).unwrap();
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
