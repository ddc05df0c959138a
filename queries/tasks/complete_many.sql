-- running → completed for a batch, each fenced by its attempt id, and the finished attempts
-- recorded, in one statement. The caller holds the rows' locks (lock_many.sql).
WITH done AS (
    UPDATE tasks t
    SET status = 'completed', result = v.result, finished_at = now()
    FROM unnest($1::uuid[], $2::uuid[], $3::jsonb[]) AS v (id, attempt_id, result)
    WHERE t.id = v.id AND t.attempt_id = v.attempt_id AND t.status = 'running'
    RETURNING t.*
), recorded AS (
    INSERT INTO task_attempts (attempt_id, task_id, workspace_id, attempt, runtime_id, dispatched_at,
                               started_at, finished_at, outcome)
    SELECT attempt_id, id, workspace_id, attempt, runtime_id, dispatched_at, started_at, finished_at,
           'completed'
    FROM done
    ON CONFLICT (attempt_id) DO NOTHING
)
SELECT id AS "id!: TaskId", workspace_id AS "workspace_id!: WorkspaceId", agent_id AS "agent_id!: AgentId",
       runtime_id AS "runtime_id!: RuntimeId", status AS "status!", priority AS "priority!",
       payload AS "payload!", progress, result, error, failure_reason, attempt AS "attempt!",
       max_attempts AS "max_attempts!", attempt_id AS "attempt_id: AttemptId", idempotency_key,
       run_after AS "run_after!", enqueued_at AS "enqueued_at!", dispatched_at, started_at, finished_at,
       seq AS "seq!"
FROM done
