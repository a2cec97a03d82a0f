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

pub use parse::{MAX_COLLAPSE_KEY_BYTES, Problem, is_credential_id, parse, parse_valid};
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

/// Stored as `{"kind": "device", "token", "provider", "variables"?}` or
/// `{"kind": "user", "user_id", "variables"?}` (serde's internally tagged form); read back by
/// [`Recipient`]'s own `Deserialize` (below).
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// Reads the form `Serialize` writes in one pass. serde's derived reader of an internally tagged
/// enum first copies each recipient into a buffer of its own (to find the tag), then reads that:
/// twice the work, and most of the planner's parse of a 10,000-recipient request.
impl<'de> Deserialize<'de> for Recipient {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        enum Kind {
            Device,
            User,
        }
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "snake_case")]
        enum Field {
            Kind,
            Token,
            Provider,
            UserId,
            Variables,
            #[serde(other)]
            Other,
        }
        struct RecipientVisitor;
        impl<'de> serde::de::Visitor<'de> for RecipientVisitor {
            type Value = Recipient;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a recipient object with a \"kind\"")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Recipient, A::Error> {
                use serde::de::Error;
                let mut kind = None;
                let mut token = None;
                let mut provider = None;
                let mut user_id = None;
                let mut variables = None;
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Kind => kind = Some(map.next_value::<Kind>()?),
                        Field::Token => token = Some(map.next_value::<String>()?),
                        Field::Provider => provider = Some(map.next_value::<Provider>()?),
                        Field::UserId => user_id = Some(map.next_value::<String>()?),
                        Field::Variables => {
                            variables = Some(map.next_value::<Map<String, Value>>()?)
                        }
                        Field::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                let variables = variables.unwrap_or_default();
                match kind.ok_or_else(|| A::Error::missing_field("kind"))? {
                    Kind::Device => Ok(Recipient::Device {
                        token: token.ok_or_else(|| A::Error::missing_field("token"))?,
                        provider: provider.ok_or_else(|| A::Error::missing_field("provider"))?,
                        variables,
                    }),
                    Kind::User => Ok(Recipient::User {
                        user_id: user_id.ok_or_else(|| A::Error::missing_field("user_id"))?,
                        variables,
                    }),
                }
            }
        }
        deserializer.deserialize_map(RecipientVisitor)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What `Serialize` writes, `Deserialize` reads back (the store keeps requests this way).
    #[test]
    fn recipients_read_back_what_they_write() {
        let mut variables = Map::new();
        variables.insert("name".into(), Value::from("Ada"));
        let recipients = vec![
            Recipient::Device {
                token: "t1".into(),
                provider: Provider::Apn,
                variables: Map::new(),
            },
            Recipient::Device {
                token: "t2".into(),
                provider: Provider::Fcm,
                variables: variables.clone(),
            },
            Recipient::User {
                user_id: "u1".into(),
                variables: Map::new(),
            },
            Recipient::User {
                user_id: "u2".into(),
                variables,
            },
        ];
        let text = serde_json::to_string(&recipients).unwrap();
        assert!(text.contains(r#"{"kind":"user","user_id":"u1"}"#), "{text}");
        let read: Vec<Recipient> = serde_json::from_str(&text).unwrap();
        assert_eq!(read, recipients);
        // Fields in any order, unknown ones ignored (as the derived reader did).
        let read: Recipient =
            serde_json::from_str(r#"{"provider":"FCM","extra":[1],"token":"t","kind":"device"}"#)
                .unwrap();
        assert_eq!(
            read,
            Recipient::Device {
                token: "t".into(),
                provider: Provider::Fcm,
                variables: Map::new()
            }
        );
        for (bad, missing) in [
            (r#"{"token":"t","provider":"APN"}"#, "kind"),
            (r#"{"kind":"device","provider":"APN"}"#, "token"),
            (r#"{"kind":"user"}"#, "user_id"),
        ] {
            let err = serde_json::from_str::<Recipient>(bad).unwrap_err();
            assert!(err.to_string().contains(missing), "{bad}: {err}");
        }
        assert!(serde_json::from_str::<Recipient>(r#"{"kind":"robot"}"#).is_err());
    }
}
