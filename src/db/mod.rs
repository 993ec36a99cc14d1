//! The SQLite database: a pool of WAL-mode connections, schema migrations, and typed
//! queries (one module per table family).
//!
//! SQLite calls block, so every query from the server goes through [`Db::call`], which runs
//! it on Tokio's blocking pool and never on the async workers. This is the fix for the
//! original service, whose sync ORM calls inside async handlers stalled the event loop and
//! deadlocked under 64 concurrent clients.

pub mod files;
pub mod invitations;
pub mod meals;
pub mod migrations;
pub mod notifications;
pub mod profiles;
pub mod progress;
pub mod users;
pub mod workouts;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::trace::{TraceEvent, TraceEventCodes};
use rusqlite::Connection;

/// Pool size from the foundation issue: enough for 2 cores with blocking I/O in flight.
pub const POOL_SIZE: u32 = 20;
/// How long a writer waits for another writer's lock before SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiting writer tries the lock again.
const BUSY_POLL: Duration = Duration::from_micros(500);
/// How long a request waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// Statements slower than this are logged with their SQL.
const SLOW_QUERY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no database connection free within {0:?}")]
    PoolTimeout(Duration),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("database task panicked or was cancelled")]
    Task,
    #[error("{0}")]
    Migration(String),
}

impl DbError {
    /// The column of a UNIQUE constraint this error violated, e.g. `users.email`.
    pub fn unique_violation(&self) -> Option<&str> {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, Some(msg)))
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                msg.strip_prefix("UNIQUE constraint failed: ")
            }
            _ => None,
        }
    }
}

/// A cheaply cloneable handle to the pool.
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<SqliteConnectionManager>,
    path: Arc<Path>,
    /// Device and inode of the file when opened. If the path later names another file
    /// (deleted, or replaced by a careless restore), our connections still write to the
    /// old inode and every write would be lost at restart; `/health` reports that.
    file_id: (u64, u64),
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PoolStats {
    pub size: u32,
    pub max_size: u32,
    pub idle: u32,
    pub in_use: u32,
}

impl Db {
    /// Opens (creating if needed) the database file and its directory, applies the
    /// connection settings, and migrates the schema to the latest version.
    pub fn open(path: &Path) -> Result<Db> {
        Self::open_with_pool_size(path, POOL_SIZE)
    }

    pub fn open_with_pool_size(path: &Path, pool_size: u32) -> Result<Db> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("failed to create database directory {}", dir.display())
            })?;
        }
        // Open and migrate once by hand first, so a bad file gives one clear error rather
        // than a pool that fails to fill.
        let mut conn = Connection::open(path)
            .and_then(|c| configure(&c).map(|_| c))
            .with_context(|| open_hint(path))?;
        migrations::migrate(&mut conn).with_context(|| open_hint(path))?;
        drop(conn);

        let manager = SqliteConnectionManager::file(path).with_init(|c| configure(c));
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .connection_timeout(POOL_WAIT)
            .build(manager)
            .with_context(|| open_hint(path))?;
        let file_id = file_id(path).with_context(|| open_hint(path))?;
        Ok(Db {
            pool,
            path: Arc::from(path),
            file_id,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks that the database path still names the file the pool has open.
    pub fn check_file(&self) -> Result<(), &'static str> {
        match file_id(&self.path) {
            Ok(id) if id == self.file_id => Ok(()),
            Ok(_) => Err("database file was replaced while the server runs; restart elior serve"),
            Err(_) => {
                Err("database file is missing; it was deleted or moved while the server runs")
            }
        }
    }

    /// Runs `f` with a pooled connection on the blocking thread pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        // The caller's span (a request's id, method and route) goes with the work, so a
        // slow-query warning from the blocking thread names the request it slowed.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            let mut conn = pool
                .get_timeout(POOL_WAIT)
                .map_err(|_| DbError::PoolTimeout(POOL_WAIT))?;
            f(&mut conn)
        })
        .await
        .map_err(|_| DbError::Task)?
    }

    /// Runs `f` with a connection on the current thread; for CLI commands, not the server.
    pub fn blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut conn = self
            .pool
            .get_timeout(POOL_WAIT)
            .map_err(|_| DbError::PoolTimeout(POOL_WAIT))?;
        f(&mut conn)
    }

    pub fn pool_stats(&self) -> PoolStats {
        let state = self.pool.state();
        PoolStats {
            size: state.connections,
            max_size: self.pool.max_size(),
            idle: state.idle_connections,
            in_use: state.connections - state.idle_connections,
        }
    }

    /// Folds the WAL back into the main file and truncates it; run at shutdown so the file
    /// on disk is complete on its own (for backups and copies made while stopped).
    pub fn checkpoint(&self) -> Result<(), DbError> {
        self.blocking(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }
}

fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

fn open_hint(path: &Path) -> String {
    format!(
        "failed to open database {}\ncheck that the file is a SQLite database and that its directory is writable",
        path.display()
    )
}

/// Per-connection settings. WAL lets readers run beside the one writer; NORMAL
/// synchronous is durable across application crashes in WAL mode and much faster than FULL.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_handler(Some(wait_for_writer))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.trace_v2(
        TraceEventCodes::SQLITE_TRACE_PROFILE,
        Some(log_slow_statement),
    );
    Ok(())
}

/// Polls for the write lock every [`BUSY_POLL`] for up to [`BUSY_TIMEOUT`] (issue 19).
/// SQLite's own busy timeout sleeps 1, 2, 5, 10 ... then 100 ms between tries, so under
/// many writers a write waited up to 100 ms for a lock that another write (well under a
/// millisecond in WAL mode) had long released: most of the write tail, and the
/// slow-query warnings, at 256 and more concurrent clients.
fn wait_for_writer(tries: i32) -> bool {
    let waited = BUSY_POLL * tries.max(0) as u32;
    if waited >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(BUSY_POLL);
    true
}

fn log_slow_statement(event: TraceEvent<'_>) {
    if let TraceEvent::Profile(stmt, duration) = event {
        if duration >= SLOW_QUERY {
            // The unexpanded SQL: bound parameters may be password hashes or personal data.
            tracing::warn!(
                sql = %stmt.sql(),
                duration_ms = duration.as_millis() as u64,
                "slow query"
            );
        }
    }
}

/// Facts about the database file for `/status/database` and `doctor`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DatabaseStatus {
    pub journal_mode: String,
    pub schema_version: i64,
    pub file_size_bytes: u64,
    pub wal_size_bytes: u64,
}

pub fn status(conn: &Connection, path: &Path) -> Result<DatabaseStatus, DbError> {
    let journal_mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    let schema_version = migrations::current_version(conn)?;
    let file_size_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_size_bytes = std::fs::metadata(PathBuf::from(wal))
        .map(|m| m.len())
        .unwrap_or(0);
    Ok(DatabaseStatus {
        journal_mode,
        schema_version,
        file_size_bytes,
        wal_size_bytes,
    })
}

/// The query `/health` runs: it reads a real table, so a database that is locked, gone
/// or corrupt fails it (a bare `SELECT 1` would pass without touching the file).
pub fn ping(conn: &Connection) -> Result<(), DbError> {
    conn.query_row("SELECT count(*) FROM schema_migrations", [], |r| {
        r.get::<_, i64>(0)
    })?;
    Ok(())
}
