//! The send path's records and the delivery queue: operations (one per accepted send request),
//! push notifications (one per resolved device; the rows are also the queue), and idempotency
//! keys. The delivery engine (`herald-delivery`) drives the queue through the engine half of
//! [`DeliveryStore`]; the API reads and cancels through the other half.
//!
//! Queue discipline (see `docs/delivery.md`):
//! - a notification is `SCHEDULED` (waits for `due_at` = sendAt), `QUEUED` (claimable when
//!   `due_at <= now`), or final (`SENT`, `FAILED`, `CANCELED`);
//! - a claim takes a batch of due `QUEUED` rows, moves their `due_at` to the end of the lease and
//!   stamps them with a claim token (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so nodes never take the
//!   same rows; SQLite: one `UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING` on the single
//!   writer); the planner may instead insert its QUEUED rows already claimed
//!   ([`PlanBatch::claim`]). An outcome write names the token, so a node whose lease expired and
//!   was taken over cannot overwrite the new owner's result. A row whose lease expires is due
//!   again by itself;
//! - the operation's stats are counters updated in the same transaction as every status change,
//!   so they always add up; the operation is `COMPLETED` (or `CANCELED` after a cancel) in the
//!   transaction that leaves it with nothing to plan, schedule or send;
//! - lifecycle events (`operation.scheduled` / `processing` / `completed`,
//!   `push-notification.failed`) are written to the events outbox ([`crate::insert_events`]) in
//!   the same transaction as the change they report, so an event exists if and only if the change
//!   committed (see `docs/events.md`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use herald_core::send::SendRequest;
use herald_core::time::now_ms;
use herald_core::{Provider, Tags, ids};
use serde_json::Value;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::sql::{Conn, Query, Row, execute_rows_together, query};

use crate::events::{NewEvent, insert_events_on, types};
use crate::{Backend, Cursor, Page, PageRequest, Result, SqlStore, StoreError, keyset_condition};

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// An idempotency key and the hash of the canonical parsed JSON body it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

/// A validated send request to store.
#[derive(Debug, Clone)]
pub struct NewOperation {
    pub account_sid: String,
    pub request: SendRequest,
    pub idempotency: Option<Idempotency>,
}

/// What [`DeliveryStore::create_operation`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedOperation {
    pub id: String,
    /// The same key with the same body within 24 h: `id` is the first operation, nothing new
    /// was stored.
    pub replayed: bool,
}

/// `total` is the sum of the other six but `recipients`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperationStats {
    pub total: i64,
    pub recipients: i64,
    pub unaddressable: i64,
    pub scheduled: i64,
    pub queued: i64,
    pub sent: i64,
    pub failed: i64,
    pub canceled: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRecord {
    pub id: String,
    /// `SCHEDULED` | `PROCESSING` | `COMPLETED` | `CANCELED`
    pub status: String,
    pub stats: OperationStats,
    pub created_at: i64,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
}

/// Operation list filters (AND).
#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    pub status: Option<String>,
    /// `created_at >= start_ms`
    pub start_ms: Option<i64>,
    /// `created_at <= end_ms`
    pub end_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRecord {
    pub id: String,
    pub operation_id: String,
    pub provider: Provider,
    pub token: String,
    pub credential_id: String,
    /// `SCHEDULED` | `QUEUED` | `SENT` | `FAILED` | `CANCELED`
    pub status: String,
    pub priority: String,
    pub tags: Tags,
    pub user_id: Option<String>,
    pub attempts: i64,
    /// `{code, message, providerStatus, providerReason}`
    pub error: Option<Value>,
    pub created_at: i64,
    pub updated_at: i64,
    pub sent_at: Option<i64>,
}

/// Notification list filters (AND).
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter {
    pub operation_id: Option<String>,
    pub status: Option<String>,
    pub user_id: Option<String>,
    pub provider: Option<Provider>,
    /// Every pair must be among the notification's tags.
    pub tags: Vec<(String, String)>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

// ---- engine side -------------------------------------------------------------------------------

/// An operation claimed for planning: resolve `to[planned..]` into notifications.
#[derive(Debug, Clone)]
pub struct PlanTask {
    pub operation_id: String,
    pub account_sid: String,
    /// The stored [`SendRequest`] JSON.
    pub request: String,
    /// Entries of `to` already resolved (the resume point).
    pub planned: i64,
    pub send_at: Option<i64>,
    pub expires_at: i64,
    pub created_at: i64,
    /// The claim's owner token; [`DeliveryStore::write_plan_batch`] must name it.
    pub owner: String,
}

/// One notification the planner resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub recipient_index: i64,
    pub provider: Provider,
    pub token: String,
    pub credential_id: String,
    /// The app the device was resolved in (dead tokens are marked INVALID there).
    pub app_name: Option<String>,
    pub user_id: Option<String>,
}

/// One step of planning: the notifications of `to[planned_before..planned_after]`.
#[derive(Debug, Clone)]
pub struct PlanBatch {
    pub operation_id: String,
    /// The operation's account (the write is refused if it is not).
    pub account_sid: String,
    pub owner: String,
    pub planned_before: i64,
    pub planned_after: i64,
    pub notifications: Vec<NewNotification>,
    /// Recipients of this step that resolved to no usable device.
    pub unaddressable: i64,
    /// No recipient is left after this step.
    pub done: bool,
    /// The plan lease is extended to this time.
    pub lease_until: i64,
    pub priority: String,
    pub tags: Tags,
    /// `Some(sendAt)` while sendAt is in the future: the rows are SCHEDULED until then.
    pub scheduled_until: Option<i64>,
    pub expires_at: i64,
    /// Insert the QUEUED rows already claimed by the caller (leased until `lease_until`, first
    /// attempt counted), and return them as a [`Claim`]: the planner hands them straight to a
    /// dispatcher, which saves claiming them in another write. Ignored for SCHEDULED rows.
    pub claim: bool,
}

/// A claimed notification, with what the dispatcher needs to send it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedNotification {
    pub id: String,
    pub operation_id: String,
    pub account_sid: String,
    pub recipient_index: i64,
    pub provider: Provider,
    pub token: String,
    pub credential_id: String,
    pub app_name: Option<String>,
    pub user_id: Option<String>,
    /// Attempts including this one.
    pub attempts: i64,
    pub expires_at: i64,
}

/// A batch of claimed notifications and the token their outcomes must name.
#[derive(Debug, Clone)]
pub struct Claim {
    pub token: String,
    pub lease_until: i64,
    pub notifications: Vec<ClaimedNotification>,
}

/// The error recorded on a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationError {
    /// `expired`, `retries-exhausted`, `dead-token`, `permanent`, `credential`, ...
    pub code: String,
    pub message: String,
    pub provider_status: Option<u16>,
    pub provider_reason: Option<String>,
}

impl OperationStats {
    /// The stats object as the API (and the operation events) show it.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "total": self.total,
            "recipients": self.recipients,
            "unaddressable": self.unaddressable,
            "scheduled": self.scheduled,
            "queued": self.queued,
            "sent": self.sent,
            "failed": self.failed,
            "canceled": self.canceled,
        })
    }
}

impl NotificationError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            provider_status: None,
            provider_reason: None,
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "code": self.code,
            "message": self.message,
            "providerStatus": self.provider_status,
            "providerReason": self.provider_reason,
        })
    }
}

/// What happened to one claimed notification.
#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeKind {
    Sent,
    /// Stays QUEUED, due again at `due_at`; the error is kept as the last one seen.
    Retry {
        due_at: i64,
        error: NotificationError,
    },
    Failed(NotificationError),
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeWrite {
    pub id: String,
    /// The notification's operation (from its claim): the stats it counts toward. A row is
    /// only written when id, operation and claim token all match.
    pub operation_id: String,
    pub kind: OutcomeKind,
}

/// The outcomes of the rows of one claim.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimOutcomes {
    pub claim_token: String,
    pub outcomes: Vec<OutcomeWrite>,
}

/// What an outcome write changed (rows whose claim was lost are not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutcomeSummary {
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    /// Retryable outcomes of rows whose operation was canceled meanwhile: CANCELED, not retried.
    pub canceled: u64,
    /// Outcomes for rows no longer held by the claim (lease expired and taken over, or canceled).
    pub stale: u64,
    /// Operations that finished in this write.
    pub completed_operations: Vec<String>,
}

#[async_trait]
pub trait DeliveryStore {
    // ---- API side ----

