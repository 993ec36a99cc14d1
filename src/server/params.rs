//! Request parameters for the domain routes: query strings and path segments whose
//! rejections use the API's 422 shape, the limit/offset [`Page`] every list takes, and
//! [`Checks`], which gathers every bad field of a body before answering.
//!
//! Pure request parsing: no database access and no authorization here.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::{ApiError, ApiResult, FieldError};

/// The most rows one list request returns.
pub const MAX_LIMIT: i64 = 100;
pub const DEFAULT_LIMIT: i64 = 50;

/// `Query<T>` whose rejection is a 422 pointing at the query string.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::invalid(&["query"], e.body_text()))
    }
}

/// `Path<T>` whose rejection is a 422 pointing at the path (e.g. `/plans/abc`).
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::invalid(&["path"], e.body_text()))
    }
}

/// Limit/offset pagination, flattened into each list's query struct.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// At most this many rows (1-100, default 50).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 100, default = 50)]
    pub limit: i64,
    /// Skip this many rows first.
    #[serde(default)]
    #[param(minimum = 0, default = 0)]
    pub offset: i64,
}

fn default_limit() -> i64 {
    DEFAULT_LIMIT
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

impl Page {
    /// The page alone: a 422 naming `limit` or `offset`.
    pub fn valid(&self) -> ApiResult<()> {
        let mut c = Checks::new();
        self.check(&mut c);
        c.finish()
    }

    /// The page and a date range in the query (`start_date`, `end_date`), in one 422.
    pub fn valid_with_dates(&self, start: Option<&str>, end: Option<&str>) -> ApiResult<()> {
        let mut c = Checks::new();
        self.check(&mut c);
        c.query_date("start_date", start);
        c.query_date("end_date", end);
        c.finish()
    }

    pub fn check(&self, c: &mut Checks) {
        if !(1..=MAX_LIMIT).contains(&self.limit) {
            c.push_query("limit", format!("must be between 1 and {MAX_LIMIT}"));
        }
        if self.offset < 0 {
            c.push_query("offset", "must be 0 or more");
        }
    }
}

/// Collects field errors so one 422 names every bad field.
#[derive(Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    pub fn new() -> Self {
        Checks::default()
    }

    pub fn push(&mut self, field: &str, msg: impl Into<String>) {
        self.0.push(FieldError::body(field, msg));
    }

    pub fn push_query(&mut self, field: &str, msg: impl Into<String>) {
        self.0.push(FieldError::at(&["query", field], msg));
    }

    /// A required text of `min..=max` characters (after trimming).
    pub fn text(&mut self, field: &str, value: &str, min: usize, max: usize) {
        let n = value.trim().chars().count();
        if n < min || n > max {
            self.push(field, format!("must be {min}-{max} characters"));
        }
    }

    /// An optional text of at most `max` characters.
    pub fn opt_text(&mut self, field: &str, value: Option<&str>, max: usize) {
        if let Some(v) = value {
            if v.chars().count() > max {
                self.push(field, format!("must be at most {max} characters"));
            }
        }
    }

    pub fn range_i64(&mut self, field: &str, value: Option<i64>, lo: i64, hi: i64) {
        if let Some(v) = value {
            if v < lo || v > hi {
                self.push(field, format!("must be between {lo} and {hi}"));
            }
        }
    }

    /// A number in `(lo, hi]` when `exclusive_lo`, else `[lo, hi]`; NaN never passes.
    pub fn range_f64(
        &mut self,
        field: &str,
        value: Option<f64>,
        lo: f64,
        hi: f64,
        exclusive_lo: bool,
    ) {
        if let Some(v) = value {
            let above = if exclusive_lo { v > lo } else { v >= lo };
            if !(above && v <= hi) {
                let open = if exclusive_lo {
                    "greater than"
                } else {
                    "at least"
                };
                self.push(field, format!("must be {open} {lo} and at most {hi}"));
            }
        }
    }

    /// A calendar date `YYYY-MM-DD`.
    pub fn date(&mut self, field: &str, value: Option<&str>) {
        if let Some(v) = value {
            if parse_date(v).is_none() {
                self.push(field, "must be a date as YYYY-MM-DD");
            }
        }
    }

    /// An optional query parameter that must be a date `YYYY-MM-DD`.
    pub fn query_date(&mut self, field: &str, value: Option<&str>) {
        if value.is_some_and(|v| parse_date(v).is_none()) {
            self.push_query(field, "must be a date as YYYY-MM-DD");
        }
    }

    pub fn one_of(&mut self, field: &str, value: Option<&str>, allowed: &[&str]) {
        if let Some(v) = value {
            if !allowed.contains(&v) {
                self.push(field, format!("must be one of: {}", allowed.join(", ")));
            }
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}

pub fn parse_date(v: &str) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()
}

/// Trims an optional text and turns blank into `None`.
pub fn clean(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_report_every_field() {
        let mut c = Checks::new();
        c.text("name", " ", 1, 10);
        c.range_i64("difficulty", Some(6), 1, 5);
        c.range_f64("weight", Some(0.0), 0.0, 500.0, true);
        c.range_f64("weight2", Some(f64::NAN), 0.0, 500.0, true);
        c.date("date", Some("2024-02-30"));
        c.one_of("kind", Some("x"), &["a", "b"]);
        Page {
            limit: 1000,
            offset: -1,
        }
        .check(&mut c);
        let ApiError::Validation(errors) = c.finish().unwrap_err() else {
            panic!()
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.loc[1].as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "difficulty",
                "weight",
                "weight2",
                "date",
                "kind",
                "limit",
                "offset"
            ]
        );
    }

    #[test]
    fn good_values_pass() {
        let mut c = Checks::new();
        c.text("name", "Squat", 1, 10);
        c.range_i64("difficulty", Some(5), 1, 5);
        c.range_f64("weight", Some(80.5), 0.0, 500.0, true);
        c.date("date", Some("2024-02-29"));
        Page::default().check(&mut c);
        assert!(c.finish().is_ok());
    }
}
