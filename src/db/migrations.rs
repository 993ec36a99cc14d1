//! Versioned schema migrations, applied in order at start-up inside one write transaction
//! each. A migration is never edited once released: add a new file instead.
//!
//! Foreign keys are off while a migration runs, so a migration may rebuild a table in place
//! (create a copy, move the rows, drop the old, rename: SQLite's documented way to change a
//! column's definition) without the drop cascading into the tables that reference it.
//! `PRAGMA foreign_key_check` runs before each commit, so a migration that would leave a
//! dangling reference rolls back instead.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::sql::{params, Backend, Conn};
use super::DbError;

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first. Versions are consecutive from 1.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "users",
        sql: include_str!("migrations/0001_users.sql"),
    },
    Migration {
        version: 2,
        name: "domain",
        sql: include_str!("migrations/0002_domain.sql"),
    },
    Migration {
        version: 3,
        name: "ids_never_reused",
        sql: include_str!("migrations/0003_ids_never_reused.sql"),
    },
    Migration {
        version: 4,
        name: "trainer_invitations",
        sql: include_str!("migrations/0004_trainer_invitations.sql"),
    },
    Migration {
        version: 5,
        name: "notifications_newest_first",
        sql: include_str!("migrations/0005_notifications_newest_first.sql"),
    },
];

/// The PostgreSQL migrations (issue 16), numbered on their own: version 1 is the whole
/// schema of SQLite's version 4.
pub const PG_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "schema",
        sql: include_str!("migrations/pg/0001_schema.sql"),
    },
    Migration {
        version: 2,
        name: "throttle",
        sql: include_str!("migrations/pg/0002_throttle.sql"),
    },
    Migration {
        version: 3,
        name: "notifications_newest_first",
        sql: include_str!("migrations/pg/0003_notifications_newest_first.sql"),
    },
];

pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The migrations of a backend.
pub fn migrations_for(backend: Backend) -> &'static [Migration] {
    match backend {
        Backend::Sqlite => MIGRATIONS,
        Backend::Postgresql => PG_MIGRATIONS,
    }
}

pub fn latest_for(backend: Backend) -> i64 {
    migrations_for(backend).last().map_or(0, |m| m.version)
}

/// The applied version on either backend; 0 for an empty database.
pub fn applied_version(c: &Conn) -> Result<i64, DbError> {
    let exists = match c.backend() {
        Backend::Sqlite => c.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
            (),
            |r| r.get::<i64>(0),
        )?,
        Backend::Postgresql => c.query_row(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = 'schema_migrations'",
            (),
            |r| r.get::<i64>(0),
        )?,
    };
    if exists == 0 {
        return Ok(0);
    }
    c.query_row(
        "SELECT CAST(coalesce(max(version), 0) AS BIGINT) FROM schema_migrations",
        (),
        |r| r.get(0),
    )
}

/// The migrations not applied yet, oldest first.
pub fn pending(c: &Conn) -> Result<Vec<&'static Migration>, DbError> {
    let applied = applied_version(c)?;
    Ok(migrations_for(c.backend())
        .iter()
        .filter(|m| m.version > applied)
        .collect())
}

/// Brings either backend to its latest version; the versions applied.
pub fn migrate_any(c: &mut Conn) -> Result<Vec<i64>, DbError> {
    match c {
        Conn::Sqlite(s) => migrate(s),
        Conn::Pg(_) => migrate_pg(c),
    }
}

/// PostgreSQL: every pending migration in one transaction (DDL is transactional there, so
/// a failure leaves nothing half-migrated), under the advisory lock every write
/// transaction takes ([`Conn::transaction`]), so replicas starting together apply each
/// migration once.
fn migrate_pg(c: &Conn) -> Result<Vec<i64>, DbError> {
    let tx = c.transaction()?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL
         )",
    )?;
    let applied = applied_version(&tx)?;
    let mut done = Vec::new();
    for m in PG_MIGRATIONS.iter().filter(|m| m.version > applied) {
        tx.execute_batch(m.sql).map_err(|e| {
            DbError::Migration(format!("migration {} ({}) failed: {e}", m.version, m.name))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, chrono::Utc::now().to_rfc3339()],
        )?;
        done.push(m.version);
    }
    tx.commit()?;
    Ok(done)
}

pub fn current_version(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?)
}

/// Brings the schema to the latest version. Safe to run from several processes at once:
/// the IMMEDIATE transaction serialises them and each re-reads the version inside it.
pub fn migrate(conn: &mut Connection) -> Result<Vec<i64>, DbError> {
    migrate_to(conn, latest_version())
}

/// Applies the migrations up to and including `target`; tests use it to build a database
/// with an older schema.
pub fn migrate_to(conn: &mut Connection, target: i64) -> Result<Vec<i64>, DbError> {
    // A no-op inside a transaction, so it is set here and restored after.
    let foreign_keys: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", false)?;
    super::trace_slow_statements(conn, false);
    let result = apply(conn, target);
    super::trace_slow_statements(conn, true);
    conn.pragma_update(None, "foreign_keys", foreign_keys)?;
    result
}

