//! The WebSocket hub: which users have live connections, and pushing a message to every
//! connection of one user. A user may hold several connections (tabs, devices).
//!
//! At shutdown [`Hub::close_all`] tells every connection to close, so open sockets never
//! hold the server's graceful drain. No database access here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::db::notifications::Notification;

type Senders = HashMap<i64, Vec<(u64, mpsc::UnboundedSender<String>)>>;

pub struct Hub {
    connections: Mutex<Senders>,
    next_id: AtomicU64,
    closing: watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closing: watch::channel(false).0,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct HubStats {
    pub connected_users: usize,
    pub total_connections: usize,
}

/// A registered connection; unregisters itself when dropped.
pub struct Connection<'a> {
    hub: &'a Hub,
    user_id: i64,
    id: u64,
    pub messages: mpsc::UnboundedReceiver<String>,
    pub closing: watch::Receiver<bool>,
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        let mut map = self.hub.connections.lock().expect("hub lock");
        if let Some(list) = map.get_mut(&self.user_id) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                map.remove(&self.user_id);
            }
        }
    }
}

impl Hub {
    pub fn connect(&self, user_id: i64) -> Connection<'_> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.connections
            .lock()
            .expect("hub lock")
            .entry(user_id)
            .or_default()
            .push((id, tx));
        Connection {
            hub: self,
            user_id,
            id,
            messages: rx,
            closing: self.closing.subscribe(),
        }
    }

    /// Sends `text` to every connection of `user_id`; returns how many got it.
    pub fn send(&self, user_id: i64, text: &str) -> usize {
        let map = self.connections.lock().expect("hub lock");
        map.get(&user_id).map_or(0, |list| {
            list.iter()
                .filter(|(_, tx)| tx.send(text.to_string()).is_ok())
                .count()
        })
    }

    /// Pushes a new notification to its recipient's live connections.
    pub fn push_notification(&self, n: &Notification) {
        let text = serde_json::json!({ "type": "notification", "data": n }).to_string();
        self.send(n.recipient_id, &text);
    }

    pub fn stats(&self) -> HubStats {
        let map = self.connections.lock().expect("hub lock");
        HubStats {
            connected_users: map.len(),
            total_connections: map.values().map(Vec::len).sum(),
        }
    }

    /// Drops every connection of `user_id` (their sessions ended: logout from every
    /// device, password change, account deleted); each socket closes when it sees its
    /// message channel end. Returns how many there were.
    pub fn disconnect_user(&self, user_id: i64) -> usize {
        let mut map = self.connections.lock().expect("hub lock");
        map.remove(&user_id).map_or(0, |list| list.len())
    }

    /// Asks every connection to close (server shutdown).
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_connections_per_user() {
        let hub = Hub::default();
        let mut a = hub.connect(1);
        let mut b = hub.connect(1);
        let _c = hub.connect(2);
        assert_eq!(
            hub.stats(),
            HubStats {
                connected_users: 2,
                total_connections: 3
            }
        );
        assert_eq!(hub.send(1, "hi"), 2);
        assert_eq!(a.messages.try_recv().unwrap(), "hi");
        assert_eq!(b.messages.try_recv().unwrap(), "hi");
        drop(a);
        assert_eq!(hub.send(1, "again"), 1);
        drop(b);
        assert_eq!(hub.stats().connected_users, 1);
        assert_eq!(hub.send(1, "nobody"), 0);
    }

    #[test]
    fn disconnecting_a_user_ends_their_channels_only() {
        let hub = Hub::default();
        let mut a = hub.connect(1);
        let mut b = hub.connect(2);
        assert_eq!(hub.disconnect_user(1), 1);
        assert!(a.messages.try_recv().is_err());
        assert_eq!(
            a.messages.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        );
        assert_eq!(hub.send(2, "still here"), 1);
        assert_eq!(b.messages.try_recv().unwrap(), "still here");
        drop(a);
        assert_eq!(hub.stats().total_connections, 1);
    }

    #[test]
    fn close_all_reaches_connections() {
        let hub = Hub::default();
        let conn = hub.connect(1);
        assert!(!*conn.closing.borrow());
        hub.close_all();
        assert!(*conn.closing.borrow());
    }
}
