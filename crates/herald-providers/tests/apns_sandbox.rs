//! The APNs client against the sandbox over TLS + HTTP/2.

mod common;

use std::time::Duration;

use herald_providers::{ApnsAuth, ApnsCredential, Outcome, Priority, PushMessage, apns_payload};
use serde_json::json;
use uuid::Uuid;

use common::{header, start};

fn message() -> PushMessage {
    let mut msg = PushMessage {
        title: Some("Hello".into()),
        body: Some("Your order shipped".into()),
        sound: Some("default".into()),
        badge: Some(2),
        ttl_seconds: 3600,
        collapse_key: Some("order-42".into()),
        ..PushMessage::new()
    };
    msg.data.insert("orderId".into(), json!("42"));
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_one_jwt_for_many_requests() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    let client = providers
        .apns("cred-token", 1, &sandbox.apns_token())
        .unwrap();
    let msg = message();
    let prepared = client.prepare(&msg);
    let sends: Vec<(String, Uuid)> = (0..100)
        .map(|i| (format!("device{i:03}"), Uuid::now_v7()))
        .collect();
    let outcomes = futures::future::join_all(sends.iter().map(|(token, id)| {
        let client = client.clone();
        let prepared = &prepared;
        async move { client.send(prepared, token, *id).await }
    }))
    .await;
    for (outcome, (_, id)) in outcomes.iter().zip(&sends) {
        // The sandbox echoes the apns-id we sent.
        assert_eq!(
            outcome,
            &Outcome::Delivered {
                provider_id: Some(id.to_string())
            }
        );
    }
    // One provider token for all of them; the sandbox would have answered
    // TooManyProviderTokenUpdates to a second one on the same connection.
    assert_eq!(client.provider_tokens_minted(), 1);
    assert_eq!(client.connections_opened(), 1);
    let stats = sandbox.stats().await;
    assert_eq!(stats["apns"]["accepted"], 100, "{stats}");

    let received = sandbox.received("device007").await;
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r["status"], 200);
    assert_eq!(header(r, "apns-topic"), Some(herald_sandbox::BUNDLE_ID));
    assert_eq!(header(r, "apns-push-type"), Some("alert"));
    assert_eq!(header(r, "apns-priority"), Some("10"));
    assert_eq!(header(r, "apns-collapse-id"), Some("order-42"));
    assert_eq!(header(r, "apns-id"), Some(sends[7].1.to_string().as_str()));
    let expiration: i64 = header(r, "apns-expiration").unwrap().parse().unwrap();
    assert!(expiration > 1_700_000_000, "{expiration}");
    let expected: serde_json::Value = serde_json::from_slice(&apns_payload(&msg)).unwrap();
    assert_eq!(r["payload"], expected);
    assert_eq!(
        r["payload"],
        json!({"aps": {"alert": {"title": "Hello", "body": "Your order shipped"},
            "sound": "default", "badge": 2}, "orderId": "42"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_push_and_ttl_zero() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    let client = providers.apns("c", 1, &sandbox.apns_token()).unwrap();
    let mut msg = PushMessage {
        silent: true,
        ttl_seconds: 0,
        priority: Priority::High,
        ..PushMessage::new()
    };
    msg.data.insert("sync".into(), json!(true));
    let outcome = client
        .send(&client.prepare(&msg), "silent-device", Uuid::now_v7())
        .await;
    assert!(outcome.is_delivered(), "{outcome}");
    let received = sandbox.received("silent-device").await;
    let r = &received[0];
    assert_eq!(header(r, "apns-push-type"), Some("background"));
    assert_eq!(header(r, "apns-priority"), Some("5"));
    assert_eq!(header(r, "apns-expiration"), Some("0"));
    assert_eq!(
        r["payload"],
        json!({"aps": {"content-available": 1}, "sync": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_provider_token_is_reminted_and_retried_once() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    let client = providers.apns("c", 1, &sandbox.apns_token()).unwrap();
    let prepared = client.prepare(&message());
    // A first request, so the connection carries a token.
    let outcome = client.send(&prepared, "warm", Uuid::now_v7()).await;
    assert!(outcome.is_delivered(), "{outcome}");

    sandbox
        .fault(json!({"token": "expiring", "status": 403, "reason": "ExpiredProviderToken", "times": 1}))
        .await;
    let outcome = client.send(&prepared, "expiring", Uuid::now_v7()).await;
    assert_eq!(client.provider_tokens_minted(), 2);
    let received = sandbox.received("expiring").await;
    let statuses: Vec<(u64, Option<&str>)> = received
        .iter()
        .map(|r| (r["status"].as_u64().unwrap(), r["reason"].as_str()))
        .collect();
    // Sent twice: refused as expired, then again with the new token.
    assert_eq!(statuses.len(), 2, "{received:?}");
    assert_eq!(statuses[0], (403, Some("ExpiredProviderToken")));
    assert_eq!(statuses[1], (200, None), "the re-minted token is accepted");
    assert!(outcome.is_delivered(), "{outcome}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_provider_key_is_a_credential_error() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    // A well-formed key that is not the sandbox's: the signature does not verify.
    let other_key = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        common::b64_bytes(other_key.as_ref())
    );
    let mut cred = sandbox.apns_token();
    if let ApnsAuth::Token {
        private_key_pem, ..
    } = &mut cred.auth
    {
        *private_key_pem = pem;
    }
    let client = providers.apns("bad", 1, &cred).unwrap();
    let outcome = client
        .send(&client.prepare(&message()), "device", Uuid::now_v7())
        .await;
    assert_eq!(
        outcome,
        Outcome::CredentialError {
            status: Some(403),
            reason: "InvalidProviderToken".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_auth() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    let client = providers.apns("cert", 1, &sandbox.apns_cert()).unwrap();
    let outcome = client
        .send(&client.prepare(&message()), "cert-device", Uuid::now_v7())
        .await;
    assert!(outcome.is_delivered(), "{outcome}");
    assert_eq!(client.provider_tokens_minted(), 0);
    let received = sandbox.received("cert-device").await;
    assert_eq!(received[0]["status"], 200);
    assert_eq!(
        header(&received[0], "apns-topic"),
        Some(herald_sandbox::BUNDLE_ID)
    );

    // Certificate auth without a topic: APNs takes the certificate's.
    let mut no_topic = sandbox.apns_cert();
    no_topic.topic = String::new();
    let client = providers.apns("cert-no-topic", 1, &no_topic).unwrap();
    let outcome = client
        .send(&client.prepare(&message()), "cert-device-2", Uuid::now_v7())
        .await;
    assert!(outcome.is_delivered(), "{outcome}");
    assert_eq!(
        header(&sandbox.received("cert-device-2").await[0], "apns-topic"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_a_credential_error() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    // A self-signed client certificate the sandbox does not trust.
    let key = rcgen_free_self_signed();
    let cred = ApnsCredential {
        auth: ApnsAuth::Certificate {
            cert_pem: key.0,
            key_pem: key.1,
        },
        topic: herald_sandbox::BUNDLE_ID.into(),
        sandbox: true,
    };
    let client = providers.apns("untrusted", 1, &cred).unwrap();
    let outcome = client
        .send(&client.prepare(&message()), "device", Uuid::now_v7())
        .await;
    assert!(
        matches!(outcome, Outcome::CredentialError { status: None, .. }),
        "{outcome}"
    );
    assert_eq!(outcome.reason_code(), "BadCertificate");
    assert!(sandbox.received("device").await.is_empty());
}

/// The unit tests' client certificate (signed by their own CA, unknown to the sandbox).
fn rcgen_free_self_signed() -> (String, String) {
    (
        include_str!("../src/testdata/client.pem").to_string(),
        include_str!("../src/testdata/client-key.pem").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_classified() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    let client = providers.apns("c", 1, &sandbox.apns_token()).unwrap();
    let prepared = client.prepare(&message());
    let id = Uuid::now_v7();
    sandbox
        .fault(json!({"token": "gone", "status": 410, "reason": "Unregistered"}))
        .await;
    sandbox
        .fault(json!({"token": "bad", "status": 400, "reason": "BadDeviceToken"}))
        .await;
    sandbox
        .fault(json!({"token": "other-app", "status": 400, "reason": "DeviceTokenNotForTopic"}))
        .await;
    sandbox
        .fault(json!({"token": "busy", "status": 503, "reason": "ServiceUnavailable", "retryAfter": 7}))
        .await;
    sandbox
        .fault(json!({"token": "hot", "status": 429, "reason": "TooManyRequests", "retryAfter": 3}))
        .await;
    sandbox
        .fault(json!({"token": "oops", "status": 500, "reason": "InternalServerError"}))
        .await;
    sandbox
        .fault(json!({"token": "topic", "status": 400, "reason": "TopicDisallowed"}))
        .await;
    sandbox
        .fault(json!({"token": "new-reason", "status": 400, "reason": "SomethingApple Added"}))
        .await;

    assert!(matches!(
        client.send(&prepared, "gone", id).await,
        Outcome::DeadToken { status: 410, .. }
    ));
    assert_eq!(
        client.send(&prepared, "bad", id).await,
        Outcome::DeadToken {
            status: 400,
            reason: "BadDeviceToken".into()
        }
    );
    assert!(matches!(
        client.send(&prepared, "other-app", id).await,
        Outcome::DeadToken { status: 400, .. }
    ));
    assert_eq!(
        client.send(&prepared, "busy", id).await,
        Outcome::Retry {
            after: Some(Duration::from_secs(7)),
            status: Some(503),
            reason: "ServiceUnavailable".into()
        }
    );
    assert_eq!(
        client.send(&prepared, "hot", id).await,
        Outcome::Retry {
            after: Some(Duration::from_secs(3)),
            status: Some(429),
            reason: "TooManyRequests".into()
        }
    );
    assert!(matches!(
        client.send(&prepared, "oops", id).await,
        Outcome::Retry {
            status: Some(500),
            ..
        }
    ));
    assert!(matches!(
        client.send(&prepared, "topic", id).await,
        Outcome::CredentialError {
            status: Some(400),
            ..
        }
    ));
    assert!(matches!(
        client.send(&prepared, "new-reason", id).await,
        Outcome::Permanent {
            status: Some(400),
            ..
        }
    ));
    // The sandbox's own checks: a payload over 4096 bytes is refused before sending, a wrong
    // topic by the sandbox.
    let big = client.prepare(&PushMessage {
        body: Some("x".repeat(4100)),
        ..PushMessage::new()
    });
    assert!(matches!(
        client.send(&big, "big", id).await,
        Outcome::Permanent { status: None, .. }
    ));
    assert!(sandbox.received("big").await.is_empty());
    let mut wrong_topic = sandbox.apns_token();
    wrong_topic.topic = "com.example.other".into();
    let other = providers.apns("wrong-topic", 1, &wrong_topic).unwrap();
    assert_eq!(
        other.send(&prepared, "device", id).await,
        Outcome::CredentialError {
            status: Some(400),
            reason: "TopicDisallowed".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_goaway() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    let client = providers.apns("c", 1, &sandbox.apns_token()).unwrap();
    let prepared = client.prepare(&message());
    assert!(
        client
            .send(&prepared, "before", Uuid::now_v7())
            .await
            .is_delivered()
    );
    assert_eq!(client.connections_opened(), 1);
    let answer = sandbox.post("/_sandbox/goaway").await;
    assert!(answer["connections"].as_u64().unwrap() >= 1, "{answer}");
    // The GOAWAY reaches the client asynchronously: keep sending until it has moved to a new
    // connection. Every send must succeed, on the old connection or the new one.
    let mut sent = 0;
    while client.connections_opened() < 2 && sent < 500 {
        let outcome = client.send(&prepared, "after", Uuid::now_v7()).await;
        assert!(outcome.is_delivered(), "{outcome}");
        sent += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(client.connections_opened(), 2);
    let outcome = client.send(&prepared, "after", Uuid::now_v7()).await;
    assert!(outcome.is_delivered(), "{outcome}");
    // The same provider token goes on the new connection.
    assert_eq!(client.provider_tokens_minted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_stream_is_retry_and_the_connection_stays() {
    let sandbox = start().await;
    let providers = sandbox.providers();
    let client = providers.apns("c", 1, &sandbox.apns_token()).unwrap();
    let prepared = client.prepare(&message());
    sandbox
        .fault(json!({"token": "reset-me", "reset": true, "times": 1}))
        .await;
    let outcome = client.send(&prepared, "reset-me", Uuid::now_v7()).await;
    // The server may have processed it: not resent, reported as Retry.
    assert!(
        matches!(outcome, Outcome::Retry { status: None, .. }),
        "{outcome}"
    );
    assert_eq!(sandbox.received("reset-me").await.len(), 1);
    let outcome = client.send(&prepared, "reset-me", Uuid::now_v7()).await;
    assert!(outcome.is_delivered(), "{outcome}");
    assert_eq!(sandbox.received("reset-me").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_is_retry() {
    let sandbox = start().await;
    let mut config = sandbox.config();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.apns_sandbox_url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    drop(listener);
    let providers = herald_providers::Providers::new(config).unwrap();
    let client = providers.apns("c", 1, &sandbox.apns_token()).unwrap();
    let outcome = client
        .send(&client.prepare(&message()), "device", Uuid::now_v7())
        .await;
    assert!(
        matches!(&outcome, Outcome::Retry { status: None, .. }),
        "{outcome}"
    );
    assert_eq!(outcome.reason_code(), "ConnectionFailed");
}
