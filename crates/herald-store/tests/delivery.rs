//! Store conformance: operations, idempotency, the planning steps, the queue (claims, leases,
//! outcomes), cancel and pruning, on every backend.

use std::sync::Arc;

use herald_core::time::now_ms;
use herald_core::{Provider, Tags};
use herald_store::delivery::{
    ClaimOutcomes, ClaimedNotification, Idempotency, NewNotification, NewOperation,
    NotificationError, OutcomeKind, OutcomeWrite, PlanBatch, PlanTask,
};
use herald_store::testing::{TestDatabase, operation_to_plan, send_to_apn_tokens};
use herald_store::{AccountStore, DeliveryStore, SqlStore, StoreError};

fn new_op(account: &str, recipients: usize, key: Option<(&str, &str)>) -> NewOperation {
    NewOperation {
        account_sid: account.to_owned(),
        request: send_to_apn_tokens(recipients),
        idempotency: key.map(|(k, h)| Idempotency {
            key: k.into(),
            request_hash: h.into(),
        }),
    }
}

fn notification(i: i64) -> NewNotification {
    NewNotification {
        recipient_index: i,
        provider: Provider::Apn,
        token: format!("tok-{i}"),
        credential_id: "comms_credential_x".into(),
        app_name: None,
        user_id: None,
    }
}

/// The planning step of `task` for entries `0..rows` of its `to`, one notification each, as the
/// last step, unclaimed.
fn first_steps(task: &PlanTask, rows: i64) -> PlanBatch {
    PlanBatch {
        operation_id: task.operation_id.clone(),
        account_sid: task.account_sid.clone(),
        owner: task.owner.clone(),
        planned_before: 0,
        planned_after: rows,
        notifications: (0..rows).map(notification).collect(),
        unaddressable: 0,
        done: true,
        lease_until: now_ms() + 60_000,
        priority: "HIGH".into(),
        tags: Tags::default(),
        scheduled_until: None,
        expires_at: now_ms() + 3_600_000,
        claim: false,
    }
}

/// A new operation of `recipients` APN tokens in account `acc`, planned in one step: its rows
/// are QUEUED and unclaimed.
async fn queued_operation(store: &SqlStore, acc: &str, recipients: usize) -> String {
    let (id, task) = operation_to_plan(store, acc, recipients).await;
    let step = first_steps(&task, recipients as i64);
    assert!(store.write_plan_batch(&step).await.unwrap().is_some());
    id
}

/// The outcome `kind` of the claimed row `n`.
fn outcome(n: &ClaimedNotification, kind: OutcomeKind) -> OutcomeWrite {
    OutcomeWrite {
        id: n.id.clone(),
        operation_id: n.operation_id.clone(),
        kind,
    }
}

async fn account(store: &SqlStore) -> String {
    store.create_account(None).await.unwrap().account.sid
}

#[tokio::test]
async fn idempotency_keys_replay_conflict_and_race() {
    for db in TestDatabase::all().await {
        let store = Arc::new(db.store().await);
        let acc = account(&store).await;
        let first = store
            .create_operation(new_op(&acc, 2, Some(("k1", "h1"))))
            .await
            .unwrap();
        assert!(!first.replayed);
        let again = store
            .create_operation(new_op(&acc, 2, Some(("k1", "h1"))))
            .await
            .unwrap();
        assert_eq!(
            again,
            herald_store::delivery::CreatedOperation {
                id: first.id.clone(),
                replayed: true
            }
        );
        assert!(matches!(
            store
                .create_operation(new_op(&acc, 2, Some(("k1", "other"))))
                .await,
            Err(StoreError::Conflict(_))
        ));
        // Keys are per account.
        let other = account(&store).await;
        assert!(
            !store
                .create_operation(new_op(&other, 2, Some(("k1", "h1"))))
                .await
                .unwrap()
                .replayed
        );

        // Concurrent repeats create one operation.
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let store = store.clone();
            let acc = acc.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .create_operation(new_op(&acc, 1, Some(("race", "h"))))
                    .await
                    .unwrap()
            }));
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut fresh = 0;
        for t in tasks {
            let created = t.await.unwrap();
            fresh += usize::from(!created.replayed);
            ids.insert(created.id);
        }
        assert_eq!((ids.len(), fresh), (1, 1), "{}", db.name);
        let op = store
            .get_operation(&acc, ids.first().unwrap())
            .await
            .unwrap();
        assert_eq!(
            (op.status.as_str(), op.stats.recipients, op.stats.total),
            ("SCHEDULED", 1, 0)
        );
    }
}

