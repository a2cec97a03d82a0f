//! `POST /v1/PushNotifications`: validate a send request, resolve its sender, check payload sizes,
//! store it as an operation (idempotently with `Idempotency-Key`) and answer 202.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::credential_content::PushCredentialType;
use herald_core::ids;
use herald_core::send::{self, Content, Recipient, SendRequest, Sender, try_render};
use herald_core::time::now_ms;
use herald_core::{AppName, Provider};
use herald_providers::{APNS_MAX_PAYLOAD, FCM_MAX_PAYLOAD, PushMessage};
use herald_store::StoreError;
use herald_store::chat_credentials::ChatCredentialType;
use herald_store::delivery::{Idempotency, NewOperation};
use ring::digest::{SHA256, digest};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::errors::{FieldErrors, PushError};
use crate::json::{PushJsonBytes, json_object};

/// The most problems listed in one 400 (a list of 10,000 bad tokens would otherwise make a
/// megabyte of errors); the last entry then says how many more there were.
pub const MAX_REPORTED_PROBLEMS: usize = 100;
/// The longest `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    PushJsonBytes(bytes): PushJsonBytes,
) -> Result<Response, PushError> {
    let account = caller.account_sid.as_str();
    let mut errors = FieldErrors::new();
    let key = idempotency_key(&headers, &mut errors);
    let now = now_ms();
    // A well-formed body is read straight into the request; any other (and one with an
    // Idempotency-Key, whose hash is of the parsed body) is parsed into a `Value` first, which
    // words every problem.
    let (request, hash) = match key.is_none().then(|| send::parse_valid(&bytes, now)) {
        Some(Some(request)) => (Some(request), None),
        _ => {
            let body = Value::Object(json_object(&bytes)?);
            let hash = key.is_some().then(|| request_hash(&body));
            (parse_body(&body, now, &mut errors), hash)
        }
    };
    let Some(request) = request else {
        return Err(errors.into());
    };
    errors.finish(())?;

    let providers = resolve_sender(&state, account, &request.from).await?;
    check_payloads(&request, &providers)?;

    let idempotency = key
        .zip(hash)
        .map(|(key, request_hash)| Idempotency { key, request_hash });
    let created = state
        .store
        .create_operation(NewOperation {
            account_sid: account.to_owned(),
            request,
            idempotency,
        })
        .await
        .map_err(|error| match error {
            StoreError::Conflict(_) => {
                let mut answer = PushError::from(error);
                answer.errors[0].message = "Idempotency-Key was used with another request body \
                     in the last 24 hours; use a new key for a new request"
                    .into();
                answer.errors[0].context = Some("Idempotency-Key".into());
                answer
            }
            other => other.into(),
        })?;
    if !created.replayed {
        state.wake_delivery.notify_one();
    }
    Ok(operation_accepted(&state, &created.id))
}

/// The request `body` makes, or `None` with its problems (the first hundred) in `errors`.
fn parse_body(body: &Value, now: i64, errors: &mut FieldErrors) -> Option<SendRequest> {
    match send::parse(body, now) {
        Ok(request) => Some(request),
        Err(problems) => {
            let total = problems.len();
            for (path, message) in problems.into_iter().take(MAX_REPORTED_PROBLEMS) {
                errors.add(path, message);
            }
            if total > MAX_REPORTED_PROBLEMS {
                errors.add(
                    "",
                    format!("... and {} more problems", total - MAX_REPORTED_PROBLEMS),
                );
            }
            None
        }
    }
}

/// 202 `{"operationId", "operationLocation"}` with `Location` (a send and a cancel answer this).
pub fn operation_accepted(state: &AppState, id: &str) -> Response {
    let location = state.push_url("Operations", id);
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "operationId": id, "operationLocation": location })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn idempotency_key(headers: &HeaderMap, errors: &mut FieldErrors) -> Option<String> {
    let value = headers.get("idempotency-key")?;
    match value.to_str() {
        Ok(text)
            if !text.trim().is_empty() && text.chars().count() <= MAX_IDEMPOTENCY_KEY_CHARS =>
        {
            Some(text.to_owned())
        }
        _ => {
            errors.add(
                "Idempotency-Key",
                format!(
                    "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters"
                ),
            );
            None
        }
    }
}

/// SHA-256 (hex) of the body as canonical JSON: object keys sorted, no whitespace. Two bodies
/// with the same parsed JSON hash alike whatever their formatting and key order.
pub fn request_hash(body: &Value) -> String {
    let mut text = String::new();
    canonical(body, &mut text);
    hex(digest(&SHA256, text.as_bytes()).as_ref())
}

fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The providers of apps found recently, so that a busy sender does not cost an app read per
/// send (it was ~9 % of `herald serve`'s CPU in the accept benchmark). Only apps found are kept,
/// for [`APP_SENDER_TTL`]; this node's credential and app writes clear the cache, so here a
/// change counts for the sends that start after it, and another node's within the TTL: the same
/// window as a credential deleted just after a send was accepted (its recipients then end
/// unaddressable at planning).
#[derive(Default)]
pub(crate) struct AppSenderCache {
    inner: Mutex<AppSenders>,
}

#[derive(Default)]
struct AppSenders {
    /// Account → app name → providers, and when they were read. (Nested, so that a lookup
    /// borrows its keys: one per send.)
    entries: HashMap<String, HashMap<String, (SenderProviders, Instant)>>,
    /// How many apps `entries` holds.
    apps: usize,
    /// Bumped by every clear: a read that started before a clear is not stored after it.
    generation: u64,
}

/// How long an app's providers are trusted without reading them again.
pub(crate) const APP_SENDER_TTL: Duration = Duration::from_secs(1);

/// How many apps the cache holds at most.
const APP_SENDER_ENTRIES: usize = 10_000;

impl AppSenderCache {
    /// The app's providers if known, else the generation to hand [`AppSenderCache::put`].
    fn get(&self, account: &str, app: &str) -> Result<SenderProviders, u64> {
        let cache = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match cache.entries.get(account).and_then(|apps| apps.get(app)) {
            Some((providers, at)) if at.elapsed() < APP_SENDER_TTL => Ok(*providers),
            _ => Err(cache.generation),
        }
    }

    /// Keeps what a read begun at `generation` found, unless the cache was cleared meanwhile.
    fn put(&self, account: &str, app: &str, providers: SenderProviders, generation: u64) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let cache = &mut *guard;
        if cache.generation != generation {
            return;
        }
        if cache.apps >= APP_SENDER_ENTRIES {
            for apps in cache.entries.values_mut() {
                apps.retain(|_, (_, at)| at.elapsed() < APP_SENDER_TTL);
            }
            cache.entries.retain(|_, apps| !apps.is_empty());
            cache.apps = cache.entries.values().map(HashMap::len).sum();
            if cache.apps >= APP_SENDER_ENTRIES {
                cache.entries.clear();
                cache.apps = 0;
            }
        }
        let apps = cache.entries.entry(account.to_owned()).or_default();
        if apps
            .insert(app.to_owned(), (providers, Instant::now()))
            .is_none()
        {
            cache.apps += 1;
        }
    }

    /// Forgets every app (after a credential or app write on this node).
    pub(crate) fn clear(&self) {
        let mut cache = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        cache.entries.clear();
        cache.apps = 0;
        cache.generation += 1;
    }
}

/// Which providers the sender has a credential for.
#[derive(Debug, Clone, Copy, Default)]
pub struct SenderProviders {
    pub apn: bool,
    pub fcm: bool,
}

impl SenderProviders {
    fn has(self, provider: Provider) -> bool {
        match provider {
            Provider::Apn => self.apn,
            Provider::Fcm => self.fcm,
        }
    }
}

fn app_providers(defaults: &[(PushCredentialType, String)]) -> SenderProviders {
    let mut providers = SenderProviders::default();
    for (kind, _) in defaults {
        match kind {
            PushCredentialType::Apn | PushCredentialType::ApnSandbox => providers.apn = true,
            PushCredentialType::Fcm => providers.fcm = true,
        }
    }
    providers
}

/// Resolves `from` against the store: the app or credentials must exist in the account and fit
/// their slot. Problems → 400 naming `from`, `from.appName`, `from.apn` or `from.fcm`.
async fn resolve_sender(
    state: &AppState,
    account: &str,
    from: &Sender,
) -> Result<SenderProviders, PushError> {
    match from {
        Sender::App { app_name } => app_sender(state, account, app_name, "from.appName").await,
        Sender::AccountDefault => match state.store.account_default_app(account).await? {
            Some(app_name) => app_sender(state, account, &app_name, "from").await,
            None => Err(PushError::invalid(
                "from",
                "the account has no app yet, so a send without from has nothing to send with: \
                 create a credential first (its app becomes the default app)",
            )),
        },
        Sender::Credentials { apn, fcm } => {
            let mut errors = FieldErrors::new();
            let mut apps: Vec<(&str, AppName)> = Vec::new();
            let mut providers = SenderProviders::default();
            for (slot, id, provider) in [
                ("from.apn", apn, Provider::Apn),
                ("from.fcm", fcm, Provider::Fcm),
            ] {
                let Some(id) = id else { continue };
                match credential_slot(state, account, id, provider).await? {
                    Ok(app) => {
                        match provider {
                            Provider::Apn => providers.apn = true,
                            Provider::Fcm => providers.fcm = true,
                        }
                        if let Some(app) = app {
                            apps.push((slot, app));
                        }
                    }
                    Err(message) => errors.add(slot, message),
                }
            }
            if let [(_, first), (_, second)] = apps.as_slice()
                && first != second
            {
                errors.add(
                    "from",
                    format!(
                        "from.apn belongs to app {first:?} and from.fcm to app {second:?}: named \
                         credentials must belong to one app, in which user recipients are found"
                    ),
                );
            }
            errors.finish(providers)
        }
    }
}

