//! No stale deploy lock is left behind: a lock whose process is gone blocks every
//! deploy until it is removed.

use std::path::Path;

use serde::Serialize;

use super::{Check, CheckInfo, Group};
use crate::doctor::facts::Stack;
use crate::doctor::sources::Sources;
use crate::doctor::{human_age, Finding};
use crate::lock::Holder;

pub struct Lock;

#[derive(Debug, Clone, Default, Serialize)]
pub struct LockFacts {
    pub path: String,
    pub exists: bool,
    pub holder: Option<Holder>,
    pub unreadable: bool,
    /// Unix seconds the lock file was last written.
    pub modified_at: Option<i64>,
    pub this_host: String,
    pub pid_alive: Option<bool>,
}

impl Check for Lock {
    const INFO: CheckInfo = CheckInfo {
        name: "lock",
        group: Group::Operations,
        about: "no stale deploy lock is left behind",
    };
    type Facts = LockFacts;

    async fn gather(sources: &Sources) -> LockFacts {
        let dir: &Path = &sources.dir;
        let path = dir.join(crate::lock::STATE_DIR).join("deploy.lock");
        let mut f = LockFacts {
            path: path.display().to_string(),
            exists: path.exists(),
            this_host: crate::lock::hostname(),
            ..Default::default()
        };
        if !f.exists {
            return f;
        }
        f.modified_at = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        f.holder = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<crate::lock::Holder>(&t).ok());
        f.unreadable = f.holder.is_none();
        f.pid_alive = f
            .holder
            .as_ref()
            .map(|h| Path::new("/proc").join(h.pid.to_string()).exists());
        f
    }

    fn judge(stack: &Stack, f: &LockFacts) -> Vec<Finding> {
        let release = format!("rm {}", f.path);
        if !f.exists {
            return vec![Finding::ok("no deploy lock is held")];
        }
        let age = f.modified_at.map(|m| human_age(stack.now - m));
        let Some(h) = &f.holder else {
            return vec![Finding::warning(
                format!("the lock {} is unreadable", f.path),
                format!("if no elior command is running on this stack: {release}"),
            )];
        };
        let owner = format!(
            "`{}` (pid {} on {}, since {}{})",
            h.command,
            h.pid,
            h.host,
            h.since,
            age.map(|a| format!(", {a} ago")).unwrap_or_default()
        );
        if h.host == f.this_host && f.pid_alive == Some(false) {
            vec![Finding::failure(
                format!("stale deploy lock: held by {owner}, whose process is gone"),
                release,
            )]
        } else if h.host != f.this_host {
            vec![Finding::warning(
                format!("deploy lock held by {owner} from another host"),
                format!("if that host runs nothing on this stack: {release}"),
            )]
        } else {
            vec![Finding::ok(format!(
                "deploy lock held by the running {owner}"
            ))]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::{statuses, test_stack, TEST_NOW};
    use crate::doctor::Status;

    #[test]
    fn stale_locks_fail_with_the_release_command() {
        let f = LockFacts {
            path: "/srv/elior/.elior/deploy.lock".into(),
            exists: true,
            holder: Some(crate::lock::Holder {
                pid: 4242,
                host: "web1".into(),
                command: "elior deploy".into(),
                since: "2026-11-29T10:00:00+00:00".into(),
            }),
            modified_at: Some(TEST_NOW - 7200),
            this_host: "web1".into(),
            pid_alive: Some(false),
            unreadable: false,
        };
        let found = Lock::judge(&test_stack(), &f);
        assert_eq!(found[0].status, Status::Failure);
        assert!(found[0].finding.contains("pid 4242 on web1"));
        assert!(found[0].finding.contains("2h 0m ago"));
        assert_eq!(
            found[0].fix.as_deref(),
            Some("rm /srv/elior/.elior/deploy.lock")
        );
        let live = LockFacts {
            pid_alive: Some(true),
            ..f
        };
        assert_eq!(
            statuses(&Lock::judge(&test_stack(), &live)),
            vec![Status::Ok]
        );
    }
}
