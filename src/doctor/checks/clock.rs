//! This host's clock against the `Date` the stack's nginx sends: tokens are checked
//! against the clock, so skew warns and then fails.

use serde::Serialize;

use super::{Check, CheckInfo, Group};
use crate::doctor::facts::Stack;
use crate::doctor::sources::Sources;
use crate::doctor::{Finding, NEEDS_SETTINGS};

/// Clock skew that warns, and that fails.
pub const SKEW_WARN_SECS: i64 = 5;
pub const SKEW_FAIL_SECS: i64 = 120;

pub struct Clock;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ClockFacts {
    pub source: String,
    pub server_date: Option<i64>,
    pub local_now: i64,
    pub error: Option<String>,
}

impl Check for Clock {
    const INFO: CheckInfo = CheckInfo {
        name: "clock",
        group: Group::Host,
        about: "this host's clock agrees with the HTTP Date of the stack",
    };
    /// `None` without valid settings.
    type Facts = Option<ClockFacts>;

    async fn gather(sources: &Sources) -> Option<ClockFacts> {
        // The nginx check's answer, asked once for both.
        sources.nginx().await.map(|n| ClockFacts {
            source: n.https_url.clone(),
            server_date: n.server_date,
            local_now: crate::tls::inspect::unix_now(),
            error: n.https_error.clone(),
        })
    }

    fn judge(_: &Stack, f: &Option<ClockFacts>) -> Vec<Finding> {
        let Some(f) = f else {
            return vec![Finding::skipped(NEEDS_SETTINGS)];
        };
        let Some(date) = f.server_date else {
            return vec![Finding::skipped(format!(
                "no Date from {}: {}",
                f.source,
                f.error.as_deref().unwrap_or("no answer")
            ))];
        };
        let skew = f.local_now - date;
        let line = format!(
            "this host's clock is {skew:+}s from the Date of {}",
            f.source
        );
        let fix = "enable time sync: timedatectl set-ntp true (or install chrony)";
        if skew.abs() >= SKEW_FAIL_SECS {
            vec![Finding::failure(line, fix)]
        } else if skew.abs() >= SKEW_WARN_SECS {
            vec![Finding::warning(line, fix)]
        } else {
            vec![Finding::ok(line)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::{statuses, test_stack, TEST_NOW};
    use crate::doctor::Status;

    #[test]
    fn skew_warns_from_5s_and_fails_from_2_minutes() {
        let skewed = |skew| {
            Clock::judge(
                &test_stack(),
                &Some(ClockFacts {
                    source: "https://x/health".into(),
                    server_date: Some(TEST_NOW - skew),
                    local_now: TEST_NOW,
                    error: None,
                }),
            )
        };
        assert_eq!(statuses(&skewed(1)), vec![Status::Ok]);
        assert_eq!(
            skewed(1)[0].finding,
            "this host's clock is +1s from the Date of https://x/health"
        );
        assert_eq!(statuses(&skewed(30)), vec![Status::Warning]);
        assert_eq!(statuses(&skewed(-600)), vec![Status::Failure]);
    }
}
