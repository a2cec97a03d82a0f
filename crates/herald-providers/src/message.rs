//! The provider-neutral content of one push, and the JSON merge used for the `apn` / `fcm` overrides.

use serde_json::{Map, Value};
use uuid::Uuid;

/// Delivery priority of a push (`HIGH` is the API's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// APNs `apns-priority: 10`, FCM `HIGH` (legacy `high`).
    #[default]
    High,
    /// APNs `apns-priority: 5`, FCM `NORMAL` (legacy `normal`).
    Low,
}

/// What to send: the provider-neutral content of a notification.
///
/// It is rendered to a provider payload once ([`crate::apns::ApnsPrepared::new`],
/// [`crate::fcm::FcmPrepared::new`], [`crate::fcm_legacy::FcmLegacyPrepared::new`]) and the
/// rendered bytes are reused for every device token the message goes to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PushMessage {
    /// The notification's UUID. The `send` functions take the id of each notification
    /// separately (one message usually goes to many devices); this one is what callers use
    /// when they send a message to a single device.
    pub id: Uuid,
    pub title: Option<String>,
    pub body: Option<String>,
    /// Custom data. APNs: top-level payload keys (a key named `aps` is ignored: use the `apn`
    /// override to change `aps`). FCM: `data`, every value a string (non-strings are serialized
    /// as JSON).
    pub data: Map<String, Value>,
    /// Image URL: FCM `notification.image`; APNs sets `mutable-content: 1` and puts the URL at
    /// the top level of the payload under `image` for a notification service extension.
    pub image: Option<String>,
    /// APNs badge.
    pub badge: Option<u32>,
    /// APNs category.
    pub category: Option<String>,
    /// FCM `android.notification.click_action` (legacy `notification.click_action`).
    pub click_action: Option<String>,
    pub sound: Option<String>,
    /// A background, data-only push: APNs `content-available: 1`, push type `background`,
    /// priority 5, no alert/sound/badge; FCM data-only message.
    pub silent: bool,
    pub priority: Priority,
    /// Remaining lifetime in seconds when the message is rendered. 0 = deliver now or drop.
    pub ttl_seconds: u32,
    /// Absolute deadline (Unix seconds) used for `apns-expiration`. When `None`, the deadline is
    /// the render time plus `ttl_seconds`.
    pub expires_at_unix: Option<i64>,
    /// APNs `apns-collapse-id`, FCM `collapse_key`.
    pub collapse_key: Option<String>,
    /// Merged last into the APNs payload (JSON merge patch: objects merge recursively, other
    /// values replace, `null` removes a key).
    pub apn_override: Option<Value>,
    /// Merged last into the FCM v1 `message` object (and into the legacy body), like
    /// `apn_override`.
    pub fcm_override: Option<Value>,
}

impl PushMessage {
    /// A message with a fresh UUIDv7 id, high priority and the API's default TTL (28 days).
    pub fn new() -> Self {
        PushMessage {
            id: Uuid::now_v7(),
            ttl_seconds: 2_419_200,
            ..Default::default()
        }
    }
}

/// Deep-merges `patch` into `target` with JSON merge-patch semantics (RFC 7386): objects merge
/// key by key, recursively; any other value replaces the target; `null` removes the key.
pub fn merge_json(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch_map) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let Value::Object(target_map) = target else {
                unreachable!("just made an object")
            };
            for (key, value) in patch_map {
                if value.is_null() {
                    target_map.remove(key);
                } else {
                    merge_json(target_map.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Merges an override object into `target`; overrides that are not JSON objects are ignored.
pub(crate) fn apply_override(target: &mut Map<String, Value>, patch: Option<&Value>) {
    if let Some(patch @ Value::Object(_)) = patch {
        let mut value = Value::Object(std::mem::take(target));
        merge_json(&mut value, patch);
        if let Value::Object(map) = value {
            *target = map;
        }
    }
}

/// A JSON value as FCM wants a data value: strings as they are, anything else serialized.
pub(crate) fn data_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_is_deep_and_null_removes() {
        let mut target =
            json!({"aps": {"alert": {"title": "a", "body": "b"}, "sound": "default"}, "k": 1});
        merge_json(
            &mut target,
            &json!({"aps": {"alert": {"body": "B"}, "sound": null, "thread-id": "t"}, "k": [1]}),
        );
        assert_eq!(
            target,
            json!({"aps": {"alert": {"title": "a", "body": "B"}, "thread-id": "t"}, "k": [1]})
        );
    }

    #[test]
    fn merge_replaces_non_objects() {
        let mut target = json!({"a": "x"});
        merge_json(&mut target, &json!({"a": {"b": 1}}));
        assert_eq!(target, json!({"a": {"b": 1}}));
        let mut map = Map::new();
        map.insert("x".into(), json!(1));
        apply_override(&mut map, Some(&json!("not an object")));
        assert_eq!(Value::Object(map), json!({"x": 1}));
    }

    #[test]
    fn data_strings() {
        assert_eq!(data_string(&json!("s")), "s");
        assert_eq!(data_string(&json!(42)), "42");
        assert_eq!(data_string(&json!({"a": true})), r#"{"a":true}"#);
        assert_eq!(data_string(&json!(null)), "null");
    }
}
