//! Which backups retention deletes, decided from their timestamps alone.
//!
//! Pure: the caller lists the complete backups (name and manifest present) with the time
//! in their name and the result of verifying each (deeply: manifest checksum, file
//! hashes, quick_check of the database, every uploads entry read back), and gets a
//! keep/delete decision for each, with the reasons. Age comes from the name, not the
//! mtime, which copies and restores change.
//!
//! Rules, in restic's vocabulary: keep everything taken within `BACKUP_RETENTION_DAYS`;
//! optionally keep the newest verified backup of each of the last N days, ISO weeks and
//! months that have one (`--keep-daily`, `--keep-weekly`, `--keep-monthly`); and never
//! delete the newest verified backup, however old it is. A backup that failed
//! verification is never deleted (a person should look at it) and never fills a slot or
//! protects itself (issue 17: a garbled, empty or future-dated newest backup must not get
//! the good one deleted). Everything else goes: only what is provably redundant. Foreign
//! and incomplete files never reach this module, so they can never be chosen.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDateTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    pub keep_within_days: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub taken_at: NaiveDateTime,
    /// Why it failed verification; None when it is verified.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeepReason {
    NewestVerified,
    WithinDays,
    Daily,
    Weekly,
    Monthly,
    /// It failed verification: left for a person to inspect.
    Unverified,
}

impl KeepReason {
    fn describe(self, policy: &Policy) -> String {
        match self {
            KeepReason::NewestVerified => "newest verified backup".into(),
            KeepReason::WithinDays => format!("within {} days", policy.keep_within_days),
            KeepReason::Daily => "daily".into(),
            KeepReason::Weekly => "weekly".into(),
            KeepReason::Monthly => "monthly".into(),
            KeepReason::Unverified => "failed verification, left for you to inspect".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub id: String,
    /// Whole days since the backup was taken.
    pub age_days: i64,
    /// Why it is kept; empty means it is deleted.
    pub keep: Vec<KeepReason>,
    /// Why it failed verification, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Decision {
    pub fn deletes(&self) -> bool {
        self.keep.is_empty()
    }
}

/// Decides each candidate's fate, newest first.
pub fn plan(candidates: &[Candidate], policy: &Policy, now: NaiveDateTime) -> Vec<Decision> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| b.taken_at.cmp(&a.taken_at).then_with(|| b.id.cmp(&a.id)));
    let newest_verified = sorted
        .iter()
        .find(|c| c.problem.is_none())
        .map(|c| c.id.as_str());
    let window = chrono::Duration::days(i64::from(policy.keep_within_days));

    let mut buckets = [
        Bucket::new(KeepReason::Daily, policy.keep_daily, |t| {
            (t.year(), t.ordinal(), 0)
        }),
        Bucket::new(KeepReason::Weekly, policy.keep_weekly, |t| {
            let week = t.iso_week();
            (week.year(), week.week(), 1)
        }),
        Bucket::new(KeepReason::Monthly, policy.keep_monthly, |t| {
            (t.year(), t.month(), 2)
        }),
    ];

    sorted
        .into_iter()
        .map(|c| {
            let age = now.signed_duration_since(c.taken_at);
            let mut keep = Vec::new();
            if newest_verified == Some(c.id.as_str()) {
                keep.push(KeepReason::NewestVerified);
            }
            if age <= window {
                keep.push(KeepReason::WithinDays);
            }
            if c.problem.is_some() {
                keep.push(KeepReason::Unverified);
            } else {
                for bucket in &mut buckets {
                    if bucket.takes(c.taken_at) {
                        keep.push(bucket.reason);
                    }
                }
            }
            Decision {
                id: c.id.clone(),
                age_days: age.num_days(),
                keep,
                problem: c.problem.clone(),
            }
        })
        .collect()
}

/// restic's keep-daily/weekly/monthly: the newest backup of each of the last `limit`
/// periods that have one.
struct Bucket {
    reason: KeepReason,
    limit: u32,
    taken: u32,
    last: Option<(i32, u32, u8)>,
    key: fn(NaiveDateTime) -> (i32, u32, u8),
}

impl Bucket {
    fn new(reason: KeepReason, limit: u32, key: fn(NaiveDateTime) -> (i32, u32, u8)) -> Self {
        Bucket {
            reason,
            limit,
            taken: 0,
            last: None,
            key,
        }
    }

    fn takes(&mut self, at: NaiveDateTime) -> bool {
        let key = (self.key)(at);
        if self.taken >= self.limit || self.last == Some(key) {
            return false;
        }
        self.last = Some(key);
        self.taken += 1;
        true
    }
}

