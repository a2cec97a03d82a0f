//! Chat credentials: the Twilio Programmable Chat v2 Credential resource (`/v2/Credentials`).
//!
//! They live in the `credentials` table with `face = 'chat'`, a `CR` + 32 hex sid, a type `apn`,
//! `gcm` or `fcm`, an optional friendly name, a sandbox flag and no app. Every query here filters
//! `face = 'chat'`, so Push credentials are invisible to this module (and this module's rows to
//! the Push face's queries, which filter `face = 'push'`).
//!
//! Chat credentials are managed piecemeal, as on Twilio: a create may give only the `Type`, an
//! update may set the `Certificate` and a later one the `PrivateKey`. So the secret column holds
//! a sealed JSON of the Chat fields given so far ([`ChatSecretFields`]), and
//! [`ChatCredentialStore::get_chat_credential_secret`] turns a complete credential into the
//! [`CredentialSecret`] the delivery engine sends with.
//!
//! Validation is Twilio's (see `herald_core::credential_content`'s Chat functions): the
//! `Certificate` and `PrivateKey` must parse as PEM and, once both are known (given now or stored
//! before), match; `ApiKey` and `Secret` must not be empty; a `Secret` that is JSON must be a
//! usable service account. Nothing else about the content is checked (expired and self-signed
//! certificates are accepted), so credentials move over from Twilio as they are. On top of that
//! Herald refuses fields that do not belong to the credential's type (an `ApiKey` on an `apn`
//! credential would otherwise be dropped silently).

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use herald_core::credential_content::{
    ChatApnContent, ContentError, CredentialFacts, CredentialSecret, FcmSecretKind,
    classify_fcm_secret, validate_chat_apn, validate_chat_gcm_api_key,
};
use herald_core::ids;
use herald_core::time::now_ms;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Cursor, Result, SqlStore, StoreError};

/// The most characters a `FriendlyName` may have (Twilio's limit).
pub const MAX_FRIENDLY_NAME_CHARS: usize = 64;

/// The `face` column value of Chat rows.
const FACE: &str = "chat";

/// A Chat credential's `Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatCredentialType {
    /// Apple Push Notification service, certificate auth (`Certificate`, `PrivateKey`,
    /// `Sandbox`).
    Apn,
    /// Google Cloud Messaging: a legacy FCM server key (`ApiKey`).
    Gcm,
    /// Firebase Cloud Messaging (`Secret`: a server key or a service-account JSON).
    Fcm,
}

impl ChatCredentialType {
    /// The API spelling: `apn`, `gcm`, `fcm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apn => "apn",
            Self::Gcm => "gcm",
            Self::Fcm => "fcm",
        }
    }
}

