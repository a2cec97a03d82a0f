//! The FCM HTTP v1 and legacy clients against the sandbox.

mod common;

use std::time::Duration;

use herald_providers::{FcmCredential, Outcome, Priority, PushMessage, fcm_message};
use serde_json::{Value, json};
use uuid::Uuid;

use common::{header, start};

fn message() -> PushMessage {
    let mut msg = PushMessage {
        title: Some("Hello".into()),
        body: Some("Your order shipped".into()),
        image: Some("https://example.com/a.png".into()),
        sound: Some("default".into()),
        click_action: Some("OPEN_ORDER".into()),
        ttl_seconds: 3600,
        collapse_key: Some("order-42".into()),
        priority: Priority::Low,
        ..PushMessage::new()
    };
    msg.data.insert("orderId".into(), json!("42"));
    msg.data.insert("count".into(), json!(3));
    msg
}

fn oauth_requests(stats: &Value) -> u64 {
    stats["oauth"]["received"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_sends_share_one_token_fetch() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    let client = providers.fcm("fcm", 1, &sandbox.fcm()).unwrap();
    assert_eq!(client.project_id(), herald_sandbox::PROJECT_ID);
    let msg = message();
    let prepared = client.prepare(&msg);
    let outcomes = futures::future::join_all((0..50).map(|i| {
        let client = client.clone();
        let prepared = &prepared;
        async move {
            client
                .send(prepared, &format!("fcm-token-{i}"), Uuid::now_v7())
                .await
        }
    }))
    .await;
    for outcome in &outcomes {
        match outcome {
            Outcome::Delivered {
                provider_id: Some(name),
            } => assert!(
                name.starts_with("projects/herald-sandbox/messages/"),
                "{name}"
            ),
            other => panic!("{other}"),
        }
    }
    assert_eq!(client.token_fetches(), 1);
    let stats = sandbox.stats().await;
    assert_eq!(oauth_requests(&stats), 1, "{stats}");
    assert_eq!(stats["fcm"]["accepted"], 50, "{stats}");

    // Later sends reuse the cached token.
    for i in 0..10 {
        let outcome = client
            .send(&prepared, &format!("later-{i}"), Uuid::now_v7())
            .await;
        assert!(outcome.is_delivered(), "{outcome}");
    }
    assert_eq!(client.token_fetches(), 1);
    assert_eq!(oauth_requests(&sandbox.stats().await), 1);

    // What the device got is exactly the rendered message.
    let received = sandbox.received("fcm-token-7").await;
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0]["payload"],
        json!({"message": fcm_message(&msg, "fcm-token-7")})
    );
    assert_eq!(
        received[0]["payload"]["message"]["data"],
        json!({"orderId": "42", "count": "3"})
    );
    assert_eq!(
        received[0]["payload"]["message"]["android"],
        json!({"priority": "NORMAL", "ttl": "3600s", "collapse_key": "order-42",
            "notification": {"sound": "default", "click_action": "OPEN_ORDER"}})
    );
    assert_eq!(
        header(&received[0], "content-type"),
        Some("application/json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_access_token_is_refreshed_once_for_everyone() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    let client = providers.fcm("fcm", 1, &sandbox.fcm()).unwrap();
    let prepared = client.prepare(&message());
    assert!(
        client
            .send(&prepared, "t0", Uuid::now_v7())
            .await
            .is_delivered()
    );
    assert_eq!(client.token_fetches(), 1);

    let revoked = sandbox.post("/_sandbox/fcm/revoke-access-tokens").await;
    assert_eq!(revoked["revoked"], 1);

    // Every one of these is refused with 401 first; one new token serves them all.
    let outcomes = futures::future::join_all((0..20).map(|i| {
        let client = client.clone();
        let prepared = &prepared;
        async move {
            client
                .send(prepared, &format!("after-{i}"), Uuid::now_v7())
                .await
        }
    }))
    .await;
    for outcome in &outcomes {
        assert!(outcome.is_delivered(), "{outcome}");
    }
    assert_eq!(client.token_fetches(), 2);
    let stats = sandbox.stats().await;
    assert_eq!(oauth_requests(&stats), 2, "{stats}");
    let first = sandbox.received("after-3").await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first[0]["status"], 401);
    assert_eq!(first[1]["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_is_refreshed_before_it_expires() {
    let sandbox = start().await;
    // Tokens that live 2 seconds: the client refreshes them halfway (a long-lived one 5 minutes
    // before it expires).
    sandbox
        .patch_config(json!({"accessTokenLifetime": 2}))
        .await;
    let providers = sandbox.providers();
    let client = providers.fcm("fcm", 1, &sandbox.fcm()).unwrap();
    let prepared = client.prepare(&message());
    assert!(
        client
            .send(&prepared, "a", Uuid::now_v7())
            .await
            .is_delivered()
    );
    assert_eq!(client.token_fetches(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        client
            .send(&prepared, "b", Uuid::now_v7())
            .await
            .is_delivered()
    );
    assert_eq!(client.token_fetches(), 2);
    // Refreshed ahead of time, so the provider never refused a token.
    assert_eq!(sandbox.received("b").await.len(), 1);
    assert_eq!(oauth_requests(&sandbox.stats().await), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_after_the_refresh_is_a_credential_error() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    let client = providers.fcm("fcm", 1, &sandbox.fcm()).unwrap();
    let prepared = client.prepare(&message());
    // Two 401s in a row for this token: the refresh happens once, then the credential is blamed.
    sandbox
        .fault(json!({"token": "t", "status": 401, "reason": "UNAUTHENTICATED", "times": 2}))
        .await;
    let outcome = client.send(&prepared, "t", Uuid::now_v7()).await;
    assert!(
        matches!(
            outcome,
            Outcome::CredentialError {
                status: Some(401),
                ..
            }
        ),
        "{outcome}"
    );
    assert_eq!(client.token_fetches(), 2);
    assert_eq!(sandbox.received("t").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_errors_are_classified() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    let client = providers.fcm("fcm", 1, &sandbox.fcm()).unwrap();
    let prepared = client.prepare(&message());
    let id = Uuid::now_v7();
    for fault in [
        json!({"token": "unregistered", "status": 404, "reason": "UNREGISTERED"}),
        json!({"token": "mismatch", "status": 403, "reason": "SENDER_ID_MISMATCH"}),
        json!({"token": "invalid", "status": 400, "reason": "INVALID_ARGUMENT"}),
        json!({"token": "quota", "status": 429, "reason": "QUOTA_EXCEEDED", "retryAfter": 5}),
        json!({"token": "unavailable", "status": 503, "reason": "UNAVAILABLE", "retryAfter": 2}),
        json!({"token": "internal", "status": 500, "reason": "INTERNAL"}),
        json!({"token": "apns-auth", "status": 401, "reason": "THIRD_PARTY_AUTH_ERROR"}),
    ] {
        sandbox.fault(fault).await;
    }
    assert_eq!(
        client.send(&prepared, "unregistered", id).await,
        Outcome::DeadToken {
            status: 404,
            reason: "UNREGISTERED: Requested entity was not found.".into()
        }
    );
    assert_eq!(
        client.send(&prepared, "mismatch", id).await,
        Outcome::DeadToken {
            status: 403,
            reason: "SENDER_ID_MISMATCH: SenderId mismatch".into()
        }
    );
    // An INVALID_ARGUMENT that is not about the token: this message cannot succeed.
    assert!(matches!(
        client.send(&prepared, "invalid", id).await,
        Outcome::Permanent {
            status: Some(400),
            ..
        }
    ));
    assert_eq!(
        client.send(&prepared, "quota", id).await,
        Outcome::Retry {
            after: Some(Duration::from_secs(5)),
            status: Some(429),
            reason: "QUOTA_EXCEEDED: Quota exceeded for the sender.".into()
        }
    );
    assert_eq!(
        client.send(&prepared, "unavailable", id).await,
        Outcome::Retry {
            after: Some(Duration::from_secs(2)),
            status: Some(503),
            reason: "UNAVAILABLE: The service is currently unavailable.".into()
        }
    );
    assert!(matches!(
        client.send(&prepared, "internal", id).await,
        Outcome::Retry {
            status: Some(500),
            ..
        }
    ));
    // THIRD_PARTY_AUTH_ERROR is about the APNs credential in Firebase, not our access token.
    let outcome = client.send(&prepared, "apns-auth", id).await;
    assert!(
        matches!(
            outcome,
            Outcome::CredentialError {
                status: Some(401),
                ..
            }
        ),
        "{outcome}"
    );
    assert_eq!(outcome.reason_code(), "THIRD_PARTY_AUTH_ERROR");
    assert_eq!(client.token_fetches(), 1);
    // A token FCM calls invalid (the sandbox refuses whitespace in tokens) is dead.
    let outcome = client.send(&prepared, "not a token", id).await;
    assert!(
        matches!(outcome, Outcome::DeadToken { status: 400, .. }),
        "{outcome}"
    );
    assert_eq!(outcome.reason_code(), "INVALID_ARGUMENT");
    // A reset stream may have been processed: Retry, not resent.
    sandbox
        .fault(json!({"token": "reset", "reset": true, "times": 1}))
        .await;
    assert!(matches!(
        client.send(&prepared, "reset", id).await,
        Outcome::Retry { status: None, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_problems() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    let prepared = herald_providers::FcmPrepared::new(&message());
    let id = Uuid::now_v7();

    // The token endpoint refuses the grant: every send says the credential is bad, and waiting
    // senders share the one failed fetch.
    sandbox
        .fault(json!({"token": "_oauth", "status": 400, "reason": "invalid_grant", "times": 1}))
        .await;
    let client = providers.fcm("refused", 1, &sandbox.fcm()).unwrap();
    let outcomes = futures::future::join_all((0..10).map(|i| {
        let client = client.clone();
        let prepared = &prepared;
        async move { client.send(prepared, &format!("x{i}"), id).await }
    }))
    .await;
    for outcome in &outcomes {
        assert!(
            matches!(
                outcome,
                Outcome::CredentialError {
                    status: Some(400),
                    ..
                }
            ),
            "{outcome}"
        );
        assert_eq!(outcome.reason_code(), "OAuth invalid_grant");
    }
    assert_eq!(client.token_fetches(), 1);
    // The fault is used up: the next send fetches again and goes through.
    assert!(client.send(&prepared, "x", id).await.is_delivered());
    assert_eq!(client.token_fetches(), 2);

    // A token endpoint in trouble: retry later.
    sandbox
        .fault(json!({"token": "_oauth", "status": 503, "retryAfter": 4, "times": 1}))
        .await;
    let client = providers.fcm("flaky", 1, &sandbox.fcm()).unwrap();
    assert!(matches!(
        client.send(&prepared, "y", id).await,
        Outcome::Retry {
            after: Some(d),
            status: Some(503),
            ..
        } if d == Duration::from_secs(4)
    ));

    // A service account whose key is not the one Google knows: invalid_grant.
    let mut account: Value = serde_json::from_str(&sandbox.fcm().service_account_json).unwrap();
    account["client_email"] = json!("someone-else@herald-sandbox.iam.gserviceaccount.com");
    let client = providers
        .fcm(
            "unknown-account",
            1,
            &FcmCredential {
                service_account_json: account.to_string(),
            },
        )
        .unwrap();
    let outcome = client.send(&prepared, "z", id).await;
    assert!(
        matches!(outcome, Outcome::CredentialError { .. }),
        "{outcome}"
    );

    // Another project than the service account's: PERMISSION_DENIED.
    let mut account: Value = serde_json::from_str(&sandbox.fcm().service_account_json).unwrap();
    account["project_id"] = json!("someone-elses-project");
    let client = providers
        .fcm(
            "wrong-project",
            1,
            &FcmCredential {
                service_account_json: account.to_string(),
            },
        )
        .unwrap();
    let outcome = client.send(&prepared, "z", id).await;
    assert!(
        matches!(
            outcome,
            Outcome::CredentialError {
                status: Some(403),
                ..
            }
        ),
        "{outcome}"
    );
    assert_eq!(outcome.reason_code(), "PERMISSION_DENIED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_is_data_only() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    let client = providers.fcm("fcm", 1, &sandbox.fcm()).unwrap();
    let mut msg = message();
    msg.silent = true;
    msg.fcm_override = Some(json!({"android": {"restricted_package_name": "com.example"}}));
    let outcome = client
        .send(&client.prepare(&msg), "silent", Uuid::now_v7())
        .await;
    assert!(outcome.is_delivered(), "{outcome}");
    let received = sandbox.received("silent").await;
    let message = &received[0]["payload"]["message"];
    assert!(message.get("notification").is_none(), "{message}");
    assert!(
        message["android"].get("notification").is_none(),
        "{message}"
    );
    assert_eq!(message["android"]["restricted_package_name"], "com.example");
    assert_eq!(message["data"]["orderId"], "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_send_and_errors() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    let client = providers
        .fcm_legacy("legacy", 1, &sandbox.fcm_legacy())
        .unwrap();
    let msg = message();
    let prepared = client.prepare(&msg);
    let id = Uuid::now_v7();
    match client.send(&prepared, "legacy-token", id).await {
        Outcome::Delivered {
            provider_id: Some(message_id),
        } => assert!(message_id.starts_with("0:"), "{message_id}"),
        other => panic!("{other}"),
    }
    let received = sandbox.received("legacy-token").await;
    assert_eq!(
        received[0]["payload"],
        herald_providers::fcm_legacy_body(&msg, "legacy-token")
    );
    assert_eq!(received[0]["payload"]["priority"], "normal");
    assert_eq!(received[0]["payload"]["time_to_live"], 3600);

    for fault in [
        json!({"token": "not-registered", "status": 404}),
        json!({"token": "invalid", "status": 400}),
        json!({"token": "mismatch", "status": 403}),
        json!({"token": "too-fast", "status": 429}),
        json!({"token": "down", "status": 503, "retryAfter": 6}),
    ] {
        sandbox.fault(fault).await;
    }
    assert_eq!(
        client.send(&prepared, "not-registered", id).await,
        Outcome::DeadToken {
            status: 200,
            reason: "NotRegistered".into()
        }
    );
    assert_eq!(
        client.send(&prepared, "invalid", id).await,
        Outcome::DeadToken {
            status: 200,
            reason: "InvalidRegistration".into()
        }
    );
    assert_eq!(
        client.send(&prepared, "mismatch", id).await,
        Outcome::DeadToken {
            status: 200,
            reason: "MismatchSenderId".into()
        }
    );
    assert_eq!(
        client.send(&prepared, "too-fast", id).await,
        Outcome::Retry {
            after: None,
            status: Some(200),
            reason: "DeviceMessageRateExceeded".into()
        }
    );
    assert_eq!(
        client.send(&prepared, "down", id).await,
        Outcome::Retry {
            after: Some(Duration::from_secs(6)),
            status: Some(503),
            reason: "Unavailable".into()
        }
    );

    // A key the endpoint refuses: what a legacy key gets from Google today.
    let refused = providers
        .fcm_legacy(
            "refused",
            1,
            &herald_providers::FcmLegacyCredential {
                server_key: "AAAA-not-the-key".into(),
            },
        )
        .unwrap();
    let outcome = refused.send(&prepared, "legacy-token", id).await;
    assert!(
        matches!(
            outcome,
            Outcome::CredentialError {
                status: Some(401),
                ..
            }
        ),
        "{outcome}"
    );
    assert!(
        outcome.reason().contains("shut the legacy FCM HTTP API"),
        "{outcome}"
    );
    assert!(outcome.reason().contains("service account"), "{outcome}");
}
