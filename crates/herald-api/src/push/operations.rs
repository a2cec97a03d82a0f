//! Operations (one per accepted send): `GET /Operations`, `GET /Operations/{id}`,
//! `GET /Operations/{id}/Errors` (its failed notifications), `POST /Operations/{id}/Cancel`.

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use herald_core::ids;
use herald_core::time::format_rfc3339;
use herald_store::StoreError;
use herald_store::delivery::{NotificationFilter, OperationFilter, OperationRecord};
use serde_json::{Map, Value, json};

use super::notifications::notification_json;
use super::query::{date_range, list_params, status_param};
use super::send::operation_accepted;
use crate::AppState;
use crate::auth::Caller;
use crate::errors::PushError;
use crate::pagination::ListQuery;

pub const OPERATION_STATUSES: &[&str] = &["SCHEDULED", "PROCESSING", "COMPLETED", "CANCELED"];
const LIST_FILTERS: &[&str] = &["status", "startDate", "endDate"];
const NOT_FOUND: &str = "operation not found";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/Operations", get(list))
        .route("/Operations/{operation_id}", get(fetch))
        .route("/Operations/{operation_id}/Errors", get(errors))
        .route("/Operations/{operation_id}/Cancel", post(cancel))
}

pub(crate) fn operation_json(record: &OperationRecord) -> Value {
    let stats = &record.stats;
    let mut out = Map::new();
    out.insert("id".into(), json!(record.id));
    out.insert("status".into(), json!(record.status));
    out.insert(
        "stats".into(),
        json!({
            "total": stats.total,
            "recipients": stats.recipients,
            "unaddressable": stats.unaddressable,
            "scheduled": stats.scheduled,
            "queued": stats.queued,
            "sent": stats.sent,
            "failed": stats.failed,
            "canceled": stats.canceled,
        }),
    );
    out.insert("createdAt".into(), json!(format_rfc3339(record.created_at)));
    out.insert("updatedAt".into(), json!(format_rfc3339(record.updated_at)));
    if let Some(at) = record.completed_at {
        out.insert("completedAt".into(), json!(format_rfc3339(at)));
    }
    Value::Object(out)
}

/// The operation ID of the path; one that is not an operation ID names nothing → 404.
fn operation_id(path: Result<Path<String>, PathRejection>) -> Result<String, PushError> {
    let id = path
        .map(|Path(id)| id)
        .map_err(|_| PushError::not_found(NOT_FOUND))?;
    if ids::parse_type_id(ids::OPERATION, &id).is_none() {
        return Err(PushError::not_found(NOT_FOUND));
    }
    Ok(id)
}

fn not_found(error: StoreError) -> PushError {
    match error {
        StoreError::NotFound => PushError::not_found(NOT_FOUND),
        other => other.into(),
    }
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<Value>, PushError> {
    let query = list_params(raw, LIST_FILTERS)?;
    let (start_ms, end_ms) = date_range(&query)?;
    let filter = OperationFilter {
        status: status_param(&query, OPERATION_STATUSES)?,
        start_ms,
        end_ms,
    };
    let list = ListQuery::parse(&state.pages, &query, LIST_FILTERS)?;
    let page = state
        .store
        .list_operations(&caller.account_sid, &filter, &list.page)
        .await?;
    let items = page.items.iter().map(operation_json).collect();
    Ok(list.body(&state.pages, "operations", items, page.next.as_ref()))
}

async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Value>, PushError> {
    let id = operation_id(path)?;
    let record = state
        .store
        .get_operation(&caller.account_sid, &id)
        .await
        .map_err(not_found)?;
    Ok(axum::Json(operation_json(&record)))
}

async fn errors(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<Value>, PushError> {
    let id = operation_id(path)?;
    let mut query = list_params(raw, &[])?;
    state
        .store
        .get_operation(&caller.account_sid, &id)
        .await
        .map_err(not_found)?;
    // The operation is part of what the page tokens are bound to.
    query.insert("operation".into(), id.clone());
    let list = ListQuery::parse(&state.pages, &query, &["operation"])?;
    let filter = NotificationFilter {
        operation_id: Some(id),
        status: Some("FAILED".into()),
        ..NotificationFilter::default()
    };
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

async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, PushError> {
    let id = operation_id(path)?;
    state
        .store
        .cancel_operation(&caller.account_sid, &id)
        .await
        .map_err(not_found)?;
    // Cancel wakes nothing: the engine skips canceled rows when it meets them.
    Ok(operation_accepted(&state, &id))
}
