//! Google OAuth token endpoint and FCM HTTP v1 over real TLS (HTTP/2 and HTTP/1.1).

mod common;

use common::*;
use http::Method;
use serde_json::{Value, json};

fn assert_status(body: &Value, code: u16, status: &str, error_code: Option<&str>) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["status"], status, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let fcm_code = body["error"]["details"]
        .as_array()
        .and_then(|d| {
            d.iter()
                .find(|x| x["@type"] == "type.googleapis.com/google.firebase.fcm.v1.FcmError")
        })
        .map(|x| x["errorCode"].as_str().unwrap().to_owned());
    assert_eq!(fcm_code.as_deref(), error_code, "{body}");
}

#[tokio::test]
async fn token_grant_then_send() {
    let sb = start().await;
    assert_eq!(
        sb.creds.token_uri(),
        sb.url("/token"),
        "token_uri rewritten for the bound port"
    );
    let mut h2 = H2::connect(&sb).await;
    let r = h2
        .send(sb.token_request(&sb.creds.fcm_assertion(json!({}))))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let grant = r.json();
    assert_eq!(grant["token_type"], "Bearer");
    assert_eq!(grant["expires_in"], 3599);
    let access = grant["access_token"].as_str().unwrap();
    assert!(access.len() > 40);

    let token = fcm_token(1);
    let body = json!({"message": {
        "token": token,
        "notification": {"title": "Hi", "body": "Your order shipped"},
        "data": {"orderId": "42"},
        "android": {"priority": "HIGH", "ttl": "3600s", "collapse_key": "orders"},
        "apns": {"headers": {"apns-priority": "10"}, "payload": {"aps": {"badge": 1}}},
    }});
    let r = h2
        .send(sb.fcm_request(access, "herald-sandbox", &body))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let name = r.json()["name"].as_str().unwrap().to_owned();
    assert!(
        name.starts_with("projects/herald-sandbox/messages/"),
        "{name}"
    );

    // HTTP/1.1 works too (Google serves both).
    let mut h1 = H1::connect(&sb).await;
    let r = h1
        .send(sb.fcm_request(access, "herald-sandbox", &body))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // validate_only answers Google's fake message ID.
    let r = h2
        .send(sb.fcm_request(
            access,
            "herald-sandbox",
            &json!({"validate_only": true, "message": {"topic": "news"}}),
        ))
        .await;
    assert_eq!(
        r.json()["name"],
        "projects/herald-sandbox/messages/fake_message_id"
    );

    let received = sb.received(&token).await;
    assert_eq!(received.len(), 2);
    assert_eq!(received[0]["provider"], "fcm");
    assert_eq!(received[0]["payload"]["message"]["data"]["orderId"], "42");
    let stats = sb.stats().await;
    assert_eq!(
        stats["fcm"],
        json!({"received": 3, "accepted": 3, "rejected": 0})
    );
    assert_eq!(stats["oauth"]["accepted"], 1);
    sb.stop().await;
}

#[tokio::test]
async fn bad_assertions_are_refused() {
    let sb = start().await;
    let c = &sb.creds;
    let now = now();
    let mut h2 = H2::connect(&sb).await;

    // Signed by another RSA key (the APNs certificate's).
    let other_key = pem_der(&c.apns_key_pem, "PRIVATE KEY");
    let kid = c.account["private_key_id"].as_str().unwrap();
    let claims = json!({"iss": c.client_email(), "scope": FCM_SCOPE, "aud": c.token_uri(), "iat": now, "exp": now + 3600});
    let forged = sign_rs256(
        &other_key,
        &json!({"alg": "RS256", "typ": "JWT", "kid": kid}),
        &claims,
    );

    let cases: Vec<(&str, String, &str)> = vec![
        ("other key", forged, "invalid_grant"),
        (
            "wrong audience",
            c.fcm_assertion(json!({"aud": "https://oauth2.example.com/token"})),
            "invalid_grant",
        ),
        (
            "unknown account",
            c.fcm_assertion(json!({"iss": "someone@else.iam.gserviceaccount.com"})),
            "invalid_grant",
        ),
        (
            "expired",
            c.fcm_assertion(json!({"iat": now - 7200, "exp": now - 3600})),
            "invalid_grant",
        ),
        (
            "too long-lived",
            c.fcm_assertion(json!({"exp": now + 7200})),
            "invalid_grant",
        ),
        (
            "issued in the future",
            c.fcm_assertion(json!({"iat": now + 3000, "exp": now + 3600})),
            "invalid_grant",
        ),
        (
            "no scope",
            c.fcm_assertion(json!({"scope": null})),
            "invalid_scope",
        ),
        ("garbage", "abc.def".to_owned(), "invalid_grant"),
    ];
    for (name, assertion, error) in &cases {
        let r = h2.send(sb.token_request(assertion)).await;
        assert_eq!(r.status, 400, "{name}: {:?}", r.body);
        let body = r.json();
        assert_eq!(body["error"], *error, "{name}: {body}");
        assert!(body["error_description"].is_string(), "{name}");
    }

    // Wrong or missing grant type.
    let assertion = c.fcm_assertion(json!({}));
    let r = h2
        .send(request(
            Method::POST,
            &sb.url("/token"),
            &[("content-type", "application/x-www-form-urlencoded")],
            format!("grant_type=client_credentials&assertion={assertion}"),
        ))
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("unsupported_grant_type"))
    );
    let r = h2
        .send(request(
            Method::POST,
            &sb.url("/token"),
            &[("content-type", "application/x-www-form-urlencoded")],
            format!("assertion={assertion}"),
        ))
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("invalid_request"))
    );

    // Google's canonical token endpoint is an accepted audience too (google-auth signs for it
    // whatever token_uri says).
    let r =
        h2.send(sb.token_request(
            &c.fcm_assertion(json!({"aud": "https://oauth2.googleapis.com/token"})),
        ))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // The cloud-platform scope grants FCM as well.
    let r = h2
        .send(sb.token_request(
            &c.fcm_assertion(json!({"scope": "https://www.googleapis.com/auth/cloud-platform"})),
        ))
        .await;
    assert_eq!(r.status, 200);
    let stats = sb.stats().await;
    assert_eq!(stats["oauth"]["rejected"], cases.len() as u64 + 2);
    sb.stop().await;
}