async fn app_sender(
    state: &AppState,
    account: &str,
    app_name: &AppName,
    context: &str,
) -> Result<SenderProviders, PushError> {
    let generation = match state.app_senders.get(account, app_name.as_str()) {
        Ok(providers) => return Ok(providers),
        Err(generation) => generation,
    };
    match state.store.get_app(account, app_name).await {
        Ok(app) => {
            let providers = app_providers(&app.default_credentials);
            state
                .app_senders
                .put(account, app_name.as_str(), providers, generation);
            Ok(providers)
        }
        Err(StoreError::NotFound) => Err(PushError::invalid(
            context,
            format!("app {:?} does not exist", app_name.as_str()),
        )),
        Err(other) => Err(other.into()),
    }
}

/// Checks credential `id` for the `provider` slot. `Ok(Ok(app))`: usable (Push credentials name
/// their app); `Ok(Err(message))`: a problem to report at the slot.
async fn credential_slot(
    state: &AppState,
    account: &str,
    id: &str,
    provider: Provider,
) -> Result<Result<Option<AppName>, String>, PushError> {
    let slot = provider.as_str();
    if ids::is_sid(ids::CHAT_CREDENTIAL_SID, id) {
        let credential = match state.store.get_chat_credential(account, id).await {
            Ok(credential) => credential,
            Err(StoreError::NotFound) => return Ok(Err(format!("credential {id} does not exist"))),
            Err(other) => return Err(other.into()),
        };
        let fits = match provider {
            Provider::Apn => credential.credential_type == ChatCredentialType::Apn,
            Provider::Fcm => matches!(
                credential.credential_type,
                ChatCredentialType::Fcm | ChatCredentialType::Gcm
            ),
        };
        if !fits {
            return Ok(Err(format!(
                "credential {id} is a Chat {} credential, which cannot send to {slot} devices",
                credential.credential_type
            )));
        }
        return match state.store.get_chat_credential_secret(account, id).await {
            Ok(_) => Ok(Ok(None)),
            Err(StoreError::Invalid { message, .. }) => {
                Ok(Err(format!("credential {id} cannot send yet: {message}")))
            }
            Err(StoreError::NotFound) => Ok(Err(format!("credential {id} does not exist"))),
            Err(other) => Err(other.into()),
        };
    }
    let credential = match state.store.get_credential(account, id).await {
        Ok(credential) => credential,
        Err(StoreError::NotFound) => return Ok(Err(format!("credential {id} does not exist"))),
        Err(other) => return Err(other.into()),
    };
    let fits = match provider {
        Provider::Apn => matches!(
            credential.credential_type,
            PushCredentialType::Apn | PushCredentialType::ApnSandbox
        ),
        Provider::Fcm => credential.credential_type == PushCredentialType::Fcm,
    };
    if fits {
        Ok(Ok(Some(credential.app_name)))
    } else {
        Ok(Err(format!(
            "credential {id} is of type {}, which cannot send to {slot} devices",
            credential.credential_type.as_str()
        )))
    }
}

/// The provider-neutral message of `request` with its title and body as given (`None`) or
/// rendered with a recipient's variables.
pub fn push_message(
    request: &SendRequest,
    title: Option<String>,
    body: Option<String>,
) -> PushMessage {
    let Content {
        data,
        image,
        badge,
        category,
        click_action,
        ..
    } = &request.content;
    PushMessage {
        title,
        body,
        data: data.clone(),
        image: image.clone(),
        badge: *badge,
        category: category.clone(),
        click_action: click_action.clone(),
        sound: request.sound.clone(),
        silent: request.silent,
        priority: match request.priority {
            send::Priority::High => herald_providers::Priority::High,
            send::Priority::Low => herald_providers::Priority::Low,
        },
        ttl_seconds: request.ttl,
        collapse_key: request.collapse_key.clone(),
        apn_override: request.apn.clone(),
        fcm_override: request.fcm.clone(),
        ..PushMessage::new()
    }
}

/// `(APNs problem, FCM problem)` of one rendered message.
type Measured = (Option<String>, Option<String>);

