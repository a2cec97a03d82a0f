//! Legacy FCM HTTP protocol (`POST /fcm/send`).

mod common;

use common::*;
use http::Method;
use serde_json::json;

#[tokio::test]
async fn send_to_one_many_and_a_topic() {
    let sb = start().await;
    let key = format!("key={}", sb.creds.legacy_key);
    let mut h1 = H1::connect(&sb).await;
    let a = fcm_token(1);
    let b = fcm_token(2);

    let r = h1
        .send(sb.legacy_request(
            &key,
            &json!({"to": a, "notification": {"title": "Hi", "body": "x"}, "data": {"n": 1},
                    "priority": "high", "time_to_live": 3600, "collapse_key": "orders"}),
        ))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let body = r.json();
    assert_eq!(body["success"], 1);
    assert_eq!(body["failure"], 0);
    assert_eq!(body["canonical_ids"], 0);
    assert!(body["multicast_id"].as_i64().unwrap() > 0);
    assert!(
        body["results"][0]["message_id"]
            .as_str()
            .unwrap()
            .starts_with("0:")
    );

    // The scheme is matched case-insensitively.
    sb.fault(json!({"token": b, "status": 410, "reason": "NotRegistered", "times": 1}))
        .await;
    let r = h1
        .send(sb.legacy_request(
            &format!("KEY={}", sb.creds.legacy_key),
            &json!({"registration_ids": [a, b], "data": {"k": "v"}}),
        ))
        .await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(
        (body["success"].clone(), body["failure"].clone()),
        (json!(1), json!(1))
    );
    assert!(body["results"][0]["message_id"].is_string());
    assert_eq!(body["results"][1], json!({"error": "NotRegistered"}));

    let r = h1
        .send(sb.legacy_request(&key, &json!({"to": "/topics/news", "data": {"k": "v"}})))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["message_id"].as_i64().is_some(), "{:?}", r.body);

    // Over HTTP/2 as well.
    let mut h2 = H2::connect(&sb).await;
    assert_eq!(
        h2.send(sb.legacy_request(&key, &json!({"to": a})))
            .await
            .status,
        200
    );

    let stats = sb.stats().await;
    assert_eq!(
        stats["fcmLegacy"],
        json!({"received": 5, "accepted": 4, "rejected": 1})
    );
    let received = sb.received(&b).await;
    assert_eq!(received.len(), 1);
    assert_eq!(
        (
            received[0]["provider"].clone(),
            received[0]["reason"].clone()
        ),
        (json!("fcmLegacy"), json!("NotRegistered"))
    );
    sb.stop().await;
}

#[tokio::test]
async fn auth_and_validation() {
    let sb = start().await;
    let key = format!("key={}", sb.creds.legacy_key);
    let mut h1 = H1::connect(&sb).await;
    let a = fcm_token(3);

    for auth in ["key=AAAAwrong:APA91bnope", "Bearer abc", ""] {
        let r = h1.send(sb.legacy_request(auth, &json!({"to": a}))).await;
        assert_eq!(r.status, 401, "auth {auth:?}");
    }
    let too_many: Vec<String> = (0..1001).map(fcm_token).collect();
    let bad = [
        json!({"data": {"k": "v"}}),
        json!({"to": a, "registration_ids": [a]}),
        json!({"registration_ids": []}),
        json!({"registration_ids": too_many}),
        json!({"to": a, "priority": 10}),
        json!({"to": a, "priority": "urgent"}),
        json!({"to": a, "data": "x"}),
        json!({"to": a, "time_to_live": "1h"}),
    ];
    for body in &bad {
        let r = h1.send(sb.legacy_request(&key, body)).await;
        assert_eq!(r.status, 400, "{body}");
    }
    let r = h1
        .send(request(
            Method::POST,
            &sb.url("/fcm/send"),
            &[
                ("authorization", key.as_str()),
                ("content-type", "application/json"),
            ],
            "{oops",
        ))
        .await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).starts_with("JSON_PARSING_ERROR"));

    // Per-message errors come back in results with HTTP 200.
    let r = h1
        .send(sb.legacy_request(&key, &json!({"to": a, "time_to_live": 2419201})))
        .await;
    assert_eq!(
        (r.status, r.json()["results"][0].clone()),
        (200, json!({"error": "InvalidTtl"}))
    );
    let big = "x".repeat(4100);
    let r = h1
        .send(sb.legacy_request(&key, &json!({"to": a, "data": {"big": big}})))
        .await;
    assert_eq!(
        (r.status, r.json()["results"][0].clone()),
        (200, json!({"error": "MessageTooBig"}))
    );
    sb.stop().await;
}
