//! The send body (`POST /v1/PushNotifications`) → [`SendRequest`], with every rule of API.md.
//! Every problem is reported with its JSON path, not just the first.

use serde_json::{Map, Value};

use super::template::{check_template, has_markup};
use super::{Content, Priority, Recipient, SendRequest, Sender};
use crate::ids;
use crate::names::truncate;
use crate::{AppName, DeviceToken, Provider, Tags};

/// `(JSON path, message)` of one problem.
pub type Problem = (String, String);

const TOP_FIELDS: &[&str] = &[
    "from",
    "to",
    "content",
    "silent",
    "priority",
    "sound",
    "ttl",
    "collapseKey",
    "apn",
    "fcm",
    "schedule",
    "tags",
];
const FROM_FIELDS: &[&str] = &["appName", "apn", "fcm"];
const RECIPIENT_FIELDS: &[&str] = &["token", "provider", "userId", "variables"];
const CONTENT_FIELDS: &[&str] = &[
    "title",
    "body",
    "data",
    "image",
    "badge",
    "category",
    "clickAction",
];
const SCHEDULE_FIELDS: &[&str] = &["sendAt"];

/// The most bytes of an APNs `apns-collapse-id`.
pub const MAX_COLLAPSE_KEY_BYTES: usize = 64;
/// The most characters of an `image` URL.
pub const MAX_IMAGE_URL_CHARS: usize = 2048;

struct Errors(Vec<Problem>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push((path.into(), message.into()));
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A field's value, `None` when absent or `null` (null means "not given" everywhere).
fn field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn deny_unknown(map: &Map<String, Value>, path: &str, allowed: &[&str], errors: &mut Errors) {
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.add(
                join(path, key),
                format!(
                    "unknown field {:?}; allowed: {}",
                    truncate(key, 64),
                    allowed.join(", ")
                ),
            );
        }
    }
}

fn string<'a>(
    map: &'a Map<String, Value>,
    path: &str,
    key: &str,
    errors: &mut Errors,
) -> Option<&'a str> {
    let value = field(map, key)?;
    let text = value.as_str();
    if text.is_none() {
        errors.add(join(path, key), format!("{key} must be a string"));
    }
    text
}

fn object<'a>(
    map: &'a Map<String, Value>,
    path: &str,
    key: &str,
    errors: &mut Errors,
) -> Option<&'a Map<String, Value>> {
    let value = field(map, key)?;
    let object = value.as_object();
    if object.is_none() {
        errors.add(join(path, key), format!("{key} must be an object"));
    }
    object
}

/// Parses and validates a send body. `now_ms` decides whether `schedule.sendAt` is in the future.
pub fn parse(body: &Value, now_ms: i64) -> Result<SendRequest, Vec<Problem>> {
    let Some(map) = body.as_object() else {
        return Err(vec![(String::new(), "body must be a JSON object".into())]);
    };
    parse_object(map, None, now_ms)
}

/// What [`parse`] makes of the JSON `body`, read straight from its bytes, when the body has no
/// problem; `None` when it has any (or is not JSON, or repeats a key, or spells a recipient's
/// provider with an escape): the caller then parses it into a `Value` and runs [`parse`], which
/// words every problem. A `null` counts as absent, as in [`parse`]. Each recipient is read into its [`Recipient`] at once, where [`parse`] needs the
/// whole body as a `Value` first (a map and four strings per recipient, read again): in a
/// 10,000-recipient send that `Value` was most of the API's CPU.
pub fn parse_valid(body: &[u8], now_ms: i64) -> Option<SendRequest> {
    let body: fast::Body = serde_json::from_slice(body).ok()?;
    parse_object(&body.rest, Some(body.to), now_ms).ok()
}

