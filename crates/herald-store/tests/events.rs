//! Store conformance: event subscriptions and the event outbox, on every backend.

use std::collections::HashSet;
use std::str::FromStr;

use herald_core::time::now_ms;
use herald_store::events::{ClaimedEvent, EventOutcome, FinishedEvents, types};
use herald_store::testing::TestDatabase;
use herald_store::{
    AccountStore, EventStore, MasterKey, NewEvent, SqlStore, StoreError, StoreLimits, insert_events,
};
use serde_json::{Value, json};
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, Connection, Row};

const DAY_MS: i64 = 24 * 3600 * 1000;

async fn account(store: &SqlStore) -> String {
    store.create_account(None).await.unwrap().account.sid
}

/// A raw connection to the test database, for checks below the store's API.
async fn raw(db: &TestDatabase) -> AnyConnection {
    let options = AnyConnectOptions::from_str(&db.url).unwrap();
    AnyConnection::connect_with(&options).await.unwrap()
}

async fn count_events(db: &TestDatabase, account: &str) -> i64 {
    let mut conn = raw(db).await;
    sqlx::query("SELECT COUNT(*) FROM events WHERE account_sid = $1")
        .bind(account)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0)
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, field: &str) {
    match result {
        Err(StoreError::Invalid {
            field: Some(f),
            message,
        }) => assert_eq!(f, field, "{message}"),
        other => panic!("expected Invalid at {field}, got {other:?}"),
    }
}

fn completed(account: &str, n: usize) -> NewEvent {
    NewEvent::operation(
        account,
        types::OPERATION_COMPLETED,
        &format!("comms_operation_{n:026}"),
        "COMPLETED",
        json!({"total": n}),
    )
}

/// Claims everything due (in batches of `batch`) until nothing is left.
async fn claim_all(store: &SqlStore, batch: i64) -> Vec<ClaimedEvent> {
    let mut all = Vec::new();
    loop {
        let claimed = store.claim_events(batch, 60_000).await.unwrap();
        if claimed.is_empty() {
            return all;
        }
        all.extend(claimed);
    }
}

#[tokio::test]
async fn subscription_put_get_replace_delete_and_tenancy() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store).await;
        let b = account(&store).await;

        assert!(matches!(
            store.get_event_subscription(&a).await,
            Err(StoreError::NotFound)
        ));
        let first = store
            .put_event_subscription(&a, "https://example.com/hooks", "s3cret")
            .await
            .unwrap();
        assert_eq!(first.account_sid, a);
        assert_eq!(first.url, "https://example.com/hooks");
        assert_eq!(first.created_at, first.updated_at);
        assert_eq!(store.get_event_subscription(&a).await.unwrap(), first);

        // Another account sees nothing of it and cannot delete it.
        assert!(matches!(
            store.get_event_subscription(&b).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.delete_event_subscription(&b).await,
            Err(StoreError::NotFound)
        ));

        // A second PUT replaces the URL (one subscription per account), keeping createdAt.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let second = store
            .put_event_subscription(&a, "http://127.0.0.1:9/other", "new secret")
            .await
            .unwrap();
        assert_eq!(second.url, "http://127.0.0.1:9/other");
        assert_eq!(second.created_at, first.created_at, "{}", db.name);
        assert!(second.updated_at > first.updated_at, "{}", db.name);
        let mut conn = raw(&db).await;
        let rows: i64 = sqlx::query("SELECT COUNT(*) FROM event_subscriptions")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 1);

        store.delete_event_subscription(&a).await.unwrap();
        assert!(matches!(
            store.get_event_subscription(&a).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.delete_event_subscription(&a).await,
            Err(StoreError::NotFound)
        ));
    }
}

