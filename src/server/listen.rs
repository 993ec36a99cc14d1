//! Cross-replica fan-out on PostgreSQL (issue 16): every notification row is announced
//! with `pg_notify` in the transaction that inserts it ([`crate::db::notifications`]);
//! each replica LISTENs on one dedicated connection and hands the announced
//! notification to its own hub, so a WebSocket client gets it whichever replica it is
//! connected to. The replica that created it already pushed it, and skips its own
//! announcements (the payload names the origin replica).
//!
//! The end of a user's sessions travels the same way, closing their WebSockets on every
//! replica ([`end_sessions`]).
//!
//! The listening connection is re-made with backoff when it drops, and LISTEN sent
//! again; announcements made while it is down are not replayed (the client's list
//! still has them).

use std::time::Duration;

use tokio_postgres::AsyncMessage;

use super::state::AppState;
use crate::db::notifications::{self, Announcement, CHANNEL};

/// Starts the listener when the database is PostgreSQL; returns at once otherwise.
pub fn spawn(state: &AppState) {
    let Some(pool) = state.db.pg() else {
        return;
    };
    let url = pool.url.clone();
    let state = state.clone();
    tokio::spawn(async move {
        let mut backoff = FIRST_RETRY;
        loop {
            // `listen` only returns when its connection is gone; it resets `backoff` once it
            // is listening, so a drop after hours of service is retried quickly again.
            let e = listen(&url, &state, &mut backoff).await.unwrap_err();
            tracing::warn!(
                database = %url.target(),
                retry_in_ms = backoff.as_millis() as u64,
                "notification listener: {e}"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
}

/// The first wait before listening again after the connection dropped.
const FIRST_RETRY: Duration = Duration::from_millis(200);

/// One listening connection, until it drops (always an error).
async fn listen(
    url: &crate::db::pg::PgUrl,
    state: &AppState,
    backoff: &mut Duration,
) -> anyhow::Result<std::convert::Infallible> {
    let mut config = url.config();
    config.application_name("elior-listen");
    config.connect_timeout(Duration::from_secs(5));
    let (client, mut connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| anyhow::anyhow!(crate::db::pg::connect_error(url, &e)))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    *backoff = FIRST_RETRY;
    tracing::debug!("listening for notifications of other replicas");
    while let Some(payload) = rx.recv().await {
        deliver(state, &payload).await;
    }
    drop(client);
    match driver.await {
        Ok(Ok(())) => anyhow::bail!("the listening connection closed"),
        Ok(Err(e)) => anyhow::bail!("the listening connection failed: {e}"),
        Err(e) => anyhow::bail!("the listening task failed: {e}"),
    }
}

/// Ends the live WebSockets of `user_id` here and, on PostgreSQL, on every other
/// replica (their tokens already stopped working everywhere: the epoch is in the
/// database).
pub async fn end_sessions(state: &AppState, user_id: i64) {
    state.hub.disconnect_user(user_id);
    if state.db.pg().is_some() {
        if let Err(e) = state
            .db
            .write(move |c| notifications::announce_sessions_ended(c, user_id))
            .await
        {
            tracing::warn!(error = %e, "could not announce the end of a user's sessions");
        }
    }
}

async fn deliver(state: &AppState, payload: &str) {
    let Ok(a) = serde_json::from_str::<Announcement>(payload) else {
        tracing::warn!("ignoring a malformed notification announcement");
        return;
    };
    if a.origin == notifications::replica_id() || !state.hub.is_connected(a.recipient_id) {
        return;
    }
    if a.sessions_ended {
        state.hub.disconnect_user(a.recipient_id);
        return;
    }
    let id = a.id;
    match state
        .db
        .read(move |c| notifications::find(c, id, None))
        .await
    {
        Ok(Some(n)) => state.hub.push_notification(&n),
        Ok(None) => {} // deleted meanwhile
        Err(e) => tracing::warn!(error = %e, "could not load an announced notification"),
    }
}
