//! Push API credentials (`/v1/PushNotifications/Credentials`): rows of the shared `credentials`
//! table with `face = 'push'`, each in one app (`app_name`).
//!
//! Rules kept here, each inside the one transaction of the write that could break it:
//! - the app named by a create is made when it does not exist; an account's first app is its
//!   default app; at most [`StoreLimits::max_apps_per_account`](crate::StoreLimits) apps;
//! - at most [`StoreLimits::max_credentials_per_app`](crate::StoreLimits) credentials per app;
//! - per app and `credentialType` exactly one default while any credential of the type exists:
//!   the first is default automatically, `isDefault: true` moves the default, `isDefault: false`
//!   on the default is refused, deleting the default promotes the most recent remaining one;
//! - deleting an app's last credential deletes the app (and, by cascade, its device
//!   registrations); when that app was the default app, the most recent remaining app becomes
//!   the default.
//!
//! Every write first takes the account's lock ([`SqlStore::lock_account`]), so concurrent writes
//! of one account run one after the other on both backends. Secrets are sealed with AES-256-GCM
//! before they reach the database and are only opened by [`CredentialStore::get_credential_secret`].

use async_trait::async_trait;
use herald_core::credential_content::{
    CredentialFacts, CredentialSecret, PushCredentialType, ValidatedContent,
};
use herald_core::time::now_ms;
use herald_core::{AppName, Tags, ids};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::{Backend, Cursor, Page, PageRequest, Result, SqlStore, StoreError, keyset_condition};

/// A Push API credential as shown to its account (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    pub id: String,
    pub account_sid: String,
    pub credential_type: PushCredentialType,
    pub app_name: AppName,
    /// Whether it is its app's default credential of its type.
    pub is_default: bool,
    pub tags: Tags,
    /// Non-secret facts read from the content (topic, expiry, project...).
    pub facts: Option<CredentialFacts>,
    /// Bumped by every key rotation (starts at 1).
    pub content_version: i64,
    pub last_error: Option<CredentialLastError>,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// The last provider answer that blamed the credential itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialLastError {
    /// The provider's reason code (`BadCertificate`, `InvalidProviderToken`, `PERMISSION_DENIED`).
    pub code: String,
    pub message: String,
    /// Epoch milliseconds.
    pub at: i64,
}

/// A credential to create. The content was validated by the caller
/// (`herald_core::credential_content::validate_push_content`).
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub credential_type: PushCredentialType,
    pub app_name: AppName,
    /// `Some(true)`: become the app's default of this type (moving it). `None` / `Some(false)`:
    /// default only when it is the first of its type in the app.
    pub is_default: Option<bool>,
    pub tags: Tags,
    pub content: ValidatedContent,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct CredentialUpdate {
    /// `Some(true)` makes it the default of its type; `Some(false)` on the default is refused.
    pub is_default: Option<bool>,
    /// Replaces the whole map.
    pub tags: Option<Tags>,
    /// Rotates the key: new secret and facts, `content_version` + 1, `last_error` cleared.
    pub content: Option<ValidatedContent>,
}

/// List filters (all optional, combined with AND).
#[derive(Debug, Clone, Default)]
pub struct CredentialFilter {
    pub app_name: Option<AppName>,
    pub credential_type: Option<PushCredentialType>,
    pub is_default: Option<bool>,
    /// `created_at >= created_from` (epoch ms).
    pub created_from: Option<i64>,
    /// `created_at <= created_until` (epoch ms).
    pub created_until: Option<i64>,
}

/// What a delete did besides removing the credential.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CredentialDeletion {
    /// The credential was its app's last one, so the app (and its device registrations) went too.
    pub app_deleted: bool,
    /// The credential that became the default of the deleted one's type.
    pub promoted_credential: Option<String>,
    /// The app that became the account's default app.
    pub promoted_app: Option<AppName>,
}

#[async_trait]
pub trait CredentialStore {
    /// Creates a credential (and its app when needed). Limits and default rules →
    /// [`StoreError::Invalid`] naming `appName` / `isDefault`; unknown account → `NotFound`.
    async fn create_credential(
        &self,
        account_sid: &str,
        new: NewCredential,
    ) -> Result<CredentialRecord>;

    /// One Push credential of the account; another account's, a Chat one or an unknown ID →
    /// `NotFound`.
    async fn get_credential(&self, account_sid: &str, id: &str) -> Result<CredentialRecord>;

