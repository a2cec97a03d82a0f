//! The FCM HTTP v1 `message` of a push.

use serde_json::{Map, Value, json};

use crate::Priority;
use crate::message::{PushMessage, apply_override, data_string};

/// FCM refuses messages whose payload (notification + data) exceeds this many bytes.
pub const FCM_MAX_PAYLOAD: usize = 4096;

/// The FCM HTTP v1 `message` for `msg` to `token`:
/// `{token, notification {title, body, image}, data (string values), android {priority HIGH|NORMAL,
/// ttl "Ns", collapse_key, notification {sound, click_action}}}`. A silent push is data-only (no
/// `notification` objects). The `fcm` override is merged into the message last
/// ([`crate::merge_json`]). The request body is `{"message": <this>}`.
pub fn fcm_message(msg: &PushMessage, token: &str) -> Value {
    let mut message = Map::new();
    message.insert("token".into(), json!(token));
    if !msg.silent {
        let mut notification = Map::new();
        if let Some(title) = &msg.title {
            notification.insert("title".into(), json!(title));
        }
        if let Some(body) = &msg.body {
            notification.insert("body".into(), json!(body));
        }
        if let Some(image) = &msg.image {
            notification.insert("image".into(), json!(image));
        }
        if !notification.is_empty() {
            message.insert("notification".into(), Value::Object(notification));
        }
    }
    if !msg.data.is_empty() {
        let data: Map<String, Value> = msg
            .data
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(data_string(v))))
            .collect();
        message.insert("data".into(), Value::Object(data));
    }
    let mut android = Map::new();
    android.insert(
        "priority".into(),
        json!(match msg.priority {
            Priority::High => "HIGH",
            Priority::Low => "NORMAL",
        }),
    );
    android.insert("ttl".into(), json!(format!("{}s", msg.ttl_seconds)));
    if let Some(collapse_key) = &msg.collapse_key {
        android.insert("collapse_key".into(), json!(collapse_key));
    }
    if !msg.silent {
        let mut notification = Map::new();
        if let Some(sound) = &msg.sound {
            notification.insert("sound".into(), json!(sound));
        }
        if let Some(click_action) = &msg.click_action {
            notification.insert("click_action".into(), json!(click_action));
        }
        if !notification.is_empty() {
            android.insert("notification".into(), Value::Object(notification));
        }
    }
    message.insert("android".into(), Value::Object(android));
    apply_override(&mut message, msg.fcm_override.as_ref());
    Value::Object(message)
}

/// The size FCM counts against its 4096-byte limit: the serialized `notification` and `data`.
pub fn fcm_payload_size(msg: &PushMessage) -> usize {
    let message = fcm_message(msg, "");
    ["notification", "data"]
        .iter()
        .filter_map(|key| message.get(*key))
        .map(|v| serde_json::to_vec(v).map_or(0, |b| b.len()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> PushMessage {
        PushMessage {
            title: Some("Hi".into()),
            body: Some("Your order shipped".into()),
            ttl_seconds: 3600,
            ..PushMessage::new()
        }
    }

    #[test]
    fn notification_message() {
        let mut m = msg();
        m.image = Some("https://example.com/a.png".into());
        m.sound = Some("default".into());
        m.click_action = Some("OPEN_ORDER".into());
        m.collapse_key = Some("order-42".into());
        m.badge = Some(3);
        m.data.insert("orderId".into(), json!("42"));
        m.data.insert("n".into(), json!(7));
        m.data.insert("obj".into(), json!({"a": [1, true]}));
        assert_eq!(
            fcm_message(&m, "tok"),
            json!({
                "token": "tok",
                "notification": {"title": "Hi", "body": "Your order shipped", "image": "https://example.com/a.png"},
                "data": {"orderId": "42", "n": "7", "obj": "{\"a\":[1,true]}"},
                "android": {
                    "priority": "HIGH",
                    "ttl": "3600s",
                    "collapse_key": "order-42",
                    "notification": {"sound": "default", "click_action": "OPEN_ORDER"}
                }
            })
        );
    }

    #[test]
    fn silent_is_data_only() {
        let mut m = msg();
        m.silent = true;
        m.sound = Some("default".into());
        m.priority = Priority::Low;
        m.ttl_seconds = 0;
        m.data.insert("sync".into(), json!(true));
        assert_eq!(
            fcm_message(&m, "tok"),
            json!({
                "token": "tok",
                "data": {"sync": "true"},
                "android": {"priority": "NORMAL", "ttl": "0s"}
            })
        );
    }

    #[test]
    fn override_merged_into_message() {
        let mut m = msg();
        m.fcm_override = Some(json!({
            "android": {"priority": "NORMAL", "notification": {"channel_id": "orders"}},
            "apns": {"payload": {"aps": {"badge": 1}}},
            "notification": {"image": null, "title": "T2"}
        }));
        m.image = Some("https://img".into());
        let v = fcm_message(&m, "tok");
        assert_eq!(v["android"]["priority"], "NORMAL");
        assert_eq!(v["android"]["ttl"], "3600s");
        assert_eq!(
            v["android"]["notification"],
            json!({"channel_id": "orders"})
        );
        assert_eq!(v["apns"]["payload"]["aps"]["badge"], 1);
        assert_eq!(
            v["notification"],
            json!({"title": "T2", "body": "Your order shipped"})
        );
    }

    #[test]
    fn payload_size() {
        let m = msg();
        assert_eq!(
            fcm_payload_size(&m),
            r#"{"body":"Your order shipped","title":"Hi"}"#.len()
        );
    }
}
