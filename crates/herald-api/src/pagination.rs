//! Page tokens and the Push API's list parameters.
//!
//! A token is `base64url(payload).base64url(hmac)`: the payload holds the keyset cursor and a hash
//! of the filters and page size it was made for, and the HMAC (keyed from the master key, so
//! tokens work on every node and across restarts) makes it tamper-evident. A token used with other
//! filters, another page size, or edited → 400 code 21481.

use std::collections::HashMap;

use axum::Json;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_store::{Cursor, PageRequest};
use ring::digest::{SHA256, digest};
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::errors::{PushError, code};

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 1000;

pub struct PageTokens {
    key: hmac::Key,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    /// Cursor: continue after this row (`None`: the first page).
    c: Option<Cursor>,
    /// First 8 bytes of SHA-256 of the binding (filters + page size), hex.
    b: String,
}

impl PageTokens {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    fn binding_hash(binding: &str) -> String {
        hex_prefix(digest(&SHA256, binding.as_bytes()).as_ref())
    }

    pub fn encode(&self, cursor: Option<&Cursor>, binding: &str) -> String {
        let payload = Payload {
            c: cursor.cloned(),
            b: Self::binding_hash(binding),
        };
        let body =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).expect("payload serializes"));
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The cursor in `token`, if it is genuine and was made for `binding`.
    pub fn decode(&self, token: &str, binding: &str) -> Option<Option<Cursor>> {
        let (body, tag) = token.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.key, body.as_bytes(), &tag).ok()?;
        let payload: Payload = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        (payload.b == Self::binding_hash(binding)).then_some(payload.c)
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A Push API list request: the page to read and what its tokens are bound to.
pub struct ListQuery {
    pub page: PageRequest,
    binding: String,
}

impl ListQuery {
    /// Reads `pageSize` and `pageToken` from `query`; `filters` are the names of the query
    /// parameters that select rows (their values bind the tokens).
    pub fn parse(
        tokens: &PageTokens,
        query: &HashMap<String, String>,
        filters: &[&str],
    ) -> Result<Self, PushError> {
        let size = match query.get("pageSize") {
            None => DEFAULT_PAGE_SIZE,
            Some(text) => match text.parse::<i64>() {
                Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
                _ => {
                    return Err(PushError::invalid(
                        "pageSize",
                        format!("pageSize must be an integer from 1 to {MAX_PAGE_SIZE}"),
                    ));
                }
            },
        };
        let mut binding = format!("pageSize={size}");
        for name in filters {
            if let Some(value) = query.get(*name) {
                binding.push_str(&format!("&{name}={value}"));
            }
        }
        let after = match query.get("pageToken").filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => tokens.decode(token, &binding).ok_or_else(|| {
                let mut error = PushError::new(
                    StatusCode::BAD_REQUEST,
                    code::INVALID_PAGE_TOKEN,
                    "pageToken is invalid, or was made for other filters or another pageSize",
                );
                error.errors[0].context = Some("pageToken".into());
                error
            })?,
        };
        Ok(Self {
            page: PageRequest { limit: size, after },
            binding,
        })
    }

    /// The list body: `{"<key>": items, "pagination": {"next", "self"}}`.
    pub fn body(
        &self,
        tokens: &PageTokens,
        key: &str,
        items: Vec<Value>,
        next: Option<&Cursor>,
    ) -> Json<Value> {
        let next = next.map(|cursor| tokens.encode(Some(cursor), &self.binding));
        let this = tokens.encode(self.page.after.as_ref(), &self.binding);
        Json(json!({ key: items, "pagination": { "next": next, "self": this } }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_and_tamper_evident() {
        let tokens = PageTokens::new(&[1u8; 32]);
        let cursor = Cursor {
            at: 42,
            id: "comms_credential_x".into(),
        };
        let token = tokens.encode(Some(&cursor), "pageSize=2");
        assert_eq!(tokens.decode(&token, "pageSize=2"), Some(Some(cursor)));
        assert_eq!(tokens.decode(&token, "pageSize=3"), None);
        let mut tampered = token.clone();
        tampered.replace_range(0..1, if token.starts_with('e') { "f" } else { "e" });
        assert_eq!(tokens.decode(&tampered, "pageSize=2"), None);
        assert_eq!(
            PageTokens::new(&[2u8; 32]).decode(&token, "pageSize=2"),
            None
        );
        assert_eq!(tokens.decode("garbage", "pageSize=2"), None);
    }
}
