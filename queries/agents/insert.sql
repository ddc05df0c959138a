-- Creates an agent bound to a runtime of the same workspace ($3; the composite foreign key
-- (workspace_id, runtime_id) makes a cross-tenant binding impossible) or to a pool ($7, with $3
-- NULL). No row when the runtime is not in the workspace.
INSERT INTO agents (id, workspace_id, runtime_id, runtime_selector, name, max_concurrent_tasks, definition, status)
SELECT $1, $2, r.id, $7, $4, $5, $6,
       CASE WHEN r.status = 'offline' THEN 'offline' ELSE 'idle' END
FROM (SELECT 1) one
LEFT JOIN runtimes r ON r.id = $3 AND r.workspace_id = $2
WHERE ($3::uuid IS NULL) = ($7::jsonb IS NOT NULL) AND ($3::uuid IS NULL OR r.id IS NOT NULL)
RETURNING id AS "id: AgentId", workspace_id AS "workspace_id: WorkspaceId",
          runtime_id AS "runtime_id: RuntimeId", runtime_selector AS "runtime_selector: Json<RuntimeSelector>", name, max_concurrent_tasks, definition,
          definition_version, status AS "status: AgentStatus", paused, archived_at, created_at, updated_at
