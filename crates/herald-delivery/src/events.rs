//! The event sender: POSTs the CloudEvents recorded in the store's outbox
//! (`herald_store::events`) to each account's subscription URL, signed with
//! `X-Herald-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`.
//!
//! It runs on its own (own task, own HTTP client, own concurrency bound), so a slow or broken
//! receiver never holds up push delivery. Delivery is at least once: an event is deleted only
//! after a 2xx answer; any other answer, a connection error or a timeout reschedules it with
//! exponential backoff and jitter (each delay is drawn between half and all of `base · 2^(n-1)`,
//! capped), until its next attempt would fall more than `max_age` (24 h) after it was recorded,
//! when it is dropped with a warning. Receivers dedupe on the CloudEvents `id`.
//!
//! Wiring (the binary): build an [`EventSender`], hand [`EventSender::waker`] to whatever records
//! events (call `notify_one()` after the commit), and [`EventSender::spawn`] it with the shutdown
//! future. Without wake-ups it still finds new events within `poll_interval`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use herald_core::time::now_ms;
use herald_store::Store;
use herald_store::events::{ClaimedEvent, EventOutcome};
use rand::Rng;
use ring::hmac;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Herald-Signature";
/// The header that carries the attempt number (1 on the first delivery).
pub const ATTEMPT_HEADER: &str = "X-Herald-Delivery-Attempt";
/// The content type of a structured-mode CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";

/// The shortest idle pause between two claims that found nothing.
const MIN_PAUSE: Duration = Duration::from_millis(10);

/// Settings of the event sender. The defaults suit production; tests shorten the backoff.
#[derive(Debug, Clone)]
pub struct EventSenderConfig {
    /// Deliveries in flight at once (over all receivers).
    pub concurrency: usize,
    /// The whole request, connect to last byte of the answer's head.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long a claim holds its events; an event whose sender died is tried again after it.
    /// Longer than `request_timeout`.
    pub lease: Duration,
    /// The first retry's delay (before jitter); each next one doubles.
    pub retry_base: Duration,
    /// The longest delay between two attempts.
    pub retry_cap: Duration,
    /// How long after it was recorded an event is still tried.
    pub max_age: Duration,
    /// How often the outbox is checked when nobody wakes the sender.
    pub poll_interval: Duration,
}