/// [`parse`] of a body object; `to`, when given, are its recipients read already (and `map` has
/// no `to` key).
fn parse_object(
    map: &Map<String, Value>,
    to: Option<Vec<Recipient>>,
    now_ms: i64,
) -> Result<SendRequest, Vec<Problem>> {
    let mut errors = Errors(Vec::new());
    deny_unknown(map, "", TOP_FIELDS, &mut errors);

    let from = parse_from(map, &mut errors);
    let to = match to {
        Some(to) => {
            check_recipient_count(to.len(), &mut errors);
            to
        }
        None => parse_to(map, &mut errors),
    };

    let silent = match field(map, "silent") {
        None => false,
        Some(Value::Bool(flag)) => *flag,
        Some(_) => {
            errors.add("silent", "silent must be true or false");
            false
        }
    };
    let content = parse_content(map, silent, &mut errors);

    let priority = match field(map, "priority") {
        None => Priority::High,
        Some(Value::String(text)) if text == "HIGH" => Priority::High,
        Some(Value::String(text)) if text == "LOW" => Priority::Low,
        Some(other) => {
            errors.add(
                "priority",
                format!(
                    "priority must be one of HIGH, LOW (got {})",
                    truncate(&other.to_string(), 40)
                ),
            );
            Priority::High
        }
    };
    let sound = string(map, "", "sound", &mut errors).map(str::to_owned);
    if sound.as_deref() == Some("") {
        errors.add(
            "sound",
            "sound must not be empty (leave it out for no sound)",
        );
    }

    let ttl = match field(map, "ttl") {
        None => SendRequest::MAX_TTL,
        Some(value) => match value.as_u64() {
            Some(n) if n <= u64::from(SendRequest::MAX_TTL) => n as u32,
            _ => {
                errors.add(
                    "ttl",
                    format!(
                        "ttl must be an integer number of seconds from 0 to {}",
                        SendRequest::MAX_TTL
                    ),
                );
                SendRequest::MAX_TTL
            }
        },
    };

    let collapse_key = string(map, "", "collapseKey", &mut errors).map(str::to_owned);
    if let Some(key) = &collapse_key
        && (key.is_empty() || key.len() > MAX_COLLAPSE_KEY_BYTES)
    {
        errors.add(
            "collapseKey",
            format!("collapseKey must be 1-{MAX_COLLAPSE_KEY_BYTES} bytes"),
        );
    }

    let apn = object(map, "", "apn", &mut errors).map(|o| Value::Object(o.clone()));
    let fcm = object(map, "", "fcm", &mut errors).map(|o| Value::Object(o.clone()));

    let send_at_ms = parse_schedule(map, now_ms, &mut errors);

    let tags = match field(map, "tags") {
        None => Tags::default(),
        Some(value) => Tags::from_json(value).unwrap_or_else(|problems| {
            for (sub, message) in problems {
                errors.add(format!("tags{sub}"), message);
            }
            Tags::default()
        }),
    };

    let templated = content.title.as_deref().is_some_and(has_markup)
        || content.body.as_deref().is_some_and(has_markup);

    if !errors.0.is_empty() {
        return Err(errors.0);
    }
    Ok(SendRequest {
        from,
        to,
        content,
        silent,
        priority,
        sound,
        ttl,
        collapse_key,
        apn,
        fcm,
        send_at_ms,
        tags,
        templated,
    })
}

/// A credential ID as `from.apn` / `from.fcm` accept it: a Push TypeID or a Chat `CR` sid.
pub fn is_credential_id(text: &str) -> bool {
    ids::parse_type_id(ids::CREDENTIAL, text).is_some()
        || ids::is_sid(ids::CHAT_CREDENTIAL_SID, text)
}

fn parse_from(map: &Map<String, Value>, errors: &mut Errors) -> Sender {
    let Some(value) = field(map, "from") else {
        return Sender::AccountDefault;
    };
    let Some(from) = value.as_object() else {
        errors.add(
            "from",
            "from must be an object: {\"appName\"} or {\"apn\", \"fcm\"} credential IDs",
        );
        return Sender::AccountDefault;
    };
    deny_unknown(from, "from", FROM_FIELDS, errors);
    let app_name = string(from, "from", "appName", errors).and_then(|text| {
        AppName::parse(text)
            .map_err(|message| errors.add("from.appName", message))
            .ok()
    });
    let mut credential = |slot: &str| -> Option<String> {
        let text = string(from, "from", slot, errors)?;
        if is_credential_id(text) {
            Some(text.to_owned())
        } else {
            errors.add(
                format!("from.{slot}"),
                format!(
                    "from.{slot} must be a credential ID (comms_credential_... or CR...), got {:?}",
                    truncate(text, 80)
                ),
            );
            None
        }
    };
    let apn = credential("apn");
    let fcm = credential("fcm");
    let names_app = field(from, "appName").is_some();
    let names_credentials = field(from, "apn").is_some() || field(from, "fcm").is_some();
    if names_app && names_credentials {
        errors.add(
            "from",
            "give either from.appName or credential IDs in from.apn / from.fcm, not both",
        );
        return Sender::AccountDefault;
    }
    if let Some(app_name) = app_name {
        Sender::App { app_name }
    } else if apn.is_some() || fcm.is_some() {
        Sender::Credentials { apn, fcm }
    } else {
        Sender::AccountDefault
    }
}

