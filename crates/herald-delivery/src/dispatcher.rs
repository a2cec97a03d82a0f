//! The dispatcher: claims a batch of due notifications, sends them through their credentials'
//! provider clients (concurrently, bounded per credential), and writes every outcome of the batch
//! in one transaction. Dead tokens mark their devices INVALID; a credential error marks the
//! credential (`lastError`) and fails its queued notifications at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use herald_core::time::now_ms;
use herald_core::{AppName, ids};
use herald_providers::Outcome;
use herald_store::NewEvent;
use herald_store::delivery::{
    Claim, ClaimOutcomes, ClaimedNotification, NotificationError, OutcomeKind, OutcomeWrite,
};
use herald_store::devices::{DeadDevice, InvalidatedDevice};
use rustc_hash::FxHashMap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Shared;
use crate::credentials::{Client, CredentialState, Loaded};
use crate::message::{OperationContext, Prepared};

pub(crate) async fn run(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>, worker: usize) {
    // Batches handed over by the planner come first, but the store (retries, schedules, rows
    // written unclaimed, other nodes' expired leases) is still asked at least every poll
    // interval.
    let mut store_checked = Instant::now();
    let mut recording = Recording::new(worker);
    loop {
        if *stopped.borrow() {
            // The planner has stopped (see `Engine::shutdown`): what it handed over is sent.
            while let Ok(claim) = shared.handoff.try_recv() {
                take_handed_over(&shared, claim, worker, &mut recording).await;
            }
            recording.finish().await;
            return;
        }
        if store_checked.elapsed() < shared.config.poll_interval
            && let Ok(claim) = shared.handoff.try_recv()
        {
            take_handed_over(&shared, claim, worker, &mut recording).await;
            continue;
        }
        store_checked = Instant::now();
        let lease_ms = shared.config.lease.as_millis() as i64;
        match shared
            .store
            .claim_notifications(now_ms(), lease_ms, shared.config.claim_batch)
            .await
        {
            Ok(claim) if !claim.notifications.is_empty() => {
                dispatch_logged(&shared, vec![claim], worker, &mut recording).await;
                continue;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(worker, %error, "claiming notifications failed"),
        }
        if let Ok(claim) = shared.handoff.try_recv() {
            take_handed_over(&shared, claim, worker, &mut recording).await;
            continue;
        }
        tokio::select! {
            handed = shared.handoff.recv_async() => {
                if let Ok(claim) = handed {
                    take_handed_over(&shared, claim, worker, &mut recording).await;
                }
            }
            () = shared.wake_dispatchers.notified() => {}
            () = tokio::time::sleep(shared.config.poll_interval) => {}
            changed = stopped.changed() => {
                // The engine was dropped without a shutdown.
                if changed.is_err() {
                    recording.finish().await;
                    return;
                }
            }
        }
    }
}

/// Sends a batch the planner handed over, together with the batches waiting behind it up to
/// about a claim's size (the planner plans many operations at once, and a small operation is a
/// batch of its own: one at a time, each would cost a send round and an outcome write). A batch
/// that waited so long (every dispatcher stuck on slow providers) that its lease might end before
/// its sends do goes back to the queue unsent instead, to be claimed afresh with a full lease.
async fn take_handed_over(
    shared: &Arc<Shared>,
    first: Claim,
    worker: usize,
    recording: &mut Recording,
) {
    let limit = shared.config.claim_batch.max(1) as usize;
    let mut rows = first.notifications.len();
    let mut handed = vec![first];
    while rows < limit {
        let Ok(claim) = shared.handoff.try_recv() else {
            break;
        };
        rows += claim.notifications.len();
        handed.push(claim);
    }
    let lease_ms = shared.config.lease.as_millis() as i64;
    let mut claims = Vec::with_capacity(handed.len());
    for claim in handed {
        let waited_ms = lease_ms - (claim.lease_until - now_ms());
        if waited_ms <= lease_ms / 4 {
            claims.push(claim);
            continue;
        }
        let ids: Vec<String> = claim.notifications.into_iter().map(|n| n.id).collect();
        match shared.store.release_claim(&claim.token, &ids).await {
            Ok(released) => {
                tracing::info!(
                    worker,
                    released,
                    waited_ms,
                    "a handed-over batch waited too long; given back to the queue"
                )
            }
            Err(error) => {
                tracing::warn!(worker, %error, "giving a batch back failed; it is due again when its lease ends")
            }
        }
    }
    if !claims.is_empty() {
        dispatch_logged(shared, claims, worker, recording).await;
    }
}

async fn dispatch_logged(
    shared: &Arc<Shared>,
    claims: Vec<Claim>,
    worker: usize,
    recording: &mut Recording,
) {
    let count: usize = claims.iter().map(|c| c.notifications.len()).sum();
    if let Err(error) = dispatch(shared, claims, worker, recording).await {
        tracing::warn!(worker, count, %error, "batch not sent; its lease will expire and it is sent again");
    }
}

/// The outcome write of a dispatcher's last batch while it runs. The dispatcher sends its next
/// batch meanwhile instead of waiting for the write's commit (an fsync on SQLite, shared by the
/// writes queued with it, so every dispatcher used to wait for the same commit and then send at
/// once, leaving the providers idle in between); that batch's own write waits for this one, so
/// at most one write per dispatcher is outstanding. A credential fail-fast that follows a write
/// runs as a task of its own (it may walk a large queue): the next write does not wait for it,
/// only [`Recording::finish`] does.
pub(crate) struct Recording {
    worker: usize,
    /// The write, and how many notifications it records; it hands back the fail-fast it
    /// started, if any.
    write: Option<(JoinHandle<Option<JoinHandle<()>>>, usize)>,
    fail_fast: Vec<JoinHandle<()>>,
}

impl Recording {
    pub(crate) fn new(worker: usize) -> Self {
        Self {
            worker,
            write: None,
            fail_fast: Vec::new(),
        }
    }

    /// Waits for the outcome write in progress, if any.
    pub(crate) async fn wait(&mut self) {
        let Some((write, count)) = self.write.take() else {
            return;
        };
        match write.await {
            Ok(Some(fail_fast)) => self.fail_fast.push(fail_fast),
            Ok(None) => {}
            Err(error) => tracing::warn!(worker = self.worker, count, %error,
                "an outcome write ended abnormally; its batch's lease will expire and it is sent again"),
        }
        self.fail_fast.retain(|task| !task.is_finished());
    }

    /// Waits for the outcome write in progress and for the fail-fasts started after writes.
    pub(crate) async fn finish(&mut self) {
        self.wait().await;
        for task in self.fail_fast.drain(..) {
            let _ = task.await;
        }
    }
}

/// What to do with one claimed notification before any network call.
enum Step<'a> {
    /// `loaded` is borrowed from the batch's credentials (a clone per notification was two
    /// reference counts shared by every dispatcher, changed twice per send).
    Send {
        loaded: &'a Loaded,
        prepared: Prepared,
    },
    Done(OutcomeKind),
    /// Store trouble loading what it needs: try again soon.
    Later,
}

