//! The one integration test binary (issue 20): every theme is a module here, and all of
//! them share one harness (`harness`). One binary links elior's dependencies once instead of
//! once per theme, and nextest still runs each test in its own process, so a test that
//! sets an environment variable or leaves a child behind cannot affect another.
//!
//! Run one theme with `cargo nextest run --test it -E 'test(/^swarm::/)'`.

mod harness;

mod api;
mod backup;
mod backup_offsite;
mod backup_pg;
mod backup_repo;
mod cert;
mod cli;
mod db_pg;
mod deploy;
mod doctor;
mod ops;
mod probe;
mod provision;
mod routes;
mod serve;
mod serve_scale;
mod stack_ops;
mod stacks;
mod swarm;
mod swarm_cert;
mod swarm_restore;
mod templates;
mod uploads_s3;
