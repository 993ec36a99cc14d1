//! The container engine step: the distribution's Docker packages through apt (never a
//! curl-to-shell installer), the service enabled and running, and an Engine API that
//! elior speaks. Pure: the parsers of dpkg/apt output and the plan.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Action, Step, StepPlan, Target};

/// The engine package elior installs, and the other packages that count as an engine
/// (Docker's own repository, Moby): one of them installed means "do not install ours".
pub const ENGINE_PACKAGE: &str = "docker.io";
pub const ENGINE_PACKAGES: [&str; 3] = ["docker.io", "docker-ce", "moby-engine"];
/// The compose plugin's package names, in order of preference. Debian's `docker-compose`
/// is the plugin only from version 2 (trixie); bookworm's 1.29 is the old Python tool.
pub const COMPOSE_PACKAGES: [&str; 3] = [
    "docker-compose-plugin",
    "docker-compose-v2",
    "docker-compose",
];
/// The oldest Engine API elior's client speaks (bollard, negotiated; see docker::connect).
pub const MIN_API: (u32, u32) = (1, 41);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Have {
    /// Installed version of each engine and compose package (absent: not installed).
    pub installed: BTreeMap<String, String>,
    /// Candidate version apt would install, for the compose packages.
    pub candidates: BTreeMap<String, String>,
    /// `docker compose version` works.
    pub compose_plugin: bool,
    /// A dockerd binary on the PATH (it may come from outside apt).
    pub dockerd: Option<String>,
    /// `systemctl is-enabled` / `is-active` of docker.service; None without systemd.
    pub service: Option<Service>,
    pub api_version: Option<String>,
    pub api_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Service {
    pub enabled: String,
    pub active: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Want {
    pub engine: String,
    pub compose: Option<String>,
    pub service: &'static str,
    pub min_api: String,
}

/// Parses `dpkg-query -W -f '${Package}\t${db:Status-Abbrev}\t${Version}\n'`: the
/// installed packages (status `ii`) and their versions.
pub fn parse_dpkg_query(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (name, status, version) = (fields.next()?, fields.next()?, fields.next()?);
            let name = name.split(':').next().unwrap_or(name);
            (status.trim() == "ii").then(|| (name.to_string(), version.to_string()))
        })
        .collect()
}

/// Parses `apt-cache policy PKG...`: each package's candidate, when it has one.
pub fn parse_apt_policy(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            current = Some(line.trim_end_matches(':').to_string());
        } else if let (Some(name), Some(candidate)) =
            (&current, line.trim().strip_prefix("Candidate:"))
        {
            let candidate = candidate.trim();
            if candidate != "(none)" {
                out.insert(name.clone(), candidate.to_string());
            }
        }
    }
    out
}

