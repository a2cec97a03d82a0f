//! The planner: claims operations with recipients left to resolve (with a lease, so several nodes
//! share the work and a dead node's operation is taken over), resolves `to` in batches — users to
//! their ACTIVE devices in the sending app, direct devices as given, a provider without a
//! credential → unaddressable — and writes each batch with its resume point in one transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use herald_core::AppName;
use herald_core::Provider;
use herald_core::credential_content::PushCredentialType;
use herald_core::send::{Recipient, SendRequest, Sender};
use herald_core::time::now_ms;
use herald_store::delivery::{Claim, NewNotification, PlanBatch, PlanTask};
use herald_store::{Store, StoreError};
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinSet;

use crate::Shared;
use crate::message::OperationContext;

/// Where a request's notifications go: a credential per provider and the app users resolve in.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Route {
    pub apn: Option<String>,
    pub fcm: Option<String>,
    pub app: Option<AppName>,
}

impl Route {
    fn credential(&self, provider: Provider) -> Option<&String> {
        match provider {
            Provider::Apn => self.apn.as_ref(),
            Provider::Fcm => self.fcm.as_ref(),
        }
    }
}

/// Operations planned at once (of which one of several steps: see `plan`). One planning step
/// waits for its write (an fsync on SQLite, shared by the writes queued with it); planning one
/// operation at a time capped single-recipient sends at one operation per commit (~700/s on the
/// `accept` benchmark), and let a large send hold up every send behind it.
const PLANS_AT_ONCE: usize = 32;