impl fmt::Display for ChatCredentialType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of [`ChatCredentialType::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Type must be one of apn, gcm, fcm")]
pub struct UnknownChatCredentialType;

impl FromStr for ChatCredentialType {
    type Err = UnknownChatCredentialType;

    /// `apn`, `gcm` or `fcm`, in any letter case (the helper libraries send lower case).
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "apn" => Ok(Self::Apn),
            "gcm" => Ok(Self::Gcm),
            "fcm" => Ok(Self::Fcm),
            _ => Err(UnknownChatCredentialType),
        }
    }
}

/// A Chat credential as the API shows it. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatCredential {
    /// `CR` + 32 lowercase hex digits.
    pub sid: String,
    pub account_sid: String,
    pub credential_type: ChatCredentialType,
    pub friendly_name: Option<String>,
    /// `apn` only: send to the APNs development endpoint.
    pub sandbox: bool,
    /// Non-secret facts about the content given so far (an `apn` certificate's topic and expiry,
    /// an `fcm` service account's project), for operators.
    pub facts: Option<CredentialFacts>,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// The fields of a create or an update, as given (`None`: not given). On a create every field
/// is optional (Twilio's create needs only the `Type`); on an update, fields left out keep their
/// value. The secret fields are raw text as the form carries it (PEM for `Certificate` and
/// `PrivateKey`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChatCredentialInput {
    /// `Some("")` clears the name.
    pub friendly_name: Option<String>,
    pub sandbox: Option<bool>,
    pub certificate: Option<String>,
    pub private_key: Option<String>,
    pub api_key: Option<String>,
    pub secret: Option<String>,
}

impl fmt::Debug for ChatCredentialInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let given = |v: &Option<String>| v.as_ref().map(|_| "<given>");
        f.debug_struct("ChatCredentialInput")
            .field("friendly_name", &self.friendly_name)
            .field("sandbox", &self.sandbox)
            .field("certificate", &given(&self.certificate))
            .field("private_key", &given(&self.private_key))
            .field("api_key", &given(&self.api_key))
            .field("secret", &given(&self.secret))
            .finish()
    }
}

/// One problem with a [`ChatCredentialInput`]: the form field and a sentence naming it. Never
/// quotes secret material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatInputProblem {
    /// The form field: `FriendlyName`, `Sandbox`, `Certificate`, `PrivateKey`, `ApiKey`,
    /// `Secret`.
    pub field: String,
    pub message: String,
    /// Whether the problem is with credential content (Twilio code 52005) rather than a plain
    /// parameter (20001).
    pub content: bool,
}

impl ChatInputProblem {
    fn parameter(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
            content: false,
        }
    }

    fn content(error: ContentError) -> Self {
        let message = if error.message.starts_with(&error.path) {
            error.message
        } else {
            format!("{}: {}", error.path, error.message)
        };
        Self {
            field: error.path,
            message,
            content: true,
        }
    }
}

/// The problems joined into one message, for a single error answer.
pub fn join_problems(problems: &[ChatInputProblem]) -> String {
    problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

fn problems_error(problems: Vec<ChatInputProblem>) -> StoreError {
    StoreError::Invalid {
        field: problems.first().map(|p| p.field.clone()),
        message: join_problems(&problems),
    }
}

/// The Chat fields given so far, sealed in the `secret` column. Herald's own format (not a
/// [`CredentialSecret`]): a credential may be incomplete. Values are stored normalized (PEM
/// canonical, keys trimmed).
#[derive(Default, Clone, Serialize, Deserialize)]
struct ChatSecretFields {
    v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

const FIELDS_VERSION: u32 = 1;

impl ChatSecretFields {
    fn is_empty(&self) -> bool {
        self.certificate.is_none()
            && self.private_key.is_none()
            && self.api_key.is_none()
            && self.secret.is_none()
    }
}

/// What a valid input changes: the merged fields and the facts they give.
struct Merged {
    fields: ChatSecretFields,
    facts: Option<CredentialFacts>,
    /// Whether any secret field was given (the content changed).
    content_changed: bool,
}

/// Checks `input` for a new credential of type `kind` and returns every problem found: fields
/// that do not belong to the type, a `FriendlyName` over 64 characters, and the content rules of
/// the module docs (an update is checked again against the stored content by the store).
pub fn check_chat_input(
    kind: ChatCredentialType,
    input: &ChatCredentialInput,
) -> Vec<ChatInputProblem> {
    match merge(kind, input, &ChatSecretFields::default()) {
        Ok(_) => Vec::new(),
        Err(problems) => problems,
    }
}

fn merge(
    kind: ChatCredentialType,
    input: &ChatCredentialInput,
    stored: &ChatSecretFields,
) -> std::result::Result<Merged, Vec<ChatInputProblem>> {
    let mut problems = Vec::new();
    if let Some(name) = &input.friendly_name {
        let count = name.chars().count();
        if count > MAX_FRIENDLY_NAME_CHARS {
            problems.push(ChatInputProblem::parameter(
                "FriendlyName",
                format!(
                    "FriendlyName must be at most {MAX_FRIENDLY_NAME_CHARS} characters (got {count})"
                ),
            ));
        }
    }
    let belongs = |field: &str, owner: ChatCredentialType| -> Option<ChatInputProblem> {
        (kind != owner).then(|| {
            ChatInputProblem::parameter(
                field,
                format!(
                    "{field} applies to {owner} credentials only; this credential's Type is {kind}"
                ),
            )
        })
    };
    for (field, given, owner) in [
        (
            "Certificate",
            input.certificate.is_some(),
            ChatCredentialType::Apn,
        ),
        (
            "PrivateKey",
            input.private_key.is_some(),
            ChatCredentialType::Apn,
        ),
        ("ApiKey", input.api_key.is_some(), ChatCredentialType::Gcm),
        ("Secret", input.secret.is_some(), ChatCredentialType::Fcm),
    ] {
        if given {
            problems.extend(belongs(field, owner));
        }
    }
    if input.sandbox == Some(true) && kind != ChatCredentialType::Apn {
        problems.extend(belongs("Sandbox", ChatCredentialType::Apn));
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let mut fields = stored.clone();
    fields.v = FIELDS_VERSION;
    let mut facts = None;
    let content_changed = input.certificate.is_some()
        || input.private_key.is_some()
        || input.api_key.is_some()
        || input.secret.is_some();
    match kind {
        ChatCredentialType::Apn => {
            // Check what was given on its own first, so a broken value is blamed on its field.
            let given =
                validate_chat_apn(input.certificate.as_deref(), input.private_key.as_deref())
                    .map_err(|errors| {
                        errors
                            .into_iter()
                            .map(ChatInputProblem::content)
                            .collect::<Vec<_>>()
                    })?;
            let certificate = given.certificate_pem.or(stored.certificate.clone());
            let private_key = given.private_key_pem.or(stored.private_key.clone());
            // Then the pair, when one half is new and the other was stored before.
            let pair = validate_chat_apn(certificate.as_deref(), private_key.as_deref()).map_err(
                |errors| {
                    errors
                        .into_iter()
                        .map(|e| stored_mismatch(e, input))
                        .collect::<Vec<_>>()
                },
            )?;
            facts = apn_facts(&pair);
            fields.certificate = certificate;
            fields.private_key = private_key;
        }
        ChatCredentialType::Gcm => {
            if let Some(api_key) = &input.api_key {
                match validate_chat_gcm_api_key(api_key) {
                    Ok(CredentialSecret::FcmServerKey { key }) => fields.api_key = Some(key),
                    Ok(_) => unreachable!("validate_chat_gcm_api_key returns a server key"),
                    Err(error) => return Err(vec![ChatInputProblem::content(error)]),
                }
            }
        }
        ChatCredentialType::Fcm => {
            if let Some(secret) = &input.secret {
                let kind = classify_fcm_secret(secret).map_err(|errors| {
                    errors
                        .into_iter()
                        .map(ChatInputProblem::content)
                        .collect::<Vec<_>>()
                })?;
                fields.secret = Some(match kind {
                    FcmSecretKind::ServiceAccount(validated) => match validated.secret {
                        CredentialSecret::FcmServiceAccount { json } => json,
                        _ => unreachable!("a service account validates to FcmServiceAccount"),
                    },
                    FcmSecretKind::ServerKey(CredentialSecret::FcmServerKey { key }) => key,
                    FcmSecretKind::ServerKey(_) => unreachable!("a server key"),
                });
            }
            facts = fields
                .secret
                .as_deref()
                .and_then(|s| match classify_fcm_secret(s) {
                    Ok(FcmSecretKind::ServiceAccount(validated)) => Some(validated.facts),
                    _ => None,
                });
        }
    }
    Ok(Merged {
        fields,
        facts,
        content_changed,
    })
}

/// A pair problem found only with a stored half: say so, and blame the field given now.
fn stored_mismatch(error: ContentError, input: &ChatCredentialInput) -> ChatInputProblem {
    let (field, other) = if input.certificate.is_some() {
        ("Certificate", "PrivateKey")
    } else {
        ("PrivateKey", "Certificate")
    };
    ChatInputProblem {
        field: field.to_owned(),
        message: format!(
            "{field} does not match the credential's stored {other} ({}); give both together to replace them",
            error.message
        ),
        content: true,
    }
}

fn apn_facts(content: &ChatApnContent) -> Option<CredentialFacts> {
    content.facts()
}

/// What the delivery engine needs to send with a Chat credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatSendCredential {
    pub sid: String,
    pub credential_type: ChatCredentialType,
    /// `ApnCertificate` (apn), `FcmServerKey` (gcm, or fcm with a server key) or
    /// `FcmServiceAccount` (fcm with a service-account JSON).
    pub secret: CredentialSecret,
    /// apn: send to the APNs development (sandbox) endpoint rather than production.
    pub sandbox: bool,
    /// apn: the `apns-topic`, the certificate subject's UID (bundle ID); `None` when the
    /// certificate has no UID (APNs then takes the certificate's own topic).
    pub topic: Option<String>,
    /// Bumped whenever the content changes, so clients built from old content are replaced.
    pub content_version: i64,
}

/// The order and position of a page of Chat credentials (newest first by `(created_at, sid)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatPagePosition {
    /// The newest `limit` credentials.
    First,
    /// The `limit` credentials just older than the cursor (the next page).
    After(Cursor),
    /// The `limit` credentials just newer than the cursor (the previous page).
    Before(Cursor),
}

/// A page of Chat credentials, newest first, with the cursors of its neighbours.
#[derive(Debug, Clone)]
pub struct ChatCredentialPage {
    pub items: Vec<ChatCredential>,
    /// `Some(cursor of the last item)` when older credentials exist: read them with
    /// [`ChatPagePosition::After`].
    pub next: Option<Cursor>,
    /// `Some(cursor of the first item)` when newer credentials exist: read them with
    /// [`ChatPagePosition::Before`].
    pub previous: Option<Cursor>,
}

#[async_trait]
pub trait ChatCredentialStore {
    /// Creates a Chat credential of `account_sid` after checking `input` (see
    /// [`check_chat_input`]); `Invalid` names the first bad field and lists every problem.
    async fn create_chat_credential(
        &self,
        account_sid: &str,
        credential_type: ChatCredentialType,
        input: &ChatCredentialInput,
    ) -> Result<ChatCredential>;
    /// `NotFound` unless `sid` is a Chat credential of `account_sid`.
    async fn get_chat_credential(&self, account_sid: &str, sid: &str) -> Result<ChatCredential>;
    /// A page of `account_sid`'s Chat credentials, newest first. `limit` is 1 or more.
    async fn list_chat_credentials(
        &self,
        account_sid: &str,
        limit: i64,
        position: ChatPagePosition,
    ) -> Result<ChatCredentialPage>;
    /// Applies the fields given in `input`; the others keep their value. A `Certificate` or
    /// `PrivateKey` given alone must match the stored other half.
    async fn update_chat_credential(
        &self,
        account_sid: &str,
        sid: &str,
        input: &ChatCredentialInput,
    ) -> Result<ChatCredential>;
    async fn delete_chat_credential(&self, account_sid: &str, sid: &str) -> Result<()>;
    /// The sendable secret of a Chat credential. `Invalid` (naming the missing field) when the
    /// credential is not complete: an `apn` one without both `Certificate` and `PrivateKey`, a
    /// `gcm` one without `ApiKey`, an `fcm` one without `Secret`.
    async fn get_chat_credential_secret(
        &self,
        account_sid: &str,
        sid: &str,
    ) -> Result<ChatSendCredential>;
}

const COLUMNS: &str =
    "id, account_sid, credential_type, friendly_name, sandbox, facts, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<ChatCredential> {
    let kind: String = row.try_get(2)?;
    let facts: Option<String> = row.try_get(5)?;
    Ok(ChatCredential {
        sid: row.try_get(0)?,
        account_sid: row.try_get(1)?,
        credential_type: kind.parse().map_err(|_| {
            StoreError::Config(format!("stored Chat credential has unknown type {kind:?}"))
        })?,
        friendly_name: row.try_get(3)?,
        sandbox: row.try_get::<i64, _>(4)? != 0,
        facts: facts.and_then(|text| serde_json::from_str(&text).ok()),
        created_at: row.try_get(6)?,
        updated_at: row.try_get(7)?,
    })
}

