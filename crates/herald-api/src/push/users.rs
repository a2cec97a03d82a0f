//! Push API: users — `GET /Users`, `GET /Users/{userId}`, `DELETE /Users/{userId}`. Users are
//! made by registering a device without a `userId` (see `device_registrations.rs`).

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use herald_core::ids;
use herald_core::time::format_rfc3339;
use herald_store::users::User;
use serde_json::{Value, json};

use super::credentials::{or_not_found, path_param};
use super::query::list_params;
use crate::AppState;
use crate::auth::Caller;
use crate::errors::PushError;
use crate::pagination::ListQuery;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/Users", get(list))
        .route("/Users/{user_id}", get(fetch).delete(remove))
}

fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "createdAt": format_rfc3339(user.created_at),
        "updatedAt": format_rfc3339(user.updated_at),
        "deletedAt": null,
    })
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
    let query = list_params(raw, &[])?;
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
    let user_id = path_param(path, USER_NOT_FOUND)?;
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
    let user_id = path_param(path, USER_NOT_FOUND)?;
    state
        .store
        .delete_user(&caller.account_sid, user_id_of(&user_id)?)
        .await
        .map_err(or_not_found(USER_NOT_FOUND))?;
    Ok(super::accepted(&state, "Users", &user_id))
}
