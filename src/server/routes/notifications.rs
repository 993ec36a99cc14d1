//! `/api/notifications` (each user's own notifications: list, count, create, mark read,
//! delete) and the WebSocket at `/api/ws/ws/{user_id}?token=JWT` that pushes new ones live.
//!
//! Every query is scoped to the caller as recipient, so another user's notification id
//! answers 404. Creating is trainer → own client, or admin → anyone.

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::server::json::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::db::notifications::{self, Notification};
use crate::db::users::{self, Role};
use crate::server::access::{query, visible_client, write, Actor, STAFF};
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{user_for_token, ApiJson, AuthUser};
use crate::server::hub::HubStats;
use crate::server::params::{ApiPath, ApiQuery, Checks, Page};
use crate::server::routes::{created, deleted, write_notifying, Created};
use crate::server::state::AppState;
use crate::server::ws;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(count))
        .routes(routes!(mark_all_read))
        .routes(routes!(mark_read))
        .routes(routes!(get_one, delete))
        .routes(routes!(ws_stats))
        .routes(routes!(ws_connect))
}

#[derive(Debug, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    #[serde(default)]
    unread_only: bool,
    /// Admins only: whose notifications to list (default: your own).
    #[serde(default)]
    user_id: Option<i64>,
}

#[utoipa::path(get, path = "/api/notifications", operation_id = "notifications_list", tag = "notifications", params(crate::server::params::Page, ListQuery), responses((status = 200, description = "Success", body = Vec<Notification>)), security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiQuery(page): ApiQuery<Page>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<Notification>>> {
    page.valid()?;
    let actor = Actor::from(&me);
    let recipient = match q.user_id {
        Some(id) if id != me.id => {
            actor.require(
                &[Role::Admin],
                "Only admins can read another user's notifications",
            )?;
            id
        }
        _ => me.id,
    };
    query(&state, move |c| {
        if recipient != me.id && users::find_by_id(c, recipient)?.is_none() {
            return Err(ApiError::NotFound("User not found"));
        }
        Ok(notifications::list(
            c,
            recipient,
            q.unread_only,
            page.limit,
            page.offset,
        )?)
    })
    .await
    .map(Json)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Count {
    unread_count: i64,
    total_count: i64,
}

#[utoipa::path(get, path = "/api/notifications/count", operation_id = "notifications_count", tag = "notifications", responses((status = 200, description = "Success", body = Count)), security(("bearer" = [])))]
async fn count(State(state): State<AppState>, AuthUser(me): AuthUser) -> ApiResult<Json<Count>> {
    let (unread_count, total_count) =
        query(&state, move |c| Ok(notifications::count(c, me.id)?)).await?;
    Ok(Json(Count {
        unread_count,
        total_count,
    }))
}

pub const KINDS: &[&str] = &["info", "success", "warning", "error", "reminder", "message"];

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewNotification {
    recipient_id: i64,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    title: String,
    #[schema(min_length = 1, max_length = 2000, pattern = "\\S")]
    message: String,
    #[serde(rename = "type", default = "default_kind")]
    kind: String,
}

fn default_kind() -> String {
    "info".into()
}

#[utoipa::path(post, path = "/api/notifications", operation_id = "notifications_create", tag = "notifications", request_body = NewNotification, responses((status = 201, description = "Success", body = Notification)), security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiJson(n): ApiJson<NewNotification>,
) -> ApiResult<Created<Notification>> {
    let actor = Actor::from(&me);
    actor.require(STAFF, "Only trainers and admins can send notifications")?;
    let mut c = Checks::new();
    c.text("title", &n.title, 1, 200);
    c.text("message", &n.message, 1, 2000);
    c.one_of("type", Some(&n.kind), KINDS);
    c.finish()?;
    write_notifying(&state, move |c| {
        // A trainer writes to their own clients; an admin to anyone who exists.
        let recipient = if actor.is_admin() {
            users::find_by_id(c, n.recipient_id)?
                .ok_or(ApiError::NotFound("Recipient not found"))?
                .id
        } else {
            visible_client(c, actor, n.recipient_id)
                .map_err(|_| ApiError::NotFound("Recipient not found"))?
                .id
        };
        let note = notifications::insert(
            c,
            recipient,
            Some(actor.id),
            n.title.trim(),
            n.message.trim(),
            &n.kind,
        )?;
        Ok((note.clone(), Some(note)))
    })
    .await
    .map(created)
}