/// One line per decision, for `elior backup prune` and its `--dry-run`.
pub fn render(decisions: &[Decision], policy: &Policy, dry_run: bool) -> String {
    let mut out = String::new();
    for d in decisions {
        let verb = match (d.deletes(), dry_run) {
            (true, true) => "would delete",
            (true, false) => "delete",
            (false, _) => "keep",
        };
        let why = d
            .keep
            .iter()
            .map(|r| r.describe(policy))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(out, "{verb:<12}  {}  {:>4}d", d.id, d.age_days);
        if why.is_empty() {
            let _ = write!(
                out,
                "  (older than {} days, verified, in no keep slot)",
                policy.keep_within_days
            );
        } else {
            let _ = write!(out, "  ({why})");
        }
        if let Some(problem) = &d.problem {
            let _ = write!(out, "\n              {}", problem.replace('\n', " "));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(y: i32, m: u32, d: u32, h: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, 0, 0)
            .unwrap()
    }

    fn candidates(times: &[NaiveDateTime]) -> Vec<Candidate> {
        times
            .iter()
            .map(|t| Candidate {
                id: t.format("%Y%m%d_%H%M%S").to_string(),
                taken_at: *t,
                problem: None,
            })
            .collect()
    }

    const THIRTY: Policy = Policy {
        keep_within_days: 30,
        keep_daily: 0,
        keep_weekly: 0,
        keep_monthly: 0,
    };

    #[test]
    fn keeps_within_the_window_and_deletes_older() {
        let now = at(2026, 11, 29, 2);
        let days = |n: i64| now - chrono::Duration::days(n);
        let list = candidates(&[days(40), days(31), days(29), days(1)]);
        let plan = plan(&list, &THIRTY, now);
        assert_eq!(
            render(&plan, &THIRTY, true),
            "keep          20261128_020000     1d  (newest verified backup, within 30 days)\n\
             keep          20261031_020000    29d  (within 30 days)\n\
             would delete  20261029_020000    31d  (older than 30 days, verified, in no keep slot)\n\
             would delete  20261020_020000    40d  (older than 30 days, verified, in no keep slot)\n"
        );
    }

    #[test]
    fn the_newest_verified_backup_stays_however_old() {
        let now = at(2026, 11, 29, 2);
        let list = candidates(&[now - chrono::Duration::days(90)]);
        let plan = plan(&list, &THIRTY, now);
        assert_eq!(
            render(&plan, &THIRTY, false),
            "keep          20260831_020000    90d  (newest verified backup)\n"
        );
    }

    // Issue 17: a garbled newest backup protected itself while the good one was pruned.
    #[test]
    fn unverified_newest_does_not_protect_itself_but_the_verified_one_does() {
        let now = at(2026, 11, 29, 2);
        let mut list = candidates(&[at(2026, 8, 1, 2), at(2026, 9, 1, 2)]);
        list[1].problem = Some("quick_check found problems".into());
        let plan = plan(&list, &THIRTY, now);
        assert_eq!(
            render(&plan, &THIRTY, false),
            "keep          20260901_020000    89d  (failed verification, left for you to inspect)\n\
             \x20             quick_check found problems\n\
             keep          20260801_020000   120d  (newest verified backup)\n"
        );
    }

    // Issue 17: a corrupt backup filled a --keep-daily slot.
    #[test]
    fn keep_slots_count_verified_backups_only() {
        let policy = Policy {
            keep_within_days: 0,
            keep_daily: 2,
            ..Policy::default()
        };
        let now = at(2026, 11, 29, 12);
        let mut list = candidates(&[
            at(2026, 11, 20, 2),
            at(2026, 11, 19, 2),
            at(2026, 11, 18, 2),
            at(2026, 11, 17, 2),
        ]);
        list[1].problem = Some("sha256 differs".into());
        let kept: Vec<(String, Vec<KeepReason>)> = plan(&list, &policy, now)
            .into_iter()
            .map(|d| (d.id, d.keep))
            .collect();
        assert_eq!(
            kept,
            [
                (
                    "20261120_020000".to_string(),
                    vec![KeepReason::NewestVerified, KeepReason::Daily]
                ),
                ("20261119_020000".to_string(), vec![KeepReason::Unverified]),
                ("20261118_020000".to_string(), vec![KeepReason::Daily]),
                ("20261117_020000".to_string(), vec![]),
            ]
        );
    }

    #[test]
    fn daily_weekly_monthly_keep_the_newest_of_each_period() {
        let policy = Policy {
            keep_within_days: 0,
            keep_daily: 2,
            keep_weekly: 2,
            keep_monthly: 3,
        };
        let now = at(2026, 11, 29, 12);
        let list = candidates(&[
            at(2026, 11, 29, 2),
            at(2026, 11, 28, 14),
            at(2026, 11, 28, 2),
            at(2026, 11, 27, 2),
            at(2026, 11, 20, 2),
            at(2026, 10, 15, 2),
            at(2026, 10, 1, 2),
            at(2026, 8, 1, 2),
        ]);
        let plan = plan(&list, &policy, now);
        let why = "  (older than 0 days, verified, in no keep slot)";
        assert_eq!(
            render(&plan, &policy, true),
            format!(
                "keep          20261129_020000     0d  (newest verified backup, daily, weekly, monthly)\n\
                 keep          20261128_140000     0d  (daily)\n\
                 would delete  20261128_020000     1d{why}\n\
                 would delete  20261127_020000     2d{why}\n\
                 keep          20261120_020000     9d  (weekly)\n\
                 keep          20261015_020000    45d  (monthly)\n\
                 would delete  20261001_020000    59d{why}\n\
                 keep          20260801_020000   120d  (monthly)\n"
            )
        );
    }
}
