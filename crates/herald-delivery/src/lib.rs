//! Herald's delivery engine: planner → queue → dispatcher → outcomes (see `docs/delivery.md`).
//!
//! ```text
//! operation (stored by the API) ──► planner: resolves `to` in batches into push-notification
//!                                   rows (SCHEDULED or QUEUED), with a resume point
//! scheduler: SCHEDULED rows whose sendAt came → QUEUED
//! dispatchers: take a batch the planner wrote already claimed (handed over in memory), or claim
//!              a batch of due QUEUED rows (lease) → send through the provider clients
//!              (bounded concurrency per credential) → write the outcomes in one transaction
//! maintenance: prunes finished operations after the retention period
//! ```
//!
//! Everything durable lives in the store ([`herald_store::DeliveryStore`]); the engine keeps only
//! caches. Several engines (nodes) may share one PostgreSQL database.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn herald_store::Store>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let providers = Arc::new(herald_providers::Providers::new(
//!     herald_providers::ProviderConfig::from_env()?,
//! )?);
//! let wake = Arc::new(tokio::sync::Notify::new());
//! let engine = herald_delivery::Engine::start(store, providers, Default::default(), wake.clone());
//! // ... the API calls wake.notify_one() after storing an operation ...
//! engine.shutdown().await;
//! # Ok(()) }
//! ```

mod credentials;
mod dispatcher;
pub mod events;
mod message;
mod planner;
mod retry;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use herald_providers::Providers;
use herald_store::Store;
use herald_store::delivery::Claim;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use retry::RetryPolicy;

/// Engine settings. `herald serve` sets all but `plan_batch`, `credential_error_hold` and
/// `credential_refresh` (docs/configuration.md); those are tuning kept at their defaults outside
/// the tests, like the planner's concurrency (`planner::PLANS_AT_ONCE`).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Dispatcher tasks, each sending one claimed batch while the previous one's outcomes are
    /// written.
    pub workers: usize,
    /// Notifications per claim.
    pub claim_batch: i64,
    /// Recipients (`to` entries) resolved per planning step (one transaction).
    pub plan_batch: usize,
    /// How long a claim (of notifications, or of an operation to plan) is held before another
    /// node may take it over. Must exceed the provider request timeout by a margin: a batch
    /// handed over by the planner may start sending up to a quarter of it late.
    pub lease: Duration,
    /// How often idle loops look for work they were not woken for (due retries, schedules,
    /// other nodes' operations).
    pub poll_interval: Duration,
    pub retry: RetryPolicy,
    /// Finished operations are pruned this long after completion.
    pub retention: Duration,
    /// Sends in flight at once per credential (across this node's dispatchers).
    pub per_credential_concurrency: usize,
    /// After a credential error, sends through that credential (same content version) fail at
    /// once for this long; then one batch probes it again.
    pub credential_error_hold: Duration,
    /// How long a loaded credential (client and content version) is reused before the store is
    /// asked again (key rotations are picked up within this time).
    pub credential_refresh: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            // 8 rather than 4: fan-outs ran 10-15 % faster when dispatchers still waited for
            // their outcome writes (BENCHMARKS.md, 2026-12-06); since the writes run in the
            // background, 4 and 8 measure the same (sixth session's notes) and 8 stays.
            workers: 8,
            claim_batch: 500,
            plan_batch: 1000,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(250),
            retry: RetryPolicy::default(),
            retention: Duration::from_secs(7 * 24 * 3600),
            per_credential_concurrency: 1000,
            credential_error_hold: Duration::from_secs(300),
            credential_refresh: Duration::from_secs(5),
        }
    }
}

/// What every task of one engine shares.
pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub providers: Arc<Providers>,
    pub config: EngineConfig,
    /// Woken by the API when an operation was stored.
    pub wake_planner: Arc<Notify>,
    /// Woken by the planner (rows written unclaimed) and the scheduler when rows became due.
    pub wake_dispatchers: Notify,
    /// Batches the planner inserted already claimed, for the next free dispatcher; room for two
    /// per dispatcher (in a fan-out, 72 % of planning steps then fit, against 61 % with one). The planner claims a step only when the whole step fits, so it never
    /// waits on the dispatchers; a batch here waits at most for a dispatcher to finish its
    /// current batch (and is given back to the queue if that took too long; see dispatcher.rs).
    pub handoff_send: flume::Sender<Claim>,
    pub handoff: flume::Receiver<Claim>,
    /// Held while an operation of several planning steps is planned (one at a time).
    pub large_plan: tokio::sync::Semaphore,
    /// Hand-over places promised to planning steps being written (see [`Shared::reserve_handoff`]).
    pub handoff_reserved: AtomicUsize,
    pub credentials: credentials::CredentialCache,
    pub operations: message::OperationCache,
}

