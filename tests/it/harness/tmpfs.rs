//! A small filesystem of its own for a test that needs a full disk: a tmpfs mounted on a
//! folder for the length of the test, unmounted on drop, after a failure too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TmpfsMount(PathBuf);

impl TmpfsMount {
    /// Mounts a tmpfs of `size` (`mount`'s syntax: `4m`) on `at`, creating the folder.
    pub fn new(at: &Path, size: &str) -> TmpfsMount {
        std::fs::create_dir_all(at).unwrap();
        let options = format!("size={size},mode=0700");
        mount(&["-t", "tmpfs", "-o", &options, "tmpfs"], at);
        TmpfsMount(at.to_path_buf())
    }

    /// Fills what is left of the filesystem with one file, as a runaway log would, down
    /// to the last byte; returns its path, so the test can free the space again.
    pub fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0x55u8; 16 * 1024];
        while file.write_all(&block).is_ok() {}
        while file.write_all(&block[..1]).is_ok() {}
        path
    }

    /// Grows (or shrinks) the filesystem in place; what it holds stays.
    pub fn resize(&self, size: &str) {
        mount(&["-o", &format!("remount,size={size}")], &self.0);
    }
}

/// `mount ARGS AT`, which must succeed.
fn mount(args: &[&str], at: &Path) {
    let out = Command::new("mount").args(args).arg(at).output().unwrap();
    assert!(
        out.status.success(),
        "mount {args:?} {}: {}",
        at.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}
