//! elior: provisions, deploys and maintains the Elior Fitness stack on one Docker host,
//! and is that stack's API server.
//!
//! Layout (see STYLE.md): `config` and `plan` are pure; `deploy` computes a stack's
//! rollout and carries it out; `db`, `probe` and the other effect modules talk to the world; `server` is the API; `cli` wires them together and
//! nothing imports it.
//!
//! No unsafe code, in any target: `[lints]` in Cargo.toml forbids it (with the other lints
//! every target is held to). The one foreign call no maintained crate wraps (glibc's
//! `malloc_trim` and `mallinfo2`, [`server::heap`]) is the workspace crate
//! `crates/heap-release`, behind safe functions.

pub mod auth;
pub mod backup;
pub mod cli;
pub mod config;
pub mod db;
pub mod deploy;
pub mod docker;
pub mod doctor;
pub mod files;
pub mod fsutil;
pub mod http;
pub mod lock;
pub mod logging;
pub mod plan;
pub mod probe;
pub mod provision;
pub mod schedule;
pub mod server;
pub mod tls;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_REVISION: &str = env!("ELIOR_GIT_REVISION");
