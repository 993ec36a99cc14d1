//! Typed queries on `users`. Every statement is parameterised.

use super::sql::{params, Conn, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::DbError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    Admin,
    Trainer,
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::Trainer => "TRAINER",
            Role::Client => "CLIENT",
        }
    }

    /// The role named in any case. Compared in place, not upper-cased into a new string:
    /// every user row read (one per authenticated request) parses its role.
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Admin, Role::Trainer, Role::Client]
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(s))
    }
}

/// A user row. `password_hash` never leaves the server: it is skipped when serialising.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub username: String,
    #[schema(format = Email)]
    pub email: String,
    pub full_name: String,
    pub role: Role,
    pub is_active: bool,
    pub trainer_id: Option<i64>,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub updated_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_login: Option<String>,
    #[serde(skip)]
    pub password_hash: String,
    /// A random number drawn at insert and redrawn to end every session; a token is valid
    /// only while it carries the current one (issue 15: ids and counters can repeat).
    #[serde(skip)]
    pub token_epoch: i64,
}

pub struct NewUser<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub full_name: &'a str,
    pub password_hash: &'a str,
    pub role: Role,
    pub trainer_id: Option<i64>,
}

/// The columns [`from_row`] reads, in its order. A macro, so a statement is one literal
/// (`concat!`) rather than a `format!` on every call: `find_by_id` runs on every
/// authenticated request (issue 19).
macro_rules! columns {
    () => {
        "id, username, email, full_name, role, is_active, trainer_id, created_at, \
         updated_at, last_login, password_hash, token_epoch"
    };
}

/// The role in column `i`, refused by name when the row holds no known role.
fn role_at(row: &Row, i: usize) -> Result<Role, DbError> {
    let role: String = row.get(i)?;
    Role::parse(&role).ok_or_else(|| DbError::Conversion(format!("{role:?} is not a role")))
}

fn from_row(row: &Row) -> Result<User, DbError> {
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        email: row.get(2)?,
        full_name: row.get(3)?,
        role: role_at(row, 4)?,
        is_active: row.get(5)?,
        trainer_id: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
        last_login: row.get(9)?,
        password_hash: row.get(10)?,
        token_epoch: row.get(11)?,
    })
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A fresh token epoch, drawn here rather than by SQL so both backends draw the same way.
fn new_epoch() -> i64 {
    rand::random()
}

pub fn insert(conn: &Conn, new: &NewUser<'_>) -> Result<User, DbError> {
    let id = conn.insert(
        "INSERT INTO users (username, email, full_name, password_hash, role, trainer_id, created_at, token_epoch)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            new.username,
            new.email,
            new.full_name,
            new.password_hash,
            new.role.as_str(),
            new.trainer_id,
            now(),
            new_epoch()
        ],
    )?;
    find_by_id(conn, id)?.ok_or(DbError::NoRows)
}

pub fn find_by_id(conn: &Conn, id: i64) -> Result<Option<User>, DbError> {
    conn.prepare_cached(concat!("SELECT ", columns!(), " FROM users WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()
}

/// A user's role and trainer, or `None` when there is no such user: what authorization
/// asks of a client named in a request, without the rest of the row.
pub fn role_and_trainer(conn: &Conn, id: i64) -> Result<Option<(Role, Option<i64>)>, DbError> {
    conn.prepare_cached("SELECT role, trainer_id FROM users WHERE id = ?1")?
        .query_row([id], |row| Ok((role_at(row, 0)?, row.get(1)?)))
        .optional()
}

/// Finds a user by username or, as the original API allowed, by email.
pub fn find_by_login(conn: &Conn, login: &str) -> Result<Option<User>, DbError> {
    conn.prepare_cached(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE username = ?1 OR email = ?1 LIMIT 1"
    ))?
    .query_row([login], from_row)
    .optional()
}

pub fn count_admins(conn: &Conn) -> Result<i64, DbError> {
    conn.query_row("SELECT count(*) FROM users WHERE role = 'ADMIN'", (), |r| {
        r.get(0)
    })
}

/// Stores a new password hash and ends every session: the token epoch is redrawn.
pub fn set_password(conn: &Conn, id: i64, password_hash: &str) -> Result<(), DbError> {
    conn.execute(
        "UPDATE users SET password_hash = ?2, token_epoch = ?4, updated_at = ?3
         WHERE id = ?1",
        params![id, password_hash, now(), new_epoch()],
    )?;
    Ok(())
}

/// Ends every session of the user (logout from every device); `false` if no such user.
pub fn end_sessions(conn: &Conn, id: i64) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE users SET token_epoch = ?2 WHERE id = ?1",
        params![id, new_epoch()],
    )? > 0)
}

