//! Herald's provider clients: APNs (HTTP/2, token or certificate auth), FCM HTTP v1
//! (service-account OAuth) and legacy FCM/GCM, and the classification of every answer into an
//! [`Outcome`] (`Delivered`, `Retry`, `DeadToken`, `Permanent`, `CredentialError`).
//!
//! # Shape
//!
//! ```no_run
//! # async fn demo(apns_cred: herald_providers::ApnsCredential) -> anyhow::Result<()> {
//! use herald_providers::{ApnsPrepared, Providers, ProviderConfig, PushMessage};
//!
//! // Once per process.
//! let providers = Providers::new(ProviderConfig::from_env()?)?;
//!
//! // Once per distinct message: render the payload bytes.
//! let msg = PushMessage { body: Some("Your order shipped".into()), ..PushMessage::new() };
//! let prepared = ApnsPrepared::new(&msg);
//!
//! // Per credential (cached: the same id and version give the same client back).
//! let client = providers.apns("comms_credential_01h...", 3, &apns_cred)?;
//!
//! // Per device: one HTTP/2 stream; the bytes are shared, not re-rendered.
//! let outcome = client.send(&prepared, "device-token", uuid::Uuid::now_v7()).await;
//! # let _ = outcome; Ok(()) }
//! ```
//!
//! * [`Providers`] holds one client per credential, keyed by the credential's id and a content
//!   version chosen by the caller that grows with every content change (e.g. a revision counter
//!   or the update time in nanoseconds). A higher version replaces the client (its connections
//!   and cached tokens go with the last `Arc`); a lower one gets the newer client. `cached_*`
//!   look a client up without the credential (no need to decrypt it on every batch), and
//!   [`Providers::remove`] forgets a deleted credential.
//! * A client ([`ApnsClient`], [`FcmClient`], [`FcmLegacyClient`]) is an `Arc` shared by every task
//!   sending through that credential. It owns a pool of HTTP/2 connections (at most
//!   `max_connections_per_credential`, opened on demand when every open connection has as many
//!   streams in flight as the server allows), kept alive with PINGs and replaced on GOAWAY or close.
//!   A request that failed before the server could have seen it is sent again on another
//!   connection; one that may have been processed is reported as `Retry`.
//! * Rendering is separate from sending: [`ApnsPrepared`], [`FcmPrepared`] and
//!   [`FcmLegacyPrepared`] render a [`PushMessage`] once; a send only adds the device token (APNs:
//!   the path; FCM: spliced into the pre-serialized JSON) and clones `Bytes`.
//! * APNs token auth mints the ES256 provider JWT once and reuses it for 50 minutes; on a 403
//!   `ExpiredProviderToken` it re-mints once (at most once per 20 minutes) and retries the request.
//!   FCM caches the OAuth access token until shortly before it expires, fetches one at a time per
//!   credential (concurrent senders wait for the fetch in progress), and on a 401 fetches a new one
//!   once and retries.
//! * Every `send` returns an [`Outcome`], never an error; it is bounded by `request_timeout`.
//! * TLS is rustls with the ring provider; trust is the public web roots plus
//!   [`ProviderConfig::extra_ca_pem`] (for the sandbox), for APNs, FCM, OAuth and legacy calls.
//! * The payload builders are pure functions ([`apns_payload`], [`fcm_message`],
//!   [`fcm_legacy_body`]) so the API can check the 4096-byte limits up front
//!   ([`APNS_MAX_PAYLOAD`], [`fcm_payload_size`] against [`FCM_MAX_PAYLOAD`]).
//!
//! # Classification
//!
//! The HTTP status decides first, then the provider's reason; an unknown reason falls back on the
//! status. See [`classify_apns`], [`classify_fcm`], [`classify_fcm_legacy`]. `Outcome::reason` is
//! the provider's code, optionally followed by `": "` and an explanation.

pub mod apns;
mod config;
mod error;
pub mod fcm;
pub mod fcm_legacy;
mod h2pool;
mod jwt;
mod message;
mod outcome;
mod template;
#[cfg(test)]
mod testserver;
mod tls;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use apns::{
    APNS_MAX_PAYLOAD, ApnsAuth, ApnsClient, ApnsCredential, ApnsPrepared, apns_payload,
    classify_apns,
};
pub use config::{
    APNS_DEVELOPMENT_URL, APNS_PRODUCTION_URL, FCM_LEGACY_URL, FCM_URL, ProviderConfig,
};
pub use error::ProviderError;
pub use fcm::{
    FCM_MAX_PAYLOAD, FcmClient, FcmCredential, FcmPrepared, classify_fcm, fcm_message,
    fcm_payload_size,
};
pub use fcm_legacy::{
    FcmLegacyClient, FcmLegacyCredential, FcmLegacyPrepared, classify_fcm_legacy, fcm_legacy_body,
};
pub use h2pool::{PING_INTERVAL, PING_TIMEOUT};
pub use message::{Priority, PushMessage, merge_json};
pub use outcome::{Outcome, parse_retry_after};

