//! `herald-bench`: the benchmark harness of issue #5 (run it through `bench/run`).
//!
//! Starts `herald sandbox` and `herald serve` on loopback (SQLite; PostgreSQL with `--postgres`),
//! runs the scenarios, prints one JSON object per figure on stdout, and with `--report` rewrites the
//! results section of BENCHMARKS.md.

mod client;
mod procs;
mod reference;
mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use serde_json::{Value, json};

use crate::procs::{Sandbox, Server};
use crate::scenarios::{APP, Recipients};

const ALL: &[&str] = &[
    "machine", "memory", "ceiling", "fanout", "accept", "register", "users", "growth", "postgres",
];

#[derive(Parser)]
#[command(name = "herald-bench", about = "Herald benchmarks (see BENCHMARKS.md)")]
struct Cli {
    /// Smaller sizes (same rates): every scenario in a few minutes on 2 cores.
    #[arg(long)]
    quick: bool,
    /// Rewrite the results section of BENCHMARKS.md with these figures.
    #[arg(long)]
    report: bool,
    /// PostgreSQL URL for the `postgres` scenario (default: HERALD_TEST_DATABASE_URL). A fresh
    /// schema is made in it and dropped afterwards.
    #[arg(long)]
    postgres: Option<String>,
    /// The herald binary (a release build).
    #[arg(long, default_value = "target/release/herald")]
    herald: PathBuf,
    /// h2load binary.
    #[arg(long, default_value = "h2load")]
    h2load: String,
    /// Runs per figure (default: 3).
    #[arg(long)]
    runs: Option<usize>,
    /// Only these scenarios (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// BENCHMARKS.md to rewrite with --report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    benchmarks_md: PathBuf,
    /// Keep the work directory (logs, databases) instead of deleting it.
    #[arg(long)]
    keep: bool,
    /// The command line to write into the report.
    #[arg(long, default_value = "bench/run")]
    command_line: String,
    /// Serve the `machine` scenario's bare handler on this address instead (used by the
    /// benchmark itself).
    #[arg(long, hide = true)]
    bare_server: Option<std::net::SocketAddr>,
}

struct Sizes {
    fanout_requests: usize,
    accept_seconds: u64,
    register_per_run: usize,
    users_total: usize,
    growth_small: usize,
    growth_large: usize,
    ceiling_requests: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                fanout_requests: 10,
                accept_seconds: 5,
                register_per_run: 10_000,
                users_total: 30_000,
                growth_small: 10_000,
                growth_large: 100_000,
                ceiling_requests: 200_000,
            }
        } else {
            Sizes {
                fanout_requests: 10,
                accept_seconds: 20,
                register_per_run: 40_000,
                users_total: 100_000,
                growth_small: 10_000,
                growth_large: 1_000_000,
                ceiling_requests: 1_000_000,
            }
        }
    }
}

/// One reported figure.
#[derive(Clone)]
struct Figure {
    scenario: String,
    metric: String,
    samples: Vec<f64>,
    goal: String,
    /// `Some(met)` when the goal is a threshold.
    met: Option<bool>,
    extra: Value,
}

impl Figure {
    fn new(scenario: &str, metric: &str, samples: Vec<f64>, goal: &str, extra: Value) -> Figure {
        let mut f = Figure {
            scenario: scenario.into(),
            metric: metric.into(),
            samples,
            goal: goal.into(),
            met: None,
            extra,
        };
        f.met = f.judge();
        f
    }

    fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        }
    }

    fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// The goal is met when the median meets the threshold.
    fn judge(&self) -> Option<bool> {
        let (op, value) = self.goal.split_once(' ')?;
        let value: f64 = value.replace(',', "").parse().ok()?;
        let m = self.median();
        match op {
            ">=" => Some(m >= value),
            "<=" => Some(m <= value),
            _ => None,
        }
    }

    fn json(&self) -> Value {
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        let mut v = json!({
            "scenario": self.scenario,
            "metric": self.metric,
            "median": round(self.median()),
            "min": round(self.min()),
            "max": round(self.max()),
            "runs": self.samples.len(),
            "goal": self.goal,
            "met": self.met,
        });
        if let (Some(obj), Some(extra)) = (v.as_object_mut(), self.extra.as_object()) {
            for (k, x) in extra {
                obj.insert(k.clone(), x.clone());
            }
        }
        v
    }
}

