//! Fake APNs: `POST /3/device/{token}` over HTTP/2, provider token (ES256 JWT) or client
//! certificate authentication, Apple's header and payload rules and `{"reason": ...}` answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Version, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::http_util::{self, BodyError, HandlerResult, Reset, Resp};
use crate::jwt::Jwt;
use crate::server::ConnState;
use crate::state::{Provider, State, lock, unix_millis, unix_secs};

/// Apple rejects provider tokens whose `iat` is older than one hour.
const TOKEN_MAX_AGE_SECS: i64 = 3600;
/// Apple answers TooManyProviderTokenUpdates when a new token replaces the previous one sooner.
const TOKEN_MIN_REFRESH: Duration = Duration::from_secs(20 * 60);
const MAX_PAYLOAD: usize = 4096;
const MAX_VOIP_PAYLOAD: usize = 5120;
/// Bodies are read up to this size, so an oversized one still gets 413 PayloadTooLarge.
const READ_LIMIT: usize = 1 << 20;

const PUSH_TYPES: [&str; 9] = [
    "alert",
    "background",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "location",
    "pushtotalk",
];

/// Headers Apple refuses to see twice (DuplicateHeaders).
const SINGLE_HEADERS: [&str; 7] = [
    "authorization",
    "apns-id",
    "apns-topic",
    "apns-push-type",
    "apns-priority",
    "apns-expiration",
    "apns-collapse-id",
];

/// The provider token last used on a connection.
pub(crate) struct ConnJwt {
    jwt: String,
    iat: i64,
    since: Instant,
}

struct Rejection {
    status: u16,
    reason: &'static str,
}

fn reject(status: u16, reason: &'static str) -> Rejection {
    Rejection { status, reason }
}

enum Auth<'a> {
    Token,
    Certificate(&'a str),
}

