//! Apple Push Notification service: HTTP/2 over TLS, token (ES256 JWT) or certificate auth.

mod classify;
mod payload;
mod token;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use uuid::Uuid;

pub use classify::classify_apns;
pub use payload::{APNS_MAX_PAYLOAD, ApnsHeaders, apns_headers, apns_payload, apns_payload_value};
pub use token::{PROVIDER_TOKEN_MIN_REMINT, PROVIDER_TOKEN_REUSE};

use crate::error::ProviderError;
use crate::h2pool::{ConnectErrorKind, Origin, Pool, SendError};
use crate::outcome::retry_after_header;
use crate::{Outcome, PushMessage};
use token::{ProviderToken, ProviderTokens};

/// How Herald authenticates to APNs.
#[derive(Clone, PartialEq, Eq)]
pub enum ApnsAuth {
    /// Token auth: a `.p8` signing key (PEM, PKCS#8 P-256), its key id and the team id.
    Token {
        key_id: String,
        team_id: String,
        private_key_pem: String,
    },
    /// Certificate auth: a client certificate (PEM, chain allowed) and its private key (PEM).
    Certificate { cert_pem: String, key_pem: String },
}

impl std::fmt::Debug for ApnsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApnsAuth::Token {
                key_id, team_id, ..
            } => f
                .debug_struct("Token")
                .field("key_id", key_id)
                .field("team_id", team_id)
                .finish_non_exhaustive(),
            ApnsAuth::Certificate { .. } => f.debug_struct("Certificate").finish_non_exhaustive(),
        }
    }
}

/// An APNs credential: auth, topic (the app's bundle id) and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsCredential {
    pub auth: ApnsAuth,
    /// `apns-topic`. Required with token auth; with certificate auth it may be empty, and APNs then
    /// uses the certificate's topic.
    pub topic: String,
    /// Development environment (`HERALD_APNS_SANDBOX_URL`) instead of production.
    pub sandbox: bool,
}

const APNS_ID: HeaderName = HeaderName::from_static("apns-id");
const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A message rendered for APNs once: payload bytes and per-message headers, shared by every
/// device it goes to (and by every APNs credential).
#[derive(Debug, Clone)]
pub struct ApnsPrepared {
    payload: Bytes,
    /// The message's own headers (push type, priority, expiration, collapse id, content type and
    /// length): each request starts from a copy and adds its apns-id, topic and token, which
    /// costs less than hashing and inserting all of them again.
    headers: HeaderMap,
    /// Why this message cannot be sent at all (too large, bad collapse id).
    invalid: Option<String>,
}

impl ApnsPrepared {
    /// Renders `msg` now (the expiration of a message without `expires_at_unix` is now + TTL).
    pub fn new(msg: &PushMessage) -> Self {
        Self::at(msg, SystemTime::now())
    }

