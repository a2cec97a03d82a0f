//! Fault injection, the per-run failure rate, stats, received, GOAWAY and the control API.

mod common;

use std::time::Duration;

use common::*;
use http::Method;
use serde_json::json;

const TOPIC: (&str, &str) = ("apns-topic", "com.example.herald");

/// Guards against a hang in tests that wait for the server to act; not a timing assertion.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the sandbox acted")
}

#[tokio::test]
async fn apns_fault_times_retry_after_then_success() {
    let sb = start().await;
    let jwt = sb.creds.apns_jwt(now());
    let mut h2 = H2::connect(&sb).await;
    let dead = apns_token(1);
    let busy = apns_token(2);
    sb.fault(json!({"token": dead, "status": 410, "reason": "Unregistered"}))
        .await;
    sb.fault(json!({"token": busy, "status": 429, "reason": "TooManyRequests", "times": 2, "retryAfter": 7})).await;

    for _ in 0..3 {
        let r = h2.send(sb.apns_request(&dead, &jwt, &[TOPIC], ALERT)).await;
        assert_eq!((r.status, r.reason()), (410, "Unregistered".into()));
        assert!(
            r.json()["timestamp"].as_u64().unwrap() > 1_600_000_000_000,
            "410 carries a ms timestamp"
        );
    }
    for _ in 0..2 {
        let r = h2.send(sb.apns_request(&busy, &jwt, &[TOPIC], ALERT)).await;
        assert_eq!((r.status, r.reason()), (429, "TooManyRequests".into()));
        assert_eq!(r.header("retry-after"), Some("7"));
    }
    let r = h2.send(sb.apns_request(&busy, &jwt, &[TOPIC], ALERT)).await;
    assert_eq!(r.status, 200, "times exhausted");
    assert!(r.header("retry-after").is_none());

    // Faults apply to valid requests: a bad one still gets its own answer.
    let r = h2
        .send(sb.apns_request(&dead, &jwt, &[TOPIC, ("apns-priority", "2")], ALERT))
        .await;
    assert_eq!((r.status, r.reason()), (400, "BadPriority".into()));

    let listed = sb
        .control(Method::GET, "/_sandbox/faults", None)
        .await
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let r = sb.control(Method::DELETE, "/_sandbox/faults", None).await;
    assert_eq!(r.json()["cleared"], 1);
    let r = h2.send(sb.apns_request(&dead, &jwt, &[TOPIC], ALERT)).await;
    assert_eq!(r.status, 200, "cleared");

    let received = sb.received(&busy).await;
    let statuses: Vec<u64> = received
        .iter()
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [429, 429, 200], "newest last");
    sb.stop().await;
}

#[tokio::test]
async fn one_fault_shaped_for_each_provider() {
    let sb = start().await;
    let token = fcm_token(7);
    let access = sb.access_token().await;
    let mut h2 = H2::connect(&sb).await;

    sb.fault(json!({"token": token, "status": 404, "reason": "UNREGISTERED", "times": 1}))
        .await;
    let r = h2
        .send(sb.fcm_request(
            &access,
            "herald-sandbox",
            &json!({"message": {"token": token}}),
        ))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}})
    );

    sb.fault(json!({"token": token, "status": 503, "times": 1, "retryAfter": 30}))
        .await;
    let r = h2
        .send(sb.fcm_request(
            &access,
            "herald-sandbox",
            &json!({"message": {"token": token}}),
        ))
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["status"], "UNAVAILABLE");
    assert_eq!(r.header("retry-after"), Some("30"));

    // Legacy: a 5xx fails the whole request with its HTTP status and Retry-After.
    sb.fault(json!({"token": token, "status": 503, "times": 1, "retryAfter": 5}))
        .await;
    let key = format!("key={}", sb.creds.legacy_key);
    let r = h2
        .send(sb.legacy_request(&key, &json!({"registration_ids": [token, fcm_token(8)]})))
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("5"));
    let r = h2
        .send(sb.legacy_request(&key, &json!({"to": token})))
        .await;
    assert_eq!(r.status, 200, "times exhausted");

    // APNs: the status's reason when none is given.
    let apns = apns_token(8);
    sb.fault(json!({"token": apns, "status": 500, "times": 1}))
        .await;
    let r = h2
        .send(sb.apns_request(&apns, &sb.creds.apns_jwt(now()), &[TOPIC], ALERT))
        .await;
    assert_eq!((r.status, r.reason()), (500, "InternalServerError".into()));
    sb.stop().await;
}