#[tokio::test]
async fn subscription_rules_are_enforced_and_store_nothing() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store).await;
        assert_invalid(store.put_event_subscription(&a, "", "s").await, "url");
        assert_invalid(
            store
                .put_event_subscription(&a, "ftp://example.com/x", "s")
                .await,
            "url",
        );
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert_invalid(store.put_event_subscription(&a, &long, "s").await, "url");
        assert_invalid(
            store
                .put_event_subscription(&a, "https://example.com/", "")
                .await,
            "secret",
        );
        assert_invalid(
            store
                .put_event_subscription(&a, "https://example.com/", &"k".repeat(1025))
                .await,
            "secret",
        );
        assert!(matches!(
            store.get_event_subscription(&a).await,
            Err(StoreError::NotFound)
        ));
        // A refused replacement leaves the stored subscription as it was.
        let kept = store
            .put_event_subscription(&a, "https://example.com/keep", "s")
            .await
            .unwrap();
        assert_invalid(
            store
                .put_event_subscription(&a, "https://example.com/new", "")
                .await,
            "secret",
        );
        assert_eq!(store.get_event_subscription(&a).await.unwrap(), kept);
    }
}

#[tokio::test]
async fn the_secret_is_sealed_at_rest_and_recovered_for_signing() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store).await;
        let secret = "whsec_plaintext-marker-4242";
        store
            .put_event_subscription(&a, "https://example.com/hooks", secret)
            .await
            .unwrap();
        let mut conn = raw(&db).await;
        let sealed: Vec<u8> = sqlx::query("SELECT secret FROM event_subscriptions")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        assert!(
            !sealed
                .windows(b"plaintext-marker".len())
                .any(|w| w == b"plaintext-marker"),
            "{}: plaintext secret in the database",
            db.name
        );
        assert!(sealed.len() > secret.len(), "sealed carries nonce and tag");

        store.record_events(&[completed(&a, 1)]).await.unwrap();
        let claimed = store.claim_events(10, 60_000).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].secret.as_bytes(), secret.as_bytes());
        assert_eq!(claimed[0].url, "https://example.com/hooks");
        // Debug output never shows it.
        assert!(!format!("{:?}", claimed[0]).contains("plaintext-marker"));

        // A store with another master key cannot open it.
        let wrong = SqlStore::connect(&db.url, &MasterKey::generate(), StoreLimits::default())
            .await
            .unwrap();
        store.record_events(&[completed(&a, 2)]).await.unwrap();
        assert!(matches!(
            wrong.claim_events(10, 60_000).await,
            Err(StoreError::Decrypt)
        ));
    }
}

#[tokio::test]
async fn insert_events_records_only_for_subscribed_accounts_inside_the_callers_transaction() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let subscribed = account(&store).await;
        let other = account(&store).await;
        store
            .put_event_subscription(&subscribed, "https://example.com/hooks", "s")
            .await
            .unwrap();
        // More than one INSERT batch worth, mixed between the two accounts.
        let events: Vec<NewEvent> = (0..250)
            .map(|n| completed(if n % 2 == 0 { &subscribed } else { &other }, n))
            .collect();

        // Rolled back with the caller's transaction: nothing recorded.
        let mut conn = raw(&db).await;
        let mut tx = conn.begin().await.unwrap();
        assert_eq!(insert_events(&mut tx, &events).await.unwrap(), 125);
        tx.rollback().await.unwrap();
        assert_eq!(count_events(&db, &subscribed).await, 0, "{}", db.name);

        // Committed: recorded, and only for the subscribed account.
        let mut tx = conn.begin().await.unwrap();
        assert_eq!(insert_events(&mut tx, &events).await.unwrap(), 125);
        assert_eq!(insert_events(&mut tx, &[]).await.unwrap(), 0);
        tx.commit().await.unwrap();
        assert_eq!(count_events(&db, &subscribed).await, 125, "{}", db.name);
        assert_eq!(count_events(&db, &other).await, 0, "{}", db.name);

        // Nobody subscribed: nothing recorded.
        assert_eq!(
            store
                .record_events(&[completed(&other, 1), completed(&other, 2)])
                .await
                .unwrap(),
            0
        );

        let claimed = claim_all(&store, 40).await;
        assert_eq!(claimed.len(), 125);
        let ids: HashSet<&str> = claimed.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids.len(), 125, "ids are unique");
        let mut totals = HashSet::new();
        for event in &claimed {
            assert_eq!(event.account_sid, subscribed);
            assert_eq!(event.event_type, types::OPERATION_COMPLETED);
            assert_eq!(event.attempts, 1);
            let body: Value = serde_json::from_str(&event.body).unwrap();
            assert_eq!(body["specversion"], "1.0");
            assert_eq!(body["id"], event.id.as_str());
            assert!(uuid::Uuid::parse_str(&event.id).is_ok(), "{}", event.id);
            assert_eq!(body["type"], types::OPERATION_COMPLETED);
            assert_eq!(body["source"], "/v1/PushNotifications");
            assert_eq!(body["datacontenttype"], "application/json");
            assert_eq!(body["accountsid"], subscribed.as_str());
            assert!(
                herald_core::time::parse_rfc3339(body["time"].as_str().unwrap()).is_some(),
                "{body}"
            );
            assert_eq!(body["data"]["status"], "COMPLETED");
            assert_eq!(body["subject"], body["data"]["operationId"]);
            totals.insert(body["data"]["stats"]["total"].as_i64().unwrap());
        }
        assert_eq!(totals, (0..250).step_by(2).collect::<HashSet<i64>>());
    }
}

