//! The layer every request passes through first: request id, timing headers, metrics,
//! and the request's log span.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::state::AppState;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_PROCESS_TIME: HeaderName = HeaderName::from_static("x-process-time");

/// A caller's id is kept when it is at most 64 characters of `[A-Za-z0-9._-]`, so it is
/// safe to log and to echo; anything else is replaced by a fresh UUID.
pub fn accept_request_id(given: Option<&HeaderValue>) -> String {
    given
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

pub async fn track(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = accept_request_id(request.headers().get(&X_REQUEST_ID));
    let id_header =
        HeaderValue::from_str(&request_id).expect("validated request id is a header value");
    // Handlers and the proxy upstream see the id we settled on.
    request
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), id_header.clone());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();

    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    let mut response = next.run(request).instrument(span.clone()).await;

    let elapsed = started.elapsed();
    let headers = response.headers_mut();
    headers.insert(X_REQUEST_ID.clone(), id_header);
    headers.insert(
        X_PROCESS_TIME.clone(),
        HeaderValue::from_str(&format!("{:.3}", elapsed.as_secs_f64()))
            .expect("digits are a header value"),
    );
    let status = response.status().as_u16();
    state
        .metrics
        .record(method.as_str(), &route, status, elapsed);

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
            assert!(uuid::Uuid::parse_str(&got).is_ok(), "{got}");
        }
        assert_eq!(
            accept_request_id(Some(&HeaderValue::from_str(&"b".repeat(64)).unwrap())).len(),
            64
        );
    }
}
