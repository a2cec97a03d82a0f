//! SQLite specifics: one file in WAL mode with `synchronous=FULL` (a commit is on disk before we
//! answer), a single sqlx writer connection, the group commit's own connection, a few sqlx
//! readers, the embedded readers of the hot point reads, and WAL checkpoints run by a reader
//! connection in the background rather than by the writers' commits.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, TryLockError};

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyPool, Executor};

use crate::{Result, StoreError, pool_options};

const READERS: u32 = 8;

/// Every connection's settings. `busy_timeout` matters when another process writes to the file
/// (Herald's own two writers take turns; see [`crate::group_commit`]).
const PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA busy_timeout = 10000; PRAGMA temp_store = MEMORY; \
     PRAGMA wal_autocheckpoint = 10000; PRAGMA journal_size_limit = 67108864; \
     PRAGMA foreign_keys = ON;";

/// Opens the database at `url`, runs the migrations, and returns the reader pool, the writer
/// pool and the database file's path (for the group commit's own connection).
pub(crate) async fn connect(url: &str) -> Result<(AnyPool, AnyPool, PathBuf)> {
    // sqlx's own reading of the URL (percent-decoding included), so that every connection opens
    // the same file.
    let parsed = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Err(StoreError::Config(
            "an in-memory SQLite database is not supported (Herald opens several connections to \
             one file); give a file path"
                .into(),
        ));
    }
    let path = parsed.get_filename().to_path_buf();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", parent.display())))?;
    }
    let with_mode = if url.contains('?') {
        url.to_owned()
    } else {
        format!("{url}?mode=rwc")
    };
    let options = AnyConnectOptions::from_str(&with_mode)?;
    fn setup<'c>(
        conn: &'c mut sqlx::AnyConnection,
        _meta: sqlx::pool::PoolConnectionMetadata,
    ) -> futures::future::BoxFuture<'c, std::result::Result<(), sqlx::Error>> {
        Box::pin(async move {
            conn.execute(PRAGMAS).await?;
            Ok(())
        })
    }
    // A ping before each acquire (sqlx's default, for network databases) would cost a round trip
    // to the connection's worker thread on every read. (sqlx still pings each connection handed
    // back to its pool; see group_commit.rs, IDLE_TURN.)
    let writer = pool_options(1)
        .test_before_acquire(false)
        .after_connect(setup)
        .connect_with(options.clone())
        .await?;
    sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
    let reader = pool_options(READERS)
        .test_before_acquire(false)
        .after_connect(setup)
        .connect_with(options)
        .await?;
    tokio::spawn(checkpoint_in_background(reader.clone()));
    Ok((reader, writer, path))
}

/// A `rusqlite` connection of the store's own to the (migrated) database at `path`, with the
/// settings of the others and room for `statements` in its statement cache.
fn open_own_connection(path: &Path, statements: usize) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch(PRAGMAS)?;
    conn.set_prepared_statement_cache_capacity(statements);
    Ok(conn)
}

/// The group commit's own connection, with room in its statement cache for every hot statement.
pub(crate) fn open_group_commit_connection(path: &Path) -> Result<rusqlite::Connection> {
    open_own_connection(path, 256)
}

/// How many connections [`EmbeddedReaders`] opens at least (and one per core beyond that, so
/// that the runtime's workers do not queue for them).
const EMBEDDED_READERS: usize = 4;

/// How long a statement on an embedded reader waits for a lock held by another process (a WAL
/// reader waits only for recovery or another process's exclusive lock): it waits on an async
/// worker thread, so not the 10 s of the other connections.
const EMBEDDED_BUSY_TIMEOUT_MS: u32 = 250;

/// SQLite connections of our own for point reads on the hot paths (the app and default
/// credentials of a send when the API's one-second cache misses, the account's default app),
/// run on the calling thread: a function call of some microseconds. Through sqlx each read is
/// two hand-offs to a worker thread and back, the query and the ping sqlx makes on every
/// connection handed back to its pool. Longer reads stay on sqlx's pool: they would hold an
/// async worker thread.
pub(crate) struct EmbeddedReaders {
    conns: Vec<Mutex<rusqlite::Connection>>,
    next: AtomicUsize,
}

