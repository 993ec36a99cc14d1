//! Each service of a single-host stack has its container, running and healthy: its
//! restarts, exit code, OOM kill and last log lines, and whether the API runs with the
//! env file's JWT_SECRET.

use serde::Serialize;

use super::{Check, CheckInfo, Group};
use crate::doctor::facts::Stack;
use crate::doctor::sources::Sources;
use crate::doctor::{Finding, NEEDS_SETTINGS};

/// Log lines shown under a failed container.
const LOG_LINES: usize = 20;

pub struct Containers;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ContainersFacts {
    pub project: String,
    pub error: Option<String>,
    pub expected: Vec<String>,
    pub containers: Vec<ContainerFacts>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ContainerFacts {
    pub service: String,
    pub name: String,
    pub state: String,
    pub health: Option<String>,
    pub restart_count: i64,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub last_logs: Vec<String>,
    /// For the API: whether the container runs with the env file's JWT_SECRET (compared
    /// in `gather`, never recorded); `None` when either side has none.
    pub jwt_secret_matches_env_file: Option<bool>,
}

impl Check for Containers {
    const INFO: CheckInfo = CheckInfo {
        name: "containers",
        group: Group::Stack,
        about: "each service runs and is healthy; restarts, exit codes, OOM kills",
    };
    /// `None` without valid settings, without a stack id, or in swarm mode.
    type Facts = Option<ContainersFacts>;

    async fn gather(sources: &Sources) -> Option<ContainersFacts> {
        if sources.stack.swarm {
            return None;
        }
        let owner = sources.owner.as_ref()?;
        sources.config.as_ref()?;
        let mut f = ContainersFacts {
            project: owner.project.clone(),
            expected: vec![
                crate::plan::containers::API_SERVICE.to_string(),
                crate::plan::containers::PROXY_SERVICE.to_string(),
            ],
            ..Default::default()
        };
        let docker = match sources.docker().await {
            Ok(d) => d,
            Err(e) => {
                f.error = Some(e);
                return Some(f);
            }
        };
        let file_secret = sources.setting("JWT_SECRET");
        let list = match crate::docker::stack_containers(&docker, owner).await {
            Ok(l) => l,
            Err(e) => {
                f.error = Some(format!("{e:#}"));
                return Some(f);
            }
        };
        for summary in list {
            let name = crate::docker::summary_name(&summary);
            let Ok(inspect) = docker
                .inspect_container(
                    &name,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
            else {
                continue;
            };
            let state = inspect.state.clone().unwrap_or_default();
            let mut c = ContainerFacts {
                service: service_of(&summary),
                state: state
                    .status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                health: state
                    .health
                    .as_ref()
                    .and_then(|h| h.status)
                    .map(|s| s.to_string())
                    .filter(|s| !s.is_empty() && s != "none"),
                restart_count: inspect.restart_count.unwrap_or(0),
                exit_code: state.exit_code,
                oom_killed: state.oom_killed.unwrap_or(false),
                last_logs: Vec::new(),
                jwt_secret_matches_env_file: None,
                name,
            };
            if c.service == crate::plan::containers::API_SERVICE {
                // Compared here and only the verdict kept: facts never hold a secret.
                let running = inspect
                    .config
                    .as_ref()
                    .and_then(|config| config.env.as_ref())
                    .and_then(|env| {
                        env.iter()
                            .find_map(|pair| pair.strip_prefix("JWT_SECRET="))
                            .map(str::trim)
                    });
                c.jwt_secret_matches_env_file = match (file_secret, running) {
                    (Some(file), Some(running)) => Some(file == running),
                    _ => None,
                };
            }
            if c.state != "running" || c.health.as_deref() == Some("unhealthy") {
                let logs = crate::docker::health::last_logs(&docker, &c.name, LOG_LINES)
                    .await
                    .unwrap_or_else(|e| format!("(could not read its logs: {e:#})"));
                c.last_logs = logs.lines().map(|l| l.trim_end().to_string()).collect();
            }
            f.containers.push(c);
        }
        Some(f)
    }

    fn judge(stack: &Stack, f: &Option<ContainersFacts>) -> Vec<Finding> {
        if stack.swarm {
            return vec![Finding::skipped(
                "swarm mode: the stack runs tasks, not containers (see the swarm check)",
            )];
        }
        let f = f.as_ref();
        let Some(f) = f else {
            if stack.project.is_none() && stack.config_error.is_none() {
                // Valid settings but no `.elior/stack.json`: an earlier release's directory,
                // which owns nothing on the engine until a deploy adopts it (issue 14).
                return vec![Finding::warning(
                format!(
                    "{}/.elior/stack.json is missing: this stack has no id, so no container is its own",
                    stack.dir
                ),
                format!(
                    "elior deploy {} --dir {} (gives it an id and adopts its containers)",
                    stack.domain_arg(),
                    stack.dir
                ),
            )];
            }
            return vec![Finding::skipped(NEEDS_SETTINGS)];
        };
        let deploy = format!("elior deploy {} --dir {}", stack.domain_arg(), stack.dir);
        if let Some(e) = &f.error {
            return vec![Finding::failure(
                format!("cannot list the stack's containers: {e}"),
                "see the docker check",
            )];
        }
        let mut out = Vec::new();
        for service in &f.expected {
            let found: Vec<&ContainerFacts> = f
                .containers
                .iter()
                .filter(|c| &c.service == service)
                .collect();
            if found.is_empty() {
                out.push(Finding::failure(
                    format!(
                        "{service}: no container (the stack {} is not deployed)",
                        f.project
                    ),
                    deploy.clone(),
                ));
                continue;
            }
            for c in found {
                let mut problems = Vec::new();
                if c.state != "running" {
                    problems.push(format!(
                        "is {}{}",
                        c.state,
                        c.exit_code
                            .map(|code| format!(" (exit code {code})"))
                            .unwrap_or_default()
                    ));
                }
                if c.oom_killed {
                    problems.push("was killed for running out of memory".into());
                }
                if c.health.as_deref() == Some("unhealthy") {
                    problems.push("is unhealthy".into());
                }
                if c.jwt_secret_matches_env_file == Some(false) {
                    // Not a container fault: the running API and the file disagree, so the
                    // next deploy logs everyone out, or a restore or rollback pairs tokens
                    // with the wrong key. Say which way to settle it.
                    out.push(Finding::failure(
                    format!(
                        "{service}: {} runs with a JWT_SECRET that differs from the one in {}",
                        c.name,
                        stack.env_path()
                    ),
                    format!(
                        "if the file's secret is the one you want, `elior update --dir {0}` recreates the API with it (everyone must log in again); if the file was changed by mistake, put the previous JWT_SECRET back in {1}",
                        stack.dir,
                        stack.env_path()
                    ),
                ));
                }
                if !problems.is_empty() {
                    out.push(
                    Finding::failure(
                        format!("{service}: {} {}", c.name, problems.join(", ")),
                        format!(
                            "read its logs with `elior logs {service} --dir {0}`, then `docker start {1}` or `{deploy}`",
                            stack.dir, c.name
                        ),
                    )
                    .with_details(c.last_logs.clone()),
                );
                } else if c.restart_count > 0 {
                    out.push(Finding::warning(
                        format!(
                            "{service}: {} running, but restarted {} time(s) (last exit code {})",
                            c.name,
                            c.restart_count,
                            c.exit_code.unwrap_or(0)
                        ),
                        format!("read why with `elior logs {service} --dir {}`", stack.dir),
                    ));
                } else {
                    out.push(Finding::ok(format!(
                        "{service}: {} running{}",
                        c.name,
                        c.health
                            .as_deref()
                            .map(|h| format!(", {h}"))
                            .unwrap_or_default()
                    )));
                }
            }
        }
        out
    }
}

/// The service label of a container (`api`, `nginx`).
pub(super) fn service_of(summary: &bollard::models::ContainerSummary) -> String {
    summary
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::docker::LABEL_SERVICE))
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::{statuses, test_stack};
    use crate::doctor::Status;

