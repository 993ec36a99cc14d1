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
