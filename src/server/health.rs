//! `/health`: the database and upload store probes behind it, cached for a short time,
//! and its body.
//!
//! Load balancers, Docker and nginx may call `/health` thousands of times a second under
//! load; running a query for each would make health the most expensive endpoint. One
//! request refreshes the cached result when it is older than [`FRESH_FOR`]; concurrent
//! requests meanwhile answer from the previous result, so a check never queues behind
//! another. The database and the store are probed in parallel, each with its own
//! timeout; a store that answered is asked again only after [`STORE_FRESH_FOR`], since on
//! S3 every check is a billed request to another host (issue 16).

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::db::{self, Db};
use crate::files::Store;

/// How stale a health answer may be.
pub const FRESH_FOR: Duration = Duration::from_millis(500);
/// How stale the store's part may be while it is healthy (a failing store is asked again
/// after [`FRESH_FOR`], so its recovery shows at once).
pub const STORE_FRESH_FOR: Duration = Duration::from_secs(5);
/// How long the probe waits for the database before calling it unhealthy (the store's
/// is [`crate::files::store::PROBE_TIMEOUT`]).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the probes found: healthy only when both the database and the store answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub database: Result<(), &'static str>,
    pub storage: Result<(), &'static str>,
    /// `local` or `s3`.
    pub storage_kind: &'static str,
    /// `sqlite` or `postgresql` (never a host or a credential).
    pub database_kind: &'static str,
}

impl Verdict {
    pub fn is_healthy(&self) -> bool {
        self.database.is_ok() && self.storage.is_ok()
    }
}

#[derive(Default)]
pub struct HealthCache {
    last: RwLock<Option<(Instant, Verdict)>>,
    /// The store's last answer; only read and written while holding `refreshing`.
    store_last: Mutex<Option<(Instant, Result<(), &'static str>)>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl HealthCache {
    pub async fn verdict(&self, db: &Db, store: &Store) -> Verdict {
        if let Some(fresh) = self.fresh(Instant::now()) {
            return fresh;
        }
        match self.refreshing.try_lock() {
            Ok(_guard) => {
                let verdict = self.refresh(db, store).await;
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
                    self.fresh(Instant::now()).unwrap_or(Verdict {
                        database: Err("health check still starting"),
                        storage: Err("health check still starting"),
                        storage_kind: store.kind(),
                        database_kind: db.backend().as_str(),
                    })
                }
            },
        }
    }

    /// Probes the database, and the store unless its last answer still holds, at once.
    async fn refresh(&self, db: &Db, store: &Store) -> Verdict {
        let now = Instant::now();
        let cached = match *self.store_last.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((at, Ok(()))) if now.duration_since(at) < STORE_FRESH_FOR => Some(Ok(())),
            Some((at, failed)) if now.duration_since(at) < FRESH_FOR => Some(failed),
            _ => None,
        };
        let storage = async {
            match cached {
                Some(verdict) => verdict,
                None => {
                    let verdict = store.check().await;
                    *self.store_last.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), verdict));
                    verdict
                }
            }
        };
        let (database, storage) = tokio::join!(probe(db), storage);
        Verdict {
            database_kind: db.backend().as_str(),
            database,
            storage,
            storage_kind: store.kind(),
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

/// Checks that the file is still ours and that a real table can be read in time (off the
/// async workers, so the timeout can give up on a read that hangs).
pub async fn probe(db: &Db) -> Result<(), &'static str> {
    db.check_file()?;
    match tokio::time::timeout(PROBE_TIMEOUT, db.read_off_thread(|c| db::ping(c))).await {
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
/// Public, so minimal (issue 15): healthy or not, when, the database's state and the
/// upload store's kind and state. The version, environment, domain, uptime and pool
/// figures are in `/status/database`, for internal networks and admins.
#[cfg_attr(test, derive(serde::Serialize))]
pub struct HealthBody {
    pub status: &'static str,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub database: HealthDatabase,
    pub storage: HealthStorage,
}

#[cfg_attr(test, derive(serde::Serialize))]
pub struct HealthDatabase {
    /// `sqlite` or `postgresql`.
    pub kind: &'static str,
    pub status: &'static str,
    pub error: Option<&'static str>,
}

#[cfg_attr(test, derive(serde::Serialize))]
pub struct HealthStorage {
    /// `local` or `s3`.
    pub kind: &'static str,
    pub status: &'static str,
    pub error: Option<&'static str>,
}

impl HealthBody {
    pub fn new(verdict: Verdict, timestamp: chrono::DateTime<chrono::Utc>) -> Self {
        let state = |ok: bool| if ok { "connected" } else { "disconnected" };
        HealthBody {
            status: if verdict.is_healthy() {
                "healthy"
            } else {
                "unhealthy"
            },
            timestamp,
            database: HealthDatabase {
                kind: verdict.database_kind,
                status: state(verdict.database.is_ok()),
                error: verdict.database.err(),
            },
            storage: HealthStorage {
                kind: verdict.storage_kind,
                status: state(verdict.storage.is_ok()),
                error: verdict.storage.err(),
            },
        }
    }

    /// The same JSON serde would write for these structs (a unit test holds it to that),
    /// with the timestamp as `to_rfc3339` gives it.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(192);
        out.extend_from_slice(b"{\"status\":");
        plain_string(&mut out, self.status);
        out.extend_from_slice(b",\"timestamp\":\"");
        rfc3339(&mut out, self.timestamp);
        out.extend_from_slice(b"\",\"database\":{\"kind\":");
        plain_string(&mut out, self.database.kind);
        out.extend_from_slice(b",\"status\":");
        plain_string(&mut out, self.database.status);
        out.extend_from_slice(b",\"error\":");
        optional_string(&mut out, self.database.error);
        out.extend_from_slice(b"},\"storage\":{\"kind\":");
        plain_string(&mut out, self.storage.kind);
        out.extend_from_slice(b",\"status\":");
        plain_string(&mut out, self.storage.status);
        out.extend_from_slice(b",\"error\":");
        optional_string(&mut out, self.storage.error);
        out.extend_from_slice(b"}}");
        out
    }
}

fn optional_string(out: &mut Vec<u8>, value: Option<&'static str>) {
    match value {
        Some(value) => plain_string(out, value),
        None => out.extend_from_slice(b"null"),
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
        for (database, storage) in [
            (Ok(()), Ok(())),
            (Err("query failed"), Ok(())),
            (Ok(()), Err("unreachable")),
        ] {
            let verdict = Verdict {
                database,
                storage,
                storage_kind: "s3",
                database_kind: "postgresql",
            };
            let body = HealthBody::new(verdict, Utc::now());
            let ours: serde_json::Value = serde_json::from_slice(&body.to_json()).unwrap();
            let mut serde = serde_json::to_value(&body).unwrap();
            serde["timestamp"] = body.timestamp.to_rfc3339().into();
            assert_eq!(ours, serde);
            assert_eq!(ours["storage"]["kind"], "s3");
            assert_eq!(ours["database"]["kind"], "postgresql");
            assert_eq!(
                ours["status"] == "healthy",
                database.is_ok() && storage.is_ok()
            );
        }
    }
}