#[tokio::test]
async fn access_tokens_unknown_expired_revoked_and_scoped() {
    let sb = start().await;
    let mut h2 = H2::connect(&sb).await;
    let msg = json!({"message": {"token": fcm_token(2), "notification": {"body": "x"}}});

    let r = h2
        .send(request(
            Method::POST,
            &sb.url("/v1/projects/herald-sandbox/messages:send"),
            &[("content-type", "application/json")],
            serde_json::to_vec(&msg).unwrap(),
        ))
        .await;
    assert_eq!(r.status, 401);
    assert_status(&r.json(), 401, "UNAUTHENTICATED", None);

    let r = h2
        .send(sb.fcm_request("ya29.not-issued-here", "herald-sandbox", &msg))
        .await;
    assert_eq!(r.status, 401);
    assert_status(&r.json(), 401, "UNAUTHENTICATED", None);

    // Revocation: the old token is refused, a fresh one works (what a client's refresh-once does).
    let access = sb.access_token().await;
    assert_eq!(
        h2.send(sb.fcm_request(&access, "herald-sandbox", &msg))
            .await
            .status,
        200
    );
    let r = sb
        .control(Method::POST, "/_sandbox/fcm/revoke-access-tokens", None)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["revoked"].as_u64().unwrap() >= 1);
    assert_eq!(
        h2.send(sb.fcm_request(&access, "herald-sandbox", &msg))
            .await
            .status,
        401
    );
    let fresh = sb.access_token().await;
    assert_eq!(
        h2.send(sb.fcm_request(&fresh, "herald-sandbox", &msg))
            .await
            .status,
        200
    );

    // Lifetime 0: the token is expired as soon as it is issued.
    let r = sb
        .control(
            Method::PATCH,
            "/_sandbox/config",
            Some(json!({"accessTokenLifetime": 0})),
        )
        .await;
    assert_eq!(r.json()["accessTokenLifetime"], 0);
    let mut t = H2::connect(&sb).await;
    let grant = t
        .send(sb.token_request(&sb.creds.fcm_assertion(json!({}))))
        .await
        .json();
    assert_eq!(grant["expires_in"], 0);
    let r = h2
        .send(sb.fcm_request(
            grant["access_token"].as_str().unwrap(),
            "herald-sandbox",
            &msg,
        ))
        .await;
    assert_eq!(r.status, 401);
    sb.control(
        Method::PATCH,
        "/_sandbox/config",
        Some(json!({"accessTokenLifetime": 3599})),
    )
    .await;

    // A token for scopes that do not include FCM.
    let grant = t
        .send(
            sb.token_request(
                &sb.creds.fcm_assertion(
                    json!({"scope": "https://www.googleapis.com/auth/userinfo.email"}),
                ),
            ),
        )
        .await;
    assert_eq!(grant.status, 200);
    let r = h2
        .send(sb.fcm_request(
            grant.json()["access_token"].as_str().unwrap(),
            "herald-sandbox",
            &msg,
        ))
        .await;
    assert_eq!(r.status, 403);
    assert_status(&r.json(), 403, "PERMISSION_DENIED", None);

    // Another project than the service account's.
    let r = h2
        .send(sb.fcm_request(&fresh, "someone-elses-project", &msg))
        .await;
    assert_eq!(r.status, 403);
    assert_status(&r.json(), 403, "PERMISSION_DENIED", None);
    sb.stop().await;
}

