-- Takes online runtimes offline (deregister; the stale sweep uses its own predicate). Only rows that
-- were online are returned, so the caller fails their tasks and writes runtime.offline exactly once.
UPDATE runtimes
SET status = 'offline', offline_at = now()
WHERE workspace_id = $1 AND id = ANY($2) AND status = 'online'
RETURNING id AS "id: RuntimeId", workspace_id AS "workspace_id: WorkspaceId"
