-- Brings offline runtimes of a workspace back online (a heartbeat or claim from an offline runtime).
-- Only rows that were offline are returned, so exactly one caller writes the runtime.online event.
UPDATE runtimes
SET status = 'online', offline_at = NULL, last_seen_at = now()
WHERE workspace_id = $1 AND id = ANY($2) AND status = 'offline'
RETURNING id AS "id: RuntimeId", workspace_id AS "workspace_id: WorkspaceId"
