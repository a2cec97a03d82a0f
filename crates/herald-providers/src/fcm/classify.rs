//! FCM HTTP v1 answers (google.rpc.Status errors) → [`Outcome`].
//!
//! The status decides first: 2xx delivered, 429 and 5xx retry. Then the FCM error code from
//! `details[].errorCode`, then the google.rpc `status`, then the HTTP status.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::Outcome;
use crate::outcome::reason_text;

#[derive(Debug, Default, Deserialize)]
struct Envelope {
    error: Option<RpcStatus>,
}

/// A google.rpc.Status as FCM sends it.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RpcStatus {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<Value>,
}

impl RpcStatus {
    pub(crate) fn parse(body: &[u8]) -> Option<RpcStatus> {
        serde_json::from_slice::<Envelope>(body).ok()?.error
    }

    /// `details[].errorCode` of the FcmError detail.
    pub(crate) fn fcm_error_code(&self) -> Option<&str> {
        self.details.iter().find_map(|d| {
            let is_fcm = d
                .get("@type")
                .and_then(Value::as_str)
                .is_none_or(|t| t.ends_with("google.firebase.fcm.v1.FcmError"));
            if is_fcm {
                d.get("errorCode").and_then(Value::as_str)
            } else {
                None
            }
        })
    }

    /// Whether this INVALID_ARGUMENT is about the registration token.
    fn blames_token(&self) -> bool {
        let message = self.message.as_deref().unwrap_or("").to_ascii_lowercase();
        if message.contains("registration token") || message.contains("message.token") {
            return true;
        }
        self.details.iter().any(|d| {
            d.get("fieldViolations")
                .and_then(Value::as_array)
                .is_some_and(|violations| {
                    violations.iter().any(|v| {
                        v.get("field").and_then(Value::as_str) == Some("message.token")
                            || v.get("description")
                                .and_then(Value::as_str)
                                .is_some_and(|d| {
                                    d.to_ascii_lowercase().contains("registration token")
                                })
                    })
                })
        })
    }
}

/// Whether an FCM 401 is about the APNs credential uploaded to Firebase (THIRD_PARTY_AUTH_ERROR)
/// rather than our access token.
pub(crate) fn is_third_party_auth_error(body: &[u8]) -> bool {
    RpcStatus::parse(body).is_some_and(|s| s.fcm_error_code() == Some("THIRD_PARTY_AUTH_ERROR"))
}

#[derive(Clone, Copy)]
enum Class {
    Retry,
    DeadToken,
    Permanent,
    Credential,
    /// INVALID_ARGUMENT: dead token when it is about the token, else permanent.
    InvalidArgument,
}

fn code_class(code: &str) -> Option<Class> {
    Some(match code.to_ascii_uppercase().as_str() {
        // FCM error codes (details[].errorCode).
        "UNREGISTERED" => Class::DeadToken,
        "SENDER_ID_MISMATCH" => Class::DeadToken,
        "INVALID_ARGUMENT" => Class::InvalidArgument,
        "QUOTA_EXCEEDED" => Class::Retry,
        "UNAVAILABLE" => Class::Retry,
        "INTERNAL" => Class::Retry,
        "THIRD_PARTY_AUTH_ERROR" => Class::Credential,
        // google.rpc status names.
        "NOT_FOUND" => Class::DeadToken,
        "PERMISSION_DENIED" => Class::Credential,
        "UNAUTHENTICATED" => Class::Credential,
        "RESOURCE_EXHAUSTED" => Class::Retry,
        "DEADLINE_EXCEEDED" => Class::Retry,
        "ABORTED" => Class::Retry,
        "FAILED_PRECONDITION" => Class::Permanent,
        "OUT_OF_RANGE" => Class::Permanent,
        "UNIMPLEMENTED" => Class::Permanent,
        _ => return None,
    })
}

