-- The agent a task is enqueued for, with its runtime's status (admission gate). FOR KEY SHARE on the agent
-- keeps it from being archived (agents/archive.sql takes FOR UPDATE) while the task is inserted, without
-- waiting on claims and completions (they take FOR NO KEY UPDATE).
SELECT a.runtime_id AS "runtime_id: RuntimeId", a.archived_at, r.status AS "runtime_status: RuntimeStatus"
FROM agents a
JOIN runtimes r ON r.id = a.runtime_id
WHERE a.id = $1 AND a.workspace_id = $2
FOR KEY SHARE OF a
