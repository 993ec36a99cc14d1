//! One router per resource, merged in [`crate::server::router`].

pub mod auth;
pub mod notifications;
pub mod system;
pub mod users;
pub mod workouts;
