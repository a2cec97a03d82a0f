//! Chat API: `/v2/Credentials`, the Twilio Programmable Chat v2 Credential resource.
//!
//! | call | answer |
//! |---|---|
//! | `GET /v2/Credentials` | 200 `{"credentials": [...], "meta": {...}}` |
//! | `POST /v2/Credentials` | 201 the credential |
//! | `GET /v2/Credentials/{Sid}` | 200 the credential |
//! | `POST /v2/Credentials/{Sid}` | 200 the credential (partial update) |
//! | `DELETE /v2/Credentials/{Sid}` | 204, empty body |
//!
//! Requests are `application/x-www-form-urlencoded` with Twilio's parameter names (`Type`,
//! `FriendlyName`, `Certificate`, `PrivateKey`, `Sandbox`, `ApiKey`, `Secret`); answers are
//! snake_case JSON (`sandbox` is the string `"True"` / `"False"`, as Twilio returns it); errors
//! are the classic Twilio object `{code, message, more_info, status}`. The content rules live in
//! `herald_store::chat_credentials`; the choices made where Twilio's reference is silent are in
//! `docs/decisions/chat.md`.
//!
//! Paging: `PageSize` (1–1000, default 50), `Page` (echoed, for the client's state) and
//! `PageToken`. Tokens are keyset cursors made by [`crate::pagination::PageTokens`], bound to the
//! direction and the `PageSize`: `PA...` continues after a row (the next page), `PB...` before
//! one (the previous page).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herald_core::time::format_rfc3339;
use herald_store::chat_credentials::{
    ChatCredential, ChatCredentialInput, ChatCredentialType, ChatInputProblem, ChatPagePosition,
    check_chat_input,
};
use herald_store::{Cursor, StoreError};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::errors::{ChatError, code};
use crate::pagination::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/Credentials", get(list).post(create))
        .route("/Credentials/{sid}", get(fetch).post(update).delete(remove))
}

/// The form parameters of a create; an update takes the same but `Type`.
const CREATE_PARAMETERS: &[&str] = &[
    "Type",
    "FriendlyName",
    "Certificate",
    "PrivateKey",
    "Sandbox",
    "ApiKey",
    "Secret",
];

/// Form fields whose problems are about credential content (Twilio code 52005).
const CONTENT_FIELDS: &[&str] = &["Certificate", "PrivateKey", "ApiKey", "Secret"];

/// The JSON of a credential.
fn credential_json(state: &AppState, credential: &ChatCredential) -> Value {
    json!({
        "sid": credential.sid,
        "account_sid": credential.account_sid,
        "friendly_name": credential.friendly_name,
        "type": credential.credential_type.as_str(),
        "sandbox": if credential.sandbox { "True" } else { "False" },
        "date_created": format_rfc3339(credential.created_at),
        "date_updated": format_rfc3339(credential.updated_at),
        "url": format!("{}/v2/Credentials/{}", state.config.public_url, credential.sid),
    })
}

/// A 400 for the problems found, in one message; code 52005 when they are all about content.
fn problems_error(problems: &[ChatInputProblem]) -> ChatError {
    let all_content = problems.iter().all(|p| p.content);
    let code = if all_content {
        code::INVALID_CREDENTIAL_CONTENT
    } else {
        code::INVALID_PARAMETER
    };
    ChatError::new(
        StatusCode::BAD_REQUEST,
        code,
        herald_store::chat_credentials::join_problems(problems),
    )
}

/// Store errors: `Invalid` about a content field is 52005, the rest as usual.
fn store_error(error: StoreError) -> ChatError {
    match error {
        StoreError::Invalid {
            field: Some(field),
            message,
        } if CONTENT_FIELDS.contains(&field.as_str()) => ChatError::new(
            StatusCode::BAD_REQUEST,
            code::INVALID_CREDENTIAL_CONTENT,
            message,
        ),
        other => ChatError::from(other),
    }
}

fn parameter_problem(field: &str, message: impl Into<String>) -> ChatInputProblem {
    ChatInputProblem {
        field: field.to_owned(),
        message: message.into(),
        content: false,
    }
}

/// A parameter name fit to quote in a message: no control characters, at most 64 characters.
fn printable(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Reads a form body. The Content-Type must be `application/x-www-form-urlencoded` (any
/// parameters, e.g. a charset); an empty body without a Content-Type is an empty form.
async fn read_form(state: &AppState, request: Request) -> Result<Vec<(String, String)>, ChatError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
    let bytes = axum::body::to_bytes(request.into_body(), state.config.body_limit_bytes)
        .await
        .map_err(|_| {
            ChatError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                code::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is too large (at most {} bytes)",
                    state.config.body_limit_bytes
                ),
            )
        })?;
    match content_type {
        None if bytes.is_empty() => return Ok(Vec::new()),
        Some(ref text)
            if text
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded") => {}
        other => {
            return Err(ChatError::invalid(format!(
                "Content-Type must be application/x-www-form-urlencoded (got {})",
                match other {
                    Some(text) => format!("{:?}", printable(&text)),
                    None => "none".to_owned(),
                }
            )));
        }
    }
    parse_form(&bytes)
}

