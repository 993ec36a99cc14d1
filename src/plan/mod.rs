//! Pure planning: from settings and observed state to data describing what should exist.
//! No I/O and no async here; effect modules carry plans out.

pub mod containers;
