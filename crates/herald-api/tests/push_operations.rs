//! Operations and push-notification records over real sockets, on SQLite and PostgreSQL: fetch,
//! lists with filters and pages, Errors, Cancel, tenancy. Notifications are made the way the
//! delivery engine makes them, through the store's engine API (plan, claim, outcomes).

mod common;

use common::{Auth, TestServer, assert_push_error, call, fixture};
use herald_core::credential_content::{PushCredentialType, validate_push_content};
use herald_core::ids::{self, new_type_id};
use herald_core::time::now_ms;
use herald_core::{Provider, Tags};
use herald_store::credentials::NewCredential;
use herald_store::delivery::{
    NewNotification, NotificationError, OutcomeKind, OutcomeWrite, PlanBatch,
};
use herald_store::{CredentialStore, DeliveryStore};
use reqwest::Method;
use serde_json::{Value, json};

const SEND: &str = "/v1/PushNotifications";
const OPS: &str = "/v1/PushNotifications/Operations";

async fn credential_as(server: &TestServer, auth: &Auth, kind: PushCredentialType) -> String {
    let content = match kind {
        PushCredentialType::Fcm => fixture("fcm-content.json"),
        _ => fixture("apn-token-content.json"),
    };
    server
        .store
        .create_credential(
            &auth.0,
            NewCredential {
                credential_type: kind,
                app_name: herald_core::AppName::parse("shop").unwrap(),
                is_default: None,
                tags: Tags::default(),
                content: validate_push_content(kind, &content).unwrap(),
            },
        )
        .await
        .unwrap()
        .id
}

/// Sends `body` as `auth`; returns the operation ID.
async fn send_as(server: &TestServer, auth: &Auth, body: &Value) -> String {
    let (status, answer) = call(server.req_as(Method::POST, SEND, auth).json(body)).await;
    assert_eq!(status, 202, "{answer}");
    answer["operationId"].as_str().unwrap().to_owned()
}

fn body(tags: Value) -> Value {
    json!({
        "to": [
            {"token": "apns-1", "provider": "APN"},
            {"token": "fcm-1", "provider": "FCM"},
            {"userId": new_type_id(ids::USER)}
        ],
        "content": {"body": "Hello"},
        "priority": "LOW",
        "tags": tags
    })
}

/// Plans operation `id` as the engine would: `notifications` rows, the rest unaddressable.
async fn plan(server: &TestServer, id: &str, notifications: Vec<NewNotification>, recipients: i64) {
    let tasks = server
        .store
        .claim_operations_to_plan(now_ms(), 60_000, 100)
        .await
        .unwrap();
    let task = tasks
        .into_iter()
        .find(|t| t.operation_id == id)
        .expect("the operation is claimable for planning");
    let request: Value = serde_json::from_str(&task.request).unwrap();
    let tags = Tags::from_json(&request["tags"]).unwrap_or_default();
    let planned = notifications.len() as i64;
    let ok = server
        .store
        .write_plan_batch(&PlanBatch {
            operation_id: id.to_owned(),
            account_sid: task.account_sid.clone(),
            owner: task.owner.clone(),
            planned_before: task.planned,
            planned_after: recipients,
            notifications,
            unaddressable: recipients - planned,
            done: true,
            lease_until: now_ms() + 60_000,
            priority: request["priority"].as_str().unwrap_or("HIGH").to_owned(),
            tags,
            scheduled_until: None,
            expires_at: task.expires_at,
            claim: false,
        })
        .await
        .unwrap()
        .is_some();
    assert!(ok);
}

fn device(
    index: i64,
    provider: Provider,
    token: &str,
    credential: &str,
    user: Option<&str>,
) -> NewNotification {
    NewNotification {
        recipient_index: index,
        provider,
        token: token.into(),
        credential_id: credential.into(),
        app_name: Some("shop".into()),
        user_id: user.map(str::to_owned),
    }
}

struct Fixture {
    apn: String,
    fcm: String,
    user: String,
    /// Planned, one notification SENT (APN), one FAILED (FCM), one QUEUED (the user's APN).
    delivered: String,
    /// Not planned yet.
    waiting: String,
}

