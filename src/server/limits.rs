//! Request limits enforced before routing (issue 15): the size of the request target and
//! of the headers (414 and 431 with the API's JSON body), and a request body that stops
//! arriving (408). The connection-level limits are in [`super::connection`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::StatusCode;
use bytes::Bytes;
use hyper::body::Frame;
use tokio::sync::oneshot;
use tokio::time::Sleep;

use super::error::ApiError;

/// The longest request target (path and query) accepted.
pub const MAX_TARGET_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) accepted.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuses a request whose target or headers pass the limits. Pure.
pub fn check_head(parts: &Parts) -> Result<(), ApiError> {
    let target = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_TARGET_BYTES {
        return Err(ApiError::Limit {
            status: StatusCode::URI_TOO_LONG,
            detail: format!(
                "the request target is {target} bytes; the limit is {MAX_TARGET_BYTES} bytes"
            ),
        });
    }
    let headers: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if headers > MAX_HEADER_BYTES {
        return Err(ApiError::Limit {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            detail: format!(
                "the request headers are {headers} bytes; the limit is {MAX_HEADER_BYTES} bytes"
            ),
        });
    }
    Ok(())
}

/// The error a body read gets when the client stops sending for longer than allowed.
#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving for {0:?}")]
pub struct BodyStalled(pub Duration);

impl BodyStalled {
    /// The 408 for a body read that failed with this error (found in its source chain).
    pub fn answer(error: &(dyn std::error::Error + 'static)) -> Option<ApiError> {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if let Some(stalled) = e.downcast_ref::<BodyStalled>() {
                return Some(ApiError::Limit {
                    status: StatusCode::REQUEST_TIMEOUT,
                    detail: format!(
                        "the request body stopped arriving for {} s; send it without pauses",
                        stalled.0.as_secs()
                    ),
                });
            }
            cause = e.source();
        }
        None
    }
}

/// A request body that fails with [`BodyStalled`] when no chunk arrives for `idle` while
/// the handler waits for one. The clock runs only while a read is pending, so a handler
/// that is busy elsewhere is not charged for it.
pub struct TimeoutBody {
    inner: Body,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl TimeoutBody {
    pub fn wrap(inner: Body, idle: Duration) -> Body {
        Body::new(TimeoutBody {
            inner,
            idle,
            timer: None,
            armed: false,
        })
    }
}

impl hyper::body::Body for TimeoutBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame);
        }
        if !this.armed {
            let deadline = tokio::time::Instant::now() + this.idle;
            match &mut this.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            this.armed = true;
        }
        let timer = this.timer.as_mut().expect("armed above");
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyStalled(this.idle))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A streamed request body that goes back to the request layer when the handler drops
/// it, so its unread rest can be read after the answer ([`Leftover::drain`]). hyper
/// closes a keep-alive connection whose body was not read to its end, and closing a
/// socket with unread bytes makes the kernel send a reset, which can destroy the answer
/// before the client reads it (a multipart parser stops at the closing boundary; a
/// refused upload stops earlier).
pub struct ReturnedBody {
    inner: Body,
    back: Option<oneshot::Sender<Body>>,
}

/// The request layer's end of a [`ReturnedBody`].
pub struct Leftover(oneshot::Receiver<Body>);

impl ReturnedBody {
    pub fn wrap(inner: Body) -> (Body, Leftover) {
        let (back, leftover) = oneshot::channel();
        let body = ReturnedBody {
            inner,
            back: Some(back),
        };
        (Body::new(body), Leftover(leftover))
    }
}

impl Drop for ReturnedBody {
    fn drop(&mut self) {
        if let Some(back) = self.back.take() {
            if !hyper::body::Body::is_end_stream(&self.inner) {
                let _ = back.send(std::mem::take(&mut self.inner));
            }
        }
    }
}

impl hyper::body::Body for ReturnedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// How much of a body left unread is read and dropped after the answer, and for how long:
/// beyond either, hyper closes the connection as it would have.
pub const LEFTOVER_BYTES: usize = 1024 * 1024;
pub const LEFTOVER_TIME: Duration = Duration::from_secs(5);

impl Leftover {
    /// Reads what the handler left of the body, within [`LEFTOVER_BYTES`] and
    /// [`LEFTOVER_TIME`]. Does nothing if the body was read to its end or the handler
    /// still holds it (a task it spawned).
    pub async fn drain(mut self) {
        use http_body_util::BodyExt;
        let Ok(mut body) = self.0.try_recv() else {
            return;
        };
        let read_rest = async {
            let mut read = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, |d| d.len());
                if read > LEFTOVER_BYTES {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(LEFTOVER_TIME, read_rest).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, String)]) -> Parts {
        let mut b = axum::http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn head_limits_name_the_limit() {
        assert!(check_head(&parts("/api/users?x=1", &[])).is_ok());
        let long = format!("/api/users?q={}", "a".repeat(MAX_TARGET_BYTES));
        let Err(ApiError::Limit { status, detail }) = check_head(&parts(&long, &[])) else {
            panic!("long target accepted")
        };
        assert_eq!(status, StatusCode::URI_TOO_LONG);
        assert!(detail.contains("8192 bytes"), "{detail}");
        let big = vec![("x-a", "b".repeat(9000)), ("x-c", "d".repeat(9000))];
        let Err(ApiError::Limit { status, .. }) = check_head(&parts("/", &big)) else {
            panic!("big headers accepted")
        };
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_stalled_body_fails_with_408() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let body = TimeoutBody::wrap(Body::from_stream(stream), Duration::from_millis(50));
        tx.send(Ok(Bytes::from_static(b"part"))).await.unwrap();
        // The sender stays open and silent: only the idle timer can end the read.
        let read = tokio::time::timeout(Duration::from_secs(10), axum::body::to_bytes(body, 1024));
        let err = read.await.expect("the stall ends the read").unwrap_err();
        let answer = BodyStalled::answer(&err).expect("a stall");
        assert!(
            matches!(answer, ApiError::Limit { status, .. } if status == StatusCode::REQUEST_TIMEOUT)
        );
        drop(tx);
    }
}
