//! The event sender against a real HTTP receiver (axum on a random loopback port) over a real
//! store (SQLite, and PostgreSQL when `HERALD_TEST_DATABASE_URL` is set). The receiver verifies
//! `X-Herald-Signature` with the subscription's secret and checks the CloudEvents fields; it can
//! fail the first N deliveries, hang, or be slow, to prove retries and isolation. No timed
//! assertions: every wait polls with a generous overall timeout.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use herald_delivery::events::{
    EventSender, EventSenderConfig, SIGNATURE_HEADER, signature, verify_signature,
};
use herald_store::events::types;
use herald_store::testing::TestDatabase;
use herald_store::{AccountStore, EventStore, NewEvent, SqlStore, Store};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

const SECRET: &str = "whsec_test-secret";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    id: String,
    attempt: i64,
    body: String,
    signature_ok: bool,
    /// The status the receiver answered.
    status: u16,
}

struct Receiver {
    secret: Vec<u8>,
    /// Answer 500 to this many requests first.
    fail_first: AtomicUsize,
    /// `/sleepy` answers its first request only after this long.
    sleepy_first: AtomicUsize,
    /// `/blocked` answers only once this is notified.
    release: Notify,
    seen: Mutex<Vec<Seen>>,
}

impl Receiver {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Ids answered 2xx on `path`.
    fn delivered(&self, path: &str) -> HashSet<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.path == path && (200..300).contains(&s.status))
            .map(|s| s.id)
            .collect()
    }
}

/// Checks a delivery the way a receiver should, and records it.
fn check(receiver: &Receiver, path: &str, headers: &HeaderMap, body: &Bytes, status: u16) {
    let text = String::from_utf8(body.to_vec()).expect("UTF-8 body");
    let header = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let signature_ok = verify_signature(&receiver.secret, body, header);
    let event: Value = serde_json::from_str(&text).expect("JSON body");
    assert_eq!(
        headers["content-type"],
        "application/cloudevents+json; charset=utf-8"
    );
    let attempt = headers["x-herald-delivery-attempt"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    receiver.seen.lock().unwrap().push(Seen {
        path: path.to_owned(),
        id: event["id"].as_str().unwrap_or("").to_owned(),
        attempt,
        body: text,
        signature_ok,
        status,
    });
}

async fn hook(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let failing = receiver
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    check(&receiver, "/hook", &headers, &body, status.as_u16());
    status
}

async fn sleepy(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let first = receiver
        .sleepy_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if first {
        // Longer than the sender's request timeout: the sender gives up and retries.
        tokio::time::sleep(Duration::from_secs(5)).await;
        check(&receiver, "/sleepy", &headers, &body, 599);
        return StatusCode::OK;
    }
    check(&receiver, "/sleepy", &headers, &body, 200);
    StatusCode::OK
}

async fn blocked(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    receiver.release.notified().await;
    check(&receiver, "/blocked", &headers, &body, 200);
    StatusCode::OK
}

async fn redirect(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1]) {
    check(&receiver, "/redirect", &headers, &body, 307);
    (StatusCode::TEMPORARY_REDIRECT, [("location", "/hook")])
}

