//! Fake Google OAuth token endpoint (`POST /token`, JWT bearer grant) and FCM HTTP v1
//! (`POST /v1/projects/{project}/messages:send`) answering google.rpc.Status errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, Request, header};
use hyper::body::Incoming;
use rand::Rng;
use serde_json::{Map, Value, json};

use crate::credentials::random_b64url;
use crate::http_util::{self, BodyError, HandlerResult, Reset, Resp};
use crate::jwt::Jwt;
use crate::state::{AccessToken, Provider, State, lock, unix_secs};

pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub(crate) const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google refuses assertions valid for longer than an hour.
const MAX_ASSERTION_LIFETIME: i64 = 3600;
/// Clock skew tolerated on `iat` / `exp`.
const SKEW: i64 = 300;
const MAX_MESSAGE: usize = 4096;
const READ_LIMIT: usize = 1 << 20;
/// Audiences Google's token endpoint accepts besides the service account's `token_uri`:
/// google-auth (Python) and other Google libraries always sign for the canonical endpoint even
/// when `token_uri` points elsewhere.
const GOOGLE_TOKEN_AUDIENCES: [&str; 3] = [
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
    "https://accounts.google.com/o/oauth2/token",
];
/// Fault key that applies to the token endpoint instead of a device token.
pub(crate) const OAUTH_FAULT_KEY: &str = "_oauth";

// ---------------------------------------------------------------------------------------------
// OAuth token endpoint

pub(crate) async fn token(state: Arc<State>, req: Request<Incoming>) -> HandlerResult {
    if req.method() != Method::POST {
        return Ok(oauth_error(
            405,
            "invalid_request",
            "Method not allowed: use POST",
        ));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = match http_util::read_body(req.into_body(), READ_LIMIT).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            state.stats.oauth.count(false);
            return Ok(oauth_error(413, "invalid_request", "Request too large"));
        }
        Err(BodyError::Broken) => return Err(Reset),
    };
    let result = grant(&state, &content_type, &body);
    state.stats.oauth.count(result.is_ok());
    let resp = match result {
        Ok(resp) => resp,
        Err((error, description)) => oauth_error(400, error, &description),
    };
    if let Some(fault) = state.faults.take(OAUTH_FAULT_KEY) {
        if let Some(ms) = fault.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if fault.reset {
            return Err(Reset);
        }
        if let Some(status) = fault.status {
            let error = fault.reason.as_deref().unwrap_or(match status {
                400 => "invalid_grant",
                401 => "invalid_client",
                _ => "internal_failure",
            });
            let resp = oauth_error(status, error, "Injected by the Herald sandbox");
            return Ok(http_util::with_retry_after(resp, fault.retry_after));
        }
    }
    Ok(resp)
}

