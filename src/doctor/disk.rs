//! Free space on a filesystem (measured by [`crate::fsutil::disk_space`]), judged the
//! same way for the Docker root (the docker check) and the database's disk (the database
//! check).

use super::Finding;
use crate::backup::human_bytes;

/// Free disk below either bound warns (issue 7).
pub const LOW_DISK_FRACTION: f64 = 0.10;
pub const LOW_DISK_BYTES: u64 = 1 << 30;
/// Free disk below this fraction fails: SQLite and uploads start failing with ENOSPC,
/// and the API answers 503 to writes.
pub const FULL_DISK_FRACTION: f64 = 0.05;

pub use crate::fsutil::Disk;

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
