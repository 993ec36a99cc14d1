//! Swarm mode (issue 21): the engine is a manager, a node carries the elior.db label when
//! elior runs the database, and every service's tasks run and are healthy.

use serde::Serialize;

use super::{Check, CheckInfo, Group};
use crate::doctor::facts::Stack;
use crate::doctor::sources::Sources;
use crate::doctor::Finding;

pub struct Swarm;

/// A swarm-mode stack (issue 21): the engine's swarm role, the database node label and
/// each service's tasks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SwarmFacts {
    /// manager, worker, inactive, or the engine's own word.
    pub state: String,
    pub hostname: String,
    /// elior runs the postgres service (no external DATABASE_URL).
    pub needs_db_node: bool,
    pub db_node_labelled: bool,
    pub services: Vec<SwarmServiceFacts>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SwarmServiceFacts {
    /// api, nginx, postgres.
    pub role: String,
    pub name: String,
    /// Replicas wanted; 1 for a global service on a single node.
    pub wanted: i64,
    /// Tasks running the service's current spec and healthy (or without a check).
    pub ready: usize,
    /// `task on node: error` of tasks that failed or are not healthy.
    pub problems: Vec<String>,
}

impl Check for Swarm {
    const INFO: CheckInfo = CheckInfo {
        name: "swarm",
        group: Group::Stack,
        about: "swarm mode: a manager, the elior.db node label, every task running and healthy",
    };
    /// `None` for a single-host stack.
    type Facts = Option<SwarmFacts>;

    async fn gather(sources: &Sources) -> Option<SwarmFacts> {
        use crate::plan::swarm::{SwarmState, DB_NODE_LABEL};
        if !sources.stack.swarm {
            return None;
        }
        let needs_db_node = sources.raw.as_ref().is_none_or(|r| {
            crate::deploy::swarm::database_of(r) == crate::deploy::swarm::Database::Service
        });
        let mut f = SwarmFacts {
            needs_db_node,
            ..Default::default()
        };
        let docker = match sources.docker().await {
            Ok(d) => d,
            Err(e) => {
                f.error = Some(e);
                return Some(f);
            }
        };
        let observed = match crate::docker::swarm::observe_swarm(&docker).await {
            Ok(o) => o,
            Err(e) => {
                f.error = Some(format!("{e:#}"));
                return Some(f);
            }
        };
        f.hostname = observed.hostname.clone();
        f.state = match &observed.swarm {
            SwarmState::Manager => "manager".into(),
            SwarmState::Worker => "worker".into(),
            SwarmState::Inactive => "inactive".into(),
            SwarmState::Other(s) => s.clone(),
        };
        f.db_node_labelled = observed
            .nodes
            .iter()
            .any(|n| n.labels.get(DB_NODE_LABEL).map(String::as_str) == Some("true"));
        let (Some(owner), SwarmState::Manager) = (&sources.owner, observed.swarm) else {
            return Some(f);
        };
        let (services, tasks) = match (
            crate::docker::swarm::services(&docker, owner).await,
            crate::docker::swarm::tasks(&docker, owner).await,
        ) {
            (Ok(s), Ok(t)) => (s, t),
            (Err(e), _) | (_, Err(e)) => {
                f.error = Some(format!("{e:#}"));
                return Some(f);
            }
        };
        for service in services {
            let Some(spec) = service.spec else { continue };
            let role = crate::docker::swarm::spec::role(&spec);
            let wanted = crate::docker::swarm::spec::wanted(&spec);
            let mine: Vec<_> = tasks.iter().filter(|t| t.service == role).collect();
            f.services.push(SwarmServiceFacts {
                name: spec.name.unwrap_or_default(),
                wanted,
                ready: mine.iter().filter(|t| t.is_ready()).count(),
                problems: mine
                    .iter()
                    .filter(|t| {
                        t.desired == "running"
                            && (!t.error.is_empty()
                                || !(t.health.is_empty() || t.health == "healthy"))
                    })
                    .map(|t| {
                        let why = if t.error.is_empty() {
                            &t.health
                        } else {
                            &t.error
                        };
                        format!("{} on {}: {why}", t.task, t.node)
                    })
                    .collect(),
                role,
            });
        }
        Some(f)
    }

