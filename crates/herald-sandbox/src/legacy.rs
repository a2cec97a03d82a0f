//! Fake legacy FCM HTTP protocol: `POST /fcm/send` with `Authorization: key=...`.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, header};
use hyper::body::Incoming;
use rand::Rng;
use serde_json::{Map, Value, json};

use crate::http_util::{self, BodyError, HandlerResult, Reset, Resp};
use crate::state::{Provider, State};

const MAX_REGISTRATION_IDS: usize = 1000;
const MAX_TTL: i64 = 2_419_200;
const MAX_PAYLOAD: usize = 4096;
const READ_LIMIT: usize = 4 << 20;

fn text(status: u16, body: &str) -> Resp {
    http_util::bytes(status, "text/plain; charset=UTF-8", body.to_owned())
}

fn html_error(status: u16, title: &str) -> Resp {
    http_util::bytes(
        status,
        "text/html; charset=UTF-8",
        format!(
            "<HTML>\n<HEAD>\n<TITLE>{title}</TITLE>\n</HEAD>\n<BODY>\n<H1>{title}</H1>\n<H2>Error {status}</H2>\n</BODY>\n</HTML>\n"
        ),
    )
}

fn reason_phrase(status: u16) -> &'static str {
    http_util::status(status)
        .canonical_reason()
        .unwrap_or("Error")
}

pub(crate) async fn handle(state: Arc<State>, req: Request<Incoming>) -> HandlerResult {
    let (parts, body) = req.into_parts();
    let body = match http_util::read_body(body, READ_LIMIT).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            state.outcome(
                Provider::FcmLegacy,
                None,
                413,
                None,
                || Value::Null,
                || Value::Null,
            );
            return Ok(text(413, "Request Entity Too Large"));
        }
        Err(BodyError::Broken) => return Err(Reset),
    };
    let parsed: Result<Value, String> = serde_json::from_slice(&body).map_err(|e| e.to_string());
    let tokens: Vec<String> = parsed.as_ref().map(targets).unwrap_or_default();

    let record_all = |status: u16, reason: Option<&str>| {
        if tokens.is_empty() {
            state.outcome(
                Provider::FcmLegacy,
                None,
                status,
                reason,
                || Value::Null,
                || Value::Null,
            );
        }
        for t in &tokens {
            state.outcome(
                Provider::FcmLegacy,
                Some(t),
                status,
                reason,
                || http_util::headers_value(&parts.headers),
                || http_util::payload_value(&body),
            );
        }
    };

    if parts.method != Method::POST {
        record_all(405, None);
        return Ok(html_error(405, "Method Not Allowed"));
    }
    let key = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| http_util::auth_credentials(v, "key"));
    if key != Some(state.creds.legacy_key.as_str()) {
        record_all(401, Some("Unauthorized"));
        return Ok(html_error(401, "Unauthorized"));
    }
    let message = match &parsed {
        Ok(v) => match check(v) {
            Ok(m) => m,
            Err(e) => {
                record_all(400, Some(&e));
                return Ok(text(400, &e));
            }
        },
        Err(e) => {
            let e = format!("JSON_PARSING_ERROR: {e}");
            record_all(400, Some(&e));
            return Ok(text(400, &e));
        }
    };

    // Per-token outcomes; a 5xx or 401 fault fails the whole request like the real service did.
    let mut results = Vec::with_capacity(tokens.len());
    let mut outcomes: Vec<(u16, Option<String>)> = Vec::with_capacity(tokens.len());
    let mut whole: Option<(u16, Option<u64>)> = None;
    for t in &tokens {
        let mut outcome = None;
        if let Some(fault) = state.faults.take(t) {
            if let Some(ms) = fault.delay_ms {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if fault.reset {
                record_all(0, Some("reset"));
                return Err(Reset);
            }
            if let Some(status) = fault.status {
                if status >= 500 || status == 401 {
                    whole.get_or_insert((status, fault.retry_after));
                    outcome = Some(Err((status, reason_phrase(status).to_owned())));
                } else if (200..300).contains(&status) {
                    outcome = Some(Ok(()));
                } else {
                    let reason = fault
                        .reason
                        .clone()
                        .unwrap_or_else(|| default_error(status).to_owned());
                    outcome = Some(Err((status, reason)));
                }
            }
        }
        let outcome = outcome.unwrap_or_else(|| {
            if let Some(e) = message.error {
                Err((400, e.to_owned()))
            } else if state.transient_failure() {
                Err((503, "Unavailable".to_owned()))
            } else {
                Ok(())
            }
        });
        match outcome {
            Ok(()) => {
                results.push(json!({"message_id": message_id()}));
                outcomes.push((200, None));
            }
            Err((status, reason)) => {
                results.push(json!({"error": reason}));
                outcomes.push((status, Some(reason)));
            }
        }
    }

    if let Some((status, retry_after)) = whole {
        record_all(status, Some(reason_phrase(status)));
        let resp = if status == 401 {
            html_error(401, "Unauthorized")
        } else {
            html_error(status, reason_phrase(status))
        };
        return Ok(http_util::with_retry_after(resp, retry_after));
    }

    for (t, (status, reason)) in tokens.iter().zip(&outcomes) {
        state.outcome(
            Provider::FcmLegacy,
            Some(t),
            *status,
            reason.as_deref(),
            || http_util::headers_value(&parts.headers),
            || http_util::payload_value(&body),
        );
    }

    if message.topic {
        // Topic and condition sends answer one message_id (a number) or one error.
        let result = results.into_iter().next().unwrap_or(Value::Null);
        let body = match result.get("error") {
            Some(e) => json!({"error": e}),
            None => {
                json!({"message_id": rand::rng().random_range(1_000_000_000_000_000i64..i64::MAX)})
            }
        };
        return Ok(http_util::json(200, &body));
    }
    let success = outcomes.iter().filter(|(s, _)| *s == 200).count();
    Ok(http_util::json(
        200,
        &json!({
            "multicast_id": rand::rng().random_range(1_000_000_000_000_000i64..i64::MAX),
            "success": success,
            "failure": outcomes.len() - success,
            "canonical_ids": 0,
            "results": results,
        }),
    ))
}