fn parse_to(map: &Map<String, Value>, errors: &mut Errors) -> Vec<Recipient> {
    let Some(value) = field(map, "to") else {
        errors.add("to", "to is required: a list of 1-10000 recipients");
        return Vec::new();
    };
    let Some(list) = value.as_array() else {
        errors.add("to", "to must be a list of recipients");
        return Vec::new();
    };
    if !check_recipient_count(list.len(), errors) && !list.is_empty() {
        // Do not list a problem per entry of an oversized list.
        return Vec::new();
    }
    let mut recipients = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        if let Some(recipient) = parse_recipient(entry, &format!("to[{i}]"), errors) {
            recipients.push(recipient);
        }
    }
    recipients
}

/// Whether `to` has 1-10000 entries (a problem recorded if not).
fn check_recipient_count(count: usize, errors: &mut Errors) -> bool {
    let fits = (1..=SendRequest::MAX_RECIPIENTS).contains(&count);
    if !fits {
        errors.add(
            "to",
            format!(
                "to must have 1-{} recipients (got {count})",
                SendRequest::MAX_RECIPIENTS
            ),
        );
    }
    fits
}

fn parse_recipient(value: &Value, path: &str, errors: &mut Errors) -> Option<Recipient> {
    let Some(entry) = value.as_object() else {
        errors.add(
            path,
            "a recipient must be an object: {\"token\", \"provider\"} or {\"userId\"}",
        );
        return None;
    };
    deny_unknown(entry, path, RECIPIENT_FIELDS, errors);
    let variables = parse_variables(entry, path, errors);
    let is_device = field(entry, "token").is_some() || field(entry, "provider").is_some();
    let is_user = field(entry, "userId").is_some();
    match (is_device, is_user) {
        (true, true) => {
            errors.add(
                path,
                "a recipient is either a device (token, provider) or a user (userId), not both",
            );
            None
        }
        (false, false) => {
            errors.add(
                path,
                "a recipient needs token and provider (a device) or userId (a user)",
            );
            None
        }
        (true, false) => {
            let token = match field(entry, "token") {
                None => {
                    errors.add(join(path, "token"), "token is required with provider");
                    None
                }
                Some(Value::String(text)) => DeviceToken::parse(text)
                    .map_err(|message| errors.add(join(path, "token"), message))
                    .ok(),
                Some(_) => {
                    errors.add(join(path, "token"), "token must be a string");
                    None
                }
            };
            let provider = match field(entry, "provider") {
                None => {
                    errors.add(
                        join(path, "provider"),
                        "provider is required with token: one of APN, FCM",
                    );
                    None
                }
                Some(Value::String(text)) => Provider::parse(text)
                    .map_err(|message| errors.add(join(path, "provider"), message))
                    .ok(),
                Some(other) => {
                    errors.add(
                        join(path, "provider"),
                        format!(
                            "provider must be one of APN, FCM (got {})",
                            truncate(&other.to_string(), 40)
                        ),
                    );
                    None
                }
            };
            Some(Recipient::Device {
                token: token?.into_string(),
                provider: provider?,
                variables: variables?,
            })
        }
        (false, true) => {
            let user_id = match field(entry, "userId") {
                Some(Value::String(text)) if ids::parse_type_id(ids::USER, text).is_some() => {
                    Some(text.clone())
                }
                Some(other) => {
                    let shown = other
                        .as_str()
                        .map_or_else(|| other.to_string(), str::to_owned);
                    errors.add(
                        join(path, "userId"),
                        format!(
                            "userId must be a user ID (comms_pushnotificationuser_...), got {:?}",
                            truncate(&shown, 80)
                        ),
                    );
                    None
                }
                None => None,
            };
            Some(Recipient::User {
                user_id: user_id?,
                variables: variables?,
            })
        }
    }
}

/// `variables`: an object of string values. `None` when invalid (problems recorded).
fn parse_variables(
    entry: &Map<String, Value>,
    path: &str,
    errors: &mut Errors,
) -> Option<Map<String, Value>> {
    let Some(value) = field(entry, "variables") else {
        return Some(Map::new());
    };
    let vpath = join(path, "variables");
    let Some(object) = value.as_object() else {
        errors.add(vpath, "variables must be an object of string values");
        return None;
    };
    let mut ok = true;
    for (key, value) in object {
        if !value.is_string() {
            errors.add(
                join(&vpath, key),
                format!("variable {:?} must be a string", truncate(key, 64)),
            );
            ok = false;
        }
    }
    ok.then(|| object.clone())
}

