//! APNs answers → [`Outcome`].
//!
//! The status decides first: 2xx delivered, 410 dead token, 429 and 5xx retry. Otherwise the reason
//! decides when we know it, and an unknown (or missing) reason falls back on the status: 401/403 blame
//! the credential, any other 4xx this notification.

use std::time::Duration;

use crate::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Retry,
    DeadToken,
    Permanent,
    Credential,
}

/// Every reason APNs documents, with what it means for us.
pub(crate) const APNS_REASONS: &[(&str, Class)] = &[
    // 400
    ("BadCollapseId", Class::Permanent),
    ("BadDeviceToken", Class::DeadToken),
    ("BadExpirationDate", Class::Permanent),
    ("BadMessageId", Class::Permanent),
    ("BadPriority", Class::Permanent),
    ("BadTopic", Class::Credential),
    ("DeviceTokenNotForTopic", Class::DeadToken),
    ("DuplicateHeaders", Class::Permanent),
    ("IdleTimeout", Class::Retry),
    ("InvalidPushType", Class::Permanent),
    ("MissingDeviceToken", Class::Permanent),
    ("MissingTopic", Class::Credential),
    ("PayloadEmpty", Class::Permanent),
    ("TopicDisallowed", Class::Credential),
    // 403
    ("BadCertificate", Class::Credential),
    ("BadCertificateEnvironment", Class::Credential),
    ("ExpiredProviderToken", Class::Credential),
    ("Forbidden", Class::Credential),
    ("InvalidProviderToken", Class::Credential),
    ("MissingProviderToken", Class::Credential),
    ("UnrelatedKeyIdInToken", Class::Credential),
    ("BadEnvironmentKeyInToken", Class::Credential),
    // 404, 405
    ("BadPath", Class::Permanent),
    ("MethodNotAllowed", Class::Permanent),
    // 410
    ("ExpiredToken", Class::DeadToken),
    ("Unregistered", Class::DeadToken),
    // 413
    ("PayloadTooLarge", Class::Permanent),
    // 429
    ("TooManyProviderTokenUpdates", Class::Retry),
    ("TooManyRequests", Class::Retry),
    // 500, 503
    ("InternalServerError", Class::Retry),
    ("ServiceUnavailable", Class::Retry),
    ("Shutdown", Class::Retry),
];

pub(crate) fn reason_class(reason: &str) -> Option<Class> {
    APNS_REASONS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(reason))
        .map(|(_, class)| *class)
}

