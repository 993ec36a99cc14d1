//! The WebSocket hub: which users have live connections, and pushing a message to every
//! connection of one user. A user may hold several connections (tabs, devices).
//!
//! Fan-out (issue 19): a message is serialised once, and every connection it goes to gets
//! a reference to the same bytes. Each connection has a bounded outbox, and a push never
//! waits: a connection that already has [`QUEUE_LIMIT`] messages waiting has stopped
//! reading, so it leaves the hub at once and is told to close ([`Ending::TooSlow`]); the
//! push moves on to the next connection. An idle connection costs one small record and an
//! empty queue (no allocation).
//!
//! Ending a user's sessions and shutting down reach connections the same way, through
//! their outbox. No database access and no socket I/O here: the socket side is
//! [`super::ws`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use tokio::sync::Notify;

use crate::db::notifications::Notification;

/// Messages a connection may have waiting before it counts as too slow. The kernel's
/// socket buffers hold hundreds of notifications before a send even waits, so a client
/// that lets this many more pile up has stopped reading.
pub const QUEUE_LIMIT: usize = 64;

/// Why the hub wants a connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The user's sessions were ended (logout from every device, password change, account
    /// deleted).
    SessionEnded,
    /// Its outbox filled up: the client does not read what it is sent.
    TooSlow,
    /// The server is shutting down.
    ShuttingDown,
}

/// One connection's outbox: messages waiting to be sent, or the reason to close.
#[derive(Default)]
struct Outbox {
    state: Mutex<Queue>,
    /// Woken (with a stored permit) on every push and on the ending.
    ready: Notify,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Utf8Bytes>,
    ending: Option<Ending>,
}

enum Pushed {
    Queued,
    /// Full: the connection is now ended as too slow.
    Overflowed,
    /// Already ending; nothing queued.
    Ended,
}

impl Outbox {
    fn push(&self, text: &Utf8Bytes) -> Pushed {
        let mut q = self.state.lock().expect("outbox lock");
        if q.ending.is_some() {
            return Pushed::Ended;
        }
        if q.messages.len() >= QUEUE_LIMIT {
            q.ending = Some(Ending::TooSlow);
            // What it never read goes now, not when its socket finally closes.
            q.messages = VecDeque::new();
            drop(q);
            self.ready.notify_one();
            return Pushed::Overflowed;
        }
        q.messages.push_back(text.clone());
        drop(q);
        self.ready.notify_one();
        Pushed::Queued
    }

    /// Sets the ending unless one is set already (the first reason wins).
    fn end(&self, why: Ending) {
        let mut q = self.state.lock().expect("outbox lock");
        if q.ending.is_none() {
            q.ending = Some(why);
            q.messages = VecDeque::new();
        }
        drop(q);
        self.ready.notify_one();
    }

    fn take(&self) -> Option<Result<Utf8Bytes, Ending>> {
        let mut q = self.state.lock().expect("outbox lock");
        match q.ending {
            Some(why) => Some(Err(why)),
            None => q.messages.pop_front().map(Ok),
        }
    }

    fn ending(&self) -> Option<Ending> {
        self.state.lock().expect("outbox lock").ending
    }
}

type Entry = (u64, Arc<Outbox>);

pub struct Hub {
    connections: Mutex<HashMap<i64, Vec<Entry>>>,
    next_id: AtomicU64,
    closing: AtomicBool,
    slow_disconnects: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            slow_disconnects: AtomicU64::new(0),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct HubStats {
    pub connected_users: usize,
    pub total_connections: usize,
    /// Connections closed since start because they did not read their messages.
    pub slow_disconnects: u64,
}

/// A registered connection; unregisters itself when dropped.
pub struct Connection<'a> {
    hub: &'a Hub,
    user_id: i64,
    id: u64,
    outbox: Arc<Outbox>,
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        self.hub.remove(self.user_id, self.id);
    }
}

