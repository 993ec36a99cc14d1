//! Typed queries on `files`, the record of every stored upload and its owner (the client
//! whose data it is). Every statement is parameterised.

use super::sql::{params, Conn, OptionalExtension};
use serde::Serialize;

use super::users::now;
use super::DbError;
use crate::files::Kind;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileRecord {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub owner_id: i64,
    pub content_type: String,
    pub size: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
}

pub fn insert(
    c: &Conn,
    kind: Kind,
    name: &str,
    owner_id: i64,
    content_type: &str,
    size: i64,
) -> Result<FileRecord, DbError> {
    c.execute(
        "INSERT INTO files (kind, name, owner_id, content_type, size, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![kind.as_str(), name, owner_id, content_type, size, now()],
    )?;
    find(c, kind, name)?.ok_or(DbError::NoRows)
}

pub fn find(c: &Conn, kind: Kind, name: &str) -> Result<Option<FileRecord>, DbError> {
    c.prepare_cached(
        "SELECT id, kind, name, owner_id, content_type, size, created_at
         FROM files WHERE kind = ?1 AND name = ?2",
    )?
    .query_row(params![kind.as_str(), name], |r| {
        Ok(FileRecord {
            id: r.get(0)?,
            kind: r.get(1)?,
            name: r.get(2)?,
            owner_id: r.get(3)?,
            content_type: r.get(4)?,
            size: r.get(5)?,
            created_at: r.get(6)?,
        })
    })
    .optional()
}

pub fn delete(c: &Conn, kind: Kind, name: &str) -> Result<bool, DbError> {
    Ok(c.execute(
        "DELETE FROM files WHERE kind = ?1 AND name = ?2",
        params![kind.as_str(), name],
    )? > 0)
}

/// Whether a record still points at the file `url` (a meal photo, a weigh-in's photo or
/// a completion's form photo); such a file is deleted through its record, not directly.
pub fn is_referenced(c: &Conn, url: &str) -> Result<bool, DbError> {
    c.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM meal_uploads WHERE image_path = ?1)
             OR EXISTS(SELECT 1 FROM weight_entries WHERE photo_path = ?1)
             OR EXISTS(SELECT 1 FROM exercise_completions WHERE form_photo_path = ?1)",
    )?
    .query_row([url], |r| r.get(0))
}

/// Every file a user owns, to remove from disk when the user goes.
pub fn owned_by(c: &Conn, owner_id: i64) -> Result<Vec<(Kind, String)>, DbError> {
    let mut stmt = c.prepare_cached("SELECT kind, name FROM files WHERE owner_id = ?1")?;
    let rows = stmt.query_map([owner_id], |r| {
        Ok((r.get::<String>(0)?, r.get::<String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, name) = row?;
        if let Some(k) = Kind::parse(&kind) {
            out.push((k, name));
        }
    }
    Ok(out)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KindStats {
    #[serde(rename = "type")]
    pub kind: String,
    pub files: i64,
    pub bytes: i64,
}

pub fn stats(c: &Conn) -> Result<Vec<KindStats>, DbError> {
    let mut stmt = c.prepare_cached(
        "SELECT kind, count(*), CAST(coalesce(sum(size), 0) AS BIGINT) FROM files GROUP BY kind ORDER BY kind",
    )?;
    let rows = stmt.query_map((), |r| {
        Ok(KindStats {
            kind: r.get(0)?,
            files: r.get(1)?,
            bytes: r.get(2)?,
        })
    })?;
    rows.collect::<Result<_, _>>()
}
