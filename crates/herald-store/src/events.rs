//! Events: each account's webhook subscription (`/v1/PushNotifications/EventSubscription`) and
//! the outbox of CloudEvents waiting to be POSTed to it.
//!
//! - The subscription is one row per account: a URL and a signing secret. The secret is sealed
//!   with the store's AES-256-GCM box (it must be recovered to sign each delivery, so it cannot be
//!   hashed) and never leaves the store but inside a [`ClaimedEvent`].
//! - [`insert_events`] records events inside the caller's transaction, so the delivery engine
//!   records an event if and only if the state change it describes commits. Only accounts with a
//!   subscription get rows; everything else costs one small `SELECT`.
//! - The sender (`herald_delivery::events`) claims due events in batches under a lease
//!   ([`EventStore::claim_events`]; `FOR UPDATE SKIP LOCKED` on PostgreSQL, so several nodes share
//!   the work), POSTs them, and reports back ([`EventStore::finish_events`]): a delivered event is
//!   deleted, a failed one is rescheduled, and one whose next attempt would fall beyond the
//!   maximum age (24 h by default) is dropped with a warning.
//!
//! A claim moves the event's `next_attempt_at` to the end of the lease: an event whose sender died
//! becomes due again by itself, and the `lease` token keeps a late answer of the old claim from
//! rescheduling an event that another claim holds. Delivery is at least once; receivers dedupe on
//! the CloudEvents `id`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use async_trait::async_trait;
use herald_core::time::{format_rfc3339, now_ms};
use serde_json::{Value, json};
use sqlx::Row;

use crate::sql::{Conn, query};
use crate::{Backend, Result, SqlStore, StoreError};

/// The CloudEvents `type` values Herald emits.
pub mod types {
    pub const OPERATION_SCHEDULED: &str = "com.twilio.comms-api.operation.scheduled";
    pub const OPERATION_PROCESSING: &str = "com.twilio.comms-api.operation.processing";
    pub const OPERATION_COMPLETED: &str = "com.twilio.comms-api.operation.completed";
    pub const PUSH_NOTIFICATION_FAILED: &str = "com.herald.push-notification.failed";
    pub const DEVICE_INVALIDATED: &str = "com.herald.device.invalidated";

    /// Every type, in the order of the docs.
    pub const ALL: &[&str] = &[
        OPERATION_SCHEDULED,
        OPERATION_PROCESSING,
        OPERATION_COMPLETED,
        PUSH_NOTIFICATION_FAILED,
        DEVICE_INVALIDATED,
    ];
}

/// The CloudEvents `source` of every Herald event.
pub const EVENT_SOURCE: &str = "/v1/PushNotifications";

/// The most characters a subscription URL may have.
pub const MAX_URL_CHARS: usize = 2048;
/// The most bytes a signing secret may have.
pub const MAX_SECRET_BYTES: usize = 1024;

/// How many rows one `INSERT` or `IN (...)` list carries.
const CHUNK: usize = 100;

/// An account's event subscription as the API shows it. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSubscription {
    pub account_sid: String,
    pub url: String,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// An event to record: the store gives it its id (a UUID) and time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub account_sid: String,
    /// One of [`types`].
    pub event_type: Cow<'static, str>,
    /// The CloudEvents `data` object.
    pub data: Value,
}

impl NewEvent {
    pub fn new(
        account_sid: impl Into<String>,
        event_type: impl Into<Cow<'static, str>>,
        data: Value,
    ) -> Self {
        Self {
            account_sid: account_sid.into(),
            event_type: event_type.into(),
            data,
        }
    }

    /// `com.twilio.comms-api.operation.{scheduled,processing,completed}`, with
    /// `data: {operationId, status, stats}`. `event_type` is one of the three operation
    /// [`types`]; `stats` is the operation's stats object as the API shows it.
    pub fn operation(
        account_sid: impl Into<String>,
        event_type: &'static str,
        operation_id: &str,
        status: &str,
        stats: Value,
    ) -> Self {
        Self::new(
            account_sid,
            event_type,
            json!({"operationId": operation_id, "status": status, "stats": stats}),
        )
    }

