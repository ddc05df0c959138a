-- Queued tasks of an agent (tasks_claim), locked, for cancelling them when the agent is archived.
SELECT id AS "id: TaskId" FROM tasks
WHERE agent_id = $1 AND status = 'queued'
ORDER BY id
FOR UPDATE
