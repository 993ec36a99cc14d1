//! The database: SQLite (the embedded default: a pool of WAL-mode connections) or
//! PostgreSQL (`DATABASE_URL=postgresql://…`, issue 16), schema migrations per backend,
//! and typed queries (one module per table family) written once over [`sql::Conn`].
//!
//! Queries block, so no query from the server runs on the async workers: a read goes
//! through [`Db::read`], on Tokio's blocking pool with a pooled connection (the fix for the
//! original service, whose sync ORM calls inside async handlers stalled the event loop and
//! deadlocked under 64 concurrent clients); a write through [`Db::write`], which on SQLite
//! queues it for the one writer connection ([`writer`], issue 19) and on PostgreSQL runs it
//! like a read.

pub mod copy;
pub mod files;
pub mod invitations;
pub mod meals;
pub mod migrations;
pub mod notifications;
pub mod pg;
pub mod profiles;
pub mod progress;
pub mod sql;
pub mod throttle;
pub mod users;
pub mod workouts;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::config::DbConfig;
use rusqlite::trace::{TraceEvent, TraceEventCodes};
use rusqlite::Connection;

pub use sql::{Backend, Conn, OptionalExtension, Row};

/// PostgreSQL's pool size, from the foundation issue: its queries wait on the network and
/// on the database server, so more of them are in flight than there are cores.
pub const POOL_SIZE: u32 = 20;
/// SQLite's read connections (issue 19). A read is CPU work on this host's own cores, so a
/// few connections keep them busy; each connection holds its own schema, prepared
/// statements, lookaside and page cache, which at 20 connections were a tenth of the
/// c1024 peak for no more throughput (see the README's benchmark section).
pub const SQLITE_READERS: u32 = 8;
/// The page cache of a read connection, in KiB (SQLite's default is 2,000 KiB). In WAL
/// mode a reader drops its whole cache whenever another connection has committed since
/// its last read, which under load is nearly every read, so a large cache is not reused;
/// its pages come back from the OS page cache, which the connections share. The writer
/// keeps the default: only its own commits change the file.
const READER_CACHE_KIB: i64 = 256;
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
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("query returned no rows")]
    NoRows,
    #[error("unexpected value: {0}")]
    Conversion(String),
    #[error("database pool: {0}")]
    Pool(String),
    #[error("database task panicked or was cancelled")]
    Task,
    #[error("{0}")]
    Migration(String),
    /// The writer's queue is full: the caller is told to come back (a 503), not made to wait.
    #[error("the database write queue is full")]
    WriteQueueFull,
    /// Another process (a backup, the CLI) held the write lock past the busy timeout.
    #[error("{0}")]
    WriteLockHeld(String),
    /// The group commit a write ran in failed, so the write did not happen.
    #[error("database write not committed: {0}")]
    Commit(String),
    /// The same, because the database's disk is full.
    #[error("database write not committed, the disk is full: {0}")]
    StorageFull(String),
}

impl DbError {
    /// Whether this failed because the database's disk is full (SQLite's SQLITE_FULL,
    /// PostgreSQL's disk_full): nothing was written, and nothing will be until an operator
    /// frees space.
    pub fn is_storage_full(&self) -> bool {
        match self {
            DbError::StorageFull(_) => true,
            DbError::Sqlite(e) => sqlite_disk_full(e),
            DbError::Postgres(e) => e.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL),
            _ => false,
        }
    }

    /// The column of a UNIQUE constraint this error violated, e.g. `users.email`.
    pub fn unique_violation(&self) -> Option<&str> {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, Some(msg)))
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                msg.strip_prefix("UNIQUE constraint failed: ")
            }
            // The PostgreSQL schema names each unique constraint the way SQLite reports it.
            DbError::Postgres(e) => e
                .as_db_error()
                .filter(|d| *d.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
                .and_then(|d| d.constraint()),
            _ => None,
        }
    }

    /// A row still referenced through an ON DELETE RESTRICT foreign key (or another
    /// foreign-key failure).
    pub fn is_foreign_key_violation(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_TRIGGER
            }
            DbError::Postgres(e) => e.as_db_error().is_some_and(|d| {
                *d.code() == tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION
            }),
            _ => false,
        }
    }
}

/// A cheaply cloneable handle to the pool.
#[derive(Clone)]
pub struct Db {
    inner: Pools,
}