    /// `com.herald.push-notification.failed`, with `data: {pushNotificationId, operationId,
    /// error}`; `error` is the notification's error object as the API shows it
    /// (`{code, message, providerStatus, providerReason}`).
    pub fn push_notification_failed(
        account_sid: impl Into<String>,
        push_notification_id: &str,
        operation_id: &str,
        error: Value,
    ) -> Self {
        Self::new(
            account_sid,
            types::PUSH_NOTIFICATION_FAILED,
            json!({
                "pushNotificationId": push_notification_id,
                "operationId": operation_id,
                "error": error,
            }),
        )
    }

    /// `com.herald.device.invalidated`, with `data: {deviceRegistrationId, userId, appName,
    /// provider, token}`.
    pub fn device_invalidated(
        account_sid: impl Into<String>,
        device_registration_id: &str,
        user_id: &str,
        app_name: &str,
        provider: &str,
        token: &str,
    ) -> Self {
        Self::new(
            account_sid,
            types::DEVICE_INVALIDATED,
            json!({
                "deviceRegistrationId": device_registration_id,
                "userId": user_id,
                "appName": app_name,
                "provider": provider,
                "token": token,
            }),
        )
    }

    /// The CloudEvents `subject`: the ID of the resource the event is about.
    fn subject(&self) -> Option<&str> {
        let key = match self.event_type.as_ref() {
            types::PUSH_NOTIFICATION_FAILED => "pushNotificationId",
            types::DEVICE_INVALIDATED => "deviceRegistrationId",
            _ => "operationId",
        };
        self.data.get(key).and_then(Value::as_str)
    }

    /// The CloudEvents 1.0 JSON (structured mode) of this event with `id` and `time`.
    pub fn cloud_event(&self, id: &str, at_ms: i64) -> Value {
        let mut event = json!({
            "specversion": "1.0",
            "id": id,
            "type": self.event_type,
            "source": EVENT_SOURCE,
            "time": format_rfc3339(at_ms),
            "datacontenttype": "application/json",
            "accountsid": self.account_sid,
            "data": self.data,
        });
        if let Some(subject) = self.subject() {
            event["subject"] = Value::String(subject.to_owned());
        }
        event
    }
}

/// A subscription's signing secret. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

/// An event claimed for delivery, with where to send it and what to sign it with.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    /// The CloudEvents id.
    pub id: String,
    pub account_sid: String,
    pub event_type: String,
    /// The CloudEvent JSON: POST exactly these bytes and sign them.
    pub body: String,
    /// This attempt's number (1 on the first delivery).
    pub attempts: i64,
    /// Epoch milliseconds when the event was recorded.
    pub created_at: i64,
    /// The claim's token; [`EventStore::finish_events`] needs it.
    pub lease: String,
    /// The subscription's URL and secret as they are now (a `PUT` since the event was recorded
    /// takes effect for its next attempt).
    pub url: String,
    pub secret: SigningSecret,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// The receiver answered 2xx: the event is deleted.
    Delivered,
    /// Try again at `at` (epoch ms) — unless that is past the event's maximum age, in which case
    /// it is dropped. `error` says what went wrong (no secrets).
    Retry { at: i64, error: String },
}

/// What [`EventStore::finish_events`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinishedEvents {
    pub delivered: u64,
    pub rescheduled: u64,
    /// Dropped: the next attempt would have fallen beyond the maximum age.
    pub dropped: u64,
    /// Ignored: another claim holds the event now (this claim's lease expired).
    pub stale: u64,
}

#[async_trait]
pub trait EventStore {
    /// Creates or replaces the account's subscription. `url` and `secret` are checked by the API
    /// (an `http(s)` URL up to [`MAX_URL_CHARS`]; a non-empty secret up to [`MAX_SECRET_BYTES`]);
    /// the store refuses empty ones and oversized ones as well. Events waiting for a retry become
    /// due at once, so a fixed URL gets the backlog without waiting out the backoff.
    async fn put_event_subscription(
        &self,
        account_sid: &str,
        url: &str,
        secret: &str,
    ) -> Result<EventSubscription>;
    /// The account's subscription, or `NotFound`.
    async fn get_event_subscription(&self, account_sid: &str) -> Result<EventSubscription>;
    /// Deletes the account's subscription and every event still waiting for it; `NotFound` when
    /// it has none.
    async fn delete_event_subscription(&self, account_sid: &str) -> Result<()>;