    fn judge(stack: &Stack, f: Option<&ContainersFacts>) -> Vec<Finding> {
        Containers::judge(stack, &f.cloned())
    }

    #[test]
    fn a_stopped_container_fails_with_its_logs() {
        let facts = ContainersFacts {
            project: "elior-fit".into(),
            expected: vec!["api".into(), "nginx".into()],
            containers: vec![ContainerFacts {
                service: "api".into(),
                name: "elior-fit-api".into(),
                state: "exited".into(),
                exit_code: Some(137),
                oom_killed: true,
                last_logs: vec!["out of memory".into()],
                ..Default::default()
            }],
            error: None,
        };
        let found = judge(&test_stack(), Some(&facts));
        assert_eq!(statuses(&found), vec![Status::Failure, Status::Failure]);
        assert_eq!(
            found[0].finding,
            "api: elior-fit-api is exited (exit code 137), was killed for running out of memory"
        );
        assert_eq!(found[0].details, vec!["out of memory".to_string()]);
        assert!(found[1].finding.contains("not deployed"));
    }

    #[test]
    fn an_api_running_with_another_jwt_secret_fails() {
        let api = |matches| ContainersFacts {
            project: "elior-fit".into(),
            expected: vec!["api".into()],
            containers: vec![ContainerFacts {
                service: "api".into(),
                name: "elior-fit-api".into(),
                state: "running".into(),
                health: Some("healthy".into()),
                jwt_secret_matches_env_file: matches,
                ..Default::default()
            }],
            error: None,
        };
        assert_eq!(
            statuses(&judge(&test_stack(), Some(&api(Some(true))))),
            vec![Status::Ok]
        );
        assert_eq!(
            statuses(&judge(&test_stack(), Some(&api(None)))),
            vec![Status::Ok]
        );
        let found = judge(&test_stack(), Some(&api(Some(false))));
        let failure = found.iter().find(|f| f.status == Status::Failure).unwrap();
        assert_eq!(
            failure.finding,
            "api: elior-fit-api runs with a JWT_SECRET that differs from the one in /srv/elior/.env.production"
        );
        assert!(failure.fix.as_deref().unwrap().starts_with(
            "if the file's secret is the one you want, `elior update --dir /srv/elior`"
        ));
    }

    // Issue 14: a directory without a stack id owns no container; doctor says how to
    // adopt, instead of "needs valid settings".
    #[test]
    fn a_stack_without_an_id_is_told_to_deploy_once() {
        let mut c = test_stack();
        c.project = None;
        let findings = Containers::judge(&c, &None);
        assert_eq!(statuses(&findings), vec![Status::Warning]);
        assert!(findings[0].finding.contains(".elior/stack.json is missing"));
        assert_eq!(
            findings[0].fix.as_deref(),
            Some("elior deploy fit.example.com --dir /srv/elior (gives it an id and adopts its containers)")
        );
        c.config_error = Some("bad".into());
        assert_eq!(
            statuses(&Containers::judge(&c, &None)),
            vec![Status::Skipped]
        );
    }

    #[test]
    fn a_swarm_stack_has_no_containers_to_judge() {
        let swarm = Stack {
            swarm: true,
            ..test_stack()
        };
        let found = Containers::judge(&swarm, &None);
        assert_eq!(statuses(&found), vec![Status::Skipped]);
        assert!(found[0].finding.starts_with("swarm mode"));
    }
}
