-- The finished attempts of a task: those that sent it back to the queue (task_attempts) and, once it
-- has ended, its last one (the task row); see ops.attempts.
SELECT attempt AS "attempt!", attempt_id AS "attempt_id!: AttemptId", runtime_id AS "runtime_id!: RuntimeId",
       dispatched_at AS "dispatched_at!", started_at, finished_at, outcome AS "outcome: AttemptOutcome", failure_reason AS "failure_reason: FailureReason", error,
       usage AS "usage: Json<Usage>"
FROM ops.attempts
WHERE task_id = $1
ORDER BY attempt