#[test]
fn event_constructors_give_the_documented_data() {
    let failed = NewEvent::push_notification_failed(
        "AC1",
        "comms_pushnotification_1",
        "comms_operation_1",
        json!({"code": 30001, "message": "expired"}),
    );
    let body = failed.cloud_event("00000000-0000-0000-0000-000000000000", 0);
    assert_eq!(body["type"], "com.herald.push-notification.failed");
    assert_eq!(body["subject"], "comms_pushnotification_1");
    assert_eq!(
        body["data"],
        json!({
            "pushNotificationId": "comms_pushnotification_1",
            "operationId": "comms_operation_1",
            "error": {"code": 30001, "message": "expired"},
        })
    );
    assert_eq!(body["time"], "1970-01-01T00:00:00Z");

    let invalidated = NewEvent::device_invalidated(
        "AC1",
        "comms_device_registration_1",
        "comms_pushnotificationuser_1",
        "shop",
        "APN",
        "tok",
    );
    let body = invalidated.cloud_event("id", 0);
    assert_eq!(body["type"], "com.herald.device.invalidated");
    assert_eq!(body["subject"], "comms_device_registration_1");
    assert_eq!(
        body["data"],
        json!({
            "deviceRegistrationId": "comms_device_registration_1",
            "userId": "comms_pushnotificationuser_1",
            "appName": "shop",
            "provider": "APN",
            "token": "tok",
        })
    );
    for t in [
        types::OPERATION_SCHEDULED,
        types::OPERATION_PROCESSING,
        types::OPERATION_COMPLETED,
    ] {
        let body =
            NewEvent::operation("AC1", t, "comms_operation_9", "X", json!({})).cloud_event("id", 0);
        assert!(t.starts_with("com.twilio.comms-api.operation."));
        assert_eq!(body["type"], t);
        assert_eq!(body["subject"], "comms_operation_9");
        assert_eq!(
            body["data"],
            json!({"operationId": "comms_operation_9", "status": "X", "stats": {}})
        );
    }
    assert_eq!(types::ALL.len(), 5);
}