#[tokio::test]
async fn reset_drops_the_stream_not_the_connection() {
    let sb = start().await;
    let jwt = sb.creds.apns_jwt(now());
    let mut h2 = H2::connect(&sb).await;
    let token = apns_token(3);
    sb.fault(json!({"token": token, "reset": true, "times": 1, "delayMs": 10}))
        .await;

    let err = h2
        .try_send(sb.apns_request(&token, &jwt, &[TOPIC], ALERT))
        .await
        .expect_err("the stream is reset");
    let h2_err = std::error::Error::source(&err)
        .and_then(|e| e.downcast_ref::<h2::Error>())
        .map(|e| e.reason());
    assert!(
        h2_err.is_some_and(|r| r.is_some()),
        "RST_STREAM, got {err:?}"
    );
    // The same connection goes on.
    let r = h2
        .send(sb.apns_request(&token, &jwt, &[TOPIC], ALERT))
        .await;
    assert_eq!(r.status, 200);

    // HTTP/1.1: the connection is closed instead.
    let t = fcm_token(9);
    sb.fault(json!({"token": t, "reset": true, "times": 1}))
        .await;
    let mut h1 = H1::connect(&sb).await;
    let key = format!("key={}", sb.creds.legacy_key);
    assert!(
        h1.try_send(sb.legacy_request(&key, &json!({"to": t})))
            .await
            .is_err()
    );
    sb.stop().await;
}

#[tokio::test]
async fn fail_rate_one_fails_every_valid_request_transiently() {
    let sb = start_with(|o| o.fail_rate = 1.0).await;
    let mut h2 = H2::connect(&sb).await;
    let jwt = sb.creds.apns_jwt(now());
    let r = h2
        .send(sb.apns_request(&apns_token(1), &jwt, &[TOPIC], ALERT))
        .await;
    assert_eq!((r.status, r.reason()), (503, "ServiceUnavailable".into()));
    // Invalid requests still get their own error.
    let r = h2
        .send(sb.apns_request(&apns_token(1), &jwt, &[], ALERT))
        .await;
    assert_eq!(r.status, 400);

    let access = sb.access_token().await;
    let r = h2
        .send(sb.fcm_request(
            &access,
            "herald-sandbox",
            &json!({"message": {"token": fcm_token(1)}}),
        ))
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["status"].clone()),
        (503, json!("UNAVAILABLE"))
    );

    let key = format!("key={}", sb.creds.legacy_key);
    let r = h2
        .send(sb.legacy_request(&key, &json!({"to": fcm_token(1)})))
        .await;
    assert_eq!(
        (r.status, r.json()["results"][0].clone()),
        (200, json!({"error": "Unavailable"}))
    );

    // Turned off at run time through the control API.
    let r = sb
        .control(
            Method::PATCH,
            "/_sandbox/config",
            Some(json!({"failRate": 0.0})),
        )
        .await;
    assert_eq!(r.json()["failRate"], 0.0);
    let r = h2
        .send(sb.apns_request(&apns_token(1), &jwt, &[TOPIC], ALERT))
        .await;
    assert_eq!(r.status, 200);
    sb.stop().await;
}

#[tokio::test]
async fn record_off_keeps_only_stats_and_received_can_be_cleared() {
    let sb = start_with(|o| o.record = false).await;
    let mut h2 = H2::connect(&sb).await;
    let token = apns_token(4);
    let jwt = sb.creds.apns_jwt(now());
    for _ in 0..5 {
        assert_eq!(
            h2.send(sb.apns_request(&token, &jwt, &[TOPIC], ALERT))
                .await
                .status,
            200
        );
    }
    assert!(sb.received(&token).await.is_empty());
    assert_eq!(sb.stats().await["apns"]["accepted"], 5);

    sb.control(
        Method::PATCH,
        "/_sandbox/config",
        Some(json!({"record": true})),
    )
    .await;
    h2.send(sb.apns_request(&token, &jwt, &[TOPIC], ALERT))
        .await;
    assert_eq!(sb.received(&token).await.len(), 1);
    let r = sb.control(Method::DELETE, "/_sandbox/received", None).await;
    assert_eq!(r.status, 200);
    assert!(sb.received(&token).await.is_empty());
    let r = sb.control(Method::DELETE, "/_sandbox/stats", None).await;
    assert_eq!(r.json()["apns"]["received"], 0);
    sb.stop().await;
}

