//! Push API: apps — `/v1/PushNotifications/Apps`.
//!
//! `GET` list (filters `isDefault`, `startDate`, `endDate`), `GET /{appName}`, `PATCH /{appName}`
//! with `{isDefault}`. Apps are made by their first credential and deleted with their last one
//! (see `credentials.rs`); an account with apps has exactly one default app.

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use herald_core::AppName;
use herald_core::time::format_rfc3339;
use herald_store::apps::{AppFilter, AppRecord};
use serde_json::{Value, json};

use super::credentials::{or_not_found, path_param};
use super::query::{bool_param, date_range, list_params};
use crate::AppState;
use crate::auth::Caller;
use crate::errors::{FieldErrors, PushError};
use crate::json::{Fields, PushJson};
use crate::pagination::ListQuery;

const LIST_FILTERS: &[&str] = &["isDefault", "startDate", "endDate"];
const UPDATE_FIELDS: &[&str] = &["isDefault"];
const NOT_FOUND: &str = "app not found";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/Apps", get(list))
        .route("/Apps/{app_name}", get(fetch).patch(update))
}

pub(crate) fn app_json(app: &AppRecord) -> Value {
    let defaults: Vec<Value> = app
        .default_credentials
        .iter()
        .map(|(kind, id)| json!({"credentialType": kind.as_str(), "credentialId": id}))
        .collect();
    json!({
        "name": app.name.as_str(),
        "isDefault": app.is_default,
        "defaultCredentials": defaults,
        "createdAt": format_rfc3339(app.created_at),
        "updatedAt": format_rfc3339(app.updated_at),
    })
}

/// The app name in the path; one that cannot be an app's name names none → 404.
fn app_name_of(path: Result<Path<String>, PathRejection>) -> Result<AppName, PushError> {
    let name = path_param(path, NOT_FOUND)?;
    AppName::parse(&name).map_err(|_| PushError::not_found(NOT_FOUND))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<Value>, PushError> {
    let query = list_params(raw, LIST_FILTERS)?;
    let mut filter = AppFilter {
        is_default: bool_param(&query, "isDefault")?,
        ..Default::default()
    };
    (filter.created_from, filter.created_until) = date_range(&query)?;
    let list = ListQuery::parse(&state.pages, &query, LIST_FILTERS)?;
    let page = state
        .store
        .list_apps(&caller.account_sid, &filter, &list.page)
        .await?;
    let items = page.items.iter().map(app_json).collect();
    Ok(list.body(&state.pages, "apps", items, page.next.as_ref()))
}

async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Value>, PushError> {
    let name = app_name_of(path)?;
    let app = state
        .store
        .get_app(&caller.account_sid, &name)
        .await
        .map_err(or_not_found(NOT_FOUND))?;
    Ok(axum::Json(app_json(&app)))
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    PushJson(body): PushJson,
) -> Result<Response, PushError> {
    let name = app_name_of(path)?;
    // Existence first: another account's app is 404 whatever the body says.
    state
        .store
        .get_app(&caller.account_sid, &name)
        .await
        .map_err(or_not_found(NOT_FOUND))?;
    let fields = Fields::new(&body, "");
    let mut errors = FieldErrors::new();
    fields.deny_unknown(UPDATE_FIELDS, &mut errors);
    if fields.required("isDefault", &mut errors).is_some() {
        fields.bool("isDefault", &mut errors);
    }
    let is_default = fields.get("isDefault").and_then(Value::as_bool);
    let (true, Some(is_default)) = (errors.is_empty(), is_default) else {
        return Err(errors.into());
    };
    let app = state
        .store
        .set_app_default(&caller.account_sid, &name, is_default)
        .await
        .map_err(or_not_found(NOT_FOUND))?;
    state.app_senders.clear();
    if is_default {
        tracing::info!(account = %caller.account_sid, app = %app.name, "default app set");
    }
    Ok(super::accepted(&state, "Apps", app.name.as_str()))
}
