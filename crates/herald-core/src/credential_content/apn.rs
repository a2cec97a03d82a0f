//! Push API `content` for `APN` / `APN_SANDBOX`.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::cert::{CertChain, parse_certificate_field};
use super::facts::{ApnAuthMethod, ApnFacts, CredentialFacts, format_api_time, to_api_time};
use super::keys::{self, KeyProblem, PrivateKey, PublicKey, parse_key_field};
use super::pem::Encoding;
use super::{
    ContentError, CredentialSecret, Errors, PushCredentialType, ValidatedContent,
    check_unknown_fields, optional_str, required_str, topic_problem,
};

const CERT_FIELDS: &[&str] = &["certificate", "privateKey", "bundleId"];
const TOKEN_FIELDS: &[&str] = &["keyId", "teamId", "bundleId", "privateKey"];
const ALL_FIELDS: &[&str] = &["certificate", "keyId", "teamId", "bundleId", "privateKey"];

pub(super) fn validate(
    kind: PushCredentialType,
    content: &Map<String, Value>,
    now: OffsetDateTime,
) -> Result<ValidatedContent, Vec<ContentError>> {
    let has_cert = content.contains_key("certificate");
    let has_token = content.contains_key("keyId") || content.contains_key("teamId");
    let mut errors = Errors::default();
    match (has_cert, has_token) {
        (true, false) => certificate_auth(kind, content, now, errors),
        (false, true) => token_auth(content, errors),
        (true, true) => {
            errors.push(
                "content",
                "content mixes certificate auth (certificate) with token auth (keyId, teamId); \
                 give one or the other",
            );
            check_unknown_fields(content, ALL_FIELDS, &mut errors);
            Err(errors.0)
        }
        (false, false) => {
            errors.push(
                "content",
                format!(
                    "content for {kind} needs either certificate auth (certificate, privateKey, \
                     optional bundleId) or token auth (keyId, teamId, bundleId, privateKey)"
                ),
            );
            check_unknown_fields(content, ALL_FIELDS, &mut errors);
            Err(errors.0)
        }
    }
}

fn certificate_auth(
    kind: PushCredentialType,
    content: &Map<String, Value>,
    now: OffsetDateTime,
    mut errors: Errors,
) -> Result<ValidatedContent, Vec<ContentError>> {
    check_unknown_fields(content, CERT_FIELDS, &mut errors);
    let certificate = required_str(
        content,
        "certificate",
        "certificate (base64 of the PEM certificate) is required",
        &mut errors,
    );
    let private_key = required_str(
        content,
        "privateKey",
        "privateKey (base64 of the PEM private key of the certificate) is required",
        &mut errors,
    );
    let bundle_id = optional_str(content, "bundleId", &mut errors).filter(|b| {
        let problem = topic_problem(b);
        if let Some(problem) = problem {
            errors.push("content.bundleId", format!("bundleId {problem}"));
        }
        problem.is_none()
    });
    let bundle_id_given = content.contains_key("bundleId");

    let chain = certificate.and_then(|c| {
        parse_certificate_field(c, Encoding::PemOrBase64)
            .map_err(|m| errors.push("content.certificate", format!("certificate {m}")))
            .ok()
    });
    if let Some(chain) = &chain {
        check_leaf(kind, chain, now, "content.certificate", &mut errors);
    }
    let key = private_key.and_then(|k| {
        let expected = chain.as_ref().map(|c| &c.leaf.public);
        parse_key_field(k, Encoding::PemOrBase64, expected)
            .map_err(|problem| {
                report_key_problem(problem, chain.as_ref(), "content.privateKey", &mut errors)
            })
            .ok()
    });
    if let (Some(chain), Some(key)) = (&chain, &key) {
        check_match(chain, key, "content.privateKey", &mut errors);
    }

    let topic = match (bundle_id, &chain) {
        (Some(bundle_id), _) => Some(bundle_id.to_owned()),
        (None, Some(chain)) if !bundle_id_given => match &chain.leaf.uid {
            Some(uid) if topic_problem(uid).is_none() => Some(uid.clone()),
            Some(_) => {
                errors.push(
                    "content.bundleId",
                    "bundleId is required because the certificate subject's UID is not a usable \
                     bundle ID",
                );
                None
            }
            None => {
                errors.push(
                    "content.bundleId",
                    "bundleId is required because the certificate subject has no UID (the \
                     bundle ID)",
                );
                None
            }
        },
        _ => None,
    };

    let validated = match (chain, key, topic) {
        (Some(chain), Some(key), Some(topic)) => Some(ValidatedContent {
            facts: CredentialFacts::Apn(ApnFacts {
                auth_method: ApnAuthMethod::Certificate,
                topic,
                expires_at: Some(to_api_time(chain.leaf.not_after)),
            }),
            secret: CredentialSecret::ApnCertificate {
                cert_pem: chain.pem,
                key_pem: key.to_pem(),
            },
        }),
        _ => None,
    };
    errors.finish(validated)
}

