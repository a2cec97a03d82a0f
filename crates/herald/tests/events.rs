//! Events end to end in the real binary: `herald serve` (SQLite, and PostgreSQL when
//! `HERALD_TEST_DATABASE_URL` is set) delivering through the sandbox, and a real HTTP receiver
//! (axum on a random loopback port) subscribed through the API. The receiver records what it
//! gets; the test checks every delivery's `X-Herald-Signature` (HMAC-SHA256 computed here with
//! ring, not with Herald's code) and CloudEvents attributes, and that the lifecycle of a send shows up:
//! `operation.processing`, `push-notification.failed` and `device.invalidated` for a dead token,
//! `operation.completed` with stats that add up, and `operation.scheduled` then
//! `operation.completed` (`CANCELED`) for a scheduled send that is canceled. No timed assertions:
//! every wait polls with a generous overall timeout.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use herald_sandbox::{RunningSandbox, SandboxOptions};
use herald_store::testing::TestDatabase;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_herald");
const SECRET: &str = "whsec_end-to-end-secret";
const PATIENCE: Duration = Duration::from_secs(120);

const SCHEDULED: &str = "com.twilio.comms-api.operation.scheduled";
const PROCESSING: &str = "com.twilio.comms-api.operation.processing";
const COMPLETED: &str = "com.twilio.comms-api.operation.completed";
const FAILED: &str = "com.herald.push-notification.failed";
const INVALIDATED: &str = "com.herald.device.invalidated";

/// HMAC-SHA256 as hex, by ring (an implementation independent of Herald's signing code).
fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, message)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---- the receiver ------------------------------------------------------------------------------

/// One request the receiver got, as received.
#[derive(Debug, Clone)]
struct Delivery {
    body: String,
    signature: String,
    content_type: String,
    attempt: String,
}

#[derive(Default)]
struct Received(Mutex<Vec<Delivery>>);

async fn receive(
    State(received): State<Arc<Received>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    received.0.lock().unwrap().push(Delivery {
        body: String::from_utf8_lossy(&body).into_owned(),
        signature: header("x-herald-signature"),
        content_type: header("content-type"),
        attempt: header("x-herald-delivery-attempt"),
    });
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> (String, Arc<Received>) {
    let received = Arc::new(Received::default());
    let app = Router::new()
        .route("/hooks", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, received)
}

impl Received {
    /// Every delivery checked (signature, headers, CloudEvents attributes), deduplicated on
    /// `id` (delivery is at least once): the events.
    fn events(&self, account_sid: &str) -> Vec<Value> {
        let deliveries = self.0.lock().unwrap().clone();
        let mut by_id: HashMap<String, Value> = HashMap::new();
        for d in deliveries {
            assert_eq!(
                d.signature,
                format!(
                    "sha256={}",
                    hmac_sha256_hex(SECRET.as_bytes(), d.body.as_bytes())
                ),
                "signature of {}",
                d.body
            );
            assert_eq!(
                d.content_type,
                "application/cloudevents+json; charset=utf-8"
            );
            assert!(d.attempt.parse::<u32>().unwrap() >= 1, "{d:?}");
            let event: Value = serde_json::from_str(&d.body).expect("JSON body");
            assert_eq!(event["specversion"], "1.0", "{event}");
            assert_eq!(event["source"], "/v1/PushNotifications", "{event}");
            assert_eq!(event["datacontenttype"], "application/json", "{event}");
            assert_eq!(event["accountsid"], account_sid, "{event}");
            let time = event["time"].as_str().expect("time");
            assert!(
                herald_core::time::parse_rfc3339(time).is_some() && time.ends_with('Z'),
                "{event}"
            );
            let id = event["id"].as_str().expect("id").to_owned();
            assert_eq!(id.len(), 36, "a UUID: {event}");
            let subject_key = match event["type"].as_str().expect("type") {
                SCHEDULED | PROCESSING | COMPLETED => "operationId",
                FAILED => "pushNotificationId",
                INVALIDATED => "deviceRegistrationId",
                other => panic!("unexpected type {other}: {event}"),
            };
            assert_eq!(event["subject"], event["data"][subject_key], "{event}");
            if let Some(first) = by_id.get(&id) {
                assert_eq!(first, &event, "a retry sends the same event");
            }
            by_id.insert(id, event);
        }
        by_id.into_values().collect()
    }
}

fn of<'a>(events: &'a [Value], event_type: &str, key: &str, value: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == event_type && e["data"][key] == value)
        .collect()
}

fn stats_add_up(event: &Value) {
    let s = &event["data"]["stats"];
    let sum: i64 = [
        "unaddressable",
        "scheduled",
        "queued",
        "sent",
        "failed",
        "canceled",
    ]
    .iter()
    .map(|k| s[*k].as_i64().unwrap_or_else(|| panic!("{k} in {event}")))
    .sum();
    assert_eq!(s["total"].as_i64().unwrap(), sum, "{event}");
}