async fn fixture_operations(server: &TestServer) -> Fixture {
    let auth = server.auth.clone();
    let apn = credential_as(server, &auth, PushCredentialType::Apn).await;
    let fcm = credential_as(server, &auth, PushCredentialType::Fcm).await;
    let user = new_type_id(ids::USER);
    let delivered = send_as(
        server,
        &auth,
        &body(json!({"campaign": "spring", "env": "prod"})),
    )
    .await;
    plan(
        server,
        &delivered,
        vec![
            device(0, Provider::Apn, "apns-1", &apn, None),
            device(1, Provider::Fcm, "fcm-1", &fcm, None),
        ],
        3,
    )
    .await;
    // Claim both and record a success and a failure.
    let claim = server
        .store
        .claim_notifications(now_ms(), 60_000, 100)
        .await
        .unwrap();
    assert_eq!(claim.notifications.len(), 2);
    let outcomes: Vec<OutcomeWrite> = claim
        .notifications
        .iter()
        .map(|n| OutcomeWrite {
            id: n.id.clone(),
            operation_id: n.operation_id.clone(),
            kind: if n.provider == Provider::Apn {
                OutcomeKind::Sent
            } else {
                OutcomeKind::Failed(NotificationError {
                    code: "dead-token".into(),
                    message: "the device token is no longer valid".into(),
                    provider_status: Some(404),
                    provider_reason: Some("UNREGISTERED".into()),
                })
            },
        })
        .collect();
    server
        .store
        .record_outcomes(&claim.token, &outcomes)
        .await
        .unwrap();
    // A second operation whose user recipient resolves to one APN device, left QUEUED.
    let second = send_as(server, &auth, &body(json!({"campaign": "autumn"}))).await;
    let waiting = send_as(server, &auth, &body(json!({}))).await;
    plan(
        server,
        &second,
        vec![device(2, Provider::Apn, "user-apns", &apn, Some(&user))],
        3,
    )
    .await;
    Fixture {
        apn,
        fcm,
        user,
        delivered,
        waiting,
    }
}