    /// Renders `msg` as of `now`.
    pub fn at(msg: &PushMessage, now: SystemTime) -> Self {
        let payload = apns_payload(msg);
        let headers = apns_headers(msg, now);
        let mut invalid = None;
        if payload.len() > APNS_MAX_PAYLOAD {
            invalid = Some(format!(
                "PayloadTooLarge: the payload is {} bytes; APNs accepts at most {APNS_MAX_PAYLOAD}",
                payload.len()
            ));
        }
        let collapse_id = match &headers.collapse_id {
            None => None,
            Some(id) if id.len() > 64 => {
                invalid = Some(format!(
                    "BadCollapseId: the collapse id is {} bytes; APNs accepts at most 64",
                    id.len()
                ));
                None
            }
            Some(id) => match HeaderValue::from_str(id) {
                Ok(value) => Some(value),
                Err(_) => {
                    invalid = Some("BadCollapseId: not a valid header value".to_string());
                    None
                }
            },
        };
        // Room for the three headers each request adds.
        let mut map = HeaderMap::with_capacity(10);
        map.insert(APNS_PUSH_TYPE, HeaderValue::from_static(headers.push_type));
        map.insert(
            APNS_PRIORITY,
            HeaderValue::from(u16::from(headers.priority)),
        );
        map.insert(APNS_EXPIRATION, HeaderValue::from(headers.expiration));
        if let Some(collapse_id) = collapse_id {
            map.insert(APNS_COLLAPSE_ID, collapse_id);
        }
        map.insert(CONTENT_TYPE, APPLICATION_JSON);
        map.insert(CONTENT_LENGTH, HeaderValue::from(payload.len()));
        ApnsPrepared {
            payload: Bytes::from(payload),
            headers: map,
            invalid,
        }
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Why the message cannot be sent (its sends answer `Permanent` with this reason), if so.
    pub fn invalid_reason(&self) -> Option<&str> {
        self.invalid.as_deref()
    }
}

enum Auth {
    Token(Box<ProviderTokens>),
    Certificate,
}

/// An APNs client for one credential: a pool of HTTP/2 connections and, with token auth, the
/// provider token. Cheap to share (`Arc`); every method takes `&self`.
pub struct ApnsClient {
    pool: Pool,
    auth: Auth,
    topic: Option<HeaderValue>,
    timeout: Duration,
}

impl std::fmt::Debug for ApnsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsClient")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl ApnsClient {
    pub(crate) fn new(
        credential: &ApnsCredential,
        origin: Origin,
        roots: &Arc<rustls::RootCertStore>,
        h2_config: &Arc<rustls::ClientConfig>,
        max_connections: usize,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let topic = credential.topic.trim();
        let topic = if topic.is_empty() {
            None
        } else {
            Some(HeaderValue::from_str(topic).map_err(|_| {
                ProviderError::InvalidCredential("APNs topic is not a valid header value".into())
            })?)
        };
        let (auth, tls) = match &credential.auth {
            ApnsAuth::Token {
                key_id,
                team_id,
                private_key_pem,
            } => {
                if topic.is_none() {
                    return Err(ProviderError::InvalidCredential(
                        "APNs token auth needs a topic (the app's bundle id)".into(),
                    ));
                }
                (
                    Auth::Token(Box::new(ProviderTokens::new(
                        key_id,
                        team_id,
                        private_key_pem,
                    )?)),
                    h2_config.clone(),
                )
            }
            ApnsAuth::Certificate { cert_pem, key_pem } => (
                Auth::Certificate,
                crate::tls::client_cert_config(roots, cert_pem, key_pem)?,
            ),
        };
        let tls = origin.is_tls().then_some(tls);
        Ok(ApnsClient {
            pool: Pool::new(origin, tls, max_connections, timeout),
            auth,
            topic,
            timeout,
        })
    }

    /// Renders `msg` for APNs (same as [`ApnsPrepared::new`]).
    pub fn prepare(&self, msg: &PushMessage) -> ApnsPrepared {
        ApnsPrepared::new(msg)
    }

