-- Which of the attempts a heartbeat lists the server has revoked (primary key lookups).
SELECT task_id AS "task_id: TaskId", attempt_id AS "attempt_id: AttemptId"
FROM revoked_attempts
WHERE attempt_id = ANY($1) AND workspace_id = $2
