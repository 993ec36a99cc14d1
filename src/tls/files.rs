//! Where a stack keeps its certificate material, and how files there are written.
//!
//! Owns the layout under a stack directory (`nginx/ssl/`, `nginx/acme/`,
//! `.elior/acme/`) and atomic, mode-setting writes. It decides nothing about what the
//! files should contain.

use std::fs;

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

pub use crate::fsutil::write_atomic;

/// Reads a file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("failed to read {}", path.display()))
}