fn parse_content(map: &Map<String, Value>, silent: bool, errors: &mut Errors) -> Content {
    let Some(value) = field(map, "content") else {
        if !silent {
            errors.add(
                "content",
                "content is required (with at least a body) unless silent is true",
            );
        }
        return Content::default();
    };
    let Some(content) = value.as_object() else {
        errors.add("content", "content must be an object");
        return Content::default();
    };
    deny_unknown(content, "content", CONTENT_FIELDS, errors);
    let mut text = |key: &str, required: bool| -> Option<String> {
        let path = join("content", key);
        match field(content, key) {
            None => {
                if required {
                    errors.add(path, format!("{key} is required unless silent is true"));
                }
                None
            }
            Some(Value::String(text)) => {
                if text.is_empty() && required {
                    errors.add(path, format!("{key} must not be empty"));
                    return None;
                }
                if let Err(message) = check_template(text) {
                    errors.add(path, message);
                    return None;
                }
                Some(text.clone())
            }
            Some(_) => {
                errors.add(path, format!("{key} must be a string"));
                None
            }
        }
    };
    let title = text("title", false);
    let body = text("body", !silent);

    let data = match field(content, "data") {
        None => Map::new(),
        Some(Value::Object(data)) => {
            for key in data.keys() {
                if let Some(reason) = reserved_data_key(key) {
                    errors.add(join("content.data", key), reason);
                }
            }
            data.clone()
        }
        Some(_) => {
            errors.add("content.data", "data must be an object");
            Map::new()
        }
    };

    let image = string(content, "content", "image", errors).and_then(|url| {
        if is_http_url(url) {
            Some(url.to_owned())
        } else {
            errors.add(
                "content.image",
                format!(
                    "image must be an http:// or https:// URL of at most {MAX_IMAGE_URL_CHARS} \
                     characters without spaces"
                ),
            );
            None
        }
    });

    let badge = match field(content, "badge") {
        None => None,
        Some(value) => match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                errors.add(
                    "content.badge",
                    "badge must be a non-negative integer (at most 4294967295)",
                );
                None
            }
        },
    };
    let category = string(content, "content", "category", errors).map(str::to_owned);
    let click_action = string(content, "content", "clickAction", errors).map(str::to_owned);

    Content {
        title,
        body,
        data,
        image,
        badge,
        category,
        click_action,
    }
}

/// Why `key` cannot be a `content.data` key: `aps` belongs to Apple (use the `apn` override), and
/// FCM refuses `from`, `notification`, `message_type` and keys starting with `google` or `gcm`.
fn reserved_data_key(key: &str) -> Option<String> {
    let lower = key.to_ascii_lowercase();
    if key.is_empty() {
        Some("data keys must not be empty".into())
    } else if key == "aps" {
        Some("data key \"aps\" is reserved by APNs; set aps fields through the apn object".into())
    } else if ["from", "notification", "message_type"].contains(&lower.as_str())
        || lower.starts_with("google")
        || lower.starts_with("gcm")
    {
        Some(format!(
            "data key {:?} is reserved by FCM (from, notification, message_type, google*, gcm*)",
            truncate(key, 64)
        ))
    } else {
        None
    }
}

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else { return false };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    url.chars().count() <= MAX_IMAGE_URL_CHARS
        && !host.is_empty()
        && !host.starts_with(':')
        && url.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn parse_schedule(map: &Map<String, Value>, now_ms: i64, errors: &mut Errors) -> Option<i64> {
    let schedule = object(map, "", "schedule", errors)?;
    deny_unknown(schedule, "schedule", SCHEDULE_FIELDS, errors);
    let send_at = match field(schedule, "sendAt") {
        None => {
            errors.add(
                "schedule.sendAt",
                "sendAt is required in schedule (an RFC 3339 time)",
            );
            return None;
        }
        Some(Value::String(text)) => text,
        Some(_) => {
            errors.add(
                "schedule.sendAt",
                "sendAt must be an RFC 3339 time, e.g. 2026-12-01T09:00:00Z",
            );
            return None;
        }
    };
    match crate::time::parse_rfc3339(send_at) {
        None => {
            errors.add(
                "schedule.sendAt",
                format!(
                    "sendAt must be an RFC 3339 time, e.g. 2026-12-01T09:00:00Z (got {:?})",
                    truncate(send_at, 64)
                ),
            );
            None
        }
        Some(at) if at > now_ms => Some(at),
        // A time that has passed (e.g. on a retried request): send now.
        Some(_) => None,
    }
}