#[tokio::test]
async fn claims_lease_reschedule_deliver_and_drop_expired() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store).await;
        store
            .put_event_subscription(&a, "https://example.com/hooks", "s")
            .await
            .unwrap();
        assert_eq!(store.next_event_due().await.unwrap(), None);
        store
            .record_events(&[completed(&a, 1), completed(&a, 2), completed(&a, 3)])
            .await
            .unwrap();
        assert!(store.next_event_due().await.unwrap().unwrap() <= now_ms());

        // Claims split the due events; leased ones are not claimed again.
        let first = store.claim_events(2, 60_000).await.unwrap();
        assert_eq!(first.len(), 2, "{}", db.name);
        let second = store.claim_events(2, 60_000).await.unwrap();
        assert_eq!(second.len(), 1);
        assert!(store.claim_events(10, 60_000).await.unwrap().is_empty());
        assert_ne!(first[0].lease, second[0].lease);
        assert!(store.next_event_due().await.unwrap().unwrap() > now_ms() + 50_000);

        let later = now_ms() + 3_600_000;
        let beyond = first[1].created_at + DAY_MS + 1;
        let summary = store
            .finish_events(
                &[
                    (first[0].clone(), EventOutcome::Delivered),
                    (
                        first[1].clone(),
                        EventOutcome::Retry {
                            at: beyond,
                            error: "HTTP 500".into(),
                        },
                    ),
                    (
                        second[0].clone(),
                        EventOutcome::Retry {
                            at: later,
                            error: "HTTP 503".into(),
                        },
                    ),
                ],
                DAY_MS,
            )
            .await
            .unwrap();
        assert_eq!(
            summary,
            FinishedEvents {
                delivered: 1,
                rescheduled: 1,
                dropped: 1,
                stale: 0
            },
            "{}",
            db.name
        );
        // Only the rescheduled one is left, due at its retry time, with its error kept.
        assert_eq!(count_events(&db, &a).await, 1);
        assert_eq!(store.next_event_due().await.unwrap(), Some(later));
        assert!(store.claim_events(10, 60_000).await.unwrap().is_empty());
        let mut conn = raw(&db).await;
        let row = sqlx::query("SELECT id, attempts, last_error, lease FROM events")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>(0), second[0].id);
        assert_eq!(row.get::<i64, _>(1), 1);
        assert_eq!(row.get::<String, _>(2), "HTTP 503");
        assert_eq!(row.get::<Option<String>, _>(3), None);

        // A retry that is due now is claimed again, as the next attempt.
        store
            .finish_events(&[(second[0].clone(), EventOutcome::Delivered)], DAY_MS)
            .await
            .unwrap();
        store.record_events(&[completed(&a, 4)]).await.unwrap();
        let once = store.claim_events(10, 60_000).await.unwrap();
        store
            .finish_events(
                &[(
                    once[0].clone(),
                    EventOutcome::Retry {
                        at: now_ms(),
                        error: "connection refused".into(),
                    },
                )],
                DAY_MS,
            )
            .await
            .unwrap();
        let twice = store.claim_events(10, 60_000).await.unwrap();
        assert_eq!(twice.len(), 1);
        assert_eq!(twice[0].id, once[0].id);
        assert_eq!(twice[0].attempts, 2);
        assert_eq!(twice[0].body, once[0].body, "the same bytes every attempt");
    }
}

#[tokio::test]
async fn an_expired_lease_is_claimed_again_and_the_old_claim_cannot_reschedule() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store).await;
        store
            .put_event_subscription(&a, "https://example.com/hooks", "s")
            .await
            .unwrap();
        store.record_events(&[completed(&a, 1)]).await.unwrap();
        // A lease of zero has expired at once, like the lease of a sender that died.
        let old = store.claim_events(10, 0).await.unwrap();
        assert_eq!(old.len(), 1);
        let new = store.claim_events(10, 60_000).await.unwrap();
        assert_eq!(new.len(), 1, "{}", db.name);
        assert_eq!(new[0].id, old[0].id);
        assert_eq!(new[0].attempts, 2);
        assert_ne!(new[0].lease, old[0].lease);

        // The old claim's late failure is ignored; the new claim's counts.
        let retry = EventOutcome::Retry {
            at: now_ms(),
            error: "timeout".into(),
        };
        let summary = store
            .finish_events(&[(old[0].clone(), retry.clone())], DAY_MS)
            .await
            .unwrap();
        assert_eq!(summary.stale, 1);
        assert!(store.claim_events(10, 60_000).await.unwrap().is_empty());
        let summary = store
            .finish_events(&[(new[0].clone(), retry)], DAY_MS)
            .await
            .unwrap();
        assert_eq!(summary.rescheduled, 1);
        let third = store.claim_events(10, 60_000).await.unwrap();
        assert_eq!(third[0].attempts, 3);
        // A delivery reported under an old lease still deletes the event: it reached the
        // receiver.
        let summary = store
            .finish_events(&[(old[0].clone(), EventOutcome::Delivered)], DAY_MS)
            .await
            .unwrap();
        assert_eq!(summary.delivered, 1);
        assert_eq!(count_events(&db, &a).await, 0);
    }
}

