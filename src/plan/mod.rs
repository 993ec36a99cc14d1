//! Pure planning: from validated settings and observed facts to what should exist or
//! happen. No I/O and no async here; tests assert exact outputs.

pub mod certs;
pub mod containers;
pub mod migrate;
pub mod offsite;
pub mod render;
pub mod retention;
pub mod swarm;
