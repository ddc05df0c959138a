-- Takes stale runtimes offline, re-checking the predicate so that a heartbeat written since the
-- candidates were read wins (runtimes_pkey lookups).
UPDATE runtimes
SET status = 'offline', offline_at = now()
WHERE id = ANY($1) AND status = 'online' AND last_seen_at < now() - make_interval(secs => $2)
RETURNING id AS "id: RuntimeId", workspace_id AS "workspace_id: WorkspaceId"
