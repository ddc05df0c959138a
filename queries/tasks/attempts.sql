-- The finished attempts of a task (task_attempts_task_id_attempt_key).
SELECT attempt, attempt_id AS "attempt_id: AttemptId", runtime_id AS "runtime_id: RuntimeId",
       dispatched_at, started_at, finished_at, outcome, failure_reason, error
FROM task_attempts
WHERE task_id = $1
ORDER BY attempt
