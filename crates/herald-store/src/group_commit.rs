//! Group commit for SQLite: many small writes share one transaction and one fsync.
//!
//! SQLite has one writer, and with `synchronous = FULL` every commit waits for the disk (about a
//! quarter of a millisecond here). Sixty-four clients each sending one small write would spend the
//! writer's whole time waiting on fsync. So the hot writes (accepting a send, registering a
//! device, and the delivery engine's plan, claim and outcome transactions) go to one task that
//! takes every write waiting in its queue, runs each inside its own `SAVEPOINT` of one shared
//! transaction, commits once, and only then answers the callers. A write that fails rolls back to
//! its savepoint and answers with its error; the others are unaffected. A failed commit fails
//! every write of the batch: nothing is answered as stored before it is on disk.
//!
//! PostgreSQL does not use this: it has many writers and groups concurrent commits itself.

use futures::future::BoxFuture;
use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

use crate::{Result, StoreError};

/// The most writes one transaction takes (bounds the time the first caller waits).
const MAX_BATCH: usize = 256;

/// Hands a write's result to its caller, or the commit's error when the batch failed.
type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// One queued write: runs on the shared connection, says whether it succeeded, and how to answer.
type Job = Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, (bool, Reply)> + Send>;

/// The queue of the group-commit task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::UnboundedSender<Job>,
}

impl GroupCommit {
    /// Starts the task that writes through `writer` (a pool; the task takes its connection per
    /// batch, so other writers interleave between batches).
    ///
    /// The task has a thread of its own, driven by [`spinning_block_on`]: every statement is a
    /// round trip to sqlx's SQLite worker thread, and a thread that sleeps between them pays a
    /// wake-up (tens of µs here) per statement. On the shared runtime the task also waited behind
    /// HTTP/2 and request tasks. Timers and the tasks sqlx spawns (returning a connection to the
    /// pool) go to the runtime that opened the store.
    pub(crate) fn start(writer: AnyPool) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("herald-group-commit".into())
            .spawn(move || {
                let _context = runtime.enter();
                spinning_block_on(run(writer, jobs));
            })
            .expect("a thread for the group commit");
        Self { queue }
    }

    /// Runs `write` inside the next batch's transaction and returns its result once the batch is
    /// committed.
    pub(crate) async fn write<T, F>(&self, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = write(conn).await;
                let ok = result.is_ok();
                let reply: Reply = Box::new(move |commit_error| {
                    let _ = answer.send(match commit_error {
                        None => result,
                        Some(error) => Err(batch_failed(error)),
                    });
                });
                (ok, reply)
            })
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
        let spinning_since = std::time::Instant::now();
        while !flag.woken.load(Ordering::Acquire) {
            if spinning_since.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::park();
            }
        }
    }
}

async fn run(writer: AnyPool, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let replies = write_batch(&writer, batch.drain(..)).await;
        match replies {
            Ok(replies) => replies.into_iter().for_each(|reply| reply(None)),
            Err((error, replies)) => {
                tracing::warn!(%error, writes = replies.len(), "group commit failed");
                replies.into_iter().for_each(|reply| reply(Some(&error)));
            }
        }
    }
}

/// Runs `batch` in one transaction, each write in its own savepoint; returns the replies to send
/// once committed, or the error that failed the whole batch with the replies of the writes that
/// ran. A write that never ran is dropped, which answers its caller with [`not_stored`].
async fn write_batch(
    writer: &AnyPool,
    batch: impl Iterator<Item = Job>,
) -> std::result::Result<Vec<Reply>, (StoreError, Vec<Reply>)> {
    let started = std::time::Instant::now();
    let mut replies = Vec::with_capacity(MAX_BATCH);
    let mut conn = match writer.acquire().await {
        Ok(conn) => conn,
        Err(error) => return Err((error.into(), replies)),
    };
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(error) => return Err((error.into(), replies)),
    };
    // Each write gets a savepoint; the previous one is released in the same round trip to
    // SQLite's worker thread, so savepoints do not pile up over a batch of 256 writes.
    let mut open = false;
    for job in batch {
        let start = if open {
            "RELEASE one_write; SAVEPOINT one_write"
        } else {
            "SAVEPOINT one_write"
        };
        if let Err(error) = sqlx::query(start).execute(&mut *tx).await {
            let _ = tx.rollback().await;
            return Err((error.into(), replies));
        }
        open = true;
        let (ok, reply) = job(&mut tx).await;
        replies.push(reply);
        if !ok && let Err(error) = sqlx::query("ROLLBACK TO one_write").execute(&mut *tx).await {
            let _ = tx.rollback().await;
            return Err((error.into(), replies));
        }
    }
    let executed = started.elapsed();
    let committed = tx.commit().await;
    tracing::debug!(
        writes = replies.len(),
        run_us = executed.as_micros() as u64,
        commit_us = (started.elapsed() - executed).as_micros() as u64,
        "group commit"
    );
    match committed {
        Ok(()) => Ok(replies),
        Err(error) => Err((error.into(), replies)),
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
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("g.db").display());
        let writer = crate::pool_options(1).connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (x BIGINT PRIMARY KEY)")
            .execute(&writer)
            .await
            .unwrap();
        let group = GroupCommit::start(writer.clone());
        let writes = (0..40i64).map(|i| {
            let group = group.clone();
            tokio::spawn(async move {
                group
                    .write(move |conn| {
                        Box::pin(async move {
                            sqlx::query("INSERT INTO t (x) VALUES ($1)")
                                .bind(i)
                                .execute(&mut *conn)
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
