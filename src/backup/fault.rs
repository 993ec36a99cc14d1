//! Fault points for crash tests: `ELIOR_FAULT=NAME` makes a debug build SIGKILL itself when
//! it reaches the point called NAME (`restore:rename-2`, `backup:uploads-written`...), so
//! tests can stop a restore or a backup at each step of its journal, exactly as a power
//! cut or the OOM killer would: no destructor, no cleanup.
//!
//! `ELIOR_FAULT=NAME:pause` instead holds the process at that point: it creates the file
//! named by `ELIOR_FAULT_MARKER` and waits (up to two minutes) until the test removes it,
//! so a test can act (send a signal) while a backup is provably mid-way.
//!
//! A test hook only: release builds never read the variables.

use std::path::Path;
use std::time::{Duration, Instant};

/// The variable that names the point to die at.
pub const ENV: &str = "ELIOR_FAULT";
/// The marker file of a paused point.
pub const MARKER_ENV: &str = "ELIOR_FAULT_MARKER";

/// SIGKILLs this process if `ELIOR_FAULT` names this point, or holds it there if it names
/// `POINT:pause` (debug builds only).
pub fn point(name: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    let Ok(wanted) = std::env::var(ENV) else {
        return;
    };
    if wanted.strip_suffix(":pause") == Some(name) {
        pause();
        return;
    }
    if wanted != name {
        return;
    }
    // No unsafe code here (Cargo.toml's [lints] forbid it), so `kill(1)` delivers the
    // signal; this process dies while it waits for that child.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &std::process::id().to_string()])
        .status();
    // Only reached if kill(1) is missing; die without cleanup all the same.
    std::process::abort();
}

fn pause() {
    let Some(marker) = std::env::var_os(MARKER_ENV) else {
        return;
    };
    let marker = Path::new(&marker);
    if std::fs::write(marker, std::process::id().to_string()).is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while marker.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}