/// Starts a receiver; returns it, its base URL and a stopper.
async fn start_receiver(fail_first: usize) -> (Arc<Receiver>, String, oneshot::Sender<()>) {
    let receiver = Arc::new(Receiver {
        secret: SECRET.as_bytes().to_vec(),
        fail_first: AtomicUsize::new(fail_first),
        sleepy_first: AtomicUsize::new(1),
        release: Notify::new(),
        seen: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/hook", post(hook))
        .route("/sleepy", post(sleepy))
        .route("/blocked", post(blocked))
        .route("/redirect", post(redirect))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (receiver, base, stop)
}

/// Quick retries for tests.
fn quick() -> EventSenderConfig {
    EventSenderConfig {
        request_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        lease: Duration::from_secs(30),
        retry_base: Duration::from_millis(20),
        retry_cap: Duration::from_millis(200),
        poll_interval: Duration::from_millis(50),
        ..EventSenderConfig::default()
    }
}

/// Starts `sender`; returns the shutdown trigger and its handle.
fn start(sender: EventSender) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = sender.spawn(async move {
        let _ = stopped.await;
    });
    (stop, handle)
}

/// Polls `condition` every 20 ms for up to 60 s.
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..3000 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn outbox_empty(store: &SqlStore) -> bool {
    store.next_event_due().await.unwrap().is_none()
}

fn sample_events(account: &str) -> Vec<NewEvent> {
    vec![
        NewEvent::operation(
            account,
            types::OPERATION_SCHEDULED,
            "comms_operation_01",
            "SCHEDULED",
            json!({"total": 1}),
        ),
        NewEvent::operation(
            account,
            types::OPERATION_PROCESSING,
            "comms_operation_01",
            "PROCESSING",
            json!({"total": 1}),
        ),
        NewEvent::operation(
            account,
            types::OPERATION_COMPLETED,
            "comms_operation_01",
            "COMPLETED",
            json!({"total": 1, "sent": 1}),
        ),
        NewEvent::push_notification_failed(
            account,
            "comms_pushnotification_01",
            "comms_operation_01",
            json!({"code": 30008, "message": "unknown error"}),
        ),
        NewEvent::device_invalidated(
            account,
            "comms_device_registration_01",
            "comms_pushnotificationuser_01",
            "shop",
            "APN",
            "token-1",
        ),
    ]
}

async fn subscribed_account(store: &SqlStore, url: &str) -> String {
    let account = store.create_account(None).await.unwrap().account.sid;
    store
        .put_event_subscription(&account, url, SECRET)
        .await
        .unwrap();
    account
}

#[test]
fn signatures_are_hmac_sha256_in_hex() {
    // RFC 4231-style known answer: HMAC-SHA256("key", "The quick brown fox ...").
    let body = b"The quick brown fox jumps over the lazy dog";
    let signed = signature(b"key", body);
    assert_eq!(
        signed,
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    );
    assert!(verify_signature(b"key", body, &signed));
    assert!(!verify_signature(b"other key", body, &signed));
    assert!(!verify_signature(b"key", b"tampered", &signed));
    assert!(!verify_signature(b"key", body, "sha1=00"));
    assert!(!verify_signature(b"key", body, "sha256=not-hex"));
}

#[test]
fn backoff_doubles_with_jitter_up_to_the_cap() {
    let config = EventSenderConfig {
        retry_base: Duration::from_secs(5),
        retry_cap: Duration::from_secs(3600),
        ..EventSenderConfig::default()
    };
    let mut previous = Duration::ZERO;
    for attempt in 1..=40 {
        let ceiling = config.backoff_ceiling(attempt);
        assert!(ceiling >= previous, "never shrinks");
        assert!(ceiling <= config.retry_cap);
        previous = ceiling;
        for _ in 0..50 {
            let delay = config.retry_delay(attempt);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{attempt}: {delay:?}"
            );
        }
    }
    assert_eq!(config.backoff_ceiling(1), Duration::from_secs(5));
    assert_eq!(config.backoff_ceiling(2), Duration::from_secs(10));
    assert_eq!(config.backoff_ceiling(5), Duration::from_secs(80));
    assert_eq!(config.backoff_ceiling(11), Duration::from_secs(3600));
    assert_eq!(config.backoff_ceiling(1000), Duration::from_secs(3600));
    // The jitter really varies.
    let draws: HashSet<Duration> = (0..50).map(|_| config.retry_delay(8)).collect();
    assert!(draws.len() > 1);
    // The default gives about a day of attempts: the sum of the ceilings passes 24 h.
    let total: Duration = (1..=40).map(|n| config.backoff_ceiling(n)).sum();
    assert!(total > Duration::from_secs(24 * 3600));
}

