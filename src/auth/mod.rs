//! Credentials: argon2id password hashes and HS256 access tokens. Pure functions of their
//! inputs and keys; no database, no HTTP.

pub mod password;
pub mod token;
