//! The one SQLite writer of `elior serve` (issue 19): every write runs on one dedicated
//! connection, fed by a bounded queue, and the writes that queued up while the previous
//! batch ran commit together in one `BEGIN IMMEDIATE` transaction (group commit).
//!
//! Why: SQLite lets one writer in at a time. With writes spread over the pooled
//! connections, 1,024 concurrent clients had up to 20 threads taking turns at the lock by
//! busy-handler polling, each paying a commit of its own: a write p99 of 374 ms and
//! slow-query warnings on plain INSERTs. One writer never waits for the lock (except on
//! another process: a backup, the CLI), and a batch pays one commit.
//!
//! Each write runs inside a SAVEPOINT of its own, so a write that fails (its closure
//! returns an error, or panics) is rolled back alone and the others' work commits. Callers
//! are answered only after COMMIT returns: a write acknowledged to a client is in the WAL,
//! which survives a crash of the process (synchronous=NORMAL in WAL mode). A full queue is
//! refused at once with [`DbError::WriteQueueFull`] (a 503 with `Retry-After`), never an
//! unbounded wait.
//!
//! Reads stay on the pool ([`super::Db::read`]); PostgreSQL has no writer (its pool and
//! the database's own concurrency apply).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use super::sql::{Conn, SqliteConn};
use super::DbError;

/// Writes queued by default. At ~20 µs a write (an INSERT with its indexes on this
/// machine) a full queue is about 0.1 s of work, so a queued write still answers well
/// inside a client's patience, and c1024 of nothing but writes fits without a 503.
pub const DEFAULT_QUEUE: usize = 4096;
/// Writes committed in one transaction at most: bounds how long the first write of a
/// batch waits for the last one before it is answered.
const MAX_BATCH: usize = 256;

/// A handle to the writer thread; cheap to clone. The thread ends, closing its
/// connection, when the last handle is dropped.
#[derive(Clone)]
pub struct Writer {
    queue: SyncSender<Box<dyn Job>>,
    /// Writes queued and not yet taken by the writer (for `/status/database`).
    queued: Arc<AtomicUsize>,
}

impl Writer {
    /// Starts the writer thread on `conn` (already configured) with room for `capacity`
    /// queued writes.
    pub fn start(conn: rusqlite::Connection, capacity: usize) -> std::io::Result<Writer> {
        let (queue, jobs) = sync_channel(capacity.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(Conn::Sqlite(SqliteConn::Owned(conn)), jobs, &taken))?;
        Ok(Writer { queue, queued })
    }

    /// Writes waiting for the writer now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Queues `f` and waits until the batch it ran in has committed (or failed). `f`'s
    /// error rolls back `f`'s own work only.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Conn) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Box::new(Pending {
            f,
            reply,
            // The caller's span (a request's id and route) goes with the work, so a
            // slow-query warning on the writer thread names the request it slowed.
            span: tracing::Span::current(),
        });
        // Counted before it is sent, so the writer never takes one not yet counted.
        self.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.queue.try_send(job) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(match e {
                TrySendError::Full(_) => DbError::WriteQueueFull,
                TrySendError::Disconnected(_) => DbError::Task,
            }
            .into());
        }
        answer.await.map_err(|_| DbError::Task)?
    }
}

/// A queued write, its result type erased so one queue carries them all.
trait Job: Send {
    /// Runs the write inside the open transaction; what it returns answers the caller
    /// once the transaction's fate is known.
    fn run(self: Box<Self>, conn: &mut Conn) -> Box<dyn Ran>;
    /// Answers the caller with `why()` without running: the transaction could not start.
    fn refuse(self: Box<Self>, why: &dyn Fn() -> DbError);
    /// The span of the request that queued it.
    fn span(&self) -> &tracing::Span;
}

/// A write that ran and waits for its transaction to commit.
trait Ran: Send {
    fn succeeded(&self) -> bool;
    /// `Err` carries why the transaction did not commit.
    fn answer(self: Box<Self>, committed: Result<(), &dyn Fn() -> DbError>);
}

struct Pending<T, E, F> {
    f: F,
    reply: tokio::sync::oneshot::Sender<Result<T, E>>,
    span: tracing::Span,
}

struct Done<T, E> {
    result: Result<T, E>,
    reply: tokio::sync::oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> Job for Pending<T, E, F>
where
    F: FnOnce(&mut Conn) -> Result<T, E> + Send,
    T: Send + 'static,
    E: From<DbError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut Conn) -> Box<dyn Ran> {
        let Pending { f, reply, span } = *self;
        // A panicking write must not take the writer (and every later write) down.
        let result = span
            .in_scope(|| catch_unwind(AssertUnwindSafe(|| f(conn))))
            .unwrap_or_else(|_| Err(DbError::Task.into()));
        Box::new(Done { result, reply })
    }

    fn refuse(self: Box<Self>, why: &dyn Fn() -> DbError) {
        let _ = self.reply.send(Err(why().into()));
    }

    fn span(&self) -> &tracing::Span {
        &self.span
    }
}

