//! A sandbox per test, the provider configuration and credentials it hands out, and its control
//! API.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use herald_providers::{
    ApnsAuth, ApnsCredential, FcmCredential, FcmLegacyCredential, ProviderConfig, Providers,
};
use herald_sandbox::{RunningSandbox, SandboxOptions};
use serde_json::{Value, json};

/// Sandbox credentials are generated once per test binary (RSA key generation is slow) and
/// copied for every sandbox.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("herald-providers-sandbox-")
            .tempdir()
            .expect("tempdir")
            .keep();
        herald_sandbox::write_credentials(&dir, "127.0.0.1:9".parse().unwrap())
            .expect("write sandbox credentials");
        dir
    })
}

pub struct Sandbox {
    pub running: RunningSandbox,
    pub dir: tempfile::TempDir,
    control: reqwest::Client,
}

pub async fn start() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(template()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let running = RunningSandbox::start(SandboxOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        credentials_dir: dir.path().to_path_buf(),
        fail_rate: 0.0,
        latency_ms: 0,
        record: true,
    })
    .await
    .expect("sandbox starts");
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let control = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    Sandbox {
        running,
        dir,
        control,
    }
}

impl Sandbox {
    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(file)).unwrap()
    }

    /// The configuration `herald.env` describes, read as `ProviderConfig::from_env` would.
    pub fn config(&self) -> ProviderConfig {
        let env: HashMap<String, String> = self
            .read("herald.env")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let config = ProviderConfig::from_lookup(|name| env.get(name).cloned()).unwrap();
        assert_eq!(config.apns_url, self.running.base_url());
        config
    }

    pub fn providers(&self) -> Providers {
        Providers::new(self.config()).unwrap()
    }

    pub fn apns_token(&self) -> ApnsCredential {
        let token: Value = serde_json::from_str(&self.read("apns-token.json")).unwrap();
        ApnsCredential {
            auth: ApnsAuth::Token {
                key_id: token["keyId"].as_str().unwrap().into(),
                team_id: token["teamId"].as_str().unwrap().into(),
                // base64 of the .p8 PEM, as the API's credential content carries it.
                private_key_pem: token["privateKey"].as_str().unwrap().into(),
            },
            topic: token["bundleId"].as_str().unwrap().into(),
            sandbox: true,
        }
    }

    pub fn apns_cert(&self) -> ApnsCredential {
        ApnsCredential {
            auth: ApnsAuth::Certificate {
                cert_pem: self.read("apns-cert.pem"),
                key_pem: self.read("apns-key.pem"),
            },
            topic: herald_sandbox::BUNDLE_ID.into(),
            sandbox: false,
        }
    }

    pub fn fcm(&self) -> FcmCredential {
        FcmCredential {
            service_account_json: self.read("fcm-service-account.json"),
        }
    }

    pub fn fcm_legacy(&self) -> FcmLegacyCredential {
        FcmLegacyCredential {
            server_key: self.read("fcm-legacy-key.txt").trim().to_string(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.base_url())
    }

    pub async fn fault(&self, fault: Value) {
        let response = self
            .control
            .post(self.url("/_sandbox/faults"))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    }

    /// What the sandbox received for a device token, oldest first.
    pub async fn received(&self, token: &str) -> Vec<Value> {
        self.control
            .get(self.url("/_sandbox/received"))
            .query(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn stats(&self) -> Value {
        self.control
            .get(self.url("/_sandbox/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn patch_config(&self, config: Value) {
        let response = self
            .control
            .patch(self.url("/_sandbox/config"))
            .json(&config)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    pub async fn post(&self, path: &str) -> Value {
        let response = self
            .control
            .post(self.url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }
}

/// A header of a received request, by (lower-case) name.
pub fn header<'a>(received: &'a Value, name: &str) -> Option<&'a str> {
    let headers = &received["headers"];
    match headers.get(name) {
        Some(Value::String(s)) => Some(s),
        Some(Value::Array(values)) => values.first().and_then(Value::as_str),
        _ => None,
    }
}

/// Header and claims of a compact JWS.
pub fn jwt_parts(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let decode =
        |p: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap() };
    let header = decode(parts.next().unwrap());
    let claims = decode(parts.next().unwrap());
    (header, claims)
}

/// The JWT of an `Authorization: bearer <jwt>` value (scheme matched case-insensitively).
pub fn bearer(value: &str) -> &str {
    let (scheme, token) = value.split_once(' ').expect("scheme and credentials");
    assert!(scheme.eq_ignore_ascii_case("bearer"), "{value}");
    token.trim()
}

pub fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

pub fn b64_bytes(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}
