//! Configuration: command-line flags, each with an environment twin (`HERALD_*`), over an
//! optional TOML file (`--config`) with the same keys in snake_case, over defaults.
//! Precedence: flag > environment > file > default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use herald_api::ApiConfig;
use herald_api::rate_limit::RateLimit;
use herald_delivery::events::EventSenderConfig;
use herald_delivery::{EngineConfig, RetryPolicy};
use herald_store::{MasterKey, SqlStore, StoreLimits};
use serde::Deserialize;

/// Where the data lives; shared by `serve`, `accounts` and `keys`.
#[derive(Args, Debug, Clone, Default)]
pub struct StoreArgs {
    /// TOML configuration file (same keys as the flags, in snake_case).
    #[arg(long, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: SQLite database, master key file, bootstrap account file.
    #[arg(long, env = "HERALD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `postgres://...` for PostgreSQL; default: the SQLite file `DATA_DIR/herald.db`.
    #[arg(long, env = "HERALD_DATABASE_URL")]
    pub database_url: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on.
    #[arg(long, env = "HERALD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Base of the absolute URLs in responses (default `http://LISTEN`, `https://` with TLS).
    #[arg(long, env = "HERALD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// PEM certificate chain to serve TLS with (needs `--tls-key-file`).
    #[arg(long, env = "HERALD_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for `--tls-cert-file`.
    #[arg(long, env = "HERALD_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Requests per second each account may make (token bucket refill).
    #[arg(long, env = "HERALD_RATE_LIMIT_PER_SECOND")]
    pub rate_limit_per_second: Option<f64>,
    /// Requests an account may burst above the rate.
    #[arg(long, env = "HERALD_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<f64>,
    /// Largest request body in bytes (larger → 413).
    #[arg(long, env = "HERALD_BODY_LIMIT_BYTES")]
    pub body_limit_bytes: Option<usize>,
    /// Apps per account.
    #[arg(long, env = "HERALD_MAX_APPS_PER_ACCOUNT")]
    pub max_apps_per_account: Option<i64>,
    /// Credentials per app.
    #[arg(long, env = "HERALD_MAX_CREDENTIALS_PER_APP")]
    pub max_credentials_per_app: Option<i64>,
    /// Delivery dispatcher tasks (each sending one claimed batch while the previous one's
    /// outcomes are written).
    #[arg(long, env = "HERALD_DELIVERY_WORKERS")]
    pub delivery_workers: Option<usize>,
    /// Notifications claimed per batch.
    #[arg(long, env = "HERALD_DELIVERY_BATCH_SIZE")]
    pub delivery_batch_size: Option<i64>,
    /// How long a node holds claimed work before another node may take it over (ms).
    #[arg(long, env = "HERALD_DELIVERY_LEASE_MS")]
    pub delivery_lease_ms: Option<u64>,
    /// How often idle delivery loops look for due work (ms).
    #[arg(long, env = "HERALD_DELIVERY_POLL_MS")]
    pub delivery_poll_ms: Option<u64>,
    /// Sends in flight at once per credential.
    #[arg(long, env = "HERALD_PER_CREDENTIAL_CONCURRENCY")]
    pub per_credential_concurrency: Option<usize>,
    /// Ceiling of the first retry's delay (ms); it doubles per attempt.
    #[arg(long, env = "HERALD_RETRY_FIRST_DELAY_MS")]
    pub retry_first_delay_ms: Option<u64>,
    /// Cap of the retry delay (ms).
    #[arg(long, env = "HERALD_RETRY_MAX_DELAY_MS")]
    pub retry_max_delay_ms: Option<u64>,
    /// Attempts per notification (the first send included).
    #[arg(long, env = "HERALD_RETRY_MAX_ATTEMPTS")]
    pub retry_max_attempts: Option<i64>,
    /// Days finished operations are kept before they are pruned.
    #[arg(long, env = "HERALD_RETENTION_DAYS")]
    pub retention_days: Option<f64>,
    /// Event webhook deliveries in flight at once (over all receivers).
    #[arg(long, env = "HERALD_EVENT_CONCURRENCY")]
    pub event_concurrency: Option<usize>,
    /// Timeout of one event delivery, connect to the answer's head (ms).
    #[arg(long, env = "HERALD_EVENT_REQUEST_TIMEOUT_MS")]
    pub event_request_timeout_ms: Option<u64>,
    /// How long a node holds claimed events before another may take them over (ms); more than
    /// the request timeout.
    #[arg(long, env = "HERALD_EVENT_LEASE_MS")]
    pub event_lease_ms: Option<u64>,
    /// The first event retry's delay (ms, before jitter); it doubles per attempt.
    #[arg(long, env = "HERALD_EVENT_RETRY_BASE_MS")]
    pub event_retry_base_ms: Option<u64>,
    /// Cap of the event retry delay (ms).
    #[arg(long, env = "HERALD_EVENT_RETRY_CAP_MS")]
    pub event_retry_cap_ms: Option<u64>,
    /// How long after it was recorded an event is still tried (ms); then it is dropped.
    #[arg(long, env = "HERALD_EVENT_MAX_AGE_MS")]
    pub event_max_age_ms: Option<u64>,
    /// How often the event sender looks for new events (ms).
    #[arg(long, env = "HERALD_EVENT_POLL_MS")]
    pub event_poll_ms: Option<u64>,
}

