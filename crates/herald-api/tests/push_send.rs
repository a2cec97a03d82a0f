//! `POST /v1/PushNotifications` over real sockets, on SQLite and PostgreSQL: validation (every
//! problem with its path), sender resolution, payload sizes, idempotency, and that a rejected
//! request stores nothing.

mod common;

use common::{Auth, TestServer, assert_push_error, call, fixture};
use herald_core::Tags;
use herald_core::credential_content::{PushCredentialType, validate_push_content};
use herald_core::ids::{self, new_type_id};
use herald_store::chat_credentials::{ChatCredentialInput, ChatCredentialType};
use herald_store::credentials::NewCredential;
use herald_store::delivery::OperationFilter;
use herald_store::{ChatCredentialStore, CredentialStore, DeliveryStore, PageRequest};
use reqwest::Method;
use serde_json::{Value, json};

const SEND: &str = "/v1/PushNotifications";

/// Creates a Push credential of `kind` in app `app` of `auth`'s account; returns its ID.
async fn credential_as(
    server: &TestServer,
    auth: &Auth,
    app: &str,
    kind: PushCredentialType,
) -> String {
    let content = match kind {
        PushCredentialType::Fcm => fixture("fcm-content.json"),
        _ => fixture("apn-token-content.json"),
    };
    let record = server
        .store
        .create_credential(
            &auth.0,
            NewCredential {
                credential_type: kind,
                app_name: herald_core::AppName::parse(app).unwrap(),
                is_default: None,
                tags: Tags::default(),
                content: validate_push_content(kind, &content).unwrap(),
            },
        )
        .await
        .unwrap();
    record.id
}

async fn credential(server: &TestServer, app: &str, kind: PushCredentialType) -> String {
    credential_as(server, &server.auth.clone(), app, kind).await
}

/// An app `shop` with an APN and an FCM credential.
async fn shop(server: &TestServer) -> (String, String) {
    let apn = credential(server, "shop", PushCredentialType::Apn).await;
    let fcm = credential(server, "shop", PushCredentialType::Fcm).await;
    (apn, fcm)
}

async fn operation_count(server: &TestServer, auth: &Auth) -> usize {
    server
        .store
        .list_operations(
            &auth.0,
            &OperationFilter::default(),
            &PageRequest::first(1000),
        )
        .await
        .unwrap()
        .items
        .len()
}

fn body() -> Value {
    json!({
        "from": {"appName": "shop"},
        "to": [{"token": "apns-token-1", "provider": "APN"}, {"token": "fcm-token-1", "provider": "FCM"}],
        "content": {"title": "Hi", "body": "Your order shipped"}
    })
}

fn contexts(answer: &Value) -> Vec<String> {
    answer["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {answer}"))
        .iter()
        .map(|e| e["context"].as_str().unwrap_or("<null>").to_owned())
        .collect()
}

#[tokio::test]
async fn send_answers_202_with_the_operation_on_both_prefixes() {
    for server in TestServer::all().await {
        shop(&server).await;
        for prefix in ["/v1/PushNotifications", "/preview/PushNotifications"] {
            let response = server.post_json(prefix, &body()).send().await.unwrap();
            assert_eq!(response.status(), 202, "{} {prefix}", server.name());
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            let answer: Value = response.json().await.unwrap();
            let id = answer["operationId"].as_str().unwrap();
            assert!(ids::parse_type_id(ids::OPERATION, id).is_some(), "{id}");
            let expected = server.url(&format!("/v1/PushNotifications/Operations/{id}"));
            assert_eq!(answer["operationLocation"], expected);
            assert_eq!(location, expected);
            // The operation is there right after the 202.
            let (status, operation) = call(
                server
                    .http
                    .get(&location)
                    .basic_auth(&server.auth.0, Some(&server.auth.1)),
            )
            .await;
            assert_eq!(status, 200, "{operation}");
            assert_eq!(operation["id"], id);
            assert_eq!(operation["stats"]["recipients"], 2);
        }
        assert_eq!(operation_count(&server, &server.auth).await, 2);
    }
}

