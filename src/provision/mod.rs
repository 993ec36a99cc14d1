//! `elior provision` (issue 18): from a fresh Debian or Ubuntu server to a hardened Docker
//! host, as a plan the user can read first.
//!
//! Each step is a pure `plan(&Want inputs, &Have) -> StepPlan` in its own module (`engine`,
//! `user`, `units`, `time`, `capacity`, `firewall`); `observe` gathers the `have` from the
//! host, `apply` carries the actions out (and puts a step back when it fails part-way).
//! Planning never touches the host, so `--dry-run` is the plan printed.
//!
//! `--root DIR` prefixes every *file* path (units, the firewall's persisted rules, the
//! user database through `useradd --prefix`, the stack's directories). Packages and running
//! services belong to the live machine, so under a root other than `/` the apt and service
//! actions are left out (and said so). The firewall is the one live effect that still runs
//! under `--root`: its state is per network namespace, chosen by the caller (`ip netns exec`).

pub mod apply;
pub mod capacity;
pub mod engine;
pub mod firewall;
pub mod host;
pub mod observe;
pub mod time;
pub mod units;
pub mod user;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

/// The steps, in the order they are applied: the firewall last (issue 18), once every
/// other step went through and the SSH port is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Engine,
    User,
    Units,
    Time,
    Capacity,
    Firewall,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Engine,
        Step::User,
        Step::Units,
        Step::Time,
        Step::Capacity,
        Step::Firewall,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Engine => "engine",
            Step::User => "user",
            Step::Units => "units",
            Step::Time => "time",
            Step::Capacity => "capacity",
            Step::Firewall => "firewall",
        }
    }
}

/// Where the effects land.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// `/` for the live host, or a prefix for files (`--root`).
    pub root: PathBuf,
    /// systemd runs as PID 1 on the live host (so units can be started and restarted).
    pub systemd: bool,
}

impl Target {
    /// The target of `--root ROOT` (`/` for this host), which must be a directory;
    /// systemd is driven only on the live host and only when it runs as PID 1.
    pub fn from_root(root: &Path) -> anyhow::Result<Target> {
        use anyhow::Context as _;
        let root = std::path::absolute(root)
            .with_context(|| format!("--root {}: cannot resolve it", root.display()))?;
        if !root.is_dir() {
            anyhow::bail!(
                "--root {}: not a directory\npass an existing directory, or / for this host",
                root.display()
            );
        }
        Ok(Target {
            systemd: root == Path::new("/") && Path::new("/run/systemd/system").is_dir(),
            root,
        })
    }

    /// This host, run by systemd: the target of the planners' tests.
    #[cfg(test)]
    pub fn this_host() -> Target {
        Target {
            root: "/".into(),
            systemd: true,
        }
    }

    /// True when packages and services can be acted on (no `--root` prefix).
    pub fn live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The real path of `logical` (an absolute path as the host will see it).
    pub fn at(&self, logical: &Path) -> PathBuf {
        self.root.join(logical.strip_prefix("/").unwrap_or(logical))
    }
}

/// One change. Paths are logical (as the host sees them); [`Target::at`] maps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// `apt-get install -y --no-install-recommends PACKAGES`
    AptInstall {
        packages: Vec<String>,
    },
    /// `systemctl ARGS` on the live host.
    Systemctl {
        args: Vec<String>,
    },
    /// Writes a whole file atomically, owned by root.
    WriteFile {
        path: PathBuf,
        mode: u32,
        content: String,
    },
    RemoveFile {
        path: PathBuf,
    },
    /// The system user with no login shell and its own group, with uid and gid `id` when
    /// given (the API container's, so the user owns what the API writes).
    CreateUser {
        name: String,
        id: Option<u32>,
    },
    /// `usermod -aG GROUP USER`
    AddToGroup {
        user: String,
        group: String,
    },
    /// Owner `user:user` and `mode` on a path; a missing directory is created first.
    Own {
        path: PathBuf,
        user: String,
        mode: u32,
        create_dir: bool,
    },
    /// `systemctl enable` (with `--now` when `start` and systemd runs), or the `--root`
    /// form that only links it.
    EnableUnit {
        name: String,
        wanted_by: String,
        start: bool,
    },
    /// `systemctl disable` (and stop when systemd runs).
    DisableUnit {
        name: String,
        wanted_by: String,
    },
    /// Copies `from` to `to` (0755), so units run a stable path rather than a build tree.
    InstallBinary {
        from: PathBuf,
        to: PathBuf,
    },
    /// Replaces the `inet elior` nftables table in one `nft -f` transaction. `previous` is
    /// the live table before (None: absent), kept for a rollback and for `--undo`.
    NftApply {
        table: String,
        previous: Option<String>,
    },
    /// `--undo`: puts back the table that was there before elior's first apply.
    NftRestore {
        previous: Option<String>,
        current: Option<String>,
    },
}

