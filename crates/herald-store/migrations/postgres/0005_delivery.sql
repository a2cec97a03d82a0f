-- The send path: operations (one per accepted send request), their push notifications (one per
-- resolved device, which are also the delivery queue), and idempotency keys. Times are epoch
-- milliseconds, booleans 0/1 (see src/lib.rs). The queue discipline is described in docs/delivery.md.
CREATE TABLE operations (
    -- comms_operation_...
    id TEXT PRIMARY KEY,
    account_sid TEXT NOT NULL REFERENCES accounts (sid) ON DELETE CASCADE,
    -- SCHEDULED | PROCESSING | COMPLETED | CANCELED
    status TEXT NOT NULL,
    -- The validated SendRequest as JSON (herald_core::send::SendRequest).
    request TEXT NOT NULL,
    -- Stats: recipients = entries in `to`; the other six add up to total.
    recipients BIGINT NOT NULL,
    unaddressable BIGINT NOT NULL DEFAULT 0,
    scheduled BIGINT NOT NULL DEFAULT 0,
    queued BIGINT NOT NULL DEFAULT 0,
    sent BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    canceled BIGINT NOT NULL DEFAULT 0,
    -- Planner: how many entries of `to` are resolved into notifications (the resume point), whether
    -- planning is over, and its lease (several nodes): claimable when plan_due_at <= now.
    planned BIGINT NOT NULL DEFAULT 0,
    plan_done BIGINT NOT NULL DEFAULT 0,
    plan_due_at BIGINT NOT NULL,
    plan_owner TEXT,
    -- Cancel was asked for: the operation ends CANCELED rather than COMPLETED.
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    -- schedule.sendAt (or NULL), and the TTL deadline of its notifications.
    send_at BIGINT,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    completed_at BIGINT
);
CREATE INDEX operations_by_account ON operations (account_sid, created_at, id);
CREATE INDEX operations_to_plan ON operations (plan_due_at) WHERE plan_done = 0;
CREATE INDEX operations_finished ON operations (completed_at) WHERE completed_at IS NOT NULL;

CREATE TABLE notifications (
    -- comms_pushnotification_...
    id TEXT PRIMARY KEY,
    account_sid TEXT NOT NULL,
    operation_id TEXT NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    -- The entry of the request's `to` it was made for.
    recipient_index BIGINT NOT NULL,
    -- APN | FCM
    provider TEXT NOT NULL,
    token TEXT NOT NULL,
    credential_id TEXT NOT NULL,
    -- The app the device was resolved in (dead tokens are marked INVALID there), or NULL.
    app_name TEXT,
    user_id TEXT,
    -- SCHEDULED | QUEUED | SENT | FAILED | CANCELED
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}',
    -- ";k:v;k2:v2;" with ':', ';', '%', '_' and '\' percent-encoded, for the tags filter.
    tag_keys TEXT NOT NULL DEFAULT ';',
    attempts BIGINT NOT NULL DEFAULT 0,
    -- JSON {code, message, providerStatus, providerReason} or NULL.
    error TEXT,
    -- QUEUED: claimable when due_at <= now. A claim moves due_at to the end of its lease and sets
    -- claim_token; the outcome write must name that token.
    due_at BIGINT NOT NULL,
    claim_token TEXT,
    -- Never sent after this (TTL).
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    sent_at BIGINT
);
CREATE INDEX notifications_queue ON notifications (due_at) WHERE status = 'QUEUED';
CREATE INDEX notifications_scheduled ON notifications (due_at) WHERE status = 'SCHEDULED';
CREATE INDEX notifications_by_operation ON notifications (operation_id, created_at, id);
CREATE INDEX notifications_by_account ON notifications (account_sid, created_at, id);
CREATE INDEX notifications_by_credential ON notifications (credential_id) WHERE status = 'QUEUED';

CREATE TABLE idempotency_keys (
    account_sid TEXT NOT NULL REFERENCES accounts (sid) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    operation_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_sid, idempotency_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
