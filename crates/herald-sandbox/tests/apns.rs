//! APNs over real TLS + HTTP/2: token and certificate auth, every header and payload rule.

mod common;

use common::*;
use http::Method;
use serde_json::json;

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[tokio::test]
async fn token_auth_push_is_accepted_and_recorded() {
    let sb = start().await;
    let jwt = sb.creds.apns_jwt(now());
    let mut h2 = H2::connect(&sb).await;
    let token = apns_token(1);
    let id = "6E2B9C4D-1F0A-4B7C-9D3E-2A1B0C9D8E7F";
    let r = h2
        .send(sb.apns_request(
            &token,
            &jwt,
            &[
                ("apns-topic", "com.example.herald"),
                ("apns-push-type", "alert"),
                ("apns-priority", "10"),
                ("apns-expiration", "0"),
                ("apns-collapse-id", "order-42"),
                ("apns-id", id),
            ],
            ALERT,
        ))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body.is_empty(), "success has an empty body");
    assert_eq!(r.header("apns-id"), Some(id), "apns-id echoed");

    // Without apns-id, APNs makes up a UUID.
    let r = h2
        .send(sb.apns_request(&token, &jwt, &[("apns-topic", "com.example.herald")], ALERT))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        is_uuid(r.header("apns-id").unwrap()),
        "{:?}",
        r.header("apns-id")
    );

    let received = sb.received(&token).await;
    assert_eq!(received.len(), 2);
    let first = &received[0];
    assert_eq!(first["provider"], "apns");
    assert_eq!(first["token"], token.as_str());
    assert_eq!(first["status"], 200);
    assert_eq!(first["headers"]["apns-collapse-id"], "order-42");
    assert!(
        first["headers"].get("authorization").is_none(),
        "no secret recorded"
    );
    assert_eq!(first["payload"]["aps"]["alert"]["title"], "Hi");

    let stats = sb.stats().await;
    assert_eq!(
        stats["apns"],
        json!({"received": 2, "accepted": 2, "rejected": 0})
    );
    assert_eq!(stats["fcm"]["received"], 0);
    sb.stop().await;
}

