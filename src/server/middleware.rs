//! The layer every request passes through, around the whole router: trailing-slash
//! tolerance, request id, timing headers, metrics, the request's log span, CORS, and
//! reading small bodies before the handler runs.
//!
//! It is one hand-written service rather than axum middleware: `Router::layer` wraps every
//! route separately, and each `from_fn` layer cost every request a boxed clone of the route,
//! two boxed futures and a clone of the state. Running before routing, it finds the route
//! template for metrics itself, from the same paths the router has. It answers `GET
//! /health` itself (see [`Tracked::answer_health_probe`]).

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::HttpBody;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::Response;
use axum::Router;
use futures_util::future::Either;
use tower::Service;
use tracing::{Instrument, Level, Span};

use super::cors::Cors;
use super::error::ApiError;
use super::limits::{Leftover, ReturnedBody};
use super::metrics::RouteId;
use super::state::AppState;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_PROCESS_TIME: HeaderName = HeaderName::from_static("x-process-time");

/// A caller's id is kept when it is at most 64 characters of `[A-Za-z0-9._-]`, so it is
/// safe to log and to echo; anything else is replaced by a fresh UUID.
pub fn accept_request_id(given: Option<&HeaderValue>) -> HeaderValue {
    let valid = |id: &&HeaderValue| {
        let bytes = id.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 64
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
    };
    match given.filter(valid) {
        // A clone shares the bytes; nothing is copied for a caller's id.
        Some(id) => id.clone(),
        None => {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
            HeaderValue::from_str(text).expect("a UUID is a header value")
        }
    }
}

/// The app: `router` behind the tracking layer. One per connection, made by
/// [`Tracked::for_peer`], which gives it the peer's address.
#[derive(Clone)]
pub struct Tracked {
    shared: Arc<Shared>,
    /// The TCP peer, handed to handlers as axum's `ConnectInfo`.
    peer: Option<SocketAddr>,
}

struct Shared {
    router: Router,
    state: AppState,
    health_route: RouteId,
    /// The routes that are never queued for admission: `/health`, `/metrics` and
    /// `/status/database`, which tell how the server is doing.
    unqueued: [RouteId; 3],
}

impl Tracked {
    pub fn new(router: Router, state: AppState) -> Tracked {
        let health_route = state.metrics.route("/health");
        let unqueued = [
            health_route,
            state.metrics.route("/metrics"),
            state.metrics.route("/status/database"),
        ];
        Tracked {
            shared: Arc::new(Shared {
                router,
                state,
                health_route,
                unqueued,
            }),
            peer: None,
        }
    }
}

impl Tracked {
    /// The app for one accepted connection: it knows the peer's address, which the
    /// router's [`ConnectInfo`] extractor needs. Set per connection rather than inserted
    /// into every request (axum's `into_make_service_with_connect_info` costs two
    /// allocations a request, `/health` probes included, which never read it).
    pub fn for_peer(&self, peer: SocketAddr) -> Tracked {
        Tracked {
            shared: self.shared.clone(),
            peer: Some(peer),
        }
    }
}

type Answer = Result<Response, Infallible>;

impl Service<Request> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Answer>, Pin<Box<dyn Future<Output = Answer> + Send>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        if let Some(answer) = self.answer_health_probe(&request, started) {
            return Either::Left(ready(Ok(answer)));
        }
        let this = self.clone();
        Either::Right(Box::pin(
            async move { Ok(this.track(request, started).await) },
        ))
    }
}

/// What the layer learns of a request before it runs, and needs again for the response.
struct Exchange {
    started: Instant,
    id: HeaderValue,
    method: Method,
    route: RouteId,
    cors: Cors,
}

impl Tracked {
    /// The state the app's handlers share.
    pub fn state(&self) -> &AppState {
        &self.shared.state
    }

    fn begin(&self, request: &Request, route: RouteId, started: Instant) -> Exchange {
        Exchange {
            started,
            id: accept_request_id(request.headers().get(&X_REQUEST_ID)),
            method: request.method().clone(),
            route,
            cors: Cors::of(request, &self.state().config.cors_origins),
        }
    }

