//! Service endpoints: `/`, `/health`, `/status/database` and `/metrics`.

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::server::json::Json;
use axum::extract::State;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::db;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ClientIp, NotProxied};
use crate::server::health::{HealthBody, Verdict};
use crate::server::state::AppState;
use crate::VERSION;

/// How long `/status/database` waits for the database.
const STATUS_DB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(root))
        .routes(routes!(health))
        .routes(routes!(database_status))
        .routes(routes!(metrics))
}

#[utoipa::path(get, path = "/", operation_id = "system_root", tag = "system", responses((status = 200, description = "Success", body = serde_json::Value)))]
async fn root() -> Json<serde_json::Value> {
    Json(json!({
        "message": "Welcome to Elior Fitness API",
        "name": "elior",
        "version": VERSION,
    }))
}

#[utoipa::path(get, path = "/health", operation_id = "system_health", tag = "system", responses((status = 200, description = "Success")))]
async fn health(State(state): State<AppState>) -> Response {
    let verdict = state.health.verdict(&state.db, &state.uploads).await;
    health_answer(verdict)
}

/// The `/health` answer for `verdict`. Synchronous, so the tracking layer can
/// answer a probe on the spot while the cached verdict is fresh (see
/// [`crate::server::middleware`]).
pub fn health_answer(verdict: Verdict) -> Response {
    let healthy = verdict.is_healthy();
    let body = HealthBody::new(verdict, chrono::Utc::now());
    // Built directly rather than from an `IntoResponse` tuple, which would set a
    // content type and then replace it; room for the headers the tracking layer adds.
    let mut response = Response::new(Body::from(body.to_json()));
    let headers = response.headers_mut();
    headers.reserve(8);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if !healthy {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    response
}

/// Database and server detail (version, environment, pool, file sizes): for internal
/// networks (the stack's own probes) and admins only; `/health` is the public check.
#[utoipa::path(get, path = "/status/database", operation_id = "system_database_status", tag = "system", responses((status = 200, description = "Success"), (status = 401, description = "Not from an internal network, and no admin token"), (status = 403, description = "Not an admin"), (status = 503, description = "The database is unavailable")), security((), ("bearer" = [])))]
async fn database_status(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    if !crate::config::net::is_internal(ip) {
        let token = crate::server::extract::bearer_token(&headers)
            .ok_or(ApiError::Unauthorized("Not authenticated"))?;
        let user = crate::server::extract::user_for_token(&state, token)
            .await
            .map_err(|_| ApiError::Unauthorized("Could not validate credentials"))?;
        if user.role != crate::db::users::Role::Admin {
            return Err(ApiError::Forbidden(
                "Database status is for admins and internal networks",
            ));
        }
    }
    let path = state.db.path().map(|p| p.to_path_buf());
    if let Err(reason) = state.db.check_file() {
        let body =
            json!({ "healthy": false, "error": reason, "connection_pool": state.db.pool_stats() });
        return Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response());
    }
    // Off the async workers: a database that hangs must not hang this report too.
    let result = tokio::time::timeout(
        STATUS_DB_TIMEOUT,
        state.db.read_off_thread(move |c| {
            db::ping(c)?;
            db::status(c, path.as_deref())
        }),
    )
    .await;
    let pool = state.db.pool_stats();
    let (code, body) = match result {
        Ok(Ok(status)) => (
            StatusCode::OK,
            json!({
                "healthy": true,
                "journal_mode": status.journal_mode,
                "schema_version": status.schema_version,
                "latest_schema_version": status.latest_schema_version,
                "file_size_bytes": status.file_size_bytes,
                "wal_size_bytes": status.wal_size_bytes,
                "connection_pool": pool,
                "database_url_type": status.backend,
                "version": VERSION,
                "environment": state.config.environment.as_str(),
                "domain": state.config.domain,
                "uptime_seconds": state.started.elapsed().as_secs(),
            }),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "database status query failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "healthy": false, "connection_pool": pool }),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "healthy": false, "connection_pool": pool }),
        ),
    };
    Ok((code, Json(body)).into_response())
}

/// Prometheus metrics, for loopback and private networks only, and never through the
/// reverse proxy ([`NotProxied`]): the host scrapes the API container directly.
#[utoipa::path(get, path = "/metrics", operation_id = "system_metrics", tag = "system", responses((status = 200, description = "Success")))]
async fn metrics(
    State(state): State<AppState>,
    _direct: NotProxied,
    ClientIp(ip): ClientIp,
) -> ApiResult<Response> {
    if !crate::config::net::is_internal(ip) {
        tracing::info!(client = %ip, "refused /metrics to a non-internal address");
        return Err(ApiError::Forbidden(
            "Metrics are only available from internal networks",
        ));
    }
    let text = state.metrics.render(
        state.db.pool_stats(),
        &state.admission,
        state.started.elapsed(),
    );
    Ok((
        [(header::CONTENT_TYPE, crate::server::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}
