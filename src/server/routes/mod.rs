//! One router per resource, merged in [`crate::server::router`].

pub mod auth;
pub mod files;
pub mod meals;
pub mod notifications;
pub mod progress;
pub mod system;
pub mod users;
pub mod workouts;
