//! Push API: device_registrations (to be filled in by the resource's owner).

use axum::Router;

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
