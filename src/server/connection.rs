//! Accepting and serving connections: HTTP/1.1 over TCP with the limits of issue 15, and
//! the graceful drain at shutdown. `axum::serve` has no header read timeout and no bound on
//! a request head, so a client that sends half a request line held a connection forever
//! (3,000 such clients stayed open); hence this small accept loop over hyper.
//!
//! - The request line and headers must arrive within [`HEADER_READ_TIMEOUT`]. hyper starts
//!   that clock whenever it waits for a request head, so an idle keep-alive connection is
//!   closed after the same time.
//! - hyper buffers at most [`MAX_HEAD_BUFFER`] bytes of a head; the middleware answers
//!   414 and 431 with the API's JSON body well below that (see `middleware::head_limits`).
//! - A request body must keep arriving: [`BODY_IDLE_TIMEOUT`] between two chunks
//!   (`middleware::TimeoutBody`).
//! - At most `MAX_CONNECTIONS` connections are open at once, HTTP and WebSocket together
//!   (issue 19): each accepted stream carries its place ([`Counted`]), and hyper hands that
//!   same stream to a WebSocket at its upgrade, so the place is held until the socket
//!   closes. Past the limit a connection gets a canned `503` with `Retry-After` at once,
//!   before anything is parsed or allocated for it. The default is [`DEFAULT_MAX_CONNECTIONS`],
//!   within the file descriptors the process may open (its soft limit is raised to the hard
//!   one at start), so the limit answers before `accept` fails with `EMFILE`.
//!
//! Must not know about routes: it serves whatever [`Tracked`] app it is given.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use super::middleware::Tracked;