type GrantError = (&'static str, String);

fn grant(state: &State, content_type: &str, body: &[u8]) -> Result<Resp, GrantError> {
    let fields: Vec<(String, String)> = if content_type.starts_with("application/json") {
        let v: Map<String, Value> = serde_json::from_slice(body)
            .map_err(|_| ("invalid_request", "Invalid JSON body".to_owned()))?;
        v.into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
            .collect()
    } else {
        serde_urlencoded::from_bytes(body)
            .map_err(|_| ("invalid_request", "Invalid form body".to_owned()))?
    };
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let grant_type = get("grant_type").ok_or((
        "invalid_request",
        "Missing required parameter: grant_type".to_owned(),
    ))?;
    if grant_type != JWT_BEARER {
        return Err((
            "unsupported_grant_type",
            format!("Invalid grant_type: {grant_type}"),
        ));
    }
    let assertion = get("assertion").ok_or((
        "invalid_request",
        "Missing required parameter: assertion".to_owned(),
    ))?;
    let fcm_scope = verify_assertion(state, assertion)?;

    let access_token = format!("ya29.c.{}", random_b64url(120));
    let lifetime = state
        .token_lifetime
        .load(std::sync::atomic::Ordering::Relaxed);
    {
        let mut tokens = lock(&state.access_tokens);
        if tokens.len() >= 10_000 {
            let now = Instant::now();
            tokens.retain(|_, t| t.expires_at > now);
        }
        tokens.insert(
            access_token.clone(),
            AccessToken {
                expires_at: Instant::now() + Duration::from_secs(lifetime),
                fcm_scope,
            },
        );
    }
    let mut resp = http_util::json(
        200,
        &json!({"access_token": access_token, "expires_in": lifetime, "token_type": "Bearer"}),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    Ok(resp)
}

/// Verifies the RS256 assertion; returns whether its scopes grant FCM.
fn verify_assertion(state: &State, assertion: &str) -> Result<bool, GrantError> {
    let creds = &state.creds;
    let jwt = Jwt::parse(assertion).ok_or((
        "invalid_grant",
        "Invalid JWT: malformed assertion".to_owned(),
    ))?;
    if jwt.header_str("alg") != Some("RS256") {
        return Err(("invalid_grant", "Invalid JWT: alg must be RS256".to_owned()));
    }
    match jwt.claim_str("iss") {
        Some(iss) if iss == creds.fcm_client_email => {}
        Some(_) => {
            return Err((
                "invalid_grant",
                "Invalid grant: account not found".to_owned(),
            ));
        }
        None => return Err(("invalid_grant", "Invalid JWT: missing iss claim".to_owned())),
    }
    if let Some(kid) = jwt.header_str("kid")
        && kid != creds.fcm_private_key_id
    {
        return Err(("invalid_grant", "Invalid JWT Signature.".to_owned()));
    }
    if !jwt.verify_rs256(&creds.fcm_public_key) {
        return Err(("invalid_grant", "Invalid JWT Signature.".to_owned()));
    }
    let aud = jwt.claim_str("aud");
    if aud != Some(creds.fcm_token_uri.as_str())
        && !aud.is_some_and(|a| GOOGLE_TOKEN_AUDIENCES.contains(&a))
    {
        return Err((
            "invalid_grant",
            format!(
                "Invalid JWT: Failed audience check. The right audience is {}",
                creds.fcm_token_uri
            ),
        ));
    }
    let timing = || {
        (
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim."
                .to_owned(),
        )
    };
    let (Some(iat), Some(exp)) = (jwt.claim_i64("iat"), jwt.claim_i64("exp")) else {
        return Err(timing());
    };
    let now = unix_secs();
    if exp <= iat || exp - iat > MAX_ASSERTION_LIFETIME || exp < now - SKEW || iat > now + SKEW {
        return Err(timing());
    }
    let scope = jwt.claim_str("scope").unwrap_or("");
    if scope.trim().is_empty() {
        return Err((
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.".to_owned(),
        ));
    }
    Ok(scope
        .split_whitespace()
        .any(|s| s == FCM_SCOPE || s == CLOUD_PLATFORM_SCOPE))
}

fn oauth_error(status: u16, error: &str, description: &str) -> Resp {
    http_util::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

// ---------------------------------------------------------------------------------------------
// messages:send

struct Rejection {
    status: u16,
    message: String,
    /// FcmError errorCode, when Google sends one.
    error_code: Option<&'static str>,
    /// google.rpc.ErrorInfo reason, for auth errors.
    info_reason: Option<&'static str>,
}

fn invalid(message: impl Into<String>) -> Rejection {
    Rejection {
        status: 400,
        message: message.into(),
        error_code: Some("INVALID_ARGUMENT"),
        info_reason: None,
    }
}

pub(crate) async fn send(state: Arc<State>, req: Request<Incoming>) -> HandlerResult {
    let (parts, body) = req.into_parts();
    let project = parts
        .uri
        .path()
        .strip_prefix("/v1/projects/")
        .and_then(|rest| rest.strip_suffix("/messages:send"))
        .filter(|p| !p.is_empty() && !p.contains('/'))
        .map(str::to_owned);
    let Some(project) = project else {
        return Ok(status_error(&Rejection {
            status: 404,
            message: format!("The requested URL {} was not found.", parts.uri.path()),
            error_code: None,
            info_reason: None,
        }));
    };
    if parts.method != Method::POST {
        return Ok(status_error(&Rejection {
            status: 404,
            message: format!(
                "The requested URL {} was not found for method {}.",
                parts.uri.path(),
                parts.method
            ),
            error_code: None,
            info_reason: None,
        }));
    }
    let body = match http_util::read_body(body, READ_LIMIT).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            state.outcome(
                Provider::Fcm,
                None,
                413,
                None,
                || Value::Null,
                || Value::Null,
            );
            return Ok(status_error(&invalid(
                "Request payload size exceeds the limit",
            )));
        }
        Err(BodyError::Broken) => return Err(Reset),
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let target = parsed.as_ref().and_then(target_of);

    let verdict = authorize(&state, &parts.headers, &project).and_then(|()| match &parsed {
        Some(v) => validate(v),
        None => Err(invalid(format!(
            "Invalid JSON payload received. {}",
            serde_json::from_slice::<Value>(&body)
                .err()
                .map_or_else(String::new, |e| e.to_string())
        ))),
    });

    let record = |status: u16, reason: Option<&str>| {
        state.outcome(
            Provider::Fcm,
            target.as_deref(),
            status,
            reason,
            || http_util::headers_value(&parts.headers),
            || http_util::payload_value(&body),
        );
    };

    if let Err(r) = verdict {
        record(r.status, r.error_code.or(Some(canonical(r.status))));
        return Ok(status_error(&r));
    }
    let validate_only = parsed
        .as_ref()
        .and_then(|v| v.get("validate_only").or_else(|| v.get("validateOnly")))
        .and_then(Value::as_bool)
        .unwrap_or(false);

    if let Some(key) = target.as_deref()
        && let Some(fault) = state.faults.take(key)
    {
        if let Some(ms) = fault.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if fault.reset {
            record(0, Some("reset"));
            return Err(Reset);
        }
        if let Some(status) = fault.status {
            if (200..300).contains(&status) {
                record(status, None);
                return Ok(success(&project, false));
            }
            let code = fault
                .reason
                .clone()
                .unwrap_or_else(|| canonical(status).to_owned());
            record(status, Some(&code));
            let resp = status_json(status, &message_for(status, &code), Some(&code), None);
            return Ok(http_util::with_retry_after(resp, fault.retry_after));
        }
    }
    if state.transient_failure() {
        record(503, Some("UNAVAILABLE"));
        return Ok(status_json(
            503,
            "The service is currently unavailable.",
            Some("UNAVAILABLE"),
            None,
        ));
    }
    record(200, None);
    Ok(success(&project, validate_only))
}

fn success(project: &str, validate_only: bool) -> Resp {
    let id = if validate_only {
        "fake_message_id".to_owned()
    } else {
        let mut rng = rand::rng();
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        format!("0:{micros}%{:016x}", rng.random::<u64>())
    };
    http_util::json(
        200,
        &json!({"name": format!("projects/{project}/messages/{id}")}),
    )
}

fn authorize(state: &State, headers: &HeaderMap, project: &str) -> Result<(), Rejection> {
    let unauthenticated = |message: &str, reason: &'static str| Rejection {
        status: 401,
        message: message.to_owned(),
        error_code: None,
        info_reason: Some(reason),
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthenticated(
            "Request is missing required authentication credential. Expected OAuth 2 access \
             token, login cookie or other valid authentication credential. See \
             https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "CREDENTIALS_MISSING",
        ));
    };
    let invalid_credentials = || {
        unauthenticated(
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential. See \
             https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "ACCESS_TOKEN_EXPIRED",
        )
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| http_util::auth_credentials(v, "bearer"))
        .ok_or_else(invalid_credentials)?;
    let fcm_scope = {
        let tokens = lock(&state.access_tokens);
        match tokens.get(token) {
            Some(t) if t.expires_at > Instant::now() => t.fcm_scope,
            _ => return Err(invalid_credentials()),
        }
    };
    if !fcm_scope {
        return Err(Rejection {
            status: 403,
            message: "Request had insufficient authentication scopes.".to_owned(),
            error_code: None,
            info_reason: Some("ACCESS_TOKEN_SCOPE_INSUFFICIENT"),
        });
    }
    if project != state.creds.fcm_project_id {
        // What Google answers when the service account has no rights on the named project.
        return Err(Rejection {
            status: 403,
            message: format!(
                "Permission 'cloudmessaging.messages.create' denied on resource \
                 '//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist)."
            ),
            error_code: None,
            info_reason: Some("IAM_PERMISSION_DENIED"),
        });
    }
    Ok(())
}

