//! Push notifications: `POST /v1/PushNotifications` (the send, in `send.rs`), `GET` list with
//! filters, `GET /{pushNotificationId}`. One record per resolved device; content is never shown.

use std::collections::HashMap;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use herald_core::time::{format_rfc3339, parse_rfc3339};
use herald_core::{Provider, ids};
use herald_store::StoreError;
use herald_store::delivery::{NotificationFilter, NotificationRecord};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::errors::PushError;
use crate::pagination::ListQuery;

pub const NOTIFICATION_STATUSES: &[&str] = &["SCHEDULED", "QUEUED", "SENT", "FAILED", "CANCELED"];
const LIST_FILTERS: &[&str] = &[
    "operationId",
    "status",
    "user",
    "provider",
    "tags",
    "startDate",
    "endDate",
];
const NOT_FOUND: &str = "push notification not found";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(list).post(super::send::send))
        .route("/{push_notification_id}", get(fetch))
}

pub(crate) fn notification_json(state: &AppState, record: &NotificationRecord) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(record.id));
    out.insert(
        "to".into(),
        json!({"provider": record.provider.as_str(), "token": record.token}),
    );
    let slot = match record.provider {
        Provider::Apn => "apn",
        Provider::Fcm => "fcm",
    };
    out.insert("from".into(), json!({ slot: record.credential_id }));
    out.insert("status".into(), json!(record.status));
    out.insert("priority".into(), json!(record.priority));
    out.insert("tags".into(), json!(record.tags.as_map()));
    if let Some(user_id) = &record.user_id {
        out.insert("userId".into(), json!(user_id));
    }
    out.insert("attempts".into(), json!(record.attempts));
    if let Some(error) = &record.error {
        out.insert("error".into(), error.clone());
    }
    out.insert(
        "related".into(),
        json!([{
            "name": "operation",
            "id": record.operation_id,
            "uri": state.push_url("Operations", &record.operation_id),
        }]),
    );
    out.insert("createdAt".into(), json!(format_rfc3339(record.created_at)));
    out.insert("updatedAt".into(), json!(format_rfc3339(record.updated_at)));
    if let Some(sent_at) = record.sent_at {
        out.insert("sentAt".into(), json!(format_rfc3339(sent_at)));
    }
    Value::Object(out)
}

/// The query string as a map (a later repeat of a name wins); unparsable → 400.
pub(crate) fn query_map(raw: Option<String>) -> Result<HashMap<String, String>, PushError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&raw.unwrap_or_default())
        .map(|pairs| pairs.into_iter().collect())
        .map_err(|error| PushError::invalid("query", format!("malformed query string: {error}")))
}

/// Reports every query parameter that is neither a filter nor `pageSize` / `pageToken`.
pub(crate) fn deny_unknown_params(
    query: &HashMap<String, String>,
    filters: &[&str],
) -> Result<(), PushError> {
    let mut unknown: Vec<&String> = query
        .keys()
        .filter(|k| !filters.contains(&k.as_str()) && *k != "pageSize" && *k != "pageToken")
        .collect();
    unknown.sort();
    match unknown.first() {
        None => Ok(()),
        Some(name) => Err(PushError::invalid(
            name.as_str(),
            format!(
                "unknown query parameter {name:?}; allowed: {}, pageSize, pageToken",
                filters.join(", ")
            ),
        )),
    }
}

/// `startDate` / `endDate`: an RFC 3339 time, or a date (`2026-05-01`: from the start of that day
/// UTC for `startDate`, to its end for `endDate`). Epoch milliseconds.
pub(crate) fn date_param(
    query: &HashMap<String, String>,
    name: &str,
    end: bool,
) -> Result<Option<i64>, PushError> {
    let Some(text) = query.get(name).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if let Some(at) = parse_rfc3339(text) {
        return Ok(Some(at));
    }
    let is_date = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if is_date && let Some(start) = parse_rfc3339(&format!("{text}T00:00:00Z")) {
        return Ok(Some(if end { start + 86_400_000 - 1 } else { start }));
    }
    Err(PushError::invalid(
        name,
        format!("{name} must be an RFC 3339 time (2026-05-01T09:00:00Z) or a date (2026-05-01)"),
    ))
}

