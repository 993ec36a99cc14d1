//! Certificates for the stack's nginx (issue 5): the self-signed bootstrap, ACME
//! issuance and renewal over HTTP-01, inspection of what is on disk and what is served,
//! and installing a new certificate with a verified, reversible nginx reload.
//!
//! Effectful code (files, network, processes). Whether a certificate is due for renewal
//! is decided in `plan::certs`; the command line lives in `cli::cert`.

pub mod acme;
pub mod files;
pub mod inspect;
pub mod install;
pub mod issue;
pub mod preflight;
pub mod resolve;
pub mod selfsigned;
pub mod served;
pub mod settings;