/// Validity period and Apple's environment markers of the leaf.
fn check_leaf(
    kind: PushCredentialType,
    chain: &CertChain,
    now: OffsetDateTime,
    path: &str,
    errors: &mut Errors,
) {
    let leaf = &chain.leaf;
    if now > leaf.not_after {
        errors.push(
            path,
            format!("certificate expired on {}", format_api_time(leaf.not_after)),
        );
    } else if now < leaf.not_before {
        errors.push(
            path,
            format!(
                "certificate is not valid before {}",
                format_api_time(leaf.not_before)
            ),
        );
    }
    match kind {
        PushCredentialType::Apn if leaf.apns_development && !leaf.apns_production => errors.push(
            path,
            "certificate is an APNs development (sandbox) certificate; use credentialType \
             APN_SANDBOX for it",
        ),
        PushCredentialType::ApnSandbox if leaf.apns_production && !leaf.apns_development => errors
            .push(
                path,
                "certificate is an APNs production-only certificate; use credentialType APN for it",
            ),
        _ => {}
    }
}

/// Reports a key that could not be used, at `key_path`.
pub(super) fn report_key_problem(
    problem: KeyProblem,
    chain: Option<&CertChain>,
    key_path: &str,
    errors: &mut Errors,
) {
    match problem {
        KeyProblem::Invalid(message) => errors.push(key_path, format!("private key {message}")),
        KeyProblem::Mismatch => errors.push(key_path, mismatch_message(chain, None)),
    }
}

/// The key must be the private half of the leaf's public key.
pub(super) fn check_match(
    chain: &CertChain,
    key: &PrivateKey,
    key_path: &str,
    errors: &mut Errors,
) {
    if let PublicKey::Unsupported(what) = &chain.leaf.public {
        errors.push(
            key_path,
            format!(
                "private key cannot be matched: the certificate holds {what}, which Herald does \
                 not support"
            ),
        );
    } else if !keys::matches(key, &chain.leaf.public) {
        errors.push(key_path, mismatch_message(Some(chain), Some(key)));
    }
}

fn mismatch_message(chain: Option<&CertChain>, key: Option<&PrivateKey>) -> String {
    let base = "private key does not match the certificate";
    match (chain, key) {
        (Some(chain), Some(key)) => {
            let cert_kind = chain.leaf.public.describe();
            let key_kind = key.public().describe();
            if cert_kind == key_kind {
                base.to_owned()
            } else {
                format!("{base} (the certificate holds {cert_kind}, the private key is {key_kind})")
            }
        }
        _ => base.to_owned(),
    }
}

fn token_auth(
    content: &Map<String, Value>,
    mut errors: Errors,
) -> Result<ValidatedContent, Vec<ContentError>> {
    check_unknown_fields(content, TOKEN_FIELDS, &mut errors);
    let key_id = required_str(
        content,
        "keyId",
        "keyId (the 10-character key ID of the .p8 key) is required for token auth",
        &mut errors,
    )
    .filter(|v| apple_id_ok("keyId", v, &mut errors));
    let team_id = required_str(
        content,
        "teamId",
        "teamId (the 10-character Apple team ID) is required for token auth",
        &mut errors,
    )
    .filter(|v| apple_id_ok("teamId", v, &mut errors));
    let bundle_id = required_str(
        content,
        "bundleId",
        "bundleId (the app's bundle ID, the APNs topic) is required for token auth",
        &mut errors,
    )
    .filter(|b| {
        let problem = topic_problem(b);
        if let Some(problem) = problem {
            errors.push("content.bundleId", format!("bundleId {problem}"));
        }
        problem.is_none()
    });
    let key = required_str(
        content,
        "privateKey",
        "privateKey (the .p8 auth key, base64-encoded or as PEM text) is required for token auth",
        &mut errors,
    )
    .and_then(|k| match parse_key_field(k, Encoding::PemOrBase64, None) {
        Ok(key) => match key.public() {
            PublicKey::Ec {
                curve: keys::Curve::P256,
                ..
            } if keys::is_es256_pkcs8(key.pkcs8_der()) => Some(key),
            other => {
                errors.push(
                    "content.privateKey",
                    format!(
                        "private key is {} but APNs token auth needs an EC P-256 key (Apple's \
                         .p8 auth key)",
                        other.describe()
                    ),
                );
                None
            }
        },
        Err(problem) => {
            report_key_problem(problem, None, "content.privateKey", &mut errors);
            None
        }
    });

    let validated = match (key_id, team_id, bundle_id, key) {
        (Some(key_id), Some(team_id), Some(bundle_id), Some(key)) => Some(ValidatedContent {
            secret: CredentialSecret::ApnToken {
                key_id: key_id.to_owned(),
                team_id: team_id.to_owned(),
                private_key_pem: key.to_pem(),
            },
            facts: CredentialFacts::Apn(ApnFacts {
                auth_method: ApnAuthMethod::Token,
                topic: bundle_id.to_owned(),
                expires_at: None,
            }),
        }),
        _ => None,
    };
    errors.finish(validated)
}

/// Apple key and team IDs: exactly 10 ASCII letters or digits.
fn apple_id_ok(field: &str, value: &str, errors: &mut Errors) -> bool {
    let len = value.chars().count();
    let message = if len != 10 {
        let hint = if value.trim().chars().count() == 10 {
            " (remove the surrounding whitespace)"
        } else {
            ""
        };
        format!("{field} must be exactly 10 characters, not {len}{hint}")
    } else if !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        format!("{field} must contain only ASCII letters and digits")
    } else {
        return true;
    };
    errors.push(format!("content.{field}"), message);
    false
}