/// How long a client may take to send a request line and headers (and how long an idle
/// keep-alive connection stays open).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most hyper reads of one request head before it gives up with its own 431.
pub const MAX_HEAD_BUFFER: usize = 32 * 1024;
/// The longest pause allowed between two chunks of a request body.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections open at once when `MAX_CONNECTIONS` is not set (and the file descriptor
/// limit allows as many).
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// File descriptors kept for everything but client connections: the database pool (a
/// file and its WAL per connection), uploads being written, the listener, the runtime.
const RESERVED_FDS: usize = 256;
/// Refusals in progress at once; past this a connection over the limit is just closed.
const MAX_REFUSING: usize = 256;
/// How long a refused connection is kept to read what the client sends, so closing it
/// does not reset the connection before the client has read the 503.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// The least time between two warnings that connections are being refused.
const REFUSAL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, asks every
/// open connection to finish its current request and close, and returns once all have
/// (WebSockets included: the hub has asked them to close). The caller bounds that wait
/// (`launch`'s drain deadline).
pub async fn serve(listener: TcpListener, app: Tracked, shutdown: impl Future<Output = ()>) {
    let limit = Arc::new(Limit::new(
        effective_max_connections(app.state().config.max_connections),
        app.state().metrics.connections.clone(),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection holds a clone in its place; `recv` returns `None` once all are gone.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(place) = limit.take(&open_tx) else {
            limit.refuse(stream);
            continue;
        };
        let service = app
            .for_peer(peer)
            .map_request(|r: hyper::Request<Incoming>| r.map(Body::new));
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(Counted {
                stream,
                _place: place,
            });
            let conn = builder()
                .serve_connection(io, TowerToHyperService::new(service))
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = async { drop(stop.wait_for(|stopping| *stopping).await) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                // Timeouts, resets and malformed heads: the client's doing, not ours.
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    stop_tx.send_replace(true);
    drop(open_tx);
    let _ = open_rx.recv().await;
}

/// `MAX_CONNECTIONS`, or the default, within the file descriptors this process may open.
/// Raises the soft `RLIMIT_NOFILE` to the hard limit first (as Go's runtime does): the
/// soft limit is often 1,024, far below what the hard limit allows.
fn effective_max_connections(configured: Option<usize>) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut nofile = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (nofile.current, nofile.maximum) {
        if soft < hard {
            nofile.current = Some(hard);
            if let Err(e) = setrlimit(Resource::Nofile, nofile) {
                tracing::debug!(error = %e, "could not raise RLIMIT_NOFILE");
            }
        }
    }
    let soft = getrlimit(Resource::Nofile).current;
    let by_fds = soft.map_or(usize::MAX, |n| {
        usize::try_from(n)
            .unwrap_or(usize::MAX)
            .saturating_sub(RESERVED_FDS)
            .max(1)
    });
    let max = match configured {
        Some(n) if n > by_fds => {
            tracing::warn!(
                "MAX_CONNECTIONS={n} is more than the open-file limit allows; using {by_fds} \
                 (raise the limit with ulimit -n, LimitNOFILE= or the container's nofile ulimit)"
            );
            by_fds
        }
        Some(n) => n,
        None => DEFAULT_MAX_CONNECTIONS.min(by_fds),
    };
    tracing::debug!(max_connections = max, "connection limit");
    max
}

/// Connections open and refused, and the limit (set once, at the start of [`serve`]):
/// what `/metrics` shows of them.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    pub max: AtomicUsize,
    pub open: AtomicUsize,
    pub refused: AtomicU64,
}

/// How many connections are open, and the limit.
struct Limit {
    counts: Arc<ConnectionCounts>,
    refusing: AtomicUsize,
    last_warning: Mutex<Option<Instant>>,
    /// The whole refusal, written before anything is read.
    answer: Bytes,
}

/// A connection's place under the limit, given back when dropped.
struct Place {
    limit: Arc<Limit>,
    _open: mpsc::Sender<()>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.limit.counts.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limit {
    fn new(max: usize, counts: Arc<ConnectionCounts>) -> Limit {
        let body = format!(
            r#"{{"detail":"The server is at its connection limit ({max}); retry in a moment"}}"#
        );
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        counts.max.store(max, Ordering::Relaxed);
        Limit {
            counts,
            refusing: AtomicUsize::new(0),
            last_warning: Mutex::new(None),
            answer: Bytes::from(answer),
        }
    }

    fn take(self: &Arc<Self>, open: &mpsc::Sender<()>) -> Option<Place> {
        // Only the accept loop adds, so checking then adding cannot overshoot.
        if self.counts.open.load(Ordering::Acquire) >= self.counts.max.load(Ordering::Relaxed) {
            return None;
        }
        self.counts.open.fetch_add(1, Ordering::AcqRel);
        Some(Place {
            limit: self.clone(),
            _open: open.clone(),
        })
    }

    /// Answers a connection over the limit with the canned 503, off the accept loop.
    fn refuse(self: &Arc<Self>, mut stream: TcpStream) {
        let refused = self.counts.refused.fetch_add(1, Ordering::Relaxed) + 1;
        self.warn(refused);
        if self.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
            self.refusing.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let limit = self.clone();
        tokio::spawn(async move {
            let answer = limit.answer.clone();
            let _ = tokio::time::timeout(REFUSAL_LINGER, async {
                stream.write_all(&answer).await?;
                stream.shutdown().await?;
                // Whatever the client sent is read and dropped until it closes, so the
                // close is a FIN after the 503 and not a reset that could discard it.
                let mut sink = [0u8; 512];
                while stream.read(&mut sink).await? > 0 {}
                Ok::<_, std::io::Error>(())
            })
            .await;
            limit.refusing.fetch_sub(1, Ordering::AcqRel);
        });
    }

    fn warn(&self, refused: u64) {
        let now = Instant::now();
        let mut last = self.last_warning.lock().expect("warning lock");
        if last.is_some_and(|t| now.duration_since(t) < REFUSAL_WARNING_EVERY) {
            return;
        }
        *last = Some(now);
        tracing::warn!(
            max_connections = self.counts.max.load(Ordering::Relaxed),
            refused_so_far = refused,
            "connection limit reached: answering new connections 503 (MAX_CONNECTIONS)"
        );
    }
}

/// An accepted stream with its place under the limit: the place goes back when the
/// stream is dropped, whether hyper served it as HTTP or handed it to a WebSocket.
struct Counted {
    stream: TcpStream,
    _place: Place,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

fn builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BUFFER)
        .keep_alive(true);
    b
}

/// A failed `accept`: a connection reset before we took it is nothing; anything else
/// (out of file descriptors) is logged and retried after a pause rather than spun on.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
