//! `elior db copy` (issue 16): moves a SQLite database's rows into PostgreSQL.
//!
//! Atomic: the target's rows are written, its identity sequences moved past the copied
//! ids, and every table's row count and checksum compared with the source, all in one
//! PostgreSQL transaction; any failure or mismatch rolls it back and leaves the target as
//! it was. The source is read inside one SQLite read transaction, so a live server may
//! keep writing: the copy is of one consistent moment. A target that already holds rows
//! is refused unless `force`, which empties it in the same transaction first.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rusqlite::OpenFlags;
use sha2::{Digest, Sha256};

use super::pg::PgUrl;
use super::sql::{Conn, Row, SqliteConn, Value};
use super::{migrations, Backend, Db, DbError, Target};

/// Every table, parents before children.
pub const TABLES: &[&str] = &[
    "users",
    "trainer_profiles",
    "client_profiles",
    "exercises",
    "workout_plans",
    "workout_sessions",
    "workout_exercises",
    "exercise_completions",
    "weight_entries",
    "notifications",
    "meal_plans",
    "meal_entries",
    "meal_components",
    "meal_uploads",
    "files",
    "trainer_invitations",
];

/// Columns that point into their own table: written after every row is in.
const SELF_REFERENCES: &[(&str, &str)] = &[("users", "trainer_id")];

/// What was copied, per table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableCopy {
    pub table: &'static str,
    pub rows: usize,
    /// SHA-256 of the table's rows in key order (first 16 hex digits).
    pub checksum: String,
}

