//! The checks, one file each: a type whose `gather` records its own facts and whose
//! `judge` turns them into findings, side by side with the unit tests of its rules.
//! [`ALL`] is the one place a check is named; `--list-checks` prints it, `--check NAME`
//! picks from it, and [`run`] runs what was picked.
//!
//! A check whose gathering panics becomes a failed finding and the run goes on.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::pin::Pin;

use anyhow::Result;
use serde::Serialize;

use super::facts::Stack;
use super::sources::Sources;
use super::{CheckReport, Finding, Report};
use crate::plan::render::Templates;

pub mod backups;
pub mod certificate;
pub mod clock;
pub mod containers;
pub mod database;
pub mod dns;
pub mod docker;
pub mod drift;
pub mod env;
pub mod lock;
pub mod nginx;
pub mod ports;
pub mod schedule;
pub mod swarm;

/// Every check, in the order it runs and prints (grouped).
pub static ALL: &[&dyn AnyCheck] = &[
    &docker::Docker,
    &ports::Ports,
    &dns::Dns,
    &clock::Clock,
    &env::Env,
    &drift::Drift,
    &certificate::Certificate,
    &containers::Containers,
    &swarm::Swarm,
    &nginx::Nginx,
    &database::Database,
    &backups::Backups,
    &schedule::Schedule,
    &lock::Lock,
];

/// The registered check called `name`.
pub fn find(name: &str) -> Option<&'static dyn AnyCheck> {
    ALL.iter().copied().find(|c| c.info().name == name)
}

/// The heading a check prints under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Group {
    Host,
    Configuration,
    Stack,
    Operations,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Host => "Host",
            Group::Configuration => "Configuration",
            Group::Stack => "Stack",
            Group::Operations => "Operations",
        }
    }
}

/// What `--list-checks` says of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CheckInfo {
    pub name: &'static str,
    pub group: Group,
    /// What it looks at, in one line.
    pub about: &'static str,
}

/// One check: what it looks at, how it gathers its facts and how it judges them.
// The futures run on doctor's own current-thread runtime, so they need no `Send` bound
// (what the lint warns a public async trait method cannot promise).
#[allow(async_fn_in_trait)]
pub trait Check: Sync + 'static {
    const INFO: CheckInfo;
    /// What `gather` observed: plain data, printed by `--json` as `facts`.
    type Facts: Serialize;
    /// Looks at the world; an observation that cannot be made is recorded in the facts
    /// (an `error` field), so the judge can say what went wrong.
    async fn gather(sources: &Sources) -> Self::Facts;
    /// Pure: no I/O and no clock (the time is `stack.now`).
    fn judge(stack: &Stack, facts: &Self::Facts) -> Vec<Finding>;
}

/// A check's facts as JSON and its findings; an error only when the facts do not
/// serialise.
pub type Outcome = Result<(serde_json::Value, Vec<Finding>)>;

/// A check running on doctor's runtime.
pub type Running<'a> = Pin<Box<dyn Future<Output = Outcome> + 'a>>;

/// A check as the registry holds it: any [`Check`], its facts made JSON.
pub trait AnyCheck: Sync {
    fn info(&self) -> CheckInfo;
    fn run<'a>(&'a self, sources: &'a Sources) -> Running<'a>;
}

impl<C: Check> AnyCheck for C {
    fn info(&self) -> CheckInfo {
        C::INFO
    }

    fn run<'a>(&'a self, sources: &'a Sources) -> Running<'a> {
        Box::pin(async move {
            let facts = C::gather(sources).await;
            let findings = C::judge(&sources.stack, &facts);
            Ok((serde_json::to_value(&facts)?, findings))
        })
    }
}

/// Runs `checks` against the stack in `dir`, in the order given.
pub fn run(dir: &Path, templates: Templates, checks: &[&dyn AnyCheck]) -> Result<Report> {
    let runtime = crate::docker::runtime()?;
    let sources = Sources::load(dir, templates);
    let reports = checks
        .iter()
        .map(|check| {
            let info = check.info();
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                runtime.block_on(check.run(&sources))
            }));
            let (facts, findings) = match outcome {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => (
                    serde_json::Value::Null,
                    vec![crashed(info.name, &format!("{e:#}"))],
                ),
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into());
                    (serde_json::Value::Null, vec![crashed(info.name, &message)])
                }
            };
            CheckReport {
                name: info.name,
                group: info.group.as_str(),
                facts,
                findings,
            }
        })
        .collect();
    Ok(Report::new(dir.display().to_string(), reports))
}

fn crashed(name: &str, message: &str) -> Finding {
    Finding::failure(
        format!("the {name} check crashed: {message}"),
        format!(
            "run `elior doctor {name}` again; if it keeps failing, report it with this message"
        ),
    )
}

/// The stack the judges' unit tests phrase their fixes for.
#[cfg(test)]
pub(crate) fn test_stack() -> Stack {
    Stack {
        dir: "/srv/elior".into(),
        domain: Some("fit.example.com".into()),
        project: Some("elior-fit-example-com-0123abcd".into()),
        production: true,
        swarm: false,
        now: TEST_NOW,
        config_error: None,
    }
}

/// `now` of [`test_stack`].
#[cfg(test)]
pub(crate) const TEST_NOW: i64 = 1_800_000_000;

#[cfg(test)]
pub(crate) fn statuses(findings: &[Finding]) -> Vec<super::Status> {
    findings.iter().map(|f| f.status).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    /// A check whose gathering panics, as a bug in one would.
    struct Panics;

    impl Check for Panics {
        const INFO: CheckInfo = CheckInfo {
            name: "panics",
            group: Group::Host,
            about: "panics while gathering",
        };
        type Facts = ();
        async fn gather(_: &Sources) {
            panic!("gathering went wrong")
        }
        fn judge(_: &Stack, _: &()) -> Vec<Finding> {
            unreachable!("gather panicked")
        }
    }

    #[test]
    fn a_check_that_panics_while_gathering_is_a_failure_and_the_run_goes_on() {
        let dir = std::env::temp_dir().join(format!("elior-doctor-unit-{}", std::process::id()));
        let report = run(
            &dir,
            Templates::embedded(),
            &[&Panics, find("lock").unwrap()],
        )
        .unwrap();
        assert_eq!(report.checks.len(), 2);
        let crashed = &report.checks[0].findings[0];
        assert_eq!(crashed.status, Status::Failure);
        assert_eq!(
            crashed.finding,
            "the panics check crashed: gathering went wrong"
        );
        assert_eq!(report.checks[1].name, "lock");
        assert_eq!(report.checks[1].status(), Status::Ok);
    }

    #[test]
    fn check_names_are_unique_and_found_by_name() {
        for (i, c) in ALL.iter().enumerate() {
            let name = c.info().name;
            assert!(ALL[i + 1..].iter().all(|o| o.info().name != name), "{name}");
            assert_eq!(find(name).unwrap().info(), c.info());
        }
        assert!(find("certficate").is_none());
    }

    #[test]
    fn checks_of_a_group_are_listed_together() {
        let groups: Vec<Group> = ALL.iter().map(|c| c.info().group).collect();
        for (i, g) in groups.iter().enumerate() {
            if i > 0 && groups[i - 1] != *g {
                assert!(!groups[..i].contains(g), "{g:?} is split: {groups:?}");
            }
        }
    }
}
