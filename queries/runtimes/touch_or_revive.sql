-- A heartbeat the liveness store did not know as alive (new key: first heartbeat after expiry, or a
-- revived runtime): write last_seen_at and bring an offline runtime back online in one statement.
-- If the stale sweep is taking the runtime offline concurrently, this waits for its row lock and then
-- revives it, so a heartbeat racing the sweep is never lost. `was_status` is the status before.
-- The rows are locked in id order, as the heartbeat flusher locks them, so the two cannot deadlock.
WITH old AS (
    SELECT id, status FROM runtimes
    WHERE workspace_id = $1 AND id = ANY($2)
    ORDER BY id
    FOR NO KEY UPDATE
)
UPDATE runtimes r
SET last_seen_at = now(), status = 'online', offline_at = NULL
FROM old
WHERE r.id = old.id
RETURNING r.id AS "id: RuntimeId", old.status AS "was_status!: RuntimeStatus"
