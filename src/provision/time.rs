//! The time and updates step: a time sync service running (chrony when it is installed,
//! else systemd-timesyncd; certificates and tokens depend on the clock) and unattended
//! security upgrades switched on through an apt.conf.d file of elior's own (later files
//! win, so a stock 20auto-upgrades set to "0" is overridden without being edited).
//!
//! Pure: the plan.

use std::collections::BTreeMap;

use serde::Serialize;

use super::engine::Service;
use super::{Action, Step, StepPlan, Target};

pub const APT_CONF: &str = "/etc/apt/apt.conf.d/52elior-unattended-upgrades";
pub const APT_CONF_TEXT: &str = "// Written by `elior provision`: security updates install themselves daily.\nAPT::Periodic::Update-Package-Lists \"1\";\nAPT::Periodic::Unattended-Upgrade \"1\";\n";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Have {
    /// Installed versions of chrony, systemd-timesyncd and unattended-upgrades.
    pub installed: BTreeMap<String, String>,
    /// The state of the time service that is (or will be) used; None without systemd.
    pub time_service: Option<Service>,
    pub apt_conf: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Want {
    pub time_service: &'static str,
    pub packages: Vec<&'static str>,
    pub apt_conf: &'static str,
}

/// The time service to run: chrony when installed, else systemd-timesyncd.
pub fn time_unit(installed: &BTreeMap<String, String>) -> (&'static str, &'static str) {
    if installed.contains_key("chrony") {
        ("chrony", "chrony.service")
    } else {
        ("systemd-timesyncd", "systemd-timesyncd.service")
    }
}

pub fn plan(have: &Have, target: &Target) -> StepPlan {
    let (package, unit) = time_unit(&have.installed);
    let want = Want {
        time_service: unit,
        packages: vec![package, "unattended-upgrades"],
        apt_conf: APT_CONF_TEXT,
    };
    let mut plan = StepPlan::new(Step::Time, &want, have);
    let missing: Vec<String> = want
        .packages
        .iter()
        .filter(|p| !have.installed.contains_key(**p))
        .map(|p| p.to_string())
        .collect();
    if target.live() {
        if !missing.is_empty() {
            plan.actions.push(Action::AptInstall { packages: missing });
        }
        match &have.time_service {
            Some(s) if s.enabled == "enabled" && s.active == "active" => {}
            Some(_) => plan.actions.push(Action::Systemctl {
                args: vec!["enable".into(), "--now".into(), unit.into()],
            }),
            None => plan.notes.push(format!(
                "systemd is not running here: cannot start {unit}; keep the clock in sync with this host's own means"
            )),
        }
    } else if !missing.is_empty() {
        plan.notes.push(format!(
            "--root {}: packages and services belong to the live host; left out: apt-get install {}",
            target.root.display(),
            missing.join(" ")
        ));
    }
    if have.apt_conf.as_deref() != Some(APT_CONF_TEXT) {
        plan.actions.push(Action::WriteFile {
            path: APT_CONF.into(),
            mode: 0o644,
            content: APT_CONF_TEXT.into(),
        });
    }
    plan
}

/// `--undo`: elior's apt.conf.d file goes (unattended upgrades then follow the host's
/// own setting); the packages and the time service stay.
pub fn plan_undo(have: &Have) -> StepPlan {
    let mut plan = StepPlan::new(Step::Time, serde_json::json!({ "apt_conf": null }), have);
    if have.apt_conf.is_some() {
        plan.actions.push(Action::RemoveFile {
            path: APT_CONF.into(),
        });
    }
    plan.notes
        .push("the time service and unattended-upgrades stay installed and running".into());
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(systemd: bool) -> Target {
        Target {
            root: "/".into(),
            systemd,
        }
    }

    #[test]
    fn a_fresh_host_gets_timesyncd_and_upgrades() {
        let have = Have {
            time_service: Some(Service {
                enabled: "disabled".into(),
                active: "inactive".into(),
            }),
            ..Default::default()
        };
        let plan = plan(&have, &live(true));
        assert_eq!(
            plan.actions,
            [
                Action::AptInstall {
                    packages: vec!["systemd-timesyncd".into(), "unattended-upgrades".into()]
                },
                Action::Systemctl {
                    args: vec![
                        "enable".into(),
                        "--now".into(),
                        "systemd-timesyncd.service".into()
                    ]
                },
                Action::WriteFile {
                    path: APT_CONF.into(),
                    mode: 0o644,
                    content: APT_CONF_TEXT.into()
                },
            ]
        );
    }

    #[test]
    fn chrony_is_kept_and_a_done_host_plans_nothing() {
        let have = Have {
            installed: [("chrony", "4.3"), ("unattended-upgrades", "2.9")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            time_service: Some(Service {
                enabled: "enabled".into(),
                active: "active".into(),
            }),
            apt_conf: Some(APT_CONF_TEXT.into()),
        };
        let plan = plan(&have, &live(true));
        assert_eq!(plan.actions, []);
        assert_eq!(plan.want["time_service"], "chrony.service");
        assert_eq!(
            plan_undo(&have).actions,
            [Action::RemoveFile {
                path: APT_CONF.into()
            }]
        );
        assert_eq!(plan_undo(&Have::default()).actions, []);
    }
}