#[tokio::test]
async fn header_and_payload_rules() {
    let sb = start().await;
    let jwt = sb.creds.apns_jwt(now());
    let mut h2 = H2::connect(&sb).await;
    let topic = ("apns-topic", "com.example.herald");
    let big = format!(r#"{{"aps":{{"alert":"{}"}}}}"#, "x".repeat(4100));
    let just_fits = format!(r#"{{"aps":{{"alert":"{}"}}}}"#, "x".repeat(4096 - 20));
    assert_eq!(just_fits.len(), 4096);
    let voip_big = format!(r#"{{"aps":{{}},"x":"{}"}}"#, "x".repeat(5000));
    let long_collapse = "c".repeat(65);
    let ok_collapse = "c".repeat(64);
    // (case, headers, body, expected status, expected reason)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("no topic", vec![], ALERT, 400, "MissingTopic"),
        (
            "other app",
            vec![("apns-topic", "com.example.other")],
            ALERT,
            400,
            "TopicDisallowed",
        ),
        (
            "bundle prefix only",
            vec![("apns-topic", "com.example.heraldx")],
            ALERT,
            400,
            "TopicDisallowed",
        ),
        (
            "unknown push type",
            vec![topic, ("apns-push-type", "banner")],
            ALERT,
            400,
            "InvalidPushType",
        ),
        (
            "voip needs .voip topic",
            vec![topic, ("apns-push-type", "voip")],
            ALERT,
            400,
            "TopicDisallowed",
        ),
        (
            "voip",
            vec![
                ("apns-topic", "com.example.herald.voip"),
                ("apns-push-type", "voip"),
            ],
            ALERT,
            200,
            "",
        ),
        (
            "complication",
            vec![
                ("apns-topic", "com.example.herald.complication"),
                ("apns-push-type", "complication"),
            ],
            ALERT,
            200,
            "",
        ),
        (
            "liveactivity",
            vec![
                ("apns-topic", "com.example.herald.push-type.liveactivity"),
                ("apns-push-type", "liveactivity"),
            ],
            ALERT,
            200,
            "",
        ),
        (
            "background prio 5",
            vec![
                topic,
                ("apns-push-type", "background"),
                ("apns-priority", "5"),
            ],
            r#"{"aps":{"content-available":1}}"#,
            200,
            "",
        ),
        (
            "background prio 10",
            vec![
                topic,
                ("apns-push-type", "background"),
                ("apns-priority", "10"),
            ],
            r#"{"aps":{"content-available":1}}"#,
            400,
            "BadPriority",
        ),
        (
            "priority 1",
            vec![topic, ("apns-priority", "1")],
            ALERT,
            200,
            "",
        ),
        (
            "priority 7",
            vec![topic, ("apns-priority", "7")],
            ALERT,
            400,
            "BadPriority",
        ),
        (
            "priority text",
            vec![topic, ("apns-priority", "high")],
            ALERT,
            400,
            "BadPriority",
        ),
        (
            "expiration text",
            vec![topic, ("apns-expiration", "tomorrow")],
            ALERT,
            400,
            "BadExpirationDate",
        ),
        (
            "expiration negative",
            vec![topic, ("apns-expiration", "-1")],
            ALERT,
            400,
            "BadExpirationDate",
        ),
        (
            "expiration epoch",
            vec![topic, ("apns-expiration", "1999999999")],
            ALERT,
            200,
            "",
        ),
        (
            "collapse 64",
            vec![topic, ("apns-collapse-id", ok_collapse.as_str())],
            ALERT,
            200,
            "",
        ),
        (
            "collapse 65",
            vec![topic, ("apns-collapse-id", long_collapse.as_str())],
            ALERT,
            400,
            "BadCollapseId",
        ),
        (
            "apns-id not uuid",
            vec![topic, ("apns-id", "42")],
            ALERT,
            400,
            "BadMessageId",
        ),
        (
            "duplicate topic",
            vec![topic, topic],
            ALERT,
            400,
            "DuplicateHeaders",
        ),
        ("empty body", vec![topic], "", 400, "PayloadEmpty"),
        ("4096 bytes", vec![topic], just_fits.as_str(), 200, ""),
        (
            "too large",
            vec![topic],
            big.as_str(),
            413,
            "PayloadTooLarge",
        ),
        (
            "voip 5000",
            vec![
                ("apns-topic", "com.example.herald.voip"),
                ("apns-push-type", "voip"),
            ],
            voip_big.as_str(),
            200,
            "",
        ),
        ("not json", vec![topic], "hello", 400, "BadPayload"),
        ("json array", vec![topic], "[1]", 400, "BadPayload"),
        ("no aps", vec![topic], r#"{"alert":"x"}"#, 400, "BadPayload"),
        (
            "aps not a dictionary",
            vec![topic],
            r#"{"aps":"x"}"#,
            400,
            "BadPayload",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (name, headers, body, status, reason)) in cases.iter().enumerate() {
        let token = apns_token(100 + i as u32);
        let r = h2.send(sb.apns_request(&token, &jwt, headers, body)).await;
        let got_reason = if r.body.is_empty() {
            String::new()
        } else {
            r.reason()
        };
        if r.status != *status || got_reason != *reason {
            failures.push(format!(
                "{name}: want {status} {reason:?}, got {} {got_reason:?}",
                r.status
            ));
        }
        if r.status != 200 {
            assert_eq!(
                r.header("content-type")
                    .map(|c| c.starts_with("application/json")),
                Some(true)
            );
            assert!(
                r.header("apns-id").is_some(),
                "{name}: errors carry apns-id"
            );
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    sb.stop().await;
}

#[tokio::test]
async fn method_path_and_http_version() {
    let sb = start().await;
    let jwt = sb.creds.apns_jwt(now());
    let mut h2 = H2::connect(&sb).await;
    let auth = format!("bearer {jwt}");
    let h = [
        ("authorization", auth.as_str()),
        ("apns-topic", "com.example.herald"),
    ];

    let r = h2
        .send(request(
            Method::GET,
            &sb.url(&format!("/3/device/{}", apns_token(1))),
            &h,
            "",
        ))
        .await;
    assert_eq!((r.status, r.reason()), (405, "MethodNotAllowed".into()));
    let r = h2
        .send(request(Method::POST, &sb.url("/3/devices/abc"), &h, ALERT))
        .await;
    assert_eq!((r.status, r.reason()), (404, "BadPath".into()));
    let r = h2
        .send(request(Method::POST, &sb.url("/3/device/"), &h, ALERT))
        .await;
    assert_eq!((r.status, r.reason()), (400, "MissingDeviceToken".into()));

    // HTTP/2 with prior knowledge (no ALPN) works as well.
    let stream = tls_connect(
        sb.addr(),
        &sb.creds.ca_pem,
        Tls {
            alpn: vec![],
            client_cert: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(request(
            Method::POST,
            &sb.url(&format!("/3/device/{}", apns_token(1))),
            &h,
            ALERT,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // APNs is HTTP/2 only.
    let mut h1 = H1::connect(&sb).await;
    let r = h1
        .send(request(
            Method::POST,
            &sb.url(&format!("/3/device/{}", apns_token(1))),
            &h,
            ALERT,
        ))
        .await;
    assert_eq!(r.status, 505);
    sb.stop().await;
}

#[tokio::test]
async fn provider_token_verification() {
    let sb = start().await;
    let c = &sb.creds;
    let token = apns_token(7);
    let topic = [("apns-topic", "com.example.herald")];

    // Missing auth and no client certificate.
    let mut h2 = H2::connect(&sb).await;
    let r = h2
        .send(request(
            Method::POST,
            &sb.url(&format!("/3/device/{token}")),
            &topic,
            ALERT,
        ))
        .await;
    assert_eq!((r.status, r.reason()), (403, "MissingProviderToken".into()));

    // A key that is not the sandbox's.
    let rng = ring::rand::SystemRandom::new();
    let other = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    let iat = now();
    let cases = [
        (
            "other key",
            sign_es256(
                other.as_ref(),
                &json!({"alg": "ES256", "kid": c.key_id}),
                &json!({"iss": c.team_id, "iat": iat}),
            ),
        ),
        (
            "unknown kid",
            sign_es256(
                &c.p8_der,
                &json!({"alg": "ES256", "kid": "ABCDE12345"}),
                &json!({"iss": c.team_id, "iat": iat}),
            ),
        ),
        (
            "other team",
            sign_es256(
                &c.p8_der,
                &json!({"alg": "ES256", "kid": c.key_id}),
                &json!({"iss": "ZZZZZ99999", "iat": iat}),
            ),
        ),
        (
            "no iat",
            sign_es256(
                &c.p8_der,
                &json!({"alg": "ES256", "kid": c.key_id}),
                &json!({"iss": c.team_id}),
            ),
        ),
        (
            "alg none",
            sign_es256(
                &c.p8_der,
                &json!({"alg": "none", "kid": c.key_id}),
                &json!({"iss": c.team_id, "iat": iat}),
            ),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (name, jwt) in &cases {
        // A fresh connection per case, so TooManyProviderTokenUpdates cannot interfere.
        let mut h2 = H2::connect(&sb).await;
        let r = h2.send(sb.apns_request(&token, jwt, &topic, ALERT)).await;
        assert_eq!(
            (r.status, r.reason()),
            (403, "InvalidProviderToken".into()),
            "{name}"
        );
    }

    // Older than an hour.
    let mut h2 = H2::connect(&sb).await;
    let r = h2
        .send(sb.apns_request(&token, &c.apns_jwt(now() - 3700), &topic, ALERT))
        .await;
    assert_eq!((r.status, r.reason()), (403, "ExpiredProviderToken".into()));
    // 59 minutes old is still fine.
    let mut h2 = H2::connect(&sb).await;
    let r = h2
        .send(sb.apns_request(&token, &c.apns_jwt(now() - 3540), &topic, ALERT))
        .await;
    assert_eq!(r.status, 200);

    // The scheme is case-insensitive.
    let jwt = c.apns_jwt(now());
    let mut h2 = H2::connect(&sb).await;
    let auth = format!("Bearer {jwt}");
    let r = h2
        .send(request(
            Method::POST,
            &sb.url(&format!("/3/device/{token}")),
            &[("authorization", auth.as_str()), topic[0]],
            ALERT,
        ))
        .await;
    assert_eq!(r.status, 200);

    let stats = sb.stats().await;
    assert_eq!(stats["apns"]["rejected"], 1 + cases.len() as u64 + 1);
    sb.stop().await;
}

#[tokio::test]
async fn too_many_provider_token_updates_is_per_connection() {
    let sb = start().await;
    let c = &sb.creds;
    let token = apns_token(9);
    let topic = [("apns-topic", "com.example.herald")];
    let first = c.apns_jwt(now() - 10);
    let second = c.apns_jwt(now());
    assert_ne!(first, second);

    let mut conn1 = H2::connect(&sb).await;
    for _ in 0..3 {
        let r = conn1
            .send(sb.apns_request(&token, &first, &topic, ALERT))
            .await;
        assert_eq!(r.status, 200, "the same token is reused freely");
    }
    let r = conn1
        .send(sb.apns_request(&token, &second, &topic, ALERT))
        .await;
    assert_eq!(
        (r.status, r.reason()),
        (429, "TooManyProviderTokenUpdates".into())
    );
    // The connection keeps working with its token.
    let r = conn1
        .send(sb.apns_request(&token, &first, &topic, ALERT))
        .await;
    assert_eq!(r.status, 200);

    // Another connection may start with the new token.
    let mut conn2 = H2::connect(&sb).await;
    let r = conn2
        .send(sb.apns_request(&token, &second, &topic, ALERT))
        .await;
    assert_eq!(r.status, 200);
    sb.stop().await;
}

#[tokio::test]
async fn certificate_auth_uses_the_certificate_uid_as_topic() {
    let sb = start().await;
    let mut h2 = H2::connect_cert(&sb).await;
    let token = apns_token(11);
    let url = sb.url(&format!("/3/device/{token}"));

    let r = h2
        .send(request(
            Method::POST,
            &url,
            &[("apns-topic", "com.example.herald")],
            ALERT,
        ))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Like Apple, a single-topic certificate's subject is the default topic.
    let r = h2.send(request(Method::POST, &url, &[], ALERT)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = h2
        .send(request(
            Method::POST,
            &url,
            &[
                ("apns-topic", "com.example.herald.voip"),
                ("apns-push-type", "voip"),
            ],
            ALERT,
        ))
        .await;
    assert_eq!(r.status, 200);
    let r = h2
        .send(request(
            Method::POST,
            &url,
            &[("apns-topic", "com.example.other")],
            ALERT,
        ))
        .await;
    assert_eq!((r.status, r.reason()), (400, "TopicDisallowed".into()));
    // Header rules still apply.
    let r = h2
        .send(request(
            Method::POST,
            &url,
            &[("apns-priority", "3")],
            ALERT,
        ))
        .await;
    assert_eq!((r.status, r.reason()), (400, "BadPriority".into()));
    sb.stop().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let sb = start().await;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(
        rcgen::DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 1]),
        "com.example.herald",
    );
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).unwrap();
    let stream = tls_connect(
        sb.addr(),
        &sb.creds.ca_pem,
        Tls {
            alpn: vec![b"h2".to_vec()],
            client_cert: Some((cert.pem(), key.serialize_pem())),
        },
    )
    .await;
    // TLS 1.3: the client may learn of the rejection only when it reads.
    let refused = match stream {
        Err(_) => true,
        Ok(s) => {
            match hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(s),
            )
            .await
            {
                Err(_) => true,
                Ok((mut sender, conn)) => {
                    tokio::spawn(conn);
                    let req = sb.apns_request(
                        &apns_token(1),
                        &sb.creds.apns_jwt(now()),
                        &[("apns-topic", "com.example.herald")],
                        ALERT,
                    );
                    match sender.ready().await {
                        Err(_) => true,
                        Ok(()) => sender.send_request(req).await.is_err(),
                    }
                }
            }
        }
    };
    assert!(refused, "an unknown client certificate is refused");
    sb.stop().await;
}
