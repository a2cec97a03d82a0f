//! Push API: credentials — `/v1/PushNotifications/Credentials`.
//!
//! `GET` list (filters `appName`, `credentialType`, `isDefault`, `startDate`, `endDate`), `POST`
//! create, `GET` / `PATCH` / `DELETE /{credentialId}`. Content is validated by
//! `herald_core::credential_content` (problems → 400 code 52005 at `content.<field>`); the rules
//! about apps, defaults and limits are the store's, checked in the write's transaction. Secrets
//! are never part of an answer: the response shows only the non-secret facts.
//! Decisions where API.md is silent: `docs/decisions/credentials.md`.

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use herald_core::credential_content::{
    PushCredentialType, ValidatedContent, validate_push_content,
};
use herald_core::time::format_rfc3339;
use herald_core::{AppName, Tags, ids};
use herald_store::StoreError;
use herald_store::credentials::{
    CredentialFilter, CredentialRecord, CredentialUpdate, NewCredential,
};
use serde_json::{Map, Value, json};

use super::query::{bool_param, date_range, list_params, param};
use crate::AppState;
use crate::auth::Caller;
use crate::errors::{FieldErrors, PushError, code};
use crate::json::{Fields, PushJson};
use crate::pagination::ListQuery;

const LIST_FILTERS: &[&str] = &[
    "appName",
    "credentialType",
    "isDefault",
    "startDate",
    "endDate",
];
const CREATE_FIELDS: &[&str] = &["credentialType", "appName", "content", "isDefault", "tags"];
const UPDATE_FIELDS: &[&str] = &["isDefault", "tags", "content"];
/// Fields of a credential that a PATCH may not change (answered with "cannot be changed" rather
/// than "unknown field").
const FIXED_FIELDS: &[&str] = &["credentialType", "appName"];
const NOT_FOUND: &str = "credential not found";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/Credentials", get(list).post(create))
        .route(
            "/Credentials/{credential_id}",
            get(fetch).patch(update).delete(remove),
        )
}

/// The API form of a credential: never the secret, only the facts.
pub(crate) fn credential_json(record: &CredentialRecord) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(record.id));
    out.insert(
        "credentialType".into(),
        json!(record.credential_type.as_str()),
    );
    out.insert("appName".into(), json!(record.app_name.as_str()));
    out.insert("isDefault".into(), json!(record.is_default));
    out.insert("tags".into(), json!(record.tags.as_map()));
    out.insert("createdAt".into(), json!(format_rfc3339(record.created_at)));
    out.insert("updatedAt".into(), json!(format_rfc3339(record.updated_at)));
    // `{"apn": {authMethod, topic, expiresAt}}` or `{"fcm": {projectId, clientEmail}}`.
    if let Some(Value::Object(facts)) = record
        .facts
        .as_ref()
        .and_then(|facts| serde_json::to_value(facts).ok())
    {
        out.extend(facts);
    }
    out.insert(
        "lastError".into(),
        match &record.last_error {
            Some(error) => json!({
                "code": error.code,
                "message": error.message,
                "at": format_rfc3339(error.at),
            }),
            None => Value::Null,
        },
    );
    Value::Object(out)
}

// ----- path parameters and store errors (shared with the other resources) -----

/// The path parameter, or a 404 when it cannot be read.
pub(super) fn path_param(
    path: Result<Path<String>, PathRejection>,
    not_found: &str,
) -> Result<String, PushError> {
    path.map(|Path(value)| value)
        .map_err(|_| PushError::not_found(not_found))
}

/// A store `NotFound` with this resource's message.
pub(super) fn or_not_found(message: &'static str) -> impl Fn(StoreError) -> PushError {
    move |error| match error {
        StoreError::NotFound => PushError::not_found(message),
        other => other.into(),
    }
}

// ----- body fields -----

fn credential_type_of(text: &str, errors: &mut FieldErrors) -> Option<PushCredentialType> {
    match text.parse::<PushCredentialType>() {
        Ok(kind) => Some(kind),
        Err(error) => {
            errors.add("credentialType", error.message);
            None
        }
    }
}

fn tags_of(fields: &Fields<'_>, errors: &mut FieldErrors) -> Option<Tags> {
    let value = fields.get("tags")?;
    match Tags::from_json(value) {
        Ok(tags) => Some(tags),
        Err(problems) => {
            for (path, message) in problems {
                errors.add(format!("tags{path}"), message);
            }
            None
        }
    }
}

/// Validates `content` for `kind`; every problem → 52005 at its path inside `content`.
fn content_of(
    kind: PushCredentialType,
    content: &Value,
    errors: &mut FieldErrors,
) -> Option<ValidatedContent> {
    match validate_push_content(kind, content) {
        Ok(validated) => Some(validated),
        Err(problems) => {
            for problem in problems {
                errors.add_code(
                    code::INVALID_CREDENTIAL_CONTENT,
                    problem.path,
                    problem.message,
                );
            }
            None
        }
    }
}

/// The ID in the path, when it can be a Push credential's; anything else names none → 404.
fn credential_id_of(path: Result<Path<String>, PathRejection>) -> Result<String, PushError> {
    let id = path_param(path, NOT_FOUND)?;
    if ids::parse_type_id(ids::CREDENTIAL, &id).is_some() {
        Ok(id)
    } else {
        Err(PushError::not_found(NOT_FOUND))
    }
}