impl Default for EventSenderConfig {
    fn default() -> Self {
        Self {
            concurrency: 32,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            lease: Duration::from_secs(60),
            retry_base: Duration::from_secs(5),
            retry_cap: Duration::from_secs(3600),
            max_age: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl EventSenderConfig {
    /// The delay before the attempt after failed attempt number `attempt` (1-based): a random
    /// duration between half and all of `min(cap, base · 2^(attempt-1))`.
    pub fn retry_delay(&self, attempt: i64) -> Duration {
        let ceiling = self.backoff_ceiling(attempt);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_millis() as u64;
        half + Duration::from_millis(rand::rng().random_range(0..=spread))
    }

    /// `min(cap, base · 2^(attempt-1))`.
    pub fn backoff_ceiling(&self, attempt: i64) -> Duration {
        let exponent = (attempt.max(1) - 1).min(40) as u32;
        self.retry_base
            .checked_mul(1u32 << exponent.min(31))
            .unwrap_or(self.retry_cap)
            .min(self.retry_cap)
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`, the value of [`SIGNATURE_HEADER`].
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// Whether `header` is the signature of `body` under `secret` (constant time), for receivers
/// written in Rust and for tests.
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_tag) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = hex::decode(hex_tag) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, body, &tag).is_ok()
}

/// The webhook sender worker.
pub struct EventSender {
    store: Arc<dyn Store>,
    config: EventSenderConfig,
    client: reqwest::Client,
    wake: Arc<Notify>,
}

impl EventSender {
    /// A sender over `store` with its own HTTP client (rustls, public roots, no redirects).
    pub fn new(store: Arc<dyn Store>, config: EventSenderConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            // A redirect is an answer other than 2xx: the receiver's URL should be fixed, and a
            // signed body is not sent on to somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Herald/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            store,
            config,
            client,
            wake: Arc::new(Notify::new()),
        })
    }

    /// Uses `wake` instead of the sender's own `Notify` (to share one with the engine).
    pub fn with_waker(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// Call `notify_one()` on it after committing new events, to have them sent at once.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Runs the sender on its own task until `shutdown` completes.
    pub fn spawn(self, shutdown: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// Runs until `shutdown` completes; then stops claiming, lets the deliveries in flight
    /// finish (each is bounded by `request_timeout`) and records their outcomes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let lease_ms = self.config.lease.as_millis() as i64;
        let max_age_ms = self.config.max_age.as_millis() as i64;
        let concurrency = self.config.concurrency.max(1);
        let mut inflight: JoinSet<(ClaimedEvent, EventOutcome)> = JoinSet::new();
        let mut stopping = false;
        tokio::pin!(shutdown);
        tracing::info!(concurrency, "event sender started");
        loop {
            let free = concurrency - inflight.len();
            let mut claim_failed = false;
            if !stopping && free > 0 {
                match self.store.claim_events(free as i64, lease_ms).await {
                    Ok(events) => {
                        for event in events {
                            let client = self.client.clone();
                            let config = self.config.clone();
                            inflight.spawn(async move {
                                let outcome = deliver(&client, &config, &event).await;
                                (event, outcome)
                            });
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "event sender: claiming events failed");
                        claim_failed = true;
                    }
                }
            }
            if inflight.is_empty() {
                if stopping {
                    break;
                }
                let pause = if claim_failed {
                    self.config.poll_interval
                } else {
                    // At least a moment: an event can be due yet not claimable (another node's
                    // claim holds its row lock until it commits).
                    self.idle_pause()
                        .await
                        .max(MIN_PAUSE.min(self.config.poll_interval))
                };
                tokio::select! {
                    _ = &mut shutdown => stopping = true,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            }
            let full = inflight.len() >= concurrency;
            tokio::select! {
                _ = &mut shutdown, if !stopping => stopping = true,
                Some(joined) = inflight.join_next() => {
                    let mut finished = Vec::new();
                    collect(joined, &mut finished);
                    while let Some(joined) = inflight.try_join_next() {
                        collect(joined, &mut finished);
                    }
                    self.finish(&finished, max_age_ms).await;
                }
                _ = self.wake.notified(), if !full && !stopping => {}
                _ = tokio::time::sleep(self.config.poll_interval), if !full && !stopping => {}
            }
        }
        tracing::info!("event sender stopped");
    }

    /// How long to sleep with nothing in flight: until the next event is due, at most
    /// `poll_interval`.
    async fn idle_pause(&self) -> Duration {
        match self.store.next_event_due().await {
            Ok(Some(due)) => {
                let wait = (due - now_ms()).max(0) as u64;
                Duration::from_millis(wait).min(self.config.poll_interval)
            }
            Ok(None) => self.config.poll_interval,
            Err(error) => {
                tracing::warn!(%error, "event sender: reading the outbox failed");
                self.config.poll_interval
            }
        }
    }

    async fn finish(&self, finished: &[(ClaimedEvent, EventOutcome)], max_age_ms: i64) {
        if finished.is_empty() {
            return;
        }
        if let Err(error) = self.store.finish_events(finished, max_age_ms).await {
            // The events stay leased; they are sent again when the lease ends (at least once).
            tracing::warn!(%error, count = finished.len(), "event sender: recording outcomes failed");
        }
    }
}

fn collect(
    joined: Result<(ClaimedEvent, EventOutcome), tokio::task::JoinError>,
    into: &mut Vec<(ClaimedEvent, EventOutcome)>,
) {
    match joined {
        Ok(done) => into.push(done),
        // A panicked delivery leaves its event leased: it is tried again after the lease.
        Err(error) => tracing::error!(%error, "event delivery task failed"),
    }
}

/// One attempt: POST the event and classify the answer.
async fn deliver(
    client: &reqwest::Client,
    config: &EventSenderConfig,
    event: &ClaimedEvent,
) -> EventOutcome {
    let signed = signature(event.secret.as_bytes(), event.body.as_bytes());
    let sent = client
        .post(&event.url)
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .header(SIGNATURE_HEADER, signed)
        .header(ATTEMPT_HEADER, event.attempts.to_string())
        .body(event.body.clone())
        .send()
        .await;
    let (error, retry_after) = match sent {
        Ok(response) if response.status().is_success() => {
            tracing::debug!(
                event_id = %event.id,
                account_sid = %event.account_sid,
                event_type = %event.event_type,
                attempt = event.attempts,
                status = response.status().as_u16(),
                "event delivered"
            );
            return EventOutcome::Delivered;
        }
        Ok(response) => {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            (format!("HTTP {}", response.status().as_u16()), retry_after)
        }
        Err(error) => (describe(error), None),
    };
    let mut delay = config.retry_delay(event.attempts);
    if let Some(asked) = retry_after {
        delay = delay.max(asked.min(config.retry_cap));
    }
    let at = now_ms().saturating_add(delay.as_millis() as i64);
    tracing::info!(
        event_id = %event.id,
        account_sid = %event.account_sid,
        event_type = %event.event_type,
        attempt = event.attempts,
        %error,
        retry_in_ms = delay.as_millis() as u64,
        "event not delivered; will retry"
    );
    EventOutcome::Retry { at, error }
}

/// A transport error in words, without the URL (its query may carry a receiver's token).
fn describe(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let error = error.without_url();
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if text.len() > 500 {
        let mut end = 500;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
