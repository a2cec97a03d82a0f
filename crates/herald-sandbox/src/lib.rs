//! herald-sandbox: fake, protocol-faithful APNs, FCM HTTP v1 (with its OAuth token endpoint) and
//! legacy FCM servers on one loopback TLS port, with fault injection and a control API.
//!
//! It shares no code with `herald-providers`: the sandbox is what their clients are tested
//! against, so a misreading of Apple's or Google's protocol in one is not mirrored in the other.
//!
//! Endpoints (all on [`RunningSandbox::base_url`]):
//! - APNs `POST /3/device/{token}` (HTTP/2 only)
//! - Google OAuth `POST /token` (JWT bearer grant)
//! - FCM HTTP v1 `POST /v1/projects/{project}/messages:send`
//! - legacy FCM `POST /fcm/send`
//! - control API `/_sandbox/...` (faults, stats, received, goaway, config, info)

mod apns;
mod control;
mod credentials;
mod fcm;
mod http_util;
mod jwt;
mod legacy;
mod server;
mod state;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use credentials::{BUNDLE_ID, CREDENTIAL_FILES, PROJECT_ID, write_credentials};

/// Default listen address of `herald sandbox`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// Default credentials directory of `herald sandbox`.
pub const DEFAULT_CREDENTIALS_DIR: &str = "./sandbox-credentials";

/// How to run a sandbox.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where the credential files live (generated when the directory is empty or missing).
    pub credentials_dir: PathBuf,
    /// Fraction (0–1) of otherwise successful requests answered with a transient error.
    pub fail_rate: f64,
    /// Delay added to every provider answer.
    pub latency_ms: u64,
    /// Keep what was received per token (`/_sandbox/received`); off keeps only stats.
    pub record: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            credentials_dir: PathBuf::from(DEFAULT_CREDENTIALS_DIR),
            fail_rate: 0.0,
            latency_ms: 0,
            record: true,
        }
    }
}

/// A sandbox serving in the background of the current tokio runtime.
pub struct RunningSandbox {
    addr: SocketAddr,
    credentials_dir: PathBuf,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningSandbox {
    /// Binds `listen` (port 0 allowed), generates credentials into `credentials_dir` when it is
    /// empty, and when the bound address differs from the one the files name, rewrites the
    /// address-dependent files (herald.env, token_uri in fcm-service-account.json). Serves until
    /// shutdown.
    pub async fn start(opts: SandboxOptions) -> Result<RunningSandbox> {
        if !(0.0..=1.0).contains(&opts.fail_rate) {
            bail!("fail rate must be between 0 and 1, got {}", opts.fail_rate);
        }
        let listener = TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("binding {}", opts.listen))?;
        let addr = listener.local_addr()?;
        let dir = opts.credentials_dir.clone();
        // Key generation (RSA) is CPU-bound: keep it off the async workers.
        let loaded = tokio::task::spawn_blocking(move || credentials::prepare(&dir, addr))
            .await
            .context("credential preparation panicked")??;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server::tls_config(&loaded)?));
        let state = Arc::new(state::State::new(
            loaded,
            opts.fail_rate,
            opts.latency_ms,
            opts.record,
        ));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(server::serve(listener, acceptor, state, shutdown_rx));
        tracing::info!(addr = %addr, "sandbox providers listening");
        Ok(RunningSandbox {
            addr,
            credentials_dir: opts.credentials_dir,
            shutdown,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`: APNs, FCM, token, legacy and control API all live here.
    pub fn base_url(&self) -> String {
        credentials::base_url(self.addr)
    }

    pub fn credentials_dir(&self) -> &Path {
        &self.credentials_dir
    }

    /// Stops accepting, sends GOAWAY on open connections, waits briefly for in-flight requests.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// `herald sandbox`: run fake APNs / FCM / legacy FCM servers for tests and trials.
#[derive(clap::Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SandboxCli {
    #[command(subcommand)]
    pub command: Option<SandboxCommand>,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Credentials directory; generated when empty or missing.
    #[arg(long = "credentials", value_name = "DIR", default_value = DEFAULT_CREDENTIALS_DIR)]
    pub credentials: PathBuf,
    /// Fraction (0–1) of requests answered with a transient error (APNs 503, FCM UNAVAILABLE).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Delay added to every provider answer, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub latency_ms: u64,
    /// Keep only stats, not what each token received (for benchmarks).
    #[arg(long)]
    pub no_record: bool,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum SandboxCommand {
    /// Write a fresh set of credential files (test CA, APNs key and certificate, FCM service
    /// account, legacy key, herald.env) and exit.
    Credentials {
        /// Directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Sandbox address the files name.
        #[arg(long, default_value = DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
}

/// Runs the CLI: writes credentials, or serves until ctrl-c / SIGTERM, printing its endpoints.
pub async fn run_cli(cli: SandboxCli) -> Result<()> {
    if let Some(SandboxCommand::Credentials { out, listen }) = cli.command {
        let dir = out.clone();
        tokio::task::spawn_blocking(move || write_credentials(&dir, listen))
            .await
            .context("credential generation panicked")??;
        let dir = out.canonicalize().unwrap_or(out);
        println!(
            "wrote sandbox credentials for https://{listen} to {}:",
            dir.display()
        );
        for file in CREDENTIAL_FILES {
            println!("  {}", dir.join(file).display());
        }
        return Ok(());
    }

    let sandbox = RunningSandbox::start(SandboxOptions {
        listen: cli.listen,
        credentials_dir: cli.credentials,
        fail_rate: cli.fail_rate,
        latency_ms: cli.latency_ms,
        record: !cli.no_record,
    })
    .await?;
    let base = sandbox.base_url();
    let dir = sandbox
        .credentials_dir()
        .canonicalize()
        .unwrap_or_else(|_| sandbox.credentials_dir().to_path_buf());
    println!("herald sandbox listening on {base}");
    println!("  APNs         POST {base}/3/device/{{token}}   (HTTP/2; topic {BUNDLE_ID})");
    println!("  FCM OAuth    POST {base}/token");
    println!("  FCM v1       POST {base}/v1/projects/{PROJECT_ID}/messages:send");
    println!("  FCM legacy   POST {base}/fcm/send");
    println!("  control API       {base}/_sandbox/{{faults,stats,received,goaway,config,info}}");
    println!("  credentials       {}", dir.display());
    println!(
        "  point Herald here: set -a; . {}; set +a",
        dir.join("herald.env").display()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();

    wait_for_signal().await?;
    println!("herald sandbox shutting down");
    sandbox.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for ctrl-c")?,
        _ = term.recv() => {}
    }
    Ok(())
}
