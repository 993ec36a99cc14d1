//! What the integration tests share: the real binary and the real services they start
//! (nginx, pebble, PostgreSQL, moto, the Docker Engine), each in its own module and each
//! cleaned up by a guard's `Drop` even when a test fails.

pub mod api;
pub mod app;
pub mod backup;
pub mod cert;
pub mod docker;
pub mod metrics;
pub mod moto;
pub mod pg;
pub mod server;
pub mod stack;
pub mod tmpfs;