/// `status`: one of `allowed`.
pub(crate) fn status_param(
    query: &HashMap<String, String>,
    allowed: &[&str],
) -> Result<Option<String>, PushError> {
    match query.get("status").filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(status) if allowed.contains(&status.as_str()) => Ok(Some(status.clone())),
        Some(_) => Err(PushError::invalid(
            "status",
            format!("status must be one of {}", allowed.join(", ")),
        )),
    }
}

/// `tags=k1:v1;k2:v2;` → pairs.
fn tags_param(text: &str) -> Result<Vec<(String, String)>, PushError> {
    let bad = || {
        PushError::invalid(
            "tags",
            "tags must be key:value pairs separated by semicolons, e.g. \"campaign:spring;env:prod;\" \
             (at most 10)",
        )
    };
    let mut pairs = Vec::new();
    for part in text.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once(':').ok_or_else(bad)?;
        if key.is_empty() {
            return Err(bad());
        }
        pairs.push((key.to_owned(), value.to_owned()));
    }
    if pairs.is_empty() || pairs.len() > herald_core::Tags::MAX_PAIRS {
        return Err(bad());
    }
    Ok(pairs)
}

fn filter_of(query: &HashMap<String, String>) -> Result<NotificationFilter, PushError> {
    let mut filter = NotificationFilter::default();
    if let Some(id) = query.get("operationId").filter(|t| !t.is_empty()) {
        if ids::parse_type_id(ids::OPERATION, id).is_none() {
            return Err(PushError::invalid(
                "operationId",
                "operationId must be an operation ID (comms_operation_...)",
            ));
        }
        filter.operation_id = Some(id.clone());
    }
    filter.status = status_param(query, NOTIFICATION_STATUSES)?;
    if let Some(user) = query.get("user").filter(|t| !t.is_empty()) {
        if ids::parse_type_id(ids::USER, user).is_none() {
            return Err(PushError::invalid(
                "user",
                "user must be a user ID (comms_pushnotificationuser_...)",
            ));
        }
        filter.user_id = Some(user.clone());
    }
    if let Some(provider) = query.get("provider").filter(|t| !t.is_empty()) {
        filter.provider = Some(
            Provider::parse(provider).map_err(|message| PushError::invalid("provider", message))?,
        );
    }
    if let Some(tags) = query.get("tags").filter(|t| !t.is_empty()) {
        filter.tags = tags_param(tags)?;
    }
    filter.start_ms = date_param(query, "startDate", false)?;
    filter.end_ms = date_param(query, "endDate", true)?;
    Ok(filter)
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<Value>, PushError> {
    let query = query_map(raw)?;
    deny_unknown_params(&query, LIST_FILTERS)?;
    let filter = filter_of(&query)?;
    let list = ListQuery::parse(&state.pages, &query, LIST_FILTERS)?;
    let page = state
        .store
        .list_notifications(&caller.account_sid, &filter, &list.page)
        .await?;
    let items = page
        .items
        .iter()
        .map(|record| notification_json(&state, record))
        .collect();
    Ok(list.body(&state.pages, "notifications", items, page.next.as_ref()))
}

async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Value>, PushError> {
    let id = path
        .map(|Path(id)| id)
        .map_err(|_| PushError::not_found(NOT_FOUND))?;
    if ids::parse_type_id(ids::PUSH_NOTIFICATION, &id).is_none() {
        return Err(PushError::not_found(NOT_FOUND));
    }
    let record = state
        .store
        .get_notification(&caller.account_sid, &id)
        .await
        .map_err(|error| match error {
            StoreError::NotFound => PushError::not_found(NOT_FOUND),
            other => other.into(),
        })?;
    Ok(axum::Json(notification_json(&state, &record)))
}