/// Classifies an FCM HTTP v1 answer: HTTP `status`, response `body`, and its `Retry-After`.
pub fn classify_fcm(status: u16, body: &[u8], retry_after: Option<Duration>) -> Outcome {
    if (200..300).contains(&status) {
        // Only `name` is read: a typed parse skips the rest without building a `Value` tree
        // (this runs for every notification sent).
        #[derive(Deserialize)]
        struct Sent {
            name: Option<String>,
        }
        let name = serde_json::from_slice::<Sent>(body)
            .ok()
            .and_then(|s| s.name);
        return Outcome::Delivered { provider_id: name };
    }
    let rpc = RpcStatus::parse(body);
    let rpc_ref = rpc.as_ref();
    let fcm_code = rpc_ref.and_then(RpcStatus::fcm_error_code);
    let rpc_status = rpc_ref.and_then(|s| s.status.as_deref());
    let code = fcm_code
        .or(rpc_status)
        .map_or_else(|| format!("HTTP {status}"), str::to_string);
    let message = rpc_ref.and_then(|s| s.message.as_deref());
    let reason = reason_text(&code, message);

    if status == 429 || status >= 500 {
        return Outcome::Retry {
            after: retry_after,
            status: Some(status),
            reason,
        };
    }
    let class = fcm_code
        .and_then(code_class)
        .or_else(|| rpc_status.and_then(code_class))
        .unwrap_or(match status {
            400 => Class::InvalidArgument,
            401 | 403 => Class::Credential,
            // A 404 that is not a google.rpc.Status is a wrong URL, not a dead token.
            404 if rpc.is_some() => Class::DeadToken,
            _ => Class::Permanent,
        });
    match class {
        Class::Retry => Outcome::Retry {
            after: retry_after,
            status: Some(status),
            reason,
        },
        Class::DeadToken => Outcome::DeadToken { status, reason },
        Class::InvalidArgument if rpc_ref.is_some_and(RpcStatus::blames_token) => {
            Outcome::DeadToken { status, reason }
        }
        Class::InvalidArgument | Class::Permanent => Outcome::Permanent {
            status: Some(status),
            reason,
        },
        Class::Credential => Outcome::CredentialError {
            status: Some(status),
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error_body(code: u16, status: &str, message: &str, fcm_code: Option<&str>) -> Vec<u8> {
        let mut details = vec![];
        if let Some(fcm_code) = fcm_code {
            details.push(json!({
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": fcm_code
            }));
        }
        serde_json::to_vec(&json!({"error": {
            "code": code, "message": message, "status": status, "details": details
        }}))
        .unwrap()
    }

    fn kind(o: &Outcome) -> &'static str {
        match o {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::DeadToken { .. } => "dead",
            Outcome::Permanent { .. } => "permanent",
            Outcome::CredentialError { .. } => "credential",
        }
    }

    #[test]
    fn delivered_with_name() {
        assert_eq!(
            classify_fcm(200, br#"{"name": "projects/p/messages/0:123"}"#, None),
            Outcome::Delivered {
                provider_id: Some("projects/p/messages/0:123".into())
            }
        );
    }

    #[test]
    fn every_fcm_error_code() {
        let cases = [
            (
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
                Some("UNREGISTERED"),
                "dead",
            ),
            (
                403,
                "PERMISSION_DENIED",
                "SenderId mismatch",
                Some("SENDER_ID_MISMATCH"),
                "dead",
            ),
            (
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                Some("INVALID_ARGUMENT"),
                "dead",
            ),
            (
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'message.android.ttl'",
                Some("INVALID_ARGUMENT"),
                "permanent",
            ),
            (
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded",
                Some("QUOTA_EXCEEDED"),
                "retry",
            ),
            (
                503,
                "UNAVAILABLE",
                "The service is currently unavailable.",
                Some("UNAVAILABLE"),
                "retry",
            ),
            (
                500,
                "INTERNAL",
                "Internal error encountered.",
                Some("INTERNAL"),
                "retry",
            ),
            (
                401,
                "UNAUTHENTICATED",
                "Auth error from APNS or Web Push Service",
                Some("THIRD_PARTY_AUTH_ERROR"),
                "credential",
            ),
            (
                400,
                "INVALID_ARGUMENT",
                "Unknown error",
                Some("UNSPECIFIED_ERROR"),
                "permanent",
            ),
            (
                403,
                "PERMISSION_DENIED",
                "Permission 'cloudmessaging.messages.create' denied",
                None,
                "credential",
            ),
            (
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials.",
                None,
                "credential",
            ),
            (
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
                None,
                "dead",
            ),
            (400, "FAILED_PRECONDITION", "x", None, "permanent"),
        ];
        for (status, rpc_status, message, fcm_code, expected) in cases {
            let body = error_body(status, rpc_status, message, fcm_code);
            let outcome = classify_fcm(status, &body, None);
            assert_eq!(
                kind(&outcome),
                expected,
                "{status} {rpc_status} {fcm_code:?}: {outcome}"
            );
            assert_eq!(outcome.status(), Some(status));
            let code = fcm_code.unwrap_or(rpc_status);
            assert_eq!(outcome.reason_code(), code);
            assert_eq!(outcome.reason(), format!("{code}: {message}"));
        }
    }

    #[test]
    fn invalid_argument_field_violation_on_token() {
        let body = serde_json::to_vec(&json!({"error": {
            "code": 400, "status": "INVALID_ARGUMENT", "message": "Request contains an invalid argument.",
            "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"},
                {"@type": "type.googleapis.com/google.rpc.BadRequest",
                 "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]}
            ]}}))
        .unwrap();
        assert!(matches!(
            classify_fcm(400, &body, None),
            Outcome::DeadToken { status: 400, .. }
        ));
    }

    #[test]
    fn retry_after_honoured() {
        let after = Some(Duration::from_secs(17));
        let body = error_body(429, "RESOURCE_EXHAUSTED", "q", Some("QUOTA_EXCEEDED"));
        assert_eq!(
            classify_fcm(429, &body, after),
            Outcome::Retry {
                after,
                status: Some(429),
                reason: "QUOTA_EXCEEDED: q".into()
            }
        );
        // 503 without a body.
        assert_eq!(
            classify_fcm(503, b"", after),
            Outcome::Retry {
                after,
                status: Some(503),
                reason: "HTTP 503".into()
            }
        );
    }

    #[test]
    fn status_fallbacks() {
        assert_eq!(kind(&classify_fcm(401, b"", None)), "credential");
        assert_eq!(kind(&classify_fcm(403, b"<html>", None)), "credential");
        assert_eq!(kind(&classify_fcm(400, b"", None)), "permanent");
        // A bare 404 (wrong URL) does not kill tokens.
        assert_eq!(
            kind(&classify_fcm(404, b"<html>not found</html>", None)),
            "permanent"
        );
        assert_eq!(kind(&classify_fcm(413, b"", None)), "permanent");
        assert!(is_third_party_auth_error(&error_body(
            401,
            "UNAUTHENTICATED",
            "x",
            Some("THIRD_PARTY_AUTH_ERROR")
        )));
        assert!(!is_third_party_auth_error(&error_body(
            401,
            "UNAUTHENTICATED",
            "x",
            None
        )));
    }
}