#[tokio::test]
async fn delivers_signed_cloudevents_and_retries_failures_until_delivered() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        // The first 4 deliveries get 500.
        let (receiver, base, _stop_receiver) = start_receiver(4).await;
        let account = subscribed_account(&store, &format!("{base}/hook")).await;
        let other = store.create_account(None).await.unwrap().account.sid;
        let mut events = sample_events(&account);
        events.extend(sample_events(&other)); // no subscription: never sent
        assert_eq!(store.record_events(&events).await.unwrap(), 5);

        let sender = EventSender::new(Arc::new(store.clone()) as Arc<dyn Store>, quick()).unwrap();
        let (stop, handle) = start(sender);
        eventually("all five delivered and the outbox empty", async || {
            receiver.delivered("/hook").len() == 5 && outbox_empty(&store).await
        })
        .await;
        stop.send(()).unwrap();
        handle.await.unwrap();

        let seen = receiver.seen();
        assert!(
            seen.iter().all(|s| s.signature_ok),
            "{}: bad signature",
            db.name
        );
        let failed: Vec<&Seen> = seen.iter().filter(|s| s.status == 500).collect();
        assert_eq!(failed.len(), 4, "{}", db.name);
        // Every event that failed came again, as a later attempt, with the very same bytes.
        for failure in &failed {
            let retried = seen
                .iter()
                .find(|s| s.id == failure.id && s.attempt > failure.attempt && s.status == 204)
                .unwrap_or_else(|| panic!("{} was not retried", failure.id));
            assert_eq!(retried.body, failure.body);
        }
        let mut by_type: HashMap<String, Value> = HashMap::new();
        for s in seen.iter().filter(|s| s.status == 204) {
            let event: Value = serde_json::from_str(&s.body).unwrap();
            assert_eq!(event["specversion"], "1.0");
            assert_eq!(event["source"], "/v1/PushNotifications");
            assert_eq!(event["datacontenttype"], "application/json");
            assert_eq!(event["accountsid"], account.as_str());
            assert!(uuid_like(event["id"].as_str().unwrap()), "{event}");
            assert!(
                herald_core::time::parse_rfc3339(event["time"].as_str().unwrap()).is_some(),
                "{event}"
            );
            by_type.insert(event["type"].as_str().unwrap().to_owned(), event);
        }
        let mut kinds: Vec<&str> = by_type.keys().map(String::as_str).collect();
        kinds.sort();
        let mut expected = types::ALL.to_vec();
        expected.sort();
        assert_eq!(kinds, expected);
        assert_eq!(
            by_type[types::OPERATION_COMPLETED]["data"],
            json!({"operationId": "comms_operation_01", "status": "COMPLETED",
                   "stats": {"total": 1, "sent": 1}})
        );
        assert_eq!(
            by_type[types::PUSH_NOTIFICATION_FAILED]["data"]["pushNotificationId"],
            "comms_pushnotification_01"
        );
        assert_eq!(
            by_type[types::DEVICE_INVALIDATED]["data"],
            json!({"deviceRegistrationId": "comms_device_registration_01",
                   "userId": "comms_pushnotificationuser_01", "appName": "shop",
                   "provider": "APN", "token": "token-1"})
        );
    }
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn connection_errors_timeouts_and_redirects_are_retried() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let (receiver, base, _stop_receiver) = start_receiver(0).await;

        // A port nobody listens on.
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let refused = subscribed_account(&store, &format!("http://{closed}/hook")).await;
        // A receiver slower than the request timeout the first time.
        let slow = subscribed_account(&store, &format!("{base}/sleepy")).await;
        // A receiver that redirects (not followed: a signed body is not sent elsewhere).
        let redirected = subscribed_account(&store, &format!("{base}/redirect")).await;
        for account in [&refused, &slow, &redirected] {
            store
                .record_events(&sample_events(account)[..1])
                .await
                .unwrap();
        }

        let sender = EventSender::new(Arc::new(store.clone()) as Arc<dyn Store>, quick()).unwrap();
        let (stop, handle) = start(sender);

        // The slow receiver's event is delivered on a later attempt.
        eventually("the timed-out event delivered on retry", async || {
            receiver
                .seen()
                .iter()
                .any(|s| s.path == "/sleepy" && s.status == 200 && s.attempt >= 2)
        })
        .await;
        // The redirect is tried again and again, never followed to /hook.
        eventually("the redirect retried", async || {
            receiver
                .seen()
                .iter()
                .any(|s| s.path == "/redirect" && s.attempt >= 3)
        })
        .await;
        assert!(receiver.delivered("/hook").is_empty());

        // The refused account fixes its URL: the waiting event goes to the new one.
        store
            .put_event_subscription(&refused, &format!("{base}/hook"), SECRET)
            .await
            .unwrap();
        eventually(
            "the refused event delivered after the URL was fixed",
            async || {
                receiver
                    .seen()
                    .iter()
                    .any(|s| s.path == "/hook" && s.status == 204 && s.attempt >= 2)
            },
        )
        .await;
        store.delete_event_subscription(&redirected).await.unwrap();
        eventually("the outbox empty", async || outbox_empty(&store).await).await;
        stop.send(()).unwrap();
        handle.await.unwrap();
        assert!(
            receiver.seen().iter().all(|s| s.signature_ok),
            "{}",
            db.name
        );
    }
}

#[tokio::test]
async fn events_past_their_maximum_age_are_dropped() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        // Every delivery fails.
        let (receiver, base, _stop_receiver) = start_receiver(usize::MAX).await;
        let account = subscribed_account(&store, &format!("{base}/hook")).await;
        store
            .record_events(&sample_events(&account)[..2])
            .await
            .unwrap();
        let config = EventSenderConfig {
            // The first retry already falls beyond it.
            max_age: Duration::from_millis(1),
            ..quick()
        };
        let sender = EventSender::new(Arc::new(store.clone()) as Arc<dyn Store>, config).unwrap();
        let (stop, handle) = start(sender);
        eventually("the failing events dropped", async || {
            outbox_empty(&store).await
        })
        .await;
        stop.send(()).unwrap();
        handle.await.unwrap();
        let seen = receiver.seen();
        assert!(!seen.is_empty(), "{}", db.name);
        assert!(seen.iter().all(|s| s.status == 500));
        let ids: HashSet<&str> = seen.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.len(), 2);
    }
}