/// The device token, topic or condition the message goes to (the fault and recording key).
fn target_of(body: &Value) -> Option<String> {
    let m = body.get("message")?;
    ["token", "topic", "condition"]
        .iter()
        .find_map(|k| m.get(*k).and_then(Value::as_str))
        .map(str::to_owned)
}

const MESSAGE_FIELDS: [&str; 11] = [
    "name",
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    "fcmOptions",
    "token",
    "topic",
    "condition",
];

const NOTIFICATION_FIELDS: [&str; 3] = ["title", "body", "image"];

const ANDROID_FIELDS: [&str; 16] = [
    "collapse_key",
    "collapseKey",
    "priority",
    "ttl",
    "restricted_package_name",
    "restrictedPackageName",
    "data",
    "notification",
    "fcm_options",
    "fcmOptions",
    "direct_boot_ok",
    "directBootOk",
    "bandwidth_constrained_ok",
    "bandwidthConstrainedOk",
    "restricted_satellite_ok",
    "restrictedSatelliteOk",
];

fn validate(body: &Value) -> Result<(), Rejection> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("Invalid JSON payload received. Expected an object."))?;
    unknown_fields(obj, &["message", "validate_only", "validateOnly"], "")?;
    if let Some(v) = obj.get("validate_only").or_else(|| obj.get("validateOnly"))
        && !v.is_boolean()
    {
        return Err(invalid(format!(
            "Invalid value at 'validate_only' (TYPE_BOOL), {v}"
        )));
    }
    let message = match obj.get("message") {
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(invalid(format!(
                "Invalid value at 'message' (type.googleapis.com/google.firebase.fcm.v1.Message), {other}"
            )));
        }
        None => return Err(invalid("Request contains an invalid argument.")),
    };
    unknown_fields(message, &MESSAGE_FIELDS, "message.")?;

    let targets: Vec<&str> = ["token", "topic", "condition"]
        .into_iter()
        .filter(|k| message.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    match targets.as_slice() {
        [] => return Err(invalid("Recipient of the message is not set.")),
        [_] => {}
        [first, second, ..] => {
            return Err(invalid(format!(
                "Invalid value at 'message' (oneof), oneof field 'target' is already set. \
                 Cannot set '{second}' (already set: '{first}')"
            )));
        }
    }
    for key in ["token", "topic", "condition"] {
        if let Some(v) = message.get(key)
            && !v.is_null()
        {
            let s = v.as_str().ok_or_else(|| {
                invalid(format!(
                    "Invalid value at 'message.{key}' (TYPE_STRING), {v}"
                ))
            })?;
            if s.is_empty() {
                return Err(invalid(format!("Invalid value at 'message.{key}': empty")));
            }
            if key == "token" && s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "The registration token is not a valid FCM registration token",
                ));
            }
            if key == "topic" && !valid_topic(s) {
                return Err(invalid("Invalid topic name"));
            }
        }
    }

    if let Some(data) = message.get("data") {
        string_map(data, "message.data")?;
        reserved_data_keys(data)?;
    }
    if let Some(n) = message.get("notification") {
        let n = n.as_object().ok_or_else(|| {
            invalid(format!(
                "Invalid value at 'message.notification' (type.googleapis.com/google.firebase.fcm.v1.Notification), {n}"
            ))
        })?;
        unknown_fields(n, &NOTIFICATION_FIELDS, "message.notification.")?;
        for (k, v) in n {
            if !v.is_string() {
                return Err(invalid(format!(
                    "Invalid value at 'message.notification.{k}' (TYPE_STRING), {v}"
                )));
            }
        }
    }
    if let Some(android) = message.get("android") {
        let a = android.as_object().ok_or_else(|| {
            invalid(format!(
                "Invalid value at 'message.android' (type.googleapis.com/google.firebase.fcm.v1.AndroidConfig), {android}"
            ))
        })?;
        unknown_fields(a, &ANDROID_FIELDS, "message.android.")?;
        if let Some(p) = a.get("priority")
            && !matches!(p.as_str(), Some("NORMAL" | "HIGH" | "normal" | "high"))
        {
            return Err(invalid(format!(
                "Invalid value at 'message.android.priority' \
                 (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), {p}"
            )));
        }
        if let Some(ttl) = a.get("ttl")
            && !ttl.as_str().is_some_and(valid_duration)
        {
            return Err(invalid(format!(
                "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), {ttl}"
            )));
        }
        if let Some(data) = a.get("data") {
            string_map(data, "message.android.data")?;
        }
        for key in [
            "collapse_key",
            "collapseKey",
            "restricted_package_name",
            "restrictedPackageName",
        ] {
            if let Some(v) = a.get(key)
                && !v.is_string()
            {
                return Err(invalid(format!(
                    "Invalid value at 'message.android.{key}' (TYPE_STRING), {v}"
                )));
            }
        }
        if let Some(n) = a.get("notification")
            && !n.is_object()
        {
            return Err(invalid(format!(
                "Invalid value at 'message.android.notification' \
                 (type.googleapis.com/google.firebase.fcm.v1.AndroidNotification), {n}"
            )));
        }
    }
    if let Some(apns) = message.get("apns") {
        let a = apns.as_object().ok_or_else(|| {
            invalid(format!(
                "Invalid value at 'message.apns' (type.googleapis.com/google.firebase.fcm.v1.ApnsConfig), {apns}"
            ))
        })?;
        if let Some(h) = a.get("headers") {
            string_map(h, "message.apns.headers")?;
        }
        if let Some(p) = a.get("payload")
            && !p.is_object()
        {
            return Err(invalid(format!(
                "Invalid value at 'message.apns.payload' (type.googleapis.com/google.protobuf.Struct), {p}"
            )));
        }
    }
    if let Some(w) = message.get("webpush")
        && !w.is_object()
    {
        return Err(invalid(format!(
            "Invalid value at 'message.webpush' (type.googleapis.com/google.firebase.fcm.v1.WebpushConfig), {w}"
        )));
    }

    // The size limit counts what is delivered, not the addressing.
    let mut delivered = message.clone();
    for key in ["token", "topic", "condition", "name"] {
        delivered.remove(key);
    }
    let size = serde_json::to_vec(&delivered).map_or(0, |v| v.len());
    if size > MAX_MESSAGE {
        return Err(invalid(format!(
            "Message is too big: {size} bytes, the limit is {MAX_MESSAGE} bytes"
        )));
    }
    Ok(())
}

