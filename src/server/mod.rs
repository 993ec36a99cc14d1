//! The HTTP API. [`app`] builds the whole app with no I/O, so tests can drive it with
//! `tower::ServiceExt::oneshot`; [`launch`] serves it on a listener until shutdown.
//!
//! Must not import `cli`.

pub mod access;
pub mod admission;
pub mod connection;
pub mod cors;
pub mod error;
pub mod extract;
pub mod health;
pub mod heap;
pub mod hub;
pub mod json;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod params;
pub mod process;
pub mod routes;
pub mod state;
pub mod throttle;
pub mod ws;

use std::future::Future;
use std::time::Duration;

use anyhow::Result;

use axum::Router;
use tokio::net::TcpListener;

pub use state::AppState;

/// How long in-flight requests may run after a shutdown signal before we exit anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Every API route with its OpenAPI operation. Both come from each handler's
/// `#[utoipa::path]`, so the document lists exactly the routes the router has.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    let (router, doc) =
        utoipa_axum::router::OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
            .merge(routes::system::router())
            .merge(routes::auth::router())
            .merge(routes::users::router())
            .merge(routes::workouts::router())
            .merge(routes::notifications::router())
            .merge(routes::progress::router())
            .merge(routes::files::router())
            .merge(routes::meals::router())
            .split_for_parts();
    let mut doc = doc;
    utoipa::Modify::modify(&openapi::CommonErrors, &mut doc);
    utoipa::Modify::modify(&openapi::Enums, &mut doc);
    utoipa::Modify::modify(&openapi::Uploads, &mut doc);
    utoipa::Modify::modify(&openapi::NonBlank, &mut doc);
    utoipa::Modify::modify(&openapi::CreateBodies, &mut doc);
    utoipa::Modify::modify(&openapi::FlattenedBodies, &mut doc);
    utoipa::Modify::modify(&openapi::Links, &mut doc);
    (router, doc)
}

/// Where the OpenAPI document is served.
const OPENAPI_PATH: &str = "/openapi.json";

/// The whole app: its state, and every route behind the tracking layer
/// ([`middleware::Tracked`]). The routes and the OpenAPI document are built once, and the
/// metrics know every route from the document's paths.
pub fn app(config: crate::config::ServeConfig, db: crate::db::Db) -> middleware::Tracked {
    let (routes, doc) = api();
    let templates = doc.paths.paths.keys().map(String::as_str);
    let metrics = metrics::Metrics::new(templates.chain([OPENAPI_PATH]));
    let state = AppState::new(config, db, metrics);
    // Serialised once; each request shares the bytes instead of copying them.
    let doc = bytes::Bytes::from(doc.to_json().expect("the OpenAPI document serialises"));
    let router = routes
        .route(
            OPENAPI_PATH,
            axum::routing::get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    doc,
                )
            }),
        )
        .method_not_allowed_fallback(|| async { error::ApiError::MethodNotAllowed })
        .fallback(|| async { error::ApiError::NotFound("Not Found") })
        .with_state(state.clone());
    middleware::Tracked::new(router, state)
}

/// Drops one trailing slash from the path (`/api/users/` becomes `/api/users`), keeping
/// the query, so the collection routes answer both spellings the original frontend uses
/// while the router and OpenAPI know only one. It runs before routing: `Router::layer`
/// middleware runs after the route is chosen, too late to change it.
pub fn strip_trailing_slash(mut request: axum::extract::Request) -> axum::extract::Request {
    let uri = request.uri();
    let path = uri.path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = &path[..path.len() - 1];
        let path_and_query = match uri.query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        let mut parts = uri.clone().into_parts();
        if let Ok(pq) = path_and_query.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(new_uri) = axum::http::Uri::from_parts(parts) {
                *request.uri_mut() = new_uri;
            }
        }
    }
    request
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish for up to [`DRAIN_TIMEOUT`], and checkpoints the WAL.
pub async fn launch(
    listener: TcpListener,
    app: middleware::Tracked,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let db = app.state().db.clone();
    let hub = app.state().hub.clone();
    // PostgreSQL: notifications made by other replicas reach this one's WebSockets.
    listen::spawn(app.state());
    // What building the app freed, then what bursts of connections free.
    heap::spawn();
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let server = connection::serve(listener, app, async move {
        shutdown.await;
        tracing::info!("shutdown requested; draining in-flight requests");
        // Open WebSockets would hold the drain until its deadline; close them now.
        hub.close_all();
        let _ = signalled_tx.send(());
    });
    let drain_deadline = async move {
        if signalled_rx.await.is_ok() {
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = server => {}
        () = drain_deadline => tracing::warn!("requests still running after {DRAIN_TIMEOUT:?}; exiting anyway"),
    }
    let checkpoint = tokio::task::spawn_blocking(move || db.checkpoint()).await;
    match checkpoint {
        Ok(Ok(())) => tracing::info!("WAL checkpointed; bye"),
        Ok(Err(e)) => tracing::warn!(error = %e, "WAL checkpoint at shutdown failed"),
        Err(e) => tracing::warn!(error = %e, "WAL checkpoint task failed"),
    }
    Ok(())
}

/// Resolves on SIGTERM (docker stop) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = int.recv() => tracing::info!("received SIGINT"),
    }
}