impl EmbeddedReaders {
    pub(crate) fn open(path: &Path) -> Result<EmbeddedReaders> {
        let count = std::thread::available_parallelism()
            .map_or(EMBEDDED_READERS, |n| n.get().max(EMBEDDED_READERS));
        let conns = (0..count)
            .map(|_| {
                let conn = open_own_connection(path, 64)?;
                // Reads only: a write through here would bypass the group commit.
                conn.execute_batch("PRAGMA query_only = ON")?;
                conn.busy_timeout(std::time::Duration::from_millis(
                    EMBEDDED_BUSY_TIMEOUT_MS.into(),
                ))?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EmbeddedReaders {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    /// A connection for one read: a free one if there is one (a statement holds its connection's
    /// lock only while it runs), else the next in turn.
    pub(crate) fn pick(&self) -> &Mutex<rusqlite::Connection> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.conns.len();
        (0..n)
            .map(|i| &self.conns[start.wrapping_add(i) % n])
            // A poisoned lock is free too (statements take it with `into_inner`).
            .find(|conn| !matches!(conn.try_lock(), Err(TryLockError::WouldBlock)))
            .unwrap_or(&self.conns[start % n])
    }
}

/// How often the background checkpoint runs. Often, so that each checkpoint has few pages to
/// copy and its fsync of the database file is short: a commit's fsync of the WAL that comes
/// during it waits for the disk too. Writes that dirty random pages (device registrations: the
/// token index) made every checkpoint of a 200 ms period fsync megabytes, and the commits
/// beside it waited 25–40 ms (register p99 28–33 ms at 120,000 devices; 17–19 ms at 20 ms).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Copies the WAL into the database file every [`CHECKPOINT_EVERY`] from a reader connection.
///
/// Left to itself, the writer checkpoints inside the commit that crosses the WAL's size limit:
/// that commit (and every write waiting on the group commit) then waits for the copy and the
/// database file's fsync, a sixth of the writer's time in a fan-out. A `PASSIVE` checkpoint
/// never blocks the writer. The writer's own automatic checkpoint stays, at 10,000 pages
/// (40 MB), as the bound on the WAL should this task fall behind; `journal_size_limit` truncates
/// the WAL file after it restarts. Ends when the pool is closed.
async fn checkpoint_in_background(reader: AnyPool) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if reader.is_closed() {
            return;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&reader)
            .await
        {
            if reader.is_closed() {
                return;
            }
            tracing::warn!(%error, "background WAL checkpoint failed");
        }
    }
}

#[cfg(test)]
mod tests {
    /// Committed pages reach the database file without the writer checkpointing (its automatic
    /// checkpoint is far away at 10,000 pages): the background task copies them. (Fails with the
    /// task not started.)
    #[tokio::test]
    async fn the_wal_is_checkpointed_in_the_background() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let (reader, writer, _) = super::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let db_size = || std::fs::metadata(&path).unwrap().len();
        sqlx::query("CREATE TABLE filler (x TEXT)")
            .execute(&writer)
            .await
            .unwrap();
        // The migrations' pages reach the file first; then ~1 MB goes to the WAL only.
        tokio::time::sleep(super::CHECKPOINT_EVERY * 10).await;
        let before = db_size();
        sqlx::query("INSERT INTO filler SELECT hex(randomblob(500)) FROM json_each($1)")
            .bind(serde_json::to_string(&vec![0; 1000]).unwrap())
            .execute(&writer)
            .await
            .unwrap();
        // Many checkpoint periods, for a slow disk; without the task the file never grows.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while db_size() <= before + 900_000 && std::time::Instant::now() < deadline {
            tokio::time::sleep(super::CHECKPOINT_EVERY).await;
        }
        assert!(
            db_size() > before + 900_000,
            "{} bytes before, {} after",
            before,
            db_size()
        );
        reader.close().await;
        writer.close().await;
    }

    /// Migration 0010 rebuilds `notifications` without its foreign key: a database written by
    /// the migrations before it keeps its rows, and gets the table's indexes back.
    #[tokio::test]
    async fn notifications_keep_their_rows_when_the_foreign_key_is_dropped() {
        use sqlx::Row;
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
        let mut before = sqlx::migrate!("./migrations/sqlite");
        let upto = before
            .migrations
            .iter()
            .position(|m| m.version == 10)
            .expect("migration 0010");
        before.migrations = before.migrations[..upto].to_vec().into();
        let old = sqlx::AnyPool::connect(&url).await.unwrap();
        before.run(&old).await.unwrap();
        for sql in [
            "INSERT INTO accounts (sid, auth_token_hash, created_at, updated_at) \
             VALUES ('AC1', 'h', 1, 1)",
            "INSERT INTO operations (id, account_sid, status, recipients, created_at, updated_at, \
             expires_at, plan_due_at) VALUES ('op1', 'AC1', 'PROCESSING', 2, 1, 1, 9, 1)",
            "INSERT INTO notifications (id, account_sid, operation_id, recipient_index, provider, \
             token, credential_id, status, priority, due_at, expires_at, created_at, \
             updated_at, sent_at, claim_token, attempts) VALUES \
             ('n1', 'AC1', 'op1', 0, 'APN', 't1', 'c1', 'SENT', 'HIGH', 5, 9, 2, 3, 3, NULL, 1), \
             ('n2', 'AC1', 'op1', 1, 'FCM', 't2', 'c1', 'QUEUED', 'HIGH', 5, 9, 2, 3, NULL, 'k', 1)",
        ] {
            sqlx::query(sql).execute(&old).await.unwrap();
        }
        old.close().await;

        let (reader, writer, _) = super::connect(&url).await.unwrap();
        let rows = sqlx::query(
            "SELECT id, status, token, sent_at, claim_token FROM notifications ORDER BY id",
        )
        .fetch_all(&reader)
        .await
        .unwrap();
        let rows: Vec<String> = rows
            .iter()
            .map(|r| {
                let (id, status, token): (String, String, String) = (r.get(0), r.get(1), r.get(2));
                let (sent_at, claim): (Option<i64>, Option<String>) = (r.get(3), r.get(4));
                format!("{id} {status} {token} {sent_at:?} {claim:?}")
            })
            .collect();
        assert_eq!(
            rows,
            ["n1 SENT t1 Some(3) None", "n2 QUEUED t2 None Some(\"k\")"]
        );
        let keys: i64 =
            sqlx::query("SELECT count(*) FROM pragma_foreign_key_list('notifications')")
                .fetch_one(&reader)
                .await
                .unwrap()
                .get(0);
        assert_eq!(keys, 0);
        let mut indexes: Vec<String> = sqlx::query(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'notifications' \
             AND name NOT LIKE 'sqlite_autoindex%'",
        )
        .fetch_all(&reader)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
        indexes.sort();
        assert_eq!(
            indexes,
            [
                "notifications_by_account",
                "notifications_by_operation",
                "notifications_queue",
                "notifications_scheduled"
            ]
        );
        reader.close().await;
        writer.close().await;
    }

    /// The embedded readers see every commit at once (no snapshot is kept between reads),
    /// refuse writes (those go through the group commit), and are closed with the store.
    #[tokio::test]
    async fn embedded_readers_read_each_commit_and_never_write() {
        use crate::AccountStore;
        use crate::sql::{ReadConn, query};

        let db = crate::testing::TestDatabase::sqlite().await;
        let store = db.store().await;
        async fn count(conn: &mut ReadConn) -> i64 {
            query("SELECT count(*) FROM accounts")
                .fetch_one(&mut conn.conn())
                .await
                .unwrap()
                .try_get::<i64>(0)
                .unwrap()
        }
        let mut conn = store.read_conn().await.unwrap();
        assert!(matches!(conn, ReadConn::Embedded(_)));
        let before = count(&mut conn).await;
        for expected in before + 1..=before + 3 {
            store.create_account(None).await.unwrap();
            assert_eq!(count(&mut conn).await, expected);
        }
        let refused = query("DELETE FROM accounts")
            .execute(&mut conn.conn())
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("readonly"), "{refused}");
        assert_eq!(count(&mut conn).await, before + 3);
        drop(conn);

        let wal = db.dir().join("herald.db-wal");
        assert!(wal.exists(), "WAL before close");
        store.close().await;
        assert!(!wal.exists(), "WAL left after close");
        // Closed: the read falls back to the reader pool, which is closed too.
        assert!(store.read_conn().await.is_err());
    }
}
