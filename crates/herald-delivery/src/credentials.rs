//! Credentials for sending: the provider client of each credential (loaded from the store and
//! reused for `credential_refresh`), its concurrency limit, and the credentials known broken.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_core::credential_content::{CredentialFacts, CredentialSecret, PushCredentialType};
use herald_core::time::now_ms;
use herald_providers::{
    ApnsAuth, ApnsClient, ApnsCredential, FcmClient, FcmCredential, FcmLegacyClient,
    FcmLegacyCredential, ProviderError, Providers,
};
use herald_store::delivery::NotificationError;
use herald_store::{Store, StoreError};
use tokio::sync::Semaphore;

use crate::message::ClientKind;

#[derive(Clone)]
pub(crate) enum Client {
    Apns(Arc<ApnsClient>),
    Fcm(Arc<FcmClient>),
    FcmLegacy(Arc<FcmLegacyClient>),
}

impl Client {
    pub fn kind(&self) -> ClientKind {
        match self {
            Client::Apns(_) => ClientKind::Apns,
            Client::Fcm(_) => ClientKind::Fcm,
            Client::FcmLegacy(_) => ClientKind::FcmLegacy,
        }
    }
}

/// A usable credential.
#[derive(Clone)]
pub(crate) struct Loaded {
    pub client: Client,
    pub content_version: i64,
    /// Bounds the sends in flight through this credential.
    pub permits: Arc<Semaphore>,
}

/// What a credential is good for right now.
#[derive(Clone)]
pub(crate) enum CredentialState {
    Ready(Loaded),
    /// Nothing sent through it can succeed (bad key, incomplete, recent credential error).
    Broken(NotificationError),
    /// Deleted since the notification was planned.
    Gone,
}

struct Entry {
    state: CredentialState,
    loaded_at: Instant,
}

pub(crate) struct CredentialCache {
    entries: Mutex<HashMap<String, Entry>>,
    permits: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// credential id → (content version, broken until, error)
    broken: Mutex<HashMap<String, (i64, Instant, NotificationError)>>,
    concurrency: usize,
    refresh: Duration,
}

impl CredentialCache {
    pub fn new(concurrency: usize, refresh: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            permits: Mutex::default(),
            broken: Mutex::default(),
            concurrency: concurrency.max(1),
            refresh,
        }
    }

    /// The state of credential `id` of `account`. `Err` only for store trouble (try later).
    pub async fn get(
        &self,
        store: &dyn Store,
        providers: &Providers,
        hold: Duration,
        account: &str,
        id: &str,
    ) -> Result<CredentialState, StoreError> {
        let cached = {
            let entries = self.entries.lock().expect("cache lock");
            entries
                .get(id)
                .filter(|e| e.loaded_at.elapsed() < self.refresh)
                .map(|e| e.state.clone())
        };
        let state = match cached {
            Some(state) => state,
            None => {
                let state = self.load(store, providers, hold, account, id).await?;
                self.entries.lock().expect("cache lock").insert(
                    id.to_owned(),
                    Entry {
                        state: state.clone(),
                        loaded_at: Instant::now(),
                    },
                );
                state
            }
        };
        if let CredentialState::Ready(loaded) = &state {
            let broken = self.broken.lock().expect("cache lock");
            if let Some((version, until, error)) = broken.get(id)
                && *version == loaded.content_version
                && Instant::now() < *until
            {
                return Ok(CredentialState::Broken(error.clone()));
            }
        }
        Ok(state)
    }

    /// Remembers that credential `id` at `version` failed with a credential error: sends through
    /// it fail at once for `hold`.
    pub fn mark_broken(&self, id: &str, version: i64, hold: Duration, error: NotificationError) {
        self.broken
            .lock()
            .expect("cache lock")
            .insert(id.to_owned(), (version, Instant::now() + hold, error));
    }

    fn permits(&self, id: &str) -> Arc<Semaphore> {
        self.permits
            .lock()
            .expect("cache lock")
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.concurrency)))
            .clone()
    }

    async fn load(
        &self,
        store: &dyn Store,
        providers: &Providers,
        hold: Duration,
        account: &str,
        id: &str,
    ) -> Result<CredentialState, StoreError> {
        let broken = |message: String| {
            CredentialState::Broken(NotificationError::new("credential-error", message))
        };
        let (secret, topic, sandbox, version) =
            if herald_core::ids::is_sid(herald_core::ids::CHAT_CREDENTIAL_SID, id) {
                match store.get_chat_credential_secret(account, id).await {
                    Ok(chat) => (
                        chat.secret,
                        chat.topic.unwrap_or_default(),
                        chat.sandbox,
                        chat.content_version,
                    ),
                    Err(StoreError::NotFound) => return Ok(CredentialState::Gone),
                    Err(StoreError::Invalid { message, .. }) => return Ok(broken(message)),
                    Err(StoreError::Decrypt) => {
                        return Ok(broken("the stored credential cannot be decrypted".into()));
                    }
                    Err(other) => return Err(other),
                }
            } else {
                match store.get_credential_secret(account, id).await {
                    Ok((record, secret, version)) => {
                        if let Some(last) = &record.last_error
                            && last.at + hold.as_millis() as i64 > now_ms()
                        {
                            return Ok(CredentialState::Broken(NotificationError {
                                code: "credential-error".into(),
                                message: format!(
                                    "the credential was refused recently: {}",
                                    last.message
                                ),
                                provider_status: None,
                                provider_reason: Some(last.code.clone()),
                            }));
                        }
                        let topic = match &record.facts {
                            Some(CredentialFacts::Apn(facts)) => facts.topic.clone(),
                            _ => String::new(),
                        };
                        let sandbox = record.credential_type == PushCredentialType::ApnSandbox;
                        (secret, topic, sandbox, version)
                    }
                    Err(StoreError::NotFound) => return Ok(CredentialState::Gone),
                    Err(StoreError::Decrypt) => {
                        return Ok(broken("the stored credential cannot be decrypted".into()));
                    }
                    Err(other) => return Err(other),
                }
            };
        let v = version.max(0) as u64;
        let client: Result<Client, ProviderError> = match secret {
            CredentialSecret::ApnCertificate { cert_pem, key_pem } => providers
                .apns(
                    id,
                    v,
                    &ApnsCredential {
                        auth: ApnsAuth::Certificate { cert_pem, key_pem },
                        topic,
                        sandbox,
                    },
                )
                .map(Client::Apns),
            CredentialSecret::ApnToken {
                key_id,
                team_id,
                private_key_pem,
            } => providers
                .apns(
                    id,
                    v,
                    &ApnsCredential {
                        auth: ApnsAuth::Token {
                            key_id,
                            team_id,
                            private_key_pem,
                        },
                        topic,
                        sandbox,
                    },
                )
                .map(Client::Apns),
            CredentialSecret::FcmServiceAccount { json } => providers
                .fcm(
                    id,
                    v,
                    &FcmCredential {
                        service_account_json: json,
                    },
                )
                .map(Client::Fcm),
            CredentialSecret::FcmServerKey { key } => providers
                .fcm_legacy(id, v, &FcmLegacyCredential { server_key: key })
                .map(Client::FcmLegacy),
        };
        Ok(match client {
            Ok(client) => CredentialState::Ready(Loaded {
                client,
                content_version: version,
                permits: self.permits(id),
            }),
            Err(error) => broken(error.to_string()),
        })
    }
}
