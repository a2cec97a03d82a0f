//! SQLite specifics: one file in WAL mode with `synchronous=FULL` (a commit is on disk before we
//! answer), a single writer connection and a few readers.

use std::str::FromStr;

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyPool, Executor};

use crate::{Result, StoreError, pool_options};

const READERS: u32 = 8;

pub(crate) async fn connect(url: &str) -> Result<(AnyPool, AnyPool)> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    if let Some(parent) = std::path::Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
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
            conn.execute(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; \
                 PRAGMA temp_store = MEMORY; \
                 PRAGMA foreign_keys = ON;",
            )
            .await?;
            Ok(())
        })
    }
    let writer = pool_options(1)
        .after_connect(setup)
        .connect_with(options.clone())
        .await?;
    sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
    let reader = pool_options(READERS)
        .after_connect(setup)
        .connect_with(options)
        .await?;
    Ok((reader, writer))
}
