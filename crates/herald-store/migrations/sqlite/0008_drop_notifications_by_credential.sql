-- Every notification row entered and left this index (QUEUED rows only) on its way: two B-tree
-- writes per notification, for the one query that used it, the credential fail-fast, which runs
-- once per credential error. That query now walks the queue index (notifications_queue) instead.
DROP INDEX notifications_by_credential;