impl<T: Send, E: From<DbError> + Send> Ran for Done<T, E> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn answer(self: Box<Self>, committed: Result<(), &dyn Fn() -> DbError>) {
        let result = match committed {
            // A failed write answers with its own error whatever became of the batch.
            Ok(()) => self.result,
            Err(_) if self.result.is_err() => self.result,
            Err(why) => Err(why().into()),
        };
        // The caller may be gone (a client that hung up); its write stands.
        let _ = self.reply.send(result);
    }
}

/// The writer thread: takes what is queued, up to [`MAX_BATCH`], and commits it as one.
fn run(mut conn: Conn, jobs: Receiver<Box<dyn Job>>, queued: &AtomicUsize) {
    while let Ok(first) = jobs.recv() {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(first);
        batch.extend(jobs.try_iter().take(MAX_BATCH - 1));
        queued.fetch_sub(batch.len(), Ordering::Relaxed);
        commit_batch(&mut conn, batch);
    }
}

/// Whether `BEGIN` failed because another process (a backup, the CLI) held the write
/// lock past the busy timeout: a moment's wait, so the caller is told to come back (a 503),
/// not that the server failed.
fn lock_held_elsewhere(e: &DbError) -> bool {
    matches!(
        e,
        DbError::Sqlite(e) if matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    )
}

/// The transaction's own statements (BEGIN, SAVEPOINT, RELEASE, COMMIT) go through
/// `Conn::execute`, whose statements are prepared once and cached: `execute_batch` parsed
/// and prepared them again for every write, ~4,000 instructions (2.5% of a weight entry's)
/// on the one thread every write waits for (issue 19, `examples/insn_bench.sh`).
fn commit_batch(conn: &mut Conn, batch: Vec<Box<dyn Job>>) {
    let mut jobs = batch.into_iter();
    let mut ran: Vec<Box<dyn Ran>> = Vec::new();
    let mut open = false;
    while let Some(job) = jobs.next() {
        if !open {
            // Only another process can hold the lock (a backup, the CLI); the busy handler
            // waits for it up to its timeout. If it never comes, nothing of the rest ran.
            // In the first write's span: a slow-query warning for that wait names the
            // request that waited.
            let begun = job.span().in_scope(|| conn.execute("BEGIN IMMEDIATE", ()));
            if let Err(e) = begun {
                let held = lock_held_elsewhere(&e);
                let text = format!("could not start a write transaction: {e}");
                let why = || {
                    if held {
                        DbError::WriteLockHeld(text.clone())
                    } else {
                        DbError::Commit(text.clone())
                    }
                };
                tracing::error!(error = %e, "database write transaction failed to start");
                job.refuse(&why);
                jobs.for_each(|j| j.refuse(&why));
                return;
            }
            open = true;
        }
        if let Err(e) = conn.execute("SAVEPOINT job", ()) {
            job.refuse(&|| not_committed(&e));
            abandon(conn, &mut ran, &|| not_committed(&e));
            open = false;
            continue;
        }
        let done = job.run(conn);
        let kept = if done.succeeded() {
            conn.execute("RELEASE job", ())
        } else {
            conn.execute("ROLLBACK TO job", ())
                .and_then(|_| conn.execute("RELEASE job", ()))
        };
        ran.push(done);
        // SQLite ends the whole transaction itself on a full disk or an I/O error; what
        // ran in it can't be vouched for, so it is answered as failed.
        let ended = conn.sqlite().is_some_and(|c| c.is_autocommit());
        if let Err(e) = kept {
            abandon(conn, &mut ran, &|| not_committed(&e));
            open = false;
        } else if ended {
            let ended_early = || DbError::Commit("the write transaction ended early".into());
            abandon(conn, &mut ran, &ended_early);
            open = false;
        }
    }
    if open {
        match conn.execute("COMMIT", ()) {
            Ok(_) => ran.into_iter().for_each(|r| r.answer(Ok(()))),
            Err(e) => {
                tracing::error!(error = %e, writes = ran.len(), "database group commit failed");
                abandon(conn, &mut ran, &|| not_committed(&e));
            }
        }
    }
}

/// What a write that ran in a failed transaction is answered: the disk being full is
/// told apart (the API answers it 503, not 500).
fn not_committed(e: &DbError) -> DbError {
    if e.is_storage_full() {
        DbError::StorageFull(e.to_string())
    } else {
        DbError::Commit(e.to_string())
    }
}

