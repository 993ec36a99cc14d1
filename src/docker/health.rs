//! Waiting for a container to become healthy. The engine has no such call, so this polls
//! `inspect_container` against a deadline; a container that exits or restarts fails at
//! once instead of at the deadline. On failure the error carries the container's last log
//! lines and its health log, so the user sees *why* without another command.
//!
//! Docker runs the first health check only one `interval` after start (10 s in the stack's
//! compose file), and engines before API 1.44 have no faster `start_interval`. So while
//! Docker still says `starting`, this also runs the container's own `CMD` health check
//! through `exec`: the same command in the same container, so "healthy" means the same
//! thing, but known within a fraction of a second of the server listening. Docker's own
//! verdict still wins when it comes first, and `unhealthy` from Docker still fails.
//!
//! It only observes: it never stops or removes the container (the caller decides).

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::LogsOptions;
use bollard::Docker;
use futures_util::StreamExt;

/// How many log lines a failure shows.
pub const FAILURE_LOG_LINES: usize = 50;
const POLL: Duration = Duration::from_millis(100);
/// How long elior's own run of a health check may take (the stack's own timeout is 5 s;
/// a check that slow is retried on the next poll).
const OWN_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits until `container` is running and (if it has a healthcheck) healthy.
pub async fn wait_healthy(docker: &Docker, container: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let inspect = docker
            .inspect_container(
                container,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .with_context(|| format!("failed to inspect container {container}"))?;
        let own_check = exec_form_check(&inspect);
        let state = inspect.state.unwrap_or_default();
        let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
        let health = state.health.as_ref().and_then(|h| h.status);
        let restarts = inspect.restart_count.unwrap_or(0);
        let failure = match status {
            ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD => Some(format!(
                "exited with code {}",
                state.exit_code.unwrap_or(-1)
            )),
            ContainerStateStatusEnum::RESTARTING => Some(format!(
                "is restarting (exit code {})",
                state.exit_code.unwrap_or(-1)
            )),
            _ if restarts > 0 => Some(format!("restarted {restarts} time(s)")),
            _ if health == Some(HealthStatusEnum::UNHEALTHY) => Some("is unhealthy".to_string()),
            ContainerStateStatusEnum::RUNNING
                if matches!(
                    health,
                    None | Some(
                        HealthStatusEnum::HEALTHY
                            | HealthStatusEnum::NONE
                            | HealthStatusEnum::EMPTY
                    )
                ) =>
            {
                return Ok(());
            }
            ContainerStateStatusEnum::RUNNING
                if health == Some(HealthStatusEnum::STARTING)
                    && own_check_passes(docker, container, own_check.as_deref()).await =>
            {
                return Ok(());
            }
            _ if Instant::now() >= deadline => Some(format!(
                "did not become healthy within {}s",
                timeout.as_secs()
            )),
            _ => None,
        };
        if let Some(reason) = failure {
            let logs = last_logs(docker, container, FAILURE_LOG_LINES)
                .await
                .unwrap_or_else(|e| format!("(could not read its logs: {e:#})"));
            let health_log = state
                .health
                .and_then(|h| h.log)
                .unwrap_or_default()
                .into_iter()
                .map(|r| {
                    format!(
                        "  exit {}: {}",
                        r.exit_code.unwrap_or(-1),
                        r.output.unwrap_or_default().trim()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            return Err(anyhow!(
                "container {container} {reason}\n--- its last {FAILURE_LOG_LINES} log lines ---\n{}\n--- its health log ---\n{}",
                logs.trim_end(),
                if health_log.is_empty() { "  (no health checks ran)".to_string() } else { health_log }
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether the health gate deploy waits for passes now: the container's own exec-form
/// health check, run once through exec. `status` uses it while Docker still says
/// `starting` (its first scheduled check can come up to one interval after deploy
/// returned), so a stack is `healthy` as soon as the gate that deploy passed holds.
pub async fn gate_passes(
    docker: &Docker,
    container: &str,
    inspect: &bollard::models::ContainerInspectResponse,
) -> bool {
    own_check_passes(docker, container, exec_form_check(inspect).as_deref()).await
}

/// The container's health check command when it has the exec form (`CMD`): a
/// `CMD-SHELL` check needs a shell, which a scratch image lacks.
fn exec_form_check(inspect: &bollard::models::ContainerInspectResponse) -> Option<Vec<String>> {
    inspect
        .config
        .as_ref()
        .and_then(|c| c.healthcheck.as_ref())
        .and_then(|h| h.test.as_deref())
        .and_then(|test| match test {
            [form, cmd @ ..] if form == "CMD" && !cmd.is_empty() => Some(cmd.to_vec()),
            _ => None,
        })
}

/// Runs the container's exec-form health check once; false when it fails, errs or takes
/// longer than [`OWN_CHECK_TIMEOUT`].
async fn own_check_passes(docker: &Docker, container: &str, cmd: Option<&[String]>) -> bool {
    let Some(cmd) = cmd else { return false };
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    matches!(
        tokio::time::timeout(
            OWN_CHECK_TIMEOUT,
            super::apply::exec(docker, container, &args)
        )
        .await,
        Ok(Ok((0, _)))
    )
}

/// The last `lines` lines a container wrote to stdout and stderr.
pub async fn last_logs(docker: &Docker, container: &str, lines: usize) -> Result<String> {
    let mut stream = docker.logs(
        container,
        Some(LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        }),
    );
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("failed to read the logs of {container}"))?;
        text.push_str(&chunk.to_string());
    }
    Ok(text)
}
