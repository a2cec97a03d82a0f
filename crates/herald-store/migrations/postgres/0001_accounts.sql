-- Times are milliseconds since the epoch; booleans are 0/1 integers (see src/lib.rs).
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE accounts (
    sid TEXT PRIMARY KEY,
    friendly_name TEXT,
    auth_token_hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    sid TEXT PRIMARY KEY,
    account_sid TEXT NOT NULL REFERENCES accounts (sid) ON DELETE CASCADE,
    friendly_name TEXT,
    secret_hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX api_keys_account ON api_keys (account_sid);
