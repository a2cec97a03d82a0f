//! The test harness: the real router served on a random loopback port, over a real store (a
//! SQLite file, and a PostgreSQL schema when `HERALD_TEST_DATABASE_URL` is set).
#![allow(dead_code)]

use std::sync::Arc;

use herald_api::{ApiConfig, AppState};
use herald_store::testing::TestDatabase;
use herald_store::{AccountStore, SqlStore};
use reqwest::{Method, RequestBuilder};
use serde_json::Value;
use tokio::sync::oneshot;

/// `(account SID, auth token)`.
pub type Auth = (String, String);

pub struct TestServer {
    pub db: TestDatabase,
    pub store: SqlStore,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The account the plain request helpers authenticate as.
    pub auth: Auth,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(db: TestDatabase) -> Self {
        Self::start_with(db, |_| {}).await
    }

    /// Starts a server whose configuration `configure` may change first.
    pub async fn start_with(db: TestDatabase, configure: impl FnOnce(&mut ApiConfig)) -> Self {
        let store = db.store().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut config = ApiConfig::new(base.clone());
        configure(&mut config);
        let state = AppState::new(Arc::new(store.clone()), config, &db.master_key);
        let app = herald_api::router(state);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(herald_api::server::serve(listener, app, None, async move {
            let _ = stopped.await;
        }));
        let account = store.create_account(Some("test")).await.unwrap();
        Self {
            db,
            store,
            base,
            auth: (account.account.sid, account.auth_token),
            http: reqwest::Client::new(),
            stop: Some(stop),
        }
    }

    /// One server per configured backend (SQLite always, PostgreSQL when configured).
    pub async fn all() -> Vec<Self> {
        let mut servers = Vec::new();
        for db in TestDatabase::all().await {
            servers.push(Self::start(db).await);
        }
        servers
    }

    /// The backend's name, for assertion messages.
    pub fn name(&self) -> &'static str {
        self.db.name
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request authenticated as the default account.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.req_as(method, path, &self.auth)
    }

    pub fn req_as(&self, method: Method, path: &str, auth: &Auth) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .basic_auth(&auth.0, Some(&auth.1))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.req(Method::GET, path)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> RequestBuilder {
        self.req(Method::POST, path).json(body)
    }

    pub fn patch_json(&self, path: &str, body: &Value) -> RequestBuilder {
        self.req(Method::PATCH, path).json(body)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.req(Method::DELETE, path)
    }

    /// A second account on the same server (for tenancy tests).
    pub async fn new_account(&self) -> Auth {
        let account = self.store.create_account(None).await.unwrap();
        (account.account.sid, account.auth_token)
    }

    /// Makes app `name` of `auth`'s account the way users do: by creating its first credential.
    pub async fn create_app_as(&self, auth: &Auth, name: &str) {
        let body = serde_json::json!({
            "credentialType": "APN",
            "appName": name,
            "content": fixture("apn-token-content.json"),
        });
        let (status, answer) = call(
            self.req_as(Method::POST, "/v1/PushNotifications/Credentials", auth)
                .json(&body),
        )
        .await;
        assert_eq!(status, 202, "creating app {name}: {answer}");
    }

    pub async fn create_app(&self, name: &str) {
        self.create_app_as(&self.auth.clone(), name).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Sends `request` and returns the status and the JSON body (`Value::Null` when empty).
pub async fn call(request: RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request reaches the server");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    (status, body)
}

/// Asserts a Push API error answer with `status` whose entries include `code` at `context`.
pub fn assert_push_error(
    status: u16,
    body: &Value,
    expected_status: u16,
    code: u64,
    context: Option<&str>,
) {
    assert_eq!(status, expected_status, "body: {body}");
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors list in {body}"));
    assert!(
        errors.iter().any(|e| e["code"] == code
            && e["context"].as_str() == context
            && e["infoUrl"].is_string()),
        "expected code {code} at {context:?} in {body}"
    );
}

/// Test credential `content` objects from `testdata/credentials/` (see its README).
pub fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/credentials")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
