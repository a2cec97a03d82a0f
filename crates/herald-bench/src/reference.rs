//! The `machine` scenario: the three scale figures the benchmark's goals were set against (issue
//! #5), measured on this machine, so that figures from different machines can be compared.
//!
//! - a bare axum handler that parses the send body, at 64 connections (the goals' machine: about
//!   50,000 req/s);
//! - one fsync'd single-row SQLite commit in WAL mode with `synchronous = FULL`, as Herald's store
//!   runs it (the goals' machine: about 0.26 ms).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Json;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{Conn, Target};
use crate::procs::{Proc, free_addr};
use crate::scenarios::{LoadRun, closed_loop};

/// The part of a send request the bare handler parses (the shape Herald's handler takes).
#[derive(Deserialize)]
#[allow(dead_code)] // parsed, not read: parsing is the work being measured
struct SendBody {
    from: Value,
    to: Vec<Recipient>,
    content: Value,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Recipient {
    token: Option<String>,
    provider: Option<String>,
    #[serde(rename = "userId")]
    user_id: Option<String>,
}

/// Serves the bare handler on `addr` until killed (`herald-bench --bare-server ADDR`).
pub async fn serve_bare(addr: SocketAddr) -> Result<()> {
    let app = axum::Router::new().route(
        "/v1/PushNotifications",
        post(|Json(body): Json<SendBody>| async move {
            (
                StatusCode::ACCEPTED,
                Json(json!({"status": "QUEUED", "recipients": body.to.len()})),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Starts `herald-bench --bare-server` and loads it with `body(i)` from 64 connections for
/// `seconds`.
pub async fn bare_handler(
    seconds: u64,
    body: impl Fn(usize) -> bytes::Bytes + Send + Sync + 'static,
) -> Result<LoadRun> {
    let addr = free_addr()?;
    let child = Command::new(std::env::current_exe()?)
        .arg("--bare-server")
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .spawn()
        .context("starting the bare server")?;
    let _proc = Proc::from_child(child);
    let target = Target::new(addr, "bench", "bench");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Conn::open(&target).await.is_err() {
        if Instant::now() > deadline {
            bail!("the bare server did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    closed_loop(
        &target,
        64,
        "/v1/PushNotifications",
        None,
        Some(Duration::from_secs(seconds)),
        202,
        body,
    )
    .await
}

/// Median ms of `commits` single-row commits into a fresh SQLite file in `dir`, one after the
/// other, with the store's durability settings.
pub async fn fsync_commit_ms(dir: &Path, commits: usize) -> Result<f64> {
    use sqlx::ConnectOptions as _;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    let path = dir.join("fsync-reference.db");
    let _ = std::fs::remove_file(&path);
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await?;
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .execute(&mut conn)
        .await?;
    let mut ms = Vec::with_capacity(commits);
    for i in 0..commits {
        let started = Instant::now();
        sqlx::query("INSERT INTO t (v) VALUES ($1)")
            .bind(format!("row {i}"))
            .execute(&mut conn)
            .await?;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("fsync-reference.db{suffix}")));
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}