#[tokio::test]
async fn message_validation() {
    let sb = start().await;
    let access = sb.access_token().await;
    let mut h2 = H2::connect(&sb).await;
    let t = fcm_token(3);
    let big = "x".repeat(4100);
    let cases: Vec<(&str, Value, u16)> = vec![
        ("token", json!({"message": {"token": t}}), 200),
        ("topic", json!({"message": {"topic": "news"}}), 200),
        (
            "condition",
            json!({"message": {"condition": "'a' in topics && 'b' in topics"}}),
            200,
        ),
        (
            "no target",
            json!({"message": {"notification": {"body": "x"}}}),
            400,
        ),
        (
            "two targets",
            json!({"message": {"token": t, "topic": "news"}}),
            400,
        ),
        (
            "topic with prefix",
            json!({"message": {"topic": "/topics/news"}}),
            400,
        ),
        (
            "topic bad chars",
            json!({"message": {"topic": "news flash"}}),
            400,
        ),
        ("no message", json!({"token": t}), 400),
        ("message not an object", json!({"message": "hi"}), 400),
        (
            "unknown top-level field",
            json!({"message": {"token": t}, "dryRun": true}),
            400,
        ),
        (
            "unknown message field",
            json!({"message": {"token": t, "priority": "high"}}),
            400,
        ),
        (
            "data number",
            json!({"message": {"token": t, "data": {"n": 1}}}),
            400,
        ),
        (
            "data nested",
            json!({"message": {"token": t, "data": {"n": {"a": "b"}}}}),
            400,
        ),
        (
            "data reserved key",
            json!({"message": {"token": t, "data": {"from": "me"}}}),
            400,
        ),
        (
            "data google key",
            json!({"message": {"token": t, "data": {"google.x": "1"}}}),
            400,
        ),
        (
            "android priority high",
            json!({"message": {"token": t, "android": {"priority": "high"}}}),
            200,
        ),
        (
            "android priority normal",
            json!({"message": {"token": t, "android": {"priority": "NORMAL"}}}),
            200,
        ),
        (
            "android priority 10",
            json!({"message": {"token": t, "android": {"priority": 10}}}),
            400,
        ),
        (
            "android priority urgent",
            json!({"message": {"token": t, "android": {"priority": "URGENT"}}}),
            400,
        ),
        (
            "ttl 3.5s",
            json!({"message": {"token": t, "android": {"ttl": "3.5s"}}}),
            200,
        ),
        (
            "ttl number",
            json!({"message": {"token": t, "android": {"ttl": 3600}}}),
            400,
        ),
        (
            "ttl no unit",
            json!({"message": {"token": t, "android": {"ttl": "3600"}}}),
            400,
        ),
        (
            "ttl negative",
            json!({"message": {"token": t, "android": {"ttl": "-1s"}}}),
            400,
        ),
        (
            "android unknown field",
            json!({"message": {"token": t, "android": {"time_to_live": "1s"}}}),
            400,
        ),
        (
            "notification unknown field",
            json!({"message": {"token": t, "notification": {"sound": "x"}}}),
            400,
        ),
        (
            "notification number",
            json!({"message": {"token": t, "notification": {"title": 1}}}),
            400,
        ),
        (
            "apns headers number",
            json!({"message": {"token": t, "apns": {"headers": {"apns-priority": 10}}}}),
            400,
        ),
        (
            "too big",
            json!({"message": {"token": t, "data": {"big": big}}}),
            400,
        ),
        (
            "validate_only not bool",
            json!({"validate_only": "yes", "message": {"token": t}}),
            400,
        ),
    ];
    let mut failures = Vec::new();
    for (name, body, status) in &cases {
        let r = h2
            .send(sb.fcm_request(&access, "herald-sandbox", body))
            .await;
        if r.status != *status {
            failures.push(format!(
                "{name}: want {status}, got {} {:?}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
            continue;
        }
        if *status == 400 {
            assert_status(&r.json(), 400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"));
        }
    }
    // Not JSON at all.
    let r = h2
        .send(request(
            Method::POST,
            &sb.url("/v1/projects/herald-sandbox/messages:send"),
            &[
                ("authorization", &format!("Bearer {access}")),
                ("content-type", "application/json"),
            ],
            "{not json",
        ))
        .await;
    assert_eq!(r.status, 400);
    assert_status(&r.json(), 400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"));
    assert!(failures.is_empty(), "{failures:#?}");

    // Rejected requests are recorded under their token too.
    let received = sb.received(&t).await;
    assert!(
        received
            .iter()
            .any(|e| e["status"] == 400 && e["reason"] == "INVALID_ARGUMENT")
    );
    sb.stop().await;
}
