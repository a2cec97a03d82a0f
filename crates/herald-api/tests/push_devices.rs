//! Push API device registrations over real sockets, on SQLite and PostgreSQL.

mod common;

use std::collections::HashSet;

use common::{TestServer, assert_push_error, call};
use herald_core::{AppName, Provider};
use herald_store::DeviceStore;
use reqwest::Method;
use serde_json::{Value, json};

const REGS: &str = "/v1/PushNotifications/DeviceRegistrations";
const USERS: &str = "/v1/PushNotifications/Users";

async fn register(server: &TestServer, body: Value) -> (u16, Value) {
    call(server.post_json(REGS, &body)).await
}

/// Registers and returns the registration ID (asserting the 202).
async fn registered(server: &TestServer, body: Value) -> String {
    let (status, answer) = register(server, body.clone()).await;
    assert_eq!(status, 202, "{}: {body} → {answer}", server.name());
    answer["resourceId"].as_str().unwrap().to_owned()
}

async fn fetch(server: &TestServer, id: &str) -> (u16, Value) {
    call(server.get(&format!("{REGS}/{id}"))).await
}

async fn fetched(server: &TestServer, id: &str) -> Value {
    let (status, body) = fetch(server, id).await;
    assert_eq!(status, 200, "{}: {body}", server.name());
    body
}

