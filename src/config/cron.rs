//! Cron expressions as crontab(5) reads them (issue 20), and the time zone they run in.
//!
//! Parsing and matching are croner's: 5 fields (MINUTE HOUR DAY-OF-MONTH MONTH
//! DAY-OF-WEEK), weekdays 0-7 (0 and 7 are Sunday) or names, `@daily`-style names, and
//! day-of-month ORed with day-of-week when both are restricted (`0 3 1 * 1` is the 1st of
//! each month and every Monday). A 6th field in front holds seconds, for schedules tighter
//! than a minute. Croner also takes `L`, `W` and `#`, which crontab(5) lacks.
//!
//! This module only adds what a user needs from an error: which field is wrong and what
//! it takes. Times are computed in a [`jiff`] zone, so a DST gap or fold is croner's to
//! handle (a run in a skipped hour happens once, after the jump; in a repeated hour, once).

use std::fmt;
use std::str::FromStr;

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::Zoned;

/// The env file key that names the schedules' time zone.
pub const TIMEZONE_KEY: &str = "SCHEDULE_TIMEZONE";

/// The names crontab(5) knows, with what each stands for.
const NICKNAMES: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// The fields of the 6-field form; the 5-field form starts at `minute`.
const FIELDS: [(&str, &str); 6] = [
    ("second", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or Jan-Dec"),
    ("day-of-week", "0-7 (0 and 7 are Sunday) or Sun-Sat"),
];

/// A valid cron expression, kept as written (whitespace normalised) for messages.
#[derive(Debug, Clone)]
pub struct CronExpr {
    expr: String,
    cron: Cron,
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}
impl Eq for CronExpr {}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

impl CronExpr {
    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The first run strictly after `after`, in `after`'s zone; `None` if it never runs
    /// again (croner gives up after a few hundred years).
    pub fn next_after(&self, after: &Zoned) -> Option<Zoned> {
        self.cron.find_next_occurrence(after, false).ok()
    }
}

impl FromStr for CronExpr {
    type Err = String;

    /// Errors start with the expression quoted and name the bad field:
    /// `"0 25 * * *": the hour field "25" is not valid; it takes 0-23, ...`.
    fn from_str(s: &str) -> Result<Self, String> {
        let expr = s.split_whitespace().collect::<Vec<_>>().join(" ");
        let pattern = if expr.starts_with('@') {
            let lower = expr.to_ascii_lowercase();
            match NICKNAMES.iter().find(|(name, _)| *name == lower) {
                Some((_, pattern)) => pattern.to_string(),
                None => {
                    return Err(format!(
                        "{s:?} is not a cron expression: the names are {}",
                        NICKNAMES
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
        } else {
            expr.clone()
        };
        let fields: Vec<&str> = pattern.split(' ').filter(|f| !f.is_empty()).collect();
        if !(5..=6).contains(&fields.len()) {
            return Err(format!(
                "{s:?} is not a cron expression: it has {} field{}; crontab's form has 5, \
                 MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK (\"0 2 * * *\" is 02:00 daily), \
                 or 6 with seconds first, or a name such as @daily",
                fields.len(),
                if fields.len() == 1 { "" } else { "s" }
            ));
        }
        let cron = parser().parse(&pattern).map_err(|whole| {
            bad_field(s, &fields)
                .unwrap_or_else(|| format!("{s:?} is not a cron expression ({whole})"))
        })?;
        // `0 0 30 2 *` parses but never runs: say so now, not at the first missed night.
        let epoch = Zoned::new(jiff::Timestamp::UNIX_EPOCH, TimeZone::UTC);
        if cron.find_next_occurrence(&epoch, false).is_err() {
            return Err(format!(
                "{s:?} never runs: no date matches its day-of-month and month (such as 30 in February)"
            ));
        }
        Ok(CronExpr { expr, cron })
    }
}

/// The first field that fails on its own (every other field `*`), described.
fn bad_field(s: &str, fields: &[&str]) -> Option<String> {
    let names = &FIELDS[FIELDS.len() - fields.len()..];
    (0..fields.len()).find_map(|i| {
        let probe: Vec<&str> = (0..fields.len())
            .map(|j| if i == j { fields[j] } else { "*" })
            .collect();
        let err = parser().parse(&probe.join(" ")).err()?;
        let (name, range) = names[i];
        Some(format!(
            "{s:?}: the {name} field {:?} is not valid ({}); it takes {range}, with * , - and /",
            fields[i],
            croner_reason(&err)
        ))
    })
}

/// Croner's message without its type prefix.
fn croner_reason(err: &croner::errors::CronError) -> String {
    let text = err.to_string();
    text.split_once(": ")
        .map_or(text.as_str(), |(_, rest)| rest)
        .trim_end_matches('.')
        .to_string()
}

/// `SCHEDULE_TIMEZONE`: an IANA zone name (`Europe/Paris`, `UTC`) from the host's tz
/// database; unset or empty means the host's own zone.
pub fn timezone(value: Option<&str>) -> Result<TimeZone, String> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(TimeZone::system()),
        Some(name) => TimeZone::get(name).map_err(|e| {
            format!(
                "{name:?} is not a time zone of this host's tz database ({e}); use a name such as Europe/Paris or UTC (the tzdata package holds them)"
            )
        }),
    }
}

/// How a zone is named in messages: its IANA name, else its current offset.
pub fn zone_name(tz: &TimeZone) -> String {
    match tz.iana_name() {
        Some(name) => name.to_string(),
        None => jiff::Timestamp::now()
            .to_zoned(tz.clone())
            .offset()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: &str, civil: &str) -> Zoned {
        let dt: jiff::civil::DateTime = civil.parse().unwrap();
        dt.to_zoned(TimeZone::get(tz).unwrap()).unwrap()
    }

    fn runs(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let c: CronExpr = expr.parse().unwrap();
        let mut t = at(tz, from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = c.next_after(&t).unwrap();
            out.push(t.strftime("%Y-%m-%d %H:%M:%S %Z %a").to_string());
        }
        out
    }

    #[test]
    fn day_of_month_and_day_of_week_are_ored_as_crontab_does() {
        // 2026-12-01 is a Tuesday: the 1st, then every Monday, then the next 1st.
        assert_eq!(
            runs("0 3 1 * 1", "UTC", "2026-11-30T12:00:00", 6),
            [
                "2026-12-01 03:00:00 UTC Tue",
                "2026-12-07 03:00:00 UTC Mon",
                "2026-12-14 03:00:00 UTC Mon",
                "2026-12-21 03:00:00 UTC Mon",
                "2026-12-28 03:00:00 UTC Mon",
                "2027-01-01 03:00:00 UTC Fri",
            ]
        );
    }

    #[test]
    fn a_restricted_field_alone_is_not_ored() {
        // Only day-of-week restricted: Mondays only (no "or every day" from `*`).
        assert_eq!(
            runs("0 3 * * 1", "UTC", "2026-11-30T12:00:00", 2),
            ["2026-12-07 03:00:00 UTC Mon", "2026-12-14 03:00:00 UTC Mon"]
        );
    }

    #[test]
    fn names_like_daily_work() {
        assert_eq!(
            runs("@daily", "UTC", "2026-11-30T12:00:00", 2),
            ["2026-12-01 00:00:00 UTC Tue", "2026-12-02 00:00:00 UTC Wed"]
        );
        assert_eq!(
            runs("@HOURLY", "UTC", "2026-11-30T12:30:00", 1),
            ["2026-11-30 13:00:00 UTC Mon"]
        );
        assert_eq!(
            "@midnight".parse::<CronExpr>().unwrap().as_str(),
            "@midnight"
        );
        assert!("@reboot"
            .parse::<CronExpr>()
            .unwrap_err()
            .contains("@daily"));
    }

    #[test]
    fn weekdays_0_and_7_are_sunday_and_names_work() {
        for expr in ["0 2 * * 0", "0 2 * * 7", "0 2 * * Sun", "0 2 * * sun"] {
            assert_eq!(
                runs(expr, "UTC", "2026-12-01T00:00:00", 1),
                ["2026-12-06 02:00:00 UTC Sun"],
                "{expr}"
            );
        }
        assert_eq!(
            runs("0 2 * * 5-7", "UTC", "2026-12-01T00:00:00", 3),
            [
                "2026-12-04 02:00:00 UTC Fri",
                "2026-12-05 02:00:00 UTC Sat",
                "2026-12-06 02:00:00 UTC Sun",
            ]
        );
    }

    #[test]
    fn six_fields_put_seconds_first() {
        assert_eq!(
            runs("*/20 * * * * *", "UTC", "2026-12-01T00:00:00", 3),
            [
                "2026-12-01 00:00:20 UTC Tue",
                "2026-12-01 00:00:40 UTC Tue",
                "2026-12-01 00:01:00 UTC Tue",
            ]
        );
    }

    #[test]
    fn each_bad_expression_names_the_bad_field() {
        for (expr, needle) in [
            ("61 2 * * *", "the minute field \"61\""),
            ("0 25 * * *", "the hour field \"25\""),
            ("0 2 32 * *", "the day-of-month field \"32\""),
            ("0 2 0 * *", "the day-of-month field \"0\""),
            ("0 2 * 13 *", "the month field \"13\""),
            ("0 2 * Foo *", "the month field \"Foo\""),
            ("0 2 * * 8", "the day-of-week field \"8\""),
            ("0 2 * * Mun", "the day-of-week field \"Mun\""),
            ("0 2-1x * * *", "the hour field \"2-1x\""),
            ("60 0 2 * * *", "the second field \"60\""),
        ] {
            let err = expr.parse::<CronExpr>().unwrap_err();
            assert!(
                err.starts_with(&format!("{expr:?}: {needle}")),
                "{expr}: {err}"
            );
            assert!(err.contains("it takes"), "{err}");
        }
        let err = "0 2 * *".parse::<CronExpr>().unwrap_err();
        assert!(err.contains("has 4 fields"), "{err}");
        let err = "nightly".parse::<CronExpr>().unwrap_err();
        assert!(
            err.starts_with("\"nightly\" is not a cron expression"),
            "{err}"
        );
        let err = "0 0 30 2 *".parse::<CronExpr>().unwrap_err();
        assert!(err.contains("never runs"), "{err}");
    }

    #[test]
    fn a_run_in_the_skipped_hour_of_spring_happens_once_after_the_jump() {
        // Paris skips 02:00-03:00 on 2026-03-29: the 02:30 run still happens that day,
        // once, after the jump.
        let all = runs("30 2 * * *", "Europe/Paris", "2026-03-28T12:00:00", 3);
        assert!(all[0].starts_with("2026-03-29 03:"), "{all:?}");
        assert!(all[0].ends_with("CEST Sun"), "{all:?}");
        assert_eq!(all[1], "2026-03-30 02:30:00 CEST Mon");
        assert_eq!(all[2], "2026-03-31 02:30:00 CEST Tue");
    }

    #[test]
    fn a_run_in_the_repeated_hour_of_autumn_happens_once() {
        // Paris repeats 02:00-03:00 on 2026-10-25 (CEST, then CET): one 02:30 run.
        let all = runs("30 2 * * *", "Europe/Paris", "2026-10-24T12:00:00", 3);
        assert_eq!(all[0], "2026-10-25 02:30:00 CEST Sun");
        assert_eq!(all[1], "2026-10-26 02:30:00 CET Mon");
        assert_eq!(all[2], "2026-10-27 02:30:00 CET Tue");
        // An hourly job runs in both 02:xx hours: each is a real, distinct hour.
        let hourly = runs("15 * * * *", "Europe/Paris", "2026-10-25T01:30:00", 3);
        assert_eq!(
            hourly,
            [
                "2026-10-25 02:15:00 CEST Sun",
                "2026-10-25 02:15:00 CET Sun",
                "2026-10-25 03:15:00 CET Sun",
            ]
        );
    }

    #[test]
    fn the_time_zone_is_explicit_and_a_bad_one_is_named() {
        // 03:00 in New York is 08:00 UTC in winter.
        let c: CronExpr = "0 3 * * *".parse().unwrap();
        let tz = timezone(Some("America/New_York")).unwrap();
        let from = jiff::Timestamp::from_second(1_796_083_200)
            .unwrap()
            .to_zoned(tz); // 2026-12-01 00:00 UTC
        let next = c.next_after(&from).unwrap();
        assert_eq!(next.timestamp().to_string(), "2026-12-01T08:00:00Z");
        assert_eq!(zone_name(next.time_zone()), "America/New_York");
        let err = timezone(Some("Mars/Olympus")).unwrap_err();
        assert!(err.contains("\"Mars/Olympus\""), "{err}");
        assert!(timezone(Some("")).is_ok() && timezone(None).is_ok());
    }
}
