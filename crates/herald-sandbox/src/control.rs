//! Control API under `/_sandbox/`: faults, stats, recorded requests, access-token revocation,
//! GOAWAY, run settings.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Method, Request};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::credentials;
use crate::http_util::{self, BodyError, HandlerResult, Reset, Resp};
use crate::state::{Fault, State, lock};

const READ_LIMIT: usize = 1 << 20;

fn error(status: u16, message: impl Into<String>) -> Resp {
    http_util::json(status, &json!({"error": message.into()}))
}

fn ok(body: Value) -> Resp {
    http_util::json(200, &body)
}

pub(crate) async fn handle(state: Arc<State>, req: Request<Incoming>) -> HandlerResult {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().trim_end_matches('/').to_owned();
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let body = match http_util::read_body(body, READ_LIMIT).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return Ok(error(413, "request body too large")),
        Err(BodyError::Broken) => return Err(Reset),
    };
    let method = parts.method;
    let resp = match (path.as_str(), &method) {
        ("/_sandbox/faults", &Method::POST) => add_fault(&state, &body),
        ("/_sandbox/faults", &Method::GET) => ok(json!(state.faults.list())),
        ("/_sandbox/faults", &Method::DELETE) => {
            let cleared = state.faults.clear(query.get("token").map(String::as_str));
            ok(json!({"cleared": cleared}))
        }
        ("/_sandbox/stats", &Method::GET) => ok(state.stats.json()),
        ("/_sandbox/stats", &Method::DELETE) => {
            state.stats.reset();
            ok(state.stats.json())
        }
        ("/_sandbox/received", &Method::GET) => match query.get("token") {
            Some(token) => ok(Value::Array(state.received(token))),
            None => error(400, "query parameter 'token' is required"),
        },
        ("/_sandbox/received", &Method::DELETE) => {
            state.clear_received();
            ok(json!({"cleared": true}))
        }
        ("/_sandbox/fcm/revoke-access-tokens", &Method::POST) => {
            let mut tokens = lock(&state.access_tokens);
            let revoked = tokens.len();
            tokens.clear();
            ok(json!({"revoked": revoked}))
        }
        ("/_sandbox/goaway", &Method::POST) => {
            let connections = state.open_connections.load(Ordering::Relaxed);
            state.goaway.send_modify(|generation| *generation += 1);
            ok(json!({"connections": connections}))
        }
        ("/_sandbox/config", &Method::GET) => ok(config_json(&state)),
        ("/_sandbox/config", &Method::PATCH | &Method::POST) => set_config(&state, &body),
        ("/_sandbox/info", &Method::GET) => ok(info_json(&state)),
        (
            "/_sandbox/faults"
            | "/_sandbox/stats"
            | "/_sandbox/received"
            | "/_sandbox/fcm/revoke-access-tokens"
            | "/_sandbox/goaway"
            | "/_sandbox/config"
            | "/_sandbox/info",
            _,
        ) => error(405, format!("{method} is not allowed on {path}")),
        _ => error(404, format!("no control endpoint {path}")),
    };
    Ok(resp)
}

fn add_fault(state: &State, body: &[u8]) -> Resp {
    let fault: Fault = match serde_json::from_slice(body) {
        Ok(f) => f,
        Err(e) => return error(400, format!("invalid fault: {e}")),
    };
    if fault.token.is_empty() {
        return error(400, "token: must not be empty");
    }
    if let Some(status) = fault.status
        && !(200..=599).contains(&status)
    {
        return error(400, "status: must be an HTTP status from 200 to 599");
    }
    if fault.times == Some(0) {
        return error(
            400,
            "times: must be at least 1 (leave it out for every time)",
        );
    }
    if fault.status.is_none() && !fault.reset && fault.delay_ms.is_none() {
        return error(400, "a fault needs a status, reset: true, or delayMs");
    }
    let echo = json!(fault);
    state.faults.add(fault);
    http_util::json(201, &echo)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigPatch {
    fail_rate: Option<f64>,
    latency_ms: Option<u64>,
    record: Option<bool>,
    /// `expires_in` of access tokens issued from now on, in seconds.
    access_token_lifetime: Option<u64>,
}

fn set_config(state: &State, body: &[u8]) -> Resp {
    let patch: ConfigPatch = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return error(400, format!("invalid config: {e}")),
    };
    if let Some(rate) = patch.fail_rate {
        if !(0.0..=1.0).contains(&rate) {
            return error(400, "failRate: must be between 0 and 1");
        }
        state.set_fail_rate(rate);
    }
    if let Some(ms) = patch.latency_ms {
        state.latency_ms.store(ms, Ordering::Relaxed);
    }
    if let Some(record) = patch.record {
        state.record.store(record, Ordering::Relaxed);
    }
    if let Some(secs) = patch.access_token_lifetime {
        state.token_lifetime.store(secs, Ordering::Relaxed);
    }
    ok(config_json(state))
}

fn config_json(state: &State) -> Value {
    json!({
        "failRate": state.fail_rate(),
        "latencyMs": state.latency_ms.load(Ordering::Relaxed),
        "record": state.recording(),
        "accessTokenLifetime": state.token_lifetime.load(Ordering::Relaxed),
    })
}

fn info_json(state: &State) -> Value {
    let c = &state.creds;
    let dir = c.dir.canonicalize().unwrap_or_else(|_| c.dir.clone());
    json!({
        "credentialsDir": dir,
        "files": credentials::CREDENTIAL_FILES,
        "apns": {"bundleId": c.bundle_id, "keyId": c.apns_key_id, "teamId": c.apns_team_id},
        "fcm": {"projectId": c.fcm_project_id, "clientEmail": c.fcm_client_email, "tokenUri": c.fcm_token_uri},
        "openConnections": state.open_connections.load(Ordering::Relaxed),
    })
}
