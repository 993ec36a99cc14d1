//! `/health`: the database probe behind it, cached for a short time, and its body.
//!
//! Load balancers, Docker and nginx may call `/health` thousands of times a second under
//! load; running a query for each would make health the most expensive endpoint. One
//! request refreshes the cached result when it is older than [`FRESH_FOR`]; concurrent
//! requests meanwhile answer from the previous result, so a check never queues behind
//! another.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::db::{self, Db};

/// How stale a health answer may be.
pub const FRESH_FOR: Duration = Duration::from_millis(500);
/// How long the probe waits for the database before calling it unhealthy.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub type Verdict = Result<(), &'static str>;

#[derive(Default)]
pub struct HealthCache {
    last: RwLock<Option<(Instant, Verdict)>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl HealthCache {
    pub async fn verdict(&self, db: &Db) -> Verdict {
        if let Some(fresh) = self.fresh(Instant::now()) {
            return fresh;
        }
        match self.refreshing.try_lock() {
            Ok(_guard) => {
                let verdict = probe(db).await;
                *self.last.write().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), verdict));
                verdict
            }
            // Someone else is refreshing: answer with what we last knew, or wait for
            // them when there is nothing yet.
            Err(_) => match self.last_verdict() {
                Some(verdict) => verdict,
                None => {
                    let _wait = self.refreshing.lock().await;
                    self.fresh(Instant::now())
                        .unwrap_or(Err("health check still starting"))
                }
            },
        }
    }

    fn last_verdict(&self) -> Option<Verdict> {
        self.last
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(_, v)| v)
    }

    /// The last verdict, when it is younger than [`FRESH_FOR`] at `now`.
    pub fn fresh(&self, now: Instant) -> Option<Verdict> {
        match *self.last.read().unwrap_or_else(|p| p.into_inner()) {
            Some((at, verdict)) if now.duration_since(at) < FRESH_FOR => Some(verdict),
            _ => None,
        }
    }
}

/// Checks that the file is still ours and that a real table can be read in time.
pub async fn probe(db: &Db) -> Verdict {
    db.check_file()?;
    match tokio::time::timeout(PROBE_TIMEOUT, db.call(|c| db::ping(c))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "database health check failed");
            Err("query failed")
        }
        Err(_) => Err("timed out"),
    }
}

/// What `/health` says. Written by hand in [`HealthBody::to_json`]: probes call /health
/// more than anything else, and serde_json's general path (a write call per quote, key and
/// number, each key escaped) cost more than the rest of the request's own work.
///
/// Public, so minimal (issue 15): healthy or not, when, and the database's state. The
/// version, environment, domain, uptime and pool figures are in `/status/database`, for
/// internal networks and admins.
#[cfg_attr(test, derive(serde::Serialize))]
pub struct HealthBody {
    pub status: &'static str,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub database: HealthDatabase,
}

#[cfg_attr(test, derive(serde::Serialize))]
pub struct HealthDatabase {
    pub status: &'static str,
    pub error: Option<&'static str>,
}

impl HealthBody {
    /// The same JSON serde would write for these structs (a unit test holds it to that),
    /// with the timestamp as `to_rfc3339` gives it.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b"{\"status\":");
        plain_string(&mut out, self.status);
        out.extend_from_slice(b",\"timestamp\":\"");
        rfc3339(&mut out, self.timestamp);
        out.extend_from_slice(b"\",\"database\":{\"status\":");
        plain_string(&mut out, self.database.status);
        out.extend_from_slice(b",\"error\":");
        match self.database.error {
            Some(error) => plain_string(&mut out, error),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}}");
        out
    }
}

/// A JSON string from elior's own constants, which need no escaping.
fn plain_string(out: &mut Vec<u8>, value: &'static str) {
    debug_assert!(!value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20));
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]+00:00`, the fraction in 0, 3, 6 or 9 digits as
/// chrono's `to_rfc3339` writes it (years 0 to 9999, which is every clock reading).
fn rfc3339(out: &mut Vec<u8>, at: chrono::DateTime<chrono::Utc>) {
    use chrono::{Datelike, Timelike};
    let mut text = *b"0000-00-00T00:00:00.000000000";
    let mut put = |end: usize, mut value: u32, width: usize| {
        for slot in text[end - width..end].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(4, at.year().clamp(0, 9999) as u32, 4);
    put(7, at.month(), 2);
    put(10, at.day(), 2);
    put(13, at.hour(), 2);
    put(16, at.minute(), 2);
    put(19, at.second(), 2);
    let nanos = at.nanosecond() % 1_000_000_000;
    put(29, nanos, 9);
    let len = match nanos {
        0 => 19,
        n if n % 1_000_000 == 0 => 23,
        n if n % 1_000 == 0 => 26,
        _ => 29,
    };
    out.extend_from_slice(&text[..len]);
    out.extend_from_slice(b"+00:00");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn timestamps_match_chrono_for_every_fraction_width() {
        let base = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        for nanos in [
            0,
            7_000_000,
            120_000_000,
            123_456_000,
            5_000,
            123_456_789,
            1,
            999_999_999,
        ] {
            let at = base + chrono::Duration::nanoseconds(nanos);
            let mut out = Vec::new();
            rfc3339(&mut out, at);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                at.to_rfc3339(),
                "{nanos} ns"
            );
        }
        let now = Utc::now();
        let mut out = Vec::new();
        rfc3339(&mut out, now);
        assert_eq!(String::from_utf8(out).unwrap(), now.to_rfc3339());
    }

    #[test]
    fn the_hand_written_body_is_what_serde_would_write() {
        for error in [None, Some("query failed")] {
            let body = HealthBody {
                status: if error.is_none() {
                    "healthy"
                } else {
                    "unhealthy"
                },
                timestamp: Utc::now(),
                database: HealthDatabase {
                    status: "connected",
                    error,
                },
            };
            let ours: serde_json::Value = serde_json::from_slice(&body.to_json()).unwrap();
            let mut serde = serde_json::to_value(&body).unwrap();
            serde["timestamp"] = body.timestamp.to_rfc3339().into();
            assert_eq!(ours, serde);
        }
    }
}
