//! Results on stdout, where a closed reader stops the printing and never the work
//! (issue 20): `elior backup | head -c 1` finishes the backup and exits with its true
//! status. Rust ignores SIGPIPE, so a write to a closed pipe fails with EPIPE, and
//! `println!` would panic on it midway through a command. Every result a subcommand
//! prints goes through [`outln!`] / [`out!`] instead.
//!
//! EPIPE is "the reader took what it wanted": later output is dropped silently. Any other
//! write error (a full disk under `> file`) is kept, and `main` turns it into exit 2 once
//! the command has finished, so a script never trusts a truncated result.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static CLOSED: AtomicBool = AtomicBool::new(false);
static FAILED: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes to stdout unless its reader has gone away.
pub fn write(args: fmt::Arguments) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let result = io::stdout().lock().write_fmt(args);
    record(result);
}

/// Flushes stdout (a `print!` without newline stays buffered until then).
pub fn flush() {
    if !CLOSED.load(Ordering::Relaxed) {
        record(io::stdout().lock().flush());
    }
}

fn record(result: io::Result<()>) {
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => CLOSED.store(true, Ordering::Relaxed),
        Err(e) => {
            // Nothing more would arrive intact; keep the first error for the exit code.
            CLOSED.store(true, Ordering::Relaxed);
            let mut failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
            failed.get_or_insert(e);
        }
    }
}

/// A write error other than EPIPE, if one happened.
pub fn failure() -> Option<io::Error> {
    FAILED.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// `print!` to stdout through [`write`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!($($arg)*))
    };
}

/// `println!` to stdout through [`write`].
macro_rules! outln {
    () => {
        $crate::cli::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}
