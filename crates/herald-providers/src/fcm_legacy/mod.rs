//! Legacy FCM/GCM HTTP (`POST /fcm/send` with `Authorization: key=...`).
//!
//! Google shut the public legacy endpoint down in 2024; credentials that still use a server key
//! (Chat `gcm` / `fcm` credentials with a bare key) go through this client, and a refusal from the
//! endpoint says so and asks for a service account.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Uri};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::error::ProviderError;
use crate::fcm::send_error;
use crate::h2pool::{Origin, Pool};
use crate::message::data_string;
use crate::outcome::{reason_text, retry_after_header};
use crate::template::TokenTemplate;
use crate::{Outcome, Priority, PushMessage};

/// A legacy FCM/GCM credential: the server key.
#[derive(Clone, PartialEq, Eq)]
pub struct FcmLegacyCredential {
    pub server_key: String,
}

impl std::fmt::Debug for FcmLegacyCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmLegacyCredential")
            .finish_non_exhaustive()
    }
}

/// What a refusal from the legacy endpoint means today.
pub const LEGACY_SHUTDOWN_NOTE: &str = "Google shut the legacy FCM HTTP API (fcm/send, server keys) \
    down in 2024; move this credential to a service account (FCM HTTP v1)";

/// The legacy request body for `msg` to `token`: `{to, notification {title, body, image, sound,
/// click_action}, data (string values), priority high|normal, time_to_live, collapse_key}`; a silent
/// push has no `notification` and sets `content_available`. The `fcm` override is not applied (it
/// is shaped for HTTP v1).
pub fn fcm_legacy_body(msg: &PushMessage, token: &str) -> Value {
    let mut body = Map::new();
    body.insert("to".into(), json!(token));
    if msg.silent {
        body.insert("content_available".into(), json!(true));
    } else {
        let mut notification = Map::new();
        for (key, value) in [
            ("title", &msg.title),
            ("body", &msg.body),
            ("image", &msg.image),
            ("sound", &msg.sound),
            ("click_action", &msg.click_action),
        ] {
            if let Some(value) = value {
                notification.insert(key.into(), json!(value));
            }
        }
        if let Some(badge) = msg.badge {
            notification.insert("badge".into(), json!(badge.to_string()));
        }
        if !notification.is_empty() {
            body.insert("notification".into(), Value::Object(notification));
        }
    }
    if !msg.data.is_empty() {
        let data: Map<String, Value> = msg
            .data
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(data_string(v))))
            .collect();
        body.insert("data".into(), Value::Object(data));
    }
    body.insert(
        "priority".into(),
        json!(match msg.priority {
            Priority::High => "high",
            Priority::Low => "normal",
        }),
    );
    body.insert("time_to_live".into(), json!(msg.ttl_seconds));
    if let Some(collapse_key) = &msg.collapse_key {
        body.insert("collapse_key".into(), json!(collapse_key));
    }
    Value::Object(body)
}

/// A message rendered for the legacy endpoint once.
#[derive(Debug, Clone)]
pub struct FcmLegacyPrepared {
    template: Option<TokenTemplate>,
    invalid: Option<String>,
}

impl FcmLegacyPrepared {
    pub fn new(msg: &PushMessage) -> Self {
        match TokenTemplate::build(|token| fcm_legacy_body(msg, token)) {
            Ok(template) => FcmLegacyPrepared {
                template: Some(template),
                invalid: None,
            },
            Err(e) => FcmLegacyPrepared {
                template: None,
                invalid: Some(format!("InvalidParameters: cannot render the message: {e}")),
            },
        }
    }

    /// The request body for one registration token.
    pub fn body(&self, device_token: &str) -> Option<Bytes> {
        self.template.as_ref().map(|t| t.body(device_token))
    }
}

#[derive(Clone, Copy)]
enum Class {
    Retry,
    DeadToken,
    Permanent,
    Credential,
}

