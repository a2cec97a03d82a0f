//! HTTP Basic authentication (account SID + auth token, or API key SID + secret) and the
//! per-account rate limit, as one middleware in front of every API route.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::digest::{SHA256, digest};

use crate::errors::{ChatError, PushError, code};
use crate::{AppState, is_chat_path};

/// The authenticated account of a request. Handlers take it as an extractor.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account_sid: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| unauthorized(parts.uri.path()))
    }
}

/// Recently verified credentials, so a busy client does not cost a database read per request.
/// Keyed by the username and a SHA-256 of the password (the password itself is not kept). Only
/// successes are cached, so a new account or key works at once.
pub struct AuthCache {
    ttl: Duration,
    entries: Mutex<HashMap<CacheKey, (String, Instant)>>,
}

/// `(username, SHA-256 of the password)`.
type CacheKey = (String, [u8; 32]);

impl AuthCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &CacheKey) -> Option<String> {
        let entries = self.entries.lock().expect("auth cache lock");
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(sid, _)| sid.clone())
    }

    fn put(&self, key: CacheKey, account_sid: String) {
        let mut entries = self.entries.lock().expect("auth cache lock");
        if entries.len() > 10_000 {
            entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
        }
        entries.insert(key, (account_sid, Instant::now()));
    }
}

/// `username`, `password` of a Basic `Authorization` header (scheme matched case-insensitively).
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (username, password) = decoded.split_once(':')?;
    Some((username.to_owned(), password.to_owned()))
}

fn unauthorized(path: &str) -> Response {
    let message = "Authentication failed: use HTTP Basic auth with an account SID and auth token, or an API key SID and secret";
    let mut response = if is_chat_path(path) {
        ChatError::new(
            StatusCode::UNAUTHORIZED,
            code::AUTHENTICATION_FAILED,
            message,
        )
        .into_response()
    } else {
        PushError::new(
            StatusCode::UNAUTHORIZED,
            code::AUTHENTICATION_FAILED,
            message,
        )
        .into_response()
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Herald\""),
    );
    response
}

fn too_many_requests(path: &str, retry_after: u64) -> Response {
    let message = "Too many requests: the account's rate limit is exceeded; retry after the Retry-After seconds";
    if is_chat_path(path) {
        let mut error = ChatError::new(
            StatusCode::TOO_MANY_REQUESTS,
            code::TOO_MANY_REQUESTS,
            message,
        );
        error.retry_after = Some(retry_after);
        error.into_response()
    } else {
        let mut error = PushError::new(
            StatusCode::TOO_MANY_REQUESTS,
            code::TOO_MANY_REQUESTS,
            message,
        );
        error.retry_after = Some(retry_after);
        error.into_response()
    }
}

/// Paths anyone may read.
const PUBLIC_PATHS: &[&str] = &["/healthz", "/openapi.json"];

/// Middleware: authenticates, applies the rate limit, and puts the [`Caller`] in the request.
pub async fn require_auth(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if PUBLIC_PATHS.contains(&path.as_str()) {
        return next.run(request).await;
    }
    let Some((username, password)) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(basic_credentials)
    else {
        return unauthorized(&path);
    };
    let mut password_hash = [0u8; 32];
    password_hash.copy_from_slice(digest(&SHA256, password.as_bytes()).as_ref());
    let key = (username, password_hash);
    let account_sid = match state.auth.get(&key) {
        Some(sid) => sid,
        None => match state.store.authenticate(&key.0, &password).await {
            Ok(Some(sid)) => {
                state.auth.put(key, sid.clone());
                sid
            }
            Ok(None) => return unauthorized(&path),
            Err(error) => {
                tracing::error!(%error, "authentication lookup failed");
                return PushError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code::SERVICE_UNAVAILABLE,
                    "store unavailable",
                )
                .into_response();
            }
        },
    };
    if let Err(retry_after) = state.limiter.check(&account_sid) {
        return too_many_requests(&path, retry_after);
    }
    request.extensions_mut().insert(Caller { account_sid });
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_scheme_is_case_insensitive() {
        let encoded = STANDARD.encode("AC1:secret:with:colons");
        for scheme in ["Basic", "basic", "BASIC"] {
            let header = HeaderValue::from_str(&format!("{scheme} {encoded}")).unwrap();
            assert_eq!(
                basic_credentials(&header),
                Some(("AC1".to_owned(), "secret:with:colons".to_owned()))
            );
        }
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Bearer abc")),
            None
        );
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Basic !!!")),
            None
        );
    }
}