/// The reader behind [`parse_valid`]: the body's `to` straight into recipients, the other fields
/// into a map for [`parse_object`]. Any recipient [`parse_recipient`] would find a problem with
/// is an error here (so the caller falls back to [`parse`]).
mod fast {
    use std::fmt;

    use serde::Deserialize;
    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};

    use super::Recipient;
    use crate::{DeviceToken, Provider, ids};

    pub(super) struct Body {
        pub(super) to: Vec<Recipient>,
        pub(super) rest: Map<String, Value>,
    }

    impl<'de> Deserialize<'de> for Body {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct BodyVisitor;
            impl<'de> Visitor<'de> for BodyVisitor {
                type Value = Body;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a send body")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
                    let mut to = None;
                    let mut rest = Map::new();
                    while let Some(key) = map.next_key::<String>()? {
                        if key == "to" {
                            if to.is_some() {
                                return Err(de::Error::duplicate_field("to"));
                            }
                            to = Some(map.next_value::<Recipients>()?.0);
                        } else {
                            let value = map.next_value::<Value>()?;
                            if rest.insert(key, value).is_some() {
                                return Err(de::Error::custom("a repeated key"));
                            }
                        }
                    }
                    let to = to.ok_or_else(|| de::Error::missing_field("to"))?;
                    Ok(Body { to, rest })
                }
            }
            deserializer.deserialize_map(BodyVisitor)
        }
    }

    struct Recipients(Vec<Recipient>);

    impl<'de> Deserialize<'de> for Recipients {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ListVisitor;
            impl<'de> Visitor<'de> for ListVisitor {
                type Value = Recipients;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a list of recipients")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Recipients, A::Error> {
                    let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                    while let Some(ValidRecipient(recipient)) = seq.next_element()? {
                        list.push(recipient);
                    }
                    Ok(Recipients(list))
                }
            }
            deserializer.deserialize_seq(ListVisitor)
        }
    }

    /// A recipient [`super::parse_recipient`] accepts: a device (`token`, `provider`) or a
    /// user (`userId`), with `variables` of string values.
    struct ValidRecipient(Recipient);

    #[derive(Deserialize, Clone, Copy)]
    #[serde(field_identifier, rename_all = "camelCase")]
    enum Field {
        Token,
        Provider,
        UserId,
        Variables,
    }

    impl<'de> Deserialize<'de> for ValidRecipient {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct RecipientVisitor;
            impl<'de> Visitor<'de> for RecipientVisitor {
                type Value = ValidRecipient;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a recipient")
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<ValidRecipient, A::Error> {
                    let invalid = || de::Error::custom("not a valid recipient");
                    let (mut token, mut provider, mut user_id, mut variables) =
                        (None, None, None, None);
                    let mut seen = [false; 4];
                    // `null` counts as absent, as in `parse`; a repeated field is an error
                    // (`parse` would keep the last one).
                    while let Some(field) = map.next_key::<Field>()? {
                        if std::mem::replace(&mut seen[field as usize], true) {
                            return Err(invalid());
                        }
                        match field {
                            Field::Token => token = map.next_value::<Option<String>>()?,
                            // Borrowed: an escaped provider name falls back to `parse`.
                            Field::Provider => provider = map.next_value::<Option<&'de str>>()?,
                            Field::UserId => user_id = map.next_value::<Option<String>>()?,
                            Field::Variables => {
                                variables = map.next_value::<Option<Map<String, Value>>>()?
                            }
                        }
                    }
                    let variables = variables.unwrap_or_default();
                    if !variables.values().all(Value::is_string) {
                        return Err(invalid());
                    }
                    let recipient = match (token, provider, user_id) {
                        (Some(token), Some(provider), None) => Recipient::Device {
                            token: DeviceToken::parse_owned(token)
                                .map_err(|_| invalid())?
                                .into_string(),
                            provider: Provider::parse(provider).map_err(|_| invalid())?,
                            variables,
                        },
                        (None, None, Some(user_id))
                            if ids::parse_type_id(ids::USER, &user_id).is_some() =>
                        {
                            Recipient::User { user_id, variables }
                        }
                        _ => return Err(invalid()),
                    };
                    Ok(ValidRecipient(recipient))
                }
            }
            deserializer.deserialize_map(RecipientVisitor)
        }
    }
}
