//! The engine under test: a real store (SQLite or PostgreSQL), the sandbox providers over TLS, and
//! credentials/devices made through their store methods.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use herald_core::credential_content::{PushCredentialType, validate_push_content};
use herald_core::send::{Content, Priority, Recipient, SendRequest, Sender};
use herald_core::{AppName, DeviceToken, Provider, Tags};
use herald_delivery::{Engine, EngineConfig, RetryPolicy};
use herald_providers::{ProviderConfig, Providers};
use herald_sandbox::{RunningSandbox, SandboxOptions};
use herald_store::credentials::NewCredential;
use herald_store::delivery::{
    NewOperation, NotificationFilter, NotificationRecord, OperationRecord,
};
use herald_store::devices::RegisterDevice;
use herald_store::testing::TestDatabase;
use herald_store::{
    AccountStore, CredentialStore, DeliveryStore, DeviceStore, PageRequest, SqlStore, Store,
};
use serde_json::{Value, json};
use tokio::sync::Notify;

pub struct Harness {
    pub db: TestDatabase,
    pub store: Arc<SqlStore>,
    pub sandbox: RunningSandbox,
    pub http: reqwest::Client,
    pub account: String,
    pub apn: String,
    pub fcm: String,
    pub app: AppName,
    pub wake: Arc<Notify>,
    pub providers: Arc<Providers>,
    engine: Option<Engine>,
}

/// Fast settings for tests (small batches, short delays).
pub fn test_config() -> EngineConfig {
    EngineConfig {
        workers: 2,
        claim_batch: 50,
        plan_batch: 40,
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_millis(50),
        retry: RetryPolicy {
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(1),
            max_attempts: 5,
        },
        ..EngineConfig::default()
    }
}

impl Harness {
    pub async fn new(db: TestDatabase) -> Harness {
        Self::with_config(db, test_config()).await
    }

