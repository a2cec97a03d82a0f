//! The Chat Credential API (`/v2/Credentials`) over real sockets, on every backend.

mod common;

use std::str::FromStr;

use common::{TestServer, call};
use herald_store::testing::TestDatabase;
use reqwest::Method;
use serde_json::Value;
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, Connection};

fn pem(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/credentials")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Form fields of a Chat request.
type Form<'a> = Vec<(&'a str, &'a str)>;

/// Secret text that must never come back in any answer.
const API_KEY: &str = "AIzaSyHeraldTestServerKeyNeverShown";
const SERVER_KEY: &str = "AAAAheraldtest:APA91bHeraldServerKeyNeverShown";

/// Asserts an answer carries no secret material: no key or certificate body text of the
/// fixtures, no base64 DER, no API key or server key.
fn assert_no_secret(body: &Value) {
    let text = body.to_string();
    let mut needles = vec!["MII".to_owned(), API_KEY.to_owned(), SERVER_KEY.to_owned()];
    for name in [
        "apns-cert.pem",
        "apns-key.pem",
        "apns-key-pkcs1.pem",
        "other-rsa-key.pem",
    ] {
        // The second line: base64 from inside the PEM body.
        needles.extend(pem(name).lines().nth(1).map(str::to_owned));
    }
    let account: Value = serde_json::from_str(&pem("fcm-service-account.json")).unwrap();
    needles.push(account["private_key_id"].as_str().unwrap().to_owned());
    for needle in needles {
        assert!(!text.contains(&needle), "secret {needle:?} in {text}");
    }
}

/// Asserts a Chat error answer: status, code, a message containing `needle`, and the classic
/// Twilio shape.
fn assert_chat_error(status: u16, body: &Value, expected_status: u16, code: u64, needle: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], expected_status, "{body}");
    assert!(
        body["more_info"]
            .as_str()
            .is_some_and(|u| u.ends_with(&code.to_string())),
        "{body}"
    );
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(keys, ["code", "message", "more_info", "status"]);
    assert_no_secret(body);
}

async fn post_form(server: &TestServer, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    call(server.req(Method::POST, path).form(form)).await
}

async fn list_all(server: &TestServer) -> Vec<Value> {
    let (status, body) = call(server.get("/v2/Credentials?PageSize=1000")).await;
    assert_eq!(status, 200, "{body}");
    body["credentials"].as_array().unwrap().clone()
}

fn is_api_time(value: &Value) -> bool {
    let text = value.as_str().unwrap_or_default();
    text.len() == 20
        && text.ends_with('Z')
        && herald_core::time::parse_rfc3339(text).is_some()
        && text.as_bytes()[10] == b'T'
}

#[tokio::test]
async fn create_fetch_update_delete() {
    for server in TestServer::all().await {
        let cert = pem("apns-cert.pem");
        let key = pem("apns-key.pem");
        let (status, created) = post_form(
            &server,
            "/v2/Credentials",
            &[
                ("Type", "apn"),
                ("FriendlyName", "iOS production"),
                ("Certificate", &cert),
                ("PrivateKey", &key),
                ("Sandbox", "true"),
            ],
        )
        .await;
        assert_eq!(status, 201, "{}: {created}", server.name());
        let sid = created["sid"].as_str().unwrap().to_owned();
        assert!(herald_core::ids::is_sid("CR", &sid), "{sid}");
        let mut keys: Vec<&str> = created
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "account_sid",
                "date_created",
                "date_updated",
                "friendly_name",
                "sandbox",
                "sid",
                "type",
                "url"
            ]
        );
        assert_eq!(created["account_sid"], server.auth.0.as_str());
        assert_eq!(created["friendly_name"], "iOS production");
        assert_eq!(created["type"], "apn");
        assert_eq!(created["sandbox"], "True");
        assert!(is_api_time(&created["date_created"]), "{created}");
        assert_eq!(created["date_created"], created["date_updated"]);
        assert_eq!(
            created["url"],
            format!("{}/v2/Credentials/{sid}", server.base)
        );
        assert_no_secret(&created);

        let path = format!("/v2/Credentials/{sid}");
        let (status, fetched) = call(server.get(&path)).await;
        assert_eq!(status, 200);
        assert_eq!(fetched, created);

        let (status, updated) = post_form(
            &server,
            &path,
            &[("FriendlyName", "renamed"), ("Sandbox", "False")],
        )
        .await;
        assert_eq!(status, 200, "{updated}");
        assert_eq!(updated["friendly_name"], "renamed");
        assert_eq!(updated["sandbox"], "False");
        assert_eq!(updated["type"], "apn");
        assert_eq!(updated["date_created"], created["date_created"]);
        assert!(is_api_time(&updated["date_updated"]));
        assert_no_secret(&updated);
        let (_, fetched) = call(server.get(&path)).await;
        assert_eq!(fetched, updated);

        // An update with no fields changes nothing but is fine.
        let (status, same) = post_form(&server, &path, &[]).await;
        assert_eq!(status, 200, "{same}");
        assert_eq!(same["friendly_name"], "renamed");

        let response = server.delete(&path).send().await.unwrap();
        assert_eq!(response.status(), 204);
        assert!(
            response.bytes().await.unwrap().is_empty(),
            "204 has no body"
        );
        let (status, body) = call(server.get(&path)).await;
        assert_chat_error(status, &body, 404, 20404, "not found");
        let (status, body) = call(server.delete(&path)).await;
        assert_chat_error(status, &body, 404, 20404, "not found");
        let (status, body) = post_form(&server, &path, &[("FriendlyName", "x")]).await;
        assert_chat_error(status, &body, 404, 20404, "not found");
        assert!(list_all(&server).await.is_empty());
    }
}