pub(crate) async fn handle(
    state: Arc<State>,
    conn: Arc<ConnState>,
    req: Request<Incoming>,
) -> HandlerResult {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let token = path
        .strip_prefix("/3/device")
        .map(|rest| rest.strip_prefix('/').unwrap_or(rest))
        .unwrap_or_default()
        .to_owned();

    // A valid apns-id is echoed; otherwise APNs makes one up.
    let apns_id = parts
        .headers
        .get("apns-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_uuid(v))
        .map(str::to_owned)
        .unwrap_or_else(|| fast_uuid().to_string().to_uppercase());

    let body = match http_util::read_body(body, READ_LIMIT).await {
        Ok(b) => Ok(b),
        Err(BodyError::TooLarge) => Err(reject(413, "PayloadTooLarge")),
        Err(BodyError::Broken) => return Err(Reset),
    };

    let checked = body.as_ref().map_err(|r| Rejection {
        status: r.status,
        reason: r.reason,
    });
    let verdict = match checked {
        Ok(body) => check(
            &state,
            &conn,
            &parts.method,
            parts.version,
            &parts.headers,
            &token,
            body,
        ),
        Err(r) => Err(r),
    };

    let record = |status: u16, reason: Option<&str>| {
        let payload = body.as_ref().map(|b| http_util::payload_value(b));
        state.outcome(
            Provider::Apns,
            (!token.is_empty()).then_some(token.as_str()),
            status,
            reason,
            || http_util::headers_value(&parts.headers),
            || payload.unwrap_or(Value::Null),
        );
    };

    if let Err(r) = verdict {
        record(r.status, Some(r.reason));
        return Ok(error_response(r.status, r.reason, &apns_id, None));
    }

    // A valid request: injected faults and the per-run failure rate come next.
    if let Some(fault) = state.faults.take(&token) {
        if let Some(ms) = fault.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if fault.reset {
            record(0, Some("reset"));
            return Err(Reset);
        }
        if let Some(status) = fault.status {
            let reason = fault
                .reason
                .clone()
                .unwrap_or_else(|| default_reason(status).to_owned());
            record(status, Some(&reason));
            if reason == "ExpiredProviderToken" {
                // Apple now holds this connection's token as expired, so the next token the
                // client mints is a replacement, not a "too many updates".
                *lock(&conn.apns_jwt) = None;
            }
            return Ok(if (200..300).contains(&status) {
                success(status, &apns_id)
            } else {
                error_response(status, &reason, &apns_id, fault.retry_after)
            });
        }
    }
    if state.transient_failure() {
        record(503, Some("ServiceUnavailable"));
        return Ok(error_response(503, "ServiceUnavailable", &apns_id, None));
    }
    record(200, None);
    Ok(success(200, &apns_id))
}

fn check(
    state: &State,
    conn: &ConnState,
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    token: &str,
    body: &Bytes,
) -> Result<(), Rejection> {
    if token.contains('/') {
        return Err(reject(404, "BadPath"));
    }
    if method != Method::POST {
        return Err(reject(405, "MethodNotAllowed"));
    }
    if version != Version::HTTP_2 {
        // APNs speaks HTTP/2 only.
        return Err(reject(505, "HTTPVersionNotSupported"));
    }
    if token.is_empty() {
        return Err(reject(400, "MissingDeviceToken"));
    }
    if SINGLE_HEADERS
        .iter()
        .any(|h| headers.get_all(*h).iter().nth(1).is_some())
    {
        return Err(reject(400, "DuplicateHeaders"));
    }

    let auth = authenticate(state, conn, headers)?;

    if let Some(id) = headers.get("apns-id")
        && !id.to_str().is_ok_and(is_uuid)
    {
        return Err(reject(400, "BadMessageId"));
    }

    let (base_topic, topic) = {
        let topic = header_str(headers, "apns-topic")?;
        match auth {
            Auth::Token => match topic {
                Some(t) => (state.creds.bundle_id.as_str(), t),
                None => return Err(reject(400, "MissingTopic")),
            },
            // With a certificate whose subject names one topic, Apple uses it by default.
            Auth::Certificate(uid) => (uid, topic.unwrap_or(uid)),
        }
    };

    let push_type = header_str(headers, "apns-push-type")?;
    if let Some(pt) = push_type
        && !PUSH_TYPES.contains(&pt)
    {
        return Err(reject(400, "InvalidPushType"));
    }
    if !topic_allowed(base_topic, topic, push_type) {
        return Err(reject(400, "TopicDisallowed"));
    }

    if let Some(priority) = header_str(headers, "apns-priority")? {
        if !matches!(priority, "1" | "5" | "10") {
            return Err(reject(400, "BadPriority"));
        }
        if priority == "10" && push_type == Some("background") {
            return Err(reject(400, "BadPriority"));
        }
    }
    if let Some(expiration) = header_str(headers, "apns-expiration")?
        && (expiration.is_empty()
            || expiration.len() > 19
            || !expiration.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(reject(400, "BadExpirationDate"));
    }
    if let Some(collapse) = headers.get("apns-collapse-id")
        && collapse.len() > 64
    {
        return Err(reject(400, "BadCollapseId"));
    }

    if body.is_empty() {
        return Err(reject(400, "PayloadEmpty"));
    }
    let limit = if push_type == Some("voip") {
        MAX_VOIP_PAYLOAD
    } else {
        MAX_PAYLOAD
    };
    if body.len() > limit {
        return Err(reject(413, "PayloadTooLarge"));
    }
    // Apple documents no reason for a payload that is not a JSON dictionary with an `aps`
    // dictionary; BadPayload names it plainly.
    let payload: Value = serde_json::from_slice(body).map_err(|_| reject(400, "BadPayload"))?;
    if !payload.get("aps").is_some_and(Value::is_object) {
        return Err(reject(400, "BadPayload"));
    }
    Ok(())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Rejection> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            reject(
                400,
                match name {
                    "apns-topic" => "BadTopic",
                    "apns-push-type" => "InvalidPushType",
                    "apns-priority" => "BadPriority",
                    "apns-expiration" => "BadExpirationDate",
                    _ => "BadCollapseId",
                },
            )
        }),
    }
}

fn topic_allowed(base: &str, topic: &str, push_type: Option<&str>) -> bool {
    let Some(suffix) = topic.strip_prefix(base) else {
        return false;
    };
    let required = match push_type {
        Some("voip") => ".voip",
        Some("complication") => ".complication",
        Some("fileprovider") => ".pushkit.fileprovider",
        Some("location") => ".location-query",
        Some("liveactivity") => ".push-type.liveactivity",
        Some("pushtotalk") => ".voip-ptt",
        Some(_) => "",
        // Without apns-push-type, Apple infers the type from the topic.
        None => {
            return matches!(
                suffix,
                "" | ".voip" | ".complication" | ".pushkit.fileprovider"
            );
        }
    };
    suffix == required
}

