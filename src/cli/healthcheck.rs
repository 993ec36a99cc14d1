//! `elior healthcheck`: the container's HEALTHCHECK.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::probe::http::{get_status, HttpUrl};

/// Exit 0 when the API's /health answers 200 in time, 1 otherwise.
///
/// Made for Docker's exec-form HEALTHCHECK in a FROM scratch image, where there is no
/// curl, wget or shell. Prints one line saying why it failed.
#[derive(Args)]
pub struct HealthcheckArgs {
    /// URL to check [default: http://127.0.0.1:PORT/health, PORT from BIND_ADDRESS or 8000]
    #[arg(long)]
    url: Option<String>,
    /// Seconds to wait for the answer
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    timeout: f64,
}

impl HealthcheckArgs {
    pub fn run(self) -> Result<ExitCode> {
        let url = self.url.unwrap_or_else(default_url);
        let parsed = HttpUrl::parse(&url)?;
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            anyhow::bail!(
                "--timeout {} is not a positive number of seconds",
                self.timeout
            );
        }
        match get_status(&parsed, Duration::from_secs_f64(self.timeout)) {
            Ok(200) => {
                outln!("healthy: {url} answered 200");
                Ok(ExitCode::SUCCESS)
            }
            Ok(status) => {
                eprintln!("unhealthy: {url} answered {status}");
                Ok(ExitCode::from(super::EXIT_CHECK_FAILED))
            }
            Err(e) => {
                eprintln!("unhealthy: {url}: {e:#}");
                Ok(ExitCode::from(super::EXIT_CHECK_FAILED))
            }
        }
    }
}

fn default_url() -> String {
    let port = std::env::var("BIND_ADDRESS")
        .ok()
        .and_then(|b| b.parse::<std::net::SocketAddr>().ok())
        .map_or(8000, |a| a.port());
    format!("http://127.0.0.1:{port}/health")
}
