-- A task's last attempt is not copied to task_attempts when the task ends: the task row already holds
-- it (attempt, attempt_id, runtime_id, dispatched_at, started_at, finished_at, status, failure_reason,
-- error). task_attempts keeps only the attempts that ended with the task going back to the queue,
-- whose fields the next claim overwrites. On the happy path this saves a row, two index entries and
-- a foreign-key check per task.
--
-- ops.attempts is every finished attempt, from both places. Attempts recorded in task_attempts before
-- this migration are not repeated (NOT EXISTS).
CREATE VIEW ops.attempts AS
SELECT a.workspace_id,
       a.task_id,
       a.attempt,
       a.attempt_id,
       a.runtime_id,
       a.dispatched_at,
       a.started_at,
       a.finished_at,
       a.outcome,
       a.failure_reason,
       a.error
FROM task_attempts a
UNION ALL
SELECT t.workspace_id,
       t.id,
       t.attempt,
       t.attempt_id,
       t.runtime_id,
       t.dispatched_at,
       t.started_at,
       t.finished_at,
       t.status,
       CASE WHEN t.status = 'completed' THEN NULL ELSE t.failure_reason END,
       CASE WHEN t.status = 'completed' THEN NULL ELSE t.error END
FROM tasks t
WHERE t.status IN ('completed', 'failed', 'cancelled')
  AND t.dispatched_at IS NOT NULL
  AND t.attempt_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM task_attempts a WHERE a.attempt_id = t.attempt_id);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'paddock_readonly') THEN
        GRANT SELECT ON ops.attempts TO paddock_readonly;
    END IF;
END
$$;
