-- Keyset page of a workspace's agents by id (agents_workspace); archived ones only when asked.
SELECT id AS "id: AgentId", workspace_id AS "workspace_id: WorkspaceId",
       runtime_id AS "runtime_id: RuntimeId", runtime_selector AS "runtime_selector: Json<RuntimeSelector>", name, max_concurrent_tasks, definition,
       definition_version, status AS "status: AgentStatus", paused, archived_at, created_at, updated_at
FROM agents
WHERE workspace_id = $1 AND ($2::uuid IS NULL OR id > $2) AND ($4 OR archived_at IS NULL)
ORDER BY id
LIMIT $3