/// The registration's device tokens, sorted.
async fn tokens_of(server: &TestServer, id: &str) -> Vec<String> {
    let mut tokens: Vec<String> = fetched(server, id).await["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["token"].as_str().unwrap().to_owned())
        .collect();
    tokens.sort();
    tokens
}

/// Every user of the default account, following the pages.
async fn all_users(server: &TestServer) -> Vec<Value> {
    let mut users = Vec::new();
    let mut path = format!("{USERS}?pageSize=1000");
    loop {
        let (status, body) = call(server.get(&path)).await;
        assert_eq!(status, 200, "{body}");
        users.extend(body["users"].as_array().unwrap().iter().cloned());
        match body["pagination"]["next"].as_str() {
            Some(next) => path = format!("{USERS}?pageSize=1000&pageToken={next}"),
            None => return users,
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (as a client encodes a path
/// segment).
fn encode_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn is_api_time(value: &Value) -> bool {
    value.as_str().is_some_and(|text| {
        text.len() == 20 && text.ends_with('Z') && herald_core::time::parse_rfc3339(text).is_some()
    })
}

#[tokio::test]
async fn register_fetch_list_and_delete() {
    for server in TestServer::all().await {
        server.create_app("shop").await;
        let body = json!({"appName": "shop", "token": "a1b2c3", "provider": "APN"});
        let response = server.post_json(REGS, &body).send().await.unwrap();
        assert_eq!(response.status(), 202, "{}", server.name());
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let answer: Value = response.json().await.unwrap();
        let id = answer["resourceId"].as_str().unwrap().to_owned();
        assert!(id.starts_with("comms_device_registration_"), "{id}");
        assert_eq!(
            answer["resourceLocation"],
            server.url(&format!("{REGS}/{id}"))
        );
        assert_eq!(location, answer["resourceLocation"].as_str().unwrap());

        let registration = fetched(&server, &id).await;
        let user_id = registration["userId"].as_str().unwrap().to_owned();
        assert!(user_id.starts_with("comms_pushnotificationuser_"));
        assert_eq!(registration["id"], id);
        assert_eq!(registration["appName"], "shop");
        assert!(is_api_time(&registration["createdAt"]), "{registration}");
        assert!(is_api_time(&registration["updatedAt"]));
        assert_eq!(
            registration["related"],
            json!([{"name": "user", "id": user_id, "uri": server.url(&format!("{USERS}/{user_id}"))}])
        );
        let devices = registration["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 1);
        let device = devices[0].as_object().unwrap();
        assert_eq!(device["token"], "a1b2c3");
        assert_eq!(device["provider"], "APN");
        assert_eq!(device["status"], "ACTIVE");
        assert!(is_api_time(&device["createdAt"]));
        assert!(!device.contains_key("invalidatedAt") && !device.contains_key("lastError"));

        // Again: the same registration, nothing new.
        assert_eq!(registered(&server, body.clone()).await, id);
        assert_eq!(all_users(&server).await.len(), 1);
        // Another device for the user, through the preview host.
        let (status, answer) = call(server.post_json(
            "/preview/PushNotifications/DeviceRegistrations",
            &json!({"appName": "shop", "token": "fcm-token:1", "provider": "FCM", "userId": user_id}),
        ))
        .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["resourceId"], id);
        assert_eq!(
            answer["resourceLocation"],
            server.url(&format!("{REGS}/{id}")),
            "locations use /v1/"
        );
        assert_eq!(tokens_of(&server, &id).await, vec!["a1b2c3", "fcm-token:1"]);
        let (status, same) = call(server.get(&format!(
            "/preview/PushNotifications/DeviceRegistrations/{id}"
        )))
        .await;
        assert_eq!(status, 200);
        assert_eq!(same["devices"].as_array().unwrap().len(), 2);

        let (status, list) = call(server.get(&format!("{REGS}?userId={user_id}"))).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["deviceRegistrations"].as_array().unwrap().len(), 1);
        assert_eq!(list["deviceRegistrations"][0], fetched(&server, &id).await);
        assert!(list["pagination"]["next"].is_null());
        assert!(list["pagination"]["self"].is_string());

        let response = server.delete(&format!("{REGS}/{id}")).send().await.unwrap();
        assert_eq!(response.status(), 202);
        assert!(response.headers().contains_key("location"));
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["resourceId"], id);
        let (status, body) = fetch(&server, &id).await;
        assert_push_error(status, &body, 404, 20404, None);
        let (status, body) = call(server.delete(&format!("{REGS}/{id}"))).await;
        assert_push_error(status, &body, 404, 20404, None);
        // The user stays, without registrations.
        let (status, _) = call(server.get(&format!("{USERS}/{user_id}"))).await;
        assert_eq!(status, 200);
        let (_, list) = call(server.get(&format!("{REGS}?userId={user_id}"))).await;
        assert_eq!(list["deviceRegistrations"], json!([]));
    }
}

#[tokio::test]
async fn every_invalid_register_request_names_its_field_and_stores_nothing() {
    for server in TestServer::all().await {
        server.create_app("shop").await;
        let other = server.new_account().await;
        server.create_app_as(&other, "theirs").await;
        let (status, answer) = call(
            server
                .req_as(Method::POST, REGS, &other)
                .json(&json!({"appName": "theirs", "token": "t", "provider": "FCM"})),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
        let (_, theirs) = call(server.req_as(
            Method::GET,
            &format!("{REGS}/{}", answer["resourceId"].as_str().unwrap()),
            &other,
        ))
        .await;
        let their_user = theirs["userId"].as_str().unwrap().to_owned();

        let long = "x".repeat(4097);
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({}), vec!["appName", "token", "provider"]),
            (
                json!({"appName": null, "token": null, "provider": null}),
                vec!["appName", "token", "provider"],
            ),
            (
                json!({"appName": "Shop!", "token": "t", "provider": "APN"}),
                vec!["appName"],
            ),
            (
                json!({"appName": "a".repeat(65), "token": "t", "provider": "APN"}),
                vec!["appName"],
            ),
            (
                json!({"appName": 7, "token": "t", "provider": "APN"}),
                vec!["appName"],
            ),
            (
                json!({"appName": "shop", "token": "", "provider": "APN"}),
                vec!["token"],
            ),
            (
                json!({"appName": "shop", "token": "has space", "provider": "APN"}),
                vec!["token"],
            ),
            (
                json!({"appName": "shop", "token": "tab\t", "provider": "APN"}),
                vec!["token"],
            ),
            (
                json!({"appName": "shop", "token": "é", "provider": "APN"}),
                vec!["token"],
            ),
            (
                json!({"appName": "shop", "token": long, "provider": "APN"}),
                vec!["token"],
            ),
            (
                json!({"appName": "shop", "token": ["t"], "provider": "APN"}),
                vec!["token"],
            ),
            (
                json!({"appName": "shop", "token": "t", "provider": "GCM"}),
                vec!["provider"],
            ),
            (
                json!({"appName": "shop", "token": "t", "provider": "apn"}),
                vec!["provider"],
            ),
            (
                json!({"appName": "shop", "token": "t", "provider": 1}),
                vec!["provider"],
            ),
            (
                json!({"appName": "shop", "token": "t", "provider": "APN", "userId": "bob"}),
                vec!["userId"],
            ),
            (
                json!({"appName": "shop", "token": "t", "provider": "APN", "userId": 5}),
                vec!["userId"],
            ),
            (
                json!({"appName": "shop", "token": "t", "provider": "APN",
                       "userId": "comms_credential_01h9krwprkeee8fzqspvwy6nq8"}),
                vec!["userId"],
            ),
            (
                json!({"appName": "shop", "tokn": "t", "provider": "APN"}),
                vec!["tokn", "token"],
            ),
            (
                json!({"appName": "SHOP", "token": " ", "provider": "WEB", "userId": "x"}),
                vec!["appName", "token", "provider", "userId"],
            ),
            // Checked against the store: an app or user that does not exist (here).
            (
                json!({"appName": "nope", "token": "t", "provider": "APN"}),
                vec!["appName"],
            ),
            (
                json!({"appName": "theirs", "token": "t", "provider": "APN"}),
                vec!["appName"],
            ),
            (
                json!({"appName": "shop", "token": "t", "provider": "APN",
                       "userId": "comms_pushnotificationuser_00000000000000000000000000"}),
                vec!["userId"],
            ),
            (
                json!({"appName": "shop", "token": "t", "provider": "APN", "userId": their_user}),
                vec!["userId"],
            ),
        ];
        for (body, fields) in cases {
            let (status, answer) = register(&server, body.clone()).await;
            for field in &fields {
                assert_push_error(status, &answer, 400, 20001, Some(field));
            }
            assert_eq!(
                answer["errors"].as_array().unwrap().len(),
                fields.len(),
                "{}: one error per problem for {body}: {answer}",
                server.name()
            );
        }
        let token_error = register(
            &server,
            json!({"appName": "shop", "token": "x".repeat(5000), "provider": "APN"}),
        )
        .await
        .1;
        assert!(
            !token_error.to_string().contains(&"x".repeat(100)),
            "the token is not echoed"
        );

        // Bodies that are not a JSON object.
        let (status, answer) = call(
            server
                .req(Method::POST, REGS)
                .header("content-type", "text/plain")
                .body(r#"{"appName":"shop","token":"t","provider":"APN"}"#),
        )
        .await;
        assert_push_error(status, &answer, 400, 20001, None);
        let (status, answer) = call(
            server
                .req(Method::POST, REGS)
                .header("content-type", "application/json")
                .body(r#"{"appName":"shop","token":"t","#),
        )
        .await;
        assert_push_error(status, &answer, 400, 20001, None);
        let (status, answer) = call(server.post_json(REGS, &json!(["shop"]))).await;
        assert_push_error(status, &answer, 400, 20001, None);

        assert!(all_users(&server).await.is_empty(), "nothing stored");
        let (status, answer) = call(server.req(Method::PUT, REGS)).await;
        assert_push_error(status, &answer, 405, 20004, None);
    }
}

#[tokio::test]
async fn listing_requires_a_user_and_checks_its_filters() {
    for server in TestServer::all().await {
        server.create_app("shop").await;
        server.create_app("games").await;
        let id = registered(
            &server,
            json!({"appName": "shop", "token": "t1", "provider": "APN"}),
        )
        .await;
        let user = fetched(&server, &id).await["userId"]
            .as_str()
            .unwrap()
            .to_owned();
        let games_id = registered(
            &server,
            json!({"appName": "games", "token": "t1", "provider": "APN", "userId": user}),
        )
        .await;

        for (query, field) in [
            ("", "userId"),
            ("?appName=shop", "userId"),
            ("?userId=", "userId"),
            ("?userId=nobody", "userId"),
            (
                "?userId=comms_device_registration_01h9krwprkeee8fzqspvwy6nq8",
                "userId",
            ),
            (&format!("?userId={user}&appName=Shop") as &str, "appName"),
            (&format!("?userId={user}&pageSize=0") as &str, "pageSize"),
            (&format!("?userId={user}&pageSize=1001") as &str, "pageSize"),
        ] {
            let (status, body) = call(server.get(&format!("{REGS}{query}"))).await;
            assert_push_error(status, &body, 400, 20001, Some(field));
        }
        // Every problem at once.
        let (status, body) = call(server.get(&format!("{REGS}?appName=X&pageSize=abc"))).await;
        for field in ["userId", "appName", "pageSize"] {
            assert_push_error(status, &body, 400, 20001, Some(field));
        }

        let ids = |body: &Value| -> Vec<String> {
            body["deviceRegistrations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let (status, body) = call(server.get(&format!("{REGS}?userId={user}"))).await;
        assert_eq!(status, 200, "{}: {body}", server.name());
        assert_eq!(
            ids(&body),
            vec![games_id.clone(), id.clone()],
            "newest first"
        );
        let (_, body) = call(server.get(&format!("{REGS}?userId={user}&appName="))).await;
        assert_eq!(
            ids(&body),
            vec![games_id.clone(), id.clone()],
            "empty: no filter"
        );
        let (_, body) = call(server.get(&format!("{REGS}?userId={user}&appName=shop"))).await;
        assert_eq!(ids(&body), vec![id.clone()]);
        let (_, body) = call(server.get(&format!("{REGS}?userId={user}&appName=nope"))).await;
        assert_eq!(ids(&body), Vec::<String>::new());
        let (status, body) = call(server.get(&format!(
            "{REGS}?userId=comms_pushnotificationuser_00000000000000000000000000"
        )))
        .await;
        assert_eq!(status, 200);
        assert_eq!(ids(&body), Vec::<String>::new());

        // Tokens are bound to the filters and page size.
        let (_, first) = call(server.get(&format!("{REGS}?userId={user}&pageSize=1"))).await;
        let next = first["pagination"]["next"].as_str().unwrap().to_owned();
        for query in [
            format!("?userId={user}&pageSize=1&appName=shop&pageToken={next}"),
            format!("?userId={user}&pageSize=2&pageToken={next}"),
            format!("?userId={user}&pageSize=1&pageToken=x{next}"),
        ] {
            let (status, body) = call(server.get(&format!("{REGS}{query}"))).await;
            assert_push_error(status, &body, 400, 21481, Some("pageToken"));
        }
    }
}

#[tokio::test]
async fn pages_hold_every_registration_once() {
    for server in TestServer::all().await {
        let mut expected = Vec::new();
        let mut user: Option<String> = None;
        for app in ["a1", "a2", "a3", "a4", "a5"] {
            server.create_app(app).await;
            let mut body = json!({"appName": app, "token": "phone", "provider": "FCM"});
            if let Some(user) = &user {
                body["userId"] = json!(user);
            }
            let id = registered(&server, body).await;
            if user.is_none() {
                user = Some(
                    fetched(&server, &id).await["userId"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            expected.push(id);
        }
        expected.reverse();
        let user = user.unwrap();

        let mut seen = Vec::new();
        let mut path = format!("{REGS}?userId={user}&pageSize=2");
        let mut pages = 0;
        loop {
            let (status, body) = call(server.get(&path)).await;
            assert_eq!(status, 200, "{}: {body}", server.name());
            pages += 1;
            let items = body["deviceRegistrations"].as_array().unwrap();
            assert!(items.len() <= 2);
            seen.extend(items.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
            // `self` fetches this same page again.
            let this = body["pagination"]["self"].as_str().unwrap();
            let (_, again) =
                call(server.get(&format!("{REGS}?userId={user}&pageSize=2&pageToken={this}")))
                    .await;
            assert_eq!(again["deviceRegistrations"], body["deviceRegistrations"]);
            match body["pagination"]["next"].as_str() {
                Some(next) => path = format!("{REGS}?userId={user}&pageSize=2&pageToken={next}"),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, expected, "newest first, none lost or repeated");
    }
}

#[tokio::test]
async fn devices_move_between_users_and_come_back_to_life() {
    for server in TestServer::all().await {
        server.create_app("shop").await;
        let alices = registered(
            &server,
            json!({"appName": "shop", "token": "phone", "provider": "APN"}),
        )
        .await;
        let alice = fetched(&server, &alices).await["userId"]
            .as_str()
            .unwrap()
            .to_owned();
        let bobs = registered(
            &server,
            json!({"appName": "shop", "token": "tablet", "provider": "APN"}),
        )
        .await;
        let bob = fetched(&server, &bobs).await["userId"]
            .as_str()
            .unwrap()
            .to_owned();

        // The phone changes hands: it moves to Bob, and Alice's emptied registration goes.
        let moved = registered(
            &server,
            json!({"appName": "shop", "token": "phone", "provider": "APN", "userId": bob}),
        )
        .await;
        assert_eq!(moved, bobs, "{}", server.name());
        assert_eq!(tokens_of(&server, &bobs).await, vec!["phone", "tablet"]);
        let (status, _) = fetch(&server, &alices).await;
        assert_eq!(status, 404);
        let (status, _) = call(server.get(&format!("{USERS}/{alice}"))).await;
        assert_eq!(status, 200, "Alice stays");

        // A provider calls the tablet dead.
        let app = AppName::parse("shop").unwrap();
        let error = json!({"code": 30006, "message": "Unregistered", "providerStatus": 410});
        server
            .store
            .mark_device_invalid(&server.auth.0, &app, Provider::Apn, "tablet", &error)
            .await
            .unwrap()
            .unwrap();
        let registration = fetched(&server, &bobs).await;
        let tablet = registration["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["token"] == "tablet")
            .unwrap();
        assert_eq!(tablet["status"], "INVALID");
        assert!(is_api_time(&tablet["invalidatedAt"]), "{tablet}");
        assert_eq!(tablet["lastError"], error);

        // Registered again, it is ACTIVE with its error cleared.
        assert_eq!(
            registered(
                &server,
                json!({"appName": "shop", "token": "tablet", "provider": "APN"})
            )
            .await,
            bobs
        );
        let registration = fetched(&server, &bobs).await;
        for device in registration["devices"].as_array().unwrap() {
            assert_eq!(device["status"], "ACTIVE");
            let device = device.as_object().unwrap();
            assert!(!device.contains_key("invalidatedAt") && !device.contains_key("lastError"));
        }
    }
}

#[tokio::test]
async fn devices_are_removed_by_their_percent_encoded_token() {
    for server in TestServer::all().await {
        server.create_app("shop").await;
        let tokens = [
            "abc/def",
            "APA91b:xyz-_",
            "100%sure",
            "a/b:c%2Fd?e#f&g=h+i",
            "last",
        ];
        let id = registered(
            &server,
            json!({"appName": "shop", "token": tokens[0], "provider": "FCM"}),
        )
        .await;
        let user = fetched(&server, &id).await["userId"]
            .as_str()
            .unwrap()
            .to_owned();
        for token in &tokens[1..] {
            registered(
                &server,
                json!({"appName": "shop", "token": token, "provider": "FCM", "userId": user}),
            )
            .await;
        }
        // Also an APN device with the same token: removing a token removes both.
        registered(
            &server,
            json!({"appName": "shop", "token": "APA91b:xyz-_", "provider": "APN", "userId": user}),
        )
        .await;
        assert_eq!(
            fetched(&server, &id).await["devices"]
                .as_array()
                .unwrap()
                .len(),
            6
        );

        // A `/` that is not encoded is another path.
        let (status, body) = call(server.delete(&format!("{REGS}/{id}/Devices/abc/def"))).await;
        assert_push_error(status, &body, 404, 20404, None);
        // A token the registration does not have.
        let (status, body) =
            call(server.delete(&format!("{REGS}/{id}/Devices/{}", encode_segment("abc/de")))).await;
        assert_push_error(status, &body, 404, 20404, None);
        assert_eq!(
            fetched(&server, &id).await["devices"]
                .as_array()
                .unwrap()
                .len(),
            6
        );

        let mut left: HashSet<&str> = tokens.iter().copied().collect();
        for token in &tokens[..4] {
            let path = format!("{REGS}/{id}/Devices/{}", encode_segment(token));
            let response = server.delete(&path).send().await.unwrap();
            assert_eq!(response.status(), 202, "{}: {token}", server.name());
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["resourceId"], id);
            left.remove(token);
            let now: HashSet<String> = tokens_of(&server, &id).await.into_iter().collect();
            assert_eq!(
                now,
                left.iter().map(|t| t.to_string()).collect::<HashSet<_>>()
            );
        }
        // `:` needs no encoding in a path segment.
        registered(
            &server,
            json!({"appName": "shop", "token": "x:y", "provider": "APN", "userId": user}),
        )
        .await;
        let (status, _) = call(server.delete(&format!("{REGS}/{id}/Devices/x:y"))).await;
        assert_eq!(status, 202);

        // Removing the last device deletes the registration; the user stays.
        let (status, _) = call(server.delete(&format!("{REGS}/{id}/Devices/last"))).await;
        assert_eq!(status, 202);
        let (status, body) = fetch(&server, &id).await;
        assert_push_error(status, &body, 404, 20404, None);
        let (status, body) = call(server.delete(&format!("{REGS}/{id}/Devices/last"))).await;
        assert_push_error(status, &body, 404, 20404, None);
        let (status, _) = call(server.get(&format!("{USERS}/{user}"))).await;
        assert_eq!(status, 200);
        let (status, _) = call(server.get(&format!("{REGS}/{id}/Devices/last"))).await;
        assert_eq!(status, 405);
    }
}

#[tokio::test]
async fn other_accounts_and_malformed_ids_get_404() {
    for server in TestServer::all().await {
        server.create_app("shop").await;
        let id = registered(
            &server,
            json!({"appName": "shop", "token": "mine", "provider": "APN"}),
        )
        .await;
        let user = fetched(&server, &id).await["userId"]
            .as_str()
            .unwrap()
            .to_owned();
        let other = server.new_account().await;
        server.create_app_as(&other, "shop").await;

        for (method, path) in [
            (Method::GET, format!("{REGS}/{id}")),
            (Method::DELETE, format!("{REGS}/{id}")),
            (Method::DELETE, format!("{REGS}/{id}/Devices/mine")),
            (Method::GET, format!("{USERS}/{user}")),
            (Method::DELETE, format!("{USERS}/{user}")),
        ] {
            let (status, body) = call(server.req_as(method.clone(), &path, &other)).await;
            assert_push_error(status, &body, 404, 20404, None);
            assert!(!body.to_string().contains(&id), "no existence leak: {body}");
        }
        let (status, body) =
            call(server.req_as(Method::GET, &format!("{REGS}?userId={user}"), &other)).await;
        assert_eq!(status, 200, "{}", server.name());
        assert_eq!(body["deviceRegistrations"], json!([]));
        let (status, body) =
            call(server.req_as(Method::POST, REGS, &other).json(
                &json!({"appName": "shop", "token": "mine", "provider": "APN", "userId": user}),
            ))
            .await;
        assert_push_error(status, &body, 400, 20001, Some("userId"));
        // The same token in the other account's own app is theirs, a separate device.
        let (status, _) = call(
            server
                .req_as(Method::POST, REGS, &other)
                .json(&json!({"appName": "shop", "token": "mine", "provider": "APN"})),
        )
        .await;
        assert_eq!(status, 202);
        assert_eq!(tokens_of(&server, &id).await, vec!["mine"], "untouched");

        for path in [
            format!("{REGS}/nope"),
            format!("{REGS}/comms_credential_01h9krwprkeee8fzqspvwy6nq8"),
            format!("{REGS}/{}", id.to_uppercase()),
            format!("{REGS}/{id}x"),
            format!("{REGS}/comms_device_registration_01h9krwprkeee8fzqspvwy6nq8"),
        ] {
            for method in [Method::GET, Method::DELETE] {
                let (status, body) = call(server.req(method, &path)).await;
                assert_push_error(status, &body, 404, 20404, None);
            }
        }
        let (status, body) = call(server.delete(&format!("{REGS}/nope/Devices/mine"))).await;
        assert_push_error(status, &body, 404, 20404, None);
        // Percent-encoding that is not UTF-8.
        let (status, body) = call(server.get(&format!("{REGS}/%FF%FE"))).await;
        assert_push_error(status, &body, 404, 20404, None);
        assert_eq!(tokens_of(&server, &id).await, vec!["mine"]);
    }
}

#[tokio::test]
async fn concurrent_registrations_of_one_phone_make_one_user() {
    for server in TestServer::all().await {
        server.create_app("shop").await;
        let body = json!({"appName": "shop", "token": "same-phone", "provider": "APN"});
        let answers = futures_join(&server, &body, 10).await;
        let ids: HashSet<_> = answers.iter().collect();
        assert_eq!(ids.len(), 1, "{}: {answers:?}", server.name());
        assert_eq!(all_users(&server).await.len(), 1);
    }
}

/// Sends `body` `n` times at once; the resource IDs of the answers (all must be 202).
async fn futures_join(server: &TestServer, body: &Value, n: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let request = server.post_json(REGS, body);
        tasks.push(tokio::spawn(async move { call(request).await }));
    }
    // Every request finishes before anything is asserted.
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    let mut ids = Vec::new();
    for (status, answer) in answers {
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["resourceId"].as_str().unwrap().to_owned());
    }
    ids
}
