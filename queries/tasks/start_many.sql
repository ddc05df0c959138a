-- dispatched → running for a batch, each fenced by its attempt id (the predicate of
-- domain::task::decide). The caller holds the rows' locks (lock_many.sql).
UPDATE tasks t
SET status = 'running', started_at = now(),
    deadline = CASE WHEN t.running_timeout_ms > 0 THEN now() + t.running_timeout_ms * interval '1 ms' END
FROM unnest($1::uuid[], $2::uuid[]) AS v (id, attempt_id)
WHERE t.id = v.id AND t.attempt_id = v.attempt_id AND t.status = 'dispatched'
RETURNING t.id AS "id: TaskId", t.workspace_id AS "workspace_id: WorkspaceId", t.agent_id AS "agent_id: AgentId",
       t.runtime_id AS "runtime_id: RuntimeId", t.status AS "status: TaskStatus", t.priority, t.payload, t.progress, t.result, t.error,
       t.failure_reason AS "failure_reason: FailureReason", t.attempt, t.max_attempts, t.attempt_id AS "attempt_id: AttemptId", t.idempotency_key,
       t.run_after, t.enqueued_at, t.dispatched_at, t.started_at, t.finished_at, t.usage AS "usage: Json<Usage>", t.usage_prior AS "usage_prior: Json<Usage>",
       t.session AS "session: Json<StoredSession>", t.seq,
       t.concurrency_key, t.concurrency_limit, t.dispatch_timeout_ms, t.running_timeout_ms, t.queued_ttl_ms, t.deadline