    /// The span a request's log lines carry.
    fn span(&self, id: &HeaderValue, method: &Method, route: RouteId) -> Span {
        let route = self.state().metrics.label(route);
        let request_id = id.to_str().unwrap_or_default();
        tracing::info_span!("request", request_id = %request_id, method = %method, route = %route)
    }

    /// `GET /health` answered on the spot, with no task, no router and no log span, while
    /// the cached verdict is fresh. Docker, nginx and load balancers call it more than
    /// everything else together, and routing it (path lookup, the boxed route and handler
    /// futures, the state extractor taking the request apart and back together) cost as
    /// much as the answer itself. Nothing logs between its start and its end, so a span
    /// (a registry slot and its fields formatted, at the default level) is made only
    /// for its own outcome line, when that is logged. `/health` is still in the router,
    /// for `HEAD`, stale verdicts and the OpenAPI document, and gets everything else this
    /// layer adds.
    fn answer_health_probe(&self, request: &Request, started: Instant) -> Option<Response> {
        let probe = request.method() == Method::GET
            && request.uri().path() == "/health"
            // A body left unread would cost the connection its keep-alive.
            && request.body().is_end_stream();
        if !probe {
            return None;
        }
        let state = self.state();
        let verdict = state.health.fresh(started)?;
        let exchange = self.begin(request, self.shared.health_route, started);
        let answer = super::routes::system::health_answer(verdict);
        Some(self.finish(exchange, None, answer))
    }

    async fn track(self, request: Request, started: Instant) -> Response {
        let mut request = super::strip_trailing_slash(request);
        let route = self.state().metrics.route(request.uri().path());
        let exchange = self.begin(&request, route, started);
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let (response, span) = match exchange.cors.preflight_response() {
            Some(answer) => (answer, None),
            None => match read_small_body(limit_request(request)).await {
                Ok((request, leftover)) => {
                    // Uploads stream while they are handled, and the server's own probes
                    // must not queue: see super::admission for why neither waits.
                    let queued = leftover.is_none() && !self.shared.unqueued.contains(&route);
                    let admitted = if queued {
                        self.state().admission.enter().await
                    } else {
                        None
                    };
                    // Made once admitted: a waiting request holds no log span.
                    let span = self.span(&exchange.id, &exchange.method, exchange.route);
                    let mut router = self.shared.router.clone();
                    let response = match router.call(request).instrument(span.clone()).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    drop(admitted);
                    if let Some(leftover) = leftover {
                        leftover.drain().await;
                    }
                    (response, Some(span))
                }
                Err(refused) => (refused, None),
            },
        };
        self.finish(exchange, span, response)
    }

    /// Adds the tracking and CORS headers, counts the request and logs its outcome.
    fn finish(&self, exchange: Exchange, span: Option<Span>, mut response: Response) -> Response {
        let Exchange {
            started,
            id,
            method,
            route,
            cors,
        } = exchange;
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        self.state().metrics.record(&method, route, status, elapsed);

        let level = outcome_level(elapsed);
        // Asked of the filter for this module and level, as the log macros ask it: a
        // probe's span is made only when its line is written.
        let logged = match level {
            Level::WARN => tracing::enabled!(Level::WARN),
            Level::INFO => tracing::enabled!(Level::INFO),
            _ => tracing::enabled!(Level::DEBUG),
        };
        if logged {
            let span = span.unwrap_or_else(|| self.span(&id, &method, route));
            let _enter = span.enter();
            let ms = elapsed.as_secs_f64() * 1000.0;
            match level {
                Level::WARN => tracing::warn!(status, duration_ms = ms, "slow request"),
                Level::INFO => tracing::info!(status, duration_ms = ms, "slow request"),
                _ => tracing::debug!(status, duration_ms = ms, "request"),
            }
        }

        let headers = response.headers_mut();
        cors.apply(headers);
        headers.insert(X_REQUEST_ID.clone(), id);
        headers.insert(X_PROCESS_TIME.clone(), process_time_header(elapsed));
        response
    }
}

/// Every request is logged at debug; one slower than 0.5 s at info, and over 1 s at warn.
fn outcome_level(elapsed: Duration) -> Level {
    match elapsed.as_secs_f64() {
        s if s > 1.0 => Level::WARN,
        s if s > 0.5 => Level::INFO,
        _ => Level::DEBUG,
    }
}

