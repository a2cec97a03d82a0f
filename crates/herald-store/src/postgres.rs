//! PostgreSQL specifics: one pool for reads and writes; several Herald nodes may share the
//! database (migrations take sqlx's advisory lock, queue claims use `FOR UPDATE SKIP LOCKED`).

use std::str::FromStr;

use sqlx::AnyPool;
use sqlx::any::AnyConnectOptions;

use crate::{Result, pool_options};

const CONNECTIONS: u32 = 16;

pub(crate) async fn connect(url: &str) -> Result<AnyPool> {
    let options = AnyConnectOptions::from_str(url)?;
    let pool = pool_options(CONNECTIONS).connect_with(options).await?;
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    Ok(pool)
}
