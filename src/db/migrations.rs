//! Versioned schema migrations, applied in order at start-up inside one write transaction
//! each. A migration is never edited once released: add a new file instead.

use rusqlite::{Connection, TransactionBehavior};

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
];

pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
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
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL
         )",
    )?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
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
}
