//! Non-secret facts about a credential, returned by the API as read-only extension fields.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What an operator may see about a credential. Serializes to the Push API's response members:
/// `{"apn": {"authMethod": "certificate", "topic": "com.example.app", "expiresAt": "2026-01-01T00:00:00Z"}}`
/// or `{"fcm": {"projectId": "my-project", "clientEmail": "svc@my-project.iam.gserviceaccount.com"}}`,
/// meant to be `#[serde(flatten)]`ed into the credential object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CredentialFacts {
    /// An APNs credential (`APN` / `APN_SANDBOX`, or a Chat `apn` one).
    Apn(ApnFacts),
    /// An FCM HTTP v1 credential (service account).
    Fcm(FcmFacts),
}

/// How Herald authenticates to APNs with a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnAuthMethod {
    /// TLS client certificate.
    Certificate,
    /// ES256 provider token (JWT) signed with a .p8 key.
    Token,
}

/// Facts about an APNs credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApnFacts {
    pub auth_method: ApnAuthMethod,
    /// The `apns-topic` to send with: the bundle ID.
    pub topic: String,
    /// The certificate's notAfter (UTC, whole seconds); `null` for token auth, whose keys do not
    /// expire.
    #[serde(with = "rfc3339_seconds")]
    pub expires_at: Option<OffsetDateTime>,
}

/// Facts about an FCM service account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FcmFacts {
    pub project_id: String,
    pub client_email: String,
}

/// `time` at whole seconds in UTC, as the API's times are.
pub(super) fn to_api_time(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(0).unwrap_or(t)
}

/// RFC 3339, UTC, second precision, `Z`: `2026-01-01T00:00:00Z`.
pub(super) fn format_api_time(t: OffsetDateTime) -> String {
    let t = to_api_time(t);
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&format)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

mod rfc3339_seconds {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub(super) fn serialize<S: Serializer>(
        value: &Option<OffsetDateTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(t) => serializer.serialize_str(&super::format_api_time(*t)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|s| {
                OffsetDateTime::parse(&s, &Rfc3339)
                    .map(super::to_api_time)
                    .map_err(D::Error::custom)
            })
            .transpose()
    }
}