/// What is over a provider's limit in `message`: `(APNs problem, FCM problem)`, measured only
/// for the providers asked for.
fn measure(message: &PushMessage, apn: bool, fcm: bool) -> Measured {
    let apn_problem = apn
        .then(|| herald_providers::apns_payload(message).len())
        .filter(|size| *size > APNS_MAX_PAYLOAD)
        .map(|size| {
            format!(
                "the APNs payload would be {size} bytes, over APNs' limit of {APNS_MAX_PAYLOAD}"
            )
        });
    let fcm_problem = fcm
        .then(|| herald_providers::fcm_payload_size(message))
        .filter(|size| *size > FCM_MAX_PAYLOAD)
        .map(|size| {
            format!(
                "the FCM payload (notification + data) would be {size} bytes, over FCM's limit \
                 of {FCM_MAX_PAYLOAD}"
            )
        });
    (apn_problem, fcm_problem)
}

/// Renders the payload each recipient would get (once when the request is not templated) and
/// refuses the request when one is over its provider's limit or its template cannot be rendered
/// with that recipient's variables.
fn check_payloads(request: &SendRequest, providers: &SenderProviders) -> Result<(), PushError> {
    // The providers a recipient may be reached through: a device's own, a user's every one the
    // sender has a credential for.
    let reach = |recipient: &Recipient| -> (bool, bool) {
        match recipient {
            Recipient::Device { provider, .. } => (
                *provider == Provider::Apn && providers.has(Provider::Apn),
                *provider == Provider::Fcm && providers.has(Provider::Fcm),
            ),
            Recipient::User { .. } => (providers.apn, providers.fcm),
        }
    };
    let mut errors = FieldErrors::new();
    if !request.templated {
        let (apn, fcm) = request
            .to
            .iter()
            .map(reach)
            .fold((false, false), |a, b| (a.0 || b.0, a.1 || b.1));
        let message = push_message(
            request,
            request.content.title.clone(),
            request.content.body.clone(),
        );
        let (apn_problem, fcm_problem) = measure(&message, apn, fcm);
        for problem in apn_problem.into_iter().chain(fcm_problem) {
            errors.add("content", problem);
        }
        return errors.finish(());
    }
    let mut reported = 0usize;
    let mut more = 0usize;
    // Recipients without variables all render alike: render and measure that once, for both
    // providers, and pick what applies to each.
    let mut plain: Option<Result<Measured, String>> = None;
    for (i, recipient) in request.to.iter().enumerate() {
        let (apn, fcm) = reach(recipient);
        let variables = recipient.variables();
        let measured = if variables.is_empty() {
            plain
                .get_or_insert_with(|| {
                    render_recipient(request, variables)
                        .map(|message| measure(&message, true, true))
                })
                .clone()
        } else {
            render_recipient(request, variables).map(|message| measure(&message, apn, fcm))
        };
        let problems: Vec<String> = match measured {
            Err(problem) => vec![problem],
            Ok((apn_problem, fcm_problem)) => apn_problem
                .filter(|_| apn)
                .into_iter()
                .chain(fcm_problem.filter(|_| fcm))
                .collect(),
        };
        for problem in problems {
            if reported < MAX_REPORTED_PROBLEMS {
                errors.add(format!("to[{i}]"), format!("for this recipient {problem}"));
                reported += 1;
            } else {
                more += 1;
            }
        }
    }
    if more > 0 {
        errors.add(
            "to",
            format!("... and {more} more recipients with problems"),
        );
    }
    errors.finish(())
}

fn render_recipient(
    request: &SendRequest,
    variables: &Map<String, Value>,
) -> Result<PushMessage, String> {
    let render = |field: &str, text: &Option<String>| -> Result<Option<String>, String> {
        text.as_deref()
            .map(|t| try_render(t, variables).map_err(|e| format!("content.{field}: {e}")))
            .transpose()
    };
    let title = render("title", &request.content.title)?;
    let body = render("body", &request.content.body)?;
    Ok(push_message(request, title, body))
}

#[cfg(test)]
mod app_sender_cache_tests {
    use super::*;

    /// A read that began before a clear is not kept after it (it may have seen the app as it was
    /// before the write that cleared the cache); one that began after is.
    #[test]
    fn a_read_from_before_a_clear_is_not_kept() {
        let cache = AppSenderCache::default();
        let apn_only = SenderProviders {
            apn: true,
            fcm: false,
        };
        let before = cache.get("AC1", "shop").unwrap_err();
        cache.clear();
        cache.put("AC1", "shop", apn_only, before);
        let after = cache.get("AC1", "shop").unwrap_err();
        assert_ne!(before, after);
        cache.put("AC1", "shop", apn_only, after);
        assert!(cache.get("AC1", "shop").is_ok_and(|p| p.apn && !p.fcm));
        // Per account and app.
        assert!(cache.get("AC2", "shop").is_err());
        assert!(cache.get("AC1", "games").is_err());
    }
}
