//! `/v1/PushNotifications/EventSubscription` over real sockets, on SQLite and PostgreSQL.

mod common;

use common::{TestServer, assert_push_error, call};
use herald_store::events::types;
use herald_store::{EventStore, NewEvent};
use reqwest::Method;
use serde_json::{Value, json};

const PATH: &str = "/v1/PushNotifications/EventSubscription";
const SECRET: &str = "whsec_never-shown-7f3a";

fn put(server: &TestServer, body: &Value) -> reqwest::RequestBuilder {
    server.req(Method::PUT, PATH).json(body)
}

/// Asserts the account has no subscription (GET → 404).
async fn assert_none(server: &TestServer) {
    let (status, body) = call(server.get(PATH)).await;
    assert_push_error(status, &body, 404, 20404, None);
}

#[tokio::test]
async fn put_get_replace_and_delete() {
    for server in TestServer::all().await {
        assert_none(&server).await;

        let response = put(
            &server,
            &json!({"url": "https://hooks.example.com/herald?team=7", "secret": SECRET}),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), 202, "{}", server.name());
        let location = server.url(PATH);
        assert_eq!(response.headers()["location"], location.as_str());
        let text = response.text().await.unwrap();
        assert!(!text.contains(SECRET));
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            body,
            json!({"resourceId": server.auth.0, "resourceLocation": location})
        );

        // GET right after the 202 sees it, without the secret.
        let response = server.get(PATH).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(!text.contains(SECRET), "secret returned: {text}");
        let first: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            first.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["createdAt", "updatedAt", "url"]
        );
        assert_eq!(first["url"], "https://hooks.example.com/herald?team=7");
        let created = first["createdAt"].as_str().unwrap();
        assert!(created.ends_with('Z') && created.len() == 20, "{created}");

        // A second PUT replaces it (one per account); createdAt stays. The preview path serves
        // the same resource.
        let (status, body) = call(
            server
                .req(Method::PUT, "/preview/PushNotifications/EventSubscription")
                .json(&json!({"url": "http://127.0.0.1:8080/events", "secret": "other"})),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["resourceLocation"], location.as_str());
        let (status, second) = call(server.get(PATH)).await;
        assert_eq!(status, 200);
        assert_eq!(second["url"], "http://127.0.0.1:8080/events");
        assert_eq!(second["createdAt"], first["createdAt"]);

        let response = server.delete(PATH).send().await.unwrap();
        assert_eq!(response.status(), 202);
        assert_eq!(response.headers()["location"], location.as_str());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["resourceId"], server.auth.0.as_str());
        assert_none(&server).await;
        let (status, body) = call(server.delete(PATH)).await;
        assert_push_error(status, &body, 404, 20404, None);
    }
}

#[tokio::test]
async fn the_secret_given_is_the_one_that_signs() {
    for server in TestServer::all().await {
        let (status, _) = call(put(
            &server,
            &json!({"url": "https://hooks.example.com/h", "secret": SECRET}),
        ))
        .await;
        assert_eq!(status, 202);
        let event = NewEvent::operation(
            &server.auth.0,
            types::OPERATION_COMPLETED,
            "comms_operation_x",
            "COMPLETED",
            json!({}),
        );
        assert_eq!(server.store.record_events(&[event]).await.unwrap(), 1);
        let claimed = server.store.claim_events(10, 60_000).await.unwrap();
        assert_eq!(claimed.len(), 1, "{}", server.name());
        assert_eq!(claimed[0].secret.as_bytes(), SECRET.as_bytes());
        assert_eq!(claimed[0].url, "https://hooks.example.com/h");
    }
}