    /// [`insert_events`] in a transaction of its own, for callers outside the delivery engine.
    /// Returns how many events were recorded (those of accounts with a subscription).
    async fn record_events(&self, events: &[NewEvent]) -> Result<u64>;

    /// Claims up to `limit` due events for `lease_ms` milliseconds, oldest due first, and counts
    /// the attempt. Events whose subscription is gone are deleted, not returned.
    async fn claim_events(&self, limit: i64, lease_ms: i64) -> Result<Vec<ClaimedEvent>>;
    /// Writes the outcomes of claimed events in one transaction: delivered → deleted;
    /// retry → rescheduled, or dropped (with a warning log) when the retry time is more than
    /// `max_age_ms` after the event was recorded. Outcomes of a claim whose lease another claim
    /// took over are ignored (but a delivery still deletes the event).
    async fn finish_events(
        &self,
        finished: &[(ClaimedEvent, EventOutcome)],
        max_age_ms: i64,
    ) -> Result<FinishedEvents>;
    /// When the next event is due (epoch ms), or `None` when there is none.
    async fn next_event_due(&self) -> Result<Option<i64>>;
}

/// Records `events` on `conn`, inside the caller's transaction, for the accounts that have a
/// subscription (the others' are skipped). Each gets a fresh UUID (v7) as its CloudEvents `id`
/// and now as its `time`. Returns how many were recorded. One `SELECT` when no account of the
/// batch subscribes; otherwise batched `INSERT ... SELECT ... WHERE EXISTS`.
pub async fn insert_events(conn: &mut sqlx::AnyConnection, events: &[NewEvent]) -> Result<u64> {
    insert_events_on(&mut Conn::Sqlx(conn), events).await
}

