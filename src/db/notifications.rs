//! Typed queries on `notifications`. Every query is scoped to its recipient, so one user's
//! id can never reach another's notification. Every statement is parameterised.

use super::sql::{params, Conn, OptionalExtension, Row};
use serde::Serialize;

use super::users::now;
use super::DbError;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Notification {
    pub id: i64,
    pub recipient_id: i64,
    pub sender_id: Option<i64>,
    pub title: String,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub is_read: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub read_at: Option<String>,
}

const COLUMNS: &str =
    "id, recipient_id, sender_id, title, message, type, is_read, created_at, read_at";

fn from_row(r: &Row) -> Result<Notification, DbError> {
    Ok(Notification {
        id: r.get(0)?,
        recipient_id: r.get(1)?,
        sender_id: r.get(2)?,
        title: r.get(3)?,
        message: r.get(4)?,
        kind: r.get(5)?,
        is_read: r.get(6)?,
        created_at: r.get(7)?,
        read_at: r.get(8)?,
    })
}

/// The PostgreSQL channel that announces new notifications to every replica.
pub const CHANNEL: &str = "elior_notifications";

/// What a replica announces about a notification it created (a few bytes: the
/// listeners load the row; NOTIFY payloads are limited to 8000 bytes).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Announcement {
    pub origin: u64,
    pub id: i64,
    pub recipient_id: i64,
    /// Not a notification: the recipient's sessions ended (logout from every device, a
    /// password change, the account deleted), so every replica closes their WebSockets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sessions_ended: bool,
}

fn announce(c: &Conn, a: &Announcement) -> Result<(), DbError> {
    let payload = serde_json::to_string(a).map_err(|e| DbError::Conversion(e.to_string()))?;
    // `execute`: pg_notify returns void, which no row type reads.
    c.execute("SELECT pg_notify(?1, ?2)", params![CHANNEL, payload])?;
    Ok(())
}

/// On PostgreSQL, tells the other replicas that `user_id`'s sessions ended; nothing to do
/// on SQLite (one process).
pub fn announce_sessions_ended(c: &Conn, user_id: i64) -> Result<(), DbError> {
    if c.backend() != super::Backend::Postgresql {
        return Ok(());
    }
    announce(
        c,
        &Announcement {
            origin: replica_id(),
            id: 0,
            recipient_id: user_id,
            sessions_ended: true,
        },
    )
}

/// This process's id among the replicas, drawn once.
pub fn replica_id() -> u64 {
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(rand::random)
}

/// Inserts a notification. On PostgreSQL it is also announced with `pg_notify` in the
/// same transaction (delivered at commit), for the other replicas' WebSockets.
pub fn insert(
    c: &Conn,
    recipient_id: i64,
    sender_id: Option<i64>,
    title: &str,
    message: &str,
    kind: &str,
) -> Result<Notification, DbError> {
    let id = c
        .prepare_cached(
            "INSERT INTO notifications (recipient_id, sender_id, title, message, type, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .insert(params![
            recipient_id,
            sender_id,
            title,
            message,
            kind,
            now()
        ])?;
    if c.backend() == super::Backend::Postgresql {
        announce(
            c,
            &Announcement {
                origin: replica_id(),
                id,
                recipient_id,
                sessions_ended: false,
            },
        )?;
    }
    c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE id = ?1"
    ))?
    .query_row([id], from_row)
}

pub fn list(
    c: &Conn,
    recipient_id: i64,
    unread_only: bool,
    limit: i64,
    offset: i64,
) -> Result<Vec<Notification>, DbError> {
    let mut stmt = c.prepare_cached(&page_sql())?;
    let rows = stmt.query_map(params![recipient_id, unread_only, limit, offset], from_row)?;
    rows.collect::<Result<_, _>>()
}

/// A page of a recipient's notifications, newest first (`?2`: unread only). The index
/// `(recipient_id, id, is_read)` hands the page over in order (migration 5).
fn page_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE recipient_id = ?1 AND (?2 = 0 OR is_read = 0)
         ORDER BY id DESC LIMIT ?3 OFFSET ?4"
    )
}

/// (unread, total) for one recipient: read from the index alone.
const COUNT_SQL: &str =
    "SELECT count(*) FILTER (WHERE is_read = 0), count(*) FROM notifications WHERE recipient_id = ?1";

/// (unread, total) for one recipient.
pub fn count(c: &Conn, recipient_id: i64) -> Result<(i64, i64), DbError> {
    c.prepare_cached(COUNT_SQL)?
        .query_row([recipient_id], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// Marks one notification read; `false` when it isn't the recipient's.
pub fn mark_read(c: &Conn, id: i64, recipient_id: i64) -> Result<bool, DbError> {
    Ok(c.execute(
        "UPDATE notifications SET is_read = 1, read_at = coalesce(read_at, ?3)
         WHERE id = ?1 AND recipient_id = ?2",
        params![id, recipient_id, now()],
    )? > 0)
}

pub fn mark_all_read(c: &Conn, recipient_id: i64) -> Result<usize, DbError> {
    c.execute(
        "UPDATE notifications SET is_read = 1, read_at = ?2 WHERE recipient_id = ?1 AND is_read = 0",
        params![recipient_id, now()],
    )
}

pub fn delete(c: &Conn, id: i64, recipient_id: i64) -> Result<bool, DbError> {
    Ok(c.execute(
        "DELETE FROM notifications WHERE id = ?1 AND recipient_id = ?2",
        params![id, recipient_id],
    )? > 0)
}

/// The notification `id` if `recipient_id` received it; `None` as recipient: anyone's
/// (for admins).
pub fn find(c: &Conn, id: i64, recipient_id: Option<i64>) -> Result<Option<Notification>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE id = ?1 AND (CAST(?2 AS BIGINT) IS NULL OR recipient_id = ?2)"
    ))?
    .query_row(params![id, recipient_id], from_row)
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page is read from the index in order, however many notifications the recipient
    /// has, and the unread count reads the index alone: no query sorts or reads every row.
    #[test]
    fn pages_and_counts_come_from_the_index() {
        let conn = Conn::memory();
        let sqlite = conn.sqlite().unwrap();
        let plan = |sql: &str, bindings: &[i64]| -> String {
            let mut stmt = sqlite
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let bindings = rusqlite::params_from_iter(bindings);
            let rows = stmt.query_map(bindings, |r| r.get::<_, String>(3)).unwrap();
            rows.collect::<Result<Vec<_>, _>>().unwrap().join("; ")
        };
        let page = plan(&page_sql(), &[1, 0, 20, 0]);
        assert!(
            page.contains("USING INDEX notifications_recipient"),
            "{page}"
        );
        assert!(!page.contains("TEMP B-TREE"), "{page}");
        let count = plan(COUNT_SQL, &[1]);
        assert!(
            count.contains("COVERING INDEX notifications_recipient"),
            "{count}"
        );
    }
}