    /// Stores an operation and its request, committed (on disk) when it returns. With an
    /// idempotency key: the same key and hash within 24 h → the first operation (`replayed`);
    /// the same key with another hash → [`StoreError::Conflict`]; concurrent repeats create at
    /// most one operation.
    async fn create_operation(&self, new: NewOperation) -> Result<CreatedOperation>;
    async fn get_operation(&self, account: &str, id: &str) -> Result<OperationRecord>;
    async fn list_operations(
        &self,
        account: &str,
        filter: &OperationFilter,
        page: &PageRequest,
    ) -> Result<Page<OperationRecord>>;
    /// Cancels what was not handed to a provider yet: SCHEDULED and unclaimed QUEUED rows, and
    /// recipients not yet resolved (counted canceled). Idempotent; a finished operation is left
    /// as it is. Unknown → `NotFound`.
    async fn cancel_operation(&self, account: &str, id: &str) -> Result<()>;
    async fn get_notification(&self, account: &str, id: &str) -> Result<NotificationRecord>;
    async fn list_notifications(
        &self,
        account: &str,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> Result<Page<NotificationRecord>>;

    // ---- engine side ----

    /// The stored requests of operations, as `(id, request JSON, expires_at)`; unknown ids are
    /// left out.
    async fn operation_requests(&self, ids: &[String]) -> Result<Vec<(String, String, i64)>>;
    /// Claims up to `limit` operations with recipients left to resolve, leasing them until
    /// `now + lease_ms`.
    async fn claim_operations_to_plan(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<PlanTask>>;
    /// Writes one planning step atomically (rows, stats, resume point). `None` when the plan
    /// lease was lost or the operation canceled meanwhile: nothing was written. Otherwise the
    /// claim of the rows inserted claimed (empty unless `batch.claim` and the rows are QUEUED),
    /// made of the step's own rows (moved, not copied).
    async fn write_plan(&self, batch: PlanBatch) -> Result<Option<Claim>>;
    /// [`DeliveryStore::write_plan`] of a copy of `batch`, for a caller that keeps it.
    async fn write_plan_batch(&self, batch: &PlanBatch) -> Result<Option<Claim>> {
        self.write_plan(batch.clone()).await
    }
    /// Moves due SCHEDULED notifications to QUEUED (their operations to PROCESSING); returns how
    /// many moved.
    async fn promote_scheduled(&self, now: i64, limit: i64) -> Result<u64>;
    /// Claims up to `limit` due QUEUED notifications, leased until `now + lease_ms`; counts an
    /// attempt on each.
    async fn claim_notifications(&self, now: i64, lease_ms: i64, limit: i64) -> Result<Claim>;
    /// Writes the outcomes of a claim in one transaction.
    async fn record_outcomes(
        &self,
        claim_token: &str,
        outcomes: &[OutcomeWrite],
    ) -> Result<OutcomeSummary> {
        let claim = ClaimOutcomes {
            claim_token: claim_token.to_owned(),
            outcomes: outcomes.to_vec(),
        };
        self.record_outcomes_of_claims(Arc::from([claim])).await
    }
    /// Writes the outcomes of several claims in one transaction (a dispatcher sends several
    /// claims at once; one write for them all takes one statement per kind of change, not one
    /// per claim). Each row is written only if its own claim still holds it.
    /// (Shared, not borrowed: on SQLite the write runs on the group commit's thread, and a caller
    /// that tries again keeps its copy.)
    async fn record_outcomes_of_claims(
        &self,
        claims: Arc<[ClaimOutcomes]>,
    ) -> Result<OutcomeSummary>;
    /// Gives rows of a claim back to the queue unsent: due now, unclaimed, the claim's attempt
    /// not counted. Rows the claim no longer holds are left alone; returns how many were given
    /// back. (A batch the planner handed over that waited too long for a dispatcher.)
    async fn release_claim(&self, claim_token: &str, ids: &[String]) -> Result<u64>;
    /// Fails every unclaimed (or lease-expired) QUEUED notification sent through `credential_id`
    /// with `error`; returns how many.
    async fn fail_queued_for_credential(
        &self,
        credential_id: &str,
        error: &NotificationError,
    ) -> Result<u64>;
    /// Deletes operations (and their notifications) finished before `finished_before`, at most
    /// `limit` operations, and idempotency keys older than 24 h; returns operations deleted.
    async fn prune_finished(&self, finished_before: i64, limit: i64) -> Result<u64>;
}

// ---- helpers -------------------------------------------------------------------------------------

const OPERATION_COLUMNS: &str = "id, status, recipients, unaddressable, scheduled, queued, sent, \
     failed, canceled, created_at, updated_at, completed_at";

fn operation_from_row(row: &Row) -> Result<OperationRecord> {
    let mut stats = OperationStats {
        total: 0,
        recipients: row.try_get(2)?,
        unaddressable: row.try_get(3)?,
        scheduled: row.try_get(4)?,
        queued: row.try_get(5)?,
        sent: row.try_get(6)?,
        failed: row.try_get(7)?,
        canceled: row.try_get(8)?,
    };
    stats.total = stats.unaddressable
        + stats.scheduled
        + stats.queued
        + stats.sent
        + stats.failed
        + stats.canceled;
    Ok(OperationRecord {
        id: row.try_get(0)?,
        status: row.try_get(1)?,
        stats,
        created_at: row.try_get(9)?,
        updated_at: row.try_get(10)?,
        completed_at: row.try_get(11)?,
    })
}

const NOTIFICATION_COLUMNS: &str = "id, operation_id, provider, token, credential_id, status, \
     priority, tags, user_id, attempts, error, created_at, updated_at, sent_at";

fn stored_provider(text: &str) -> Result<Provider> {
    Provider::parse(text).map_err(|e| StoreError::Config(format!("stored provider: {e}")))
}

fn notification_from_row(row: &AnyRow) -> Result<NotificationRecord> {
    let provider: String = row.try_get(2)?;
    let tags: String = row.try_get(7)?;
    let error: Option<String> = row.try_get(10)?;
    Ok(NotificationRecord {
        id: row.try_get(0)?,
        operation_id: row.try_get(1)?,
        provider: stored_provider(&provider)?,
        token: row.try_get(3)?,
        credential_id: row.try_get(4)?,
        status: row.try_get(5)?,
        priority: row.try_get(6)?,
        tags: Tags::from_stored(&tags),
        user_id: row.try_get(8)?,
        attempts: row.try_get(9)?,
        error: error.and_then(|text| serde_json::from_str(&text).ok()),
        created_at: row.try_get(11)?,
        updated_at: row.try_get(12)?,
        sent_at: row.try_get(13)?,
    })
}

/// Escapes a tag key or value for the `tag_keys` column: the separators and LIKE's wildcards are
/// percent-encoded, so `LIKE '%;k:v;%' ESCAPE '\'` matches exactly one pair.
fn encode_tag_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            ';' => out.push_str("%3B"),
            '_' => out.push_str("%5F"),
            '\\' => out.push_str("%5C"),
            c => out.push(c),
        }
    }
    out
}

/// `;k1:v1;k2:v2;`
fn tag_keys(tags: &Tags) -> String {
    let mut out = String::from(";");
    for (key, value) in tags.as_map() {
        out.push_str(&encode_tag_part(key));
        out.push(':');
        out.push_str(&encode_tag_part(value));
        out.push(';');
    }
    out
}

/// The LIKE pattern that matches one pair in `tag_keys` (`%` in the encoded text cannot occur
/// unescaped, and it is escaped for LIKE anyway).
fn tag_pattern(key: &str, value: &str) -> String {
    let pair = format!(";{}:{};", encode_tag_part(key), encode_tag_part(value));
    format!("%{}%", pair.replace('%', "\\%"))
}

/// Bulk lists as ONE JSON text parameter, expanded in SQL: the only place where the SQL text of
/// the two backends differs for lists.
///
/// Why: a statement with thousands of `$N` parameters binds in quadratic time on SQLite
/// (sqlx-sqlite looks every parameter up by name, and `sqlite3_bind_parameter_name` walks the
/// statement's parameter list), which took 35 % of `herald serve`'s CPU in the fanout benchmark.
/// One JSON parameter binds in constant time whatever the list's length, and the statement text
/// is the same for every length (one prepared statement in the cache instead of one per length).
///
/// - [`json_values`]: a `FROM` item with one row per element of the JSON array in parameter
///   `$param`, its column `value` the element as JSON (read parts with `value ->> 0` or
///   `value ->> 'key'`, which give text/NULL on both backends; `CAST(... AS BIGINT)` numbers).
///   SQLite: `json_each($param)`; PostgreSQL: `jsonb_array_elements($param::text::jsonb)`
///   (jsonb, not json: the text is parsed once, and `->>` on an element reads the parsed value;
///   on `json` every `->>` parses the element's text again, which was a fifth of PostgreSQL's CPU
///   in the postgres fanout benchmark).
/// - [`json_texts`]: a subquery for `IN (...)` selecting the elements of a JSON array of
///   strings as text. SQLite: `json_each`'s `value` (text for JSON strings); PostgreSQL:
///   `jsonb_array_elements_text`.
///
/// Both keep the array's order. Bind the text made by [`json_list`].
fn json_values(backend: Backend, param: usize) -> String {
    match backend {
        Backend::Sqlite => format!("json_each(${param})"),
        Backend::Postgres => format!("jsonb_array_elements(${param}::text::jsonb) AS j(value)"),
    }
}

