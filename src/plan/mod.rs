//! Pure planning: from configuration and observed facts to data (what should exist).
//! No I/O, no async; exact-output tests.

pub mod retention;
