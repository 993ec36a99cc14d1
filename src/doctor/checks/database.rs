//! The SQLite file: it exists, opens read-only, is in WAL mode and passes quick_check;
//! and the free space of its disk (a full one makes every write answer 500).

use std::time::Duration;

use serde::Serialize;

use super::{Check, CheckInfo, Group};
use crate::backup::human_bytes;
use crate::doctor::disk::{self, Disk};
use crate::doctor::facts::Stack;
use crate::doctor::sources::Sources;
use crate::doctor::Finding;

pub struct Database;

#[derive(Debug, Clone, Default, Serialize)]
pub struct DatabaseFacts {
    pub path: String,
    pub exists: bool,
    pub size_bytes: Option<u64>,
    pub open_error: Option<String>,
    pub journal_mode: Option<String>,
    /// `ok`, or the problems quick_check listed.
    pub quick_check: Option<String>,
    pub disk: Option<Disk>,
}

impl Check for Database {
    const INFO: CheckInfo = CheckInfo {
        name: "database",
        group: Group::Stack,
        about: "the SQLite file exists, is in WAL mode, passes quick_check; free disk",
    };
    type Facts = DatabaseFacts;

    async fn gather(sources: &Sources) -> DatabaseFacts {
        let path = sources.database_path();
        let mut f = DatabaseFacts {
            path: path.display().to_string(),
            exists: path.is_file(),
            ..Default::default()
        };
        f.disk = path.parent().and_then(crate::fsutil::disk_space);
        if !f.exists {
            return f;
        }
        f.size_bytes = std::fs::metadata(&path).ok().map(|m| m.len());
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        );
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                f.open_error = Some(e.to_string());
                return f;
            }
        };
        let _ = conn.busy_timeout(Duration::from_secs(5));
        match conn.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0)) {
            Ok(mode) => f.journal_mode = Some(mode.to_ascii_lowercase()),
            Err(e) => {
                f.quick_check = Some(e.to_string());
                return f;
            }
        }
        let check = conn.prepare("PRAGMA quick_check").and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        });
        f.quick_check = Some(match check {
            Ok(lines) => lines.join("; "),
            Err(e) => e.to_string(),
        });
        f
    }

    fn judge(stack: &Stack, f: &DatabaseFacts) -> Vec<Finding> {
        let restore = format!(
            "stop the API, then restore the last good backup: elior restore latest --dir {}",
            stack.dir
        );
        if !f.exists {
            return vec![Finding::failure(
                format!("{} does not exist", f.path),
                format!(
                    "elior deploy {} --dir {}  (the API creates it at start), or {restore}",
                    stack.domain_arg(),
                    stack.dir
                ),
            )];
        }
        let mut out = Vec::new();
        let size = f.size_bytes.map(human_bytes).unwrap_or_else(|| "?".into());
        if let Some(e) = &f.open_error {
            out.push(Finding::failure(
                format!("{} ({size}) cannot be opened: {e}", f.path),
                restore.clone(),
            ));
        } else if let Some(check) = f.quick_check.as_deref().filter(|c| *c != "ok") {
            out.push(Finding::failure(
                format!("{} ({size}) is corrupt: quick_check says {check}", f.path),
                restore.clone(),
            ));
        } else {
            match f.journal_mode.as_deref() {
            Some("wal") => out.push(Finding::ok(format!(
                "{} ({size}) passes quick_check, journal mode WAL",
                f.path
            ))),
            mode => out.push(Finding::warning(
                format!(
                    "{} ({size}) passes quick_check, but its journal mode is {}, not WAL",
                    f.path,
                    mode.unwrap_or("unknown")
                ),
                format!(
                    "restart the API (it sets WAL at start): docker restart $(docker ps -q --filter label={}={} --filter label={}=api)",
                    crate::docker::LABEL_PROJECT,
                    stack.project_arg(),
                    crate::docker::LABEL_SERVICE
                ),
            )),
        }
        }
        if let Some(disk) = &f.disk {
            out.push(disk::finding(
            "database disk",
            &f.path,
            disk,
            &format!(
                "find what fills it with `du -xh --max-depth=2 {0} | sort -h | tail`, without deleting data/, uploads/ or the newest backups: move old backups elsewhere (`elior backup list --dir {0}`), or grow the filesystem",
                stack.dir
            ),
        ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::{statuses, test_stack};
    use crate::doctor::Status;

    /// A sound database in WAL mode on a disk of `total` bytes with `free` free.
    fn on(total: u64, free: u64) -> DatabaseFacts {
        DatabaseFacts {
            path: "/srv/elior/data/elior_fitness.db".into(),
            exists: true,
            size_bytes: Some(8192),
            journal_mode: Some("wal".into()),
            quick_check: Some("ok".into()),
            disk: Some(Disk {
                total_bytes: total,
                free_bytes: free,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn database_rules() {
        let db = on(100 << 30, 5 << 30);
        assert_eq!(
            statuses(&Database::judge(&test_stack(), &db)),
            vec![Status::Ok, Status::Warning]
        );
        let corrupt = DatabaseFacts {
            quick_check: Some("database disk image is malformed".into()),
            disk: None,
            ..db
        };
        let found = Database::judge(&test_stack(), &corrupt);
        assert_eq!(statuses(&found), vec![Status::Failure]);
        assert!(found[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("elior restore latest"));
    }

    // Regression (issue 14): a full data disk was only a warning while the API answered
    // 500 to every write; the fix must never start by deleting data.
    #[test]
    fn a_full_or_nearly_full_data_disk_fails_with_a_fix_that_keeps_the_data() {
        let gib = 1u64 << 30;
        for (total, free, status, starts) in [
            (100 * gib, 20 * gib, Status::Ok, "database disk"),
            (100 * gib, 8 * gib, Status::Warning, "low disk"),
            (100 * gib, 4 * gib, Status::Failure, "nearly full disk"),
            (1 << 20, 0, Status::Failure, "full disk"),
        ] {
            let found = Database::judge(&test_stack(), &on(total, free));
            assert_eq!(found[1].status, status, "{found:?}");
            assert!(found[1].finding.starts_with(starts), "{found:?}");
            if status != Status::Ok {
                let fix = found[1].fix.as_deref().unwrap();
                assert!(fix.starts_with("find what fills it with `du -xh"), "{fix}");
                assert!(!fix.contains("prune"), "{fix}");
            }
        }
    }
}
