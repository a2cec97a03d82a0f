//! State shared by every connection: loaded credentials, run settings, stats, recorded requests,
//! injected faults, issued access tokens and the APNs JWT cache.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::credentials::Loaded;

/// Requests kept per device token by the recorder.
pub(crate) const RECEIVED_PER_TOKEN: usize = 1000;
/// Verified APNs JWTs kept in the cache before it is emptied.
const JWT_CACHE_MAX: usize = 10_000;
/// Default `expires_in` of issued access tokens, as Google answers.
pub(crate) const DEFAULT_TOKEN_LIFETIME: u64 = 3599;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    Apns,
    Fcm,
    FcmLegacy,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Apns => "apns",
            Provider::Fcm => "fcm",
            Provider::FcmLegacy => "fcmLegacy",
        }
    }
}

#[derive(Default)]
pub(crate) struct Counter {
    received: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
}

impl Counter {
    pub fn count(&self, accepted: bool) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if accepted {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn json(&self) -> Value {
        json!({
            "received": self.received.load(Ordering::Relaxed),
            "accepted": self.accepted.load(Ordering::Relaxed),
            "rejected": self.rejected.load(Ordering::Relaxed),
        })
    }

    fn reset(&self) {
        self.received.store(0, Ordering::Relaxed);
        self.accepted.store(0, Ordering::Relaxed);
        self.rejected.store(0, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub(crate) struct Stats {
    pub apns: Counter,
    pub fcm: Counter,
    pub fcm_legacy: Counter,
    /// OAuth token endpoint: accepted = access tokens issued.
    pub oauth: Counter,
    /// Push requests (APNs, FCM, legacy FCM) being answered now, latency included, and the
    /// most at once since the last reset: what a client's concurrency limit can be checked by.
    /// Counted while recording only (see `server::route`).
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

/// One push request being answered; counted in [`Stats`] until dropped.
pub(crate) struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stats {
    pub fn provider(&self, p: Provider) -> &Counter {
        match p {
            Provider::Apns => &self.apns,
            Provider::Fcm => &self.fcm,
            Provider::FcmLegacy => &self.fcm_legacy,
        }
    }

    /// Counts a push request as in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn json(&self) -> Value {
        json!({
            "apns": self.apns.json(),
            "fcm": self.fcm.json(),
            "fcmLegacy": self.fcm_legacy.json(),
            "oauth": self.oauth.json(),
            "inFlight": self.in_flight.load(Ordering::Relaxed),
            "peakInFlight": self.peak_in_flight.load(Ordering::Relaxed),
        })
    }

    pub fn reset(&self) {
        self.apns.reset();
        self.fcm.reset();
        self.fcm_legacy.reset();
        self.oauth.reset();
        self.peak_in_flight
            .store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// One injected fault, as posted to `POST /_sandbox/faults`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Fault {
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Remaining uses; absent = every time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub reset: bool,
}

#[derive(Default)]
pub(crate) struct Faults {
    /// Number of tokens with faults, read without the lock on the hot path.
    tokens: AtomicUsize,
    map: Mutex<HashMap<String, VecDeque<Fault>>>,
}

impl Faults {
    pub fn add(&self, fault: Fault) {
        let mut map = lock(&self.map);
        map.entry(fault.token.clone()).or_default().push_back(fault);
        self.tokens.store(map.len(), Ordering::Release);
    }

    /// Takes the next fault for `token`, consuming one of its `times`.
    pub fn take(&self, token: &str) -> Option<Fault> {
        if self.tokens.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut map = lock(&self.map);
        let queue = map.get_mut(token)?;
        let front = queue.front_mut()?;
        let fault = front.clone();
        if let Some(times) = front.times.as_mut() {
            *times -= 1;
            if *times == 0 {
                queue.pop_front();
                if queue.is_empty() {
                    map.remove(token);
                    self.tokens.store(map.len(), Ordering::Release);
                }
            }
        }
        Some(fault)
    }

    /// Clears the faults of one token, or all; returns how many faults were dropped.
    pub fn clear(&self, token: Option<&str>) -> usize {
        let mut map = lock(&self.map);
        let n = match token {
            Some(t) => map.remove(t).map_or(0, |q| q.len()),
            None => map.drain().map(|(_, q)| q.len()).sum(),
        };
        self.tokens.store(map.len(), Ordering::Release);
        n
    }

    pub fn list(&self) -> Vec<Fault> {
        lock(&self.map).values().flatten().cloned().collect()
    }
}

pub(crate) struct AccessToken {
    pub expires_at: Instant,
    /// The assertion's scopes include FCM (firebase.messaging or cloud-platform).
    pub fcm_scope: bool,
}

pub(crate) struct State {
    pub creds: Loaded,
    fail_rate_bits: AtomicU64,
    pub latency_ms: AtomicU64,
    pub record: AtomicBool,
    pub token_lifetime: AtomicU64,
    pub stats: Stats,
    received: Mutex<HashMap<String, VecDeque<Value>>>,
    pub faults: Faults,
    pub access_tokens: Mutex<HashMap<String, AccessToken>>,
    /// Verified APNs provider JWTs → their `iat`.
    apns_jwts: Mutex<HashMap<String, i64>>,
    /// Bumped by `POST /_sandbox/goaway`: every open connection sends GOAWAY.
    pub goaway: watch::Sender<u64>,
    pub open_connections: AtomicUsize,
}

impl State {
    pub fn new(creds: Loaded, fail_rate: f64, latency_ms: u64, record: bool) -> State {
        State {
            creds,
            fail_rate_bits: AtomicU64::new(fail_rate.to_bits()),
            latency_ms: AtomicU64::new(latency_ms),
            record: AtomicBool::new(record),
            token_lifetime: AtomicU64::new(DEFAULT_TOKEN_LIFETIME),
            stats: Stats::default(),
            received: Mutex::new(HashMap::new()),
            faults: Faults::default(),
            access_tokens: Mutex::new(HashMap::new()),
            apns_jwts: Mutex::new(HashMap::new()),
            goaway: watch::Sender::new(0),
            open_connections: AtomicUsize::new(0),
        }
    }

    pub fn fail_rate(&self) -> f64 {
        f64::from_bits(self.fail_rate_bits.load(Ordering::Relaxed))
    }

    pub fn set_fail_rate(&self, rate: f64) {
        self.fail_rate_bits.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// Rolls the per-run transient failure dice.
    pub fn transient_failure(&self) -> bool {
        let rate = self.fail_rate();
        rate > 0.0 && rand::random::<f64>() < rate
    }

    pub fn latency(&self) -> Option<Duration> {
        match self.latency_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub fn recording(&self) -> bool {
        self.record.load(Ordering::Relaxed)
    }

    /// Counts one request to a provider and, when recording, keeps what was received.
    pub fn outcome(
        &self,
        provider: Provider,
        token: Option<&str>,
        status: u16,
        reason: Option<&str>,
        headers: impl FnOnce() -> Value,
        payload: impl FnOnce() -> Value,
    ) {
        self.stats
            .provider(provider)
            .count((200..300).contains(&status));
        let Some(token) = token else { return };
        if !self.recording() {
            return;
        }
        let entry = json!({
            "provider": provider.name(),
            "token": token,
            "status": status,
            "reason": reason,
            "headers": headers(),
            "payload": payload(),
            "receivedAt": unix_millis(),
        });
        let mut received = lock(&self.received);
        let queue = received.entry(token.to_owned()).or_default();
        if queue.len() >= RECEIVED_PER_TOKEN {
            queue.pop_front();
        }
        queue.push_back(entry);
    }

    pub fn received(&self, token: &str) -> Vec<Value> {
        lock(&self.received)
            .get(token)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn clear_received(&self) {
        lock(&self.received).clear();
    }

    pub fn cached_apns_jwt(&self, jwt: &str) -> Option<i64> {
        lock(&self.apns_jwts).get(jwt).copied()
    }

    pub fn cache_apns_jwt(&self, jwt: &str, iat: i64) {
        let mut cache = lock(&self.apns_jwts);
        if cache.len() >= JWT_CACHE_MAX {
            cache.clear();
        }
        cache.insert(jwt.to_owned(), iat);
    }
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