/// A credential error seen in this batch.
struct CredentialFailure {
    version: i64,
    error: NotificationError,
}

/// Sends the rows of `claims` and writes their outcomes (one write for them all), the write in
/// the background (see [`Recording`]).
async fn dispatch(
    shared: &Arc<Shared>,
    claims: Vec<Claim>,
    worker: usize,
    recording: &mut Recording,
) -> Result<(), herald_store::StoreError> {
    let claimed_at = std::time::Instant::now();
    // The rows of every claim, and for each row the index of its claim.
    let mut tokens = Vec::with_capacity(claims.len());
    let mut claim_of = Vec::new();
    let mut notifications = Vec::new();
    for (index, claim) in claims.into_iter().enumerate() {
        claim_of.extend(std::iter::repeat_n(index, claim.notifications.len()));
        notifications.extend(claim.notifications);
        tokens.push(claim.token);
    }
    let contexts = operation_contexts(shared, &notifications).await?;
    // Fx, not SipHash: looked up several times per notification, keyed by the store's IDs.
    let mut credentials: FxHashMap<String, CredentialState> = FxHashMap::default();
    for n in &notifications {
        if !credentials.contains_key(&n.credential_id) {
            let state = match shared
                .credentials
                .get(
                    shared.store.as_ref(),
                    &shared.providers,
                    shared.config.credential_error_hold,
                    &n.account_sid,
                    &n.credential_id,
                )
                .await
            {
                Ok(state) => state,
                Err(error) => {
                    tracing::warn!(credential = %n.credential_id, %error, "loading credential failed");
                    CredentialState::Gone
                }
            };
            credentials.insert(n.credential_id.clone(), state);
        }
    }
    let now = now_ms();
    let mut steps = Vec::with_capacity(notifications.len());
    for n in &notifications {
        let Some(context) = contexts.get(&n.operation_id) else {
            steps.push(Step::Later);
            continue;
        };
        let first_zero_ttl_attempt = context.request.ttl == 0 && n.attempts == 1;
        let step = if now > n.expires_at && !first_zero_ttl_attempt {
            Step::Done(OutcomeKind::Failed(NotificationError::new(
                "expired",
                "the notification's TTL passed before it could be delivered",
            )))
        } else {
            match credentials.get(&n.credential_id) {
                Some(CredentialState::Ready(loaded)) => Step::Send {
                    prepared: context.prepared(loaded.client.kind(), n.recipient_index),
                    loaded,
                },
                Some(CredentialState::Broken(error)) => {
                    Step::Done(OutcomeKind::Failed(error.clone()))
                }
                Some(CredentialState::Gone) | None => {
                    Step::Done(OutcomeKind::Failed(NotificationError::new(
                        "credential-deleted",
                        format!("credential {} no longer exists", n.credential_id),
                    )))
                }
            }
        };
        steps.push(step);
    }

    let sends = notifications.iter().zip(steps).map(|(n, step)| async move {
        match step {
            Step::Done(kind) => (None, Some(kind)),
            Step::Later => (None, None),
            Step::Send { loaded, prepared } => {
                let outcome = send(loaded, &prepared, n).await;
                (Some((loaded, outcome)), None)
            }
        }
    });
    let results = join_in_order(sends).await;
    let sent_at = std::time::Instant::now();
    tracing::debug!(
        count = results.len(),
        send_ms = (sent_at - claimed_at).as_millis() as u64,
        "batch sent"
    );

    let mut writes: Vec<Vec<OutcomeWrite>> = tokens.iter().map(|_| Vec::new()).collect();
    let mut dead: Vec<DeadDevice> = Vec::new();
    let mut broken: BTreeMap<String, CredentialFailure> = BTreeMap::new();
    let now = now_ms();
    let count = notifications.len();
    // The rows are consumed here: their ids move into the outcome writes.
    for ((n, result), claim) in notifications.into_iter().zip(results).zip(claim_of) {
        let kind = match result {
            (_, Some(kind)) => kind,
            // Not attempted (its operation could not be loaded): again soon, within the
            // attempt budget.
            (None, None) => retry_or_fail(
                shared,
                &n,
                now,
                None,
                NotificationError::new("internal", "the operation's request could not be loaded"),
            ),
            (Some((loaded, outcome)), None) => {
                let legacy = matches!(loaded.client, Client::FcmLegacy(_));
                match outcome {
                    Outcome::Delivered { .. } => OutcomeKind::Sent,
                    Outcome::Retry { after, .. } => {
                        let error = error_of(&outcome, "provider-unavailable", legacy);
                        retry_or_fail(shared, &n, now, after, error)
                    }
                    Outcome::DeadToken { .. } => {
                        let error = error_of(&outcome, "dead-token", legacy);
                        if let Some(app) =
                            n.app_name.as_deref().and_then(|a| AppName::parse(a).ok())
                        {
                            dead.push(DeadDevice {
                                account_sid: n.account_sid.clone(),
                                app_name: app,
                                provider: n.provider,
                                token: n.token.clone(),
                                error: error.to_json(),
                            });
                        }
                        OutcomeKind::Failed(error)
                    }
                    Outcome::Permanent { .. } => {
                        OutcomeKind::Failed(error_of(&outcome, "provider-rejected", legacy))
                    }
                    Outcome::CredentialError { .. } => {
                        let error = error_of(&outcome, "credential-error", legacy);
                        broken
                            .entry(n.credential_id.clone())
                            .or_insert(CredentialFailure {
                                version: loaded.content_version,
                                error: error.clone(),
                            });
                        OutcomeKind::Failed(error)
                    }
                }
            }
        };
        writes[claim].push(OutcomeWrite {
            id: n.id,
            operation_id: n.operation_id,
            kind,
        });
    }

    // Dead devices and credential errors are recorded before the outcomes: once an operation
    // reads COMPLETED, what it found out about devices and credentials is already visible (and
    // a crash in between only means the batch is sent again, to a device already INVALID).
    if !dead.is_empty() {
        match shared.store.mark_devices_invalid(&dead).await {
            Ok(invalidated) => {
                tracing::info!(count = invalidated.len(), "devices marked INVALID");
                record_invalidated(shared, &invalidated).await;
            }
            Err(error) => tracing::warn!(%error, "marking dead devices INVALID failed"),
        }
    }
    for (credential, failure) in &broken {
        let code = failure
            .error
            .provider_reason
            .clone()
            .unwrap_or_else(|| failure.error.code.clone());
        if let Err(error) = shared
            .store
            .set_credential_last_error(credential, failure.version, &code, &failure.error.message)
            .await
        {
            tracing::warn!(%credential, %error, "recording the credential's lastError failed");
        }
    }

    let claims: Vec<ClaimOutcomes> = tokens
        .into_iter()
        .zip(writes)
        .filter(|(_, outcomes)| !outcomes.is_empty())
        .map(|(claim_token, outcomes)| ClaimOutcomes {
            claim_token,
            outcomes,
        })
        .collect();
    // Sends through a refused credential stop now, not when this write is done: the
    // dispatcher's next batch is sent meanwhile. Its queued notifications fail after the write.
    for (credential, failure) in &broken {
        tracing::warn!(%credential, code = %failure.error.provider_reason.as_deref().unwrap_or(""), "credential refused by the provider; sends through it stop");
        shared.credentials.mark_broken(
            credential,
            failure.version,
            shared.config.credential_error_hold,
            failure.error.clone(),
        );
    }
    recording.wait().await;
    let shared = shared.clone();
    let write = tokio::spawn(async move {
        let started = std::time::Instant::now();
        if !claims.is_empty()
            && let Err(error) = record(&shared, claims.into()).await
        {
            tracing::warn!(worker, count, %error, "batch not recorded; its lease will expire and it is sent again");
            return None;
        }
        tracing::debug!(
            count,
            record_ms = started.elapsed().as_millis() as u64,
            "batch recorded"
        );
        (!broken.is_empty()).then(|| tokio::spawn(async move { fail_fast(&shared, broken).await }))
    });
    recording.write = Some((write, count));
    Ok(())
}

