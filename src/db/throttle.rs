//! Throttling state in PostgreSQL (issue 16), so N replicas enforce one limit: the same
//! policy as [`crate::server::throttle::Throttle`] (after `limit` events within `window`
//! a key is locked for `lockout`), kept in `throttle_events` and `throttle_locks` and
//! timed by the database's clock, which every replica shares. SQLite keeps the
//! in-memory throttle (one process).

use std::time::Duration;

use super::sql::{params, Conn, Value};
use super::DbError;

/// The policy of one key, in what the tables store.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub limit: usize,
    pub window: Duration,
    pub lockout: Duration,
}

const NOW_MS: &str = "CAST(extract(epoch FROM clock_timestamp()) * 1000 AS BIGINT)";

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// `Err(wait)` when any of `keys` is locked now (the longest wait).
pub fn check(c: &Conn, keys: &[String]) -> Result<Result<(), Duration>, DbError> {
    let marks: Vec<String> = (1..=keys.len()).map(|i| format!("?{i}")).collect();
    let values: Vec<Value> = keys.iter().map(|k| Value::Text(k.clone())).collect();
    let (until, now): (i64, i64) = c.query_row(
        &format!(
            "SELECT CAST(coalesce(max(until_ms), 0) AS BIGINT), {NOW_MS}
             FROM throttle_locks WHERE key IN ({})",
            marks.join(", ")
        ),
        values,
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(if until > now {
        Err(Duration::from_millis((until - now) as u64))
    } else {
        Ok(())
    })
}

/// Counts one event against each key, locking those that reach their limit.
pub fn record(c: &Conn, keys: &[(String, Limits)]) -> Result<(), DbError> {
    let tx = c.transaction()?;
    let now: i64 = tx.query_row(&format!("SELECT {NOW_MS}"), (), |r| r.get(0))?;
    for (key, limits) in keys {
        tx.execute(
            "DELETE FROM throttle_events WHERE key = ?1 AND at_ms <= ?2",
            params![key, now - ms(limits.window)],
        )?;
        tx.execute(
            "INSERT INTO throttle_events (key, at_ms) VALUES (?1, ?2)",
            params![key, now],
        )?;
        let events: i64 = tx.query_row(
            "SELECT count(*) FROM throttle_events WHERE key = ?1",
            [key],
            |r| r.get(0),
        )?;
        if events as usize >= limits.limit {
            tx.execute(
                "INSERT INTO throttle_locks (key, until_ms) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET until_ms = excluded.until_ms",
                params![key, now + ms(limits.lockout)],
            )?;
            tx.execute("DELETE FROM throttle_events WHERE key = ?1", [key])?;
        }
    }
    // Now and then, forget what no window or lock still covers (the longest is 1 h).
    if rand::random::<u8>() < 4 {
        tx.execute(
            "DELETE FROM throttle_events WHERE at_ms < ?1",
            [now - 2 * 3_600_000],
        )?;
        tx.execute("DELETE FROM throttle_locks WHERE until_ms < ?1", [now])?;
    }
    tx.commit()
}

/// Forgets `key` (a successful login clears its account's failures).
pub fn clear(c: &Conn, key: &str) -> Result<(), DbError> {
    c.execute("DELETE FROM throttle_events WHERE key = ?1", [key])?;
    c.execute("DELETE FROM throttle_locks WHERE key = ?1", [key])?;
    Ok(())
}
