//! Push API `content` for `FCM`, and Google service-account JSON in general.

use serde_json::{Map, Value};

use super::facts::{CredentialFacts, FcmFacts};
use super::keys::{self, KeyProblem, PublicKey, parse_key_field};
use super::pem::{Encoding, decode_base64};
use super::{
    ContentError, CredentialSecret, Errors, ValidatedContent, check_unknown_fields, json_type,
};

pub(super) fn validate(
    content: &Map<String, Value>,
) -> Result<ValidatedContent, Vec<ContentError>> {
    const PATH: &str = "content.privateKey";
    let mut errors = Errors::default();
    check_unknown_fields(content, &["privateKey"], &mut errors);
    let account = match content.get("privateKey") {
        None => {
            errors.push(
                PATH,
                "privateKey (the service-account JSON file, base64-encoded) is required",
            );
            None
        }
        Some(Value::Object(map)) => Some(map.clone()),
        Some(Value::String(text)) => parse_service_account_text(text, true)
            .map_err(|m| errors.push(PATH, m))
            .ok(),
        Some(other) => {
            errors.push(
                PATH,
                format!(
                    "privateKey must be a string (base64 of the service-account JSON) or the JSON \
                     object itself, not {}",
                    json_type(other)
                ),
            );
            None
        }
    };
    let validated = account.and_then(|account| check_service_account(account, PATH, &mut errors));
    errors.finish(validated)
}

/// Whether `text` (trimmed) is meant as JSON: base64 never starts with `{`.
pub(super) fn looks_like_json(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// Reads service-account JSON given as text, or (if `base64_allowed`) as base64 of it. The error
/// is a whole sentence.
pub(super) fn parse_service_account_text(
    text: &str,
    base64_allowed: bool,
) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Err("privateKey (the service-account JSON) must not be empty".to_owned());
    }
    let decoded;
    let json: &str = if looks_like_json(text) {
        text
    } else if !base64_allowed {
        return Err("service account JSON is not JSON (it does not start with '{')".to_owned());
    } else {
        let Some(bytes) = decode_base64(text.as_bytes()) else {
            return Err(if text.contains("-----BEGIN") {
                "privateKey holds a PEM key; FCM needs the whole service-account JSON file \
                 (base64-encoded)"
                    .to_owned()
            } else {
                "privateKey is neither valid base64 nor JSON text".to_owned()
            });
        };
        decoded = String::from_utf8(bytes).map_err(|_| {
            "privateKey decodes from base64 to something that is not text".to_owned()
        })?;
        if !looks_like_json(&decoded) {
            return Err(if decoded.contains("-----BEGIN") {
                "privateKey holds a PEM key; FCM needs the whole service-account JSON file \
                 (base64-encoded)"
                    .to_owned()
            } else {
                "privateKey decodes from base64 to something that is not JSON".to_owned()
            });
        }
        &decoded
    };
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("service account JSON must be a JSON object".to_owned()),
        // serde_json's message can quote the input; say only where.
        Err(e) => Err(format!(
            "service account JSON is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )),
    }
}

/// Checks a service account and builds the secret and facts. Problems go to `errors` at `path`.
pub(super) fn check_service_account(
    mut account: Map<String, Value>,
    path: &str,
    errors: &mut Errors,
) -> Option<ValidatedContent> {
    let before = errors.0.len();
    if let Some(kind) = account.get("type") {
        let shown = kind
            .as_str()
            .filter(|t| t.len() <= 40 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        if kind.as_str() != Some("service_account") {
            errors.push(
                path,
                match shown {
                    Some(t) => format!(
                        "service account JSON has type \"{t}\"; FCM needs a \"service_account\" key file"
                    ),
                    None => "service account JSON has a type other than \"service_account\"".to_owned(),
                },
            );
        }
    }
    let project_id = sa_string(&account, "project_id", path, errors).filter(|p| {
        let ok = p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
        if !ok {
            errors.push(
                path,
                "service account JSON: project_id may contain only ASCII letters, digits, '-', \
                 '.' and ':'",
            );
        }
        ok
    });
    let client_email = sa_string(&account, "client_email", path, errors).filter(|e| {
        let ok = e.contains('@') && !e.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            errors.push(
                path,
                "service account JSON: client_email is not an email address",
            );
        }
        ok
    });
    let _token_uri = sa_string(&account, "token_uri", path, errors).filter(|u| {
        let ok = is_http_url(u);
        if !ok {
            errors.push(
                path,
                "service account JSON: token_uri is not an https:// or http:// URL",
            );
        }
        ok
    });
    let key =
        sa_string(&account, "private_key", path, errors).and_then(|pem| {
            match parse_key_field(pem, Encoding::PemOnly, None) {
                Ok(key) => match key.public() {
                    PublicKey::Rsa { .. } if keys::is_rsa_pkcs8(key.pkcs8_der()) => Some(key),
                    other => {
                        errors.push(
                            path,
                            format!(
                                "service account JSON: private_key is {}, not an RSA key",
                                other.describe()
                            ),
                        );
                        None
                    }
                },
                Err(KeyProblem::Invalid(m)) => {
                    errors.push(path, format!("service account JSON: private_key {m}"));
                    None
                }
                Err(KeyProblem::Mismatch) => None,
            }
        });
    if errors.0.len() != before {
        return None;
    }
    let (project_id, client_email, key) = (project_id?.to_owned(), client_email?.to_owned(), key?);
    account.insert("private_key".to_owned(), Value::String(key.to_pem()));
    let json = serde_json::to_string(&Value::Object(account)).ok()?;
    Some(ValidatedContent {
        secret: CredentialSecret::FcmServiceAccount { json },
        facts: CredentialFacts::Fcm(FcmFacts {
            project_id,
            client_email,
        }),
    })
}

/// A required non-empty string member of the service account.
fn sa_string<'a>(
    account: &'a Map<String, Value>,
    field: &str,
    path: &str,
    errors: &mut Errors,
) -> Option<&'a str> {
    match account.get(field) {
        None | Some(Value::Null) => {
            errors.push(path, format!("service account JSON is missing {field}"));
            None
        }
        Some(Value::String(s)) if s.trim().is_empty() => {
            errors.push(path, format!("service account JSON: {field} is empty"));
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            errors.push(
                path,
                format!(
                    "service account JSON: {field} must be a string, not {}",
                    json_type(other)
                ),
            );
            None
        }
    }
}

/// `https://host...` or `http://host...`, no whitespace or control characters.
fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !host.is_empty()
        && !host.starts_with(':')
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(is_http_url("https://oauth2.googleapis.com/token"));
        assert!(is_http_url("http://127.0.0.1:8080/token"));
        assert!(!is_http_url("ftp://example.com"));
        assert!(!is_http_url("https://"));
        assert!(!is_http_url("https:///token"));
        assert!(!is_http_url("https://exa mple.com/"));
        assert!(!is_http_url("oauth2.googleapis.com/token"));
    }
}
