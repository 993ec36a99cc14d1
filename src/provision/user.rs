//! The system user step: `elior`, with no login shell and the API container's uid (10001),
//! owns each stack directory (0750), its backups (0700), its state directory `.elior`
//! (0700) and `.env.production` (0600). The shared uid is what lets the scheduler, running
//! as `elior`, back up the database the API writes (measured: as uid 999 the backup
//! stops with SQLITE_READONLY_DIRECTORY; as 10001 it succeeds).
//!
//! The `docker` group is joined only with `--docker-group`: membership is root on the host
//! in all but name (any member can start a privileged container), so it is the user's
//! choice. Without it the scheduler's backups work (they read files), but a scheduled
//! certificate renewal cannot reach the Engine to reload nginx; see the README.
//!
//! Pure: passwd/group parsing and the plan.

use std::path::PathBuf;

use serde::Serialize;

use super::{Action, Step, StepPlan};
use crate::plan::render::API_UID;
use crate::schedule::unit::USER;

pub const NOLOGIN: &str = "/usr/sbin/nologin";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub shell: String,
}

/// A path's owner and mode as observed; `exists: false` leaves the rest at 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PathState {
    pub path: PathBuf,
    pub exists: bool,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Have {
    pub account: Option<Account>,
    /// The account that holds the API container's uid, if any.
    pub api_uid_owner: Option<String>,
    /// Members of the `docker` group; None when there is no such group.
    pub docker_members: Option<Vec<String>>,
    pub paths: Vec<PathState>,
}

/// What one path should be: a directory (created when missing) or a file (left to
/// `elior init` when missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WantPath {
    pub path: PathBuf,
    pub mode: u32,
    pub dir: bool,
    /// Created when missing (the stack directory and its backups), or only fixed.
    pub create: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Want {
    pub user: &'static str,
    pub shell: &'static str,
    pub docker_group: bool,
    pub paths: Vec<WantPath>,
}

/// The account named `name` in an /etc/passwd text.
pub fn parse_passwd(text: &str, name: &str) -> Option<Account> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && f[0] == name).then(|| Account {
            uid: f[2].parse().unwrap_or(0),
            gid: f[3].parse().unwrap_or(0),
            shell: f[6].to_string(),
        })
    })
}

/// The name of the account with `uid` in an /etc/passwd text.
pub fn uid_owner(text: &str, uid: u32) -> Option<String> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
    })
}

/// The members of group `name` in an /etc/group text.
pub fn parse_group(text: &str, name: &str) -> Option<Vec<String>> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| {
            f[3].split(',')
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect()
        })
    })
}

