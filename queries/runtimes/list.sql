-- Keyset page of a workspace's runtimes, by id (runtimes_workspace_id_id_key).
SELECT id AS "id: RuntimeId", workspace_id AS "workspace_id: WorkspaceId", daemon_id, provider, name,
       version, max_concurrency, status AS "status: RuntimeStatus", draining, labels AS "labels: Json<Labels>", last_seen_at, offline_at, created_at
FROM runtimes
WHERE workspace_id = $1 AND ($2::uuid IS NULL OR id > $2)
ORDER BY id
LIMIT $3