/// Bodies up to this size are read before the handler runs (nginx allows 1 MB on the
/// API's non-upload routes).
pub const BUFFERED_BODY_LIMIT: u64 = 1024 * 1024;

/// Applies the request limits ([`super::limits`]): an oversized head is answered at once
/// (the body is not read), and a body gets the idle timeout.
fn limit_request(request: Request) -> Result<Request, ApiError> {
    let (parts, body) = request.into_parts();
    super::limits::check_head(&parts)?;
    let body = if body.is_end_stream() {
        body
    } else {
        super::limits::TimeoutBody::wrap(body, super::connection::BODY_IDLE_TIMEOUT)
    };
    Ok(Request::from_parts(parts, body))
}

/// Reads a small non-multipart body in full before the handler runs. A handler that never
/// reads its body (assign, mark read) would otherwise leave it on the socket, and hyper
/// closes a keep-alive connection whose unread body is more than it has buffered. Uploads
/// (multipart, or larger) still stream to their handlers; what they leave unread is given
/// back as a [`Leftover`] to read after the answer.
async fn read_small_body(
    request: Result<Request, ApiError>,
) -> Result<(Request, Option<Leftover>), Response> {
    use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    use axum::response::IntoResponse;
    let request = request.map_err(IntoResponse::into_response)?;
    let length = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let multipart = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/"));
    match length {
        Some(n) if n > 0 && n <= BUFFERED_BODY_LIMIT && !multipart => {
            let (parts, body) = request.into_parts();
            match axum::body::to_bytes(body, BUFFERED_BODY_LIMIT as usize).await {
                Ok(bytes) => Ok((Request::from_parts(parts, bytes.into()), None)),
                Err(e) => Err(super::limits::BodyStalled::answer(&e)
                    .unwrap_or_else(|| {
                        ApiError::BadRequest("The request body could not be read".into())
                    })
                    .into_response()),
            }
        }
        _ if request.body().is_end_stream() => Ok((request, None)),
        _ => {
            let (parts, body) = request.into_parts();
            let (body, leftover) = ReturnedBody::wrap(body);
            Ok((Request::from_parts(parts, body), Some(leftover)))
        }
    }
}

/// Seconds with three decimals, written digit by digit: `format!` and `io::Write` cost
/// more than the rest of this layer together.
fn process_time_header(elapsed: std::time::Duration) -> HeaderValue {
    let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let mut buf = [0u8; 24];
    let mut start = buf.len();
    let mut push = |digit: u8| {
        start -= 1;
        buf[start] = digit;
    };
    let fraction = millis % 1000;
    for digit in [fraction % 10, fraction / 10 % 10, fraction / 100] {
        push(b'0' + digit as u8);
    }
    push(b'.');
    let mut seconds = millis / 1000;
    loop {
        push(b'0' + (seconds % 10) as u8);
        seconds /= 10;
        if seconds == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&buf[start..]).expect("digits are a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_rules() {
        let ok = HeaderValue::from_static("abc-123_X.y");
        assert_eq!(accept_request_id(Some(&ok)), "abc-123_X.y");
        let long = HeaderValue::from_str(&"a".repeat(65)).unwrap();
        for bad in [
            HeaderValue::from_static("has space"),
            HeaderValue::from_static("semi;colon"),
            long,
        ] {
            let got = accept_request_id(Some(&bad));
            assert!(
                uuid::Uuid::parse_str(got.to_str().unwrap()).is_ok(),
                "{got:?}"
            );
        }
        assert_eq!(
            accept_request_id(Some(&HeaderValue::from_str(&"b".repeat(64)).unwrap())).len(),
            64
        );
        assert!(uuid::Uuid::parse_str(accept_request_id(None).to_str().unwrap()).is_ok());
    }

    #[test]
    fn process_time_has_three_decimals() {
        use std::time::Duration;
        assert_eq!(process_time_header(Duration::from_micros(1500)), "0.001");
        assert_eq!(process_time_header(Duration::from_millis(12_345)), "12.345");
        assert_eq!(process_time_header(Duration::ZERO), "0.000");
        assert_eq!(
            process_time_header(Duration::from_millis(1_000_010)),
            "1000.010"
        );
    }
}