/// What a series of fan-outs measured, one sample per run.
#[derive(Default)]
struct FanoutSamples {
    /// Notifications per second.
    rates: Vec<f64>,
    /// Wall-clock µs per notification.
    us: Vec<f64>,
    /// CPU µs per notification of `herald serve` and of the sandbox.
    serve_cpu_us: Vec<f64>,
    sandbox_cpu_us: Vec<f64>,
    /// Peak RSS of `herald serve` seen, when watched.
    peak_rss_mb: Option<f64>,
}

impl FanoutSamples {
    /// Adds the samples of `more` (later runs of the same series).
    fn append(&mut self, more: FanoutSamples) {
        self.rates.extend(more.rates);
        self.us.extend(more.us);
        self.serve_cpu_us.extend(more.serve_cpu_us);
        self.sandbox_cpu_us.extend(more.sandbox_cpu_us);
        self.peak_rss_mb = match (self.peak_rss_mb, more.peak_rss_mb) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

struct Bench {
    cli: Cli,
    sizes: Sizes,
    runs: usize,
    work: PathBuf,
    figures: Vec<Figure>,
    run_id: u64,
}

impl Bench {
    fn emit(&mut self, figure: Figure) {
        println!("{}", figure.json());
        self.figures.push(figure);
    }

    fn wants(&self, scenario: &str) -> bool {
        self.cli.only.is_empty() || self.cli.only.iter().any(|s| s == scenario)
    }

    fn prefix(&mut self, what: &str) -> String {
        self.run_id += 1;
        format!("{what}{}", self.run_id)
    }

    fn token_requests(&mut self, what: &str, total: usize) -> Vec<Recipients> {
        let prefix = self.prefix(what);
        let mut out = Vec::new();
        let mut left = total;
        let mut i = 0;
        while left > 0 {
            let count = left.min(10_000);
            out.push(Recipients::Tokens {
                prefix: format!("{prefix}-{i}"),
                count,
            });
            left -= count;
            i += 1;
        }
        out
    }

    /// One `ceiling` run: h2load against the sandbox's APNs endpoint, 2 connections x 1,000
    /// streams (the engine's fan-out concurrency).
    fn ceiling_run(&self, sandbox: &Sandbox) -> Result<scenarios::H2loadRun> {
        scenarios::h2load(
            &self.cli.h2load,
            sandbox,
            &self.work,
            self.sizes.ceiling_requests,
            2,
            1000,
        )
    }

    /// `runs` fan-outs of `total` direct tokens through `server`, with the CPU time `server` and
    /// the sandbox spent on each.
    async fn fanout_runs(
        &mut self,
        server: &Server,
        sandbox: &Sandbox,
        total: usize,
        runs: usize,
        watch_rss: bool,
    ) -> Result<FanoutSamples> {
        let mut samples = FanoutSamples::default();
        for _ in 0..runs {
            let requests = self.token_requests("f", total);
            let cpu = || -> Result<(f64, f64)> {
                Ok((
                    server.proc.cpu_seconds().context("herald serve CPU time")?,
                    sandbox.proc.cpu_seconds().context("sandbox CPU time")?,
                ))
            };
            let (serve_before, sandbox_before) = cpu()?;
            let run =
                scenarios::fanout(server, requests, watch_rss.then_some(&server.proc)).await?;
            let (serve_after, sandbox_after) = cpu()?;
            let n = run.notifications as f64;
            let serve_us = (serve_after - serve_before) * 1e6 / n;
            let sandbox_us = (sandbox_after - sandbox_before) * 1e6 / n;
            eprintln!(
                "  {} notifications in {:.2} s ({:.0}/s); CPU per notification: serve {serve_us:.1} µs, sandbox {sandbox_us:.1} µs",
                run.notifications,
                run.seconds,
                n / run.seconds
            );
            samples.rates.push(n / run.seconds);
            samples.us.push(run.seconds * 1e6 / n);
            samples.serve_cpu_us.push(serve_us);
            samples.sandbox_cpu_us.push(sandbox_us);
            if let Some(p) = run.peak_rss_mb {
                samples.peak_rss_mb = Some(samples.peak_rss_mb.unwrap_or(0.0).max(p));
            }
            scenarios::settle(server).await?;
        }
        Ok(samples)
    }

    async fn run(&mut self) -> Result<()> {
        let herald = self.cli.herald.clone();
        eprintln!("work directory {}", self.work.display());
        let sandbox = Sandbox::start(&herald, &self.work).await?;
        eprintln!("sandbox on {}", sandbox.addr);
        let sqlite = Server::start(&herald, &self.work, &sandbox, None, &[]).await?;
        eprintln!("herald serve (SQLite) on {}", sqlite.target.addr);
        scenarios::create_credentials(&sqlite, &sandbox).await?;
        let runs = self.runs;

        if self.wants("machine") {
            // The scale figures of issue #5, measured here (see reference.rs).
            eprintln!("machine: a bare axum handler parsing the send body, 64 clients");
            let mut rps = Vec::new();
            for _ in 0..runs {
                let run = reference::bare_handler(self.sizes.accept_seconds, |i| {
                    Bytes::from(format!(
                        r#"{{"from":{{"appName":"{APP}"}},"to":[{{"token":"bare-{i:08}","provider":"APN"}}],"content":{{"title":"Herald bench","body":"Your order shipped"}}}}"#
                    ))
                })
                .await?;
                eprintln!("  {} requests in {:.2} s", run.requests, run.seconds);
                rps.push(run.requests as f64 / run.seconds);
            }
            self.emit(Figure::new(
                "machine",
                "bare_handler_requests_per_s",
                rps,
                "reported",
                json!({"clients": 64, "goals_machine": 50000}),
            ));
            let mut ms = Vec::new();
            for _ in 0..runs {
                ms.push(reference::fsync_commit_ms(&self.work, 300).await?);
            }
            self.emit(Figure::new(
                "machine",
                "fsync_commit_ms",
                ms,
                "reported",
                json!({"commits_per_run": 300, "goals_machine": 0.26}),
            ));
        }

        if self.wants("memory") {
            // Idle: after start-up and the credentials, before any load.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let rss = sqlite.proc.rss_mb().context("reading VmRSS")?;
            self.emit(Figure::new(
                "memory",
                "idle_rss_mb",
                vec![rss],
                "<= 30",
                json!({}),
            ));
        }

        let mut ceiling = None;
        let mut client_ceiling = None;
        if self.wants("ceiling") {
            eprintln!("ceiling: h2load -c 2 -m 1000 against the sandbox APNs endpoint");
            let (mut samples, mut h2load_cpu, mut sandbox_cpu) =
                (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                let run = self.ceiling_run(&sandbox)?;
                samples.push(run.requests_per_s);
                h2load_cpu.push(run.h2load_cpu_us);
                sandbox_cpu.push(run.sandbox_cpu_us);
            }
            let f = Figure::new(
                "ceiling",
                "requests_per_s",
                samples,
                "reported",
                json!({"requests": self.sizes.ceiling_requests, "connections": 2, "streams_per_connection": 1000}),
            );
            ceiling = Some(f.median());
            self.emit(f);
            self.emit(Figure::new(
                "ceiling",
                "h2load_cpu_us_per_request",
                h2load_cpu,
                "reported",
                json!({}),
            ));
            self.emit(Figure::new(
                "ceiling",
                "sandbox_cpu_us_per_request",
                sandbox_cpu,
                "reported",
                json!({"client": "h2load"}),
            ));

            // Herald's own APNs client under the engine's fan-out concurrency: one client per
            // credential (APN and FCM in the fan-out, so 2) with up to 1000 sends in flight each.
            let (clients, in_flight) = (2, 1000);
            eprintln!(
                "ceiling: Herald's APNs client, {clients} clients x {in_flight} in flight against the sandbox APNs endpoint"
            );
            let mut samples = Vec::new();
            let mut client_cpu = Vec::new();
            let mut connections = 0;
            for _ in 0..runs {
                let run = scenarios::client_ceiling(
                    &sandbox,
                    self.sizes.ceiling_requests,
                    clients,
                    in_flight,
                )
                .await?;
                samples.push(run.requests_per_s);
                client_cpu.push(run.client_cpu_us);
                connections = connections.max(run.connections);
            }
            let f = Figure::new(
                "ceiling",
                "client_requests_per_s",
                samples,
                "reported",
                json!({"requests": self.sizes.ceiling_requests, "clients": clients, "in_flight_per_client": in_flight, "connections_opened": connections}),
            );
            client_ceiling = Some(f.median());
            self.emit(f);
            self.emit(Figure::new(
                "ceiling",
                "client_cpu_us_per_request",
                client_cpu,
                "reported",
                json!({}),
            ));
        }

        let mut fanout_median = None;
        let mut fanout_cpu = None;
        let mut paired_shares = Vec::new();
        if self.wants("fanout") {
            let total = self.sizes.fanout_requests * 10_000;
            eprintln!(
                "fanout: {} requests x 10,000 tokens (SQLite)",
                self.sizes.fanout_requests
            );
            // With the ceiling wanted, h2load runs again right before each fan-out and the share
            // is taken per pair: the VM's speed drifts within minutes, and the ratio of two
            // medians measured a minute apart once showed 0.55 for a machine whose paired
            // ratio was nearer 0.4 (BENCHMARKS.md, 2026-12-06).
            let mut fanout = FanoutSamples::default();
            for _ in 0..runs {
                let paired_ceiling = if self.wants("ceiling") {
                    let run = self.ceiling_run(&sandbox)?;
                    Some(run.requests_per_s)
                } else {
                    None
                };
                let one = self.fanout_runs(&sqlite, &sandbox, total, 1, false).await?;
                if let (Some(c), Some(rate)) = (paired_ceiling, one.rates.first()) {
                    paired_shares.push(rate / c);
                }
                fanout.append(one);
            }
            let f = Figure::new(
                "fanout",
                "notifications_per_s",
                fanout.rates,
                ">= 50000",
                json!({"notifications": total, "backend": "sqlite"}),
            );
            fanout_median = Some(f.median());
            self.emit(f);
            let serve = Figure::new(
                "fanout",
                "serve_cpu_us_per_notification",
                fanout.serve_cpu_us,
                "reported",
                json!({"backend": "sqlite"}),
            );
            let sandbox_cpu = Figure::new(
                "fanout",
                "sandbox_cpu_us_per_notification",
                fanout.sandbox_cpu_us,
                "reported",
                json!({"backend": "sqlite"}),
            );
            fanout_cpu = Some((serve.median(), sandbox_cpu.median()));
            self.emit(serve);
            self.emit(sandbox_cpu);
        }
        if !paired_shares.is_empty() {
            self.emit(Figure::new(
                "ceiling",
                "fanout_share_of_ceiling",
                paired_shares,
                ">= 0.5",
                json!({"paired": "each fan-out over an h2load run just before it"}),
            ));
        }
        if let (Some(c), Some((serve_us, sandbox_us))) = (ceiling, fanout_cpu) {
            // Herald and the sandbox share this machine's cores: a fan-out can go no faster than
            // the cores divided by the CPU both spend per notification, whatever else changes.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let cpu_bound = cores * 1e6 / (serve_us + sandbox_us);
            self.emit(Figure::new(
                "ceiling",
                "fanout_cpu_bound_share_of_ceiling",
                vec![cpu_bound / c],
                "reported",
                json!({"cores": cores, "cpu_bound_notifications_per_s": cpu_bound.round()}),
            ));
            // The CPU `herald serve` may spend per notification for the fan-out to reach half
            // of the ceiling, the sandbox's share left as measured.
            self.emit(Figure::new(
                "ceiling",
                "serve_cpu_us_budget_for_half_ceiling",
                vec![cores * 1e6 / (0.5 * c) - sandbox_us],
                "reported",
                json!({"serve_cpu_us_per_notification": (serve_us * 10.0).round() / 10.0}),
            ));
        }
        if let (Some(c), Some(f)) = (client_ceiling, fanout_median) {
            self.emit(Figure::new(
                "ceiling",
                "fanout_share_of_client_ceiling",
                vec![f / c],
                "reported",
                json!({}),
            ));
        }

        if self.wants("accept") {
            eprintln!(
                "accept: 64 clients, {} s, 1 recipient each",
                self.sizes.accept_seconds
            );
            let mut rps = Vec::new();
            let mut p50 = Vec::new();
            let mut p99 = Vec::new();
            let mut delivered = Vec::new();
            for _ in 0..runs {
                let prefix = self.prefix("a");
                let mut run = scenarios::closed_loop(
                    &sqlite.target,
                    64,
                    "/v1/PushNotifications",
                    None,
                    Some(Duration::from_secs(self.sizes.accept_seconds)),
                    202,
                    move |i| {
                        let provider = if i % 2 == 0 { "APN" } else { "FCM" };
                        Bytes::from(format!(
                            r#"{{"from":{{"appName":"{APP}"}},"to":[{{"token":"{prefix}-{i:08}","provider":"{provider}"}}],"content":{{"title":"Herald bench","body":"Your order shipped"}}}}"#
                        ))
                    },
                )
                .await?;
                eprintln!("  {} requests in {:.2} s", run.requests, run.seconds);
                rps.push(run.requests as f64 / run.seconds);
                p50.push(run.latencies.quantile_ms(0.5));
                p99.push(run.latencies.quantile_ms(0.99));
                // Every accepted operation delivered: the engine keeps pace or leaves a backlog.
                let draining = std::time::Instant::now();
                scenarios::settle(&sqlite).await?;
                let drain = draining.elapsed().as_secs_f64();
                eprintln!("  all delivered {drain:.2} s after the load stopped");
                delivered.push(run.requests as f64 / (run.seconds + drain));
            }
            let extra = json!({"clients": 64, "seconds_per_run": self.sizes.accept_seconds});
            self.emit(Figure::new(
                "accept",
                "delivered_operations_per_s",
                delivered,
                "reported",
                extra.clone(),
            ));
            self.emit(Figure::new(
                "accept",
                "requests_per_s",
                rps,
                ">= 10000",
                extra.clone(),
            ));
            self.emit(Figure::new(
                "accept",
                "p50_ms",
                p50,
                "reported",
                extra.clone(),
            ));
            self.emit(Figure::new("accept", "p99_ms", p99, "<= 25", extra));
        }

        let mut registered = 0usize;
        if self.wants("register") || self.wants("users") {
            let per_run = self.sizes.register_per_run;
            let register_runs = if self.wants("register") {
                runs.max(self.sizes.users_total.div_ceil(per_run))
            } else {
                self.sizes.users_total.div_ceil(per_run)
            };
            eprintln!(
                "register: 64 clients, {register_runs} runs x {per_run} new devices (each a new user)"
            );
            let mut rps = Vec::new();
            let mut p50 = Vec::new();
            let mut p99 = Vec::new();
            for _ in 0..register_runs {
                let prefix = self.prefix("r");
                let mut run = scenarios::closed_loop(
                    &sqlite.target,
                    64,
                    "/v1/PushNotifications/DeviceRegistrations",
                    Some(per_run),
                    None,
                    202,
                    move |i| {
                        let provider = if i % 2 == 0 { "APN" } else { "FCM" };
                        Bytes::from(format!(r#"{{"appName":"{APP}","token":"{prefix}-{i:08}","provider":"{provider}"}}"#))
                    },
                )
                .await?;
                eprintln!("  {} registrations in {:.2} s", run.requests, run.seconds);
                registered += run.requests as usize;
                rps.push(run.requests as f64 / run.seconds);
                p50.push(run.latencies.quantile_ms(0.5));
                p99.push(run.latencies.quantile_ms(0.99));
            }
            if self.wants("register") {
                let extra = json!({"clients": 64, "registrations_per_run": per_run});
                self.emit(Figure::new(
                    "register",
                    "requests_per_s",
                    rps,
                    ">= 10000",
                    extra.clone(),
                ));
                self.emit(Figure::new(
                    "register",
                    "p50_ms",
                    p50,
                    "reported",
                    extra.clone(),
                ));
                self.emit(Figure::new("register", "p99_ms", p99, "<= 25", extra));
            }
        }

        if self.wants("users") {
            let mut users = scenarios::all_users(&sqlite).await?;
            users.truncate(self.sizes.users_total);
            eprintln!(
                "users: {} users (of {registered} registered) in requests of 10,000",
                users.len()
            );
            let mut rates = Vec::new();
            for _ in 0..runs {
                let requests: Vec<Recipients> = users
                    .chunks(10_000)
                    .map(|c| Recipients::Users(c.to_vec()))
                    .collect();
                let run = scenarios::fanout(&sqlite, requests, None).await?;
                eprintln!(
                    "  {} notifications in {:.2} s",
                    run.notifications, run.seconds
                );
                rates.push(run.notifications as f64 / run.seconds);
                scenarios::settle(&sqlite).await?;
            }
            self.emit(Figure::new(
                "users",
                "notifications_per_s",
                rates,
                ">= 40000",
                json!({"users": users.len()}),
            ));
        }

        if self.wants("growth") || self.wants("memory") {
            let (small, large) = (self.sizes.growth_small, self.sizes.growth_large);
            eprintln!("growth: {small} and {large} notifications");
            let us_small = self
                .fanout_runs(&sqlite, &sandbox, small, runs, false)
                .await?
                .us;
            let large_runs = if self.cli.quick { runs } else { 1 };
            let large_run = self
                .fanout_runs(&sqlite, &sandbox, large, large_runs, true)
                .await?;
            let (us_large, peak) = (large_run.us, large_run.peak_rss_mb);
            let sizes = json!({"size_small": small, "size_large": large});
            if self.wants("growth") {
                let s = Figure::new(
                    "growth",
                    "us_per_notification_small",
                    us_small,
                    "reported",
                    sizes.clone(),
                );
                let l = Figure::new(
                    "growth",
                    "us_per_notification_large",
                    us_large,
                    "reported",
                    sizes.clone(),
                );
                let ratio = l.median() / s.median();
                self.emit(s);
                self.emit(l);
                self.emit(Figure::new(
                    "growth",
                    "ratio_large_to_small",
                    vec![ratio],
                    "<= 1.2",
                    sizes.clone(),
                ));
            }
            if self.wants("memory") {
                let goal = if large >= 1_000_000 {
                    "<= 250"
                } else {
                    "reported"
                };
                self.emit(Figure::new(
                    "memory",
                    "peak_rss_mb_large",
                    vec![peak.unwrap_or(f64::NAN)],
                    goal,
                    sizes,
                ));
            }
        }
        drop(sqlite);
        // The SQLite database (a gigabyte after a full growth run) is not needed any more; its
        // pages still waiting to be written back would otherwise reach the disk during the
        // postgres runs and slow PostgreSQL's commits (full runs measured 24,000/s there,
        // 27,600–28,700 alone). Deleted (kept with --keep), and the disk settled.
        if !self.cli.keep {
            let _ = std::fs::remove_dir_all(self.work.join("data-sqlite"));
        }
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };

        let postgres = self
            .cli
            .postgres
            .clone()
            .or_else(|| std::env::var("HERALD_TEST_DATABASE_URL").ok());
        if self.wants("postgres") {
            match postgres {
                None => eprintln!(
                    "postgres: skipped (no --postgres URL and no HERALD_TEST_DATABASE_URL)"
                ),
                Some(base) => {
                    let schema = format!("herald_bench_{}_{}", std::process::id(), self.run_id);
                    let url = make_schema(&base, &schema).await?;
                    let result = async {
                        let pg =
                            Server::start(&herald, &self.work, &sandbox, Some(&url), &[]).await?;
                        scenarios::create_credentials(&pg, &sandbox).await?;
                        let total = self.sizes.fanout_requests * 10_000;
                        eprintln!("postgres: fanout {total} notifications");
                        let rates = self
                            .fanout_runs(&pg, &sandbox, total, runs, false)
                            .await?
                            .rates;
                        self.emit(Figure::new(
                            "postgres",
                            "notifications_per_s",
                            rates,
                            ">= 25000",
                            json!({"notifications": total, "backend": "postgres"}),
                        ));
                        anyhow::Ok(())
                    }
                    .await;
                    drop_schema(&base, &schema).await;
                    result?;
                }
            }
        }
        drop(sandbox);
        Ok(())
    }
}

async fn make_schema(base: &str, schema: &str) -> Result<String> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await?;
    let separator = if base.contains('?') { '&' } else { '?' };
    Ok(format!(
        "{base}{separator}options=-c%20search_path%3D{schema}"
    ))
}

async fn drop_schema(base: &str, schema: &str) {
    use sqlx::Connection as _;
    if let Ok(mut conn) = sqlx::PgConnection::connect(base).await {
        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut conn)
            .await;
    }
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gb = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({"cpu": model, "cores": cores, "memory_gb": mem_gb, "kernel": kernel.trim()})
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

const START: &str =
    "<!-- results:start (written by bench/run --report; edit outside these markers) -->";
const END: &str = "<!-- results:end -->";

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    if x.abs() >= 100.0 {
        let s = format!("{:.0}", x);
        // thousands separators
        let (sign, digits) = s.strip_prefix('-').map(|d| ("-", d)).unwrap_or(("", &s));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn report(bench: &Bench, elapsed: Duration) -> Result<()> {
    let m = machine();
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut s = String::new();
    s.push_str(START);
    s.push('\n');
    s.push_str(&format!(
        "\nMeasured {date} on {} ({} cores, {} GB RAM, Linux {}), commit `{}`, with `{}` ({} mode, {} s in all).\nHerald, the sandbox and the load generator share the machine.\n\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["memory_gb"],
        m["kernel"].as_str().unwrap_or("?"),
        git_commit(),
        bench.cli.command_line,
        if bench.cli.quick { "quick" } else { "full" },
        elapsed.as_secs()
    ));
    s.push_str("| scenario | metric | median | min | max | runs | goal | met | sizes |\n|---|---|---:|---:|---:|---:|---|---|---|\n");
    for f in &bench.figures {
        let sizes = f
            .extra
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            f.scenario,
            f.metric,
            fmt_num(f.median()),
            fmt_num(f.min()),
            fmt_num(f.max()),
            f.samples.len(),
            f.goal.replace('>', "&gt;").replace('<', "&lt;"),
            met,
            sizes.replace('"', "")
        ));
    }
    s.push('\n');
    s.push_str(END);
    let path = &bench.cli.benchmarks_md;
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(START), old.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{}{}", &old[..a], s, &old[b + END.len()..]),
        _ => format!("# Benchmarks\n\n## Results\n\n{s}\n{old}"),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(addr) = cli.bare_server {
        return reference::serve_bare(addr).await;
    }
    for s in &cli.only {
        anyhow::ensure!(
            ALL.contains(&s.as_str()),
            "unknown scenario {s}; known: {}",
            ALL.join(", ")
        );
    }
    anyhow::ensure!(
        cli.herald.exists(),
        "{} does not exist (build it with cargo build --release -p herald)",
        cli.herald.display()
    );
    let runs = cli.runs.unwrap_or(3).max(1);
    let tmp = std::env::temp_dir().join(format!("herald-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let mut bench = Bench {
        sizes: Sizes::new(cli.quick),
        cli,
        runs,
        work: tmp.clone(),
        figures: Vec::new(),
        run_id: 0,
    };
    let started = std::time::Instant::now();
    let result = bench.run().await;
    if let Err(e) = &result {
        eprintln!("benchmark failed: {e:#}; logs in {}", tmp.display());
    } else if !bench.cli.keep {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if bench.cli.report && !bench.figures.is_empty() {
        report(&bench, started.elapsed())?;
    }
    result
}