#[derive(Clone)]
enum Pools {
    Sqlite {
        pool: r2d2::Pool<SqliteConnectionManager>,
        path: Arc<Path>,
        /// Device and inode of the file when opened. If the path later names another file
        /// (deleted, or replaced by a careless restore), our connections still write to
        /// the old inode and every write would be lost at restart; `/health` reports that.
        file_id: (u64, u64),
        /// The one connection that writes (issue 19).
        writer: writer::Writer,
    },
    /// Behind an `Arc`: every query clones the handle.
    Pg(Arc<pg::PgPool>),
}

/// Where the data lives: the SQLite file or a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Sqlite(PathBuf),
    Postgres(pg::PgUrl),
}

impl Target {
    /// The server's connections for this backend: what its blocking threads are sized by.
    pub fn pool_size(&self) -> u32 {
        match self {
            Target::Sqlite(_) => SQLITE_READERS,
            Target::Postgres(_) => POOL_SIZE,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Sqlite(p) => write!(f, "{}", p.display()),
            Target::Postgres(u) => write!(f, "{u}"),
        }
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PoolStats {
    pub size: u32,
    pub max_size: u32,
    pub idle: u32,
    pub in_use: u32,
    /// SQLite: writes waiting for the writer (issue 19); always 0 on PostgreSQL.
    pub queued_writes: usize,
}

impl Db {
    /// Opens (creating if needed) the database file and its directory, applies the
    /// connection settings, and migrates the schema to the latest version.
    pub fn open(path: &Path) -> Result<Db> {
        Self::open_sqlite(path, SQLITE_READERS, true, writer::DEFAULT_QUEUE)
    }

    pub fn open_with_pool_size(path: &Path, pool_size: u32) -> Result<Db> {
        Self::open_sqlite(path, pool_size, true, writer::DEFAULT_QUEUE)
    }

    /// Opens the SQLite file, migrating it when `migrate` (`elior db status` and
    /// `migrate --dry-run` look without changing anything), with room for `write_queue`
    /// writes waiting for the writer.
    fn open_sqlite(path: &Path, pool_size: u32, migrate: bool, write_queue: usize) -> Result<Db> {
        if !migrate && !path.exists() {
            anyhow::bail!(
                "no database file at {}
elior serve and elior db migrate create it",
                path.display()
            );
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("failed to create database directory {}", dir.display())
            })?;
        }
        // Open and migrate once by hand first, so a bad file gives one clear error rather
        // than a pool that fails to fill.
        let mut conn = Connection::open(path)
            .and_then(|c| configure(&c).map(|_| c))
            .map_err(|e| open_error(path, e))?;
        if migrate {
            migrations::migrate(&mut conn).map_err(|e| open_error(path, e))?;
        }
        // That connection becomes the writer's.
        let writer = writer::Writer::start(conn, write_queue).with_context(|| {
            format!("failed to start the database writer for {}", path.display())
        })?;

        let manager = SqliteConnectionManager::file(path).with_init(|c| {
            configure(c)?;
            c.pragma_update(None, "cache_size", -READER_CACHE_KIB)
        });
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .connection_timeout(POOL_WAIT)
            .build(manager)
            .map_err(|e| open_error(path, e))?;
        let file_id = file_id(path).map_err(|e| open_error(path, e))?;
        Ok(Db {
            inner: Pools::Sqlite {
                pool,
                path: Arc::from(path),
                file_id,
                writer,
            },
        })
    }

    /// Connects to PostgreSQL (retrying for up to `retry_for` while it is unreachable) and
    /// migrates its schema. Must run inside a Tokio runtime.
    pub async fn connect_pg(url: &pg::PgUrl, pool_size: u32, retry_for: Duration) -> Result<Db> {
        let db = Self::connect_pg_unmigrated(url, pool_size, retry_for).await?;
        db.write(migrations::migrate_any).await.with_context(|| {
            format!("failed to migrate the PostgreSQL database {}", url.target())
        })?;
        Ok(db)
    }

    /// Connects without touching the schema.
    pub async fn connect_pg_unmigrated(
        url: &pg::PgUrl,
        pool_size: u32,
        retry_for: Duration,
    ) -> Result<Db> {
        let pool = pg::connect(url, pool_size as usize, retry_for).await?;
        Ok(Db {
            inner: Pools::Pg(Arc::new(pool)),
        })
    }

