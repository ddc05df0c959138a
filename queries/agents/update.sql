-- Partial update of a live agent; a new definition bumps definition_version; `paused` pauses or
-- resumes claiming its tasks.
UPDATE agents
SET name = coalesce($3, name),
    max_concurrent_tasks = coalesce($4, max_concurrent_tasks),
    definition = coalesce($5, definition),
    definition_version = definition_version + CASE WHEN $5::jsonb IS NULL THEN 0 ELSE 1 END,
    paused = coalesce($6, paused),
    updated_at = now()
WHERE id = $1 AND workspace_id = $2 AND archived_at IS NULL
RETURNING id AS "id: AgentId", workspace_id AS "workspace_id: WorkspaceId",
          runtime_id AS "runtime_id: RuntimeId", runtime_selector AS "runtime_selector: Json<RuntimeSelector>", name, max_concurrent_tasks, definition,
          definition_version, status AS "status: AgentStatus", paused, archived_at, created_at, updated_at