impl Connection<'_> {
    /// The next message to send, or why the connection must close (which comes first,
    /// even with messages waiting). Cancel-safe: nothing is taken unless it is returned.
    pub async fn next(&self) -> Result<Utf8Bytes, Ending> {
        loop {
            if let Some(next) = self.try_next() {
                return next;
            }
            // A push between `try_next` and here leaves a permit, so this returns at once.
            self.outbox.ready.notified().await;
        }
    }

    /// [`Self::next`] without waiting: `None` when nothing is waiting.
    pub fn try_next(&self) -> Option<Result<Utf8Bytes, Ending>> {
        self.outbox.take()
    }

    /// Resolves once the connection must close, leaving messages where they are: for
    /// racing a send that is stuck on a client that stopped reading. Cancel-safe.
    pub async fn ended(&self) -> Ending {
        loop {
            if let Some(why) = self.outbox.ending() {
                return why;
            }
            // May take a permit meant for a message; `next` looks at the queue before it
            // waits, so no message is missed.
            self.outbox.ready.notified().await;
        }
    }
}

/// A notification as it is pushed to the recipient's sockets.
#[derive(Serialize)]
struct Push<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    data: &'a Notification,
}

impl Hub {
    pub fn connect(&self, user_id: i64) -> Connection<'_> {
        let outbox = Arc::new(Outbox::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut map = self.connections.lock().expect("hub lock");
        // Checked under the lock `close_all` takes: a connection is either in the map when
        // it runs, or sees the flag here.
        if self.closing.load(Ordering::SeqCst) {
            outbox.end(Ending::ShuttingDown);
        }
        map.entry(user_id).or_default().push((id, outbox.clone()));
        drop(map);
        Connection {
            hub: self,
            user_id,
            id,
            outbox,
        }
    }