fn parse_form(bytes: &Bytes) -> Result<Vec<(String, String)>, ChatError> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(bytes).map_err(|_| {
        ChatError::invalid("the request body is not a valid application/x-www-form-urlencoded form")
    })
}

/// The parameters of a create or update, read from a form. Collects every problem.
struct FormFields {
    credential_type: Option<ChatCredentialType>,
    input: ChatCredentialInput,
    problems: Vec<ChatInputProblem>,
}

fn read_fields(form: Vec<(String, String)>, creating: bool) -> FormFields {
    let mut fields = FormFields {
        credential_type: None,
        input: ChatCredentialInput::default(),
        problems: Vec::new(),
    };
    let mut seen: Vec<String> = Vec::new();
    let mut type_given = false;
    for (name, value) in form {
        if !CREATE_PARAMETERS.contains(&name.as_str()) {
            let allowed: Vec<&str> = CREATE_PARAMETERS
                .iter()
                .copied()
                .filter(|p| creating || *p != "Type")
                .collect();
            let hint = CREATE_PARAMETERS
                .iter()
                .find(|p| squash(p) == squash(&name))
                .map(|p| format!(" (did you mean {p}?)"))
                .unwrap_or_default();
            fields.problems.push(parameter_problem(
                &printable(&name),
                format!(
                    "unknown parameter {:?}{hint}; allowed: {}",
                    printable(&name),
                    allowed.join(", ")
                ),
            ));
            continue;
        }
        if seen.contains(&name) {
            fields.problems.push(parameter_problem(
                &name,
                format!("{name} is given more than once"),
            ));
            continue;
        }
        seen.push(name.clone());
        match name.as_str() {
            "Type" if !creating => fields.problems.push(parameter_problem(
                "Type",
                "Type cannot be changed: delete the credential and create one of the new Type",
            )),
            "Type" => {
                type_given = true;
                match value.parse::<ChatCredentialType>() {
                    Ok(kind) => fields.credential_type = Some(kind),
                    Err(error) => fields
                        .problems
                        .push(parameter_problem("Type", error.to_string())),
                }
            }
            "FriendlyName" => fields.input.friendly_name = Some(value),
            "Sandbox" => match value.to_ascii_lowercase().as_str() {
                "true" => fields.input.sandbox = Some(true),
                "false" => fields.input.sandbox = Some(false),
                _ => fields.problems.push(parameter_problem(
                    "Sandbox",
                    "Sandbox must be true or false",
                )),
            },
            "Certificate" => fields.input.certificate = Some(value),
            "PrivateKey" => fields.input.private_key = Some(value),
            "ApiKey" => fields.input.api_key = Some(value),
            "Secret" => fields.input.secret = Some(value),
            _ => unreachable!("every allowed parameter is handled"),
        }
    }
    if creating && !type_given {
        fields.problems.insert(
            0,
            parameter_problem("Type", "Type is required: one of apn, gcm, fcm"),
        );
    }
    fields
}

/// Lower case without separators, to suggest the intended parameter for a near miss.
fn squash(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Checks the sid's form: anything but `CR` + 32 lowercase hex digits does not exist.
fn check_sid(sid: &str) -> Result<(), ChatError> {
    if herald_core::ids::is_sid(herald_core::ids::CHAT_CREDENTIAL_SID, sid) {
        Ok(())
    } else {
        Err(ChatError::not_found())
    }
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ChatError> {
    let form = read_form(&state, request).await?;
    let FormFields {
        credential_type,
        input,
        mut problems,
    } = read_fields(form, true);
    match credential_type {
        Some(kind) => problems.extend(check_chat_input(kind, &input)),
        // Without a valid Type, still check what does not depend on it.
        None => problems.extend(check_chat_input(
            ChatCredentialType::Apn,
            &ChatCredentialInput {
                friendly_name: input.friendly_name.clone(),
                ..Default::default()
            },
        )),
    }
    let Some(kind) = credential_type.filter(|_| problems.is_empty()) else {
        return Err(problems_error(&problems));
    };
    let credential = state
        .store
        .create_chat_credential(&caller.account_sid, kind, &input)
        .await
        .map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(credential_json(&state, &credential)),
    )
        .into_response())
}

async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    Path(sid): Path<String>,
) -> Result<Response, ChatError> {
    check_sid(&sid)?;
    let credential = state
        .store
        .get_chat_credential(&caller.account_sid, &sid)
        .await
        .map_err(store_error)?;
    Ok(axum::Json(credential_json(&state, &credential)).into_response())
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(sid): Path<String>,
    request: Request,
) -> Result<Response, ChatError> {
    check_sid(&sid)?;
    // The credential must exist (404 before any 400), and its type decides what is allowed.
    let existing = state
        .store
        .get_chat_credential(&caller.account_sid, &sid)
        .await
        .map_err(store_error)?;
    let form = read_form(&state, request).await?;
    let FormFields {
        input,
        mut problems,
        ..
    } = read_fields(form, false);
    problems.extend(check_chat_input(existing.credential_type, &input));
    if !problems.is_empty() {
        return Err(problems_error(&problems));
    }
    // The store checks again, against the content stored when the update runs.
    let credential = state
        .store
        .update_chat_credential(&caller.account_sid, &sid, &input)
        .await
        .map_err(store_error)?;
    Ok(axum::Json(credential_json(&state, &credential)).into_response())
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(sid): Path<String>,
) -> Result<Response, ChatError> {
    check_sid(&sid)?;
    state
        .store
        .delete_chat_credential(&caller.account_sid, &sid)
        .await
        .map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Which way a page token reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// `PA`: the rows after (older than) the cursor.
    After,
    /// `PB`: the rows before (newer than) the cursor.
    Before,
}

