//! Group commit for SQLite: many small writes share one transaction and one fsync.
//!
//! SQLite has one writer, and with `synchronous = FULL` every commit waits for the disk (about a
//! quarter of a millisecond here). Sixty-four clients each sending one small write would spend the
//! writer's whole time waiting on fsync. So the hot writes (accepting a send, registering a
//! device, and the delivery engine's plan, claim and outcome transactions) go to one thread that
//! takes every write waiting in its queue, runs them in one shared transaction, commits once, and
//! only then answers the callers. A failed commit fails every write of the batch: nothing is
//! answered as stored before it is on disk.
//!
//! The thread has a SQLite connection of its own (`rusqlite`) and runs the statements itself
//! ([`Conn::Sqlite`]): through sqlx, each statement was a hand-off to sqlx's worker thread and
//! back, most of a send's CPU. The store's other writes use sqlx's single writer connection; the
//! thread holds that connection as its turn to write (for at most [`TURN`] at a time, and not
//! while idle), so the two writers never wait on each other inside SQLite, whose busy handler
//! sleeps in steps of milliseconds.
//!
//! A write that fails must leave nothing behind, and its neighbours must not notice. Giving each
//! write a `SAVEPOINT` costs a statement per write, so the batch first runs without savepoints;
//! only when a write fails is the whole transaction rolled back and the batch run again with a
//! savepoint per write, the failing one rolling back to its own. Writes are therefore closures
//! that can run twice (they clone what they need on each run); their first run's results are
//! dropped unanswered.
//!
//! PostgreSQL does not use this: it has many writers and groups concurrent commits itself.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::sql::Conn;
use crate::{Result, StoreError};

/// The most writes one transaction takes (bounds the time the first caller waits).
const MAX_BATCH: usize = 256;

/// One queued write: it can run (again) on the shared connection, keeping its last result, and
/// answers its caller once.
trait Pending: Send {
    /// Runs the write; `false` when it failed.
    fn run<'c>(&'c mut self, conn: &'c mut Conn<'c>) -> BoxFuture<'c, bool>;
    /// Answers with the last run's result, or with the commit's error when the batch failed.
    fn answer(self: Box<Self>, commit_error: Option<&StoreError>);
}

type Job = Box<dyn Pending>;

struct Queued<T, F> {
    write: F,
    result: Option<Result<T>>,
    answer: oneshot::Sender<Result<T>>,
}

impl<T, F> Pending for Queued<T, F>
where
    T: Send + 'static,
    F: for<'c> Fn(&'c mut Conn<'c>) -> BoxFuture<'c, Result<T>> + Send + 'static,
{
    fn run<'c>(&'c mut self, conn: &'c mut Conn<'c>) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let result = (self.write)(conn).await;
            let ok = result.is_ok();
            self.result = Some(result);
            ok
        })
    }

    fn answer(self: Box<Self>, commit_error: Option<&StoreError>) {
        let Queued {
            write,
            result,
            answer,
        } = *self;
        // Dropped before the caller hears: what the write shared with the caller is the
        // caller's alone again when it wakes (the planner moves its rows into the claim).
        drop(write);
        let result = match (commit_error, result) {
            (Some(error), _) => Err(batch_failed(error)),
            (None, Some(result)) => result,
            (None, None) => Err(not_stored()),
        };
        let _ = answer.send(result);
    }
}

/// What the group-commit thread is sent.
enum Message {
    Write(Job),
    /// Finish what was sent before, close the connection, then answer.
    Close(oneshot::Sender<()>),
}

/// The queue of the group-commit thread. Cheap to clone.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queue: std::sync::mpsc::Sender<Message>,
}

impl GroupCommit {
    /// Opens the group commit's own connection to the SQLite database at `path` and starts the
    /// thread that writes through it. `writer` is the store's sqlx writer pool (one connection),
    /// whose connection the thread holds as its turn to write. The thread waits for writes
    /// without the runtime (a blocking channel, no timers: a tokio timer polled after its
    /// runtime shut down panics); the runtime that opened the store takes the turn from sqlx's
    /// pool (a task the thread waits for) and runs the task sqlx spawns when it is handed back.
    /// (std's channel, not flume's: when the thread ends, dropping its receiver drops the queued
    /// writes, whose callers then hear "not stored" instead of waiting forever.)
    pub(crate) fn start(writer: AnyPool, path: &Path) -> Result<Self> {
        let conn = crate::sqlite::open_group_commit_connection(path)?;
        let (queue, messages) = std::sync::mpsc::channel();
        let runtime = Handle::current();
        std::thread::Builder::new()
            .name("herald-group-commit".into())
            .spawn(move || run(&runtime, writer, conn, messages))
            .map_err(|e| StoreError::Config(format!("cannot start the group commit: {e}")))?;
        Ok(Self { queue })
    }

