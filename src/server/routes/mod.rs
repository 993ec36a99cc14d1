//! One router per resource, merged in [`crate::server::router`].

pub mod auth;
pub mod files;
pub mod meals;
pub mod notifications;
pub mod progress;
pub mod system;
pub mod users;
pub mod workouts;

/// The answer to a successful DELETE, as the original API gave it.
pub fn deleted(what: &str) -> crate::server::json::Json<serde_json::Value> {
    crate::server::json::Json(
        serde_json::json!({ "message": format!("{what} deleted successfully") }),
    )
}

/// A plan never moves to another client: a replace that names a different `client_id` than
/// the plan's conflicts with the plan (409); the same id, or none, is fine. The body is
/// well formed either way, so this is not a 422 (issue 15).
pub fn stays_with_client(named: Option<i64>, owner: i64) -> crate::server::error::ApiResult<()> {
    match named {
        Some(id) if id != owner => Err(crate::server::error::ApiError::Conflict(format!(
            "the plan belongs to client {owner}; a plan cannot move to another client"
        ))),
        _ => Ok(()),
    }
}

/// How a route finds one object by id for the caller; `write` asks for the right to change
/// it (absent or not the caller's: 404; visible but not theirs to change: 403).
pub type Finder<T> = fn(&crate::db::Conn, crate::server::access::Actor, i64, bool) -> ApiResult<T>;

use crate::db::users::User;
use crate::server::access::{query, write, Actor};
use crate::server::error::ApiResult;
use crate::server::state::AppState;

/// `GET …/{id}`: the object as the caller may see it.
pub async fn read_one<T: Send + 'static>(
    state: &AppState,
    me: &User,
    id: i64,
    find: Finder<T>,
) -> ApiResult<crate::server::json::Json<T>> {
    let actor = Actor::from(me);
    query(state, move |c| find(c, actor, id, false))
        .await
        .map(crate::server::json::Json)
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
) -> ApiResult<crate::server::json::Json<T>>
where
    T: Send + 'static,
    F: FnOnce(&crate::db::Conn, T) -> ApiResult<()> + Send + 'static,
{
    let actor = Actor::from(me);
    write(state, move |c| {
        let before = find(c, actor, id, true)?;
        change(c, before)?;
        find(c, actor, id, false)
    })
    .await
    .map(crate::server::json::Json)
}

/// `DELETE …/{id}` of an object that owns nothing outside its rows (the database cascades
/// to its children): found for writing, then deleted; `what` names it in the answer.
pub async fn delete_one<T: Send + 'static>(
    state: &AppState,
    me: &User,
    id: i64,
    find: Finder<T>,
    delete: fn(&crate::db::Conn, i64) -> Result<bool, crate::db::DbError>,
    what: &'static str,
) -> ApiResult<crate::server::json::Json<serde_json::Value>> {
    let actor = Actor::from(me);
    write(state, move |c| {
        find(c, actor, id, true)?;
        Ok(delete(c, id)?)
    })
    .await?;
    Ok(deleted(what))
}
