//! Cross-cutting behaviour of the API server: health, auth, error shapes, limits, request IDs.

mod common;

use std::time::Duration;

use common::{TestServer, assert_push_error, call};
use herald_api::rate_limit::RateLimit;
use herald_store::testing::TestDatabase;
use reqwest::Method;

#[tokio::test]
async fn healthz_and_openapi_need_no_auth() {
    for server in TestServer::all().await {
        let (status, body) = call(server.http.get(server.url("/healthz"))).await;
        assert_eq!(status, 200, "{}", server.name());
        assert_eq!(body["status"], "ok");
        let (status, body) = call(server.http.get(server.url("/openapi.json"))).await;
        assert_eq!(status, 200);
        assert!(body["openapi"].as_str().unwrap().starts_with("3."));
    }
}

#[tokio::test]
async fn missing_or_wrong_credentials_get_401_in_each_face_shape() {
    for server in TestServer::all().await {
        let response = server
            .http
            .get(server.url("/v1/PushNotifications/Credentials"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"Herald\""
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_push_error(401, &body, 401, 20003, None);

        let wrong = (server.auth.0.clone(), "0".repeat(32));
        let (status, body) = call(server.req_as(Method::GET, "/v2/Credentials", &wrong)).await;
        assert_eq!(status, 401);
        assert_eq!(body["code"], 20003);
        assert_eq!(body["status"], 401);
        assert!(body["more_info"].is_string());

        // The token of one account does not open another.
        let other = server.new_account().await;
        let mixed = (server.auth.0.clone(), other.1.clone());
        let (status, _) =
            call(server.req_as(Method::GET, "/v1/PushNotifications/Apps", &mixed)).await;
        assert_eq!(status, 401);
    }
}

#[tokio::test]
async fn api_keys_authenticate_as_their_account() {
    let server = TestServer::start(TestDatabase::sqlite().await).await;
    use herald_store::AccountStore;
    let key = server
        .store
        .create_api_key(&server.auth.0, None)
        .await
        .unwrap();
    let (status, _) = call(server.req_as(
        Method::GET,
        "/v1/PushNotifications/Apps",
        &(key.sid, key.secret),
    ))
    .await;
    assert_ne!(status, 401);
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let server = TestServer::start(TestDatabase::sqlite().await).await;
    let (status, body) = call(server.get("/v1/PushNotifications/Nope")).await;
    assert_push_error(status, &body, 404, 20404, None);
    let (status, body) = call(server.http.put(server.url("/healthz"))).await;
    assert_eq!(status, 405, "{body}");
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let db = TestDatabase::sqlite().await;
    let server = TestServer::start_with(db, |config| {
        config.rate_limit = RateLimit {
            requests_per_second: 0.2,
            burst: 3.0,
        };
    })
    .await;
    for _ in 0..3 {
        let (status, _) = call(server.get("/v1/PushNotifications/Apps")).await;
        assert_ne!(status, 429);
    }
    let response = server
        .get("/v1/PushNotifications/Apps")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_push_error(429, &body, 429, 20429, None);
    // Another account has its own bucket.
    let other = server.new_account().await;
    let (status, _) = call(server.req_as(Method::GET, "/v1/PushNotifications/Apps", &other)).await;
    assert_ne!(status, 429);
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let server = TestServer::start(TestDatabase::sqlite().await).await;
    let response = server
        .http
        .get(server.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert!(!response.headers()["x-request-id"].is_empty());
}
