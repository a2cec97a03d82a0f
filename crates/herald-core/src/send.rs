//! A validated send request (`POST /v1/PushNotifications`), as the API accepts it and the store
//! keeps it (serialized as JSON in the operation) until the delivery planner resolves it.
//!
//! The parser that builds it from the request body (with every validation rule of API.md) lives
//! in [`parse`]; rendering of per-recipient Liquid templates in [`render`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{AppName, Provider, Tags};

mod parse;
mod template;

pub use parse::{MAX_COLLAPSE_KEY_BYTES, Problem, is_credential_id, parse};
pub use template::{check_template, has_markup, render, try_render};

/// Who sends: an app's default credentials, named credentials, or the account's default app.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Sender {
    App {
        app_name: AppName,
    },
    /// Credential IDs (Push `comms_credential_...` or Chat `CR...`), at most one per provider.
    Credentials {
        apn: Option<String>,
        fcm: Option<String>,
    },
    AccountDefault,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Recipient {
    Device {
        token: String,
        provider: Provider,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        variables: Map<String, Value>,
    },
    User {
        user_id: String,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        variables: Map<String, Value>,
    },
}

impl Recipient {
    pub fn variables(&self) -> &Map<String, Value> {
        match self {
            Recipient::Device { variables, .. } | Recipient::User { variables, .. } => variables,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Priority {
    High,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "HIGH",
            Priority::Low => "LOW",
        }
    }
}

/// What the device shows. `title` and `body` may hold Liquid placeholders (`{{ name }}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    pub title: Option<String>,
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub data: Map<String, Value>,
    pub image: Option<String>,
    pub badge: Option<u32>,
    pub category: Option<String>,
    pub click_action: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendRequest {
    pub from: Sender,
    pub to: Vec<Recipient>,
    pub content: Content,
    #[serde(default)]
    pub silent: bool,
    pub priority: Priority,
    pub sound: Option<String>,
    /// Seconds; 0 = deliver now or drop.
    pub ttl: u32,
    pub collapse_key: Option<String>,
    pub apn: Option<Value>,
    pub fcm: Option<Value>,
    /// `schedule.sendAt` in epoch milliseconds, when in the future.
    pub send_at_ms: Option<i64>,
    #[serde(default)]
    pub tags: Tags,
    /// Whether any recipient has variables or the templates have placeholders, i.e. whether
    /// content must be rendered per recipient (otherwise once per operation).
    #[serde(default)]
    pub templated: bool,
}

impl SendRequest {
    pub const MAX_RECIPIENTS: usize = 10_000;
    pub const MAX_TTL: u32 = 2_419_200;
}
