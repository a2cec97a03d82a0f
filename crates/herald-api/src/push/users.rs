//! Push API: users — `GET /Users`, `GET /Users/{userId}`, `DELETE /Users/{userId}`. Users are
//! made by registering a device without a `userId` (see `device_registrations.rs`).

use std::collections::HashMap;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use herald_core::ids;
use herald_core::time::format_rfc3339;
use herald_store::StoreError;
use herald_store::users::User;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::errors::PushError;
use crate::pagination::ListQuery;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/Users", get(list))
        .route("/Users/{user_id}", get(fetch).delete(remove))
}

pub(crate) fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "createdAt": format_rfc3339(user.created_at),
        "updatedAt": format_rfc3339(user.updated_at),
        "deletedAt": null,
    })
}

/// The query string as a map (a later repeat of a name wins); unparsable → 400.
pub(crate) fn query_map(raw: Option<String>) -> Result<HashMap<String, String>, PushError> {
    let raw = raw.unwrap_or_default();
    serde_urlencoded::from_str::<Vec<(String, String)>>(&raw)
        .map(|pairs| pairs.into_iter().collect())
        .map_err(|error| PushError::invalid("query", format!("malformed query string: {error}")))
}

/// A path parameter; one that does not decode (bad percent-encoding) names nothing, so → 404.
pub(crate) fn path_param<T>(path: Result<Path<T>, PathRejection>) -> Result<T, PushError> {
    path.map(|Path(value)| value)
        .map_err(|rejection| PushError::not_found(rejection.body_text()))
}

/// A store error, with `NotFound` told as `message`.
pub(crate) fn or_not_found(message: &'static str) -> impl Fn(StoreError) -> PushError {
    move |error| match error {
        StoreError::NotFound => PushError::not_found(message),
        other => other.into(),
    }
}

const USER_NOT_FOUND: &str = "user not found";

/// `user_id` when it has the form of a user ID; anything else names no user, so → 404.
fn user_id_of(path: &str) -> Result<&str, PushError> {
    ids::parse_type_id(ids::USER, path)
        .map(|_| path)
        .ok_or_else(|| PushError::not_found(USER_NOT_FOUND))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<Value>, PushError> {
    let query = query_map(raw)?;
    let list = ListQuery::parse(&state.pages, &query, &[])?;
    let page = state
        .store
        .list_users(&caller.account_sid, &list.page)
        .await?;
    let items = page.items.iter().map(user_json).collect();
    Ok(list.body(&state.pages, "users", items, page.next.as_ref()))
}

async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Value>, PushError> {
    let user_id = path_param(path)?;
    let user = state
        .store
        .get_user(&caller.account_sid, user_id_of(&user_id)?)
        .await
        .map_err(or_not_found(USER_NOT_FOUND))?;
    Ok(axum::Json(user_json(&user)))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, PushError> {
    let user_id = path_param(path)?;
    state
        .store
        .delete_user(&caller.account_sid, user_id_of(&user_id)?)
        .await
        .map_err(or_not_found(USER_NOT_FOUND))?;
    Ok(super::accepted(&state, "Users", &user_id))
}