fn unknown_fields(obj: &Map<String, Value>, known: &[&str], prefix: &str) -> Result<(), Rejection> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!(
            "Invalid JSON payload received. Unknown name \"{k}\" at '{}': Cannot find field.",
            prefix.trim_end_matches('.')
        ))),
        None => Ok(()),
    }
}

fn string_map(v: &Value, at: &str) -> Result<(), Rejection> {
    let map = v
        .as_object()
        .ok_or_else(|| invalid(format!("Invalid value at '{at}' (Map), {v}")))?;
    for (i, (_, value)) in map.iter().enumerate() {
        if !value.is_string() {
            return Err(invalid(format!(
                "Invalid value at '{at}[{i}].value' (TYPE_STRING), {value}"
            )));
        }
    }
    Ok(())
}

fn reserved_data_keys(v: &Value) -> Result<(), Rejection> {
    if let Some(map) = v.as_object() {
        for key in map.keys() {
            let lower = key.to_ascii_lowercase();
            if matches!(lower.as_str(), "from" | "notification" | "message_type")
                || lower.starts_with("google")
                || lower.starts_with("gcm")
            {
                return Err(invalid(format!("Invalid data payload key: {key}")));
            }
        }
    }
    Ok(())
}

fn valid_topic(topic: &str) -> bool {
    !topic.starts_with("/topics/")
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b))
}

