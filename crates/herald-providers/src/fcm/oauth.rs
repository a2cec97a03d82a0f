//! Google OAuth2 access tokens for a service account (JWT-bearer grant, RS256 assertion).
//!
//! One fetch at a time per credential: concurrent senders that need a token wait for the fetch in
//! progress and share its result (a failed fetch is shared too, so a broken credential costs one
//! request to the token endpoint per wave of senders, not one per sender).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use serde::Deserialize;
use serde_json::json;

use crate::Outcome;
use crate::error::ProviderError;
use crate::jwt::Rs256Key;
use crate::outcome::{reason_text, retry_after_header};

/// The OAuth scope FCM sends need.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Google's token endpoint, for service accounts that do not name one.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The fields of a Google service-account JSON file that Herald uses.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    #[serde(default)]
    pub token_uri: Option<String>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    pub fn parse(json: &str) -> Result<ServiceAccount, ProviderError> {
        let sa: ServiceAccount = serde_json::from_str(json)
            .map_err(|e| ProviderError::InvalidCredential(format!("service account JSON: {e}")))?;
        for (name, value) in [
            ("project_id", &sa.project_id),
            ("client_email", &sa.client_email),
            ("private_key", &sa.private_key),
        ] {
            if value.trim().is_empty() {
                return Err(ProviderError::InvalidCredential(format!(
                    "service account JSON: {name} is empty"
                )));
            }
        }
        Ok(sa)
    }

    pub fn token_uri(&self) -> &str {
        self.token_uri
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .unwrap_or(GOOGLE_TOKEN_URI)
    }
}

/// A cached access token.
#[derive(Debug)]
pub(crate) struct AccessToken {
    /// `Bearer <token>`.
    pub(crate) header: HeaderValue,
    refresh_at: Instant,
}

pub(crate) struct OAuth {
    key: Rs256Key,
    client_email: String,
    private_key_id: Option<String>,
    token_uri: String,
    http: reqwest::Client,
    current: Mutex<Option<Arc<AccessToken>>>,
    fetch: tokio::sync::Mutex<Option<Outcome>>,
    fetches: AtomicU64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<u64>,
    token_type: Option<String>,
}

#[derive(Deserialize)]
struct TokenError {
    error: Option<String>,
    error_description: Option<String>,
}

impl OAuth {
    pub(crate) fn new(sa: &ServiceAccount, http: reqwest::Client) -> Result<Self, ProviderError> {
        let token_uri = sa.token_uri().to_string();
        let parsed = reqwest::Url::parse(&token_uri).map_err(|e| {
            ProviderError::InvalidCredential(format!("service account token_uri: {e}"))
        })?;
        if !matches!(parsed.scheme(), "https" | "http") {
            return Err(ProviderError::InvalidCredential(
                "service account token_uri must be an https URL".into(),
            ));
        }
        Ok(OAuth {
            key: Rs256Key::from_pem(&sa.private_key)?,
            client_email: sa.client_email.trim().to_string(),
            private_key_id: sa
                .private_key_id
                .as_deref()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string),
            token_uri,
            http,
            current: Mutex::new(None),
            fetch: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
        })
    }

    /// How many token requests were made.
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The signed assertion for the token request.
    pub(crate) fn assertion(&self, now: SystemTime) -> String {
        let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.private_key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": FCM_SCOPE,
            "aud": self.token_uri,
            "iat": iat,
            "exp": iat + 3600,
        });
        self.key.sign(&header, &claims)
    }

    fn cached(&self, stale: Option<&Arc<AccessToken>>) -> Option<Arc<AccessToken>> {
        let current = self.current.lock().expect("token lock").clone()?;
        if Instant::now() >= current.refresh_at {
            return None;
        }
        if stale.is_some_and(|s| Arc::ptr_eq(s, &current)) {
            return None;
        }
        Some(current)
    }

    /// A usable access token. `stale` is a token the provider just refused: a new one is fetched
    /// unless another sender already replaced it.
    pub(crate) async fn token(
        &self,
        stale: Option<&Arc<AccessToken>>,
    ) -> Result<Arc<AccessToken>, Outcome> {
        if let Some(token) = self.cached(stale) {
            return Ok(token);
        }
        let fetches_before = self.fetches.load(Ordering::Acquire);
        let mut last_error = self.fetch.lock().await;
        if let Some(token) = self.cached(stale) {
            return Ok(token);
        }
        if self.fetches.load(Ordering::Acquire) != fetches_before {
            // A fetch finished while we waited; it failed, or `cached` would have found its token.
            if let Some(err) = last_error.as_ref() {
                return Err(err.clone());
            }
        }
        let result = self.fetch_token().await;
        match &result {
            Ok(token) => {
                *self.current.lock().expect("token lock") = Some(token.clone());
                *last_error = None;
            }
            Err(err) => {
                tracing::warn!(client_email = %self.client_email, error = %err,
                    "OAuth token request failed");
                *last_error = Some(err.clone());
            }
        }
        self.fetches.fetch_add(1, Ordering::Release);
        result
    }

    async fn fetch_token(&self) -> Result<Arc<AccessToken>, Outcome> {
        let assertion = self.assertion(SystemTime::now());
        let started = Instant::now();
        let response = self
            .http
            .post(&self.token_uri)
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|e| {
                Outcome::retry(format!(
                    "TokenEndpointUnreachable: OAuth token request failed: {e}"
                ))
            })?;
        let status = response.status().as_u16();
        let retry_after = retry_after_header(response.headers());
        let body = response.bytes().await.map_err(|e| {
            Outcome::retry(format!(
                "TokenEndpointUnreachable: reading the OAuth token answer: {e}"
            ))
        })?;
        if !(200..300).contains(&status) {
            return Err(classify_token_error(status, &body, retry_after));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            Outcome::retry(format!(
                "BadTokenResponse: the OAuth token answer is not JSON: {e}"
            ))
        })?;
        let access_token = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Outcome::CredentialError {
                status: Some(status),
                reason: "BadTokenResponse: the token endpoint answered without an access_token"
                    .into(),
            })?;
        if let Some(token_type) = &parsed.token_type
            && !token_type.eq_ignore_ascii_case("bearer")
        {
            return Err(Outcome::CredentialError {
                status: Some(status),
                reason: format!("BadTokenResponse: unsupported token_type {token_type:?}"),
            });
        }
        let header = HeaderValue::try_from(format!("Bearer {access_token}")).map_err(|_| {
            Outcome::CredentialError {
                status: Some(status),
                reason: "BadTokenResponse: the access token is not a valid header value".into(),
            }
        })?;
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3600));
        // Refresh shortly before expiry: 5 minutes early, or halfway through a short lifetime.
        let margin = (lifetime / 2).min(Duration::from_secs(300));
        Ok(Arc::new(AccessToken {
            header,
            refresh_at: started + lifetime - margin,
        }))
    }
}

