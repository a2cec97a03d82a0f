//! Push API users over real sockets, on SQLite and PostgreSQL. Users are made by registering a
//! device without a `userId`.

mod common;

use common::{TestServer, assert_push_error, call};
use reqwest::Method;
use serde_json::{Value, json};

const REGS: &str = "/v1/PushNotifications/DeviceRegistrations";
const USERS: &str = "/v1/PushNotifications/Users";

/// Registers `token` in `app` for a new user; `(registration ID, user ID)`.
async fn new_user(server: &TestServer, app: &str, token: &str) -> (String, String) {
    let (status, answer) = call(server.post_json(
        REGS,
        &json!({"appName": app, "token": token, "provider": "APN"}),
    ))
    .await;
    assert_eq!(status, 202, "{}: {answer}", server.name());
    let id = answer["resourceId"].as_str().unwrap().to_owned();
    let (_, registration) = call(server.get(&format!("{REGS}/{id}"))).await;
    (id, registration["userId"].as_str().unwrap().to_owned())
}

fn ids(body: &Value) -> Vec<String> {
    body["users"]
        .as_array()
        .unwrap_or_else(|| panic!("no users list in {body}"))
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn users_are_listed_fetched_and_deleted_with_their_registrations() {
    for server in TestServer::all().await {
        server.create_app("shop").await;
        server.create_app("games").await;
        let (shop_registration, ada) = new_user(&server, "shop", "ada-phone").await;
        let (status, answer) = call(server.post_json(
            REGS,
            &json!({"appName": "games", "token": "ada-phone", "provider": "APN", "userId": ada}),
        ))
        .await;
        assert_eq!(status, 202, "{answer}");
        let games_registration = answer["resourceId"].as_str().unwrap().to_owned();
        let (_, bob) = new_user(&server, "shop", "bob-phone").await;

        let (status, user) = call(server.get(&format!("{USERS}/{ada}"))).await;
        assert_eq!(status, 200, "{}: {user}", server.name());
        assert_eq!(user["id"], ada);
        assert!(user["deletedAt"].is_null());
        assert_eq!(user.as_object().unwrap().len(), 4, "{user}");
        for field in ["createdAt", "updatedAt"] {
            let text = user[field].as_str().unwrap();
            assert!(text.ends_with('Z') && text.len() == 20, "{text}");
        }
        let (status, preview) =
            call(server.get(&format!("/preview/PushNotifications/Users/{ada}"))).await;
        assert_eq!(status, 200);
        assert_eq!(preview, user);

        let (status, list) = call(server.get(USERS)).await;
        assert_eq!(status, 200);
        assert_eq!(ids(&list), vec![bob.clone(), ada.clone()], "newest first");
        assert_eq!(list["users"][1], user);

        let response = server
            .delete(&format!("{USERS}/{ada}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let location = server.url(&format!("{USERS}/{ada}"));
        assert_eq!(response.headers()["location"], location.as_str());
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            answer,
            json!({"resourceId": ada, "resourceLocation": location})
        );

        let (status, body) = call(server.get(&format!("{USERS}/{ada}"))).await;
        assert_push_error(status, &body, 404, 20404, None);
        let (status, body) = call(server.delete(&format!("{USERS}/{ada}"))).await;
        assert_push_error(status, &body, 404, 20404, None);
        for registration in [&shop_registration, &games_registration] {
            let (status, body) = call(server.get(&format!("{REGS}/{registration}"))).await;
            assert_push_error(status, &body, 404, 20404, None);
        }
        let (_, list) = call(server.get(&format!("{REGS}?userId={ada}"))).await;
        assert_eq!(list["deviceRegistrations"], json!([]));
        let (_, list) = call(server.get(USERS)).await;
        assert_eq!(ids(&list), vec![bob.clone()]);
        // Registering for the deleted user is refused; her phone can start over as a new user.
        let (status, body) = call(server.post_json(
            REGS,
            &json!({"appName": "shop", "token": "ada-phone", "provider": "APN", "userId": ada}),
        ))
        .await;
        assert_push_error(status, &body, 400, 20001, Some("userId"));
        let (_, again) = new_user(&server, "shop", "ada-phone").await;
        assert_ne!(again, ada);
    }
}

#[tokio::test]
async fn user_pages_hold_every_user_once() {
    for server in TestServer::all().await {
        server.create_app("shop").await;
        let mut made = Vec::new();
        for i in 0..7 {
            made.push(new_user(&server, "shop", &format!("phone-{i}")).await.1);
        }
        made.reverse();

        let mut seen = Vec::new();
        let mut path = format!("{USERS}?pageSize=3");
        let mut pages = 0;
        loop {
            let (status, body) = call(server.get(&path)).await;
            assert_eq!(status, 200, "{}: {body}", server.name());
            pages += 1;
            seen.extend(ids(&body));
            let this = body["pagination"]["self"].as_str().unwrap();
            let (_, again) =
                call(server.get(&format!("{USERS}?pageSize=3&pageToken={this}"))).await;
            assert_eq!(ids(&again), ids(&body), "self is this page");
            match body["pagination"]["next"].as_str() {
                Some(next) => path = format!("{USERS}?pageSize=3&pageToken={next}"),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, made, "newest first, none lost or repeated");

        for (query, code, field) in [
            ("?pageSize=0", 20001, "pageSize"),
            ("?pageSize=1001", 20001, "pageSize"),
            ("?pageSize=two", 20001, "pageSize"),
            ("?pageToken=garbage", 21481, "pageToken"),
        ] {
            let (status, body) = call(server.get(&format!("{USERS}{query}"))).await;
            assert_push_error(status, &body, 400, code, Some(field));
        }
        let (_, first) = call(server.get(&format!("{USERS}?pageSize=3"))).await;
        let next = first["pagination"]["next"].as_str().unwrap();
        let (status, body) =
            call(server.get(&format!("{USERS}?pageSize=4&pageToken={next}"))).await;
        assert_push_error(status, &body, 400, 21481, Some("pageToken"));
    }
}

#[tokio::test]
async fn other_accounts_users_and_malformed_ids_are_404() {
    for server in TestServer::all().await {
        server.create_app("shop").await;
        let (registration, user) = new_user(&server, "shop", "phone").await;
        let other = server.new_account().await;
        let (status, list) = call(server.req_as(Method::GET, USERS, &other)).await;
        assert_eq!(status, 200);
        assert_eq!(ids(&list), Vec::<String>::new(), "{}", server.name());
        for method in [Method::GET, Method::DELETE] {
            let (status, body) =
                call(server.req_as(method, &format!("{USERS}/{user}"), &other)).await;
            assert_push_error(status, &body, 404, 20404, None);
        }
        for path in [
            format!("{USERS}/nobody"),
            format!("{USERS}/{registration}"),
            format!("{USERS}/{}", user.to_uppercase()),
            format!("{USERS}/comms_pushnotificationuser_00000000000000000000000000"),
            format!("{USERS}/%C3%28"),
        ] {
            for method in [Method::GET, Method::DELETE] {
                let (status, body) = call(server.req(method, &path)).await;
                assert_push_error(status, &body, 404, 20404, None);
            }
        }
        let (status, body) = call(server.post_json(USERS, &json!({}))).await;
        assert_push_error(status, &body, 405, 20004, None);
        // Still there, with its registration.
        let (status, _) = call(server.get(&format!("{USERS}/{user}"))).await;
        assert_eq!(status, 200);
        let (status, _) = call(server.get(&format!("{REGS}/{registration}"))).await;
        assert_eq!(status, 200);
    }
}