#[tokio::test]
async fn received_keeps_the_last_thousand_per_token() {
    let sb = start().await;
    let mut h2 = H2::connect(&sb).await;
    let token = apns_token(5);
    let jwt = sb.creds.apns_jwt(now());
    for i in 0..1005 {
        let body = format!(r#"{{"aps":{{"alert":"n{i}"}}}}"#);
        assert_eq!(
            h2.send(sb.apns_request(&token, &jwt, &[TOPIC], &body))
                .await
                .status,
            200
        );
    }
    let received = sb.received(&token).await;
    assert_eq!(received.len(), 1000);
    assert_eq!(received[0]["payload"]["aps"]["alert"], "n5");
    assert_eq!(received[999]["payload"]["aps"]["alert"], "n1004");
    sb.stop().await;
}

#[tokio::test]
async fn goaway_closes_open_connections() {
    let sb = start().await;
    let jwt = sb.creds.apns_jwt(now());
    let mut h2 = H2::connect(&sb).await;
    let token = apns_token(6);
    assert_eq!(
        h2.send(sb.apns_request(&token, &jwt, &[TOPIC], ALERT))
            .await
            .status,
        200
    );

    let r = sb.control(Method::POST, "/_sandbox/goaway", None).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["connections"].as_u64().unwrap() >= 2);

    // The client connection ends cleanly (GOAWAY, then close) ...
    let H2 { mut sender, driver } = h2;
    within(driver).await.unwrap().expect("graceful end");
    assert!(sender.ready().await.is_err(), "no new streams after GOAWAY");
    // ... and a new connection works.
    let mut again = H2::connect(&sb).await;
    assert_eq!(
        again
            .send(sb.apns_request(&token, &jwt, &[TOPIC], ALERT))
            .await
            .status,
        200
    );
    sb.stop().await;
}

#[tokio::test]
async fn control_api_validates_faults() {
    let sb = start().await;
    let bad = [
        json!({"status": 410}),
        json!({"token": "", "status": 410}),
        json!({"token": "t", "status": 99}),
        json!({"token": "t", "status": 410, "times": 0}),
        json!({"token": "t"}),
        json!({"token": "t", "status": 410, "color": "red"}),
    ];
    for body in bad {
        let r = sb
            .control(Method::POST, "/_sandbox/faults", Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}");
        assert!(r.json()["error"].is_string());
    }
    assert_eq!(
        sb.control(Method::GET, "/_sandbox/nope", None).await.status,
        404
    );
    assert_eq!(
        sb.control(Method::PUT, "/_sandbox/stats", None)
            .await
            .status,
        405
    );
    assert_eq!(
        sb.control(Method::GET, "/_sandbox/received", None)
            .await
            .status,
        400
    );
    let info = sb.control(Method::GET, "/_sandbox/info", None).await.json();
    assert_eq!(info["apns"]["bundleId"], "com.example.herald");
    assert_eq!(info["fcm"]["projectId"], "herald-sandbox");
    sb.stop().await;
}

#[tokio::test]
async fn oauth_endpoint_faults() {
    let sb = start().await;
    sb.fault(json!({"token": "_oauth", "status": 503, "times": 1}))
        .await;
    let mut h2 = H2::connect(&sb).await;
    let r = h2
        .send(sb.token_request(&sb.creds.fcm_assertion(json!({}))))
        .await;
    assert_eq!(r.status, 503);
    let r = h2
        .send(sb.token_request(&sb.creds.fcm_assertion(json!({}))))
        .await;
    assert_eq!(r.status, 200);
    sb.stop().await;
}