#[tokio::test]
async fn a_hanging_receiver_does_not_hold_up_others_and_a_wake_up_sends_at_once() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let (receiver, base, _stop_receiver) = start_receiver(0).await;
        let stuck = subscribed_account(&store, &format!("{base}/blocked")).await;
        let fine = subscribed_account(&store, &format!("{base}/hook")).await;
        let config = EventSenderConfig {
            request_timeout: Duration::from_secs(30),
            lease: Duration::from_secs(60),
            // Nothing is found by polling in this test: only the wake-up brings the events.
            poll_interval: Duration::from_secs(3600),
            ..quick()
        };
        let sender = EventSender::new(Arc::new(store.clone()) as Arc<dyn Store>, config).unwrap();
        let wake = sender.waker();
        let (stop, handle) = start(sender);

        store
            .record_events(&sample_events(&stuck)[..1])
            .await
            .unwrap();
        store
            .record_events(&sample_events(&fine)[..3])
            .await
            .unwrap();
        wake.notify_one();
        // The hanging receiver holds its delivery; the other account's events go through.
        eventually("the other account's events delivered", async || {
            receiver.delivered("/hook").len() == 3
        })
        .await;
        assert!(receiver.delivered("/blocked").is_empty());

        // Released, the held delivery completes too.
        receiver.release.notify_one();
        eventually("the held event delivered", async || {
            receiver.delivered("/blocked").len() == 1 && outbox_empty(&store).await
        })
        .await;

        // Another wake-up with new events.
        store
            .record_events(&sample_events(&fine)[3..])
            .await
            .unwrap();
        wake.notify_one();
        eventually("the later events delivered", async || {
            receiver.delivered("/hook").len() == 5
        })
        .await;
        stop.send(()).unwrap();
        handle.await.unwrap();
        assert!(
            receiver.seen().iter().all(|s| s.signature_ok),
            "{}",
            db.name
        );
    }
}

#[tokio::test]
async fn shutdown_waits_for_deliveries_in_flight_and_records_them() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let (receiver, base, _stop_receiver) = start_receiver(0).await;
        let account = subscribed_account(&store, &format!("{base}/blocked")).await;
        store
            .record_events(&sample_events(&account)[..1])
            .await
            .unwrap();
        let config = EventSenderConfig {
            request_timeout: Duration::from_secs(30),
            ..quick()
        };
        let sender = EventSender::new(Arc::new(store.clone()) as Arc<dyn Store>, config).unwrap();
        let (stop, handle) = start(sender);
        // Wait until the delivery is in flight (claimed: no longer due).
        eventually("the event claimed", async || {
            matches!(store.next_event_due().await.unwrap(),
                     Some(due) if due > herald_core::time::now_ms() + 10_000)
        })
        .await;
        stop.send(()).unwrap();
        receiver.release.notify_one();
        handle.await.unwrap();
        // The in-flight delivery finished and was recorded before the sender returned.
        assert_eq!(receiver.delivered("/blocked").len(), 1, "{}", db.name);
        assert!(outbox_empty(&store).await, "{}", db.name);
    }
}

#[tokio::test]
async fn many_events_of_many_accounts_are_all_delivered_through_a_small_window() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let (receiver, base, _stop_receiver) = start_receiver(7).await;
        let mut expected = 0;
        for _ in 0..3 {
            let account = subscribed_account(&store, &format!("{base}/hook")).await;
            let events: Vec<NewEvent> = (0..50)
                .map(|n| {
                    NewEvent::operation(
                        &account,
                        types::OPERATION_PROCESSING,
                        &format!("comms_operation_{n}"),
                        "PROCESSING",
                        json!({"n": n}),
                    )
                })
                .collect();
            expected += store.record_events(&events).await.unwrap();
        }
        let config = EventSenderConfig {
            concurrency: 4,
            ..quick()
        };
        let sender = EventSender::new(Arc::new(store.clone()) as Arc<dyn Store>, config).unwrap();
        let (stop, handle) = start(sender);
        eventually("every event delivered", async || {
            receiver.delivered("/hook").len() as u64 == expected && outbox_empty(&store).await
        })
        .await;
        stop.send(()).unwrap();
        handle.await.unwrap();
        assert_eq!(expected, 150);
        let seen = receiver.seen();
        assert!(seen.iter().all(|s| s.signature_ok), "{}", db.name);
        assert_eq!(seen.iter().filter(|s| s.status == 500).count(), 7);
    }
}
