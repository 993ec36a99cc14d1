//! One live notification WebSocket (`/api/ws/ws/{user_id}`) after its upgrade: pushes
//! from the user's outbox in the [`Hub`](super::hub::Hub) go out, the client's pings are
//! answered, and the socket is closed when it must be (issue 19).
//!
//! - **Liveness.** A socket from which nothing (a pong, a message) has arrived for the
//!   timeout (`WS_TIMEOUT_SECONDS`, default 30) is closed with 1001. The server sends a
//!   Ping after half the timeout of silence, and browsers answer pings by themselves, so
//!   only a client that is gone or frozen is closed. These pings also keep proxies from
//!   dropping a quiet socket.
//! - **Slow clients.** The hub never waits on a socket: a client that stops reading fills
//!   its outbox and is closed with 1008, even while a send to it is stuck on full socket
//!   buffers. A send that makes no progress for the timeout ends the socket too, so a
//!   stuck client is gone within the timeout even if nothing more is pushed to it.
//! - **Small.** An idle socket holds a 1 KiB read buffer (tungstenite's default is 128 KiB,
//!   zero-filled on the first read) and no write buffer; a client may send at most 64 KiB
//!   in one message (it only ever sends pings).
//!
//! The socket task is the only owner of the socket; nothing here touches the database.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use serde_json::json;
use tokio::time::Instant;

use super::hub::{Connection, Ending};

/// WebSocket close codes of the original API.
pub const CLOSE_NO_TOKEN: u16 = 4001;
pub const CLOSE_BAD_TOKEN: u16 = 4002;
pub const CLOSE_WRONG_USER: u16 = 4003;
/// Going away: the server is shutting down, or the client stopped answering pings.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Policy violation: the client did not read the messages it was sent.
pub const CLOSE_TOO_SLOW: u16 = 1008;

/// What tungstenite reads into at a time.
const READ_BUFFER: usize = 1024;
/// The largest message or frame a client may send.
const MAX_INCOMING: usize = 64 * 1024;
/// The most unsent bytes a socket may hold (a message stuck on a slow client, then the
/// close frame); the outbox bounds everything before that.
const MAX_WRITE_BUFFER: usize = 256 * 1024;
/// How long a closing socket gets to take the close frame and answer it.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// The same at shutdown, where open sockets hold the server's drain.
const SHUTDOWN_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The upgrade with this module's buffer sizes and message limits.
pub fn limits(upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_INCOMING)
        .max_frame_size(MAX_INCOMING)
}

/// Sends one close frame, then waits briefly for the client's answer (its close frame),
/// so the TCP connection ends after the closing handshake; bounded by [`CLOSE_GRACE`].
pub async fn close(socket: WebSocket, code: u16, reason: &str) {
    close_within(socket, code, reason, CLOSE_GRACE).await
}

async fn close_within(mut socket: WebSocket, code: u16, reason: &str, grace: Duration) {
    let handshake = async {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(grace, handshake).await;
}

/// Why the loop stopped.
enum Stop {
    /// The hub ended the connection.
    Ending(Ending),
    /// Nothing heard from the client for the timeout.
    Silent,
    /// A send made no progress for the timeout.
    Stuck,
    /// The client closed, or the connection failed.
    Gone,
}

/// Serves a registered connection until it ends. `timeout` is `WS_TIMEOUT_SECONDS`.
pub async fn run(mut socket: WebSocket, conn: Connection<'_>, user_id: i64, timeout: Duration) {
    let stop = serve(&mut socket, &conn, user_id, timeout).await;
    // Unregistered now: a closing socket takes no more pushes.
    drop(conn);
    let (code, reason) = match &stop {
        Stop::Gone => return,
        Stop::Ending(Ending::SessionEnded) => (CLOSE_BAD_TOKEN, "Session ended".to_string()),
        Stop::Ending(Ending::ShuttingDown) => {
            (CLOSE_GOING_AWAY, "Server shutting down".to_string())
        }
        Stop::Ending(Ending::TooSlow) | Stop::Stuck => {
            tracing::info!(user_id, "closing a WebSocket whose client does not read");
            (
                CLOSE_TOO_SLOW,
                "Too slow: messages were not read".to_string(),
            )
        }
        Stop::Silent => {
            tracing::debug!(user_id, "closing a silent WebSocket");
            (
                CLOSE_GOING_AWAY,
                format!("No answer to pings for {} s", timeout.as_secs()),
            )
        }
    };
    let grace = match stop {
        Stop::Ending(Ending::ShuttingDown) => SHUTDOWN_CLOSE_GRACE,
        _ => CLOSE_GRACE,
    };
    close_within(socket, code, &reason, grace).await;
}

async fn serve(
    socket: &mut WebSocket,
    conn: &Connection<'_>,
    user_id: i64,
    timeout: Duration,
) -> Stop {
    let welcome = json!({
        "type": "connection_established",
        "user_id": user_id,
        "message": "Connected to Elior Fitness notifications",
    });
    if let Err(stop) = send(
        socket,
        conn,
        Message::Text(welcome.to_string().into()),
        timeout,
    )
    .await
    {
        return stop;
    }
    let ping_after = timeout / 2;
    let mut heard = Instant::now();
    let mut pinged = heard;
    let wake = tokio::time::sleep_until(heard + ping_after);
    tokio::pin!(wake);
    loop {
        let out = tokio::select! {
            next = conn.next() => match next {
                Ok(text) => Message::Text(text),
                Err(why) => return Stop::Ending(why),
            },
            incoming = socket.recv() => {
                let message = match incoming {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Stop::Gone,
                    Some(Ok(message)) => message,
                };
                heard = Instant::now();
                match message {
                    Message::Text(text) if is_ping(&text) => Message::Text(pong()),
                    _ => continue,
                }
            }
            () = &mut wake => {
                let now = Instant::now();
                if now >= heard + timeout {
                    return Stop::Silent;
                }
                let ping_due = heard.max(pinged) + ping_after;
                if now < ping_due {
                    wake.as_mut().reset(ping_due);
                    continue;
                }
                // Silent for half the timeout: ask. Without an answer, the socket closes
                // at the timeout (a ping is due no sooner than that).
                pinged = now;
                wake.as_mut().reset(heard + timeout);
                Message::Ping(Default::default())
            }
        };
        if let Err(stop) = send(socket, conn, out, timeout).await {
            return stop;
        }
    }
}

/// Sends one message, unless the hub ends the connection first (a send waits as long as
/// the client's buffers are full) or the send makes no progress for `timeout`.
async fn send(
    socket: &mut WebSocket,
    conn: &Connection<'_>,
    message: Message,
    timeout: Duration,
) -> Result<(), Stop> {
    tokio::select! {
        biased;
        why = conn.ended() => Err(Stop::Ending(why)),
        sent = tokio::time::timeout(timeout, socket.send(message)) => match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => Err(Stop::Stuck),
        },
    }
}

fn pong() -> Utf8Bytes {
    json!({ "type": "pong", "timestamp": crate::db::users::now() })
        .to_string()
        .into()
}

/// `ping` as plain text or `{"type": "ping"}`.
fn is_ping(text: &str) -> bool {
    text.trim() == "ping"
        || serde_json::from_str::<serde_json::Value>(text)
            .is_ok_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("ping"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings() {
        assert!(is_ping("ping"));
        assert!(is_ping(r#"{"type":"ping"}"#));
        assert!(!is_ping(r#"{"type":"hello"}"#));
    }
}
