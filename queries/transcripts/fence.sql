-- Why a post was refused: the task (primary key, scoped to the workspace) and its current attempt.
SELECT attempt_id AS "attempt_id: AttemptId", status AS "status: TaskStatus"
FROM tasks
WHERE id = $1 AND workspace_id = $2