use h2pool::Origin;

type Registry<C> = RwLock<HashMap<String, (u64, Arc<C>)>>;

/// The provider clients of one Herald process, one per credential.
pub struct Providers {
    config: ProviderConfig,
    apns_origin: Origin,
    apns_sandbox_origin: Origin,
    fcm_origin: Origin,
    fcm_legacy_origin: Origin,
    roots: Arc<rustls::RootCertStore>,
    h2_config: Arc<rustls::ClientConfig>,
    oauth_http: reqwest::Client,
    apns: Registry<ApnsClient>,
    fcm: Registry<FcmClient>,
    fcm_legacy: Registry<FcmLegacyClient>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Providers {
    /// Checks the configuration (URLs, extra CA) and builds the shared TLS setup. Must be called
    /// inside a Tokio runtime only when clients are used; building does not spawn anything.
    pub fn new(config: ProviderConfig) -> Result<Self, ProviderError> {
        let origin = |name: &str, url: &str| {
            Origin::parse(url).map_err(|e| ProviderError::Config(format!("{name}: {e}")))
        };
        let apns_origin = origin("apns_url", &config.apns_url)?;
        let apns_sandbox_origin = origin("apns_sandbox_url", &config.apns_sandbox_url)?;
        let fcm_origin = origin("fcm_url", &config.fcm_url)?;
        let fcm_legacy_origin = origin("fcm_legacy_url", &config.fcm_legacy_url)?;
        if config.max_connections_per_credential == 0 {
            return Err(ProviderError::Config(
                "max_connections_per_credential must be at least 1".into(),
            ));
        }
        let roots = tls::root_store(config.extra_ca_pem.as_deref())?;
        let h2_config = tls::client_config(&roots, &[b"h2"])?;
        let oauth_tls = tls::client_config(&roots, &[b"h2", b"http/1.1"])?;
        let oauth_http = reqwest::Client::builder()
            .use_preconfigured_tls(Arc::unwrap_or_clone(oauth_tls))
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| ProviderError::Config(format!("OAuth HTTP client: {e}")))?;
        Ok(Providers {
            config,
            apns_origin,
            apns_sandbox_origin,
            fcm_origin,
            fcm_legacy_origin,
            roots,
            h2_config,
            oauth_http,
            apns: RwLock::default(),
            fcm: RwLock::default(),
            fcm_legacy: RwLock::default(),
        })
    }

    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// The APNs client of credential `id` at content `version` (built on first use; a higher
    /// version replaces the old client, a lower one gets the newer client).
    pub fn apns(
        &self,
        id: &str,
        version: u64,
        credential: &ApnsCredential,
    ) -> Result<Arc<ApnsClient>, ProviderError> {
        get_or_build(&self.apns, id, version, || {
            let origin = if credential.sandbox {
                self.apns_sandbox_origin.clone()
            } else {
                self.apns_origin.clone()
            };
            ApnsClient::new(
                credential,
                origin,
                &self.roots,
                &self.h2_config,
                self.config.max_connections_per_credential,
                self.config.request_timeout,
            )
        })
    }

    /// The FCM HTTP v1 client of credential `id` at content `version`.
    pub fn fcm(
        &self,
        id: &str,
        version: u64,
        credential: &FcmCredential,
    ) -> Result<Arc<FcmClient>, ProviderError> {
        get_or_build(&self.fcm, id, version, || {
            FcmClient::new(
                credential,
                self.fcm_origin.clone(),
                &self.h2_config,
                self.oauth_http.clone(),
                self.config.max_connections_per_credential,
                self.config.request_timeout,
            )
        })
    }

    /// The legacy FCM/GCM client of credential `id` at content `version`.
    pub fn fcm_legacy(
        &self,
        id: &str,
        version: u64,
        credential: &FcmLegacyCredential,
    ) -> Result<Arc<FcmLegacyClient>, ProviderError> {
        get_or_build(&self.fcm_legacy, id, version, || {
            FcmLegacyClient::new(
                credential,
                self.fcm_legacy_origin.clone(),
                &self.h2_config,
                self.config.max_connections_per_credential,
                self.config.request_timeout,
            )
        })
    }

    /// The cached APNs client of credential `id` at `version`, without building one (so a caller
    /// can skip decrypting the credential when its client exists).
    pub fn cached_apns(&self, id: &str, version: u64) -> Option<Arc<ApnsClient>> {
        cached(&self.apns, id, version)
    }

