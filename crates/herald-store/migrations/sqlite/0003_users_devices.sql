-- Push users, device registrations (the set of one user's devices in one app) and devices.
-- Times are epoch milliseconds (see src/lib.rs). Deleting an app (its last credential) or a user
-- deletes their registrations, and a registration's devices go with it (ON DELETE CASCADE).
CREATE TABLE users (
    -- comms_pushnotificationuser_...
    id TEXT PRIMARY KEY,
    account_sid TEXT NOT NULL REFERENCES accounts (sid) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    -- The target of the registrations' (account_sid, user_id) key: a user of one account can
    -- never be registered under another.
    UNIQUE (account_sid, id)
);
CREATE INDEX users_by_created ON users (account_sid, created_at, id);

CREATE TABLE device_registrations (
    -- comms_device_registration_...
    id TEXT PRIMARY KEY,
    account_sid TEXT NOT NULL,
    app_name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    FOREIGN KEY (account_sid, app_name) REFERENCES apps (account_sid, name) ON DELETE CASCADE,
    FOREIGN KEY (account_sid, user_id) REFERENCES users (account_sid, id) ON DELETE CASCADE,
    -- The target of the devices' key, so a device's app is always its registration's app.
    UNIQUE (id, account_sid, app_name)
);
-- One registration per (user, app); also the delivery engine's way from a user to its devices.
CREATE UNIQUE INDEX device_registrations_user_app ON device_registrations (user_id, app_name);
-- The list of a user's registrations, newest first.
CREATE INDEX device_registrations_by_user ON device_registrations (user_id, created_at, id);
-- Deleting an app finds its registrations.
CREATE INDEX device_registrations_by_app ON device_registrations (account_sid, app_name);

CREATE TABLE devices (
    account_sid TEXT NOT NULL,
    app_name TEXT NOT NULL,
    -- APN | FCM
    provider TEXT NOT NULL,
    -- Hex SHA-256 of the token: the key, because a token may be 4096 characters, more than a
    -- PostgreSQL B-tree entry holds. Lookups compare `token` too.
    token_hash TEXT NOT NULL,
    token TEXT NOT NULL,
    registration_id TEXT NOT NULL,
    -- ACTIVE | INVALID
    status TEXT NOT NULL DEFAULT 'ACTIVE',
    -- JSON of the provider answer that made the device INVALID, or NULL.
    last_error TEXT,
    created_at BIGINT NOT NULL,
    invalidated_at BIGINT,
    -- A (token, provider) belongs to at most one user per app.
    PRIMARY KEY (account_sid, app_name, provider, token_hash),
    FOREIGN KEY (registration_id, account_sid, app_name)
        REFERENCES device_registrations (id, account_sid, app_name) ON DELETE CASCADE
);
-- A registration's devices, and its ACTIVE devices for the delivery engine.
CREATE INDEX devices_by_registration ON devices (registration_id, status);
