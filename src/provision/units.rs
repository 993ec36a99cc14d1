//! The systemd units step: one hardened `elior schedule` service per stack directory
//! (the text is `schedule::unit`'s, the one generator), the binary at a stable path, the
//! unit enabled, and restarted when its text changed. `--undo` removes every unit that
//! carries elior's marker line.
//!
//! Pure: the plan.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Action, Step, StepPlan, Target};
use crate::schedule::unit;

pub const UNIT_DIR: &str = "/etc/systemd/system";
pub const WANTED_BY: &str = "multi-user.target";

/// One stack the units step serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stack {
    pub dir: PathBuf,
    pub backup_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Binary {
    Missing,
    Differs,
    Same,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnitState {
    pub name: String,
    pub text: Option<String>,
    pub enabled: bool,
    /// `systemctl is-active`, when systemd runs.
    pub active: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Have {
    /// The running elior compared with the installed one.
    pub binary: Binary,
    pub current_exe: PathBuf,
    /// The units of the stacks asked for.
    pub units: Vec<UnitState>,
    /// Every unit in /etc/systemd/system that carries elior's marker (for `--undo`).
    pub ours: Vec<UnitState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WantUnit {
    pub name: String,
    pub text: String,
}

/// The units wanted for `stacks`.
pub fn want(stacks: &[Stack]) -> Vec<WantUnit> {
    stacks
        .iter()
        .map(|stack| WantUnit {
            name: unit::name(&stack.dir),
            text: unit::render(&unit::Spec {
                exe: unit::BINARY.into(),
                stack_dir: stack.dir.clone(),
                user: Some(unit::USER.into()),
                extra_writable: vec![stack.backup_dir.clone()],
            }),
        })
        .collect()
}

pub fn unit_path(name: &str) -> PathBuf {
    Path::new(UNIT_DIR).join(name)
}

pub fn plan(stacks: &[Stack], have: &Have, target: &Target) -> StepPlan {
    let wanted = want(stacks);
    let mut plan = StepPlan::new(Step::Units, &wanted, have);
    if have.binary != Binary::Same {
        plan.actions.push(Action::InstallBinary {
            from: have.current_exe.clone(),
            to: unit::BINARY.into(),
        });
    }
    let live = target.live() && target.systemd;
    let mut reload = false;
    let mut after = Vec::new();
    for want in &wanted {
        let state = have.units.iter().find(|u| u.name == want.name);
        let text = state.and_then(|s| s.text.as_deref());
        let changed = text != Some(want.text.as_str());
        if changed {
            plan.actions.push(Action::WriteFile {
                path: unit_path(&want.name),
                mode: 0o644,
                content: want.text.clone(),
            });
            reload = true;
        }
        let enabled = state.is_some_and(|s| s.enabled);
        let active = state.and_then(|s| s.active.as_deref()) == Some("active");
        if !enabled || (live && !active) {
            after.push(Action::EnableUnit {
                name: want.name.clone(),
                wanted_by: WANTED_BY.into(),
                start: live,
            });
        } else if live && (changed || have.binary != Binary::Same) {
            // A running scheduler keeps the old unit, and the old binary, until restarted.
            after.push(Action::Systemctl {
                args: vec!["restart".into(), want.name.clone()],
            });
        }
    }
    if live && reload {
        plan.actions.push(Action::Systemctl {
            args: vec!["daemon-reload".into()],
        });
    }
    plan.actions.extend(after);
    if !live && !wanted.is_empty() {
        plan.notes.push(if target.live() {
            "systemd is not running here: units are written and enabled, and start at the next boot"
                .into()
        } else {
            format!(
                "--root {}: units are written and enabled in the prefix, not started",
                target.root.display()
            )
        });
    }
    plan
}

/// `--undo`: stop, disable and remove every unit elior wrote.
pub fn plan_undo(have: &Have) -> StepPlan {
    let mut plan = StepPlan::new(Step::Units, serde_json::json!({ "units": [] }), have);
    for unit in &have.ours {
        if unit.enabled || unit.active.as_deref() == Some("active") {
            plan.actions.push(Action::DisableUnit {
                name: unit.name.clone(),
                wanted_by: WANTED_BY.into(),
            });
        }
        plan.actions.push(Action::RemoveFile {
            path: unit_path(&unit.name),
        });
    }
    plan.notes.push(format!(
        "{} stays installed; remove it by hand if you want it gone",
        unit::BINARY
    ));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stacks() -> Vec<Stack> {
        vec![Stack {
            dir: "/srv/elior".into(),
            backup_dir: "/srv/elior/backups".into(),
        }]
    }

    fn target(systemd: bool) -> Target {
        Target {
            root: "/".into(),
            systemd,
        }
    }

    fn have(units: Vec<UnitState>) -> Have {
        Have {
            binary: Binary::Same,
            current_exe: "/usr/local/bin/elior".into(),
            units,
            ours: vec![],
        }
    }

    fn describe(plan: &StepPlan) -> Vec<String> {
        plan.actions.iter().map(Action::describe).collect()
    }

    #[test]
    fn a_new_unit_is_written_reloaded_and_started() {
        let mut h = have(vec![]);
        h.binary = Binary::Missing;
        h.current_exe = "/root/elior".into();
        let plan = plan(&stacks(), &h, &target(true));
        assert_eq!(
            describe(&plan),
            [
                "install /root/elior as /usr/local/bin/elior",
                "write /etc/systemd/system/elior-schedule-srv-elior.service (0644)",
                "systemctl daemon-reload",
                "enable and start elior-schedule-srv-elior.service"
            ]
        );
    }

    #[test]
    fn a_changed_unit_is_restarted_and_a_current_one_left() {
        let running = |text: &str| UnitState {
            name: "elior-schedule-srv-elior.service".into(),
            text: Some(text.into()),
            enabled: true,
            active: Some("active".into()),
        };
        let old = have(vec![running("[Service]\nExecStart=/old\n")]);
        assert_eq!(
            describe(&plan(&stacks(), &old, &target(true))),
            [
                "write /etc/systemd/system/elior-schedule-srv-elior.service (0644)",
                "systemctl daemon-reload",
                "systemctl restart elior-schedule-srv-elior.service"
            ]
        );
        let current = have(vec![running(&want(&stacks())[0].text)]);
        assert_eq!(
            describe(&plan(&stacks(), &current, &target(true))),
            Vec::<String>::new()
        );
        // A new binary restarts a running scheduler even when the unit is the same.
        let mut upgraded = current.clone();
        upgraded.binary = Binary::Differs;
        upgraded.current_exe = "/root/elior".into();
        assert_eq!(
            describe(&plan(&stacks(), &upgraded, &target(true))),
            [
                "install /root/elior as /usr/local/bin/elior",
                "systemctl restart elior-schedule-srv-elior.service"
            ]
        );
        // A stopped scheduler is started again.
        let mut stopped = current.clone();
        stopped.units[0].active = Some("failed".into());
        assert_eq!(
            describe(&plan(&stacks(), &stopped, &target(true))),
            ["enable and start elior-schedule-srv-elior.service"]
        );
    }

    #[test]
    fn without_systemd_units_are_only_written_and_linked() {
        let plan = plan(&stacks(), &have(vec![]), &target(false));
        assert_eq!(
            describe(&plan),
            [
                "write /etc/systemd/system/elior-schedule-srv-elior.service (0644)",
                "enable elior-schedule-srv-elior.service"
            ]
        );
        assert_eq!(plan.notes.len(), 1);
    }

    #[test]
    fn undo_removes_only_elior_units() {
        let mut h = have(vec![]);
        h.ours = vec![UnitState {
            name: "elior-schedule-srv-elior.service".into(),
            text: Some("x".into()),
            enabled: true,
            active: None,
        }];
        assert_eq!(
            describe(&plan_undo(&h)),
            [
                "disable elior-schedule-srv-elior.service",
                "remove /etc/systemd/system/elior-schedule-srv-elior.service"
            ]
        );
    }
}
