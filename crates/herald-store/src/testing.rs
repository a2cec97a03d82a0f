//! Fresh databases for tests: a SQLite file in a temporary directory, and — when
//! `HERALD_TEST_DATABASE_URL` is set — a PostgreSQL schema of its own, dropped afterwards. Every
//! test suite that needs a store runs against each of [`TestDatabase::all`].

use std::str::FromStr;

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, Connection, Executor};

use crate::{MasterKey, SqlStore, StoreLimits};

/// The environment variable that turns the PostgreSQL tests on.
pub const POSTGRES_URL_ENV: &str = "HERALD_TEST_DATABASE_URL";

/// One test database. Keep it alive for as long as the test uses the store.
pub struct TestDatabase {
    pub name: &'static str,
    pub url: String,
    pub master_key: MasterKey,
    dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = SqlStore::default_sqlite_url(dir.path());
        Self {
            name: "sqlite",
            url,
            master_key: MasterKey::generate(),
            dir,
            postgres: None,
        }
    }

    /// A new schema in the PostgreSQL database named by `HERALD_TEST_DATABASE_URL`, or `None`
    /// when it is not set.
    pub async fn postgres() -> Option<Self> {
        let base = std::env::var(POSTGRES_URL_ENV)
            .ok()
            .filter(|url| !url.is_empty())?;
        sqlx::any::install_default_drivers();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let random = uuid::Uuid::new_v4().simple().to_string();
        let schema = format!("herald_test_{now}_{}", &random[..12]);
        let options = AnyConnectOptions::from_str(&base).expect("HERALD_TEST_DATABASE_URL parses");
        let mut conn = AnyConnection::connect_with(&options)
            .await
            .expect("connect to test PostgreSQL");
        drop_stale_schemas(&mut conn, now).await;
        conn.execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .expect("create schema");
        conn.close().await.ok();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
        Some(Self {
            name: "postgres",
            url,
            master_key: MasterKey::generate(),
            dir: tempfile::tempdir().expect("temp dir"),
            postgres: Some((base, schema)),
        })
    }

    /// SQLite always, PostgreSQL when configured.
    pub async fn all() -> Vec<Self> {
        let mut all = vec![Self::sqlite().await];
        all.extend(Self::postgres().await);
        all
    }

    /// A directory that lives as long as this database (data dir for servers under test).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub async fn store(&self) -> SqlStore {
        self.store_with_limits(StoreLimits::default()).await
    }

    pub async fn store_with_limits(&self, limits: StoreLimits) -> SqlStore {
        SqlStore::connect(&self.url, &self.master_key, limits)
            .await
            .expect("store connects")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((base, schema)) = self.postgres.take() {
            // Drop the schema on a thread of its own: Drop may run inside a runtime.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    runtime.block_on(async move {
                        if let Ok(options) = AnyConnectOptions::from_str(&base)
                            && let Ok(mut conn) = AnyConnection::connect_with(&options).await
                        {
                            // A connection of the test's own pool may still hold a lock
                            // (its rollback waits for the runtime this thread blocks): give up
                            // after a while instead of hanging; a later run drops the schema.
                            let _ = conn.execute("SET lock_timeout = '5s'").await;
                            let drop = format!("DROP SCHEMA {schema} CASCADE");
                            let _ = conn.execute(drop.as_str()).await;
                            let _ = conn.close().await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// Drops test schemas left behind (by a killed test run) more than two hours ago.
async fn drop_stale_schemas(conn: &mut AnyConnection, now: u64) {
    use sqlx::Row;
    let _ = conn.execute("SET lock_timeout = '1s'").await;
    let rows = sqlx::query(
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'herald_test_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    for row in rows {
        let name: String = row.get(0);
        let created = name
            .strip_prefix("herald_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|created| created + 7200 < now) {
            let _ = conn
                .execute(format!("DROP SCHEMA {name} CASCADE").as_str())
                .await;
        }
    }
    let _ = conn.execute("SET lock_timeout = 0").await;
}

/// A send from the app `shop` to the APNs tokens `tok-0`, `tok-1`, … (`recipients` of them).
pub fn send_to_apn_tokens(recipients: usize) -> herald_core::send::SendRequest {
    use herald_core::send::{Content, Priority, Recipient, SendRequest, Sender};
    SendRequest {
        from: Sender::App {
            app_name: herald_core::AppName::parse("shop").expect("a valid app name"),
        },
        to: (0..recipients)
            .map(|i| Recipient::Device {
                token: format!("tok-{i}"),
                provider: herald_core::Provider::Apn,
                variables: Default::default(),
            })
            .collect(),
        content: Content {
            body: Some("hi".into()),
            ..Content::default()
        },
        silent: false,
        priority: Priority::High,
        sound: None,
        ttl: 3600,
        collapse_key: None,
        apn: None,
        fcm: None,
        send_at_ms: None,
        tags: herald_core::Tags::default(),
        templated: false,
    }
}

/// A new operation of [`send_to_apn_tokens`]`(recipients)` in `account`, and the planning task
/// claimed next (this operation's when no other waits to be planned).
pub async fn operation_to_plan(
    store: &SqlStore,
    account: &str,
    recipients: usize,
) -> (String, crate::delivery::PlanTask) {
    use crate::DeliveryStore;
    let id = store
        .create_operation(crate::delivery::NewOperation {
            account_sid: account.to_owned(),
            request: send_to_apn_tokens(recipients),
            idempotency: None,
        })
        .await
        .expect("the operation is stored")
        .id;
    let task = store
        .claim_operations_to_plan(herald_core::time::now_ms(), 60_000, 1)
        .await
        .expect("claiming an operation to plan")
        .remove(0);
    (id, task)
}
