//! The delivery engine end to end: store → planner → queue → dispatcher → sandbox providers over
//! TLS → outcomes, on SQLite and PostgreSQL.

mod common;

use std::collections::BTreeMap;

use common::*;
use herald_core::send::Sender;
use herald_core::time::now_ms;
use herald_core::{Provider, Tags};
use herald_delivery::EngineConfig;
use herald_store::delivery::{NotificationFilter, OperationFilter};
use herald_store::{CredentialStore, DeliveryStore, DeviceStore, PageRequest};
use serde_json::{Map, json};

#[tokio::test]
async fn sends_to_direct_tokens_and_users_across_apns_and_fcm() {
    each_backend(|db| async move {
        let h = Harness::new(db).await;
        let ada = h.register(None, Provider::Apn, "ada-iphone").await;
        h.register(Some(&ada), Provider::Fcm, "ada-pixel").await;
        let bob = h.register(None, Provider::Fcm, "bob-pixel").await;
        let mut req = request(vec![
            device(Provider::Apn, "direct-apn"),
            device(Provider::Fcm, "direct-fcm"),
            user(&ada),
            user(&bob),
            user("comms_pushnotificationuser_01h0000000000000000000000"),
        ]);
        req.tags = Tags::from(BTreeMap::from([(
            "campaign".to_string(),
            "ship".to_string(),
        )]));
        let id = h.send(req).await;
        let op = h.finished(&id).await;
        assert_eq!(op.status, "COMPLETED");
        assert_eq!(op.stats.recipients, 5);
        assert_eq!(op.stats.unaddressable, 1, "{op:?}");
        assert_eq!(op.stats.sent, 5, "{op:?}");
        assert_eq!(op.stats.total, 6);
        h.assert_stats_match_rows(&op).await;

        for token in [
            "direct-apn",
            "direct-fcm",
            "ada-iphone",
            "ada-pixel",
            "bob-pixel",
        ] {
            let got = h.received(token).await;
            assert_eq!(got.len(), 1, "{token}: {got:?}");
            assert_eq!(got[0]["status"], 200, "{token}: {got:?}");
        }
        let apns = &h.received("ada-iphone").await[0];
        assert_eq!(apns["provider"], "apns");
        assert_eq!(
            apns["payload"]["aps"]["alert"]["body"],
            "Your order shipped"
        );
        let fcm = &h.received("bob-pixel").await[0];
        assert_eq!(fcm["provider"], "fcm");

        let rows = h.notifications(&id).await;
        assert_eq!(rows.len(), 5);
        for n in &rows {
            assert_eq!(n.status, "SENT");
            assert_eq!(n.attempts, 1);
            assert!(n.sent_at.is_some() && n.error.is_none());
            assert_eq!(n.tags.as_map()["campaign"], "ship");
            let expected = if n.provider == Provider::Apn {
                &h.apn
            } else {
                &h.fcm
            };
            assert_eq!(&n.credential_id, expected);
            let one = h.store.get_notification(&h.account, &n.id).await.unwrap();
            assert_eq!(&one, n);
        }
        let ada_rows: Vec<_> = rows
            .iter()
            .filter(|n| n.user_id.as_deref() == Some(&ada))
            .collect();
        assert_eq!(ada_rows.len(), 2);

        // Filters: user, provider, tags (all must match), status, operation.
        let list = |filter: NotificationFilter| {
            let store = h.store.clone();
            let account = h.account.clone();
            async move {
                store
                    .list_notifications(&account, &filter, &PageRequest::first(100))
                    .await
                    .unwrap()
                    .items
            }
        };
        assert_eq!(
            list(NotificationFilter {
                user_id: Some(ada.clone()),
                ..Default::default()
            })
            .await
            .len(),
            2
        );
        assert_eq!(
            list(NotificationFilter {
                provider: Some(Provider::Fcm),
                ..Default::default()
            })
            .await
            .len(),
            3
        );
        assert_eq!(
            list(NotificationFilter {
                tags: vec![("campaign".into(), "ship".into())],
                ..Default::default()
            })
            .await
            .len(),
            5
        );
        assert_eq!(
            list(NotificationFilter {
                tags: vec![("campaign".into(), "ship".into()), ("x".into(), "y".into())],
                ..Default::default()
            })
            .await
            .len(),
            0
        );
        assert_eq!(
            list(NotificationFilter {
                tags: vec![("campaign".into(), "sh%".into())],
                ..Default::default()
            })
            .await
            .len(),
            0
        );
        assert_eq!(
            list(NotificationFilter {
                status: Some("FAILED".into()),
                ..Default::default()
            })
            .await
            .len(),
            0
        );
        // Another account sees nothing.
        assert!(matches!(
            h.store
                .get_operation("AC00000000000000000000000000000000", &id)
                .await,
            Err(herald_store::StoreError::NotFound)
        ));
        let ops = h
            .store
            .list_operations(
                &h.account,
                &OperationFilter {
                    status: Some("COMPLETED".into()),
                    ..Default::default()
                },
                &PageRequest::first(10),
            )
            .await
            .unwrap();
        assert_eq!(ops.items.len(), 1);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn templated_content_is_rendered_per_recipient_and_silent_pushes_are_background() {
    each_backend(|db| async move {
        let h = Harness::new(db).await;
        let mut vars = Map::new();
        vars.insert("name".into(), json!("Ada"));
        let mut req = request(vec![
            herald_core::send::Recipient::Device {
                token: "t-ada".into(),
                provider: Provider::Apn,
                variables: vars,
            },
            device(Provider::Fcm, "t-anon"),
        ]);
        req.content.title = Some("Hi {{ name }}".into());
        req.templated = true;
        let id = h.send(req).await;
        assert_eq!(h.finished(&id).await.stats.sent, 2);
        let ada = &h.received("t-ada").await[0];
        assert_eq!(ada["payload"]["aps"]["alert"]["title"], "Hi Ada");
        let anon = &h.received("t-anon").await[0];
        assert_eq!(anon["payload"]["message"]["notification"]["title"], "Hi ");

        let mut silent = request(vec![device(Provider::Apn, "t-silent")]);
        silent.silent = true;
        silent.content.title = None;
        silent.content.body = None;
        silent.content.data.insert("sync".into(), json!("1"));
        let id = h.send(silent).await;
        assert_eq!(h.finished(&id).await.stats.sent, 1);
        let got = &h.received("t-silent").await[0];
        assert_eq!(got["headers"]["apns-push-type"], "background", "{got}");
        assert_eq!(got["headers"]["apns-priority"], "5");
        assert_eq!(got["payload"]["aps"]["content-available"], 1);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn scheduled_operations_wait_for_send_at_and_can_be_canceled() {
    each_backend(|db| async move {
        let h = Harness::new(db).await;
        // Far in the future: stays SCHEDULED until canceled.
        let mut later = request(
            (0..5)
                .map(|i| device(Provider::Apn, &format!("later-{i}")))
                .collect(),
        );
        later.send_at_ms = Some(now_ms() + 3_600_000);
        let later_id = h.send(later).await;
        let op = loop {
            let op = h.operation(&later_id).await;
            assert_stats_add_up(&op);
            if op.stats.scheduled == 5 {
                break op;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(op.status, "SCHEDULED");
        h.assert_stats_match_rows(&op).await;
        h.store
            .cancel_operation(&h.account, &later_id)
            .await
            .unwrap();
        let op = h.operation(&later_id).await;
        assert_eq!(op.status, "CANCELED");
        assert_eq!(
            (op.stats.canceled, op.stats.scheduled, op.stats.total),
            (5, 0, 5)
        );
        assert!(op.completed_at.is_some());
        h.assert_stats_match_rows(&op).await;
        // Idempotent.
        h.store
            .cancel_operation(&h.account, &later_id)
            .await
            .unwrap();
        assert_eq!(h.operation(&later_id).await, op);
        assert!(matches!(
            h.store
                .cancel_operation(&h.account, "comms_operation_01h0000000000000000000000")
                .await,
            Err(herald_store::StoreError::NotFound)
        ));

        // Soon: SCHEDULED rows become QUEUED at sendAt and are sent.
        let mut soon = request(vec![
            device(Provider::Fcm, "soon-1"),
            device(Provider::Apn, "soon-2"),
        ]);
        let send_at = now_ms() + 1500;
        soon.send_at_ms = Some(send_at);
        let soon_id = h.send(soon).await;
        let op = h.finished(&soon_id).await;
        assert_eq!((op.status.as_str(), op.stats.sent), ("COMPLETED", 2));
        for n in h.notifications(&soon_id).await {
            assert!(n.sent_at.unwrap() >= send_at, "sent before sendAt: {n:?}");
        }
        for i in 0..5 {
            assert!(h.received(&format!("later-{i}")).await.is_empty());
        }
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn retries_after_503_and_429_with_retry_after() {
    each_backend(|db| async move {
        let h = Harness::new(db).await;
        h.fault(json!({"token": "flaky", "status": 503, "times": 2}))
            .await;
        h.fault(json!({"token": "throttled", "status": 429, "times": 1, "retryAfter": 1}))
            .await;
        let id = h
            .send(request(vec![
                device(Provider::Apn, "flaky"),
                device(Provider::Fcm, "throttled"),
            ]))
            .await;
        let op = h.finished(&id).await;
        assert_eq!(op.stats.sent, 2, "{op:?}");
        h.assert_stats_match_rows(&op).await;
        let rows = h.notifications(&id).await;
        let flaky = rows.iter().find(|n| n.token == "flaky").unwrap();
        assert_eq!(flaky.attempts, 3);
        let throttled = rows.iter().find(|n| n.token == "throttled").unwrap();
        assert_eq!(throttled.attempts, 2);
        let got = h.received("throttled").await;
        assert_eq!(got.len(), 2);
        let (first, second) = (got[0]["receivedAt"].as_i64(), got[1]["receivedAt"].as_i64());
        if let (Some(a), Some(b)) = (first, second) {
            assert!(b - a >= 1000, "Retry-After: 1 not honoured: {got:?}");
        }
        assert_eq!(h.received("flaky").await.len(), 3);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn ttl_expiry_and_exhausted_retries_fail_without_late_delivery() {
    each_backend(|db| async move {
        let h = Harness::new(db).await;
        // The provider asks for a retry after 30 s, past the 2 s TTL: fails at once as expired.
        h.fault(json!({"token": "short-lived", "status": 503, "retryAfter": 30}))
            .await;
        let mut req = request(vec![device(Provider::Apn, "short-lived")]);
        req.ttl = 2;
        let id = h.send(req).await;
        let op = h.finished(&id).await;
        assert_eq!(op.stats.failed, 1);
        let n = &h.notifications(&id).await[0];
        assert_eq!(n.status, "FAILED");
        assert_eq!(n.attempts, 1);
        let error = n.error.as_ref().unwrap();
        assert_eq!(error["code"], "expired", "{error}");
        assert_eq!(error["providerStatus"], 503);
        assert_eq!(h.received("short-lived").await.len(), 1);

        // Always 503: attempts run out (max 5 in the test config).
        h.fault(json!({"token": "down", "status": 503})).await;
        let id = h.send(request(vec![device(Provider::Fcm, "down")])).await;
        h.finished(&id).await;
        let n = &h.notifications(&id).await[0];
        assert_eq!((n.status.as_str(), n.attempts), ("FAILED", 5));
        assert_eq!(n.error.as_ref().unwrap()["code"], "retries-exhausted");
        assert_eq!(h.received("down").await.len(), 5);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn dead_tokens_invalidate_devices_which_later_sends_skip() {
    each_backend(|db| async move {
        let h = Harness::new(db).await;
        let ada = h.register(None, Provider::Apn, "ada-old-phone").await;
        h.register(Some(&ada), Provider::Fcm, "ada-pixel").await;
        h.fault(json!({"token": "ada-old-phone", "status": 410, "reason": "Unregistered"}))
            .await;
        let id = h.send(request(vec![user(&ada)])).await;
        let op = h.finished(&id).await;
        assert_eq!((op.stats.sent, op.stats.failed), (1, 1), "{op:?}");
        let dead = h
            .notifications(&id)
            .await
            .into_iter()
            .find(|n| n.token == "ada-old-phone")
            .unwrap();
        let error = dead.error.unwrap();
        assert_eq!(error["code"], "dead-token");
        assert_eq!(error["providerStatus"], 410);
        assert_eq!(error["providerReason"], "Unregistered");
        let regs = h
            .store
            .list_device_registrations(&h.account, &ada, None, &PageRequest::first(10))
            .await
            .unwrap();
        let device = regs.items[0]
            .devices
            .iter()
            .find(|d| d.token == "ada-old-phone")
            .unwrap();
        assert_eq!(device.status, herald_core::DeviceStatus::Invalid);

        // The next send to Ada reaches only the live device.
        let id = h.send(request(vec![user(&ada)])).await;
        let op = h.finished(&id).await;
        assert_eq!(
            (op.stats.sent, op.stats.failed, op.stats.total),
            (1, 0, 1),
            "{op:?}"
        );
        assert_eq!(h.received("ada-old-phone").await.len(), 1);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn credential_errors_fail_fast_and_show_on_the_credential() {
    each_backend(|db| async move {
        let mut config = test_config();
        config.workers = 1;
        config.claim_batch = 10;
        let h = Harness::with_config(db, config).await;
        let tokens: Vec<String> = (0..100).map(|i| format!("bad-key-{i}")).collect();
        for token in &tokens {
            h.fault(json!({"token": token, "status": 403, "reason": "InvalidProviderToken"}))
                .await;
        }
        let id = h
            .send(request(
                tokens.iter().map(|t| device(Provider::Apn, t)).collect(),
            ))
            .await;
        let op = h.finished(&id).await;
        assert_eq!(op.stats.failed, 100, "{op:?}");
        h.assert_stats_match_rows(&op).await;
        for n in h.notifications(&id).await {
            assert_eq!(
                n.error.as_ref().unwrap()["code"],
                "credential-error",
                "{n:?}"
            );
        }
        let mut sent = 0;
        for token in &tokens {
            sent += h.received(token).await.len();
        }
        let per: Vec<usize> = {
            let mut v = Vec::new();
            for t in &tokens {
                v.push(h.received(t).await.len());
            }
            v
        };
        assert!(
            sent <= 10,
            "{sent} sends through a refused credential {per:?}"
        );
        let credential = h.store.get_credential(&h.account, &h.apn).await.unwrap();
        let last = credential.last_error.expect("lastError set");
        assert_eq!(last.code, "InvalidProviderToken");
        // FCM through the same app still works.
        let id = h.send(request(vec![device(Provider::Fcm, "fine")])).await;
        assert_eq!(h.finished(&id).await.stats.sent, 1);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn named_credentials_and_missing_ones() {
    each_backend(|db| async move {
        let h = Harness::new(db).await;
        // Only an FCM credential named: APNs recipients are unaddressable.
        let mut req = request(vec![
            device(Provider::Apn, "n-apn"),
            device(Provider::Fcm, "n-fcm"),
        ]);
        req.from = Sender::Credentials {
            apn: None,
            fcm: Some(h.fcm.clone()),
        };
        let id = h.send(req).await;
        let op = h.finished(&id).await;
        assert_eq!((op.stats.sent, op.stats.unaddressable), (1, 1), "{op:?}");
        // Account default app.
        let mut req = request(vec![device(Provider::Apn, "d-apn")]);
        req.from = Sender::AccountDefault;
        let id = h.send(req).await;
        assert_eq!(h.finished(&id).await.stats.sent, 1);
        h.stop().await;
    })
    .await;
}

/// Operations claimed for planning together share one read of each sender's route; each still
/// gets its own sender's. (Created before the planner is woken, so that one claim takes them.)
#[tokio::test]
async fn operations_planned_together_keep_their_own_senders() {
    each_backend(|db| async move {
        let h = Harness::new(db).await;
        let senders = [
            Sender::Credentials {
                apn: None,
                fcm: Some(h.fcm.clone()),
            },
            Sender::Credentials {
                apn: Some(h.apn.clone()),
                fcm: None,
            },
            request(Vec::new()).from,
            Sender::AccountDefault,
        ];
        let mut ids = Vec::new();
        for (i, sender) in senders.iter().enumerate() {
            let mut req = request(vec![
                device(Provider::Apn, &format!("together-apn-{i}")),
                device(Provider::Fcm, &format!("together-fcm-{i}")),
            ]);
            req.from = sender.clone();
            let created = h
                .store
                .create_operation(herald_store::delivery::NewOperation {
                    account_sid: h.account.clone(),
                    request: req,
                    idempotency: None,
                })
                .await
                .unwrap();
            ids.push(created.id);
        }
        h.wake.notify_one();
        let expected = [(1, 1), (1, 1), (2, 0), (2, 0)];
        for (id, (sent, unaddressable)) in ids.iter().zip(expected) {
            let op = h.finished(id).await;
            assert_eq!(
                (op.stats.sent, op.stats.unaddressable),
                (sent, unaddressable),
                "{op:?}"
            );
            for n in h.notifications(id).await {
                let credential = match n.provider {
                    Provider::Apn => &h.apn,
                    Provider::Fcm => &h.fcm,
                };
                assert_eq!(&n.credential_id, credential);
            }
        }
        assert_eq!(h.notifications(&ids[0]).await[0].provider, Provider::Fcm);
        assert_eq!(h.notifications(&ids[1]).await[0].provider, Provider::Apn);
        h.stop().await;
    })
    .await;
}

/// Shutting the engine down while batches are with the providers waits for their sends and
/// for their outcome writes (which run in the background of the dispatchers' next sends): when
/// `shutdown` returns, every notification is written with its outcome.
#[tokio::test]
async fn shutdown_waits_for_the_outcome_writes_of_batches_in_flight() {
    each_backend(|db| async move {
        let mut h = Harness::new(db).await;
        h.latency(300).await;
        let tokens: Vec<String> = (0..120).map(|i| format!("slow-{i}")).collect();
        let id = h
            .send(request(
                tokens.iter().map(|t| device(Provider::Apn, t)).collect(),
            ))
            .await;
        // Wait until every row is planned and claimed (a row the planner hands over counts its
        // attempt when written; one claimed from the store, when claimed). The sandbox holds
        // its answers for 300 ms, so batches are still being sent when the shutdown starts.
        let mut claimed = false;
        for _ in 0..500 {
            let rows = h.notifications(&id).await;
            if rows.len() == 120 && rows.iter().all(|n| n.attempts == 1) {
                claimed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(claimed, "every row claimed within 5 s");
        let op = h.operation(&id).await;
        assert!(op.stats.queued > 0, "rows still in flight: {op:?}");
        h.shutdown_engine().await;
        let op = h.operation(&id).await;
        assert_eq!(op.status, "COMPLETED", "{op:?}");
        assert_eq!((op.stats.sent, op.stats.queued), (120, 0), "{op:?}");
        h.assert_stats_match_rows(&op).await;
        h.stop().await;
    })
    .await;
}

/// At most `per_credential_concurrency` sends are in flight through one credential, however
/// many dispatchers have its notifications: the sandbox, answering each after 100 ms, never
/// holds more at once (and does hold several: the limit is what bounds them).
#[tokio::test]
async fn sends_through_one_credential_stay_within_its_concurrency() {
    each_backend(|db| async move {
        let config = EngineConfig {
            per_credential_concurrency: 3,
            workers: 4,
            claim_batch: 10,
            ..test_config()
        };
        let h = Harness::with_config(db, config).await;
        h.latency(100).await;
        let tokens: Vec<String> = (0..30).map(|i| format!("bounded-{i}")).collect();
        let id = h
            .send(request(
                tokens.iter().map(|t| device(Provider::Apn, t)).collect(),
            ))
            .await;
        let op = h.finished(&id).await;
        assert_eq!(op.stats.sent, 30, "{op:?}");
        let stats = h.sandbox_stats().await;
        let peak = stats["peakInFlight"].as_u64().unwrap();
        assert!((2..=3).contains(&peak), "peak in flight {peak}: {stats}");
        assert_eq!(stats["apns"]["accepted"], 30, "{stats}");
        h.stop().await;
    })
    .await;
}
