//! `elior provision`: observe the host, plan each step, show the plan, apply it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

use crate::provision::{
    apply, capacity, engine, firewall, host, observe, time, units, user, Action, Plan, Step,
    StepPlan, Target,
};

/// Turn a fresh Debian or Ubuntu server into a hardened Docker host for elior stacks.
///
/// Computes a plan against what the host has, shows it, and applies it; run again, it
/// reports 0 changes. Steps, applied in this order:
///     engine     docker.io (and the compose plugin where apt has one), enabled and started,
///                Engine API 1.41 or newer; never a curl-to-shell installer
///     user       system user `elior` (no login shell) owning each stack directory (0750),
///                its backups (0700) and .env.production (0600)
///     units      elior-schedule-<DIR>.service per stack: User=elior, ProtectSystem=strict,
///                ReadWritePaths= the stack, NoNewPrivileges, PrivateTmp, Restart=on-failure;
///                the binary copied to /usr/local/bin/elior; restarted when the unit changed
///     time       systemd-timesyncd (or chrony) and unattended-upgrades
///     capacity   warnings only: memory under 1 GiB without swap, under 5 GiB free disk
///     firewall   nftables table inet elior: SSH (sshd's configured and listening ports), TCP
///                80/443, UDP 443, established; the rest dropped inbound, IPv4 and IPv6;
///                published container ports other than 80/443 dropped too; Docker's own
///                tables untouched; persisted by elior-firewall.service; applied last
///
/// Every step first checks root, Debian/Ubuntu and (for apt) the dpkg lock, and nothing is
/// applied while one fails. A step that fails part-way puts its earlier changes back.
///
/// Examples:
///     sudo elior provision --dry-run                    the plan, with the firewall's diff
///     sudo elior provision --dir /srv/elior             apply it
///     sudo elior provision --only firewall --dry-run --json
///     sudo elior provision --undo                       remove elior's units and firewall
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ProvisionArgs {
    /// Show the plan and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Only these steps (engine, user, units, time, capacity, firewall)
    #[arg(long, value_enum, value_delimiter = ',', num_args = 1.., value_name = "STEP")]
    only: Vec<Step>,
    /// Take back what elior added: its units, its firewall table (the one before is put
    /// back), the persisted rules. Packages, the user and file modes stay
    #[arg(long)]
    undo: bool,
    /// Prefix for every file path (units, rules, /etc/passwd through useradd --prefix);
    /// packages and services are left out under a prefix other than /
    #[arg(long, default_value = "/", value_name = "DIR")]
    root: PathBuf,
    /// Add the elior user to the docker group: scheduled certificate renewals can then
    /// reload nginx, at the price of root-equivalent rights for that user
    #[arg(long)]
    docker_group: bool,
}