/// Concurrent sends share commits on SQLite (group commit): a conflicting write in the same
/// batch is rolled back alone, and every other write is stored and readable afterwards.
#[tokio::test]
async fn concurrent_sends_with_a_failing_one_store_all_others() {
    for db in TestDatabase::all().await {
        let store = Arc::new(db.store().await);
        let acc = account(&store).await;
        store
            .create_operation(new_op(&acc, 1, Some(("taken", "h1"))))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let store = store.clone();
            let acc = acc.clone();
            tasks.push(tokio::spawn(async move {
                // Every eighth reuses the key with another body: a conflict.
                let key = (i % 8 == 0).then_some(("taken", "other"));
                store.create_operation(new_op(&acc, 1 + i, key)).await
            }));
        }
        let mut stored = Vec::new();
        let mut conflicts = 0;
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await.unwrap() {
                Ok(created) => stored.push((i, created.id)),
                Err(StoreError::Conflict(_)) if i % 8 == 0 => conflicts += 1,
                Err(other) => panic!("{}: send {i}: {other}", db.name),
            }
        }
        assert_eq!((stored.len(), conflicts), (56, 8), "{}", db.name);
        for (i, id) in stored {
            let op = store.get_operation(&acc, &id).await.unwrap();
            assert_eq!(op.stats.recipients, 1 + i as i64, "{}", db.name);
        }
    }
}

#[tokio::test]
async fn planning_steps_resume_and_lose_their_lease() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acc = account(&store).await;
        let id = store
            .create_operation(new_op(&acc, 5, None))
            .await
            .unwrap()
            .id;
        let now = now_ms();
        let tasks = store
            .claim_operations_to_plan(now, 60_000, 10)
            .await
            .unwrap();
        assert_eq!(tasks.len(), 1);
        let task = &tasks[0];
        // Leased: no one else gets it.
        assert!(
            store
                .claim_operations_to_plan(now, 60_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let batch = |before: i64, after: i64, owner: &str, done: bool| PlanBatch {
            operation_id: id.clone(),
            account_sid: acc.clone(),
            owner: owner.to_owned(),
            planned_before: before,
            planned_after: after,
            notifications: (before..after)
                .filter(|i| i % 2 == 0)
                .map(notification)
                .collect(),
            unaddressable: (before..after).filter(|i| i % 2 == 1).count() as i64,
            done,
            lease_until: now_ms() + 60_000,
            priority: "HIGH".into(),
            tags: Tags::default(),
            scheduled_until: None,
            expires_at: now_ms() + 3_600_000,
            claim: false,
        };
        assert!(
            store
                .write_plan_batch(&batch(0, 2, &task.owner, false))
                .await
                .unwrap()
                .is_some()
        );
        // A repeat of the same step (a crashed planner's) or a foreign owner writes nothing.
        assert!(
            store
                .write_plan_batch(&batch(0, 2, &task.owner, false))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .write_plan_batch(&batch(2, 5, "someone-else", true))
                .await
                .unwrap()
                .is_none()
        );
        // Nor does a step naming another account.
        let mut foreign = batch(2, 5, &task.owner, true);
        foreign.account_sid = "AC00000000000000000000000000000000".into();
        assert!(store.write_plan_batch(&foreign).await.unwrap().is_none());
        let op = store.get_operation(&acc, &id).await.unwrap();
        assert_eq!(
            (op.status.as_str(), op.stats.queued, op.stats.unaddressable),
            ("PROCESSING", 1, 1)
        );
        // Lease expiry hands the operation over with its resume point.
        let later = now_ms() + 120_000;
        let taken = store
            .claim_operations_to_plan(later, 60_000, 10)
            .await
            .unwrap();
        assert_eq!((taken.len(), taken[0].planned), (1, 2));
        assert!(
            store
                .write_plan_batch(&batch(2, 5, &task.owner, true))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .write_plan_batch(&batch(2, 5, &taken[0].owner, true))
                .await
                .unwrap()
                .is_some()
        );
        let op = store.get_operation(&acc, &id).await.unwrap();
        assert_eq!(
            (
                op.stats.total,
                op.stats.queued,
                op.stats.unaddressable,
                op.completed_at
            ),
            (5, 3, 2, None),
            "{}",
            db.name
        );
    }
}