/// The optional TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    listen: Option<SocketAddr>,
    public_url: Option<String>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    rate_limit_per_second: Option<f64>,
    rate_limit_burst: Option<f64>,
    body_limit_bytes: Option<usize>,
    max_apps_per_account: Option<i64>,
    max_credentials_per_app: Option<i64>,
    delivery_workers: Option<usize>,
    delivery_batch_size: Option<i64>,
    delivery_lease_ms: Option<u64>,
    delivery_poll_ms: Option<u64>,
    per_credential_concurrency: Option<usize>,
    retry_first_delay_ms: Option<u64>,
    retry_max_delay_ms: Option<u64>,
    retry_max_attempts: Option<i64>,
    retention_days: Option<f64>,
    event_concurrency: Option<usize>,
    event_request_timeout_ms: Option<u64>,
    event_lease_ms: Option<u64>,
    event_retry_base_ms: Option<u64>,
    event_retry_cap_ms: Option<u64>,
    event_max_age_ms: Option<u64>,
    event_poll_ms: Option<u64>,
}

/// Everything resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub rate_limit: RateLimit,
    pub body_limit_bytes: usize,
    pub limits: StoreLimits,
    pub engine: EngineConfig,
    pub events: EventSenderConfig,
}

impl Settings {
    pub fn load(store: &StoreArgs, serve: Option<&ServeArgs>) -> anyhow::Result<Self> {
        let file = match &store.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let default_serve = ServeArgs::default();
        let serve = serve.unwrap_or(&default_serve);
        let data_dir = store
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./herald-data"));
        let database_url = store
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| SqlStore::default_sqlite_url(&data_dir));
        let tls = match (
            serve.tls_cert_file.clone().or(file.tls_cert_file),
            serve.tls_key_file.clone().or(file.tls_key_file),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => anyhow::bail!(
                "TLS needs both a certificate file and a key file (HERALD_TLS_CERT_FILE, HERALD_TLS_KEY_FILE)"
            ),
        };
        let engine = {
            let d = EngineConfig::default();
            let ms =
                |v: Option<u64>, default: Duration| v.map(Duration::from_millis).unwrap_or(default);
            let retention_days = serve.retention_days.or(file.retention_days);
            if let Some(days) = retention_days {
                anyhow::ensure!(
                    days.is_finite() && days >= 0.0,
                    "retention_days must be 0 or more"
                );
            }
            let engine = EngineConfig {
                workers: serve
                    .delivery_workers
                    .or(file.delivery_workers)
                    .unwrap_or(d.workers),
                claim_batch: serve
                    .delivery_batch_size
                    .or(file.delivery_batch_size)
                    .unwrap_or(d.claim_batch),
                lease: ms(serve.delivery_lease_ms.or(file.delivery_lease_ms), d.lease),
                poll_interval: ms(
                    serve.delivery_poll_ms.or(file.delivery_poll_ms),
                    d.poll_interval,
                ),
                per_credential_concurrency: serve
                    .per_credential_concurrency
                    .or(file.per_credential_concurrency)
                    .unwrap_or(d.per_credential_concurrency),
                retry: RetryPolicy {
                    first_delay: ms(
                        serve.retry_first_delay_ms.or(file.retry_first_delay_ms),
                        d.retry.first_delay,
                    ),
                    max_delay: ms(
                        serve.retry_max_delay_ms.or(file.retry_max_delay_ms),
                        d.retry.max_delay,
                    ),
                    max_attempts: serve
                        .retry_max_attempts
                        .or(file.retry_max_attempts)
                        .unwrap_or(d.retry.max_attempts),
                },
                retention: retention_days
                    .map(|days| Duration::from_secs_f64(days * 86_400.0))
                    .unwrap_or(d.retention),
                ..d
            };
            anyhow::ensure!(engine.workers >= 1, "delivery_workers must be at least 1");
            anyhow::ensure!(
                engine.claim_batch >= 1,
                "delivery_batch_size must be at least 1"
            );
            anyhow::ensure!(
                engine.retry.max_attempts >= 1,
                "retry_max_attempts must be at least 1"
            );
            anyhow::ensure!(
                engine.per_credential_concurrency >= 1,
                "per_credential_concurrency must be at least 1"
            );
            anyhow::ensure!(
                engine.lease >= Duration::from_millis(100),
                "delivery_lease_ms must be at least 100"
            );
            engine
        };
        let events = {
            let d = EventSenderConfig::default();
            let ms =
                |v: Option<u64>, default: Duration| v.map(Duration::from_millis).unwrap_or(default);
            let events = EventSenderConfig {
                concurrency: serve
                    .event_concurrency
                    .or(file.event_concurrency)
                    .unwrap_or(d.concurrency),
                request_timeout: ms(
                    serve
                        .event_request_timeout_ms
                        .or(file.event_request_timeout_ms),
                    d.request_timeout,
                ),
                lease: ms(serve.event_lease_ms.or(file.event_lease_ms), d.lease),
                retry_base: ms(
                    serve.event_retry_base_ms.or(file.event_retry_base_ms),
                    d.retry_base,
                ),
                retry_cap: ms(
                    serve.event_retry_cap_ms.or(file.event_retry_cap_ms),
                    d.retry_cap,
                ),
                max_age: ms(serve.event_max_age_ms.or(file.event_max_age_ms), d.max_age),
                poll_interval: ms(serve.event_poll_ms.or(file.event_poll_ms), d.poll_interval),
                ..d
            };
            anyhow::ensure!(
                events.concurrency >= 1,
                "event_concurrency must be at least 1"
            );
            anyhow::ensure!(
                events.request_timeout >= Duration::from_millis(1),
                "event_request_timeout_ms must be at least 1"
            );
            anyhow::ensure!(
                events.lease > events.request_timeout,
                "event_lease_ms must be more than event_request_timeout_ms"
            );
            anyhow::ensure!(
                events.retry_base >= Duration::from_millis(1),
                "event_retry_base_ms must be at least 1"
            );
            anyhow::ensure!(
                events.retry_cap >= events.retry_base,
                "event_retry_cap_ms must be at least event_retry_base_ms"
            );
            anyhow::ensure!(
                events.max_age >= Duration::from_millis(1),
                "event_max_age_ms must be at least 1"
            );
            anyhow::ensure!(
                events.poll_interval >= Duration::from_millis(1),
                "event_poll_ms must be at least 1"
            );
            events
        };
        let defaults = RateLimit::default();
        let store_defaults = StoreLimits::default();
        Ok(Self {
            listen: serve
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid address")),
            public_url: serve.public_url.clone().or(file.public_url),
            tls,
            rate_limit: RateLimit {
                requests_per_second: serve
                    .rate_limit_per_second
                    .or(file.rate_limit_per_second)
                    .unwrap_or(defaults.requests_per_second),
                burst: serve
                    .rate_limit_burst
                    .or(file.rate_limit_burst)
                    .unwrap_or(defaults.burst),
            },
            body_limit_bytes: serve
                .body_limit_bytes
                .or(file.body_limit_bytes)
                .unwrap_or(4 * 1024 * 1024),
            limits: StoreLimits {
                max_apps_per_account: serve
                    .max_apps_per_account
                    .or(file.max_apps_per_account)
                    .unwrap_or(store_defaults.max_apps_per_account),
                max_credentials_per_app: serve
                    .max_credentials_per_app
                    .or(file.max_credentials_per_app)
                    .unwrap_or(store_defaults.max_credentials_per_app),
            },
            engine,
            events,
            data_dir,
            database_url,
        })
    }

    /// The master key: `HERALD_MASTER_KEY`, else `DATA_DIR/master.key` (created 0600 on first use).
    pub fn master_key(&self) -> anyhow::Result<MasterKey> {
        if let Ok(text) = std::env::var("HERALD_MASTER_KEY") {
            return Ok(MasterKey::parse(&text)?);
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating data directory {}", self.data_dir.display()))?;
        Ok(MasterKey::load_or_create(
            &self.data_dir.join("master.key"),
        )?)
    }

    pub async fn open_store(&self) -> anyhow::Result<Arc<SqlStore>> {
        let key = self.master_key()?;
        let store = SqlStore::connect(&self.database_url, &key, self.limits.clone())
            .await
            .with_context(|| {
                format!(
                    "opening the store at {}",
                    herald_store::redact_url(&self.database_url)
                )
            })?;
        Ok(Arc::new(store))
    }

    pub fn api_config(&self, bound: SocketAddr) -> ApiConfig {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let public_url = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{bound}"));
        let mut config = ApiConfig::new(public_url);
        config.rate_limit = self.rate_limit.clone();
        config.body_limit_bytes = self.body_limit_bytes;
        config
    }

    pub fn bootstrap_file(&self) -> PathBuf {
        self.data_dir.join("bootstrap-account.json")
    }
}

/// Structured logs to stderr: `HERALD_LOG` (or `RUST_LOG`) filters, `HERALD_LOG_FORMAT=json` for JSON.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("HERALD_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info,sqlx=warn,tower_http=info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    if std::env::var("HERALD_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}