/// protobuf Duration JSON: seconds with up to nine fractional digits and an `s` suffix.
fn valid_duration(s: &str) -> bool {
    let Some(num) = s.strip_suffix('s') else {
        return false;
    };
    let (whole, frac) = match num.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (num, None),
    };
    !whole.is_empty()
        && whole.len() <= 12
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac
            .is_none_or(|f| !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()))
}

/// The google.rpc.Code name Google uses for an HTTP status.
pub(crate) fn canonical(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        412 => "FAILED_PRECONDITION",
        416 => "OUT_OF_RANGE",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

fn message_for(status: u16, code: &str) -> String {
    if code == "SENDER_ID_MISMATCH" {
        return "SenderId mismatch".to_owned();
    }
    match status {
        400 => "Request contains an invalid argument.",
        401 => "Request had invalid authentication credentials.",
        403 => "The caller does not have permission",
        404 => "Requested entity was not found.",
        429 => "Quota exceeded for the sender.",
        500 => "Internal error encountered.",
        503 => "The service is currently unavailable.",
        _ => "Error injected by the Herald sandbox.",
    }
    .to_owned()
}

fn status_error(r: &Rejection) -> Resp {
    status_json(r.status, &r.message, r.error_code, r.info_reason)
}

/// A google.rpc.Status error body.
fn status_json(
    status: u16,
    message: &str,
    error_code: Option<&str>,
    info_reason: Option<&str>,
) -> Resp {
    let mut details = Vec::new();
    if let Some(code) = error_code {
        details.push(json!({
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": code,
        }));
    }
    if let Some(reason) = info_reason {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "googleapis.com",
            "metadata": {"service": "fcm.googleapis.com", "method": "google.firebase.fcm.v1.FcmService.SendMessage"},
        }));
    }
    let mut error = json!({"code": status, "message": message, "status": canonical(status)});
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    http_util::json(status, &json!({ "error": error }))
}