    /// The account's Push credentials, newest first.
    async fn list_credentials(
        &self,
        account_sid: &str,
        filter: &CredentialFilter,
        page: &PageRequest,
    ) -> Result<Page<CredentialRecord>>;

    async fn update_credential(
        &self,
        account_sid: &str,
        id: &str,
        update: CredentialUpdate,
    ) -> Result<CredentialRecord>;

    async fn delete_credential(&self, account_sid: &str, id: &str) -> Result<CredentialDeletion>;

    /// For sending: the credential, its opened secret, and the content version it belongs to.
    async fn get_credential_secret(
        &self,
        account_sid: &str,
        id: &str,
    ) -> Result<(CredentialRecord, CredentialSecret, i64)>;

    /// Records a provider answer that blamed credential `id` (either face) while it was at
    /// `content_version`. Returns `false` (and records nothing) when the credential is gone or
    /// its key was rotated since: the error was about content that is no longer there.
    async fn set_credential_last_error(
        &self,
        id: &str,
        content_version: i64,
        code: &str,
        message: &str,
    ) -> Result<bool>;

    /// Forgets the last error of credential `id` (either face), e.g. after a successful send.
    async fn clear_credential_last_error(&self, id: &str) -> Result<()>;
}

/// A value bound to a dynamically built query.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
}

pub(crate) fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: &'q [Arg],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text.as_str()),
            Arg::Int(n) => query.bind(*n),
        };
    }
    query
}

/// Ends a write transaction: commits after success, and after an error rolls back *now*, so the
/// account lock and the transaction's other locks are released before the error is answered
/// (a dropped transaction only rolls back once its connection is back in the pool).
pub(crate) async fn finish<T>(
    tx: sqlx::Transaction<'_, sqlx::Any>,
    result: Result<T>,
) -> Result<T> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(error) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rollback failed");
            }
            Err(error)
        }
    }
}

/// A stored app name (valid when written) as an [`AppName`].
pub(crate) fn stored_app_name(text: &str) -> Result<AppName> {
    AppName::parse(text)
        .map_err(|message| StoreError::Database(sqlx::Error::Decode(message.into())))
}

fn stored_credential_type(text: &str) -> Result<PushCredentialType> {
    text.parse::<PushCredentialType>()
        .map_err(|e| StoreError::Database(sqlx::Error::Decode(e.message.into())))
}

const CREDENTIAL_COLUMNS: &str = "id, account_sid, credential_type, app_name, is_default, tags, \
     facts, content_version, last_error, created_at, updated_at";

fn credential_from_row(row: &AnyRow) -> Result<CredentialRecord> {
    let credential_type: String = row.try_get(2)?;
    let app_name: Option<String> = row.try_get(3)?;
    let tags: String = row.try_get(5)?;
    let facts: Option<String> = row.try_get(6)?;
    let last_error: Option<String> = row.try_get(8)?;
    Ok(CredentialRecord {
        id: row.try_get(0)?,
        account_sid: row.try_get(1)?,
        credential_type: stored_credential_type(&credential_type)?,
        app_name: stored_app_name(app_name.as_deref().unwrap_or(""))?,
        is_default: row.try_get::<i64, _>(4)? != 0,
        tags: Tags::from_stored(&tags),
        facts: facts.and_then(|text| serde_json::from_str(&text).ok()),
        content_version: row.try_get(7)?,
        last_error: last_error.and_then(|text| serde_json::from_str(&text).ok()),
        created_at: row.try_get(9)?,
        updated_at: row.try_get(10)?,
    })
}

fn facts_json(facts: &CredentialFacts) -> String {
    serde_json::to_string(facts).unwrap_or_else(|_| "null".into())
}