    /// The cached FCM HTTP v1 client of credential `id` at `version`.
    pub fn cached_fcm(&self, id: &str, version: u64) -> Option<Arc<FcmClient>> {
        cached(&self.fcm, id, version)
    }

    /// The cached legacy FCM client of credential `id` at `version`.
    pub fn cached_fcm_legacy(&self, id: &str, version: u64) -> Option<Arc<FcmLegacyClient>> {
        cached(&self.fcm_legacy, id, version)
    }

    /// Forgets the clients of credential `id` (deleted credential). Sends in progress finish.
    pub fn remove(&self, id: &str) {
        self.apns.write().expect("registry lock").remove(id);
        self.fcm.write().expect("registry lock").remove(id);
        self.fcm_legacy.write().expect("registry lock").remove(id);
    }
}

/// The cached client of `id` if its version is `version` or newer (a newer client carries the
/// rotated content, which is what a sender with an older version should use too).
fn cached<C>(registry: &Registry<C>, id: &str, version: u64) -> Option<Arc<C>> {
    match registry.read().expect("registry lock").get(id) {
        Some((v, client)) if *v >= version => Some(client.clone()),
        _ => None,
    }
}

fn get_or_build<C>(
    registry: &Registry<C>,
    id: &str,
    version: u64,
    build: impl FnOnce() -> Result<C, ProviderError>,
) -> Result<Arc<C>, ProviderError> {
    if let Some(client) = cached(registry, id, version) {
        return Ok(client);
    }
    let client = Arc::new(build()?);
    let mut map = registry.write().expect("registry lock");
    match map.get(id) {
        // Someone built it (or a newer version) meanwhile: keep theirs, so every sender shares
        // one client.
        Some((v, existing)) if *v >= version => Ok(existing.clone()),
        _ => {
            map.insert(id.to_string(), (version, client.clone()));
            Ok(client)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ProviderConfig {
        ProviderConfig {
            extra_ca_pem: Some(tls::tests::TEST_CA_PEM.as_bytes().to_vec()),
            ..ProviderConfig::default()
        }
    }

    #[test]
    fn clients_are_cached_by_id_and_version() {
        let providers = Providers::new(config()).unwrap();
        let cred = FcmLegacyCredential {
            server_key: "AAAA".into(),
        };
        assert!(providers.cached_fcm_legacy("cr1", 1).is_none());
        let a = providers.fcm_legacy("cr1", 1, &cred).unwrap();
        let b = providers.fcm_legacy("cr1", 1, &cred).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(
            &a,
            &providers.cached_fcm_legacy("cr1", 1).unwrap()
        ));
        assert!(providers.cached_fcm_legacy("cr1", 2).is_none());
        let c = providers.fcm_legacy("cr1", 2, &cred).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        let d = providers.fcm_legacy("cr1", 2, &cred).unwrap();
        assert!(Arc::ptr_eq(&c, &d));
        // A sender that still has the old version gets the rotated client.
        let old = providers.fcm_legacy("cr1", 1, &cred).unwrap();
        assert!(Arc::ptr_eq(&c, &old));
        assert!(Arc::ptr_eq(
            &c,
            &providers.cached_fcm_legacy("cr1", 1).unwrap()
        ));
        providers.remove("cr1");
        let e = providers.fcm_legacy("cr1", 2, &cred).unwrap();
        assert!(!Arc::ptr_eq(&c, &e));
    }

    #[test]
    fn bad_credentials_and_config() {
        let providers = Providers::new(config()).unwrap();
        let err = providers
            .fcm(
                "f",
                1,
                &FcmCredential {
                    service_account_json: "{}".into(),
                },
            )
            .unwrap_err();
        assert!(matches!(err, ProviderError::InvalidCredential(_)));
        assert!(matches!(err.to_outcome(), Outcome::CredentialError { .. }));
        let err = providers
            .apns(
                "a",
                1,
                &ApnsCredential {
                    auth: ApnsAuth::Token {
                        key_id: "K".into(),
                        team_id: "T".into(),
                        private_key_pem: jwt::tests::APNS_KEY_PEM.into(),
                    },
                    topic: "".into(),
                    sandbox: false,
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("topic"), "{err}");
        let err = Providers::new(ProviderConfig {
            apns_url: "nope".into(),
            ..ProviderConfig::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("apns_url"), "{err}");
        let err = Providers::new(ProviderConfig {
            max_connections_per_credential: 0,
            ..ProviderConfig::default()
        })
        .unwrap_err();
        assert!(matches!(err, ProviderError::Config(_)));
    }
}