impl Direction {
    fn prefix(self) -> &'static str {
        match self {
            Self::After => "PA",
            Self::Before => "PB",
        }
    }
}

/// What a token is bound to: the list, the direction and the page size.
fn binding(direction: Direction, page_size: i64) -> String {
    format!(
        "chat/v2/Credentials;{};PageSize={page_size}",
        direction.prefix()
    )
}

fn encode_token(state: &AppState, direction: Direction, cursor: &Cursor, page_size: i64) -> String {
    format!(
        "{}{}",
        direction.prefix(),
        state
            .pages
            .encode(Some(cursor), &binding(direction, page_size))
    )
}

fn decode_token(state: &AppState, token: &str, page_size: i64) -> Option<ChatPagePosition> {
    let (direction, rest) = if let Some(rest) = token.strip_prefix("PA") {
        (Direction::After, rest)
    } else {
        (Direction::Before, token.strip_prefix("PB")?)
    };
    let cursor = state.pages.decode(rest, &binding(direction, page_size))??;
    Some(match direction {
        Direction::After => ChatPagePosition::After(cursor),
        Direction::Before => ChatPagePosition::Before(cursor),
    })
}

/// `{public_url}/v2/Credentials?PageSize=..&Page=..[&PageToken=..]`.
fn page_url(state: &AppState, page_size: i64, page: i64, token: Option<&str>) -> String {
    let mut query = vec![
        ("PageSize", page_size.to_string()),
        ("Page", page.to_string()),
    ];
    if let Some(token) = token {
        query.push(("PageToken", token.to_owned()));
    }
    format!(
        "{}/v2/Credentials?{}",
        state.config.public_url,
        serde_urlencoded::to_string(&query).unwrap_or_default()
    )
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ChatError> {
    let query = request.uri().query().unwrap_or("");
    let pairs = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .map_err(|_| ChatError::invalid("the query string is not valid"))?;
    // Unknown query parameters are ignored, as Twilio does; the known ones must be single.
    let get = |name: &str| -> Result<Option<String>, ChatError> {
        let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        let first = values.next().cloned();
        if values.next().is_some() {
            return Err(ChatError::invalid(format!(
                "{name} is given more than once"
            )));
        }
        Ok(first)
    };
    let page_size = match get("PageSize")? {
        None => DEFAULT_PAGE_SIZE,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => {
                return Err(ChatError::invalid(format!(
                    "PageSize must be an integer from 1 to {MAX_PAGE_SIZE}"
                )));
            }
        },
    };
    let page = match get("Page")? {
        None => 0,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => {
                return Err(ChatError::invalid("Page must be a non-negative integer"));
            }
        },
    };
    let token = get("PageToken")?.filter(|t| !t.is_empty());
    let position = match &token {
        None if page > 0 => {
            return Err(ChatError::invalid(format!(
                "Page {page} needs a PageToken: follow next_page_url, or start at Page=0 without one"
            )));
        }
        None => ChatPagePosition::First,
        Some(token) => decode_token(&state, token, page_size).ok_or_else(|| {
            ChatError::new(
                StatusCode::BAD_REQUEST,
                code::INVALID_PAGE_TOKEN,
                "PageToken is invalid, or was made for another PageSize",
            )
        })?,
    };
    let result = state
        .store
        .list_chat_credentials(&caller.account_sid, page_size, position)
        .await
        .map_err(store_error)?;
    let next_page_url = result.next.as_ref().map(|cursor| {
        let token = encode_token(&state, Direction::After, cursor, page_size);
        page_url(&state, page_size, page + 1, Some(&token))
    });
    let previous_page_url = result.previous.as_ref().map(|cursor| {
        let token = encode_token(&state, Direction::Before, cursor, page_size);
        page_url(&state, page_size, (page - 1).max(0), Some(&token))
    });
    let credentials: Vec<Value> = result
        .items
        .iter()
        .map(|c| credential_json(&state, c))
        .collect();
    let body = json!({
        "credentials": credentials,
        "meta": {
            "page": page,
            "page_size": page_size,
            "first_page_url": page_url(&state, page_size, 0, None),
            "previous_page_url": previous_page_url,
            "next_page_url": next_page_url,
            "url": page_url(&state, page_size, page, token.as_deref()),
            "key": "credentials",
        },
    });
    Ok(axum::Json(body).into_response())
}
