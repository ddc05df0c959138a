-- Online runtimes not seen for stale_threshold (runtimes_online_seen: active rows only).
SELECT id AS "id: RuntimeId", workspace_id AS "workspace_id: WorkspaceId"
FROM runtimes
WHERE status = 'online' AND last_seen_at < now() - make_interval(secs => $1)
ORDER BY last_seen_at
LIMIT $2
