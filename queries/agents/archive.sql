-- Archives a live agent (kept until its runtime is collected). Archived agents get no new tasks.
-- FOR UPDATE waits for enqueues in flight (they hold FOR KEY SHARE), so none slips in after.
WITH locked AS (
    SELECT id FROM agents
    WHERE id = $1 AND workspace_id = $2 AND archived_at IS NULL
    FOR UPDATE
)
UPDATE agents a
SET archived_at = now(), updated_at = now()
FROM locked
WHERE a.id = locked.id
RETURNING a.id AS "id: AgentId", a.workspace_id AS "workspace_id: WorkspaceId",
          a.runtime_id AS "runtime_id: RuntimeId", a.runtime_selector AS "runtime_selector: Json<RuntimeSelector>", a.name, a.max_concurrent_tasks, a.definition,
          a.definition_version, a.status AS "status: AgentStatus", a.paused, a.archived_at, a.created_at, a.updated_at
