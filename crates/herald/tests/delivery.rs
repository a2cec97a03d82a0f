//! The delivery engine in the real binary: kill -9 at random points during a large send and
//! restart (SQLite and PostgreSQL), and two nodes sharing one PostgreSQL database.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_sandbox::{RunningSandbox, SandboxOptions};
use herald_store::testing::TestDatabase;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_herald");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn random_below(n: u64) -> u64 {
    RandomState::new().build_hasher().finish() % n.max(1)
}

/// A `herald serve` process (SIGKILLed on drop).
struct Node {
    child: Child,
    base: String,
}

impl Node {
    fn start(
        data_dir: &Path,
        database_url: Option<&str>,
        sandbox_env: &[(String, String)],
        log: &str,
    ) -> Node {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join(log))
            .unwrap();
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .env_remove("HERALD_DATABASE_URL")
            .env_remove("HERALD_MASTER_KEY")
            .env("HERALD_LISTEN", &listen)
            .env("HERALD_LOG", "info,sqlx=warn")
            .env("HERALD_DELIVERY_LEASE_MS", "2000")
            .env("HERALD_DELIVERY_POLL_MS", "50")
            .env("HERALD_DELIVERY_BATCH_SIZE", "100")
            .env("HERALD_DELIVERY_WORKERS", "2")
            .env("HERALD_RATE_LIMIT_PER_SECOND", "1000")
            .env("HERALD_RATE_LIMIT_BURST", "1000")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        if let Some(url) = database_url {
            command.env("HERALD_DATABASE_URL", url);
        }
        for (key, value) in sandbox_env {
            command.env(key, value);
        }
        Node {
            child: command.spawn().expect("herald starts"),
            base: format!("http://{listen}"),
        }
    }

    /// kill -9
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Setup {
    sandbox: RunningSandbox,
    sandbox_env: Vec<(String, String)>,
    sandbox_http: reqwest::Client,
    http: reqwest::Client,
    data_dir: PathBuf,
}

