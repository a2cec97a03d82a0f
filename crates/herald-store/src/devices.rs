//! Device registrations (`/v1/PushNotifications/DeviceRegistrations`) and their devices, and the
//! lookups the delivery engine makes: a user's ACTIVE devices in an app, and marking dead tokens.
//!
//! A registration is the set of one user's devices in one app, unique per (user, app). A
//! (provider, token) belongs to at most one user per app. A registration exists only while it has
//! devices: moving or removing its last device deletes it (the user stays).
//!
//! Every write that reads before it writes runs in one transaction that is retried when it loses a
//! race: SQLite has a single writer, so its transactions never interleave; on PostgreSQL they run
//! `SERIALIZABLE`, and a serialization failure, deadlock, or unique / foreign-key violation caused
//! by a concurrent request rolls everything back and runs the transaction again, which then sees
//! the winner's rows.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use herald_core::ids;
use herald_core::time::now_ms;
use herald_core::{AppName, DeviceStatus, DeviceToken, Provider};
use ring::digest::{SHA256, digest};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::sql::{Conn, query};
use crate::{Backend, Cursor, Page, PageRequest, Result, SqlStore, StoreError, keyset_condition};

/// One device of a registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub provider: Provider,
    pub token: String,
    pub status: DeviceStatus,
    /// When the device joined this registration (epoch ms).
    pub created_at: i64,
    /// When a provider said the token is dead; `None` while ACTIVE.
    pub invalidated_at: Option<i64>,
    /// The provider answer that made the device INVALID (as given to [`DeviceStore::mark_devices_invalid`]).
    pub last_error: Option<Value>,
}

/// One user's devices in one app.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRegistration {
    /// `comms_device_registration_...`
    pub id: String,
    pub app_name: String,
    pub user_id: String,
    /// Oldest first.
    pub devices: Vec<Device>,
    pub created_at: i64,
    /// Bumped whenever a device is added, moved away, removed, reactivated or invalidated.
    pub updated_at: i64,
}

/// A device to register (values already validated).
#[derive(Debug, Clone, Copy)]
pub struct RegisterDevice<'a> {
    pub app_name: &'a AppName,
    pub provider: Provider,
    pub token: &'a DeviceToken,
    /// The user to register the device for; `None` makes a new user unless the device is already
    /// registered in the app.
    pub user_id: Option<&'a str>,
}

/// What a registration changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterChange {
    /// A new user was made, with a registration holding this one device.
    NewUser,
    /// The device was added to the user's registration in the app (made if it had none).
    Added,
    /// The device was already there and ACTIVE.
    Unchanged,
    /// The device was already there but INVALID; it is ACTIVE again.
    Reactivated,
    /// The device belonged to another user of the app and now belongs to this one.
    Moved {
        from_registration: String,
        /// The other user's registration had no device left and was deleted.
        from_registration_deleted: bool,
    },
}

/// The registration a device ended up in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub registration_id: String,
    pub user_id: String,
    pub change: RegisterChange,
}

/// What removing a device from a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRemoval {
    /// The device(s) with the token were removed; the registration was deleted when that left it
    /// empty.
    Removed { registration_deleted: bool },
    /// The registration exists but has no device with that token.
    NoSuchDevice,
}

/// A device a provider called dead, for [`DeviceStore::mark_devices_invalid`].
#[derive(Debug, Clone, PartialEq)]
pub struct DeadDevice {
    pub account_sid: String,
    pub app_name: AppName,
    pub provider: Provider,
    pub token: String,
    /// Stored as the device's `lastError` (e.g. `{"code", "message", "providerStatus", ...}`).
    pub error: Value,
}

/// A device that has just become INVALID (for the `com.herald.device.invalidated` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidatedDevice {
    pub account_sid: String,
    pub app_name: String,
    pub registration_id: String,
    pub user_id: String,
    pub provider: Provider,
    pub token: String,
}

#[async_trait]
pub trait DeviceStore {
    /// Registers a device, by the rules of API.md: without `user_id` a new user is made unless the
    /// (provider, token) is registered in the app already (then that registration is returned);
    /// with `user_id` the device joins that user's registration in the app, moving from another
    /// user if needed. An INVALID device registered again becomes ACTIVE. An unknown app →
    /// `Invalid` on `appName`; an unknown user (or another account's) → `Invalid` on `userId`.
    async fn register_device(
        &self,
        account_sid: &str,
        request: &RegisterDevice<'_>,
    ) -> Result<Registered>;