    /// Refusals reuse the deploy's own wording (`plan::swarm::check`), so doctor and
    /// deploy name the same fix.
    fn judge(stack: &Stack, f: &Option<SwarmFacts>) -> Vec<Finding> {
        let f = f.as_ref();
        let Some(f) = f else {
            return vec![Finding::ok(
                "single-host stack (MODE=single): nothing runs on a swarm",
            )];
        };
        if let Some(e) = &f.error {
            return vec![Finding::failure(
                format!("cannot ask the engine about the swarm: {e}"),
                "run `elior doctor docker`",
            )];
        }
        use crate::plan::swarm::{self as plan, NodeFacts, Observed, SwarmState};
        let observed = Observed {
            swarm: match f.state.as_str() {
                "manager" => SwarmState::Manager,
                "worker" => SwarmState::Worker,
                "inactive" | "" => SwarmState::Inactive,
                other => SwarmState::Other(other.to_string()),
            },
            hostname: f.hostname.clone(),
            nodes: f
                .db_node_labelled
                .then(|| NodeFacts {
                    hostname: String::new(),
                    labels: [(plan::DB_NODE_LABEL.to_string(), "true".to_string())].into(),
                    ready: true,
                })
                .into_iter()
                .collect(),
            ..Default::default()
        };
        if let Err(message) = plan::check(&observed, f.needs_db_node) {
            let (finding, fix) = message.split_once('\n').unwrap_or((&message, ""));
            return vec![Finding::failure(finding, fix)];
        }
        let mut out = vec![Finding::ok(format!(
            "{} is a swarm manager{}",
            if f.hostname.is_empty() {
                "this engine"
            } else {
                &f.hostname
            },
            if f.needs_db_node {
                ", and a node carries elior.db=true"
            } else {
                ""
            }
        ))];
        if f.services.is_empty() {
            let domain = stack.domain.as_deref().unwrap_or("DOMAIN");
            out.push(Finding::failure(
                "the stack has no services on the swarm",
                format!("run `elior deploy {domain} --swarm --dir {}`", stack.dir),
            ));
            return out;
        }
        for s in &f.services {
            let line = format!(
                "{}: {} of {} tasks running and healthy",
                s.role, s.ready, s.wanted
            );
            if s.ready as i64 >= s.wanted && s.problems.is_empty() {
                out.push(Finding::ok(line));
            } else {
                out.push(
                    Finding::failure(
                        line,
                        format!(
                        "run `elior logs {} --dir {}` to see why; `elior update --dir {}` retries",
                        s.role, stack.dir, stack.dir
                    ),
                    )
                    .with_details(s.problems.clone()),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::test_stack;
    use crate::doctor::Status;

    fn judge(stack: &Stack, f: Option<&SwarmFacts>) -> Vec<Finding> {
        Swarm::judge(stack, &f.cloned())
    }

    #[test]
    fn swarm_findings_name_the_fix() {
        assert_eq!(judge(&test_stack(), None)[0].status, Status::Ok);
        let inactive = SwarmFacts {
            state: "inactive".into(),
            ..Default::default()
        };
        let f = &judge(&test_stack(), Some(&inactive))[0];
        assert_eq!(f.finding, "this Docker Engine is not part of a swarm");
        assert!(f
            .fix
            .as_deref()
            .unwrap()
            .starts_with("run `docker swarm init"));
        let unlabelled = SwarmFacts {
            state: "manager".into(),
            hostname: "node-1".into(),
            needs_db_node: true,
            ..Default::default()
        };
        let f = &judge(&test_stack(), Some(&unlabelled))[0];
        assert!(
            f.fix
                .as_deref()
                .unwrap()
                .contains("docker node update --label-add elior.db=true node-1"),
            "{f:?}"
        );
        let short = SwarmFacts {
            state: "manager".into(),
            services: vec![SwarmServiceFacts {
                role: "api".into(),
                name: "p-api".into(),
                wanted: 3,
                ready: 2,
                problems: vec!["api.3 on node-1: task: non-zero exit (1)".into()],
            }],
            ..Default::default()
        };
        let findings = judge(&test_stack(), Some(&short));
        assert_eq!(findings[1].finding, "api: 2 of 3 tasks running and healthy");
        assert_eq!(findings[1].status, Status::Failure);
        assert_eq!(
            findings[1].details,
            ["api.3 on node-1: task: non-zero exit (1)"]
        );
    }
}
