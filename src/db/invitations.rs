//! Typed queries on `trainer_invitations`: a trainer's offer to coach a client, pending
//! until the client accepts or declines it. Every statement is parameterised.

use super::sql::{params, Conn};
use serde::Serialize;

use super::users::now;
use super::DbError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Invitation {
    pub client_id: i64,
    pub trainer_id: i64,
    /// The inviting trainer's full name, for the client to decide.
    pub trainer_name: String,
    /// RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// Records (or renews) `trainer_id`'s invitation to `client_id`.
pub fn invite(c: &Conn, client_id: i64, trainer_id: i64) -> Result<Invitation, DbError> {
    c.execute(
        "INSERT INTO trainer_invitations (client_id, trainer_id, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (client_id, trainer_id) DO UPDATE SET created_at = excluded.created_at",
        params![client_id, trainer_id, now()],
    )?;
    for_client(c, client_id)?
        .into_iter()
        .find(|i| i.trainer_id == trainer_id)
        .ok_or(DbError::NoRows)
}

/// The client's pending invitations, newest first.
pub fn for_client(c: &Conn, client_id: i64) -> Result<Vec<Invitation>, DbError> {
    let mut stmt = c.prepare_cached(
        "SELECT i.client_id, i.trainer_id, u.full_name, i.created_at
         FROM trainer_invitations i JOIN users u ON u.id = i.trainer_id
         WHERE i.client_id = ?1 ORDER BY i.created_at DESC, i.trainer_id",
    )?;
    let rows = stmt.query_map([client_id], |r| {
        Ok(Invitation {
            client_id: r.get(0)?,
            trainer_id: r.get(1)?,
            trainer_name: r.get(2)?,
            created_at: r.get(3)?,
        })
    })?;
    rows.collect::<Result<_, _>>()
}

/// Removes one invitation; `false` if there was none.
pub fn remove(c: &Conn, client_id: i64, trainer_id: i64) -> Result<bool, DbError> {
    Ok(c.execute(
        "DELETE FROM trainer_invitations WHERE client_id = ?1 AND trainer_id = ?2",
        [client_id, trainer_id],
    )? > 0)
}

/// Removes every invitation to the client (they now have a trainer).
pub fn clear(c: &Conn, client_id: i64) -> Result<(), DbError> {
    c.execute(
        "DELETE FROM trainer_invitations WHERE client_id = ?1",
        [client_id],
    )?;
    Ok(())
}