#[tokio::test]
async fn a_plan_batch_can_come_claimed_by_the_planner() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acc = account(&store).await;
        let (id, task) = operation_to_plan(&store, &acc, 3).await;
        let lease_until = now_ms() + 1_000;
        let plan = PlanBatch {
            lease_until,
            claim: true,
            ..first_steps(&task, 3)
        };
        let claim = store.write_plan_batch(&plan).await.unwrap().unwrap();
        assert_eq!(claim.lease_until, lease_until);
        assert_eq!(claim.notifications.len(), 3, "{}", db.name);
        for (i, n) in claim.notifications.iter().enumerate() {
            assert_eq!(
                (
                    n.operation_id.as_str(),
                    n.account_sid.as_str(),
                    n.recipient_index,
                    n.token.as_str(),
                    n.credential_id.as_str(),
                    n.attempts,
                ),
                (
                    id.as_str(),
                    acc.as_str(),
                    i as i64,
                    format!("tok-{i}").as_str(),
                    "comms_credential_x",
                    1
                )
            );
            // What the claim says is what was stored.
            let stored = store.get_notification(&acc, &n.id).await.unwrap();
            assert_eq!((stored.status.as_str(), stored.attempts), ("QUEUED", 1));
        }
        // Already claimed: a dispatcher's claim finds nothing until the lease ends.
        let none = store
            .claim_notifications(now_ms(), 60_000, 10)
            .await
            .unwrap();
        assert!(none.notifications.is_empty(), "{}", db.name);
        let summary = store
            .record_outcomes(
                &claim.token,
                &[outcome(&claim.notifications[0], OutcomeKind::Sent)],
            )
            .await
            .unwrap();
        assert_eq!((summary.sent, summary.stale), (1, 0));
        // The two rows left unanswered are taken over after the lease, as a second attempt.
        let retaken = store
            .claim_notifications(lease_until + 1, 60_000, 10)
            .await
            .unwrap();
        assert_eq!(retaken.notifications.len(), 2, "{}", db.name);
        assert!(retaken.notifications.iter().all(|n| n.attempts == 2));
        let op = store.get_operation(&acc, &id).await.unwrap();
        assert_eq!((op.stats.sent, op.stats.queued), (1, 2), "{}", db.name);
        // Given back unsent: due at once, the attempt not counted. The old claim holds nothing.
        let ids: Vec<String> = retaken.notifications.iter().map(|n| n.id.clone()).collect();
        assert_eq!(store.release_claim(&claim.token, &ids).await.unwrap(), 0);
        assert_eq!(store.release_claim(&retaken.token, &ids).await.unwrap(), 2);
        let again = store
            .claim_notifications(now_ms(), 60_000, 10)
            .await
            .unwrap();
        assert_eq!(again.notifications.len(), 2, "{}", db.name);
        assert!(again.notifications.iter().all(|n| n.attempts == 2));
        let op = store.get_operation(&acc, &id).await.unwrap();
        assert_eq!((op.stats.sent, op.stats.queued), (1, 2), "{}", db.name);
    }
}