// ----- handlers -----

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<Value>, PushError> {
    let query = list_params(raw, LIST_FILTERS)?;
    let mut filter = CredentialFilter::default();
    if let Some(text) = param(&query, "appName") {
        filter.app_name =
            Some(AppName::parse(text).map_err(|message| PushError::invalid("appName", message))?);
    }
    if let Some(text) = param(&query, "credentialType") {
        filter.credential_type = Some(
            text.parse::<PushCredentialType>()
                .map_err(|error| PushError::invalid("credentialType", error.message))?,
        );
    }
    filter.is_default = bool_param(&query, "isDefault")?;
    (filter.created_from, filter.created_until) = date_range(&query)?;
    let list = ListQuery::parse(&state.pages, &query, LIST_FILTERS)?;
    let page = state
        .store
        .list_credentials(&caller.account_sid, &filter, &list.page)
        .await?;
    let items = page.items.iter().map(credential_json).collect();
    Ok(list.body(&state.pages, "credentials", items, page.next.as_ref()))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    PushJson(body): PushJson,
) -> Result<Response, PushError> {
    let fields = Fields::new(&body, "");
    let mut errors = FieldErrors::new();
    fields.deny_unknown(CREATE_FIELDS, &mut errors);
    let kind = fields
        .required_string("credentialType", &mut errors)
        .and_then(|text| credential_type_of(text, &mut errors));
    let app_name = fields
        .required_string("appName", &mut errors)
        .and_then(|text| match AppName::parse(text) {
            Ok(name) => Some(name),
            Err(message) => {
                errors.add("appName", message);
                None
            }
        });
    let content = fields.required("content", &mut errors);
    let is_default = fields.bool("isDefault", &mut errors);
    let tags = tags_of(&fields, &mut errors);
    // Content can only be checked against a known type.
    let content = match (kind, content) {
        (Some(kind), Some(content)) => content_of(kind, content, &mut errors),
        _ => None,
    };
    let (true, Some(credential_type), Some(app_name), Some(content)) =
        (errors.is_empty(), kind, app_name, content)
    else {
        return Err(errors.into());
    };
    let record = state
        .store
        .create_credential(
            &caller.account_sid,
            NewCredential {
                credential_type,
                app_name,
                is_default,
                tags: tags.unwrap_or_default(),
                content,
            },
        )
        .await?;
    state.app_senders.clear();
    tracing::info!(
        account = %caller.account_sid,
        credential = %record.id,
        app = %record.app_name,
        credential_type = %record.credential_type,
        "credential created"
    );
    Ok(super::accepted(&state, "Credentials", &record.id))
}

async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Value>, PushError> {
    let id = credential_id_of(path)?;
    let record = state
        .store
        .get_credential(&caller.account_sid, &id)
        .await
        .map_err(or_not_found(NOT_FOUND))?;
    Ok(axum::Json(credential_json(&record)))
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    PushJson(body): PushJson,
) -> Result<Response, PushError> {
    let id = credential_id_of(path)?;
    // Existence first (another account's credential is 404 whatever the body says), and the
    // type the content is validated for.
    let current = state
        .store
        .get_credential(&caller.account_sid, &id)
        .await
        .map_err(or_not_found(NOT_FOUND))?;
    let fields = Fields::new(&body, "");
    let mut errors = FieldErrors::new();
    let known: Vec<&str> = UPDATE_FIELDS.iter().chain(FIXED_FIELDS).copied().collect();
    fields.deny_unknown(&known, &mut errors);
    for fixed in FIXED_FIELDS {
        if body.contains_key(*fixed) {
            errors.add(
                *fixed,
                format!(
                    "{fixed} cannot be changed (this credential is {} of app {:?}); create a new \
                     credential instead",
                    current.credential_type,
                    current.app_name.as_str()
                ),
            );
        }
    }
    let is_default = fields.bool("isDefault", &mut errors);
    let tags = tags_of(&fields, &mut errors);
    let content = fields
        .get("content")
        .and_then(|content| content_of(current.credential_type, content, &mut errors));
    if !errors.is_empty() {
        return Err(errors.into());
    }
    let record = state
        .store
        .update_credential(
            &caller.account_sid,
            &id,
            CredentialUpdate {
                is_default,
                tags,
                content,
            },
        )
        .await
        .map_err(or_not_found(NOT_FOUND))?;
    state.app_senders.clear();
    if record.content_version != current.content_version {
        tracing::info!(
            account = %caller.account_sid,
            credential = %id,
            content_version = record.content_version,
            "credential key rotated"
        );
    }
    Ok(super::accepted(&state, "Credentials", &id))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, PushError> {
    let id = credential_id_of(path)?;
    let deletion = state
        .store
        .delete_credential(&caller.account_sid, &id)
        .await
        .map_err(or_not_found(NOT_FOUND))?;
    state.app_senders.clear();
    tracing::info!(
        account = %caller.account_sid,
        credential = %id,
        app_deleted = deletion.app_deleted,
        promoted_credential = deletion.promoted_credential.as_deref().unwrap_or(""),
        promoted_app = deletion.promoted_app.as_ref().map(AppName::as_str).unwrap_or(""),
        "credential deleted"
    );
    Ok(super::accepted(&state, "Credentials", &id))
}