/// Opens an elior SQLite database read-only, refusing anything else.
pub fn open_source(path: &Path) -> Result<Conn> {
    if !path.is_file() {
        bail!(
            "no SQLite database at {}\ncheck the path given to --from",
            path.display()
        );
    }
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("failed to open {}", path.display()))?;
    let conn = Conn::Sqlite(SqliteConn::Owned(conn));
    let not_elior = |why: &str| {
        anyhow::anyhow!(
            "{} is not an elior database ({why})\n--from must name the API's SQLite file, e.g. sqlite:/srv/elior/data/elior_fitness.db",
            path.display()
        )
    };
    let version = match migrations::applied_version(&conn) {
        Ok(0) => return Err(not_elior("it has no schema_migrations table")),
        Ok(v) => v,
        Err(DbError::Sqlite(e)) => return Err(not_elior(&e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let latest = migrations::latest_version();
    if version < latest {
        bail!(
            "{} is at schema version {version}, this elior expects {latest}\nmigrate it first: DATABASE_URL=sqlite:///{} elior db migrate",
            path.display(),
            path.display()
        );
    }
    if version > latest {
        bail!(
            "{} is at schema version {version}, newer than this elior ({latest})\nrun db copy with the elior that wrote it",
            path.display()
        );
    }
    Ok(conn)
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// (columns, key columns) of a table, from the SQLite schema.
fn columns(source: &Conn, table: &str) -> Result<(Vec<String>, Vec<String>), DbError> {
    let rows = source.query_rows(&format!("PRAGMA table_info(\"{table}\")"), ())?;
    let mut cols = Vec::new();
    let mut keys: Vec<(i64, String)> = Vec::new();
    for r in &rows {
        let name: String = r.get(1)?;
        let pk: i64 = r.get(5)?;
        if pk > 0 {
            keys.push((pk, name.clone()));
        }
        cols.push(name);
    }
    keys.sort();
    Ok((cols, keys.into_iter().map(|(_, n)| n).collect()))
}

fn select_all(
    c: &Conn,
    table: &str,
    cols: &[String],
    keys: &[String],
) -> Result<Vec<Row>, DbError> {
    c.query_rows(
        &format!(
            "SELECT {} FROM \"{table}\" ORDER BY {}",
            quoted(cols),
            quoted(keys)
        ),
        (),
    )
}

/// A checksum of rows that both backends give the same for the same data.
pub fn checksum(rows: &[Row]) -> String {
    let mut h = Sha256::new();
    for row in rows {
        for v in &row.values {
            match v {
                Value::Null => h.update([0u8]),
                Value::Int(i) => {
                    h.update([1u8]);
                    h.update(i.to_le_bytes());
                }
                Value::Real(f) => {
                    h.update([2u8]);
                    h.update(f.to_bits().to_le_bytes());
                }
                Value::Text(s) => {
                    h.update([3u8]);
                    h.update((s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
                Value::Blob(b) => {
                    h.update([4u8]);
                    h.update((b.len() as u64).to_le_bytes());
                    h.update(b);
                }
            }
        }
        h.update([0xffu8]);
    }
    hex::encode(&h.finalize()[..8])
}

/// Rows per table in the target, for the emptiness check.
pub fn target_rows(target: &Conn) -> Result<Vec<(&'static str, i64)>, DbError> {
    TABLES
        .iter()
        .map(|t| {
            let n: i64 =
                target.query_row(&format!("SELECT count(*) FROM \"{t}\""), (), |r| r.get(0))?;
            Ok((*t, n))
        })
        .collect()
}

/// Copies the elior SQLite database at `path` into the PostgreSQL database at `url`
/// (migrated first): `elior db copy`, and the copy step of `elior migrate-to-swarm`.
pub fn copy_file(path: &Path, url: &PgUrl, force: bool) -> Result<Vec<TableCopy>> {
    // The source first: a wrong path fails before any connection is made.
    drop(open_source(path)?);
    let path = path.to_path_buf();
    Db::session(
        &Target::Postgres(url.clone()),
        true,
        Duration::ZERO,
        move |db| {
            let source = open_source(&path)?;
            let mut result = None;
            db.blocking(|c| {
                result = Some(copy(&source, c, force));
                Ok(())
            })?;
            result.expect("the copy ran")
        },
    )
}

/// Rows in the tables of the PostgreSQL database at `url` (migrated first, so an empty
/// database counts 0): what tells an empty copy target from one in use.
pub fn rows_at(url: &PgUrl) -> Result<i64> {
    Db::session(&Target::Postgres(url.clone()), true, Duration::ZERO, |db| {
        Ok(db.blocking(|c| Ok(target_rows(c)?.iter().map(|(_, n)| n).sum()))?)
    })
}

/// Copies every table of `source` (an elior SQLite database) into `target` (a migrated
/// PostgreSQL database) in one transaction; see the module docs.
pub fn copy(source: &Conn, target: &Conn, force: bool) -> Result<Vec<TableCopy>> {
    if target.backend() != Backend::Postgresql {
        bail!("the copy target must be a PostgreSQL database");
    }
    source.execute_batch("BEGIN")?;
    let result = copy_in_tx(source, target, force);
    let _ = source.execute_batch("COMMIT");
    result
}

fn copy_in_tx(source: &Conn, target: &Conn, force: bool) -> Result<Vec<TableCopy>> {
    let tx = target.transaction()?;
    let present: Vec<_> = target_rows(&tx)?
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    if !present.is_empty() {
        if !force {
            let list = present
                .iter()
                .map(|(t, n)| format!("{t}: {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            bail!("the target database is not empty ({list})\ncopy into an empty database, or pass --force to replace its rows");
        }
        tx.execute_batch(&format!(
            "TRUNCATE {} RESTART IDENTITY CASCADE",
            TABLES
                .iter()
                .map(|t| format!("\"{t}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
    }
    let mut report = Vec::new();
    for &table in TABLES {
        let (cols, keys) = columns(source, table)?;
        let rows = select_all(source, table, &cols, &keys)?;
        let deferred: Vec<usize> = SELF_REFERENCES
            .iter()
            .filter(|(t, _)| *t == table)
            .filter_map(|(_, c)| cols.iter().position(|n| n == c))
            .collect();
        insert_rows(&tx, table, &cols, &rows, &deferred)
            .with_context(|| format!("failed to copy the rows of {table}"))?;
        for &i in &deferred {
            for row in rows.iter().filter(|r| r.values[i] != Value::Null) {
                tx.execute(
                    &format!(
                        "UPDATE \"{table}\" SET \"{}\" = ?1 WHERE \"{}\" = ?2",
                        cols[i], keys[0]
                    ),
                    vec![
                        row.values[i].clone(),
                        row.values[cols.iter().position(|n| *n == keys[0]).unwrap_or(0)].clone(),
                    ],
                )?;
            }
        }
        if cols.iter().any(|c| c == "id") && keys == ["id"] {
            // Past the highest id the source ever handed out, deleted rows included
            // (sqlite_sequence), so no id is ever reused (issue 15).
            let seq: i64 = source
                .query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .unwrap_or(0);
            let max: i64 = rows
                .iter()
                .filter_map(|r| r.get::<i64>(0).ok())
                .max()
                .unwrap_or(0);
            let next = seq.max(max);
            if next > 0 {
                tx.query_row(
                    &format!("SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), ?1)"),
                    [next],
                    |_| Ok(()),
                )?;
            }
        }
        // Verify: the same rows, in the same order, read back.
        let copied = select_all(&tx, table, &cols, &keys)?;
        let (want, got) = (checksum(&rows), checksum(&copied));
        if rows.len() != copied.len() || want != got {
            bail!(
                "verification failed for {table}: {} rows with checksum {want} in the source, {} with {got} in the target; nothing was copied",
                rows.len(),
                copied.len()
            );
        }
        report.push(TableCopy {
            table,
            rows: rows.len(),
            checksum: want,
        });
    }
    tx.commit()?;
    Ok(report)
}

/// Multi-row INSERTs of `rows`, with the `deferred` columns left NULL.
fn insert_rows(
    tx: &Conn,
    table: &str,
    cols: &[String],
    rows: &[Row],
    deferred: &[usize],
) -> Result<(), DbError> {
    // PostgreSQL takes up to 65535 parameters per statement.
    let per_statement = (30_000 / cols.len().max(1)).max(1);
    for chunk in rows.chunks(per_statement) {
        let mut values = Vec::with_capacity(chunk.len() * cols.len());
        let mut tuples = Vec::with_capacity(chunk.len());
        for row in chunk {
            let mut marks = Vec::with_capacity(cols.len());
            for (i, v) in row.values.iter().enumerate() {
                values.push(if deferred.contains(&i) {
                    Value::Null
                } else {
                    v.clone()
                });
                marks.push(format!("?{}", values.len()));
            }
            tuples.push(format!("({})", marks.join(", ")));
        }
        tx.execute(
            &format!(
                "INSERT INTO \"{table}\" ({}) VALUES {}",
                quoted(cols),
                tuples.join(", ")
            ),
            values,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_of_the_schema_is_copied() {
        let c = Conn::memory();
        let mut tables: Vec<String> = c
            .query_map(
                "SELECT name FROM sqlite_master WHERE type = 'table'
                 AND name NOT IN ('schema_migrations', 'sqlite_sequence')",
                (),
                |r| r.get(0),
            )
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        tables.sort();
        let mut ours: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
        ours.sort();
        assert_eq!(tables, ours);
    }

    #[test]
    fn checksums_see_every_value() {
        let row = |v: Value| Row {
            values: vec![Value::Int(1), v],
        };
        let a = checksum(&[row(Value::Text("1".into()))]);
        assert_ne!(a, checksum(&[row(Value::Int(1))]));
        assert_ne!(a, checksum(&[row(Value::Null)]));
        assert_eq!(a, checksum(&[row(Value::Text("1".into()))]));
    }
}