/// [`insert_events`] on either kind of connection (the group commit's own, on SQLite).
pub(crate) async fn insert_events_on(conn: &mut Conn<'_>, events: &[NewEvent]) -> Result<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    let accounts: Vec<&str> = events
        .iter()
        .map(|e| e.account_sid.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut subscribed: HashSet<String> = HashSet::new();
    for chunk in accounts.chunks(CHUNK) {
        let sql = format!(
            "SELECT account_sid FROM event_subscriptions WHERE account_sid IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = query(&sql);
        for account in chunk {
            query = query.bind(*account);
        }
        for row in query.fetch_all(conn).await? {
            subscribed.insert(row.try_get::<String>(0)?);
        }
    }
    if subscribed.is_empty() {
        return Ok(0);
    }
    let now = now_ms();
    let rows: Vec<(String, &NewEvent)> = events
        .iter()
        .filter(|e| subscribed.contains(&e.account_sid))
        .map(|e| (uuid::Uuid::now_v7().to_string(), e))
        .collect();
    let mut inserted = 0;
    for chunk in rows.chunks(CHUNK) {
        let values = (0..chunk.len())
            .map(|i| {
                let b = i * 4;
                format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let now_param = chunk.len() * 4 + 1;
        // SQLite and PostgreSQL both name the columns of a bare VALUES list column1, column2, ...
        let sql = format!(
            "INSERT INTO events (id, account_sid, event_type, body, attempts, next_attempt_at, \
             created_at) \
             SELECT v.column1, v.column2, v.column3, v.column4, 0, ${now_param}, ${now_param} \
             FROM (VALUES {values}) AS v \
             WHERE EXISTS (SELECT 1 FROM event_subscriptions s WHERE s.account_sid = v.column2)"
        );
        let mut query = query(&sql);
        for (id, event) in chunk {
            query = query
                .bind(id.as_str())
                .bind(event.account_sid.as_str())
                .bind(event.event_type.as_ref())
                .bind(event.cloud_event(id, now).to_string());
        }
        inserted += query.bind(now).execute(conn).await?;
    }
    Ok(inserted)
}

/// `$first, $first+1, ...` (`count` of them).
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The store's own check of a subscription (the API checks more, with JSON paths).
fn check_subscription(url: &str, secret: &str) -> Result<()> {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(StoreError::invalid(
            "url",
            "url must be an http or https URL",
        ));
    }
    if url.chars().count() > MAX_URL_CHARS {
        return Err(StoreError::invalid(
            "url",
            format!("url must be at most {MAX_URL_CHARS} characters"),
        ));
    }
    if secret.is_empty() {
        return Err(StoreError::invalid("secret", "secret must not be empty"));
    }
    if secret.len() > MAX_SECRET_BYTES {
        return Err(StoreError::invalid(
            "secret",
            format!("secret must be at most {MAX_SECRET_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn subscription_from_row(row: &sqlx::any::AnyRow) -> EventSubscription {
    EventSubscription {
        account_sid: row.get(0),
        url: row.get(1),
        created_at: row.get(2),
        updated_at: row.get(3),
    }
}

#[async_trait]
impl EventStore for SqlStore {
    async fn put_event_subscription(
        &self,
        account_sid: &str,
        url: &str,
        secret: &str,
    ) -> Result<EventSubscription> {
        check_subscription(url, secret)?;
        let sealed = self.secrets().seal(secret.as_bytes());
        let now = now_ms();
        let mut tx = self.writer().begin().await?;
        let row = sqlx::query(
            "INSERT INTO event_subscriptions (account_sid, url, secret, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (account_sid) DO UPDATE SET url = excluded.url, \
             secret = excluded.secret, updated_at = excluded.updated_at \
             RETURNING account_sid, url, created_at, updated_at",
        )
        .bind(account_sid)
        .bind(url)
        .bind(sealed)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE events SET next_attempt_at = $1 \
             WHERE account_sid = $2 AND lease IS NULL AND next_attempt_at > $1",
        )
        .bind(now)
        .bind(account_sid)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(subscription_from_row(&row))
    }

    async fn get_event_subscription(&self, account_sid: &str) -> Result<EventSubscription> {
        let row = sqlx::query(
            "SELECT account_sid, url, created_at, updated_at FROM event_subscriptions \
             WHERE account_sid = $1",
        )
        .bind(account_sid)
        .fetch_optional(self.reader())
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(subscription_from_row(&row))
    }

    async fn delete_event_subscription(&self, account_sid: &str) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        let deleted = sqlx::query("DELETE FROM event_subscriptions WHERE account_sid = $1")
            .bind(account_sid)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM events WHERE account_sid = $1")
            .bind(account_sid)
            .execute(&mut *tx)
            .await?;
        // Committed (not dropped) either way: a dropped transaction is rolled back only when
        // its pooled connection is next used, and meanwhile holds its locks.
        tx.commit().await?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn record_events(&self, events: &[NewEvent]) -> Result<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut tx = self.writer().begin().await?;
        let inserted = insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn claim_events(&self, limit: i64, lease_ms: i64) -> Result<Vec<ClaimedEvent>> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let lease = uuid::Uuid::new_v4().simple().to_string();
        // On PostgreSQL the pick is a MATERIALIZED CTE run exactly once: a LIMIT subquery
        // inside IN may run again per row, and with SKIP LOCKED each run picks other rows.
        // SQLite has one writer, so the plain subquery is exact.
        let pick = "SELECT id FROM events WHERE next_attempt_at <= $3 \
                    ORDER BY next_attempt_at, id LIMIT $4";
        let set = "attempts = attempts + 1, next_attempt_at = $1, lease = $2";
        let returning = "id, account_sid, event_type, body, attempts, created_at";
        let sql = match self.backend() {
            Backend::Postgres => format!(
                "WITH picked AS MATERIALIZED ({pick} FOR UPDATE SKIP LOCKED) \
                 UPDATE events SET {set} WHERE id IN (SELECT id FROM picked) \
                 AND next_attempt_at <= $3 RETURNING {returning}"
            ),
            Backend::Sqlite => {
                format!("UPDATE events SET {set} WHERE id IN ({pick}) RETURNING {returning}")
            }
        };
        let rows = sqlx::query(&sql)
            .bind(now.saturating_add(lease_ms.max(0)))
            .bind(&lease)
            .bind(now)
            .bind(limit)
            .fetch_all(self.writer())
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        struct Claimed {
            id: String,
            account_sid: String,
            event_type: String,
            body: String,
            attempts: i64,
            created_at: i64,
        }
        let mut claimed: Vec<Claimed> = rows
            .iter()
            .map(|row| Claimed {
                id: row.get(0),
                account_sid: row.get(1),
                event_type: row.get(2),
                body: row.get(3),
                attempts: row.get(4),
                created_at: row.get(5),
            })
            .collect();
        claimed.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));

        let accounts: Vec<&str> = claimed
            .iter()
            .map(|c| c.account_sid.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut subscriptions: HashMap<String, (String, SigningSecret)> = HashMap::new();
        for chunk in accounts.chunks(CHUNK) {
            let sql = format!(
                "SELECT account_sid, url, secret FROM event_subscriptions \
                 WHERE account_sid IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for account in chunk {
                query = query.bind(*account);
            }
            for row in query.fetch_all(self.reader()).await? {
                let sealed: Vec<u8> = row.get(2);
                let secret = SigningSecret(self.secrets().open(&sealed)?);
                subscriptions.insert(row.get(0), (row.get(1), secret));
            }
        }

        let mut out = Vec::with_capacity(claimed.len());
        let mut orphans = Vec::new();
        for event in claimed {
            match subscriptions.get(&event.account_sid) {
                Some((url, secret)) => out.push(ClaimedEvent {
                    id: event.id,
                    account_sid: event.account_sid,
                    event_type: event.event_type,
                    body: event.body,
                    attempts: event.attempts,
                    created_at: event.created_at,
                    lease: lease.clone(),
                    url: url.clone(),
                    secret: secret.clone(),
                }),
                None => orphans.push(event.id),
            }
        }
        if !orphans.is_empty() {
            // Recorded while the subscription was being deleted: nobody wants them any more.
            tracing::debug!(
                count = orphans.len(),
                "dropping events whose subscription is gone"
            );
            for chunk in orphans.chunks(CHUNK) {
                let sql = format!(
                    "DELETE FROM events WHERE lease = $1 AND id IN ({})",
                    placeholders(2, chunk.len())
                );
                let mut query = sqlx::query(&sql).bind(&lease);
                for id in chunk {
                    query = query.bind(id.as_str());
                }
                query.execute(self.writer()).await?;
            }
        }
        Ok(out)
    }

    async fn finish_events(
        &self,
        finished: &[(ClaimedEvent, EventOutcome)],
        max_age_ms: i64,
    ) -> Result<FinishedEvents> {
        let mut summary = FinishedEvents::default();
        if finished.is_empty() {
            return Ok(summary);
        }
        let mut tx = self.writer().begin().await?;
        for (event, outcome) in finished {
            match outcome {
                EventOutcome::Delivered => {
                    // Deleted whoever holds it now: it has reached the receiver.
                    sqlx::query("DELETE FROM events WHERE id = $1")
                        .bind(&event.id)
                        .execute(&mut *tx)
                        .await?;
                    summary.delivered += 1;
                }
                EventOutcome::Retry { at, error } => {
                    let expired = *at > event.created_at.saturating_add(max_age_ms);
                    let affected = if expired {
                        sqlx::query("DELETE FROM events WHERE id = $1 AND lease = $2")
                            .bind(&event.id)
                            .bind(&event.lease)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected()
                    } else {
                        sqlx::query(
                            "UPDATE events SET next_attempt_at = $1, lease = NULL, \
                             last_error = $2 WHERE id = $3 AND lease = $4",
                        )
                        .bind(*at)
                        .bind(error.as_str())
                        .bind(&event.id)
                        .bind(&event.lease)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                    };
                    if affected == 0 {
                        summary.stale += 1;
                    } else if expired {
                        tracing::warn!(
                            event_id = %event.id,
                            account_sid = %event.account_sid,
                            event_type = %event.event_type,
                            attempts = event.attempts,
                            last_error = %error,
                            "event dropped: not delivered within its maximum age"
                        );
                        summary.dropped += 1;
                    } else {
                        summary.rescheduled += 1;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(summary)
    }

    async fn next_event_due(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(next_attempt_at) FROM events")
            .fetch_one(self.reader())
            .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }
}
