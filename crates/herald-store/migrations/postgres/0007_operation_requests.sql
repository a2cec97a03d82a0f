-- Each operation's send request, in a table of its own. The operation's counters change with
-- every plan and outcome batch, and an UPDATE rewrites the whole row (on SQLite with its overflow
-- pages): a 10,000-recipient request (hundreds of KB) kept in the row was copied into the WAL on
-- every stats update. Written once when the send is accepted; read by the planner and the
-- dispatchers; deleted with its operation.
CREATE TABLE operation_requests (
    operation_id TEXT PRIMARY KEY REFERENCES operations (id) ON DELETE CASCADE,
    -- The validated SendRequest as JSON (herald_core::send::SendRequest).
    request TEXT NOT NULL
);
INSERT INTO operation_requests (operation_id, request) SELECT id, request FROM operations;
ALTER TABLE operations DROP COLUMN request;