/// Classifies a refusal from the token endpoint.
pub(crate) fn classify_token_error(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Outcome {
    let parsed = serde_json::from_slice::<TokenError>(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|e| e.error.clone())
        .unwrap_or_else(|| format!("HTTP {status}"));
    let reason = format!(
        "OAuth {}",
        reason_text(
            &code,
            parsed.as_ref().and_then(|e| e.error_description.as_deref())
        )
    );
    if status == 429 || status >= 500 {
        return Outcome::Retry {
            after: retry_after,
            status: Some(status),
            reason,
        };
    }
    // invalid_grant, invalid_client, unauthorized_client, ...: the service account is unusable.
    Outcome::CredentialError {
        status: Some(status),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::tests::{RSA_KEY_PEM, decode};
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    pub(crate) fn service_account_json(token_uri: &str) -> String {
        json!({
            "type": "service_account",
            "project_id": "demo-project",
            "private_key_id": "kid-123",
            "private_key": RSA_KEY_PEM,
            "client_email": "herald@demo-project.iam.gserviceaccount.com",
            "token_uri": token_uri,
        })
        .to_string()
    }

    #[test]
    fn assertion_contents_and_signature() {
        let sa = ServiceAccount::parse(&service_account_json("https://127.0.0.1:1/token")).unwrap();
        let oauth = OAuth::new(&sa, reqwest::Client::new()).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (header, claims, input, signature) = decode(&oauth.assertion(now));
        assert_eq!(
            header,
            json!({"alg": "RS256", "typ": "JWT", "kid": "kid-123"})
        );
        assert_eq!(
            claims,
            json!({
                "iss": "herald@demo-project.iam.gserviceaccount.com",
                "scope": "https://www.googleapis.com/auth/firebase.messaging",
                "aud": "https://127.0.0.1:1/token",
                "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
            })
        );
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, oauth.key.public_key())
            .verify(input.as_bytes(), &signature)
            .unwrap();
    }

    #[test]
    fn service_account_validation() {
        let sa = ServiceAccount::parse(
            &json!({"project_id": "p", "client_email": "e", "private_key": "k"}).to_string(),
        )
        .unwrap();
        assert_eq!(sa.token_uri(), GOOGLE_TOKEN_URI);
        assert!(!format!("{sa:?}").contains("\"k\""));
        let err = ServiceAccount::parse(r#"{"project_id": "p"}"#).unwrap_err();
        assert!(err.to_string().contains("client_email"), "{err}");
        let err = ServiceAccount::parse(
            &json!({"project_id": " ", "client_email": "e", "private_key": "k"}).to_string(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("project_id is empty"), "{err}");
        let sa = ServiceAccount::parse(&service_account_json("not a url")).unwrap();
        assert!(OAuth::new(&sa, reqwest::Client::new()).is_err());
    }

    #[test]
    fn token_endpoint_errors() {
        let o = classify_token_error(
            400,
            br#"{"error": "invalid_grant", "error_description": "Invalid JWT Signature."}"#,
            None,
        );
        assert_eq!(
            o,
            Outcome::CredentialError {
                status: Some(400),
                reason: "OAuth invalid_grant: Invalid JWT Signature.".into()
            }
        );
        assert!(matches!(
            classify_token_error(401, br#"{"error": "invalid_client"}"#, None),
            Outcome::CredentialError { .. }
        ));
        let after = Some(Duration::from_secs(5));
        assert_eq!(
            classify_token_error(503, b"", after),
            Outcome::Retry {
                after,
                status: Some(503),
                reason: "OAuth HTTP 503".into()
            }
        );
    }
}