#[tokio::test]
async fn deleting_the_subscription_deletes_its_events_and_a_new_put_makes_waiting_ones_due() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store).await;
        let b = account(&store).await;
        for sid in [&a, &b] {
            store
                .put_event_subscription(sid, "https://example.com/hooks", "s")
                .await
                .unwrap();
            store
                .record_events(&[completed(sid, 1), completed(sid, 2)])
                .await
                .unwrap();
        }
        // a's events wait an hour for their retry.
        let claimed = store.claim_events(10, 60_000).await.unwrap();
        let in_an_hour = now_ms() + 3_600_000;
        let retries: Vec<_> = claimed
            .into_iter()
            .map(|c| {
                (
                    c,
                    EventOutcome::Retry {
                        at: in_an_hour,
                        error: "HTTP 404".into(),
                    },
                )
            })
            .collect();
        store.finish_events(&retries, DAY_MS).await.unwrap();
        assert!(store.claim_events(10, 60_000).await.unwrap().is_empty());

        // Fixing the URL makes a's backlog due now (b's stays where it is), with the new URL.
        store
            .put_event_subscription(&a, "https://example.com/fixed", "s2")
            .await
            .unwrap();
        let now_due = store.claim_events(10, 60_000).await.unwrap();
        assert_eq!(now_due.len(), 2, "{}", db.name);
        assert!(now_due.iter().all(|c| c.account_sid == a));
        assert!(now_due.iter().all(|c| c.url == "https://example.com/fixed"));
        assert!(now_due.iter().all(|c| c.secret.as_bytes() == b"s2"));

        // Deleting b's subscription deletes b's events, and only them.
        store.delete_event_subscription(&b).await.unwrap();
        assert_eq!(count_events(&db, &b).await, 0);
        assert_eq!(count_events(&db, &a).await, 2);
        // Events recorded for b now are skipped.
        assert_eq!(store.record_events(&[completed(&b, 3)]).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn events_left_without_a_subscription_are_dropped_by_the_claim() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store).await;
        // As if recorded by a transaction that raced the subscription's deletion.
        let mut conn = raw(&db).await;
        sqlx::query(
            "INSERT INTO events (id, account_sid, event_type, body, attempts, next_attempt_at, \
             created_at) VALUES ('orphan', $1, 'x', '{}', 0, 0, 0)",
        )
        .bind(&a)
        .execute(&mut conn)
        .await
        .unwrap();
        assert!(store.claim_events(10, 60_000).await.unwrap().is_empty());
        assert_eq!(count_events(&db, &a).await, 0, "{}", db.name);
    }
}

#[tokio::test]
async fn concurrent_claims_never_hand_out_the_same_event() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store).await;
        store
            .put_event_subscription(&a, "https://example.com/hooks", "s")
            .await
            .unwrap();
        let events: Vec<NewEvent> = (0..300).map(|n| completed(&a, n)).collect();
        store.record_events(&events).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { claim_all(&store, 7).await }));
        }
        let mut ids = Vec::new();
        for task in tasks {
            ids.extend(task.await.unwrap().into_iter().map(|c| c.id));
        }
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(ids.len(), 300, "{}", db.name);
        assert_eq!(unique.len(), 300, "{}", db.name);
    }
}
