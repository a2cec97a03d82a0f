//! Herald's store: the [`Store`] trait the API and the delivery engine use, and its SQL
//! implementation for SQLite (embedded default) and PostgreSQL.
//!
//! One implementation, [`SqlStore`], serves both databases through sqlx's `Any` driver: the SQL is
//! written once in the common dialect (`$1` parameters, `ON CONFLICT`, `RETURNING`), and what
//! differs (connection setup, migrations, queue claims) lives in `sqlite.rs` and `postgres.rs`.
//! Column conventions that keep the two dialects alike: times are `BIGINT` milliseconds since the
//! epoch, booleans are `BIGINT` 0/1, JSON is `TEXT`, bytes are `BLOB`/`BYTEA`. Read every integer
//! column as `i64`.
//!
//! Each resource has its own sub-trait in its own file; [`Store`] is all of them together.

pub mod accounts;
pub mod apps;
pub mod chat_credentials;
pub mod credentials;
pub mod delivery;
pub mod devices;
mod error;
pub mod events;
mod group_commit;
pub mod page;
mod postgres;
mod secret_box;
mod sql;
mod sqlite;
pub mod testing;
pub mod users;

use std::path::Path;
use std::sync::Arc;

use group_commit::GroupCommit;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

pub use accounts::AccountStore;
pub use apps::AppStore;
pub use chat_credentials::ChatCredentialStore;
pub use credentials::CredentialStore;
pub use delivery::DeliveryStore;
pub use devices::DeviceStore;
pub use error::StoreError;
pub use events::{EventStore, NewEvent, insert_events};
pub use page::{Cursor, Page, PageRequest, keyset_condition};
pub use secret_box::{MasterKey, SecretBox, write_private_file};
pub use users::UserStore;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything Herald keeps. Implemented by [`SqlStore`] for SQLite and PostgreSQL.
pub trait Store:
    AccountStore
    + AppStore
    + ChatCredentialStore
    + CredentialStore
    + DeliveryStore
    + DeviceStore
    + EventStore
    + UserStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: AccountStore
        + AppStore
        + ChatCredentialStore
        + CredentialStore
        + DeliveryStore
        + DeviceStore
        + EventStore
        + UserStore
        + Send
        + Sync
        + 'static
{
}

/// Which database a [`SqlStore`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Limits the store enforces inside its transactions (configurable; defaults as the reference).
#[derive(Debug, Clone)]
pub struct StoreLimits {
    pub max_apps_per_account: i64,
    pub max_credentials_per_app: i64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_apps_per_account: 10,
            max_credentials_per_app: 10,
        }
    }
}

/// The SQL store. Cheap to clone.
#[derive(Clone)]
pub struct SqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// Reads. On PostgreSQL the same pool as `writer`.
    reader: AnyPool,
    /// Writes. On SQLite a single connection: SQLite has one writer at a time anyway, and one
    /// connection means no busy-retry storms between our own tasks.
    writer: AnyPool,
    /// On SQLite, the queue that batches the hot single-row writes into shared commits.
    group_commit: Option<GroupCommit>,
    /// On SQLite, the connections of the hot reads ([`SqlStore::read_conn`]); taken by `close`.
    embedded_readers: std::sync::Mutex<Option<Arc<sqlite::EmbeddedReaders>>>,
    secrets: SecretBox,
    limits: StoreLimits,
}

