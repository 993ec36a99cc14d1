//! The layer every request passes through, around the whole router: trailing-slash
//! tolerance, request id, timing headers, metrics, the request's log span, CORS, and
//! reading small bodies before the handler runs.
//!
//! It is one hand-written service rather than axum middleware: `Router::layer` wraps every
//! route separately, and each `from_fn` layer cost every request a boxed clone of the route,
//! two boxed futures and a clone of the state. Running before routing, it finds the route
//! template for metrics itself, from the same paths the router has. It answers `GET
//! /health` itself (see [`is_health_probe`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use axum::Router;
use tower::Service;
use tracing::Instrument;

use super::cors::Cors;
use super::error::ApiError;
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

/// The app: `router` behind the tracking layer.
#[derive(Clone)]
pub struct Tracked {
    router: Router,
    state: AppState,
    /// The router's path templates (`/api/users/{id}`), values being the metrics label.
    templates: Arc<matchit::Router<Arc<str>>>,
}

impl Tracked {
    /// `templates` must be the router's own paths; a request matching none is labelled
    /// `unmatched` in metrics.
    pub fn new(
        router: Router,
        state: AppState,
        templates: impl IntoIterator<Item = String>,
    ) -> Tracked {
        let mut table = matchit::Router::new();
        for template in templates {
            let label: Arc<str> = template.as_str().into();
            // The router accepted these same paths, so they cannot conflict here.
            let _ = table.insert(template, label);
        }
        Tracked {
            router,
            state,
            templates: Arc::new(table),
        }
    }

    fn route_of(&self, path: &str) -> Option<Arc<str>> {
        self.templates.at(path).ok().map(|m| m.value.clone())
    }
}

impl Service<Request> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.track(super::strip_trailing_slash(request)).await) })
    }
}

impl Tracked {
    async fn track(mut self, request: Request) -> Response {
        let started = Instant::now();
        let id_header = accept_request_id(request.headers().get(&X_REQUEST_ID));
        let matched = self.route_of(request.uri().path());
        let route = matched.as_deref().unwrap_or("unmatched");
        let method = request.method().clone();

        let request_id = id_header.to_str().unwrap_or_default();
        let span = tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
        let state = &self.state;
        let cors = Cors::of(&request, &state.config.cors_origins);
        let mut response = match cors.preflight_response() {
            Some(answer) => answer,
            None => match read_small_body(request).await {
                Ok(request) if is_health_probe(&request) => {
                    super::routes::system::health_response(state)
                        .instrument(span.clone())
                        .await
                }
                Ok(request) => match self.router.call(request).instrument(span.clone()).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                Err(refused) => refused,
            },
        };
        cors.apply(response.headers_mut());

        let elapsed = started.elapsed();
        let process_time = process_time_header(elapsed);
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID.clone(), id_header.clone());
        headers.insert(X_PROCESS_TIME.clone(), process_time);
        let status = response.status().as_u16();
        state
            .metrics
            .record(method.as_str(), route, status, elapsed);

        let _enter = span.enter();
        let ms = elapsed.as_secs_f64() * 1000.0;
        if elapsed.as_secs_f64() > 1.0 {
            tracing::warn!(status, duration_ms = ms, "slow request");
        } else if elapsed.as_secs_f64() > 0.5 {
            tracing::info!(status, duration_ms = ms, "slow request");
        } else {
            tracing::debug!(status, duration_ms = ms, "request");
        }
        response
    }
}

/// `GET /health` is answered by its handler directly, not through the router: Docker,
/// nginx and load balancers call it more than everything else together, and routing it
/// (path lookup, the boxed route and handler futures, the state extractor taking the
/// request apart and back together) cost as much as the answer itself. It is still
/// in the router, for `HEAD` and the OpenAPI document, and it still gets everything this
/// layer adds.
fn is_health_probe(request: &Request) -> bool {
    request.method() == axum::http::Method::GET && request.uri().path() == "/health"
}

/// Bodies up to this size are read before the handler runs (nginx allows 1 MB on the
/// API's non-upload routes).
pub const BUFFERED_BODY_LIMIT: u64 = 1024 * 1024;

/// Reads a small non-multipart body in full before the handler runs. A handler that never
/// reads its body (assign, mark read) would otherwise leave it on the socket, and hyper
/// closes a keep-alive connection whose unread body is more than it has buffered. Uploads
/// (multipart, or larger) still stream to their handlers.
async fn read_small_body(request: Request) -> Result<Request, Response> {
    use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    use axum::response::IntoResponse;
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
                Ok(bytes) => Ok(Request::from_parts(parts, bytes.into())),
                Err(_) => Err(
                    ApiError::BadRequest("The request body could not be read".into())
                        .into_response(),
                ),
            }
        }
        _ => Ok(request),
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
