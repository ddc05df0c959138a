-- The heartbeat flusher: one statement for every runtime heard since the last flush. Touches only
-- last_seen_at (indexed only by the partial runtimes_online_seen, so the update stays HOT-friendly)
-- and never moves it backwards. Scoped by workspace: a heartbeat that named another workspace's
-- runtime id matches nothing. The rows are locked first, in id order, as a heartbeat's slow path
-- (touch_or_revive.sql) locks them too: the flushes of several replicas, and a flush and a slow
-- path, then wait for each other instead of deadlocking.
WITH heard AS (
    SELECT r.id, v.seen
    FROM runtimes r
    JOIN unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) AS v (workspace_id, id, seen)
      ON r.id = v.id AND r.workspace_id = v.workspace_id
    WHERE r.last_seen_at < v.seen
    ORDER BY r.id
    FOR NO KEY UPDATE OF r
)
UPDATE runtimes r
SET last_seen_at = heard.seen
FROM heard
WHERE r.id = heard.id AND r.last_seen_at < heard.seen
