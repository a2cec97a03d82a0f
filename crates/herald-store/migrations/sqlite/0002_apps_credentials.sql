-- Apps and credentials. One credential table serves both API faces: `face` says which face made
-- (and manages) a row. Booleans are 0/1 integers; times are epoch milliseconds.
CREATE TABLE apps (
    account_sid TEXT NOT NULL REFERENCES accounts (sid) ON DELETE CASCADE,
    name TEXT NOT NULL,
    is_default BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account_sid, name)
);
-- Exactly one default app per account (at most one here; the store keeps it at least one).
CREATE UNIQUE INDEX apps_one_default ON apps (account_sid) WHERE is_default = 1;
CREATE INDEX apps_by_created ON apps (account_sid, created_at, name);

CREATE TABLE credentials (
    -- comms_credential_... (Push face) or CR... (Chat face)
    id TEXT PRIMARY KEY,
    account_sid TEXT NOT NULL REFERENCES accounts (sid) ON DELETE CASCADE,
    -- 'push' or 'chat'
    face TEXT NOT NULL,
    -- Push: APN | APN_SANDBOX | FCM. Chat: apn | gcm | fcm.
    credential_type TEXT NOT NULL,
    -- Push only: the app it belongs to, and whether it is the app's default of its type.
    app_name TEXT,
    is_default BIGINT NOT NULL DEFAULT 0,
    -- Chat only.
    friendly_name TEXT,
    sandbox BIGINT NOT NULL DEFAULT 0,
    -- JSON object of string tags.
    tags TEXT NOT NULL DEFAULT '{}',
    -- JSON of non-secret facts shown to operators ({"apn": {...}} or {"fcm": {...}}), or NULL.
    facts TEXT,
    -- AES-256-GCM sealed secret content (see secret_box.rs); NULL when none was given (Chat).
    secret BLOB,
    -- Bumped on every key rotation, so provider clients built from old content are replaced.
    content_version BIGINT NOT NULL DEFAULT 1,
    -- JSON {code, message, at} of the last provider answer that blamed the credential, or NULL.
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    FOREIGN KEY (account_sid, app_name) REFERENCES apps (account_sid, name) ON DELETE CASCADE
);
CREATE UNIQUE INDEX credentials_one_default
    ON credentials (account_sid, app_name, credential_type) WHERE is_default = 1;
CREATE INDEX credentials_by_face ON credentials (account_sid, face, created_at, id);
CREATE INDEX credentials_by_app ON credentials (account_sid, app_name);
