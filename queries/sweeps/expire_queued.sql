-- Queued tasks past their deadline (enqueued_at + the task's queued_ttl) fail with queued_expired
-- (never retried): at most $2 rows per tick, earliest deadline first (tasks_queued_deadline: queued
-- rows with a deadline only), SKIP LOCKED so it never waits on
-- a claim, and one short statement so no long lock is held.
WITH picked AS (
    SELECT id FROM tasks
    WHERE status = 'queued' AND deadline < now()
    ORDER BY deadline
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t
SET status = 'failed', failure_reason = 'queued_expired', finished_at = now(), deadline = NULL
FROM picked
WHERE t.id = picked.id AND t.status = 'queued'
RETURNING t.id AS "id: TaskId", t.workspace_id AS "workspace_id: WorkspaceId", t.agent_id AS "agent_id: AgentId",
       t.runtime_id AS "runtime_id: RuntimeId", t.status AS "status: TaskStatus", t.priority, t.payload, t.progress, t.result, t.error,
       t.failure_reason AS "failure_reason: FailureReason", t.attempt, t.max_attempts, t.attempt_id AS "attempt_id: AttemptId", t.idempotency_key,
       t.run_after, t.enqueued_at, t.dispatched_at, t.started_at, t.finished_at, t.usage AS "usage: Json<Usage>", t.usage_prior AS "usage_prior: Json<Usage>",
       t.session AS "session: Json<StoredSession>", t.seq,
       t.concurrency_key, t.concurrency_limit, t.dispatch_timeout_ms, t.running_timeout_ms, t.queued_ttl_ms, t.deadline
