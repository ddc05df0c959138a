-- After a claim: the agents that got tasks are working. Updated even when already 'working' so the
-- row lock orders this claim with a concurrent status recomputation (agents/lock.sql); `was` tells
-- which agents changed, for their agent.status events.
UPDATE agents a
SET status = 'working', updated_at = CASE WHEN o.was <> 'working' THEN now() ELSE a.updated_at END
FROM (SELECT id, status AS was FROM agents WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE) o
WHERE a.id = o.id
RETURNING a.id AS "id: AgentId", a.workspace_id AS "workspace_id: WorkspaceId", o.was AS "was!"
