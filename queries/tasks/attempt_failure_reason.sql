-- Why a finished attempt failed (primary key lookup): `agent_error` when its daemon reported it.
SELECT failure_reason AS "failure_reason: FailureReason" FROM task_attempts WHERE attempt_id = $1 AND outcome = 'failed'