pub fn plan(want: &Want, have: &Have) -> StepPlan {
    let mut plan = StepPlan::new(Step::User, want, have);
    // The API container runs as API_UID and owns data/ and uploads/. The scheduler's
    // backups open the database, and SQLite must create its -shm file next to it: as any
    // other uid that fails (SQLITE_READONLY_DIRECTORY). So elior takes the same uid.
    let blocker = || {
        format!(
            "uid {API_UID} (the API container's, owner of data/) belongs to {}\nscheduled backups running as {USER} cannot open the database; free that uid, or run the scheduler as root",
            have.api_uid_owner.as_deref().unwrap_or("?")
        )
    };
    match &have.account {
        None => {
            let free = have.api_uid_owner.is_none();
            if !free {
                plan.warnings.push(blocker());
            }
            plan.actions.push(Action::CreateUser {
                name: USER.into(),
                id: free.then_some(API_UID),
            })
        }
        Some(account) if account.uid != API_UID => plan.warnings.push(format!(
            "user {USER} exists with uid {}, not {API_UID} (the API container's, owner of data/)\nscheduled backups running as {USER} cannot open the database; give {USER} uid {API_UID}: usermod --uid {API_UID} {USER}",
            account.uid
        )),
        Some(account) if account.shell != NOLOGIN && account.shell != "/bin/false" => {
            plan.warnings.push(format!(
                "user {USER} exists with the login shell {}; elior leaves it\nusermod --shell {NOLOGIN} {USER} to take the login away",
                account.shell
            ))
        }
        Some(_) => {}
    }
    if want.docker_group {
        match &have.docker_members {
            Some(members) if members.iter().any(|m| m == USER) => {}
            _ => plan.actions.push(Action::AddToGroup {
                user: USER.into(),
                group: "docker".into(),
            }),
        }
    }
    for want_path in &want.paths {
        let state = have.paths.iter().find(|p| p.path == want_path.path);
        let ok = match (state, &have.account) {
            (Some(s), Some(a)) if s.exists => {
                s.uid == a.uid && s.gid == a.gid && s.mode & 0o7777 == want_path.mode
            }
            _ => false,
        };
        let exists = state.is_some_and(|s| s.exists);
        if ok {
            continue;
        }
        if !exists && !want_path.create {
            plan.notes.push(format!(
                "{} does not exist yet; `elior init` creates it (elior provision sets its mode {:04o} on the next run)",
                want_path.path.display(),
                want_path.mode
            ));
            continue;
        }
        plan.actions.push(Action::Own {
            path: want_path.path.clone(),
            user: USER.into(),
            mode: want_path.mode,
            create_dir: !exists && want_path.dir,
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> Want {
        Want {
            user: USER,
            shell: NOLOGIN,
            docker_group: false,
            paths: vec![
                WantPath {
                    path: "/srv/elior".into(),
                    mode: 0o750,
                    dir: true,
                    create: true,
                },
                WantPath {
                    path: "/srv/elior/backups".into(),
                    mode: 0o700,
                    dir: true,
                    create: true,
                },
                WantPath {
                    path: "/srv/elior/.env.production".into(),
                    mode: 0o600,
                    dir: false,
                    create: false,
                },
            ],
        }
    }

    #[test]
    fn the_user_takes_the_api_uid_or_says_why_backups_will_fail() {
        let taken = Have {
            api_uid_owner: Some("alice".into()),
            ..Default::default()
        };
        let plan = plan(&want(), &taken);
        assert_eq!(
            plan.actions[0],
            Action::CreateUser {
                name: "elior".into(),
                id: None
            }
        );
        assert!(plan.warnings[0]
            .starts_with("uid 10001 (the API container's, owner of data/) belongs to alice\n"));
        let other_uid = Have {
            account: Some(Account {
                uid: 999,
                gid: 999,
                shell: NOLOGIN.into(),
            }),
            ..Default::default()
        };
        assert!(plan_warns(&other_uid).starts_with("user elior exists with uid 999, not 10001"));
    }

    fn plan_warns(have: &Have) -> String {
        plan(&want(), have).warnings.join("\n")
    }

    #[test]
    fn parses_passwd_and_group() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nelior:x:999:998:elior stack:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(
            parse_passwd(passwd, "elior"),
            Some(Account {
                uid: 999,
                gid: 998,
                shell: NOLOGIN.into()
            })
        );
        assert_eq!(parse_passwd(passwd, "eli"), None);
        assert_eq!(uid_owner(passwd, 999).as_deref(), Some("elior"));
        assert_eq!(uid_owner(passwd, 10001), None);
        let group = "root:x:0:\ndocker:x:997:alice,elior\nelior:x:998:\n";
        assert_eq!(
            parse_group(group, "docker"),
            Some(vec!["alice".to_string(), "elior".to_string()])
        );
        assert_eq!(parse_group(group, "elior"), Some(vec![]));
        assert_eq!(parse_group(group, "nope"), None);
    }

    #[test]
    fn a_fresh_host_gets_the_user_and_the_directories() {
        let have = Have {
            paths: vec![PathState {
                path: "/srv/elior".into(),
                exists: true,
                uid: 0,
                gid: 0,
                mode: 0o755,
            }],
            ..Default::default()
        };
        let plan = plan(&want(), &have);
        let lines: Vec<String> = plan.actions.iter().map(Action::describe).collect();
        assert_eq!(
            lines,
            [
                "create system user elior with uid 10001 (no login shell, group elior)",
                "set /srv/elior (elior:elior 0750)",
                "create /srv/elior/backups (elior:elior 0700)",
            ]
        );
        assert_eq!(
            plan.notes,
            ["/srv/elior/.env.production does not exist yet; `elior init` creates it (elior provision sets its mode 0600 on the next run)"]
        );
    }

    #[test]
    fn a_provisioned_host_plans_nothing_and_the_group_is_opt_in() {
        let account = Account {
            uid: 10001,
            gid: 10001,
            shell: NOLOGIN.into(),
        };
        let owned = |path: &str, mode| PathState {
            path: path.into(),
            exists: true,
            uid: 10001,
            gid: 10001,
            mode,
        };
        let have = Have {
            account: Some(account),
            api_uid_owner: Some("elior".into()),
            docker_members: Some(vec![]),
            paths: vec![
                owned("/srv/elior", 0o40750),
                owned("/srv/elior/backups", 0o40700),
                owned("/srv/elior/.env.production", 0o100600),
            ],
        };
        assert_eq!(plan(&want(), &have).actions, []);
        let with_group = Want {
            docker_group: true,
            ..want()
        };
        assert_eq!(
            plan(&with_group, &have).actions,
            [Action::AddToGroup {
                user: "elior".into(),
                group: "docker".into()
            }]
        );
        // A secret readable by the group is fixed, not left.
        let mut loose = have.clone();
        loose.paths[2].mode = 0o100640;
        assert_eq!(
            plan(&want(), &loose).actions,
            [Action::Own {
                path: "/srv/elior/.env.production".into(),
                user: "elior".into(),
                mode: 0o600,
                create_dir: false
            }]
        );
    }
}