#[tokio::test]
async fn claims_leases_outcomes_and_stale_writes() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acc = account(&store).await;
        let (id, task) = operation_to_plan(&store, &acc, 4).await;
        let plan = first_steps(&task, 4);
        assert!(store.write_plan_batch(&plan).await.unwrap().is_some());
        let now = now_ms();
        let claim = store.claim_notifications(now, 1_000, 3).await.unwrap();
        assert_eq!(claim.notifications.len(), 3);
        assert!(claim.notifications.iter().all(|n| n.attempts == 1));
        let rest = store.claim_notifications(now, 1_000, 10).await.unwrap();
        assert_eq!(rest.notifications.len(), 1, "claims do not overlap");
        // The first claim's lease expires: its rows are claimable again, and its late outcomes
        // are dropped.
        let retaken = store
            .claim_notifications(now + 5_000, 1_000, 10)
            .await
            .unwrap();
        assert_eq!(retaken.notifications.len(), 4);
        assert!(retaken.notifications.iter().all(|n| n.attempts == 2));
        let stale = store
            .record_outcomes(
                &claim.token,
                &[outcome(&claim.notifications[0], OutcomeKind::Sent)],
            )
            .await
            .unwrap();
        assert_eq!((stale.sent, stale.stale), (0, 1));
        let ids: Vec<String> = retaken.notifications.iter().map(|n| n.id.clone()).collect();
        // An outcome naming another operation than the row's is stale too, and writes nothing.
        let misnamed = store
            .record_outcomes(
                &retaken.token,
                &[OutcomeWrite {
                    id: ids[0].clone(),
                    operation_id: "comms_operation_00000000000000000000000000".into(),
                    kind: OutcomeKind::Sent,
                }],
            )
            .await
            .unwrap();
        assert_eq!((misnamed.sent, misnamed.stale), (0, 1));
        let untouched = store.get_notification(&acc, &ids[0]).await.unwrap();
        assert_eq!(untouched.status, "QUEUED", "{}", db.name);
        let error = NotificationError::new("provider-unavailable", "503");
        let summary = store
            .record_outcomes(
                &retaken.token,
                &[
                    outcome(&retaken.notifications[0], OutcomeKind::Sent),
                    outcome(
                        &retaken.notifications[1],
                        OutcomeKind::Failed(error.clone()),
                    ),
                    outcome(
                        &retaken.notifications[2],
                        OutcomeKind::Retry {
                            due_at: now_ms() - 1,
                            error: error.clone(),
                        },
                    ),
                    outcome(&retaken.notifications[3], OutcomeKind::Sent),
                ],
            )
            .await
            .unwrap();
        assert_eq!(
            (summary.sent, summary.failed, summary.retried, summary.stale),
            (2, 1, 1, 0)
        );
        let op = store.get_operation(&acc, &id).await.unwrap();
        assert_eq!(
            (
                op.stats.sent,
                op.stats.failed,
                op.stats.queued,
                op.completed_at
            ),
            (2, 1, 1, None)
        );
        let failed = store.get_notification(&acc, &ids[1]).await.unwrap();
        assert_eq!(failed.error.unwrap()["code"], "provider-unavailable");
        // The retried row is due again; sending it finishes the operation.
        let last = store
            .claim_notifications(now_ms(), 1_000, 10)
            .await
            .unwrap();
        assert_eq!(last.notifications.len(), 1);
        let summary = store
            .record_outcomes(
                &last.token,
                &[outcome(&last.notifications[0], OutcomeKind::Sent)],
            )
            .await
            .unwrap();
        assert_eq!(summary.completed_operations, vec![id.clone()]);
        let op = store.get_operation(&acc, &id).await.unwrap();
        assert_eq!(
            (op.status.as_str(), op.stats.sent, op.stats.total),
            ("COMPLETED", 3, 4),
            "{}",
            db.name
        );

        // Pruning: only operations finished before the cutoff.
        assert_eq!(
            store
                .prune_finished(op.completed_at.unwrap(), 10)
                .await
                .unwrap(),
            0
        );
        assert_eq!(store.prune_finished(now_ms() + 1, 10).await.unwrap(), 1);
        assert!(matches!(
            store.get_operation(&acc, &id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.get_notification(&acc, &ids[0]).await,
            Err(StoreError::NotFound)
        ));
    }
}

/// One write takes the outcomes of several claims over several operations: each row counts
/// toward its own operation, and is written only under its own claim's token.
#[tokio::test]
async fn outcomes_of_several_claims_are_written_at_once() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acc = account(&store).await;
        let mut ops = vec![
            queued_operation(&store, &acc, 2).await,
            queued_operation(&store, &acc, 2).await,
            queued_operation(&store, &acc, 1).await,
        ];
        let now = now_ms();
        let first = store.claim_notifications(now, 60_000, 3).await.unwrap();
        let second = store.claim_notifications(now, 60_000, 10).await.unwrap();
        assert_eq!(
            (first.notifications.len(), second.notifications.len()),
            (3, 2)
        );
        let error = NotificationError::new("provider-rejected", "BadDeviceToken");
        let failed = &second.notifications[0];
        let mut second_outcomes = vec![
            outcome(failed, OutcomeKind::Failed(error)),
            outcome(&second.notifications[1], OutcomeKind::Sent),
        ];
        // A row of the first claim named under the second claim's token: not written by it.
        second_outcomes.push(outcome(&first.notifications[0], OutcomeKind::Sent));
        let claims = [
            ClaimOutcomes {
                claim_token: first.token.clone(),
                outcomes: first
                    .notifications
                    .iter()
                    .map(|n| outcome(n, OutcomeKind::Sent))
                    .collect(),
            },
            ClaimOutcomes {
                claim_token: second.token.clone(),
                outcomes: second_outcomes,
            },
        ];
        let mut summary = store
            .record_outcomes_of_claims(claims.clone().into())
            .await
            .unwrap();
        assert_eq!(
            (summary.sent, summary.failed, summary.stale),
            (4, 1, 1),
            "{}",
            db.name
        );
        summary.completed_operations.sort();
        ops.sort();
        assert_eq!(summary.completed_operations, ops, "{}", db.name);
        for id in &ops {
            let op = store.get_operation(&acc, id).await.unwrap();
            let failures = i64::from(*id == failed.operation_id);
            assert_eq!(
                (
                    op.status.as_str(),
                    op.stats.failed,
                    op.stats.sent + failures
                ),
                ("COMPLETED", failures, op.stats.total),
                "{} {id}",
                db.name
            );
        }
        let row = store.get_notification(&acc, &failed.id).await.unwrap();
        assert_eq!(row.status, "FAILED");
    }
}

