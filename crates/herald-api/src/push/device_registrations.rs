//! Push API: device registrations — one user's devices in one app.
//!
//! `POST /DeviceRegistrations` registers a device, `GET /DeviceRegistrations?userId=` lists a
//! user's registrations, `GET` / `DELETE /DeviceRegistrations/{id}` fetch and delete one, and
//! `DELETE /DeviceRegistrations/{id}/Devices/{token}` (extension) removes one device. The rules
//! (new users, moves, reactivation) live in the store; see `herald_store::devices`.

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{delete, get};
use herald_core::time::format_rfc3339;
use herald_core::{AppName, DeviceToken, Provider, ids};
use herald_store::devices::{Device, DeviceRegistration, DeviceRemoval, RegisterDevice};
use serde_json::{Value, json};

use super::credentials::{or_not_found, path_param};
use super::query::{list_params, param};
use crate::AppState;
use crate::auth::Caller;
use crate::errors::{FieldErrors, PushError};
use crate::json::{Fields, PushJson};
use crate::pagination::ListQuery;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/DeviceRegistrations", get(list).post(register))
        .route(
            "/DeviceRegistrations/{registration_id}",
            get(fetch).delete(remove),
        )
        .route(
            "/DeviceRegistrations/{registration_id}/Devices/{token}",
            delete(remove_device),
        )
}

const COLLECTION: &str = "DeviceRegistrations";
const LIST_FILTERS: &[&str] = &["userId", "appName"];
const REGISTRATION_NOT_FOUND: &str = "device registration not found";

fn device_json(device: &Device) -> Value {
    let mut json = json!({
        "token": device.token,
        "provider": device.provider.as_str(),
        "status": device.status.as_str(),
        "createdAt": format_rfc3339(device.created_at),
    });
    if let Some(at) = device.invalidated_at {
        json["invalidatedAt"] = json!(format_rfc3339(at));
    }
    if let Some(error) = &device.last_error {
        json["lastError"] = error.clone();
    }
    json
}

fn registration_json(state: &AppState, registration: &DeviceRegistration) -> Value {
    json!({
        "id": registration.id,
        "appName": registration.app_name,
        "userId": registration.user_id,
        "devices": registration.devices.iter().map(device_json).collect::<Vec<_>>(),
        "related": [{
            "name": "user",
            "id": registration.user_id,
            "uri": state.push_url("Users", &registration.user_id),
        }],
        "createdAt": format_rfc3339(registration.created_at),
        "updatedAt": format_rfc3339(registration.updated_at),
    })
}

/// Parses `text` (when there is one) with `parse`, recording a failure at `path`.
fn parse_field<'a, T>(
    errors: &mut FieldErrors,
    path: &str,
    text: Option<&'a str>,
    parse: impl FnOnce(&'a str) -> Result<T, String>,
) -> Option<T> {
    match parse(text?) {
        Ok(value) => Some(value),
        Err(message) => {
            errors.add(path, message);
            None
        }
    }
}

fn user_id_format(text: &str) -> Result<&str, String> {
    ids::parse_type_id(ids::USER, text)
        .map(|_| text)
        .ok_or_else(|| format!("userId must be a user ID ({}_...)", ids::USER))
}

/// `id` when it has the form of a registration ID; anything else names none, so → 404.
fn registration_id_of(id: &str) -> Result<&str, PushError> {
    ids::parse_type_id(ids::DEVICE_REGISTRATION, id)
        .map(|_| id)
        .ok_or_else(|| PushError::not_found(REGISTRATION_NOT_FOUND))
}

async fn register(
    State(state): State<AppState>,
    caller: Caller,
    PushJson(body): PushJson,
) -> Result<Response, PushError> {
    let fields = Fields::new(&body, "");
    let mut errors = FieldErrors::new();
    fields.deny_unknown(&["appName", "token", "provider", "userId"], &mut errors);
    let app_name = fields.required_string("appName", &mut errors);
    let app_name = parse_field(&mut errors, "appName", app_name, AppName::parse);
    let token = fields.required_string("token", &mut errors);
    let token = parse_field(&mut errors, "token", token, DeviceToken::parse);
    let provider = fields.required_string("provider", &mut errors);
    let provider = parse_field(&mut errors, "provider", provider, Provider::parse);
    let user_id = fields.string("userId", &mut errors);
    let user_id = parse_field(&mut errors, "userId", user_id, user_id_format);
    let (Some(app_name), Some(token), Some(provider)) = (app_name, token, provider) else {
        return Err(errors.into());
    };
    errors.finish(())?;

    let registered = state
        .store
        .register_device(
            &caller.account_sid,
            &RegisterDevice {
                app_name: &app_name,
                provider,
                token: &token,
                user_id,
            },
        )
        .await?;
    Ok(super::accepted(
        &state,
        COLLECTION,
        &registered.registration_id,
    ))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<Value>, PushError> {
    let query = list_params(raw, LIST_FILTERS)?;
    let mut errors = FieldErrors::new();
    let user_id = param(&query, "userId");
    if user_id.is_none() {
        errors.add("userId", "userId is required");
    }
    let user_id = parse_field(&mut errors, "userId", user_id, user_id_format);
    let app_name = param(&query, "appName");
    let app_name = parse_field(&mut errors, "appName", app_name, AppName::parse);
    let list = match ListQuery::parse(&state.pages, &query, LIST_FILTERS) {
        Ok(list) if errors.is_empty() => list,
        Ok(_) => return Err(errors.into()),
        Err(page_error) => {
            let mut error: PushError = errors.into();
            error.errors.extend(page_error.errors);
            return Err(error);
        }
    };
    let user_id = user_id.expect("no errors, so userId was given");

    let page = state
        .store
        .list_device_registrations(&caller.account_sid, user_id, app_name.as_ref(), &list.page)
        .await?;
    let items = page
        .items
        .iter()
        .map(|registration| registration_json(&state, registration))
        .collect();
    Ok(list.body(
        &state.pages,
        "deviceRegistrations",
        items,
        page.next.as_ref(),
    ))
}

async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Value>, PushError> {
    let id = path_param(path, REGISTRATION_NOT_FOUND)?;
    let registration = state
        .store
        .get_device_registration(&caller.account_sid, registration_id_of(&id)?)
        .await
        .map_err(or_not_found(REGISTRATION_NOT_FOUND))?;
    Ok(axum::Json(registration_json(&state, &registration)))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, PushError> {
    let id = path_param(path, REGISTRATION_NOT_FOUND)?;
    state
        .store
        .delete_device_registration(&caller.account_sid, registration_id_of(&id)?)
        .await
        .map_err(or_not_found(REGISTRATION_NOT_FOUND))?;
    Ok(super::accepted(&state, COLLECTION, &id))
}

/// Removes the device(s) with `token` (percent-decoded from the path) from the registration;
/// removing the last one deletes the registration.
async fn remove_device(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, PushError> {
    let (id, token) = path
        .map(|Path(segments)| segments)
        .map_err(|_| PushError::not_found(REGISTRATION_NOT_FOUND))?;
    let removal = state
        .store
        .remove_device(&caller.account_sid, registration_id_of(&id)?, &token)
        .await
        .map_err(or_not_found(REGISTRATION_NOT_FOUND))?;
    match removal {
        DeviceRemoval::Removed { .. } => Ok(super::accepted(&state, COLLECTION, &id)),
        DeviceRemoval::NoSuchDevice => Err(PushError::not_found(
            "the device registration has no device with this token",
        )),
    }
}
