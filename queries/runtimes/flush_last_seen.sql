-- The heartbeat flusher: one statement for every runtime heard since the last flush. Touches only
-- last_seen_at (indexed only by the partial runtimes_online_seen, so the update stays HOT-friendly)
-- and never moves it backwards. Scoped by workspace: a heartbeat that named another workspace's
-- runtime id matches nothing.
UPDATE runtimes r
SET last_seen_at = v.seen
FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) AS v (workspace_id, id, seen)
WHERE r.id = v.id AND r.workspace_id = v.workspace_id AND r.last_seen_at < v.seen
