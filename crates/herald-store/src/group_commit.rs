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
//! thread holds that connection while its transaction is open, so the two never wait on each
//! other's locks inside SQLite (whose busy handler sleeps in steps of milliseconds).
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

use futures::future::BoxFuture;
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

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
        let result = match (commit_error, self.result) {
            (Some(error), _) => Err(batch_failed(error)),
            (None, Some(result)) => result,
            (None, None) => Err(not_stored()),
        };
        let _ = self.answer.send(result);
    }
}

/// The queue of the group-commit task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::UnboundedSender<Job>,
}

impl GroupCommit {
    /// Opens the group commit's own connection to the SQLite database at `path` and starts the
    /// thread that writes through it. `writer` is the store's sqlx writer pool (one connection):
    /// the thread holds its connection during each batch, so other writes wait their turn there.
    ///
    /// The thread is driven by [`spinning_block_on`]: a batch's writes usually come from tasks
    /// woken by the previous batch's answers, within microseconds, and a thread that sleeps
    /// between batches pays a wake-up (tens of µs here) each time. Timers and the tasks sqlx
    /// spawns (returning the writer connection to its pool) go to the runtime that opened the
    /// store.
    pub(crate) fn start(writer: AnyPool, path: &Path) -> Result<Self> {
        let conn = crate::sqlite::open_group_commit_connection(path)?;
        let (queue, jobs) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("herald-group-commit".into())
            .spawn(move || {
                let _context = runtime.enter();
                spinning_block_on(run(writer, Mutex::new(conn), jobs));
            })
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
        self.queue.send(job).map_err(|_| not_stored())?;
        answered.await.map_err(|_| not_stored())?
    }
}

/// The error a write of a failed batch answers with (errors do not clone; the message does).
fn batch_failed(error: &StoreError) -> StoreError {
    StoreError::Database(sqlx::Error::Protocol(format!(
        "the transaction holding this write failed: {error}"
    )))
}

/// How long the group-commit thread spins for a wake-up before it sleeps.
const SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// Runs `future` to completion on this thread. Between polls it spins for up to [`SPIN`] before
/// sleeping, so an answer from SQLite's worker thread (which comes within a few µs) costs no
/// wake-up; an idle queue still sleeps.
fn spinning_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    struct Flag {
        woken: AtomicBool,
        thread: std::thread::Thread,
    }
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.woken.store(true, Ordering::Release);
            self.thread.unpark();
        }
    }

    let flag = Arc::new(Flag {
        woken: AtomicBool::new(true),
        thread: std::thread::current(),
    });
    let waker = Waker::from(flag.clone());
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if flag.woken.swap(false, Ordering::AcqRel)
            && let Poll::Ready(output) = future.as_mut().poll(&mut context)
        {
            return output;
        }
        // The clock is read every CLOCK_EVERY turns only: read on every turn, it was a tenth of
        // the serve process's CPU in the `accept` benchmark.
        const CLOCK_EVERY: u32 = 64;
        let spinning_since = std::time::Instant::now();
        let mut turns = 0u32;
        while !flag.woken.load(Ordering::Acquire) {
            turns = turns.wrapping_add(1);
            if !turns.is_multiple_of(CLOCK_EVERY) || spinning_since.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::park();
            }
        }
    }
}

async fn run(
    writer: AnyPool,
    conn: Mutex<rusqlite::Connection>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let committed = match writer.acquire().await {
            Ok(_turn) => write_batch(&conn, &mut batch).await,
            Err(error) => Err(error.into()),
        };
        if let Err(error) = &committed {
            tracing::warn!(%error, writes = batch.len(), "group commit failed");
        }
        let commit_error = committed.err();
        for job in batch.drain(..) {
            job.answer(commit_error.as_ref());
        }
    }
}

/// Runs `batch` in one transaction and commits it: first without savepoints; when a write fails,
/// the transaction is rolled back and the batch runs again with a savepoint per write. The jobs
/// keep their results, answered by the caller.
async fn write_batch(conn: &Mutex<rusqlite::Connection>, batch: &mut [Job]) -> Result<()> {
    let started = std::time::Instant::now();
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
        if let Err(error) = run("COMMIT") {
            // A failed COMMIT can leave the transaction open; the next batch must start clean.
            let _ = run("ROLLBACK");
            return Err(error);
        }
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

    /// Writes that fail after writing leave nothing behind; their neighbours in the same batch
    /// are committed.
    #[tokio::test]
    async fn a_failed_write_rolls_back_alone() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let writer = crate::pool_options(1).connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (x BIGINT PRIMARY KEY)")
            .execute(&writer)
            .await
            .unwrap();
        let group = GroupCommit::start(writer.clone(), &path).unwrap();
        let writes = (0..40i64).map(|i| {
            let group = group.clone();
            tokio::spawn(async move {
                group
                    .write(move |conn| {
                        Box::pin(async move {
                            crate::sql::query("INSERT INTO t (x) VALUES ($1)")
                                .bind(i)
                                .execute(conn)
                                .await?;
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
}