/// `1.41` as (1, 41).
pub fn parse_api(version: &str) -> Option<(u32, u32)> {
    let (major, minor) = version.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The Debian version's upstream major: `2.26.1-4` -> 2, `1:2.0-1` -> 2.
fn upstream_major(version: &str) -> Option<u32> {
    let upstream = version.split_once(':').map_or(version, |(_, v)| v);
    upstream.split(['.', '-', '+', '~']).next()?.parse().ok()
}

/// The compose package to install: the first with a candidate that is the v2 plugin.
pub fn compose_package(candidates: &BTreeMap<String, String>) -> Option<String> {
    COMPOSE_PACKAGES.iter().find_map(|name| {
        let version = candidates.get(*name)?;
        let plugin = *name != "docker-compose" || upstream_major(version).is_some_and(|m| m >= 2);
        plugin.then(|| name.to_string())
    })
}

pub fn plan(have: &Have, target: &Target) -> StepPlan {
    let compose = compose_package(&have.candidates);
    let want = Want {
        engine: ENGINE_PACKAGE.into(),
        compose: compose.clone(),
        service: "enabled, active",
        min_api: format!("{}.{}", MIN_API.0, MIN_API.1),
    };
    let mut plan = StepPlan::new(Step::Engine, &want, have);
    let engine = ENGINE_PACKAGES
        .iter()
        .find(|p| have.installed.contains_key(**p));
    let mut packages = Vec::new();
    match (engine, &have.dockerd) {
        (Some(_), _) => {}
        (None, Some(dockerd)) => plan.notes.push(format!(
            "{dockerd} is not from a Debian package; elior leaves that engine as it is"
        )),
        (None, None) => packages.push(ENGINE_PACKAGE.to_string()),
    }
    if !have.compose_plugin {
        match &compose {
            Some(name) => packages.push(name.clone()),
            None => plan.notes.push(format!(
                "no compose plugin in apt ({}); elior deploys without it",
                COMPOSE_PACKAGES[..2].join(", ")
            )),
        }
    }
    if !target.live() {
        if !packages.is_empty() {
            plan.notes.push(format!(
                "--root {}: packages and services belong to the live host; left out: apt-get install {}",
                target.root.display(),
                packages.join(" ")
            ));
        }
        return plan;
    }
    if !packages.is_empty() {
        plan.actions.push(Action::AptInstall { packages });
    }
    match &have.service {
        Some(service) if service.enabled != "enabled" || service.active != "active" => {
            plan.actions.push(Action::Systemctl {
                args: vec!["enable".into(), "--now".into(), "docker.service".into()],
            })
        }
        Some(_) => {}
        None => plan.notes.push(
            "systemd is not running here: start dockerd under this host's init yourself".into(),
        ),
    }
    match have.api_version.as_deref().and_then(parse_api) {
        Some(api) if api < MIN_API => plan.warnings.push(format!(
            "the Engine API is {}.{}, older than the {}.{} elior needs\nupgrade the engine (apt-get upgrade {ENGINE_PACKAGE})",
            api.0, api.1, MIN_API.0, MIN_API.1
        )),
        Some(_) => {}
        // Checked again once the step is applied; before that, a missing engine is expected.
        None => {}
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_dpkg_and_apt() {
        let dpkg = "docker.io\tii \t20.10.24+dfsg1-1+deb12u1+b6\ndocker-ce\tun \t\ndocker-compose\tii \t1.29.2-3\nlibc6:amd64\tii \t2.36\n";
        assert_eq!(
            parse_dpkg_query(dpkg),
            map(&[
                ("docker.io", "20.10.24+dfsg1-1+deb12u1+b6"),
                ("docker-compose", "1.29.2-3"),
                ("libc6", "2.36")
            ])
        );
        // Captured on Debian 12 (docker-compose-v2 is Ubuntu's; unknown here).
        let policy = "docker.io:\n  Installed: (none)\n  Candidate: 20.10.24+dfsg1-1+deb12u1+b6\n  Version table:\n     20.10.24+dfsg1-1+deb12u1+b6 500\n        500 http://deb.debian.org/debian bookworm/main amd64 Packages\ndocker-compose:\n  Installed: 1.29.2-3\n  Candidate: 1.29.2-3\nchrony:\n  Installed: (none)\n  Candidate: (none)\n";
        assert_eq!(
            parse_apt_policy(policy),
            map(&[
                ("docker.io", "20.10.24+dfsg1-1+deb12u1+b6"),
                ("docker-compose", "1.29.2-3")
            ])
        );
    }

    #[test]
    fn picks_the_compose_plugin_where_there_is_one() {
        // Debian 12: only the old Python docker-compose.
        assert_eq!(
            compose_package(&map(&[("docker-compose", "1.29.2-3")])),
            None
        );
        // Debian 13: docker-compose is the v2 plugin.
        assert_eq!(
            compose_package(&map(&[("docker-compose", "2.26.1-4")])).as_deref(),
            Some("docker-compose")
        );
        // Ubuntu 24.04.
        assert_eq!(
            compose_package(&map(&[
                ("docker-compose", "1.29.2-6ubuntu1"),
                ("docker-compose-v2", "2.27.1+ds1-0ubuntu1~24.04.1")
            ]))
            .as_deref(),
            Some("docker-compose-v2")
        );
    }

    #[test]
    fn a_fresh_debian_gets_the_engine_and_the_service() {
        let have = Have {
            candidates: map(&[("docker-compose", "1.29.2-3")]),
            service: Some(Service {
                enabled: "not-found".into(),
                active: "inactive".into(),
            }),
            ..Default::default()
        };
        let plan = plan(&have, &Target::this_host());
        assert_eq!(
            plan.actions,
            [
                Action::AptInstall {
                    packages: vec!["docker.io".into()]
                },
                Action::Systemctl {
                    args: vec!["enable".into(), "--now".into(), "docker.service".into()]
                }
            ]
        );
        assert_eq!(
            plan.notes,
            ["no compose plugin in apt (docker-compose-plugin, docker-compose-v2); elior deploys without it"]
        );
    }

    #[test]
    fn an_installed_running_engine_is_left_alone() {
        let have = Have {
            installed: map(&[("docker-ce", "5:27.1.1-1~debian.12~bookworm")]),
            compose_plugin: true,
            service: Some(Service {
                enabled: "enabled".into(),
                active: "active".into(),
            }),
            api_version: Some("1.46".into()),
            ..Default::default()
        };
        let plan = plan(&have, &Target::this_host());
        assert_eq!(plan.actions, []);
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn an_old_api_and_a_foreign_dockerd_are_reported_not_replaced() {
        let have = Have {
            dockerd: Some("/usr/local/bin/dockerd".into()),
            compose_plugin: true,
            api_version: Some("1.40".into()),
            ..Default::default()
        };
        let plan = plan(&have, &Target::this_host());
        assert_eq!(plan.actions, []);
        assert_eq!(
            plan.notes,
            [
                "/usr/local/bin/dockerd is not from a Debian package; elior leaves that engine as it is",
                "systemd is not running here: start dockerd under this host's init yourself"
            ]
        );
        assert!(plan.warnings[0].starts_with("the Engine API is 1.40, older than the 1.41"));
    }

    #[test]
    fn under_a_root_prefix_nothing_is_installed() {
        let target = Target {
            root: "/tmp/r".into(),
            systemd: false,
        };
        let plan = plan(&Have::default(), &target);
        assert_eq!(plan.actions, []);
        assert!(plan
            .notes
            .last()
            .unwrap()
            .ends_with("left out: apt-get install docker.io"));
    }
}