/// Rolls back the open transaction (if SQLite has not already) and answers every write
/// that ran in it with `why`.
fn abandon(conn: &Conn, ran: &mut Vec<Box<dyn Ran>>, why: &dyn Fn() -> DbError) {
    if conn.sqlite().is_some_and(|c| !c.is_autocommit()) {
        let _ = conn.execute_batch("ROLLBACK");
    }
    ran.drain(..).for_each(|r| r.answer(Err(why)));
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::super::{Db, DbError};

    /// A database whose writer is held inside a first write until `release` is sent,
    /// so the writes queued meanwhile run together in the next batch.
    async fn held(queue: usize) -> (tempfile::TempDir, Db, mpsc::Sender<()>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("w.db"), 2, true, queue).unwrap();
        db.write(|c| c.execute_batch("CREATE TABLE t (x INTEGER)"))
            .await
            .unwrap();
        let (release, wait) = mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let hold = db.clone();
        tokio::spawn(async move {
            hold.write(move |_| {
                let _ = started.send(());
                wait.recv().ok();
                Ok::<_, DbError>(())
            })
            .await
        });
        running.await.unwrap();
        (dir, db, release)
    }

    /// Polls `write` once, which queues it: the writer is held, so it cannot answer yet.
    /// Waiting on `queued_writes` from other tasks raced instead: a write is counted just
    /// before it is sent, so a later write could take the last place in the queue (and
    /// then wait behind the held writer for good), or miss the batch it was meant for.
    async fn queue<F: std::future::Future + Unpin>(write: &mut F) {
        tokio::select! {
            biased;
            _ = write => panic!("a write answered while the writer was held"),
            _ = std::future::ready(()) => {}
        }
    }

    fn rows(db: &Db) -> Vec<i64> {
        db.blocking(|c| {
            c.query_map("SELECT x FROM t ORDER BY x", (), |r| r.get(0))?
                .collect()
        })
        .unwrap()
    }

    fn insert(x: i64) -> impl FnOnce(&mut crate::db::Conn) -> Result<(), DbError> {
        move |c| c.execute("INSERT INTO t VALUES (?1)", [x]).map(|_| ())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_or_panicking_write_is_undone_alone_in_its_batch() {
        let (_dir, db, release) = held(16).await;
        let mut ok1 = std::pin::pin!(db.write(insert(1)));
        let mut failing = std::pin::pin!(db.write(|c| {
            insert(2)(c)?;
            Err::<(), _>(DbError::Conversion("refused after writing".into()))
        }));
        let mut panicking = std::pin::pin!(db.write(|c| -> Result<(), DbError> {
            insert(3)(c)?;
            panic!("a bug in a handler")
        }));
        let mut ok4 = std::pin::pin!(db.write(insert(4)));
        // All four are queued behind the held write before it is let go, so they run in
        // one batch.
        queue(&mut ok1).await;
        queue(&mut failing).await;
        queue(&mut panicking).await;
        queue(&mut ok4).await;
        assert_eq!(db.pool_stats().queued_writes, 4);
        release.send(()).unwrap();
        ok1.await.unwrap();
        assert!(matches!(failing.await, Err(DbError::Conversion(_))));
        assert!(matches!(panicking.await, Err(DbError::Task)));
        ok4.await.unwrap();
        assert_eq!(rows(&db), [1, 4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once_and_the_queued_write_still_lands() {
        let (_dir, db, release) = held(1).await;
        let mut queued = std::pin::pin!(db.write(insert(1)));
        queue(&mut queued).await;
        assert_eq!(db.pool_stats().queued_writes, 1);
        assert!(matches!(
            db.write(insert(2)).await,
            Err(DbError::WriteQueueFull)
        ));
        release.send(()).unwrap();
        queued.await.unwrap();
        assert_eq!(rows(&db), [1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lock_held_elsewhere_past_the_timeout_is_a_come_back_later_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let db = Db::open_sqlite(&path, 2, true, 16).unwrap();
        db.write(|c| c.execute_batch("CREATE TABLE t (x INTEGER)"))
            .await
            .unwrap();
        // Another connection (as a backup or the CLI would) takes the write lock and
        // keeps it past the busy timeout.
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let refused = db.write(insert(1)).await;
        let err = refused.expect_err("a write while the lock is held elsewhere");
        assert!(matches!(err, DbError::WriteLockHeld(_)), "{err:?}");
        let answer =
            axum::response::IntoResponse::into_response(crate::server::error::ApiError::from(err));
        assert_eq!(answer.status(), 503);
        assert!(answer.headers().contains_key("retry-after"));
        // Once it is let go, the next write lands.
        other.execute_batch("COMMIT").unwrap();
        db.write(insert(2)).await.unwrap();
        assert_eq!(rows(&db), [2]);
    }
}