impl Shared {
    /// Reserves room for `batches` claimed batches in the hand-over, or `None` when it has not that
    /// much room now. Several operations are planned at once: a step is only written claimed when
    /// its batches are sure to fit, so the planner never waits for a dispatcher.
    pub(crate) fn reserve_handoff(&self, batches: usize) -> Option<HandoffReservation<'_>> {
        let capacity = self.handoff_send.capacity().unwrap_or(0);
        let mut reserved = self.handoff_reserved.load(Ordering::Acquire);
        loop {
            if self.handoff_send.len() + reserved + batches > capacity {
                return None;
            }
            match self.handoff_reserved.compare_exchange_weak(
                reserved,
                reserved + batches,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(HandoffReservation {
                        reserved: &self.handoff_reserved,
                        batches,
                    });
                }
                Err(now) => reserved = now,
            }
        }
    }
}

/// Places in the hand-over held for one planning step; given back when dropped (after the step's
/// batches were sent, or when it was not written).
pub(crate) struct HandoffReservation<'a> {
    reserved: &'a AtomicUsize,
    batches: usize,
}

impl Drop for HandoffReservation<'_> {
    fn drop(&mut self) {
        self.reserved.fetch_sub(self.batches, Ordering::AcqRel);
    }
}

/// A running engine. Call [`Engine::shutdown`] to stop it; dropping it stops its tasks without
/// waiting for them.
pub struct Engine {
    /// Stops the planner and the maintenance loop, which are awaited first: then nothing is
    /// handed over any more when the dispatchers stop.
    stop_planning: watch::Sender<bool>,
    planning: Vec<JoinHandle<()>>,
    stop_sending: watch::Sender<bool>,
    sending: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Starts the planner, the scheduler/maintenance loop and `config.workers` dispatchers.
    /// `wake` is the API's notify (`AppState::wake_delivery`).
    pub fn start(
        store: Arc<dyn Store>,
        providers: Arc<Providers>,
        config: EngineConfig,
        wake: Arc<Notify>,
    ) -> Engine {
        let (stop_planning, planning_stopped) = watch::channel(false);
        let (stop_sending, sending_stopped) = watch::channel(false);
        let (handoff_send, handoff) = flume::bounded(2 * config.workers.max(1));
        let shared = Arc::new(Shared {
            store,
            providers,
            credentials: credentials::CredentialCache::new(
                config.per_credential_concurrency,
                config.credential_refresh,
            ),
            operations: message::OperationCache::default(),
            config,
            wake_planner: wake,
            wake_dispatchers: Notify::new(),
            handoff_send,
            handoff,
            handoff_reserved: AtomicUsize::new(0),
            large_plan: tokio::sync::Semaphore::new(1),
        });
        let planning = vec![
            tokio::spawn(planner::run(shared.clone(), planning_stopped.clone())),
            tokio::spawn(maintenance(shared.clone(), planning_stopped)),
        ];
        let sending = (0..shared.config.workers.max(1))
            .map(|worker| {
                tokio::spawn(dispatcher::run(
                    shared.clone(),
                    sending_stopped.clone(),
                    worker,
                ))
            })
            .collect();
        tracing::info!(
            workers = shared.config.workers,
            lease_ms = shared.config.lease.as_millis() as u64,
            "delivery engine started"
        );
        Engine {
            stop_planning,
            planning,
            stop_sending,
            sending,
        }
    }

    /// Stops taking new work and waits for the batches in flight (and those handed over) to be
    /// sent and written.
    pub async fn shutdown(self) {
        let _ = self.stop_planning.send(true);
        for task in self.planning {
            let _ = task.await;
        }
        let _ = self.stop_sending.send(true);
        for task in self.sending {
            let _ = task.await;
        }
    }
}

/// Waits for `notify`, the poll interval, or the stop signal; `false` when stopping.
pub(crate) async fn idle(
    notify: &Notify,
    interval: Duration,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    if *stopped.borrow() {
        return false;
    }
    tokio::select! {
        () = notify.notified() => true,
        () = tokio::time::sleep(interval) => true,
        _ = stopped.changed() => false,
    }
}

/// Promotes due SCHEDULED rows and prunes old operations.
async fn maintenance(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut last_prune = 0_i64;
    let never = Notify::new();
    loop {
        let now = herald_core::time::now_ms();
        match shared.store.promote_scheduled(now, 5000).await {
            Ok(0) => {}
            Ok(moved) => {
                tracing::debug!(moved, "scheduled notifications due");
                shared.wake_dispatchers.notify_waiters();
                continue;
            }
            Err(error) => tracing::warn!(%error, "promoting scheduled notifications failed"),
        }
        if now - last_prune > 60_000 {
            last_prune = now;
            let cutoff = now - shared.config.retention.as_millis() as i64;
            match shared.store.prune_finished(cutoff, 1000).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned finished operations"),
                Err(error) => tracing::warn!(%error, "pruning failed"),
            }
        }
        if !idle(&never, shared.config.poll_interval, &mut stopped).await {
            return;
        }
    }
}
