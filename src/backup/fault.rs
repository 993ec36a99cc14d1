//! Fault points for crash tests: `ELIOR_FAULT=NAME` makes a debug build SIGKILL itself when
//! it reaches the point called NAME (`restore:rename-2`, `backup:uploads-written`...), so
//! tests can stop a restore or a backup at each step of its journal, exactly as a power
//! cut or the OOM killer would: no destructor, no cleanup.
//!
//! A test hook only: release builds never read the variable.

/// The variable that names the point to die at.
pub const ENV: &str = "ELIOR_FAULT";

/// SIGKILLs this process if `ELIOR_FAULT` names this point (debug builds only).
pub fn point(name: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    if std::env::var(ENV).ok().as_deref() != Some(name) {
        return;
    }
    // No unsafe code here (lib.rs forbids it), so `kill(1)` delivers the signal; this
    // process dies while it waits for that child.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &std::process::id().to_string()])
        .status();
    // Only reached if kill(1) is missing; die without cleanup all the same.
    std::process::abort();
}