/// See [`json_values`].
fn json_texts(backend: Backend, param: usize) -> String {
    match backend {
        Backend::Sqlite => format!("SELECT value FROM json_each(${param})"),
        Backend::Postgres => format!("SELECT jsonb_array_elements_text(${param}::text::jsonb)"),
    }
}

/// The JSON text of a list for [`json_values`] / [`json_texts`] (tuples become arrays).
fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    // Strings, integers, options and tuples of them always serialize.
    serde_json::to_string(items).expect("bulk list serializes to JSON")
}

/// Adds `delta` counts to operations' stats, in id order (so concurrent writers on PostgreSQL
/// lock operation rows in one order).
#[derive(Debug, Default)]
struct StatDeltas(BTreeMap<String, [i64; 5]>);

const SCHEDULED: usize = 0;
const QUEUED: usize = 1;
const SENT: usize = 2;
const FAILED: usize = 3;
const CANCELED: usize = 4;

impl StatDeltas {
    fn add(&mut self, operation_id: &str, column: usize, delta: i64) {
        if let Some(entry) = self.0.get_mut(operation_id) {
            entry[column] += delta;
        } else {
            let mut entry = [0; 5];
            entry[column] = delta;
            self.0.insert(operation_id.to_owned(), entry);
        }
    }

    /// Applies the deltas; an operation that gains QUEUED rows moves SCHEDULED → PROCESSING
    /// (an `operation.processing` event in `events`). One statement per kind of change for all
    /// the operations (on PostgreSQL each statement is a round trip); on PostgreSQL several are
    /// first locked in id order.
    async fn apply(
        &self,
        conn: &mut Conn<'_>,
        backend: Backend,
        now: i64,
        events: &mut PendingEvents,
    ) -> Result<()> {
        if self.0.len() > 1 {
            lock_operations_in_order(conn, backend, &self.ids()).await?;
        }
        let starting: Vec<&str> = self
            .0
            .iter()
            .filter(|(_, d)| d[QUEUED] > 0)
            .map(|(id, _)| id.as_str())
            .collect();
        start_processing(conn, backend, &starting, events).await?;
        if self.0.is_empty() {
            return Ok(());
        }
        let rows: Vec<(&str, i64, i64, i64, i64, i64)> = self
            .0
            .iter()
            .map(|(id, d)| {
                (
                    id.as_str(),
                    d[SCHEDULED],
                    d[QUEUED],
                    d[SENT],
                    d[FAILED],
                    d[CANCELED],
                )
            })
            .collect();
        let sql = format!(
            "UPDATE operations SET scheduled = scheduled + d.add_scheduled, \
             queued = queued + d.add_queued, sent = sent + d.add_sent, \
             failed = failed + d.add_failed, canceled = canceled + d.add_canceled, \
             updated_at = $1 \
             FROM (SELECT value ->> 0 AS id, CAST(value ->> 1 AS BIGINT) AS add_scheduled, \
             CAST(value ->> 2 AS BIGINT) AS add_queued, CAST(value ->> 3 AS BIGINT) AS add_sent, \
             CAST(value ->> 4 AS BIGINT) AS add_failed, \
             CAST(value ->> 5 AS BIGINT) AS add_canceled FROM {}) AS d \
             WHERE operations.id = d.id",
            json_values(backend, 2)
        );
        query(&sql)
            .bind(now)
            .bind(json_list(&rows))
            .execute(conn)
            .await?;
        Ok(())
    }

    fn ids(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

/// A `RETURNING` column of an `UPDATE operations`: 1 when the operation's account has an event
/// subscription. Lifecycle events of the others are not gathered at all, so that a transaction
/// whose accounts subscribe to nothing (the common case) reads nothing more for its events.
const SUBSCRIBED: &str = "CAST(CASE WHEN EXISTS (SELECT 1 FROM event_subscriptions s \
     WHERE s.account_sid = operations.account_sid) THEN 1 ELSE 0 END AS BIGINT)";

/// Moves operations SCHEDULED → PROCESSING (their first QUEUED rows), with an
/// `operation.processing` event each (accounts with a subscription only). A statement of its
/// own, so that exactly one transaction sees the change (the row lock makes a concurrent one
/// re-check `status` after this one commits).
async fn start_processing(
    conn: &mut Conn<'_>,
    backend: Backend,
    ids: &[&str],
    events: &mut PendingEvents,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE operations SET status = 'PROCESSING' WHERE id IN ({}) \
         AND status = 'SCHEDULED' RETURNING id, {SUBSCRIBED}",
        json_texts(backend, 1)
    );
    let rows = query(&sql).bind(json_list(ids)).fetch_all(conn).await?;
    for row in rows {
        if row.try_get::<i64>(1)? == 1 {
            events.operation(&row.try_get::<String>(0)?, types::OPERATION_PROCESSING);
        }
    }
    Ok(())
}

/// Locks the operations `ids` (sorted) in id order on PostgreSQL, the order every writer but
/// the cancel takes them in, so that statements touching several at once cannot deadlock.
async fn lock_operations_in_order(
    conn: &mut Conn<'_>,
    backend: Backend,
    ids: &[String],
) -> Result<()> {
    if backend == Backend::Postgres && !ids.is_empty() {
        let sql = format!(
            "SELECT id FROM operations WHERE id IN ({}) ORDER BY id FOR UPDATE",
            json_texts(backend, 1)
        );
        query(&sql).bind(json_list(ids)).fetch_all(conn).await?;
    }
    Ok(())
}

/// Marks finished the operations among `ids` with nothing left to plan, schedule or send
/// (an `operation.completed` event each, with status `COMPLETED` or `CANCELED`); returns them.
async fn complete_finished(
    conn: &mut Conn<'_>,
    backend: Backend,
    ids: &[String],
    now: i64,
    events: &mut PendingEvents,
) -> Result<Vec<String>> {
    let mut done: Vec<String> = Vec::new();
    if !ids.is_empty() {
        let sql = format!(
            "UPDATE operations SET status = CASE WHEN cancel_requested = 1 THEN 'CANCELED' \
             ELSE 'COMPLETED' END, completed_at = $1, updated_at = $1 \
             WHERE id IN ({}) AND plan_done = 1 AND scheduled = 0 AND queued = 0 \
             AND completed_at IS NULL RETURNING id, {SUBSCRIBED}",
            json_texts(backend, 2)
        );
        let rows = query(&sql)
            .bind(now)
            .bind(json_list(ids))
            .fetch_all(conn)
            .await?;
        for row in rows {
            let id: String = row.try_get(0)?;
            if row.try_get::<i64>(1)? == 1 {
                events.operation(&id, types::OPERATION_COMPLETED);
            }
            done.push(id);
        }
    }
    Ok(done)
}

/// Of the operations `ids`, those whose cancel was requested. On PostgreSQL every one of them is
/// locked (`FOR UPDATE`, in id order like [`StatDeltas::apply`]), so a cancel that is committing
/// right now is waited for and seen. Callers lock their notification rows first and call this
/// before [`StatDeltas::apply`], the order every writer but the cancel uses (the cancel skips
/// locked rows instead of waiting).
async fn canceled_operations(
    conn: &mut Conn<'_>,
    backend: Backend,
    ids: &[String],
) -> Result<HashSet<String>> {
    let mut canceled = HashSet::new();
    if ids.is_empty() {
        return Ok(canceled);
    }
    let sql = format!(
        "SELECT id, cancel_requested FROM operations WHERE id IN ({}) ORDER BY id{}",
        json_texts(backend, 1),
        match backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    );
    for row in query(&sql).bind(json_list(ids)).fetch_all(conn).await? {
        let requested: i64 = row.try_get(1)?;
        if requested == 1 {
            canceled.insert(row.try_get(0)?);
        }
    }
    Ok(canceled)
}

/// The lifecycle events of one transaction, gathered while it runs and written by
/// [`PendingEvents::insert`] just before its commit (one [`insert_events`] per transaction).
#[derive(Debug, Default)]
struct PendingEvents {
    /// `(operation id, event type)`: the `data` (status and stats) is read when inserting, so
    /// it shows the operation as the transaction leaves it.
    operations: Vec<(String, &'static str)>,
    others: Vec<NewEvent>,
}

impl PendingEvents {
    fn operation(&mut self, id: &str, event_type: &'static str) {
        self.operations.push((id.to_owned(), event_type));
    }