    /// One registration of the account with its devices; else `NotFound`.
    async fn get_device_registration(
        &self,
        account_sid: &str,
        registration_id: &str,
    ) -> Result<DeviceRegistration>;

    /// A user's registrations (in one app, or all), newest first. An unknown user has none.
    async fn list_device_registrations(
        &self,
        account_sid: &str,
        user_id: &str,
        app_name: Option<&AppName>,
        page: &PageRequest,
    ) -> Result<Page<DeviceRegistration>>;

    /// Deletes a registration and its devices (the user stays); `NotFound` when there is none.
    async fn delete_device_registration(
        &self,
        account_sid: &str,
        registration_id: &str,
    ) -> Result<()>;

    /// Removes the device(s) with `token` (of any provider) from a registration, and the
    /// registration itself when no device is left. `NotFound` when the registration is not the
    /// account's.
    async fn remove_device(
        &self,
        account_sid: &str,
        registration_id: &str,
        token: &str,
    ) -> Result<DeviceRemoval>;

    /// The ACTIVE devices of these users in one app, as `(user_id, provider, token)`, grouped by
    /// user. Unknown users and users without a registration in the app have none.
    async fn active_devices_for_users(
        &self,
        account_sid: &str,
        app_name: &AppName,
        user_ids: &[String],
    ) -> Result<Vec<(String, Provider, String)>>;

    /// Marks one device INVALID with the provider's `error`; returns it when it was ACTIVE (an
    /// unknown or already INVALID device gives `None`, so the invalidated event fires once).
    async fn mark_device_invalid(
        &self,
        account_sid: &str,
        app_name: &AppName,
        provider: Provider,
        token: &str,
        error: &Value,
    ) -> Result<Option<InvalidatedDevice>>;

    /// [`DeviceStore::mark_device_invalid`] for many devices (of any accounts and apps) in one
    /// transaction; returns those that were ACTIVE.
    async fn mark_devices_invalid(&self, devices: &[DeadDevice]) -> Result<Vec<InvalidatedDevice>>;
}

/// How many times a write transaction runs before its last error is returned.
const MAX_ATTEMPTS: u32 = 50;

/// Runs `$body` (which uses the transaction `$tx`, and may `return Err(..)`) in a write
/// transaction: commits when it succeeds, rolls back at once when it fails (rather than leaving
/// the rollback to whenever the pool next touches the connection), and runs it again when it or
/// its commit lost a race with a concurrent transaction.
macro_rules! write_tx {
    ($store:expr, |$tx:ident| $body:block) => {{
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let result: Result<_> = async {
                let mut $tx = $store.begin_write().await?;
                let outcome: Result<_> = async { Ok($body) }.await;
                match outcome {
                    Ok(value) => {
                        $tx.commit().await?;
                        Ok(value)
                    }
                    Err(error) => {
                        // The error is the answer; a failed rollback only closes the connection.
                        let _ = $tx.rollback().await;
                        Err(error)
                    }
                }
            }
            .await;
            match result {
                Err(StoreError::Database(ref error))
                    if attempt < MAX_ATTEMPTS && lost_a_race(error) =>
                {
                    backoff(attempt).await;
                }
                other => break other,
            }
        }
    }};
}

/// Whether `error` is one a concurrent transaction can cause, so that running again succeeds.
fn lost_a_race(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(error) = error else {
        return false;
    };
    matches!(
        error.code().as_deref(),
        // PostgreSQL: serialization failure, deadlock, unique and foreign-key violations.
        Some("40001" | "40P01" | "23505" | "23503")
        // SQLite: busy (another process holds the lock past the busy timeout).
        | Some("5" | "517")
    )
}

/// A short random pause before running a transaction again, growing with the attempts.
async fn backoff(attempt: u32) {
    let cap_ms = 1u64 << attempt.min(6);
    let jitter = (uuid::Uuid::new_v4().as_u128() as u64) % (cap_ms * 1000);
    tokio::time::sleep(Duration::from_micros(jitter)).await;
}