impl SqlStore {
    /// Takes the account's write lock for the rest of the transaction on `conn`, so writes of one
    /// account that check rules (defaults, limits) run one after the other; `NotFound` when the
    /// account does not exist.
    ///
    /// PostgreSQL: `FOR NO KEY UPDATE` on the account row — it excludes every other lock taker
    /// (and `FOR UPDATE`) but, unlike `FOR UPDATE`, does not block inserts of rows that merely
    /// reference the account. SQLite: a no-op `UPDATE`, which takes the database's write lock
    /// now instead of at the transaction's first real write (our single writer connection
    /// serializes anyway; this also holds against another process on the same file).
    pub(crate) async fn lock_account(
        &self,
        conn: &mut AnyConnection,
        account_sid: &str,
    ) -> Result<()> {
        let found = match self.backend() {
            Backend::Postgres => {
                sqlx::query("SELECT sid FROM accounts WHERE sid = $1 FOR NO KEY UPDATE")
                    .bind(account_sid)
                    .fetch_optional(&mut *conn)
                    .await?
                    .is_some()
            }
            Backend::Sqlite => {
                sqlx::query("UPDATE accounts SET updated_at = updated_at WHERE sid = $1")
                    .bind(account_sid)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
                    > 0
            }
        };
        if found {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn credential_in(
        &self,
        conn: &mut AnyConnection,
        account_sid: &str,
        id: &str,
    ) -> Result<CredentialRecord> {
        let row = sqlx::query(&format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM credentials \
             WHERE id = $1 AND account_sid = $2 AND face = 'push'"
        ))
        .bind(id)
        .bind(account_sid)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
        credential_from_row(&row)
    }

    /// Makes `id` the only default of its type in its app.
    async fn make_default_credential(
        &self,
        conn: &mut AnyConnection,
        record: &CredentialRecord,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE credentials SET is_default = 0, updated_at = $4 \
             WHERE account_sid = $1 AND app_name = $2 AND credential_type = $3 \
               AND face = 'push' AND is_default = 1",
        )
        .bind(&record.account_sid)
        .bind(record.app_name.as_str())
        .bind(record.credential_type.as_str())
        .bind(now)
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE credentials SET is_default = 1, updated_at = $2 WHERE id = $1")
            .bind(&record.id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        self.touch_app(conn, &record.account_sid, record.app_name.as_str(), now)
            .await
    }

    /// Bumps an app's `updated_at` (its default credentials changed).
    pub(crate) async fn touch_app(
        &self,
        conn: &mut AnyConnection,
        account_sid: &str,
        app_name: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query("UPDATE apps SET updated_at = $3 WHERE account_sid = $1 AND name = $2")
            .bind(account_sid)
            .bind(app_name)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Makes sure the app exists (creating it within the app limit) and returns whether it was
    /// created.
    async fn ensure_app(
        &self,
        conn: &mut AnyConnection,
        account_sid: &str,
        app_name: &AppName,
        now: i64,
    ) -> Result<bool> {
        let exists = sqlx::query("SELECT 1 FROM apps WHERE account_sid = $1 AND name = $2")
            .bind(account_sid)
            .bind(app_name.as_str())
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
        if exists {
            return Ok(false);
        }
        let apps: i64 = sqlx::query("SELECT COUNT(*) FROM apps WHERE account_sid = $1")
            .bind(account_sid)
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        let max = self.limits().max_apps_per_account;
        if apps >= max {
            return Err(StoreError::invalid(
                "appName",
                format!(
                    "app {app_name:?} does not exist and the account already has {apps} apps, \
                     the limit of {max} apps per account; use an existing app or delete one"
                ),
            ));
        }
        sqlx::query(
            "INSERT INTO apps (account_sid, name, is_default, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(account_sid)
        .bind(app_name.as_str())
        .bind(i64::from(apps == 0))
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(true)
    }
}

#[async_trait]
impl CredentialStore for SqlStore {
    async fn create_credential(
        &self,
        account_sid: &str,
        new: NewCredential,
    ) -> Result<CredentialRecord> {
        let sealed = self.secrets().seal(&new.content.secret.to_bytes());
        let facts = facts_json(&new.content.facts);
        let id = ids::new_type_id(ids::CREDENTIAL);
        let app = new.app_name.as_str();
        let kind = new.credential_type.as_str();

        let mut tx = self.writer().begin().await?;
        let result: Result<_> = async {
            self.lock_account(&mut tx, account_sid).await?;
            let now = now_ms();
            self.ensure_app(&mut tx, account_sid, &new.app_name, now)
                .await?;
            let in_app: i64 = sqlx::query(
                "SELECT COUNT(*) FROM credentials \
             WHERE account_sid = $1 AND app_name = $2 AND face = 'push'",
            )
            .bind(account_sid)
            .bind(app)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            let max = self.limits().max_credentials_per_app;
            if in_app >= max {
                return Err(StoreError::invalid(
                    "appName",
                    format!(
                        "app {app:?} already has {in_app} credentials, the limit of {max} \
                     credentials per app; delete one or use another app"
                    ),
                ));
            }
            let has_default = sqlx::query(
                "SELECT 1 FROM credentials WHERE account_sid = $1 AND app_name = $2 \
             AND credential_type = $3 AND face = 'push' AND is_default = 1",
            )
            .bind(account_sid)
            .bind(app)
            .bind(kind)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
            let is_default = !has_default || new.is_default == Some(true);
            if is_default {
                if has_default {
                    sqlx::query(
                        "UPDATE credentials SET is_default = 0, updated_at = $4 \
                     WHERE account_sid = $1 AND app_name = $2 AND credential_type = $3 \
                       AND face = 'push' AND is_default = 1",
                    )
                    .bind(account_sid)
                    .bind(app)
                    .bind(kind)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                self.touch_app(&mut tx, account_sid, app, now).await?;
            }
            sqlx::query(
                "INSERT INTO credentials (id, account_sid, face, credential_type, app_name, \
                 is_default, tags, facts, secret, content_version, created_at, updated_at) \
             VALUES ($1, $2, 'push', $3, $4, $5, $6, $7, $8, 1, $9, $9)",
            )
            .bind(&id)
            .bind(account_sid)
            .bind(kind)
            .bind(app)
            .bind(i64::from(is_default))
            .bind(new.tags.to_json_string())
            .bind(&facts)
            .bind(sealed)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let record = self.credential_in(&mut tx, account_sid, &id).await?;
            Ok(record)
        }
        .await;
        finish(tx, result).await
    }

    async fn get_credential(&self, account_sid: &str, id: &str) -> Result<CredentialRecord> {
        let mut conn = self.reader().acquire().await?;
        self.credential_in(&mut conn, account_sid, id).await
    }

    async fn list_credentials(
        &self,
        account_sid: &str,
        filter: &CredentialFilter,
        page: &PageRequest,
    ) -> Result<Page<CredentialRecord>> {
        let (at, after_id) = page.bounds();
        let mut args = vec![
            Arg::Text(account_sid.to_owned()),
            Arg::Int(at),
            Arg::Text(after_id),
        ];
        let mut sql = format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM credentials \
             WHERE account_sid = $1 AND face = 'push' AND {}",
            keyset_condition("created_at", "id", 2, 3)
        );
        let mut and = |condition: &str, arg: Arg| {
            args.push(arg);
            sql.push_str(&format!(" AND {condition} ${}", args.len()));
        };
        if let Some(app) = &filter.app_name {
            and("app_name =", Arg::Text(app.as_str().to_owned()));
        }
        if let Some(kind) = filter.credential_type {
            and("credential_type =", Arg::Text(kind.as_str().to_owned()));
        }
        if let Some(flag) = filter.is_default {
            and("is_default =", Arg::Int(i64::from(flag)));
        }
        if let Some(from) = filter.created_from {
            and("created_at >=", Arg::Int(from));
        }
        if let Some(until) = filter.created_until {
            and("created_at <=", Arg::Int(until));
        }
        args.push(Arg::Int(page.limit + 1));
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT ${}",
            args.len()
        ));
        let rows = bind_all(sqlx::query(&sql), &args)
            .fetch_all(self.reader())
            .await?;
        let records = rows
            .iter()
            .map(credential_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(records, page.limit, |r| Cursor {
            at: r.created_at,
            id: r.id.clone(),
        }))
    }

    async fn update_credential(
        &self,
        account_sid: &str,
        id: &str,
        update: CredentialUpdate,
    ) -> Result<CredentialRecord> {
        let sealed = update.content.as_ref().map(|content| {
            (
                self.secrets().seal(&content.secret.to_bytes()),
                facts_json(&content.facts),
            )
        });

        let mut tx = self.writer().begin().await?;
        let result: Result<_> = async {
        self.lock_account(&mut tx, account_sid).await?;
        let record = self.credential_in(&mut tx, account_sid, id).await?;
        let now = now_ms();
        match update.is_default {
            Some(false) if record.is_default => {
                return Err(StoreError::invalid(
                    "isDefault",
                    format!(
                        "credential {id} is the default {} credential of app {:?}; an app keeps \
                         one default per credentialType, so make another credential the default \
                         instead",
                        record.credential_type, record.app_name.as_str()
                    ),
                ));
            }
            Some(true) if !record.is_default => {
                self.make_default_credential(&mut tx, &record, now).await?;
            }
            _ => {}
        }
        if let Some(tags) = &update.tags {
            sqlx::query("UPDATE credentials SET tags = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(tags.to_json_string())
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        if let Some((secret, facts)) = sealed {
            sqlx::query(
                "UPDATE credentials SET secret = $2, facts = $3, \
                     content_version = content_version + 1, last_error = NULL, updated_at = $4 \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(secret)
            .bind(facts)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let record = self.credential_in(&mut tx, account_sid, id).await?;
        Ok(record)
        }
        .await;
        finish(tx, result).await
    }

    async fn delete_credential(&self, account_sid: &str, id: &str) -> Result<CredentialDeletion> {
        let mut tx = self.writer().begin().await?;
        let result: Result<_> = async {
            self.lock_account(&mut tx, account_sid).await?;
            let record = self.credential_in(&mut tx, account_sid, id).await?;
            let app = record.app_name.as_str();
            let now = now_ms();
            let mut deletion = CredentialDeletion::default();
            sqlx::query("DELETE FROM credentials WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let remaining: i64 = sqlx::query(
                "SELECT COUNT(*) FROM credentials \
             WHERE account_sid = $1 AND app_name = $2 AND face = 'push'",
            )
            .bind(account_sid)
            .bind(app)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            if remaining == 0 {
                let was_default: i64 =
                    sqlx::query("SELECT is_default FROM apps WHERE account_sid = $1 AND name = $2")
                        .bind(account_sid)
                        .bind(app)
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get(0)?;
                // Device registrations of the app go with it (ON DELETE CASCADE).
                sqlx::query("DELETE FROM apps WHERE account_sid = $1 AND name = $2")
                    .bind(account_sid)
                    .bind(app)
                    .execute(&mut *tx)
                    .await?;
                deletion.app_deleted = true;
                if was_default != 0 {
                    let next = sqlx::query(
                        "SELECT name FROM apps WHERE account_sid = $1 \
                     ORDER BY created_at DESC, name DESC LIMIT 1",
                    )
                    .bind(account_sid)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(row) = next {
                        let name: String = row.try_get(0)?;
                        sqlx::query(
                            "UPDATE apps SET is_default = 1, updated_at = $3 \
                         WHERE account_sid = $1 AND name = $2",
                        )
                        .bind(account_sid)
                        .bind(&name)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        deletion.promoted_app = Some(stored_app_name(&name)?);
                    }
                }
            } else if record.is_default {
                let next = sqlx::query(
                    "SELECT id FROM credentials WHERE account_sid = $1 AND app_name = $2 \
                   AND credential_type = $3 AND face = 'push' \
                 ORDER BY created_at DESC, id DESC LIMIT 1",
                )
                .bind(account_sid)
                .bind(app)
                .bind(record.credential_type.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(row) = next {
                    let next_id: String = row.try_get(0)?;
                    sqlx::query(
                        "UPDATE credentials SET is_default = 1, updated_at = $2 WHERE id = $1",
                    )
                    .bind(&next_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    deletion.promoted_credential = Some(next_id);
                }
                self.touch_app(&mut tx, account_sid, app, now).await?;
            }
            Ok(deletion)
        }
        .await;
        finish(tx, result).await
    }

    async fn get_credential_secret(
        &self,
        account_sid: &str,
        id: &str,
    ) -> Result<(CredentialRecord, CredentialSecret, i64)> {
        let row = sqlx::query(&format!(
            "SELECT {CREDENTIAL_COLUMNS}, secret FROM credentials \
             WHERE id = $1 AND account_sid = $2 AND face = 'push'"
        ))
        .bind(id)
        .bind(account_sid)
        .fetch_optional(self.reader())
        .await?
        .ok_or(StoreError::NotFound)?;
        let record = credential_from_row(&row)?;
        let sealed: Option<Vec<u8>> = row.try_get(11)?;
        let plain = self
            .secrets()
            .open(sealed.as_deref().ok_or(StoreError::Decrypt)?)?;
        let secret = CredentialSecret::from_bytes(&plain).map_err(|error| {
            tracing::error!(credential = %id, %error, "stored credential secret is unreadable");
            StoreError::Decrypt
        })?;
        let version = record.content_version;
        Ok((record, secret, version))
    }

    async fn set_credential_last_error(
        &self,
        id: &str,
        content_version: i64,
        code: &str,
        message: &str,
    ) -> Result<bool> {
        let error = CredentialLastError {
            code: code.to_owned(),
            message: message.to_owned(),
            at: now_ms(),
        };
        let text = serde_json::to_string(&error).unwrap_or_default();
        let updated = sqlx::query(
            "UPDATE credentials SET last_error = $3 WHERE id = $1 AND content_version = $2",
        )
        .bind(id)
        .bind(content_version)
        .bind(text)
        .execute(self.writer())
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    async fn clear_credential_last_error(&self, id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE credentials SET last_error = NULL WHERE id = $1 AND last_error IS NOT NULL",
        )
        .bind(id)
        .execute(self.writer())
        .await?;
        Ok(())
    }
}
