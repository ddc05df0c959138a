-- Creates an agent on a runtime of the same workspace; the composite foreign key
-- (workspace_id, runtime_id) makes a cross-tenant binding impossible.
INSERT INTO agents (id, workspace_id, runtime_id, name, max_concurrent_tasks, definition, status)
SELECT $1, $2, r.id, $4, $5, $6,
       CASE WHEN r.status = 'offline' THEN 'offline' ELSE 'idle' END
FROM runtimes r
WHERE r.id = $3 AND r.workspace_id = $2
RETURNING id AS "id: AgentId", workspace_id AS "workspace_id: WorkspaceId",
          runtime_id AS "runtime_id: RuntimeId", name, max_concurrent_tasks, definition,
          definition_version, status AS "status: AgentStatus", paused, archived_at, created_at, updated_at