fn cursor_of(credential: &ChatCredential) -> Cursor {
    Cursor {
        at: credential.created_at,
        id: credential.sid.clone(),
    }
}

fn facts_json(facts: &Option<CredentialFacts>) -> Option<String> {
    facts
        .as_ref()
        .and_then(|facts| serde_json::to_string(facts).ok())
}

/// `None` for an empty name (a name given as `""` clears it).
fn normalize_name(name: &str) -> Option<String> {
    (!name.is_empty()).then(|| name.to_owned())
}

impl SqlStore {
    fn seal_fields(&self, fields: &ChatSecretFields) -> Option<Vec<u8>> {
        if fields.is_empty() {
            return None;
        }
        // Serializing plain strings cannot fail.
        let plain = serde_json::to_vec(fields).unwrap_or_default();
        Some(self.secrets().seal(&plain))
    }

    fn open_fields(&self, sealed: Option<Vec<u8>>) -> Result<ChatSecretFields> {
        let Some(sealed) = sealed else {
            return Ok(ChatSecretFields::default());
        };
        let plain = self.secrets().open(&sealed)?;
        let fields: ChatSecretFields = serde_json::from_slice(&plain).map_err(|e| {
            // serde_json's message can quote values: say only where.
            StoreError::Config(format!(
                "stored Chat credential content is unreadable (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if fields.v != FIELDS_VERSION {
            return Err(StoreError::Config(format!(
                "stored Chat credential content has format version {}, unknown to this Herald",
                fields.v
            )));
        }
        Ok(fields)
    }
}

#[async_trait]
impl ChatCredentialStore for SqlStore {
    async fn create_chat_credential(
        &self,
        account_sid: &str,
        credential_type: ChatCredentialType,
        input: &ChatCredentialInput,
    ) -> Result<ChatCredential> {
        let merged =
            merge(credential_type, input, &ChatSecretFields::default()).map_err(problems_error)?;
        let credential = ChatCredential {
            sid: ids::new_sid(ids::CHAT_CREDENTIAL_SID),
            account_sid: account_sid.to_owned(),
            credential_type,
            friendly_name: input.friendly_name.as_deref().and_then(normalize_name),
            sandbox: input.sandbox.unwrap_or(false),
            facts: merged.facts,
            created_at: now_ms(),
            updated_at: 0,
        };
        let credential = ChatCredential {
            updated_at: credential.created_at,
            ..credential
        };
        let inserted = sqlx::query(
            "INSERT INTO credentials (id, account_sid, face, credential_type, friendly_name, \
             sandbox, facts, secret, created_at, updated_at) \
             SELECT $1, sid, $2, $3, $4, $5, $6, $7, $8, $8 FROM accounts WHERE sid = $9",
        )
        .bind(&credential.sid)
        .bind(FACE)
        .bind(credential_type.as_str())
        .bind(credential.friendly_name.as_deref())
        .bind(i64::from(credential.sandbox))
        .bind(facts_json(&credential.facts))
        .bind(self.seal_fields(&merged.fields))
        .bind(credential.created_at)
        .bind(account_sid)
        .execute(self.writer())
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(credential)
    }

    async fn get_chat_credential(&self, account_sid: &str, sid: &str) -> Result<ChatCredential> {
        if !ids::is_sid(ids::CHAT_CREDENTIAL_SID, sid) {
            return Err(StoreError::NotFound);
        }
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM credentials WHERE id = $1 AND account_sid = $2 AND face = $3"
        ))
        .bind(sid)
        .bind(account_sid)
        .bind(FACE)
        .fetch_optional(self.reader())
        .await?
        .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    async fn list_chat_credentials(
        &self,
        account_sid: &str,
        limit: i64,
        position: ChatPagePosition,
    ) -> Result<ChatCredentialPage> {
        let limit = limit.max(1);
        let older = "(created_at < $3 OR (created_at = $3 AND id < $4))";
        let newer = "(created_at > $3 OR (created_at = $3 AND id > $4))";
        let (condition, order, cursor) = match &position {
            ChatPagePosition::First => (older, "DESC", None),
            ChatPagePosition::After(cursor) => (older, "DESC", Some(cursor)),
            ChatPagePosition::Before(cursor) => (newer, "ASC", Some(cursor)),
        };
        let (at, id) = match cursor {
            Some(cursor) => (cursor.at, cursor.id.clone()),
            None => (i64::MAX, String::new()),
        };
        let mut conn = self.reader().acquire().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM credentials WHERE account_sid = $1 AND face = $2 AND {condition} \
             ORDER BY created_at {order}, id {order} LIMIT $5"
        ))
        .bind(account_sid)
        .bind(FACE)
        .bind(at)
        .bind(&id)
        .bind(limit + 1)
        .fetch_all(&mut *conn)
        .await?;
        let mut items = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
        let more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        // Whether a credential exists beyond `cursor` in the given direction.
        async fn exists(
            conn: &mut sqlx::AnyConnection,
            account_sid: &str,
            condition: &str,
            cursor: &Cursor,
        ) -> Result<bool> {
            let row = sqlx::query(&format!(
                "SELECT COUNT(*) FROM (SELECT 1 FROM credentials WHERE account_sid = $1 \
                 AND face = $2 AND {condition} LIMIT 1) AS beyond"
            ))
            .bind(account_sid)
            .bind(FACE)
            .bind(cursor.at)
            .bind(&cursor.id)
            .fetch_one(&mut *conn)
            .await?;
            Ok(row.try_get::<i64, _>(0)? > 0)
        }
        let (next, previous) = match position {
            ChatPagePosition::First => (more.then(|| cursor_of(&items[items.len() - 1])), None),
            ChatPagePosition::After(_) => {
                let previous = match items.first().map(cursor_of) {
                    Some(first) if exists(&mut conn, account_sid, newer, &first).await? => {
                        Some(first)
                    }
                    _ => None,
                };
                (more.then(|| cursor_of(&items[items.len() - 1])), previous)
            }
            ChatPagePosition::Before(_) => {
                items.reverse();
                let next = match items.last().map(cursor_of) {
                    Some(last) if exists(&mut conn, account_sid, older, &last).await? => Some(last),
                    _ => None,
                };
                (next, more.then(|| cursor_of(&items[0])))
            }
        };
        Ok(ChatCredentialPage {
            items,
            next,
            previous,
        })
    }

