//! The normalized secret of a credential and its storage format.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The normalized secret Herald stores (encrypted by the store) and later hands to the provider
/// clients. It deliberately does not implement `Serialize` (so it cannot end up in a response by
/// accident) and its `Debug` shows no secret; [`CredentialSecret::to_bytes`] is the one way out.
///
/// Every PEM here is canonical: 64-column lines, one trailing newline, no text around blocks.
#[derive(Clone, PartialEq, Eq)]
pub enum CredentialSecret {
    /// APNs certificate auth (TLS client certificate).
    ApnCertificate {
        /// `CERTIFICATE` blocks, leaf first (the chain as given).
        cert_pem: String,
        /// One unencrypted PKCS#8 `PRIVATE KEY` block (RSA, EC P-256/P-384 with the public key
        /// embedded, or Ed25519), whatever form it was given in.
        key_pem: String,
    },
    /// APNs token auth (ES256 provider JWT).
    ApnToken {
        /// Apple's 10-character key ID (the JWT `kid`).
        key_id: String,
        /// Apple's 10-character team ID (the JWT `iss`).
        team_id: String,
        /// One unencrypted PKCS#8 `PRIVATE KEY` block, EC P-256, public key embedded: it loads
        /// with ring's `EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ..)`.
        private_key_pem: String,
    },
    /// FCM HTTP v1: a Google service-account JSON. Its `private_key` is a canonical PKCS#8 RSA
    /// `PRIVATE KEY` PEM that loads with ring's `RsaKeyPair::from_pkcs8`; all other members are
    /// kept as given (member order may differ).
    FcmServiceAccount { json: String },
    /// Legacy FCM HTTP: a server key (Chat API `gcm` ApiKey or bare `fcm` Secret), trimmed.
    FcmServerKey { key: String },
}

/// The storage format: `{"v":1,"type":"apnCertificate","certPem":..,"keyPem":..}` and so on.
/// Changing it needs a new `v` and a reader for the old one.
#[derive(Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
enum Stored {
    ApnCertificate {
        cert_pem: String,
        key_pem: String,
    },
    ApnToken {
        key_id: String,
        team_id: String,
        private_key_pem: String,
    },
    FcmServiceAccount {
        json: String,
    },
    FcmServerKey {
        key: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    v: u32,
    #[serde(flatten)]
    secret: Stored,
}

const FORMAT_VERSION: u32 = 1;

/// Stored secret bytes that Herald cannot read. The message never quotes the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored credential secret is unreadable: {0}")]
pub struct SecretFormatError(String);

impl CredentialSecret {
    /// The stable storage encoding (UTF-8 JSON). Encrypt it before it touches a disk.
    pub fn to_bytes(&self) -> Vec<u8> {
        let secret = match self.clone() {
            Self::ApnCertificate { cert_pem, key_pem } => {
                Stored::ApnCertificate { cert_pem, key_pem }
            }
            Self::ApnToken {
                key_id,
                team_id,
                private_key_pem,
            } => Stored::ApnToken {
                key_id,
                team_id,
                private_key_pem,
            },
            Self::FcmServiceAccount { json } => Stored::FcmServiceAccount { json },
            Self::FcmServerKey { key } => Stored::FcmServerKey { key },
        };
        let envelope = Envelope {
            v: FORMAT_VERSION,
            secret,
        };
        // Serializing plain strings into a Vec cannot fail.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// Reads what [`CredentialSecret::to_bytes`] wrote. It checks the format only: the content
    /// was validated when it was stored.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretFormatError> {
        let envelope: Envelope = serde_json::from_slice(bytes).map_err(|e| {
            // serde_json's own message can quote values; say only where and what kind.
            SecretFormatError(format!(
                "{:?} error at line {}, column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        if envelope.v != FORMAT_VERSION {
            return Err(SecretFormatError(format!(
                "format version {} is not known to this Herald",
                envelope.v
            )));
        }
        Ok(match envelope.secret {
            Stored::ApnCertificate { cert_pem, key_pem } => {
                Self::ApnCertificate { cert_pem, key_pem }
            }
            Stored::ApnToken {
                key_id,
                team_id,
                private_key_pem,
            } => Self::ApnToken {
                key_id,
                team_id,
                private_key_pem,
            },
            Stored::FcmServiceAccount { json } => Self::FcmServiceAccount { json },
            Stored::FcmServerKey { key } => Self::FcmServerKey { key },
        })
    }

    /// A short name of the variant, for logs: `apnCertificate`, `apnToken`, `fcmServiceAccount`,
    /// `fcmServerKey`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ApnCertificate { .. } => "apnCertificate",
            Self::ApnToken { .. } => "apnToken",
            Self::FcmServiceAccount { .. } => "fcmServiceAccount",
            Self::FcmServerKey { .. } => "fcmServerKey",
        }
    }
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for CredentialSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ApnCertificate { cert_pem, .. } => f
                .debug_struct("ApnCertificate")
                .field("cert_pem", &format_args!("<{} bytes>", cert_pem.len()))
                .field("key_pem", &format_args!("{REDACTED}"))
                .finish(),
            Self::ApnToken {
                key_id, team_id, ..
            } => f
                .debug_struct("ApnToken")
                .field("key_id", key_id)
                .field("team_id", team_id)
                .field("private_key_pem", &format_args!("{REDACTED}"))
                .finish(),
            Self::FcmServiceAccount { .. } => f
                .debug_struct("FcmServiceAccount")
                .field("json", &format_args!("{REDACTED}"))
                .finish(),
            Self::FcmServerKey { .. } => f
                .debug_struct("FcmServerKey")
                .field("key", &format_args!("{REDACTED}"))
                .finish(),
        }
    }
}
