//! Time as the store keeps it (integer milliseconds since the Unix epoch) and as the APIs show it
//! (RFC 3339, UTC, second precision, `Z`).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `2026-11-23T18:25:07Z` for a millisecond timestamp.
pub fn format_rfc3339(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let at = OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    at.format(&Rfc3339).unwrap_or_default()
}

/// Parses an RFC 3339 timestamp (any offset, any precision) into milliseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    Some((at.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_second_precision_and_z() {
        assert_eq!(format_rfc3339(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.5+01:00"),
            Some(1_700_000_000_500)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