    pub async fn with_config(db: TestDatabase, config: EngineConfig) -> Harness {
        let store = Arc::new(db.store().await);
        let sandbox = RunningSandbox::start(SandboxOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            credentials_dir: db.dir().join("sandbox"),
            fail_rate: 0.0,
            latency_ms: 0,
            record: true,
        })
        .await
        .expect("sandbox starts");
        let dir = sandbox.credentials_dir().to_path_buf();
        let ca = std::fs::read(dir.join("ca.pem")).unwrap();
        let base = sandbox.base_url();
        let providers = Arc::new(
            Providers::new(ProviderConfig {
                apns_url: base.clone(),
                apns_sandbox_url: base.clone(),
                fcm_url: base.clone(),
                fcm_legacy_url: base.clone(),
                extra_ca_pem: Some(ca.clone()),
                ..ProviderConfig::default()
            })
            .unwrap(),
        );
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let account = store
            .create_account(Some("test"))
            .await
            .unwrap()
            .account
            .sid;
        let app = AppName::parse("shop").unwrap();
        let apn_content: Value =
            serde_json::from_slice(&std::fs::read(dir.join("apns-token.json")).unwrap()).unwrap();
        let fcm_json = std::fs::read(dir.join("fcm-service-account.json")).unwrap();
        let fcm_content =
            json!({"privateKey": base64::engine::general_purpose::STANDARD.encode(&fcm_json)});
        let mut ids = Vec::new();
        for (kind, content) in [
            (PushCredentialType::Apn, apn_content),
            (PushCredentialType::Fcm, fcm_content),
        ] {
            let record = store
                .create_credential(
                    &account,
                    NewCredential {
                        credential_type: kind,
                        app_name: app.clone(),
                        is_default: None,
                        tags: Tags::default(),
                        content: validate_push_content(kind, &content).unwrap(),
                    },
                )
                .await
                .unwrap();
            ids.push(record.id);
        }
        let wake = Arc::new(Notify::new());
        let engine = Engine::start(
            store.clone() as Arc<dyn Store>,
            providers.clone(),
            config,
            wake.clone(),
        );
        Harness {
            db,
            store,
            sandbox,
            http,
            account,
            apn: ids[0].clone(),
            fcm: ids[1].clone(),
            app,
            wake,
            providers,
            engine: Some(engine),
        }
    }

    /// Shuts the engine down (the store stays open).
    pub async fn shutdown_engine(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown().await;
        }
    }

    /// Sets the sandbox's answer latency for every request.
    pub async fn latency(&self, ms: u64) {
        self.sandbox_post("/_sandbox/config", json!({ "latencyMs": ms }))
            .await;
    }

    pub async fn stop(mut self) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown().await;
        }
        self.store.close().await;
    }

    /// Registers a device for `user` (a new user when `None`); returns the user id.
    pub async fn register(&self, user: Option<&str>, provider: Provider, token: &str) -> String {
        let token = DeviceToken::parse(token).unwrap();
        self.store
            .register_device(
                &self.account,
                &RegisterDevice {
                    app_name: &self.app,
                    provider,
                    token: &token,
                    user_id: user,
                },
            )
            .await
            .unwrap()
            .user_id
    }

    /// Stores an operation (as the send handler does) and wakes the engine.
    pub async fn send(&self, request: SendRequest) -> String {
        let created = self
            .store
            .create_operation(NewOperation {
                account_sid: self.account.clone(),
                request,
                idempotency: None,
            })
            .await
            .unwrap();
        self.wake.notify_one();
        created.id
    }

    pub async fn operation(&self, id: &str) -> OperationRecord {
        self.store.get_operation(&self.account, id).await.unwrap()
    }

    /// Waits until the operation is finished (COMPLETED or CANCELED), checking that the stats add
    /// up at every look. Bounded: panics after 60 s.
    pub async fn finished(&self, id: &str) -> OperationRecord {
        for _ in 0..1200 {
            let op = self.operation(id).await;
            assert_stats_add_up(&op);
            if op.completed_at.is_some() {
                return op;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "operation {id} did not finish: {:?}",
            self.operation(id).await
        );
    }

    /// Every notification of an operation.
    pub async fn notifications(&self, operation: &str) -> Vec<NotificationRecord> {
        let filter = NotificationFilter {
            operation_id: Some(operation.to_owned()),
            ..NotificationFilter::default()
        };
        let mut page = PageRequest::first(1000);
        let mut all = Vec::new();
        loop {
            let got = self
                .store
                .list_notifications(&self.account, &filter, &page)
                .await
                .unwrap();
            all.extend(got.items);
            match got.next {
                Some(cursor) => page.after = Some(cursor),
                None => return all,
            }
        }
    }

    /// The stats match the notifications' statuses.
    pub async fn assert_stats_match_rows(&self, op: &OperationRecord) {
        let rows = self.notifications(&op.id).await;
        let count = |s: &str| rows.iter().filter(|n| n.status == s).count() as i64;
        assert_eq!(op.stats.scheduled, count("SCHEDULED"), "{op:?}");
        assert_eq!(op.stats.queued, count("QUEUED"), "{op:?}");
        assert_eq!(op.stats.sent, count("SENT"), "{op:?}");
        assert_eq!(op.stats.failed, count("FAILED"), "{op:?}");
        assert_eq!(
            op.stats.total - op.stats.unaddressable,
            rows.len() as i64 + (op.stats.canceled - count("CANCELED")),
            "{op:?}"
        );
    }

    /// What the sandbox received for `token` (all providers).
    pub async fn received(&self, token: &str) -> Vec<Value> {
        self.sandbox_get("/_sandbox/received", &[("token", token)])
            .await
    }

    /// The sandbox's counters (`GET /_sandbox/stats`).
    pub async fn sandbox_stats(&self) -> Value {
        self.sandbox_get("/_sandbox/stats", &[]).await
    }

    /// Posts a sandbox fault for a token.
    pub async fn fault(&self, fault: Value) {
        self.sandbox_post("/_sandbox/faults", fault).await;
    }

    /// `GET` of a sandbox control path, its JSON answer.
    async fn sandbox_get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> T {
        self.http
            .get(format!("{}{path}", self.sandbox.base_url()))
            .query(query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `POST` of `body` to a sandbox control path, which must succeed.
    async fn sandbox_post(&self, path: &str, body: Value) {
        let status = self
            .http
            .post(format!("{}{path}", self.sandbox.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "POST {path} {body} → {status}");
    }
}

pub fn assert_stats_add_up(op: &OperationRecord) {
    let s = op.stats;
    assert_eq!(
        s.total,
        s.unaddressable + s.scheduled + s.queued + s.sent + s.failed + s.canceled,
        "{op:?}"
    );
    assert!(
        s.unaddressable >= 0
            && s.scheduled >= 0
            && s.queued >= 0
            && s.sent >= 0
            && s.failed >= 0
            && s.canceled >= 0,
        "{op:?}"
    );
}

pub fn device(provider: Provider, token: &str) -> Recipient {
    Recipient::Device {
        token: token.to_owned(),
        provider,
        variables: Default::default(),
    }
}

pub fn user(id: &str) -> Recipient {
    Recipient::User {
        user_id: id.to_owned(),
        variables: Default::default(),
    }
}

/// A plain request from the app `shop` to `to`.
pub fn request(to: Vec<Recipient>) -> SendRequest {
    SendRequest {
        from: Sender::App {
            app_name: AppName::parse("shop").unwrap(),
        },
        to,
        content: Content {
            title: Some("Hello".into()),
            body: Some("Your order shipped".into()),
            ..Content::default()
        },
        silent: false,
        priority: Priority::High,
        sound: None,
        ttl: SendRequest::MAX_TTL,
        collapse_key: None,
        apn: None,
        fcm: None,
        send_at_ms: None,
        tags: Tags::default(),
        templated: false,
    }
}

/// Runs `test` against every backend.
pub async fn each_backend<F, Fut>(test: F)
where
    F: Fn(TestDatabase) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for db in TestDatabase::all().await {
        eprintln!("backend: {}", db.name);
        test(db).await;
    }
}
