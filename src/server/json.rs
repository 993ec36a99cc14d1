//! `Json<T>` responses, serialised into one pre-sized buffer.
//!
//! axum's own `Json` response writes through a `BytesMut` writer, and every small write
//! serde makes (each quote, colon and number) goes through `BufMut`'s generic chunk loop.
//! Profiling `/health` showed that serialising its 300-byte body cost more than hyper's
//! parsing of the whole request; a `Vec` takes the same writes as plain appends.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A JSON response body (`application/json`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(256);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            // Only a type whose Serialize fails (a map with non-string keys) gets here.
            Err(err) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                )],
                err.to_string(),
            )
                .into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serialises_with_the_json_content_type() {
        let response = Json(serde_json::json!({"status": "healthy", "n": 3})).into_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], br#"{"n":3,"status":"healthy"}"#);
    }

    #[tokio::test]
    async fn a_failing_serialisation_is_a_500_not_a_panic() {
        let bad: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let response = Json(bad).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
