-- Cancellations the daemon of these runtimes has not been told of yet (tasks_cancel_pending, almost
-- always empty); cleared as they are handed out.
UPDATE tasks
SET cancel_pending = false
WHERE runtime_id = ANY($1) AND cancel_pending
RETURNING id AS "task_id: TaskId", attempt_id AS "attempt_id!: AttemptId"