    fn notification_failed(
        &mut self,
        account_sid: String,
        notification_id: &str,
        operation_id: &str,
        error: Value,
    ) {
        self.others.push(NewEvent::push_notification_failed(
            account_sid,
            notification_id,
            operation_id,
            error,
        ));
    }

    /// Writes the events on `conn` (inside the caller's transaction). Accounts without a
    /// subscription get nothing ([`insert_events`] skips them).
    async fn insert(self, conn: &mut Conn<'_>, backend: Backend) -> Result<()> {
        if self.operations.is_empty() && self.others.is_empty() {
            return Ok(());
        }
        let mut events = Vec::with_capacity(self.operations.len() + self.others.len());
        if !self.operations.is_empty() {
            let ids: Vec<&str> = self
                .operations
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut current: BTreeMap<String, (String, OperationRecord)> = BTreeMap::new();
            // Only operations whose account subscribes are read: most accounts have no
            // subscription, and then this one statement is all the events cost.
            let sql = format!(
                "SELECT {OPERATION_COLUMNS}, account_sid FROM operations o WHERE id IN ({}) \
                 AND EXISTS (SELECT 1 FROM event_subscriptions s \
                 WHERE s.account_sid = o.account_sid)",
                json_texts(backend, 1)
            );
            let rows = query(&sql).bind(json_list(&ids)).fetch_all(conn).await?;
            for row in rows {
                let record = operation_from_row(&row)?;
                let account: String = row.try_get(12)?;
                current.insert(record.id.clone(), (account, record));
            }
            for (id, event_type) in &self.operations {
                if let Some((account, record)) = current.get(id) {
                    events.push(NewEvent::operation(
                        account.as_str(),
                        event_type,
                        id,
                        &record.status,
                        record.stats.to_json(),
                    ));
                }
            }
        }
        events.extend(self.others);
        if !events.is_empty() {
            insert_events_on(conn, &events).await?;
        }
        Ok(())
    }
}

impl SqlStore {
    /// `UPDATE table SET set WHERE id IN (pick) AND guard RETURNING returning`, where `pick`
    /// selects the ids to take. On PostgreSQL the pick is a `MATERIALIZED` CTE with
    /// `FOR UPDATE SKIP LOCKED`, run exactly once: a `LIMIT` subquery inside `IN` may be run
    /// again per row, and with `SKIP LOCKED` each run picks other rows (a claim of 10 could
    /// take 40). SQLite has one writer, so the plain subquery is exact.
    fn claim_sql(
        &self,
        table: &str,
        set: &str,
        pick: &str,
        guard: &str,
        returning: &str,
    ) -> String {
        match self.backend() {
            Backend::Postgres => format!(
                "WITH picked AS MATERIALIZED ({pick} FOR UPDATE SKIP LOCKED) \
                 UPDATE {table} SET {set} WHERE id IN (SELECT id FROM picked) AND {guard} \
                 RETURNING {returning}"
            ),
            Backend::Sqlite => format!(
                "UPDATE {table} SET {set} WHERE id IN ({pick}) AND {guard} RETURNING {returning}"
            ),
        }
    }

    /// Runs `query` (its RETURNING starts with `operation_id`) and counts the rows per
    /// operation into `deltas` (`-1` on `from`, `+1` on `to`); returns the rows.
    async fn count_moved(
        conn: &mut Conn<'_>,
        query: Query<'_>,
        deltas: &mut StatDeltas,
        from: usize,
        to: usize,
    ) -> Result<Vec<Row>> {
        let rows = query.fetch_all(conn).await?;
        for row in &rows {
            let op: String = row.try_get(0)?;
            deltas.add(&op, from, -1);
            deltas.add(&op, to, 1);
        }
        Ok(rows)
    }
}

/// Stores an operation (and its idempotency key) on `conn`, inside the caller's transaction; a
/// replay writes nothing, a conflict returns its error (the caller rolls back).
async fn create_operation_in(
    conn: &mut Conn<'_>,
    backend: Backend,
    new: &NewOperation,
    request: &str,
) -> Result<CreatedOperation> {
    let now = now_ms();
    let id = ids::new_type_id(ids::OPERATION);
    if let Some(idem) = &new.idempotency {
        let inserted = query(
            "INSERT INTO idempotency_keys (account_sid, idempotency_key, request_hash, \
             operation_id, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (account_sid, idempotency_key) DO NOTHING",
        )
        .bind(new.account_sid.as_str())
        .bind(idem.key.as_str())
        .bind(idem.request_hash.as_str())
        .bind(id.as_str())
        .bind(now)
        .execute(conn)
        .await?;
        if inserted == 0 {
            let row = query(
                "SELECT request_hash, operation_id, created_at FROM idempotency_keys \
                 WHERE account_sid = $1 AND idempotency_key = $2",
            )
            .bind(new.account_sid.as_str())
            .bind(idem.key.as_str())
            .fetch_one(conn)
            .await?;
            let hash: String = row.try_get(0)?;
            let first: String = row.try_get(1)?;
            let at: i64 = row.try_get(2)?;
            if at > now - IDEMPOTENCY_WINDOW_MS {
                return if hash == idem.request_hash {
                    Ok(CreatedOperation {
                        id: first,
                        replayed: true,
                    })
                } else {
                    Err(StoreError::Conflict(
                        "Idempotency-Key was used with a different request body in the \
                         last 24 hours"
                            .into(),
                    ))
                };
            }
            // Older than the window: the key starts over with this request.
            query(
                "UPDATE idempotency_keys SET request_hash = $3, operation_id = $4, \
                 created_at = $5 WHERE account_sid = $1 AND idempotency_key = $2",
            )
            .bind(new.account_sid.as_str())
            .bind(idem.key.as_str())
            .bind(idem.request_hash.as_str())
            .bind(id.as_str())
            .bind(now)
            .execute(conn)
            .await?;
        }
    }
    insert_operation(conn, &id, new, request, now).await?;
    if new.request.send_at_ms.is_some_and(|at| at > now) {
        let mut events = PendingEvents::default();
        events.operation(&id, types::OPERATION_SCHEDULED);
        events.insert(conn, backend).await?;
    }
    Ok(CreatedOperation {
        id,
        replayed: false,
    })
}

async fn insert_operation(
    conn: &mut Conn<'_>,
    id: &str,
    new: &NewOperation,
    request: &str,
    now: i64,
) -> Result<()> {
    let base = new.request.send_at_ms.unwrap_or(now).max(now);
    let expires_at = base + i64::from(new.request.ttl) * 1000;
    query(
        "INSERT INTO operations (id, account_sid, status, recipients, plan_due_at, send_at, \
         expires_at, created_at, updated_at) \
         VALUES ($1, $2, 'SCHEDULED', $3, $4, $5, $6, $4, $4)",
    )
    .bind(id)
    .bind(new.account_sid.as_str())
    .bind(new.request.to.len() as i64)
    .bind(now)
    .bind(new.request.send_at_ms)
    .bind(expires_at)
    .execute(conn)
    .await?;
    query("INSERT INTO operation_requests (operation_id, request) VALUES ($1, $2)")
        .bind(id)
        .bind(request)
        .execute(conn)
        .await?;
    Ok(())
}

/// Notification rows, as the planner writes them on the group commit's SQLite connection:
/// $1..$11 are the planning step's (as in the JSON-list form), $12..$18 the first row's, $19..$25
/// the second's, and so on.
///
/// `OR FAIL` here and in [`mark_sent_sql`]: a multi-row statement that may abort makes SQLite keep
/// a statement journal (a copy of every page it changes) so that it can undo just itself; a
/// failing `OR FAIL` statement keeps what it did before the failure instead. The group commit
/// rolls the whole write back when any of its statements fails, so the copy was never used.
fn insert_notifications_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR FAIL INTO notifications (id, account_sid, operation_id, recipient_index, provider, \
         token, credential_id, app_name, user_id, status, priority, tags, tag_keys, due_at, \
         expires_at, created_at, updated_at, claim_token, attempts) VALUES ",
    );
    for row in 0..rows {
        let n = 12 + 7 * row;
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${n}, $1, $2, ${}, ${}, ${}, ${}, ${}, ${}, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11)",
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6
        ));
    }
    sql
}

/// How many rows one INSERT of a planning step takes on the group commit's connection.
const NOTIFICATIONS_PER_INSERT: usize = 32;
static INSERT_NOTIFICATION: LazyLock<String> = LazyLock::new(|| insert_notifications_sql(1));
static INSERT_NOTIFICATIONS: LazyLock<String> =
    LazyLock::new(|| insert_notifications_sql(NOTIFICATIONS_PER_INSERT));

