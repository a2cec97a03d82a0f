-- The notifications table without its foreign key to operations. With the key, every multi-row
-- INSERT of a planning step looked its operation up once per row and kept a statement journal
-- (a copy of each page the statement changed, so that a failing statement could undo itself):
-- SQLite keeps one for any multi-row write that an immediate foreign key may abort. The group
-- commit rolls back the whole write when one of its statements fails, so that copy was never
-- used. The planner's write checks the operation (its plan lease) in the same transaction before
-- inserting its rows, and retention deletes an operation's notifications with it explicitly; no
-- account is ever deleted. PostgreSQL keeps the key.
CREATE TABLE notifications_new (
    id TEXT PRIMARY KEY,
    account_sid TEXT NOT NULL,
    operation_id TEXT NOT NULL,
    recipient_index BIGINT NOT NULL,
    provider TEXT NOT NULL,
    token TEXT NOT NULL,
    credential_id TEXT NOT NULL,
    app_name TEXT,
    user_id TEXT,
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}',
    tag_keys TEXT NOT NULL DEFAULT ';',
    attempts BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    due_at BIGINT NOT NULL,
    claim_token TEXT,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    sent_at BIGINT
);
INSERT INTO notifications_new (id, account_sid, operation_id, recipient_index, provider, token,
    credential_id, app_name, user_id, status, priority, tags, tag_keys, attempts, error, due_at,
    claim_token, expires_at, created_at, updated_at, sent_at)
SELECT id, account_sid, operation_id, recipient_index, provider, token, credential_id, app_name,
    user_id, status, priority, tags, tag_keys, attempts, error, due_at, claim_token, expires_at,
    created_at, updated_at, sent_at
FROM notifications;
DROP TABLE notifications;
ALTER TABLE notifications_new RENAME TO notifications;
CREATE INDEX notifications_queue ON notifications (due_at) WHERE status = 'QUEUED';
CREATE INDEX notifications_scheduled ON notifications (due_at) WHERE status = 'SCHEDULED';
CREATE INDEX notifications_by_operation ON notifications (operation_id, created_at, id);
CREATE INDEX notifications_by_account ON notifications (account_sid, created_at, id);
