//! One router per resource, merged in [`crate::server::api`], and the steps their
//! handlers share, written once: find an object the caller owns ([`Finder`]) and read it,
//! read from it, add to it, replace it or delete it; a write whose notification is pushed
//! once it committed ([`write_notifying`]); the answers to a create and a delete. Reads run
//! on the pool ([`query`]), writes through SQLite's one writer ([`write`]).

pub mod auth;
pub mod files;
pub mod meals;
pub mod notifications;
pub mod progress;
pub mod system;
pub mod users;
pub mod workouts;

use crate::db::notifications::Notification;
use crate::db::users::User;
use crate::db::{Conn, DbError};
use crate::server::access::{query, write, Actor};
use crate::server::error::{ApiError, ApiResult};
use crate::server::json::Json;
use crate::server::state::AppState;

/// The answer to a successful DELETE, as the original API gave it.
pub fn deleted(what: &str) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "message": format!("{what} deleted successfully") }))
}

/// A plan never moves to another client: a replace that names a different `client_id` than
/// the plan's conflicts with the plan (409); the same id, or none, is fine. The body is
/// well formed either way, so this is not a 422 (issue 15).
pub fn stays_with_client(named: Option<i64>, owner: i64) -> ApiResult<()> {
    match named {
        Some(id) if id != owner => Err(ApiError::Conflict(format!(
            "the plan belongs to client {owner}; a plan cannot move to another client"
        ))),
        _ => Ok(()),
    }
}

/// How a route finds one object by id for the caller; `write` asks for the right to change
/// it (absent or not the caller's: 404; visible but not theirs to change: 403).
pub type Finder<T> = fn(&Conn, Actor, i64, bool) -> ApiResult<T>;

/// The answer to a successful create: 201 with the new object.
pub type Created<T> = (axum::http::StatusCode, Json<T>);

pub fn created<T>(v: T) -> Created<T> {
    (axum::http::StatusCode::CREATED, Json(v))
}

/// Runs `f`, which writes and may notify someone, through [`write`]; the notification it
/// returns is pushed live once the write has committed.
pub async fn write_notifying<T, F>(state: &AppState, f: F) -> ApiResult<T>
where
    F: FnOnce(&mut Conn) -> ApiResult<(T, Option<Notification>)> + Send + 'static,
    T: Send + 'static,
{
    let (value, note) = write(state, f).await?;
    if let Some(note) = note {
        state.hub.push_notification(&note);
    }
    Ok(value)
}

/// `GET …/{id}`: the object as the caller may see it.
pub async fn read_one<T: Send + 'static>(
    state: &AppState,
    me: &User,
    id: i64,
    find: Finder<T>,
) -> ApiResult<Json<T>> {
    read_from(state, me, id, find, |_, found| Ok(found)).await
}

/// `GET …/{id}/…`: what `read` takes from the object the caller may see (its children, a
/// summary of it), given the object.
pub async fn read_from<T, R, F>(
    state: &AppState,
    me: &User,
    id: i64,
    find: Finder<T>,
    read: F,
) -> ApiResult<Json<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: FnOnce(&Conn, T) -> ApiResult<R> + Send + 'static,
{
    let actor = Actor::from(me);
    query(state, move |c| {
        let found = find(c, actor, id, false)?;
        read(c, found)
    })
    .await
    .map(Json)
}

/// `POST …/{id}/…` that adds to the object (a plan's session, an entry's component): the
/// object is found for writing, `add` inserts given the object, and the answer is 201 with
/// what `add` made.
pub async fn add_to<T, R, F>(
    state: &AppState,
    me: &User,
    id: i64,
    find: Finder<T>,
    add: F,
) -> ApiResult<Created<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: FnOnce(&mut Conn, T) -> ApiResult<R> + Send + 'static,
{
    let actor = Actor::from(me);
    write(state, move |c| {
        let parent = find(c, actor, id, true)?;
        add(c, parent)
    })
    .await
    .map(created)
}

/// `PUT …/{id}` of a (checked) body: the object is found for writing, `change` applies the
/// body (given the object as it was), and the answer is the object read back as the caller
/// sees it.
pub async fn replace_one<T, F>(
    state: &AppState,
    me: &User,
    id: i64,
    find: Finder<T>,
    change: F,
) -> ApiResult<Json<T>>
where
    T: Send + 'static,
    F: FnOnce(&Conn, T) -> ApiResult<()> + Send + 'static,
{
    let actor = Actor::from(me);
    write(state, move |c| {
        let before = find(c, actor, id, true)?;
        change(c, before)?;
        find(c, actor, id, false)
    })
    .await
    .map(Json)
}

/// `DELETE …/{id}` of an object that owns nothing outside its rows (the database cascades
/// to its children): found for writing, then deleted; `what` names it in the answer.
pub async fn delete_one<T: Send + 'static>(
    state: &AppState,
    me: &User,
    id: i64,
    find: Finder<T>,
    delete: fn(&Conn, i64) -> Result<bool, DbError>,
    what: &'static str,
) -> ApiResult<Json<serde_json::Value>> {
    let actor = Actor::from(me);
    write(state, move |c| {
        find(c, actor, id, true)?;
        Ok(delete(c, id)?)
    })
    .await?;
    Ok(deleted(what))
}