/// Sent rows of operation $2 under claim token $3, as an outcome write marks them on the group
/// commit's SQLite connection: $1 is the time, the rows' ids are $4, $5, ... An `IN` list of ids
/// costs SQLite a quarter less per row than joining a `VALUES` list of (id, token) pairs (which it
/// first copies into a table of its own). The unary `+` keeps the operation and the token out of
/// the choice of index: without statistics SQLite would walk the operation's rows in
/// `notifications_by_operation` instead of looking each id up.
fn mark_sent_sql(rows: usize) -> String {
    let ids: Vec<String> = (0..rows).map(|row| format!("${}", 4 + row)).collect();
    format!(
        "UPDATE OR FAIL notifications SET status = 'SENT', sent_at = $1, updated_at = $1, \
         claim_token = NULL, error = NULL \
         WHERE id IN ({}) AND +operation_id = $2 AND +claim_token = $3",
        ids.join(", ")
    )
}

/// How many rows one UPDATE of an outcome write marks sent on the group commit's connection.
const SENT_PER_UPDATE: usize = 32;
static MARK_SENT: LazyLock<String> = LazyLock::new(|| mark_sent_sql(1));
static MARK_SENT_MANY: LazyLock<String> = LazyLock::new(|| mark_sent_sql(SENT_PER_UPDATE));

/// The write transactions of the engine, run by [`SqlStore::write`] (shared commits on SQLite).
impl SqlStore {
    /// The write of [`DeliveryStore::write_plan`]: the claim without its rows, and the ids of
    /// the rows inserted claimed (the caller makes them into the claim's rows).
    async fn write_plan_batch_in(
        &self,
        tx: &mut Conn<'_>,
        batch: &PlanBatch,
    ) -> Result<Option<(Claim, Option<Vec<String>>)>> {
        let now = now_ms();
        let count = batch.notifications.len() as i64;
        let (scheduled, queued) = match batch.scheduled_until {
            Some(_) => (count, 0),
            None => (0, count),
        };
        let token = uuid::Uuid::new_v4().simple().to_string();
        // The step's first QUEUED rows move the operation SCHEDULED → PROCESSING in this same
        // statement (one round trip less per operation). The right-hand sides all see the row as
        // it was, so `started_by` takes this write's token exactly when this write moved it; a
        // concurrent PostgreSQL writer re-evaluates them on the row this one left.
        let owned = query(&format!(
            "UPDATE operations SET planned = $4, plan_done = $5, plan_due_at = $6, \
             unaddressable = unaddressable + $7, scheduled = scheduled + $8, \
             queued = queued + $9, updated_at = $10, \
             started_by = CASE WHEN $9 > 0 AND status = 'SCHEDULED' THEN $12 \
             ELSE started_by END, \
             status = CASE WHEN $9 > 0 AND status = 'SCHEDULED' THEN 'PROCESSING' \
             ELSE status END \
             WHERE id = $1 AND plan_owner = $2 AND planned = $3 AND plan_done = 0 \
             AND account_sid = $11 RETURNING started_by, {SUBSCRIBED}"
        ))
        .bind(batch.operation_id.as_str())
        .bind(batch.owner.as_str())
        .bind(batch.planned_before)
        .bind(batch.planned_after)
        .bind(i64::from(batch.done))
        .bind(batch.lease_until)
        .bind(batch.unaddressable)
        .bind(scheduled)
        .bind(queued)
        .bind(now)
        .bind(batch.account_sid.as_str())
        .bind(token.as_str())
        .fetch_optional(tx)
        .await?;
        let Some(owned) = owned else {
            return Ok(None);
        };
        let mut events = PendingEvents::default();
        let started_by: Option<String> = owned.try_get(0)?;
        if started_by.as_deref() == Some(token.as_str()) && owned.try_get::<i64>(1)? == 1 {
            events.operation(&batch.operation_id, types::OPERATION_PROCESSING);
        }
        let claim = Claim {
            token,
            lease_until: batch.lease_until,
            notifications: Vec::new(),
        };
        let mut claimed_ids = None;
        let claimed = batch.claim && queued > 0;
        let account_sid = &batch.account_sid;
        let status = if batch.scheduled_until.is_some() {
            "SCHEDULED"
        } else {
            "QUEUED"
        };
        // Rows claimed here are due again when the claim's lease ends, like any claimed row.
        let (due_at, claim_token, attempts) = match batch.scheduled_until {
            Some(send_at) => (send_at, None, 0),
            None if claimed => (batch.lease_until, Some(claim.token.as_str()), 1),
            None => (now, None, 0),
        };
        let tags = batch.tags.to_json_string();
        let keys = tag_keys(&batch.tags);
        if !batch.notifications.is_empty() {
            let ids: Vec<String> = batch
                .notifications
                .iter()
                .map(|_| ids::new_type_id(ids::PUSH_NOTIFICATION))
                .collect();
            // What differs between rows: [id, recipient_index, provider, token, credential_id,
            // app_name, user_id]; the rest is the step's.
            let rows: Vec<_> = batch
                .notifications
                .iter()
                .zip(&ids)
                .map(|(n, id)| {
                    (
                        id.as_str(),
                        n.recipient_index,
                        n.provider.as_str(),
                        n.token.as_str(),
                        n.credential_id.as_str(),
                        n.app_name.as_deref(),
                        n.user_id.as_deref(),
                    )
                })
                .collect();
            // $1..$11: what every row of the step shares.
            let step = |sql| {
                query(sql)
                    .bind(account_sid.as_str())
                    .bind(batch.operation_id.as_str())
                    .bind(status)
                    .bind(batch.priority.as_str())
                    .bind(tags.as_str())
                    .bind(keys.as_str())
                    .bind(due_at)
                    .bind(batch.expires_at)
                    .bind(now)
                    .bind(claim_token)
                    .bind(attempts)
            };
            if tx.is_embedded() {
                // Prepared INSERTs of many rows each (see `Conn::is_embedded`), the step's values
                // bound once.
                let rows: Vec<Query> = rows
                    .iter()
                    .map(|&(id, index, provider, token, credential, app, user)| {
                        query(INSERT_NOTIFICATION.as_str())
                            .bind(id)
                            .bind(index)
                            .bind(provider)
                            .bind(token)
                            .bind(credential)
                            .bind(app)
                            .bind(user)
                    })
                    .collect();
                execute_rows_together(
                    tx,
                    INSERT_NOTIFICATION.as_str(),
                    INSERT_NOTIFICATIONS.as_str(),
                    NOTIFICATIONS_PER_INSERT,
                    step,
                    rows,
                )
                .await?;
            } else {
                // $12 is the rows, one JSON array each.
                let sql = format!(
                    "INSERT INTO notifications (id, account_sid, operation_id, recipient_index, \
                     provider, token, credential_id, app_name, user_id, status, priority, tags, \
                     tag_keys, due_at, expires_at, created_at, updated_at, claim_token, attempts) \
                     SELECT value ->> 0, $1, $2, CAST(value ->> 1 AS BIGINT), value ->> 2, \
                     value ->> 3, value ->> 4, value ->> 5, value ->> 6, \
                     $3, $4, $5, $6, $7, $8, $9, $9, $10, $11 FROM {}",
                    json_values(self.backend(), 12)
                );
                step(&sql).bind(json_list(&rows)).execute(&mut *tx).await?;
            }
            if claimed {
                claimed_ids = Some(ids);
            }
        }
        // Rows written now are still to be sent: an operation only finishes here when its last
        // step found no one to send to.
        if batch.done && count == 0 {
            complete_finished(
                tx,
                self.backend(),
                std::slice::from_ref(&batch.operation_id),
                now,
                &mut events,
            )
            .await?;
        }
        events.insert(tx, self.backend()).await?;
        Ok(Some((claim, claimed_ids)))
    }

    async fn promote_scheduled_in(&self, tx: &mut Conn<'_>, now: i64, limit: i64) -> Result<u64> {
        let sql = self.claim_sql(
            "notifications",
            "status = 'QUEUED', updated_at = $1",
            "SELECT id FROM notifications WHERE status = 'SCHEDULED' AND due_at <= $1 \
             ORDER BY due_at LIMIT $2",
            "status = 'SCHEDULED'",
            "operation_id",
        );
        let mut deltas = StatDeltas::default();
        let moved = Self::count_moved(
            tx,
            query(&sql).bind(now).bind(limit),
            &mut deltas,
            SCHEDULED,
            QUEUED,
        )
        .await?
        .len() as u64;
        if moved == 0 {
            return Ok(0);
        }
        let mut events = PendingEvents::default();
        deltas.apply(tx, self.backend(), now, &mut events).await?;
        events.insert(tx, self.backend()).await?;
        Ok(moved)
    }

