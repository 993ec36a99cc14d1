//! `elior doctor`: the troubleshooting runbook, automated (issue 7). Owns the list of
//! checks, the shape of a report and how it reads on a terminal.
//!
//! Each check is one file in `checks/`, a type with two halves kept apart: `gather`
//! looks at the world (files, Docker, sockets, DNS, the stack over HTTPS) and records
//! *facts*; `judge` turns facts into findings, pure, so every verdict and every fix
//! command is unit-tested without a stack. What several checks read (the settings, the
//! Docker client, nginx's answer) is loaded once, in `sources`. A check whose gathering
//! panics becomes a failed finding and the run goes on. Nothing here changes the stack:
//! doctor only reads (the one exception is a probe file created and removed in the
//! backup folder to prove it is writable).

pub mod checks;
pub mod disk;
pub mod facts;
pub mod procfs;
pub mod sources;

use serde::Serialize;

/// The verdict of one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Not checked because something it needs is missing (reported by another check).
    Skipped,
    Warning,
    Failure,
}

impl Status {
    pub fn mark(self) -> &'static str {
        match self {
            Status::Ok => "[✓]",
            Status::Skipped => "[-]",
            Status::Warning => "[!]",
            Status::Failure => "[✗]",
        }
    }

    fn color(self) -> &'static str {
        match self {
            Status::Ok => "\x1b[32m",
            Status::Skipped => "\x1b[2m",
            Status::Warning => "\x1b[33m",
            Status::Failure => "\x1b[31m",
        }
    }
}

/// One line of a check's verdict, with the fix when it is not ok.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub status: Status,
    pub finding: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Supporting lines, such as a failed container's last log lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl Finding {
    pub fn ok(finding: impl Into<String>) -> Finding {
        Finding {
            status: Status::Ok,
            finding: finding.into(),
            fix: None,
            details: Vec::new(),
        }
    }
    pub fn skipped(finding: impl Into<String>) -> Finding {
        Finding {
            status: Status::Skipped,
            ..Finding::ok(finding)
        }
    }
    pub fn warning(finding: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            status: Status::Warning,
            fix: Some(fix.into()),
            ..Finding::ok(finding)
        }
    }
    pub fn failure(finding: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            status: Status::Failure,
            fix: Some(fix.into()),
            ..Finding::ok(finding)
        }
    }
    pub fn with_details(mut self, details: Vec<String>) -> Finding {
        self.details = details;
        self
    }
}

/// What a judge says when the settings it needs are not valid (the env check names why).
pub const NEEDS_SETTINGS: &str = "needs valid settings (see the env check)";

/// `3d 4h`, `5h 2m`, `40s`: an age for a person.
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// One check's gathered facts and its findings.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub name: &'static str,
    pub group: &'static str,
    pub facts: serde_json::Value,
    pub findings: Vec<Finding>,
}

impl CheckReport {
    pub fn status(&self) -> Status {
        self.findings
            .iter()
            .map(|f| f.status)
            .max()
            .unwrap_or(Status::Ok)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub warnings: usize,
    pub failures: usize,
    pub skipped: usize,
}

/// Everything one run found; `--json` prints it as it is.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dir: String,
    pub checks: Vec<CheckReport>,
    pub summary: Summary,
}

impl Report {
    pub fn new(dir: String, checks: Vec<CheckReport>) -> Report {
        let mut summary = Summary::default();
        for finding in checks.iter().flat_map(|c| &c.findings) {
            match finding.status {
                Status::Ok => summary.ok += 1,
                Status::Skipped => summary.skipped += 1,
                Status::Warning => summary.warnings += 1,
                Status::Failure => summary.failures += 1,
            }
        }
        Report {
            dir,
            checks,
            summary,
        }
    }

    pub fn failed(&self) -> bool {
        self.summary.failures > 0
    }

    /// The report as a person reads it: grouped, one mark per finding, the fix indented
    /// under it. `color` adds ANSI colours to the marks.
    pub fn render(&self, color: bool) -> String {
        let mut out = String::new();
        let mut group = "";
        for check in &self.checks {
            if check.group != group {
                if !group.is_empty() {
                    out.push('\n');
                }
                group = check.group;
                out.push_str(group);
                out.push('\n');
            }
            for f in &check.findings {
                let mark = if color {
                    format!("{}{}\x1b[0m", f.status.color(), f.status.mark())
                } else {
                    f.status.mark().to_string()
                };
                out.push_str(&format!("  {mark} {}: {}\n", check.name, f.finding));
                for line in &f.details {
                    out.push_str(&format!("        | {line}\n"));
                }
                if let Some(fix) = &f.fix {
                    for (i, line) in fix.lines().enumerate() {
                        let lead = if i == 0 { "fix: " } else { "     " };
                        out.push_str(&format!("      {lead}{line}\n"));
                    }
                }
            }
        }
        let s = &self.summary;
        out.push_str(&format!(
            "\ndoctor: {} ok, {} {}, {} {}, {} skipped{}\n",
            s.ok,
            s.warnings,
            plural(s.warnings, "warning", "warnings"),
            s.failures,
            plural(s.failures, "failure", "failures"),
            s.skipped,
            if s.failures > 0 { " (exit 1)" } else { "" }
        ));
        out
    }
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_groups_marks_fixes_and_a_summary() {
        let report = Report::new(
            "/srv/elior".into(),
            vec![
                CheckReport {
                    name: "docker",
                    group: "Host",
                    facts: serde_json::Value::Null,
                    findings: vec![Finding::ok("engine 24.0.7 (API 1.43)")],
                },
                CheckReport {
                    name: "env",
                    group: "Configuration",
                    facts: serde_json::Value::Null,
                    findings: vec![
                        Finding::failure("mode 0644", "chmod 600 .env.production"),
                        Finding::warning("w", "a\nb").with_details(vec!["log".into()]),
                    ],
                },
            ],
        );
        assert_eq!(
            report.render(false),
            "Host\n  [✓] docker: engine 24.0.7 (API 1.43)\n\nConfiguration\n  [✗] env: mode 0644\n      fix: chmod 600 .env.production\n  [!] env: w\n        | log\n      fix: a\n           b\n\ndoctor: 1 ok, 1 warning, 1 failure, 0 skipped (exit 1)\n"
        );
        assert!(report.failed());
        assert_eq!(report.checks[1].status(), Status::Failure);
    }
}