/// After a batch's outcomes are written: fails the queued notifications of each credential a
/// provider refused at once.
async fn fail_fast(shared: &Shared, broken: BTreeMap<String, CredentialFailure>) {
    for (credential, failure) in broken {
        tracing::info!(%credential, "failing the queued notifications of a refused credential");
        match shared
            .store
            .fail_queued_for_credential(&credential, &failure.error)
            .await
        {
            Ok(failed) => tracing::info!(%credential, failed, "queued notifications failed fast"),
            Err(error) => {
                tracing::warn!(%credential, %error, "failing queued notifications failed")
            }
        }
    }
}

/// Runs the futures concurrently; their outputs in the order given. (`join_all` does the same for
/// large sets through `FuturesOrdered`, which parks each output that finishes early in a binary
/// heap; here it goes straight to its slot.) Each future is boxed where it is made: a send's
/// future is over a kilobyte, and unboxed it was copied again into every wrapper and into
/// `FuturesUnordered`'s task, a few percent of the dispatcher's CPU. The index is attached with
/// `map`, which polls the future where it lies: an `async` wrapper moved it into its own await
/// slot on the first poll, another 1.3 KB copy per send.
async fn join_in_order<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut running: FuturesUnordered<_> = futures
        .enumerate()
        .map(|(index, future)| Box::pin(future.map(move |output| (index, output))))
        .collect();
    let mut outputs: Vec<Option<F::Output>> = std::iter::repeat_with(|| None)
        .take(running.len())
        .collect();
    while let Some((index, output)) = running.next().await {
        outputs[index] = Some(output);
    }
    outputs
        .into_iter()
        .map(|output| output.expect("every future ran to its end"))
        .collect()
}