#[tokio::test]
async fn every_type_and_its_fields() {
    for server in TestServer::all().await {
        let account_json = pem("fcm-service-account.json");
        let cases: Vec<(Form, &str, &str)> = vec![
            (vec![("Type", "apn")], "apn", "False"),
            (vec![("Type", "APN"), ("Sandbox", "TRUE")], "apn", "True"),
            (vec![("Type", "gcm"), ("ApiKey", API_KEY)], "gcm", "False"),
            (
                vec![("Type", "fcm"), ("Secret", SERVER_KEY)],
                "fcm",
                "False",
            ),
            (
                vec![("Type", "fcm"), ("Secret", &account_json)],
                "fcm",
                "False",
            ),
            (vec![("Type", "gcm"), ("Sandbox", "false")], "gcm", "False"),
        ];
        for (form, kind, sandbox) in &cases {
            let (status, body) = post_form(&server, "/v2/Credentials", form).await;
            assert_eq!(status, 201, "{}: {form:?}: {body}", server.name());
            assert_eq!(body["type"], *kind);
            assert_eq!(body["sandbox"], *sandbox);
            assert_eq!(body["friendly_name"], Value::Null);
            assert_no_secret(&body);
        }
        assert_eq!(list_all(&server).await.len(), cases.len());
        // A form with a charset parameter in the Content-Type is fine too.
        let (status, body) = call(
            server
                .req(Method::POST, "/v2/Credentials")
                .header(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )
                .body("Type=gcm&FriendlyName=caf%C3%A9"),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["friendly_name"], "café");
    }
}

