//! The processes a benchmark runs: `herald sandbox` and `herald serve`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::client::{Conn, Target, wait_healthy};

pub fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A child process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    pub fn from_child(child: Child) -> Proc {
        Proc { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size now (VmRSS) in MiB.
    pub fn rss_mb(&self) -> Option<f64> {
        proc_status_kb(self.pid(), "VmRSS:").map(|kb| kb as f64 / 1024.0)
    }

    /// CPU time used so far (user + system, all threads) in seconds, from `/proc/PID/stat`.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid())
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child by its pid.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// utime + stime of `pid` in seconds (fields 14 and 15 of `/proc/PID/stat`, in clock ticks).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start past its ')'.
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) as f64 / ticks.max(1) as f64)
}

fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// `herald sandbox --no-record` with fresh credentials in `dir`.
pub struct Sandbox {
    /// Stopped on drop.
    pub proc: Proc,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// `herald.env` as key/value pairs.
    pub env: Vec<(String, String)>,
}

impl Sandbox {
    pub async fn start(herald: &Path, dir: &Path) -> Result<Sandbox> {
        let addr = free_addr()?;
        let creds = dir.join("sandbox");
        let log = dir.join("sandbox.log");
        let child = Command::new(herald)
            .arg("sandbox")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--credentials")
            .arg(&creds)
            .arg("--no-record")
            // BENCH_HERALD_LOG (e.g. `herald_delivery=debug`) for a closer look, with --keep.
            .env(
                "HERALD_LOG",
                std::env::var("BENCH_HERALD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::from(log_file(&log)?))
            .stderr(Stdio::from(log_file(&log)?))
            .spawn()
            .context("starting herald sandbox")?;
        let proc = Proc { child };
        // It binds first and writes credentials after: wait for its banner.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening on")
        {
            if Instant::now() > deadline {
                bail!("herald sandbox did not start; see {}", log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let env = std::fs::read_to_string(creds.join("herald.env"))?
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect();
        Ok(Sandbox {
            proc,
            addr,
            dir: creds,
            env,
        })
    }
}

/// `herald serve` over SQLite (in `dir`) or PostgreSQL.
pub struct Server {
    pub proc: Proc,
    pub target: Target,
}

impl Server {
    pub async fn start(
        herald: &Path,
        dir: &Path,
        sandbox: &Sandbox,
        database_url: Option<&str>,
        extra: &[(String, String)],
    ) -> Result<Server> {
        let addr = free_addr()?;
        let data = dir.join(if database_url.is_some() {
            "data-postgres"
        } else {
            "data-sqlite"
        });
        std::fs::create_dir_all(&data)?;
        let log = dir.join(if database_url.is_some() {
            "serve-postgres.log"
        } else {
            "serve-sqlite.log"
        });
        let mut command = Command::new(herald);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(addr.to_string())
            .args([
                "--rate-limit-per-second",
                "100000000",
                "--rate-limit-burst",
                "100000000",
            ])
            .env_remove("HERALD_DATABASE_URL")
            .env_remove("HERALD_CONFIG")
            // BENCH_HERALD_LOG (e.g. `herald_delivery=debug`) for a closer look, with --keep.
            .env(
                "HERALD_LOG",
                std::env::var("BENCH_HERALD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::from(log_file(&log)?))
            .stderr(Stdio::from(log_file(&log)?));
        for (k, v) in &sandbox.env {
            command.env(k, v);
        }
        for (k, v) in extra {
            command.env(k, v);
        }
        if let Some(url) = database_url {
            command.env("HERALD_DATABASE_URL", url);
        }
        let proc = Proc {
            child: command.spawn().context("starting herald serve")?,
        };
        wait_healthy(addr, "/healthz", Duration::from_secs(60))
            .await
            .with_context(|| {
                format!("herald serve did not become healthy; see {}", log.display())
            })?;
        let account: Value =
            serde_json::from_slice(&std::fs::read(data.join("bootstrap-account.json"))?)?;
        let target = Target::new(
            addr,
            account["accountSid"].as_str().context("accountSid")?,
            account["authToken"].as_str().context("authToken")?,
        );
        Ok(Server { proc, target })
    }

    pub async fn conn(&self) -> Result<Conn> {
        Conn::open(&self.target).await
    }
}
