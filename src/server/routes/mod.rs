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
