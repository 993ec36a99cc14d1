//! Free space on a filesystem, measured and judged the same way for the Docker root
//! (the docker check) and the database's disk (the database check).

use serde::Serialize;

use super::Finding;
use crate::backup::human_bytes;

/// Free disk below either bound warns (issue 7).
pub const LOW_DISK_FRACTION: f64 = 0.10;
pub const LOW_DISK_BYTES: u64 = 1 << 30;
/// Free disk below this fraction fails: SQLite and uploads start failing with ENOSPC,
/// and the API answers 500 to writes (issue 14).
pub const FULL_DISK_FRACTION: f64 = 0.05;

/// Space on the filesystem holding a path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Disk {
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// Space on the filesystem holding `path`.
pub fn measure(path: &std::path::Path) -> Option<Disk> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(Disk {
        total_bytes: s.f_blocks * s.f_frsize,
        free_bytes: s.f_bavail * s.f_frsize,
    })
}

/// `what path: X free of Y`, failed when (nearly) full, warned when low, with `fix`.
pub fn finding(what: &str, path: &str, disk: &Disk, fix: &str) -> Finding {
    let free = disk.free_bytes;
    let used_pct = if disk.total_bytes == 0 {
        0.0
    } else {
        100.0 * (disk.total_bytes - free.min(disk.total_bytes)) as f64 / disk.total_bytes as f64
    };
    let line = format!(
        "{what} {path}: {} free of {} ({used_pct:.0}% used)",
        human_bytes(free),
        human_bytes(disk.total_bytes)
    );
    if free == 0 || (free as f64) < disk.total_bytes as f64 * FULL_DISK_FRACTION {
        let full = if free == 0 { "full" } else { "nearly full" };
        Finding::failure(format!("{full} disk: {line}"), fix)
    } else if (free as f64) < disk.total_bytes as f64 * LOW_DISK_FRACTION || free < LOW_DISK_BYTES {
        Finding::warning(format!("low disk: {line}"), fix)
    } else {
        Finding::ok(line)
    }
}
