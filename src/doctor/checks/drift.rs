//! The compose file and nginx.conf on disk are what `elior render` writes from the
//! settings and templates now: a hand edit or a stale render is drift.

use serde::Serialize;

use super::{Check, CheckInfo, Group};
use crate::doctor::facts::Stack;
use crate::doctor::sources::Sources;
use crate::doctor::{Finding, NEEDS_SETTINGS};
use crate::plan::render::{self, Upstream};

pub struct Drift;

#[derive(Debug, Clone, Default, Serialize)]
pub struct DriftFacts {
    /// (file, "same" | "differs" | "missing")
    pub files: Vec<(String, String)>,
    pub error: Option<String>,
}

impl Check for Drift {
    const INFO: CheckInfo = CheckInfo {
        name: "drift",
        group: Group::Configuration,
        about: "the compose file and nginx.conf match what `elior render` writes",
    };
    type Facts = DriftFacts;

    async fn gather(sources: &Sources) -> DriftFacts {
        let Some(config) = &sources.config else {
            return DriftFacts {
                error: Some("the settings are not valid".into()),
                ..Default::default()
            };
        };
        match render::render_stack(config, &sources.templates, &Upstream::service(config)) {
            Err(e) => DriftFacts {
                error: Some(format!("{e:#}")),
                ..Default::default()
            },
            Ok(files) => DriftFacts {
                files: files
                    .iter()
                    .map(|file| {
                        let state = match std::fs::read_to_string(sources.dir.join(file.path)) {
                            Ok(text) if text == file.contents => "same",
                            Ok(_) => "differs",
                            Err(_) => "missing",
                        };
                        (file.path.to_string(), state.to_string())
                    })
                    .collect(),
                error: None,
            },
        }
    }

    fn judge(stack: &Stack, f: &DriftFacts) -> Vec<Finding> {
        if let Some(e) = &f.error {
            return vec![Finding::skipped(format!("{NEEDS_SETTINGS}: {e}"))];
        }
        let changed: Vec<String> = f
            .files
            .iter()
            .filter(|(_, state)| state != "same")
            .map(|(file, state)| format!("{file} ({state})"))
            .collect();
        if changed.is_empty() {
            vec![Finding::ok(format!(
                "{} match the templates",
                f.files
                    .iter()
                    .map(|(p, _)| p.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ))]
        } else {
            vec![Finding::failure(
            format!("rendered files differ from the templates: {}", changed.join(", ")),
            format!(
                "see the diff with `elior render --check --dir {0}`, then `elior render --dir {0}` (move hand edits into .env.production)",
                stack.dir
            ),
        )]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::{statuses, test_stack};
    use crate::doctor::Status;

    #[test]
    fn a_changed_file_fails_with_the_render_commands() {
        let files = |state: &str| DriftFacts {
            files: vec![
                ("docker-compose.yml".into(), "same".into()),
                ("nginx/nginx.conf".into(), state.into()),
            ],
            error: None,
        };
        let found = Drift::judge(&test_stack(), &files("same"));
        assert_eq!(
            found[0].finding,
            "docker-compose.yml and nginx/nginx.conf match the templates"
        );
        let found = Drift::judge(&test_stack(), &files("differs"));
        assert_eq!(statuses(&found), vec![Status::Failure]);
        assert_eq!(
            found[0].finding,
            "rendered files differ from the templates: nginx/nginx.conf (differs)"
        );
        assert!(found[0]
            .fix
            .as_deref()
            .unwrap()
            .starts_with("see the diff with `elior render --check --dir /srv/elior`"));
        let invalid = DriftFacts {
            error: Some("the settings are not valid".into()),
            ..Default::default()
        };
        assert_eq!(
            statuses(&Drift::judge(&test_stack(), &invalid)),
            vec![Status::Skipped]
        );
    }
}
