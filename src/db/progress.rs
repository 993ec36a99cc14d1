//! Typed queries on `weight_entries`, a client's weigh-ins. Every statement is
//! parameterised.

use super::sql::{params, Conn, OptionalExtension, Row};
use serde::Serialize;

use super::users::now;
use super::DbError;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WeightEntry {
    pub id: i64,
    pub client_id: i64,
    #[schema(format = Date)]
    pub date: String,
    /// Kilograms.
    pub weight: f64,
    pub photo_path: Option<String>,
    pub notes: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// The columns [`from_row`] reads, in its order; a macro so statements are literals
/// (`concat!`), not a `format!` per call (issue 19: `find` follows every weigh-in).
macro_rules! columns {
    () => {
        "id, client_id, date, weight, photo_path, notes, created_at"
    };
}

fn from_row(r: &Row) -> Result<WeightEntry, DbError> {
    Ok(WeightEntry {
        id: r.get(0)?,
        client_id: r.get(1)?,
        date: r.get(2)?,
        weight: r.get(3)?,
        photo_path: r.get(4)?,
        notes: r.get(5)?,
        created_at: r.get(6)?,
    })
}

pub fn insert(
    c: &Conn,
    client_id: i64,
    date: &str,
    weight: f64,
    photo_path: Option<&str>,
    notes: Option<&str>,
) -> Result<WeightEntry, DbError> {
    let id = c
        .prepare_cached(
            "INSERT INTO weight_entries (client_id, date, weight, photo_path, notes, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .insert(params![client_id, date, weight, photo_path, notes, now()])?;
    find(c, id)?.ok_or(DbError::NoRows)
}

pub fn find(c: &Conn, id: i64) -> Result<Option<WeightEntry>, DbError> {
    c.prepare_cached(concat!(
        "SELECT ",
        columns!(),
        " FROM weight_entries WHERE id = ?1"
    ))?
    .query_row([id], from_row)
    .optional()
}

/// One client's entries in a date range (inclusive), oldest first.
pub fn list(
    c: &Conn,
    client_id: i64,
    from: Option<&str>,
    to: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<WeightEntry>, DbError> {
    let mut stmt = c.prepare_cached(concat!(
        "SELECT ",
        columns!(),
        " FROM weight_entries
         WHERE client_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR date >= ?2) AND (CAST(?3 AS TEXT) IS NULL OR date <= ?3)
         ORDER BY date, id LIMIT ?4 OFFSET ?5"
    ))?;
    let rows = stmt.query_map(params![client_id, from, to, limit, offset], from_row)?;
    rows.collect::<Result<_, _>>()
}

pub fn latest(c: &Conn, client_id: i64) -> Result<Option<WeightEntry>, DbError> {
    c.prepare_cached(concat!(
        "SELECT ",
        columns!(),
        " FROM weight_entries WHERE client_id = ?1 ORDER BY date DESC, id DESC LIMIT 1"
    ))?
    .query_row([client_id], from_row)
    .optional()
}

pub fn delete(c: &Conn, id: i64) -> Result<bool, DbError> {
    Ok(c.execute("DELETE FROM weight_entries WHERE id = ?1", [id])? > 0)
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct WeightSummary {
    pub client_id: i64,
    pub entries: i64,
    #[schema(format = Date)]
    pub start_date: Option<String>,
    #[schema(format = Date)]
    pub end_date: Option<String>,
    pub starting_weight: Option<f64>,
    pub current_weight: Option<f64>,
    pub change: Option<f64>,
    pub min_weight: Option<f64>,
    pub max_weight: Option<f64>,
    pub average_weight: Option<f64>,
    pub target_weight: Option<f64>,
    pub remaining_to_target: Option<f64>,
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// First and last entry, extremes and average over a date range, against the target of
/// the client's profile.
pub fn summary(
    c: &Conn,
    client_id: i64,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<WeightSummary, DbError> {
    const RANGE: &str =
        "client_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR date >= ?2) AND (CAST(?3 AS TEXT) IS NULL OR date <= ?3)";
    let mut summary = c
        .prepare_cached(&format!(
            "SELECT count(*), min(date), max(date), min(weight), max(weight), avg(weight)
             FROM weight_entries WHERE {RANGE}"
        ))?
        .query_row(params![client_id, from, to], |r| {
            Ok(WeightSummary {
                client_id,
                entries: r.get(0)?,
                start_date: r.get(1)?,
                end_date: r.get(2)?,
                starting_weight: None,
                current_weight: None,
                change: None,
                min_weight: r.get(3)?,
                max_weight: r.get(4)?,
                average_weight: r.get::<Option<f64>>(5)?.map(round1),
                target_weight: None,
                remaining_to_target: None,
            })
        })?;
    let edge = |order: &str| -> Result<Option<f64>, DbError> {
        c.prepare_cached(&format!(
            "SELECT weight FROM weight_entries WHERE {RANGE} ORDER BY date {order}, id {order} LIMIT 1"
        ))?
        .query_row(params![client_id, from, to], |r| r.get(0))
        .optional()
    };
    let starting_weight = edge("ASC")?;
    let current_weight = edge("DESC")?;
    let target_weight = super::profiles::client(c, client_id)?.target_weight;
    summary.change = starting_weight
        .zip(current_weight)
        .map(|(s, e)| round1(e - s));
    summary.remaining_to_target = current_weight
        .zip(target_weight)
        .map(|(w, t)| round1(w - t));
    summary.starting_weight = starting_weight;
    summary.current_weight = current_weight;
    summary.target_weight = target_weight;
    Ok(summary)
}