    /// How many connections this client has opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.pool.connections_opened()
    }

    /// How many provider tokens (JWTs) this client has minted; 0 with certificate auth.
    pub fn provider_tokens_minted(&self) -> u64 {
        match &self.auth {
            Auth::Token(tokens) => tokens.minted(),
            Auth::Certificate => 0,
        }
    }

    /// Sends a prepared message to one device token; `id` becomes `apns-id`. Never fails: every
    /// answer, error and timeout is an [`Outcome`].
    pub async fn send(&self, prepared: &ApnsPrepared, device_token: &str, id: Uuid) -> Outcome {
        match tokio::time::timeout(self.timeout, self.send_inner(prepared, device_token, id)).await
        {
            Ok(outcome) => outcome,
            Err(_) => Outcome::retry(format!(
                "Timeout: no answer from APNs within {:?}",
                self.timeout
            )),
        }
    }

    async fn send_inner(&self, prepared: &ApnsPrepared, device_token: &str, id: Uuid) -> Outcome {
        if let Some(reason) = &prepared.invalid {
            return Outcome::Permanent {
                status: None,
                reason: reason.clone(),
            };
        }
        if device_token.is_empty() {
            return Outcome::Permanent {
                status: None,
                reason: "MissingDeviceToken: empty device token".into(),
            };
        }
        let uri = match self.pool.origin().uri(&device_path(device_token)) {
            Ok(uri) => uri,
            Err(e) => {
                return Outcome::Permanent {
                    status: None,
                    reason: format!("BadPath: {e}"),
                };
            }
        };
        let mut buf = Uuid::encode_buffer();
        let apns_id: &str = id.hyphenated().encode_lower(&mut buf);
        let mut provider_token = match &self.auth {
            Auth::Token(tokens) => Some(tokens.current()),
            Auth::Certificate => None,
        };
        let mut reminted = false;
        loop {
            let make = || self.request(&uri, prepared, apns_id, provider_token.as_deref());
            let response = match self.pool.send(make, &prepared.payload).await {
                Ok(response) => response,
                Err(err) => return self.send_error(err),
            };
            let status = response.status.as_u16();
            let reason = if response.body.is_empty() {
                None
            } else {
                serde_json::from_slice::<ErrorBody>(&response.body)
                    .ok()
                    .and_then(|b| b.reason)
            };
            if status == 403
                && reason
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case("ExpiredProviderToken"))
                && let (Auth::Token(tokens), Some(used)) = (&self.auth, &provider_token)
            {
                if !reminted {
                    reminted = true;
                    if let Some(fresh) = tokens.after_expired(used) {
                        tracing::info!(
                            "APNs refused the provider token as expired; retrying with a new one"
                        );
                        provider_token = Some(fresh);
                        continue;
                    }
                }
                return Outcome::CredentialError {
                    status: Some(403),
                    reason: "ExpiredProviderToken: refused again after re-minting the provider \
                                 token; check the server clock and the key"
                        .into(),
                };
            }
            let echoed_id = response
                .headers
                .get(&APNS_ID)
                .and_then(|v| v.to_str().ok())
                .or(Some(apns_id));
            return classify_apns(
                status,
                reason.as_deref(),
                retry_after_header(&response.headers),
                echoed_id,
            );
        }
    }

    fn request(
        &self,
        uri: &Uri,
        prepared: &ApnsPrepared,
        apns_id: &str,
        provider_token: Option<&ProviderToken>,
    ) -> Request<()> {
        // Made here rather than cloned: a clone of a header value's bytes turns them into shared
        // ones (an allocation and atomic counts), for a value sent once.
        let mut apns_id = HeaderValue::from_str(apns_id).expect("uuid is ASCII");
        // Unique to this request: HPACK need not add it to either side's table (where it would
        // only evict the headers every request repeats).
        apns_id.set_sensitive(true);
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        *headers = prepared.headers.clone();
        if let Some(token) = provider_token {
            headers.insert(AUTHORIZATION, token.header.clone());
        }
        headers.insert(APNS_ID, apns_id);
        if let Some(topic) = &self.topic {
            headers.insert(APNS_TOPIC, topic.clone());
        }
        request
    }

    fn send_error(&self, err: SendError) -> Outcome {
        match err {
            SendError::Connect(err)
                if err.kind == ConnectErrorKind::ClientCertRejected
                    && matches!(self.auth, Auth::Certificate) =>
            {
                Outcome::CredentialError {
                    status: None,
                    reason: format!(
                        "BadCertificate: APNs refused the client certificate ({})",
                        err.message
                    ),
                }
            }
            SendError::Connect(err) => Outcome::retry(format!("ConnectionFailed: {}", err.message)),
            SendError::Unsent(message) => Outcome::retry(format!(
                "ConnectionClosed: the connection closed before the request was sent ({message})"
            )),
            SendError::MaybeSent(message) => Outcome::retry(format!(
                "ConnectionClosed: the connection broke after the request was sent ({message})"
            )),
        }
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    reason: Option<String>,
}

