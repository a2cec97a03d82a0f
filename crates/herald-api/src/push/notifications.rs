//! Push notifications: `POST /v1/PushNotifications` (the send, in `send.rs`), `GET` list with
//! filters, `GET /{pushNotificationId}`. One record per resolved device; content is never shown.

use std::collections::HashMap;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::routing::get;
use herald_core::time::format_rfc3339;
use herald_core::{Provider, ids};
use herald_store::StoreError;
use herald_store::delivery::{NotificationFilter, NotificationRecord};
use serde_json::{Map, Value, json};

use super::query::{date_range, list_params, param, status_param};
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
        // Any one-segment path matches this route, so a method other than GET is not "a known
        // path with a method it does not serve" (405) but most likely a mistyped path, such as
        // `POST /Credential`: it gets the router's own 404.
        .route("/{push_notification_id}", get(fetch).fallback(no_resource))
}

/// The router's answer to an unknown path (`crate::router`'s fallback), for the methods the
/// `/{pushNotificationId}` route does not serve.
async fn no_resource(OriginalUri(uri): OriginalUri) -> PushError {
    PushError::not_found(format!("no resource at {}", uri.path()))
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
    if let Some(id) = param(query, "operationId") {
        if ids::parse_type_id(ids::OPERATION, id).is_none() {
            return Err(PushError::invalid(
                "operationId",
                "operationId must be an operation ID (comms_operation_...)",
            ));
        }
        filter.operation_id = Some(id.to_owned());
    }
    filter.status = status_param(query, NOTIFICATION_STATUSES)?;
    if let Some(user) = param(query, "user") {
        if ids::parse_type_id(ids::USER, user).is_none() {
            return Err(PushError::invalid(
                "user",
                "user must be a user ID (comms_pushnotificationuser_...)",
            ));
        }
        filter.user_id = Some(user.to_owned());
    }
    if let Some(provider) = param(query, "provider") {
        filter.provider = Some(
            Provider::parse(provider).map_err(|message| PushError::invalid("provider", message))?,
        );
    }
    if let Some(tags) = param(query, "tags") {
        filter.tags = tags_param(tags)?;
    }
    (filter.start_ms, filter.end_ms) = date_range(query)?;
    Ok(filter)
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<Value>, PushError> {
    let query = list_params(raw, LIST_FILTERS)?;
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