#[tokio::test]
async fn every_validation_problem_is_reported_with_its_path_and_nothing_is_stored() {
    for server in TestServer::all().await {
        shop(&server).await;
        let bad = json!({
            "from": {"appName": "Shop!"},
            "to": [
                {"token": "ok", "provider": "APN"},
                {"token": "has space", "provider": "APN"},
                {"token": "t", "provider": "WEB"},
                {"userId": "comms_pushnotificationuser_nope"},
                {"token": "t", "provider": "FCM", "variables": {"n": 1}}
            ],
            "content": {"title": "Hi {{ name", "badge": -1, "image": "ftp://x", "extra": 1},
            "priority": "URGENT",
            "ttl": 2419201,
            "collapseKey": "k".repeat(65),
            "schedule": {"sendAt": "tomorrow"},
            "tags": {"n": 1},
            "colour": "red"
        });
        let (status, answer) = call(server.post_json(SEND, &bad)).await;
        assert_eq!(status, 400, "{answer}");
        let mut found = contexts(&answer);
        found.sort();
        let mut expected = vec![
            "from.appName",
            "to[1].token",
            "to[2].provider",
            "to[3].userId",
            "to[4].variables.n",
            "content.title",
            "content.body",
            "content.badge",
            "content.image",
            "content.extra",
            "priority",
            "ttl",
            "collapseKey",
            "schedule.sendAt",
            "tags.n",
            "colour",
        ];
        expected.sort();
        assert_eq!(found, expected, "{answer}");
        for error in answer["errors"].as_array().unwrap() {
            assert_eq!(error["code"], 20001);
            assert!(error["infoUrl"].as_str().unwrap().contains("20001"));
        }
        let priority = answer["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["context"] == "priority")
            .unwrap();
        assert!(priority["message"].as_str().unwrap().contains("HIGH, LOW"));
        assert_eq!(operation_count(&server, &server.auth).await, 0);
    }
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    for server in TestServer::all().await {
        shop(&server).await;
        let (status, answer) = call(
            server
                .req(Method::POST, SEND)
                .header("content-type", "application/json")
                .body("{\"to\": ["),
        )
        .await;
        assert_push_error(status, &answer, 400, 20001, None);
        let (status, answer) = call(server.req(Method::POST, SEND).body("to=x")).await;
        assert_push_error(status, &answer, 400, 20001, None);
        let (status, answer) = call(server.post_json(SEND, &json!([1, 2]))).await;
        assert_push_error(status, &answer, 400, 20001, None);
        let (status, answer) = call(server.post_json(SEND, &json!({}))).await;
        assert_push_error(status, &answer, 400, 20001, Some("to"));
        assert_push_error(status, &answer, 400, 20001, Some("content"));
        assert_eq!(operation_count(&server, &server.auth).await, 0);
    }
}

#[tokio::test]
async fn recipients_limit_and_body_size_limit() {
    for server in TestServer::all().await {
        shop(&server).await;
        let entry = json!({"token": "fcm-token", "provider": "FCM"});
        let mut over = body();
        over["to"] = Value::Array(vec![entry.clone(); 10_001]);
        let (status, answer) = call(server.post_json(SEND, &over)).await;
        assert_push_error(status, &answer, 400, 20001, Some("to"));
        assert_eq!(answer["errors"].as_array().unwrap().len(), 1, "{answer}");
        assert_eq!(operation_count(&server, &server.auth).await, 0);

        let mut max = body();
        max["to"] = Value::Array(vec![entry; 10_000]);
        let (status, answer) = call(server.post_json(SEND, &max)).await;
        assert_eq!(status, 202, "{answer}");

        // Over 4 MiB: 413 before any parsing.
        let mut huge = body();
        huge["content"]["data"] = json!({"blob": "x".repeat(4 * 1024 * 1024 + 10)});
        let (status, answer) = call(server.post_json(SEND, &huge)).await;
        assert_push_error(status, &answer, 413, 20413, None);
        assert_eq!(operation_count(&server, &server.auth).await, 1);
    }
}

#[tokio::test]
async fn the_sender_must_exist_and_fit() {
    for server in TestServer::all().await {
        // An account without apps cannot send without naming credentials.
        let (status, answer) = call(server.post_json(
            SEND,
            &json!({
                "to": [{"token": "t", "provider": "APN"}], "content": {"body": "b"}
            }),
        ))
        .await;
        assert_push_error(status, &answer, 400, 20001, Some("from"));

        let (apn, fcm) = shop(&server).await;
        let other_app_fcm = credential(&server, "games", PushCredentialType::Fcm).await;
        let other = server.new_account().await;
        let foreign = credential_as(&server, &other, "shop", PushCredentialType::Apn).await;
        let chat_gcm = server
            .store
            .create_chat_credential(
                &server.auth.0,
                ChatCredentialType::Gcm,
                &ChatCredentialInput {
                    api_key: Some("AAAA-server-key".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .sid;
        let chat_incomplete_apn = server
            .store
            .create_chat_credential(
                &server.auth.0,
                ChatCredentialType::Apn,
                &ChatCredentialInput::default(),
            )
            .await
            .unwrap()
            .sid;

        let send_from = |from: Value| {
            let mut b = body();
            b["from"] = from;
            b
        };
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({"appName": "nosuchapp"}), vec!["from.appName"]),
            (
                json!({"apn": new_type_id(ids::CREDENTIAL)}),
                vec!["from.apn"],
            ),
            (
                json!({"fcm": format!("CR{}", "0".repeat(32))}),
                vec!["from.fcm"],
            ),
            // Another account's credential does not exist for this one.
            (json!({"apn": foreign}), vec!["from.apn"]),
            // Wrong provider for the slot, both ways, both faces.
            (json!({"apn": fcm}), vec!["from.apn"]),
            (json!({"fcm": apn}), vec!["from.fcm"]),
            (json!({"apn": chat_gcm}), vec!["from.apn"]),
            // A Chat credential without its certificate cannot send yet.
            (json!({"apn": chat_incomplete_apn}), vec!["from.apn"]),
            // Named Push credentials of two apps.
            (json!({"apn": apn, "fcm": other_app_fcm}), vec!["from"]),
            // Both problems at once.
            (
                json!({"apn": fcm, "fcm": apn}),
                vec!["from.apn", "from.fcm"],
            ),
        ];
        for (from, expected) in cases {
            let (status, answer) = call(server.post_json(SEND, &send_from(from.clone()))).await;
            assert_eq!(status, 400, "{from}: {answer}");
            let mut found = contexts(&answer);
            found.sort();
            assert_eq!(found, expected, "{from}: {answer}");
        }
        assert_eq!(operation_count(&server, &server.auth).await, 0);

        // What works: the app, its credentials, a Chat credential, the account default.
        for from in [
            json!({"appName": "shop"}),
            json!({"apn": apn, "fcm": fcm}),
            json!({"fcm": chat_gcm}),
            json!({"apn": apn, "fcm": chat_gcm}),
            Value::Null,
        ] {
            let (status, answer) = call(server.post_json(SEND, &send_from(from.clone()))).await;
            assert_eq!(status, 202, "{from}: {answer}");
        }
        assert_eq!(operation_count(&server, &server.auth).await, 5);
    }
}

#[tokio::test]
async fn payloads_over_the_provider_limit_are_refused_up_front() {
    for server in TestServer::all().await {
        shop(&server).await;
        // The same for everyone: named at content.
        let mut big = body();
        big["content"]["data"] = json!({"blob": "x".repeat(4100)});
        let (status, answer) = call(server.post_json(SEND, &big)).await;
        assert_push_error(status, &answer, 400, 20001, Some("content"));
        assert_eq!(contexts(&answer).len(), 2, "APNs and FCM both: {answer}");

        // Just under for FCM and only FCM devices: fine; APNs payloads carry a bit more.
        let mut fcm_only = body();
        fcm_only["to"] = json!([{"token": "f", "provider": "FCM"}]);
        fcm_only["content"] = json!({"body": "b", "data": {"blob": "x".repeat(3900)}});
        let (status, answer) = call(server.post_json(SEND, &fcm_only)).await;
        assert_eq!(status, 202, "{answer}");

        // Templating makes one recipient's payload too big: that recipient is named.
        let templated = json!({
            "from": {"appName": "shop"},
            "to": [
                {"token": "a", "provider": "APN", "variables": {"name": "Ada"}},
                {"token": "b", "provider": "FCM", "variables": {"name": "y".repeat(4200)}},
                {"token": "c", "provider": "APN"}
            ],
            "content": {"title": "Hi {{ name }}", "body": "b"}
        });
        let (status, answer) = call(server.post_json(SEND, &templated)).await;
        assert_push_error(status, &answer, 400, 20001, Some("to[1]"));
        assert_eq!(contexts(&answer), vec!["to[1]"], "{answer}");

        // A filter that fails on one recipient's value names that recipient too.
        let filter = json!({
            "from": {"appName": "shop"},
            "to": [
                {"token": "a", "provider": "APN", "variables": {"n": "2"}},
                {"token": "b", "provider": "APN", "variables": {"n": "two"}}
            ],
            "content": {"body": "{{ n | plus: 1 }} items"}
        });
        let (status, answer) = call(server.post_json(SEND, &filter)).await;
        assert_push_error(status, &answer, 400, 20001, Some("to[1]"));
        assert_eq!(contexts(&answer), vec!["to[1]"], "{answer}");
        assert_eq!(operation_count(&server, &server.auth).await, 1);
    }
}

#[tokio::test]
async fn idempotent_replays_return_the_first_answer() {
    for server in TestServer::all().await {
        shop(&server).await;
        let send =
            |key: &str, body: &Value| server.post_json(SEND, body).header("Idempotency-Key", key);
        let (status, first) = call(send("order-42", &body())).await;
        assert_eq!(status, 202, "{first}");
        // The same JSON with another key order and formatting is the same request.
        let reordered = r#"{ "content": {"body": "Your order shipped", "title": "Hi"},
            "to": [{"provider": "APN", "token": "apns-token-1"}, {"token": "fcm-token-1", "provider": "FCM"}],
            "from": {"appName": "shop"} }"#;
        let response = server
            .req(Method::POST, SEND)
            .header("content-type", "application/json")
            .header("Idempotency-Key", "order-42")
            .body(reordered)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let replay: Value = response.json().await.unwrap();
        assert_eq!(replay, first);
        assert_eq!(location, first["operationLocation"]);
        assert_eq!(operation_count(&server, &server.auth).await, 1);

        // Same key, another body → 422.
        let mut changed = body();
        changed["content"]["body"] = json!("Your order was delayed");
        let (status, answer) = call(send("order-42", &changed)).await;
        assert_push_error(status, &answer, 422, 20422, Some("Idempotency-Key"));
        assert_eq!(operation_count(&server, &server.auth).await, 1);

        // Keys are per account: another account's same key is a new request.
        let other = server.new_account().await;
        credential_as(&server, &other, "shop", PushCredentialType::Apn).await;
        let (status, theirs) = call(
            server
                .req_as(Method::POST, SEND, &other)
                .json(&body())
                .header("Idempotency-Key", "order-42"),
        )
        .await;
        assert_eq!(status, 202, "{theirs}");
        assert_ne!(theirs["operationId"], first["operationId"]);

        // Only a 202 is remembered: a refused request can be fixed and sent under its key.
        let mut broken = body();
        broken["priority"] = json!("URGENT");
        let (status, _) = call(send("retry-me", &broken)).await;
        assert_eq!(status, 400);
        let (status, fixed) = call(send("retry-me", &body())).await;
        assert_eq!(status, 202, "{fixed}");
        assert_ne!(fixed["operationId"], first["operationId"]);

        // Bad keys.
        let (status, answer) = call(send(&"k".repeat(256), &body())).await;
        assert_push_error(status, &answer, 400, 20001, Some("Idempotency-Key"));
        let (status, answer) = call(send("", &body())).await;
        assert_push_error(status, &answer, 400, 20001, Some("Idempotency-Key"));
        let (status, _) = call(send(&"k".repeat(255), &body())).await;
        assert_eq!(status, 202);
        assert_eq!(operation_count(&server, &server.auth).await, 3);
    }
}

#[tokio::test]
async fn concurrent_repeats_create_one_operation() {
    for server in TestServer::all().await {
        shop(&server).await;
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let request = server
                .post_json(SEND, &body())
                .header("Idempotency-Key", "burst");
            tasks.push(tokio::spawn(async move { call(request).await }));
        }
        let mut ids = std::collections::BTreeSet::new();
        for task in tasks {
            let (status, answer) = task.await.unwrap();
            assert_eq!(status, 202, "{answer}");
            ids.insert(answer["operationId"].as_str().unwrap().to_owned());
        }
        assert_eq!(ids.len(), 1, "{ids:?}");
        assert_eq!(operation_count(&server, &server.auth).await, 1);
    }
}

