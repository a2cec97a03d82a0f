//! The Push API face: one file per resource, each with its own `routes()`.

mod apps;
mod credentials;
mod device_registrations;
mod events;
mod notifications;
mod operations;
mod query;
pub(crate) mod send;
mod users;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;

/// Routes relative to `/v1/PushNotifications` (and `/preview/PushNotifications`).
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(credentials::routes())
        .merge(apps::routes())
        .merge(device_registrations::routes())
        .merge(users::routes())
        .merge(notifications::routes())
        .merge(operations::routes())
        .merge(events::routes())
}

/// The answer to a Push API write: 202 with `{"resourceId", "resourceLocation"}` and `Location`.
pub fn accepted(state: &AppState, collection: &str, id: &str) -> Response {
    let location = state.push_url(collection, id);
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "resourceId": id, "resourceLocation": location })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}