    /// Runs `write` inside the next batch's transaction and returns its result once the batch is
    /// committed. `write` may run twice (see the module comment).
    pub(crate) async fn write<T, F>(&self, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c mut Conn<'c>) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(Queued {
            write,
            result: None,
            answer,
        });
        self.queue
            .send(Message::Write(job))
            .map_err(|_| not_stored())?;
        answered.await.map_err(|_| not_stored())?
    }

    /// Writes what was queued before, then closes the connection and ends the thread; later
    /// writes fail with "not stored".
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.queue.send(Message::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

/// The error a write of a failed batch answers with (errors do not clone; the message does).
fn batch_failed(error: &StoreError) -> StoreError {
    StoreError::Database(sqlx::Error::Protocol(format!(
        "the transaction holding this write failed: {error}"
    )))
}

/// The longest the thread keeps its turn (the sqlx writer connection) while writes keep coming:
/// other writers (a cancel, a credential change) wait at most about this long.
const TURN: Duration = Duration::from_millis(10);

/// How long the thread keeps its turn with nothing to write: handing the connection back costs
/// a round trip to sqlx's worker thread (sqlx pings every connection returned to its pool), so
/// it is not handed back between two batches that follow each other closely.
const IDLE_TURN: Duration = Duration::from_millis(2);

fn run(
    runtime: &Handle,
    writer: AnyPool,
    conn: rusqlite::Connection,
    messages: std::sync::mpsc::Receiver<Message>,
) {
    // Handing the turn back (dropping sqlx's pool connection) spawns a task on the runtime.
    let _context = runtime.enter();
    let conn = Mutex::new(conn);
    let mut turn: Option<(PoolConnection<Any>, Instant)> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut close = None;
    while close.is_none() {
        let first = match &turn {
            Some(_) => match messages.recv_timeout(IDLE_TURN) {
                Ok(message) => message,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    turn = None;
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match messages.recv() {
                Ok(message) => message,
                Err(_) => break,
            },
        };
        for message in std::iter::once(first).chain(messages.try_iter().take(MAX_BATCH - 1)) {
            match message {
                Message::Write(job) => batch.push(job),
                Message::Close(done) => close = Some(done),
            }
        }
        if batch.is_empty() {
            continue;
        }
        if turn
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() > TURN)
        {
            turn = None;
        }
        if turn.is_none() {
            // A task of the runtime, waited for here: if the runtime shuts down meanwhile, the
            // task is dropped (an error for this batch) rather than its timers panicking here.
            let writer = writer.clone();
            let acquired =
                futures::executor::block_on(runtime.spawn(async move { writer.acquire().await }));
            let acquired = match acquired {
                Ok(acquired) => acquired.map_err(StoreError::from),
                Err(_) => Err(not_stored()),
            };
            match acquired {
                Ok(connection) => turn = Some((connection, Instant::now())),
                Err(error) => {
                    tracing::warn!(%error, writes = batch.len(), "group commit failed");
                    for job in batch.drain(..) {
                        job.answer(Some(&error));
                    }
                    continue;
                }
            }
        }
        // The writes' futures only wait on statements of this thread's connection.
        let committed = futures::executor::block_on(write_batch(&conn, &mut batch));
        if let Err(error) = &committed {
            tracing::warn!(%error, writes = batch.len(), "group commit failed");
        }
        let commit_error = committed.err();
        for job in batch.drain(..) {
            job.answer(commit_error.as_ref());
        }
    }
    drop(turn);
    // Closed before answering, so that the store's last connection to close (a pool's) finds
    // no other and checkpoints the WAL.
    drop(conn);
    if let Some(done) = close {
        let _ = done.send(());
    }
}

/// Runs `batch` in one transaction and commits it: first without savepoints; when a write fails,
/// the transaction is rolled back and the batch runs again with a savepoint per write. The jobs
/// keep their results, answered by the caller.
async fn write_batch(conn: &Mutex<rusqlite::Connection>, batch: &mut [Job]) -> Result<()> {
    let written = write_batch_once(conn, batch).await;
    // Whatever failed, no transaction stays open: the next batch could not begin, and SQLite's
    // write lock would stay held.
    let conn = conn
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    written
}

async fn write_batch_once(conn: &Mutex<rusqlite::Connection>, batch: &mut [Job]) -> Result<()> {
    let started = Instant::now();
    // Statements without arguments or rows; the lock is never contended (one thread).
    let run = |sql: &str| -> Result<()> {
        let conn = conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(conn.execute_batch(sql)?)
    };
    let mut savepoints = false;
    loop {
        // IMMEDIATE: the write lock is taken now, so no statement of the batch can meet a
        // reader's lock upgrade half-way (SQLite answers that with SQLITE_BUSY, no retry).
        run("BEGIN IMMEDIATE")?;
        let mut failed = false;
        for (i, job) in batch.iter_mut().enumerate() {
            if savepoints {
                run(if i == 0 {
                    "SAVEPOINT one_write"
                } else {
                    "RELEASE one_write; SAVEPOINT one_write"
                })?;
            }
            let mut write_conn = Conn::Sqlite(conn);
            if !job.run(&mut write_conn).await {
                if !savepoints {
                    failed = true;
                    break;
                }
                run("ROLLBACK TO one_write")?;
            }
        }
        if failed {
            run("ROLLBACK")?;
            savepoints = true;
            continue;
        }
        let executed = started.elapsed();
        // A failed COMMIT can leave the transaction open: `write_batch` rolls it back.
        run("COMMIT")?;
        tracing::debug!(
            writes = batch.len(),
            savepoints,
            run_us = executed.as_micros() as u64,
            commit_us = (started.elapsed() - executed).as_micros() as u64,
            "group commit"
        );
        return Ok(());
    }
}

/// What a caller whose write never ran hears (its batch failed before it, or the store closed).
fn not_stored() -> StoreError {
    StoreError::Database(sqlx::Error::Protocol(
        "the write was not stored: the store closed or its batch failed first".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inserts `i` into the tests' table `t`.
    async fn insert_into_t(conn: &mut crate::sql::Conn<'_>, i: i64) -> Result<u64> {
        crate::sql::query("INSERT INTO t (x) VALUES ($1)")
            .bind(i)
            .execute(conn)
            .await
    }

    /// A new SQLite file made by `schema` (through the sqlx writer pool, which is returned), and
    /// a group commit on it.
    async fn started(schema: &str) -> (tempfile::TempDir, AnyPool, GroupCommit) {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let writer = crate::pool_options(1).connect(&url).await.unwrap();
        sqlx::query(schema).execute(&writer).await.unwrap();
        let group = GroupCommit::start(writer.clone(), &path).unwrap();
        (dir, writer, group)
    }

    /// Writes that fail after writing leave nothing behind; their neighbours in the same batch
    /// are committed.
    #[tokio::test]
    async fn a_failed_write_rolls_back_alone() {
        let (_dir, writer, group) = started("CREATE TABLE t (x BIGINT PRIMARY KEY)").await;
        let writes = (0..40i64).map(|i| {
            let group = group.clone();
            tokio::spawn(async move {
                group
                    .write(move |conn| {
                        Box::pin(async move {
                            insert_into_t(conn, i).await?;
                            if i % 2 == 1 {
                                return Err(StoreError::invalid("x", "odd"));
                            }
                            Ok(i)
                        })
                    })
                    .await
            })
        });
        let mut answers = Vec::new();
        for write in writes.collect::<Vec<_>>() {
            answers.push(write.await.unwrap());
        }
        for (i, answer) in answers.iter().enumerate() {
            match answer {
                Ok(x) => assert_eq!(*x, i as i64),
                Err(StoreError::Invalid { .. }) => assert_eq!(i % 2, 1),
                Err(other) => panic!("write {i}: {other}"),
            }
        }
        let stored: Vec<i64> = sqlx::query_scalar("SELECT x FROM t ORDER BY x")
            .fetch_all(&writer)
            .await
            .unwrap();
        assert_eq!(stored, (0..40).step_by(2).collect::<Vec<_>>());
    }

    /// An `OR FAIL` statement keeps the rows it wrote before failing (no statement journal);
    /// the group commit still leaves nothing of its write behind, on either pass (the whole
    /// transaction, then the write's savepoint), and commits its neighbours. The delivery store's
    /// multi-row statements rely on this (see `insert_notifications_sql`).
    #[tokio::test]
    async fn a_partly_applied_or_fail_statement_leaves_nothing() {
        let (_dir, writer, group) =
            started("CREATE TABLE t (x BIGINT PRIMARY KEY); INSERT INTO t (x) VALUES (-1)").await;
        let writes = (0..20i64).map(|i| {
            let group = group.clone();
            tokio::spawn(async move {
                group
                    .write(move |conn| {
                        Box::pin(async move {
                            // Odd writes: three rows of their own, then one that exists.
                            let sql = if i % 2 == 1 {
                                "INSERT OR FAIL INTO t (x) VALUES ($1 + 1000), ($1 + 2000), \
                                 ($1 + 3000), (-1)"
                            } else {
                                "INSERT OR FAIL INTO t (x) VALUES ($1 + 1000), ($1 + 2000)"
                            };
                            crate::sql::query(sql).bind(i).execute(conn).await
                        })
                    })
                    .await
            })
        });
        let mut answers = Vec::new();
        for write in writes.collect::<Vec<_>>() {
            answers.push(write.await.unwrap());
        }
        for (i, answer) in answers.iter().enumerate() {
            assert_eq!(answer.is_ok(), i % 2 == 0, "write {i}: {answer:?}");
        }
        let stored: Vec<i64> = sqlx::query_scalar("SELECT x FROM t ORDER BY x")
            .fetch_all(&writer)
            .await
            .unwrap();
        let mut expected: Vec<i64> = (0..20)
            .step_by(2)
            .flat_map(|i| [i + 1000, i + 2000])
            .collect();
        expected.push(-1);
        expected.sort();
        assert_eq!(stored, expected);
    }

    /// A batch whose COMMIT fails (a deferred foreign key, checked at commit) fails every write
    /// in it and leaves no transaction open: the next write commits. (SQLite keeps the
    /// transaction open after such a COMMIT; without the rollback the next BEGIN fails.)
    #[tokio::test]
    async fn a_failed_commit_fails_its_batch_and_the_next_one_commits() {
        let (_dir, writer, group) = started(
            "CREATE TABLE parent (id BIGINT PRIMARY KEY); \
             CREATE TABLE child (id BIGINT PRIMARY KEY, parent BIGINT \
               REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
        )
        .await;
        let insert = |sql: &'static str| {
            let group = group.clone();
            async move {
                group
                    .write(move |conn| {
                        Box::pin(async move { crate::sql::query(sql).execute(conn).await })
                    })
                    .await
            }
        };
        let orphan = insert("INSERT INTO child (id, parent) VALUES (1, 99)").await;
        assert!(orphan.is_err(), "{orphan:?}");
        assert_eq!(
            insert("INSERT INTO parent (id) VALUES (7)").await.unwrap(),
            1
        );
        let parents: Vec<i64> = sqlx::query_scalar("SELECT id FROM parent")
            .fetch_all(&writer)
            .await
            .unwrap();
        let children: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM child")
            .fetch_one(&writer)
            .await
            .unwrap();
        assert_eq!((parents, children), (vec![7], 0));
    }

    /// Every write is answered when the group commit closes with writes still coming: those
    /// taken before the close are written, the rest hear "not stored"; none waits forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_racing_a_close_are_all_answered() {
        let (_dir, writer, group) = started("CREATE TABLE t (x BIGINT PRIMARY KEY)").await;
        let writes: Vec<_> = (0..2000i64)
            .map(|i| {
                let group = group.clone();
                tokio::spawn(async move {
                    group
                        .write(move |conn| Box::pin(insert_into_t(conn, i)))
                        .await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        group.close().await;
        let mut stored = 0;
        for write in writes {
            let answer = tokio::time::timeout(std::time::Duration::from_secs(10), write)
                .await
                .expect("every write is answered")
                .unwrap();
            stored += i64::from(answer.is_ok());
        }
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&writer)
            .await
            .unwrap();
        assert_eq!(rows, stored);
    }
}