impl Setup {
    async fn new(dir: &Path, latency_ms: u64) -> Setup {
        let sandbox = RunningSandbox::start(SandboxOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            credentials_dir: dir.join("sandbox"),
            fail_rate: 0.0,
            latency_ms,
            record: true,
        })
        .await
        .unwrap();
        let env_text =
            std::fs::read_to_string(sandbox.credentials_dir().join("herald.env")).unwrap();
        let sandbox_env = env_text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect();
        let ca = std::fs::read(sandbox.credentials_dir().join("ca.pem")).unwrap();
        let sandbox_http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        Setup {
            sandbox,
            sandbox_env,
            sandbox_http,
            http: reqwest::Client::new(),
            data_dir,
        }
    }

    async fn wait_healthy(&self, node: &Node) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", node.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never became healthy",
                node.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn auth(&self) -> (String, String) {
        let text = std::fs::read_to_string(self.data_dir.join("bootstrap-account.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        (
            v["accountSid"].as_str().unwrap().to_owned(),
            v["authToken"].as_str().unwrap().to_owned(),
        )
    }

    async fn call(
        &self,
        node: &Node,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (user, pass) = self.auth();
        let mut request = self
            .http
            .request(method, format!("{}{path}", node.base))
            .basic_auth(user, Some(pass));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// APN and FCM credentials of app `shop`.
    async fn credentials(&self, node: &Node) {
        let dir = self.sandbox.credentials_dir();
        let apn: Value =
            serde_json::from_slice(&std::fs::read(dir.join("apns-token.json")).unwrap()).unwrap();
        let fcm_json = std::fs::read(dir.join("fcm-service-account.json")).unwrap();
        use base64::Engine as _;
        let fcm = json!({"privateKey": base64::engine::general_purpose::STANDARD.encode(fcm_json)});
        for (kind, content) in [("APN", apn), ("FCM", fcm)] {
            let (status, body) = self
                .call(
                    node,
                    reqwest::Method::POST,
                    "/v1/PushNotifications/Credentials",
                    Some(json!({"credentialType": kind, "appName": "shop", "content": content})),
                )
                .await;
            assert_eq!(status, 202, "{body}");
        }
    }

    /// Sends to `tokens` (alternating APN / FCM) in operations of `per_operation` recipients.
    async fn send(&self, node: &Node, tokens: &[String], per_operation: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for chunk in tokens.chunks(per_operation) {
            let to: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, t)| json!({"token": t, "provider": if i % 2 == 0 { "APN" } else { "FCM" }}))
                .collect();
            let (status, body) = self
                .call(
                    node,
                    reqwest::Method::POST,
                    "/v1/PushNotifications",
                    Some(json!({"from": {"appName": "shop"}, "to": to, "content": {"body": "durable"}})),
                )
                .await;
            assert_eq!(status, 202, "{body}");
            ids.push(body["operationId"].as_str().unwrap().to_owned());
        }
        ids
    }

    /// Waits until every operation is COMPLETED (bounded), checking stats add up.
    async fn all_completed(&self, node: &Node, ids: &[String], bound: Duration) -> Vec<Value> {
        let deadline = Instant::now() + bound;
        loop {
            let mut ops = Vec::new();
            for id in ids {
                let (status, op) = self
                    .call(
                        node,
                        reqwest::Method::GET,
                        &format!("/v1/PushNotifications/Operations/{id}"),
                        None,
                    )
                    .await;
                assert_eq!(status, 200, "{op}");
                let s = &op["stats"];
                let sum: i64 = [
                    "unaddressable",
                    "scheduled",
                    "queued",
                    "sent",
                    "failed",
                    "canceled",
                ]
                .iter()
                .map(|k| s[*k].as_i64().unwrap())
                .sum();
                assert_eq!(s["total"].as_i64().unwrap(), sum, "{op}");
                ops.push(op);
            }
            if ops.iter().all(|op| op["status"] == "COMPLETED") {
                return ops;
            }
            assert!(
                Instant::now() < deadline,
                "operations did not complete: {ops:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// How many accepted sends each token received.
    async fn received_counts(&self, tokens: &[String]) -> Vec<usize> {
        let mut counts = Vec::with_capacity(tokens.len());
        for token in tokens {
            let got: Vec<Value> = self
                .sandbox_http
                .get(format!("{}/_sandbox/received", self.sandbox.base_url()))
                .query(&[("token", token)])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            counts.push(got.iter().filter(|r| r["status"] == 200).count());
        }
        counts
    }
}

async fn crash_and_restart(db: Option<TestDatabase>, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    // Latency makes the send last long enough for the kills to land in the middle of it.
    let setup = Setup::new(dir.path(), 150).await;
    let url = db.as_ref().map(|db| db.url.clone());
    let mut node = Node::start(
        &setup.data_dir,
        url.as_deref(),
        &setup.sandbox_env,
        "node.log",
    );
    setup.wait_healthy(&node).await;
    setup.credentials(&node).await;
    let tokens: Vec<String> = (0..3000).map(|i| format!("{name}-crash-{i:05}")).collect();
    let ids = setup.send(&node, &tokens, 1000).await;
    for round in 0..3 {
        let wait = 200 + random_below(1200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        node.kill();
        eprintln!("{name}: kill -9 #{} after {wait} ms", round + 1);
        node = Node::start(
            &setup.data_dir,
            url.as_deref(),
            &setup.sandbox_env,
            "node.log",
        );
        setup.wait_healthy(&node).await;
    }
    let ops = setup
        .all_completed(&node, &ids, Duration::from_secs(120))
        .await;
    let sent: i64 = ops
        .iter()
        .map(|op| op["stats"]["sent"].as_i64().unwrap())
        .sum();
    assert_eq!(sent, tokens.len() as i64, "{ops:?}");
    let counts = setup.received_counts(&tokens).await;
    let missing = counts.iter().filter(|c| **c == 0).count();
    let duplicates: usize = counts.iter().map(|c| c.saturating_sub(1)).sum();
    eprintln!(
        "{name}: {} notifications, 3 kills: {missing} missing, {duplicates} duplicates",
        tokens.len()
    );
    assert_eq!(missing, 0, "devices that never got the notification");
    drop(node);
    setup.sandbox.shutdown().await;
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_large_send_loses_nothing_sqlite() {
    crash_and_restart(None, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_large_send_loses_nothing_postgres() {
    let Some(db) = TestDatabase::postgres().await else {
        eprintln!("HERALD_TEST_DATABASE_URL not set: PostgreSQL crash test skipped");
        return;
    };
    crash_and_restart(Some(db), "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_a_send_and_take_over_a_dead_nodes_work() {
    let Some(db) = TestDatabase::postgres().await else {
        eprintln!("HERALD_TEST_DATABASE_URL not set: two-node test skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path(), 20).await;
    let mut a = Node::start(&setup.data_dir, Some(&db.url), &setup.sandbox_env, "a.log");
    setup.wait_healthy(&a).await;
    let b = Node::start(&setup.data_dir, Some(&db.url), &setup.sandbox_env, "b.log");
    setup.wait_healthy(&b).await;
    setup.credentials(&a).await;

    // Both up: operations accepted by either node, each notification sent exactly once.
    let tokens: Vec<String> = (0..2000).map(|i| format!("both-{i:05}")).collect();
    let mut ids = setup.send(&a, &tokens[..1000], 500).await;
    ids.extend(setup.send(&b, &tokens[1000..], 500).await);
    setup
        .all_completed(&b, &ids, Duration::from_secs(120))
        .await;
    let counts = setup.received_counts(&tokens).await;
    assert!(
        counts.iter().all(|c| *c == 1),
        "not exactly once: {:?}",
        counts.iter().filter(|c| **c != 1).count()
    );

    // A dies in the middle of a send it accepted: B finishes it after the leases expire.
    setup
        .sandbox_http
        .patch(format!("{}/_sandbox/config", setup.sandbox.base_url()))
        .json(&json!({"latencyMs": 150}))
        .send()
        .await
        .unwrap();
    let tokens: Vec<String> = (0..2000).map(|i| format!("takeover-{i:05}")).collect();
    let ids = setup.send(&a, &tokens, 1000).await;
    tokio::time::sleep(Duration::from_millis(300 + random_below(500))).await;
    a.kill();
    setup
        .all_completed(&b, &ids, Duration::from_secs(120))
        .await;
    let counts = setup.received_counts(&tokens).await;
    let missing = counts.iter().filter(|c| **c == 0).count();
    let duplicates: usize = counts.iter().map(|c| c.saturating_sub(1)).sum();
    eprintln!(
        "two nodes, one killed: {missing} missing, {duplicates} duplicates of {}",
        tokens.len()
    );
    assert_eq!(missing, 0);
    drop(b);
    setup.sandbox.shutdown().await;
}
