-- Collector: runtimes offline longer than offline_runtime_ttl (runtimes_offline_since: offline rows
-- only) with no live agent and no open task are deleted, their archived agents (and those agents'
-- finished tasks, by cascade) first. At most $2 runtimes per tick. (A data-modifying CTE always runs
-- to completion, and foreign keys are checked at the end of the statement.)
WITH doomed AS (
    SELECT r.id, r.workspace_id
    FROM runtimes r
    WHERE r.status = 'offline' AND r.offline_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.runtime_id = r.id AND a.archived_at IS NULL)
      -- Open tasks, through active-row indexes only: dispatched/running by runtime
      -- (tasks_active_runtime), queued through the runtime's agents (agents_runtime, tasks_claim).
      AND NOT EXISTS (SELECT 1 FROM tasks t
                      WHERE t.runtime_id = r.id AND t.status IN ('dispatched', 'running'))
      AND NOT EXISTS (SELECT 1 FROM agents a
                      JOIN tasks t ON t.agent_id = a.id AND t.status = 'queued'
                      WHERE a.runtime_id = r.id)
    ORDER BY r.offline_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
gone_agents AS (
    DELETE FROM agents a USING doomed WHERE a.runtime_id = doomed.id RETURNING a.id
)
DELETE FROM runtimes r
USING doomed
WHERE r.id = doomed.id
RETURNING r.id AS "id: RuntimeId", r.workspace_id AS "workspace_id: WorkspaceId"
