//! herald-api
