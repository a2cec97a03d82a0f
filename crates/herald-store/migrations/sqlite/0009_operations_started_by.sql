-- The token of the write that moved the operation SCHEDULED → PROCESSING. A planning step moves it
-- in the same UPDATE that records the step, and SQL shows that UPDATE only the row as it leaves
-- it; this marker tells the step whether it was the one that moved it (and so owes the
-- operation.processing event). Nothing reads it otherwise.
ALTER TABLE operations ADD COLUMN started_by TEXT;