/// `/3/device/{token}` with every byte outside the URL-unreserved set percent-encoded.
fn device_path(token: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut path = String::with_capacity(10 + token.len());
    path.push_str("/3/device/");
    for &b in token.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            path.push(b as char);
        } else {
            path.push('%');
            path.push(HEX[usize::from(b >> 4)] as char);
            path.push(HEX[usize::from(b & 15)] as char);
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::tests::{APNS_KEY_PEM, decode};
    use crate::testserver::{Action, Options, Recorded, TestServer, ok};
    use crate::tls::tests::{
        CLIENT_CERT_PEM, CLIENT_KEY_PEM, SERVER_CERT_PEM, SERVER_KEY_PEM, TEST_CA_PEM,
    };
    use crate::{Priority, ProviderConfig, Providers};
    use serde_json::json;

    fn providers(server: &TestServer) -> Providers {
        Providers::new(ProviderConfig {
            apns_url: server.url(),
            apns_sandbox_url: server.url(),
            extra_ca_pem: Some(TEST_CA_PEM.as_bytes().to_vec()),
            ..ProviderConfig::default()
        })
        .unwrap()
    }

    fn token_credential() -> ApnsCredential {
        ApnsCredential {
            auth: ApnsAuth::Token {
                key_id: "ABC123DEFG".into(),
                team_id: "TEAM123456".into(),
                private_key_pem: APNS_KEY_PEM.into(),
            },
            topic: "com.example.app".into(),
            sandbox: true,
        }
    }

    fn header<'a>(r: &'a Recorded, name: &str) -> Option<&'a str> {
        r.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn reason(status: u16, reason: &str) -> Action {
        Action::Respond(
            status,
            vec![("content-type", "application/json".into())],
            json!({"reason": reason}).to_string().into_bytes(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn token_auth_reuses_one_jwt_and_sends_every_header() {
        let server = TestServer::start(Options::default(), Arc::new(|_, _| ok())).await;
        let providers = providers(&server);
        let client = providers.apns("cred", 1, &token_credential()).unwrap();
        let msg = PushMessage {
            title: Some("Hi".into()),
            body: Some("There".into()),
            collapse_key: Some("c-1".into()),
            priority: Priority::Low,
            ttl_seconds: 60,
            expires_at_unix: Some(1_900_000_000),
            ..PushMessage::new()
        };
        let prepared = client.prepare(&msg);
        let ids: Vec<Uuid> = (0..25).map(|_| Uuid::now_v7()).collect();
        let outcomes = futures::future::join_all(ids.iter().enumerate().map(|(i, id)| {
            let client = client.clone();
            let prepared = &prepared;
            async move { client.send(prepared, &format!("tok{i}"), *id).await }
        }))
        .await;
        for (outcome, id) in outcomes.iter().zip(&ids) {
            assert_eq!(
                outcome,
                &Outcome::Delivered {
                    provider_id: Some(id.to_string())
                }
            );
        }
        let recorded = server.recorded();
        assert_eq!(recorded.len(), 25);
        let bearer = header(&recorded[0], "authorization").unwrap();
        assert!(
            recorded
                .iter()
                .all(|r| header(r, "authorization") == Some(bearer))
        );
        let (scheme, jwt) = bearer.split_once(' ').unwrap();
        assert_eq!(scheme, "bearer");
        let (jwt_header, claims, _, _) = decode(jwt);
        assert_eq!(jwt_header, json!({"alg": "ES256", "kid": "ABC123DEFG"}));
        assert_eq!(claims["iss"], "TEAM123456");
        let r = recorded
            .iter()
            .find(|r| r.path == "/3/device/tok3")
            .unwrap();
        assert_eq!(header(r, "apns-id"), Some(ids[3].to_string().as_str()));
        assert_eq!(header(r, "apns-topic"), Some("com.example.app"));
        assert_eq!(header(r, "apns-push-type"), Some("alert"));
        assert_eq!(header(r, "apns-priority"), Some("5"));
        assert_eq!(header(r, "apns-expiration"), Some("1900000000"));
        assert_eq!(header(r, "apns-collapse-id"), Some("c-1"));
        assert_eq!(&r.body[..], &apns_payload(&msg)[..]);
        assert_eq!(client.connections_opened(), 1);
        assert_eq!(client.provider_tokens_minted(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_provider_token_is_reminted_once() {
        // The first request is refused as expired, then everything passes.
        let server = TestServer::start(
            Options::default(),
            Arc::new(|_, index| {
                if index == 0 {
                    reason(403, "ExpiredProviderToken")
                } else {
                    ok()
                }
            }),
        )
        .await;
        let providers = providers(&server);
        let client = providers.apns("cred", 1, &token_credential()).unwrap();
        let prepared = client.prepare(&PushMessage::new());
        let outcome = client.send(&prepared, "tok", Uuid::now_v7()).await;
        assert!(outcome.is_delivered(), "{outcome}");
        let recorded = server.recorded();
        assert_eq!(recorded.len(), 2);
        assert_ne!(
            header(&recorded[0], "authorization"),
            header(&recorded[1], "authorization")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_provider_token_after_the_remint_is_a_credential_error() {
        let server = TestServer::start(
            Options::default(),
            Arc::new(|_, _| reason(403, "ExpiredProviderToken")),
        )
        .await;
        let providers = providers(&server);
        let client = providers.apns("cred", 1, &token_credential()).unwrap();
        let prepared = client.prepare(&PushMessage::new());
        let outcome = client.send(&prepared, "tok", Uuid::now_v7()).await;
        assert!(
            matches!(
                outcome,
                Outcome::CredentialError {
                    status: Some(403),
                    ..
                }
            ),
            "{outcome}"
        );
        assert_eq!(outcome.reason_code(), "ExpiredProviderToken");
        assert_eq!(server.recorded().len(), 2);
        // Within 20 minutes of the forced re-mint, no new token: one request, refused.
        let outcome = client.send(&prepared, "tok", Uuid::now_v7()).await;
        assert!(
            matches!(outcome, Outcome::CredentialError { .. }),
            "{outcome}"
        );
        let recorded = server.recorded();
        assert_eq!(recorded.len(), 3);
        assert_eq!(
            header(&recorded[1], "authorization"),
            header(&recorded[2], "authorization")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_are_classified() {
        let server = TestServer::start(
            Options::default(),
            Arc::new(|r, _| match r.path.as_str() {
                "/3/device/dead" => reason(410, "Unregistered"),
                "/3/device/bad" => reason(400, "BadDeviceToken"),
                "/3/device/busy" => Action::Respond(
                    503,
                    vec![("retry-after", "7".into())],
                    json!({"reason": "ServiceUnavailable"})
                        .to_string()
                        .into_bytes(),
                ),
                "/3/device/slow" => reason(429, "TooManyRequests"),
                _ => reason(403, "InvalidProviderToken"),
            }),
        )
        .await;
        let providers = providers(&server);
        let client = providers.apns("cred", 1, &token_credential()).unwrap();
        let p = client.prepare(&PushMessage::new());
        let id = Uuid::now_v7();
        assert_eq!(
            client.send(&p, "dead", id).await,
            Outcome::DeadToken {
                status: 410,
                reason: "Unregistered".into()
            }
        );
        assert!(matches!(
            client.send(&p, "bad", id).await,
            Outcome::DeadToken { status: 400, .. }
        ));
        assert_eq!(
            client.send(&p, "busy", id).await,
            Outcome::Retry {
                after: Some(Duration::from_secs(7)),
                status: Some(503),
                reason: "ServiceUnavailable".into()
            }
        );
        assert!(matches!(
            client.send(&p, "slow", id).await,
            Outcome::Retry {
                status: Some(429),
                ..
            }
        ));
        assert!(matches!(
            client.send(&p, "other", id).await,
            Outcome::CredentialError {
                status: Some(403),
                ..
            }
        ));
        // A payload over 4096 bytes never leaves.
        let big = client.prepare(&PushMessage {
            body: Some("x".repeat(5000)),
            ..PushMessage::new()
        });
        assert!(matches!(
            client.send(&big, "tok", id).await,
            Outcome::Permanent { status: None, .. }
        ));
        assert_eq!(server.recorded().len(), 5);
    }

    fn cert_credential(cert: &str, key: &str) -> ApnsCredential {
        ApnsCredential {
            auth: ApnsAuth::Certificate {
                cert_pem: cert.into(),
                key_pem: key.into(),
            },
            topic: "com.example.app".into(),
            sandbox: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn certificate_auth() {
        let server = TestServer::start(
            Options {
                client_auth: true,
                ..Options::default()
            },
            Arc::new(|_, _| ok()),
        )
        .await;
        let providers = providers(&server);
        let client = providers
            .apns("cert", 1, &cert_credential(CLIENT_CERT_PEM, CLIENT_KEY_PEM))
            .unwrap();
        let p = client.prepare(&PushMessage {
            silent: true,
            ..PushMessage::new()
        });
        let outcome = client.send(&p, "tok", Uuid::now_v7()).await;
        assert!(outcome.is_delivered(), "{outcome}");
        let recorded = server.recorded();
        assert_eq!(recorded.len(), 1);
        assert!(recorded[0].headers.get("authorization").is_none());
        assert_eq!(header(&recorded[0], "apns-push-type"), Some("background"));
        assert_eq!(header(&recorded[0], "apns-priority"), Some("5"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_client_certificate_is_a_credential_error() {
        let server = TestServer::start(
            Options {
                client_auth: true,
                ..Options::default()
            },
            Arc::new(|_, _| ok()),
        )
        .await;
        let providers = providers(&server);
        // A certificate from the right CA, but not for client auth: the server refuses it.
        let client = providers
            .apns("cert", 1, &cert_credential(SERVER_CERT_PEM, SERVER_KEY_PEM))
            .unwrap();
        let p = client.prepare(&PushMessage::new());
        let outcome = client.send(&p, "tok", Uuid::now_v7()).await;
        assert!(
            matches!(outcome, Outcome::CredentialError { status: None, .. }),
            "{outcome}"
        );
        assert_eq!(outcome.reason_code(), "BadCertificate");
        assert!(server.recorded().is_empty());
    }

    #[test]
    fn device_paths() {
        assert_eq!(device_path("a1b2C3"), "/3/device/a1b2C3");
        assert_eq!(device_path("a/b?c#d%e"), "/3/device/a%2Fb%3Fc%23d%25e");
    }

    #[test]
    fn prepared_headers_and_limits() {
        let msg = PushMessage {
            body: Some("hi".into()),
            ttl_seconds: 0,
            collapse_key: Some("c".into()),
            ..PushMessage::new()
        };
        let p = ApnsPrepared::new(&msg);
        assert_eq!(p.headers[APNS_EXPIRATION], "0");
        assert_eq!(p.headers[APNS_PRIORITY], "10");
        assert_eq!(p.headers[APNS_PUSH_TYPE], "alert");
        assert_eq!(p.headers[APNS_COLLAPSE_ID], "c");
        assert_eq!(p.headers[CONTENT_TYPE], "application/json");
        assert_eq!(
            p.headers[CONTENT_LENGTH],
            p.payload().len().to_string().as_str()
        );
        assert_eq!(p.headers.len(), 6);
        assert!(p.invalid_reason().is_none());

        let big = PushMessage {
            body: Some("x".repeat(5000)),
            ..PushMessage::new()
        };
        assert!(
            ApnsPrepared::new(&big)
                .invalid_reason()
                .unwrap()
                .starts_with("PayloadTooLarge")
        );
        let bad_collapse = PushMessage {
            collapse_key: Some("y".repeat(65)),
            ..PushMessage::new()
        };
        assert!(
            ApnsPrepared::new(&bad_collapse)
                .invalid_reason()
                .unwrap()
                .starts_with("BadCollapseId")
        );
    }

    #[test]
    fn debug_hides_keys() {
        let auth = ApnsAuth::Token {
            key_id: "K".into(),
            team_id: "T".into(),
            private_key_pem: "SECRET".into(),
        };
        assert!(!format!("{auth:?}").contains("SECRET"));
        let auth = ApnsAuth::Certificate {
            cert_pem: "C".into(),
            key_pem: "SECRET".into(),
        };
        assert!(!format!("{auth:?}").contains("SECRET"));
    }
}
