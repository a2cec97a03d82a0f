//! What a provider said about one push, classified for the delivery engine.

use std::fmt;
use std::time::{Duration, SystemTime};

/// The classified answer to one send.
///
/// `reason` is the provider's reason code (`BadDeviceToken`, `UNREGISTERED`, `NotRegistered`,
/// ...), followed by `": "` and a human-readable explanation when there is one
/// (`"INVALID_ARGUMENT: The registration token is not a valid FCM registration token"`).
/// [`Outcome::reason_code`] returns the part before the colon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted the push. `provider_id` is its id for it (APNs `apns-id`, FCM message
    /// name, legacy `message_id`).
    Delivered { provider_id: Option<String> },
    /// Try again later (at the earliest after `after` when the provider said so): throttling,
    /// provider trouble, connection errors, timeouts.
    Retry {
        after: Option<Duration>,
        status: Option<u16>,
        reason: String,
    },
    /// The device token is dead: mark the device `INVALID`.
    DeadToken { status: u16, reason: String },
    /// This notification can never succeed (payload too large, bad collapse id, ...); other
    /// notifications through the same credential can.
    Permanent { status: Option<u16>, reason: String },
    /// The credential itself is bad (bad key or certificate, wrong environment or project, revoked
    /// access): nothing sent with it will succeed until it is fixed.
    CredentialError { status: Option<u16>, reason: String },
}

impl Outcome {
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered { .. })
    }

    /// The HTTP status the provider answered with, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Delivered { .. } => None,
            Outcome::Retry { status, .. }
            | Outcome::Permanent { status, .. }
            | Outcome::CredentialError { status, .. } => *status,
            Outcome::DeadToken { status, .. } => Some(*status),
        }
    }

    /// The whole reason text (empty for `Delivered`).
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Delivered { .. } => "",
            Outcome::Retry { reason, .. }
            | Outcome::DeadToken { reason, .. }
            | Outcome::Permanent { reason, .. }
            | Outcome::CredentialError { reason, .. } => reason,
        }
    }

    /// The provider's reason code: the reason up to the first `": "`.
    pub fn reason_code(&self) -> &str {
        let reason = self.reason();
        reason.split_once(": ").map_or(reason, |(code, _)| code)
    }

    pub(crate) fn retry(reason: impl Into<String>) -> Outcome {
        Outcome::Retry {
            after: None,
            status: None,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Outcome::Delivered { provider_id } => {
                return match provider_id {
                    Some(id) => write!(f, "delivered ({id})"),
                    None => write!(f, "delivered"),
                };
            }
            Outcome::Retry { .. } => "retry",
            Outcome::DeadToken { .. } => "dead token",
            Outcome::Permanent { .. } => "permanent failure",
            Outcome::CredentialError { .. } => "credential error",
        };
        match self.status() {
            Some(status) => write!(f, "{kind} (HTTP {status}): {}", self.reason()),
            None => write!(f, "{kind}: {}", self.reason()),
        }
    }
}

/// `code` or `code: message`.
pub(crate) fn reason_text(code: &str, message: Option<&str>) -> String {
    match message {
        Some(message) if !message.is_empty() && message != code => format!("{code}: {message}"),
        _ => code.to_string(),
    }
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date (IMF-fixdate, RFC 850 or asctime).
/// A date in the past means "now" (zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = parse_http_date(value)?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

fn parse_http_date(value: &str) -> Option<SystemTime> {
    use time::PrimitiveDateTime;
    use time::macros::format_description;
    // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    let imf = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    // asctime: Sun Nov  6 08:49:37 1994
    let asctime = format_description!(
        "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
    );
    // RFC 850 (Sunday, 06-Nov-94 08:49:37 GMT), rewritten with a four-digit year.
    let rfc850 = || {
        let (_, rest) = value.split_once(", ")?;
        let mut parts = rest.splitn(3, '-');
        let (day, month, rest) = (parts.next()?, parts.next()?, parts.next()?);
        let (yy, time) = rest.split_once(' ')?;
        let yy: i32 = yy.parse().ok().filter(|_| yy.len() == 2)?;
        // Two-digit years: RFC 9110 reads a year more than 50 years ahead as past.
        let year = if yy >= 70 { 1900 + yy } else { 2000 + yy };
        let rewritten = format!("{day} {month} {year} {time}");
        PrimitiveDateTime::parse(
            &rewritten,
            format_description!("[day] [month repr:short] [year] [hour]:[minute]:[second] GMT"),
        )
        .ok()
    };
    let parsed = PrimitiveDateTime::parse(value, imf)
        .ok()
        .or_else(rfc850)
        .or_else(|| PrimitiveDateTime::parse(value, asctime).ok())?;
    let unix = parsed.assume_utc().unix_timestamp();
    if unix < 0 {
        return None;
    }
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(unix as u64))
}

/// `Retry-After` from response headers.
pub(crate) fn retry_after_header(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:47 1994", now),
            Some(Duration::from_secs(10))
        );
        // In the past: retry now.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn reason_code_and_display() {
        let o = Outcome::DeadToken {
            status: 400,
            reason: reason_text(
                "INVALID_ARGUMENT",
                Some("The registration token is not valid"),
            ),
        };
        assert_eq!(o.reason_code(), "INVALID_ARGUMENT");
        assert_eq!(o.status(), Some(400));
        assert_eq!(
            o.to_string(),
            "dead token (HTTP 400): INVALID_ARGUMENT: The registration token is not valid"
        );
        assert_eq!(reason_text("X", Some("X")), "X");
        assert_eq!(reason_text("X", Some("")), "X");
        let d = Outcome::Delivered { provider_id: None };
        assert!(d.is_delivered());
        assert_eq!(d.reason_code(), "");
        assert_eq!(Outcome::retry("boom").to_string(), "retry: boom");
    }
}
