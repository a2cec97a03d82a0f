//! Chat Credential API (`/v2/Credentials`) fields, under Twilio's looser rules: parse and match,
//! nothing else, so credentials move over from Twilio as they are.

use std::fmt;

use time::OffsetDateTime;

use super::apn::{check_match, report_key_problem};
use super::cert::parse_certificate_field;
use super::facts::{ApnAuthMethod, ApnFacts, CredentialFacts, to_api_time};
use super::fcm::{check_service_account, looks_like_json, parse_service_account_text};
use super::keys::parse_key_field;
use super::pem::{Encoding, decode_base64};
use super::{ContentError, CredentialSecret, Errors, ValidatedContent};

/// The parsed `Certificate` and `PrivateKey` of a Chat `apn` credential. Either may be absent
/// (an update may change one only; whether a create needs both is the caller's decision). To
/// check a new value against the stored other half, pass the stored PEM back in.
#[derive(Clone, PartialEq, Eq)]
pub struct ChatApnContent {
    /// The certificate chain, canonical PEM, leaf first.
    pub certificate_pem: Option<String>,
    /// The private key, canonical PKCS#8 PEM (see [`CredentialSecret::ApnCertificate`]).
    pub private_key_pem: Option<String>,
    /// The leaf subject's UID (the bundle ID), if the certificate was given and has one.
    pub topic: Option<String>,
    /// The leaf's notAfter (UTC, whole seconds), if the certificate was given. Not checked:
    /// Twilio accepts expired certificates here.
    pub expires_at: Option<OffsetDateTime>,
}

impl ChatApnContent {
    /// The secret to store, when both halves are here.
    pub fn secret(&self) -> Option<CredentialSecret> {
        Some(CredentialSecret::ApnCertificate {
            cert_pem: self.certificate_pem.clone()?,
            key_pem: self.private_key_pem.clone()?,
        })
    }

    /// Facts, when the certificate was given and names its topic (UID).
    pub fn facts(&self) -> Option<CredentialFacts> {
        Some(CredentialFacts::Apn(ApnFacts {
            auth_method: ApnAuthMethod::Certificate,
            topic: self.topic.clone()?,
            expires_at: self.expires_at,
        }))
    }
}

impl fmt::Debug for ChatApnContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatApnContent")
            .field(
                "certificate_pem",
                &self
                    .certificate_pem
                    .as_ref()
                    .map(|c| format!("<{} bytes>", c.len())),
            )
            .field(
                "private_key_pem",
                &self.private_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("topic", &self.topic)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Checks the Chat form fields `Certificate` and `PrivateKey` (raw PEM text, as Twilio's form
/// fields carry it; one-line PEM as in Twilio's docs is fine). Each, when given, must parse (a
/// certificate chain, leaf first; an unencrypted RSA / EC / Ed25519 key in PKCS#8, PKCS#1 or
/// SEC1 form); when both are given they must match. Expiry, issuer and UID are not checked.
/// Errors name the form field (`Certificate`, `PrivateKey`).
pub fn validate_chat_apn(
    certificate: Option<&str>,
    private_key: Option<&str>,
) -> Result<ChatApnContent, Vec<ContentError>> {
    let mut errors = Errors::default();
    let chain = certificate.and_then(|c| {
        parse_certificate_field(c, Encoding::PemOnly)
            .map_err(|m| errors.push("Certificate", format!("certificate {m}")))
            .ok()
    });
    let key = private_key.and_then(|k| {
        let expected = chain.as_ref().map(|c| &c.leaf.public);
        parse_key_field(k, Encoding::PemOnly, expected)
            .map_err(|problem| {
                report_key_problem(problem, chain.as_ref(), "PrivateKey", &mut errors)
            })
            .ok()
    });
    if let (Some(chain), Some(key)) = (&chain, &key) {
        check_match(chain, key, "PrivateKey", &mut errors);
    }
    if !errors.is_empty() {
        return Err(errors.0);
    }
    Ok(ChatApnContent {
        topic: chain.as_ref().and_then(|c| c.leaf.uid.clone()),
        expires_at: chain.as_ref().map(|c| to_api_time(c.leaf.not_after)),
        certificate_pem: chain.map(|c| c.pem),
        private_key_pem: key.map(|k| k.to_pem()),
    })
}

/// Checks a Chat `gcm` credential's `ApiKey`: non-empty (surrounding whitespace is trimmed). It
/// is a legacy FCM server key.
pub fn validate_chat_gcm_api_key(api_key: &str) -> Result<CredentialSecret, ContentError> {
    let key = api_key.trim();
    if key.is_empty() {
        return Err(ContentError::new("ApiKey", "ApiKey must not be empty"));
    }
    Ok(CredentialSecret::FcmServerKey {
        key: key.to_owned(),
    })
}

/// What a Chat `fcm` credential's `Secret` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FcmSecretKind {
    /// A Google service-account JSON: sends go through FCM HTTP v1. Holds the normalized
    /// [`CredentialSecret::FcmServiceAccount`] and its [`CredentialFacts::Fcm`].
    ServiceAccount(ValidatedContent),
    /// Anything else: a legacy server key (`AAAA...:APA91b...` or `AIza...`), sent through the
    /// legacy FCM HTTP protocol, whose public endpoint Google shut down in 2024. Holds
    /// [`CredentialSecret::FcmServerKey`].
    ServerKey(CredentialSecret),
}

/// Checks and classifies a Chat `fcm` credential's `Secret`.
///
/// * Empty (or only whitespace) → error.
/// * JSON text (starts with `{`), or base64 of JSON text → a service account, validated like the
///   Push API's FCM content; a broken one is an error (it could never work: it is neither a
///   usable service account nor a server key, and Twilio never held JSON secrets, so refusing
///   it does not stop any credential from moving over).
/// * Anything else → a server key, trimmed, not checked further (Twilio's rule).
///
/// Errors name the form field `Secret`.
pub fn classify_fcm_secret(secret: &str) -> Result<FcmSecretKind, Vec<ContentError>> {
    const PATH: &str = "Secret";
    let trimmed = secret.trim();
    if trimmed.is_empty() {
        return Err(vec![ContentError::new(PATH, "Secret must not be empty")]);
    }
    let json_text = if looks_like_json(trimmed) {
        Some(trimmed.to_owned())
    } else {
        decode_base64(trimmed.as_bytes())
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|text| looks_like_json(text))
    };
    let Some(json_text) = json_text else {
        return Ok(FcmSecretKind::ServerKey(CredentialSecret::FcmServerKey {
            key: trimmed.to_owned(),
        }));
    };
    let mut errors = Errors::default();
    let validated = parse_service_account_text(&json_text, false)
        .map_err(|m| errors.push(PATH, m))
        .ok()
        .and_then(|account| check_service_account(account, PATH, &mut errors));
    errors.finish(validated).map(FcmSecretKind::ServiceAccount)
}
