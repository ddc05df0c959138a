-- Recomputes the status of the given agents from their runtime and their active tasks
-- (tasks_active_agent); only agents whose status changed are returned, for their agent.status events.
-- A pool agent (no runtime of its own) is never `offline`: idle or working.
-- Callers lock the agents first (agents/lock.sql).
UPDATE agents a
SET status = s.status, updated_at = now()
FROM (
    SELECT a2.id,
           CASE
               WHEN r.status = 'offline' THEN 'offline'
               WHEN EXISTS (SELECT 1 FROM tasks t
                            WHERE t.agent_id = a2.id AND t.status IN ('dispatched', 'running')) THEN 'working'
               ELSE 'idle'
           END AS status
    FROM agents a2
    LEFT JOIN runtimes r ON r.id = a2.runtime_id
    WHERE a2.id = ANY($1)
) s
WHERE a.id = s.id AND a.status <> s.status
RETURNING a.id AS "id: AgentId", a.workspace_id AS "workspace_id: WorkspaceId", a.status AS "status: AgentStatus"