    async fn update_chat_credential(
        &self,
        account_sid: &str,
        sid: &str,
        input: &ChatCredentialInput,
    ) -> Result<ChatCredential> {
        if !ids::is_sid(ids::CHAT_CREDENTIAL_SID, sid) {
            return Err(StoreError::NotFound);
        }
        // Read, merge and write in one writer transaction, so two updates that each give one
        // half of an APNs pair cannot both pass against the same old other half.
        let mut tx = self.writer().begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, secret FROM credentials \
             WHERE id = $1 AND account_sid = $2 AND face = $3"
        ))
        .bind(sid)
        .bind(account_sid)
        .bind(FACE)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let mut credential = from_row(&row)?;
        let stored = self.open_fields(row.try_get(8)?)?;
        let merged = merge(credential.credential_type, input, &stored).map_err(problems_error)?;
        if let Some(name) = &input.friendly_name {
            credential.friendly_name = normalize_name(name);
        }
        let sandbox_changed = input.sandbox.is_some_and(|s| s != credential.sandbox);
        if let Some(sandbox) = input.sandbox {
            credential.sandbox = sandbox;
        }
        if merged.content_changed {
            credential.facts = merged.facts;
        }
        // Strictly later than the last update, even within one millisecond.
        credential.updated_at = now_ms().max(credential.updated_at + 1);
        sqlx::query(
            "UPDATE credentials SET friendly_name = $1, sandbox = $2, facts = $3, secret = $4, \
             content_version = content_version + $5, updated_at = $6 \
             WHERE id = $7 AND account_sid = $8 AND face = $9",
        )
        .bind(credential.friendly_name.as_deref())
        .bind(i64::from(credential.sandbox))
        .bind(facts_json(&credential.facts))
        .bind(self.seal_fields(&merged.fields))
        .bind(i64::from(merged.content_changed || sandbox_changed))
        .bind(credential.updated_at)
        .bind(sid)
        .bind(account_sid)
        .bind(FACE)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(credential)
    }

    async fn delete_chat_credential(&self, account_sid: &str, sid: &str) -> Result<()> {
        if !ids::is_sid(ids::CHAT_CREDENTIAL_SID, sid) {
            return Err(StoreError::NotFound);
        }
        let deleted =
            sqlx::query("DELETE FROM credentials WHERE id = $1 AND account_sid = $2 AND face = $3")
                .bind(sid)
                .bind(account_sid)
                .bind(FACE)
                .execute(self.writer())
                .await?
                .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn get_chat_credential_secret(
        &self,
        account_sid: &str,
        sid: &str,
    ) -> Result<ChatSendCredential> {
        if !ids::is_sid(ids::CHAT_CREDENTIAL_SID, sid) {
            return Err(StoreError::NotFound);
        }
        let row = sqlx::query(
            "SELECT credential_type, sandbox, secret, content_version FROM credentials \
             WHERE id = $1 AND account_sid = $2 AND face = $3",
        )
        .bind(sid)
        .bind(account_sid)
        .bind(FACE)
        .fetch_optional(self.reader())
        .await?
        .ok_or(StoreError::NotFound)?;
        let kind: String = row.try_get(0)?;
        let credential_type: ChatCredentialType = kind.parse().map_err(|_| {
            StoreError::Config(format!("stored Chat credential has unknown type {kind:?}"))
        })?;
        let sandbox = row.try_get::<i64, _>(1)? != 0;
        let fields = self.open_fields(row.try_get(2)?)?;
        let content_version: i64 = row.try_get(3)?;
        let missing = |field: &str| {
            StoreError::invalid(
                field,
                format!(
                    "Chat credential {sid} has no {field} yet: set it with POST /v2/Credentials/{sid}"
                ),
            )
        };
        let (secret, topic) = match credential_type {
            ChatCredentialType::Apn => {
                let certificate = fields.certificate.ok_or_else(|| missing("Certificate"))?;
                let private_key = fields.private_key.ok_or_else(|| missing("PrivateKey"))?;
                // Stored PEM was validated when it was given; parsing it again yields the topic.
                let content = validate_chat_apn(Some(&certificate), Some(&private_key)).map_err(
                    |errors| {
                        StoreError::invalid(
                            "Certificate",
                            format!(
                                "Chat credential {sid}'s stored content no longer validates: {}",
                                errors
                                    .iter()
                                    .map(|e| e.to_string())
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            ),
                        )
                    },
                )?;
                (
                    CredentialSecret::ApnCertificate {
                        cert_pem: certificate,
                        key_pem: private_key,
                    },
                    content.topic,
                )
            }
            ChatCredentialType::Gcm => {
                let key = fields.api_key.ok_or_else(|| missing("ApiKey"))?;
                (CredentialSecret::FcmServerKey { key }, None)
            }
            ChatCredentialType::Fcm => {
                let secret = fields.secret.ok_or_else(|| missing("Secret"))?;
                let secret = match classify_fcm_secret(&secret) {
                    Ok(FcmSecretKind::ServiceAccount(validated)) => validated.secret,
                    Ok(FcmSecretKind::ServerKey(key)) => key,
                    Err(errors) => {
                        return Err(StoreError::invalid(
                            "Secret",
                            format!(
                                "Chat credential {sid}'s stored Secret no longer validates: {}",
                                errors
                                    .iter()
                                    .map(|e| e.to_string())
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            ),
                        ));
                    }
                };
                (secret, None)
            }
        };
        Ok(ChatSendCredential {
            sid: sid.to_owned(),
            credential_type,
            secret,
            sandbox: credential_type == ChatCredentialType::Apn && sandbox,
            topic,
            content_version,
        })
    }
}