#[tokio::test]
async fn invalid_creates_are_refused_and_store_nothing() {
    for server in TestServer::all().await {
        let cert = pem("apns-cert.pem");
        let other_key = pem("other-rsa-key.pem");
        let long_name = "n".repeat(65);
        let cases: Vec<(Form, u64, &str)> = vec![
            (vec![("FriendlyName", "no type")], 20001, "Type is required"),
            (
                vec![("Type", "apns")],
                20001,
                "Type must be one of apn, gcm, fcm",
            ),
            (vec![("Type", "")], 20001, "Type must be one of"),
            (
                vec![("Type", "apn"), ("FriendlyName", &long_name)],
                20001,
                "FriendlyName must be at most 64",
            ),
            (
                vec![("Type", "apn"), ("Certificate", "not a PEM")],
                52005,
                "Certificate",
            ),
            (
                vec![
                    ("Type", "apn"),
                    (
                        "PrivateKey",
                        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                    ),
                ],
                52005,
                "PrivateKey",
            ),
            (
                vec![
                    ("Type", "apn"),
                    ("Certificate", &cert),
                    ("PrivateKey", &other_key),
                ],
                52005,
                "PrivateKey",
            ),
            (
                vec![("Type", "gcm"), ("ApiKey", "")],
                52005,
                "ApiKey must not be empty",
            ),
            (
                vec![("Type", "fcm"), ("Secret", "  ")],
                52005,
                "Secret must not be empty",
            ),
            (
                vec![("Type", "fcm"), ("Secret", r#"{"type":"service_account"}"#)],
                52005,
                "Secret",
            ),
            (
                vec![("Type", "apn"), ("Sandbox", "yes")],
                20001,
                "Sandbox must be true or false",
            ),
            (
                vec![("Type", "apn"), ("ApiKey", API_KEY)],
                20001,
                "ApiKey applies to gcm",
            ),
            (
                vec![("Type", "gcm"), ("Secret", SERVER_KEY)],
                20001,
                "Secret applies to fcm",
            ),
            (
                vec![("Type", "fcm"), ("Certificate", &cert)],
                20001,
                "Certificate applies to apn",
            ),
            (
                vec![("Type", "gcm"), ("Sandbox", "true")],
                20001,
                "Sandbox applies to apn",
            ),
            (
                vec![("Type", "apn"), ("friendly_name", "x")],
                20001,
                "unknown parameter \"friendly_name\" (did you mean FriendlyName?)",
            ),
            (
                vec![("Type", "apn"), ("Colour", "blue")],
                20001,
                "unknown parameter \"Colour\"",
            ),
            (
                vec![("Type", "apn"), ("Type", "gcm")],
                20001,
                "Type is given more than once",
            ),
        ];
        for (form, code, needle) in &cases {
            let (status, body) = post_form(&server, "/v2/Credentials", form).await;
            assert_chat_error(status, &body, 400, *code, needle);
        }
        // Every problem is named in the one answer.
        let (status, body) = post_form(
            &server,
            "/v2/Credentials",
            &[("FriendlyName", &long_name), ("Sandbox", "maybe")],
        )
        .await;
        assert_chat_error(status, &body, 400, 20001, "Type is required");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("FriendlyName") && message.contains("Sandbox"),
            "{message}"
        );

        // Wrong content types.
        let (status, body) = call(
            server
                .req(Method::POST, "/v2/Credentials")
                .json(&serde_json::json!({"Type": "apn"})),
        )
        .await;
        assert_chat_error(
            status,
            &body,
            400,
            20001,
            "application/x-www-form-urlencoded",
        );
        let (status, body) =
            call(server.req(Method::POST, "/v2/Credentials").body("Type=apn")).await;
        assert_chat_error(status, &body, 400, 20001, "Content-Type must be");
        let (status, body) = call(
            server
                .req(Method::POST, "/v2/Credentials")
                .header("content-type", "multipart/form-data; boundary=x")
                .body("--x--"),
        )
        .await;
        assert_chat_error(status, &body, 400, 20001, "Content-Type must be");

        assert!(
            list_all(&server).await.is_empty(),
            "{}: nothing stored",
            server.name()
        );
    }
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_and_store_nothing() {
    let server = TestServer::start_with(TestDatabase::sqlite().await, |config| {
        config.body_limit_bytes = 1024;
    })
    .await;
    let big = "x".repeat(2048);
    let (status, body) = post_form(
        &server,
        "/v2/Credentials",
        &[("Type", "gcm"), ("ApiKey", &big)],
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], 20413);
    assert_eq!(body["status"], 413);
    assert!(list_all(&server).await.is_empty());
}

#[tokio::test]
async fn updates_follow_the_rules() {
    for server in TestServer::all().await {
        let (status, created) = post_form(
            &server,
            "/v2/Credentials",
            &[("Type", "apn"), ("FriendlyName", "piecemeal")],
        )
        .await;
        assert_eq!(status, 201);
        let path = format!("/v2/Credentials/{}", created["sid"].as_str().unwrap());

        // Type cannot change (even to itself), and a refused update changes nothing.
        for kind in ["gcm", "apn"] {
            let (status, body) = post_form(
                &server,
                &path,
                &[("Type", kind), ("FriendlyName", "changed")],
            )
            .await;
            assert_chat_error(status, &body, 400, 20001, "Type cannot be changed");
        }
        // Certificate first, then the key: Twilio lets a credential be filled in piecemeal.
        let (status, body) =
            post_form(&server, &path, &[("Certificate", &pem("apns-cert.pem"))]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["friendly_name"], "piecemeal");
        // A key that does not match the stored certificate.
        let (status, body) =
            post_form(&server, &path, &[("PrivateKey", &pem("other-rsa-key.pem"))]).await;
        assert_chat_error(
            status,
            &body,
            400,
            52005,
            "PrivateKey does not match the credential's stored Certificate",
        );
        let (status, body) = post_form(
            &server,
            &path,
            &[("PrivateKey", &pem("apns-key-pkcs1.pem"))],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_no_secret(&body);
        // A certificate that does not match the stored key.
        let (status, body) =
            post_form(&server, &path, &[("Certificate", &pem("apns-ec-cert.pem"))]).await;
        assert_chat_error(status, &body, 400, 52005, "Certificate does not match");

        for (form, code, needle) in [
            (vec![("ApiKey", API_KEY)], 20001, "ApiKey applies to gcm"),
            (
                vec![("FriendlyName", &*"z".repeat(65))],
                20001,
                "FriendlyName must be at most 64",
            ),
            (
                vec![("Sandbox", "1")],
                20001,
                "Sandbox must be true or false",
            ),
            (vec![("Certificate", "garbage")], 52005, "Certificate"),
            (vec![("Nope", "x")], 20001, "unknown parameter \"Nope\""),
        ] {
            let (status, body) = post_form(&server, &path, &form).await;
            assert_chat_error(status, &body, 400, code, needle);
        }
        let (status, body) = call(
            server
                .req(Method::POST, &path)
                .json(&serde_json::json!({"FriendlyName": "json"})),
        )
        .await;
        assert_chat_error(status, &body, 400, 20001, "Content-Type must be");
        let (_, fetched) = call(server.get(&path)).await;
        assert_eq!(
            fetched["friendly_name"], "piecemeal",
            "refused updates changed nothing"
        );
        assert_eq!(fetched["sandbox"], "False");

        // An empty FriendlyName clears it.
        let (status, body) = post_form(&server, &path, &[("FriendlyName", "")]).await;
        assert_eq!(status, 200);
        assert_eq!(body["friendly_name"], Value::Null);

        // gcm and fcm credentials take their own secrets on update.
        let (_, gcm) = post_form(&server, "/v2/Credentials", &[("Type", "gcm")]).await;
        let gcm_path = format!("/v2/Credentials/{}", gcm["sid"].as_str().unwrap());
        let (status, body) = post_form(&server, &gcm_path, &[("ApiKey", API_KEY)]).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = post_form(&server, &gcm_path, &[("ApiKey", "")]).await;
        assert_chat_error(status, &body, 400, 52005, "ApiKey must not be empty");
        let (_, fcm) = post_form(&server, "/v2/Credentials", &[("Type", "fcm")]).await;
        let fcm_path = format!("/v2/Credentials/{}", fcm["sid"].as_str().unwrap());
        let (status, body) = post_form(&server, &fcm_path, &[("Secret", SERVER_KEY)]).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = post_form(&server, &fcm_path, &[("Sandbox", "true")]).await;
        assert_chat_error(status, &body, 400, 20001, "Sandbox applies to apn");
    }
}

#[tokio::test]
async fn pages_follow_next_and_previous_urls() {
    for server in TestServer::all().await {
        let mut made = Vec::new();
        for i in 0..5 {
            let (status, body) = post_form(
                &server,
                "/v2/Credentials",
                &[("Type", "gcm"), ("FriendlyName", &format!("c{i}"))],
            )
            .await;
            assert_eq!(status, 201);
            made.push(body["sid"].as_str().unwrap().to_owned());
        }
        let everything: Vec<String> = list_all(&server)
            .await
            .iter()
            .map(|c| c["sid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(everything.len(), 5);

        let (status, page0) = call(server.get("/v2/Credentials?PageSize=2")).await;
        assert_eq!(status, 200, "{page0}");
        let meta = &page0["meta"];
        assert_eq!(meta["page"], 0);
        assert_eq!(meta["page_size"], 2);
        assert_eq!(meta["key"], "credentials");
        assert_eq!(
            meta["first_page_url"],
            format!("{}/v2/Credentials?PageSize=2&Page=0", server.base)
        );
        assert_eq!(meta["url"], meta["first_page_url"]);
        assert_eq!(meta["previous_page_url"], Value::Null);
        let next = meta["next_page_url"].as_str().unwrap().to_owned();
        assert!(
            next.starts_with(&format!(
                "{}/v2/Credentials?PageSize=2&Page=1&PageToken=PA",
                server.base
            )),
            "{next}"
        );

        // Follow next_page_url verbatim, as the helper libraries do.
        let mut seen = Vec::new();
        let mut pages = vec![page0.clone()];
        let mut url = Some(next);
        seen.extend(sids(&page0));
        while let Some(next) = url {
            let (status, page) = call(
                server
                    .http
                    .get(&next)
                    .basic_auth(&server.auth.0, Some(&server.auth.1)),
            )
            .await;
            assert_eq!(status, 200, "{page}");
            assert_eq!(page["meta"]["url"], next.as_str());
            assert!(page["meta"]["previous_page_url"].is_string(), "{page}");
            seen.extend(sids(&page));
            url = page["meta"]["next_page_url"].as_str().map(str::to_owned);
            pages.push(page);
        }
        assert_eq!(
            seen,
            everything,
            "{}: every credential once, newest first",
            server.name()
        );
        assert_eq!(pages.len(), 3);
        assert_eq!(pages[2]["meta"]["page"], 2);
        assert_eq!(pages[2]["credentials"].as_array().unwrap().len(), 1);

        // And back with previous_page_url.
        let previous = pages[2]["meta"]["previous_page_url"].as_str().unwrap();
        assert!(previous.contains("Page=1&PageToken=PB"), "{previous}");
        let (status, back) = call(
            server
                .http
                .get(previous)
                .basic_auth(&server.auth.0, Some(&server.auth.1)),
        )
        .await;
        assert_eq!(status, 200, "{back}");
        assert_eq!(sids(&back), sids(&pages[1]));
        assert_eq!(back["meta"]["page"], 1);
        assert_eq!(
            back["meta"]["next_page_url"],
            pages[1]["meta"]["next_page_url"]
        );
        let previous = back["meta"]["previous_page_url"].as_str().unwrap();
        let (_, first) = call(
            server
                .http
                .get(previous)
                .basic_auth(&server.auth.0, Some(&server.auth.1)),
        )
        .await;
        assert_eq!(sids(&first), sids(&page0));
        assert_eq!(first["meta"]["previous_page_url"], Value::Null);

        // Defaults and bounds.
        let (status, body) = call(server.get("/v2/Credentials")).await;
        assert_eq!(status, 200);
        assert_eq!(body["meta"]["page_size"], 50);
        assert_eq!(body["meta"]["next_page_url"], Value::Null);
        let (status, _) = call(server.get("/v2/Credentials?PageSize=1000&Unknown=1")).await;
        assert_eq!(status, 200, "unknown query parameters are ignored");
        for query in ["PageSize=0", "PageSize=1001", "PageSize=abc", "PageSize=-1"] {
            let (status, body) = call(server.get(&format!("/v2/Credentials?{query}"))).await;
            assert_chat_error(
                status,
                &body,
                400,
                20001,
                "PageSize must be an integer from 1 to 1000",
            );
        }
        for query in ["Page=-1", "Page=x"] {
            let (status, body) = call(server.get(&format!("/v2/Credentials?{query}"))).await;
            assert_chat_error(
                status,
                &body,
                400,
                20001,
                "Page must be a non-negative integer",
            );
        }
        let (status, body) = call(server.get("/v2/Credentials?Page=1")).await;
        assert_chat_error(status, &body, 400, 20001, "needs a PageToken");
        let (status, body) = call(server.get("/v2/Credentials?PageSize=2&PageSize=3")).await;
        assert_chat_error(
            status,
            &body,
            400,
            20001,
            "PageSize is given more than once",
        );

        // Tokens are bound to PageSize and tamper-evident.
        let next = page0["meta"]["next_page_url"].as_str().unwrap();
        let token = next.split("PageToken=").nth(1).unwrap();
        for query in [
            format!("PageSize=3&Page=1&PageToken={token}"),
            format!("PageSize=2&Page=1&PageToken=PB{}", &token[2..]),
            format!("PageSize=2&Page=1&PageToken={}x", token),
            "PageSize=2&Page=1&PageToken=garbage".to_owned(),
        ] {
            let (status, body) = call(server.get(&format!("/v2/Credentials?{query}"))).await;
            assert_chat_error(status, &body, 400, 21481, "PageToken is invalid");
        }
    }
}

fn sids(page: &Value) -> Vec<String> {
    page["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["sid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn other_accounts_and_malformed_sids_get_404() {
    for server in TestServer::all().await {
        let (_, created) = post_form(
            &server,
            "/v2/Credentials",
            &[("Type", "gcm"), ("ApiKey", API_KEY)],
        )
        .await;
        let sid = created["sid"].as_str().unwrap().to_owned();
        let other = server.new_account().await;
        let path = format!("/v2/Credentials/{sid}");
        for method in [Method::GET, Method::DELETE] {
            let (status, body) = call(server.req_as(method, &path, &other)).await;
            assert_chat_error(status, &body, 404, 20404, "not found");
        }
        let (status, body) = call(
            server
                .req_as(Method::POST, &path, &other)
                .form(&[("FriendlyName", "stolen")]),
        )
        .await;
        assert_chat_error(status, &body, 404, 20404, "not found");
        let (status, body) = call(server.req_as(Method::GET, "/v2/Credentials", &other)).await;
        assert_eq!(status, 200);
        assert_eq!(body["credentials"], serde_json::json!([]));
        let (status, fetched) = call(server.get(&path)).await;
        assert_eq!(status, 200);
        assert_eq!(fetched, created, "untouched");

        let upper = format!("CR{}", sid[2..].to_uppercase());
        for bad in [
            "CR123",
            "nope",
            upper.as_str(),
            "CR00000000000000000000000000000000",
            "comms_credential_01h00000000000000000000000",
        ] {
            let path = format!("/v2/Credentials/{bad}");
            for method in [Method::GET, Method::DELETE] {
                let (status, body) = call(server.req(method, &path)).await;
                assert_chat_error(status, &body, 404, 20404, "not found");
            }
            let (status, body) = post_form(&server, &path, &[("FriendlyName", "x")]).await;
            assert_chat_error(status, &body, 404, 20404, "not found");
        }
        // Methods the resource does not serve: 405 in the Chat shape.
        let (status, body) = call(server.req(Method::PUT, "/v2/Credentials")).await;
        assert_chat_error(status, &body, 405, 20004, "method not allowed");
        let (status, body) = call(server.req(Method::PATCH, &path)).await;
        assert_chat_error(status, &body, 405, 20004, "method not allowed");
    }
}

#[tokio::test]
async fn chat_and_push_credentials_stay_apart() {
    for server in TestServer::all().await {
        let (status, chat) = post_form(
            &server,
            "/v2/Credentials",
            &[
                ("Type", "apn"),
                ("Certificate", &pem("apns-cert.pem")),
                ("PrivateKey", &pem("apns-key.pem")),
            ],
        )
        .await;
        assert_eq!(status, 201);
        let chat_sid = chat["sid"].as_str().unwrap();

        // Not under the Push face.
        let (status, body) =
            call(server.get(&format!("/v1/PushNotifications/Credentials/{chat_sid}"))).await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = call(server.get("/v1/PushNotifications/Credentials")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["credentials"], serde_json::json!([]), "{body}");

        // A Push credential made through the Push API is not under the Chat face.
        let (status, push) = call(server.post_json(
            "/v1/PushNotifications/Credentials",
            &serde_json::json!({
                "credentialType": "APN",
                "appName": "shop",
                "content": common::fixture("apn-cert-content.json"),
            }),
        ))
        .await;
        assert_eq!(status, 202, "{push}");
        let push_credential = push["resourceId"].as_str().unwrap();
        let listed = list_all(&server).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["sid"], chat_sid);
        let (status, _) = call(server.get(&format!("/v2/Credentials/{push_credential}"))).await;
        assert_eq!(status, 404);
        let (status, body) = call(server.get("/v1/PushNotifications/Credentials")).await;
        assert_eq!(status, 200);
        let ids: Vec<&Value> = body["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["id"])
            .collect();
        assert_eq!(ids, [push_credential], "{body}");

        // A Push-face row (even one with a CR-shaped id) is not under the Chat face.
        let push_id = "CR0123456789abcdef0123456789abcdef";
        let options = AnyConnectOptions::from_str(&server.db.url).unwrap();
        let mut conn = AnyConnection::connect_with(&options).await.unwrap();
        sqlx::query(
            "INSERT INTO credentials (id, account_sid, face, credential_type, created_at, updated_at) \
             VALUES ($1, $2, 'push', 'APN', $3, $3)",
        )
        .bind(push_id)
        .bind(&server.auth.0)
        .bind(herald_core::time::now_ms())
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let listed = list_all(&server).await;
        assert_eq!(listed.len(), 1, "{}", server.name());
        assert_eq!(listed[0]["sid"], chat_sid);
        let path = format!("/v2/Credentials/{push_id}");
        let (status, _) = call(server.get(&path)).await;
        assert_eq!(status, 404);
        let (status, _) = post_form(&server, &path, &[("FriendlyName", "x")]).await;
        assert_eq!(status, 404);
        let (status, _) = call(server.delete(&path)).await;
        assert_eq!(status, 404);
    }
}
