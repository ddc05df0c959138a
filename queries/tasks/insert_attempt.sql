-- Records a finished attempt (the open attempt lives on the task row).
INSERT INTO task_attempts (attempt_id, task_id, workspace_id, attempt, runtime_id, dispatched_at,
                           started_at, finished_at, outcome, failure_reason, error)
VALUES ($1, $2, $3, $4, $5, $6, $7, now(), $8, $9, $10)
ON CONFLICT (attempt_id) DO NOTHING
