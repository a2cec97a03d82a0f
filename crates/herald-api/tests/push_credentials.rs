//! `/v1/PushNotifications/Credentials` over real sockets, on SQLite and PostgreSQL: every
//! endpoint, every validation rule with its code and context, defaults, limits, delete rules,
//! tenancy, pagination and page tokens, the `/preview/` alias, and that no answer ever carries a
//! secret.

mod common;

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Auth, TestServer, assert_push_error, call, fixture};
use herald_store::CredentialStore;
use reqwest::Method;
use serde_json::{Value, json};

const BASE: &str = "/v1/PushNotifications/Credentials";

fn path(id: &str) -> String {
    format!("{BASE}/{id}")
}

fn body(kind: &str, app: &str) -> Value {
    let content = match kind {
        "FCM" => fixture("fcm-content.json"),
        _ => fixture("apn-token-content.json"),
    };
    json!({"credentialType": kind, "appName": app, "content": content})
}

/// Creates a credential as `auth` and returns its ID (asserting the 202 shape).
async fn create_as(server: &TestServer, auth: &Auth, body: &Value) -> String {
    let response = server
        .req_as(Method::POST, BASE, auth)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", server.name());
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let answer: Value = response.json().await.unwrap();
    let id = answer["resourceId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("comms_credential_"), "{answer}");
    assert_eq!(answer["resourceLocation"], server.url(&path(&id)));
    assert_eq!(location, server.url(&path(&id)));
    id
}

async fn create(server: &TestServer, body: &Value) -> String {
    create_as(server, &server.auth, body).await
}

async fn get(server: &TestServer, id: &str) -> Value {
    let (status, answer) = call(server.get(&path(id))).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Every credential the default account has (one big page), newest first.
async fn all(server: &TestServer) -> Vec<Value> {
    let (status, answer) = call(server.get(&format!("{BASE}?pageSize=1000"))).await;
    assert_eq!(status, 200, "{answer}");
    answer["credentials"].as_array().unwrap().clone()
}

async fn apps(server: &TestServer) -> Vec<Value> {
    let (status, answer) = call(server.get("/v1/PushNotifications/Apps?pageSize=1000")).await;
    assert_eq!(status, 200, "{answer}");
    answer["apps"].as_array().unwrap().clone()
}

fn ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts that a 400 answer names exactly these `(code, context)` problems (in any order).
fn assert_problems(status: u16, answer: &Value, expected: &[(u64, &str)]) {
    assert_eq!(status, 400, "{answer}");
    let got: HashSet<(u64, String)> = answer["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {answer}"))
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(e["infoUrl"].is_string());
            (
                e["code"].as_u64().unwrap(),
                e["context"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want: HashSet<(u64, String)> = expected
        .iter()
        .map(|(code, context)| (*code, (*context).to_owned()))
        .collect();
    assert_eq!(got, want, "{answer}");
}

/// Fails when `text` (an answer) carries any secret member or key material of the fixtures.
fn assert_no_secret(text: &str) {
    for forbidden in ["privateKey", "\"certificate\":", "private_key"] {
        assert!(!text.contains(forbidden), "{forbidden:?} in {text}");
    }
    assert_no_key_material(text);
}

/// Fails when `text` carries PEM or key material of the fixtures (error answers may name the
/// `privateKey` field, never its value).
fn assert_no_key_material(text: &str) {
    for forbidden in ["-----BEGIN", "PRIVATE KEY"] {
        assert!(!text.contains(forbidden), "{forbidden:?} in {text}");
    }
    for name in [
        "apn-token-content.json",
        "fcm-content.json",
        "apn-cert-content.json",
    ] {
        let content = fixture(name);
        for field in ["privateKey", "certificate"] {
            if let Some(encoded) = content[field].as_str() {
                for start in (0..encoded.len().saturating_sub(40)).step_by(200) {
                    assert!(!text.contains(&encoded[start..start + 40]));
                }
                let decoded = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
                for line in decoded.lines().filter(|l| l.len() > 30) {
                    assert!(!text.contains(line), "key material in {text}");
                }
            }
        }
    }
}

#[tokio::test]
async fn create_fetch_and_show_facts_but_never_secrets() {
    for server in TestServer::all().await {
        let token_id = create(&server, &body("APN", "shop")).await;
        let got = get(&server, &token_id).await;
        assert_eq!(got["id"], token_id.as_str(), "{}", server.name());
        assert_eq!(got["credentialType"], "APN");
        assert_eq!(got["appName"], "shop");
        assert_eq!(got["isDefault"], true);
        assert_eq!(got["tags"], json!({}));
        assert_eq!(
            got["apn"],
            json!({"authMethod": "token", "topic": "com.example.herald", "expiresAt": null})
        );
        assert!(got.get("fcm").is_none());
        assert_eq!(got["lastError"], Value::Null);
        for field in ["createdAt", "updatedAt"] {
            let text = got[field].as_str().unwrap();
            assert_eq!(text.len(), 20, "{text}");
            assert!(text.ends_with('Z') && text.as_bytes()[10] == b'T');
            assert!(herald_core::time::parse_rfc3339(text).is_some());
        }
        let keys: HashSet<&str> = got
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            HashSet::from([
                "id",
                "credentialType",
                "appName",
                "isDefault",
                "tags",
                "createdAt",
                "updatedAt",
                "apn",
                "lastError"
            ])
        );

        let mut fcm = body("FCM", "shop");
        fcm["tags"] = json!({"env": "prod", "team": "mobile"});
        let fcm_id = create(&server, &fcm).await;
        let got = get(&server, &fcm_id).await;
        assert_eq!(got["credentialType"], "FCM");
        assert_eq!(got["isDefault"], true, "first FCM of the app");
        assert_eq!(got["tags"], json!({"env": "prod", "team": "mobile"}));
        assert_eq!(
            got["fcm"],
            json!({
                "projectId": "herald-test",
                "clientEmail": "herald-test@herald-test.iam.gserviceaccount.com"
            })
        );
        assert!(got.get("apn").is_none());

        let cert_id = create(
            &server,
            &json!({
                "credentialType": "APN_SANDBOX",
                "appName": "shop",
                "content": fixture("apn-cert-content.json"),
                "isDefault": true,
            }),
        )
        .await;
        let got = get(&server, &cert_id).await;
        assert_eq!(
            got["apn"],
            json!({
                "authMethod": "certificate",
                "topic": "com.example.herald",
                "expiresAt": "2125-01-01T00:00:00Z"
            })
        );

        // No answer of any kind carries secret material.
        for url in [
            path(&token_id),
            path(&fcm_id),
            path(&cert_id),
            BASE.to_owned(),
            "/v1/PushNotifications/Apps".to_owned(),
        ] {
            let text = server.get(&url).send().await.unwrap().text().await.unwrap();
            assert_no_secret(&text);
        }

        // The store can open what was sealed (the delivery engine's read).
        let (_, secret, version) = server
            .store
            .get_credential_secret(&server.auth.0, &fcm_id)
            .await
            .unwrap();
        assert_eq!(version, 1);
        assert_eq!(secret.kind(), "fcmServiceAccount");
    }
}

#[tokio::test]
async fn preview_alias_serves_the_same_resources() {
    for server in TestServer::all().await {
        let response = server
            .post_json(
                "/preview/PushNotifications/Credentials",
                &body("FCM", "shop"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let answer: Value = response.json().await.unwrap();
        let id = answer["resourceId"].as_str().unwrap();
        assert_eq!(
            answer["resourceLocation"],
            server.url(&path(id)),
            "locations always use /v1/"
        );
        let (status, got) =
            call(server.get(&format!("/preview/PushNotifications/Credentials/{id}"))).await;
        assert_eq!(status, 200, "{}", server.name());
        assert_eq!(got, get(&server, id).await);
        let (status, list) = call(server.get("/preview/PushNotifications/Credentials")).await;
        assert_eq!(status, 200);
        assert_eq!(list["credentials"][0]["id"], id);
        let (status, _) = call(server.patch_json(
            &format!("/preview/PushNotifications/Credentials/{id}"),
            &json!({"tags": {"a": "b"}}),
        ))
        .await;
        assert_eq!(status, 202);
        assert_eq!(get(&server, id).await["tags"], json!({"a": "b"}));
        let (status, _) =
            call(server.delete(&format!("/preview/PushNotifications/Credentials/{id}"))).await;
        assert_eq!(status, 202);
        let (status, _) = call(server.get(&path(id))).await;
        assert_eq!(status, 404);
    }
}

#[tokio::test]
async fn create_validation_names_every_field_and_stores_nothing() {
    for server in TestServer::all().await {
        let apn = fixture("apn-token-content.json");
        let cases: Vec<(Value, Vec<(u64, &str)>)> = vec![
            (
                json!({}),
                vec![
                    (20001, "credentialType"),
                    (20001, "appName"),
                    (20001, "content"),
                ],
            ),
            (
                json!({"credentialType": "apn", "appName": "shop", "content": apn}),
                vec![(20001, "credentialType")],
            ),
            (
                json!({"credentialType": 1, "appName": "shop", "content": apn}),
                vec![(20001, "credentialType")],
            ),
            (
                json!({"credentialType": "APN", "appName": "Shop-App", "content": apn}),
                vec![(20001, "appName")],
            ),
            (
                json!({"credentialType": "APN", "appName": "a".repeat(65), "content": apn}),
                vec![(20001, "appName")],
            ),
            (
                json!({"credentialType": "APN", "appName": ["shop"], "content": apn}),
                vec![(20001, "appName")],
            ),
            (
                json!({"credentialType": "APN", "appName": "shop", "content": apn, "isdefault": true}),
                vec![(20001, "isdefault")],
            ),
            (
                json!({"credentialType": "APN", "appName": "shop", "content": apn, "isDefault": "yes"}),
                vec![(20001, "isDefault")],
            ),
            (
                json!({"credentialType": "APN", "appName": "shop", "content": apn, "tags": ["a"]}),
                vec![(20001, "tags")],
            ),
            (
                json!({"credentialType": "APN", "appName": "shop", "content": apn, "tags": {"a": 1, "b": "x".repeat(257)}}),
                vec![(20001, "tags.a"), (20001, "tags.b")],
            ),
            (
                json!({"credentialType": "APN", "appName": "shop", "content": apn,
                       "tags": (0..11).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
                vec![(20001, "tags")],
            ),
            (
                json!({"credentialType": "APN", "appName": "shop", "content": "text"}),
                vec![(52005, "content")],
            ),
            (
                json!({"credentialType": "APN", "appName": "shop", "content": {}}),
                vec![(52005, "content")],
            ),
            (
                // FCM content for an APN credential.
                json!({"credentialType": "APN", "appName": "shop", "content": fixture("fcm-content.json")}),
                vec![(52005, "content")],
            ),
            (
                json!({"credentialType": "FCM", "appName": "shop", "content": {"privateKey": "bm90IGpzb24="}}),
                vec![(52005, "content.privateKey")],
            ),
            (
                json!({"credentialType": "FCM", "appName": "shop", "content": {"privateKey": fixture("fcm-content.json")["privateKey"], "projectId": "x"}}),
                vec![(52005, "content.projectId")],
            ),
            (
                json!({"credentialType": "APN", "appName": "shop", "content": {
                    "keyId": "SHORT", "teamId": "HERALDTEAM", "bundleId": "com.example.herald",
                    "privateKey": apn["privateKey"]}}),
                vec![(52005, "content.keyId")],
            ),
            (
                json!({"credentialType": "APN", "appName": "shop", "content": {
                    "certificate": STANDARD.encode(read("apns-expired-cert.pem")),
                    "privateKey": STANDARD.encode(read("apns-expired-key.pem"))}}),
                vec![(52005, "content.certificate")],
            ),
            (
                json!({"credentialType": "APN", "appName": "shop", "content": {
                    "certificate": STANDARD.encode(read("apns-cert.pem")),
                    "privateKey": STANDARD.encode(read("other-rsa-key.pem"))}}),
                vec![(52005, "content.privateKey")],
            ),
            (
                // Every problem at once, in both codes.
                json!({"credentialType": "FCM", "appName": "No", "content": {"privateKey": 7}, "extra": 1}),
                vec![
                    (20001, "appName"),
                    (20001, "extra"),
                    (52005, "content.privateKey"),
                ],
            ),
        ];
        for (request, expected) in cases {
            let (status, answer) = call(server.post_json(BASE, &request)).await;
            assert_problems(status, &answer, &expected);
            assert_no_key_material(&answer.to_string());
        }

        // Malformed bodies.
        let (status, answer) = call(
            server
                .req(Method::POST, BASE)
                .header("content-type", "application/json")
                .body("{\"credentialType\": "),
        )
        .await;
        assert_push_error(status, &answer, 400, 20001, None);
        let (status, answer) = call(
            server
                .req(Method::POST, BASE)
                .header("content-type", "text/plain")
                .body(body("APN", "shop").to_string()),
        )
        .await;
        assert_push_error(status, &answer, 400, 20001, None);
        let (status, answer) = call(server.post_json(BASE, &json!([1, 2]))).await;
        assert_push_error(status, &answer, 400, 20001, None);

        assert!(
            all(&server).await.is_empty(),
            "{}: nothing stored",
            server.name()
        );
        assert!(apps(&server).await.is_empty(), "no app made either");
    }
}

fn read(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/credentials")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test]
async fn defaults_per_app_and_type() {
    for server in TestServer::all().await {
        let first = create(&server, &body("APN", "shop")).await;
        let mut not_default = body("APN", "shop");
        not_default["isDefault"] = json!(false);
        let second = create(&server, &not_default).await;
        assert_eq!(get(&server, &first).await["isDefault"], true);
        assert_eq!(get(&server, &second).await["isDefault"], false);

        // `isDefault: true` on create moves the default of that type only.
        let fcm = create(&server, &body("FCM", "shop")).await;
        let mut moving = body("APN", "shop");
        moving["isDefault"] = json!(true);
        let third = create(&server, &moving).await;
        assert_eq!(get(&server, &third).await["isDefault"], true);
        assert_eq!(get(&server, &first).await["isDefault"], false);
        assert_eq!(get(&server, &fcm).await["isDefault"], true);

        // The first of a type is default even when asked not to be (an app always has one).
        let mut sandbox = body("APN_SANDBOX", "shop");
        sandbox["isDefault"] = json!(false);
        let sandbox = create(&server, &sandbox).await;
        assert_eq!(get(&server, &sandbox).await["isDefault"], true);

        // Another app has its own defaults.
        let other_app = create(&server, &body("APN", "games")).await;
        assert_eq!(get(&server, &other_app).await["isDefault"], true);
        assert_eq!(get(&server, &third).await["isDefault"], true);

        // PATCH moves it back; `isDefault: false` on the default is refused and changes nothing.
        let (status, _) = call(server.patch_json(&path(&first), &json!({"isDefault": true}))).await;
        assert_eq!(status, 202);
        assert_eq!(get(&server, &first).await["isDefault"], true);
        assert_eq!(get(&server, &third).await["isDefault"], false);
        let before = get(&server, &first).await;
        let (status, answer) = call(server.patch_json(
            &path(&first),
            &json!({"isDefault": false, "tags": {"x": "y"}}),
        ))
        .await;
        assert_problems(status, &answer, &[(20001, "isDefault")]);
        assert!(
            answer["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("make another credential the default"),
            "{answer}"
        );
        assert_eq!(get(&server, &first).await, before, "{}", server.name());
        // `isDefault: false` on a non-default is fine.
        let (status, _) =
            call(server.patch_json(&path(&third), &json!({"isDefault": false}))).await;
        assert_eq!(status, 202);

        // The app shows its defaults.
        let (_, shop) = call(server.get("/v1/PushNotifications/Apps/shop")).await;
        assert_eq!(
            shop["defaultCredentials"],
            json!([
                {"credentialType": "APN", "credentialId": first},
                {"credentialType": "APN_SANDBOX", "credentialId": sandbox},
                {"credentialType": "FCM", "credentialId": fcm},
            ])
        );
        let _ = second;
    }
}

#[tokio::test]
async fn limits_of_the_reference_are_enforced() {
    for server in TestServer::all().await {
        for _ in 0..10 {
            create(&server, &body("APN", "full")).await;
        }
        let before = all(&server).await;
        let (status, answer) = call(server.post_json(BASE, &body("FCM", "full"))).await;
        assert_problems(status, &answer, &[(20001, "appName")]);
        let message = answer["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("limit of 10 credentials per app"),
            "{message}"
        );
        assert_eq!(all(&server).await, before, "{}", server.name());

        for i in 1..10 {
            create(&server, &body("APN", &format!("app_{i}"))).await;
        }
        let before = all(&server).await;
        let (status, answer) = call(server.post_json(BASE, &body("APN", "one_too_many"))).await;
        assert_problems(status, &answer, &[(20001, "appName")]);
        let message = answer["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("limit of 10 apps per account"),
            "{message}"
        );
        assert_eq!(all(&server).await, before);
        assert_eq!(apps(&server).await.len(), 10);
        let (status, _) = call(server.get("/v1/PushNotifications/Apps/one_too_many")).await;
        assert_eq!(status, 404, "no app was made");

        // Existing apps still take credentials; other accounts have their own limits.
        create(&server, &body("APN", "app_1")).await;
        let other = server.new_account().await;
        create_as(&server, &other, &body("APN", "one_too_many")).await;
    }
}

#[tokio::test]
async fn patch_replaces_tags_and_rotates_content() {
    for server in TestServer::all().await {
        let mut request = body("APN", "shop");
        request["tags"] = json!({"env": "prod", "team": "a"});
        let id = create(&server, &request).await;
        let created = get(&server, &id).await;

        let (status, answer) =
            call(server.patch_json(&path(&id), &json!({"tags": {"env": "dev"}}))).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["resourceId"], id.as_str());
        assert_eq!(answer["resourceLocation"], server.url(&path(&id)));
        let got = get(&server, &id).await;
        assert_eq!(
            got["tags"],
            json!({"env": "dev"}),
            "tags replace the whole map"
        );
        assert_eq!(got["apn"], created["apn"]);
        assert_eq!(got["isDefault"], true);

        // An empty PATCH changes nothing.
        let (status, _) = call(server.patch_json(&path(&id), &json!({}))).await;
        assert_eq!(status, 202);
        assert_eq!(get(&server, &id).await, got);

        // Rotation: validated against the credential's own type, facts follow the new content,
        // the last error goes.
        assert!(
            server
                .store
                .set_credential_last_error(&id, 1, "InvalidProviderToken", "revoked")
                .await
                .unwrap()
        );
        let shown = get(&server, &id).await;
        assert_eq!(shown["lastError"]["code"], "InvalidProviderToken");
        assert_eq!(shown["lastError"]["message"], "revoked");
        assert!(shown["lastError"]["at"].as_str().unwrap().ends_with('Z'));
        let (status, answer) = call(server.patch_json(
            &path(&id),
            &json!({"content": fixture("apn-cert-content-bundle-id.json")}),
        ))
        .await;
        assert_eq!(status, 202, "{answer}");
        let rotated = get(&server, &id).await;
        assert_eq!(rotated["apn"]["authMethod"], "certificate");
        assert_eq!(rotated["apn"]["topic"], "com.example.herald.voip");
        assert_eq!(rotated["lastError"], Value::Null);
        assert_eq!(rotated["credentialType"], "APN");
        assert_eq!(rotated["tags"], json!({"env": "dev"}));
        let (_, secret, version) = server
            .store
            .get_credential_secret(&server.auth.0, &id)
            .await
            .unwrap();
        assert_eq!(version, 2, "{}", server.name());
        assert_eq!(secret.kind(), "apnCertificate");
        assert_no_secret(&rotated.to_string());

        // Rejected PATCHes change nothing.
        let cases: Vec<(Value, Vec<(u64, &str)>)> = vec![
            (
                json!({"credentialType": "FCM"}),
                vec![(20001, "credentialType")],
            ),
            (
                json!({"credentialType": "APN"}),
                vec![(20001, "credentialType")],
            ),
            (json!({"appName": "other"}), vec![(20001, "appName")]),
            (
                json!({"tags": {"a": "b"}, "name": "x"}),
                vec![(20001, "name")],
            ),
            (json!({"isDefault": "true"}), vec![(20001, "isDefault")]),
            (json!({"tags": "env:prod"}), vec![(20001, "tags")]),
            (
                json!({"content": fixture("fcm-content.json")}),
                vec![(52005, "content")],
            ),
            (
                json!({"content": {"keyId": "ABCDE12345", "teamId": "HERALDTEAM", "bundleId": "com.example.herald", "privateKey": "AAAA"}}),
                vec![(52005, "content.privateKey")],
            ),
            (
                json!({"tags": {"x": "y"}, "content": {"certificate": 1, "privateKey": 2}}),
                vec![
                    (52005, "content.certificate"),
                    (52005, "content.privateKey"),
                ],
            ),
        ];
        for (request, expected) in cases {
            let (status, answer) = call(server.patch_json(&path(&id), &request)).await;
            assert_problems(status, &answer, &expected);
            assert_eq!(get(&server, &id).await, rotated, "{request}");
        }
        let (_, _, version) = server
            .store
            .get_credential_secret(&server.auth.0, &id)
            .await
            .unwrap();
        assert_eq!(version, 2, "no rotation from a rejected PATCH");
    }
}

#[tokio::test]
async fn delete_promotes_defaults_and_removes_empty_apps() {
    for server in TestServer::all().await {
        let a1 = create(&server, &body("APN", "shop")).await;
        let a2 = create(&server, &body("APN", "shop")).await;
        let a3 = create(&server, &body("APN", "shop")).await;
        let games = create(&server, &body("FCM", "games")).await;

        // Non-default: nothing else changes.
        let (status, answer) = call(server.delete(&path(&a2))).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["resourceId"], a2.as_str());
        let (status, _) = call(server.get(&path(&a2))).await;
        assert_eq!(status, 404);
        assert_eq!(get(&server, &a1).await["isDefault"], true);

        // The default: the most recent remaining one of its type takes over.
        let (status, _) = call(server.delete(&path(&a1))).await;
        assert_eq!(status, 202);
        assert_eq!(
            get(&server, &a3).await["isDefault"],
            true,
            "{}",
            server.name()
        );
        let (_, shop) = call(server.get("/v1/PushNotifications/Apps/shop")).await;
        assert_eq!(
            shop["defaultCredentials"],
            json!([{"credentialType": "APN", "credentialId": a3}])
        );

        // The app's last credential: the app goes, and the remaining app becomes the default.
        let (status, _) = call(server.delete(&path(&a3))).await;
        assert_eq!(status, 202);
        let (status, _) = call(server.get("/v1/PushNotifications/Apps/shop")).await;
        assert_eq!(status, 404);
        let apps = apps(&server).await;
        assert_eq!(apps.len(), 1);
        assert_eq!(apps[0]["name"], "games");
        assert_eq!(apps[0]["isDefault"], true);

        // Deleting again, or deleting the last app's last credential.
        let (status, answer) = call(server.delete(&path(&a3))).await;
        assert_push_error(status, &answer, 404, 20404, None);
        let (status, _) = call(server.delete(&path(&games))).await;
        assert_eq!(status, 202);
        assert!(self::apps(&server).await.is_empty());
        assert!(all(&server).await.is_empty());
    }
}

#[tokio::test]
async fn other_accounts_and_unknown_ids_are_404() {
    for server in TestServer::all().await {
        let id = create(&server, &body("FCM", "shop")).await;
        let other = server.new_account().await;
        for (method, request_body) in [
            (Method::GET, None),
            (Method::PATCH, Some(json!({"tags": {"a": "b"}}))),
            (Method::PATCH, Some(json!({"bogus": 1}))),
            (Method::DELETE, None),
        ] {
            let mut request = server.req_as(method.clone(), &path(&id), &other);
            if let Some(request_body) = &request_body {
                request = request.json(request_body);
            }
            let (status, answer) = call(request).await;
            assert_push_error(status, &answer, 404, 20404, None);
            assert!(!answer.to_string().contains("shop"), "no existence leak");
        }
        let (status, list) = call(server.req_as(Method::GET, BASE, &other)).await;
        assert_eq!(status, 200);
        assert_eq!(list["credentials"], json!([]));
        // Still there, unchanged, for its owner.
        let got = get(&server, &id).await;
        assert_eq!(got["tags"], json!({}));

        let unknown = herald_core::ids::new_type_id(herald_core::ids::CREDENTIAL);
        for missing in [
            unknown.as_str(),
            "comms_credential_nope",
            "CR0123456789abcdef0123456789abcdef",
            "comms_device_registration_01h9krwprkeee8fzqspvwy6nq8",
            "%20",
        ] {
            for method in [Method::GET, Method::DELETE] {
                let (status, answer) = call(server.req(method, &path(missing))).await;
                assert_push_error(status, &answer, 404, 20404, None);
            }
            let (status, answer) = call(server.patch_json(&path(missing), &json!({}))).await;
            assert_push_error(status, &answer, 404, 20404, None);
        }
        // Wrong methods are 405.
        let (status, answer) = call(server.req(Method::PUT, BASE)).await;
        assert_push_error(status, &answer, 405, 20004, None);
        let (status, _) = call(server.req(Method::POST, &path(&id))).await;
        assert_eq!(status, 405);
    }
}

#[tokio::test]
async fn list_filters_and_bad_filter_values() {
    for server in TestServer::all().await {
        let a = create(&server, &body("APN", "shop")).await;
        let b = create(&server, &body("FCM", "shop")).await;
        let c = create(&server, &body("APN", "shop")).await;
        let d = create(&server, &body("APN", "games")).await;
        let list = |query: &str| {
            let request = server.get(&format!("{BASE}?{query}"));
            let query = query.to_owned();
            async move {
                let (status, answer) = call(request).await;
                assert_eq!(status, 200, "{query}: {answer}");
                ids(answer["credentials"].as_array().unwrap())
            }
        };
        assert_eq!(
            list("").await,
            vec![d.clone(), c.clone(), b.clone(), a.clone()]
        );
        assert_eq!(list("appName=games").await, vec![d.clone()]);
        assert_eq!(list("appName=nothing").await, Vec::<String>::new());
        assert_eq!(
            list("credentialType=APN").await,
            vec![d.clone(), c.clone(), a.clone()]
        );
        assert_eq!(
            list("credentialType=FCM&appName=shop").await,
            vec![b.clone()]
        );
        assert_eq!(
            list("credentialType=APN_SANDBOX").await,
            Vec::<String>::new()
        );
        assert_eq!(
            list("isDefault=true").await,
            vec![d.clone(), b.clone(), a.clone()]
        );
        assert_eq!(list("isDefault=false").await, vec![c.clone()]);
        assert_eq!(
            list("isDefault=true&appName=shop&credentialType=APN").await,
            vec![a.clone()]
        );

        // Dates: inclusive, at the second precision the API shows.
        let created_a = get(&server, &a).await["createdAt"]
            .as_str()
            .unwrap()
            .to_owned();
        let created_d = get(&server, &d).await["createdAt"]
            .as_str()
            .unwrap()
            .to_owned();
        let everything = vec![d.clone(), c.clone(), b.clone(), a.clone()];
        assert_eq!(
            list(&format!("startDate={created_a}&endDate={created_d}")).await,
            everything
        );
        assert_eq!(list(&format!("endDate={created_d}")).await, everything);
        assert_eq!(
            list("startDate=2000-01-01&endDate=2000-01-02").await,
            Vec::<String>::new()
        );
        assert_eq!(
            list("startDate=2000-01-01T00:00:00%2B02:00").await,
            everything
        );
        assert_eq!(
            list("endDate=2000-01-01T00:00:00Z").await,
            Vec::<String>::new()
        );
        assert_eq!(list("startDate=2999-01-01").await, Vec::<String>::new());

        for (query, context) in [
            ("appName=Shop!", "appName"),
            ("credentialType=apn", "credentialType"),
            ("credentialType=GCM", "credentialType"),
            ("isDefault=yes", "isDefault"),
            ("isDefault=1", "isDefault"),
            ("startDate=yesterday", "startDate"),
            ("endDate=2026-13-01", "endDate"),
            ("startDate=2026-02-01&endDate=2026-01-01", "endDate"),
            ("pageSize=0", "pageSize"),
            ("pageSize=1001", "pageSize"),
            ("pageSize=ten", "pageSize"),
            // Unknown query parameters are refused (docs/api.md).
            ("utm_source=x", "utm_source"),
            ("appname=shop", "appname"),
        ] {
            let (status, answer) = call(server.get(&format!("{BASE}?{query}"))).await;
            assert_push_error(status, &answer, 400, 20001, Some(context));
        }
    }
}

#[tokio::test]
async fn pages_cover_everything_once_and_tokens_are_checked() {
    for server in TestServer::all().await {
        let mut made = Vec::new();
        for i in 0..7 {
            let kind = if i % 2 == 0 { "APN" } else { "FCM" };
            made.push(create(&server, &body(kind, if i < 4 { "shop" } else { "games" })).await);
        }
        made.reverse(); // newest first

        let mut seen = Vec::new();
        let mut url = format!("{BASE}?pageSize=3");
        let mut pages = 0;
        let first_self;
        {
            let (status, answer) = call(server.get(&url)).await;
            assert_eq!(status, 200, "{answer}");
            first_self = answer["pagination"]["self"].as_str().unwrap().to_owned();
        }
        loop {
            let (status, answer) = call(server.get(&url)).await;
            assert_eq!(status, 200, "{answer}");
            pages += 1;
            let page = answer["credentials"].as_array().unwrap();
            assert!(page.len() <= 3);
            seen.extend(ids(page));
            // `self` fetches this same page again.
            let again = format!(
                "{BASE}?pageSize=3&pageToken={}",
                answer["pagination"]["self"].as_str().unwrap()
            );
            let (_, same) = call(server.get(&again)).await;
            assert_eq!(same["credentials"], answer["credentials"]);
            match answer["pagination"]["next"].as_str() {
                Some(next) => url = format!("{BASE}?pageSize=3&pageToken={next}"),
                None => break,
            }
        }
        assert_eq!(pages, 3, "{}", server.name());
        assert_eq!(seen, made, "every credential once, newest first");

        // Filtered paging.
        let mut seen = Vec::new();
        let mut url = format!("{BASE}?pageSize=2&appName=shop");
        loop {
            let (_, answer) = call(server.get(&url)).await;
            seen.extend(ids(answer["credentials"].as_array().unwrap()));
            match answer["pagination"]["next"].as_str() {
                Some(next) => url = format!("{BASE}?pageSize=2&appName=shop&pageToken={next}"),
                None => break,
            }
        }
        assert_eq!(seen, made[3..].to_vec());

        // A token made for other filters, another page size, tampered, or garbage → 21481.
        let (_, answer) = call(server.get(&format!("{BASE}?pageSize=3"))).await;
        let next = answer["pagination"]["next"].as_str().unwrap().to_owned();
        let mut tampered = next.clone().into_bytes();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        for query in [
            format!("pageSize=4&pageToken={next}"),
            format!("pageToken={next}"),
            format!("pageSize=3&appName=shop&pageToken={next}"),
            format!("pageSize=3&isDefault=true&pageToken={next}"),
            format!("pageSize=3&pageToken={tampered}"),
            "pageSize=3&pageToken=garbage".to_owned(),
            format!("pageSize=3&pageToken={first_self}x"),
        ] {
            let (status, answer) = call(server.get(&format!("{BASE}?{query}"))).await;
            assert_push_error(status, &answer, 400, 21481, Some("pageToken"));
        }
        // Tokens are bound to the account's results only through the cursor: another account
        // using this token sees its own (empty) list, never these credentials.
        let other = server.new_account().await;
        let (status, answer) = call(server.req_as(
            Method::GET,
            &format!("{BASE}?pageSize=3&pageToken={next}"),
            &other,
        ))
        .await;
        assert_eq!(status, 200);
        assert_eq!(answer["credentials"], json!([]));
    }
}

#[tokio::test]
async fn deleting_an_apps_last_credential_deletes_its_device_registrations() {
    for server in TestServer::all().await {
        let shop = create(&server, &body("APN", "shop")).await;
        let games = create(&server, &body("FCM", "games")).await;
        let mut registrations = Vec::new();
        for (app, token, provider) in [
            ("shop", "device-token-1", "APN"),
            ("games", "device-token-2", "FCM"),
        ] {
            let (status, registered) = call(server.post_json(
                "/v1/PushNotifications/DeviceRegistrations",
                &json!({"appName": app, "token": token, "provider": provider}),
            ))
            .await;
            assert_eq!(status, 202, "{registered}");
            registrations.push(registered["resourceId"].as_str().unwrap().to_owned());
        }
        let registration =
            |id: &str| server.get(&format!("/v1/PushNotifications/DeviceRegistrations/{id}"));
        let (status, _) = call(registration(&registrations[0])).await;
        assert_eq!(status, 200);

        let (status, _) = call(server.delete(&path(&shop))).await;
        assert_eq!(status, 202);
        let (status, _) = call(registration(&registrations[0])).await;
        assert_eq!(
            status,
            404,
            "{}: registration deleted with its app",
            server.name()
        );
        let (status, _) = call(registration(&registrations[1])).await;
        assert_eq!(status, 200, "the other app's registrations stay");
        // The app is gone for registrations too: registering in it again is refused.
        let (status, _) = call(server.post_json(
            "/v1/PushNotifications/DeviceRegistrations",
            &json!({"appName": "shop", "token": "device-token-1", "provider": "APN"}),
        ))
        .await;
        assert_eq!(status, 400);
        let _ = games;
    }
}