    /// For CLI commands: opens `target` with one connection (migrated only when `migrate`)
    /// and runs `f` on a blocking thread of a runtime made for it.
    pub fn session<T: Send + 'static>(
        target: &Target,
        migrate: bool,
        retry_for: Duration,
        f: impl FnOnce(&Db) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("failed to start the async runtime")?;
        let target = target.clone();
        runtime.block_on(async move {
            let db = match &target {
                Target::Sqlite(path) => {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || {
                        Db::open_sqlite(&path, 2, migrate, writer::DEFAULT_QUEUE)
                    })
                    .await
                    .context("database task failed")??
                }
                Target::Postgres(url) if migrate => Db::connect_pg(url, 2, retry_for).await?,
                Target::Postgres(url) => Db::connect_pg_unmigrated(url, 2, retry_for).await?,
            };
            tokio::task::spawn_blocking(move || f(&db))
                .await
                .context("database task failed")?
        })
    }

    /// Opens either backend with [`Target::pool_size`] connections (and on SQLite room for
    /// `write_queue` queued writes); inside a Tokio runtime.
    pub async fn open_target(
        target: &Target,
        retry_for: Duration,
        write_queue: usize,
    ) -> Result<Db> {
        match target {
            Target::Sqlite(path) => tokio::task::block_in_place(|| {
                Db::open_sqlite(path, target.pool_size(), true, write_queue)
            }),
            Target::Postgres(url) => Db::connect_pg(url, target.pool_size(), retry_for).await,
        }
    }

    pub fn backend(&self) -> Backend {
        match &self.inner {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Pg(_) => Backend::Postgresql,
        }
    }

    /// The SQLite file, or `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        match &self.inner {
            Pools::Sqlite { path, .. } => Some(path),
            Pools::Pg(_) => None,
        }
    }

    /// The PostgreSQL pool, for the notification listener.
    pub fn pg(&self) -> Option<&pg::PgPool> {
        match &self.inner {
            Pools::Pg(p) => Some(p.as_ref()),
            Pools::Sqlite { .. } => None,
        }
    }

    /// Checks that the database path still names the file the pool has open (SQLite).
    pub fn check_file(&self) -> Result<(), &'static str> {
        let Pools::Sqlite {
            path, file_id: id0, ..
        } = &self.inner
        else {
            return Ok(());
        };
        match file_id(path) {
            Ok(id) if id == *id0 => Ok(()),
            Ok(_) => Err("database file was replaced while the server runs; restart elior serve"),
            Err(_) => {
                Err("database file is missing; it was deleted or moved while the server runs")
            }
        }
    }

    fn get(&self) -> Result<Conn, DbError> {
        match &self.inner {
            Pools::Sqlite { pool, .. } => Ok(Conn::Sqlite(sql::SqliteConn::Pooled(
                pool.get_timeout(POOL_WAIT)
                    .map_err(|_| DbError::PoolTimeout(POOL_WAIT))?,
            ))),
            Pools::Pg(p) => Ok(Conn::Pg(p.get_blocking()?)),
        }
    }

    /// Runs `f`, which only reads. On SQLite, when a pooled connection is free, right here
    /// on the async worker; otherwise, and on PostgreSQL, as [`Db::read_off_thread`].
    ///
    /// Why on the worker (issue 19): a request's reads are point lookups and short pages,
    /// tens of microseconds of CPU on pages the OS already caches. Handing each to a
    /// blocking thread and back cost more than the read itself (two cross-thread wakes, the
    /// answer queued behind the runtime's global queue): at c1024, reads on the worker
    /// served 1.3x the requests in 0.9x the peak memory. Nothing makes such a read wait: in
    /// WAL mode a reader waits neither for the writer nor for a checkpoint, and no other
    /// process can lock it out while elior's connections are open (each holds a shared
    /// lock on the file, so another's `locking_mode = EXCLUSIVE` is refused). Callers that
    /// put a deadline on a read (the health probes) use [`Db::read_off_thread`], which a
    /// timeout can abandon.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut Conn) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        if let Pools::Sqlite { pool, .. } = &self.inner {
            if let Some(pooled) = pool.try_get() {
                return read_on_worker(pooled, f);
            }
        }
        self.read_off_thread(f).await
    }

    /// Runs `f`, which only reads, with a pooled connection on the blocking thread pool.
    pub async fn read_off_thread<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut Conn) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.clone();
        // The caller's span (a request's id, method and route) goes with the work, so a
        // slow-query warning from the blocking thread names the request it slowed.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            let mut conn = db.get()?;
            f(&mut conn)
        })
        .await
        .map_err(|_| DbError::Task)?
    }

    /// Runs `f`, which writes: on SQLite in the writer's next group commit, answered once
    /// that has committed (a full queue is [`DbError::WriteQueueFull`] at once); on
    /// PostgreSQL like [`Db::read`]. An error from `f` undoes `f`'s writes only.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Conn) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        match &self.inner {
            Pools::Sqlite { writer, .. } => writer.write(f).await,
            Pools::Pg(_) => self.read(move |c| Ok(f(c))).await?,
        }
    }

    /// Runs `f` with a connection on the current thread; for CLI commands and blocking
    /// threads, never an async worker.
    pub fn blocking<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut conn = self.get()?;
        f(&mut conn)
    }

    pub fn pool_stats(&self) -> PoolStats {
        match &self.inner {
            Pools::Sqlite { pool, writer, .. } => {
                let state = pool.state();
                PoolStats {
                    size: state.connections,
                    max_size: pool.max_size(),
                    idle: state.idle_connections,
                    in_use: state.connections - state.idle_connections,
                    queued_writes: writer.queued(),
                }
            }
            Pools::Pg(p) => {
                let s = p.pool.status();
                let idle = s.available as u32;
                PoolStats {
                    size: s.size as u32,
                    max_size: s.max_size as u32,
                    idle,
                    in_use: (s.size as u32).saturating_sub(idle),
                    queued_writes: 0,
                }
            }
        }
    }

    /// Folds the WAL back into the main file and truncates it; run at shutdown so the file
    /// on disk is complete on its own (for backups and copies made while stopped). Nothing
    /// to do on PostgreSQL.
    pub fn checkpoint(&self) -> Result<(), DbError> {
        if self.backend() == Backend::Postgresql {
            return Ok(());
        }
        self.blocking(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", (), |_| Ok(()))?;
            Ok(())
        })
    }
}

fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// Why the database could not be opened or migrated, with the fix: a full disk says so
/// (the generic hint blamed the file or its folder's permissions).
fn open_error(path: &Path, error: impl Into<anyhow::Error>) -> anyhow::Error {
    let error = error.into();
    let dir = path.parent().unwrap_or(Path::new("."));
    if is_out_of_space(&error) {
        let free = crate::fsutil::disk_space(dir)
            .map(|d| format!(" ({} free)", crate::backup::human_bytes(d.free_bytes)))
            .unwrap_or_default();
        return error.context(format!(
            "failed to open database {}: its disk is full{free}\nfree space on the disk of {} (`elior doctor` names what fills it), then start again",
            path.display(),
            dir.display()
        ));
    }
    error.context(format!(
        "failed to open database {}\ncheck that the file is a SQLite database and that its directory is writable",
        path.display()
    ))
}

/// Whether a write in `error`'s chain failed for want of space: SQLite's SQLITE_FULL, or
/// ENOSPC or a quota from the filesystem.
pub fn is_out_of_space(error: &anyhow::Error) -> bool {
    let sqlite_full = error
        .chain()
        .any(|cause| cause.downcast_ref().is_some_and(sqlite_disk_full));
    sqlite_full || crate::fsutil::is_out_of_space(error)
}

/// SQLite's SQLITE_FULL: a write found its disk full.
fn sqlite_disk_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// Per-connection settings. WAL lets readers run beside the one writer; NORMAL
/// synchronous is durable across application crashes in WAL mode and much faster than FULL.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_handler(Some(wait_for_writer))?;
    // Every query goes through the statement cache (see `sql::Conn`): room for all of them.
    conn.set_prepared_statement_cache_capacity(256);
    // And a cached statement stays compiled. Without the query planner stability
    // guarantee, SQLite marks a statement whose plan a bound value might change (any
    // `LIMIT ?` or `OFFSET ?`) and compiles it again at every new binding: at c1024 the
    // list endpoints spent ~9% of the server's CPU in SQLite's parser (issue 19).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    trace_slow_statements(conn, true);
    Ok(())
}

/// Logs statements slower than [`SLOW_QUERY`], or stops doing so. Migrations turn it off:
/// a schema change is expected to take its time, and a warning quoting its whole DDL at
/// every start on a loaded host says nothing the operator can act on.
fn trace_slow_statements(conn: &Connection, on: bool) {
    conn.trace_v2(
        TraceEventCodes::SQLITE_TRACE_PROFILE,
        on.then_some(log_slow_statement as fn(TraceEvent<'_>)),
    );
}

/// Runs the read `f` on this thread with `pooled`. A panic in `f` is the request's 500,
/// as it was on a blocking thread, not the end of its connection's task.
fn read_on_worker<T>(
    pooled: r2d2::PooledConnection<SqliteConnectionManager>,
    f: impl FnOnce(&mut Conn) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let mut conn = Conn::Sqlite(sql::SqliteConn::Pooled(pooled));
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut conn)))
        .unwrap_or(Err(DbError::Task))
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

