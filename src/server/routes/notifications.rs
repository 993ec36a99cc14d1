//! `/api/notifications` (each user's own notifications: list, count, create, mark read,
//! delete) and the WebSocket at `/api/ws/ws/{user_id}?token=JWT` that pushes new ones live.
//!
//! Every query is scoped to the caller as recipient, so another user's notification id
//! answers 404. Creating is trainer → own client, or admin → anyone.

use std::time::Duration;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::server::json::Json;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::db::notifications::{self, Notification};
use crate::db::users::{self, Role};
use crate::server::access::{query, visible_client, Actor, STAFF};
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{user_for_token, ApiJson, AuthUser};
use crate::server::hub::HubStats;
use crate::server::params::{ApiPath, ApiQuery, Checks, Page};
use crate::server::routes::deleted;
use crate::server::state::AppState;

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
    let mut c = Checks::new();
    page.check(&mut c);
    c.finish()?;
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
) -> ApiResult<(StatusCode, Json<Notification>)> {
    let actor = Actor::from(&me);
    actor.require(STAFF, "Only trainers and admins can send notifications")?;
    let mut c = Checks::new();
    c.text("title", &n.title, 1, 200);
    c.text("message", &n.message, 1, 2000);
    c.one_of("type", Some(&n.kind), KINDS);
    c.finish()?;
    let note = query(&state, move |c| {
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
        Ok(notifications::insert(
            c,
            recipient,
            Some(actor.id),
            n.title.trim(),
            n.message.trim(),
            &n.kind,
        )?)
    })
    .await?;
    state.hub.push_notification(&note);
    Ok((StatusCode::CREATED, Json(note)))
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
    query(&state, move |c| {
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
    let n = query(&state, move |c| Ok(notifications::mark_all_read(c, me.id)?)).await?;
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
    query(&state, move |c| {
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

/// WebSocket close codes of the original API.
pub const CLOSE_NO_TOKEN: u16 = 4001;
pub const CLOSE_BAD_TOKEN: u16 = 4002;
pub const CLOSE_WRONG_USER: u16 = 4003;
/// Server keep-alive: a Ping frame this often, so idle proxies don't drop the socket.
const KEEPALIVE: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
struct WsQuery {
    token: Option<String>,
}

/// Upgrades first and refuses with a close code after, as the original did, so browsers
/// see the reason (a refused handshake only shows as a generic failure).
#[utoipa::path(get, path = "/api/ws/ws/{user_id}", operation_id = "notifications_ws_connect", tag = "notifications", params(("user_id" = String, Path), WsQuery), responses((status = 200, description = "Success")))]
async fn ws_connect(
    State(state): State<AppState>,
    ApiPath(user_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let verdict = authorize_ws(&state, &user_id, q.token.as_deref()).await;
    ws.on_upgrade(move |socket| async move {
        match verdict {
            Ok(id) => serve_socket(state, socket, id).await,
            Err((code, reason)) => close(socket, code, reason).await,
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
        .ok_or((CLOSE_NO_TOKEN, "Missing token"))?;
    let user = user_for_token(state, token)
        .await
        .map_err(|_| (CLOSE_BAD_TOKEN, "Invalid token"))?;
    if path_user.parse::<i64>().ok() != Some(user.id) {
        return Err((CLOSE_WRONG_USER, "Token does not match user"));
    }
    Ok(user.id)
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

async fn serve_socket(state: AppState, mut socket: WebSocket, user_id: i64) {
    let mut conn = state.hub.connect(user_id);
    // Shutdown already under way: `changed()` below would never fire for it.
    if *conn.closing.borrow_and_update() {
        close(socket, 1001, "Server shutting down").await;
        return;
    }
    let welcome = json!({
        "type": "connection_established",
        "user_id": user_id,
        "message": "Connected to Elior Fitness notifications",
    });
    if socket
        .send(Message::Text(welcome.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        tokio::select! {
            pushed = conn.messages.recv() => {
                let Some(text) = pushed else {
                    // The hub dropped us: the user's sessions were ended.
                    close(socket, CLOSE_BAD_TOKEN, "Session ended").await;
                    return;
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if is_ping(&text) {
                        let pong = json!({ "type": "pong", "timestamp": crate::db::users::now() });
                        if socket.send(Message::Text(pong.to_string().into())).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = keepalive.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            _ = conn.closing.changed() => {
                close(socket, 1001, "Server shutting down").await;
                return;
            }
        }
    }
}

/// `ping` as plain text or `{"type": "ping"}`.
fn is_ping(text: &str) -> bool {
    text.trim() == "ping"
        || serde_json::from_str::<serde_json::Value>(text)
            .is_ok_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("ping"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings() {
        assert!(is_ping("ping"));
        assert!(is_ping(r#"{"type":"ping"}"#));
        assert!(!is_ping(r#"{"type":"hello"}"#));
    }
}