fn message_id() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("0:{micros}%{:016x}", rand::rng().random::<u64>())
}

/// What a per-token error is called in the legacy protocol, for a status.
fn default_error(status: u16) -> &'static str {
    match status {
        400 => "InvalidRegistration",
        404 | 410 => "NotRegistered",
        403 => "MismatchSenderId",
        413 => "MessageTooBig",
        429 => "DeviceMessageRateExceeded",
        _ => "InternalServerError",
    }
}

/// The recipients: `registration_ids`, `to`, or a `condition`.
fn targets(body: &Value) -> Vec<String> {
    if let Some(ids) = body.get("registration_ids").and_then(Value::as_array) {
        return ids
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
    }
    ["to", "condition"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str))
        .map(|s| vec![s.to_owned()])
        .unwrap_or_default()
}

struct Checked {
    /// Sent to a topic or condition rather than registration tokens.
    topic: bool,
    /// A per-message error every recipient gets (InvalidTtl, MessageTooBig).
    error: Option<&'static str>,
}

fn check(v: &Value) -> Result<Checked, String> {
    let obj: &Map<String, Value> = v
        .as_object()
        .ok_or("JSON_PARSING_ERROR: expected an object")?;
    let to = obj.get("to");
    let ids = obj.get("registration_ids");
    let condition = obj.get("condition");
    let topic = match (to, ids, condition) {
        (None, None, None) => return Err("Missing \"to\" or \"registration_ids\" field".into()),
        (Some(_), Some(_), _) => {
            return Err("Must use either \"registration_ids\" field or \"to\", not both".into());
        }
        (Some(to), None, _) => {
            let to = to.as_str().ok_or("Field \"to\" must be a JSON string")?;
            if to.is_empty() {
                return Err("Field \"to\" must not be empty".into());
            }
            to.starts_with("/topics/")
        }
        (None, Some(ids), _) => {
            let ids = ids
                .as_array()
                .ok_or("Field \"registration_ids\" must be a JSON array")?;
            if ids.is_empty() {
                return Err("Field \"registration_ids\" must not be empty".into());
            }
            if ids.len() > MAX_REGISTRATION_IDS {
                return Err(format!(
                    "Number of messages on bulk ({}) exceeds maximum allowed ({MAX_REGISTRATION_IDS})",
                    ids.len()
                ));
            }
            if !ids.iter().all(Value::is_string) {
                return Err("Field \"registration_ids\" must be an array of JSON strings".into());
            }
            false
        }
        (None, None, Some(c)) => {
            c.as_str()
                .ok_or("Field \"condition\" must be a JSON string")?;
            true
        }
    };
    for field in ["collapse_key", "restricted_package_name"] {
        if let Some(v) = obj.get(field)
            && !v.is_string()
        {
            return Err(format!("Field \"{field}\" must be a JSON string: {v}"));
        }
    }
    if let Some(p) = obj.get("priority") {
        match p.as_str() {
            Some("normal" | "high") => {}
            Some(_) => return Err(format!("Invalid \"priority\" value: {p}")),
            None => return Err(format!("Field \"priority\" must be a JSON string: {p}")),
        }
    }
    for field in ["data", "notification"] {
        if let Some(v) = obj.get(field)
            && !v.is_object()
        {
            return Err(format!("Field \"{field}\" must be a JSON object: {v}"));
        }
    }
    for field in [
        "content_available",
        "mutable_content",
        "dry_run",
        "delay_while_idle",
    ] {
        if let Some(v) = obj.get(field)
            && !v.is_boolean()
        {
            return Err(format!("Field \"{field}\" must be a JSON boolean: {v}"));
        }
    }
    let mut error = None;
    if let Some(ttl) = obj.get("time_to_live") {
        match ttl.as_i64() {
            Some(t) if (0..=MAX_TTL).contains(&t) => {}
            Some(_) => error = Some("InvalidTtl"),
            None => {
                return Err(format!(
                    "Field \"time_to_live\" must be a JSON number: {ttl}"
                ));
            }
        }
    }
    let size: usize = ["data", "notification"]
        .iter()
        .filter_map(|k| obj.get(*k))
        .map(|v| serde_json::to_vec(v).map_or(0, |b| b.len()))
        .sum();
    if size > MAX_PAYLOAD {
        error = Some("MessageTooBig");
    }
    Ok(Checked { topic, error })
}