/// Planning steps and outcome writes of many rows (on SQLite they go many rows to a statement,
/// the rest one by one) store every row as given and count exactly the rows they changed.
#[tokio::test]
async fn large_steps_and_outcome_writes_store_every_row() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acc = account(&store).await;
        let rows = 75;
        let mut claims = Vec::new();
        for _ in 0..2 {
            let (_, task) = operation_to_plan(&store, &acc, rows).await;
            let plan = PlanBatch {
                claim: true,
                ..first_steps(&task, rows as i64)
            };
            let claim = store.write_plan_batch(&plan).await.unwrap().unwrap();
            assert_eq!(claim.notifications.len(), rows, "{}", db.name);
            for (i, n) in claim.notifications.iter().enumerate() {
                let stored = store.get_notification(&acc, &n.id).await.unwrap();
                assert_eq!(n.recipient_index, i as i64, "{}", db.name);
                assert_eq!(
                    (
                        stored.token.as_str(),
                        stored.operation_id.as_str(),
                        stored.status.as_str(),
                        stored.attempts
                    ),
                    (
                        format!("tok-{i}").as_str(),
                        task.operation_id.as_str(),
                        "QUEUED",
                        1
                    ),
                    "{}",
                    db.name
                );
            }
            claims.push(claim);
        }
        // Every row sent, but for each claim's row 40, which a stale token names (its claim
        // names it too, but under the other claim's token), and row 50, which failed.
        let error = NotificationError::new("provider-rejected", "BadDeviceToken");
        let outcomes: Vec<ClaimOutcomes> = (0..2)
            .map(|c| {
                let claim = &claims[c];
                let other = &claims[1 - c];
                let mut outcomes: Vec<OutcomeWrite> = claim
                    .notifications
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != 40)
                    .map(|(i, n)| match i {
                        50 => outcome(n, OutcomeKind::Failed(error.clone())),
                        _ => outcome(n, OutcomeKind::Sent),
                    })
                    .collect();
                outcomes.push(outcome(&other.notifications[40], OutcomeKind::Sent));
                ClaimOutcomes {
                    claim_token: claim.token.clone(),
                    outcomes,
                }
            })
            .collect();
        let summary = store
            .record_outcomes_of_claims(outcomes.clone().into())
            .await
            .unwrap();
        assert_eq!(
            (summary.sent, summary.failed, summary.stale),
            (2 * (rows as u64 - 2), 2, 2),
            "{}",
            db.name
        );
        for claim in &claims {
            let id = &claim.notifications[0].operation_id;
            let op = store.get_operation(&acc, id).await.unwrap();
            assert_eq!(
                (op.stats.sent, op.stats.failed, op.stats.queued),
                (rows as i64 - 2, 1, 1),
                "{}",
                db.name
            );
            for (i, n) in claim.notifications.iter().enumerate() {
                let stored = store.get_notification(&acc, &n.id).await.unwrap();
                let expected = match i {
                    40 => "QUEUED",
                    50 => "FAILED",
                    _ => "SENT",
                };
                assert_eq!(stored.status, expected, "{} row {i}", db.name);
                assert_eq!(stored.sent_at.is_some(), expected == "SENT", "{}", db.name);
            }
        }
    }
}

