-- Records an attempt that failed and sent its task back to the queue, before the next claim overwrites
-- the attempt's fields on the task row. A task's last attempt stays on the row (ops.attempts).
INSERT INTO task_attempts (attempt_id, task_id, workspace_id, attempt, runtime_id, dispatched_at,
                           started_at, finished_at, outcome, failure_reason, error, usage, session)
VALUES ($1, $2, $3, $4, $5, $6, $7, now(), 'failed', $8, $9, $10, $11)
ON CONFLICT (attempt_id) DO NOTHING
