//! The API's one error type and its JSON shape.
//!
//! Bodies follow the original FastAPI service so its frontend keeps working:
//! `{"detail": "message"}`, and for 422 `{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`.
//! A 5xx body is generic; the cause goes to the log, tagged with the request id.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::db::DbError;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    /// A `value_error` at `loc`: `["body", "title"]`, `["query", "size"]`, `["path"]`.
    pub fn at(loc: &[&str], msg: impl Into<String>) -> Self {
        FieldError {
            loc: loc.iter().map(|part| part.to_string()).collect(),
            msg: msg.into(),
            kind: "value_error".into(),
        }
    }

    /// An error in a field of the JSON body.
    pub fn body(field: &str, msg: impl Into<String>) -> Self {
        FieldError::at(&["body", field], msg)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    /// A field of the body names an object that does not exist (or that the caller may not
    /// see): 404 like the object itself would answer, naming the field (issue 15: the id is
    /// well formed, so it is not a 422 a schema could have prevented).
    #[error("{field}: names no {what}")]
    Unknown { field: String, what: &'static str },
    /// The path exists, the method does not (axum adds the `Allow` header).
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// Always answered with `Retry-After` (RFC 9110, section 10.2.3).
    #[error("{detail}")]
    TooManyRequests {
        detail: &'static str,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    Unavailable(&'static str),
    /// The disk under the database or the uploads is full, so nothing was saved: a 503
    /// that asks the client to come back in a minute (space is freed by an operator, not
    /// by retrying), logged as an error with its cause.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// A limit of the server (body or image size, request head size, a read timeout):
    /// 408, 413, 414 or 431, with the limit named in `detail`.
    #[error("{detail}")]
    Limit { status: StatusCode, detail: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 429 for a throttle lock that lifts after `wait` (at least one second is named).
    pub fn throttled(detail: &'static str, wait: std::time::Duration) -> Self {
        ApiError::TooManyRequests {
            detail,
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
    }

    pub fn field(field: &str, msg: impl Into<String>) -> Self {
        ApiError::invalid(&["body", field], msg)
    }

    /// A 422 naming one bad input at `loc` (see [`FieldError::at`]).
    pub fn invalid(loc: &[&str], msg: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::at(loc, msg)])
    }

    /// The body's `field` names no `what` (a 404; see [`ApiError::Unknown`]).
    pub fn unknown(field: impl Into<String>, what: &'static str) -> Self {
        ApiError::Unknown {
            field: field.into(),
            what,
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::PoolTimeout(_) | DbError::WriteQueueFull | DbError::WriteLockHeld(_) => {
                ApiError::Unavailable("Database busy, try again")
            }
            full if full.is_storage_full() => ApiError::StorageFull(full.to_string()),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, json!({ "detail": m })),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, json!({ "detail": m })),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, json!({ "detail": m })),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, json!({ "detail": m })),
            ApiError::Unknown { .. } => {
                (StatusCode::NOT_FOUND, json!({ "detail": self.to_string() }))
            }
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({ "detail": "Method Not Allowed" }),
            ),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, json!({ "detail": m })),
            ApiError::Validation(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "detail": errors }),
            ),
            ApiError::TooManyRequests {
                detail,
                retry_after_secs,
            } => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({
                    "detail": detail,
                    "retry_after": retry_after_secs,
                }),
            ),
            ApiError::Limit { status, detail } => (*status, json!({ "detail": detail })),
            ApiError::Unavailable(m) => {
                tracing::warn!(reason = m, "service unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, json!({ "detail": m }))
            }
            ApiError::StorageFull(cause) => {
                tracing::error!(
                    error = %cause,
                    "the disk is full: writes fail until space is freed (`elior doctor` names the disk)"
                );
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "detail": "The server's storage is full, so nothing was saved; try again later" }),
                )
            }
            ApiError::Internal(e) => {
                // The span of the request carries its id, so this line can be found from
                // the X-Request-ID the client saw.
                tracing::error!(error = format!("{e:#}"), "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "detail": "Internal server error" }),
                )
            }
        };
        let mut response = (status, super::json::Json(body)).into_response();
        match self {
            ApiError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests {
                retry_after_secs, ..
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            // A busy server (pool, password checks): every 503 says when to come back.
            ApiError::Unavailable(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::StorageFull(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            _ => {}
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
