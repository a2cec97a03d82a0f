-- Events: each account's webhook subscription, and the outbox of CloudEvents waiting to be
-- POSTed to it (see src/events.rs). Times are epoch milliseconds (see src/lib.rs).
CREATE TABLE event_subscriptions (
    -- One subscription per account.
    account_sid TEXT PRIMARY KEY REFERENCES accounts (sid) ON DELETE CASCADE,
    url TEXT NOT NULL,
    -- The signing secret, AES-256-GCM sealed (see secret_box.rs): it must be recovered to sign,
    -- so it cannot be hashed.
    secret BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- No foreign key to event_subscriptions on purpose: the delivery engine inserts events inside
-- its own transactions, and a subscription deleted at the same moment must not make them fail.
-- Deleting a subscription deletes its events; the sender drops any event left without one.
CREATE TABLE events (
    -- The CloudEvents id (a UUID); receivers dedupe on it.
    id TEXT PRIMARY KEY,
    account_sid TEXT NOT NULL,
    event_type TEXT NOT NULL,
    -- The whole CloudEvent as JSON: exactly the bytes POSTed (and signed) on every attempt.
    body TEXT NOT NULL,
    -- Deliveries tried so far (counted when claimed).
    attempts BIGINT NOT NULL DEFAULT 0,
    -- When the event is next due. A claim moves it to the end of the claim's lease, so an event
    -- whose sender died becomes due again by itself.
    next_attempt_at BIGINT NOT NULL,
    -- The token of the claim that holds the event, or NULL.
    lease TEXT,
    -- Why the last attempt failed (HTTP status or connection error), for operators.
    last_error TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_due ON events (next_attempt_at);
CREATE INDEX events_by_account ON events (account_sid);