/// Every refused body: the status, the JSON paths named, and that nothing was stored.
#[tokio::test]
async fn invalid_bodies_name_each_field_and_store_nothing() {
    let long_url = format!("https://example.com/{}", "a".repeat(2048));
    let long_secret = "s".repeat(1025);
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({}), vec!["url", "secret"]),
        (json!({"url": null, "secret": null}), vec!["url", "secret"]),
        (json!({"secret": SECRET}), vec!["url"]),
        (json!({"url": "https://example.com/"}), vec!["secret"]),
        (json!({"url": 42, "secret": true}), vec!["url", "secret"]),
        (json!({"url": "", "secret": SECRET}), vec!["url"]),
        (
            json!({"url": "ftp://example.com/x", "secret": SECRET}),
            vec!["url"],
        ),
        (
            json!({"url": "mailto:ops@example.com", "secret": SECRET}),
            vec!["url"],
        ),
        (
            json!({"url": "example.com/hooks", "secret": SECRET}),
            vec!["url"],
        ),
        (json!({"url": "/hooks", "secret": SECRET}), vec!["url"]),
        (json!({"url": "http://", "secret": SECRET}), vec!["url"]),
        (
            json!({"url": "https://exa mple.com/", "secret": SECRET}),
            vec!["url"],
        ),
        (
            json!({"url": " https://example.com/", "secret": SECRET}),
            vec!["url"],
        ),
        (
            json!({"url": "https://ops:hunter2@example.com/", "secret": SECRET}),
            vec!["url"],
        ),
        (json!({"url": long_url, "secret": SECRET}), vec!["url"]),
        (
            json!({"url": "https://example.com/", "secret": ""}),
            vec!["secret"],
        ),
        (
            json!({"url": "https://example.com/", "secret": long_secret}),
            vec!["secret"],
        ),
        (
            json!({"url": "https://example.com/", "secret": SECRET, "events": ["x"]}),
            vec!["events"],
        ),
        (
            json!({"url": "ftp://x", "secret": "", "Url": "https://example.com/"}),
            vec!["url", "secret", "Url"],
        ),
    ];
    for server in TestServer::all().await {
        for (body, paths) in &cases {
            let response = put(&server, body).send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            let answer: Value = serde_json::from_str(&text).unwrap();
            for path in paths {
                assert_push_error(status, &answer, 400, 20001, Some(path));
            }
            assert_eq!(
                answer["errors"].as_array().unwrap().len(),
                paths.len(),
                "{body} → {answer}"
            );
            // Nothing secret is echoed: not the secret, not a password in the URL.
            assert!(!text.contains(SECRET), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains(&"s".repeat(1025)));
            assert_none(&server).await;
        }

        // Not JSON, or not an object, or the wrong content type: 400, nothing stored.
        for request in [
            server
                .req(Method::PUT, PATH)
                .header("content-type", "application/json")
                .body("{\"url\": "),
            server.req(Method::PUT, PATH).json(&json!(["url"])),
            server
                .req(Method::PUT, PATH)
                .form(&[("url", "https://example.com/"), ("secret", SECRET)]),
        ] {
            let (status, body) = call(request).await;
            assert_push_error(status, &body, 400, 20001, None);
            assert_none(&server).await;
        }

        // A refused replacement leaves the stored subscription as it was.
        let (status, _) = call(put(
            &server,
            &json!({"url": "https://example.com/kept", "secret": SECRET}),
        ))
        .await;
        assert_eq!(status, 202);
        let (_, before) = call(server.get(PATH)).await;
        let (status, body) = call(put(
            &server,
            &json!({"url": "https://example.com/new", "secret": ""}),
        ))
        .await;
        assert_push_error(status, &body, 400, 20001, Some("secret"));
        let (_, after) = call(server.get(PATH)).await;
        assert_eq!(before, after, "{}", server.name());
    }
}

#[tokio::test]
async fn each_account_sees_only_its_own_subscription() {
    for server in TestServer::all().await {
        let other = server.new_account().await;
        let (status, _) = call(put(
            &server,
            &json!({"url": "https://a.example.com/", "secret": "a"}),
        ))
        .await;
        assert_eq!(status, 202);

        let (status, body) = call(server.req_as(Method::GET, PATH, &other)).await;
        assert_push_error(status, &body, 404, 20404, None);
        let (status, body) = call(server.req_as(Method::DELETE, PATH, &other)).await;
        assert_push_error(status, &body, 404, 20404, None);

        let (status, body) = call(
            server
                .req_as(Method::PUT, PATH, &other)
                .json(&json!({"url": "https://b.example.com/", "secret": "b"})),
        )
        .await;
        assert_eq!(status, 202);
        assert_eq!(body["resourceId"], other.0.as_str());
        let (_, mine) = call(server.get(PATH)).await;
        assert_eq!(mine["url"], "https://a.example.com/", "{}", server.name());
        let (_, theirs) = call(server.req_as(Method::GET, PATH, &other)).await;
        assert_eq!(theirs["url"], "https://b.example.com/");

        let (status, _) = call(server.req_as(Method::DELETE, PATH, &other)).await;
        assert_eq!(status, 202);
        let (status, mine) = call(server.get(PATH)).await;
        assert_eq!(status, 200);
        assert_eq!(mine["url"], "https://a.example.com/");
    }
}

#[tokio::test]
async fn auth_is_required_and_other_methods_are_405() {
    for server in TestServer::all().await {
        let (status, body) = call(server.http.get(server.url(PATH))).await;
        assert_push_error(status, &body, 401, 20003, None);
        let (status, body) = call(
            server
                .http
                .put(server.url(PATH))
                .json(&json!({"url": "https://example.com/", "secret": SECRET})),
        )
        .await;
        assert_push_error(status, &body, 401, 20003, None);
        assert_none(&server).await;
        for method in [Method::POST, Method::PATCH] {
            let (status, body) = call(
                server
                    .req(method, PATH)
                    .json(&json!({"url": "https://example.com/", "secret": SECRET})),
            )
            .await;
            assert_push_error(status, &body, 405, 20004, None);
        }
        assert_none(&server).await;
    }
}