const MISSING: &str = "Notification not found";

#[utoipa::path(get, path = "/api/notifications/{id}", operation_id = "notifications_get_one", tag = "notifications", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = Notification)), security(("bearer" = [])))]
async fn get_one(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Notification>> {
    // Admins read anyone's notification; everyone else only their own.
    let recipient = (!Actor::from(&me).is_admin()).then_some(me.id);
    query(&state, move |c| {
        notifications::find(c, id, recipient)?.ok_or(ApiError::NotFound(MISSING))
    })
    .await
    .map(Json)
}

#[utoipa::path(put, path = "/api/notifications/{id}/read", operation_id = "notifications_mark_read", tag = "notifications", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = Notification)), security(("bearer" = [])))]
async fn mark_read(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Notification>> {
    write(&state, move |c| {
        if !notifications::mark_read(c, id, me.id)? {
            return Err(ApiError::NotFound(MISSING));
        }
        notifications::find(c, id, Some(me.id))?.ok_or(ApiError::NotFound(MISSING))
    })
    .await
    .map(Json)
}

#[utoipa::path(put, path = "/api/notifications/mark-all-read", operation_id = "notifications_mark_all_read", tag = "notifications", responses((status = 200, description = "Success", body = serde_json::Value)), security(("bearer" = [])))]
async fn mark_all_read(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> ApiResult<Json<serde_json::Value>> {
    let n = write(&state, move |c| Ok(notifications::mark_all_read(c, me.id)?)).await?;
    Ok(Json(
        json!({ "message": "All notifications marked as read", "updated": n }),
    ))
}

#[utoipa::path(delete, path = "/api/notifications/{id}", operation_id = "notifications_delete", tag = "notifications", params(("id" = i64, Path)), responses((status = 200, description = "Success", body = serde_json::Value)), security(("bearer" = [])))]
async fn delete(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    write(&state, move |c| {
        if notifications::delete(c, id, me.id)? {
            Ok(())
        } else {
            Err(ApiError::NotFound(MISSING))
        }
    })
    .await?;
    Ok(deleted("Notification"))
}

#[utoipa::path(get, path = "/api/ws/ws/stats", operation_id = "notifications_ws_stats", tag = "notifications", responses((status = 200, description = "Success", body = HubStats)), security(("bearer" = [])))]
async fn ws_stats(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> ApiResult<Json<HubStats>> {
    Actor::from(&me).require(&[Role::Admin], "Only admins can see connection statistics")?;
    Ok(Json(state.hub.stats()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
struct WsQuery {
    token: Option<String>,
}

/// Upgrades first and refuses with a close code after, as the original did, so browsers
/// see the reason (a refused handshake only shows as a generic failure). The socket itself
/// is served by [`crate::server::ws`].
#[utoipa::path(get, path = "/api/ws/ws/{user_id}", operation_id = "notifications_ws_connect", tag = "notifications", params(("user_id" = String, Path), WsQuery), responses((status = 200, description = "Success")))]
async fn ws_connect(
    State(state): State<AppState>,
    ApiPath(user_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let verdict = authorize_ws(&state, &user_id, q.token.as_deref()).await;
    ws::limits(upgrade).on_upgrade(move |socket| async move {
        match verdict {
            Ok(id) => {
                let timeout = state.config.ws_timeout;
                ws::run(socket, state.hub.connect(id), id, timeout).await
            }
            Err((code, reason)) => ws::close(socket, code, reason).await,
        }
    })
}

async fn authorize_ws(
    state: &AppState,
    path_user: &str,
    token: Option<&str>,
) -> Result<i64, (u16, &'static str)> {
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or((ws::CLOSE_NO_TOKEN, "Missing token"))?;
    let user = user_for_token(state, token)
        .await
        .map_err(|_| (ws::CLOSE_BAD_TOKEN, "Invalid token"))?;
    if path_user.parse::<i64>().ok() != Some(user.id) {
        return Err((ws::CLOSE_WRONG_USER, "Token does not match user"));
    }
    Ok(user.id)
}
