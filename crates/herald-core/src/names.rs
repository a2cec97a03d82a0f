//! Validated names and values that users send: app names, device tokens, providers, tags.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// An app's name, which is also its key: `^[a-z0-9_]{1,64}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

impl TryFrom<String> for AppName {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<AppName> for String {
    fn from(name: AppName) -> String {
        name.0
    }
}

impl AppName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid_chars = text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if text.is_empty() || text.len() > 64 || !valid_chars {
            return Err(format!(
                "app name must be 1-64 characters of a-z, 0-9 and _ (got {:?})",
                truncate(text, 80)
            ));
        }
        Ok(Self(text.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A device token: 1-4096 printable ASCII characters without spaces. Herald assumes no other
/// format; the provider says whether a token is dead.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DeviceToken(String);

impl DeviceToken {
    pub const MAX_LEN: usize = 4096;

    pub fn parse(text: &str) -> Result<Self, String> {
        Self::check(text)?;
        Ok(Self(text.to_owned()))
    }
    /// [`DeviceToken::parse`] of a string already owned (no copy).
    pub fn parse_owned(text: String) -> Result<Self, String> {
        Self::check(&text)?;
        Ok(Self(text))
    }
    fn check(text: &str) -> Result<(), String> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err("token must be 1-4096 characters".into());
        }
        if !text.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err("token must be printable ASCII without spaces".into());
        }
        Ok(())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Where a device receives pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Provider {
    #[serde(rename = "APN")]
    Apn,
    #[serde(rename = "FCM")]
    Fcm,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Apn => "APN",
            Provider::Fcm => "FCM",
        }
    }
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "APN" => Ok(Provider::Apn),
            "FCM" => Ok(Provider::Fcm),
            other => Err(format!(
                "provider must be one of APN, FCM (got {:?})",
                truncate(other, 40)
            )),
        }
    }
}

/// A device's state: `ACTIVE` until a provider says its token is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DeviceStatus {
    Active,
    Invalid,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Active => "ACTIVE",
            DeviceStatus::Invalid => "INVALID",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ACTIVE" => Some(DeviceStatus::Active),
            "INVALID" => Some(DeviceStatus::Invalid),
            _ => None,
        }
    }
}

/// Resource tags: at most 10 pairs, keys at most 128 characters, values at most 256.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tags(BTreeMap<String, String>);

impl Tags {
    pub const MAX_PAIRS: usize = 10;
    pub const MAX_KEY_CHARS: usize = 128;
    pub const MAX_VALUE_CHARS: usize = 256;

    /// Validates a JSON value as tags; errors are `(json path below the tags field, message)`.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, Vec<(String, String)>> {
        let Some(object) = value.as_object() else {
            return Err(vec![(
                String::new(),
                "tags must be an object of string values".into(),
            )]);
        };
        let mut errors = Vec::new();
        if object.len() > Self::MAX_PAIRS {
            errors.push((
                String::new(),
                format!("at most {} tags are allowed", Self::MAX_PAIRS),
            ));
        }
        let mut tags = BTreeMap::new();
        for (key, value) in object {
            let path = format!(".{key}");
            if key.is_empty() || key.chars().count() > Self::MAX_KEY_CHARS {
                errors.push((path.clone(), "tag keys must be 1-128 characters".into()));
            }
            match value.as_str() {
                Some(text) if text.chars().count() <= Self::MAX_VALUE_CHARS => {
                    tags.insert(key.clone(), text.to_owned());
                }
                Some(_) => errors.push((path, "tag values must be at most 256 characters".into())),
                None => errors.push((path, "tag values must be strings".into())),
            }
        }
        if errors.is_empty() {
            Ok(Self(tags))
        } else {
            Err(errors)
        }
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn to_json_string(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".into())
    }

    /// Tags as stored (a JSON object); unreadable text gives empty tags.
    pub fn from_stored(text: &str) -> Self {
        Self(serde_json::from_str(text).unwrap_or_default())
    }
}

impl From<BTreeMap<String, String>> for Tags {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }
}

/// Shortens user text quoted back in an error message.
pub fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(max_chars).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn app_names() {
        assert!(AppName::parse("shop_2").is_ok());
        assert!(AppName::parse(&"a".repeat(64)).is_ok());
        assert!(AppName::parse(&"a".repeat(65)).is_err());
        assert!(AppName::parse("").is_err());
        assert!(AppName::parse("Shop").is_err());
        assert!(AppName::parse("shop-app").is_err());
    }

    #[test]
    fn device_tokens() {
        assert!(DeviceToken::parse("a1b2:APA91b-_x").is_ok());
        assert!(DeviceToken::parse(&"f".repeat(4096)).is_ok());
        assert!(DeviceToken::parse(&"f".repeat(4097)).is_err());
        assert!(DeviceToken::parse("").is_err());
        assert!(DeviceToken::parse("has space").is_err());
        assert!(DeviceToken::parse("tab\there").is_err());
        assert!(DeviceToken::parse("é").is_err());
    }

    #[test]
    fn tags_limits() {
        assert!(Tags::from_json(&json!({"env": "prod"})).is_ok());
        assert!(Tags::from_json(&json!({"env": 1})).is_err());
        assert!(Tags::from_json(&json!(["env"])).is_err());
        let eleven: serde_json::Map<_, _> =
            (0..11).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(Tags::from_json(&serde_json::Value::Object(eleven)).is_err());
        assert!(Tags::from_json(&json!({"k".repeat(129): "v"})).is_err());
        assert!(Tags::from_json(&json!({"k": "v".repeat(257)})).is_err());
        let errors = Tags::from_json(&json!({"a": 1, "b": 2})).unwrap_err();
        assert_eq!(errors.len(), 2, "every bad pair is reported");
    }
}
