//! The APNs JSON payload and request headers of a message.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::Priority;
use crate::message::{PushMessage, apply_override};

/// APNs refuses payloads above this many bytes (alert and background pushes).
pub const APNS_MAX_PAYLOAD: usize = 4096;

/// The APNs payload of `msg` as a JSON value (see [`apns_payload`]).
pub fn apns_payload_value(msg: &PushMessage) -> Value {
    let mut root = Map::new();
    // Custom data at the top level; `aps` is Apple's and only the `apn` override may change it.
    for (key, value) in &msg.data {
        if key != "aps" {
            root.insert(key.clone(), value.clone());
        }
    }
    let mut aps = Map::new();
    if msg.silent {
        aps.insert("content-available".into(), json!(1));
    } else {
        let mut alert = Map::new();
        if let Some(title) = &msg.title {
            alert.insert("title".into(), json!(title));
        }
        if let Some(body) = &msg.body {
            alert.insert("body".into(), json!(body));
        }
        if !alert.is_empty() {
            aps.insert("alert".into(), Value::Object(alert));
        }
        if let Some(sound) = &msg.sound {
            aps.insert("sound".into(), json!(sound));
        }
        if let Some(badge) = msg.badge {
            aps.insert("badge".into(), json!(badge));
        }
        if let Some(category) = &msg.category {
            aps.insert("category".into(), json!(category));
        }
        if let Some(image) = &msg.image {
            // A notification service extension downloads the image and attaches it.
            aps.insert("mutable-content".into(), json!(1));
            root.insert("image".into(), json!(image));
        }
    }
    root.insert("aps".into(), Value::Object(aps));
    apply_override(&mut root, msg.apn_override.as_ref());
    Value::Object(root)
}

/// The APNs payload bytes of `msg`: `aps.alert {title, body}`, `aps.sound`, `aps.badge`,
/// `aps.category`, `aps.mutable-content: 1` with the image URL under the top-level `image` key,
/// custom data keys at the top level; a silent push carries `aps.content-available: 1` and no
/// alert, sound, badge or category. The `apn` override is merged last
/// ([`crate::merge_json`]). Check the length against [`APNS_MAX_PAYLOAD`].
pub fn apns_payload(msg: &PushMessage) -> Vec<u8> {
    serde_json::to_vec(&apns_payload_value(msg)).expect("JSON values serialize")
}

/// The per-message APNs headers of `msg` (everything but the per-request `apns-id`, `authorization`
/// and `apns-topic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsHeaders {
    /// `apns-push-type`: `alert`, or `background` for silent pushes.
    pub push_type: &'static str,
    /// `apns-priority`: 10 for high, 5 for low and for every silent push.
    pub priority: u8,
    /// `apns-expiration` (Unix seconds): 0 when the TTL is 0, else the message's deadline.
    pub expiration: i64,
    /// `apns-collapse-id`.
    pub collapse_id: Option<String>,
}

/// The headers of `msg` when rendered at `now`.
pub fn apns_headers(msg: &PushMessage, now: SystemTime) -> ApnsHeaders {
    let now_unix = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let expiration = if msg.ttl_seconds == 0 {
        0
    } else {
        msg.expires_at_unix
            .unwrap_or(now_unix + i64::from(msg.ttl_seconds))
    };
    ApnsHeaders {
        push_type: if msg.silent { "background" } else { "alert" },
        priority: match (msg.silent, msg.priority) {
            (true, _) | (false, Priority::Low) => 5,
            (false, Priority::High) => 10,
        },
        expiration,
        collapse_id: msg.collapse_key.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn msg() -> PushMessage {
        PushMessage {
            title: Some("Hi".into()),
            body: Some("Your order shipped".into()),
            ttl_seconds: 3600,
            ..PushMessage::new()
        }
    }

    fn payload(m: &PushMessage) -> Value {
        serde_json::from_slice(&apns_payload(m)).unwrap()
    }

    #[test]
    fn alert() {
        let mut m = msg();
        m.sound = Some("default".into());
        m.badge = Some(0);
        m.category = Some("ORDER".into());
        assert_eq!(
            payload(&m),
            json!({"aps": {"alert": {"title": "Hi", "body": "Your order shipped"},
                "sound": "default", "badge": 0, "category": "ORDER"}})
        );
        m.title = None;
        assert_eq!(
            payload(&m)["aps"]["alert"],
            json!({"body": "Your order shipped"})
        );
    }

    #[test]
    fn no_alert_without_text() {
        let m = PushMessage {
            badge: Some(3),
            ..PushMessage::new()
        };
        assert_eq!(payload(&m), json!({"aps": {"badge": 3}}));
    }

    #[test]
    fn silent() {
        let mut m = msg();
        m.silent = true;
        m.sound = Some("default".into());
        m.badge = Some(1);
        m.image = Some("https://img".into());
        m.data.insert("sync".into(), json!("inbox"));
        assert_eq!(
            payload(&m),
            json!({"aps": {"content-available": 1}, "sync": "inbox"})
        );
        let h = apns_headers(&m, SystemTime::now());
        assert_eq!(h.push_type, "background");
        assert_eq!(h.priority, 5);
    }

    #[test]
    fn image_and_data() {
        let mut m = msg();
        m.image = Some("https://example.com/a.png".into());
        m.data.insert("orderId".into(), json!("42"));
        m.data.insert("n".into(), json!(7));
        m.data.insert("aps".into(), json!({"evil": true}));
        assert_eq!(
            payload(&m),
            json!({
                "aps": {"alert": {"title": "Hi", "body": "Your order shipped"}, "mutable-content": 1},
                "image": "https://example.com/a.png",
                "orderId": "42",
                "n": 7
            })
        );
    }

    #[test]
    fn override_merged_last() {
        let mut m = msg();
        m.sound = Some("default".into());
        m.data.insert("k".into(), json!("v"));
        m.apn_override = Some(json!({
            "aps": {"alert": {"title": "Override"}, "sound": null, "thread-id": "t1"},
            "k": {"nested": true}
        }));
        assert_eq!(
            payload(&m),
            json!({
                "aps": {"alert": {"title": "Override", "body": "Your order shipped"}, "thread-id": "t1"},
                "k": {"nested": true}
            })
        );
    }

    #[test]
    fn headers_priority_and_expiration() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut m = msg();
        m.collapse_key = Some("order-42".into());
        assert_eq!(
            apns_headers(&m, now),
            ApnsHeaders {
                push_type: "alert",
                priority: 10,
                expiration: 1_700_003_600,
                collapse_id: Some("order-42".into()),
            }
        );
        m.priority = Priority::Low;
        assert_eq!(apns_headers(&m, now).priority, 5);
        m.expires_at_unix = Some(1_700_000_500);
        assert_eq!(apns_headers(&m, now).expiration, 1_700_000_500);
        m.ttl_seconds = 0;
        assert_eq!(apns_headers(&m, now).expiration, 0);
    }
}
