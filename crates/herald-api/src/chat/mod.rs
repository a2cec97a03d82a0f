//! The Chat API face (Twilio Programmable Chat v2): form-encoded requests, snake_case answers.

mod credentials;

use axum::Router;

use crate::AppState;

/// Routes relative to `/v2`.
pub fn router() -> Router<AppState> {
    Router::new().merge(credentials::routes())
}