/// Writes the outcomes, trying again a few times on store errors (giving up lets the lease
/// expire: the batch is then sent again, the one source of duplicates).
async fn record(
    shared: &Shared,
    claims: Arc<[ClaimOutcomes]>,
) -> Result<(), herald_store::StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match shared.store.record_outcomes_of_claims(claims.clone()).await {
            Ok(summary) => {
                if summary.stale > 0 {
                    tracing::info!(
                        stale = summary.stale,
                        "outcomes for rows no longer held were dropped"
                    );
                }
                return Ok(());
            }
            Err(error) if attempt < 5 => {
                tracing::warn!(%error, attempt, "writing outcomes failed; trying again");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Records a `com.herald.device.invalidated` event for each device that has just become
/// INVALID. Its own transaction, right after the marking's (which belongs to the device store):
/// a crash or a store failure between the two loses these events (the device is INVALID
/// already, so no later send reports it again) — see `docs/events.md`.
async fn record_invalidated(shared: &Shared, invalidated: &[InvalidatedDevice]) {
    if invalidated.is_empty() {
        return;
    }
    let events: Vec<NewEvent> = invalidated
        .iter()
        .map(|d| {
            NewEvent::device_invalidated(
                d.account_sid.as_str(),
                &d.registration_id,
                &d.user_id,
                &d.app_name,
                d.provider.as_str(),
                &d.token,
            )
        })
        .collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match shared.store.record_events(&events).await {
            Ok(_) => return,
            Err(error) if attempt < 5 => {
                tracing::warn!(%error, attempt, "recording device.invalidated events failed; trying again");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(error) => {
                tracing::warn!(%error, count = events.len(), "device.invalidated events lost: recording them failed");
                return;
            }
        }
    }
}

fn retry_or_fail(
    shared: &Shared,
    n: &ClaimedNotification,
    now: i64,
    after: Option<Duration>,
    error: NotificationError,
) -> OutcomeKind {
    let policy = &shared.config.retry;
    if n.attempts >= policy.max_attempts {
        return OutcomeKind::Failed(NotificationError {
            code: "retries-exhausted".into(),
            message: format!("gave up after {} attempts: {}", n.attempts, error.message),
            ..error
        });
    }
    let due_at = now + policy.delay(n.attempts, after).as_millis() as i64;
    if due_at > n.expires_at {
        return OutcomeKind::Failed(NotificationError {
            code: "expired".into(),
            message: format!(
                "the next attempt would fall after the notification's TTL: {}",
                error.message
            ),
            ..error
        });
    }
    OutcomeKind::Retry { due_at, error }
}

fn error_of(outcome: &Outcome, code: &str, legacy: bool) -> NotificationError {
    let mut message = outcome.to_string();
    if legacy && !matches!(outcome, Outcome::Retry { .. }) {
        message.push_str(
            " (this credential uses the legacy FCM HTTP API, which Google shut down in 2024: \
             use an FCM service-account credential)",
        );
    }
    NotificationError {
        code: code.to_owned(),
        message,
        provider_status: outcome.status(),
        provider_reason: Some(outcome.reason_code().to_owned()).filter(|r| !r.is_empty()),
    }
}

async fn send(loaded: &Loaded, prepared: &Prepared, n: &ClaimedNotification) -> Outcome {
    let Ok(_permit) = loaded.permits.acquire().await else {
        return Outcome::Retry {
            after: None,
            status: None,
            reason: "shutting down".into(),
        };
    };
    let id = ids::parse_type_id(ids::PUSH_NOTIFICATION, &n.id).unwrap_or_else(uuid::Uuid::now_v7);
    match (&loaded.client, prepared) {
        (Client::Apns(client), Prepared::Apns(p)) => client.send(p, &n.token, id).await,
        (Client::Fcm(client), Prepared::Fcm(p)) => client.send(p, &n.token, id).await,
        (Client::FcmLegacy(client), Prepared::FcmLegacy(p)) => client.send(p, &n.token, id).await,
        _ => Outcome::Retry {
            after: None,
            status: None,
            reason: "payload prepared for another client kind".into(),
        },
    }
}

/// The parsed requests of the batch's operations (cached across batches).
async fn operation_contexts(
    shared: &Shared,
    notifications: &[ClaimedNotification],
) -> Result<FxHashMap<String, Arc<OperationContext>>, herald_store::StoreError> {
    let mut out = FxHashMap::default();
    let mut missing = Vec::new();
    for n in notifications {
        if out.contains_key(&n.operation_id) || missing.contains(&n.operation_id) {
            continue;
        }
        match shared.operations.get(&n.operation_id) {
            Some(context) => {
                out.insert(n.operation_id.clone(), context);
            }
            None => missing.push(n.operation_id.clone()),
        }
    }
    if !missing.is_empty() {
        for (id, request, expires_at) in shared.store.operation_requests(&missing).await? {
            match serde_json::from_str(&request) {
                Ok(request) => {
                    let context = Arc::new(OperationContext::new(request, expires_at));
                    shared.operations.insert(id.clone(), context.clone());
                    out.insert(id, context);
                }
                Err(error) => {
                    tracing::error!(operation = %id, %error, "stored send request does not parse")
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use herald_core::time::now_ms;
    use herald_core::{Provider, Tags};
    use herald_providers::{ProviderConfig, Providers};
    use herald_store::delivery::{Claim, NewNotification, PlanBatch};
    use herald_store::testing::{TestDatabase, operation_to_plan};
    use herald_store::{AccountStore, DeliveryStore, Store};
    use tokio::sync::Notify;

    use crate::{EngineConfig, Shared, credentials, message};

    /// A new operation of 3 APN tokens planned in one step, its rows inserted claimed with
    /// `lease_until`, through a credential that does not exist (sent, its rows fail at once).
    async fn planned_claim(
        store: &herald_store::SqlStore,
        account: &str,
        lease_until: i64,
    ) -> (String, Claim) {
        let (id, task) = operation_to_plan(store, account, 3).await;
        let claim = store
            .write_plan_batch(&PlanBatch {
                operation_id: id.clone(),
                account_sid: account.to_owned(),
                owner: task.owner,
                planned_before: 0,
                planned_after: 3,
                notifications: (0..3)
                    .map(|i| NewNotification {
                        recipient_index: i,
                        provider: Provider::Apn,
                        token: format!("tok-{i}"),
                        credential_id: "comms_credential_missing".into(),
                        app_name: None,
                        user_id: None,
                    })
                    .collect(),
                unaddressable: 0,
                done: true,
                lease_until,
                priority: "HIGH".into(),
                tags: Tags::default(),
                scheduled_until: None,
                expires_at: now_ms() + 3_600_000,
                claim: true,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claim.notifications.len(), 3);
        (id, claim)
    }

    /// An engine's shared state over `store` with a lease of 60 s and room for `handoff` batches.
    fn shared(store: Arc<herald_store::SqlStore>, handoff: usize) -> Shared {
        let (handoff_send, handoff) = flume::bounded(handoff);
        Shared {
            store: store as Arc<dyn Store>,
            providers: Arc::new(Providers::new(ProviderConfig::default()).unwrap()),
            credentials: credentials::CredentialCache::new(10, Duration::from_secs(5)),
            operations: message::OperationCache::default(),
            config: EngineConfig {
                lease: Duration::from_secs(60),
                ..EngineConfig::default()
            },
            wake_planner: Arc::new(Notify::new()),
            wake_dispatchers: Notify::new(),
            handoff_send,
            handoff,
            handoff_reserved: Default::default(),
            large_plan: tokio::sync::Semaphore::new(1),
        }
    }

    /// A batch that waited in the hand-over for over a quarter of its lease is not sent (its
    /// lease may end mid-send, and a cancel may already have taken its rows): it goes back to
    /// the queue, due at once, its attempt not counted.
    #[tokio::test]
    async fn a_batch_that_waited_too_long_is_given_back_unsent() {
        for db in TestDatabase::all().await {
            let store = Arc::new(db.store().await);
            let account = store.create_account(None).await.unwrap().account.sid;
            // Planned 20 s ago, by its lease: it waited a third of the lease.
            let (id, claim) = planned_claim(&store, &account, now_ms() + 40_000).await;
            let shared = Arc::new(shared(store.clone(), 1));
            let mut recording = super::Recording::new(0);
            super::take_handed_over(&shared, claim, 0, &mut recording).await;
            recording.finish().await;
            let op = store.get_operation(&account, &id).await.unwrap();
            assert_eq!(
                (op.stats.queued, op.stats.failed, op.stats.sent),
                (3, 0, 0),
                "{}: not sent",
                db.name
            );
            let again = store
                .claim_notifications(now_ms(), 60_000, 10)
                .await
                .unwrap();
            assert_eq!(again.notifications.len(), 3, "{}: due at once", db.name);
            assert!(again.notifications.iter().all(|n| n.attempts == 1));
        }
    }

    /// A dispatcher takes the batches waiting behind the one it was handed with it, and writes
    /// each one's outcomes under its own claim; one that waited too long still goes back.
    #[tokio::test]
    async fn handed_over_batches_are_sent_together() {
        for db in TestDatabase::all().await {
            let store = Arc::new(db.store().await);
            let account = store.create_account(None).await.unwrap().account.sid;
            let (first, first_claim) = planned_claim(&store, &account, now_ms() + 60_000).await;
            let (waiting, waiting_claim) = planned_claim(&store, &account, now_ms() + 60_000).await;
            let (old, old_claim) = planned_claim(&store, &account, now_ms() + 40_000).await;
            let shared = Arc::new(shared(store.clone(), 4));
            shared.handoff_send.try_send(waiting_claim).unwrap();
            shared.handoff_send.try_send(old_claim).unwrap();
            let mut recording = super::Recording::new(0);
            super::take_handed_over(&shared, first_claim, 0, &mut recording).await;
            recording.finish().await;
            assert!(shared.handoff.is_empty(), "{}", db.name);
            for id in [&first, &waiting] {
                let op = store.get_operation(&account, id).await.unwrap();
                assert_eq!(
                    (op.status.as_str(), op.stats.failed),
                    ("COMPLETED", 3),
                    "{}: sent (to a credential that does not exist) and recorded",
                    db.name
                );
            }
            let op = store.get_operation(&account, &old).await.unwrap();
            assert_eq!((op.stats.queued, op.stats.failed), (3, 0), "{}", db.name);
        }
    }

    /// Room in the hand-over is promised to one planning step at a time: what is queued plus
    /// what is reserved never exceeds its capacity, and a reservation ends when dropped.
    #[tokio::test]
    async fn hand_over_reservations_never_exceed_its_room() {
        let db = TestDatabase::all().await.remove(0);
        let shared = shared(Arc::new(db.store().await), 4);
        let three = shared.reserve_handoff(3).expect("room for 3 of 4");
        assert!(shared.reserve_handoff(2).is_none());
        let one = shared.reserve_handoff(1).expect("the last place");
        drop(three);
        let claim = Claim {
            token: "t".into(),
            lease_until: 0,
            notifications: Vec::new(),
        };
        shared.handoff_send.try_send(claim).unwrap();
        assert!(shared.reserve_handoff(3).is_none(), "1 queued + 1 reserved");
        assert!(shared.reserve_handoff(2).is_some());
        drop(one);
        assert!(shared.reserve_handoff(3).is_some());
    }
}