/// Facts about the database for `/status/database` and `doctor`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DatabaseStatus {
    pub backend: Backend,
    pub journal_mode: String,
    pub schema_version: i64,
    pub latest_schema_version: i64,
    /// The SQLite file, or PostgreSQL's `pg_database_size`.
    pub file_size_bytes: u64,
    pub wal_size_bytes: u64,
}

pub fn status(c: &Conn, path: Option<&Path>) -> Result<DatabaseStatus, DbError> {
    let backend = c.backend();
    let schema_version = migrations::applied_version(c)?;
    let latest_schema_version = migrations::latest_for(backend);
    let (Some(conn), Some(path)) = (c.sqlite(), path) else {
        let size: i64 = c.query_row(
            "SELECT CAST(pg_database_size(current_database()) AS BIGINT)",
            (),
            |r| r.get(0),
        )?;
        return Ok(DatabaseStatus {
            backend,
            journal_mode: "postgresql".into(),
            schema_version,
            latest_schema_version,
            file_size_bytes: size.max(0) as u64,
            wal_size_bytes: 0,
        });
    };
    let journal_mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    let file_size_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_size_bytes = std::fs::metadata(PathBuf::from(wal))
        .map(|m| m.len())
        .unwrap_or(0);
    Ok(DatabaseStatus {
        backend,
        journal_mode,
        schema_version,
        latest_schema_version,
        file_size_bytes,
        wal_size_bytes,
    })
}

/// The query `/health` runs: it reads a real table, so a database that is locked, gone
/// or corrupt fails it (a bare `SELECT 1` would pass without touching the file).
pub fn ping(conn: &Conn) -> Result<(), DbError> {
    conn.query_row("SELECT count(*) FROM schema_migrations", (), |r| {
        r.get::<i64>(0)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{params, StatementStatus};

    /// A cached statement with a bound `LIMIT` and `OFFSET` is compiled once, whatever
    /// values later executions bind (see `configure`).
    #[test]
    fn cached_statements_are_not_recompiled_for_new_bindings() {
        let conn = Connection::open_in_memory().unwrap();
        configure(&conn).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER NOT NULL);
             CREATE INDEX t_k ON t (k);
             INSERT INTO t (k) VALUES (1), (1), (1), (2);",
        )
        .unwrap();
        let sql = "SELECT id FROM t WHERE k = ?1 ORDER BY id LIMIT ?2 OFFSET ?3";
        let pages = [(1, 2, 0), (1, 2, 2), (2, 5, 0)];
        let mut seen = Vec::new();
        for (k, limit, offset) in pages {
            let mut stmt = conn.prepare_cached(sql).unwrap();
            let ids = stmt.query_map(params![k, limit, offset], |r| r.get::<_, i64>(0));
            seen.push(ids.unwrap().collect::<Result<Vec<_>, _>>().unwrap());
        }
        assert_eq!(seen, [vec![1, 2], vec![3], vec![4]]);
        let stmt = conn.prepare_cached(sql).unwrap();
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
    }

    /// A read that panics is a failed read (the request's 500), on the worker as on a
    /// blocking thread, and the connection it had serves the next read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_read_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("r.db"), 1, true, writer::DEFAULT_QUEUE).unwrap();
        let err = db
            .read(|_| -> Result<(), DbError> { panic!("a bug in a read") })
            .await
            .unwrap_err();
        assert!(matches!(err, DbError::Task), "{err:?}");
        assert_eq!(db.read(count_users).await.unwrap(), 0);
    }

    /// With every pooled connection taken, a read does not fail: it waits for one (off
    /// the async workers) and answers once one is free.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_read_waits_for_a_taken_connection_and_answers_once_it_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("r.db"), 1, true, writer::DEFAULT_QUEUE).unwrap();
        let (taken, is_taken) = tokio::sync::oneshot::channel();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let holder = db.clone();
        let held = tokio::task::spawn_blocking(move || {
            holder.blocking(|_| {
                let _ = taken.send(());
                wait.recv().ok();
                Ok(())
            })
        });
        is_taken.await.unwrap();
        let (reading, is_reading) = tokio::sync::oneshot::channel();
        let reader = db.clone();
        let read = tokio::spawn(async move {
            let _ = reading.send(());
            reader.read(count_users).await
        });
        // One worker: the read task ran until it waited for a connection before this task
        // got the worker back.
        is_reading.await.unwrap();
        assert!(!read.is_finished());
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        assert_eq!(read.await.unwrap().unwrap(), 0);
    }

    fn count_users(c: &mut Conn) -> Result<i64, DbError> {
        c.query_row("SELECT count(*) FROM users", (), |r| r.get(0))
    }
}
