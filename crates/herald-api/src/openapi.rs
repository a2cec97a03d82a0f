//! `GET /openapi.json`: the OpenAPI 3 description of the Push API, kept in `openapi.json` beside
//! this crate's `Cargo.toml`; a test checks it against the router.

use axum::http::header;
use axum::response::IntoResponse;

pub const DOCUMENT: &str = include_str!("../openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