// ---- herald serve and the sandbox --------------------------------------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `herald serve` process (SIGKILLed on drop unless it was stopped).
struct Node {
    child: Child,
    base: String,
    data_dir: PathBuf,
    http: reqwest::Client,
}

impl Node {
    async fn start(data_dir: &Path, database_url: Option<&str>, env: &[(String, String)]) -> Node {
        let listen = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(data_dir.join("node.log")).unwrap();
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--event-poll-ms", "50", "--event-retry-base-ms", "100"])
            .env_remove("HERALD_DATABASE_URL")
            .env_remove("HERALD_MASTER_KEY")
            .env("HERALD_LISTEN", &listen)
            .env("HERALD_LOG", "info,sqlx=warn")
            .env("HERALD_DELIVERY_POLL_MS", "50")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if let Some(url) = database_url {
            command.env("HERALD_DATABASE_URL", url);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let node = Node {
            child: command.spawn().expect("herald starts"),
            base: format!("http://{listen}"),
            data_dir: data_dir.to_owned(),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = node.http.get(format!("{}/healthz", node.base)).send().await
                && r.status().is_success()
            {
                return node;
            }
            assert!(Instant::now() < deadline, "herald never became healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn account(&self) -> (String, String) {
        let text = std::fs::read_to_string(self.data_dir.join("bootstrap-account.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        (
            v["accountSid"].as_str().unwrap().to_owned(),
            v["authToken"].as_str().unwrap().to_owned(),
        )
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let (user, pass) = self.account();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(user, Some(pass));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// SIGTERM, and the exit status once it has shut down.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "herald did not shut down");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_sandbox(dir: &Path) -> (RunningSandbox, Vec<(String, String)>, reqwest::Client) {
    let sandbox = RunningSandbox::start(SandboxOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        credentials_dir: dir.join("sandbox"),
        fail_rate: 0.0,
        latency_ms: 0,
        record: true,
    })
    .await
    .unwrap();
    let env_text = std::fs::read_to_string(sandbox.credentials_dir().join("herald.env")).unwrap();
    let env = env_text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect();
    let ca = std::fs::read(sandbox.credentials_dir().join("ca.pem")).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    (sandbox, env, http)
}

/// Polls the receiver until `done` holds for the events so far.
async fn wait_for(
    received: &Received,
    account_sid: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let events = received.events(account_sid);
        if done(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "waited in vain for {what}; events so far: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lifecycle_events(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, sandbox_env, sandbox_http) = start_sandbox(dir.path()).await;
    let (hook_url, received) = start_receiver().await;
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let mut node = Node::start(&data_dir, database_url, &sandbox_env).await;
    let (account_sid, _) = node.account();

    // App `shop` with an APNs credential, the subscription, and a registered device whose
    // token the sandbox calls dead (410 Unregistered).
    let apn: Value = serde_json::from_slice(
        &std::fs::read(sandbox.credentials_dir().join("apns-token.json")).unwrap(),
    )
    .unwrap();
    let (status, body) = node
        .call(
            reqwest::Method::POST,
            "/v1/PushNotifications/Credentials",
            Some(json!({"credentialType": "APN", "appName": "shop", "content": apn})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = node
        .call(
            reqwest::Method::PUT,
            "/v1/PushNotifications/EventSubscription",
            Some(json!({"url": hook_url, "secret": SECRET})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let live = "events-live-token-0001";
    let dead = "events-dead-token-0002";
    let (status, body) = node
        .call(
            reqwest::Method::POST,
            "/v1/PushNotifications/DeviceRegistrations",
            Some(json!({"appName": "shop", "token": dead, "provider": "APN"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let registration_id = body["resourceId"].as_str().unwrap().to_owned();
    let (status, registration) = node
        .call(
            reqwest::Method::GET,
            &format!("/v1/PushNotifications/DeviceRegistrations/{registration_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{registration}");
    let user_id = registration["userId"].as_str().unwrap().to_owned();
    let fault = sandbox_http
        .post(format!("{}/_sandbox/faults", sandbox.base_url()))
        .json(&json!({"token": dead, "status": 410, "reason": "Unregistered"}))
        .send()
        .await
        .unwrap();
    assert_eq!(fault.status().as_u16(), 201);

    // A send to a live and a dead token.
    let (status, body) = node
        .call(
            reqwest::Method::POST,
            "/v1/PushNotifications",
            Some(json!({
                "from": {"appName": "shop"},
                "to": [{"token": live, "provider": "APN"}, {"token": dead, "provider": "APN"}],
                "content": {"body": "events"},
            })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let operation = body["operationId"].as_str().unwrap().to_owned();
    let events = wait_for(
        &received,
        &account_sid,
        "the send's processing, failed, invalidated and completed events",
        |events| {
            !of(events, PROCESSING, "operationId", &operation).is_empty()
                && !of(events, COMPLETED, "operationId", &operation).is_empty()
                && !of(events, FAILED, "operationId", &operation).is_empty()
                && !of(events, INVALIDATED, "token", dead).is_empty()
        },
    )
    .await;

    let processing = of(&events, PROCESSING, "operationId", &operation);
    assert_eq!(processing.len(), 1, "{processing:#?}");
    assert_eq!(processing[0]["data"]["status"], "PROCESSING");
    stats_add_up(processing[0]);

    let completed = of(&events, COMPLETED, "operationId", &operation);
    assert_eq!(completed.len(), 1, "{completed:#?}");
    let done = completed[0];
    assert_eq!(done["data"]["status"], "COMPLETED", "{done}");
    stats_add_up(done);
    let stats = &done["data"]["stats"];
    assert_eq!(
        (
            &stats["total"],
            &stats["recipients"],
            &stats["sent"],
            &stats["failed"]
        ),
        (&json!(2), &json!(2), &json!(1), &json!(1)),
        "{done}"
    );
    let (status, op) = node
        .call(
            reqwest::Method::GET,
            &format!("/v1/PushNotifications/Operations/{operation}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        op["stats"], done["data"]["stats"],
        "the event shows what GET shows"
    );

    let failed = of(&events, FAILED, "operationId", &operation);
    assert_eq!(failed.len(), 1, "only the dead token failed: {failed:#?}");
    let error = &failed[0]["data"]["error"];
    assert_eq!(error["code"], "dead-token", "{error}");
    assert_eq!(error["providerStatus"], 410, "{error}");
    assert_eq!(error["providerReason"], "Unregistered", "{error}");
    let notification_id = failed[0]["data"]["pushNotificationId"].as_str().unwrap();
    let (status, notification) = node
        .call(
            reqwest::Method::GET,
            &format!("/v1/PushNotifications/{notification_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{notification}");
    assert_eq!(notification["status"], "FAILED");
    assert_eq!(
        &notification["error"], error,
        "the event shows the stored error"
    );

    let invalidated = of(&events, INVALIDATED, "token", dead);
    assert_eq!(invalidated.len(), 1, "{invalidated:#?}");
    assert_eq!(
        invalidated[0]["data"],
        json!({
            "deviceRegistrationId": registration_id,
            "userId": user_id,
            "appName": "shop",
            "provider": "APN",
            "token": dead,
        })
    );

    // A scheduled send: operation.scheduled; canceled: operation.completed with CANCELED.
    let send_at = herald_core::time::format_rfc3339(herald_core::time::now_ms() + 3_600_000);
    let (status, body) = node
        .call(
            reqwest::Method::POST,
            "/v1/PushNotifications",
            Some(json!({
                "from": {"appName": "shop"},
                "to": [{"token": live, "provider": "APN"}],
                "content": {"body": "later"},
                "schedule": {"sendAt": send_at},
            })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let later = body["operationId"].as_str().unwrap().to_owned();
    let events = wait_for(&received, &account_sid, "operation.scheduled", |events| {
        !of(events, SCHEDULED, "operationId", &later).is_empty()
    })
    .await;
    let scheduled = of(&events, SCHEDULED, "operationId", &later);
    assert_eq!(scheduled.len(), 1, "{scheduled:#?}");
    assert_eq!(scheduled[0]["data"]["status"], "SCHEDULED");
    assert_eq!(scheduled[0]["data"]["stats"]["recipients"], 1);
    stats_add_up(scheduled[0]);
    let (status, body) = node
        .call(
            reqwest::Method::POST,
            &format!("/v1/PushNotifications/Operations/{later}/Cancel"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let events = wait_for(&received, &account_sid, "the cancel's event", |events| {
        !of(events, COMPLETED, "operationId", &later).is_empty()
    })
    .await;
    let canceled = of(&events, COMPLETED, "operationId", &later);
    assert_eq!(canceled.len(), 1, "{canceled:#?}");
    assert_eq!(canceled[0]["data"]["status"], "CANCELED");
    assert_eq!(canceled[0]["data"]["stats"]["canceled"], 1);
    stats_add_up(canceled[0]);
    assert!(
        of(&events, PROCESSING, "operationId", &later).is_empty(),
        "a canceled scheduled send never processed"
    );

    // SIGTERM: the API, the engine and the event sender stop cleanly.
    let exit = node.terminate().await;
    assert!(exit.success(), "herald exited with {exit}");
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_reach_a_subscribed_receiver_sqlite() {
    lifecycle_events(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_reach_a_subscribed_receiver_postgres() {
    let Some(db) = TestDatabase::postgres().await else {
        eprintln!("HERALD_TEST_DATABASE_URL not set: PostgreSQL events test skipped");
        return;
    };
    lifecycle_events(Some(&db.url)).await;
    drop(db);
}