/// Every documented legacy error string.
const LEGACY_ERRORS: &[(&str, Class)] = &[
    ("MissingRegistration", Class::Permanent),
    ("InvalidRegistration", Class::DeadToken),
    ("NotRegistered", Class::DeadToken),
    ("MismatchSenderId", Class::DeadToken),
    ("InvalidPackageName", Class::Permanent),
    ("MessageTooBig", Class::Permanent),
    ("InvalidDataKey", Class::Permanent),
    ("InvalidTtl", Class::Permanent),
    ("InvalidParameters", Class::Permanent),
    ("Unavailable", Class::Retry),
    ("InternalServerError", Class::Retry),
    ("DeviceMessageRateExceeded", Class::Retry),
    ("TopicsMessageRateExceeded", Class::Retry),
    ("InvalidApnsCredential", Class::Credential),
    ("AuthenticationError", Class::Credential),
];

fn error_class(error: &str) -> Option<Class> {
    LEGACY_ERRORS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(error))
        .map(|(_, class)| *class)
}

#[derive(Deserialize)]
struct LegacyResponse {
    #[serde(default)]
    success: Option<u64>,
    #[serde(default)]
    results: Vec<LegacyResult>,
    #[serde(default)]
    message_id: Option<Value>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct LegacyResult {
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    registration_id: Option<String>,
}

/// Classifies a legacy answer: HTTP `status`, the body, and its `Retry-After`.
pub fn classify_fcm_legacy(status: u16, body: &[u8], retry_after: Option<Duration>) -> Outcome {
    let of_class = |class: Class, reason: String| match class {
        Class::Retry => Outcome::Retry {
            after: retry_after,
            status: Some(status),
            reason,
        },
        Class::DeadToken => Outcome::DeadToken { status, reason },
        Class::Permanent => Outcome::Permanent {
            status: Some(status),
            reason,
        },
        Class::Credential => Outcome::CredentialError {
            status: Some(status),
            reason,
        },
    };
    if status == 200 {
        let Ok(parsed) = serde_json::from_slice::<LegacyResponse>(body) else {
            return Outcome::Permanent {
                status: Some(status),
                reason: "UnexpectedAnswer: the legacy endpoint answered 200 without a JSON result"
                    .into(),
            };
        };
        let result = parsed.results.into_iter().next();
        let error = result
            .as_ref()
            .and_then(|r| r.error.clone())
            .or(parsed.error);
        if let Some(error) = error {
            let class = error_class(&error).unwrap_or(Class::Permanent);
            return of_class(class, error);
        }
        if let Some(result) = result
            && result.message_id.is_some()
        {
            if let Some(canonical) = &result.registration_id {
                tracing::debug!(
                    canonical_len = canonical.len(),
                    "legacy FCM returned a canonical registration id"
                );
            }
            return Outcome::Delivered {
                provider_id: result.message_id,
            };
        }
        if let Some(id) = parsed.message_id {
            return Outcome::Delivered {
                provider_id: Some(id.as_str().map_or_else(|| id.to_string(), str::to_string)),
            };
        }
        if parsed.success.unwrap_or(0) > 0 {
            return Outcome::Delivered { provider_id: None };
        }
        return Outcome::Permanent {
            status: Some(status),
            reason: "UnexpectedAnswer: the legacy endpoint answered 200 without a result".into(),
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let short: String = text.chars().take(200).collect();
    let short = short.as_str();
    if status == 429 || status >= 500 {
        let code = if status == 429 {
            "DeviceMessageRateExceeded"
        } else {
            "Unavailable"
        };
        // The body of these is an HTML error page at best.
        return of_class(Class::Retry, code.to_string());
    }
    if status == 400 || status == 413 {
        // 400: a JSON error in the request (plain-text body); 413: too big.
        let first_word = text.split([':', ' ', '\n']).next().unwrap_or("");
        if let Some(class) = error_class(first_word) {
            return of_class(class, reason_text(first_word, Some(short)));
        }
        let code = if status == 413 {
            "MessageTooBig"
        } else {
            "InvalidParameters"
        };
        return of_class(Class::Permanent, reason_text(code, Some(short)));
    }
    // 401, 403, 404, 410, redirects...: the endpoint refuses this key, or is gone.
    Outcome::CredentialError {
        status: Some(status),
        reason: format!(
            "LegacyApiShutDown: the legacy endpoint answered HTTP {status}. {LEGACY_SHUTDOWN_NOTE}"
        ),
    }
}

/// A legacy FCM/GCM client for one server key.
pub struct FcmLegacyClient {
    pool: Pool,
    auth: HeaderValue,
    uri: Uri,
    timeout: Duration,
}

impl std::fmt::Debug for FcmLegacyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmLegacyClient")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

impl FcmLegacyClient {
    pub(crate) fn new(
        credential: &FcmLegacyCredential,
        origin: Origin,
        h2_config: &std::sync::Arc<rustls::ClientConfig>,
        max_connections: usize,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let key = credential.server_key.trim();
        // Tolerate a key pasted with its scheme.
        let key = match key.split_once('=') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("key") => rest.trim(),
            _ => key,
        };
        if key.is_empty() {
            return Err(ProviderError::InvalidCredential(
                "legacy FCM server key is empty".into(),
            ));
        }
        let mut auth = HeaderValue::try_from(format!("key={key}")).map_err(|_| {
            ProviderError::InvalidCredential(
                "legacy FCM server key is not a valid header value".into(),
            )
        })?;
        auth.set_sensitive(true);
        let uri = origin
            .uri("/fcm/send")
            .map_err(ProviderError::InvalidCredential)?;
        let tls = origin.is_tls().then(|| h2_config.clone());
        Ok(FcmLegacyClient {
            pool: Pool::new(origin, tls, max_connections, timeout),
            auth,
            uri,
            timeout,
        })
    }

    /// Renders `msg` for the legacy endpoint (same as [`FcmLegacyPrepared::new`]).
    pub fn prepare(&self, msg: &PushMessage) -> FcmLegacyPrepared {
        FcmLegacyPrepared::new(msg)
    }

    /// Sends a prepared message to one registration token (`_id` is not sent). Never fails.
    pub async fn send(
        &self,
        prepared: &FcmLegacyPrepared,
        device_token: &str,
        _id: Uuid,
    ) -> Outcome {
        match tokio::time::timeout(self.timeout, self.send_inner(prepared, device_token)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::retry(format!(
                "Timeout: no answer from the legacy FCM endpoint within {:?}",
                self.timeout
            )),
        }
    }

    async fn send_inner(&self, prepared: &FcmLegacyPrepared, device_token: &str) -> Outcome {
        let body = match (&prepared.invalid, &prepared.template) {
            (None, Some(template)) => template.body(device_token),
            (invalid, _) => {
                return Outcome::Permanent {
                    status: None,
                    reason: invalid
                        .clone()
                        .unwrap_or_else(|| "InvalidParameters: message not rendered".into()),
                };
            }
        };
        if device_token.is_empty() {
            return Outcome::Permanent {
                status: None,
                reason: "MissingRegistration: empty registration token".into(),
            };
        }
        let content_length = HeaderValue::from(body.len());
        let make = || {
            let mut request = Request::new(());
            *request.method_mut() = Method::POST;
            *request.uri_mut() = self.uri.clone();
            let headers = request.headers_mut();
            headers.insert(AUTHORIZATION, self.auth.clone());
            headers.insert(CONTENT_TYPE, APPLICATION_JSON);
            headers.insert(CONTENT_LENGTH, content_length.clone());
            request
        };
        match self.pool.send(make, &body).await {
            Ok(response) => classify_fcm_legacy(
                response.status.as_u16(),
                &response.body,
                retry_after_header(&response.headers),
            ),
            Err(err) => send_error("the legacy FCM endpoint", err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(o: &Outcome) -> &'static str {
        match o {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::DeadToken { .. } => "dead",
            Outcome::Permanent { .. } => "permanent",
            Outcome::CredentialError { .. } => "credential",
        }
    }

    fn result_body(error: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "multicast_id": 1, "success": 0, "failure": 1, "canonical_ids": 0,
            "results": [{"error": error}]
        }))
        .unwrap()
    }

    #[test]
    fn body() {
        let mut m = PushMessage {
            title: Some("T".into()),
            body: Some("B".into()),
            sound: Some("default".into()),
            click_action: Some("OPEN".into()),
            collapse_key: Some("ck".into()),
            priority: Priority::Low,
            ttl_seconds: 60,
            ..PushMessage::new()
        };
        m.data.insert("n".into(), json!(1));
        assert_eq!(
            fcm_legacy_body(&m, "tok"),
            json!({
                "to": "tok",
                "notification": {"title": "T", "body": "B", "sound": "default", "click_action": "OPEN"},
                "data": {"n": "1"},
                "priority": "normal",
                "time_to_live": 60,
                "collapse_key": "ck"
            })
        );
        m.silent = true;
        m.priority = Priority::High;
        let v = fcm_legacy_body(&m, "tok");
        assert!(v.get("notification").is_none());
        assert_eq!(v["content_available"], true);
        assert_eq!(v["priority"], "high");
        let p = FcmLegacyPrepared::new(&m);
        let spliced: Value = serde_json::from_slice(&p.body("tok").unwrap()).unwrap();
        assert_eq!(spliced, v);
    }

    #[test]
    fn every_result_error() {
        let cases = [
            ("MissingRegistration", "permanent"),
            ("InvalidRegistration", "dead"),
            ("NotRegistered", "dead"),
            ("MismatchSenderId", "dead"),
            ("InvalidPackageName", "permanent"),
            ("MessageTooBig", "permanent"),
            ("InvalidDataKey", "permanent"),
            ("InvalidTtl", "permanent"),
            ("InvalidParameters", "permanent"),
            ("Unavailable", "retry"),
            ("InternalServerError", "retry"),
            ("DeviceMessageRateExceeded", "retry"),
            ("TopicsMessageRateExceeded", "retry"),
            ("InvalidApnsCredential", "credential"),
            ("AuthenticationError", "credential"),
            ("SomethingNew", "permanent"),
        ];
        assert_eq!(cases.len(), LEGACY_ERRORS.len() + 1);
        for (error, expected) in cases {
            let o = classify_fcm_legacy(200, &result_body(error), None);
            assert_eq!(kind(&o), expected, "{error}");
            assert_eq!(o.reason(), error);
            assert_eq!(o.status(), Some(200));
        }
        let after = Some(Duration::from_secs(9));
        assert_eq!(
            classify_fcm_legacy(200, &result_body("Unavailable"), after),
            Outcome::Retry {
                after,
                status: Some(200),
                reason: "Unavailable".into()
            }
        );
    }

    #[test]
    fn delivered() {
        let body = json!({"multicast_id": 1, "success": 1, "failure": 0, "canonical_ids": 0,
            "results": [{"message_id": "0:1500415314455276%31bd1c9631bd1c96"}]});
        assert_eq!(
            classify_fcm_legacy(200, &serde_json::to_vec(&body).unwrap(), None),
            Outcome::Delivered {
                provider_id: Some("0:1500415314455276%31bd1c9631bd1c96".into())
            }
        );
        assert_eq!(
            classify_fcm_legacy(200, br#"{"message_id": 123}"#, None),
            Outcome::Delivered {
                provider_id: Some("123".into())
            }
        );
        assert_eq!(
            kind(&classify_fcm_legacy(200, b"<html>", None)),
            "permanent"
        );
    }

    #[test]
    fn http_errors() {
        for status in [401, 403, 404, 410] {
            let o = classify_fcm_legacy(status, b"<HTML>Not Found</HTML>", None);
            assert_eq!(kind(&o), "credential", "{status}");
            assert_eq!(o.reason_code(), "LegacyApiShutDown");
            assert!(o.reason().contains("shut the legacy FCM HTTP API"), "{o}");
            assert!(o.reason().contains("2024"), "{o}");
            assert!(o.reason().contains("service account"), "{o}");
        }
        let after = Some(Duration::from_secs(3));
        assert_eq!(
            classify_fcm_legacy(503, b"", after),
            Outcome::Retry {
                after,
                status: Some(503),
                reason: "Unavailable".into()
            }
        );
        assert_eq!(kind(&classify_fcm_legacy(429, b"", None)), "retry");
        assert_eq!(
            kind(&classify_fcm_legacy(
                400,
                b"JSON_PARSING_ERROR: Unexpected character",
                None
            )),
            "permanent"
        );
        assert_eq!(
            classify_fcm_legacy(400, b"InvalidRegistration", None).reason(),
            "InvalidRegistration"
        );
        assert_eq!(
            kind(&classify_fcm_legacy(400, b"InvalidRegistration", None)),
            "dead"
        );
        assert_eq!(kind(&classify_fcm_legacy(413, b"", None)), "permanent");
    }
}