fn mode(m: u32) -> String {
    format!("{m:04o}")
}

impl Action {
    /// One line for humans.
    pub fn describe(&self) -> String {
        match self {
            Action::AptInstall { packages } => {
                format!("apt-get install {}", packages.join(" "))
            }
            Action::Systemctl { args } => format!("systemctl {}", args.join(" ")),
            Action::WriteFile { path, mode: m, .. } => {
                format!("write {} ({})", path.display(), mode(*m))
            }
            Action::RemoveFile { path } => format!("remove {}", path.display()),
            Action::CreateUser { name, id } => format!(
                "create system user {name}{} (no login shell, group {name})",
                id.map(|id| format!(" with uid {id}")).unwrap_or_default()
            ),
            Action::AddToGroup { user, group } => format!("add {user} to group {group}"),
            Action::Own {
                path,
                user,
                mode: m,
                create_dir,
            } => format!(
                "{} {} ({user}:{user} {})",
                if *create_dir { "create" } else { "set" },
                path.display(),
                mode(*m)
            ),
            Action::EnableUnit { name, start, .. } => {
                format!("enable{} {name}", if *start { " and start" } else { "" })
            }
            Action::DisableUnit { name, .. } => format!("disable {name}"),
            Action::InstallBinary { from, to } => {
                format!("install {} as {}", from.display(), to.display())
            }
            Action::NftApply { .. } => "apply nftables table inet elior (nft -f)".into(),
            Action::NftRestore { previous, .. } => match previous {
                Some(_) => "put back the table inet elior that was there before elior".into(),
                None => "delete nftables table inet elior (there was none before elior)".into(),
            },
        }
    }

    /// A diff for actions that replace text, for `--dry-run`.
    pub fn diff(&self) -> Option<String> {
        match self {
            Action::NftApply { table, previous } => {
                Some(text_diff(previous.as_deref().unwrap_or(""), table))
            }
            Action::NftRestore { previous, current } => Some(text_diff(
                current.as_deref().unwrap_or(""),
                previous.as_deref().unwrap_or(""),
            )),
            _ => None,
        }
    }
}

/// A unified diff, `-` the host's now, `+` what it will be.
pub fn text_diff(have: &str, want: &str) -> String {
    similar::TextDiff::from_lines(have, want)
        .unified_diff()
        .header("have", "want")
        .to_string()
}

/// One step's plan: what it wants, what the host has, and the actions between them.
#[derive(Debug, Clone, Serialize)]
pub struct StepPlan {
    pub step: Step,
    pub want: Value,
    pub have: Value,
    pub actions: Vec<Action>,
    /// Facts worth knowing that change nothing (what `--root` leaves out, say).
    pub notes: Vec<String>,
    /// Things the user should act on (low memory, little disk).
    pub warnings: Vec<String>,
    /// A precondition that does not hold: nothing at all is applied while one is set.
    pub blocked: Option<String>,
}

impl StepPlan {
    pub fn new(step: Step, want: impl Serialize, have: impl Serialize) -> StepPlan {
        StepPlan {
            step,
            want: serde_json::to_value(want).unwrap_or(Value::Null),
            have: serde_json::to_value(have).unwrap_or(Value::Null),
            actions: Vec::new(),
            notes: Vec::new(),
            warnings: Vec::new(),
            blocked: None,
        }
    }
}

/// The whole plan, in apply order.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub undo: bool,
    pub target: Target,
    pub steps: Vec<StepPlan>,
}

impl Plan {
    pub fn changes(&self) -> usize {
        self.steps.iter().map(|s| s.actions.len()).sum()
    }

    pub fn blocked(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter_map(|s| {
                s.blocked
                    .as_ref()
                    .map(|b| format!("{}: {b}", s.step.name()))
            })
            .collect()
    }
}