#[tokio::test]
async fn cancel_counts_unresolved_recipients_and_leaves_rows_in_flight() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acc = account(&store).await;
        // Never planned: every recipient counts canceled.
        let id = store
            .create_operation(new_op(&acc, 7, None))
            .await
            .unwrap()
            .id;
        store.cancel_operation(&acc, &id).await.unwrap();
        let op = store.get_operation(&acc, &id).await.unwrap();
        assert_eq!(
            (op.status.as_str(), op.stats.canceled, op.stats.total),
            ("CANCELED", 7, 7)
        );
        assert!(
            store
                .claim_operations_to_plan(now_ms(), 1000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Another account's operation is not found.
        let other = account(&store).await;
        assert!(matches!(
            store.cancel_operation(&other, &id).await,
            Err(StoreError::NotFound)
        ));

        // Half planned, one row in flight: queued rows and the rest of `to` are canceled, the
        // row in flight finishes, and then the operation is CANCELED.
        let (id, task) = operation_to_plan(&store, &acc, 4).await;
        let plan = PlanBatch {
            done: false,
            priority: "LOW".into(),
            ..first_steps(&task, 2)
        };
        assert!(store.write_plan_batch(&plan).await.unwrap().is_some());
        let claim = store
            .claim_notifications(now_ms(), 60_000, 1)
            .await
            .unwrap();
        store.cancel_operation(&acc, &id).await.unwrap();
        let op = store.get_operation(&acc, &id).await.unwrap();
        assert_eq!(
            (
                op.status.as_str(),
                op.stats.queued,
                op.stats.canceled,
                op.stats.total
            ),
            ("PROCESSING", 1, 3, 4),
            "{}",
            db.name
        );
        // The planner's next step is refused.
        let mut next = plan.clone();
        next.planned_before = 2;
        next.planned_after = 4;
        next.done = true;
        assert!(store.write_plan_batch(&next).await.unwrap().is_none());
        store
            .record_outcomes(
                &claim.token,
                &[outcome(&claim.notifications[0], OutcomeKind::Sent)],
            )
            .await
            .unwrap();
        let op = store.get_operation(&acc, &id).await.unwrap();
        assert_eq!(
            (op.status.as_str(), op.stats.sent, op.stats.canceled),
            ("CANCELED", 1, 3)
        );
        assert!(op.completed_at.is_some());
    }
}

/// A row in flight when its operation is canceled that comes back retryable is CANCELED, not
/// queued again (it would have been sent after the cancel).
#[tokio::test]
async fn a_row_in_flight_at_a_cancel_is_not_retried() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acc = account(&store).await;
        let id = queued_operation(&store, &acc, 3).await;
        let claim = store
            .claim_notifications(now_ms(), 60_000, 2)
            .await
            .unwrap();
        assert_eq!(claim.notifications.len(), 2);
        store.cancel_operation(&acc, &id).await.unwrap();
        let retry = |n: usize| {
            let error = NotificationError::new("provider-unavailable", "503");
            outcome(
                &claim.notifications[n],
                OutcomeKind::Retry {
                    due_at: now_ms(),
                    error,
                },
            )
        };
        let summary = store
            .record_outcomes(&claim.token, &[retry(0), retry(1)])
            .await
            .unwrap();
        assert_eq!(
            (
                summary.retried,
                summary.canceled,
                summary.completed_operations
            ),
            (0, 2, vec![id.clone()]),
            "{}",
            db.name
        );
        let op = store.get_operation(&acc, &id).await.unwrap();
        assert_eq!(
            (op.status.as_str(), op.stats.queued, op.stats.canceled),
            ("CANCELED", 0, 3),
            "{}",
            db.name
        );
        let row = store
            .get_notification(&acc, &claim.notifications[0].id)
            .await
            .unwrap();
        assert_eq!(row.status, "CANCELED");
        assert!(
            store
                .claim_notifications(now_ms() + 1_000, 60_000, 10)
                .await
                .unwrap()
                .notifications
                .is_empty(),
            "{}",
            db.name
        );

        // Another operation's retry in the same state is retried as before.
        let (id, task) = operation_to_plan(&store, &acc, 1).await;
        let claim = store
            .write_plan_batch(&PlanBatch {
                claim: true,
                ..first_steps(&task, 1)
            })
            .await
            .unwrap()
            .unwrap();
        let summary = store
            .record_outcomes(
                &claim.token,
                &[outcome(
                    &claim.notifications[0],
                    OutcomeKind::Retry {
                        due_at: now_ms(),
                        error: NotificationError::new("provider-unavailable", "503"),
                    },
                )],
            )
            .await
            .unwrap();
        assert_eq!((summary.retried, summary.canceled), (1, 0), "{}", db.name);
        let op = store.get_operation(&acc, &id).await.unwrap();
        assert_eq!((op.status.as_str(), op.stats.queued), ("PROCESSING", 1));
    }
}

