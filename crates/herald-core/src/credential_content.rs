//! Validation and parsing of provider credential content: pure functions, no I/O.
//!
//! # Push API (`/v1/PushNotifications/Credentials`)
//!
//! [`validate_push_content`] checks the `content` object of a create or a key-rotating PATCH and
//! returns the normalized [`CredentialSecret`] to store plus the non-secret [`CredentialFacts`]
//! to show. Accepted `content`:
//!
//! * `APN` / `APN_SANDBOX`, certificate auth:
//!   `{"certificate": STR, "privateKey": STR, "bundleId"?: STR}`.
//!   - `certificate`: base64 of PEM (what the API documents), or raw PEM text, or base64 of a DER
//!     certificate (Apple's `aps.cer` download is DER). PEM may hold a chain: the first
//!     certificate is the leaf, the rest are kept and sent along. Text around PEM blocks (e.g.
//!     `openssl pkcs12` "Bag Attributes") and private-key blocks are ignored.
//!   - `privateKey`: the same encodings; the key may be PKCS#8 (`PRIVATE KEY`), PKCS#1
//!     (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`), RSA 2048–4096 bits, EC P-256/P-384 or
//!     Ed25519, unencrypted (encrypted keys are refused with the openssl command that decrypts
//!     them). Certificate blocks next to it are ignored (a combined `.pem` exported from a
//!     `.p12` works in both fields). It must be the private half of the leaf's public key.
//!     A `.p12` bundle itself (base64) is refused in both fields with the command that turns it
//!     into PEM.
//!   - The leaf must be valid now (notBefore ≤ now ≤ notAfter). The issuer is not checked
//!     (self-signed is fine). A certificate carrying only Apple's development marker extension is
//!     refused for `APN`, one carrying only the production marker for `APN_SANDBOX`.
//!   - topic = `bundleId` if given, else the leaf subject's UID; neither → error.
//!   - facts: `{authMethod: "certificate", topic, expiresAt: notAfter}`.
//! * `APN` / `APN_SANDBOX`, token auth:
//!   `{"keyId": STR, "teamId": STR, "bundleId": STR, "privateKey": STR}`.
//!   - `keyId`, `teamId`: exactly 10 ASCII letters or digits (Apple's IDs).
//!   - `bundleId`: 1–255 characters of letters, digits, `.`, `-`, `_`.
//!   - `privateKey`: the `.p8` file, base64-encoded **or as raw PEM text** (users paste it), or
//!     base64 of its DER; it must be an EC P-256 key (PKCS#8 as Apple issues it; SEC1 is accepted
//!     too) that ring loads for ES256 signing.
//!   - facts: `{authMethod: "token", topic: bundleId, expiresAt: null}`.
//! * `FCM`: `{"privateKey": STR | OBJECT}` — the service-account JSON file Google issues, as
//!   base64 of the file (what the API documents), **or as the raw JSON text** (a string starting
//!   with `{`, which base64 never does), **or as the JSON object itself**. It must have
//!   `project_id`, `client_email`, `token_uri` (an `https://` or `http://` URL) and `private_key`
//!   (PEM of an RSA key ring loads; PKCS#8 as Google issues it, PKCS#1 accepted; literal `\n`
//!   escapes are tolerated); `type`, if present, must be `service_account`; other members are
//!   kept. facts: `{projectId, clientEmail}`.
//!
//! Unknown members of `content`, wrong JSON types and mixed forms (certificate and token members
//! together) are errors. Every problem found is reported as a [`ContentError`] naming the path
//! inside the request (`content.privateKey`) with a plain sentence; independent problems are all
//! reported, not just the first.
//!
//! # Chat Credential API (`/v2/Credentials`)
//!
//! Twilio's rules, much looser: [`validate_chat_apn`] (`Certificate` / `PrivateKey`, raw PEM
//! text, parse and match when both are given, nothing else), [`validate_chat_gcm_api_key`]
//! (`ApiKey`, non-empty) and [`classify_fcm_secret`] (`Secret`: a service-account JSON sends
//! through FCM HTTP v1, anything else is a legacy server key).
//!
//! # Secrets
//!
//! No error message and no `Debug` output of any type here contains secret material (key bytes,
//! base64 text, JSON values of a service account); messages quote only field names, PEM labels,
//! dates and counts.

mod apn;
mod cert;
mod chat;
mod der;
mod facts;
mod fcm;
mod keys;
mod pem;
mod secret;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

pub use chat::{
    ChatApnContent, FcmSecretKind, classify_fcm_secret, validate_chat_apn,
    validate_chat_gcm_api_key,
};
pub use facts::{ApnAuthMethod, ApnFacts, CredentialFacts, FcmFacts};
pub use secret::{CredentialSecret, SecretFormatError};

/// The Push API's `credentialType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PushCredentialType {
    /// Production APNs.
    #[serde(rename = "APN")]
    Apn,
    /// Development (sandbox) APNs.
    #[serde(rename = "APN_SANDBOX")]
    ApnSandbox,
    /// FCM HTTP v1.
    #[serde(rename = "FCM")]
    Fcm,
}

impl PushCredentialType {
    /// The API spelling: `APN`, `APN_SANDBOX`, `FCM`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apn => "APN",
            Self::ApnSandbox => "APN_SANDBOX",
            Self::Fcm => "FCM",
        }
    }
}

impl fmt::Display for PushCredentialType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PushCredentialType {
    type Err = ContentError;

