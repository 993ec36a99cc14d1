//! Admission (issue 19): at most `MAX_CONCURRENT_REQUESTS` requests are handled at once;
//! the others wait their turn, in arrival order, before their handler starts.
//!
//! Why: Tokio runs every ready connection in turn. At c1024 on two cores, hundreds of
//! handlers stood in each worker's run queue, and a request that stops once mid-way (a
//! write waiting for the writer's commit, a login for its password hash) went to the back
//! of that queue again: a second full turn that reads never paid. Writes had three times
//! the mean latency at p99, and logins waited so long that the password queue refused
//! them. Waiting for admission instead, outside the run queue, a request is handled in one
//! stretch among a few others. The mean wait is the same (in a closed loop it is the
//! clients over the rate), but every kind of request gets its fair share of it.
//!
//! The price: when the places are all held by requests that wait on something slow (writes
//! behind a write lock another process holds, until the writer's busy timeout answers them
//! 503), the requests behind them wait too, reads included. Keeping reads and writes apart
//! was measured, and it gave the wait to the writes (see the README's serve benchmarks).
//!
//! Never queued:
//! - `/health`, `/metrics` and `/status/database` (see [`super::middleware`]): a probe that
//!   waited behind the load would have a busy server restarted;
//! - a request whose body streams to its handler (an upload): a place held while a client
//!   trickles its upload would let a few slow clients stall everyone. Every other body was
//!   read in full before the request queues, so a slow client never holds a place.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Enough that two cores and the writer's group commits stay busy, and that 64 clients
/// (the c64 benchmarks) never wait; few enough that a handler resuming after a commit
/// waits behind no more than these (16 to 128 were measured at c1024, README).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 64;

/// The admission gate of one server.
pub struct Admission {
    /// `None`: no limit (`MAX_CONCURRENT_REQUESTS=0`).
    gate: Option<Semaphore>,
    limit: usize,
    waiting: AtomicUsize,
}

impl Admission {
    /// `limit` places; `None`: no limit.
    pub fn new(limit: Option<usize>) -> Admission {
        Admission {
            gate: limit.map(Semaphore::new),
            limit: limit.unwrap_or(0),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for a place (first come, first served); at once when one is free. The place
    /// is held until the permit is dropped; `None` when there is no limit.
    pub async fn enter(&self) -> Option<SemaphorePermit<'_>> {
        let gate = self.gate.as_ref()?;
        if let Ok(permit) = gate.try_acquire() {
            return Some(permit);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        // Counted back also when the request is dropped while it waits (its client left).
        let _counted = Waiting(&self.waiting);
        // The gate is never closed.
        gate.acquire().await.ok()
    }

    /// Requests waiting for a place now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The places; 0 when there is no limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Waker};

    use super::*;

    /// Polls `waiter` once: whether it still waits.
    fn waits<F: Future>(waiter: Pin<&mut F>) -> bool {
        waiter
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    }

    #[tokio::test]
    async fn requests_past_the_limit_wait_in_arrival_order_and_are_counted() {
        let admission = Admission::new(Some(2));
        let first = admission.enter().await;
        let _second = admission.enter().await;
        let mut third = Box::pin(admission.enter());
        let mut fourth = Box::pin(admission.enter());
        assert!(waits(third.as_mut()) && waits(fourth.as_mut()));
        assert_eq!(admission.waiting(), 2);
        drop(first);
        // The first to wait is admitted first; the other still waits.
        assert!(waits(fourth.as_mut()));
        let admitted = third.await;
        assert_eq!(admission.waiting(), 1);
        drop(admitted);
        drop(fourth.await);
        assert_eq!(admission.waiting(), 0);
    }

    #[tokio::test]
    async fn a_request_dropped_while_it_waits_gives_up_its_turn() {
        let admission = Admission::new(Some(1));
        let first = admission.enter().await;
        let mut gone = Box::pin(admission.enter());
        assert!(waits(gone.as_mut()));
        drop(gone);
        assert_eq!(admission.waiting(), 0);
        drop(first);
        let _next = admission.enter().await;
    }

    #[tokio::test]
    async fn no_limit_admits_everyone_at_once() {
        let admission = Admission::new(None);
        let mut held = Vec::new();
        for _ in 0..100 {
            held.push(admission.enter().await);
        }
        assert_eq!((admission.waiting(), admission.limit()), (0, 0));
    }
}