pub(crate) async fn run(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut planning: JoinSet<()> = JoinSet::new();
    loop {
        if *stopped.borrow() {
            break;
        }
        // Finished plans stay in the set until joined.
        while planning.try_join_next().is_some() {}
        let room = PLANS_AT_ONCE - planning.len();
        if room > 0 {
            let lease_ms = shared.config.lease.as_millis() as i64;
            match shared
                .store
                .claim_operations_to_plan(now_ms(), lease_ms, room as i64)
                .await
            {
                Ok(tasks) if !tasks.is_empty() => {
                    let routes = Arc::new(ClaimRoutes::default());
                    for task in tasks {
                        planning.spawn(plan_logged(
                            shared.clone(),
                            task,
                            routes.clone(),
                            stopped.clone(),
                        ));
                    }
                    continue;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "claiming operations to plan failed"),
            }
        }
        tokio::select! {
            Some(_) = planning.join_next(), if !planning.is_empty() => {}
            () = shared.wake_planner.notified(), if room > 0 => {}
            () = tokio::time::sleep(shared.config.poll_interval), if room > 0 => {}
            changed = stopped.changed() => {
                // An error: the engine was dropped without a shutdown.
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    // Stopping: no new operations; those being planned are planned to the end, as their rows
    // may already be handed to the dispatchers (which stop after the planner). Large ones still
    // waiting for their turn give up (see `plan`).
    while planning.join_next().await.is_some() {}
}

async fn plan_logged(
    shared: Arc<Shared>,
    task: PlanTask,
    routes: Arc<ClaimRoutes>,
    stopped: watch::Receiver<bool>,
) {
    let id = task.operation_id.clone();
    if let Err(error) = plan(&shared, task, &routes, stopped).await {
        tracing::warn!(operation = %id, %error, "planning failed; retried after the lease");
    }
}

/// The routes of the operations claimed together: those naming the same sender (usually all of
/// them, one app) share one read of it, made when the first of them is planned, right after the
/// claim. Reading it once per operation was a third of the reads of a single-recipient send.
#[derive(Default)]
struct ClaimRoutes(Mutex<HashMap<AccountSender, Arc<OnceCell<Route>>>>);

/// An account and a sender of it.
type AccountSender = (String, Sender);

impl ClaimRoutes {
    async fn route(
        &self,
        store: &dyn Store,
        account: &str,
        sender: &Sender,
    ) -> Result<Route, StoreError> {
        let cell = self
            .0
            .lock()
            .expect("claim routes lock")
            .entry((account.to_owned(), sender.clone()))
            .or_default()
            .clone();
        cell.get_or_try_init(|| route(store, account, sender))
            .await
            .cloned()
    }
}

/// Resolves the sender of a request into a route.
pub(crate) async fn route(
    store: &dyn Store,
    account: &str,
    sender: &Sender,
) -> Result<Route, StoreError> {
    let app_route = |app: AppName, defaults: Vec<(PushCredentialType, String)>| {
        let mut route = Route {
            app: Some(app),
            ..Route::default()
        };
        for (kind, id) in defaults {
            match kind {
                PushCredentialType::Apn | PushCredentialType::ApnSandbox => {
                    if route.apn.is_none() {
                        route.apn = Some(id);
                    }
                }
                PushCredentialType::Fcm => route.fcm = Some(id),
            }
        }
        route
    };
    match sender {
        Sender::App { app_name } => {
            let defaults = store.app_default_credentials(account, app_name).await?;
            Ok(app_route(app_name.clone(), defaults))
        }
        Sender::AccountDefault => match store.account_default_app(account).await? {
            Some(app) => {
                let defaults = store.app_default_credentials(account, &app).await?;
                Ok(app_route(app, defaults))
            }
            None => Ok(Route::default()),
        },
        Sender::Credentials { apn, fcm } => {
            let mut route = Route::default();
            let mut push_app = None;
            for (slot, id) in [(&mut route.apn, apn), (&mut route.fcm, fcm)] {
                let Some(id) = id else { continue };
                if herald_core::ids::is_sid(herald_core::ids::CHAT_CREDENTIAL_SID, id) {
                    match store.get_chat_credential(account, id).await {
                        Ok(_) => *slot = Some(id.clone()),
                        Err(StoreError::NotFound) => {}
                        Err(other) => return Err(other),
                    }
                } else {
                    match store.get_credential(account, id).await {
                        Ok(record) => {
                            push_app.get_or_insert(record.app_name);
                            *slot = Some(id.clone());
                        }
                        Err(StoreError::NotFound) => {}
                        Err(other) => return Err(other),
                    }
                }
            }
            route.app = match push_app {
                Some(app) => Some(app),
                None => store.account_default_app(account).await?,
            };
            Ok(route)
        }
    }
}

/// One resolved planning step: entries `planned..end` of `to`.
struct Step {
    end: i64,
    notifications: Vec<NewNotification>,
    unaddressable: i64,
    resolve_ms: u64,
}

async fn resolve_step(
    shared: &Shared,
    task: &PlanTask,
    route: &Route,
    request: &SendRequest,
    planned: i64,
) -> Result<Step, StoreError> {
    let step = shared.config.plan_batch.max(1) as i64;
    let end = (planned + step).min(request.to.len() as i64);
    let slice = &request.to[planned as usize..end as usize];
    let started = std::time::Instant::now();
    let (notifications, unaddressable) = resolve(
        shared.store.as_ref(),
        &task.account_sid,
        route,
        slice,
        planned,
    )
    .await?;
    Ok(Step {
        end,
        notifications,
        unaddressable,
        resolve_ms: started.elapsed().as_millis() as u64,
    })
}

/// Plans one claimed operation to the end (or until its lease is lost). QUEUED rows are written
/// already claimed and handed to a dispatcher in memory when the hand-over has room. The next
/// step is resolved while this one is written.
async fn plan(
    shared: &Shared,
    task: PlanTask,
    routes: &ClaimRoutes,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let request: SendRequest = serde_json::from_str(&task.request)
        .map_err(|e| StoreError::Config(format!("stored send request does not parse: {e}")))?;
    // The dispatchers sending this operation's rows find it parsed (a 10,000-recipient request
    // costs milliseconds to parse again).
    let context = Arc::new(OperationContext::new(request, task.expires_at));
    shared
        .operations
        .insert(task.operation_id.clone(), context.clone());
    let request = &context.request;
    let route = routes
        .route(shared.store.as_ref(), &task.account_sid, &request.from)
        .await?;
    let total = request.to.len() as i64;
    // One operation of several steps at a time: several large ones planned together would share
    // the hand-over and write more of their rows unclaimed, which costs a claim write per row.
    // An operation still waiting for its turn when the engine stops is left to its plan lease
    // (nothing of it is written yet): a restart or another node takes it over.
    let _large = if total - task.planned > shared.config.plan_batch.max(1) as i64 {
        tokio::select! {
            permit = shared.large_plan.acquire() => Some(permit),
            _ = stopped.wait_for(|stop| *stop) => return Ok(()),
        }
    } else {
        None
    };
    let mut planned = task.planned;
    let mut next = resolve_step(shared, &task, &route, request, planned).await?;
    loop {
        let step = next;
        let now = now_ms();
        let done = step.end >= total;
        let batch = PlanBatch {
            operation_id: task.operation_id.clone(),
            account_sid: task.account_sid.clone(),
            owner: task.owner.clone(),
            planned_before: planned,
            planned_after: step.end,
            notifications: step.notifications,
            unaddressable: step.unaddressable,
            done,
            lease_until: now + shared.config.lease.as_millis() as i64,
            priority: request.priority.as_str().to_owned(),
            tags: request.tags.clone(),
            scheduled_until: task.send_at.filter(|at| *at > now),
            expires_at: task.expires_at,
            claim: false,
        };
        let resolve_next = async {
            if done {
                None
            } else {
                Some(resolve_step(shared, &task, &route, request, step.end).await)
            }
        };
        let (kept, resolved) = tokio::join!(
            write_and_hand_over(shared, batch, step.resolve_ms),
            resolve_next
        );
        if !kept? {
            return Ok(());
        }
        match resolved {
            None => {
                tracing::debug!(operation = %task.operation_id, recipients = total, "planned");
                return Ok(());
            }
            Some(resolved) => next = resolved?,
        }
        planned = step.end;
    }
}

/// Writes one planning step, claimed and handed to the dispatchers if room for all of it in the
/// hand-over could be reserved right now, otherwise unclaimed for the dispatchers' own claims
/// (where any node may take them). Never waits for a dispatcher. `false` when the plan lease was
/// lost or the operation canceled.
async fn write_and_hand_over(
    shared: &Shared,
    mut batch: PlanBatch,
    resolve_ms: u64,
) -> Result<bool, StoreError> {
    let chunk = shared.config.claim_batch.max(1) as usize;
    let chunks = batch.notifications.len().div_ceil(chunk);
    let reserved = (chunks > 0)
        .then(|| shared.reserve_handoff(chunks))
        .flatten();
    batch.claim = reserved.is_some();
    // The rows move into the store's write (and from there into the claim).
    let operation_id = batch.operation_id.clone();
    let rows = batch.notifications.len();
    let scheduled = batch.scheduled_until.is_some();
    let writing = std::time::Instant::now();
    let written = shared.store.write_plan(batch).await;
    let Some(claim) = written? else {
        tracing::info!(operation = %operation_id, "plan lease lost or operation canceled");
        return Ok(false);
    };
    tracing::debug!(
        operation = %operation_id,
        rows,
        claimed = !claim.notifications.is_empty(),
        resolve_ms,
        write_ms = writing.elapsed().as_millis() as u64,
        "plan batch written"
    );
    if claim.notifications.is_empty() {
        if !scheduled && rows > 0 {
            shared.wake_dispatchers.notify_waiters();
        }
        return Ok(true);
    }
    let mut rows = claim.notifications.into_iter().peekable();
    while rows.peek().is_some() {
        let part = Claim {
            token: claim.token.clone(),
            lease_until: claim.lease_until,
            notifications: rows.by_ref().take(chunk).collect(),
        };
        if let Err(refused) = shared.handoff_send.try_send(part) {
            // Cannot happen (the room was reserved before the write); give the rows back.
            let part = refused.into_inner();
            let ids: Vec<String> = part.notifications.into_iter().map(|n| n.id).collect();
            shared.store.release_claim(&part.token, &ids).await?;
            shared.wake_dispatchers.notify_waiters();
        }
    }
    Ok(true)
}

/// The notifications of `slice` (entries `offset..` of `to`) and how many of its recipients are
/// unaddressable.
pub(crate) async fn resolve(
    store: &dyn Store,
    account: &str,
    route: &Route,
    slice: &[Recipient],
    offset: i64,
) -> Result<(Vec<NewNotification>, i64), StoreError> {
    let users: Vec<String> = slice
        .iter()
        .filter_map(|r| match r {
            Recipient::User { user_id, .. } => Some(user_id.clone()),
            Recipient::Device { .. } => None,
        })
        .collect();
    let mut devices: HashMap<String, Vec<(Provider, String)>> = HashMap::new();
    if let (Some(app), false) = (&route.app, users.is_empty()) {
        for (user, provider, token) in store.active_devices_for_users(account, app, &users).await? {
            devices.entry(user).or_default().push((provider, token));
        }
    }
    let app_name = route.app.as_ref().map(|a| a.as_str().to_owned());
    let mut out = Vec::with_capacity(slice.len());
    let mut unaddressable = 0;
    for (i, recipient) in slice.iter().enumerate() {
        let index = offset + i as i64;
        let before = out.len();
        match recipient {
            Recipient::Device {
                token, provider, ..
            } => {
                if let Some(credential) = route.credential(*provider) {
                    out.push(NewNotification {
                        recipient_index: index,
                        provider: *provider,
                        token: token.clone(),
                        credential_id: credential.clone(),
                        app_name: app_name.clone(),
                        user_id: None,
                    });
                }
            }
            Recipient::User { user_id, .. } => {
                for (provider, token) in devices.get(user_id).map(Vec::as_slice).unwrap_or(&[]) {
                    if let Some(credential) = route.credential(*provider) {
                        out.push(NewNotification {
                            recipient_index: index,
                            provider: *provider,
                            token: token.clone(),
                            credential_id: credential.clone(),
                            app_name: app_name.clone(),
                            user_id: Some(user_id.clone()),
                        });
                    }
                }
            }
        }
        if out.len() == before {
            unaddressable += 1;
        }
    }
    Ok((out, unaddressable))
}