    /// Exact, case-sensitive API spelling; the error's path is `credentialType`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "APN" => Ok(Self::Apn),
            "APN_SANDBOX" => Ok(Self::ApnSandbox),
            "FCM" => Ok(Self::Fcm),
            _ => Err(ContentError::new(
                "credentialType",
                "credentialType must be one of APN, APN_SANDBOX, FCM",
            )),
        }
    }
}

/// One problem with credential content.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ContentError {
    /// Where: `content.privateKey`, `content.certificate`, `content` (the whole object), or the
    /// Chat form field (`Certificate`, `PrivateKey`, `ApiKey`, `Secret`).
    pub path: String,
    /// What is wrong, as a sentence that stands alone ("certificate expired on
    /// 2024-01-01T00:00:00Z"). Never contains secret material.
    pub message: String,
}

impl ContentError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Content that passed validation: what to store and what to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedContent {
    /// Store this (encrypted) and hand it to the provider client.
    pub secret: CredentialSecret,
    /// Show these (and keep them next to the credential, e.g. the topic for sends).
    pub facts: CredentialFacts,
}

/// Validates a Push API `content` object for a credential of type `kind`, against the current
/// time. See the module docs for what is accepted.
pub fn validate_push_content(
    kind: PushCredentialType,
    content: &Value,
) -> Result<ValidatedContent, Vec<ContentError>> {
    validate_push_content_at(kind, content, OffsetDateTime::now_utc())
}

/// [`validate_push_content`] at a given time (the certificate validity check uses `now`).
pub fn validate_push_content_at(
    kind: PushCredentialType,
    content: &Value,
    now: OffsetDateTime,
) -> Result<ValidatedContent, Vec<ContentError>> {
    let Value::Object(content) = content else {
        return Err(vec![ContentError::new(
            "content",
            format!("content must be a JSON object, not {}", json_type(content)),
        )]);
    };
    match kind {
        PushCredentialType::Apn | PushCredentialType::ApnSandbox => {
            apn::validate(kind, content, now)
        }
        PushCredentialType::Fcm => fcm::validate(content),
    }
}

/// Collects problems of one validation.
#[derive(Default)]
struct Errors(Vec<ContentError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ContentError::new(path, message));
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` if nothing was reported, else all problems.
    fn finish<T>(self, value: Option<T>) -> Result<T, Vec<ContentError>> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ if self.0.is_empty() => Err(vec![ContentError::new(
                "content",
                "content could not be validated",
            )]),
            _ => Err(self.0),
        }
    }
}

/// "a number", "an object", ... for messages.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Field names quoted in paths and messages are cut short and stripped of control characters.
fn printable_name(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Reports members of `content` not in `allowed`, suggesting the intended name when the
/// difference is only case or separators, or a common alias.
fn check_unknown_fields(content: &Map<String, Value>, allowed: &[&str], errors: &mut Errors) {
    const ALIASES: &[(&str, &str)] = &[
        ("cert", "certificate"),
        ("certificatepem", "certificate"),
        ("key", "privateKey"),
        ("keypem", "privateKey"),
        ("p8", "privateKey"),
        ("authkey", "privateKey"),
        ("serviceaccount", "privateKey"),
        ("serviceaccountjson", "privateKey"),
        ("topic", "bundleId"),
        ("appid", "bundleId"),
        ("kid", "keyId"),
        ("team", "teamId"),
    ];
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .flat_map(char::to_lowercase)
            .collect()
    };
    for name in content.keys() {
        if allowed.contains(&name.as_str()) {
            continue;
        }
        let squashed = squash(name);
        let suggestion = allowed
            .iter()
            .find(|a| squash(a) == squashed)
            .copied()
            .or_else(|| {
                ALIASES
                    .iter()
                    .find(|(alias, target)| *alias == squashed && allowed.contains(target))
                    .map(|(_, target)| *target)
            });
        let shown = printable_name(name);
        let message = match suggestion {
            Some(s) => format!("unknown field \"{shown}\" (did you mean \"{s}\"?)"),
            None => format!(
                "unknown field \"{shown}\" (allowed here: {})",
                allowed.join(", ")
            ),
        };
        errors.push(format!("content.{shown}"), message);
    }
}

/// A string member: `None` (and an error) when it is missing or not a string.
fn required_str<'a>(
    content: &'a Map<String, Value>,
    field: &str,
    missing: &str,
    errors: &mut Errors,
) -> Option<&'a str> {
    match content.get(field) {
        None => {
            errors.push(format!("content.{field}"), missing);
            None
        }
        Some(value) => string_value(value, field, errors),
    }
}

/// An optional string member: `None` when absent; an error when present but not a string.
fn optional_str<'a>(
    content: &'a Map<String, Value>,
    field: &str,
    errors: &mut Errors,
) -> Option<&'a str> {
    content
        .get(field)
        .and_then(|value| string_value(value, field, errors))
}

fn string_value<'a>(value: &'a Value, field: &str, errors: &mut Errors) -> Option<&'a str> {
    match value {
        Value::String(s) => Some(s),
        other => {
            errors.push(
                format!("content.{field}"),
                format!("{field} must be a string, not {}", json_type(other)),
            );
            None
        }
    }
}

/// An APNs topic (bundle ID, possibly with a suffix such as `.voip`): 1–255 characters of ASCII
/// letters, digits, `.`, `-`, `_`. Returns the complaint, completing "bundleId ...".
fn topic_problem(topic: &str) -> Option<&'static str> {
    if topic.is_empty() {
        Some("must not be empty")
    } else if topic.len() > 255 {
        Some("must be at most 255 characters")
    } else if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        Some("may contain only ASCII letters, digits, '.', '-' and '_'")
    } else {
        None
    }
}