    fn remove(&self, user_id: i64, id: u64) {
        let mut map = self.connections.lock().expect("hub lock");
        if let Some(list) = map.get_mut(&user_id) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                map.remove(&user_id);
            }
        }
    }

    /// Queues `text` for every connection of `user_id`, each sharing the same bytes;
    /// returns how many got it. Never waits on a socket: a connection whose outbox is full
    /// is dropped from the hub here and closes as too slow.
    pub fn send(&self, user_id: i64, text: Utf8Bytes) -> usize {
        let mut map = self.connections.lock().expect("hub lock");
        let Some(list) = map.get_mut(&user_id) else {
            return 0;
        };
        let mut queued = 0;
        list.retain(|(_, outbox)| match outbox.push(&text) {
            Pushed::Queued => {
                queued += 1;
                true
            }
            Pushed::Overflowed => {
                self.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                false
            }
            Pushed::Ended => false,
        });
        if list.is_empty() {
            map.remove(&user_id);
        }
        queued
    }

    /// Pushes a new notification to its recipient's live connections, serialised once.
    pub fn push_notification(&self, n: &Notification) {
        let push = Push {
            kind: "notification",
            data: n,
        };
        match serde_json::to_string(&push) {
            Ok(text) => {
                self.send(n.recipient_id, text.into());
            }
            Err(e) => tracing::error!(error = %e, "could not serialise a notification push"),
        }
    }

    /// Whether `user_id` has a live connection here.
    pub fn is_connected(&self, user_id: i64) -> bool {
        self.connections
            .lock()
            .expect("hub lock")
            .contains_key(&user_id)
    }

    pub fn stats(&self) -> HubStats {
        let map = self.connections.lock().expect("hub lock");
        HubStats {
            connected_users: map.len(),
            total_connections: map.values().map(Vec::len).sum(),
            slow_disconnects: self.slow_disconnects.load(Ordering::Relaxed),
        }
    }

    /// Ends every connection of `user_id` (their sessions ended: logout from every
    /// device, password change, account deleted). Returns how many there were.
    pub fn disconnect_user(&self, user_id: i64) -> usize {
        let list = self
            .connections
            .lock()
            .expect("hub lock")
            .remove(&user_id)
            .unwrap_or_default();
        for (_, outbox) in &list {
            outbox.end(Ending::SessionEnded);
        }
        list.len()
    }

    /// Asks every connection to close, and every later one at once (server shutdown).
    pub fn close_all(&self) {
        let map = self.connections.lock().expect("hub lock");
        self.closing.store(true, Ordering::SeqCst);
        for (_, outbox) in map.values().flatten() {
            outbox.end(Ending::ShuttingDown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Utf8Bytes {
        s.into()
    }

    fn got(conn: &Connection<'_>) -> Option<Result<String, Ending>> {
        conn.try_next().map(|r| r.map(|t| t.as_str().to_string()))
    }

    #[test]
    fn several_connections_per_user() {
        let hub = Hub::default();
        let a = hub.connect(1);
        let b = hub.connect(1);
        let _c = hub.connect(2);
        assert_eq!(
            hub.stats(),
            HubStats {
                connected_users: 2,
                total_connections: 3,
                slow_disconnects: 0,
            }
        );
        assert_eq!(hub.send(1, text("hi")), 2);
        assert_eq!(got(&a), Some(Ok("hi".into())));
        assert_eq!(got(&b), Some(Ok("hi".into())));
        assert_eq!(got(&a), None);
        drop(a);
        assert_eq!(hub.send(1, text("again")), 1);
        drop(b);
        assert_eq!(hub.stats().connected_users, 1);
        assert_eq!(hub.send(1, text("nobody")), 0);
    }

    #[test]
    fn one_serialised_message_is_shared_by_every_connection() {
        let hub = Hub::default();
        let a = hub.connect(1);
        let b = hub.connect(1);
        hub.send(1, text("shared"));
        let (Some(Ok(x)), Some(Ok(y))) = (a.try_next(), b.try_next()) else {
            panic!("both connections get the message");
        };
        assert_eq!(
            x.as_str().as_ptr(),
            y.as_str().as_ptr(),
            "same bytes, not copies"
        );
    }

    #[test]
    fn disconnecting_a_user_ends_their_connections_only() {
        let hub = Hub::default();
        let a = hub.connect(1);
        let b = hub.connect(2);
        hub.send(1, text("unsent"));
        assert_eq!(hub.disconnect_user(1), 1);
        // The ending comes first: nothing more reaches a revoked session.
        assert_eq!(got(&a), Some(Err(Ending::SessionEnded)));
        assert_eq!(hub.send(2, text("still here")), 1);
        assert_eq!(got(&b), Some(Ok("still here".into())));
        drop(a);
        assert_eq!(hub.stats().total_connections, 1);
    }

    /// Issue 19: a client that stops reading must not hold the others' messages back.
    #[test]
    fn a_full_outbox_drops_that_connection_and_nobody_else() {
        let hub = Hub::default();
        let slow = hub.connect(1);
        let fast = hub.connect(1);
        for i in 0..QUEUE_LIMIT {
            assert_eq!(hub.send(1, text(&i.to_string())), 2);
            assert_eq!(got(&fast), Some(Ok(i.to_string())));
        }
        assert_eq!(hub.send(1, text("one too many")), 1);
        assert_eq!(got(&slow), Some(Err(Ending::TooSlow)));
        assert_eq!(got(&fast), Some(Ok("one too many".into())));
        let stats = hub.stats();
        assert_eq!((stats.total_connections, stats.slow_disconnects), (1, 1));
        // Dropping the slow one later (its socket closing) leaves the fast one registered.
        drop(slow);
        assert_eq!(hub.send(1, text("after")), 1);
    }

    #[test]
    fn close_all_reaches_current_and_later_connections() {
        let hub = Hub::default();
        let before = hub.connect(1);
        assert_eq!(got(&before), None);
        hub.close_all();
        assert_eq!(got(&before), Some(Err(Ending::ShuttingDown)));
        let after = hub.connect(2);
        assert_eq!(got(&after), Some(Err(Ending::ShuttingDown)));
    }

    #[tokio::test]
    async fn next_waits_for_a_push_and_ended_for_the_ending() {
        let hub = Arc::new(Hub::default());
        let conn = hub.connect(7);
        let pusher = {
            let hub = hub.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                hub.send(7, text("late"));
            })
        };
        assert_eq!(conn.next().await.unwrap().as_str(), "late");
        pusher.await.unwrap();
        hub.send(7, text("waiting"));
        // A queued message is not an ending; `ended` keeps waiting until there is one.
        let ended = tokio::time::timeout(std::time::Duration::from_millis(20), conn.ended());
        assert!(ended.await.is_err());
        assert_eq!(conn.next().await.unwrap().as_str(), "waiting");
        hub.disconnect_user(7);
        assert_eq!(conn.ended().await, Ending::SessionEnded);
    }
}
