//! Herald's HTTP API: the Twilio Comms "Push Notifications" face under `/v1/PushNotifications`
//! (and `/preview/PushNotifications`), and the Twilio Chat v2 Credential face under
//! `/v2/Credentials`, over one store. See `shared/spec/API.md` and `docs/api.md`.
//!
//! Layout: `push/` has one file per Push resource, `chat/` the Chat face; `auth.rs`, `errors.rs`,
//! `json.rs`, `pagination.rs` and `rate_limit.rs` are shared by both faces.

pub mod auth;
pub mod chat;
pub mod errors;
pub mod json;
mod openapi;
pub mod pagination;
pub mod push;
pub mod rate_limit;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herald_store::{MasterKey, Store};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::AuthCache;
use crate::errors::{ChatError, PushError};
use crate::pagination::PageTokens;
use crate::rate_limit::{RateLimit, RateLimiter};

/// API settings (from the CLI / config file / environment).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Absolute URLs in responses start with this (no trailing slash).
    pub public_url: String,
    /// Request bodies above this many bytes get 413.
    pub body_limit_bytes: usize,
    pub rate_limit: RateLimit,
    /// How long a verified credential is remembered.
    pub auth_cache_ttl: Duration,
}

impl ApiConfig {
    pub fn new(public_url: impl Into<String>) -> Self {
        Self {
            public_url: public_url.into().trim_end_matches('/').to_owned(),
            body_limit_bytes: 4 * 1024 * 1024,
            rate_limit: RateLimit::default(),
            auth_cache_ttl: Duration::from_secs(5),
        }
    }
}

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<ApiConfig>,
    pub(crate) auth: Arc<AuthCache>,
    pub(crate) limiter: Arc<RateLimiter>,
    /// Apps' providers as sends check them; cleared by this node's credential and app writes.
    pub(crate) app_senders: Arc<push::send::AppSenderCache>,
    pub pages: Arc<PageTokens>,
    /// Notified after a send is stored, so the delivery engine plans it without waiting for its
    /// next poll. The binary hands the same `Notify` to the engine.
    pub wake_delivery: Arc<tokio::sync::Notify>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: ApiConfig, master_key: &MasterKey) -> Self {
        Self {
            auth: Arc::new(AuthCache::new(config.auth_cache_ttl)),
            limiter: Arc::new(RateLimiter::new(config.rate_limit.clone())),
            app_senders: Arc::default(),
            pages: Arc::new(PageTokens::new(
                &master_key.derive_key("herald page tokens v1"),
            )),
            wake_delivery: Arc::new(tokio::sync::Notify::new()),
            store,
            config: Arc::new(config),
        }
    }

    /// The absolute URL of a Push API resource, e.g. `push_url("Credentials", id)`.
    pub fn push_url(&self, collection: &str, id: &str) -> String {
        format!(
            "{}/v1/PushNotifications/{collection}/{id}",
            self.config.public_url
        )
    }
}

/// The whole API as one router.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi::document))
        .nest("/v1/PushNotifications", push::router())
        .nest("/preview/PushNotifications", push::router())
        .nest("/v2", chat::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Outside the routing, so unknown paths need auth too (no unauthenticated probing).
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_auth))
        .layer(DefaultBodyLimit::max(state.config.body_limit_bytes))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok"})),
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, "health check: store unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"status": "store unreachable"})),
            )
                .into_response()
        }
    }
}

/// Whether a path belongs to the Chat face (which answers errors in its own shape).
pub(crate) fn is_chat_path(path: &str) -> bool {
    path.starts_with("/v2/") || path == "/v2"
}

async fn not_found(uri: Uri) -> Response {
    if is_chat_path(uri.path()) {
        ChatError::not_found().into_response()
    } else {
        PushError::not_found(format!("no resource at {}", uri.path())).into_response()
    }
}

async fn method_not_allowed(uri: Uri) -> Response {
    let message = format!("method not allowed on {}", uri.path());
    if is_chat_path(uri.path()) {
        ChatError::new(StatusCode::METHOD_NOT_ALLOWED, 20004, message).into_response()
    } else {
        PushError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            errors::code::METHOD_NOT_ALLOWED,
            message,
        )
        .into_response()
    }
}