/// PostgreSQL: a second connection plays a promotion, a fail-fast or a late outcome: it holds the
/// notification rows `lock_sql` selects ($1 the operation) and then runs `counter_sql` on the
/// operation ($1), as those update its counters. A real cancel runs between its two statements. The cancel holds the operation row
/// from its first statement, so it must not wait for the held rows, or the two deadlock and
/// PostgreSQL aborts one. Returns the operation after both.
async fn race_a_cancel(
    db: &TestDatabase,
    store: &SqlStore,
    acc: &str,
    id: &str,
    lock_sql: &str,
    counter_sql: &str,
) -> herald_store::delivery::OperationRecord {
    use sqlx::Connection as _;
    let mut contender = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut contender).await.unwrap();
    let contender_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let held = sqlx::query(lock_sql)
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert!(!held.is_empty());
    let cancel = tokio::spawn({
        let (store, acc, id) = (store.clone(), acc.to_owned(), id.to_owned());
        async move { store.cancel_operation(&acc, &id).await }
    });
    // Until the cancel is done or waits for the contender.
    let mut watcher = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let mut waited = 0;
    while !cancel.is_finished() {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(contender_pid)
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if blocked > 0 {
            break;
        }
        waited += 1;
        assert!(waited < 3_000, "the cancel neither finished nor waited");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    sqlx::query(counter_sql)
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("the contender's counter update does not deadlock");
    tx.commit().await.unwrap();
    cancel.await.unwrap().expect("the cancel does not deadlock");
    store.get_operation(acc, id).await.unwrap()
}

/// PostgreSQL: a cancel skips the notification rows another transaction holds instead of
/// waiting for them while it holds their operation (a deadlock before); those rows take the
/// other transaction's result, and the cancel cancels the rest.
#[tokio::test]
async fn a_cancel_skips_rows_another_transaction_holds() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let store = db.store().await;
    let acc = account(&store).await;

    // Due SCHEDULED rows, one promoted by another transaction while the cancel runs.
    let (id, task) = operation_to_plan(&store, &acc, 2).await;
    let plan = PlanBatch {
        scheduled_until: Some(now_ms() - 1_000),
        ..first_steps(&task, 2)
    };
    assert!(store.write_plan_batch(&plan).await.unwrap().is_some());
    let op = race_a_cancel(
        &db,
        &store,
        &acc,
        &id,
        "UPDATE notifications SET status = 'QUEUED' WHERE id = (SELECT id FROM notifications \
         WHERE operation_id = $1 AND status = 'SCHEDULED' ORDER BY recipient_index LIMIT 1) \
         RETURNING id",
        "UPDATE operations SET scheduled = scheduled - 1, queued = queued + 1 WHERE id = $1",
    )
    .await;
    assert_eq!((op.stats.queued, op.stats.canceled), (1, 1));
    // The promoted row is not sent: the next claim cancels it, and the operation ends.
    let claim = store
        .claim_notifications(now_ms(), 60_000, 10)
        .await
        .unwrap();
    assert!(claim.notifications.is_empty());
    let op = store.get_operation(&acc, &id).await.unwrap();
    assert_eq!(
        (op.status.as_str(), op.stats.queued, op.stats.canceled),
        ("CANCELED", 0, 2)
    );

    // A claimed row whose lease ran out, held as its late outcome write would hold it.
    let id = queued_operation(&store, &acc, 1).await;
    let claim = store.claim_notifications(now_ms(), 1, 10).await.unwrap();
    assert_eq!(claim.notifications.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let op = race_a_cancel(
        &db,
        &store,
        &acc,
        &id,
        "SELECT id FROM notifications WHERE operation_id = $1 FOR UPDATE",
        "UPDATE operations SET updated_at = updated_at + 1 WHERE id = $1",
    )
    .await;
    assert_eq!((op.stats.queued, op.stats.canceled), (1, 0));
    // The outcome then lands: the operation completes with it.
    let summary = store
        .record_outcomes(
            &claim.token,
            &[outcome(&claim.notifications[0], OutcomeKind::Sent)],
        )
        .await
        .unwrap();
    assert_eq!(
        (summary.sent, summary.completed_operations),
        (1, vec![id.clone()])
    );
    let op = store.get_operation(&acc, &id).await.unwrap();
    assert_eq!((op.status.as_str(), op.stats.sent), ("CANCELED", 1));
}