impl SqlStore {
    /// Connects to `database_url` (`sqlite://PATH` or `postgres://...`), runs the migrations, and
    /// returns the store. `master_key` encrypts credential content and keys the token hashes.
    pub async fn connect(
        database_url: &str,
        master_key: &MasterKey,
        limits: StoreLimits,
    ) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (backend, reader, writer, group_commit, embedded_readers) =
            if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
                let pool = postgres::connect(database_url).await?;
                (Backend::Postgres, pool.clone(), pool, None, None)
            } else if database_url.starts_with("sqlite:") {
                let (reader, writer, path) = sqlite::connect(database_url).await?;
                let readers = Arc::new(sqlite::EmbeddedReaders::open(&path)?);
                let group_commit = GroupCommit::start(writer.clone(), &path)?;
                (
                    Backend::Sqlite,
                    reader,
                    writer,
                    Some(group_commit),
                    Some(readers),
                )
            } else {
                return Err(StoreError::Config(format!(
                    "database URL must start with sqlite: or postgres: (got {})",
                    redact_url(database_url)
                )));
            };
        let store = Self {
            inner: Arc::new(Inner {
                backend,
                reader,
                group_commit,
                embedded_readers: std::sync::Mutex::new(embedded_readers),
                writer,
                secrets: SecretBox::new(master_key),
                limits,
            }),
        };
        Ok(store)
    }

    /// The SQLite URL of the embedded default database in `data_dir`.
    pub fn default_sqlite_url(data_dir: &Path) -> String {
        format!("sqlite://{}", data_dir.join("herald.db").display())
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }
    pub(crate) fn reader(&self) -> &AnyPool {
        &self.inner.reader
    }
    pub(crate) fn writer(&self) -> &AnyPool {
        &self.inner.writer
    }
    pub(crate) fn group_commit(&self) -> Option<&GroupCommit> {
        self.inner.group_commit.as_ref()
    }

    /// A connection for a short read on a hot path: on SQLite one of our own, where a statement
    /// runs on this thread ([`sqlite::EmbeddedReaders`]); otherwise (and after `close`) one of
    /// the reader pool.
    pub(crate) async fn read_conn(&self) -> Result<sql::ReadConn> {
        let embedded = self
            .inner
            .embedded_readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Ok(match embedded {
            Some(readers) => sql::ReadConn::Embedded(readers),
            None => sql::ReadConn::Pool(self.reader().acquire().await?),
        })
    }

    /// Runs `write` as one write transaction, committed when this returns `Ok`; rolled back on
    /// `Err`. On SQLite it joins the group commit (a shared transaction, where `write` may run
    /// twice: it must clone what it needs on each run); on PostgreSQL it is a transaction of its
    /// own.
    pub(crate) async fn write<T, F>(&self, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c mut sql::Conn<'c>) -> futures::future::BoxFuture<'c, Result<T>>
            + Send
            + 'static,
    {
        if let Some(group) = self.group_commit() {
            return group.write(write).await;
        }
        let mut tx = self.writer().begin().await?;
        let result = write(&mut sql::Conn::Sqlx(&mut tx)).await;
        match result {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(error) => {
                // The error is the answer; a failed rollback only closes the connection.
                let _ = tx.rollback().await;
                Err(error)
            }
        }
    }
    pub(crate) fn secrets(&self) -> &SecretBox {
        &self.inner.secrets
    }
    pub(crate) fn limits(&self) -> &StoreLimits {
        &self.inner.limits
    }

    /// Closes every connection (SQLite checkpoints its WAL on the last close): the embedded
    /// readers first, then the group commit's, after the writes queued before this call.
    pub async fn close(&self) {
        // Closed before the others: SQLite checkpoints the WAL when its last connection closes.
        drop(
            self.inner
                .embedded_readers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        if let Some(group) = self.group_commit() {
            group.close().await;
        }
        // Until the pool is empty: sqlx 0.8's `Pool::close` closes the idle connections, then
        // waits for the checked-out ones, but leaves open one that comes back idle during that
        // wait (the group commit's turn, handed back as it closed; a read that was finishing),
        // and its permit count can let it return while one is still out (sqlx issue #3217).
        // Such a connection stayed open, so the last close was not the last and the WAL was left
        // behind (`closing_a_sqlite_store_checkpoints_and_removes_the_wal` failed ~1 run in 4).
        // `size()` counts a connection until its close has finished.
        for pool in [&self.inner.writer, &self.inner.reader] {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                pool.close().await;
                if pool.size() == 0 {
                    break;
                }
                if std::time::Instant::now() >= deadline {
                    tracing::warn!(
                        open = pool.size(),
                        "database connections still open after 5 s of closing"
                    );
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    }
}

/// Pool options shared by both backends.
pub(crate) fn pool_options(max_connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(30))
}

/// A database URL with any password replaced, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