#[tokio::test]
async fn scheduled_sends_are_scheduled_operations() {
    for server in TestServer::all().await {
        shop(&server).await;
        let mut later = body();
        later["schedule"] = json!({"sendAt": "2099-01-01T00:00:00Z"});
        let (status, answer) = call(server.post_json(SEND, &later)).await;
        assert_eq!(status, 202, "{answer}");
        // A time that has passed means now.
        let mut past = body();
        past["schedule"] = json!({"sendAt": "2001-01-01T00:00:00Z"});
        let (status, answer) = call(server.post_json(SEND, &past)).await;
        assert_eq!(status, 202, "{answer}");
    }
}

#[tokio::test]
async fn a_flood_of_problems_is_capped_with_a_count() {
    for server in TestServer::all().await {
        shop(&server).await;
        let mut bad = body();
        bad["to"] = Value::Array(vec![json!({"token": "bad token", "provider": "APN"}); 150]);
        let (status, answer) = call(server.post_json(SEND, &bad)).await;
        assert_eq!(status, 400);
        let errors = answer["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 101, "100 problems and a count");
        assert_eq!(errors[0]["context"], "to[0].token");
        assert_eq!(errors[99]["context"], "to[99].token");
        assert!(
            errors[100]["message"].as_str().unwrap().contains("50 more"),
            "{}",
            errors[100]
        );
        assert_eq!(operation_count(&server, &server.auth).await, 0);
    }
}

/// An app's providers are cached between sends (`AppSenderCache`), but a credential written
/// through this node's API counts for the next send at once, and one written elsewhere (here:
/// straight to the store, as another node would) within the cache's second.
#[tokio::test]
async fn credential_changes_count_for_the_next_send() {
    const CREDENTIALS: &str = "/v1/PushNotifications/Credentials";
    for server in TestServer::all().await {
        let mut send = body();
        send["from"] = json!({"appName": "cache"});
        let create = json!({"credentialType": "FCM", "appName": "cache",
            "content": fixture("fcm-content.json")});
        let (status, created) = call(server.post_json(CREDENTIALS, &create)).await;
        assert_eq!(status, 202, "{created}");
        let id = created["resourceId"].as_str().unwrap().to_owned();
        for _ in 0..2 {
            let (status, answer) = call(server.post_json(SEND, &send)).await;
            assert_eq!(status, 202, "{answer}");
        }
        // The app's last credential deleted through the API: the app is gone for the next send.
        let (status, answer) = call(server.delete(&format!("{CREDENTIALS}/{id}"))).await;
        assert!((200..300).contains(&status), "{status} {answer}");
        let (status, answer) = call(server.post_json(SEND, &send)).await;
        assert_push_error(status, &answer, 400, 20001, Some("from.appName"));

        // Made again, and deleted behind the API's back: seen once the cache's second is over.
        let (status, created) = call(server.post_json(CREDENTIALS, &create)).await;
        assert_eq!(status, 202, "{created}");
        let (status, answer) = call(server.post_json(SEND, &send)).await;
        assert_eq!(status, 202, "{answer}");
        server
            .store
            .delete_credential(&server.auth.0, created["resourceId"].as_str().unwrap())
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (status, answer) = call(server.post_json(SEND, &send)).await;
        assert_push_error(status, &answer, 400, 20001, Some("from.appName"));
    }
}
