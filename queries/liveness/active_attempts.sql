-- The dispatched and running attempts, by runtime (tasks_active_runtime: active rows only, so the
-- cost follows the active set, not history), for comparing them with their daemons' listings.
SELECT id AS "id: TaskId", workspace_id AS "workspace_id: WorkspaceId",
       runtime_id AS "runtime_id!: RuntimeId", attempt_id AS "attempt_id!: AttemptId",
       dispatched_at AS "dispatched_at!", unlisted_since
FROM tasks
WHERE status IN ('dispatched', 'running')
ORDER BY runtime_id
LIMIT $1