pub fn touch_last_login(conn: &Conn, id: i64) -> Result<(), DbError> {
    conn.execute(
        "UPDATE users SET last_login = ?2 WHERE id = ?1",
        params![id, now()],
    )?;
    Ok(())
}

/// Which users a list shows; `None` fields don't filter.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserFilter {
    pub role: Option<Role>,
    pub trainer_id: Option<i64>,
}

pub fn list(
    conn: &Conn,
    filter: UserFilter,
    limit: i64,
    offset: i64,
) -> Result<Vec<User>, DbError> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        columns!(),
        " FROM users
         WHERE (CAST(?1 AS TEXT) IS NULL OR role = ?1) AND (CAST(?2 AS BIGINT) IS NULL OR trainer_id = ?2)
         ORDER BY id LIMIT ?3 OFFSET ?4"
    ))?;
    let rows = stmt.query_map(
        params![
            filter.role.map(Role::as_str),
            filter.trainer_id,
            limit,
            offset
        ],
        from_row,
    )?;
    rows.collect::<Result<_, _>>()
}

/// Changes to an account; `None` leaves a column as it is.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub is_active: Option<bool>,
}

pub fn update(conn: &Conn, id: i64, ch: &UserChanges) -> Result<(), DbError> {
    conn.execute(
        "UPDATE users SET email = coalesce(?2, email), full_name = coalesce(?3, full_name),
                is_active = coalesce(?4, is_active), updated_at = ?5
         WHERE id = ?1",
        params![id, ch.email, ch.full_name, ch.is_active, now()],
    )?;
    Ok(())
}

pub fn set_trainer(conn: &Conn, client_id: i64, trainer_id: Option<i64>) -> Result<(), DbError> {
    conn.execute(
        "UPDATE users SET trainer_id = ?2, updated_at = ?3 WHERE id = ?1",
        params![client_id, trainer_id, now()],
    )?;
    Ok(())
}

pub fn count_clients_of(conn: &Conn, trainer_id: i64) -> Result<i64, DbError> {
    conn.query_row(
        "SELECT count(*) FROM users WHERE trainer_id = ?1",
        [trainer_id],
        |r| r.get(0),
    )
}

/// Deletes the account; its client-owned rows go with it (ON DELETE CASCADE).
pub fn delete(conn: &Conn, id: i64) -> Result<bool, DbError> {
    Ok(conn.execute("DELETE FROM users WHERE id = ?1", [id])? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Conn {
        Conn::memory()
    }

    fn new<'a>(name: &'a str, email: &'a str) -> NewUser<'a> {
        NewUser {
            username: name,
            email,
            full_name: "Test User",
            password_hash: "x",
            role: Role::Client,
            trainer_id: None,
        }
    }

    #[test]
    fn login_by_username_or_email_case_insensitively() {
        let c = db();
        let u = insert(&c, &new("Alice", "alice@example.com")).unwrap();
        assert_eq!(find_by_login(&c, "alice").unwrap().unwrap().id, u.id);
        assert_eq!(
            find_by_login(&c, "ALICE@example.com").unwrap().unwrap().id,
            u.id
        );
        assert!(find_by_login(&c, "bob").unwrap().is_none());
    }

    #[test]
    fn duplicate_email_names_the_column() {
        let c = db();
        insert(&c, &new("a", "same@example.com")).unwrap();
        let err = insert(&c, &new("b", "SAME@example.com")).unwrap_err();
        assert_eq!(err.unique_violation(), Some("users.email"));
    }

    #[test]
    fn password_change_and_logout_redraw_the_epoch() {
        let c = db();
        let u = insert(&c, &new("a", "a@example.com")).unwrap();
        set_password(&c, u.id, "y").unwrap();
        let after_password = find_by_id(&c, u.id).unwrap().unwrap().token_epoch;
        assert_ne!(after_password, u.token_epoch);
        assert!(end_sessions(&c, u.id).unwrap());
        assert_ne!(
            find_by_id(&c, u.id).unwrap().unwrap().token_epoch,
            after_password
        );
        assert!(!end_sessions(&c, u.id + 1).unwrap());
    }

    #[test]
    fn a_deleted_id_is_never_handed_out_again() {
        let c = db();
        let a = insert(&c, &new("a", "a@example.com")).unwrap();
        assert!(delete(&c, a.id).unwrap());
        let b = insert(&c, &new("b", "b@example.com")).unwrap();
        assert!(b.id > a.id, "id {} reused", a.id);
        assert_ne!(a.token_epoch, b.token_epoch);
    }
}
