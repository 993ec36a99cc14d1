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
//!
//! Must not know about routes: it serves whatever [`Tracked`] app it is given.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
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

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, asks every
/// open connection to finish its current request and close, and returns once all have.
/// The caller bounds that wait (`launch`'s drain deadline).
pub async fn serve(listener: TcpListener, app: Tracked, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a clone; `recv` returns `None` once all are gone.
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
        let service = app
            .for_peer(peer)
            .map_request(|r: hyper::Request<Incoming>| r.map(Body::new));
        let mut stop = stop_rx.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let _open = open;
            let conn = builder()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
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