/// The key of a token (see the migration: long tokens do not fit a B-tree entry).
fn token_hash(token: &str) -> String {
    hex::encode(digest(&SHA256, token.as_bytes()))
}

fn corrupt(what: String) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(what.into()))
}

fn stored_provider(text: &str) -> Result<Provider> {
    Provider::parse(text).map_err(|_| corrupt(format!("stored provider {text:?}")))
}

fn stored_status(text: &str) -> Result<DeviceStatus> {
    DeviceStatus::parse(text).ok_or_else(|| corrupt(format!("stored device status {text:?}")))
}

fn stored_json(text: Option<String>) -> Option<Value> {
    text.map(|text| serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

const REGISTRATION_COLUMNS: &str = "id, app_name, user_id, created_at, updated_at";

/// Selects registrations (`r`, columns 0-4) with their devices (`d`, columns 5-10, NULL for none)
/// in one statement, so a registration and its devices come from one snapshot.
fn with_devices_sql(registrations: &str) -> String {
    format!(
        "SELECT r.id, r.app_name, r.user_id, r.created_at, r.updated_at, \
                d.provider, d.token, d.status, d.created_at, d.invalidated_at, d.last_error \
         FROM ({registrations}) r LEFT JOIN devices d ON d.registration_id = r.id \
         ORDER BY r.created_at DESC, r.id DESC, d.created_at, d.provider, d.token"
    )
}

/// Groups the rows of [`with_devices_sql`] into registrations, in row order.
fn registrations_from_rows(rows: &[AnyRow]) -> Result<Vec<DeviceRegistration>> {
    let mut registrations: Vec<DeviceRegistration> = Vec::new();
    for row in rows {
        let id: String = row.try_get(0)?;
        if registrations.last().is_none_or(|last| last.id != id) {
            registrations.push(DeviceRegistration {
                id,
                app_name: row.try_get(1)?,
                user_id: row.try_get(2)?,
                devices: Vec::new(),
                created_at: row.try_get(3)?,
                updated_at: row.try_get(4)?,
            });
        }
        let Some(provider) = row.try_get::<Option<String>, _>(5)? else {
            continue;
        };
        let status: String = row.try_get(7)?;
        let registration = registrations.last_mut().expect("pushed above");
        registration.devices.push(Device {
            provider: stored_provider(&provider)?,
            token: row.try_get(6)?,
            status: stored_status(&status)?,
            created_at: row.try_get(8)?,
            invalidated_at: row.try_get(9)?,
            last_error: stored_json(row.try_get(10)?),
        });
    }
    Ok(registrations)
}

/// The device with a key, as found by a registration.
struct ExistingDevice {
    registration_id: String,
    user_id: String,
    status: DeviceStatus,
}

impl SqlStore {
    /// A write transaction: on PostgreSQL `SERIALIZABLE` (see the module comment).
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        let mut tx = self.writer().begin().await?;
        if self.backend() == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }
}

async fn register_in(
    conn: &mut Conn<'_>,
    backend: Backend,
    account_sid: &str,
    request: &RegisterDevice<'_>,
) -> Result<Registered> {
    let app = request.app_name.as_str();
    let provider = request.provider.as_str();
    let token = request.token.as_str();
    let hash = token_hash(token);

    // The common case on SQLite, a new device without a user: its user row is inserted only if
    // the app exists and the device does not, and then its registration and device follow.
    // Anything else inserts nothing here and takes the general path below. (PostgreSQL always
    // takes the general path, in the SERIALIZABLE transaction the module comment explains.)
    if request.user_id.is_none() && backend == Backend::Sqlite {
        let user_id = ids::new_type_id(ids::USER);
        let now = now_ms();
        let inserted = query(
            "INSERT INTO users (id, account_sid, created_at, updated_at) \
             SELECT $1, $2, $3, $3 \
             WHERE EXISTS (SELECT 1 FROM apps WHERE account_sid = $2 AND name = $4) \
               AND NOT EXISTS (SELECT 1 FROM devices WHERE account_sid = $2 AND app_name = $4 \
                               AND provider = $5 AND token_hash = $6)",
        )
        .bind(&user_id)
        .bind(account_sid)
        .bind(now)
        .bind(app)
        .bind(provider)
        .bind(&hash)
        .execute(conn)
        .await?;
        if inserted == 1 {
            let registration_id =
                insert_registration(conn, account_sid, app, &user_id, now).await?;
            insert_device(conn, account_sid, request, &hash, &registration_id, now).await?;
            return Ok(Registered {
                registration_id,
                user_id,
                change: RegisterChange::NewUser,
            });
        }
    }

    // One statement (on PostgreSQL, one round trip) for the three checks: does the app exist,
    // does the named user exist, and who has the device.
    let row = query(
        "SELECT \
           CAST(CASE WHEN EXISTS (SELECT 1 FROM apps WHERE account_sid = $1 AND name = $2) \
                THEN 1 ELSE 0 END AS BIGINT), \
           CAST(CASE WHEN $6 IS NULL \
                  OR EXISTS (SELECT 1 FROM users WHERE account_sid = $1 AND id = $6) \
                THEN 1 ELSE 0 END AS BIGINT), \
           d.registration_id, r.user_id, d.status \
         FROM (SELECT 1 AS one) AS checks \
         LEFT JOIN devices d ON d.account_sid = $1 AND d.app_name = $2 AND d.provider = $3 \
           AND d.token_hash = $4 AND d.token = $5 \
         LEFT JOIN device_registrations r ON r.id = d.registration_id",
    )
    .bind(account_sid)
    .bind(app)
    .bind(provider)
    .bind(&hash)
    .bind(token)
    .bind(request.user_id)
    .fetch_one(conn)
    .await?;
    let app_exists: i64 = row.try_get(0)?;
    if app_exists == 0 {
        return Err(StoreError::invalid(
            "appName",
            format!("app {app:?} does not exist; an app is made by its first credential"),
        ));
    }
    let user_exists: i64 = row.try_get(1)?;
    if let (Some(user_id), 0) = (request.user_id, user_exists) {
        return Err(StoreError::invalid(
            "userId",
            format!("user {user_id} does not exist"),
        ));
    }
    let existing = match row.try_get::<Option<String>>(2)? {
        None => None,
        Some(registration_id) => {
            let status: String = row.try_get(4)?;
            Some(ExistingDevice {
                registration_id,
                user_id: row.try_get(3)?,
                status: stored_status(&status)?,
            })
        }
    };
    let now = now_ms();

    // Already registered for this user (or for anyone, when no user is named): idempotent,
    // except that a dead device comes back to life.
    if let Some(device) = existing
        .as_ref()
        .filter(|d| request.user_id.is_none_or(|user| user == d.user_id))
    {
        let change = if device.status == DeviceStatus::Invalid {
            query(
                "UPDATE devices SET status = 'ACTIVE', invalidated_at = NULL, last_error = NULL \
                 WHERE account_sid = $1 AND app_name = $2 AND provider = $3 AND token_hash = $4",
            )
            .bind(account_sid)
            .bind(app)
            .bind(provider)
            .bind(&hash)
            .execute(conn)
            .await?;
            touch_registration(conn, &device.registration_id, now).await?;
            RegisterChange::Reactivated
        } else {
            RegisterChange::Unchanged
        };
        return Ok(Registered {
            registration_id: device.registration_id.clone(),
            user_id: device.user_id.clone(),
            change,
        });
    }

    // The registration the device goes to.
    let (user_id, registration_id, mut change) = match request.user_id {
        None => {
            let user_id = ids::new_type_id(ids::USER);
            query(
                "INSERT INTO users (id, account_sid, created_at, updated_at) \
                 VALUES ($1, $2, $3, $3)",
            )
            .bind(&user_id)
            .bind(account_sid)
            .bind(now)
            .execute(conn)
            .await?;
            let registration_id =
                insert_registration(conn, account_sid, app, &user_id, now).await?;
            (user_id, registration_id, RegisterChange::NewUser)
        }
        Some(user_id) => {
            let found = query(
                "SELECT id FROM device_registrations \
                 WHERE account_sid = $1 AND user_id = $2 AND app_name = $3",
            )
            .bind(account_sid)
            .bind(user_id)
            .bind(app)
            .fetch_optional(conn)
            .await?;
            let registration_id = match found {
                Some(row) => {
                    let id: String = row.try_get(0)?;
                    touch_registration(conn, &id, now).await?;
                    id
                }
                None => insert_registration(conn, account_sid, app, user_id, now).await?,
            };
            (user_id.to_owned(), registration_id, RegisterChange::Added)
        }
    };

    match existing {
        Some(previous) => {
            // Another user's device: it moves, as a device new to this registration.
            query(
                "UPDATE devices SET registration_id = $1, status = 'ACTIVE', \
                        invalidated_at = NULL, last_error = NULL, created_at = $2 \
                 WHERE account_sid = $3 AND app_name = $4 AND provider = $5 AND token_hash = $6",
            )
            .bind(&registration_id)
            .bind(now)
            .bind(account_sid)
            .bind(app)
            .bind(provider)
            .bind(&hash)
            .execute(conn)
            .await?;
            let deleted = settle_registration(conn, &previous.registration_id, now).await?;
            change = RegisterChange::Moved {
                from_registration: previous.registration_id,
                from_registration_deleted: deleted,
            };
        }
        None => {
            insert_device(conn, account_sid, request, &hash, &registration_id, now).await?;
        }
    }
    Ok(Registered {
        registration_id,
        user_id,
        change,
    })
}

async fn mark_invalid_in(
    conn: &mut Conn<'_>,
    device: &DeadDevice,
    now: i64,
) -> Result<Option<InvalidatedDevice>> {
    let row = query(
        "UPDATE devices SET status = 'INVALID', invalidated_at = $1, last_error = $2 \
         WHERE account_sid = $3 AND app_name = $4 AND provider = $5 AND token_hash = $6 \
           AND token = $7 AND status = 'ACTIVE' \
         RETURNING registration_id",
    )
    .bind(now)
    .bind(device.error.to_string())
    .bind(&device.account_sid)
    .bind(device.app_name.as_str())
    .bind(device.provider.as_str())
    .bind(token_hash(&device.token))
    .bind(&device.token)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let registration_id: String = row.try_get(0)?;
    let user_id: String =
        query("UPDATE device_registrations SET updated_at = $1 WHERE id = $2 RETURNING user_id")
            .bind(now)
            .bind(&registration_id)
            .fetch_one(conn)
            .await?
            .try_get(0)?;
    Ok(Some(InvalidatedDevice {
        account_sid: device.account_sid.clone(),
        app_name: device.app_name.as_str().to_owned(),
        registration_id,
        user_id,
        provider: device.provider,
        token: device.token.clone(),
    }))
}

/// The device of `request` (its token hash `hash`), ACTIVE in registration `registration_id`.
async fn insert_device(
    conn: &mut Conn<'_>,
    account_sid: &str,
    request: &RegisterDevice<'_>,
    hash: &str,
    registration_id: &str,
    now: i64,
) -> Result<u64> {
    query(
        "INSERT INTO devices (account_sid, app_name, provider, token_hash, token, \
                              registration_id, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'ACTIVE', $7)",
    )
    .bind(account_sid)
    .bind(request.app_name.as_str())
    .bind(request.provider.as_str())
    .bind(hash)
    .bind(request.token.as_str())
    .bind(registration_id)
    .bind(now)
    .execute(conn)
    .await
}

async fn insert_registration(
    conn: &mut Conn<'_>,
    account_sid: &str,
    app: &str,
    user_id: &str,
    now: i64,
) -> Result<String> {
    let id = ids::new_type_id(ids::DEVICE_REGISTRATION);
    query(
        "INSERT INTO device_registrations (id, account_sid, app_name, user_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&id)
    .bind(account_sid)
    .bind(app)
    .bind(user_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(id)
}

async fn touch_registration(conn: &mut Conn<'_>, id: &str, now: i64) -> Result<()> {
    query("UPDATE device_registrations SET updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// After a device left registration `id`: deletes it when it has no device left (returns `true`),
/// else bumps its `updated_at`.
async fn settle_registration(conn: &mut Conn<'_>, id: &str, now: i64) -> Result<bool> {
    let deleted = query(
        "DELETE FROM device_registrations WHERE id = $1 \
         AND NOT EXISTS (SELECT 1 FROM devices WHERE registration_id = $1)",
    )
    .bind(id)
    .execute(conn)
    .await?;
    if deleted == 0 {
        touch_registration(conn, id, now).await?;
    }
    Ok(deleted > 0)
}

#[async_trait]
impl DeviceStore for SqlStore {
    async fn register_device(
        &self,
        account_sid: &str,
        request: &RegisterDevice<'_>,
    ) -> Result<Registered> {
        if let Some(group) = self.group_commit() {
            let account_sid = account_sid.to_owned();
            let (app_name, provider, token) = (
                request.app_name.clone(),
                request.provider,
                request.token.clone(),
            );
            let user_id = request.user_id.map(str::to_owned);
            return group
                .write(move |conn| {
                    let (account_sid, app_name, token, user_id) = (
                        account_sid.clone(),
                        app_name.clone(),
                        token.clone(),
                        user_id.clone(),
                    );
                    Box::pin(async move {
                        let request = RegisterDevice {
                            app_name: &app_name,
                            provider,
                            token: &token,
                            user_id: user_id.as_deref(),
                        };
                        register_in(conn, Backend::Sqlite, &account_sid, &request).await
                    })
                })
                .await;
        }
        write_tx!(self, |tx| {
            register_in(
                &mut Conn::Sqlx(&mut tx),
                self.backend(),
                account_sid,
                request,
            )
            .await?
        })
    }

    async fn get_device_registration(
        &self,
        account_sid: &str,
        registration_id: &str,
    ) -> Result<DeviceRegistration> {
        let sql = with_devices_sql(&format!(
            "SELECT {REGISTRATION_COLUMNS} FROM device_registrations \
             WHERE account_sid = $1 AND id = $2"
        ));
        let rows = sqlx::query(&sql)
            .bind(account_sid)
            .bind(registration_id)
            .fetch_all(self.reader())
            .await?;
        registrations_from_rows(&rows)?
            .pop()
            .ok_or(StoreError::NotFound)
    }

    async fn list_device_registrations(
        &self,
        account_sid: &str,
        user_id: &str,
        app_name: Option<&AppName>,
        page: &PageRequest,
    ) -> Result<Page<DeviceRegistration>> {
        let (at, id) = page.bounds();
        let app_condition = if app_name.is_some() {
            "AND app_name = $6"
        } else {
            ""
        };
        let sql = with_devices_sql(&format!(
            "SELECT {REGISTRATION_COLUMNS} FROM device_registrations \
             WHERE account_sid = $1 AND user_id = $2 {app_condition} AND {} \
             ORDER BY created_at DESC, id DESC LIMIT $5",
            keyset_condition("created_at", "id", 3, 4)
        ));
        let mut query = sqlx::query(&sql)
            .bind(account_sid)
            .bind(user_id)
            .bind(at)
            .bind(id)
            .bind(page.limit + 1);
        if let Some(app) = app_name {
            query = query.bind(app.as_str());
        }
        let rows = query.fetch_all(self.reader()).await?;
        Ok(Page::from_rows(
            registrations_from_rows(&rows)?,
            page.limit,
            |registration| Cursor {
                at: registration.created_at,
                id: registration.id.clone(),
            },
        ))
    }

    async fn delete_device_registration(
        &self,
        account_sid: &str,
        registration_id: &str,
    ) -> Result<()> {
        // One statement: the devices go with it (ON DELETE CASCADE).
        let deleted =
            sqlx::query("DELETE FROM device_registrations WHERE account_sid = $1 AND id = $2")
                .bind(account_sid)
                .bind(registration_id)
                .execute(self.writer())
                .await?
                .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn remove_device(
        &self,
        account_sid: &str,
        registration_id: &str,
        token: &str,
    ) -> Result<DeviceRemoval> {
        write_tx!(self, |tx| {
            let exists = sqlx::query(
                "SELECT 1 FROM device_registrations WHERE account_sid = $1 AND id = $2",
            )
            .bind(account_sid)
            .bind(registration_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
            if !exists {
                return Err(StoreError::NotFound);
            }
            let removed = sqlx::query(
                "DELETE FROM devices WHERE registration_id = $1 AND token_hash = $2 AND token = $3",
            )
            .bind(registration_id)
            .bind(token_hash(token))
            .bind(token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if removed == 0 {
                DeviceRemoval::NoSuchDevice
            } else {
                DeviceRemoval::Removed {
                    registration_deleted: settle_registration(
                        &mut Conn::Sqlx(&mut tx),
                        registration_id,
                        now_ms(),
                    )
                    .await?,
                }
            }
        })
    }

    async fn active_devices_for_users(
        &self,
        account_sid: &str,
        app_name: &AppName,
        user_ids: &[String],
    ) -> Result<Vec<(String, Provider, String)>> {
        let unique: Vec<&String> = user_ids
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // The user list drives the join (`CROSS JOIN` fixes that order on SQLite): without
        // statistics SQLite would otherwise start from every registration of the app
        // (`device_registrations_by_app`) and test each against the list.
        let users = match self.backend() {
            Backend::Sqlite => "json_each($3) AS u",
            Backend::Postgres => "jsonb_array_elements_text($3::text::jsonb) AS u(value)",
        };
        // The devices come back as one JSON array in one row: through sqlx each row is a hand-off
        // from SQLite's worker thread (or a message from PostgreSQL), and a planning step reads a
        // thousand.
        let rows = format!(
            "SELECT r.user_id AS user_id, d.provider AS provider, d.token AS token, \
             d.created_at AS created_at \
             FROM {users} CROSS JOIN device_registrations r \
             JOIN devices d ON d.registration_id = r.id \
             WHERE r.user_id = u.value AND r.app_name = $2 AND r.account_sid = $1 \
               AND d.status = 'ACTIVE'"
        );
        let order = "user_id, created_at, provider, token";
        let sql = match self.backend() {
            Backend::Sqlite => format!(
                "SELECT json_group_array(json_array(user_id, provider, token) ORDER BY {order}) \
                 FROM ({rows})"
            ),
            Backend::Postgres => format!(
                "SELECT COALESCE(json_agg(json_build_array(user_id, provider, token) \
                 ORDER BY {order}), '[]')::text FROM ({rows}) AS found"
            ),
        };
        let users_json =
            serde_json::to_string(&unique).map_err(|e| StoreError::Config(e.to_string()))?;
        // On sqlx's reader pool, not an embedded reader: a thousand users' join, sort and JSON
        // take milliseconds, too long to run on an async worker thread.
        let found: String = sqlx::query_scalar(&sql)
            .bind(account_sid)
            .bind(app_name.as_str())
            .bind(users_json)
            .fetch_one(self.reader())
            .await?;
        let found: Vec<(String, String, String)> = serde_json::from_str(&found)
            .map_err(|e| StoreError::Config(format!("devices of users: {e}")))?;
        found
            .into_iter()
            .map(|(user, provider, token)| Ok((user, stored_provider(&provider)?, token)))
            .collect()
    }

    async fn mark_device_invalid(
        &self,
        account_sid: &str,
        app_name: &AppName,
        provider: Provider,
        token: &str,
        error: &Value,
    ) -> Result<Option<InvalidatedDevice>> {
        let device = DeadDevice {
            account_sid: account_sid.to_owned(),
            app_name: app_name.clone(),
            provider,
            token: token.to_owned(),
            error: error.clone(),
        };
        Ok(self
            .mark_devices_invalid(std::slice::from_ref(&device))
            .await?
            .pop())
    }

    async fn mark_devices_invalid(&self, devices: &[DeadDevice]) -> Result<Vec<InvalidatedDevice>> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        // One order for every batch, so concurrent batches lock rows without deadlocking.
        let mut ordered: Vec<&DeadDevice> = devices.iter().collect();
        ordered.sort_by(|a, b| {
            (&a.account_sid, &a.app_name, a.provider.as_str(), &a.token).cmp(&(
                &b.account_sid,
                &b.app_name,
                b.provider.as_str(),
                &b.token,
            ))
        });
        write_tx!(self, |tx| {
            let now = now_ms();
            let mut invalidated = Vec::new();
            for device in &ordered {
                if let Some(done) = mark_invalid_in(&mut Conn::Sqlx(&mut tx), device, now).await? {
                    invalidated.push(done);
                }
            }
            invalidated
        })
    }
}
