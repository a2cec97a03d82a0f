//! Request bodies of the Push API: `application/json` objects, read into a `serde_json` map and
//! checked field by field so that one 400 lists every problem with its JSON path.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde_json::{Map, Value};

use crate::errors::{FieldErrors, PushError, code};

/// A Push API JSON object body. Rejections: wrong content type or malformed JSON → 400, body over
/// the configured size → 413 (all in the Push error shape).
pub struct PushJson(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for PushJson {
    type Rejection = PushError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let PushJsonBytes(bytes) = PushJsonBytes::from_request(request, state).await?;
        json_object(&bytes).map(PushJson)
    }
}

/// A Push API JSON body not parsed yet (the send reads a well-formed body straight into its
/// request; see `herald_core::send::parse_valid`): the same content type and size checks as
/// [`PushJson`], whose parse is then [`json_object`].
pub struct PushJsonBytes(pub Bytes);

/// The JSON object in `bytes`, or the 400 [`PushJson`] answers.
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, PushError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(PushError::new(
            StatusCode::BAD_REQUEST,
            code::INVALID_PARAMETER,
            "body must be a JSON object",
        )),
        Err(error) => Err(PushError::new(
            StatusCode::BAD_REQUEST,
            code::INVALID_PARAMETER,
            format!("malformed JSON: {error}"),
        )),
    }
}

impl<S: Send + Sync> FromRequest<S> for PushJsonBytes {
    type Rejection = PushError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(PushError::new(
                StatusCode::BAD_REQUEST,
                code::INVALID_PARAMETER,
                format!(
                    "Content-Type must be application/json (got {:?})",
                    content_type
                ),
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    PushError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        code::PAYLOAD_TOO_LARGE,
                        "request body is too large",
                    )
                } else {
                    PushError::new(
                        StatusCode::BAD_REQUEST,
                        code::INVALID_PARAMETER,
                        rejection.body_text(),
                    )
                }
            })?;
        Ok(PushJsonBytes(bytes))
    }
}

/// Field-by-field reading of a JSON object at a JSON path, recording problems in `errors`.
pub struct Fields<'a> {
    pub map: &'a Map<String, Value>,
    /// Path of this object (`""` for the body, `"to[3]"` below it).
    pub path: String,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>, path: impl Into<String>) -> Self {
        Self {
            map,
            path: path.into(),
        }
    }

    /// JSON path of `key` in this object.
    pub fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Reports every key not in `allowed` (typos should not pass silently).
    pub fn deny_unknown(&self, allowed: &[&str], errors: &mut FieldErrors) {
        for key in self.map.keys() {
            if !allowed.contains(&key.as_str()) {
                errors.add(
                    self.path_of(key),
                    format!("unknown field {key:?}; allowed: {}", allowed.join(", ")),
                );
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn required(&self, key: &str, errors: &mut FieldErrors) -> Option<&'a Value> {
        let value = self.get(key);
        if value.is_none() {
            errors.add(self.path_of(key), format!("{key} is required"));
        }
        value
    }

    pub fn string(&self, key: &str, errors: &mut FieldErrors) -> Option<&'a str> {
        let value = self.get(key)?;
        let text = value.as_str();
        if text.is_none() {
            errors.add(self.path_of(key), format!("{key} must be a string"));
        }
        text
    }

    pub fn required_string(&self, key: &str, errors: &mut FieldErrors) -> Option<&'a str> {
        self.required(key, errors)?;
        self.string(key, errors)
    }

    pub fn bool(&self, key: &str, errors: &mut FieldErrors) -> Option<bool> {
        let value = self.get(key)?;
        let flag = value.as_bool();
        if flag.is_none() {
            errors.add(self.path_of(key), format!("{key} must be true or false"));
        }
        flag
    }

    pub fn object(&self, key: &str, errors: &mut FieldErrors) -> Option<&'a Map<String, Value>> {
        let value = self.get(key)?;
        let object = value.as_object();
        if object.is_none() {
            errors.add(self.path_of(key), format!("{key} must be an object"));
        }
        object
    }
}
