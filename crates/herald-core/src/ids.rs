//! Identifiers.
//!
//! Push API resources use TypeID-style IDs: `prefix_` + a UUIDv7 as 26 lowercase Crockford base32
//! characters. UUIDv7 starts with a millisecond timestamp, so IDs made later sort later; the store
//! relies on that for newest-first keyset pagination. Accounts, API keys and Chat credentials use
//! Twilio's SID form: two letters + 32 lowercase hex digits.

use uuid::Uuid;

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// The value of each byte as a [`CROCKFORD`] digit, or [`INVALID_DIGIT`] (the dispatcher parses
/// every notification's ID for its `apns-id`: a table, not a search of the alphabet).
const CROCKFORD_DIGIT: [u8; 256] = {
    let mut table = [INVALID_DIGIT; 256];
    let mut i = 0;
    while i < CROCKFORD.len() {
        table[CROCKFORD[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const INVALID_DIGIT: u8 = 0xff;

pub const CREDENTIAL: &str = "comms_credential";
pub const DEVICE_REGISTRATION: &str = "comms_device_registration";
pub const USER: &str = "comms_pushnotificationuser";
pub const PUSH_NOTIFICATION: &str = "comms_pushnotification";
pub const OPERATION: &str = "comms_operation";

/// A new TypeID with the given prefix (one of the constants above).
pub fn new_type_id(prefix: &str) -> String {
    type_id_from_uuid(prefix, Uuid::now_v7())
}

pub fn type_id_from_uuid(prefix: &str, uuid: Uuid) -> String {
    let value = uuid.as_u128();
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    for i in 0..26 {
        let shift = 5 * (25 - i);
        out.push(CROCKFORD[((value >> shift) & 0x1f) as usize] as char);
    }
    out
}

/// The UUID inside a TypeID of the given prefix, or `None` when `id` is not one.
pub fn parse_type_id(prefix: &str, id: &str) -> Option<Uuid> {
    let suffix = id.strip_prefix(prefix)?.strip_prefix('_')?;
    if suffix.len() != 26 || suffix.as_bytes()[0] > b'7' {
        return None;
    }
    let mut value: u128 = 0;
    for byte in suffix.bytes() {
        let digit = CROCKFORD_DIGIT[usize::from(byte)];
        if digit == INVALID_DIGIT {
            return None;
        }
        value = (value << 5) | u128::from(digit);
    }
    Some(Uuid::from_u128(value))
}

/// A Twilio-style SID: `prefix` (two capital letters) + 32 lowercase hex digits of a UUID v7.
/// v7 (time first, then random bits) rather than v4: lists are ordered by creation time and
/// then by SID, and SIDs made in one millisecond must keep their creation order there (the uuid
/// crate orders the v7 UUIDs of one process by creation).
pub fn new_sid(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::now_v7().simple())
}

/// Whether `sid` has the form `prefix` + 32 lowercase hex digits.
pub fn is_sid(prefix: &str, sid: &str) -> bool {
    sid.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

pub const ACCOUNT_SID: &str = "AC";
pub const API_KEY_SID: &str = "SK";
pub const CHAT_CREDENTIAL_SID: &str = "CR";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_id_round_trips_and_sorts_by_time() {
        let a = new_type_id(CREDENTIAL);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_type_id(CREDENTIAL);
        assert!(a.starts_with("comms_credential_"));
        assert_eq!(a.len(), "comms_credential_".len() + 26);
        assert!(a < b, "{a} should sort before {b}");
        let uuid = parse_type_id(CREDENTIAL, &a).expect("parses");
        assert_eq!(type_id_from_uuid(CREDENTIAL, uuid), a);
    }

    #[test]
    fn type_id_rejects_other_prefixes_and_bad_text() {
        let id = new_type_id(USER);
        assert!(parse_type_id(CREDENTIAL, &id).is_none());
        assert!(
            parse_type_id(
                USER,
                "comms_pushnotificationuser_8zzzzzzzzzzzzzzzzzzzzzzzzz"
            )
            .is_none()
        );
        assert!(
            parse_type_id(
                USER,
                "comms_pushnotificationuser_0000000000000000000000000u"
            )
            .is_none()
        );
        assert!(parse_type_id(USER, "comms_pushnotificationuser_short").is_none());
        // Lowercase only, as written; every byte outside the alphabet is refused.
        for bad in ["A", "I", "L", "O", "U", "-", "\u{0}"] {
            let id = format!("comms_pushnotificationuser_0000000000000000000000000{bad}");
            assert!(parse_type_id(USER, &id).is_none(), "{id:?}");
        }
        let all = "comms_pushnotificationuser_0123456789abcdefghjkmnpqrs";
        assert_eq!(
            type_id_from_uuid(USER, parse_type_id(USER, all).expect("parses")),
            all
        );
    }

    #[test]
    fn sids() {
        let sid = new_sid(ACCOUNT_SID);
        assert!(is_sid(ACCOUNT_SID, &sid));
        assert!(!is_sid(API_KEY_SID, &sid));
        assert!(!is_sid(ACCOUNT_SID, "AC123"));
        assert!(!is_sid(ACCOUNT_SID, &sid.to_uppercase()));
        // Made one after another (many within one millisecond), they sort in that order.
        let made: Vec<String> = (0..1000).map(|_| new_sid(CHAT_CREDENTIAL_SID)).collect();
        let mut sorted = made.clone();
        sorted.sort();
        assert_eq!(sorted, made);
    }
}
