//! The two error shapes: the Push API's `{"errors": [...]}` list and the Chat API's classic
//! Twilio object, with Twilio's error numbers (see `docs/errors.md` for the full table).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_store::StoreError;
use serde::Serialize;
use serde_json::json;

/// Twilio error numbers Herald uses.
pub mod code {
    pub const INVALID_PARAMETER: u32 = 20001;
    pub const AUTHENTICATION_FAILED: u32 = 20003;
    pub const METHOD_NOT_ALLOWED: u32 = 20004;
    pub const NOT_FOUND: u32 = 20404;
    pub const TOO_MANY_REQUESTS: u32 = 20429;
    pub const INTERNAL: u32 = 20500;
    pub const SERVICE_UNAVAILABLE: u32 = 20503;
    pub const PAYLOAD_TOO_LARGE: u32 = 20413;
    pub const INVALID_PAGE_TOKEN: u32 = 21481;
    pub const IDEMPOTENCY_MISMATCH: u32 = 20422;
    pub const INVALID_CREDENTIAL_CONTENT: u32 = 52005;
}

pub fn info_url(code: u32) -> String {
    format!("https://www.twilio.com/docs/errors/{code}")
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorEntry {
    pub code: u32,
    pub message: String,
    pub info_url: String,
    /// JSON path of the offending field (`to[3].token`), or null.
    pub context: Option<String>,
}

/// A Push API error answer: a status and one entry per problem found.
#[derive(Debug, Clone)]
pub struct PushError {
    pub status: StatusCode,
    pub errors: Vec<ErrorEntry>,
    pub retry_after: Option<u64>,
}

impl PushError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            errors: vec![ErrorEntry {
                code,
                message: message.into(),
                info_url: info_url(code),
                context: None,
            }],
            retry_after: None,
        }
    }

    /// 400 20001 about one field.
    pub fn invalid(context: impl Into<String>, message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::BAD_REQUEST, code::INVALID_PARAMETER, message);
        error.errors[0].context = Some(context.into());
        error
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code::NOT_FOUND, message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::INTERNAL,
            "internal error",
        )
    }
}

impl From<FieldErrors> for PushError {
    fn from(errors: FieldErrors) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            errors: errors.0,
            retry_after: None,
        }
    }
}

impl From<StoreError> for PushError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => PushError::not_found("resource not found"),
            StoreError::Invalid { field, message } => {
                let mut answer =
                    PushError::new(StatusCode::BAD_REQUEST, code::INVALID_PARAMETER, message);
                answer.errors[0].context = field;
                answer
            }
            StoreError::Conflict(message) => PushError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                code::IDEMPOTENCY_MISMATCH,
                message,
            ),
            other => {
                tracing::error!(error = %other, "store error");
                PushError::internal()
            }
        }
    }
}

impl IntoResponse for PushError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "errors": self.errors }))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Collects every problem in a request body before answering, so one 400 names them all.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<ErrorEntry>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// A 20001 problem at JSON path `context`.
    pub fn add(&mut self, context: impl Into<String>, message: impl Into<String>) {
        self.add_code(code::INVALID_PARAMETER, context, message);
    }

    pub fn add_code(&mut self, code: u32, context: impl Into<String>, message: impl Into<String>) {
        self.0.push(ErrorEntry {
            code,
            message: message.into(),
            info_url: info_url(code),
            context: Some(context.into()),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was found wrong, else the 400.
    pub fn finish<T>(self, value: T) -> Result<T, PushError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.into())
        }
    }
}

/// A Chat API error answer: `{"code", "message", "more_info", "status"}`.
#[derive(Debug, Clone)]
pub struct ChatError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ChatError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::INVALID_PARAMETER, message)
    }
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            code::NOT_FOUND,
            "The requested resource was not found",
        )
    }
}

impl From<StoreError> for ChatError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ChatError::not_found(),
            StoreError::Invalid { message, .. } => ChatError::invalid(message),
            StoreError::Conflict(message) => {
                ChatError::new(StatusCode::CONFLICT, code::INVALID_PARAMETER, message)
            }
            other => {
                tracing::error!(error = %other, "store error");
                ChatError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    code::INTERNAL,
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for ChatError {
    fn into_response(self) -> Response {
        let body = json!({
            "code": self.code,
            "message": self.message,
            "more_info": info_url(self.code),
            "status": self.status.as_u16(),
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
