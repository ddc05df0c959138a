-- Primary key lookup, scoped to the workspace.
SELECT id AS "id: AgentId", workspace_id AS "workspace_id: WorkspaceId",
       runtime_id AS "runtime_id: RuntimeId", runtime_selector AS "runtime_selector: Json<RuntimeSelector>", name, max_concurrent_tasks, definition,
       definition_version, status AS "status: AgentStatus", paused, archived_at, created_at, updated_at
FROM agents
WHERE id = $1 AND workspace_id = $2