    async fn claim_notifications_in(
        &self,
        tx: &mut Conn<'_>,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Claim> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let lease_until = now + lease_ms;
        let sql = self.claim_sql(
            "notifications",
            "due_at = $1, claim_token = $2, attempts = attempts + 1, updated_at = $3",
            "SELECT id FROM notifications WHERE status = 'QUEUED' AND due_at <= $3 \
             ORDER BY due_at LIMIT $4",
            "status = 'QUEUED'",
            "id, operation_id, account_sid, recipient_index, provider, token, credential_id, \
             app_name, user_id, attempts, expires_at",
        );
        let rows = query(&sql)
            .bind(lease_until)
            .bind(token.as_str())
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        let notifications = rows
            .iter()
            .map(|row| {
                let provider: String = row.try_get(4)?;
                Ok(ClaimedNotification {
                    id: row.try_get(0)?,
                    operation_id: row.try_get(1)?,
                    account_sid: row.try_get(2)?,
                    recipient_index: row.try_get(3)?,
                    provider: stored_provider(&provider)?,
                    token: row.try_get(5)?,
                    credential_id: row.try_get(6)?,
                    app_name: row.try_get(7)?,
                    user_id: row.try_get(8)?,
                    attempts: row.try_get(9)?,
                    expires_at: row.try_get(10)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let notifications = self
            .cancel_claimed_of_canceled(tx, &token, notifications, now)
            .await?;
        Ok(Claim {
            token,
            lease_until,
            notifications,
        })
    }

    /// Rows of a canceled operation can still be QUEUED: a cancel skips rows another transaction
    /// holds at that instant (a promotion, a late outcome), and those come out of it QUEUED. A
    /// claim that picked such rows cancels them instead of handing them out (their attempt
    /// uncounted), and finishes their operation if nothing else is left; returns the others.
    async fn cancel_claimed_of_canceled(
        &self,
        tx: &mut Conn<'_>,
        token: &str,
        claimed: Vec<ClaimedNotification>,
        now: i64,
    ) -> Result<Vec<ClaimedNotification>> {
        let mut operations: Vec<String> = claimed.iter().map(|n| n.operation_id.clone()).collect();
        operations.sort_unstable();
        operations.dedup();
        let canceled = canceled_operations(tx, self.backend(), &operations).await?;
        if canceled.is_empty() {
            return Ok(claimed);
        }
        let (cancel, keep): (Vec<_>, Vec<_>) = claimed
            .into_iter()
            .partition(|n| canceled.contains(&n.operation_id));
        let ids: Vec<&str> = cancel.iter().map(|n| n.id.as_str()).collect();
        let sql = format!(
            "UPDATE notifications SET status = 'CANCELED', claim_token = NULL, \
             attempts = attempts - 1, updated_at = $2 \
             WHERE id IN ({}) AND claim_token = $1 RETURNING operation_id",
            json_texts(self.backend(), 3)
        );
        let query = query(&sql).bind(token).bind(now).bind(json_list(&ids));
        let mut deltas = StatDeltas::default();
        Self::count_moved(tx, query, &mut deltas, QUEUED, CANCELED).await?;
        let mut events = PendingEvents::default();
        deltas.apply(tx, self.backend(), now, &mut events).await?;
        complete_finished(tx, self.backend(), &deltas.ids(), now, &mut events).await?;
        events.insert(tx, self.backend()).await?;
        Ok(keep)
    }

    async fn claim_operations_to_plan_in(
        &self,
        tx: &mut Conn<'_>,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<PlanTask>> {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let sql = self.claim_sql(
            "operations",
            "plan_due_at = $1, plan_owner = $2",
            "SELECT id FROM operations WHERE plan_done = 0 AND plan_due_at <= $3 \
             ORDER BY plan_due_at LIMIT $4",
            "plan_done = 0",
            "id, account_sid, planned, send_at, expires_at, created_at",
        );
        let rows = query(&sql)
            .bind(now + lease_ms)
            .bind(owner.as_str())
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids = rows
            .iter()
            .map(|row| row.try_get(0))
            .collect::<std::result::Result<Vec<String>, _>>()?;
        let requests_sql = format!(
            "SELECT operation_id, request FROM operation_requests WHERE operation_id IN ({})",
            json_texts(self.backend(), 1)
        );
        let mut requests: HashMap<String, String> = query(&requests_sql)
            .bind(json_list(&ids))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_>>()?;
        rows.iter()
            .map(|row| {
                let operation_id: String = row.try_get(0)?;
                Ok(PlanTask {
                    request: requests.remove(&operation_id).ok_or_else(|| {
                        StoreError::Config(format!("operation {operation_id} has no request"))
                    })?,
                    operation_id,
                    account_sid: row.try_get(1)?,
                    planned: row.try_get(2)?,
                    send_at: row.try_get(3)?,
                    expires_at: row.try_get(4)?,
                    created_at: row.try_get(5)?,
                    owner: owner.clone(),
                })
            })
            .collect()
    }

    async fn record_outcomes_in(
        &self,
        tx: &mut Conn<'_>,
        claims: &[ClaimOutcomes],
    ) -> Result<OutcomeSummary> {
        let now = now_ms();
        let mut summary = OutcomeSummary::default();
        let mut deltas = StatDeltas::default();
        let mut events = PendingEvents::default();
        let mut retried: Vec<&OutcomeWrite> = Vec::new();
        // (claim token, outcome) of every row.
        let outcomes: Vec<(&str, &OutcomeWrite)> = claims
            .iter()
            .flat_map(|c| c.outcomes.iter().map(|o| (c.claim_token.as_str(), o)))
            .collect();
        let sent: Vec<(&str, &str, &str)> = outcomes
            .iter()
            .filter(|(_, o)| o.kind == OutcomeKind::Sent)
            .map(|(token, o)| (o.id.as_str(), o.operation_id.as_str(), *token))
            .collect();
        if !sent.is_empty() {
            // Rows are found by primary key and operation; `status = 'QUEUED'` is implied by the
            // claim token (only QUEUED rows ever hold one) and left out: on a fresh PostgreSQL
            // table without statistics it would steer the planner to scan the whole partial
            // queue index.
            let moved = if tx.is_embedded() {
                // Prepared UPDATEs of many rows of one operation and claim each (see
                // `Conn::is_embedded`). A batch holds few of either: a linear search finds each
                // row's group.
                let mut groups: Vec<((&str, &str), Vec<Query>)> = Vec::new();
                for &(id, op, token) in &sent {
                    let row = query(MARK_SENT.as_str()).bind(id);
                    match groups.iter_mut().find(|(group, _)| *group == (op, token)) {
                        Some((_, rows)) => rows.push(row),
                        None => groups.push(((op, token), vec![row])),
                    }
                }
                let mut moved = 0;
                for ((op, token), rows) in groups {
                    let shared = |sql| query(sql).bind(now).bind(op).bind(token);
                    let changed = execute_rows_together(
                        tx,
                        MARK_SENT.as_str(),
                        MARK_SENT_MANY.as_str(),
                        SENT_PER_UPDATE,
                        shared,
                        rows,
                    )
                    .await?;
                    if changed > 0 {
                        deltas.add(op, QUEUED, -(changed as i64));
                        deltas.add(op, SENT, changed as i64);
                        moved += changed;
                    }
                }
                moved
            } else {
                // One UPDATE joining the JSON list of (id, operation, token); the rows say their
                // operation.
                let sql = format!(
                    "UPDATE notifications SET status = 'SENT', sent_at = $1, updated_at = $1, \
                     claim_token = NULL, error = NULL \
                     FROM (SELECT value ->> 0 AS id, value ->> 1 AS op, value ->> 2 AS token \
                     FROM {}) AS w \
                     WHERE notifications.id = w.id AND notifications.operation_id = w.op \
                     AND notifications.claim_token = w.token \
                     RETURNING notifications.operation_id",
                    json_values(self.backend(), 2),
                );
                let query = query(&sql).bind(now).bind(json_list(&sent));
                Self::count_moved(tx, query, &mut deltas, QUEUED, SENT)
                    .await?
                    .len() as u64
            };
            summary.sent += moved;
            summary.stale += sent.len() as u64 - moved;
        }
        for &(claim_token, outcome) in &outcomes {
            match &outcome.kind {
                OutcomeKind::Sent => {}
                OutcomeKind::Retry { due_at, error } => {
                    let updated = query(
                        "UPDATE notifications SET due_at = $3, claim_token = NULL, error = $4, \
                         updated_at = $5 WHERE id = $1 AND claim_token = $2 AND status = 'QUEUED'",
                    )
                    .bind(outcome.id.as_str())
                    .bind(claim_token)
                    .bind(*due_at)
                    .bind(error.to_json().to_string())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    if updated > 0 {
                        retried.push(outcome);
                    } else {
                        summary.stale += 1;
                    }
                }
                OutcomeKind::Failed(error) => {
                    let error = error.to_json();
                    let query = query(
                        "UPDATE notifications SET status = 'FAILED', claim_token = NULL, \
                         error = $3, updated_at = $4 \
                         WHERE id = $1 AND claim_token = $2 AND status = 'QUEUED' \
                         RETURNING operation_id, account_sid",
                    )
                    .bind(outcome.id.as_str())
                    .bind(claim_token)
                    .bind(error.to_string())
                    .bind(now);
                    let moved = Self::count_moved(tx, query, &mut deltas, QUEUED, FAILED).await?;
                    match moved.first() {
                        Some(row) => {
                            summary.failed += 1;
                            let operation_id: String = row.try_get(0)?;
                            events.notification_failed(
                                row.try_get(1)?,
                                &outcome.id,
                                &operation_id,
                                error,
                            );
                        }
                        None => summary.stale += 1,
                    }
                }
            }
        }
        if !retried.is_empty() {
            // A row of a canceled operation is not tried again: it was in flight when the cancel
            // came, and the provider did not take it. Every operation of this write is locked
            // here (PostgreSQL) so the lock order stays that of `deltas.apply`.
            let mut operations = deltas.ids();
            operations.extend(retried.iter().map(|o| o.operation_id.clone()));
            operations.sort_unstable();
            operations.dedup();
            let canceled = canceled_operations(tx, self.backend(), &operations).await?;
            for outcome in retried {
                if !canceled.contains(&outcome.operation_id) {
                    summary.retried += 1;
                    continue;
                }
                // This transaction holds the row since its retry update above.
                query(
                    "UPDATE notifications SET status = 'CANCELED', updated_at = $2 \
                     WHERE id = $1 AND status = 'QUEUED'",
                )
                .bind(outcome.id.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                deltas.add(&outcome.operation_id, QUEUED, -1);
                deltas.add(&outcome.operation_id, CANCELED, 1);
                summary.canceled += 1;
            }
        }
        deltas.apply(tx, self.backend(), now, &mut events).await?;
        summary.completed_operations =
            complete_finished(tx, self.backend(), &deltas.ids(), now, &mut events).await?;
        events.insert(tx, self.backend()).await?;
        Ok(summary)
    }
}

#[async_trait]
impl DeliveryStore for SqlStore {
    async fn create_operation(&self, new: NewOperation) -> Result<CreatedOperation> {
        let backend = self.backend();
        // Serialized here rather than on the single writer.
        let request = serde_json::to_string(&new.request)
            .map_err(|e| StoreError::Config(format!("send request does not serialize: {e}")))?;
        let new = Arc::new((new, request));
        self.write(move |conn| {
            let new = new.clone();
            Box::pin(async move { create_operation_in(conn, backend, &new.0, &new.1).await })
        })
        .await
    }

    async fn get_operation(&self, account: &str, id: &str) -> Result<OperationRecord> {
        let row = sqlx::query(&format!(
            "SELECT {OPERATION_COLUMNS} FROM operations WHERE id = $1 AND account_sid = $2"
        ))
        .bind(id)
        .bind(account)
        .fetch_optional(self.reader())
        .await?
        .ok_or(StoreError::NotFound)?;
        operation_from_row(&row.into())
    }

    async fn list_operations(
        &self,
        account: &str,
        filter: &OperationFilter,
        page: &PageRequest,
    ) -> Result<Page<OperationRecord>> {
        let (at, after_id) = page.bounds();
        let mut sql = format!(
            "SELECT {OPERATION_COLUMNS} FROM operations WHERE account_sid = $1 AND {}",
            keyset_condition("created_at", "id", 2, 3)
        );
        let mut n = 4;
        if filter.status.is_some() {
            sql.push_str(&format!(" AND status = ${n}"));
            n += 1;
        }
        if filter.start_ms.is_some() {
            sql.push_str(&format!(" AND created_at >= ${n}"));
            n += 1;
        }
        if filter.end_ms.is_some() {
            sql.push_str(&format!(" AND created_at <= ${n}"));
            n += 1;
        }
        sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT ${n}"));
        let mut query = sqlx::query(&sql).bind(account).bind(at).bind(after_id);
        if let Some(status) = &filter.status {
            query = query.bind(status.as_str());
        }
        if let Some(start) = filter.start_ms {
            query = query.bind(start);
        }
        if let Some(end) = filter.end_ms {
            query = query.bind(end);
        }
        let rows = query
            .bind(page.limit + 1)
            .fetch_all(self.reader())
            .await?
            .into_iter()
            .map(|row| operation_from_row(&row.into()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page.limit, |op| Cursor {
            at: op.created_at,
            id: op.id.clone(),
        }))
    }

    async fn cancel_operation(&self, account: &str, id: &str) -> Result<()> {
        let now = now_ms();
        let mut tx = self.writer().begin().await?;
        let mut conn = Conn::Sqlx(&mut tx);
        // The operation row first: a concurrent planning step (which also starts with it) is
        // then either wholly before the cancel (its rows get canceled below) or sees plan_done.
        let touched = query(
            "UPDATE operations SET cancel_requested = 1, \
             canceled = canceled + CASE WHEN plan_done = 0 THEN recipients - planned ELSE 0 END, \
             planned = recipients, plan_done = 1, updated_at = $3 \
             WHERE id = $1 AND account_sid = $2 AND completed_at IS NULL",
        )
        .bind(id)
        .bind(account)
        .bind(now)
        .execute(&mut conn)
        .await?;
        if touched == 0 {
            let exists = query("SELECT 1 FROM operations WHERE id = $1 AND account_sid = $2")
                .bind(id)
                .bind(account)
                .fetch_optional(&mut conn)
                .await?
                .is_some();
            tx.rollback().await?;
            return if exists {
                Ok(())
            } else {
                Err(StoreError::NotFound)
            };
        }
        let mut deltas = StatDeltas::default();
        // PostgreSQL: rows another transaction holds right now are skipped, not waited for. A
        // promotion, a credential fail-fast or a late outcome changes rows first and their
        // operation's counters after; this cancel holds the operation row, so waiting for such
        // a row would deadlock. A skipped row takes that transaction's result (as a row in
        // flight does).
        let cancel_where = |condition: &str| {
            self.claim_sql(
                "notifications",
                "status = 'CANCELED', claim_token = NULL, updated_at = $2",
                &format!("SELECT id FROM notifications WHERE operation_id = $1 AND {condition}"),
                condition,
                "id",
            )
        };
        let scheduled = query(&cancel_where("status = 'SCHEDULED'"))
            .bind(id)
            .bind(now)
            .fetch_all(&mut conn)
            .await?
            .len() as i64;
        // Rows in flight (claimed, lease running) may be with the provider already: they finish.
        let queued = query(&cancel_where(
            "status = 'QUEUED' AND (claim_token IS NULL OR due_at <= $2)",
        ))
        .bind(id)
        .bind(now)
        .fetch_all(&mut conn)
        .await?
        .len() as i64;
        deltas.add(id, SCHEDULED, -scheduled);
        deltas.add(id, QUEUED, -queued);
        deltas.add(id, CANCELED, scheduled + queued);
        let mut events = PendingEvents::default();
        deltas
            .apply(&mut conn, self.backend(), now, &mut events)
            .await?;
        complete_finished(
            &mut conn,
            self.backend(),
            &[id.to_owned()],
            now,
            &mut events,
        )
        .await?;
        events.insert(&mut conn, self.backend()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_notification(&self, account: &str, id: &str) -> Result<NotificationRecord> {
        let row = sqlx::query(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = $1 AND account_sid = $2"
        ))
        .bind(id)
        .bind(account)
        .fetch_optional(self.reader())
        .await?
        .ok_or(StoreError::NotFound)?;
        notification_from_row(&row)
    }

    async fn list_notifications(
        &self,
        account: &str,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> Result<Page<NotificationRecord>> {
        let (at, after_id) = page.bounds();
        let mut sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE account_sid = $1 AND {}",
            keyset_condition("created_at", "id", 2, 3)
        );
        let mut n = 4;
        let mut texts: Vec<String> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, value: String| {
            sql.push_str(&format!(" AND {clause} ${n}"));
            n += 1;
            texts.push(value);
        };
        if let Some(op) = &filter.operation_id {
            push(&mut sql, "operation_id =", op.clone());
        }
        if let Some(status) = &filter.status {
            push(&mut sql, "status =", status.clone());
        }
        if let Some(user) = &filter.user_id {
            push(&mut sql, "user_id =", user.clone());
        }
        if let Some(provider) = filter.provider {
            push(&mut sql, "provider =", provider.as_str().to_owned());
        }
        for (key, value) in &filter.tags {
            push(&mut sql, "tag_keys LIKE", tag_pattern(key, value));
            sql.push_str(" ESCAPE '\\'");
        }
        let mut ints = Vec::new();
        if let Some(start) = filter.start_ms {
            sql.push_str(&format!(" AND created_at >= ${n}"));
            n += 1;
            ints.push(start);
        }
        if let Some(end) = filter.end_ms {
            sql.push_str(&format!(" AND created_at <= ${n}"));
            n += 1;
            ints.push(end);
        }
        sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT ${n}"));
        let mut query = sqlx::query(&sql).bind(account).bind(at).bind(after_id);
        for text in texts {
            query = query.bind(text);
        }
        for int in ints {
            query = query.bind(int);
        }
        let rows = query
            .bind(page.limit + 1)
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(notification_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(rows, page.limit, |n| Cursor {
            at: n.created_at,
            id: n.id.clone(),
        }))
    }

    async fn operation_requests(&self, ids: &[String]) -> Result<Vec<(String, String, i64)>> {
        let mut out = Vec::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT o.id, r.request, o.expires_at \
             FROM operations o JOIN operation_requests r ON r.operation_id = o.id \
             WHERE o.id IN ({})",
            json_texts(self.backend(), 1)
        );
        let rows = sqlx::query(&sql)
            .bind(json_list(ids))
            .fetch_all(self.reader())
            .await?;
        for row in rows {
            out.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
        }
        Ok(out)
    }

    async fn claim_operations_to_plan(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<PlanTask>> {
        let store = self.clone();
        self.write(move |conn| {
            let store = store.clone();
            Box::pin(async move {
                store
                    .claim_operations_to_plan_in(conn, now, lease_ms, limit)
                    .await
            })
        })
        .await
    }

    async fn write_plan(&self, batch: PlanBatch) -> Result<Option<Claim>> {
        let batch = Arc::new(batch);
        let store = self.clone();
        let shared = batch.clone();
        let written: Option<(Claim, Option<Vec<String>>)> = self
            .write(move |conn| {
                let (store, batch) = (store.clone(), shared.clone());
                Box::pin(async move { store.write_plan_batch_in(conn, &batch).await })
            })
            .await?;
        let Some((mut claim, ids)) = written else {
            return Ok(None);
        };
        if let Some(ids) = ids {
            // The write (which held the other reference) is over: the rows move into the claim.
            let batch = Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone());
            let PlanBatch {
                operation_id,
                account_sid,
                notifications,
                expires_at,
                ..
            } = batch;
            claim.notifications = notifications
                .into_iter()
                .zip(ids)
                .map(|(n, id)| ClaimedNotification {
                    id,
                    operation_id: operation_id.clone(),
                    account_sid: account_sid.clone(),
                    recipient_index: n.recipient_index,
                    provider: n.provider,
                    token: n.token,
                    credential_id: n.credential_id,
                    app_name: n.app_name,
                    user_id: n.user_id,
                    attempts: 1,
                    expires_at,
                })
                .collect();
        }
        Ok(Some(claim))
    }

    async fn promote_scheduled(&self, now: i64, limit: i64) -> Result<u64> {
        let store = self.clone();
        self.write(move |conn| {
            let store = store.clone();
            Box::pin(async move { store.promote_scheduled_in(conn, now, limit).await })
        })
        .await
    }

    async fn claim_notifications(&self, now: i64, lease_ms: i64, limit: i64) -> Result<Claim> {
        let store = self.clone();
        self.write(move |conn| {
            let store = store.clone();
            Box::pin(async move {
                store
                    .claim_notifications_in(conn, now, lease_ms, limit)
                    .await
            })
        })
        .await
    }

    async fn record_outcomes_of_claims(
        &self,
        claims: Arc<[ClaimOutcomes]>,
    ) -> Result<OutcomeSummary> {
        let store = self.clone();
        self.write(move |conn| {
            let (store, claims) = (store.clone(), claims.clone());
            Box::pin(async move { store.record_outcomes_in(conn, &claims).await })
        })
        .await
    }

    async fn release_claim(&self, claim_token: &str, ids: &[String]) -> Result<u64> {
        let sql = format!(
            "UPDATE notifications SET claim_token = NULL, due_at = $2, updated_at = $2, \
             attempts = attempts - 1 \
             FROM (SELECT value AS id FROM {}) AS w \
             WHERE notifications.id = w.id AND notifications.claim_token = $1",
            match self.backend() {
                Backend::Sqlite => "json_each($3)",
                Backend::Postgres => "jsonb_array_elements_text($3::text::jsonb) AS j(value)",
            }
        );
        let released = Arc::new((sql, claim_token.to_owned(), json_list(ids)));
        self.write(move |conn| {
            let released = released.clone();
            Box::pin(async move {
                let (sql, claim_token, ids) = &*released;
                query(sql)
                    .bind(claim_token.as_str())
                    .bind(now_ms())
                    .bind(ids.as_str())
                    .execute(conn)
                    .await
            })
        })
        .await
    }

    async fn fail_queued_for_credential(
        &self,
        credential_id: &str,
        error: &NotificationError,
    ) -> Result<u64> {
        let error_json = error.to_json();
        let error = error_json.to_string();
        let mut total = 0;
        // The rows are found through the queue index (in `due_at` order) from where the previous
        // batch ended, so that a large queue of other credentials' rows ahead of them is walked
        // once, not once per batch.
        let mut from_due_at = i64::MIN;
        loop {
            let now = now_ms();
            let mut tx = self.writer().begin().await?;
            let mut conn = Conn::Sqlx(&mut tx);
            let sql = self.claim_sql(
                "notifications",
                "status = 'FAILED', claim_token = NULL, error = $1, updated_at = $2",
                "SELECT id FROM notifications WHERE status = 'QUEUED' AND due_at >= $4 \
                 AND credential_id = $3 AND (claim_token IS NULL OR due_at <= $2) \
                 ORDER BY due_at LIMIT 1000",
                "status = 'QUEUED'",
                "operation_id, id, account_sid, due_at",
            );
            let mut deltas = StatDeltas::default();
            let mut events = PendingEvents::default();
            let rows = Self::count_moved(
                &mut conn,
                query(&sql)
                    .bind(error.as_str())
                    .bind(now)
                    .bind(credential_id)
                    .bind(from_due_at),
                &mut deltas,
                QUEUED,
                FAILED,
            )
            .await?;
            for row in &rows {
                let operation_id: String = row.try_get(0)?;
                let id: String = row.try_get(1)?;
                from_due_at = from_due_at.max(row.try_get(3)?);
                events.notification_failed(row.try_get(2)?, &id, &operation_id, error_json.clone());
            }
            let moved = rows.len() as u64;
            deltas
                .apply(&mut conn, self.backend(), now, &mut events)
                .await?;
            complete_finished(&mut conn, self.backend(), &deltas.ids(), now, &mut events).await?;
            events.insert(&mut conn, self.backend()).await?;
            tx.commit().await?;
            total += moved;
            if moved < 1000 {
                return Ok(total);
            }
        }
    }

    async fn prune_finished(&self, finished_before: i64, limit: i64) -> Result<u64> {
        let now = now_ms();
        let mut tx = self.writer().begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM operations WHERE completed_at IS NOT NULL AND completed_at < $1 \
             ORDER BY completed_at LIMIT $2",
        )
        .bind(finished_before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if !ids.is_empty() {
            let list = json_texts(self.backend(), 1);
            let json = json_list(&ids);
            for table_sql in [
                format!("DELETE FROM notifications WHERE operation_id IN ({list})"),
                format!("DELETE FROM operations WHERE id IN ({list})"),
            ] {
                sqlx::query(&table_sql)
                    .bind(json.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(now - IDEMPOTENCY_WINDOW_MS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ids.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_patterns_escape_separators_and_wildcards() {
        let mut map = BTreeMap::new();
        map.insert("a:b".to_string(), "x;y%_".to_string());
        map.insert("k".to_string(), "v".to_string());
        let tags = Tags::from(map);
        assert_eq!(tag_keys(&tags), ";a%3Ab:x%3By%25%5F;k:v;");
        assert_eq!(tag_pattern("k", "v"), "%;k:v;%");
        assert_eq!(tag_pattern("a:b", "x;y%_"), "%;a\\%3Ab:x\\%3By\\%25\\%5F;%");
    }

    /// The SQLite statements that mark rows sent look each id up by primary key. (Left to
    /// choose, SQLite without statistics walked the operation's rows in
    /// `notifications_by_operation` instead: hundreds of microseconds per row.)
    #[tokio::test]
    async fn rows_are_marked_sent_by_primary_key() {
        let db = crate::testing::TestDatabase::sqlite().await;
        let store = db.store().await;
        for sql in [MARK_SENT.as_str(), MARK_SENT_MANY.as_str()] {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(store.reader())
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<String, _>(3))
                .collect();
            assert_eq!(
                plan,
                ["SEARCH notifications USING INDEX sqlite_autoindex_notifications_1 (id=?)"],
                "{sql}"
            );
        }
        store.close().await;
    }
}
