//! Response builders and request-body reading shared by the handlers.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;

pub(crate) type Resp = Response<Full<Bytes>>;

/// Returned by a handler to drop the stream (HTTP/2 RST_STREAM) or the connection (HTTP/1.1)
/// instead of answering.
#[derive(Debug)]
pub(crate) struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sandbox fault: reset instead of answering")
    }
}

impl std::error::Error for Reset {}

pub(crate) type HandlerResult = Result<Resp, Reset>;

pub(crate) fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub(crate) fn json(code: u16, body: &Value) -> Resp {
    bytes(
        code,
        "application/json; charset=UTF-8",
        serde_json::to_vec(body).expect("JSON values serialize"),
    )
}

pub(crate) fn bytes(code: u16, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status(code);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub(crate) fn empty(code: u16) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status(code);
    resp
}

pub(crate) fn with_retry_after(mut resp: Resp, retry_after: Option<u64>) -> Resp {
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

pub(crate) enum BodyError {
    TooLarge,
    /// The peer reset the stream or the connection broke while sending the body.
    Broken,
}

/// Reads the whole request body, refusing more than `limit` bytes.
pub(crate) async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(BodyError::TooLarge)
        }
        Err(_) => Err(BodyError::Broken),
    }
}

/// A recorded payload: the JSON value when the body parses, else its text, else null.
pub(crate) fn payload_value(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// Request headers as a JSON object (lower-case names), without `authorization`.
pub(crate) fn headers_value(headers: &http::HeaderMap) -> Value {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        if name == header::AUTHORIZATION {
            continue;
        }
        let value = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        map.insert(name.as_str().to_owned(), value);
    }
    Value::Object(map)
}

/// Splits `Scheme credentials`, matching the scheme case-insensitively.
pub(crate) fn auth_credentials<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once([' ', '='])?;
    let sep = value.as_bytes()[s.len()];
    let scheme_ok = s.eq_ignore_ascii_case(scheme);
    // `Bearer <token>` uses a space; legacy FCM's `key=<key>` uses `=`.
    let sep_ok = if scheme.eq_ignore_ascii_case("key") {
        sep == b'='
    } else {
        sep == b' '
    };
    (scheme_ok && sep_ok).then(|| rest.trim())
}