/// Classifies an APNs answer: HTTP `status`, the `reason` of its JSON body, its `Retry-After`, and
/// the `apns-id` it echoed.
pub fn classify_apns(
    status: u16,
    reason: Option<&str>,
    retry_after: Option<Duration>,
    apns_id: Option<&str>,
) -> Outcome {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    let text = || reason.map_or_else(|| format!("HTTP {status}"), str::to_string);
    if (200..300).contains(&status) {
        return Outcome::Delivered {
            provider_id: apns_id.map(str::to_string),
        };
    }
    if status == 410 {
        return Outcome::DeadToken {
            status,
            reason: reason.unwrap_or("Unregistered").to_string(),
        };
    }
    if status == 429 || status >= 500 {
        return Outcome::Retry {
            after: retry_after,
            status: Some(status),
            reason: text(),
        };
    }
    let class = reason.and_then(reason_class).unwrap_or(match status {
        401 | 403 => Class::Credential,
        _ => Class::Permanent,
    });
    match class {
        Class::Retry => Outcome::Retry {
            after: retry_after,
            status: Some(status),
            reason: text(),
        },
        Class::DeadToken => Outcome::DeadToken {
            status,
            reason: text(),
        },
        Class::Permanent => Outcome::Permanent {
            status: Some(status),
            reason: text(),
        },
        Class::Credential => Outcome::CredentialError {
            status: Some(status),
            reason: text(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(outcome: &Outcome) -> Option<Class> {
        match outcome {
            Outcome::Delivered { .. } => None,
            Outcome::Retry { .. } => Some(Class::Retry),
            Outcome::DeadToken { .. } => Some(Class::DeadToken),
            Outcome::Permanent { .. } => Some(Class::Permanent),
            Outcome::CredentialError { .. } => Some(Class::Credential),
        }
    }

    #[test]
    fn every_documented_reason_with_its_status() {
        use Class::*;
        let cases: &[(u16, &str, Class)] = &[
            (400, "BadCollapseId", Permanent),
            (400, "BadDeviceToken", DeadToken),
            (400, "BadExpirationDate", Permanent),
            (400, "BadMessageId", Permanent),
            (400, "BadPriority", Permanent),
            (400, "BadTopic", Credential),
            (400, "DeviceTokenNotForTopic", DeadToken),
            (400, "DuplicateHeaders", Permanent),
            (400, "IdleTimeout", Retry),
            (400, "InvalidPushType", Permanent),
            (400, "MissingDeviceToken", Permanent),
            (400, "MissingTopic", Credential),
            (400, "PayloadEmpty", Permanent),
            (400, "TopicDisallowed", Credential),
            (403, "BadCertificate", Credential),
            (403, "BadCertificateEnvironment", Credential),
            (403, "ExpiredProviderToken", Credential),
            (403, "Forbidden", Credential),
            (403, "InvalidProviderToken", Credential),
            (403, "MissingProviderToken", Credential),
            (403, "UnrelatedKeyIdInToken", Credential),
            (403, "BadEnvironmentKeyInToken", Credential),
            (404, "BadPath", Permanent),
            (405, "MethodNotAllowed", Permanent),
            (410, "ExpiredToken", DeadToken),
            (410, "Unregistered", DeadToken),
            (413, "PayloadTooLarge", Permanent),
            (429, "TooManyProviderTokenUpdates", Retry),
            (429, "TooManyRequests", Retry),
            (500, "InternalServerError", Retry),
            (503, "ServiceUnavailable", Retry),
            (503, "Shutdown", Retry),
        ];
        assert_eq!(cases.len(), APNS_REASONS.len());
        for &(status, reason, expected) in cases {
            let outcome = classify_apns(status, Some(reason), None, None);
            assert_eq!(class_of(&outcome), Some(expected), "{status} {reason}");
            assert_eq!(outcome.status(), Some(status));
            assert_eq!(outcome.reason(), reason);
        }
    }

    #[test]
    fn status_first() {
        // 410 is a dead token whatever the reason says.
        assert_eq!(
            classify_apns(410, Some("Whatever"), None, None),
            Outcome::DeadToken {
                status: 410,
                reason: "Whatever".into()
            }
        );
        assert_eq!(
            classify_apns(410, None, None, None).reason(),
            "Unregistered"
        );
        // 429/5xx retry even with a reason that would be permanent on a 400.
        assert!(matches!(
            classify_apns(500, Some("BadDeviceToken"), None, None),
            Outcome::Retry { .. }
        ));
        let after = Some(Duration::from_secs(30));
        assert_eq!(
            classify_apns(429, Some("TooManyRequests"), after, None),
            Outcome::Retry {
                after,
                status: Some(429),
                reason: "TooManyRequests".into()
            }
        );
        assert_eq!(
            classify_apns(503, None, after, None),
            Outcome::Retry {
                after,
                status: Some(503),
                reason: "HTTP 503".into()
            }
        );
    }

    #[test]
    fn unknown_reasons_fall_back_on_the_status() {
        assert!(matches!(
            classify_apns(403, Some("SomethingNew"), None, None),
            Outcome::CredentialError {
                status: Some(403),
                ..
            }
        ));
        assert!(matches!(
            classify_apns(401, None, None, None),
            Outcome::CredentialError { .. }
        ));
        assert!(matches!(
            classify_apns(400, Some("SomethingNew"), None, None),
            Outcome::Permanent {
                status: Some(400),
                ..
            }
        ));
        assert!(matches!(
            classify_apns(418, None, None, None),
            Outcome::Permanent { .. }
        ));
        // Reasons match case-insensitively.
        assert!(matches!(
            classify_apns(400, Some("baddevicetoken"), None, None),
            Outcome::DeadToken { .. }
        ));
    }

    #[test]
    fn delivered_keeps_the_apns_id() {
        assert_eq!(
            classify_apns(200, None, None, Some("ABC")),
            Outcome::Delivered {
                provider_id: Some("ABC".into())
            }
        );
    }
}