impl ProvisionArgs {
    /// With --json: the plan (every step's want, have and actions). The stack
    /// directories are the --dir options (repeat for several, as the host sees them;
    /// default /srv/elior).
    pub fn run(self, ctx: &super::Context) -> Result<ExitCode> {
        let json = ctx.json;
        let given = ctx.dirs().to_vec();
        let dirs_given = if given.is_empty() {
            vec![PathBuf::from("/srv/elior")]
        } else {
            given
        };
        let target = Target::from_root(&self.root)?;
        let dirs = super::schedule::unit_dirs(&target, dirs_given)?;
        let mut steps = if self.only.is_empty() {
            Step::ALL.to_vec()
        } else {
            self.only.clone()
        };
        steps.sort();
        steps.dedup();
        // Taken before observing, so the plan is not stale by the time it is applied.
        let _lock = if self.dry_run {
            None
        } else {
            Some(apply::lock(&target)?)
        };

        let plan = self.plan(&target, &dirs, &steps)?;
        if json {
            let doc = serde_json::json!({
                "dry_run": self.dry_run,
                "undo": self.undo,
                "root": target.root,
                "changes": plan.changes(),
                "steps": plan.steps,
            });
            outln!("{doc:#}");
        } else {
            out!("{}", render(&plan, self.dry_run));
        }
        if self.dry_run {
            return Ok(ExitCode::SUCCESS);
        }
        let blocked = plan.blocked();
        if !blocked.is_empty() {
            bail!(
                "nothing was changed: a precondition does not hold\n{}",
                blocked.join("\n")
            );
        }
        for step in &plan.steps {
            if step.actions.is_empty() {
                continue;
            }
            eprintln!("{}:", step.step.name());
            apply::step(step, &target)?;
            if step.step == Step::Engine && target.live() && !self.undo {
                let api = apply::check_engine()?;
                eprintln!("  Docker Engine API {api}");
            }
        }
        if !json {
            outln!(
                "{}",
                match plan.changes() {
                    0 => "0 changes: the host is as planned".to_string(),
                    n => format!("applied {n} change{}", if n == 1 { "" } else { "s" }),
                }
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    fn plan(&self, target: &Target, dirs: &[PathBuf], steps: &[Step]) -> Result<Plan> {
        let facts = observe::host_facts(target);
        let stacks = observe::stacks(target, dirs)?;
        let mut out = Vec::new();
        for &step in steps {
            let mut plan = if self.undo {
                match step {
                    Step::Firewall => firewall::plan_undo(&observe::firewall(target)?),
                    Step::Units => units::plan_undo(&observe::units(target, &stacks)?),
                    Step::Time => time::plan_undo(&observe::time(target)),
                    other => {
                        let mut plan = StepPlan::new(other, "unchanged", "unchanged");
                        plan.notes.push(
                            match other {
                                Step::Engine => "nothing to undo: the Docker packages stay",
                                Step::User => {
                                    "nothing to undo: the elior user and the stack's owners and modes stay"
                                }
                                _ => "nothing to undo: this step changes nothing",
                            }
                            .into(),
                        );
                        plan
                    }
                }
            } else {
                match step {
                    Step::Engine => engine::plan(&observe::engine(target), target),
                    Step::User => {
                        let want = self.user_want(target, &stacks);
                        user::plan(&want, &observe::user(target, &want))
                    }
                    Step::Units => units::plan(&stacks, &observe::units(target, &stacks)?, target),
                    Step::Time => time::plan(&observe::time(target), target),
                    Step::Capacity => capacity::plan(&observe::capacity(
                        target,
                        dirs.first().map_or(Path::new("/"), PathBuf::as_path),
                    )),
                    Step::Firewall => firewall::plan(&observe::firewall(target)?, target),
                }
            };
            let needs_apt = plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::AptInstall { .. }));
            if plan.blocked.is_none() {
                plan.blocked = host::check(&facts, needs_apt);
            }
            out.push(plan);
        }
        Ok(Plan {
            undo: self.undo,
            target: target.clone(),
            steps: out,
        })
    }

    fn user_want(&self, target: &Target, stacks: &[units::Stack]) -> user::Want {
        let mut paths = Vec::new();
        for stack in stacks {
            paths.push(user::WantPath {
                path: stack.dir.clone(),
                mode: 0o750,
                dir: true,
                create: true,
            });
            paths.push(user::WantPath {
                path: stack.backup_dir.clone(),
                mode: 0o700,
                dir: true,
                create: true,
            });
            // The scheduler's state; it creates the directory itself when missing.
            let state = stack.dir.join(".elior");
            if target.at(&state).is_dir() {
                paths.push(user::WantPath {
                    path: state,
                    mode: 0o700,
                    dir: true,
                    create: false,
                });
            }
            paths.push(user::WantPath {
                path: stack.dir.join(crate::backup::settings::ENV_FILE),
                mode: 0o600,
                dir: false,
                create: false,
            });
        }
        user::Want {
            user: crate::schedule::unit::USER,
            shell: user::NOLOGIN,
            docker_group: self.docker_group,
            paths,
        }
    }
}

/// The plan for humans: each step, its actions (with diffs), notes, warnings.
fn render(plan: &Plan, dry_run: bool) -> String {
    let mut out = String::new();
    for step in &plan.steps {
        let n = step.actions.len();
        out.push_str(&format!(
            "{}: {}\n",
            step.step.name(),
            match n {
                0 => "nothing to change".to_string(),
                1 => "1 change".to_string(),
                n => format!("{n} changes"),
            }
        ));
        for action in &step.actions {
            out.push_str(&format!("  + {}\n", action.describe()));
            if let Some(diff) = action.diff() {
                for line in diff.lines() {
                    out.push_str(&format!("      {line}\n"));
                }
            }
        }
        for note in &step.notes {
            out.push_str(&format!("  note: {}\n", note.replace('\n', "\n        ")));
        }
        for warning in &step.warnings {
            out.push_str(&format!(
                "  warning: {}\n",
                warning.replace('\n', "\n           ")
            ));
        }
        if let Some(blocked) = &step.blocked {
            out.push_str(&format!(
                "  blocked: {}\n",
                blocked.replace('\n', "\n           ")
            ));
        }
    }
    if dry_run {
        out.push_str(&format!(
            "{} change{} planned (dry run: nothing applied)\n",
            plan.changes(),
            if plan.changes() == 1 { "" } else { "s" }
        ));
    }
    out
}