fn ids_of(answer: &Value, key: &str) -> Vec<String> {
    answer[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {answer}"))
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn operation_records_and_stats() {
    for server in TestServer::all().await {
        let f = fixture_operations(&server).await;
        let (status, op) = call(server.get(&format!("{OPS}/{}", f.delivered))).await;
        assert_eq!(status, 200, "{op}");
        assert_eq!(op["id"], f.delivered.as_str());
        assert_eq!(op["status"], "COMPLETED", "{op}");
        assert_eq!(
            op["stats"],
            json!({"total": 3, "recipients": 3, "unaddressable": 1, "scheduled": 0,
                   "queued": 0, "sent": 1, "failed": 1, "canceled": 0})
        );
        assert!(op["completedAt"].as_str().unwrap().ends_with('Z'));
        assert!(op["createdAt"].as_str().unwrap().ends_with('Z'));

        let (status, waiting) = call(server.get(&format!("{OPS}/{}", f.waiting))).await;
        assert_eq!(status, 200);
        assert!(waiting.get("completedAt").is_none(), "{waiting}");
        assert_eq!(waiting["stats"]["recipients"], 3);

        // Malformed and unknown IDs are 404.
        for id in [
            "nope".to_owned(),
            new_type_id(ids::OPERATION),
            new_type_id(ids::USER),
        ] {
            let (status, answer) = call(server.get(&format!("{OPS}/{id}"))).await;
            assert_push_error(status, &answer, 404, 20404, None);
        }
    }
}

#[tokio::test]
async fn operation_list_filters_and_pages() {
    for server in TestServer::all().await {
        let f = fixture_operations(&server).await;
        let (status, all) = call(server.get(OPS)).await;
        assert_eq!(status, 200, "{all}");
        let all_ids = ids_of(&all, "operations");
        assert_eq!(all_ids.len(), 3);
        assert_eq!(all_ids[0], f.waiting, "newest first");
        assert_eq!(all["pagination"]["next"], Value::Null);

        let (_, completed) = call(server.get(&format!("{OPS}?status=COMPLETED"))).await;
        assert_eq!(ids_of(&completed, "operations"), vec![f.delivered.clone()]);
        let (_, none) = call(server.get(&format!("{OPS}?startDate=2999-01-01"))).await;
        assert!(ids_of(&none, "operations").is_empty());
        let (_, every) = call(server.get(&format!(
            "{OPS}?startDate=2000-01-01&endDate=2999-12-31T00:00:00Z"
        )))
        .await;
        assert_eq!(ids_of(&every, "operations").len(), 3);

        // Pages of 2: the next token continues, `self` reads the same page again.
        let (_, first) = call(server.get(&format!("{OPS}?pageSize=2"))).await;
        assert_eq!(ids_of(&first, "operations"), all_ids[..2].to_vec());
        let next = first["pagination"]["next"].as_str().unwrap().to_owned();
        let (_, second) = call(server.get(&format!("{OPS}?pageSize=2&pageToken={next}"))).await;
        assert_eq!(ids_of(&second, "operations"), all_ids[2..].to_vec());
        assert_eq!(second["pagination"]["next"], Value::Null);
        let this = first["pagination"]["self"].as_str().unwrap();
        let (_, again) = call(server.get(&format!("{OPS}?pageSize=2&pageToken={this}"))).await;
        assert_eq!(ids_of(&again, "operations"), all_ids[..2].to_vec());
        // A token is bound to its filters.
        let (status, answer) = call(server.get(&format!(
            "{OPS}?pageSize=2&status=COMPLETED&pageToken={next}"
        )))
        .await;
        assert_push_error(status, &answer, 400, 21481, Some("pageToken"));

        for (query, context) in [
            ("status=DONE", "status"),
            ("startDate=yesterday", "startDate"),
            ("endDate=2026-13-01", "endDate"),
            ("pageSize=0", "pageSize"),
            ("colour=red", "colour"),
        ] {
            let (status, answer) = call(server.get(&format!("{OPS}?{query}"))).await;
            assert_push_error(status, &answer, 400, 20001, Some(context));
        }
    }
}

#[tokio::test]
async fn notification_records_never_show_content() {
    for server in TestServer::all().await {
        let f = fixture_operations(&server).await;
        let (status, list) = call(server.get(&format!("{SEND}?operationId={}", f.delivered))).await;
        assert_eq!(status, 200, "{list}");
        let items = list["notifications"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        let sent = items.iter().find(|n| n["status"] == "SENT").unwrap();
        let failed = items.iter().find(|n| n["status"] == "FAILED").unwrap();

        let (status, fetched) =
            call(server.get(&format!("{SEND}/{}", sent["id"].as_str().unwrap()))).await;
        assert_eq!(status, 200);
        assert_eq!(&fetched, sent);
        assert!(ids::parse_type_id(ids::PUSH_NOTIFICATION, sent["id"].as_str().unwrap()).is_some());
        assert_eq!(sent["to"], json!({"provider": "APN", "token": "apns-1"}));
        assert_eq!(sent["from"], json!({"apn": f.apn}));
        assert_eq!(sent["priority"], "LOW");
        assert_eq!(sent["tags"], json!({"campaign": "spring", "env": "prod"}));
        assert_eq!(sent["attempts"], 1);
        assert!(sent["sentAt"].as_str().unwrap().ends_with('Z'));
        assert!(
            sent.get("error").is_none() && sent.get("userId").is_none(),
            "{sent}"
        );
        assert_eq!(
            sent["related"],
            json!([{"name": "operation", "id": f.delivered,
                    "uri": server.url(&format!("{OPS}/{}", f.delivered))}])
        );
        assert!(sent.get("content").is_none() && !sent.to_string().contains("Hello"));

        assert_eq!(failed["from"], json!({"fcm": f.fcm}));
        assert_eq!(failed["error"]["code"], "dead-token");
        assert_eq!(failed["error"]["providerStatus"], 404);
        assert_eq!(failed["error"]["providerReason"], "UNREGISTERED");
        assert!(failed.get("sentAt").is_none());

        for id in [
            "nope".to_owned(),
            new_type_id(ids::PUSH_NOTIFICATION),
            f.delivered.clone(),
        ] {
            let (status, answer) = call(server.get(&format!("{SEND}/{id}"))).await;
            assert_push_error(status, &answer, 404, 20404, None);
        }
    }
}

#[tokio::test]
async fn notification_list_filters() {
    for server in TestServer::all().await {
        let f = fixture_operations(&server).await;
        let count = |query: String| {
            let request = server.get(&format!("{SEND}?{query}"));
            async move {
                let (status, answer) = call(request).await;
                assert_eq!(status, 200, "{query}: {answer}");
                answer["notifications"].as_array().unwrap().len()
            }
        };
        assert_eq!(count(String::new()).await, 3);
        assert_eq!(count("status=FAILED".into()).await, 1);
        assert_eq!(count("status=QUEUED".into()).await, 1);
        assert_eq!(count("provider=APN".into()).await, 2);
        assert_eq!(count("provider=FCM&status=FAILED".into()).await, 1);
        assert_eq!(count(format!("user={}", f.user)).await, 1);
        assert_eq!(count(format!("user={}", new_type_id(ids::USER))).await, 0);
        assert_eq!(count("tags=campaign:spring;".into()).await, 2);
        assert_eq!(count("tags=campaign:spring;env:prod".into()).await, 2);
        assert_eq!(count("tags=campaign:autumn;".into()).await, 1);
        assert_eq!(count("tags=campaign:spring;env:dev;".into()).await, 0);
        assert_eq!(count(format!("operationId={}", f.waiting)).await, 0);
        assert_eq!(count("startDate=2999-01-01T00:00:00Z".into()).await, 0);
        assert_eq!(count("endDate=2000-01-01".into()).await, 0);

        // Pages of one, bound to the filters.
        let (_, first) = call(server.get(&format!("{SEND}?pageSize=1&provider=APN"))).await;
        let next = first["pagination"]["next"].as_str().unwrap().to_owned();
        let (_, second) =
            call(server.get(&format!("{SEND}?pageSize=1&provider=APN&pageToken={next}"))).await;
        assert_eq!(second["notifications"].as_array().unwrap().len(), 1);
        assert_ne!(
            second["notifications"][0]["id"],
            first["notifications"][0]["id"]
        );
        let (status, answer) =
            call(server.get(&format!("{SEND}?pageSize=1&provider=FCM&pageToken={next}"))).await;
        assert_push_error(status, &answer, 400, 21481, Some("pageToken"));

        for (query, context) in [
            ("status=DELIVERED", "status"),
            ("provider=WEB", "provider"),
            ("user=bob", "user"),
            ("operationId=op-1", "operationId"),
            ("tags=campaign", "tags"),
            ("tags=:x", "tags"),
            ("startDate=soon", "startDate"),
            ("endDate=2026-02-30x", "endDate"),
            ("statu=SENT", "statu"),
        ] {
            let (status, answer) = call(server.get(&format!("{SEND}?{query}"))).await;
            assert_push_error(status, &answer, 400, 20001, Some(context));
        }
    }
}

#[tokio::test]
async fn operation_errors_lists_the_failed_notifications() {
    for server in TestServer::all().await {
        let f = fixture_operations(&server).await;
        let (status, errors) = call(server.get(&format!("{OPS}/{}/Errors", f.delivered))).await;
        assert_eq!(status, 200, "{errors}");
        let items = errors["notifications"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["status"], "FAILED");
        assert_eq!(items[0]["error"]["code"], "dead-token");
        let (_, none) = call(server.get(&format!("{OPS}/{}/Errors", f.waiting))).await;
        assert!(none["notifications"].as_array().unwrap().is_empty());
        // A page token of one operation's errors does not work for another's.
        let (_, paged) =
            call(server.get(&format!("{OPS}/{}/Errors?pageSize=1", f.delivered))).await;
        let this = paged["pagination"]["self"].as_str().unwrap();
        let (status, answer) = call(server.get(&format!(
            "{OPS}/{}/Errors?pageSize=1&pageToken={this}",
            f.waiting
        )))
        .await;
        assert_push_error(status, &answer, 400, 21481, Some("pageToken"));
        let (status, answer) =
            call(server.get(&format!("{OPS}/{}/Errors", new_type_id(ids::OPERATION)))).await;
        assert_push_error(status, &answer, 404, 20404, None);
    }
}

#[tokio::test]
async fn cancel_is_idempotent_and_stats_add_up() {
    for server in TestServer::all().await {
        let f = fixture_operations(&server).await;
        for _ in 0..2 {
            let response = server
                .req(Method::POST, &format!("{OPS}/{}/Cancel", f.waiting))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["operationId"], f.waiting.as_str());
            assert_eq!(answer["operationLocation"], location);
            assert_eq!(location, server.url(&format!("{OPS}/{}", f.waiting)));
        }
        let (_, op) = call(server.get(&format!("{OPS}/{}", f.waiting))).await;
        assert_eq!(op["status"], "CANCELED", "{op}");
        let stats = &op["stats"];
        let sum: i64 = [
            "unaddressable",
            "scheduled",
            "queued",
            "sent",
            "failed",
            "canceled",
        ]
        .iter()
        .map(|k| stats[*k].as_i64().unwrap())
        .sum();
        assert_eq!(stats["total"].as_i64().unwrap(), sum, "{op}");
        assert_eq!(stats["canceled"], 3, "{op}");

        // A finished operation stays as it is.
        let (status, _) =
            call(server.req(Method::POST, &format!("{OPS}/{}/Cancel", f.delivered))).await;
        assert_eq!(status, 202);
        let (_, done) = call(server.get(&format!("{OPS}/{}", f.delivered))).await;
        assert_eq!(done["status"], "COMPLETED");

        let (status, answer) = call(server.req(
            Method::POST,
            &format!("{OPS}/{}/Cancel", new_type_id(ids::OPERATION)),
        ))
        .await;
        assert_push_error(status, &answer, 404, 20404, None);
        let (status, answer) = call(server.req(Method::POST, &format!("{OPS}/nope/Cancel"))).await;
        assert_push_error(status, &answer, 404, 20404, None);
    }
}

#[tokio::test]
async fn another_accounts_records_are_404() {
    for server in TestServer::all().await {
        let f = fixture_operations(&server).await;
        let other = server.new_account().await;
        let (_, list) = call(server.get(SEND)).await;
        let notification = list["notifications"][0]["id"].as_str().unwrap().to_owned();
        for (method, path) in [
            (Method::GET, format!("{OPS}/{}", f.delivered)),
            (Method::GET, format!("{OPS}/{}/Errors", f.delivered)),
            (Method::POST, format!("{OPS}/{}/Cancel", f.waiting)),
            (Method::GET, format!("{SEND}/{notification}")),
        ] {
            let (status, answer) = call(server.req_as(method.clone(), &path, &other)).await;
            assert_push_error(status, &answer, 404, 20404, None);
        }
        let (_, theirs) = call(server.req_as(Method::GET, OPS, &other)).await;
        assert!(theirs["operations"].as_array().unwrap().is_empty());
        let (_, theirs) = call(server.req_as(Method::GET, SEND, &other)).await;
        assert!(theirs["notifications"].as_array().unwrap().is_empty());
        // Their cancel attempt changed nothing.
        let (_, op) = call(server.get(&format!("{OPS}/{}", f.waiting))).await;
        assert_ne!(op["status"], "CANCELED");
    }
}

// ----- every Push list endpoint's query parameters, through one shared check -----

/// A Push list endpoint: its path and a query it needs (device registrations need `userId`), its
/// list key, its filters (what an unknown-parameter answer lists as allowed), and whether it takes
/// `startDate` / `endDate`.
struct ListEndpoint {
    path: String,
    needs: String,
    key: &'static str,
    filters: &'static [&'static str],
    dated: bool,
}

impl ListEndpoint {
    fn url(&self, query: &str) -> String {
        let joined = [self.needs.as_str(), query]
            .into_iter()
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join("&");
        format!("{}?{joined}", self.path)
    }
}

/// Every Push list endpoint, each with at least one item in it.
async fn list_endpoints(server: &TestServer) -> Vec<ListEndpoint> {
    let f = fixture_operations(server).await;
    let (status, answer) = call(server.post_json(
        "/v1/PushNotifications/DeviceRegistrations",
        &json!({"appName": "shop", "token": "listed-token", "provider": "APN"}),
    ))
    .await;
    assert_eq!(status, 202, "{answer}");
    let registration = answer["resourceId"].as_str().unwrap();
    let (_, registration) = call(server.get(&format!(
        "/v1/PushNotifications/DeviceRegistrations/{registration}"
    )))
    .await;
    let user = registration["userId"].as_str().unwrap();
    let endpoint = |path: &str, needs: String, key, filters, dated| ListEndpoint {
        path: format!("/v1/PushNotifications{path}"),
        needs,
        key,
        filters,
        dated,
    };
    vec![
        endpoint(
            "/Credentials",
            String::new(),
            "credentials",
            &[
                "appName",
                "credentialType",
                "isDefault",
                "startDate",
                "endDate",
            ],
            true,
        ),
        endpoint(
            "/Apps",
            String::new(),
            "apps",
            &["isDefault", "startDate", "endDate"],
            true,
        ),
        endpoint(
            "/DeviceRegistrations",
            format!("userId={user}"),
            "deviceRegistrations",
            &["userId", "appName"],
            false,
        ),
        endpoint("/Users", String::new(), "users", &[], false),
        endpoint(
            "",
            String::new(),
            "notifications",
            &[
                "operationId",
                "status",
                "user",
                "provider",
                "tags",
                "startDate",
                "endDate",
            ],
            true,
        ),
        endpoint(
            "/Operations",
            String::new(),
            "operations",
            &["status", "startDate", "endDate"],
            true,
        ),
        endpoint(
            &format!("/Operations/{}/Errors", f.delivered),
            String::new(),
            "notifications",
            &[],
            false,
        ),
    ]
}

#[tokio::test]
async fn every_list_refuses_unknown_query_parameters() {
    for server in TestServer::all().await {
        for list in list_endpoints(&server).await {
            let (status, answer) = call(server.get(&list.url("pageSize=5"))).await;
            assert_eq!(status, 200, "{}: {answer}", list.path);
            assert!(!answer[list.key].as_array().unwrap().is_empty(), "{answer}");

            // A typo of a filter, and a parameter no list has: one entry each, naming it and
            // listing what is allowed.
            let (status, answer) =
                call(server.get(&list.url("operationID=x&utm_source=mail&pageSize=5"))).await;
            let allowed = list
                .filters
                .iter()
                .chain(&["pageSize", "pageToken"])
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            for name in ["operationID", "utm_source"] {
                assert_push_error(status, &answer, 400, 20001, Some(name));
                let entry = answer["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["context"] == name)
                    .unwrap();
                let message = entry["message"].as_str().unwrap();
                assert!(
                    message.contains(&format!("allowed: {allowed}")),
                    "{}: {message}",
                    list.path
                );
            }
            assert_eq!(answer["errors"].as_array().unwrap().len(), 2, "{answer}");
            // Names are case-sensitive, also on the preview host.
            let preview = list.url("PageSize=5").replacen("/v1/", "/preview/", 1);
            let (status, answer) = call(server.get(&preview)).await;
            assert_push_error(status, &answer, 400, 20001, Some("PageSize"));
        }
    }
}

#[tokio::test]
async fn every_dated_list_reads_start_and_end_date_alike() {
    use herald_core::time::{format_rfc3339, parse_rfc3339};
    const DAY: i64 = 86_400_000;
    for server in TestServer::all().await {
        for list in list_endpoints(&server)
            .await
            .into_iter()
            .filter(|l| l.dated)
        {
            let (_, all) = call(server.get(&list.url(""))).await;
            let newest = &all[list.key][0];
            // Apps have no ID: their name is the key.
            let id_of = |item: &Value| {
                item["id"]
                    .as_str()
                    .or(item["name"].as_str())
                    .map(str::to_owned)
            };
            let newest_id = id_of(newest).unwrap();
            let created = newest["createdAt"].as_str().unwrap();
            let at = parse_rfc3339(created).unwrap();
            let date = &created[..10];
            let listed = |query: String| {
                let request = server.get(&list.url(&query));
                let path = list.path.clone();
                async move {
                    let (status, answer) = call(request).await;
                    assert_eq!(status, 200, "{path}?{query}: {answer}");
                    answer[list.key]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(id_of)
                        .collect::<Vec<_>>()
                }
            };
            let includes = |query: String| {
                let listed = listed(query.clone());
                let newest_id = newest_id.clone();
                let path = list.path.clone();
                async move {
                    assert!(
                        listed.await.contains(&newest_id),
                        "{path}?{query} leaves out {newest_id}"
                    );
                }
            };
            let excludes = |query: String| {
                let listed = listed(query.clone());
                let newest_id = newest_id.clone();
                let path = list.path.clone();
                async move {
                    assert!(
                        !listed.await.contains(&newest_id),
                        "{path}?{query} lists {newest_id}"
                    );
                }
            };
            // The shown `createdAt` as `endDate` includes its whole second; both bounds inclusive.
            includes(format!("endDate={created}")).await;
            includes(format!("startDate={created}")).await;
            includes(format!("startDate={created}&endDate={created}")).await;
            excludes(format!("endDate={}", format_rfc3339(at - 1000))).await;
            excludes(format!("startDate={}", format_rfc3339(at + 1000))).await;
            // Other offsets, and plain dates (the whole day, UTC).
            includes(format!(
                "endDate={}",
                format_rfc3339(at).replace('Z', "%2B00:00")
            ))
            .await;
            includes(format!("startDate={date}&endDate={date}")).await;
            excludes(format!("startDate={}", &format_rfc3339(at + DAY)[..10])).await;
            excludes(format!("endDate={}", &format_rfc3339(at - DAY)[..10])).await;
            // Empty values are no filter.
            includes("startDate=&endDate=".into()).await;

            for (query, context) in [
                ("startDate=soon", "startDate"),
                ("endDate=2026-13-01", "endDate"),
                ("endDate=2026-01-01T25:00:00Z", "endDate"),
                ("startDate=2026-02-01&endDate=2026-01-01", "endDate"),
                (
                    "startDate=2026-02-01T00:00:01Z&endDate=2026-02-01T00:00:00Z",
                    "endDate",
                ),
            ] {
                let (status, answer) = call(server.get(&list.url(query))).await;
                assert_push_error(status, &answer, 400, 20001, Some(context));
            }
        }
    }
}

#[tokio::test]
async fn only_get_is_served_on_a_push_notification_path() {
    for server in TestServer::all().await {
        let _ = fixture_operations(&server).await;
        let (_, list) = call(server.get(SEND)).await;
        let id = list["notifications"][0]["id"].as_str().unwrap().to_owned();
        let (status, answer) = call(server.get(&format!("{SEND}/{id}"))).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["id"], id.as_str());

        // Any other method on a one-segment path is what it most likely is, a mistyped path:
        // the router's own 404, as for any unknown path (not 405).
        for (method, path) in [
            (Method::POST, format!("{SEND}/Credential")),
            (
                Method::POST,
                "/preview/PushNotifications/Credential".to_owned(),
            ),
            (Method::PATCH, format!("{SEND}/Credential")),
            (Method::PUT, format!("{SEND}/{id}")),
            (Method::DELETE, format!("{SEND}/{id}")),
        ] {
            let (status, answer) = call(server.req(method.clone(), &path).json(&json!({}))).await;
            assert_push_error(status, &answer, 404, 20404, None);
            assert_eq!(
                answer["errors"][0]["message"],
                format!("no resource at {path}"),
                "{method} {path}"
            );
        }
        // Known paths keep their 405 for the methods they do not serve.
        let (status, answer) = call(server.delete(OPS)).await;
        assert_push_error(status, &answer, 405, 20004, None);
        let (status, answer) = call(server.req(Method::PUT, SEND).json(&json!({}))).await;
        assert_push_error(status, &answer, 405, 20004, None);
    }
}