/// The fail-fast after a credential error fails every unclaimed QUEUED row of that credential,
/// over several batches of 1,000, past a queue of another credential's rows due before them;
/// rows of other credentials and claimed rows are left alone.
#[tokio::test]
async fn a_credential_error_fails_its_queued_rows_in_batches() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acc = account(&store).await;
        // Written in this order, so the other credential's rows are due first.
        let mut operations = Vec::new();
        for (credential, rows) in [
            ("comms_credential_other", 1_500),
            ("comms_credential_bad", 2_500),
        ] {
            let (id, task) = operation_to_plan(&store, &acc, rows).await;
            let mut step = first_steps(&task, rows as i64);
            for n in &mut step.notifications {
                n.credential_id = credential.into();
            }
            assert!(store.write_plan_batch(&step).await.unwrap().is_some());
            operations.push(id);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // One claimed row of the bad credential: in flight, not failed here.
        let bad_claim = store
            .claim_notifications(now_ms() + 1_000, 60_000, 1_501)
            .await
            .unwrap();
        let in_flight = bad_claim
            .notifications
            .iter()
            .filter(|n| n.credential_id == "comms_credential_bad")
            .count();
        assert_eq!(in_flight, 1, "{}", db.name);
        let released: Vec<String> = bad_claim
            .notifications
            .iter()
            .filter(|n| n.credential_id != "comms_credential_bad")
            .map(|n| n.id.clone())
            .collect();
        store
            .release_claim(&bad_claim.token, &released)
            .await
            .unwrap();

        let error = NotificationError::new("credential-error", "InvalidProviderToken");
        let failed = store
            .fail_queued_for_credential("comms_credential_bad", &error)
            .await
            .unwrap();
        assert_eq!(failed, 2_499, "{}", db.name);
        // (queued, failed): the other credential's untouched, the bad one's all failed but the
        // claimed row.
        for (id, expected) in operations.iter().zip([(1_500, 0), (1, 2_499)]) {
            let op = store.get_operation(&acc, id).await.unwrap();
            assert_eq!((op.stats.queued, op.stats.failed), expected, "{}", db.name);
        }
    }
}

/// Closing the store writes what was queued, closes the group commit's own connection, and
/// the last connection to close checkpoints SQLite's WAL and removes it; later writes fail.
#[tokio::test]
async fn closing_a_sqlite_store_checkpoints_and_removes_the_wal() {
    let db = TestDatabase::sqlite().await;
    let store = db.store().await;
    let acc = account(&store).await;
    let created = store.create_operation(new_op(&acc, 3, None)).await.unwrap();
    let wal = db.dir().join("herald.db-wal");
    assert!(wal.exists(), "WAL before close");
    store.close().await;
    assert!(!wal.exists(), "WAL left after close");
    assert!(store.create_operation(new_op(&acc, 3, None)).await.is_err());
    let reopened = db.store().await;
    let op = reopened.get_operation(&acc, &created.id).await.unwrap();
    assert_eq!(op.stats.recipients, 3);
}

/// On SQLite, sends (the group commit's connection) and cancels (sqlx's writer connection)
/// written at the same time all succeed, and every operation ends as its calls say: the two
/// writers take turns, and neither keeps the other out (a turn never handed back fails the
/// cancels when sqlx's pool gives up waiting).
#[tokio::test]
async fn sends_and_cancels_written_together_on_sqlite_all_land() {
    let db = TestDatabase::sqlite().await;
    let store = db.store().await;
    let acc = account(&store).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (store, acc) = (store.clone(), acc.clone());
            tokio::spawn(async move {
                let created = store.create_operation(new_op(&acc, 2, None)).await?;
                if i % 2 == 0 {
                    store.cancel_operation(&acc, &created.id).await?;
                }
                Ok::<_, StoreError>((i, created.id))
            })
        })
        .collect();
    for task in tasks {
        let (i, id) = task.await.unwrap().unwrap();
        let op = store.get_operation(&acc, &id).await.unwrap();
        let expected = if i % 2 == 0 { "CANCELED" } else { "SCHEDULED" };
        assert_eq!(op.status, expected, "operation {i}");
    }
}
