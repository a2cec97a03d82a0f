//! Push API extension: `/v1/PushNotifications/EventSubscription`, the account's one webhook
//! subscription for CloudEvents (see `docs/events.md`).
//!
//! | call | answer |
//! |---|---|
//! | `PUT` `{url, secret}` | 202 `{resourceId, resourceLocation}` + `Location` (creates or replaces) |
//! | `GET` | 200 `{url, createdAt, updatedAt}` (never the secret), 404 when there is none |
//! | `DELETE` | 202, 404 when there is none; events still waiting are discarded |
//!
//! The resource is a singleton per account: `resourceId` is the account SID and
//! `resourceLocation` the subscription's own URL. The choices made where the contract is silent
//! are in `docs/decisions/events.md`.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herald_core::time::format_rfc3339;
use herald_store::events::{MAX_SECRET_BYTES, MAX_URL_CHARS};
use serde_json::json;

use crate::AppState;
use crate::auth::Caller;
use crate::errors::{FieldErrors, PushError};
use crate::json::{Fields, PushJson};

const PATH: &str = "/EventSubscription";

pub fn routes() -> Router<AppState> {
    Router::new().route(PATH, get(fetch).put(put).delete(remove))
}

/// The absolute URL of the subscription.
fn location(state: &AppState) -> String {
    format!("{}/v1/PushNotifications{PATH}", state.config.public_url)
}

/// 202 `{resourceId: account SID, resourceLocation}` with `Location`.
fn accepted(state: &AppState, account_sid: &str) -> Response {
    let location = location(state);
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "resourceId": account_sid, "resourceLocation": location })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Checks `url` and records every problem at `path`. Never quotes the URL back (its query may
/// carry the receiver's own token).
pub(crate) fn check_url(url: &str, path: &str, errors: &mut FieldErrors) {
    if url.is_empty() {
        errors.add(path, "url must not be empty");
        return;
    }
    if url.chars().count() > MAX_URL_CHARS {
        errors.add(
            path,
            format!("url must be at most {MAX_URL_CHARS} characters"),
        );
        return;
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errors.add(path, "url must not contain spaces or control characters");
        return;
    }
    let parsed = match url::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(error) => {
            errors.add(
                path,
                format!("url must be an absolute http(s) URL ({error})"),
            );
            return;
        }
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        errors.add(path, "url must use http or https");
        return;
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        errors.add(path, "url must name a host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        errors.add(
            path,
            "url must not contain a user name or password (it is shown by GET); authenticate \
             deliveries by verifying X-Herald-Signature",
        );
    }
}

/// Checks `secret` at `path`. Never quotes it.
pub(crate) fn check_secret(secret: &str, path: &str, errors: &mut FieldErrors) {
    if secret.is_empty() {
        errors.add(path, "secret must not be empty");
    } else if secret.len() > MAX_SECRET_BYTES {
        errors.add(
            path,
            format!("secret must be at most {MAX_SECRET_BYTES} bytes"),
        );
    }
}

async fn put(
    State(state): State<AppState>,
    caller: Caller,
    PushJson(body): PushJson,
) -> Result<Response, PushError> {
    let fields = Fields::new(&body, "");
    let mut errors = FieldErrors::new();
    fields.deny_unknown(&["url", "secret"], &mut errors);
    let url = fields.required_string("url", &mut errors);
    let secret = fields.required_string("secret", &mut errors);
    if let Some(url) = url {
        check_url(url, "url", &mut errors);
    }
    if let Some(secret) = secret {
        check_secret(secret, "secret", &mut errors);
    }
    let (Some(url), Some(secret)) = errors.finish((url, secret))? else {
        // finish() only passes when both were read.
        return Err(PushError::internal());
    };
    state
        .store
        .put_event_subscription(&caller.account_sid, url, secret)
        .await?;
    Ok(accepted(&state, &caller.account_sid))
}

async fn fetch(State(state): State<AppState>, caller: Caller) -> Result<Response, PushError> {
    let subscription = state
        .store
        .get_event_subscription(&caller.account_sid)
        .await
        .map_err(not_subscribed)?;
    Ok(axum::Json(json!({
        "url": subscription.url,
        "createdAt": format_rfc3339(subscription.created_at),
        "updatedAt": format_rfc3339(subscription.updated_at),
    }))
    .into_response())
}

async fn remove(State(state): State<AppState>, caller: Caller) -> Result<Response, PushError> {
    state
        .store
        .delete_event_subscription(&caller.account_sid)
        .await
        .map_err(not_subscribed)?;
    Ok(accepted(&state, &caller.account_sid))
}

fn not_subscribed(error: herald_store::StoreError) -> PushError {
    match error {
        herald_store::StoreError::NotFound => {
            PushError::not_found("the account has no event subscription")
        }
        other => other.into(),
    }
}
