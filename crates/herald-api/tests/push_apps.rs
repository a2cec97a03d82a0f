//! `/v1/PushNotifications/Apps` over real sockets, on SQLite and PostgreSQL: list, fetch, the
//! default app, filters, pagination, tenancy and the `/preview/` alias.

mod common;

use common::{Auth, TestServer, assert_push_error, call, fixture};
use reqwest::Method;
use serde_json::{Value, json};

const BASE: &str = "/v1/PushNotifications/Apps";

fn path(name: &str) -> String {
    format!("{BASE}/{name}")
}

/// Makes app `name` by creating a credential in it; returns the credential ID.
async fn credential_in_as(server: &TestServer, auth: &Auth, kind: &str, app: &str) -> String {
    let content = if kind == "FCM" {
        fixture("fcm-content.json")
    } else {
        fixture("apn-token-content.json")
    };
    let (status, answer) = call(
        server
            .req_as(Method::POST, "/v1/PushNotifications/Credentials", auth)
            .json(&json!({"credentialType": kind, "appName": app, "content": content})),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    answer["resourceId"].as_str().unwrap().to_owned()
}

async fn credential_in(server: &TestServer, kind: &str, app: &str) -> String {
    credential_in_as(server, &server.auth, kind, app).await
}

async fn get(server: &TestServer, name: &str) -> Value {
    let (status, answer) = call(server.get(&path(name))).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

fn names(answer: &Value) -> Vec<String> {
    answer["apps"]
        .as_array()
        .unwrap_or_else(|| panic!("no apps in {answer}"))
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn list(server: &TestServer, query: &str) -> Vec<String> {
    let (status, answer) = call(server.get(&format!("{BASE}?{query}"))).await;
    assert_eq!(status, 200, "{query}: {answer}");
    names(&answer)
}

#[tokio::test]
async fn apps_show_their_defaults_and_the_default_app() {
    for server in TestServer::all().await {
        let (status, empty) = call(server.get(BASE)).await;
        assert_eq!(status, 200);
        assert_eq!(empty["apps"], json!([]));
        assert_eq!(empty["pagination"]["next"], Value::Null);
        assert!(empty["pagination"]["self"].is_string());

        let apn = credential_in(&server, "APN", "shop").await;
        let fcm = credential_in(&server, "FCM", "shop").await;
        credential_in(&server, "APN", "shop").await; // not default
        let games = credential_in(&server, "FCM", "games").await;

        let shop = get(&server, "shop").await;
        let keys: Vec<&str> = shop
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys.len(),
            5,
            "{}: {{name, isDefault, defaultCredentials, createdAt, updatedAt}} in {shop}",
            server.name()
        );
        assert_eq!(shop["name"], "shop");
        assert_eq!(shop["isDefault"], true, "the account's first app");
        assert_eq!(
            shop["defaultCredentials"],
            json!([
                {"credentialType": "APN", "credentialId": apn},
                {"credentialType": "FCM", "credentialId": fcm},
            ])
        );
        for field in ["createdAt", "updatedAt"] {
            let text = shop[field].as_str().unwrap();
            assert!(herald_core::time::parse_rfc3339(text).is_some() && text.ends_with('Z'));
        }
        let games_app = get(&server, "games").await;
        assert_eq!(games_app["isDefault"], false);
        assert_eq!(
            games_app["defaultCredentials"],
            json!([{"credentialType": "FCM", "credentialId": games}])
        );

        let (_, listed) = call(server.get(BASE)).await;
        assert_eq!(names(&listed), vec!["games", "shop"], "newest first");
        assert_eq!(listed["apps"][1], shop, "list items are the fetched form");

        // The preview alias.
        let (status, preview) = call(server.get("/preview/PushNotifications/Apps/shop")).await;
        assert_eq!(status, 200);
        assert_eq!(preview, shop);
        let (status, preview) = call(server.get("/preview/PushNotifications/Apps")).await;
        assert_eq!(status, 200);
        assert_eq!(names(&preview), vec!["games", "shop"]);
    }
}

#[tokio::test]
async fn patch_moves_the_default_app_and_never_loses_it() {
    for server in TestServer::all().await {
        credential_in(&server, "APN", "shop").await;
        credential_in(&server, "APN", "games").await;
        credential_in(&server, "APN", "news").await;

        let response = server
            .patch_json(&path("games"), &json!({"isDefault": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        assert_eq!(
            response.headers()["location"].to_str().unwrap(),
            server.url(&path("games"))
        );
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["resourceId"], "games");
        assert_eq!(answer["resourceLocation"], server.url(&path("games")));
        assert_eq!(get(&server, "games").await["isDefault"], true);
        assert_eq!(get(&server, "shop").await["isDefault"], false);
        assert_eq!(list(&server, "isDefault=true").await, vec!["games"]);
        assert_eq!(list(&server, "isDefault=false").await, vec!["news", "shop"]);

        // Idempotent; `false` on another app is a no-op.
        for (app, flag) in [("games", true), ("news", false)] {
            let (status, _) =
                call(server.patch_json(&path(app), &json!({"isDefault": flag}))).await;
            assert_eq!(status, 202);
        }
        assert_eq!(list(&server, "isDefault=true").await, vec!["games"]);

        // Rejected: each names its field and changes nothing.
        let before: Vec<Value> = {
            let (_, answer) = call(server.get(BASE)).await;
            answer["apps"].as_array().unwrap().clone()
        };
        for (request, context) in [
            (json!({"isDefault": false}), "isDefault"),
            (json!({}), "isDefault"),
            (json!({"isDefault": null}), "isDefault"),
            (json!({"isDefault": "true"}), "isDefault"),
            (json!({"isDefault": true, "name": "renamed"}), "name"),
        ] {
            let (status, answer) = call(server.patch_json(&path("games"), &request)).await;
            assert_push_error(status, &answer, 400, 20001, Some(context));
        }
        let (status, answer) =
            call(server.patch_json(&path("games"), &json!({"isDefault": false}))).await;
        assert_eq!(status, 400);
        assert!(
            answer["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("make another app the default"),
            "{answer}"
        );
        let (status, answer) = call(
            server
                .req(Method::PATCH, &path("games"))
                .header("content-type", "application/json")
                .body("{isDefault: true"),
        )
        .await;
        assert_push_error(status, &answer, 400, 20001, None);
        let (_, after) = call(server.get(BASE)).await;
        assert_eq!(
            after["apps"].as_array().unwrap(),
            &before,
            "{}",
            server.name()
        );
    }
}

#[tokio::test]
async fn other_accounts_unknown_and_malformed_names_are_404() {
    for server in TestServer::all().await {
        credential_in(&server, "APN", "shop").await;
        let other = server.new_account().await;
        let (status, answer) = call(server.req_as(Method::GET, &path("shop"), &other)).await;
        assert_push_error(status, &answer, 404, 20404, None);
        let (status, answer) = call(
            server
                .req_as(Method::PATCH, &path("shop"), &other)
                .json(&json!({"isDefault": true})),
        )
        .await;
        assert_push_error(status, &answer, 404, 20404, None);
        let (status, answer) = call(server.req_as(Method::GET, BASE, &other)).await;
        assert_eq!(status, 200);
        assert_eq!(answer["apps"], json!([]));

        // The other account's own `shop` is a different app.
        credential_in_as(&server, &other, "FCM", "shop").await;
        let (_, theirs) = call(server.req_as(Method::GET, &path("shop"), &other)).await;
        assert_eq!(theirs["isDefault"], true);
        assert_eq!(theirs["defaultCredentials"][0]["credentialType"], "FCM");
        assert_eq!(
            get(&server, "shop").await["defaultCredentials"][0]["credentialType"],
            "APN",
            "{}",
            server.name()
        );

        for name in ["nope", "Shop", "shop-app", "a%2Fb", &"a".repeat(65)] {
            let (status, answer) = call(server.get(&path(name))).await;
            assert_push_error(status, &answer, 404, 20404, None);
            let (status, answer) =
                call(server.patch_json(&path(name), &json!({"isDefault": true}))).await;
            assert_push_error(status, &answer, 404, 20404, None);
        }
        // Apps are made by credentials: no create, no delete.
        let (status, answer) = call(server.post_json(BASE, &json!({"name": "x"}))).await;
        assert_push_error(status, &answer, 405, 20004, None);
        let (status, _) = call(server.delete(&path("shop"))).await;
        assert_eq!(status, 405);
    }
}

#[tokio::test]
async fn list_filters_pages_and_tokens() {
    for server in TestServer::all().await {
        let made = ["a1", "a2", "a3", "a4", "a5"];
        for name in made {
            credential_in(&server, "APN", name).await;
        }
        let newest_first: Vec<String> = made.iter().rev().map(|s| s.to_string()).collect();

        let mut seen = Vec::new();
        let mut query = "pageSize=2".to_owned();
        let mut pages = 0;
        loop {
            let (status, answer) = call(server.get(&format!("{BASE}?{query}"))).await;
            assert_eq!(status, 200, "{answer}");
            pages += 1;
            seen.extend(names(&answer));
            let this = answer["pagination"]["self"].as_str().unwrap();
            let (_, again) = call(server.get(&format!("{BASE}?pageSize=2&pageToken={this}"))).await;
            assert_eq!(again["apps"], answer["apps"], "self fetches the same page");
            match answer["pagination"]["next"].as_str() {
                Some(next) => query = format!("pageSize=2&pageToken={next}"),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, newest_first, "{}", server.name());

        // Filters.
        assert_eq!(list(&server, "isDefault=true").await, vec!["a1"]);
        assert_eq!(list(&server, "isDefault=false").await.len(), 4);
        let created = get(&server, "a1").await["createdAt"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            list(&server, &format!("endDate={created}"))
                .await
                .last()
                .unwrap(),
            "a1"
        );
        assert_eq!(
            list(&server, &format!("startDate={created}")).await,
            newest_first
        );
        assert!(list(&server, "endDate=2001-01-01").await.is_empty());
        assert!(
            list(&server, "startDate=2999-01-01T00:00:00Z")
                .await
                .is_empty()
        );
        for (query, context) in [
            ("isDefault=TRUE", "isDefault"),
            ("startDate=soon", "startDate"),
            ("endDate=2026-01-01T25:00:00Z", "endDate"),
            ("startDate=2026-01-02&endDate=2026-01-01", "endDate"),
            ("pageSize=0", "pageSize"),
        ] {
            let (status, answer) = call(server.get(&format!("{BASE}?{query}"))).await;
            assert_push_error(status, &answer, 400, 20001, Some(context));
        }

        // Tokens: bound to filters and page size, tamper-evident.
        let (_, answer) = call(server.get(&format!("{BASE}?pageSize=2"))).await;
        let next = answer["pagination"]["next"].as_str().unwrap().to_owned();
        let (body, tag) = next.split_once('.').unwrap();
        let flipped = if body.starts_with('e') { "f" } else { "e" };
        let forged = format!("{flipped}{}.{tag}", &body[1..]);
        for query in [
            format!("pageSize=3&pageToken={next}"),
            format!("pageSize=2&isDefault=false&pageToken={next}"),
            format!("pageSize=2&pageToken={forged}"),
            format!("pageSize=2&pageToken={body}"),
            format!("pageSize=2&pageToken={next}AA"),
        ] {
            let (status, answer) = call(server.get(&format!("{BASE}?{query}"))).await;
            assert_push_error(status, &answer, 400, 21481, Some("pageToken"));
        }
    }
}