fn authenticate<'a>(
    state: &State,
    conn: &'a ConnState,
    headers: &HeaderMap,
) -> Result<Auth<'a>, Rejection> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return match conn.cert_topic.as_deref() {
            Some(uid) => Ok(Auth::Certificate(uid)),
            None => Err(reject(403, "MissingProviderToken")),
        };
    };
    let value = value
        .to_str()
        .map_err(|_| reject(403, "InvalidProviderToken"))?;
    let jwt = match http_util::auth_credentials(value, "bearer") {
        Some("") => return Err(reject(403, "MissingProviderToken")),
        Some(jwt) => jwt,
        None if value.trim().eq_ignore_ascii_case("bearer") => {
            return Err(reject(403, "MissingProviderToken"));
        }
        None => return Err(reject(403, "InvalidProviderToken")),
    };
    verify_provider_token(state, conn, jwt)?;
    Ok(Auth::Token)
}

fn verify_provider_token(state: &State, conn: &ConnState, jwt: &str) -> Result<(), Rejection> {
    let now = unix_secs();
    // Fast path: the token this connection already uses.
    {
        let current = lock(&conn.apns_jwt);
        if let Some(c) = current.as_ref()
            && c.jwt == jwt
        {
            return if now - c.iat > TOKEN_MAX_AGE_SECS {
                Err(reject(403, "ExpiredProviderToken"))
            } else {
                Ok(())
            };
        }
    }
    let iat = match state.cached_apns_jwt(jwt) {
        Some(iat) => iat,
        None => {
            let iat = verify_signature(state, jwt)?;
            state.cache_apns_jwt(jwt, iat);
            iat
        }
    };
    if now - iat > TOKEN_MAX_AGE_SECS {
        return Err(reject(403, "ExpiredProviderToken"));
    }
    let mut current = lock(&conn.apns_jwt);
    if let Some(c) = current.as_ref()
        && c.jwt != jwt
        && c.since.elapsed() < TOKEN_MIN_REFRESH
        && now - c.iat <= TOKEN_MAX_AGE_SECS
    {
        return Err(reject(429, "TooManyProviderTokenUpdates"));
    }
    *current = Some(ConnJwt {
        jwt: jwt.to_owned(),
        iat,
        since: Instant::now(),
    });
    Ok(())
}

/// Full verification of a provider token; returns its `iat`.
fn verify_signature(state: &State, jwt: &str) -> Result<i64, Rejection> {
    let invalid = || reject(403, "InvalidProviderToken");
    let parsed = Jwt::parse(jwt).ok_or_else(invalid)?;
    if parsed.header_str("kid") != Some(state.creds.apns_key_id.as_str())
        || parsed.claim_str("iss") != Some(state.creds.apns_team_id.as_str())
    {
        return Err(invalid());
    }
    let iat = parsed.claim_i64("iat").ok_or_else(invalid)?;
    if !parsed.verify_es256(&state.creds.apns_public_key) {
        return Err(invalid());
    }
    Ok(iat)
}

fn success(status: u16, apns_id: &str) -> Resp {
    let mut resp = http_util::empty(status);
    set_ids(&mut resp, apns_id);
    resp
}

fn set_ids(resp: &mut Resp, apns_id: &str) {
    if let Ok(v) = HeaderValue::from_str(apns_id) {
        resp.headers_mut().insert("apns-id", v);
    }
    // The development environment also answers a unique ID for the delivery log.
    if let Ok(v) = HeaderValue::from_str(&fast_uuid().to_string()) {
        resp.headers_mut().insert("apns-unique-id", v);
    }
}

pub(crate) fn error_response(
    status: u16,
    reason: &str,
    apns_id: &str,
    retry_after: Option<u64>,
) -> Resp {
    let body = if status == 410 {
        json!({"reason": reason, "timestamp": unix_millis()})
    } else {
        json!({"reason": reason})
    };
    let mut resp = http_util::json(status, &body);
    if let Ok(v) = HeaderValue::from_str(apns_id) {
        resp.headers_mut().insert("apns-id", v);
    }
    http_util::with_retry_after(resp, retry_after)
}

/// Apple's reason for a status when a fault gives none.
fn default_reason(status: u16) -> &'static str {
    match status {
        400 => "BadDeviceToken",
        403 => "Forbidden",
        404 => "BadPath",
        405 => "MethodNotAllowed",
        410 => "Unregistered",
        413 => "PayloadTooLarge",
        429 => "TooManyRequests",
        500 => "InternalServerError",
        503 => "ServiceUnavailable",
        _ => "InternalServerError",
    }
}

/// Canonical 8-4-4-4-12 hexadecimal UUID, either case.
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A random (v4) UUID from the thread-local RNG: no system call per request.
fn fast_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}