fn apply(conn: &mut Connection, target: i64) -> Result<Vec<i64>, DbError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL
         )",
    )?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version <= target) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [migration.version],
            |r| r.get(0),
        )?;
        if !done {
            tx.execute_batch(migration.sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![
                    migration.version,
                    migration.name,
                    chrono::Utc::now().to_rfc3339()
                ],
            )?;
            let dangling: Option<String> = tx
                .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                .optional()?;
            if let Some(table) = dangling {
                return Err(DbError::Migration(format!(
                    "migration {} ({}) would leave a row of {table} pointing at a missing row",
                    migration.version, migration.name
                )));
            }
            applied.push(migration.version);
        }
        tx.commit()?;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
        }
    }

    #[test]
    fn migrate_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap().len(), MIGRATIONS.len());
        assert!(migrate(&mut conn).unwrap().is_empty());
        assert_eq!(current_version(&conn).unwrap(), latest_version());
    }

    /// A database made with the schema before version 3 keeps every row and every link,
    /// its users get fresh token epochs, and a deleted user's id is not handed out again.
    #[test]
    fn ids_never_reused_migrates_an_old_database_in_place() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        assert_eq!(migrate_to(&mut conn, 2).unwrap(), [1, 2]);
        conn.execute_batch(
            "INSERT INTO users (id, username, email, full_name, password_hash, role,
                                trainer_id, token_version, created_at)
             VALUES (1, 'coach', 'coach@example.com', 'C', 'h', 'TRAINER', NULL, 0, 't'),
                    (2, 'ann', 'ann@example.com', 'A', 'h', 'CLIENT', 1, 3, 't'),
                    (3, 'bob', 'bob@example.com', 'B', 'h', 'CLIENT', 1, 0, 't');
             INSERT INTO client_profiles (user_id, goals) VALUES (2, 'run');
             INSERT INTO workout_plans (id, trainer_id, client_id, name, created_at)
             VALUES (7, 1, 2, 'plan', 't');
             INSERT INTO notifications (recipient_id, sender_id, title, message, type, created_at)
             VALUES (2, 1, 'hi', 'm', 'info', 't');
             INSERT INTO files (kind, name, owner_id, content_type, size, created_at)
             VALUES ('document', 'x.pdf', 2, 'application/pdf', 10, 't');
             DELETE FROM users WHERE id = 3;",
        )
        .unwrap();

        let indexes_before = index_names(&conn);
        assert_eq!(migrate_to(&mut conn, 3).unwrap(), [3]);
        let fk: bool = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert!(fk, "foreign keys are back on after migrating");
        let rows: Vec<(i64, String, Option<i64>, i64)> = conn
            .prepare("SELECT id, username, trainer_id, token_epoch FROM users ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows.iter()
                .map(|(id, name, t, _)| (*id, name.as_str(), *t))
                .collect::<Vec<_>>(),
            [(1, "coach", None), (2, "ann", Some(1))]
        );
        assert!(
            rows.iter().all(|(_, _, _, epoch)| ![0, 3].contains(epoch)),
            "old token versions are replaced by random epochs: {rows:?}"
        );
        let counts: (i64, i64, i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM client_profiles),
                        (SELECT count(*) FROM workout_plans WHERE id = 7 AND client_id = 2),
                        (SELECT count(*) FROM notifications),
                        (SELECT count(*) FROM files)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(counts, (1, 1, 1, 1));
        assert_eq!(index_names(&conn), indexes_before, "every index is rebuilt");

        // Cascades still work on the rebuilt tables, and ids move on past deleted rows.
        conn.execute("DELETE FROM users WHERE id = 2", []).unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT (SELECT count(*) FROM workout_plans) + (SELECT count(*) FROM files)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
        conn.execute(
            "INSERT INTO users (username, email, full_name, password_hash, role, created_at)
             VALUES ('cid', 'cid@example.com', 'C', 'h', 'CLIENT', 't')",
            [],
        )
        .unwrap();
        // An id freed before the migration can be handed out once more (SQLite's counter
        // starts at the largest id left); the new row's random epoch still refuses the old
        // row's tokens. From here on, ids only grow.
        assert_eq!(conn.last_insert_rowid(), 3);
        conn.execute("DELETE FROM users WHERE id = 3", []).unwrap();
        conn.execute(
            "INSERT INTO users (username, email, full_name, password_hash, role, created_at)
             VALUES ('dee', 'dee@example.com', 'D', 'h', 'CLIENT', 't')",
            [],
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), 4, "id 3 is not reused");
    }

    fn index_names(conn: &Connection) -> Vec<String> {
        conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }
}
