//! Firebase Cloud Messaging HTTP v1: service-account OAuth and `messages:send` over HTTP/2.

mod classify;
mod oauth;
mod payload;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Uri};
use serde_json::json;
use uuid::Uuid;

pub use classify::classify_fcm;
pub use oauth::{FCM_SCOPE, GOOGLE_TOKEN_URI, ServiceAccount};
pub use payload::{FCM_MAX_PAYLOAD, fcm_message, fcm_payload_size};

use crate::error::ProviderError;
use crate::h2pool::{Origin, Pool, SendError};
use crate::outcome::retry_after_header;
use crate::template::TokenTemplate;
use crate::{Outcome, PushMessage};
use oauth::{AccessToken, OAuth};

/// An FCM HTTP v1 credential: the service-account JSON file Google issues.
#[derive(Clone, PartialEq, Eq)]
pub struct FcmCredential {
    pub service_account_json: String,
}

impl std::fmt::Debug for FcmCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmCredential").finish_non_exhaustive()
    }
}

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A message rendered for FCM v1 once; each send splices the device token into the bytes.
#[derive(Debug, Clone)]
pub struct FcmPrepared {
    template: Option<TokenTemplate>,
    invalid: Option<String>,
}

impl FcmPrepared {
    pub fn new(msg: &PushMessage) -> Self {
        match TokenTemplate::build(|token| json!({ "message": fcm_message(msg, token) })) {
            Ok(template) => FcmPrepared {
                template: Some(template),
                invalid: None,
            },
            Err(e) => FcmPrepared {
                template: None,
                invalid: Some(format!("INVALID_ARGUMENT: cannot render the message: {e}")),
            },
        }
    }

    /// The request body for one device token.
    pub fn body(&self, device_token: &str) -> Option<Bytes> {
        self.template.as_ref().map(|t| t.body(device_token))
    }

    /// Why the message cannot be sent (its sends answer `Permanent` with this reason), if so.
    pub fn invalid_reason(&self) -> Option<&str> {
        self.invalid.as_deref()
    }

    /// Size of the request body without the device token.
    pub fn len_without_token(&self) -> usize {
        self.template
            .as_ref()
            .map_or(0, TokenTemplate::len_without_token)
    }
}

/// An FCM HTTP v1 client for one service account: OAuth token cache and a pool of HTTP/2
/// connections to the FCM endpoint. Cheap to share (`Arc`).
pub struct FcmClient {
    pool: Pool,
    oauth: OAuth,
    uri: Uri,
    project_id: String,
    timeout: Duration,
}

impl std::fmt::Debug for FcmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmClient")
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

impl FcmClient {
    pub(crate) fn new(
        credential: &FcmCredential,
        origin: Origin,
        h2_config: &Arc<rustls::ClientConfig>,
        oauth_http: reqwest::Client,
        max_connections: usize,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let sa = ServiceAccount::parse(&credential.service_account_json)?;
        let project_id = sa.project_id.trim().to_string();
        if !project_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'))
        {
            return Err(ProviderError::InvalidCredential(format!(
                "service account project_id {project_id:?} has unexpected characters"
            )));
        }
        let uri = origin
            .uri(&format!("/v1/projects/{project_id}/messages:send"))
            .map_err(ProviderError::InvalidCredential)?;
        let oauth = OAuth::new(&sa, oauth_http)?;
        let tls = origin.is_tls().then(|| h2_config.clone());
        Ok(FcmClient {
            pool: Pool::new(origin, tls, max_connections, timeout),
            oauth,
            uri,
            project_id,
            timeout,
        })
    }

    /// The service account's project.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// Renders `msg` for FCM (same as [`FcmPrepared::new`]).
    pub fn prepare(&self, msg: &PushMessage) -> FcmPrepared {
        FcmPrepared::new(msg)
    }

    /// How many OAuth token requests this client has made.
    pub fn token_fetches(&self) -> u64 {
        self.oauth.fetches()
    }

    /// How many connections this client has opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.pool.connections_opened()
    }

    /// Sends a prepared message to one registration token. `id` is Herald's notification id; FCM
    /// names messages itself (the name comes back in `Delivered::provider_id`), so it is only
    /// logged. Never fails: every answer, error and timeout is an [`Outcome`].
    pub async fn send(&self, prepared: &FcmPrepared, device_token: &str, id: Uuid) -> Outcome {
        tracing::trace!(notification = %id, "FCM send");
        match tokio::time::timeout(self.timeout, self.send_inner(prepared, device_token)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::retry(format!(
                "Timeout: no answer from FCM within {:?}",
                self.timeout
            )),
        }
    }

    async fn send_inner(&self, prepared: &FcmPrepared, device_token: &str) -> Outcome {
        let body = match (&prepared.invalid, &prepared.template) {
            (None, Some(template)) => template.body(device_token),
            (invalid, _) => {
                return Outcome::Permanent {
                    status: None,
                    reason: invalid
                        .clone()
                        .unwrap_or_else(|| "INVALID_ARGUMENT: message not rendered".into()),
                };
            }
        };
        if device_token.is_empty() {
            return Outcome::Permanent {
                status: None,
                reason: "INVALID_ARGUMENT: empty registration token".into(),
            };
        }
        let mut access = match self.oauth.token(None).await {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        let content_length = HeaderValue::from(body.len());
        let mut refreshed = false;
        loop {
            let make = || self.request(&access, &content_length);
            let response = match self.pool.send(make, &body).await {
                Ok(response) => response,
                Err(err) => return send_error("FCM", err),
            };
            let status = response.status.as_u16();
            if status == 401 && !refreshed && !classify::is_third_party_auth_error(&response.body) {
                // The access token was refused (revoked, expired early): fetch a new one, once.
                refreshed = true;
                match self.oauth.token(Some(&access)).await {
                    Ok(token) => {
                        access = token;
                        continue;
                    }
                    Err(outcome) => return outcome,
                }
            }
            return classify_fcm(
                status,
                &response.body,
                retry_after_header(&response.headers),
            );
        }
    }

    fn request(&self, access: &AccessToken, content_length: &HeaderValue) -> Request<()> {
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.reserve(4);
        headers.insert(AUTHORIZATION, access.header.clone());
        headers.insert(CONTENT_TYPE, APPLICATION_JSON);
        headers.insert(CONTENT_LENGTH, content_length.clone());
        request
    }
}

/// The outcome of a request that got no answer.
pub(crate) fn send_error(provider: &str, err: SendError) -> Outcome {
    match err {
        SendError::Connect(err) => Outcome::retry(format!(
            "ConnectionFailed: cannot reach {provider}: {}",
            err.message
        )),
        SendError::Unsent(message) => Outcome::retry(format!(
            "ConnectionClosed: the connection closed before the request was sent ({message})"
        )),
        SendError::MaybeSent(message) => Outcome::retry(format!(
            "ConnectionClosed: the connection broke after the request was sent ({message})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_body_splices_token() {
        let msg = PushMessage {
            title: Some("T".into()),
            body: Some("B".into()),
            ttl_seconds: 60,
            ..PushMessage::new()
        };
        let p = FcmPrepared::new(&msg);
        assert!(p.invalid_reason().is_none());
        let body: serde_json::Value = serde_json::from_slice(&p.body("tok-1").unwrap()).unwrap();
        assert_eq!(body, json!({"message": fcm_message(&msg, "tok-1")}));
        assert!(p.len_without_token() > 0);
    }
}
