-- Primary key lookup, scoped to the workspace.
SELECT id AS "id: RuntimeId", workspace_id AS "workspace_id: WorkspaceId", daemon_id, provider, name,
       version, max_concurrency, status AS "status: RuntimeStatus", draining, labels AS "labels: Json<Labels>", last_seen_at, offline_at, created_at
FROM runtimes
WHERE id = $1 AND workspace_id = $2
